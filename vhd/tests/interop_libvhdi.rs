//! Interop with libvhdi (`pyvhdi`), the reference reader for chains (spec §17.4): it reads our
//! differencing chains, including partial bitmaps, with the content we read ourselves.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a failed test"
)]

mod common;

use std::fs::File;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use common::{LayerModel, bitmap, make_block, read_all, sha256_hex};
use uuid::Uuid;
use vhd::{
    BitmapMode, Block, BlockIndex, CreateOptions, DiskKind, LayoutProfile, ParentIdentity,
    StreamEncoder, StreamSpec, VhdChain, VhdFile, VhdTimestamp, VhdWriter,
};

const SIZE: u64 = (8 << 20) + (1 << 20);

/// Opens [leaf, ..., root] with pyvhdi, links parents, prints media size and content sha256.
const PYVHDI_READ: &str = r#"
import hashlib, sys, pyvhdi
paths = sys.argv[1:]
files = [pyvhdi.file() for _ in paths]
for f, p in zip(files, paths):
    f.open(p)
for child, parent in zip(files, files[1:]):
    child.set_parent(parent)
leaf = files[0]
size = leaf.get_media_size()
digest = hashlib.sha256()
offset = 0
while offset < size:
    n = min(1 << 20, size - offset)
    digest.update(leaf.read_buffer_at_offset(n, offset))
    offset += n
print(size, digest.hexdigest())
"#;

fn pyvhdi_read(python: &Path, chain: &[PathBuf]) -> (u64, String) {
    let mut args = vec!["-c".to_owned(), PYVHDI_READ.to_owned()];
    args.extend(chain.iter().map(|p| p.display().to_string()));
    let out = String::from_utf8(test_peers::run_ok(python, args)).unwrap();
    let (size, hash) = out.trim().split_once(' ').unwrap();
    (size.parse().unwrap(), hash.to_owned())
}

fn write_layer(path: &Path, model: &LayerModel, unique_id: Uuid, kind: DiskKind) {
    let file = File::options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)
        .unwrap();
    let mut writer = VhdWriter::create(
        file,
        &CreateOptions {
            virtual_size: model.size,
            unique_id,
            kind,
            profile: LayoutProfile {
                // blktap's three locators, so every lookup path is exercised.
                locator: vhd::LocatorStyle::MacXAndWindows,
                ..LayoutProfile::native(VhdTimestamp::now())
            },
        },
    )
    .unwrap();
    for block in model.blocks.values() {
        writer.write_block(block).unwrap();
    }
    writer.finish().unwrap();
}

fn parent_of(unique_id: Uuid, name: &str) -> DiskKind {
    DiskKind::Differencing(ParentIdentity {
        unique_id,
        timestamp: VhdTimestamp::now(),
        path: name.to_owned(),
    })
}

fn filled(index: u32, byte: u8, sectors: Option<vhd::SectorBitmap>) -> Block {
    let data = Bytes::from(vec![byte; 2 << 20]);
    match sectors {
        None => Block::full(BlockIndex(index), data),
        Some(bits) => Block::partial(BlockIndex(index), data, bits),
    }
}

