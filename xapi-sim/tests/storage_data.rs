//! Copy-on-write data: sharing and isolation between snapshots, clones and copies, transfer
//! views, imports, memory, errors and concurrent use.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a failed test"
)]

use bytes::Bytes;
use sha2::{Digest as _, Sha256};
use xapi_sim::Error;
use xapi_sim::storage::{
    ByteExtent, ByteLen, ByteOffset, DiskId, Pattern, Storage, VhdBlockIndex, round_virtual_size,
};

const MIB: u64 = 1 << 20;
const BLOCK: usize = 2 << 20;
const UMIB: usize = 1 << 20;

fn blocks(indices: &[u32]) -> Vec<VhdBlockIndex> {
    indices.iter().copied().map(VhdBlockIndex::new).collect()
}

fn read_all(storage: &Storage, disk: DiskId) -> Vec<u8> {
    let size = usize::try_from(storage.virtual_size(disk).unwrap().get()).unwrap();
    storage
        .read(disk, ByteOffset::new(0), size)
        .unwrap()
        .to_vec()
}

fn fill(storage: &Storage, disk: DiskId, offset: u64, length: u64, byte: u8) {
    let extent = ByteExtent::at(offset, length).unwrap();
    storage
        .guest_write(disk, extent, Pattern::Fill(byte))
        .unwrap();
}

#[test]
fn sizes_round_up_to_whole_blocks() {
    assert_eq!(
        round_virtual_size(ByteLen::new(0)).unwrap(),
        ByteLen::new(2 * MIB)
    );
    assert_eq!(
        round_virtual_size(ByteLen::new(2 * MIB + 1)).unwrap(),
        ByteLen::new(4 * MIB)
    );
    assert_eq!(
        round_virtual_size(ByteLen::new(10 << 30)).unwrap(),
        ByteLen::new(10 << 30)
    );
    assert!(matches!(
        round_virtual_size(ByteLen::new((16 << 40) + 1)),
        Err(Error::VirtualSizeTooLarge { .. })
    ));
    let storage = Storage::new();
    let disk = storage.create(ByteLen::new(1000)).unwrap();
    assert_eq!(storage.virtual_size(disk).unwrap(), ByteLen::new(2 * MIB));
}

#[test]
fn snapshots_and_clones_share_blocks_until_written() {
    let storage = Storage::new();
    let disk = storage.create(ByteLen::new(8 * MIB)).unwrap();
    fill(&storage, disk, 0, 4 * MIB, 1);
    let snapshot = storage.snapshot(disk).unwrap();
    let clone = storage.clone_disk(snapshot).unwrap();
    // Three disks, two blocks: nothing copied.
    assert_eq!(storage.stats().unique_blocks, 2);
    assert_eq!(
        storage
            .read_block(snapshot, VhdBlockIndex::new(0))
            .unwrap()
            .as_ptr(),
        storage
            .read_block(clone, VhdBlockIndex::new(0))
            .unwrap()
            .as_ptr()
    );

    // Unaligned writes touching blocks 0 and 1 of the source copy only those blocks.
    fill(&storage, disk, 2 * MIB - 3, 6, 2);
    fill(&storage, clone, 5 * MIB + 7, 1, 3);
    assert_eq!(storage.stats().unique_blocks, 2 + 2 + 1);

    let mut expected_source = vec![0u8; 8 * UMIB];
    expected_source[..4 * UMIB].fill(1);
    let expected_snapshot = expected_source.clone();
    let mut expected_clone = expected_source.clone();
    expected_source[2 * BLOCK / 2 - 3..2 * BLOCK / 2 + 3].fill(2);
    expected_clone[5 * UMIB + 7] = 3;
    assert_eq!(read_all(&storage, disk), expected_source);
    assert_eq!(read_all(&storage, snapshot), expected_snapshot);
    assert_eq!(read_all(&storage, clone), expected_clone);
    assert!(!storage.info(clone).unwrap().data_destroyed);
}

#[test]
fn copies_are_independent_and_share_buffers() {
    let storage = Storage::new();
    let disk = storage.create(ByteLen::new(6 * MIB)).unwrap();
    fill(&storage, disk, MIB, 2 * MIB, 9);
    let copy = storage.copy(disk).unwrap();
    assert_eq!(storage.stats().unique_blocks, 2);
    let info = storage.info(copy).unwrap();
    assert_eq!(
        (info.chain_depth, info.leaf_blocks, info.cbt_enabled),
        (1, 2, false)
    );
    fill(&storage, disk, 0, 1, 4);
    assert_eq!(read_all(&storage, copy)[0], 0);
    // Unrelated chains: the delta is everything allocated on either side.
    assert_eq!(
        storage.differing_blocks(copy, disk).unwrap(),
        blocks(&[0, 1])
    );
    storage.destroy(disk).unwrap();
    assert_eq!(read_all(&storage, copy)[UMIB], 9);
    assert!(matches!(storage.info(disk), Err(Error::UnknownDisk { .. })));
}

