//! The crate's one error type, and the XenAPI error codes callers branch on.
//!
//! Secrets never reach a message: passwords are never stored in an error, session refs in
//! API error parameters are replaced by `OpaqueRef:<redacted>` before an [`Error::Api`] is
//! built, and HTTP errors name the path without its query (which carries `session_id`).

use std::fmt;
use std::io;

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// xapi answered with an API error (`Status: Failure`, JSON-RPC `error`, a failed task).
    #[error("XenAPI error {code}{}", DisplayParams(params))]
    Api {
        /// The error code, e.g. `HANDLE_INVALID`; see [`ErrorCode`].
        code: String,
        /// The parameters, session refs redacted.
        params: Vec<String>,
    },
    /// An XML document did not parse, or was not the XML-RPC shape expected.
    #[error("malformed XML-RPC at byte {offset}: {reason}")]
    Xml {
        /// Byte offset of the problem in the body.
        offset: usize,
        /// What was wrong.
        reason: String,
    },
    /// A JSON document did not parse, or was not the JSON-RPC shape expected.
    #[error("malformed JSON-RPC at byte {offset}: {reason}")]
    Json {
        /// Byte offset of the problem in the body.
        offset: usize,
        /// What was wrong.
        reason: String,
    },
    /// Values nested deeper than the decoder allows (a guard against stack exhaustion).
    #[error("values nested deeper than {limit} levels")]
    TooDeep {
        /// The nesting limit.
        limit: usize,
    },
    /// A body larger than the configured limit.
    #[error("body of {found} bytes exceeds the limit of {limit}")]
    TooLarge {
        /// Bytes seen (at least).
        found: u64,
        /// The limit.
        limit: u64,
    },
    /// A value had another type than the one the schema asks for.
    #[error("expected {expected}, found {found}{}", field.as_ref().map(|name| format!(" in field `{name}`")).unwrap_or_default())]
    Conversion {
        /// The type wanted.
        expected: &'static str,
        /// The type (or problem) found.
        found: &'static str,
        /// The record field, when converting a record.
        field: Option<String>,
    },
    /// A datetime string in none of the accepted forms.
    #[error("invalid XenAPI datetime `{text}`")]
    InvalidDateTime {
        /// The text (truncated).
        text: String,
    },
    /// A connection URL that cannot be used; the message says how to fix it.
    #[error("invalid connection URL: {reason}")]
    Url {
        /// What is wrong and, where possible, how to write it instead.
        reason: String,
    },
    /// Credentials missing or unreadable (no user, empty password file, ...).
    #[error("credentials: {reason}")]
    Credentials {
        /// What is missing.
        reason: String,
    },
    /// TLS configuration or handshake failure (bad CA file, pin mismatch, ...).
    #[error("TLS: {reason}")]
    Tls {
        /// What failed.
        reason: String,
        /// The underlying error, if any.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// Socket-level failure.
    #[error("I/O error while {context}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// HTTP-level failure from hyper.
    #[error("HTTP error while {context}")]
    Http {
        /// What was being done.
        context: String,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// An unexpected HTTP status (the query string, which holds the session, is never shown).
    #[error("HTTP {status} from {method} {path}")]
    HttpStatus {
        /// The status code.
        status: u16,
        /// The request method.
        method: String,
        /// The request path, without query.
        path: String,
    },
    /// Neither JSON-RPC nor XML-RPC gave a usable answer.
    #[error("unexpected response: {reason}")]
    Protocol {
        /// What was unexpected.
        reason: String,
    },
    /// An operation did not finish in time.
    #[error("timed out after {seconds:.1} s while {context}")]
    Timeout {
        /// What was being waited for.
        context: String,
        /// The limit, in seconds.
        seconds: f64,
    },
    /// The caller cancelled (the server-side task, if any, was asked to cancel).
    #[error("cancelled while {context}")]
    Cancelled {
        /// What was being done.
        context: String,
    },
    /// A task ended `cancelled` on the server.
    #[error("task was cancelled on the server")]
    TaskCancelled,
    /// More redirects than allowed (HOST_IS_SLAVE chains, 302 loops).
    #[error("too many redirects ({count}) while {context}")]
    TooManyRedirects {
        /// Redirects followed.
        count: usize,
        /// What was being done.
        context: String,
    },
    /// An upload body did not produce exactly the declared `Content-Length`.
    #[error("upload body length {found} differs from declared Content-Length {expected}")]
    BodyLength {
        /// Declared length.
        expected: u64,
        /// Bytes the stream produced (at least).
        found: u64,
    },
    /// The caller's upload stream failed.
    #[error("upload body stream failed")]
    Body {
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The client was closed (logged out) and cannot make calls.
    #[error("the client session is closed")]
    Closed,
}

impl Error {
    /// The known code of an [`Error::Api`], if it is one of [`ErrorCode`].
    pub fn api_code(&self) -> Option<ErrorCode> {
        match self {
            Error::Api { code, .. } => ErrorCode::parse(code),
            _ => None,
        }
    }

    /// True for an [`Error::Api`] with this code.
    pub fn is_api(&self, wanted: ErrorCode) -> bool {
        self.api_code() == Some(wanted)
    }

    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Error {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn http(
        context: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Error {
        Error::Http {
            context: context.into(),
            source: Box::new(source),
        }
    }

    pub(crate) fn tls(reason: impl Into<String>) -> Error {
        Error::Tls {
            reason: reason.into(),
            source: None,
        }
    }

    pub(crate) fn protocol(reason: impl Into<String>) -> Error {
        Error::Protocol {
            reason: reason.into(),
        }
    }

    pub(crate) fn with_field(self, name: &str) -> Error {
        match self {
            Error::Conversion {
                expected,
                found,
                field: None,
            } => Error::Conversion {
                expected,
                found,
                field: Some(name.to_owned()),
            },
            other => other,
        }
    }
}

struct DisplayParams<'a>(&'a [String]);

impl fmt::Display for DisplayParams<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return Ok(());
        }
        f.write_str(" [")?;
        for (index, param) in self.0.iter().enumerate() {
            if index > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{param:?}")?;
        }
        f.write_str("]")
    }
}

