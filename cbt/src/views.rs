//! Views of a [`ChangedBlocks`] map: 2 MiB VHD blocks and NBD read requests.

use crate::bitmap::RawRuns;
use crate::{ByteExtent, ByteLen, ByteOffset, ChangedBlocks, Error, VHD_BLOCK_SIZE, VhdBlockIndex};

impl ChangedBlocks {
    /// The 2 MiB VHD blocks holding at least one changed byte, ascending: exactly the blocks to
    /// send when whole blocks are transferred.
    ///
    /// # Errors
    /// [`Error::GranularityDoesNotDivideBlock`] when the granularity is coarser than 2 MiB.
    pub fn vhd_blocks(&self) -> Result<VhdBlocks<'_>, Error> {
        let granularity = self.granularity().bytes();
        if !VHD_BLOCK_SIZE.get().is_multiple_of(granularity) {
            return Err(Error::GranularityDoesNotDivideBlock {
                granularity,
                block_size: VHD_BLOCK_SIZE.get(),
            });
        }
        let bits_per_block = VHD_BLOCK_SIZE.get() >> self.granularity().shift();
        Ok(VhdBlocks {
            words: self.words(),
            bits_per_block: u32::try_from(bits_per_block).unwrap_or(u32::MAX),
            next_word: 0,
            current: 0,
            current_word: 0,
        })
    }

    /// Number of 2 MiB VHD blocks of the disk (the last one may be partial).
    #[must_use]
    pub fn vhd_block_count(&self) -> u32 {
        let blocks = self.virtual_size().get().div_ceil(VHD_BLOCK_SIZE.get());
        // MAX_VIRTUAL_SIZE / 2 MiB = 2^27: always fits.
        u32::try_from(blocks).unwrap_or(u32::MAX)
    }

    /// NBD read requests covering every changed byte exactly once, in ascending order, each at
    /// most `config.max_request()` long and starting on a multiple of `config.alignment()`.
    ///
    /// Runs are widened to the alignment (and merged when they then touch or lie within the
    /// configured gap); only a request ending at the end of the disk may have an unaligned length.
    #[must_use]
    pub fn read_requests(&self, config: ReadPlanConfig) -> ReadRequests<'_> {
        ReadRequests {
            runs: RawRuns::new(self.words()),
            shift: self.granularity().shift(),
            virtual_size: self.virtual_size().get(),
            align_mask: u64::from(config.alignment) - 1,
            max_request: config.max_request,
            merge_gap: config.merge_gap,
            building: None,
            cursor: 0,
            end: 0,
        }
    }
}

/// Iterator over changed VHD blocks, from [`ChangedBlocks::vhd_blocks`].
#[derive(Clone)]
pub struct VhdBlocks<'a> {
    words: &'a [u64],
    /// Power of two between 1 and 4096.
    bits_per_block: u32,
    next_word: usize,
    /// Unvisited bits of the word before `next_word`, when blocks are narrower than a word.
    current: u64,
    current_word: u64,
}

impl VhdBlocks<'_> {
    fn block(bit: u64, bits_per_block: u32) -> VhdBlockIndex {
        // Bits are capped at 2^31, so block indices always fit in a u32.
        VhdBlockIndex::new(u32::try_from(bit / u64::from(bits_per_block)).unwrap_or(u32::MAX))
    }
}

impl Iterator for VhdBlocks<'_> {
    type Item = VhdBlockIndex;

    fn next(&mut self) -> Option<VhdBlockIndex> {
        let bits_per_block = self.bits_per_block;
        if bits_per_block >= 64 {
            // A block spans whole words: it changed if any of them is non-zero.
            let words_per_block = usize::try_from(bits_per_block / 64).unwrap_or(usize::MAX);
            loop {
                let start = self.next_word;
                let group = self.words.get(start..)?;
                let group = group.get(..words_per_block).unwrap_or(group);
                if group.is_empty() {
                    return None;
                }
                self.next_word = start.saturating_add(group.len());
                if group.iter().any(|word| *word != 0) {
                    let bit = u64::try_from(start).unwrap_or(u64::MAX).saturating_mul(64);
                    return Some(Self::block(bit, bits_per_block));
                }
            }
        }
        while self.current == 0 {
            self.current = *self.words.get(self.next_word)?;
            self.current_word = u64::try_from(self.next_word).unwrap_or(u64::MAX);
            self.next_word = self.next_word.saturating_add(1);
        }
        let block_in_word = self.current.trailing_zeros() / bits_per_block;
        let next_block_bit = (block_in_word + 1) * bits_per_block;
        // Drop the rest of this block's bits: the block is reported once.
        self.current &= u64::MAX.checked_shl(next_block_bit).unwrap_or(0);
        let bit = self.current_word * 64 + u64::from(block_in_word * bits_per_block);
        Some(Self::block(bit, bits_per_block))
    }
}

