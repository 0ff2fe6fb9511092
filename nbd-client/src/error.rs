//! The crate's single error type.

use std::sync::Arc;
use std::time::Duration;

use crate::proto::{CommandType, Errno, ExportName, OptionCode, OptionReplyType};
use crate::units::Cookie;

/// Everything that can go wrong in `nbd-client`, from a malformed byte to an exhausted retry budget.
///
/// Export names never appear here: xapi's embed a session reference, which is a secret. A
/// server's own message text (in [`Error::OptionRefused`] and [`Error::Command`]) is kept for
/// diagnosis, with the export name and its session id redacted, control characters replaced
/// and the length capped at [`MAX_SERVER_MESSAGE_CHARS`].
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
        /// Server's message (may be empty; redacted and capped, see [`Error`]).
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
        /// Server's message (structured replies only; may be empty; redacted and capped).
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

/// Longest server message kept in an error, in characters; longer ones are cut and end in `…`.
pub const MAX_SERVER_MESSAGE_CHARS: usize = 512;

/// What replaces a secret in a server message.
const REDACTED: &str = "<redacted>";

/// Turns a server's message into error text that carries neither the export name nor its
/// session id: the server may echo what the client sent, and xapi's export names embed a
/// session reference (`/<vdi-uuid>?session_id=OpaqueRef:<uuid>`).
#[derive(Clone, Default)]
pub(crate) struct MessageRedactor {
    /// Strings to hide, longest first so that the whole name wins over its parts.
    secrets: Vec<String>,
}

impl MessageRedactor {
    /// Shortest query value (or bare reference) redacted on its own: shorter ones are not
    /// secrets, and hiding them would garble ordinary words.
    const MIN_PART_LEN: usize = 8;

    /// Hides `export_name`, each of its query values (`session_id=…`) and the bare token of
    /// a `OpaqueRef:<token>` value.
    pub(crate) fn for_export(export_name: &ExportName) -> Self {
        let name = export_name.expose();
        let mut secrets = Vec::new();
        if !name.is_empty() {
            secrets.push(name.to_owned());
        }
        if let Some((_, query)) = name.split_once('?') {
            for pair in query.split('&') {
                let value = pair.split_once('=').map_or(pair, |(_, value)| value);
                let token = value.rsplit_once(':').map_or(value, |(_, token)| token);
                for part in [value, token] {
                    if part.len() >= Self::MIN_PART_LEN {
                        secrets.push(part.to_owned());
                    }
                }
            }
        }
        secrets.sort_by_key(|secret| std::cmp::Reverse(secret.len()));
        secrets.dedup();
        Self { secrets }
    }

    /// The server's `raw` message as safe error text: lossy UTF-8, secrets replaced by
    /// `<redacted>`, control characters (newlines, escapes) by `U+FFFD`, at most
    /// [`MAX_SERVER_MESSAGE_CHARS`] characters.
    pub(crate) fn redact(&self, raw: &[u8]) -> String {
        let text = String::from_utf8_lossy(raw);
        let mut out = String::with_capacity(text.len().min(MAX_SERVER_MESSAGE_CHARS));
        let mut kept = 0usize;
        let mut rest: &str = &text;
        while let Some(c) = rest.chars().next() {
            if kept == MAX_SERVER_MESSAGE_CHARS {
                out.push('…');
                break;
            }
            kept = kept.saturating_add(1);
            if let Some(secret) = self.secrets.iter().find(|s| rest.starts_with(s.as_str())) {
                out.push_str(REDACTED);
                rest = rest.get(secret.len()..).unwrap_or_default();
                continue;
            }
            out.push(if c.is_control() { '\u{fffd}' } else { c });
            rest = rest.get(c.len_utf8()..).unwrap_or_default();
        }
        out
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    const XAPI_NAME: &str = "/3f2504e0-4f89-11d3-9a0c-0305e82c3301?session_id=OpaqueRef:6c1f2b1e-1111-2222-3333-444455556666";
    const SESSION: &str = "OpaqueRef:6c1f2b1e-1111-2222-3333-444455556666";
    const TOKEN: &str = "6c1f2b1e-1111-2222-3333-444455556666";

    fn xapi() -> MessageRedactor {
        MessageRedactor::for_export(&ExportName::new(XAPI_NAME))
    }

    #[test]
    fn the_export_name_and_its_session_are_redacted() {
        let redactor = xapi();
        // The whole name, the session ref and its bare token, each wherever it appears.
        let raw = format!("no export {XAPI_NAME}; session {SESSION} expired (ref {TOKEN})");
        let text = redactor.redact(raw.as_bytes());
        assert_eq!(
            text,
            "no export <redacted>; session <redacted> expired (ref <redacted>)"
        );
        assert!(!text.contains("6c1f2b1e"));
        // The VDI uuid alone is not a secret and stays readable.
        let vdi = "VDI 3f2504e0-4f89-11d3-9a0c-0305e82c3301 is not attached";
        assert_eq!(redactor.redact(vdi.as_bytes()), vdi);
    }

    #[test]
    fn a_plain_export_name_is_redacted_too() {
        let redactor = MessageRedactor::for_export(&ExportName::new("disk"));
        assert_eq!(
            redactor.redact(b"export 'disk' not found"),
            "export '<redacted>' not found"
        );
        // No name, nothing to hide: the message passes unchanged.
        let none = MessageRedactor::for_export(&ExportName::new(""));
        assert_eq!(none.redact(b"Invalid argument"), "Invalid argument");
    }

    #[test]
    fn control_characters_and_bad_utf8_are_neutralised() {
        let redactor = xapi();
        let text = redactor.redact(b"line one\nfake: log line\x1b[31m \xff end");
        assert_eq!(
            text,
            "line one\u{fffd}fake: log line\u{fffd}[31m \u{fffd} end"
        );
    }

    #[test]
    fn long_messages_are_cut_after_redaction() {
        let redactor = xapi();
        let raw = "x".repeat(10_000);
        let text = redactor.redact(raw.as_bytes());
        assert_eq!(text.chars().count(), MAX_SERVER_MESSAGE_CHARS + 1);
        assert!(text.ends_with('…'));
        // A secret straddling the cut is hidden whole, not cut into a readable prefix.
        let raw = format!("{}{SESSION}", "y".repeat(MAX_SERVER_MESSAGE_CHARS - 1));
        let text = redactor.redact(raw.as_bytes());
        assert!(text.ends_with("y<redacted>"), "{text}");
        assert!(!text.contains("OpaqueRef"));
        // Multi-byte characters are counted as characters and never split.
        let raw = "é".repeat(MAX_SERVER_MESSAGE_CHARS * 2);
        let text = redactor.redact(raw.as_bytes());
        assert_eq!(text.chars().count(), MAX_SERVER_MESSAGE_CHARS + 1);
    }

    #[test]
    fn errors_built_from_redacted_messages_display_no_secret() {
        let message = xapi().redact(format!("cannot open {XAPI_NAME}").as_bytes());
        let error = Error::OptionRefused {
            option: OptionCode::GO,
            reply: OptionReplyType::ERR_UNKNOWN,
            message,
        };
        for text in [error.to_string(), format!("{error:?}")] {
            assert!(text.contains("<redacted>"), "{text}");
            assert!(!text.contains(TOKEN), "{text}");
        }
    }
}
