//! The storage state behind the lock: disks, their layers and their CBT logs. Synchronous and
//! lock-free itself; [`super::Storage`] serialises access.

use std::collections::{BTreeSet, HashMap};

use bytes::Bytes;
use cbt::{ByteLen, CbtBlockIndex, ChangedBlocks};

use super::cbt_log::CbtLogs;
use super::chain::{LayerId, Layers};
use super::{
    BLOCK_BYTES, BLOCK_SIZE, CBT_UNITS_PER_BLOCK, DiskId, DiskInfo, SECTOR_BITMAP_LEN,
    StorageStats, round_virtual_size,
};
use crate::Error;

#[derive(Debug)]
struct Disk {
    virtual_size: u64,
    /// `None` once `data_destroy` dropped the data.
    leaf: Option<LayerId>,
}

#[derive(Debug, Default)]
pub(crate) struct State {
    next_disk: u64,
    disks: HashMap<DiskId, Disk>,
    layers: Layers,
    logs: CbtLogs,
}

/// Number of 2 MiB blocks of a disk (virtual sizes are whole blocks).
pub(crate) const fn block_count(virtual_size: u64) -> u64 {
    virtual_size / BLOCK_SIZE
}

impl State {
    fn disk(&self, disk: DiskId) -> Result<&Disk, Error> {
        self.disks.get(&disk).ok_or(Error::UnknownDisk { disk })
    }

    /// The disk's leaf and virtual size; fails when its data was destroyed.
    pub(crate) fn live(&self, disk: DiskId) -> Result<(LayerId, u64), Error> {
        let found = self.disk(disk)?;
        let leaf = found.leaf.ok_or(Error::DataDestroyed { disk })?;
        Ok((leaf, found.virtual_size))
    }

    fn add_disk(&mut self, virtual_size: u64, leaf: LayerId) -> DiskId {
        self.next_disk = self.next_disk.wrapping_add(1);
        let disk = DiskId::from_raw(self.next_disk);
        self.disks.insert(
            disk,
            Disk {
                virtual_size,
                leaf: Some(leaf),
            },
        );
        disk
    }

    pub(crate) fn create(&mut self, virtual_size: ByteLen) -> Result<DiskId, Error> {
        let size = round_virtual_size(virtual_size)?.get();
        let leaf = self.layers.new_leaf(None);
        Ok(self.add_disk(size, leaf))
    }

    pub(crate) fn virtual_size(&self, disk: DiskId) -> Result<u64, Error> {
        Ok(self.disk(disk)?.virtual_size)
    }

    /// Forks the disk's chain; with `take_cbt` the new disk takes the CBT log (a snapshot).
    pub(crate) fn fork(&mut self, source: DiskId, take_cbt: bool) -> Result<DiskId, Error> {
        let (leaf, size) = self.live(source)?;
        let (source_leaf, new_leaf) = self.layers.fork(leaf);
        if let Some(found) = self.disks.get_mut(&source) {
            found.leaf = Some(source_leaf);
        }
        let new_disk = self.add_disk(size, new_leaf);
        if take_cbt {
            self.logs.snapshot(source, new_disk, size);
        }
        Ok(new_disk)
    }

    pub(crate) fn copy(&mut self, source: DiskId) -> Result<DiskId, Error> {
        let (leaf, size) = self.live(source)?;
        let blocks = self.layers.flatten(leaf);
        let new_leaf = self.layers.new_root_with(blocks);
        Ok(self.add_disk(size, new_leaf))
    }

    pub(crate) fn destroy(&mut self, disk: DiskId) -> Result<(), Error> {
        let removed = self
            .disks
            .remove(&disk)
            .ok_or(Error::UnknownDisk { disk })?;
        if let Some(leaf) = removed.leaf {
            self.layers.release(leaf);
        }
        self.logs.delete(disk);
        Ok(())
    }

    /// Drops the data and keeps the CBT log; idempotent.
    pub(crate) fn data_destroy(&mut self, disk: DiskId) -> Result<(), Error> {
        let found = self
            .disks
            .get_mut(&disk)
            .ok_or(Error::UnknownDisk { disk })?;
        if let Some(leaf) = found.leaf.take() {
            self.layers.release(leaf);
        }
        Ok(())
    }

