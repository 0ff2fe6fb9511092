//! The crate's one error type.

use std::fmt;

/// A boxed error from a disk source given to the writer.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong while reading, writing or modelling an XVA archive.
///
/// Text taken from the archive (entry names, checksum strings, field values) is shortened to a
/// few dozen characters before it is stored here, so a hostile archive cannot blow up logs.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A 512-byte tar header is malformed.
    #[error("bad tar header at archive offset {offset}: {problem}")]
    BadTarHeader {
        /// Offset of the header in the uncompressed tar stream.
        offset: u64,
        /// What is wrong with it.
        problem: TarHeaderProblem,
    },
    /// The archive's first entry is not `ova.xml` (xapi refuses such an archive).
    #[error("the archive does not start with ova.xml (first entry: {found:?})")]
    MissingOvaXml {
        /// Name of the first entry, or `"<end of archive>"`.
        found: String,
    },
    /// An entry is larger than this reader accepts.
    #[error("entry {entry:?} is {size} bytes, more than the limit of {limit}")]
    EntryTooLarge {
        /// Entry name.
        entry: String,
        /// Size from its header.
        size: u64,
        /// The limit it exceeds.
        limit: u64,
    },
    /// The input ended before the archive did.
    #[error("the input ended inside {context}")]
    Truncated {
        /// What was being read.
        context: &'static str,
    },
    /// `ova.xml` is not well-formed XML.
    #[error("ova.xml is not well-formed XML near byte {position}")]
    XmlSyntax {
        /// Byte position in `ova.xml`.
        position: u64,
        /// The XML parser's error.
        #[source]
        source: quick_xml::Error,
    },
    /// `ova.xml` is well-formed XML but not an XML-RPC value as xapi writes them.
    #[error("ova.xml is not a valid XML-RPC value near byte {position}: {problem}")]
    XmlRpc {
        /// Byte position in `ova.xml`.
        position: u64,
        /// What is wrong.
        problem: String,
    },
    /// A field xapi requires is missing from a record.
    #[error("{record}: field {field} is missing")]
    MissingField {
        /// The record, e.g. `VDI Ref:002` or `version`.
        record: String,
        /// The field name.
        field: String,
    },
    /// A field has the wrong XML-RPC type (xapi is strict for strings and booleans).
    #[error("{record}: field {field} must be {expected}, found {found}")]
    FieldType {
        /// The record, e.g. `VBD Ref:003`.
        record: String,
        /// The field name.
        field: String,
        /// The type xapi decodes it as.
        expected: &'static str,
        /// The XML-RPC type found.
        found: &'static str,
    },
    /// A field has the right type but a value xapi rejects (unknown enum name, bad number).
    #[error("{record}: field {field} has an invalid value {value:?}")]
    FieldValue {
        /// The record.
        record: String,
        /// The field name.
        field: String,
        /// The offending value, shortened.
        value: String,
    },
    /// A reference names an object that is not in `ova.xml`.
    #[error("{record}: field {field} names {target:?}, which is not an object of ova.xml")]
    DanglingRef {
        /// The record holding the reference.
        record: String,
        /// The field name.
        field: String,
        /// The id it names.
        target: String,
    },
    /// Two objects of `ova.xml` share one id.
    #[error("two objects of ova.xml have the id {id:?}")]
    DuplicateId {
        /// The shared id.
        id: String,
    },
    /// An entry appears where another was expected.
    #[error("expected {expected}, found entry {found:?}")]
    UnexpectedEntry {
        /// What the archive should hold here.
        expected: String,
        /// Name of the entry found, or `"<end of archive>"`.
        found: String,
    },
    /// A chunk number does not increase (xapi compares them as strings, then as numbers).
    #[error("disk {disk}: chunk {found:?} comes after chunk {previous:?}")]
    ChunksOutOfOrder {
        /// The disk's export id.
        disk: String,
        /// The previous chunk name suffix (`"-1"` before the first).
        previous: String,
        /// The suffix found.
        found: String,
    },
    /// A chunk, or the zeros its number implies, ends beyond the disk's `virtual_size`.
    #[error(
        "disk {disk}: chunk {chunk:?} ends at byte {end}, beyond the virtual size {virtual_size}"
    )]
    ChunkBeyondDisk {
        /// The disk's export id.
        disk: String,
        /// The chunk entry name.
        chunk: String,
        /// Where the chunk would end (saturated on overflow).
        end: u64,
        /// The disk's virtual size.
        virtual_size: u64,
    },
    /// A chunk's checksum companion disagrees with its data.
    #[error(
        "checksum mismatch for chunk {chunk:?}: the archive says {expected:?}, the data hashes to {found:?}"
    )]
    ChecksumMismatch {
        /// The chunk entry name.
        chunk: String,
        /// The companion's content.
        expected: String,
        /// What the chunk's data hashes to.
        found: String,
    },
    /// A checksum companion has an extension xapi does not know (only `.xxhash` and `.checksum`).
    #[error("unsupported checksum entry {entry:?}")]
    UnsupportedChecksum {
        /// The companion's entry name.
        entry: String,
    },
    /// Compressed input is corrupt.
    #[error("corrupt {format} input")]
    Decompress {
        /// `gzip` or `zstd`.
        format: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The compressor failed.
    #[error("{format} compression failed")]
    Compress {
        /// `gzip` or `zstd`.
        format: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The disks given to the writer do not match the streamed disks of `ova.xml`.
    #[error("disk {disk:?}: {problem}")]
    DiskMismatch {
        /// The disk's export id.
        disk: String,
        /// What does not match.
        problem: DiskMismatchProblem,
    },
    /// An extent given to the writer is out of order, overlaps the previous one or lies beyond the disk.
    #[error("disk {disk:?}: extent at {offset} (+{len}) is invalid: {problem}")]
    BadExtent {
        /// The disk's export id.
        disk: String,
        /// The extent's offset.
        offset: u64,
        /// The extent's length.
        len: u64,
        /// What is wrong.
        problem: ExtentProblem,
    },
    /// The writer was driven out of order (e.g. an extent before `begin_disk`).
    #[error("writer misuse: {0}")]
    WriterState(&'static str),
    /// A tar entry name is too long for a V7 header (99 bytes).
    #[error("entry name {name:?} is longer than 99 bytes")]
    NameTooLong {
        /// The name.
        name: String,
    },
    /// A disk source given to the writer failed.
    #[error("disk {disk:?}: the source of blocks failed")]
    Source {
        /// The disk's export id.
        disk: String,
        /// The source's error.
        #[source]
        source: BoxError,
    },
    /// The byte stream given to the reader failed.
    #[error("the input stream failed")]
    Input(#[source] BoxError),
    /// Reading or writing the underlying stream failed.
    #[error("I/O error")]
    Io(#[from] std::io::Error),
}

/// What is wrong with a tar header.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TarHeaderProblem {
    /// The header checksum does not match its bytes.
    Checksum {
        /// The checksum stored in the header.
        stored: u64,
        /// The checksum of the header bytes.
        computed: u64,
    },
    /// A numeric field is not octal (nor GNU base-256).
    Number {
        /// The field name.
        field: &'static str,
    },
    /// The entry name is empty or not UTF-8.
    Name,
    /// The entry is not a regular file (links, directories, pax and GNU extension headers).
    EntryType {
        /// The typeflag byte.
        typeflag: u8,
    },
}

impl fmt::Display for TarHeaderProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Checksum { stored, computed } => {
                write!(f, "header checksum {stored} stored, {computed} computed")
            }
            Self::Number { field } => write!(f, "field {field} is not a number"),
            Self::Name => f.write_str("the entry name is empty or not UTF-8"),
            Self::EntryType { typeflag } => {
                write!(
                    f,
                    "entry type {:?} is not a regular file",
                    char::from(*typeflag)
                )
            }
        }
    }
}

