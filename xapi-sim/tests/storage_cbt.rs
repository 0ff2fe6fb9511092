//! CBT logs against hand-computed bitmaps: 64 KiB units, MSB-first, standard base64 with padding
//! (xenapi notes §5.1-5.2, sm `libs/sm/VDI.py`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a failed test"
)]

use xapi_sim::Error;
use xapi_sim::storage::{ByteLen, ByteOffset, DiskId, Storage, VhdBlockIndex};

const MIB: u64 = 1 << 20;
const UNIT: u64 = 65536;

fn write_at(storage: &Storage, disk: DiskId, offset: u64, length: usize) {
    storage
        .write(disk, ByteOffset::new(offset), &vec![0xAB; length])
        .unwrap();
}

fn list(storage: &Storage, from: DiskId, to: DiskId) -> String {
    storage.list_changed_blocks_base64(from, to).unwrap()
}

fn bitmap_bytes(storage: &Storage, from: DiskId, to: DiskId) -> Vec<u8> {
    storage
        .list_changed_blocks(from, to)
        .unwrap()
        .to_bitmap_bytes()
}

#[test]
fn worked_example_of_the_notes() {
    // 4 MiB disk, units {0, 9, 33} changed -> 80 40 00 00 40 00 00 00 -> "gEAAAEAAAAA=".
    let storage = Storage::new();
    let disk = storage.create(ByteLen::new(4 * MIB)).unwrap();
    assert!(storage.enable_cbt(disk).unwrap());
    assert!(!storage.enable_cbt(disk).unwrap(), "enable is idempotent");
    let base = storage.snapshot(disk).unwrap();
    write_at(&storage, disk, 0, 1);
    write_at(&storage, disk, 9 * UNIT, 100);
    write_at(&storage, disk, 33 * UNIT, 512);
    let newer = storage.snapshot(disk).unwrap();
    assert_eq!(
        bitmap_bytes(&storage, base, newer),
        [0x80, 0x40, 0, 0, 0x40, 0, 0, 0]
    );
    assert_eq!(list(&storage, base, newer), "gEAAAEAAAAA=");
    // Nothing written since the newer snapshot: the live log is empty but sized.
    assert_eq!(list(&storage, newer, disk), "AAAAAAAAAAA=");
}

/// Builds the chain S0 -> S1 -> S2 -> live of a 4 MiB disk:
/// - between S0 and S1: unit 1                 -> 40 00 00 00 00 00 00 00
/// - between S1 and S2: units 2, 3 and 63       -> 30 00 00 00 00 00 00 01
/// - after S2 (live):   unit 32                 -> 00 00 00 00 80 00 00 00
fn chain() -> (Storage, DiskId, [DiskId; 3]) {
    let storage = Storage::new();
    let disk = storage.create(ByteLen::new(4 * MIB)).unwrap();
    storage.enable_cbt(disk).unwrap();
    let s0 = storage.snapshot(disk).unwrap();
    write_at(&storage, disk, UNIT, 10);
    let s1 = storage.snapshot(disk).unwrap();
    write_at(&storage, disk, 2 * UNIT, 2 * 65536);
    write_at(&storage, disk, 4 * MIB - 1, 1);
    let s2 = storage.snapshot(disk).unwrap();
    write_at(&storage, disk, 2 * MIB, 1);
    (storage, disk, [s0, s1, s2])
}

#[test]
fn each_snapshot_holds_the_changes_since_the_previous_one() {
    let (storage, disk, [s0, s1, s2]) = chain();
    assert_eq!(list(&storage, s0, s1), "QAAAAAAAAAA="); // 40 00 00 00 00 00 00 00
    assert_eq!(list(&storage, s1, s2), "MAAAAAAAAAE="); // 30 00 00 00 00 00 00 01
    assert_eq!(list(&storage, s2, disk), "AAAAAIAAAAA="); // 00 00 00 00 80 00 00 00
    assert_eq!(list(&storage, s0, disk), "cAAAAIAAAAE="); // 70 00 00 00 80 00 00 01
    for snapshot in [s0, s1, s2] {
        assert!(
            storage.info(snapshot).unwrap().cbt_enabled,
            "snapshots inherit CBT"
        );
    }
}

