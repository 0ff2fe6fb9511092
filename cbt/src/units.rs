//! Unit newtypes: byte offsets and lengths, extents, block indices and granularities.

use crate::Error;

/// A byte offset on a virtual disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ByteOffset(u64);

impl ByteOffset {
    /// Wraps a byte offset.
    #[must_use]
    pub const fn new(bytes: u64) -> Self {
        Self(bytes)
    }

    /// The offset in bytes.
    #[must_use]
    pub const fn get(self) -> u64 {
        self.0
    }
}

/// A length in bytes (a virtual size, an extent length, a count of changed bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ByteLen(u64);

impl ByteLen {
    /// Wraps a length in bytes.
    #[must_use]
    pub const fn new(bytes: u64) -> Self {
        Self(bytes)
    }

    /// The length in bytes.
    #[must_use]
    pub const fn get(self) -> u64 {
        self.0
    }
}

/// A non-overflowing byte range `[offset, offset + length)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteExtent {
    offset: ByteOffset,
    length: ByteLen,
}

impl ByteExtent {
    /// An extent of `length` bytes starting at `offset`.
    ///
    /// # Errors
    /// [`Error::ExtentOverflow`] when the end does not fit in a `u64`.
    pub fn new(offset: ByteOffset, length: ByteLen) -> Result<Self, Error> {
        match offset.get().checked_add(length.get()) {
            Some(_) => Ok(Self { offset, length }),
            None => Err(Error::ExtentOverflow {
                offset: offset.get(),
                length: length.get(),
            }),
        }
    }

    /// Convenience for callers holding plain numbers: `[start, start + length)`.
    ///
    /// # Errors
    /// [`Error::ExtentOverflow`] when the end does not fit in a `u64`.
    pub fn at(start: u64, length: u64) -> Result<Self, Error> {
        Self::new(ByteOffset(start), ByteLen(length))
    }

    /// Built by this crate from ranges already known not to overflow.
    pub(crate) const fn from_bounds(start: u64, end: u64) -> Self {
        Self {
            offset: ByteOffset(start),
            length: ByteLen(end.saturating_sub(start)),
        }
    }

    /// First byte of the extent.
    #[must_use]
    pub const fn offset(self) -> ByteOffset {
        self.offset
    }

    /// Length of the extent.
    #[must_use]
    pub const fn length(self) -> ByteLen {
        self.length
    }

    /// First byte after the extent (never overflows: checked at construction).
    #[must_use]
    pub const fn end(self) -> ByteOffset {
        ByteOffset(self.offset.0.saturating_add(self.length.0))
    }

    /// Whether the extent is empty.
    #[must_use]
    pub const fn is_empty(self) -> bool {
        self.length.0 == 0
    }
}

/// Index of one bit of a [`ChangedBlocks`](crate::ChangedBlocks) map: a block of the map's granularity
/// (64 KiB for xapi CBT), covering bytes `[index·granularity, (index+1)·granularity)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CbtBlockIndex(u64);

impl CbtBlockIndex {
    /// Wraps a block index.
    #[must_use]
    pub const fn new(index: u64) -> Self {
        Self(index)
    }

    /// The index.
    #[must_use]
    pub const fn get(self) -> u64 {
        self.0
    }
}

/// Index of a 2 MiB VHD block (the unit of every transfer and of VHD BATs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VhdBlockIndex(u32);

impl VhdBlockIndex {
    /// Wraps a VHD block index.
    #[must_use]
    pub const fn new(index: u32) -> Self {
        Self(index)
    }

    /// The index.
    #[must_use]
    pub const fn get(self) -> u32 {
        self.0
    }

    /// Byte range of this block on the disk (the last block of a disk whose size is not a multiple of
    /// 2 MiB extends past the end: clip it to the virtual size).
    #[must_use]
    pub fn byte_extent(self) -> ByteExtent {
        let start = u64::from(self.0) << VHD_BLOCK_SHIFT;
        ByteExtent::from_bounds(start, start + VHD_BLOCK_SIZE.get())
    }
}

/// Size of a VHD block: 2 MiB.
pub const VHD_BLOCK_SIZE: ByteLen = ByteLen(1 << VHD_BLOCK_SHIFT);
const VHD_BLOCK_SHIFT: u32 = 21;

/// Bytes covered by one bit of a bitmap: a power of two between 512 B and 2 GiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Granularity {
    shift: u32,
}

impl Granularity {
    /// xapi's CBT granularity: 64 KiB per bit (`CBT_BLOCK_SIZE` in sm `libs/sm/VDI.py`).
    pub const XAPI_CBT: Self = Self { shift: 16 };

    const MIN_SHIFT: u32 = 9;
    const MAX_SHIFT: u32 = 31;

    /// A granularity of `bytes` per bit.
    ///
    /// # Errors
    /// [`Error::InvalidGranularity`] unless `bytes` is a power of two between 512 and 2^31.
    pub fn new(bytes: u64) -> Result<Self, Error> {
        let shift = bytes.trailing_zeros();
        if bytes.is_power_of_two() && (Self::MIN_SHIFT..=Self::MAX_SHIFT).contains(&shift) {
            Ok(Self { shift })
        } else {
            Err(Error::InvalidGranularity { granularity: bytes })
        }
    }

    /// Bytes per bit.
    #[must_use]
    pub const fn bytes(self) -> u64 {
        1 << self.shift
    }

    /// log2 of [`Self::bytes`].
    #[must_use]
    pub const fn shift(self) -> u32 {
        self.shift
    }
}
