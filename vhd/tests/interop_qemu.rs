//! Interop with qemu's `vpc` driver (spec §17.3): qemu-img sees our dynamic VHDs as the raw
//! source, and we read what qemu-img writes (dynamic and fixed).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a failed test"
)]

mod common;

use std::fs::File;
use std::path::Path;

use bytes::Bytes;
use common::{apply_writes, read_all, sha256_hex};
use uuid::Uuid;
use vhd::{
    BitmapMode, Block, BlockIndex, BlockSet, CreateOptions, DiskKind, LayoutProfile, StreamEncoder,
    StreamSpec, VhdFile, VhdTimestamp, VhdWriter,
};

/// 9 MiB + 3 sectors: blocks 1, 2 and 4 (the partial last one) hold data, 0 and 3 are zero.
const SIZE: u64 = (9 << 20) + 1536;

fn raw_source() -> Vec<u8> {
    apply_writes(
        SIZE,
        &[
            ("QA-1".to_owned(), 2_097_152 + 4096, 70_000),
            ("QA-2".to_owned(), 4_194_303 - 100, 200),
            ("QA-3".to_owned(), SIZE - 3000, 3000),
        ],
    )
}

/// Non-zero 2 MiB blocks of `raw`, whole (the last one zero-padded).
fn nonzero_blocks(raw: &[u8]) -> Vec<Block> {
    raw.chunks(2 << 20)
        .enumerate()
        .filter(|(_, chunk)| chunk.iter().any(|b| *b != 0))
        .map(|(i, chunk)| {
            let mut data = chunk.to_vec();
            data.resize(2 << 20, 0);
            Block::full(BlockIndex(u32::try_from(i).unwrap()), Bytes::from(data))
        })
        .collect()
}

fn image_opts(path: &Path) -> String {
    format!(
        "driver=vpc,force_size_calc=current_size,file.filename={}",
        path.display()
    )
}

fn assert_qemu_sees_raw(qemu_img: &Path, vhd: &Path, raw: &Path) {
    // rc 0 = identical; run_ok fails the test on 1 (differ) or 2 (error).
    test_peers::run_ok(
        qemu_img,
        [
            "compare".to_owned(),
            "--image-opts".to_owned(),
            format!("driver=raw,file.filename={}", raw.display()),
            image_opts(vhd),
        ],
    );
    let info = test_peers::run_ok(
        qemu_img,
        [
            "info".to_owned(),
            "--output=json".to_owned(),
            "--image-opts".to_owned(),
            image_opts(vhd),
        ],
    );
    let info: serde_json::Value = serde_json::from_slice(&info).unwrap();
    assert_eq!(info["virtual-size"].as_u64(), Some(SIZE));
    // Without the override qemu ≥ 10 also sizes a `caml` disk from its current size.
    test_peers::run_ok(
        qemu_img,
        [
            "compare".as_ref(),
            "-f".as_ref(),
            "raw".as_ref(),
            "-F".as_ref(),
            "vpc".as_ref(),
            raw.as_os_str(),
            vhd.as_os_str(),
        ],
    );
}

#[test]
fn qemu_img_compare_says_our_dynamic_vhds_equal_the_raw_source() {
    let Some(qemu_img) = test_peers::require("qemu-img") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let raw = raw_source();
    let raw_path = dir.path().join("in.raw");
    std::fs::write(&raw_path, &raw).unwrap();
    let blocks = nonzero_blocks(&raw);
    assert_eq!(
        blocks.iter().map(|b| b.index.0).collect::<Vec<_>>(),
        vec![1, 2, 4]
    );

    // A file from the writer (our layout).
    let file_path = dir.path().join("writer.vhd");
    let mut writer = VhdWriter::create(
        File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&file_path)
            .unwrap(),
        &CreateOptions {
            virtual_size: SIZE,
            unique_id: Uuid::new_v4(),
            kind: DiskKind::Dynamic,
            profile: LayoutProfile::native(VhdTimestamp::now()),
        },
    )
    .unwrap();
    for block in &blocks {
        writer.write_block(block).unwrap();
    }
    writer.finish().unwrap();
    assert_qemu_sees_raw(&qemu_img, &file_path, &raw_path);

    // A stream in xapi's export layout, saved as a file.
    let stream_path = dir.path().join("stream.vhd");
    let encoder = StreamEncoder::new(StreamSpec {
        virtual_size: SIZE,
        unique_id: Uuid::new_v4(),
        kind: DiskKind::Dynamic,
        blocks: blocks.iter().map(|b| b.index).collect::<BlockSet>(),
        profile: LayoutProfile::xapi(),
        bitmaps: BitmapMode::Full,
    })
    .unwrap();
    let written = vhd::encode_to_writer(
        encoder,
        blocks.iter().cloned().map(Ok),
        File::create(&stream_path).unwrap(),
    )
    .unwrap();
    assert_eq!(written, std::fs::metadata(&stream_path).unwrap().len());
    assert_qemu_sees_raw(&qemu_img, &stream_path, &raw_path);

    // qemu's map agrees on which blocks are allocated.
    let map = test_peers::run_ok(
        &qemu_img,
        [
            "map".to_owned(),
            "--output=json".to_owned(),
            "--image-opts".to_owned(),
            image_opts(&stream_path),
        ],
    );
    let map: serde_json::Value = serde_json::from_slice(&map).unwrap();
    let data_blocks: Vec<u64> = map
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["data"].as_bool() == Some(true))
        .flat_map(|e| {
            let start = e["start"].as_u64().unwrap();
            let end = start + e["length"].as_u64().unwrap();
            (start >> 21)..end.div_ceil(2 << 20)
        })
        .collect();
    assert_eq!(data_blocks, vec![1, 2, 4]);
}

