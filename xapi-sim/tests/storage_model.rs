//! Property tests against a plain in-memory model: random writes, snapshots and snapshot
//! deletions, then contents, CBT bitmaps (64 KiB) and 2 MiB deltas between every pair.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a failed test"
)]

use std::collections::BTreeSet;

use bytes::Bytes;
use proptest::prelude::*;
use xapi_sim::Error;
use xapi_sim::storage::{ByteLen, ByteOffset, DiskId, Pattern, Storage, VhdBlockIndex};

const DISK: u64 = 8 << 20;
const BLOCK: u64 = 2 << 20;
const UNIT: u64 = 65536;

#[derive(Debug, Clone)]
enum Op {
    Write {
        offset: u64,
        length: u64,
    },
    Snapshot,
    /// Destroys the n-th live snapshot (modulo their number).
    DeleteSnapshot(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (0..DISK, 1..200_000u64).prop_map(|(offset, length)| Op::Write {
            offset,
            length: length.min(DISK - offset),
        }),
        2 => Just(Op::Snapshot),
        1 => any::<usize>().prop_map(Op::DeleteSnapshot),
    ]
}

struct Snapshot {
    disk: DiskId,
    /// Writes with an epoch below this number happened before the snapshot.
    epoch: usize,
    content: Vec<u8>,
}

/// Units and blocks touched by the writes of epochs `[from, to)`.
fn touched(writes: &[(usize, u64, u64)], from: usize, to: usize) -> (BTreeSet<u64>, BTreeSet<u32>) {
    let mut units = BTreeSet::new();
    let mut blocks = BTreeSet::new();
    for &(_, offset, length) in writes
        .iter()
        .filter(|(epoch, ..)| (from..to).contains(epoch))
    {
        let last = offset + length - 1;
        units.extend(offset / UNIT..=last / UNIT);
        blocks.extend((offset / BLOCK..=last / BLOCK).map(|block| u32::try_from(block).unwrap()));
    }
    (units, blocks)
}

