//! Commented test vectors: spec examples (nbd-cbt.md §4.2, §4.6, §6.9; xenapi.md §5.2) and error cases.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a failed test"
)]

use cbt::{
    BlockStatusBuilder, ByteExtent, ByteLen, ByteOffset, CbtBlockIndex, ChangedBlocks, Error,
    Granularity, ReadPlanConfig, ReadRequest, StatusRule, VhdBlockIndex,
};

const KIB64: u64 = 65536;
const MIB: u64 = 1 << 20;

fn changed(map: &ChangedBlocks) -> Vec<u64> {
    map.changed_blocks().map(CbtBlockIndex::get).collect()
}

/// nbd-cbt.md §6.9: bits {0, 9, 33, 64} in 13 bytes are `80 40 00 00 40 00 00 00 80 00 00 00 00`,
/// base64 `gEAAAEAAAACAAAAAAA==`. 13 bytes hold 104 bits: a disk of 97..=104 blocks needs all 13.
#[test]
fn golden_vector_from_the_spec() {
    let text = "gEAAAEAAAACAAAAAAA==";
    let size = ByteLen::new(104 * KIB64);
    let map = ChangedBlocks::from_xapi_base64(text, size).unwrap();
    assert_eq!(changed(&map), [0, 9, 33, 64]);
    assert_eq!(
        map.to_bitmap_bytes(),
        [0x80, 0x40, 0, 0, 0x40, 0, 0, 0, 0x80, 0, 0, 0, 0]
    );
    assert_eq!(map.to_base64(), text);
    // Bits 0 and 9 are VHD block 0, bit 33 block 1, bit 64 block 2 (32 bits per 2 MiB block).
    let blocks: Vec<u32> = map.vhd_blocks().unwrap().map(VhdBlockIndex::get).collect();
    assert_eq!(blocks, [0, 1, 2]);
}

/// xenapi.md §5.2: 4 MiB disk (64 blocks, 8 bytes), blocks {0, 9, 33} → `gEAAAEAAAAA=`.
#[test]
fn xenapi_worked_example_encodes_from_writes() {
    let mut map = ChangedBlocks::new_xapi(ByteLen::new(4 * MIB)).unwrap();
    for block in [0, 9, 33] {
        map.mark_changed(ByteExtent::at(block * KIB64 + 100, 1).unwrap())
            .unwrap();
    }
    assert_eq!(map.to_base64(), "gEAAAEAAAAA=");
    assert_eq!(map.changed_bytes(), ByteLen::new(3 * KIB64));
}

/// The XenServer guide's "01100000" means blocks 1 and 2 changed: MSB-first, byte 0x60.
#[test]
fn bit_order_is_msb_first() {
    let map =
        ChangedBlocks::from_bitmap_bytes(&[0x60], ByteLen::new(8 * KIB64), Granularity::XAPI_CBT)
            .unwrap();
    assert_eq!(changed(&map), [1, 2]);
    let runs: Vec<_> = map.byte_extents().collect();
    assert_eq!(runs, [ByteExtent::at(KIB64, 2 * KIB64).unwrap()]);
}

