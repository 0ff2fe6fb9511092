//! Hostile input: truncation, huge declared sizes, bad checksums, misplaced blocks, parent
//! loops. Every case must give a typed error, never a panic, a hang or a huge allocation.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a failed test"
)]

mod common;

use bytes::Bytes;
use common::{LayerModel, make_block};
use uuid::Uuid;
use vhd::{
    BitmapMode, BlockIndex, CreateOptions, DiskKind, DynamicHeader, Error, Footer, LayoutProfile,
    ParentIdentity, StreamDecoder, StreamEncoder, StreamSpec, VhdChain, VhdFile, VhdTimestamp,
    VhdWriter, vhd_checksum,
};

/// A 6 MiB dynamic stream (xapi layout) with blocks 0 and 2.
fn stream() -> Vec<u8> {
    let model = LayerModel {
        size: 6 << 20,
        blocks: [(0, make_block(0, 1, None)), (2, make_block(2, 2, None))]
            .into_iter()
            .collect(),
    };
    let encoder = StreamEncoder::new(StreamSpec {
        virtual_size: model.size,
        unique_id: Uuid::from_u128(1),
        kind: DiskKind::Dynamic,
        blocks: model.blocks.keys().copied().map(BlockIndex).collect(),
        profile: LayoutProfile::xapi(),
        bitmaps: BitmapMode::Full,
    })
    .unwrap();
    encoder
        .into_pieces(model.block_list().into_iter().map(Ok))
        .collect::<vhd::Result<Vec<Bytes>>>()
        .unwrap()
        .concat()
}

fn decode(bytes: &[u8]) -> vhd::Result<usize> {
    vhd::fuzzing::stream(&[[17u8].as_slice(), bytes].concat())
}

/// Rewrites a footer in place (both copies when `both`) after `edit`, with a valid checksum.
fn edit_footer(bytes: &mut [u8], both: bool, edit: impl Fn(&mut [u8])) {
    let len = bytes.len();
    let mut targets = vec![0];
    if both {
        targets.push(len - 512);
    }
    for at in targets {
        edit(&mut bytes[at..at + 512]);
        let sum = vhd_checksum(&bytes[at..at + 512], 64).to_be_bytes();
        bytes[at + 64..at + 68].copy_from_slice(&sum);
    }
}

fn edit_header(bytes: &mut [u8], edit: impl Fn(&mut [u8])) {
    edit(&mut bytes[512..1536]);
    let sum = vhd_checksum(&bytes[512..1536], 36).to_be_bytes();
    bytes[548..552].copy_from_slice(&sum);
}

#[test]
fn truncated_streams_and_files_fail_cleanly() {
    let good = stream();
    assert_eq!(decode(&good).unwrap(), 6);
    // Cut inside every structure: footer, header, gap, BAT, bitmap, data, trailing footer.
    for cut in [
        0,
        1,
        511,
        512,
        1000,
        1536,
        2047,
        2050,
        2560,
        3000,
        3072,
        1 << 20,
        good.len() - 1,
    ] {
        assert!(
            matches!(decode(&good[..cut]), Err(Error::Truncated { .. })),
            "cut {cut}"
        );
        match VhdFile::open(&good[..cut]) {
            // A file that lost only its trailing footer still opens from the head copy.
            Ok(_) => assert_eq!(cut, good.len() - 1, "opened a file truncated at {cut}"),
            Err(error) => assert!(
                matches!(
                    error,
                    Error::Truncated { .. }
                        | Error::BadCookie { .. }
                        | Error::BadChecksum { .. }
                        | Error::BatEntryOutOfRange { .. }
                ),
                "cut {cut}: {error:?}"
            ),
        }
    }
}

#[test]
fn bad_checksums_are_typed_errors() {
    let good = stream();
    let mut bad = good.clone();
    bad[100] ^= 0xFF; // reserved footer byte: checksum no longer matches
    assert!(matches!(decode(&bad), Err(Error::BadChecksum { .. })));
    let mut bad = good.clone();
    bad[600] ^= 0xFF; // header
    assert!(matches!(decode(&bad), Err(Error::BadChecksum { .. })));
    let mut bad = good.clone();
    let len = bad.len();
    bad[len - 10] ^= 0xFF; // trailing footer
    assert!(matches!(
        decode(&bad),
        Err(Error::BadChecksum {
            structure: vhd::Structure::TrailingFooter,
            ..
        })
    ));
    // A file whose trailing footer is damaged falls back to the head copy.
    let file = VhdFile::open(bad).unwrap();
    assert_eq!(file.virtual_size(), 6 << 20);
    // Both copies damaged: refused.
    let mut bad = good;
    bad[100] ^= 0xFF;
    bad[len - 10] ^= 0xFF;
    assert!(matches!(VhdFile::open(bad), Err(Error::BadChecksum { .. })));
}

