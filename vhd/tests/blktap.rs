//! Files written by blktap (creator `tap`), hand-built here because no packaged tool writes
//! them: a batmap (blktap ≥ 1.1) marks fully allocated blocks, whose bitmaps the reader then
//! trusts as full; a damaged batmap is ignored; blktap 0.1 wrote sector bitmaps LSB-first.
#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "test code: a panic is a failed test"
)]

use uuid::Uuid;
use vhd::{
    Bat, BlockIndex, ByteOffset, Creator, DiskType, DynamicHeader, FEATURE_RESERVED, Footer,
    Geometry, LOCATOR_COUNT, VhdFile, VhdTimestamp,
};

const MIB: u64 = 1 << 20;
const SIZE: u64 = 4 * MIB; // two 2 MiB blocks
const TABLE_OFFSET: u64 = 1536;
const BATMAP_AT: u64 = TABLE_OFFSET + 512; // right after the padded two-entry BAT
const MAP_AT: u64 = BATMAP_AT + 512;
const BLOCK0_AT: u64 = MAP_AT + 512; // bitmap sector, then 2 MiB of data

struct Blktap {
    creator_version: u32,
    /// Batmap version and whether block 0 is marked full; `None` writes no batmap.
    batmap: Option<(u32, bool)>,
    /// Checksum to store in the batmap header; `None` computes the right one.
    batmap_checksum: Option<u32>,
    /// Block 0's sector bitmap, first byte (the rest zero).
    bitmap_first_byte: u8,
}

fn data_byte(offset: u64) -> u8 {
    u8::try_from(offset % 251).unwrap() + 1
}

fn build(spec: &Blktap) -> Vec<u8> {
    let footer = Footer {
        features: FEATURE_RESERVED,
        data_offset: Some(ByteOffset(512)),
        timestamp: VhdTimestamp(0),
        creator: Creator {
            application: *b"tap\0",
            version: spec.creator_version,
            host_os: 0,
        },
        original_size: SIZE,
        current_size: SIZE,
        geometry: Geometry {
            cylinders: 120,
            heads: 4,
            sectors_per_track: 17,
        },
        disk_type: DiskType::Dynamic,
        unique_id: Uuid::from_u128(0x7a9),
        saved_state: 0,
        hidden: 0,
    };
    let header = DynamicHeader {
        table_offset: ByteOffset(TABLE_OFFSET),
        max_table_entries: 2,
        block_size: 2 << 20,
        parent_unique_id: Uuid::nil(),
        parent_timestamp: VhdTimestamp(0),
        parent_unicode_name: String::new(),
        parent_locators: [None; LOCATOR_COUNT],
    };
    let mut bat = Bat::unallocated(2).unwrap();
    bat.set(BlockIndex(0), Some(u32::try_from(BLOCK0_AT / 512).unwrap()))
        .unwrap();

    let mut file = vec![0u8; usize::try_from(BLOCK0_AT + 512 + 2 * MIB).unwrap()];
    file[..512].copy_from_slice(&footer.encode());
    file[512..1536].copy_from_slice(&header.encode().unwrap());
    let bat_bytes = bat.encode();
    file[1536..1536 + bat_bytes.len()].copy_from_slice(&bat_bytes);
    if let Some((version, full)) = spec.batmap {
        let mut map = [0u8; 512];
        map[0] = if full { 0x80 } else { 0 }; // block 0, MSB-first
        let checksum = spec
            .batmap_checksum
            .unwrap_or_else(|| !map.iter().map(|byte| u32::from(*byte)).sum::<u32>());
        let at = usize::try_from(BATMAP_AT).unwrap();
        file[at..at + 8].copy_from_slice(b"tdbatmap");
        file[at + 8..at + 16].copy_from_slice(&MAP_AT.to_be_bytes());
        file[at + 16..at + 20].copy_from_slice(&1u32.to_be_bytes()); // one sector
        file[at + 20..at + 24].copy_from_slice(&version.to_be_bytes());
        file[at + 24..at + 28].copy_from_slice(&checksum.to_be_bytes());
        let map_at = usize::try_from(MAP_AT).unwrap();
        file[map_at..map_at + 512].copy_from_slice(&map);
    }
    let block = usize::try_from(BLOCK0_AT).unwrap();
    file[block] = spec.bitmap_first_byte;
    for (index, byte) in file[block + 512..].iter_mut().enumerate() {
        *byte = data_byte(u64::try_from(index).unwrap());
    }
    file.extend_from_slice(&footer.encode());
    file
}