/// nbd-cbt.md §4.6 golden vector: qemu-nbd, 256 MiB, bitmap `bm0`, dirty extents
/// 1048576+65536, 10485760+131072, 209715200+65536 → bits {16, 160, 161, 3200}, 512-byte bitmap
/// with byte 2 = 0x80, byte 20 = 0xC0, byte 400 = 0x80 → 2 MiB blocks {0, 5, 100}.
#[test]
fn qemu_dirty_bitmap_golden_vector() {
    let size = 256 * MIB;
    // (length, flags) as qemu-nbd sends them: clean gaps have flags 0, dirty extents flag 1.
    let descriptors = [
        (MIB, 0),
        (KIB64, 1),
        (10 * MIB - MIB - KIB64, 0),
        (2 * KIB64, 1),
        (200 * MIB - 10 * MIB - 2 * KIB64, 0),
        (KIB64, 1),
        (size - 200 * MIB - KIB64, 0),
    ];
    let mut builder = BlockStatusBuilder::new(
        ByteLen::new(size),
        Granularity::XAPI_CBT,
        StatusRule::DirtyBitmap,
    )
    .unwrap();
    for (length, flags) in descriptors {
        assert!(!builder.is_complete());
        builder.push_descriptor(length, flags).unwrap();
    }
    assert!(builder.is_complete());
    let map = builder.finish().unwrap();
    assert_eq!(changed(&map), [16, 160, 161, 3200]);
    let bytes = map.to_bitmap_bytes();
    assert_eq!(bytes.len(), 512);
    let nonzero: Vec<(usize, u8)> = bytes
        .iter()
        .copied()
        .enumerate()
        .filter(|(_, byte)| *byte != 0)
        .collect();
    assert_eq!(nonzero, [(2, 0x80), (20, 0xC0), (400, 0x80)]);
    let blocks: Vec<u32> = map.vhd_blocks().unwrap().map(VhdBlockIndex::get).collect();
    assert_eq!(blocks, [0, 5, 100]);
}

/// qemu marks whole 64 KiB granules: a 512-byte write marks 64 KiB, a 100 KiB write 128 KiB
/// (nbd-cbt.md §2.18); the builder rounds outward the same way.
#[test]
fn block_status_rounds_outward_and_clips_the_last_extent() {
    let mut builder = BlockStatusBuilder::new(
        ByteLen::new(MIB),
        Granularity::XAPI_CBT,
        StatusRule::DirtyBitmap,
    )
    .unwrap();
    builder.push_descriptor(512, 1).unwrap();
    builder.push_descriptor(KIB64 - 512, 0).unwrap();
    builder.push_descriptor(100 * 1024, 1).unwrap();
    // The last extent may run past the request and past the disk: clipped.
    builder.push_descriptor(u64::from(u32::MAX), 0).unwrap();
    assert_eq!(builder.position(), ByteOffset::new(MIB));
    let map = builder.finish().unwrap();
    assert_eq!(changed(&map), [0, 1, 2]);
}

/// `base:allocation`: flags 3 (hole + zero) and 2 (zero) are unchanged; 0 and 1 hold data.
#[test]
fn allocation_rule_marks_everything_not_reading_as_zero() {
    let mut builder = BlockStatusBuilder::new(
        ByteLen::new(4 * KIB64),
        Granularity::XAPI_CBT,
        StatusRule::Allocation,
    )
    .unwrap();
    for flags in [0, 3, 1, 2] {
        builder.push_descriptor(KIB64, flags).unwrap();
    }
    assert_eq!(changed(&builder.finish().unwrap()), [0, 2]);
}

#[test]
fn block_status_errors() {
    let mut builder = BlockStatusBuilder::new(
        ByteLen::new(MIB),
        Granularity::XAPI_CBT,
        StatusRule::DirtyBitmap,
    )
    .unwrap();
    assert!(matches!(
        builder.push_descriptor(0, 1),
        Err(Error::EmptyDescriptor { offset: 0 })
    ));
    builder.push_descriptor(KIB64, 1).unwrap();
    assert!(matches!(
        builder.finish(),
        Err(Error::IncompleteCoverage {
            covered: KIB64,
            expected: MIB
        })
    ));
}

