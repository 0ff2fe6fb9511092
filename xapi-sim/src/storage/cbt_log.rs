//! Per-disk CBT logs linked by parent/child pointers, as sm keeps `<vdi-uuid>.cbtlog` files
//! (sm `libs/sm/VDI.py`: `configure_blocktracking`, `_cbt_snapshot`, `delete`, `list_changed_blocks`).
//!
//! A log is keyed by its disk, and pointers name disks, so a pointer may dangle (its log was
//! deleted) exactly like a uuid naming a missing file; disk ids are never reused. Logs are sparse:
//! one `u32` per touched 2 MiB block, bit `k` (MSB-first) for its `k`-th 64 KiB unit, which is the
//! big-endian `u32` at byte `4·block` of xapi's bitmap.

use std::collections::{BTreeMap, HashMap};

use super::{BLOCK_BYTES_U64, CBT_BLOCK_SHIFT, CBT_UNITS_PER_BLOCK, DiskId};
use crate::Error;

#[derive(Debug, Clone)]
struct CbtLog {
    /// Disk size the log covers (extended when the live disk grows).
    virtual_size: u64,
    changed: BTreeMap<u32, u32>,
    parent: Option<DiskId>,
    child: Option<DiskId>,
    /// Test switch: the bitmap is shorter than the disk (sm raises `CBTMetadataInconsistent`).
    truncated: bool,
}

impl CbtLog {
    fn new(virtual_size: u64) -> Self {
        Self {
            virtual_size,
            changed: BTreeMap::new(),
            parent: None,
            child: None,
            truncated: false,
        }
    }
}

/// Changed 64 KiB units over a disk of `virtual_size` bytes, per 2 MiB block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MergedLog {
    pub virtual_size: u64,
    pub changed: BTreeMap<u32, u32>,
}

/// Every CBT log of one storage.
#[derive(Debug, Default)]
pub(crate) struct CbtLogs {
    logs: HashMap<DiskId, CbtLog>,
}

/// Bits `[first, end)` of a 32-bit group, MSB-first; callers keep `first < end <= 32`.
fn unit_mask(first: u64, end: u64) -> u32 {
    let width = end.saturating_sub(first);
    if width >= 32 {
        return u32::MAX;
    }
    let ones = (1u32 << width) - 1;
    ones << (32 - end)
}

impl CbtLogs {
    pub(crate) fn is_enabled(&self, disk: DiskId) -> bool {
        self.logs.contains_key(&disk)
    }

    /// Starts a fresh, unlinked log; `false` when one already exists (idempotent).
    pub(crate) fn enable(&mut self, disk: DiskId, virtual_size: u64) -> bool {
        if self.logs.contains_key(&disk) {
            return false;
        }
        self.logs.insert(disk, CbtLog::new(virtual_size));
        true
    }

    /// Deletes the log and clears its parent's child pointer (sm `configure_blocktracking`).
    pub(crate) fn disable(&mut self, disk: DiskId) -> bool {
        let Some(log) = self.logs.remove(&disk) else {
            return false;
        };
        if let Some(parent) = log.parent.and_then(|parent| self.logs.get_mut(&parent)) {
            parent.child = None;
        }
        true
    }

    /// Deletes the log without touching any pointer (sm `_disable_cbt_on_error`).
    pub(crate) fn drop_on_error(&mut self, disk: DiskId) -> bool {
        self.logs.remove(&disk).is_some()
    }

    /// Marks the log's bitmap as shorter than its disk.
    pub(crate) fn truncate(&mut self, disk: DiskId) -> bool {
        self.logs
            .get_mut(&disk)
            .map(|log| log.truncated = true)
            .is_some()
    }

    /// Records a write of `length` bytes at `offset`; the caller checked the range.
    pub(crate) fn record_write(&mut self, disk: DiskId, offset: u64, length: u64) {
        let Some(log) = self.logs.get_mut(&disk) else {
            return;
        };
        if length == 0 {
            return;
        }
        let first_unit = offset >> CBT_BLOCK_SHIFT;
        let last_unit = offset.saturating_add(length - 1) >> CBT_BLOCK_SHIFT;
        let mut unit = first_unit;
        while unit <= last_unit {
            let block = unit / CBT_UNITS_PER_BLOCK;
            let block_end_unit = (block + 1) * CBT_UNITS_PER_BLOCK;
            let end_unit = block_end_unit.min(last_unit + 1);
            let mask = unit_mask(
                unit % CBT_UNITS_PER_BLOCK,
                end_unit - block * CBT_UNITS_PER_BLOCK,
            );
            let Ok(block) = u32::try_from(block) else {
                return;
            };
            *log.changed.entry(block).or_insert(0) |= mask;
            unit = end_unit;
        }
    }