    pub(crate) fn resize(&mut self, disk: DiskId, virtual_size: ByteLen) -> Result<u64, Error> {
        let (_, current) = self.live(disk)?;
        // sm compares the size asked for before rounding it: one byte less is a shrink, even
        // though it would round back up to the current size.
        if virtual_size.get() < current {
            return Err(Error::CannotShrink {
                disk,
                current,
                requested: virtual_size.get(),
            });
        }
        let size = round_virtual_size(virtual_size)?.get();
        if let Some(found) = self.disks.get_mut(&disk) {
            found.virtual_size = size;
        }
        self.logs.resize(disk, size);
        Ok(size)
    }

    /// Checks that `length` bytes at `offset` fit in the disk.
    pub(crate) fn check_range(
        &self,
        disk: DiskId,
        offset: u64,
        length: u64,
    ) -> Result<(LayerId, u64), Error> {
        let (leaf, virtual_size) = self.live(disk)?;
        let fits = offset
            .checked_add(length)
            .is_some_and(|end| end <= virtual_size);
        if !fits {
            return Err(Error::OutOfRange {
                disk,
                offset,
                length,
                virtual_size,
            });
        }
        Ok((leaf, virtual_size))
    }

    pub(crate) fn check_block(&self, disk: DiskId, block: u32) -> Result<LayerId, Error> {
        let (leaf, virtual_size) = self.live(disk)?;
        let count = block_count(virtual_size);
        if u64::from(block) >= count {
            return Err(Error::BlockOutOfRange {
                disk,
                block,
                block_count: count,
            });
        }
        Ok(leaf)
    }

    pub(crate) fn write(&mut self, disk: DiskId, offset: u64, data: &[u8]) -> Result<(), Error> {
        let length = u64::try_from(data.len()).unwrap_or(u64::MAX);
        let (leaf, _) = self.check_range(disk, offset, length)?;
        let mut position = offset;
        let mut rest = data;
        while !rest.is_empty() {
            let within = position % BLOCK_SIZE;
            let room = usize::try_from(BLOCK_SIZE - within).unwrap_or(BLOCK_BYTES);
            let (piece, tail) = rest.split_at(room.min(rest.len()));
            let (Ok(block), Ok(within)) = (
                u32::try_from(position / BLOCK_SIZE),
                usize::try_from(within),
            ) else {
                return Err(Error::OutOfRange {
                    disk,
                    offset,
                    length,
                    virtual_size: position,
                });
            };
            self.layers.write(leaf, block, within, piece);
            position = position.saturating_add(u64::try_from(piece.len()).unwrap_or(u64::MAX));
            rest = tail;
        }
        self.logs.record_write(disk, offset, length);
        Ok(())
    }

    /// The block as the disk shows it; `None` reads as zeros.
    pub(crate) fn block(&self, disk: DiskId, block: u32) -> Result<Option<Bytes>, Error> {
        let leaf = self.check_block(disk, block)?;
        Ok(self.layers.block(leaf, block).cloned())
    }

    /// Handles of the blocks covering `length` bytes at `offset`.
    pub(crate) fn blocks_for_range(
        &self,
        disk: DiskId,
        offset: u64,
        length: u64,
    ) -> Result<Vec<Option<Bytes>>, Error> {
        let (leaf, _) = self.check_range(disk, offset, length)?;
        if length == 0 {
            return Ok(Vec::new());
        }
        let first = offset / BLOCK_SIZE;
        let last = (offset + length - 1) / BLOCK_SIZE;
        Ok((first..=last)
            .map(|index| {
                u32::try_from(index)
                    .ok()
                    .and_then(|index| self.layers.block(leaf, index))
            })
            .map(Option::<&Bytes>::cloned)
            .collect())
    }

    pub(crate) fn apply_block(
        &mut self,
        disk: DiskId,
        block: u32,
        data: &Bytes,
        sectors: Option<&[u8]>,
    ) -> Result<(), Error> {
        let leaf = self.check_block(disk, block)?;
        if data.len() != BLOCK_BYTES {
            return Err(Error::BlockLength {
                found: data.len(),
                expected: BLOCK_BYTES,
            });
        }
        let start = u64::from(block) * BLOCK_SIZE;
        match sectors {
            None => {
                self.layers.put_block(leaf, block, data.clone());
                self.logs.record_write(disk, start, BLOCK_SIZE);
            }
            Some(bitmap) => {
                if bitmap.len() != SECTOR_BITMAP_LEN {
                    return Err(Error::SectorBitmapLength {
                        found: bitmap.len(),
                        expected: SECTOR_BITMAP_LEN,
                    });
                }
                self.layers.write_sectors(leaf, block, data, bitmap);
                for (first, end) in super::chain::set_runs(bitmap) {
                    let sector = u64::try_from(first).unwrap_or(0);
                    let sectors = u64::try_from(end - first).unwrap_or(0);
                    self.logs
                        .record_write(disk, start + sector * 512, sectors * 512);
                }
            }
        }
        Ok(())
    }