#[test]
fn copy_into_with_and_without_base() {
    let storage = Storage::new();
    let source = storage.create(ByteLen::new(8 * MIB)).unwrap();
    fill(&storage, source, 0, 2 * MIB, 1);
    let base = storage.snapshot(source).unwrap();
    fill(&storage, source, 6 * MIB, 10, 2);
    let newer = storage.snapshot(source).unwrap();

    let target = storage.create(ByteLen::new(8 * MIB)).unwrap();
    fill(&storage, target, 4 * MIB, 1, 7); // stale data the full copy must clear
    assert_eq!(
        storage.copy_into(base, target, None).unwrap(),
        blocks(&[0, 2])
    );
    assert_eq!(
        storage.sha256(target).unwrap(),
        storage.sha256(base).unwrap()
    );
    assert_eq!(
        storage.copy_into(newer, target, Some(base)).unwrap(),
        blocks(&[3])
    );
    assert_eq!(
        storage.sha256(target).unwrap(),
        storage.sha256(newer).unwrap()
    );

    let small = storage.create(ByteLen::new(2 * MIB)).unwrap();
    assert!(matches!(
        storage.copy_into(source, small, None),
        Err(Error::TargetTooSmall { required, available, .. }) if required == 8 * MIB && available == 2 * MIB
    ));
}

#[test]
fn transfer_views_follow_the_vhd_chains() {
    let storage = Storage::new();
    let disk = storage.create(ByteLen::new(16 * MIB)).unwrap();
    fill(&storage, disk, 0, 1, 1); // block 0
    let first = storage.snapshot(disk).unwrap();
    fill(&storage, disk, 3 * 2 * MIB, 1, 2); // block 3
    let second = storage.snapshot(disk).unwrap();
    fill(&storage, disk, 5 * 2 * MIB, 1, 3); // block 5

    assert_eq!(storage.allocated_blocks(first).unwrap(), blocks(&[0]));
    assert_eq!(storage.allocated_blocks(second).unwrap(), blocks(&[0, 3]));
    assert_eq!(storage.allocated_blocks(disk).unwrap(), blocks(&[0, 3, 5]));
    assert_eq!(
        storage.differing_blocks(second, first).unwrap(),
        blocks(&[3])
    );
    assert_eq!(
        storage.differing_blocks(disk, first).unwrap(),
        blocks(&[3, 5])
    );
    assert_eq!(storage.differing_blocks(first, first).unwrap(), blocks(&[]));

    // A clone of the first snapshot that wrote block 7: relative to the second snapshot, the
    // delta holds its own change plus the second's branch to revert (symmetric difference).
    let clone = storage.clone_disk(first).unwrap();
    fill(&storage, clone, 7 * 2 * MIB, 1, 4);
    assert_eq!(
        storage.differing_blocks(clone, second).unwrap(),
        blocks(&[3, 7])
    );
    // Reverted block 3 reads as the clone sees it: zeros.
    assert!(
        storage
            .read_block(clone, VhdBlockIndex::new(3))
            .unwrap()
            .iter()
            .all(|b| *b == 0)
    );

    // Deleting snapshots merges hidden layers without changing any view.
    storage.destroy(second).unwrap();
    assert_eq!(storage.allocated_blocks(disk).unwrap(), blocks(&[0, 3, 5]));
    assert_eq!(
        storage.differing_blocks(disk, first).unwrap(),
        blocks(&[3, 5])
    );
    storage.destroy(first).unwrap();
    assert_eq!(storage.allocated_blocks(disk).unwrap(), blocks(&[0, 3, 5]));
    assert_eq!(storage.info(disk).unwrap().chain_depth, 2);
    storage.destroy(clone).unwrap();
    assert_eq!(storage.info(disk).unwrap().chain_depth, 1);
    assert_eq!(storage.stats().layers, 1);
}