#[test]
fn huge_declared_sizes_are_refused_before_allocating() {
    let good = stream();
    // current size 2^63: beyond the 2 TiB − 8 KiB limit.
    let mut bad = good.clone();
    edit_footer(&mut bad, true, |f| {
        f[48..56].copy_from_slice(&(1u64 << 63).to_be_bytes())
    });
    assert!(matches!(decode(&bad), Err(Error::DiskTooLarge { .. })));
    assert!(matches!(
        VhdFile::open(bad),
        Err(Error::DiskTooLarge { .. })
    ));
    // A size just within the limit with a tiny table: the BAT does not cover the disk.
    let mut bad = good.clone();
    edit_footer(&mut bad, true, |f| {
        f[48..56].copy_from_slice(&vhd::MAX_VIRTUAL_SIZE.to_be_bytes());
    });
    assert!(matches!(
        decode(&bad),
        Err(Error::InvalidField {
            field: "max_table_entries",
            ..
        })
    ));
    // Max table entries 2^32 − 1 on a 6 MiB disk: only the 3 used entries are read.
    let mut odd = good.clone();
    edit_header(&mut odd, |h| {
        h[28..32].copy_from_slice(&u32::MAX.to_be_bytes())
    });
    assert_eq!(decode(&odd).unwrap(), 6);
    // A huge header offset: a stream refuses at once to skip that far; a file is too short.
    let mut bad = good.clone();
    edit_footer(&mut bad, true, |f| {
        f[16..24].copy_from_slice(&(1u64 << 62).to_be_bytes())
    });
    assert!(matches!(
        decode(&bad),
        Err(Error::GapTooLarge {
            target: 0x4000_0000_0000_0000,
            position: 512,
            ..
        })
    ));
    assert!(matches!(VhdFile::open(bad), Err(Error::Truncated { .. })));
    // The writer and encoder refuse sizes beyond the limit with a clear error.
    let too_big = vhd::MAX_VIRTUAL_SIZE + 512;
    let err = VhdWriter::create(
        Vec::new(),
        &CreateOptions {
            virtual_size: too_big,
            unique_id: Uuid::nil(),
            kind: DiskKind::Dynamic,
            profile: LayoutProfile::xapi(),
        },
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("virtual size {too_big} exceeds the VHD limit of 2199023247360 bytes")
    );
}

#[test]
fn misplaced_blocks_are_refused() {
    let good = stream();
    let bat = 2048;
    let set_entry = |bytes: &mut Vec<u8>, index: usize, sector: u32| {
        bytes[bat + 4 * index..bat + 4 * index + 4].copy_from_slice(&sector.to_be_bytes());
    };
    // Block 0 pointing into the header.
    let mut bad = good.clone();
    set_entry(&mut bad, 0, 2);
    assert!(matches!(
        decode(&bad),
        Err(Error::BatEntryOutOfRange { .. })
    ));
    // Block 2 overlapping block 0.
    let first = u32::from_be_bytes(good[bat..bat + 4].try_into().unwrap());
    let mut bad = good.clone();
    set_entry(&mut bad, 2, first + 8);
    assert!(matches!(decode(&bad), Err(Error::OverlappingBlocks { .. })));
    // Block 1 far beyond the end of the file: a stream refuses to skip a TiB to reach it.
    let mut bad = good.clone();
    set_entry(&mut bad, 1, 0x7FFF_FFFF);
    assert!(matches!(
        decode(&bad),
        Err(Error::GapTooLarge {
            structure: vhd::Structure::Bitmap,
            max: vhd::DEFAULT_MAX_SKIPPED_BYTES,
            ..
        })
    ));
    assert!(matches!(
        VhdFile::open(bad),
        Err(Error::BatEntryOutOfRange { .. })
    ));
    // Header placed behind the footer: a forward-only reader cannot go back.
    let mut bad = good.clone();
    edit_footer(&mut bad, true, |f| {
        f[16..24].copy_from_slice(&0u64.to_be_bytes())
    });
    assert!(matches!(decode(&bad), Err(Error::BackwardTarget { .. })));
    // BAT placed inside the header.
    let mut bad = good.clone();
    edit_header(&mut bad, |h| {
        h[16..24].copy_from_slice(&1024u64.to_be_bytes())
    });
    assert!(matches!(decode(&bad), Err(Error::BackwardTarget { .. })));
    // Bytes after the trailing footer.
    let mut bad = good;
    bad.extend_from_slice(&[0; 512]);
    assert!(matches!(decode(&bad), Err(Error::TrailingData { .. })));
}

