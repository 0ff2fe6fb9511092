//! The unit of every transfer: a 2 MiB block with the sectors it carries.

use std::fmt;
use std::ops::Range;

use bytes::Bytes;

use crate::bitmap::SectorBitmap;
use crate::error::{Error, Result};
use crate::units::{BLOCK_BYTES, BLOCK_SIZE, BlockIndex, ByteOffset, SECTOR_BYTES, SECTOR_SIZE};

/// A 2 MiB block of a virtual disk, as the block pipeline moves it.
///
/// `data` always holds the whole block (2 MiB, also for a last block that extends past the end
/// of the disk); `sectors` says which 512-byte sectors are meaningful: `None` means all of them.
/// In a differencing disk an absent sector comes from the parent; in a dynamic disk it reads as
/// zeros.
#[derive(Clone, PartialEq, Eq)]
pub struct Block {
    /// Which block of the disk.
    pub index: BlockIndex,
    /// The 2 MiB payload (moved, never copied, through the pipeline).
    pub data: Bytes,
    /// Present sectors; `None` = all present.
    pub sectors: Option<SectorBitmap>,
}

impl Block {
    /// A block whose every sector is present.
    #[must_use]
    pub fn full(index: BlockIndex, data: Bytes) -> Self {
        Self {
            index,
            data,
            sectors: None,
        }
    }

    /// A block carrying only the sectors set in `sectors` (normalised to `None` when full).
    #[must_use]
    pub fn partial(index: BlockIndex, data: Bytes, sectors: SectorBitmap) -> Self {
        Self {
            index,
            data,
            sectors: (!sectors.is_full()).then_some(sectors),
        }
    }

    /// Checks the payload is exactly one block long.
    pub fn check_shape(&self) -> Result<()> {
        if self.data.len() != BLOCK_BYTES {
            return Err(Error::InvalidBlock {
                index: self.index,
                reason: "payload is not exactly 2 MiB",
            });
        }
        Ok(())
    }

    /// True when sector `sector` (0–4095) of the block is present.
    #[must_use]
    pub fn is_present(&self, sector: u32) -> bool {
        match &self.sectors {
            None => sector < crate::units::SECTORS_PER_BLOCK,
            Some(bitmap) => bitmap.contains(sector),
        }
    }

    /// Maximal runs of present sectors within the block, in increasing order.
    #[must_use]
    pub fn present_runs(&self) -> Vec<Range<u32>> {
        match &self.sectors {
            None => std::iter::once(0..crate::units::SECTORS_PER_BLOCK).collect(),
            Some(bitmap) => bitmap.runs().collect(),
        }
    }

    /// The present data as `(virtual offset, bytes)` extents, clipped to a disk of
    /// `virtual_size` bytes; each extent shares the block's buffer (no copy). This is what a
    /// raw sink writes to apply a block: only the present sectors, as xapi's import does.
    #[must_use]
    pub fn present_extents(&self, virtual_size: u64) -> Vec<(ByteOffset, Bytes)> {
        let block_start = self.index.byte_offset().0;
        let in_disk = virtual_size
            .saturating_sub(block_start)
            .min(BLOCK_SIZE)
            .min(crate::units::u64_from_usize(self.data.len()));
        let in_disk = usize::try_from(in_disk).unwrap_or(0);
        self.present_runs()
            .into_iter()
            .filter_map(|run| {
                let start = usize::try_from(run.start).ok()?.checked_mul(SECTOR_BYTES)?;
                let end = usize::try_from(run.end)
                    .ok()?
                    .checked_mul(SECTOR_BYTES)?
                    .min(in_disk);
                (start < end).then(|| {
                    (
                        ByteOffset(block_start + crate::units::u64_from_usize(start)),
                        self.data.slice(start..end),
                    )
                })
            })
            .collect()
    }

    /// Number of sectors of this block that lie inside a disk of `virtual_size` bytes.
    #[must_use]
    pub fn sectors_in_disk(index: BlockIndex, virtual_size: u64) -> u32 {
        let remaining = virtual_size.saturating_sub(index.byte_offset().0);
        u32::try_from(remaining.min(BLOCK_SIZE) / SECTOR_SIZE).unwrap_or(0)
    }
}

impl fmt::Debug for Block {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Block")
            .field("index", &self.index.0)
            .field("data_len", &self.data.len())
            .field("sectors", &self.sectors)
            .finish()
    }
}

/// A sorted set of block indices: the exact blocks a source will yield, known up front.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BlockSet {
    sorted: Vec<BlockIndex>,
}

impl BlockSet {
    /// The empty set.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of blocks.
    #[must_use]
    pub fn len(&self) -> usize {
        self.sorted.len()
    }

    /// True when no block is included.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.sorted.is_empty()
    }

    /// True when `index` is included.
    #[must_use]
    pub fn contains(&self, index: BlockIndex) -> bool {
        self.sorted.binary_search(&index).is_ok()
    }

    /// The blocks in increasing order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = BlockIndex> + '_ {
        self.sorted.iter().copied()
    }

    /// The `position`-th block in increasing order.
    #[must_use]
    pub fn get(&self, position: usize) -> Option<BlockIndex> {
        self.sorted.get(position).copied()
    }

    /// Position of `index` in increasing order, if included.
    #[must_use]
    pub fn position(&self, index: BlockIndex) -> Option<usize> {
        self.sorted.binary_search(&index).ok()
    }

    /// The largest block, if any.
    #[must_use]
    pub fn last(&self) -> Option<BlockIndex> {
        self.sorted.last().copied()
    }
}

impl FromIterator<BlockIndex> for BlockSet {
    fn from_iter<I: IntoIterator<Item = BlockIndex>>(iter: I) -> Self {
        let mut sorted: Vec<BlockIndex> = iter.into_iter().collect();
        sorted.sort_unstable();
        sorted.dedup();
        Self { sorted }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extents_share_the_buffer_and_clip_to_the_disk() {
        let data = Bytes::from(vec![7u8; BLOCK_BYTES]);
        let mut sectors = SectorBitmap::empty();
        sectors.insert_range(0..2).unwrap();
        sectors.insert_range(4000..4096).unwrap();
        let block = Block::partial(BlockIndex(1), data.clone(), sectors);
        // Disk ends 1 MiB into block 1: the run 4000..4096 lies beyond it.
        let extents = block.present_extents(BLOCK_SIZE + (1 << 20));
        assert_eq!(extents.len(), 1);
        assert_eq!(extents[0].0, ByteOffset(BLOCK_SIZE));
        assert_eq!(extents[0].1.len(), 1024);
        assert_eq!(extents[0].1.as_ptr(), data.as_ptr());
        assert_eq!(
            Block::sectors_in_disk(BlockIndex(1), BLOCK_SIZE + (1 << 20)),
            2048
        );
    }

    #[test]
    fn full_bitmaps_normalise_to_none() {
        let block = Block::partial(BlockIndex(0), Bytes::new(), SectorBitmap::full());
        assert!(block.sectors.is_none());
        assert!(block.check_shape().is_err());
        assert!(block.is_present(4095));
        assert!(!block.is_present(4096));
    }

    #[test]
    fn block_sets_sort_and_dedup() {
        let set: BlockSet = [5, 0, 5, 3].into_iter().map(BlockIndex).collect();
        assert_eq!(set.iter().map(|b| b.0).collect::<Vec<_>>(), vec![0, 3, 5]);
        assert_eq!(set.position(BlockIndex(5)), Some(2));
        assert!(!set.contains(BlockIndex(4)));
    }
}