/// Limits of an NBD read plan: maximum request size, server alignment and gap merging.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadPlanConfig {
    max_request: u32,
    alignment: u32,
    merge_gap: u64,
}

impl ReadPlanConfig {
    /// Requests of up to 2 MiB aligned to 512 bytes, as xapi-nbd needs (§1 of the NBD spec notes).
    pub const XAPI: Self = Self {
        max_request: 2 * 1024 * 1024,
        alignment: 512,
        merge_gap: 0,
    };

    /// Requests of at most `max_request` bytes starting on multiples of `alignment` (the server's
    /// minimum block size).
    ///
    /// # Errors
    /// [`Error::InvalidAlignment`] unless `alignment` is a power of two;
    /// [`Error::InvalidMaxRequest`] unless `max_request` is a non-zero multiple of `alignment`.
    pub fn new(max_request: u32, alignment: u32) -> Result<Self, Error> {
        if !alignment.is_power_of_two() {
            return Err(Error::InvalidAlignment { alignment });
        }
        if max_request == 0 || !max_request.is_multiple_of(alignment) {
            return Err(Error::InvalidMaxRequest {
                max_request,
                alignment,
            });
        }
        Ok(Self {
            max_request,
            alignment,
            merge_gap: 0,
        })
    }

    /// Also joins runs separated by at most `gap` unchanged bytes, trading extra bytes read for
    /// fewer round trips on a latency-bound server.
    #[must_use]
    pub const fn with_merge_gap(mut self, gap: ByteLen) -> Self {
        self.merge_gap = gap.get();
        self
    }

    /// Largest request length in bytes.
    #[must_use]
    pub const fn max_request(self) -> u32 {
        self.max_request
    }

    /// Alignment of every request offset.
    #[must_use]
    pub const fn alignment(self) -> u32 {
        self.alignment
    }

    /// Largest unchanged gap merged into one request.
    #[must_use]
    pub const fn merge_gap(self) -> ByteLen {
        ByteLen::new(self.merge_gap)
    }
}

impl Default for ReadPlanConfig {
    fn default() -> Self {
        Self::XAPI
    }
}

/// One NBD `READ` command: `length` bytes at `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReadRequest {
    /// First byte to read.
    pub offset: ByteOffset,
    /// Bytes to read (at most the plan's maximum request).
    pub length: u32,
}

impl ReadRequest {
    /// The bytes this request reads.
    #[must_use]
    pub fn extent(self) -> ByteExtent {
        let start = self.offset.get();
        ByteExtent::from_bounds(start, start.saturating_add(u64::from(self.length)))
    }
}

/// Iterator over NBD read requests, from [`ChangedBlocks::read_requests`].
#[derive(Clone)]
pub struct ReadRequests<'a> {
    runs: RawRuns<'a>,
    shift: u32,
    virtual_size: u64,
    /// `alignment - 1`.
    align_mask: u64,
    max_request: u32,
    merge_gap: u64,
    /// The merged range still growing: later runs may join it.
    building: Option<(u64, u64)>,
    /// The finished range being split: `[cursor, end)`.
    cursor: u64,
    end: u64,
}

impl ReadRequests<'_> {
    #[inline]
    fn next_aligned(&mut self) -> Option<(u64, u64)> {
        let (start, end) = self.runs.next()?;
        // Bits and granularities are capped at 2^31 and sizes at 2^48: no shift or add overflows.
        let start = (start << self.shift) & !self.align_mask;
        let end = (end << self.shift).min(self.virtual_size);
        let end = ((end + self.align_mask) & !self.align_mask).min(self.virtual_size);
        Some((start, end))
    }
}

impl Iterator for ReadRequests<'_> {
    type Item = ReadRequest;

    fn next(&mut self) -> Option<ReadRequest> {
        while self.cursor >= self.end {
            match (self.next_aligned(), self.building) {
                (Some((start, end)), Some((built_start, built_end)))
                    if start <= built_end.saturating_add(self.merge_gap) =>
                {
                    self.building = Some((built_start, built_end.max(end)));
                }
                (Some(run), finished) => {
                    self.building = Some(run);
                    if let Some((start, end)) = finished {
                        (self.cursor, self.end) = (start, end);
                    }
                }
                (None, finished) => {
                    (self.cursor, self.end) = finished?;
                    self.building = None;
                }
            }
        }
        let offset = self.cursor;
        // The length is at most max_request, a u32.
        let length = u32::try_from(self.end - offset).map_or(self.max_request, |remaining| {
            remaining.min(self.max_request)
        });
        self.cursor = offset + u64::from(length);
        Some(ReadRequest {
            offset: ByteOffset::new(offset),
            length,
        })
    }
}