fn read_ours(path: &Path) -> (VhdFile<File>, Vec<u8>) {
    let file = VhdFile::open(File::open(path).unwrap()).unwrap();
    let content = read_all(file.virtual_size(), |o, b| file.read_at(o, b).unwrap());
    (file, content)
}

#[test]
fn we_read_qemu_img_dynamic_and_fixed_vhds() {
    let Some(qemu_img) = test_peers::require("qemu-img") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let raw = raw_source();
    let raw_path = dir.path().join("in.raw");
    std::fs::write(&raw_path, &raw).unwrap();
    let convert = |subformat: &str, name: &str, force_size: bool| {
        let out = dir.path().join(name);
        let options = if force_size {
            format!("subformat={subformat},force_size=on")
        } else {
            format!("subformat={subformat}")
        };
        test_peers::run_ok(
            &qemu_img,
            [
                "convert".as_ref(),
                "-f".as_ref(),
                "raw".as_ref(),
                "-O".as_ref(),
                "vpc".as_ref(),
                "-o".as_ref(),
                options.as_ref(),
                raw_path.as_os_str(),
                out.as_os_str(),
            ],
        );
        out
    };

    for (subformat, force_size) in [
        ("dynamic", true),
        ("fixed", true),
        ("dynamic", false),
        ("fixed", false),
    ] {
        let path = convert(
            subformat,
            &format!("{subformat}-{force_size}.vhd"),
            force_size,
        );
        let (file, content) = read_ours(&path);
        let expected_type = if subformat == "fixed" {
            vhd::DiskType::Fixed
        } else {
            vhd::DiskType::Dynamic
        };
        assert_eq!(file.disk_type(), expected_type);
        if force_size {
            assert_eq!(&file.footer().creator.application, b"qem2");
            assert_eq!(content, raw, "{subformat}: content");
        } else {
            // qemu rounds the size up to the CHS product; the extra tail reads as zeros.
            assert_eq!(&file.footer().creator.application, b"qemu");
            assert_eq!(file.virtual_size(), file.footer().geometry.chs_size());
            assert_eq!(&content[..raw.len()], &raw[..], "{subformat}: content");
            assert!(content[raw.len()..].iter().all(|b| *b == 0));
        }
        // Same bytes as qemu's own conversion back to raw.
        let back = dir.path().join(format!("{subformat}-{force_size}.raw"));
        test_peers::run_ok(
            &qemu_img,
            [
                "convert".to_owned(),
                "--image-opts".to_owned(),
                image_opts(&path),
                "-O".to_owned(),
                "raw".to_owned(),
                back.display().to_string(),
            ],
        );
        assert_eq!(
            sha256_hex(&std::fs::read(&back).unwrap()),
            sha256_hex(&content)
        );
    }

    // qemu-io writes into a fresh dynamic image (blocks appended, footer moved).
    let Some(qemu_io) = test_peers::require("qemu-io") else {
        return;
    };
    let path = dir.path().join("io.vhd");
    test_peers::run_ok(
        &qemu_img,
        [
            "create".as_ref(),
            "-f".as_ref(),
            "vpc".as_ref(),
            "-o".as_ref(),
            "subformat=dynamic,force_size=on".as_ref(),
            path.as_os_str(),
            "10M".as_ref(),
        ],
    );
    test_peers::run_ok(
        &qemu_io,
        [
            "-f".as_ref(),
            "vpc".as_ref(),
            "-c".as_ref(),
            "write -P 0xab 1M 64k".as_ref(),
            "-c".as_ref(),
            "write -P 0xcd 4095k 2k".as_ref(),
            path.as_os_str(),
        ],
    );
    let (file, content) = read_ours(&path);
    assert_eq!(file.virtual_size(), 10 << 20);
    assert_eq!(
        file.allocated_blocks()
            .iter()
            .map(|b| b.0)
            .collect::<Vec<_>>(),
        vec![0, 1, 2]
    );
    let mut expected = vec![0u8; 10 << 20];
    expected[1 << 20..(1 << 20) + (64 << 10)].fill(0xab);
    expected[4095 << 10..(4095 << 10) + 2048].fill(0xcd);
    assert!(content == expected);
}