macro_rules! error_codes {
    ($( $(#[$doc:meta])* $variant:ident = $code:literal, )*) => {
        /// XenAPI error codes that callers commonly branch on (xen-api `api_errors.ml`).
        ///
        /// [`Error::Api`] keeps the code as a string so that codes not listed here still reach
        /// the caller; `ErrorCode::parse` recognises these.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum ErrorCode {
            $( $(#[$doc])* $variant, )*
        }

        impl ErrorCode {
            /// Recognises a wire code (`SR_BACKEND_FAILURE_<n>` has its own variant).
            pub fn parse(code: &str) -> Option<ErrorCode> {
                match code {
                    $( $code => Some(ErrorCode::$variant), )*
                    other if other.starts_with("SR_BACKEND_FAILURE_") => Some(ErrorCode::SrBackendFailure),
                    _ => None,
                }
            }

            /// The wire spelling (`SR_BACKEND_FAILURE` for the numbered family).
            pub fn as_str(self) -> &'static str {
                match self {
                    $( ErrorCode::$variant => $code, )*
                }
            }
        }
    };
}

error_codes! {
    /// `[session_ref]`: the session expired or was logged out.
    SessionInvalid = "SESSION_INVALID",
    /// `[uname; message]`: wrong user name or password.
    SessionAuthenticationFailed = "SESSION_AUTHENTICATION_FAILED",
    /// `[uname; message]`: external authentication refused.
    SessionAuthorizationFailed = "SESSION_AUTHORIZATION_FAILED",
    /// `[master_address]`: this host is a pool member; talk to the master.
    HostIsSlave = "HOST_IS_SLAVE",
    /// `[class; ref]`: no such object (or a vanished task).
    HandleInvalid = "HANDLE_INVALID",
    /// `[class; uuid]`: no object with that uuid.
    UuidInvalid = "UUID_INVALID",
    /// `[table; field; uuid; key]`: `add_to_<map>` with an existing key.
    MapDuplicateKey = "MAP_DUPLICATE_KEY",
    /// `[method]`.
    MessageMethodUnknown = "MESSAGE_METHOD_UNKNOWN",
    /// `[method; expected; received]`.
    MessageParameterCountMismatch = "MESSAGE_PARAMETER_COUNT_MISMATCH",
    /// `["Fault"; text]`: e.g. `Async.` on a method without an async form.
    Fault = "Fault",
    /// `[message]`.
    InternalError = "INTERNAL_ERROR",
    /// `[what; value]`.
    InvalidValue = "INVALID_VALUE",
    /// `[message]`.
    PermissionDenied = "PERMISSION_DENIED",
    /// `[permission; message]`.
    RbacPermissionDenied = "RBAC_PERMISSION_DENIED",
    /// `[reason]`.
    OperationNotAllowed = "OPERATION_NOT_ALLOWED",
    /// `[vm; reason]`: the operation is in the VM's `blocked_operations`.
    OperationBlocked = "OPERATION_BLOCKED",
    /// `[class; ref; op; task]`.
    OtherOperationInProgress = "OTHER_OPERATION_IN_PROGRESS",
    /// `[vm; expected; actual]`.
    VmBadPowerState = "VM_BAD_POWER_STATE",
    /// `[vm; op]`.
    VmIsTemplate = "VM_IS_TEMPLATE",
    /// `[vm; op]`.
    VmIsSnapshot = "VM_IS_SNAPSHOT",
    /// `[vdi; op]`.
    VdiInUse = "VDI_IN_USE",
    /// `[vdi; type]`.
    VdiIncompatibleType = "VDI_INCOMPATIBLE_TYPE",
    /// `[vdi]`.
    VdiNoCbtMetadata = "VDI_NO_CBT_METADATA",
    /// `[vdi]`.
    VdiCbtEnabled = "VDI_CBT_ENABLED",
    /// `[sr; vdi]` (or `[]`).
    VdiMissing = "VDI_MISSING",
    /// `[vdi; size]`.
    VdiTooSmall = "VDI_TOO_SMALL",
    /// `[vdi; size]`.
    VdiTooLarge = "VDI_TOO_LARGE",
    /// `["Device I/O errors"]`.
    VdiIoError = "VDI_IO_ERROR",
    /// `[vdi]`.
    VdiReadonly = "VDI_READONLY",
    /// `[sr]`.
    SrOperationNotSupported = "SR_OPERATION_NOT_SUPPORTED",
    /// `[sr]`.
    SrHasNoPbds = "SR_HAS_NO_PBDS",
    /// `[sr]`.
    SrNotAttached = "SR_NOT_ATTACHED",
    /// `[requested; maximum]`.
    SrFull = "SR_FULL",
    /// `SR_BACKEND_FAILURE_<n>`: `[""; reason; stderr]` (459/460 for CBT logs).
    SrBackendFailure = "SR_BACKEND_FAILURE",
    /// `[sr]`.
    UnimplementedInSmBackend = "UNIMPLEMENTED_IN_SM_BACKEND",
    /// `[feature]`.
    LicenceRestriction = "LICENCE_RESTRICTION",
    /// `[task]`.
    TaskCancelled = "TASK_CANCELLED",
    /// `[]`: the master is overloaded; retry later.
    TooManyPendingTasks = "TOO_MANY_PENDING_TASKS",
    /// `[]`.
    EventsLost = "EVENTS_LOST",
    /// `[token]`.
    EventFromTokenParseFailure = "EVENT_FROM_TOKEN_PARSE_FAILURE",
    /// `[device]`.
    InvalidDevice = "INVALID_DEVICE",
    /// `[device]`.
    DeviceAlreadyExists = "DEVICE_ALREADY_EXISTS",
    /// `[mac]`.
    MacInvalid = "MAC_INVALID",
    /// `[new; conflicting]`.
    NetworkIncompatiblePurposes = "NETWORK_INCOMPATIBLE_PURPOSES",
    /// `[network]`.
    NetworkUnmanaged = "NETWORK_UNMANAGED",
    /// `[message]`.
    ImportError = "IMPORT_ERROR",
    /// `[vm; op]`-like: the VM cannot be deleted.
    VmCannotDeleteDefaultTemplate = "VM_CANNOT_DELETE_DEFAULT_TEMPLATE",
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_parse_and_print() {
        assert_eq!(
            ErrorCode::parse("HOST_IS_SLAVE"),
            Some(ErrorCode::HostIsSlave)
        );
        assert_eq!(
            ErrorCode::parse("SR_BACKEND_FAILURE_460"),
            Some(ErrorCode::SrBackendFailure)
        );
        assert_eq!(ErrorCode::parse("SOMETHING_NEW"), None);
        assert_eq!(ErrorCode::VdiInUse.as_str(), "VDI_IN_USE");
        let error = Error::Api {
            code: "VDI_IN_USE".into(),
            params: vec!["OpaqueRef:1".into(), "destroy".into()],
        };
        assert!(error.is_api(ErrorCode::VdiInUse));
        assert_eq!(
            error.to_string(),
            r#"XenAPI error VDI_IN_USE ["OpaqueRef:1"; "destroy"]"#
        );
    }
}
