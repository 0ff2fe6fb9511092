//! Magic numbers, codes and flag words of the NBD protocol (`doc/proto.md`).
//!
//! Codes are open newtypes rather than enums because a peer may send values this crate does not
//! know; those must stay representable so they can be reported or skipped.

use std::fmt;

/// `NBDMAGIC`, first 8 bytes of every greeting.
pub const NBD_MAGIC: u64 = 0x4e42_444d_4147_4943;
/// `IHAVEOPT`, second word of the greeting and first of every option request.
pub const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
/// Magic of every fixed-newstyle option reply.
pub const OPTION_REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
/// Magic of a compact (28-byte) request header.
pub const REQUEST_MAGIC: u32 = 0x2560_9513;
/// Magic of an extended (32-byte) request header.
pub const EXTENDED_REQUEST_MAGIC: u32 = 0x21e4_1c71;
/// Magic of a simple (16-byte) reply.
pub const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
/// Magic of a structured (20-byte) reply chunk.
pub const STRUCTURED_REPLY_MAGIC: u32 = 0x668e_33ef;
/// Magic of an extended (32-byte) reply chunk.
pub const EXTENDED_REPLY_MAGIC: u32 = 0x6e8a_278c;

/// Default TCP port of NBD servers (IANA).
pub const DEFAULT_PORT: u16 = 10809;
/// Length of the zero padding after an `NBD_OPT_EXPORT_NAME` reply unless NO_ZEROES was agreed.
pub const EXPORT_NAME_PADDING: usize = 124;
/// Longest string (export name, context name, message) the protocol allows.
pub const MAX_STRING_LEN: usize = 4096;

