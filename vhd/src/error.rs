//! The crate's one error type.

use crate::units::BlockIndex;

/// Which on-disk structure an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Structure {
    /// The 512-byte hard-disk footer (or its copy at offset 0).
    Footer,
    /// The 1024-byte dynamic disk header.
    Header,
    /// A parent locator entry or its data.
    ParentLocator,
    /// The block allocation table.
    Bat,
    /// A sector bitmap.
    Bitmap,
    /// A data block.
    Block,
    /// The blktap batmap header or map.
    Batmap,
    /// The trailing footer copy of a stream or file.
    TrailingFooter,
}

impl std::fmt::Display for Structure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Footer => "footer",
            Self::Header => "dynamic header",
            Self::ParentLocator => "parent locator",
            Self::Bat => "BAT",
            Self::Bitmap => "sector bitmap",
            Self::Block => "data block",
            Self::Batmap => "batmap",
            Self::TrailingFooter => "trailing footer",
        })
    }
}

/// Everything that can go wrong reading, decoding, encoding, writing or merging VHDs.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The input ended before a structure was complete.
    #[error("{structure} truncated: needed {needed} bytes, {available} available")]
    Truncated {
        /// The incomplete structure.
        structure: Structure,
        /// Bytes the structure needs.
        needed: u64,
        /// Bytes that were there.
        available: u64,
    },
    /// A structure does not start with its magic cookie.
    #[error("{structure} has cookie {found:02x?}, expected {expected:?}")]
    BadCookie {
        /// The structure.
        structure: Structure,
        /// The bytes found.
        found: [u8; 8],
        /// The cookie required.
        expected: &'static str,
    },
    /// A checksum does not match the structure's bytes.
    #[error("{structure} checksum is {found:#010x}, computed {expected:#010x}")]
    BadChecksum {
        /// The structure.
        structure: Structure,
        /// The stored checksum.
        found: u32,
        /// The checksum of the bytes.
        expected: u32,
    },
    /// A version field holds a value this crate (and xapi) does not accept.
    #[error("{structure} version {found:#010x} is not supported (expected {expected:#010x})")]
    UnsupportedVersion {
        /// The structure.
        structure: Structure,
        /// The version found.
        found: u32,
        /// The version required.
        expected: u32,
    },
    /// The footer's disk type is not fixed (2), dynamic (3) or differencing (4).
    #[error("disk type {found} is not fixed (2), dynamic (3) or differencing (4)")]
    UnknownDiskType {
        /// The disk type field.
        found: u32,
    },
    /// The operation does not apply to this kind of disk (e.g. a fixed disk in a stream).
    #[error("{operation} does not support {found} disks")]
    UnsupportedDiskType {
        /// What was attempted.
        operation: &'static str,
        /// The disk type that was found.
        found: crate::footer::DiskType,
    },
    /// A parent locator carries a platform code outside the VHD specification's list.
    #[error("parent locator {index} has unknown platform code {code:#010x}")]
    UnknownLocatorCode {
        /// Index of the locator entry (0–7).
        index: usize,
        /// The platform code found.
        code: u32,
    },
    /// A field holds a value outside its valid range.
    #[error("{structure} field {field} = {value} is invalid: {reason}")]
    InvalidField {
        /// The structure.
        structure: Structure,
        /// The field's name.
        field: &'static str,
        /// The value found.
        value: u64,
        /// What the field must satisfy.
        reason: &'static str,
    },
    /// The parent unicode name is not valid UTF-16, or is too long to store.
    #[error("parent unicode name is invalid: {reason}")]
    InvalidParentName {
        /// Why it was rejected.
        reason: &'static str,
    },
    /// The virtual size exceeds the format's limit (2 TiB − 8 KiB).
    #[error("virtual size {size} exceeds the VHD limit of {max} bytes")]
    DiskTooLarge {
        /// The requested or declared size.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// A virtual size is not a multiple of 512 bytes.
    #[error("virtual size {size} is not a multiple of 512 bytes")]
    UnalignedSize {
        /// The size.
        size: u64,
    },
    /// The block size is not the one this operation requires.
    #[error("block size {found} is not supported here (expected {expected})")]
    UnsupportedBlockSize {
        /// The header's block size.
        found: u32,
        /// The block size required.
        expected: u32,
    },
    /// A BAT entry points somewhere it cannot be (before the end of the metadata, past the end
    /// of the file, or beyond 2^32 sectors).
    #[error("BAT entry of {block} points to sector {sector}: {reason}")]
    BatEntryOutOfRange {
        /// The block whose entry is wrong.
        block: BlockIndex,
        /// The sector the entry names.
        sector: u64,
        /// Why it is out of range.
        reason: &'static str,
    },
    /// Two blocks of a stream overlap.
    #[error(
        "{second} starts at byte {second_start}, inside {first} which ends at byte {first_end}"
    )]
    OverlappingBlocks {
        /// The block placed first.
        first: BlockIndex,
        /// Where it ends in the stream.
        first_end: u64,
        /// The block that overlaps it.
        second: BlockIndex,
        /// Where it starts.
        second_start: u64,
    },
    /// A forward-only stream names a structure behind the current position.
    #[error("{structure} at byte {target} lies behind stream position {position}")]
    BackwardTarget {
        /// The structure that would need a backward seek.
        structure: Structure,
        /// Where it is.
        target: u64,
        /// Where the stream already is.
        position: u64,
    },
    /// A stream names a structure so far ahead that the unused bytes before it exceed the cap
    /// (`DecoderOptions::max_skipped_bytes`).
    #[error(
        "{structure} at byte {target} is too far ahead of stream position {position}: \
         at most {max} unused bytes are accepted in a stream"
    )]
    GapTooLarge {
        /// The structure that lies too far ahead.
        structure: Structure,
        /// Where it is.
        target: u64,
        /// Where the stream is.
        position: u64,
        /// The cap on unused bytes.
        max: u64,
    },
    /// Bytes follow the trailing footer of a stream.
    #[error("unexpected data after the trailing footer (at byte {position})")]
    TrailingData {
        /// Stream position of the first extra byte.
        position: u64,
    },
    /// The trailing footer of a stream differs from the footer at offset 0.
    #[error("trailing footer differs from the footer at offset 0")]
    FooterMismatch,
    /// A block handed to the encoder or writer is out of order, unannounced, duplicated or
    /// beyond the disk.
    #[error("{index} rejected: {reason}")]
    UnexpectedBlock {
        /// The block.
        index: BlockIndex,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// A block's payload or bitmap has the wrong shape.
    #[error("{index} is malformed: {reason}")]
    InvalidBlock {
        /// The block.
        index: BlockIndex,
        /// What is wrong.
        reason: &'static str,
    },
    /// The encoder was finished before every announced block was encoded.
    #[error("stream finished after {written} of {expected} announced blocks")]
    MissingBlocks {
        /// Blocks announced up front.
        expected: usize,
        /// Blocks encoded.
        written: usize,
    },
    /// An encoder or decoder method was called in the wrong state.
    #[error("{operation} called out of order")]
    OutOfOrder {
        /// The method.
        operation: &'static str,
    },
    /// A differencing disk's parent uuid does not match the footer uuid of the disk given as its
    /// parent.
    #[error("parent uuid mismatch: child names {expected}, candidate parent is {found}")]
    ParentMismatch {
        /// The child's `parent unique id`.
        expected: uuid::Uuid,
        /// The candidate's footer uuid.
        found: uuid::Uuid,
    },
    /// A differencing disk's parent was not supplied or cannot be located.
    #[error("differencing disk needs its parent {parent}")]
    MissingParent {
        /// The parent uuid the child names.
        parent: uuid::Uuid,
    },
    /// A parent chain comes back to a disk already in it.
    #[error("parent chain loops back to disk {unique_id}")]
    ChainLoop {
        /// The uuid seen twice.
        unique_id: uuid::Uuid,
    },
    /// The layers given as a chain do not form one (a non-differencing disk above another
    /// layer, or an empty list).
    #[error("not a valid chain: {reason}")]
    InvalidChain {
        /// What is wrong.
        reason: &'static str,
    },
    /// A parent chain is longer than the limit.
    #[error("parent chain is deeper than {max} disks")]
    ChainTooDeep {
        /// The limit.
        max: usize,
    },
    /// Two disks that must have the same virtual size do not.
    #[error("virtual size {found} does not match {expected}")]
    SizeMismatch {
        /// Size required.
        expected: u64,
        /// Size found.
        found: u64,
    },
    /// A read or write falls outside the virtual disk.
    #[error("range at {offset} of {len} bytes lies outside the {size}-byte disk")]
    OutOfBounds {
        /// Start of the range.
        offset: u64,
        /// Length of the range.
        len: u64,
        /// The virtual size.
        size: u64,
    },
    /// Arithmetic on declared sizes or offsets overflowed.
    #[error("size arithmetic overflowed while computing {what}")]
    Overflow {
        /// What was being computed.
        what: &'static str,
    },
    /// The underlying source or sink failed.
    #[error("I/O failed while {context}")]
    Io {
        /// What was being done.
        context: &'static str,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// Wraps an I/O error with what was being done.
    pub(crate) fn io(context: &'static str) -> impl FnOnce(std::io::Error) -> Self {
        move |source| Self::Io { context, source }
    }
}

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