/// A 10 GiB disk needs 20 480 bytes: 20 479 bytes are too short.
#[test]
fn short_bitmap_is_rejected_strictly_and_marked_changed_tolerantly() {
    let size = ByteLen::new(10 << 30);
    let short = vec![0u8; 20_479];
    let err = ChangedBlocks::from_bitmap_bytes(&short, size, Granularity::XAPI_CBT).unwrap_err();
    assert!(matches!(
        err,
        Error::BitmapTooShort {
            found_bits: 163_832,
            expected_bits: 163_840
        }
    ));
    let tolerated =
        ChangedBlocks::from_bitmap_bytes_tolerant(&short, size, Granularity::XAPI_CBT).unwrap();
    assert_eq!(
        tolerated.missing_tail,
        Some(ByteExtent::at(163_832 * KIB64, 8 * KIB64).unwrap())
    );
    assert_eq!(
        changed(&tolerated.blocks),
        (163_832..163_840).collect::<Vec<_>>()
    );
    assert_eq!(tolerated.ignored_surplus_bits, 0);
}

/// A 100-block disk: byte 12 holds bits 96..=103, of which 100..=103 are past the end.
#[test]
fn bits_past_the_end_are_rejected_strictly_and_ignored_tolerantly() {
    let size = ByteLen::new(100 * KIB64);
    let mut bytes = vec![0u8; 13];
    bytes[12] = 0b1000_0100; // bit 96 (inside) and bit 101 (outside)
    let err = ChangedBlocks::from_bitmap_bytes(&bytes, size, Granularity::XAPI_CBT).unwrap_err();
    assert!(matches!(
        err,
        Error::BitsBeyondEnd {
            first_bit: 101,
            bit_count: 100
        }
    ));
    // Surplus whole bytes too: byte 14 is bits 112..=119.
    let mut longer = vec![0u8; 15];
    longer[14] = 0x01;
    let err = ChangedBlocks::from_bitmap_bytes(&longer, size, Granularity::XAPI_CBT).unwrap_err();
    assert!(matches!(err, Error::BitsBeyondEnd { first_bit: 119, .. }));
    // Surplus zero bytes are harmless padding.
    assert!(ChangedBlocks::from_bitmap_bytes(&[0; 20], size, Granularity::XAPI_CBT).is_ok());

    bytes.push(0xFF);
    let tolerated =
        ChangedBlocks::from_bitmap_bytes_tolerant(&bytes, size, Granularity::XAPI_CBT).unwrap();
    assert_eq!(changed(&tolerated.blocks), [96]);
    assert_eq!(tolerated.ignored_surplus_bits, 9);
    assert_eq!(tolerated.missing_tail, None);
}

#[test]
fn text_far_longer_than_the_disk_needs_is_refused_before_decoding() {
    // A 4 MiB disk needs 8 bitmap bytes; twice that plus 1 MiB is the most accepted.
    let size = ByteLen::new(4 * MIB);
    let max_bytes: usize = 2 * 8 + (1 << 20);
    let max_chars = max_bytes.div_ceil(3) * 4;
    let huge = "A".repeat(max_chars + 4);
    assert!(matches!(
        ChangedBlocks::from_xapi_base64(&huge, size),
        Err(Error::EncodedTooLong { length, max }) if length == max_chars + 4 && max == max_chars
    ));
    assert!(matches!(
        ChangedBlocks::from_base64_tolerant(&huge, size, Granularity::XAPI_CBT),
        Err(Error::EncodedTooLong { .. })
    ));
    // Modest zero padding (here 12 surplus bytes) is still accepted, strictly and tolerantly.
    // `80 40 00 00 40 00 ..`: blocks 0, 9 and 33; 18 bytes where 8 are needed.
    let padded = "gEAAAEAAAAAAAAAAAAAAAAAA";
    let map = ChangedBlocks::from_xapi_base64(padded, size).unwrap();
    assert_eq!(map.changed_block_count(), 3);
}