#[test]
fn unknown_types_versions_and_locators_are_refused() {
    let good = stream();
    let mut bad = good.clone();
    edit_footer(&mut bad, true, |f| {
        f[60..64].copy_from_slice(&5u32.to_be_bytes())
    });
    assert!(matches!(
        decode(&bad),
        Err(Error::UnknownDiskType { found: 5 })
    ));
    let mut bad = good.clone();
    edit_footer(&mut bad, true, |f| {
        f[12..16].copy_from_slice(&0x0002_0000u32.to_be_bytes())
    });
    assert!(matches!(
        decode(&bad),
        Err(Error::UnsupportedVersion { .. })
    ));
    let mut bad = good.clone();
    edit_header(&mut bad, |h| h[576..580].copy_from_slice(b"XXXX"));
    assert!(matches!(
        decode(&bad),
        Err(Error::UnknownLocatorCode { .. })
    ));
    let mut bad = good.clone();
    edit_header(&mut bad, |h| {
        h[32..36].copy_from_slice(&(1u32 << 20).to_be_bytes())
    });
    assert!(matches!(
        decode(&bad),
        Err(Error::UnsupportedBlockSize { .. })
    ));
    let mut fixed = good;
    edit_footer(&mut fixed, true, |f| {
        f[60..64].copy_from_slice(&2u32.to_be_bytes())
    });
    assert!(matches!(
        decode(&fixed),
        Err(Error::UnsupportedDiskType { .. })
    ));
    // Footer and header parsers on garbage.
    assert!(matches!(
        Footer::parse(&[0u8; 512]),
        Err(Error::BadCookie { .. })
    ));
    assert!(matches!(
        DynamicHeader::parse(&[0u8; 10]),
        Err(Error::Truncated { .. })
    ));
}

fn differencing(unique_id: u128, parent: u128) -> VhdFile<Vec<u8>> {
    let file = VhdWriter::create(
        Vec::new(),
        &CreateOptions {
            virtual_size: 2 << 20,
            unique_id: Uuid::from_u128(unique_id),
            kind: DiskKind::Differencing(ParentIdentity {
                unique_id: Uuid::from_u128(parent),
                timestamp: VhdTimestamp(0),
                path: format!("{parent}.vhd"),
            }),
            profile: LayoutProfile::native(VhdTimestamp(0)),
        },
    )
    .unwrap()
    .finish()
    .unwrap();
    VhdFile::open(file).unwrap()
}

#[test]
fn parent_chain_loops_and_gaps_are_refused() {
    // 1 → 2 → 1: a loop, found without asking for more than one parent per layer.
    let mut asked = 0;
    let result = VhdChain::open_with(differencing(1, 2), |child| {
        asked += 1;
        assert!(asked < 10, "loop not detected");
        let parent = child.parent_unique_id().unwrap().as_u128();
        Ok(differencing(parent, if parent == 2 { 1 } else { 2 }))
    });
    assert!(matches!(result, Err(Error::ChainLoop { .. })));
    // A self-parented disk.
    let result = VhdChain::open_with(differencing(5, 5), |_| Ok(differencing(5, 5)));
    assert!(matches!(result, Err(Error::ChainLoop { .. })));
    // An explicit list with a repeated disk.
    assert!(matches!(
        VhdChain::new(vec![
            differencing(1, 2),
            differencing(2, 1),
            differencing(1, 2)
        ]),
        Err(Error::ChainLoop { .. })
    ));
    // An endless chain of distinct disks stops at the depth limit.
    let result = VhdChain::open_with(differencing(1, 2), |child| {
        let parent = child.parent_unique_id().unwrap().as_u128();
        Ok(differencing(parent, parent + 1))
    });
    assert!(matches!(result, Err(Error::ChainTooDeep { .. })));
    // Wrong parent, missing parent, reading a child alone.
    assert!(matches!(
        VhdChain::new(vec![differencing(1, 2), differencing(3, 4)]),
        Err(Error::ParentMismatch { .. })
    ));
    assert!(matches!(
        VhdChain::new(vec![differencing(1, 2)]),
        Err(Error::MissingParent { .. })
    ));
    let mut buf = [0u8; 512];
    assert!(matches!(
        differencing(1, 2).read_at(vhd::ByteOffset(0), &mut buf),
        Err(Error::MissingParent { .. })
    ));
}

#[test]
fn out_of_bounds_reads_and_malformed_blocks_are_errors() {
    let file = VhdFile::open(stream()).unwrap();
    let mut buf = [0u8; 1024];
    assert!(matches!(
        file.read_at(vhd::ByteOffset((6 << 20) - 512), &mut buf),
        Err(Error::OutOfBounds { .. })
    ));
    assert!(matches!(
        file.read_at(vhd::ByteOffset(u64::MAX), &mut buf),
        Err(Error::OutOfBounds { .. })
    ));
    let mut writer = VhdWriter::create(
        Vec::new(),
        &CreateOptions {
            virtual_size: 2 << 20,
            unique_id: Uuid::nil(),
            kind: DiskKind::Dynamic,
            profile: LayoutProfile::xapi(),
        },
    )
    .unwrap();
    let short = vhd::Block::full(BlockIndex(0), Bytes::from_static(b"short"));
    assert!(matches!(
        writer.write_block(&short),
        Err(Error::InvalidBlock { .. })
    ));
    let mut decoder = StreamDecoder::new();
    let mut garbage = Bytes::from_static(&[0u8; 600]);
    assert!(decoder.decode(&mut garbage).is_err());
    // A failed decoder refuses to continue rather than resynchronising on garbage.
    assert!(matches!(
        decoder.decode(&mut Bytes::new()),
        Err(Error::OutOfOrder { .. })
    ));
}
