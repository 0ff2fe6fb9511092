//! The crate's single error type.

/// Everything that can go wrong while decoding, building or viewing a changed-block bitmap.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The text is not valid standard base64 with `=` padding.
    #[error("the changed-block bitmap is not valid base64")]
    InvalidBase64(#[source] base64::DecodeError),
    /// The encoded bitmap is far longer than the disk's bitmap (twice its size plus 1 MiB), or
    /// than any bitmap this crate accepts.
    #[error("encoded bitmap of {length} characters exceeds the limit of {max} for this disk")]
    EncodedTooLong {
        /// Length of the text received.
        length: usize,
        /// Largest accepted length.
        max: usize,
    },
    /// The bitmap has fewer bits than the disk has blocks.
    #[error("bitmap has {found_bits} bits but the disk needs {expected_bits}")]
    BitmapTooShort {
        /// Bits present in the bitmap.
        found_bits: u64,
        /// Bits needed to cover the virtual size.
        expected_bits: u64,
    },
    /// Bits are set past the last block of the disk.
    #[error("bit {first_bit} is set but the disk has only {bit_count} blocks")]
    BitsBeyondEnd {
        /// Index of the first set bit past the end.
        first_bit: u64,
        /// Number of blocks of the disk.
        bit_count: u64,
    },
    /// A granularity is not a power of two between 512 B and 2 GiB.
    #[error("granularity {granularity} is not a power of two between 512 and 2147483648")]
    InvalidGranularity {
        /// The rejected granularity in bytes.
        granularity: u64,
    },
    /// A view needs a granularity that divides its block size.
    #[error("granularity {granularity} does not divide the block size {block_size}")]
    GranularityDoesNotDivideBlock {
        /// Granularity of the bitmap in bytes.
        granularity: u64,
        /// Block size of the view in bytes.
        block_size: u64,
    },
    /// Two bitmaps combined by a set operation have different virtual sizes.
    #[error("virtual sizes differ: {left} and {right} bytes")]
    SizeMismatch {
        /// Virtual size of the left operand.
        left: u64,
        /// Virtual size of the right operand.
        right: u64,
    },
    /// Two bitmaps combined by a set operation have different granularities.
    #[error("granularities differ: {left} and {right} bytes")]
    GranularityMismatch {
        /// Granularity of the left operand.
        left: u64,
        /// Granularity of the right operand.
        right: u64,
    },
    /// The virtual size exceeds the supported maximum.
    #[error("virtual size {virtual_size} exceeds the supported maximum {max}")]
    VirtualSizeTooLarge {
        /// The rejected virtual size.
        virtual_size: u64,
        /// Largest supported virtual size.
        max: u64,
    },
    /// The bitmap would need more bits than the memory cap allows.
    #[error("bitmap would need {bits} bits, more than the limit of {max}")]
    TooManyBlocks {
        /// Bits the bitmap would need.
        bits: u64,
        /// Largest supported number of bits.
        max: u64,
    },
    /// A byte extent's end does not fit in a `u64`.
    #[error("extent at {offset} of {length} bytes overflows")]
    ExtentOverflow {
        /// Start of the extent.
        offset: u64,
        /// Length of the extent.
        length: u64,
    },
    /// A byte extent ends past the end of the disk.
    #[error("extent ending at {end} lies beyond the virtual size {virtual_size}")]
    ExtentOutOfRange {
        /// End of the extent (exclusive).
        end: u64,
        /// Virtual size of the disk.
        virtual_size: u64,
    },
    /// A block-status descriptor has length zero (forbidden by the NBD protocol).
    #[error("zero-length block-status descriptor at offset {offset}")]
    EmptyDescriptor {
        /// Offset the descriptor would have started at.
        offset: u64,
    },
    /// Block-status descriptors did not cover the whole disk.
    #[error("block status covered {covered} of {expected} bytes")]
    IncompleteCoverage {
        /// Bytes covered so far.
        covered: u64,
        /// Virtual size to cover.
        expected: u64,
    },
    /// A shrink would drop the tail of the disk.
    #[error("cannot shrink a bitmap from {from} to {to} bytes")]
    CannotShrink {
        /// Current virtual size.
        from: u64,
        /// Requested virtual size.
        to: u64,
    },
    /// A read-plan alignment is zero or not a power of two.
    #[error("read alignment {alignment} is not a power of two")]
    InvalidAlignment {
        /// The rejected alignment in bytes.
        alignment: u32,
    },
    /// A maximum request size is zero or not a multiple of the alignment.
    #[error(
        "maximum request {max_request} is not a non-zero multiple of the alignment {alignment}"
    )]
    InvalidMaxRequest {
        /// The rejected maximum request size in bytes.
        max_request: u32,
        /// The alignment it must be a multiple of.
        alignment: u32,
    },
}