#[test]
fn query_errors_follow_sm() {
    let (storage, disk, [s0, s1, s2]) = chain();
    let same = storage.list_changed_blocks(s1, s1).unwrap_err();
    assert!(matches!(same, Error::CbtSameDisk { disk } if disk == s1));
    let failure = same.sm_backend_failure().unwrap();
    assert_eq!(failure.code, 460);
    assert_eq!(
        failure.message,
        "Failed to calculate changed blocks for given VDIs. [opterr=Source and target VDI are same]"
    );
    // Reversed order: the walk along child pointers never meets the older snapshot.
    let reversed = storage.list_changed_blocks(s2, s0).unwrap_err();
    assert!(matches!(reversed, Error::CbtUnrelated { from, to } if from == s2 && to == s0));
    assert_eq!(
        reversed.sm_backend_failure().unwrap().message,
        "Failed to calculate changed blocks for given VDIs. [opterr=Source and target VDI are unrelated]"
    );
    // A disk on another chain.
    let other = storage.create(ByteLen::new(4 * MIB)).unwrap();
    storage.enable_cbt(other).unwrap();
    assert!(matches!(
        storage.list_changed_blocks(s0, other),
        Err(Error::CbtUnrelated { .. })
    ));
    // A clone does not inherit CBT, and its source's chain is untouched.
    let clone = storage.clone_disk(disk).unwrap();
    assert!(!storage.info(clone).unwrap().cbt_enabled);
    let off = storage.list_changed_blocks(s0, clone).unwrap_err();
    assert!(matches!(off, Error::CbtNotEnabled { disk } if disk == clone));
    assert_eq!(off.sm_backend_failure().unwrap().code, 460);
    assert_eq!(list(&storage, s2, disk), "AAAAAIAAAAA=");
}

#[test]
fn deleting_a_middle_snapshot_merges_its_log_into_the_next() {
    let (storage, disk, [s0, s1, s2]) = chain();
    storage.destroy(s1).unwrap();
    // S2 now holds 40.. | 30..01 = 70 00 00 00 00 00 00 01.
    assert_eq!(list(&storage, s0, s2), "cAAAAAAAAAE=");
    assert_eq!(list(&storage, s0, disk), "cAAAAIAAAAE=");
    assert!(matches!(
        storage.list_changed_blocks(s1, disk),
        Err(Error::UnknownDisk { .. })
    ));
    // Deleting the oldest snapshot just shortens the chain.
    storage.destroy(s0).unwrap();
    assert_eq!(list(&storage, s2, disk), "AAAAAIAAAAA=");
}

#[test]
fn data_destroy_keeps_the_log_and_a_resize_zero_extends_older_bitmaps() {
    let (storage, disk, [s0, _s1, s2]) = chain();
    storage.data_destroy(s0).unwrap();
    storage.data_destroy(s0).unwrap(); // idempotent
    let info = storage.info(s0).unwrap();
    assert!(info.data_destroyed && info.cbt_enabled);
    assert!(matches!(
        storage.read(s0, ByteOffset::new(0), 1),
        Err(Error::DataDestroyed { .. })
    ));
    assert_eq!(list(&storage, s0, disk), "cAAAAIAAAAE=");

    // Grow to 6 MiB (96 units, 12 bytes) and touch unit 80 (byte 10, 0x80).
    assert_eq!(
        storage.resize(disk, ByteLen::new(6 * MIB)).unwrap(),
        ByteLen::new(6 * MIB)
    );
    write_at(&storage, disk, 80 * UNIT, 4096);
    // 70 00 00 00 80 00 00 01 | 00 00 80 00: the 8-byte logs are zero-extended.
    assert_eq!(
        bitmap_bytes(&storage, s0, disk),
        [0x70, 0, 0, 0, 0x80, 0, 0, 0x01, 0, 0, 0x80, 0]
    );
    assert_eq!(list(&storage, s0, disk), "cAAAAIAAAAEAAIAA");
    assert_eq!(list(&storage, s2, disk), "AAAAAIAAAAAAAIAA");
    let s3 = storage.snapshot(disk).unwrap();
    assert_eq!(list(&storage, s2, s3), "AAAAAIAAAAAAAIAA");
    assert_eq!(list(&storage, s3, disk), "AAAAAAAAAAAAAAAA");
    assert!(matches!(
        storage.resize(disk, ByteLen::new(4 * MIB)),
        Err(Error::CannotShrink { current, requested, .. }) if current == 6 * MIB && requested == 4 * MIB
    ));
}

