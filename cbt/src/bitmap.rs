//! [`ChangedBlocks`]: the bitmap, its xapi encoding and its set operations.

use std::fmt;
use std::ops::Range;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::{ByteExtent, ByteLen, CbtBlockIndex, Error, Granularity};

/// Largest virtual size accepted: 256 TiB (xapi VHDs stop at 2 TiB, qcow2 VDIs at 16 TiB).
pub const MAX_VIRTUAL_SIZE: ByteLen = ByteLen::new(1 << 48);

/// Largest number of bits in one map (256 MiB of memory), so hostile sizes cannot exhaust memory.
pub const MAX_BITS: u64 = 1 << 31;

/// Longest base64 text accepted for any disk: the encoding of a [`MAX_BITS`] bitmap.
const MAX_ENCODED_LEN: u64 = (1 << 31) / 8 / 3 * 4 + 4;

/// Surplus bitmap bytes accepted past what the disk needs, beyond doubling: xapi's bitmaps have
/// at most a few bytes of padding (spec §4.2), so this only bounds memory for small disks.
const SURPLUS_ALLOWANCE: u64 = 1 << 20;

/// Which blocks of a virtual disk changed, one bit per block of a fixed [`Granularity`].
///
/// Bit `i` covers bytes `[i·granularity, (i+1)·granularity)`, clipped to the virtual size. The
/// external form is xapi's: bit `i` at byte `i >> 3` under mask `0x80 >> (i & 7)`. Internally bit
/// `i` is bit `i & 63` (LSB-first) of word `i >> 6`, so scans go a word at a time and clear the
/// lowest set bit with `x & (x - 1)`, the shortest dependency chain. Bits past the last block are
/// always zero.
#[derive(Clone, PartialEq, Eq)]
pub struct ChangedBlocks {
    granularity: Granularity,
    virtual_size: u64,
    bit_count: u64,
    words: Vec<u64>,
}

/// A bitmap decoded under §4.2's tolerant rules, with what had to be tolerated.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Tolerated {
    /// The decoded map.
    pub blocks: ChangedBlocks,
    /// Bytes of the disk not covered by a too-short bitmap; they are marked changed.
    pub missing_tail: Option<ByteExtent>,
    /// Set bits past the last block of the disk; they are ignored.
    pub ignored_surplus_bits: u64,
}

/// Index of the word holding `bit`; out-of-range values map to `usize::MAX`, which every `get` rejects.
fn word_of(bit: u64) -> usize {
    usize::try_from(bit >> 6).unwrap_or(usize::MAX)
}

/// Mask of `bit` inside its word (LSB-first).
const fn bit_mask(bit: u64) -> u64 {
    1 << (bit & 63)
}

/// Word from 8 bytes of xapi's layout: big-endian with MSB-first bits is the bit-reverse of
/// LSB-first bit order.
const fn word_from_bytes(bytes: [u8; 8]) -> u64 {
    u64::from_be_bytes(bytes).reverse_bits()
}

fn usize_to_u64(value: usize) -> u64 {
    u64::try_from(value).unwrap_or(u64::MAX)
}

impl ChangedBlocks {
    /// An empty map (nothing changed) for a disk of `virtual_size` bytes.
    ///
    /// # Errors
    /// [`Error::VirtualSizeTooLarge`] past [`MAX_VIRTUAL_SIZE`], [`Error::TooManyBlocks`] past [`MAX_BITS`].
    pub fn new(virtual_size: ByteLen, granularity: Granularity) -> Result<Self, Error> {
        let size = virtual_size.get();
        if size > MAX_VIRTUAL_SIZE.get() {
            return Err(Error::VirtualSizeTooLarge {
                virtual_size: size,
                max: MAX_VIRTUAL_SIZE.get(),
            });
        }
        let bit_count = size.div_ceil(granularity.bytes());
        let too_many = Error::TooManyBlocks {
            bits: bit_count,
            max: MAX_BITS,
        };
        if bit_count > MAX_BITS {
            return Err(too_many);
        }
        let word_count = usize::try_from(bit_count.div_ceil(64)).map_err(|_| too_many)?;
        Ok(Self {
            granularity,
            virtual_size: size,
            bit_count,
            words: vec![0; word_count],
        })
    }

    /// An empty map at xapi's 64 KiB granularity.
    ///
    /// # Errors
    /// As [`Self::new`].
    pub fn new_xapi(virtual_size: ByteLen) -> Result<Self, Error> {
        Self::new(virtual_size, Granularity::XAPI_CBT)
    }