    pub(crate) fn allocated_blocks(&self, disk: DiskId) -> Result<BTreeSet<u32>, Error> {
        let (leaf, _) = self.live(disk)?;
        Ok(self.layers.allocated(leaf))
    }

    pub(crate) fn differing_blocks(
        &self,
        disk: DiskId,
        base: DiskId,
    ) -> Result<BTreeSet<u32>, Error> {
        let (leaf, size) = self.live(disk)?;
        let (base_leaf, _) = self.live(base)?;
        let count = block_count(size);
        let mut blocks = self.layers.symmetric_difference(leaf, base_leaf);
        blocks.retain(|block| u64::from(*block) < count);
        Ok(blocks)
    }

    pub(crate) fn enable_cbt(&mut self, disk: DiskId) -> Result<bool, Error> {
        let size = self.disk(disk)?.virtual_size;
        Ok(self.logs.enable(disk, size))
    }

    pub(crate) fn disable_cbt(&mut self, disk: DiskId) -> Result<bool, Error> {
        self.disk(disk)?;
        Ok(self.logs.disable(disk))
    }

    pub(crate) fn cbt_drop_inconsistent(&mut self, disk: DiskId) -> Result<bool, Error> {
        self.disk(disk)?;
        Ok(self.logs.drop_on_error(disk))
    }

    pub(crate) fn cbt_truncate(&mut self, disk: DiskId) -> Result<bool, Error> {
        self.disk(disk)?;
        Ok(self.logs.truncate(disk))
    }

    pub(crate) fn list_changed_blocks(
        &self,
        from: DiskId,
        to: DiskId,
    ) -> Result<ChangedBlocks, Error> {
        if from != to {
            self.disk(from)?;
            self.disk(to)?;
        }
        let merged = self.logs.changed_between(from, to)?;
        let mut bitmap =
            ChangedBlocks::new_xapi(ByteLen::new(merged.virtual_size)).map_err(Error::Bitmap)?;
        for (block, bits) in merged.changed {
            let base = u64::from(block) * CBT_UNITS_PER_BLOCK;
            for unit in 0..CBT_UNITS_PER_BLOCK {
                if bits & (0x8000_0000_u32 >> unit) != 0 {
                    bitmap
                        .mark_block(CbtBlockIndex::new(base + unit))
                        .map_err(Error::Bitmap)?;
                }
            }
        }
        Ok(bitmap)
    }

    pub(crate) fn info(&self, disk: DiskId) -> Result<DiskInfo, Error> {
        let found = self.disk(disk)?;
        let (leaf_blocks, allocated_blocks, chain_depth) = match found.leaf {
            Some(leaf) => (
                self.layers.leaf_block_count(leaf),
                self.layers.allocated(leaf).len(),
                self.layers.chain(leaf).len(),
            ),
            None => (0, 0, 0),
        };
        let to_u64 = |value: usize| u64::try_from(value).unwrap_or(u64::MAX);
        Ok(DiskInfo {
            virtual_size: ByteLen::new(found.virtual_size),
            cbt_enabled: self.logs.is_enabled(disk),
            data_destroyed: found.leaf.is_none(),
            leaf_blocks: to_u64(leaf_blocks),
            allocated_blocks: to_u64(allocated_blocks),
            chain_depth: to_u64(chain_depth),
        })
    }

    pub(crate) fn disk_ids(&self) -> Vec<DiskId> {
        let mut ids: Vec<DiskId> = self.disks.keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    pub(crate) fn stats(&self) -> StorageStats {
        let layers = self.layers.stats();
        let (cbt_logs, cbt_log_entries) = self.logs.stats();
        let unique_blocks = u64::try_from(layers.unique_blocks).unwrap_or(u64::MAX);
        StorageStats {
            disks: self.disks.len(),
            layers: layers.layers,
            unique_blocks,
            block_bytes: unique_blocks.saturating_mul(BLOCK_SIZE),
            cbt_logs,
            cbt_log_entries,
        }
    }
}