#[test]
fn disable_ends_the_chain_and_enable_starts_an_unrelated_one() {
    let (storage, disk, [s0, _s1, s2]) = chain();
    assert!(storage.disable_cbt(disk).unwrap());
    assert!(!storage.disable_cbt(disk).unwrap(), "disable is idempotent");
    assert!(!storage.info(disk).unwrap().cbt_enabled);
    assert!(matches!(
        storage.list_changed_blocks(s2, disk),
        Err(Error::CbtNotEnabled { .. })
    ));
    // The snapshots' chain stays usable.
    assert_eq!(list(&storage, s0, s2), "cAAAAAAAAAE=");
    storage.enable_cbt(disk).unwrap();
    assert!(matches!(
        storage.list_changed_blocks(s2, disk),
        Err(Error::CbtUnrelated { .. })
    ));
}

#[test]
fn a_log_found_inconsistent_is_dropped_without_relinking() {
    let (storage, disk, [_s0, _s1, s2]) = chain();
    assert!(storage.cbt_mark_inconsistent(disk).unwrap());
    assert!(!storage.info(disk).unwrap().cbt_enabled);
    let error = storage.list_changed_blocks(s2, disk).unwrap_err();
    assert!(matches!(error, Error::CbtNotEnabled { .. }));
    assert_eq!(error.sm_backend_failure().unwrap().code, 460);
    // sm's quirk: S2's child pointer still names the disk, so a re-enabled log is found again
    // and only its own (post-enable) changes are reported.
    storage.enable_cbt(disk).unwrap();
    write_at(&storage, disk, 0, 1);
    assert_eq!(list(&storage, s2, disk), "gAAAAAAAAAA=");
}

#[test]
fn a_truncated_log_makes_queries_through_it_inconsistent() {
    let (storage, disk, [s0, s1, s2]) = chain();
    assert!(storage.cbt_truncate_log(s2).unwrap());
    let error = storage.list_changed_blocks(s0, disk).unwrap_err();
    assert!(matches!(error, Error::CbtInconsistent { disk } if disk == s2));
    let failure = error.sm_backend_failure().unwrap();
    assert_eq!(failure.code, 459);
    assert_eq!(
        failure.message,
        "Changed block tracking log is in an inconsistent state. [opterr=Inconsistent bitmaps]"
    );
    // Walks that stop before the truncated log, or start at it, still work.
    assert_eq!(list(&storage, s0, s1), "QAAAAAAAAAA=");
    assert_eq!(list(&storage, s2, disk), "AAAAAIAAAAA=");
}

#[test]
fn imported_sectors_mark_only_their_units() {
    let storage = Storage::new();
    let disk = storage.create(ByteLen::new(4 * MIB)).unwrap();
    storage.enable_cbt(disk).unwrap();
    let base = storage.snapshot(disk).unwrap();
    // Block 1: sectors 0-127 (unit 32) and sector 128 (unit 33) -> byte 4 = 0xC0.
    let mut bitmap = vec![0u8; 512];
    bitmap[..16].fill(0xFF);
    bitmap[16] = 0x80;
    let data = bytes::Bytes::from(vec![7u8; 2 << 20]);
    storage
        .apply_block(disk, VhdBlockIndex::new(1), data, Some(&bitmap))
        .unwrap();
    assert_eq!(
        bitmap_bytes(&storage, base, disk),
        [0, 0, 0, 0, 0xC0, 0, 0, 0]
    );
}