#[test]
fn pyvhdi_reads_our_differencing_chains_like_we_do() {
    let Some(python) = test_peers::require_python_module("pyvhdi") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (root_id, mid_id, leaf_id) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());

    // Root: block 0 all 0x11 (the §17.4 vector), block 2 patterned, block 4 (partial) full.
    let root = LayerModel {
        size: SIZE,
        blocks: [
            (0, filled(0, 0x11, None)),
            (2, make_block(2, 40, None)),
            (4, make_block(4, 41, None)),
        ]
        .into_iter()
        .collect(),
    };
    // Middle: block 0 marks only sectors 0–7 (0xAA), so sector 8 must read the root's 0x11;
    // block 1 (absent below) partially; block 2 sparse runs.
    let mid = LayerModel {
        size: SIZE,
        blocks: [
            (0, filled(0, 0xAA, Some(bitmap(&[(0, 8)])))),
            (
                1,
                make_block(1, 50, Some(bitmap(&[(100, 200), (4000, 4096)]))),
            ),
            (
                2,
                make_block(2, 51, Some(bitmap(&[(3, 8), (2045, 2056), (4095, 4096)]))),
            ),
        ]
        .into_iter()
        .collect(),
    };
    // Leaf: a stream encoded in partial-bitmap mode, saved as a file.
    //
    // Every run of set bits ends on a bitmap byte boundary (8 sectors): libvhdi 20210425
    // extends a run that ends mid-byte to the end of that byte, reading the child's zero-filled
    // sectors instead of the parent's (seen with runs 0..1 and 2047..2049; runs starting
    // mid-byte are fine). Deltas from xapi and CBT are 64 KiB-granular, so this never matters
    // for them; our own reader resolves single sectors (see the roundtrip property tests).
    let leaf = LayerModel {
        size: SIZE,
        blocks: [
            (2, make_block(2, 60, Some(bitmap(&[(1001, 1008)])))),
            (4, make_block(4, 61, Some(bitmap(&[(5, 16)])))),
        ]
        .into_iter()
        .collect(),
    };
    let root_path = dir.path().join("root.vhd");
    let mid_path = dir.path().join("mid.vhd");
    let leaf_path = dir.path().join("leaf.vhd");
    write_layer(&root_path, &root, root_id, DiskKind::Dynamic);
    write_layer(&mid_path, &mid, mid_id, parent_of(root_id, "root.vhd"));
    let encoder = StreamEncoder::new(StreamSpec {
        virtual_size: SIZE,
        unique_id: leaf_id,
        kind: parent_of(mid_id, "mid.vhd"),
        blocks: leaf.blocks.keys().copied().map(BlockIndex).collect(),
        profile: LayoutProfile::native(VhdTimestamp::now()),
        bitmaps: BitmapMode::Partial,
    })
    .unwrap();
    vhd::encode_to_writer(
        encoder,
        leaf.block_list().into_iter().map(Ok),
        File::create(&leaf_path).unwrap(),
    )
    .unwrap();

    let expected_mid = mid.content_over(Some(&root.dynamic_content()));
    let expected_leaf = leaf.content_over(Some(&expected_mid));
    // Sector 8 of block 0 comes from the root, sectors 0–7 from the middle layer.
    assert_eq!(expected_mid[8 * 512], 0x11);
    assert_eq!(expected_mid[7 * 512], 0xAA);

    let mid_file = VhdFile::open(File::open(&mid_path).unwrap()).unwrap();
    assert_eq!(
        mid_file.parent_paths(),
        vec!["root.vhd".to_owned(), "./root.vhd".to_owned()]
    );
    let ours = VhdChain::open_path(&leaf_path).unwrap();
    assert_eq!(ours.layers().len(), 3);
    let our_content = read_all(SIZE, |o, b| ours.read_at(o, b).unwrap());
    assert!(our_content == expected_leaf);

    let (size, hash) = pyvhdi_read(&python, &[leaf_path, mid_path.clone(), root_path.clone()]);
    assert_eq!(size, SIZE);
    assert_eq!(
        hash,
        sha256_hex(&expected_leaf),
        "pyvhdi: three-layer chain"
    );
    let (_, hash) = pyvhdi_read(&python, &[mid_path, root_path.clone()]);
    assert_eq!(hash, sha256_hex(&expected_mid), "pyvhdi: two-layer chain");
    let (_, hash) = pyvhdi_read(&python, std::slice::from_ref(&root_path));
    assert_eq!(
        hash,
        sha256_hex(&root.dynamic_content()),
        "pyvhdi: dynamic root"
    );

    // A coalesced copy of the chain reads the same in pyvhdi.
    let coalesced_path = dir.path().join("full.vhd");
    let file = File::options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&coalesced_path)
        .unwrap();
    vhd::merge::coalesce(
        &ours,
        file,
        Uuid::new_v4(),
        LayoutProfile::native(VhdTimestamp::now()),
    )
    .unwrap()
    .finish()
    .unwrap();
    let (_, hash) = pyvhdi_read(&python, std::slice::from_ref(&coalesced_path));
    assert_eq!(hash, sha256_hex(&expected_leaf), "pyvhdi: coalesced chain");
    let coalesced = VhdFile::open(File::open(&coalesced_path).unwrap()).unwrap();
    assert_eq!(coalesced.disk_type(), vhd::DiskType::Dynamic);
}