    /// Decodes the string returned by `VDI.list_changed_blocks` (64 KiB per bit), strictly.
    ///
    /// # Errors
    /// As [`Self::from_base64`].
    pub fn from_xapi_base64(text: impl AsRef<[u8]>, virtual_size: ByteLen) -> Result<Self, Error> {
        Self::from_base64(text, virtual_size, Granularity::XAPI_CBT)
    }

    /// Decodes a standard-base64 bitmap, strictly: every block of the disk must be covered and no
    /// bit may be set past the end (surplus zero bytes are accepted).
    ///
    /// # Errors
    /// [`Error::InvalidBase64`], [`Error::EncodedTooLong`], then as [`Self::from_bitmap_bytes`].
    pub fn from_base64(
        text: impl AsRef<[u8]>,
        virtual_size: ByteLen,
        granularity: Granularity,
    ) -> Result<Self, Error> {
        Self::from_bitmap_bytes(
            &decode_text(text.as_ref(), virtual_size, granularity)?,
            virtual_size,
            granularity,
        )
    }

    /// Decodes a standard-base64 bitmap under the tolerant rules of the spec (§4.2): a bitmap
    /// shorter than the disk gets its missing tail marked changed, set bits past the end are
    /// ignored; both are reported in the result and logged as warnings.
    ///
    /// # Errors
    /// [`Error::InvalidBase64`], [`Error::EncodedTooLong`], and the size errors of [`Self::new`].
    pub fn from_base64_tolerant(
        text: impl AsRef<[u8]>,
        virtual_size: ByteLen,
        granularity: Granularity,
    ) -> Result<Tolerated, Error> {
        Self::from_bitmap_bytes_tolerant(
            &decode_text(text.as_ref(), virtual_size, granularity)?,
            virtual_size,
            granularity,
        )
    }

    /// Builds a map from raw bitmap bytes in xapi's layout, strictly.
    ///
    /// # Errors
    /// [`Error::BitmapTooShort`] when `bytes` has fewer bits than the disk has blocks,
    /// [`Error::BitsBeyondEnd`] when a bit past the last block is set, and the errors of [`Self::new`].
    pub fn from_bitmap_bytes(
        bytes: &[u8],
        virtual_size: ByteLen,
        granularity: Granularity,
    ) -> Result<Self, Error> {
        let mut map = Self::new(virtual_size, granularity)?;
        let found_bits = usize_to_u64(bytes.len()).saturating_mul(8);
        if found_bits < map.bit_count {
            return Err(Error::BitmapTooShort {
                found_bits,
                expected_bits: map.bit_count,
            });
        }
        if let Some(first_bit) = map.load(bytes).first_surplus {
            return Err(Error::BitsBeyondEnd {
                first_bit,
                bit_count: map.bit_count,
            });
        }
        Ok(map)
    }

    /// Builds a map from raw bitmap bytes under the tolerant rules of [`Self::from_base64_tolerant`].
    ///
    /// # Errors
    /// The size errors of [`Self::new`].
    pub fn from_bitmap_bytes_tolerant(
        bytes: &[u8],
        virtual_size: ByteLen,
        granularity: Granularity,
    ) -> Result<Tolerated, Error> {
        let mut map = Self::new(virtual_size, granularity)?;
        let surplus = map.load(bytes);
        let found_bits = usize_to_u64(bytes.len()).saturating_mul(8);
        let missing_tail = if found_bits < map.bit_count {
            map.set_bits(found_bits, map.bit_count);
            let start = found_bits << granularity.shift();
            Some(ByteExtent::from_bounds(start, map.virtual_size))
        } else {
            None
        };
        if let Some(tail) = missing_tail {
            tracing::warn!(
                found_bits,
                expected_bits = map.bit_count,
                tail_offset = tail.offset().get(),
                tail_length = tail.length().get(),
                "changed-block bitmap shorter than the disk: tail marked changed"
            );
        }
        if surplus.set_bits > 0 {
            tracing::warn!(
                ignored_bits = surplus.set_bits,
                bit_count = map.bit_count,
                "changed-block bitmap has bits set past the end of the disk: ignored"
            );
        }
        Ok(Tolerated {
            blocks: map,
            missing_tail,
            ignored_surplus_bits: surplus.set_bits,
        })
    }

