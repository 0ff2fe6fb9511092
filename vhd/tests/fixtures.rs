//! Every VHD in `fixtures/vhd`, written by qemu and Xen Orchestra's vhd-lib, reads
//! back with the content sha256 and block layout recorded in manifest.json — through the
//! random-access reader and, for the stream-shaped ones, through the stream decoder.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a failed test"
)]

mod common;

use std::fs::File;

use bytes::Bytes;
use common::{apply_writes, fixtures_dir, read_all, sha256_hex};
use serde_json::Value;
use vhd::{BlockIndex, DiskType, StreamDecoder, StreamEvent, VhdChain, VhdFile};

fn manifest() -> Value {
    let text = std::fs::read_to_string(fixtures_dir().join("manifest.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn open(name: &str) -> VhdFile<File> {
    VhdFile::open(File::open(fixtures_dir().join("vhd").join(name)).unwrap()).unwrap()
}

fn writes(entry: &Value) -> Vec<(String, u64, u64)> {
    entry["writes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            (
                w[0].as_str().unwrap().to_owned(),
                w[1].as_u64().unwrap(),
                w[2].as_u64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn every_fixture_matches_its_content_hash_and_metadata() {
    let manifest = manifest();
    let vhds = manifest["vhd"].as_object().unwrap();
    assert_eq!(vhds.len(), 6, "the fixture set changed: review this test");
    for (name, entry) in vhds {
        let file = open(name);
        let footer = file.footer();
        assert_eq!(
            u64::from(footer.disk_type.code()),
            entry["disk_type"].as_u64().unwrap(),
            "{name}"
        );
        assert_eq!(
            footer.current_size,
            entry["current_size"].as_u64().unwrap(),
            "{name}"
        );
        assert_eq!(
            footer.unique_id.to_string(),
            entry["uuid"].as_str().unwrap(),
            "{name}"
        );
        assert_eq!(
            std::str::from_utf8(&footer.creator.application).unwrap(),
            entry["creator_app"].as_str().unwrap(),
            "{name}"
        );
        let chs = entry["geometry_chs"].as_array().unwrap();
        assert_eq!(
            u64::from(footer.geometry.cylinders),
            chs[0].as_u64().unwrap(),
            "{name}"
        );

        let content = if file.disk_type() == DiskType::Differencing {
            let parent_name = entry["parent"].as_str().unwrap();
            assert_eq!(
                file.parent_unique_id().unwrap().to_string(),
                entry["parent_uuid"].as_str().unwrap()
            );
            assert_eq!(
                file.header().unwrap().parent_unicode_name,
                entry["parent_unicode_name"].as_str().unwrap()
            );
            // vhd-lib's single W2ku locator holds the relative path in UTF-16LE.
            let locator = &entry["locators"][0];
            assert!(
                file.parent_paths()
                    .iter()
                    .any(|p| p == locator["data"].as_str().unwrap())
            );
            let chain = VhdChain::new(vec![file, open(parent_name)]).unwrap();
            let size = chain.virtual_size();
            let content = read_all(size, |offset, buf| chain.read_at(offset, buf).unwrap());
            // The same chain, found on disk the way Xen Orchestra resolves it.
            let by_path = VhdChain::open_path(&fixtures_dir().join("vhd").join(name)).unwrap();
            assert_eq!(by_path.layers().len(), 2);
            content
        } else {
            if let Some(header) = file.header() {
                assert_eq!(
                    u64::from(header.max_table_entries),
                    entry["max_table_entries"].as_u64().unwrap()
                );
                assert_eq!(
                    header.table_offset.0,
                    entry["table_offset"].as_u64().unwrap()
                );
                let allocated: Vec<u64> = file
                    .bat()
                    .unwrap()
                    .allocated()
                    .map(|(i, _)| u64::from(i.0))
                    .collect();
                let expected: Vec<u64> = entry["allocated_blocks"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_u64().unwrap())
                    .collect();
                assert_eq!(allocated, expected, "{name}");
            }
            read_all(file.virtual_size(), |offset, buf| {
                file.read_at(offset, buf).unwrap()
            })
        };
        let expected = entry["content_sha256"].as_str().unwrap();
        assert_eq!(sha256_hex(&content), expected, "{name}: content hash");
        // The hash also equals the rebuilt writes, so the recipe and the images agree.
        let rebuilt = apply_writes(entry["virtual_size"].as_u64().unwrap(), &writes(entry));
        assert_eq!(sha256_hex(&rebuilt), expected, "{name}: rebuilt writes");
    }
}

#[test]
fn fixture_bitmaps_match_the_manifest() {
    let manifest = manifest();
    for (name, entry) in manifest["vhd"].as_object().unwrap() {
        let Some(blocks) = entry["blocks"].as_array() else {
            continue;
        };
        let file = open(name);
        for expected in blocks {
            let index = BlockIndex(u32::try_from(expected["index"].as_u64().unwrap()).unwrap());
            let block = file.read_layer_block(index).unwrap().unwrap();
            let runs: Vec<[u64; 2]> = match &block.sectors {
                None => vec![[0, 4095]],
                Some(bits) => bits
                    .runs()
                    .map(|r| [u64::from(r.start), u64::from(r.end - 1)])
                    .collect(),
            };
            let expected_runs: Vec<[u64; 2]> = expected["present_sector_runs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| [r[0].as_u64().unwrap(), r[1].as_u64().unwrap()])
                .collect();
            assert_eq!(runs, expected_runs, "{name} {index}");
            let bat_sector = file.bat().unwrap().get(index).unwrap();
            assert_eq!(
                bat_sector.0 * 512,
                expected["bitmap_offset"].as_u64().unwrap()
            );
        }
    }
}

/// The stream-shaped fixtures decode forward-only, and applying their blocks onto zeros gives
/// the recorded content (the differencing child needs its parent underneath).
#[test]
fn fixtures_decode_as_streams() {
    let manifest = manifest();
    for (name, entry) in manifest["vhd"].as_object().unwrap() {
        if entry["disk_type"].as_u64() == Some(2) {
            continue; // fixed disks have no stream form
        }
        let raw = std::fs::read(fixtures_dir().join("vhd").join(name)).unwrap();
        let size = entry["current_size"].as_u64().unwrap();
        let mut disk = match entry["parent"].as_str() {
            Some(parent) => {
                let parent = open(parent);
                read_all(size, |offset, buf| parent.read_at(offset, buf).unwrap())
            }
            None => vec![0u8; usize::try_from(size).unwrap()],
        };
        let mut decoder = StreamDecoder::new();
        let mut order = Vec::new();
        for chunk in raw.chunks(100_003) {
            let mut input = Bytes::copy_from_slice(chunk);
            while let Some(event) = decoder.decode(&mut input).unwrap() {
                if let StreamEvent::Block(block) = event {
                    order.push(u64::from(block.index.0));
                    for (offset, bytes) in block.present_extents(size) {
                        let start = usize::try_from(offset.0).unwrap();
                        disk[start..start + bytes.len()].copy_from_slice(&bytes);
                    }
                }
            }
        }
        decoder.finish().unwrap();
        let expected_order: Vec<u64> = entry["blocks_in_file_order"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        assert_eq!(order, expected_order, "{name}");
        assert_eq!(
            sha256_hex(&disk),
            entry["content_sha256"].as_str().unwrap(),
            "{name}"
        );
    }
}
