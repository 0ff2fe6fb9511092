//! The block allocation table: one big-endian `u32` per block, the absolute sector of the
//! block's bitmap, `0xFFFFFFFF` when unallocated.

use bytes::Buf;

use crate::error::{Error, Result, Structure};
use crate::units::{BlockIndex, SectorIndex, u64_from_usize};

/// BAT value of an unallocated block.
pub const BAT_UNALLOCATED: u32 = 0xFFFF_FFFF;
/// Most BAT entries this crate loads (16 MiB of table): 2 TiB of 512 KiB blocks.
pub const MAX_BAT_ENTRIES: u32 = 4 * 1024 * 1024;

/// An in-memory block allocation table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bat {
    entries: Vec<u32>,
}

impl Bat {
    /// A table of `entries` unallocated blocks.
    pub fn unallocated(entries: u32) -> Result<Self> {
        check_entry_count(entries)?;
        Ok(Self {
            entries: vec![BAT_UNALLOCATED; usize::try_from(entries).unwrap_or(0)],
        })
    }

    /// Parses the first `entries` entries of `bytes` (padding after them is ignored).
    pub fn parse(bytes: &[u8], entries: u32) -> Result<Self> {
        check_entry_count(entries)?;
        let needed = Self::unpadded_len(entries);
        let mut table = bytes
            .get(..usize::try_from(needed).unwrap_or(usize::MAX))
            .ok_or(Error::Truncated {
                structure: Structure::Bat,
                needed,
                available: u64_from_usize(bytes.len()),
            })?;
        let mut parsed = Vec::with_capacity(table.len() / 4);
        while table.has_remaining() {
            parsed.push(table.get_u32());
        }
        Ok(Self { entries: parsed })
    }

    /// Bytes of `entries` entries without padding.
    #[must_use]
    pub fn unpadded_len(entries: u32) -> u64 {
        u64::from(entries) * 4
    }

    /// Bytes of `entries` entries padded to a whole sector, as written on disk.
    #[must_use]
    pub fn padded_len(entries: u32) -> u64 {
        Self::unpadded_len(entries).next_multiple_of(512)
    }

    /// The table padded to a sector multiple with `0xFF` (as xapi, qemu and Xen Orchestra do).
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut out: Vec<u8> = self
            .entries
            .iter()
            .flat_map(|entry| entry.to_be_bytes())
            .collect();
        out.resize(out.len().next_multiple_of(512), 0xFF);
        out
    }

    /// Number of entries.
    #[must_use]
    pub fn len(&self) -> u32 {
        u32::try_from(self.entries.len()).unwrap_or(u32::MAX)
    }

    /// True for a table without entries (a zero-sized disk).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Sector of the block's bitmap; `None` when unallocated or beyond the table.
    #[must_use]
    pub fn get(&self, index: BlockIndex) -> Option<SectorIndex> {
        self.entries
            .get(index.as_usize())
            .filter(|entry| **entry != BAT_UNALLOCATED)
            .map(|entry| SectorIndex(u64::from(*entry)))
    }

    /// Records the block's bitmap sector (or unallocates it with `None`).
    pub fn set(&mut self, index: BlockIndex, sector: Option<u32>) -> Result<()> {
        let slot = self
            .entries
            .get_mut(index.as_usize())
            .ok_or(Error::UnexpectedBlock {
                index,
                reason: "beyond the BAT",
            })?;
        if sector == Some(BAT_UNALLOCATED) {
            return Err(Error::BatEntryOutOfRange {
                block: index,
                sector: u64::from(BAT_UNALLOCATED),
                reason: "0xFFFFFFFF means unallocated",
            });
        }
        *slot = sector.unwrap_or(BAT_UNALLOCATED);
        Ok(())
    }

    /// Allocated blocks with their bitmap sectors, in block order.
    pub fn allocated(&self) -> impl Iterator<Item = (BlockIndex, SectorIndex)> + '_ {
        (0u32..)
            .zip(self.entries.iter())
            .filter(|(_, entry)| **entry != BAT_UNALLOCATED)
            .map(|(index, entry)| (BlockIndex(index), SectorIndex(u64::from(*entry))))
    }

    /// The allocated blocks as a set (what a stream will carry).
    #[must_use]
    pub fn block_set(&self) -> crate::block::BlockSet {
        self.allocated().map(|(index, _)| index).collect()
    }

    /// Number of allocated blocks.
    #[must_use]
    pub fn allocated_count(&self) -> usize {
        self.entries
            .iter()
            .filter(|entry| **entry != BAT_UNALLOCATED)
            .count()
    }
}

fn check_entry_count(entries: u32) -> Result<()> {
    if entries > MAX_BAT_ENTRIES {
        return Err(Error::InvalidField {
            structure: Structure::Bat,
            field: "entries",
            value: u64::from(entries),
            reason: "more entries than any disk within the size limit needs",
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_pads_with_ff_and_parses_back() {
        let mut bat = Bat::unallocated(3).unwrap();
        bat.set(BlockIndex(1), Some(44)).unwrap();
        let raw = bat.encode();
        // entry 0 unallocated, entry 1 = sector 44 (0x2c), entry 2 unallocated, then 0xFF padding.
        assert_eq!(
            &raw[..12],
            &[
                0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0x2c, 0xff, 0xff, 0xff, 0xff
            ]
        );
        assert_eq!(raw.len(), 512);
        assert!(raw[12..].iter().all(|byte| *byte == 0xff));
        let parsed = Bat::parse(&raw, 3).unwrap();
        assert_eq!(parsed, bat);
        assert_eq!(parsed.get(BlockIndex(1)), Some(SectorIndex(44)));
        assert_eq!(parsed.get(BlockIndex(0)), None);
        assert_eq!(parsed.get(BlockIndex(9)), None);
        assert_eq!(
            parsed.allocated().collect::<Vec<_>>(),
            vec![(BlockIndex(1), SectorIndex(44))]
        );
        assert_eq!(
            parsed.block_set().iter().collect::<Vec<_>>(),
            vec![BlockIndex(1)]
        );
        assert_eq!(Bat::padded_len(129), 1024);
    }

    #[test]
    fn refuses_truncation_and_absurd_sizes() {
        assert!(matches!(
            Bat::parse(&[0; 7], 2),
            Err(Error::Truncated { needed: 8, .. })
        ));
        assert!(Bat::unallocated(u32::MAX).is_err());
        let mut bat = Bat::unallocated(1).unwrap();
        assert!(bat.set(BlockIndex(1), Some(1)).is_err());
        assert!(bat.set(BlockIndex(0), Some(BAT_UNALLOCATED)).is_err());
    }
}
