//! Reads the XVA fixtures written by Xen Orchestra and xva-img and matches the content
//! recorded in `fixtures/manifest.json`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a failed test"
)]

mod common;

use bytes::Bytes;
use common::{assemble, fixtures_dir, sha256_hex};
use futures::StreamExt as _;
use xva::model::records::{Record as _, Sr, Vbd, Vdi, Vm};
use xva::model::{ExportId, VbdType};
use xva::{
    AsyncArchiveReader, Block, ChecksumKind, Compression, CompressionFormat, Event, ReaderLimits,
};

const FIXTURES: [&str; 2] = ["xo-xva.xva", "xvaimg-sha1.xva"];

fn manifest() -> serde_json::Value {
    let text = std::fs::read_to_string(fixtures_dir().join("manifest.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn fixture(name: &str) -> Bytes {
    Bytes::from(std::fs::read(fixtures_dir().join("xva").join(name)).unwrap())
}

/// Checks a read against the manifest: one disk, its id, size and content hash.
fn check_against_manifest(name: &str, layout: &xva::ArchiveLayout, blocks: &[Block]) {
    let expected = &manifest()["xva"][name];
    assert_eq!(layout.disks.len(), 1);
    let disk = &layout.disks[0];
    assert_eq!(disk.id.as_str(), expected["vdi"].as_str().unwrap());
    assert_eq!(
        disk.virtual_size,
        expected["virtual_size"].as_u64().unwrap()
    );
    // Chunks 0 and 2 are in the archive; chunk 1 (all zero) is not. A chunk that arrived in
    // several frames comes as several blocks back to back: compare the runs they make.
    let mut runs: Vec<(u64, u64)> = Vec::new();
    for block in blocks {
        let (start, end) = (
            block.offset.get(),
            block.offset.get() + block.data.len() as u64,
        );
        match runs.last_mut() {
            Some(run) if run.1 == start => run.1 = end,
            _ => runs.push((start, end)),
        }
    }
    let starts: Vec<u64> = runs.iter().map(|run| run.0).collect();
    assert_eq!(starts, vec![0, 2 << 20], "{name}");
    let raw = assemble(disk.virtual_size, blocks, 0);
    assert_eq!(
        sha256_hex(&raw),
        expected["content_sha256"].as_str().unwrap(),
        "{name}"
    );
}

#[test]
fn both_fixtures_match_their_recorded_content() {
    for name in FIXTURES {
        let (layout, blocks) = xva::read_all(fixture(name)).unwrap();
        assert_eq!(layout.compression, CompressionFormat::None);
        check_against_manifest(name, &layout, &blocks);
    }
}

#[test]
fn fixture_model_decodes_with_xapi_typing() {
    let (layout, _) = xva::read_all(fixture("xo-xva.xva")).unwrap();
    let ova = &layout.ova;
    assert_eq!(ova.version.xapi_major, 1);
    assert_eq!(ova.version.xapi_minor, 20);
    assert_eq!(ova.version.export_vsn, 2);
    assert_eq!(ova.version.product_version, "8.2.1");

    let vm: Vm = ova
        .find(&ExportId::new("Ref:000"))
        .unwrap()
        .record()
        .unwrap();
    assert_eq!(vm.name_label, "fixture-vm");
    assert_eq!(vm.memory_static_max, 256 << 20);
    assert_eq!(vm.vbds, vec![ExportId::new("Ref:003")]);
    // XO writes power_state in lower case; enum names are case-insensitive for xapi.
    assert_eq!(vm.power_state, xva::model::PowerState::Halted);
    // Unknown fields are preserved and written back.
    assert!(vm.extra.get("snapshot_time").is_some());
    assert_eq!(Vm::from_struct(&vm.to_struct()).unwrap(), vm);

    let vdi: Vdi = ova
        .find(&ExportId::new("Ref:002"))
        .unwrap()
        .record()
        .unwrap();
    assert_eq!(vdi.uuid, "6e8891cb-624e-43e6-842c-0f668367d32f");
    assert_eq!(vdi.virtual_size, 3 << 20);
    assert!(vdi.extra.get("descriptionLabel").is_some());
    let vbd: Vbd = ova
        .find(&ExportId::new("Ref:003"))
        .unwrap()
        .record()
        .unwrap();
    assert_eq!(vbd.vbd_type, VbdType::Disk);
    assert_eq!(vbd.userdevice, "1");

    // XO's SR record is bare (name, uuid, VDIs): reading the archive works, but the typed SR
    // record lacks what xapi requires on a full restore.
    let sr = ova.find(&ExportId::new("Ref:001")).unwrap();
    assert!(matches!(
        sr.record::<Sr>(),
        Err(xva::Error::MissingField { .. })
    ));

    // Written back, the model keeps every object and every field.
    let reparsed = xva::model::OvaXml::parse(ova.to_xml().as_bytes()).unwrap();
    assert_eq!(reparsed.to_xml(), ova.to_xml());
    assert_eq!(reparsed.objects.len(), 4);
}

#[test]
fn fixtures_differ_only_in_checksum_kind() {
    // Both carry the same data; their companions say XXH64 and SHA-1 of the same chunks.
    let xo = common::tar_entries(&fixture("xo-xva.xva"));
    let sha = common::tar_entries(&fixture("xvaimg-sha1.xva"));
    assert_eq!(xo[1].1, sha[1].1);
    assert_eq!(xo[2].1, ChecksumKind::Xxhash.digest(&xo[1].1).into_bytes());
    assert_eq!(sha[2].1, ChecksumKind::Sha1.digest(&sha[1].1).into_bytes());
}

fn compress(data: &[u8], compression: Compression) -> Vec<u8> {
    match compression {
        Compression::Gzip { level } => {
            use std::io::Write as _;
            let mut encoder =
                flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level));
            encoder.write_all(data).unwrap();
            encoder.finish().unwrap()
        }
        Compression::Zstd { level } => zstd::encode_all(data, level).unwrap(),
        Compression::None => data.to_vec(),
    }
}

