//! Units of the format: sectors, 2 MiB blocks, byte offsets and VHD timestamps, with checked
//! conversions between them.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Bytes in a sector, the unit of VHD bitmaps and BAT entries.
pub const SECTOR_SIZE: u64 = 512;
/// Bytes in a block of every stream and file this crate writes (and of every xapi export).
pub const BLOCK_SIZE: u64 = 2 * 1024 * 1024;
/// Sectors in a [`BLOCK_SIZE`] block.
pub const SECTORS_PER_BLOCK: u32 = 4096;
/// Bytes of the sector bitmap in front of each [`BLOCK_SIZE`] block (4096 bits).
pub const BITMAP_SIZE: usize = 512;
/// Largest virtual size this crate reads or writes: 2 TiB − 8 KiB (Xen Orchestra's
/// `VHD_MAX_SIZE`). Anything larger is refused with [`crate::Error::DiskTooLarge`].
pub const MAX_VIRTUAL_SIZE: u64 = 2 * 1024 * 1024 * 1024 * 1024 - 8 * 1024;
/// Largest VDI xapi accepts for `format=vhd` transfers (`Constants.max_vhd_size`, 2040 GiB);
/// above it xapi answers `VDI_TOO_LARGE`. Smaller than [`MAX_VIRTUAL_SIZE`].
pub const XAPI_MAX_VHD_SIZE: u64 = 2040 * 1024 * 1024 * 1024;

/// Block size as `usize`, for buffer lengths (2 MiB fits every supported target).
pub(crate) const BLOCK_BYTES: usize = 2 * 1024 * 1024;
/// Sector size as `usize`, for buffer arithmetic.
pub(crate) const SECTOR_BYTES: usize = 512;

/// Index of a 2 MiB block of a virtual disk: block `n` covers bytes `[n × 2 MiB, (n+1) × 2 MiB)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BlockIndex(pub u32);

impl BlockIndex {
    /// Virtual byte offset of the first byte of this block (never overflows: `u32 × 2 MiB < 2^53`).
    #[must_use]
    pub fn byte_offset(self) -> ByteOffset {
        ByteOffset(u64::from(self.0) * BLOCK_SIZE)
    }

    /// Block that holds virtual byte `offset`, if its index fits a `u32`.
    #[must_use]
    pub fn containing(offset: ByteOffset) -> Option<Self> {
        u32::try_from(offset.0 / BLOCK_SIZE).ok().map(Self)
    }

    /// Position of this block as a `usize`, for indexing tables.
    #[must_use]
    pub fn as_usize(self) -> usize {
        usize::try_from(self.0).unwrap_or(usize::MAX)
    }

    /// The following block, unless this is the last representable one.
    #[must_use]
    pub fn next(self) -> Option<Self> {
        self.0.checked_add(1).map(Self)
    }
}

impl fmt::Display for BlockIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "block {}", self.0)
    }
}

/// A byte offset: into the virtual disk or into a file, as the field's name says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ByteOffset(pub u64);

impl ByteOffset {
    /// `self + len`, or `None` on overflow.
    #[must_use]
    pub fn checked_add(self, len: u64) -> Option<Self> {
        self.0.checked_add(len).map(Self)
    }

    /// True when the offset is a multiple of [`SECTOR_SIZE`].
    #[must_use]
    pub fn is_sector_aligned(self) -> bool {
        self.0.is_multiple_of(SECTOR_SIZE)
    }

    /// The sector holding this byte.
    #[must_use]
    pub fn sector(self) -> SectorIndex {
        SectorIndex(self.0 / SECTOR_SIZE)
    }
}

impl fmt::Display for ByteOffset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "byte {}", self.0)
    }
}

/// A 512-byte sector number: on the virtual disk, or in a file (BAT entries).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SectorIndex(pub u64);

impl SectorIndex {
    /// Byte offset of the sector, or `None` when it does not fit a `u64`.
    #[must_use]
    pub fn byte_offset(self) -> Option<ByteOffset> {
        self.0.checked_mul(SECTOR_SIZE).map(ByteOffset)
    }
}

/// Seconds since 2000-01-01T00:00:00Z, the VHD timestamp (footer and parent timestamp).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct VhdTimestamp(pub u32);

/// Unix time of the VHD epoch, 2000-01-01T00:00:00Z.
const VHD_EPOCH_UNIX: u64 = 946_684_800;

impl VhdTimestamp {
    /// The VHD timestamp of `time`; `None` before 2000 or after the `u32` range (year 2136).
    #[must_use]
    pub fn from_system_time(time: SystemTime) -> Option<Self> {
        let unix = time.duration_since(UNIX_EPOCH).ok()?.as_secs();
        let since_2000 = unix.checked_sub(VHD_EPOCH_UNIX)?;
        u32::try_from(since_2000).ok().map(Self)
    }

    /// The wall-clock time this timestamp names.
    #[must_use]
    pub fn to_system_time(self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(VHD_EPOCH_UNIX + u64::from(self.0))
    }

    /// The current time as a VHD timestamp (zero if the clock is outside the representable range).
    #[must_use]
    pub fn now() -> Self {
        Self::from_system_time(SystemTime::now()).unwrap_or_default()
    }
}

/// `ceil(a / b)` for `b > 0`.
pub(crate) fn div_ceil_u64(a: u64, b: u64) -> u64 {
    a.div_ceil(b)
}

/// Number of 2 MiB blocks covering `virtual_size` bytes.
pub(crate) fn blocks_for_size(virtual_size: u64) -> u64 {
    div_ceil_u64(virtual_size, BLOCK_SIZE)
}

/// `usize` → `u64` (lossless on every supported target).
pub(crate) fn u64_from_usize(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_offsets_are_checked() {
        assert_eq!(BlockIndex(5).byte_offset(), ByteOffset(5 * BLOCK_SIZE));
        assert_eq!(
            BlockIndex::containing(ByteOffset(BLOCK_SIZE * 3 + 7)),
            Some(BlockIndex(3))
        );
        assert_eq!(BlockIndex::containing(ByteOffset(u64::MAX)), None);
        assert_eq!(BlockIndex(u32::MAX).next(), None);
        assert_eq!(SectorIndex(u64::MAX).byte_offset(), None);
        assert_eq!(SectorIndex(44).byte_offset(), Some(ByteOffset(22528)));
    }

    #[test]
    fn size_limits_match_their_definitions() {
        // 2 TiB − 8 KiB and 2040 GiB, spelled out.
        assert_eq!(MAX_VIRTUAL_SIZE, 2_199_023_247_360);
        assert_eq!(XAPI_MAX_VHD_SIZE, 2_190_433_320_960);
    }

    #[test]
    fn timestamps_count_from_2000() {
        let t = UNIX_EPOCH + Duration::from_secs(946_684_800 + 86_400);
        assert_eq!(
            VhdTimestamp::from_system_time(t),
            Some(VhdTimestamp(86_400))
        );
        assert_eq!(VhdTimestamp(86_400).to_system_time(), t);
        assert_eq!(VhdTimestamp::from_system_time(UNIX_EPOCH), None);
    }
}