#[test]
fn invalid_base64_is_a_typed_error() {
    let size = ByteLen::new(4 * MIB);
    for text in [
        "gEAAAEAAAAA",
        "gEAAAEAA AAA=",
        "gEAAAEAAAAB=",
        "gEAA*EAAAAA=",
        "gEAAAEAAAAA=\n",
    ] {
        let err = ChangedBlocks::from_xapi_base64(text, size).unwrap_err();
        assert!(
            matches!(err, Error::InvalidBase64(_)),
            "{text:?} gave {err:?}"
        );
    }
    // Empty text is an empty bitmap: fine for an empty disk, too short otherwise.
    assert!(ChangedBlocks::from_xapi_base64("", ByteLen::new(0)).is_ok());
    assert!(matches!(
        ChangedBlocks::from_xapi_base64("", size),
        Err(Error::BitmapTooShort {
            found_bits: 0,
            expected_bits: 64
        })
    ));
}

#[test]
fn granularity_and_size_limits() {
    for bad in [0, 1, 256, 3 * 65536, 1 << 32] {
        assert!(matches!(
            Granularity::new(bad),
            Err(Error::InvalidGranularity { .. })
        ));
    }
    assert_eq!(Granularity::new(65536).unwrap(), Granularity::XAPI_CBT);
    assert!(matches!(
        ChangedBlocks::new_xapi(ByteLen::new(1 << 49)),
        Err(Error::VirtualSizeTooLarge { .. })
    ));
    assert!(matches!(
        ChangedBlocks::new(ByteLen::new(1 << 48), Granularity::new(512).unwrap()),
        Err(Error::TooManyBlocks { .. })
    ));
    // A 4 MiB granularity does not divide the 2 MiB VHD block.
    let coarse =
        ChangedBlocks::new(ByteLen::new(16 * MIB), Granularity::new(4 * MIB).unwrap()).unwrap();
    assert!(matches!(
        coarse.vhd_blocks(),
        Err(Error::GranularityDoesNotDivideBlock {
            granularity: 0x40_0000,
            block_size: 0x20_0000
        })
    ));
}

#[test]
fn set_operations_and_their_errors() {
    let size = ByteLen::new(4 * MIB);
    let a = ChangedBlocks::from_xapi_base64("gEAAAEAAAAA=", size).unwrap(); // {0, 9, 33}
    let mut b = ChangedBlocks::new_xapi(size).unwrap();
    for block in [9, 10, 63] {
        b.mark_block(CbtBlockIndex::new(block)).unwrap();
    }
    assert_eq!(changed(&a.union(&b).unwrap()), [0, 9, 10, 33, 63]);
    assert_eq!(changed(&a.intersection(&b).unwrap()), [9]);
    assert_eq!(changed(&a.difference(&b).unwrap()), [0, 33]);
    assert!(matches!(
        b.mark_block(CbtBlockIndex::new(64)),
        Err(Error::BitsBeyondEnd { .. })
    ));

    let mut bigger = ChangedBlocks::new_xapi(ByteLen::new(6 * MIB)).unwrap();
    assert!(matches!(
        a.union(&bigger),
        Err(Error::SizeMismatch {
            left: 0x40_0000,
            right: 0x60_0000
        })
    ));
    let finer = ChangedBlocks::new(size, Granularity::new(4096).unwrap()).unwrap();
    assert!(matches!(
        a.union(&finer),
        Err(Error::GranularityMismatch { .. })
    ));
    // After a disk resize, older logs are zero-extended before merging.
    let mut older = a.clone();
    older.extend_to(ByteLen::new(6 * MIB)).unwrap();
    bigger.union_with(&older).unwrap();
    assert_eq!(changed(&bigger), [0, 9, 33]);
    assert!(matches!(
        older.extend_to(size),
        Err(Error::CannotShrink { .. })
    ));
}

/// A disk of 100 000 bytes at 64 KiB has two blocks; the second covers only 34 464 bytes.
#[test]
fn changed_bytes_clip_the_last_block() {
    let mut map = ChangedBlocks::new_xapi(ByteLen::new(100_000)).unwrap();
    map.mark_all();
    assert_eq!(map.changed_bytes(), ByteLen::new(100_000));
    assert_eq!(
        map.block_extent(CbtBlockIndex::new(1)),
        Some(ByteExtent::at(KIB64, 34_464).unwrap())
    );
    assert!(matches!(
        map.mark_changed(ByteExtent::at(99_999, 2).unwrap()),
        Err(Error::ExtentOutOfRange {
            end: 100_001,
            virtual_size: 100_000
        })
    ));
    assert!(matches!(
        ByteExtent::at(u64::MAX, 1),
        Err(Error::ExtentOverflow { .. })
    ));
}