    /// Builds a map with every block touched by `extents` marked (outward rounding to whole blocks).
    ///
    /// # Errors
    /// [`Error::ExtentOutOfRange`] for an extent ending past the disk, and the errors of [`Self::new`].
    pub fn from_byte_extents(
        virtual_size: ByteLen,
        granularity: Granularity,
        extents: impl IntoIterator<Item = ByteExtent>,
    ) -> Result<Self, Error> {
        let mut map = Self::new(virtual_size, granularity)?;
        for extent in extents {
            map.mark_changed(extent)?;
        }
        Ok(map)
    }

    /// Copies `bytes` into the words and clears (and reports) set bits past the end.
    fn load(&mut self, bytes: &[u8]) -> Surplus {
        let needed = usize::try_from(self.bit_count.div_ceil(8)).unwrap_or(usize::MAX);
        let (used, extra) = bytes.split_at(needed.min(bytes.len()));
        let (chunks, rest) = used.as_chunks::<8>();
        for (word, chunk) in self.words.iter_mut().zip(chunks) {
            *word = word_from_bytes(*chunk);
        }
        if !rest.is_empty() {
            let mut padded = [0u8; 8];
            for (slot, byte) in padded.iter_mut().zip(rest) {
                *slot = *byte;
            }
            if let Some(word) = self.words.get_mut(chunks.len()) {
                *word = word_from_bytes(padded);
            }
        }
        let mut surplus = Surplus {
            first_surplus: None,
            set_bits: 0,
        };
        let tail_bits = self.bit_count & 63;
        if tail_bits != 0
            && let Some(last) = self.words.last_mut()
        {
            let beyond = *last & (u64::MAX << tail_bits);
            if beyond != 0 {
                let last_base = (self.bit_count >> 6) << 6;
                surplus.first_surplus = Some(last_base + u64::from(beyond.trailing_zeros()));
                surplus.set_bits = u64::from(beyond.count_ones());
                *last &= !beyond;
            }
        }
        let extra_base = usize_to_u64(needed).saturating_mul(8);
        for (index, byte) in extra.iter().enumerate().filter(|(_, byte)| **byte != 0) {
            let bit = extra_base
                .saturating_add(usize_to_u64(index).saturating_mul(8))
                .saturating_add(u64::from(byte.leading_zeros()));
            surplus.first_surplus.get_or_insert(bit);
            surplus.set_bits = surplus
                .set_bits
                .saturating_add(u64::from(byte.count_ones()));
        }
        surplus
    }

    /// The bitmap bytes in xapi's layout, `ceil(block_count / 8)` long.
    #[must_use]
    pub fn to_bitmap_bytes(&self) -> Vec<u8> {
        let needed = usize::try_from(self.bit_count.div_ceil(8)).unwrap_or(usize::MAX);
        let mut out = Vec::with_capacity(self.words.len().saturating_mul(8));
        for word in &self.words {
            out.extend_from_slice(&word.reverse_bits().to_be_bytes());
        }
        out.truncate(needed);
        out
    }

