//! The crate's single error type.

use std::sync::Arc;
use std::time::Duration;

use crate::proto::{CommandType, Errno, OptionCode, OptionReplyType};
use crate::units::Cookie;

/// Everything that can go wrong in `nbd-client`, from a malformed byte to an exhausted retry budget.
///
/// Export names never appear here: xapi's embed a session reference, which is a secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A magic number did not match (greeting, option reply, request or reply header).
    #[error("bad {what} magic: found {found:#x}, expected {expected:#x}")]
    BadMagic {
        /// Which structure carried the magic.
        what: &'static str,
        /// Value received.
        found: u64,
        /// Value required.
        expected: u64,
    },
    /// A reply magic is not valid for the negotiated reply mode (e.g. a simple reply after extended headers).
    #[error("reply magic {found:#x} is not allowed in {mode} mode")]
    UnexpectedReplyMagic {
        /// Magic received.
        found: u32,
        /// Negotiated reply mode.
        mode: &'static str,
    },
    /// An option reply echoed another option than the one sent.
    #[error("option reply for {found}, expected a reply for {expected}")]
    UnexpectedOptionReply {
        /// Option the reply named.
        found: OptionCode,
        /// Option that was sent.
        expected: OptionCode,
    },
    /// A non-error option reply type this client cannot interpret (a protocol violation).
    #[error("unexpected option reply {found} to {option}")]
    UnexpectedOptionReplyType {
        /// Option that was sent.
        option: OptionCode,
        /// Reply type received.
        found: OptionReplyType,
    },
    /// A length field exceeds the sane cap for its container; nothing was allocated for it.
    #[error("{what} of {found} bytes exceeds the limit of {max}")]
    OversizePayload {
        /// Which length.
        what: &'static str,
        /// Length announced by the peer.
        found: u64,
        /// Largest length accepted.
        max: u64,
    },
    /// A payload's length does not fit the structure it must hold.
    #[error("{what} has length {found}, expected {expected}")]
    BadLength {
        /// Which payload.
        what: &'static str,
        /// Length received.
        found: u64,
        /// Length (or minimum length) required.
        expected: u64,
    },
    /// A payload's content is inconsistent (e.g. a zero-length extent, a name that is not UTF-8).
    #[error("malformed {what}: {reason}")]
    Malformed {
        /// Which structure.
        what: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Too many replies to one option or too many fragments of one request.
    #[error("too many {what} (limit {max})")]
    TooMany {
        /// What was counted.
        what: &'static str,
        /// Limit.
        max: usize,
    },
    /// A reply named a cookie that is not in flight.
    #[error("reply for cookie {cookie} which is not in flight")]
    UnknownCookie {
        /// Cookie received.
        cookie: Cookie,
    },
    /// A cookie was registered twice while in flight.
    #[error("cookie {cookie} is already in flight")]
    DuplicateCookie {
        /// The cookie.
        cookie: Cookie,
    },
    /// A reply chunk does not fit the request it answers (wrong type, range outside the request, overlap).
    #[error(
        "reply chunk {chunk} for cookie {cookie} does not match its {command} request: {reason}"
    )]
    ChunkMismatch {
        /// Cookie of the request.
        cookie: Cookie,
        /// Command of the request.
        command: CommandType,
        /// Chunk type received (0 for a simple reply).
        chunk: u16,
        /// What is wrong.
        reason: &'static str,
    },
    /// A READ completed without data for every byte.
    #[error("read for cookie {cookie} completed with {covered} of {expected} bytes")]
    IncompleteRead {
        /// Cookie of the request.
        cookie: Cookie,
        /// Bytes received.
        covered: u64,
        /// Bytes requested.
        expected: u64,
    },
    /// The server does not speak fixed newstyle, which TLS and every modern option need.
    #[error("server does not support fixed newstyle negotiation, needed for {needed}")]
    NotFixedNewstyle {
        /// What needed it.
        needed: &'static str,
    },
    /// The server refused an option with an error reply.
    #[error("server refused {option} with {reply}{}", message_suffix(.message))]
    OptionRefused {
        /// Option sent.
        option: OptionCode,
        /// Error reply type.
        reply: OptionReplyType,
        /// Server's message (may be empty).
        message: String,
    },
    /// The server closed the connection after EXPORT_NAME: unknown export, expired session or attach failure.
    #[error("server closed the connection instead of accepting the export")]
    ExportRefused,
    /// The server is shutting down (`NBD_REP_ERR_SHUTDOWN` or `NBD_ESHUTDOWN`).
    #[error("server is shutting down")]
    ServerShutdown,
    /// A command failed on the server; the connection stays usable.
    #[error("{command} {offset}+{length} failed with {errno}{}", message_suffix(.message))]
    Command {
        /// Command that failed.
        command: CommandType,
        /// Request offset.
        offset: u64,
        /// Request length.
        length: u64,
        /// Error value sent by the server.
        errno: Errno,
        /// Server's message (structured replies only; may be empty).
        message: String,
    },
    /// The export does not allow this command (flag missing, read-only, no metadata context).
    #[error("the export does not support {what}")]
    Unsupported {
        /// What is missing.
        what: &'static str,
    },
    /// A request range lies outside the export.
    #[error("range {offset}+{length} is outside the export of {export_size} bytes")]
    InvalidRange {
        /// Requested offset.
        offset: u64,
        /// Requested length.
        length: u64,
        /// Export size.
        export_size: u64,
    },
    /// A request is not aligned to the export's minimum block size.
    #[error("range {offset}+{length} is not aligned to {alignment} bytes")]
    Unaligned {
        /// Requested offset.
        offset: u64,
        /// Requested length.
        length: u64,
        /// Required alignment.
        alignment: u64,
    },
    /// Invalid configuration given by the caller.
    #[error("invalid configuration: {reason}")]
    Config {
        /// What is wrong.
        reason: String,
    },
    /// The peer closed the connection in the middle of a message.
    #[error("connection closed by the peer while reading {while_reading}")]
    UnexpectedEof {
        /// What was being read.
        while_reading: &'static str,
    },
    /// A socket operation failed.
    #[error("I/O error while {action}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The TLS handshake or session failed (includes certificate verification).
    #[error("TLS failure")]
    Tls {
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A PEM certificate or bundle could not be used.
    #[error("invalid certificate: {reason}")]
    Certificate {
        /// What is wrong.
        reason: String,
    },
    /// An operation did not finish in time; a stalled connection is closed.
    #[error("{what} timed out after {after:?}")]
    Timeout {
        /// What timed out.
        what: &'static str,
        /// The limit.
        after: Duration,
    },
    /// The connection failed while the request was in flight.
    #[error("connection lost")]
    ConnectionLost {
        /// Why the connection failed.
        #[source]
        cause: Arc<Error>,
    },
    /// The connection or pool was closed by the caller.
    #[error("connection closed")]
    Closed,
    /// Every attempt of a request failed; the last failure is the source.
    #[error("request {range} failed after {attempts} attempts")]
    RetriesExhausted {
        /// Range of the request.
        range: crate::ByteRange,
        /// Attempts made.
        attempts: u32,
        /// Last failure.
        #[source]
        last: Box<Error>,
    },
}