fn plan(map: &ChangedBlocks, config: ReadPlanConfig) -> Vec<(u64, u32)> {
    map.read_requests(config)
        .map(|ReadRequest { offset, length }| (offset.get(), length))
        .collect()
}

#[test]
fn read_plan_splits_at_the_maximum() {
    // Blocks 0..=40 changed (2 624 KiB) then block 63: 2 MiB requests split the first run.
    let mut map = ChangedBlocks::new_xapi(ByteLen::new(4 * MIB)).unwrap();
    map.mark_changed(ByteExtent::at(0, 41 * KIB64).unwrap())
        .unwrap();
    map.mark_block(CbtBlockIndex::new(63)).unwrap();
    assert_eq!(
        plan(&map, ReadPlanConfig::XAPI),
        [
            (0, 2 * 1024 * 1024),
            (2 * MIB, 9 * 65536),
            (63 * KIB64, 65536)
        ]
    );
    // Joining the 22-block gap costs 1.4 MiB of extra reading but saves a request.
    let merged = ReadPlanConfig::XAPI.with_merge_gap(ByteLen::new(22 * KIB64));
    assert_eq!(
        plan(&map, merged),
        [(0, 2 * 1024 * 1024), (2 * MIB, 2 * 1024 * 1024)]
    );
}

#[test]
fn read_plan_aligns_fine_bitmaps_to_the_server_block() {
    // 512-byte granularity, server minimum block 4096: bits 1, 9 and 19 widen to [0, 4096),
    // [4096, 8192) and [8192, 10240) (clipped to the unaligned disk end), which touch and merge;
    // only the request ending at the end of the disk has an unaligned length.
    let granularity = Granularity::new(512).unwrap();
    let mut map = ChangedBlocks::new(ByteLen::new(10_240), granularity).unwrap();
    for block in [1, 9, 19] {
        map.mark_block(CbtBlockIndex::new(block)).unwrap();
    }
    assert_eq!(
        plan(&map, ReadPlanConfig::new(65536, 4096).unwrap()),
        [(0, 10240)]
    );
    assert_eq!(
        plan(&map, ReadPlanConfig::new(8192, 4096).unwrap()),
        [(0, 8192), (8192, 2048)]
    );
    assert!(matches!(
        ReadPlanConfig::new(4096, 3000),
        Err(Error::InvalidAlignment { alignment: 3000 })
    ));
    assert!(matches!(
        ReadPlanConfig::new(6000, 4096),
        Err(Error::InvalidMaxRequest { .. })
    ));
    assert!(matches!(
        ReadPlanConfig::new(0, 512),
        Err(Error::InvalidMaxRequest { .. })
    ));
}

#[test]
fn runs_cross_word_boundaries() {
    // Bits 60..=130 span three words; bits 192..=255 fill the fourth word exactly.
    let mut map =
        ChangedBlocks::new(ByteLen::new(300 * 512), Granularity::new(512).unwrap()).unwrap();
    map.mark_changed(ByteExtent::at(60 * 512, 71 * 512).unwrap())
        .unwrap();
    map.mark_changed(ByteExtent::at(192 * 512, 64 * 512).unwrap())
        .unwrap();
    let runs: Vec<_> = map
        .block_runs()
        .map(|run| (run.start.get(), run.end.get()))
        .collect();
    assert_eq!(runs, [(60, 131), (192, 256)]);
    assert_eq!(map.changed_block_count(), 71 + 64);
    assert!(format!("{map:?}").contains("changed_blocks: 135"));
}