    /// The bitmap in xapi's `VDI.list_changed_blocks` form: standard base64 with padding.
    #[must_use]
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.to_bitmap_bytes())
    }

    /// Bytes covered by one bit.
    #[must_use]
    pub const fn granularity(&self) -> Granularity {
        self.granularity
    }

    /// Size of the disk in bytes.
    #[must_use]
    pub const fn virtual_size(&self) -> ByteLen {
        ByteLen::new(self.virtual_size)
    }

    /// Number of blocks (bits) of the disk: `ceil(virtual_size / granularity)`.
    #[must_use]
    pub const fn block_count(&self) -> u64 {
        self.bit_count
    }

    /// Whether block `index` changed (false past the end).
    #[must_use]
    pub fn is_changed(&self, index: CbtBlockIndex) -> bool {
        self.words
            .get(word_of(index.get()))
            .is_some_and(|word| word & bit_mask(index.get()) != 0)
    }

    /// Whether any block changed.
    #[must_use]
    pub fn has_changes(&self) -> bool {
        self.words.iter().any(|word| *word != 0)
    }

    /// Number of changed blocks.
    #[must_use]
    pub fn changed_block_count(&self) -> u64 {
        self.words
            .iter()
            .map(|word| u64::from(word.count_ones()))
            .sum()
    }

    /// Number of changed bytes: changed blocks times the granularity, the last block clipped to
    /// the virtual size.
    #[must_use]
    pub fn changed_bytes(&self) -> ByteLen {
        let full = self.changed_block_count() << self.granularity.shift();
        let last_block = CbtBlockIndex::new(self.bit_count.saturating_sub(1));
        let overhang = (self.bit_count << self.granularity.shift()) - self.virtual_size;
        if overhang > 0 && self.is_changed(last_block) {
            ByteLen::new(full - overhang)
        } else {
            ByteLen::new(full)
        }
    }

    /// Bytes covered by block `index`, clipped to the virtual size; `None` past the end.
    #[must_use]
    pub fn block_extent(&self, index: CbtBlockIndex) -> Option<ByteExtent> {
        (index.get() < self.bit_count).then(|| self.bits_to_bytes(index.get(), index.get() + 1))
    }

    fn bits_to_bytes(&self, start: u64, end: u64) -> ByteExtent {
        let shift = self.granularity.shift();
        ByteExtent::from_bounds(start << shift, (end << shift).min(self.virtual_size))
    }

    /// Marks block `index` changed.
    ///
    /// # Errors
    /// [`Error::BitsBeyondEnd`] when `index` is past the last block.
    pub fn mark_block(&mut self, index: CbtBlockIndex) -> Result<(), Error> {
        let bit = index.get();
        match self.words.get_mut(word_of(bit)) {
            Some(word) if bit < self.bit_count => {
                *word |= bit_mask(bit);
                Ok(())
            }
            _ => Err(Error::BitsBeyondEnd {
                first_bit: bit,
                bit_count: self.bit_count,
            }),
        }
    }

    /// Marks every block touched by a written byte range (outward rounding; empty ranges mark nothing).
    ///
    /// # Errors
    /// [`Error::ExtentOutOfRange`] when the range ends past the disk.
    pub fn mark_changed(&mut self, extent: ByteExtent) -> Result<(), Error> {
        let end = extent.end().get();
        if end > self.virtual_size {
            return Err(Error::ExtentOutOfRange {
                end,
                virtual_size: self.virtual_size,
            });
        }
        if !extent.is_empty() {
            let shift = self.granularity.shift();
            let first = extent.offset().get() >> shift;
            let last = (end - 1) >> shift;
            self.set_bits(first, last + 1);
        }
        Ok(())
    }

    /// Marks every block changed (a full copy).
    pub fn mark_all(&mut self) {
        self.set_bits(0, self.bit_count);
    }

    /// Clears every block.
    pub fn clear(&mut self) {
        self.words.fill(0);
    }

    /// Sets bits `[start, end)`; callers keep `end <= bit_count`.
    fn set_bits(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        let (first, last) = (word_of(start), word_of(end - 1));
        let head = u64::MAX << (start & 63);
        let tail = u64::MAX >> (63 - ((end - 1) & 63));
        if first == last {
            if let Some(word) = self.words.get_mut(first) {
                *word |= head & tail;
            }
        } else if let Some((first_word, rest)) = self
            .words
            .get_mut(first..=last)
            .and_then(<[u64]>::split_first_mut)
            && let Some((last_word, middle)) = rest.split_last_mut()
        {
            *first_word |= head;
            *last_word |= tail;
            middle.fill(u64::MAX);
        }
    }

    /// Grows the disk to `virtual_size`; new blocks start unchanged (xapi zero-extends older
    /// bitmaps when a disk grew).
    ///
    /// # Errors
    /// [`Error::CannotShrink`] for a smaller size, and the size errors of [`Self::new`].
    pub fn extend_to(&mut self, virtual_size: ByteLen) -> Result<(), Error> {
        if virtual_size.get() < self.virtual_size {
            return Err(Error::CannotShrink {
                from: self.virtual_size,
                to: virtual_size.get(),
            });
        }
        let grown = Self::new(virtual_size, self.granularity)?;
        self.words.resize(grown.words.len(), 0);
        self.virtual_size = grown.virtual_size;
        self.bit_count = grown.bit_count;
        Ok(())
    }

    fn check_compatible(&self, other: &Self) -> Result<(), Error> {
        if self.granularity != other.granularity {
            return Err(Error::GranularityMismatch {
                left: self.granularity.bytes(),
                right: other.granularity.bytes(),
            });
        }
        if self.virtual_size != other.virtual_size {
            return Err(Error::SizeMismatch {
                left: self.virtual_size,
                right: other.virtual_size,
            });
        }
        Ok(())
    }

    fn combine_with(&mut self, other: &Self, op: impl Fn(u64, u64) -> u64) -> Result<(), Error> {
        self.check_compatible(other)?;
        for (mine, theirs) in self.words.iter_mut().zip(&other.words) {
            *mine = op(*mine, *theirs);
        }
        Ok(())
    }

    /// Adds every block changed in `other` (merging change logs).
    ///
    /// # Errors
    /// [`Error::GranularityMismatch`] or [`Error::SizeMismatch`] (extend the smaller map first).
    pub fn union_with(&mut self, other: &Self) -> Result<(), Error> {
        self.combine_with(other, |a, b| a | b)
    }

    /// Keeps only blocks also changed in `other`.
    ///
    /// # Errors
    /// As [`Self::union_with`].
    pub fn intersect_with(&mut self, other: &Self) -> Result<(), Error> {
        self.combine_with(other, |a, b| a & b)
    }

    /// Removes every block changed in `other`.
    ///
    /// # Errors
    /// As [`Self::union_with`].
    pub fn subtract(&mut self, other: &Self) -> Result<(), Error> {
        self.combine_with(other, |a, b| a & !b)
    }

    /// Blocks changed in either map.
    ///
    /// # Errors
    /// As [`Self::union_with`].
    pub fn union(&self, other: &Self) -> Result<Self, Error> {
        let mut out = self.clone();
        out.union_with(other)?;
        Ok(out)
    }

    /// Blocks changed in both maps.
    ///
    /// # Errors
    /// As [`Self::union_with`].
    pub fn intersection(&self, other: &Self) -> Result<Self, Error> {
        let mut out = self.clone();
        out.intersect_with(other)?;
        Ok(out)
    }

    /// Blocks changed in `self` but not in `other`.
    ///
    /// # Errors
    /// As [`Self::union_with`].
    pub fn difference(&self, other: &Self) -> Result<Self, Error> {
        let mut out = self.clone();
        out.subtract(other)?;
        Ok(out)
    }

    /// Changed blocks one by one, ascending.
    #[must_use]
    pub fn changed_blocks(&self) -> ChangedBlockIter<'_> {
        ChangedBlockIter {
            words: self.words.iter(),
            current: 0,
            base: 0,
            next_base: 0,
        }
    }

    /// Maximal runs of consecutive changed blocks, ascending.
    #[must_use]
    pub fn block_runs(&self) -> BlockRuns<'_> {
        BlockRuns {
            runs: RawRuns::new(&self.words),
        }
    }

    /// Changed bytes as coalesced, ascending, non-adjacent extents clipped to the virtual size.
    #[must_use]
    pub fn byte_extents(&self) -> ByteExtents<'_> {
        ByteExtents {
            runs: RawRuns::new(&self.words),
            shift: self.granularity.shift(),
            virtual_size: self.virtual_size,
        }
    }

    pub(crate) fn words(&self) -> &[u64] {
        &self.words
    }
}