#[test]
fn imported_blocks_write_only_marked_sectors() {
    let storage = Storage::new();
    let disk = storage.create(ByteLen::new(4 * MIB)).unwrap();
    fill(&storage, disk, 2 * MIB, 2 * MIB, 0x11);
    let snapshot = storage.snapshot(disk).unwrap();
    // Sector 0 and sectors 8..16 (byte 1 = 0xFF) of block 1, plus the last sector (byte 511 bit 0).
    let mut bitmap = vec![0u8; 512];
    bitmap[0] = 0x80;
    bitmap[1] = 0xFF;
    bitmap[511] = 0x01;
    let data = Bytes::from(vec![0x22u8; BLOCK]);
    storage
        .apply_block(disk, VhdBlockIndex::new(1), data.clone(), Some(&bitmap))
        .unwrap();
    let block = storage.read_block(disk, VhdBlockIndex::new(1)).unwrap();
    let mut expected = vec![0x11u8; BLOCK];
    expected[..512].fill(0x22);
    expected[8 * 512..16 * 512].fill(0x22);
    expected[BLOCK - 512..].fill(0x22);
    assert_eq!(&block[..], &expected[..]);
    assert!(
        storage
            .read_block(snapshot, VhdBlockIndex::new(1))
            .unwrap()
            .iter()
            .all(|b| *b == 0x11)
    );

    // A whole block without bitmap is stored without a copy.
    storage
        .apply_block(disk, VhdBlockIndex::new(0), data.clone(), None)
        .unwrap();
    assert_eq!(
        storage
            .read_block(disk, VhdBlockIndex::new(0))
            .unwrap()
            .as_ptr(),
        data.as_ptr()
    );

    assert!(matches!(
        storage.apply_block(disk, VhdBlockIndex::new(2), data.clone(), None),
        Err(Error::BlockOutOfRange {
            block: 2,
            block_count: 2,
            ..
        })
    ));
    assert!(matches!(
        storage.apply_block(disk, VhdBlockIndex::new(0), data.slice(..512), None),
        Err(Error::BlockLength { found: 512, .. })
    ));
    assert!(matches!(
        storage.apply_block(disk, VhdBlockIndex::new(0), data, Some(&[0xFF; 511])),
        Err(Error::SectorBitmapLength {
            found: 511,
            expected: 512
        })
    ));
}

#[test]
fn a_sparse_two_tib_disk_costs_only_the_blocks_written() {
    let storage = Storage::new();
    let disk = storage.create(ByteLen::new(2 << 40)).unwrap();
    storage.enable_cbt(disk).unwrap();
    let base = storage.snapshot(disk).unwrap();
    for offset in [0, 1 << 40, (2 << 40) - 512] {
        storage
            .write(disk, ByteOffset::new(offset), &[5; 512])
            .unwrap();
    }
    let newer = storage.snapshot(disk).unwrap();
    storage
        .write(disk, ByteOffset::new(1 << 30), &[6; 512])
        .unwrap();
    let stats = storage.stats();
    assert_eq!(stats.unique_blocks, 4);
    assert_eq!(stats.block_bytes, 4 * 2 * MIB);
    assert!(stats.cbt_log_entries <= 4, "CBT logs are sparse: {stats:?}");
    assert_eq!(
        storage
            .read(newer, ByteOffset::new((2 << 40) - 512), 512)
            .unwrap()
            .as_ref(),
        &[5; 512]
    );
    // xapi's bitmap for 2 TiB: 2^25 units, 4 MiB; units 0, 2^24 and 2^25 - 1 set.
    let bitmap = storage
        .list_changed_blocks(base, newer)
        .unwrap()
        .to_bitmap_bytes();
    assert_eq!(bitmap.len(), 4 << 20);
    assert_eq!(bitmap.iter().filter(|byte| **byte != 0).count(), 3);
    assert_eq!(
        (bitmap[0], bitmap[1 << 21], bitmap[(4 << 20) - 1]),
        (0x80, 0x80, 0x01)
    );
}