fn message_suffix(message: &str) -> String {
    if message.is_empty() {
        String::new()
    } else {
        format!(": {message}")
    }
}

impl Error {
    /// True when retrying the same request on a fresh connection may succeed.
    ///
    /// Transport failures, timeouts and transient server errors (EIO, ENOMEM, ESHUTDOWN) qualify;
    /// protocol misuse (EINVAL, EPERM, bad ranges) and configuration errors do not.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Io { .. }
            | Self::UnexpectedEof { .. }
            | Self::Timeout { .. }
            | Self::ServerShutdown
            | Self::ExportRefused
            | Self::ConnectionLost { .. } => true,
            Self::Command { errno, .. } => errno.is_transient(),
            _ => false,
        }
    }

    /// True when the peer broke the protocol; the connection must be dropped.
    pub fn is_protocol_violation(&self) -> bool {
        matches!(
            self,
            Self::BadMagic { .. }
                | Self::UnexpectedReplyMagic { .. }
                | Self::UnexpectedOptionReply { .. }
                | Self::UnexpectedOptionReplyType { .. }
                | Self::OversizePayload { .. }
                | Self::BadLength { .. }
                | Self::Malformed { .. }
                | Self::TooMany { .. }
                | Self::UnknownCookie { .. }
                | Self::ChunkMismatch { .. }
                | Self::IncompleteRead { .. }
        )
    }

    pub(crate) fn io(action: &'static str) -> impl FnOnce(std::io::Error) -> Error {
        move |source| {
            if source.kind() == std::io::ErrorKind::UnexpectedEof {
                Error::UnexpectedEof {
                    while_reading: action,
                }
            } else {
                Error::Io { action, source }
            }
        }
    }
}