fn check_pair(
    storage: &Storage,
    writes: &[(usize, u64, u64)],
    older: &Snapshot,
    newer: DiskId,
    newer_epoch: usize,
) {
    let (units, blocks) = touched(writes, older.epoch, newer_epoch);
    let map = storage.list_changed_blocks(older.disk, newer).unwrap();
    let changed: BTreeSet<u64> = map.changed_blocks().map(|unit| unit.get()).collect();
    assert_eq!(
        changed, units,
        "64 KiB units between {} and {newer}",
        older.disk
    );
    assert_eq!(
        map.to_bitmap_bytes().len(),
        usize::try_from(DISK / UNIT / 8).unwrap()
    );
    let delta: BTreeSet<u32> = storage
        .differing_blocks(newer, older.disk)
        .unwrap()
        .iter()
        .map(|b| b.get())
        .collect();
    assert_eq!(
        delta, blocks,
        "2 MiB delta between {} and {newer}",
        older.disk
    );
    assert!(matches!(
        storage.list_changed_blocks(newer, older.disk),
        Err(Error::CbtUnrelated { .. })
    ));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn storage_matches_a_plain_model(ops in prop::collection::vec(op(), 1..24)) {
        let storage = Storage::new();
        let disk = storage.create(ByteLen::new(DISK)).unwrap();
        storage.enable_cbt(disk).unwrap();
        let mut live = vec![0u8; usize::try_from(DISK).unwrap()];
        let mut snapshots: Vec<Snapshot> = Vec::new();
        let mut writes = Vec::new();
        let mut epoch = 0;
        for (tag, op) in ops.iter().enumerate() {
            match *op {
                Op::Write { offset, length } => {
                    let pattern = Pattern::Tagged { tag: u64::try_from(tag).unwrap() };
                    let data = pattern.bytes(offset, usize::try_from(length).unwrap());
                    storage.write(disk, ByteOffset::new(offset), &data).unwrap();
                    let start = usize::try_from(offset).unwrap();
                    live[start..start + data.len()].copy_from_slice(&data);
                    writes.push((epoch, offset, length));
                }
                Op::Snapshot => {
                    epoch += 1;
                    let snapshot = storage.snapshot(disk).unwrap();
                    snapshots.push(Snapshot { disk: snapshot, epoch, content: live.clone() });
                }
                Op::DeleteSnapshot(which) => {
                    if !snapshots.is_empty() {
                        let removed = snapshots.remove(which % snapshots.len());
                        storage.destroy(removed.disk).unwrap();
                    }
                }
            }
        }

        prop_assert_eq!(&storage.read(disk, ByteOffset::new(0), live.len()).unwrap()[..], &live[..]);
        for snapshot in &snapshots {
            let read = storage.read(snapshot.disk, ByteOffset::new(0), live.len()).unwrap();
            prop_assert!(read[..] == snapshot.content[..], "content of {}", snapshot.disk);
        }
        let all: BTreeSet<u32> = touched(&writes, 0, usize::MAX).1;
        let allocated: BTreeSet<u32> =
            storage.allocated_blocks(disk).unwrap().iter().map(|b| b.get()).collect();
        prop_assert_eq!(&allocated, &all);
        for (index, older) in snapshots.iter().enumerate() {
            for newer in &snapshots[index + 1..] {
                check_pair(&storage, &writes, older, newer.disk, newer.epoch);
            }
            check_pair(&storage, &writes, older, disk, usize::MAX);
        }
        // Memory: at most one buffer per touched block per epoch, never more.
        let epochs = u64::try_from(epoch + 1).unwrap();
        prop_assert!(storage.stats().unique_blocks <= u64::try_from(all.len()).unwrap() * epochs);
    }

    #[test]
    fn unaligned_reads_and_sector_imports_match_the_model(
        writes in prop::collection::vec((0..DISK, 1..40_000u64), 0..8),
        bitmap in prop::collection::vec(any::<u8>(), 512),
        block in 0..4u32,
        reads in prop::collection::vec((0..DISK, 0..3_000_000usize), 1..6),
    ) {
        let storage = Storage::new();
        let disk = storage.create(ByteLen::new(DISK)).unwrap();
        let mut model = vec![0u8; usize::try_from(DISK).unwrap()];
        for (seed, &(offset, length)) in writes.iter().enumerate() {
            let length = length.min(DISK - offset);
            let data = Pattern::Random { seed: u64::try_from(seed).unwrap() }
                .bytes(offset, usize::try_from(length).unwrap());
            storage.write(disk, ByteOffset::new(offset), &data).unwrap();
            let start = usize::try_from(offset).unwrap();
            model[start..start + data.len()].copy_from_slice(&data);
        }
        let snapshot = storage.snapshot(disk).unwrap();
        let frozen = model.clone();
        let imported = Pattern::Fill(0xEE).bytes(0, 2 << 20);
        storage
            .apply_block(disk, VhdBlockIndex::new(block), Bytes::from(imported), Some(&bitmap))
            .unwrap();
        let block_start = usize::try_from(u64::from(block) * BLOCK).unwrap();
        for sector in 0..4096usize {
            if bitmap[sector >> 3] & (0x80 >> (sector & 7)) != 0 {
                let start = block_start + sector * 512;
                model[start..start + 512].fill(0xEE);
            }
        }
        for &(offset, length) in &reads {
            let length = length.min(usize::try_from(DISK - offset).unwrap());
            let start = usize::try_from(offset).unwrap();
            let read = storage.read(disk, ByteOffset::new(offset), length).unwrap();
            prop_assert!(read[..] == model[start..start + length]);
            let old = storage.read(snapshot, ByteOffset::new(offset), length).unwrap();
            prop_assert!(old[..] == frozen[start..start + length]);
        }
    }
}