#[test]
fn out_of_range_and_destroyed_disks_are_typed_errors() {
    let storage = Storage::new();
    let disk = storage.create(ByteLen::new(2 * MIB)).unwrap();
    assert!(matches!(
        storage.write(disk, ByteOffset::new(2 * MIB - 1), &[0, 0]),
        Err(Error::OutOfRange { offset, length: 2, virtual_size, .. }) if offset == 2 * MIB - 1 && virtual_size == 2 * MIB
    ));
    assert!(matches!(
        storage.read(disk, ByteOffset::new(u64::MAX), 2),
        Err(Error::OutOfRange { .. })
    ));
    assert!(matches!(
        storage.read(disk, ByteOffset::new(0), 65 << 20),
        Err(Error::ReadTooLarge { .. })
    ));
    assert!(
        storage
            .read(disk, ByteOffset::new(2 * MIB), 0)
            .unwrap()
            .is_empty()
    );
    storage.data_destroy(disk).unwrap();
    for result in [
        storage.snapshot(disk).map(|_| ()),
        storage.clone_disk(disk).map(|_| ()),
        storage.copy(disk).map(|_| ()),
        storage.write(disk, ByteOffset::new(0), &[1]),
        storage.resize(disk, ByteLen::new(4 * MIB)).map(|_| ()),
    ] {
        assert!(
            matches!(result, Err(Error::DataDestroyed { .. })),
            "{result:?}"
        );
    }
    storage.destroy(disk).unwrap();
    assert!(matches!(
        storage.destroy(disk),
        Err(Error::UnknownDisk { .. })
    ));
    assert_eq!(storage.stats().layers, 0);
}

#[test]
fn guest_activity_is_deterministic_and_hashable() {
    let storage = Storage::new();
    let disk = storage.create(ByteLen::new(16 * MIB)).unwrap();
    let chosen = storage
        .guest_write_random_blocks(disk, 3, 42, Pattern::Random { seed: 1 })
        .unwrap();
    assert_eq!(chosen.len(), 3);
    assert_eq!(storage.allocated_blocks(disk).unwrap(), chosen);
    let twin = storage.create(ByteLen::new(16 * MIB)).unwrap();
    assert_eq!(
        storage
            .guest_write_random_blocks(twin, 3, 42, Pattern::Random { seed: 1 })
            .unwrap(),
        chosen
    );
    assert_eq!(storage.sha256(disk).unwrap(), storage.sha256(twin).unwrap());
    // More blocks than the disk has: every block.
    let all = storage
        .guest_write_random_blocks(twin, 100, 7, Pattern::Fill(1))
        .unwrap();
    assert_eq!(all.len(), 8);
    assert_ne!(storage.sha256(disk).unwrap(), storage.sha256(twin).unwrap());

    // Tagged records land where they belong, whatever the alignment of the write.
    let extent = ByteExtent::at(3 * MIB + 5, 100_000).unwrap();
    storage
        .guest_write(disk, extent, Pattern::Tagged { tag: 9 })
        .unwrap();
    let read = storage
        .read(disk, ByteOffset::new(3 * MIB + 5), 100_000)
        .unwrap();
    assert_eq!(
        read.as_ref(),
        Pattern::Tagged { tag: 9 }.bytes(3 * MIB + 5, 100_000)
    );

    // sha256 covers the whole virtual size, zeros included.
    let empty = storage.create(ByteLen::new(2 * MIB)).unwrap();
    let expected: [u8; 32] = Sha256::digest(vec![0u8; BLOCK]).into();
    assert_eq!(storage.sha256(empty).unwrap(), expected);
    assert_eq!(
        hex::encode(expected),
        "5647f05ec18958947d32874eeb788fa396a05d0bab7c1b71f112ceb7e9b31eee",
        "sha256 of 2 MiB of zeros"
    );
}

#[test]
fn concurrent_handlers_share_one_storage() {
    let storage = Storage::new();
    let disk = storage.create(ByteLen::new(16 * MIB)).unwrap();
    std::thread::scope(|scope| {
        for worker in 0..4u64 {
            let storage = storage.clone();
            scope.spawn(move || {
                for round in 0..16u64 {
                    let offset = worker * 4 * MIB + (round % 8) * (MIB / 2);
                    let extent = ByteExtent::at(offset, MIB / 2).unwrap();
                    storage
                        .guest_write(disk, extent, Pattern::Tagged { tag: worker })
                        .unwrap();
                    if round % 4 == 0 {
                        let snapshot = storage.snapshot(disk).unwrap();
                        let block = storage
                            .read(snapshot, ByteOffset::new(offset), 4096)
                            .unwrap();
                        assert_eq!(
                            block.as_ref(),
                            Pattern::Tagged { tag: worker }.bytes(offset, 4096)
                        );
                        storage.destroy(snapshot).unwrap();
                    }
                }
            });
        }
    });
    for worker in 0..4u64 {
        let offset = worker * 4 * MIB;
        let data = storage
            .read(disk, ByteOffset::new(offset), 4 * UMIB)
            .unwrap();
        assert_eq!(
            data.as_ref(),
            Pattern::Tagged { tag: worker }.bytes(offset, 4 * UMIB)
        );
    }
    assert_eq!(
        storage.info(disk).unwrap().chain_depth,
        1,
        "all snapshots gone, chain merged"
    );
}