macro_rules! open_code {
    ($(#[$meta:meta])* $name:ident($repr:ty) { $($(#[$cmeta:meta])* $konst:ident = $value:expr,)* }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
        pub struct $name(pub $repr);

        impl $name {
            $($(#[$cmeta])* pub const $konst: Self = Self($value);)*

            /// The protocol name of this value, or `None` for a value this crate does not know.
            pub fn name(self) -> Option<&'static str> {
                match self {
                    $(Self::$konst => Some(stringify!($konst)),)*
                    _ => None,
                }
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self.name() {
                    Some(name) => write!(f, "{}({:#x})", name, self.0),
                    None => write!(f, "{}({:#x})", stringify!($name), self.0),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(self, f)
            }
        }
    };
}

open_code! {
    /// Option code of a handshake option request (`NBD_OPT_*`).
    OptionCode(u32) {
        /// Select an export and enter transmission; no option reply.
        EXPORT_NAME = 1,
        /// Soft-disconnect during the handshake.
        ABORT = 2,
        /// List exports.
        LIST = 3,
        /// Withdrawn; never sent.
        PEEK_EXPORT = 4,
        /// Upgrade the connection to TLS.
        STARTTLS = 5,
        /// Ask about an export without entering transmission.
        INFO = 6,
        /// Select an export and enter transmission, with option replies.
        GO = 7,
        /// Enable structured replies.
        STRUCTURED_REPLY = 8,
        /// List metadata contexts.
        LIST_META_CONTEXT = 9,
        /// Select metadata contexts for BLOCK_STATUS.
        SET_META_CONTEXT = 10,
        /// Enable 32-byte extended headers (64-bit lengths).
        EXTENDED_HEADERS = 11,
    }
}

open_code! {
    /// Reply type of an option reply (`NBD_REP_*`); bit 31 marks errors.
    OptionReplyType(u32) {
        /// Final success reply.
        ACK = 1,
        /// One export in a LIST answer.
        SERVER = 2,
        /// One `NBD_INFO_*` item of an INFO or GO answer.
        INFO = 3,
        /// One metadata context.
        META_CONTEXT = 4,
        /// Option unknown to the server.
        ERR_UNSUP = 0x8000_0001,
        /// Option forbidden by server policy.
        ERR_POLICY = 0x8000_0002,
        /// Option malformed, repeated or sent in the wrong state.
        ERR_INVALID = 0x8000_0003,
        /// Option not available on this platform.
        ERR_PLATFORM = 0x8000_0004,
        /// TLS must be negotiated first.
        ERR_TLS_REQD = 0x8000_0005,
        /// The export does not exist.
        ERR_UNKNOWN = 0x8000_0006,
        /// The server is shutting down.
        ERR_SHUTDOWN = 0x8000_0007,
        /// GO must carry an `NBD_INFO_BLOCK_SIZE` request.
        ERR_BLOCK_SIZE_REQD = 0x8000_0008,
        /// Request or reply too large.
        ERR_TOO_BIG = 0x8000_0009,
        /// Extended headers are required (or STRUCTURED_REPLY came after them).
        ERR_EXT_HEADER_REQD = 0x8000_000a,
    }
}

impl OptionReplyType {
    /// True for error replies (bit 31 set).
    pub fn is_error(self) -> bool {
        self.0 & 0x8000_0000 != 0
    }
}

open_code! {
    /// Information type inside `NBD_REP_INFO` and in INFO/GO requests (`NBD_INFO_*`).
    InfoType(u16) {
        /// Export size and transmission flags.
        EXPORT = 0,
        /// Canonical export name.
        NAME = 1,
        /// Human-readable description.
        DESCRIPTION = 2,
        /// Block size constraints.
        BLOCK_SIZE = 3,
    }
}

open_code! {
    /// Command type of a transmission request (`NBD_CMD_*`).
    CommandType(u16) {
        /// Read data.
        READ = 0,
        /// Write data (payload follows the header).
        WRITE = 1,
        /// Soft disconnect; no reply.
        DISC = 2,
        /// Persist written data.
        FLUSH = 3,
        /// Discard a range.
        TRIM = 4,
        /// Prefetch a range.
        CACHE = 5,
        /// Write zeros without a payload.
        WRITE_ZEROES = 6,
        /// Query metadata contexts over a range.
        BLOCK_STATUS = 7,
        /// Experimental resize.
        RESIZE = 8,
    }
}

open_code! {
    /// Chunk type of a structured or extended reply (`NBD_REPLY_TYPE_*`); bit 15 marks errors.
    ChunkType(u16) {
        /// No payload; only valid with DONE.
        NONE = 0,
        /// u64 offset then data.
        OFFSET_DATA = 1,
        /// u64 offset, u32 length: reads as zeros.
        OFFSET_HOLE = 2,
        /// u32 context id then {u32 length, u32 flags} descriptors.
        BLOCK_STATUS = 5,
        /// u32 context id, u32 count, then {u64 length, u64 flags} descriptors (extended headers).
        BLOCK_STATUS_EXT = 6,
        /// u32 error, u16 message length, message.
        ERROR = 0x8001,
        /// Like ERROR with a trailing u64 offset.
        ERROR_OFFSET = 0x8002,
    }
}

impl ChunkType {
    /// True for error chunk types (bit 15 set).
    pub fn is_error(self) -> bool {
        self.0 & 0x8000 != 0
    }
}

/// Error values of replies (`NBD_E*`), as sent on the wire (not the host's errno values).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Errno(pub u32);

impl Errno {
    /// Operation not permitted (e.g. write to a read-only export).
    pub const EPERM: Self = Self(1);
    /// Input/output error.
    pub const EIO: Self = Self(5);
    /// Out of memory on the server.
    pub const ENOMEM: Self = Self(12);
    /// Invalid argument (unaligned, out of range, unknown command or flag, too large).
    pub const EINVAL: Self = Self(22);
    /// No space left.
    pub const ENOSPC: Self = Self(28);
    /// Value too large (DF read, oversize effect length).
    pub const EOVERFLOW: Self = Self(75);
    /// Operation not supported (fast zero refused).
    pub const ENOTSUP: Self = Self(95);
    /// Server is shutting down.
    pub const ESHUTDOWN: Self = Self(108);

    /// The protocol name, or `None` for a value the protocol does not define (treat as EINVAL).
    pub fn name(self) -> Option<&'static str> {
        Some(match self {
            Self::EPERM => "EPERM",
            Self::EIO => "EIO",
            Self::ENOMEM => "ENOMEM",
            Self::EINVAL => "EINVAL",
            Self::ENOSPC => "ENOSPC",
            Self::EOVERFLOW => "EOVERFLOW",
            Self::ENOTSUP => "ENOTSUP",
            Self::ESHUTDOWN => "ESHUTDOWN",
            _ => return None,
        })
    }

    /// True for errors a retry may cure (device errors, memory pressure, a server restart).
    pub fn is_transient(self) -> bool {
        matches!(self, Self::EIO | Self::ENOMEM | Self::ESHUTDOWN)
    }
}

impl fmt::Debug for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{name}({})", self.0),
            None => write!(f, "unknown error {} (treated as EINVAL)", self.0),
        }
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

macro_rules! flag_word {
    ($(#[$meta:meta])* $name:ident($repr:ty) { $($(#[$cmeta:meta])* $konst:ident = $bit:expr,)* }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
        pub struct $name(pub $repr);

        impl $name {
            $($(#[$cmeta])* pub const $konst: Self = Self(1 << $bit);)*

            /// No flag set.
            pub const EMPTY: Self = Self(0);

            /// True when every bit of `other` is set in `self`.
            pub fn contains(self, other: Self) -> bool {
                self.0 & other.0 == other.0
            }

            /// `self` with the bits of `other` added.
            #[must_use]
            pub fn with(self, other: Self) -> Self {
                Self(self.0 | other.0)
            }

            /// `self` with the bits of `other` removed.
            #[must_use]
            pub fn without(self, other: Self) -> Self {
                Self(self.0 & !other.0)
            }
        }

        impl std::ops::BitOr for $name {
            type Output = Self;
            fn bitor(self, rhs: Self) -> Self {
                self.with(rhs)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:#x}", stringify!($name), self.0)?;
                $(if self.contains(Self::$konst) { write!(f, " {}", stringify!($konst))?; })*
                write!(f, ")")
            }
        }
    };
}

flag_word! {
    /// Handshake flags sent by the server in the greeting.
    HandshakeFlags(u16) {
        /// Server speaks fixed newstyle.
        FIXED_NEWSTYLE = 0,
        /// Server can omit the 124 zero bytes after EXPORT_NAME.
        NO_ZEROES = 1,
    }
}

flag_word! {
    /// Client flags sent after the greeting.
    ClientFlags(u32) {
        /// Client speaks fixed newstyle.
        FIXED_NEWSTYLE = 0,
        /// Client does not want the 124 zero bytes.
        NO_ZEROES = 1,
    }
}

flag_word! {
    /// Transmission flags of an export.
    TransmissionFlags(u16) {
        /// Always set by conforming servers.
        HAS_FLAGS = 0,
        /// Writes are refused.
        READ_ONLY = 1,
        /// FLUSH is supported.
        SEND_FLUSH = 2,
        /// The FUA command flag is supported.
        SEND_FUA = 3,
        /// Hint: rotational media.
        ROTATIONAL = 4,
        /// TRIM is supported.
        SEND_TRIM = 5,
        /// WRITE_ZEROES is supported.
        SEND_WRITE_ZEROES = 6,
        /// The DF command flag is supported.
        SEND_DF = 7,
        /// Caches are coherent across connections.
        CAN_MULTI_CONN = 8,
        /// Experimental RESIZE.
        SEND_RESIZE = 9,
        /// CACHE is supported.
        SEND_CACHE = 10,
        /// The FAST_ZERO command flag is supported.
        SEND_FAST_ZERO = 11,
        /// BLOCK_STATUS may carry a payload (extended headers).
        BLOCK_STATUS_PAYLOAD = 12,
    }
}

flag_word! {
    /// Command flags of a request.
    CommandFlags(u16) {
        /// Force unit access.
        FUA = 0,
        /// WRITE_ZEROES must allocate.
        NO_HOLE = 1,
        /// READ must not fragment.
        DF = 2,
        /// BLOCK_STATUS: one extent per context.
        REQ_ONE = 3,
        /// WRITE_ZEROES: fail fast if slow.
        FAST_ZERO = 4,
        /// Extended headers: the length field is a payload length.
        PAYLOAD_LEN = 5,
    }
}

flag_word! {
    /// Flags of a structured or extended reply chunk.
    ReplyFlags(u16) {
        /// Last chunk for this cookie.
        DONE = 0,
    }
}

/// Name of the allocation metadata context.
pub const BASE_ALLOCATION: &str = "base:allocation";
/// `base:allocation` flag: the extent is not allocated.
pub const STATE_HOLE: u32 = 1;
/// `base:allocation` flag: the extent reads as zeros.
pub const STATE_ZERO: u32 = 2;
/// `qemu:dirty-bitmap:*` flag: the extent is dirty.
pub const STATE_DIRTY: u32 = 1;
/// Prefix of qemu's dirty-bitmap metadata contexts.
pub const QEMU_DIRTY_BITMAP_PREFIX: &str = "qemu:dirty-bitmap:";
