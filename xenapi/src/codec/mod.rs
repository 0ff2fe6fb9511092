//! Sans-IO wire codec for XenAPI: XML-RPC ([`xmlrpc`]) and JSON-RPC v1/v2 ([`jsonrpc`]), for
//! both ends of the wire.
//!
//! - Client side: encode a method call, decode a response (success, API failure), decode a
//!   task `result` (always an XML-RPC value fragment, whatever the transport).
//! - Server side (the simulator): decode a call as leniently as xapi does, encode a response
//!   in xapi's exact shape (untyped strings and int64s in XML-RPC, `%.16g` doubles, Yojson
//!   floats with bare `NaN`/`Infinity` in JSON, `Status` first, ...).
//!
//! Everything works on byte slices and returns values; no I/O happens here. Decoders never
//! panic, bound nesting to [`MAX_DEPTH`], and report the byte offset of a problem.

use std::fmt;

use crate::error::Error;
use crate::value::Value;

pub mod float;
pub mod jsonrpc;
pub mod xmlrpc;

/// How deep arrays and structs may nest in a decoded body (xapi's deepest, an event batch, is
/// under 10).
pub const MAX_DEPTH: usize = 64;

/// A decoded method call: what a server sees.
#[derive(Clone, Debug, PartialEq)]
pub struct MethodCall {
    /// The wire method name, e.g. `VM.get_record` or `Async.VM.snapshot`.
    pub method: String,
    /// The parameters, session first for everything but the logins.
    pub params: Vec<Value>,
}

/// The outcome carried by a response.
#[derive(Clone, Debug, PartialEq)]
pub enum Response {
    /// `Status: Success` / JSON `result`.
    Success(Value),
    /// `Status: Failure` / JSON `error`.
    Failure(Failure),
}

/// An API failure as it travels: `[CODE, p1, p2, ...]`.
#[derive(Clone, PartialEq, Eq)]
pub struct Failure {
    /// The error code (`HANDLE_INVALID`, ...).
    pub code: String,
    /// The parameters, as strings.
    pub params: Vec<String>,
}

impl Failure {
    /// A failure with these parts.
    pub fn new(
        code: impl Into<String>,
        params: impl IntoIterator<Item = impl Into<String>>,
    ) -> Failure {
        Failure {
            code: code.into(),
            params: params.into_iter().map(Into::into).collect(),
        }
    }

    /// Reads xapi's `ErrorDescription` / JSON v1 `error` array: strings (untyped in XML-RPC);
    /// numbers and booleans are stringified rather than refused.
    pub(crate) fn from_description(items: Vec<Value>) -> Result<Failure, Error> {
        let mut strings = items.into_iter().map(describe);
        let code = strings
            .next()
            .ok_or_else(|| Error::protocol("empty error description"))?;
        Ok(Failure {
            code,
            params: strings.collect(),
        })
    }
}

/// SESSION_INVALID carries the (secret) session ref: never print it.
impl fmt::Debug for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let params: Vec<&str> = if self.code == "SESSION_INVALID" {
            self.params.iter().map(|_| "<redacted>").collect()
        } else {
            self.params.iter().map(String::as_str).collect()
        };
        f.debug_struct("Failure")
            .field("code", &self.code)
            .field("params", &params)
            .finish()
    }
}

fn describe(value: Value) -> String {
    match value {
        Value::String(text) => text,
        Value::Int(number) => number.to_string(),
        Value::Int32(number) => number.to_string(),
        Value::Double(number) => float::exact_xml_double(number),
        Value::Bool(flag) => flag.to_string(),
        Value::DateTime(date) => date.to_string(),
        Value::Nil => String::new(),
        other => other.kind().to_owned(),
    }
}

/// Shared cursor helpers for the two text decoders.
pub(crate) fn is_space(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\n' | b'\r')
}