impl fmt::Debug for ChangedBlocks {
    // The words can be megabytes: show the shape, not the content.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChangedBlocks")
            .field("granularity", &self.granularity.bytes())
            .field("virtual_size", &self.virtual_size)
            .field("block_count", &self.bit_count)
            .field("changed_blocks", &self.changed_block_count())
            .finish()
    }
}

struct Surplus {
    first_surplus: Option<u64>,
    set_bits: u64,
}

/// Decodes base64 after checking its length against the disk: at most twice the bytes the disk
/// needs plus [`SURPLUS_ALLOWANCE`], so a hostile text for a small disk cannot make the decoder
/// allocate hundreds of MB.
fn decode_text(
    text: &[u8],
    virtual_size: ByteLen,
    granularity: Granularity,
) -> Result<Vec<u8>, Error> {
    let needed_bytes = virtual_size.get().div_ceil(granularity.bytes()).div_ceil(8);
    let max_bytes = needed_bytes
        .saturating_mul(2)
        .saturating_add(SURPLUS_ALLOWANCE);
    let max = max_bytes.div_ceil(3).saturating_mul(4).min(MAX_ENCODED_LEN);
    let max = usize::try_from(max).unwrap_or(usize::MAX);
    if text.len() > max {
        return Err(Error::EncodedTooLong {
            length: text.len(),
            max,
        });
    }
    STANDARD.decode(text).map_err(Error::InvalidBase64)
}

