//! Building a [`ChangedBlocks`] map from NBD `BLOCK_STATUS` descriptors.

use crate::{ByteExtent, ByteLen, ByteOffset, ChangedBlocks, Error, Granularity};

/// How the flags of a block-status descriptor say "changed".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StatusRule {
    /// `qemu:dirty-bitmap:<name>`: bit 0 (`NBD_STATE_DIRTY`) set means changed.
    DirtyBitmap,
    /// `base:allocation`: anything not reading as zero (bit 1, `NBD_STATE_ZERO`, clear) holds data,
    /// the map of a first full copy.
    Allocation,
}

impl StatusRule {
    /// Whether a descriptor with these flags marks its range.
    #[must_use]
    pub const fn is_changed(self, flags: u64) -> bool {
        match self {
            Self::DirtyBitmap => flags & 1 != 0,
            Self::Allocation => flags & 2 == 0,
        }
    }
}

/// Turns the descriptors of one metadata context, in disk order, into a [`ChangedBlocks`] map.
///
/// Sans-IO: the NBD client sends `BLOCK_STATUS` starting at [`Self::position`], feeds every
/// descriptor of the chosen context to [`Self::push_descriptor`], and repeats until
/// [`Self::is_complete`]. Ranges are rounded outward to the granularity (conservative), and a last
/// descriptor running past the disk is clipped.
#[derive(Debug, Clone)]
pub struct BlockStatusBuilder {
    blocks: ChangedBlocks,
    rule: StatusRule,
    position: u64,
}

impl BlockStatusBuilder {
    /// A builder for a disk of `virtual_size` bytes.
    ///
    /// # Errors
    /// The size errors of [`ChangedBlocks::new`].
    pub fn new(
        virtual_size: ByteLen,
        granularity: Granularity,
        rule: StatusRule,
    ) -> Result<Self, Error> {
        Ok(Self {
            blocks: ChangedBlocks::new(virtual_size, granularity)?,
            rule,
            position: 0,
        })
    }

    /// First byte not yet described: where the next `BLOCK_STATUS` request starts.
    #[must_use]
    pub const fn position(&self) -> ByteOffset {
        ByteOffset::new(self.position)
    }

    /// Whether the whole disk has been described.
    #[must_use]
    pub fn is_complete(&self) -> bool {
        self.position >= self.blocks.virtual_size().get()
    }

    /// Records the next descriptor: `length` bytes from [`Self::position`] with `flags`
    /// (32-bit or extended 64-bit lengths and flags alike). Descriptors past the end are ignored.
    ///
    /// # Errors
    /// [`Error::EmptyDescriptor`] for a zero length, which would make no progress.
    pub fn push_descriptor(&mut self, length: u64, flags: u64) -> Result<(), Error> {
        if length == 0 {
            return Err(Error::EmptyDescriptor {
                offset: self.position,
            });
        }
        let size = self.blocks.virtual_size().get();
        if self.position >= size {
            return Ok(());
        }
        let end = self.position.saturating_add(length).min(size);
        if self.rule.is_changed(flags) {
            self.blocks
                .mark_changed(ByteExtent::from_bounds(self.position, end))?;
        }
        self.position = end;
        Ok(())
    }

    /// The finished map.
    ///
    /// # Errors
    /// [`Error::IncompleteCoverage`] when descriptors stopped before the end of the disk.
    pub fn finish(self) -> Result<ChangedBlocks, Error> {
        if self.is_complete() {
            Ok(self.blocks)
        } else {
            Err(Error::IncompleteCoverage {
                covered: self.position,
                expected: self.blocks.virtual_size().get(),
            })
        }
    }
}