/// How the writer's disks disagree with `ova.xml`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DiskMismatchProblem {
    /// `ova.xml` streams this disk but no source was given for it.
    NoSource,
    /// A source was given for a disk `ova.xml` does not stream.
    NotStreamed,
    /// Two sources were given for one disk.
    DuplicateSource,
    /// The source's virtual size differs from the VDI's `virtual_size`.
    Size {
        /// `virtual_size` in `ova.xml`.
        model: u64,
        /// The source's virtual size.
        source: u64,
    },
}

impl fmt::Display for DiskMismatchProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoSource => f.write_str("ova.xml streams this VDI but no disk source was given"),
            Self::NotStreamed => {
                f.write_str("a disk source was given but ova.xml does not stream this VDI")
            }
            Self::DuplicateSource => f.write_str("two disk sources were given"),
            Self::Size { model, source } => {
                write!(
                    f,
                    "virtual_size is {model} in ova.xml but {source} in the source"
                )
            }
        }
    }
}

/// What is wrong with an extent given to the writer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ExtentProblem {
    /// It starts before the end of the previous extent.
    Overlap {
        /// Where the previous extent ended.
        previous_end: u64,
    },
    /// It ends beyond the disk's virtual size.
    BeyondDisk {
        /// The disk's virtual size.
        virtual_size: u64,
    },
}

impl fmt::Display for ExtentProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Overlap { previous_end } => {
                write!(
                    f,
                    "it starts before the previous extent's end {previous_end}"
                )
            }
            Self::BeyondDisk { virtual_size } => {
                write!(f, "it ends beyond the virtual size {virtual_size}")
            }
        }
    }
}

/// Longest excerpt of archive-supplied text kept in an error.
const EXCERPT_CHARS: usize = 80;

/// Shortens untrusted text for an error message.
pub(crate) fn excerpt(text: &str) -> String {
    if text.chars().count() <= EXCERPT_CHARS {
        return text.to_owned();
    }
    let mut short: String = text.chars().take(EXCERPT_CHARS).collect();
    short.push('…');
    short
}

/// Shortens untrusted bytes for an error message.
pub(crate) fn excerpt_bytes(bytes: &[u8]) -> String {
    excerpt(&String::from_utf8_lossy(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpts_are_bounded() {
        let long = "x".repeat(1000);
        let short = excerpt(&long);
        assert_eq!(short.chars().count(), EXCERPT_CHARS + 1);
        assert_eq!(excerpt("Ref:002/00000000"), "Ref:002/00000000");
        assert_eq!(excerpt_bytes(b"\xffab"), "\u{fffd}ab");
    }
}