#[tokio::test]
async fn compressed_fixtures_arrive_in_small_frames() {
    for name in FIXTURES {
        for (compression, format) in [
            (Compression::GZIP, CompressionFormat::Gzip),
            (Compression::ZSTD, CompressionFormat::Zstd),
            (Compression::None, CompressionFormat::None),
        ] {
            let packed = compress(&fixture(name), compression);
            // An HTTP body: frames of odd sizes.
            let frames: Vec<Result<Bytes, std::io::Error>> = packed
                .chunks(7919)
                .map(|piece| Ok(Bytes::copy_from_slice(piece)))
                .collect();
            let events: Vec<Event> =
                xva::read_stream(futures::stream::iter(frames), ReaderLimits::default())
                    .map(|event| event.unwrap())
                    .collect()
                    .await;
            let Event::Layout(layout) = &events[0] else {
                panic!("no layout first")
            };
            assert_eq!(layout.compression, format);
            let blocks: Vec<Block> = events
                .iter()
                .filter_map(|event| match event {
                    Event::Block(block) => Some(block.clone()),
                    _ => None,
                })
                .collect();
            check_against_manifest(name, layout, &blocks);
            assert!(matches!(events[events.len() - 2], Event::DiskEnd(_)));
            assert_eq!(events.last(), Some(&Event::End));
        }
    }
}

#[tokio::test]
async fn fixtures_read_from_files() {
    for name in FIXTURES {
        let file = tokio::fs::File::open(fixtures_dir().join("xva").join(name))
            .await
            .unwrap();
        let mut reader = AsyncArchiveReader::new(file);
        let mut layout = None;
        let mut blocks = Vec::new();
        while let Some(event) = reader.next_event().await.unwrap() {
            match event {
                Event::Layout(found) => layout = Some(found),
                Event::Block(block) => blocks.push(block),
                _ => {}
            }
        }
        check_against_manifest(name, &layout.unwrap(), &blocks);
    }
}