    /// The live disk grew: its log grows with it (sm `set_cbt_size`); older logs keep their size.
    pub(crate) fn resize(&mut self, disk: DiskId, virtual_size: u64) {
        if let Some(log) = self.logs.get_mut(&disk) {
            log.virtual_size = log.virtual_size.max(virtual_size);
        }
    }

    /// sm `_cbt_snapshot`: the source's log becomes the snapshot's, the source starts a fresh
    /// log linked after it. Returns whether the snapshot has CBT.
    pub(crate) fn snapshot(&mut self, source: DiskId, snapshot: DiskId, source_size: u64) -> bool {
        let Some(mut log) = self.logs.remove(&source) else {
            return false;
        };
        if let Some(parent) = log.parent.and_then(|parent| self.logs.get_mut(&parent)) {
            parent.child = Some(snapshot);
        }
        let previous_child = log.child.replace(source);
        self.logs.insert(snapshot, log);
        let mut fresh = CbtLog::new(source_size);
        fresh.parent = Some(snapshot);
        fresh.child = previous_child;
        self.logs.insert(source, fresh);
        true
    }

    /// sm `delete`: relinks parent and child around the log and ORs its bits into the child's
    /// (older, smaller bitmaps are zero-extended), then deletes it.
    pub(crate) fn delete(&mut self, disk: DiskId) {
        let Some(log) = self.logs.remove(&disk) else {
            return;
        };
        if let Some(parent) = log.parent.and_then(|parent| self.logs.get_mut(&parent)) {
            parent.child = log.child;
        }
        if let Some(child) = log.child.and_then(|child| self.logs.get_mut(&child)) {
            child.parent = log.parent;
            for (block, bits) in log.changed {
                *child.changed.entry(block).or_insert(0) |= bits;
            }
        }
    }

    /// sm `list_changed_blocks`: ORs the logs strictly after `from` up to and including `to`,
    /// walking child pointers; the result has the size of the largest (newest) log.
    pub(crate) fn changed_between(&self, from: DiskId, to: DiskId) -> Result<MergedLog, Error> {
        if from == to {
            return Err(Error::CbtSameDisk { disk: from });
        }
        for disk in [from, to] {
            if !self.logs.contains_key(&disk) {
                return Err(Error::CbtNotEnabled { disk });
            }
        }
        let mut current = from;
        let mut merged: Option<MergedLog> = None;
        // Child pointers never loop, but a walk longer than the number of logs would.
        for _ in 0..self.logs.len() {
            let next = self.logs.get(&current).and_then(|log| log.child);
            let Some((next, log)) =
                next.and_then(|next| self.logs.get(&next).map(|log| (next, log)))
            else {
                break;
            };
            current = next;
            if log.truncated {
                return Err(Error::CbtInconsistent { disk: current });
            }
            match merged.as_mut() {
                None => {
                    merged = Some(MergedLog {
                        virtual_size: log.virtual_size,
                        changed: log.changed.clone(),
                    });
                }
                Some(merged) => {
                    if log.virtual_size < merged.virtual_size {
                        return Err(Error::CbtInconsistent { disk: current });
                    }
                    merged.virtual_size = log.virtual_size;
                    for (block, bits) in &log.changed {
                        *merged.changed.entry(*block).or_insert(0) |= bits;
                    }
                }
            }
            if current == to {
                return merged.ok_or(Error::CbtUnrelated { from, to });
            }
        }
        Err(Error::CbtUnrelated { from, to })
    }

    pub(crate) fn stats(&self) -> (usize, usize) {
        (
            self.logs.len(),
            self.logs.values().map(|log| log.changed.len()).sum(),
        )
    }
}

/// Bits per 2 MiB block, checked against the constants at compile time.
const _: () = assert!(CBT_UNITS_PER_BLOCK << CBT_BLOCK_SHIFT == BLOCK_BYTES_U64);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_are_msb_first() {
        assert_eq!(unit_mask(0, 1), 0x8000_0000);
        assert_eq!(unit_mask(31, 32), 0x0000_0001);
        assert_eq!(unit_mask(0, 32), u32::MAX);
        assert_eq!(unit_mask(4, 8), 0x0F00_0000);
    }

    #[test]
    fn writes_spanning_blocks_set_every_touched_unit() {
        let disk = DiskId::from_raw(1);
        let mut logs = CbtLogs::default();
        logs.enable(disk, 8 << 20);
        // From the last 64 KiB unit of block 0 to the first byte of block 1's second unit.
        logs.record_write(disk, (2 << 20) - 1, 65537 + 1);
        let log = &logs.logs[&disk];
        assert_eq!(log.changed.get(&0), Some(&0x0000_0001));
        assert_eq!(log.changed.get(&1), Some(&0xC000_0000));
    }
}
