//! Units of the XVA format: byte offsets on a disk, 1 MiB chunk numbers, disk positions.

use std::fmt;

/// Size of one XVA disk chunk: xapi cuts every disk into 1 MiB pieces (`stream_vdi.ml`).
pub const CHUNK_SIZE: u64 = 1 << 20;

/// A byte offset on a virtual disk.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteOffset(u64);

impl ByteOffset {
    /// Offset zero, the start of a disk.
    pub const ZERO: Self = Self(0);

    /// Wraps a byte offset.
    pub const fn new(offset: u64) -> Self {
        Self(offset)
    }

    /// The offset as a plain number of bytes.
    pub const fn get(self) -> u64 {
        self.0
    }

    /// The offset `len` bytes further, or `None` on overflow.
    pub const fn checked_add(self, len: u64) -> Option<Self> {
        match self.0.checked_add(len) {
            Some(sum) => Some(Self(sum)),
            None => None,
        }
    }

    /// The chunk this offset falls in.
    pub const fn chunk(self) -> ChunkIndex {
        ChunkIndex(self.0 / CHUNK_SIZE)
    }
}

impl fmt::Display for ByteOffset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The absolute number of a 1 MiB chunk of a disk (`n` in `Ref:1/0000000n`, for writers that number
/// chunks by offset, as ours does).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ChunkIndex(u64);

impl ChunkIndex {
    /// Wraps a chunk number.
    pub const fn new(index: u64) -> Self {
        Self(index)
    }

    /// The chunk number.
    pub const fn get(self) -> u64 {
        self.0
    }

    /// The disk offset where this chunk starts, or `None` on overflow.
    pub const fn start(self) -> Option<ByteOffset> {
        match self.0.checked_mul(CHUNK_SIZE) {
            Some(offset) => Some(ByteOffset(offset)),
            None => None,
        }
    }

    /// Number of chunks that cover a disk of `virtual_size` bytes (the last one may be partial).
    pub const fn count_for(virtual_size: u64) -> u64 {
        virtual_size.div_ceil(CHUNK_SIZE)
    }
}

impl fmt::Display for ChunkIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Position of a disk in an archive's disk list ([`crate::ArchiveLayout::disks`]), which is the
/// order the disks are streamed in.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DiskIndex(usize);

impl DiskIndex {
    /// Wraps a position in the disk list.
    pub const fn new(index: usize) -> Self {
        Self(index)
    }

    /// The position in the disk list.
    pub const fn get(self) -> usize {
        self.0
    }
}

impl fmt::Display for DiskIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_arithmetic() {
        // 3 MiB + 1 byte needs four chunks, the last one holding a single byte.
        assert_eq!(ChunkIndex::count_for(3 * CHUNK_SIZE + 1), 4);
        assert_eq!(ChunkIndex::count_for(0), 0);
        assert_eq!(
            ByteOffset::new(CHUNK_SIZE * 5 + 7).chunk(),
            ChunkIndex::new(5)
        );
        assert_eq!(
            ChunkIndex::new(2).start(),
            Some(ByteOffset::new(2 * CHUNK_SIZE))
        );
        assert_eq!(ChunkIndex::new(u64::MAX).start(), None);
        assert_eq!(ByteOffset::new(u64::MAX).checked_add(1), None);
    }
}
