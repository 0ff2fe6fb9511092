//! Sector bitmaps of 2 MiB blocks: 4096 bits, MSB-first (sector `n` ↔ byte `n >> 3`, mask
//! `0x80 >> (n & 7)`).

use std::fmt;
use std::ops::Range;

use crate::error::{Error, Result, Structure};
use crate::units::{BITMAP_SIZE, SECTORS_PER_BLOCK};

/// Which sectors of a 2 MiB block are present (bit set) in a layer or a transfer.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SectorBitmap {
    bits: Box<[u8; BITMAP_SIZE]>,
}

impl SectorBitmap {
    /// No sector present.
    #[must_use]
    pub fn empty() -> Self {
        Self {
            bits: Box::new([0; BITMAP_SIZE]),
        }
    }

    /// Every sector present.
    #[must_use]
    pub fn full() -> Self {
        Self {
            bits: Box::new([0xFF; BITMAP_SIZE]),
        }
    }

    /// Reads an on-disk bitmap (the first 512 bytes of `bytes`), MSB-first.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let bits = crate::footer::take_array::<BITMAP_SIZE>(bytes, Structure::Bitmap)?;
        Ok(Self {
            bits: Box::new(bits),
        })
    }

    /// Reads a bitmap written LSB-first within each byte, as blktap's creator `tap` version 0.1
    /// did ("older VHD bitmaps were little endian").
    pub fn from_lsb_first_bytes(bytes: &[u8]) -> Result<Self> {
        let mut bitmap = Self::from_bytes(bytes)?;
        for byte in bitmap.bits.iter_mut() {
            *byte = byte.reverse_bits();
        }
        Ok(bitmap)
    }

    /// The 512 on-disk bytes, MSB-first.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8; BITMAP_SIZE] {
        &self.bits
    }

    /// True when sector `sector` (0–4095) of the block is present; false beyond the block.
    #[must_use]
    pub fn contains(&self, sector: u32) -> bool {
        bit_is_set(&self.bits[..], sector)
    }

    /// Marks one sector present; sectors beyond the block are refused.
    pub fn insert(&mut self, sector: u32) -> Result<()> {
        self.insert_range(sector..sector.saturating_add(1))
    }

    /// Marks sectors `range` present; ranges reaching beyond the block are refused.
    pub fn insert_range(&mut self, range: Range<u32>) -> Result<()> {
        if range.end > SECTORS_PER_BLOCK {
            return Err(Error::InvalidField {
                structure: Structure::Bitmap,
                field: "sector",
                value: u64::from(range.end),
                reason: "a 2 MiB block has 4096 sectors",
            });
        }
        for sector in range {
            if let Some(byte) = self.bits.get_mut(byte_of(sector)) {
                *byte |= mask_of(sector);
            }
        }
        Ok(())
    }

    /// Sets every bit that is set in `other`.
    pub fn union_with(&mut self, other: &Self) {
        for (mine, theirs) in self.bits.iter_mut().zip(other.bits.iter()) {
            *mine |= *theirs;
        }
    }

    /// Number of present sectors.
    #[must_use]
    pub fn count(&self) -> u32 {
        self.bits.iter().map(|byte| byte.count_ones()).sum()
    }

    /// True when all 4096 sectors are present.
    #[must_use]
    pub fn is_full(&self) -> bool {
        self.bits.iter().all(|byte| *byte == 0xFF)
    }

    /// True when no sector is present.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.bits.iter().all(|byte| *byte == 0)
    }

    /// True when the first `sectors` sectors are all present (the part of a last, partial
    /// block that lies inside the disk).
    #[must_use]
    pub fn is_full_below(&self, sectors: u32) -> bool {
        (0..sectors.min(SECTORS_PER_BLOCK)).all(|sector| self.contains(sector))
    }

    /// Maximal runs of present sectors, in increasing order.
    pub fn runs(&self) -> impl Iterator<Item = Range<u32>> + '_ {
        runs_of(&self.bits[..], SECTORS_PER_BLOCK, true)
    }
}

impl fmt::Debug for SectorBitmap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.runs()).finish()
    }
}

/// Byte holding `sector`'s bit.
fn byte_of(sector: u32) -> usize {
    usize::try_from(sector >> 3).unwrap_or(usize::MAX)
}

/// Mask of `sector`'s bit within its byte (MSB-first).
fn mask_of(sector: u32) -> u8 {
    0x80 >> (sector & 7)
}

/// Bit `sector` of an MSB-first bitmap of any length; false beyond it.
pub(crate) fn bit_is_set(bits: &[u8], sector: u32) -> bool {
    bits.get(byte_of(sector))
        .is_some_and(|byte| byte & mask_of(sector) != 0)
}

/// Maximal runs of bits equal to `value` among the first `len` bits of `bits`.
pub(crate) fn runs_of(bits: &[u8], len: u32, value: bool) -> impl Iterator<Item = Range<u32>> + '_ {
    let mut next = 0u32;
    std::iter::from_fn(move || {
        while next < len && bit_is_set(bits, next) != value {
            next += 1;
        }
        if next >= len {
            return None;
        }
        let start = next;
        while next < len && bit_is_set(bits, next) == value {
            next += 1;
        }
        Some(start..next)
    })
}

/// Bytes of the on-disk bitmap of a block of `block_size` bytes: one bit per sector, rounded
/// up to a whole sector.
pub(crate) fn bitmap_bytes_for(block_size: u32) -> u64 {
    let sectors = u64::from(block_size) / 512;
    sectors.div_ceil(8).next_multiple_of(512).max(512)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Spec §5 bit positions: sectors 0–7 ⇒ byte 0 = 0xFF; sector 8 ⇒ byte 1 = 0x80;
    /// sector 4095 ⇒ byte 511 = 0x01.
    #[test]
    fn spec_bit_positions() {
        let mut bitmap = SectorBitmap::empty();
        bitmap.insert_range(0..8).unwrap();
        bitmap.insert(8).unwrap();
        bitmap.insert(4095).unwrap();
        let bytes = bitmap.as_bytes();
        assert_eq!(bytes[0], 0xFF);
        assert_eq!(bytes[1], 0x80);
        assert_eq!(bytes[511], 0x01);
        assert_eq!(bitmap.count(), 10);
        assert_eq!(bitmap.runs().collect::<Vec<_>>(), vec![0..9, 4095..4096]);
        assert!(bitmap.insert(4096).is_err());
        assert!(!bitmap.contains(4096));
    }

    #[test]
    fn lsb_first_bitmaps_are_normalised() {
        let mut raw = [0u8; 512];
        raw[0] = 0x01; // tap v0.1: sector 0 is the least significant bit
        let bitmap = SectorBitmap::from_lsb_first_bytes(&raw).unwrap();
        assert!(bitmap.contains(0));
        assert_eq!(bitmap.count(), 1);
    }

    #[test]
    fn fullness_and_sizes() {
        assert!(SectorBitmap::full().is_full());
        assert!(SectorBitmap::empty().is_empty());
        let mut half = SectorBitmap::empty();
        half.insert_range(0..2048).unwrap();
        assert!(half.is_full_below(2048));
        assert!(!half.is_full_below(2049));
        assert_eq!(bitmap_bytes_for(2 << 20), 512);
        assert_eq!(bitmap_bytes_for(512), 512);
        assert_eq!(bitmap_bytes_for(1 << 30), 512 * 512);
    }
}