fn read(file: Vec<u8>, offset: u64, len: usize) -> Vec<u8> {
    let vhd = VhdFile::open(file).unwrap();
    let mut buf = vec![0u8; len];
    vhd.read_at(ByteOffset(offset), &mut buf).unwrap();
    buf
}

fn expected(offset: u64, len: usize) -> Vec<u8> {
    (offset..offset + u64::try_from(len).unwrap())
        .map(data_byte)
        .collect()
}

#[test]
fn a_full_batmap_bit_makes_the_whole_block_visible() {
    // The block's own bitmap says nothing is present; blktap's batmap says the block is full,
    // and blktap trusts the batmap, so every sector reads as data.
    let file = build(&Blktap {
        creator_version: 0x0001_0002,
        batmap: Some((0x0001_0002, true)),
        batmap_checksum: None,
        bitmap_first_byte: 0,
    });
    let vhd = VhdFile::open(file.clone()).unwrap();
    assert!(vhd.batmap().unwrap().is_full(BlockIndex(0)));
    assert_eq!(read(file.clone(), 0, 4096), expected(0, 4096));
    assert_eq!(read(file.clone(), MIB, 512), expected(MIB, 512));
    // Block 1 is unallocated: zeros.
    assert_eq!(read(file, 2 * MIB, 512), vec![0; 512]);
}

#[test]
fn a_batmap_with_a_bad_checksum_is_ignored() {
    let file = build(&Blktap {
        creator_version: 0x0001_0002,
        batmap: Some((0x0001_0002, true)),
        batmap_checksum: Some(0x1234_5678),
        bitmap_first_byte: 0,
    });
    let vhd = VhdFile::open(file.clone()).unwrap();
    assert!(vhd.batmap().is_none());
    // Without the batmap, the block's empty bitmap rules: nothing present.
    assert_eq!(read(file, 0, 4096), vec![0; 4096]);
}

#[test]
fn a_clear_batmap_bit_defers_to_the_sector_bitmap() {
    // Bitmap 0b1000_0000: only sector 0 present (MSB-first, as every writer but blktap 0.1).
    let file = build(&Blktap {
        creator_version: 0x0001_0002,
        batmap: Some((0x0001_0002, false)),
        batmap_checksum: None,
        bitmap_first_byte: 0x80,
    });
    assert_eq!(read(file.clone(), 0, 512), expected(0, 512));
    assert_eq!(read(file, 512, 512), vec![0; 512]);
}

#[test]
fn blktap_0_1_bitmaps_are_lsb_first() {
    // Same byte 0b0000_0001 under blktap 0.1 (LSB-first): sector 0 present, sector 7 absent.
    let file = build(&Blktap {
        creator_version: 0x0000_0001,
        batmap: None,
        batmap_checksum: None,
        bitmap_first_byte: 0x01,
    });
    assert_eq!(read(file.clone(), 0, 512), expected(0, 512));
    assert_eq!(read(file.clone(), 7 * 512, 512), vec![0; 512]);
    // The same bytes from a modern writer (version 1.2, no batmap): sector 7 present instead.
    let modern = build(&Blktap {
        creator_version: 0x0001_0002,
        batmap: None,
        batmap_checksum: None,
        bitmap_first_byte: 0x01,
    });
    assert_eq!(read(modern.clone(), 0, 512), vec![0; 512]);
    assert_eq!(read(modern, 7 * 512, 512), expected(7 * 512, 512));
}