/// Runs of set bits as `[start, end)` bit ranges, found a word at a time.
///
/// Each word is split into two masks: run starts (a set bit after a clear one) and run ends (a
/// clear bit after a set one), across word boundaries. Inside a word they alternate, so a run
/// pops the lowest bit of each: two independent `x & (x - 1)` chains, no data-dependent branch
/// beyond "word exhausted" and "run continues into the next word".
#[derive(Clone)]
pub(crate) struct RawRuns<'a> {
    rest: std::slice::Iter<'a, u64>,
    /// Unvisited run starts of the word at `base`.
    starts: u64,
    /// Unvisited run ends of the word at `base`.
    ends: u64,
    /// Last bit of the word at `base`, at bit 0: the bit before the next word.
    carry: u64,
    base: u64,
    next_base: u64,
}

impl<'a> RawRuns<'a> {
    pub(crate) fn new(words: &'a [u64]) -> Self {
        Self {
            rest: words.iter(),
            starts: 0,
            ends: 0,
            carry: 0,
            base: 0,
            next_base: 0,
        }
    }

    /// Moves to the next word; false at the end of the bitmap.
    #[inline]
    fn load_next(&mut self) -> bool {
        let Some(&word) = self.rest.next() else {
            return false;
        };
        let previous = (word << 1) | self.carry;
        self.starts = word & !previous;
        self.ends = !word & previous;
        self.carry = word >> 63;
        self.base = self.next_base;
        self.next_base += 64;
        true
    }
}

impl Iterator for RawRuns<'_> {
    type Item = (u64, u64);

    #[inline]
    fn next(&mut self) -> Option<(u64, u64)> {
        // Runs end before the next one starts, so a word loaded here has no pending end.
        while self.starts == 0 {
            if !self.load_next() {
                return None;
            }
        }
        let start = self.base + u64::from(self.starts.trailing_zeros());
        self.starts &= self.starts - 1;
        if self.ends == 0 {
            // The run continues into later words: its end is the first end found there.
            loop {
                if !self.load_next() {
                    // Bits past the disk are zero, so only a run ending at the last bit gets here.
                    return Some((start, self.next_base));
                }
                if self.ends != 0 {
                    break;
                }
            }
        }
        let end = self.base + u64::from(self.ends.trailing_zeros());
        self.ends &= self.ends - 1;
        Some((start, end))
    }
}

/// Iterator over changed blocks, from [`ChangedBlocks::changed_blocks`].
#[derive(Clone)]
pub struct ChangedBlockIter<'a> {
    words: std::slice::Iter<'a, u64>,
    current: u64,
    base: u64,
    next_base: u64,
}

impl Iterator for ChangedBlockIter<'_> {
    type Item = CbtBlockIndex;

    fn next(&mut self) -> Option<CbtBlockIndex> {
        while self.current == 0 {
            self.current = *self.words.next()?;
            self.base = self.next_base;
            self.next_base += 64;
        }
        let position = self.current.trailing_zeros();
        self.current &= self.current - 1;
        Some(CbtBlockIndex::new(self.base + u64::from(position)))
    }
}

/// Iterator over runs of changed blocks, from [`ChangedBlocks::block_runs`].
#[derive(Clone)]
pub struct BlockRuns<'a> {
    runs: RawRuns<'a>,
}

impl Iterator for BlockRuns<'_> {
    type Item = Range<CbtBlockIndex>;

    fn next(&mut self) -> Option<Range<CbtBlockIndex>> {
        self.runs
            .next()
            .map(|(start, end)| CbtBlockIndex::new(start)..CbtBlockIndex::new(end))
    }
}

/// Iterator over coalesced changed byte extents, from [`ChangedBlocks::byte_extents`].
#[derive(Clone)]
pub struct ByteExtents<'a> {
    runs: RawRuns<'a>,
    shift: u32,
    virtual_size: u64,
}

impl Iterator for ByteExtents<'_> {
    type Item = ByteExtent;

    #[inline]
    fn next(&mut self) -> Option<ByteExtent> {
        let (start, end) = self.runs.next()?;
        // Bits are capped at 2^31 and granularities at 2^31: the shifts cannot overflow.
        let end = (end << self.shift).min(self.virtual_size);
        Some(ByteExtent::from_bounds(start << self.shift, end))
    }
}
