//! JSON-RPC v1 and v2 as xapi speaks it (ocaml-rpc `jsonrpc.ml`, Yojson printing).
//!
//! Client side: [`encode_call`], [`decode_response`]. Server side: [`decode_call`],
//! [`encode_response`], [`encode_emergency_failure`].
//!
//! The decoder is tolerant where xapi's output is not standard JSON: bare `NaN`, `Infinity`
//! and `-Infinity` are read as doubles (xapi's Yojson writes them for non-finite floats, and a
//! strict parser such as serde_json would reject the whole document).

use base64::Engine as _;

use super::float::yojson_float;
use super::{Failure, MAX_DEPTH, MethodCall, Response, is_space};
use crate::error::Error;
use crate::value::Value;

/// JSON-RPC protocol version of a call (and of its response).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Version {
    /// No `jsonrpc` member; `params` array and `id` required; `{"result":…,"error":…,"id":…}`.
    V1,
    /// `"jsonrpc":"2.0"`; error object `{"code":1,"message":CODE,"data":[params]}`.
    V2,
}

/// A request id, echoed with its JSON type.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Id {
    /// A JSON integer.
    Int(i64),
    /// A JSON string.
    String(String),
}

/// A decoded call (server side).
#[derive(Clone, Debug, PartialEq)]
pub struct Call {
    /// Protocol version, which the response must follow.
    pub version: Version,
    /// The id to echo.
    pub id: Id,
    /// Method and params.
    pub call: MethodCall,
}

/// A decoded response (client side).
#[derive(Clone, Debug, PartialEq)]
pub struct Reply {
    /// The echoed id, if it is an int or a string (xapi's emergency path answers id `0`).
    pub id: Option<Id>,
    /// The outcome.
    pub response: Response,
}

/// Encodes a call (client side).
///
/// ```
/// use xenapi::codec::jsonrpc::{self, Id, Version};
/// use xenapi::Value;
/// let body = jsonrpc::encode_call(Version::V2, &Id::Int(7), "VM.get_all", &[Value::from("OpaqueRef:s")]);
/// assert_eq!(
///     String::from_utf8(body).unwrap(),
///     r#"{"jsonrpc":"2.0","method":"VM.get_all","params":["OpaqueRef:s"],"id":7}"#
/// );
/// ```
pub fn encode_call(version: Version, id: &Id, method: &str, params: &[Value]) -> Vec<u8> {
    let mut out = String::with_capacity(96 + params.len() * 48);
    out.push('{');
    if version == Version::V2 {
        out.push_str("\"jsonrpc\":\"2.0\",");
    }
    out.push_str("\"method\":");
    write_string(&mut out, method);
    out.push_str(",\"params\":[");
    for (index, param) in params.iter().enumerate() {
        if index > 0 {
            out.push(',');
        }
        write_value(&mut out, param);
    }
    out.push_str("],\"id\":");
    write_id(&mut out, id);
    out.push('}');
    out.into_bytes()
}

/// Encodes a response exactly as xapi does (compact Yojson, member order as xapi's).
///
/// v1: `{"result":R,"error":null,"id":ID}` / `{"result":null,"error":["CODE",…],"id":ID}`;
/// v2: `{"jsonrpc":"2.0","result":R,"id":ID}` /
/// `{"jsonrpc":"2.0","error":{"code":1,"message":"CODE","data":[…]},"id":ID}`.
pub fn encode_response(version: Version, id: &Id, response: &Response) -> Vec<u8> {
    let mut out = String::with_capacity(128);
    match (version, response) {
        (Version::V1, Response::Success(value)) => {
            out.push_str("{\"result\":");
            write_value(&mut out, value);
            out.push_str(",\"error\":null,\"id\":");
        }
        (Version::V1, Response::Failure(failure)) => {
            out.push_str("{\"result\":null,\"error\":");
            write_failure_array(&mut out, failure);
            out.push_str(",\"id\":");
        }
        (Version::V2, Response::Success(value)) => {
            out.push_str("{\"jsonrpc\":\"2.0\",\"result\":");
            write_value(&mut out, value);
            out.push_str(",\"id\":");
        }
        (Version::V2, Response::Failure(failure)) => {
            out.push_str("{\"jsonrpc\":\"2.0\",\"error\":{\"code\":1,\"message\":");
            write_string(&mut out, &failure.code);
            out.push_str(",\"data\":[");
            for (index, param) in failure.params.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                write_string(&mut out, param);
            }
            out.push_str("]},\"id\":");
        }
    }
    write_id(&mut out, id);
    out.push('}');
    out.into_bytes()
}

/// The shape xapi uses for an API error raised outside its dispatcher (e.g. a host in
/// emergency mode): v2-looking, but with the raw error array and id `0`.
pub fn encode_emergency_failure(failure: &Failure) -> Vec<u8> {
    let mut out = String::from("{\"jsonrpc\":\"2.0\",\"error\":");
    write_failure_array(&mut out, failure);
    out.push_str(",\"id\":0}");
    out.into_bytes()
}

/// Encodes one value as xapi's Yojson would.
pub fn encode_value(value: &Value) -> String {
    let mut out = String::new();
    write_value(&mut out, value);
    out
}

/// Decodes one JSON document into a [`Value`] (tolerant of `NaN`/`Infinity`).
pub fn decode_value(text: &[u8]) -> Result<Value, Error> {
    let mut parser = Parser {
        input: text,
        pos: 0,
        depth: 0,
        strict_utf8: false,
    };
    let value = parser.document()?;
    Ok(value)
}

/// Decodes a response (client side). Accepts `error` as xapi's v1 array, v2 object, or the
/// emergency-path array inside a v2 envelope.
pub fn decode_response(body: &[u8]) -> Result<Reply, Error> {
    let mut parser = Parser {
        input: body,
        pos: 0,
        depth: 0,
        strict_utf8: false,
    };
    let Value::Struct(members) = parser.document()? else {
        return Err(Error::Json {
            offset: 0,
            reason: "response is not an object".into(),
        });
    };
    let mut id = None;
    let mut result = None;
    let mut error = None;
    for (name, value) in members {
        match name.as_str() {
            "id" if id.is_none() => id = Some(value),
            "result" if result.is_none() => result = Some(value),
            "error" if error.is_none() => error = Some(value),
            _ => {}
        }
    }
    let id = match id {
        Some(Value::Int(number)) => Some(Id::Int(number)),
        Some(Value::String(text)) => Some(Id::String(text)),
        _ => None,
    };
    let response = match error {
        Some(Value::Array(items)) => Response::Failure(Failure::from_description(items)?),
        Some(Value::Struct(object)) => Response::Failure(failure_from_object(object)?),
        Some(Value::String(code)) => Response::Failure(Failure {
            code,
            params: Vec::new(),
        }),
        Some(Value::Nil) | None => match result {
            Some(value) => Response::Success(value),
            None => {
                return Err(Error::protocol(
                    "JSON-RPC response has neither result nor error",
                ));
            }
        },
        Some(other) => {
            return Err(Error::protocol(format!(
                "JSON-RPC error member is a {}",
                other.kind()
            )));
        }
    };
    Ok(Reply { id, response })
}

fn failure_from_object(object: Vec<(String, Value)>) -> Result<Failure, Error> {
    let mut message = None;
    let mut data = None;
    for (name, value) in object {
        match name.as_str() {
            "message" if message.is_none() => message = Some(value),
            "data" if data.is_none() => data = Some(value),
            _ => {}
        }
    }
    let Some(Value::String(code)) = message else {
        return Err(Error::protocol(
            "JSON-RPC error object without a string message",
        ));
    };
    let params = match data {
        Some(Value::Array(items)) => {
            let mut all = vec![Value::String(code)];
            all.extend(items);
            return Failure::from_description(all);
        }
        None | Some(Value::Nil) => Vec::new(),
        Some(other) => return Failure::from_description(vec![Value::String(code), other]),
    };
    Ok(Failure { code, params })
}

/// Decodes a call as xapi does (server side): `method` a string; `jsonrpc` absent (v1) or
/// exactly `"2.0"`; v1 `params` a required array; v2 `params` absent/`null` (none), an array,
/// or an object (one struct param); `id` required, an integer or a string. Anything else is
/// an error, which xapi answers with HTTP 500.
pub fn decode_call(body: &[u8]) -> Result<Call, Error> {
    let mut parser = Parser {
        input: body,
        pos: 0,
        depth: 0,
        strict_utf8: true,
    };
    let malformed = |reason: &str| Error::Json {
        offset: 0,
        reason: reason.to_owned(),
    };
    let Value::Struct(members) = parser.document()? else {
        return Err(malformed("request is not an object"));
    };
    let field = |wanted: &str| {
        members
            .iter()
            .find(|(name, _)| name == wanted)
            .map(|(_, value)| value)
    };
    let method = match field("method") {
        Some(Value::String(method)) => method.clone(),
        Some(_) => return Err(malformed("invalid field 'method'")),
        None => return Err(malformed("required field method is missing")),
    };
    let version = match field("jsonrpc") {
        None => Version::V1,
        Some(Value::String(text)) if text == "2.0" => Version::V2,
        Some(_) => return Err(malformed("invalid field 'jsonrpc'")),
    };
    let params = match (version, field("params")) {
        (Version::V1, Some(Value::Array(items))) => items.clone(),
        (Version::V1, None) => return Err(malformed("required field params is missing")),
        (Version::V2, None | Some(Value::Nil)) => Vec::new(),
        (Version::V2, Some(Value::Array(items))) => items.clone(),
        (Version::V2, Some(object @ Value::Struct(_))) => vec![object.clone()],
        _ => return Err(malformed("invalid field 'params'")),
    };
    let id = match field("id") {
        Some(Value::Int(number)) => Id::Int(*number),
        Some(Value::String(text)) => Id::String(text.clone()),
        _ => return Err(malformed("invalid field 'id'")),
    };
    Ok(Call {
        version,
        id,
        call: MethodCall { method, params },
    })
}

// ---------------------------------------------------------------------------------------------
// Writer (Yojson-compatible)

fn write_failure_array(out: &mut String, failure: &Failure) {
    out.push('[');
    write_string(out, &failure.code);
    for param in &failure.params {
        out.push(',');
        write_string(out, param);
    }
    out.push(']');
}

fn write_id(out: &mut String, id: &Id) {
    match id {
        Id::Int(number) => out.push_str(&number.to_string()),
        Id::String(text) => write_string(out, text),
    }
}

fn write_value(out: &mut String, value: &Value) {
    match value {
        Value::String(text) => write_string(out, text),
        Value::Int(number) => out.push_str(&number.to_string()),
        Value::Int32(number) => out.push_str(&number.to_string()),
        Value::Double(number) => out.push_str(&yojson_float(*number)),
        Value::Bool(flag) => out.push_str(if *flag { "true" } else { "false" }),
        Value::DateTime(date) => write_string(out, &date.to_string()),
        Value::Array(items) => {
            out.push('[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                write_value(out, item);
            }
            out.push(']');
        }
        Value::Struct(members) => {
            out.push('{');
            for (index, (name, item)) in members.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                write_string(out, name);
                out.push(':');
                write_value(out, item);
            }
            out.push('}');
        }
        Value::Base64(bytes) => write_string(
            out,
            &base64::engine::general_purpose::STANDARD.encode(bytes),
        ),
        Value::Nil => out.push_str("null"),
    }
}

/// Yojson's string escaping: `"` `\` and `\b \f \n \r \t` by name, other control characters
/// and DEL as `\u00xx` (lower-case hex), everything else (UTF-8 included) verbatim.
fn write_string(out: &mut String, text: &str) {
    out.push('"');
    let mut rest = text;
    while let Some(index) = rest.find(|c: char| c < ' ' || c == '"' || c == '\\' || c == '\u{7f}') {
        let (plain, tail) = rest.split_at(index);
        out.push_str(plain);
        let mut chars = tail.chars();
        match chars.next() {
            Some('"') => out.push_str("\\\""),
            Some('\\') => out.push_str("\\\\"),
            Some('\u{8}') => out.push_str("\\b"),
            Some('\u{c}') => out.push_str("\\f"),
            Some('\n') => out.push_str("\\n"),
            Some('\r') => out.push_str("\\r"),
            Some('\t') => out.push_str("\\t"),
            Some(control) => out.push_str(&format!("\\u{:04x}", u32::from(control))),
            None => {}
        }
        rest = chars.as_str();
    }
    out.push_str(rest);
    out.push('"');
}

// ---------------------------------------------------------------------------------------------
// Parser

struct Parser<'a> {
    input: &'a [u8],
    pos: usize,
    depth: usize,
    strict_utf8: bool,
}

impl<'a> Parser<'a> {
    fn error(&self, reason: impl Into<String>) -> Error {
        Error::Json {
            offset: self.pos,
            reason: reason.into(),
        }
    }

    fn peek(&self) -> Option<u8> {
        self.input.get(self.pos).copied()
    }

    fn rest(&self) -> &'a [u8] {
        self.input.get(self.pos..).unwrap_or_default()
    }

    fn advance(&mut self, count: usize) {
        self.pos = self.pos.saturating_add(count).min(self.input.len());
    }

    fn skip_space(&mut self) {
        let spaces = self
            .rest()
            .iter()
            .take_while(|byte| is_space(**byte))
            .count();
        self.advance(spaces);
    }

    fn document(&mut self) -> Result<Value, Error> {
        // A UTF-8 byte-order mark is tolerated.
        if self.rest().starts_with(b"\xef\xbb\xbf") {
            self.advance(3);
        }
        let value = self.value()?;
        self.skip_space();
        if self.pos < self.input.len() {
            return Err(self.error("trailing data after the document"));
        }
        Ok(value)
    }

    fn literal(&mut self, word: &[u8], value: Value) -> Result<Value, Error> {
        if self.rest().starts_with(word) {
            self.advance(word.len());
            Ok(value)
        } else {
            Err(self.error("invalid literal"))
        }
    }

    fn value(&mut self) -> Result<Value, Error> {
        self.skip_space();
        match self.peek() {
            None => Err(self.error("unexpected end of document")),
            Some(b'{') => self.object(),
            Some(b'[') => self.array(),
            Some(b'"') => self.string().map(Value::String),
            Some(b't') => self.literal(b"true", Value::Bool(true)),
            Some(b'f') => self.literal(b"false", Value::Bool(false)),
            Some(b'n') => self.literal(b"null", Value::Nil),
            Some(b'N') => self.literal(b"NaN", Value::Double(f64::NAN)),
            Some(b'I') => self.literal(b"Infinity", Value::Double(f64::INFINITY)),
            Some(b'-') if self.rest().starts_with(b"-Infinity") => {
                self.literal(b"-Infinity", Value::Double(f64::NEG_INFINITY))
            }
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(_) => Err(self.error("unexpected character")),
        }
    }

    fn enter(&mut self) -> Result<(), Error> {
        if self.depth >= MAX_DEPTH {
            return Err(Error::TooDeep { limit: MAX_DEPTH });
        }
        self.depth += 1;
        Ok(())
    }

    fn object(&mut self) -> Result<Value, Error> {
        self.enter()?;
        self.advance(1);
        let mut members = Vec::new();
        self.skip_space();
        if self.peek() == Some(b'}') {
            self.advance(1);
            self.depth -= 1;
            return Ok(Value::Struct(members));
        }
        loop {
            self.skip_space();
            if self.peek() != Some(b'"') {
                return Err(self.error("expected a member name"));
            }
            let name = self.string()?;
            self.skip_space();
            if self.peek() != Some(b':') {
                return Err(self.error("expected `:`"));
            }
            self.advance(1);
            let value = self.value()?;
            members.push((name, value));
            self.skip_space();
            match self.peek() {
                Some(b',') => self.advance(1),
                Some(b'}') => {
                    self.advance(1);
                    break;
                }
                _ => return Err(self.error("expected `,` or `}`")),
            }
        }
        self.depth -= 1;
        Ok(Value::Struct(members))
    }

    fn array(&mut self) -> Result<Value, Error> {
        self.enter()?;
        self.advance(1);
        let mut items = Vec::new();
        self.skip_space();
        if self.peek() == Some(b']') {
            self.advance(1);
            self.depth -= 1;
            return Ok(Value::Array(items));
        }
        loop {
            items.push(self.value()?);
            self.skip_space();
            match self.peek() {
                Some(b',') => self.advance(1),
                Some(b']') => {
                    self.advance(1);
                    break;
                }
                _ => return Err(self.error("expected `,` or `]`")),
            }
        }
        self.depth -= 1;
        Ok(Value::Array(items))
    }

    fn number(&mut self) -> Result<Value, Error> {
        let start = self.pos;
        let rest = self.rest();
        let length = rest
            .iter()
            .take_while(|byte| {
                byte.is_ascii_digit() || matches!(byte, b'-' | b'+' | b'.' | b'e' | b'E')
            })
            .count();
        let text = rest.get(..length).unwrap_or_default();
        self.advance(length);
        let text = std::str::from_utf8(text).map_err(|_| self.error("invalid number"))?;
        let integral = !text.contains(['.', 'e', 'E']);
        if integral && let Ok(number) = text.parse::<i64>() {
            return Ok(Value::Int(number));
        }
        // Digits, then an optional fraction and exponent: checked here so that forms like
        // `1.` or `--1` are refused rather than left to a more permissive float parser.
        let well_formed = {
            let body = text.strip_prefix('-').unwrap_or(text);
            let (mantissa, exponent) = match body.find(['e', 'E']) {
                Some(index) => (body.get(..index).unwrap_or_default(), body.get(index + 1..)),
                None => (body, None),
            };
            let (whole, fraction) = match mantissa.split_once('.') {
                Some((whole, fraction)) => (whole, Some(fraction)),
                None => (mantissa, None),
            };
            let digits =
                |part: &str| !part.is_empty() && part.bytes().all(|byte| byte.is_ascii_digit());
            digits(whole)
                && fraction.is_none_or(digits)
                && exponent.is_none_or(|exponent| {
                    digits(exponent.strip_prefix(['+', '-']).unwrap_or(exponent))
                })
        };
        match text.parse::<f64>() {
            Ok(number) if well_formed => Ok(Value::Double(number)),
            _ => Err(Error::Json {
                offset: start,
                reason: "invalid number".into(),
            }),
        }
    }

    fn string(&mut self) -> Result<String, Error> {
        let start = self.pos;
        self.advance(1);
        let mut bytes: Vec<u8> = Vec::new();
        loop {
            let rest = self.rest();
            let run = rest
                .iter()
                .take_while(|byte| !matches!(byte, b'"' | b'\\'))
                .count();
            bytes.extend_from_slice(rest.get(..run).unwrap_or_default());
            self.advance(run);
            match self.peek() {
                Some(b'"') => {
                    self.advance(1);
                    break;
                }
                Some(b'\\') => {
                    self.advance(1);
                    let escape = self
                        .peek()
                        .ok_or_else(|| self.error("unterminated escape"))?;
                    self.advance(1);
                    let decoded = match escape {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => self.unicode_escape()?,
                        _ => return Err(self.error("invalid escape")),
                    };
                    let mut buffer = [0u8; 4];
                    bytes.extend_from_slice(decoded.encode_utf8(&mut buffer).as_bytes());
                }
                _ => {
                    return Err(Error::Json {
                        offset: start,
                        reason: "unterminated string".into(),
                    });
                }
            }
        }
        match String::from_utf8(bytes) {
            Ok(text) => Ok(text),
            Err(_) if self.strict_utf8 => Err(Error::Json {
                offset: start,
                reason: "invalid UTF-8 in string".into(),
            }),
            Err(error) => Ok(String::from_utf8_lossy(error.as_bytes()).into_owned()),
        }
    }

    fn hex4(&mut self) -> Result<u32, Error> {
        let digits = self
            .rest()
            .get(..4)
            .ok_or_else(|| self.error("short \\u escape"))?;
        let text = std::str::from_utf8(digits).map_err(|_| self.error("invalid \\u escape"))?;
        let code = u32::from_str_radix(text, 16).map_err(|_| self.error("invalid \\u escape"))?;
        self.advance(4);
        Ok(code)
    }

    /// `\uXXXX`, joining surrogate pairs; a lone surrogate becomes U+FFFD.
    fn unicode_escape(&mut self) -> Result<char, Error> {
        let first = self.hex4()?;
        if (0xD800..0xDC00).contains(&first) && self.rest().starts_with(b"\\u") {
            let save = self.pos;
            self.advance(2);
            let second = self.hex4()?;
            if (0xDC00..0xE000).contains(&second) {
                let combined = 0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00);
                return Ok(char::from_u32(combined).unwrap_or(char::REPLACEMENT_CHARACTER));
            }
            self.pos = save;
        }
        Ok(char::from_u32(first).unwrap_or(char::REPLACEMENT_CHARACTER))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v2_examples_from_the_spec() {
        // Spec §1.3 v2 request, success and failure.
        let request = br#"{"jsonrpc":"2.0","method":"VM.get_record","params":["OpaqueRef:0b0d6f5c","OpaqueRef:7a1e"],"id":7}"#;
        let call = decode_call(request).unwrap();
        assert_eq!(call.version, Version::V2);
        assert_eq!(call.id, Id::Int(7));
        assert_eq!(call.call.method, "VM.get_record");
        assert_eq!(
            encode_call(Version::V2, &Id::Int(7), "VM.get_record", &call.call.params),
            request.to_vec()
        );

        let success = r#"{"jsonrpc":"2.0","result":{"uuid":"u","name_label":"web01","power_state":"Running","VCPUs_max":2,"memory_static_max":4294967296,"is_a_template":false,"other_config":{"mac_seed":"m"},"VBDs":["OpaqueRef:1"],"snapshot_time":"19700101T00:00:00Z","HVM_shadow_multiplier":1.0},"id":7}"#;
        let reply = decode_response(success.as_bytes()).unwrap();
        assert_eq!(reply.id, Some(Id::Int(7)));
        let Response::Success(record) = &reply.response else {
            panic!("not a success")
        };
        assert_eq!(
            record.get("memory_static_max"),
            Some(&Value::Int(4_294_967_296))
        );
        assert_eq!(
            record.get("HVM_shadow_multiplier"),
            Some(&Value::Double(1.0))
        );
        // The server-side encoder writes the same bytes back.
        assert_eq!(
            String::from_utf8(encode_response(Version::V2, &Id::Int(7), &reply.response)).unwrap(),
            success
        );

        let failure = r#"{"jsonrpc":"2.0","error":{"code":1,"message":"SESSION_INVALID","data":["OpaqueRef:0b0d6f5c"]},"id":7}"#;
        let reply = decode_response(failure.as_bytes()).unwrap();
        assert_eq!(
            reply.response,
            Response::Failure(Failure::new("SESSION_INVALID", ["OpaqueRef:0b0d6f5c"]))
        );
        assert_eq!(
            String::from_utf8(encode_response(Version::V2, &Id::Int(7), &reply.response)).unwrap(),
            failure
        );
    }

    #[test]
    fn v1_shapes() {
        // Spec §1.3 v1 failure, string id echoed.
        let failure =
            r#"{"result":null,"error":["HANDLE_INVALID","VM","OpaqueRef:7a1e"],"id":"c-12"}"#;
        let reply = decode_response(failure.as_bytes()).unwrap();
        assert_eq!(reply.id, Some(Id::String("c-12".into())));
        assert_eq!(
            String::from_utf8(encode_response(
                Version::V1,
                &Id::String("c-12".into()),
                &reply.response
            ))
            .unwrap(),
            failure
        );
        let success = encode_response(Version::V1, &Id::Int(3), &Response::Success(Value::void()));
        assert_eq!(
            String::from_utf8(success.clone()).unwrap(),
            r#"{"result":"","error":null,"id":3}"#
        );
        assert_eq!(
            decode_response(&success).unwrap().response,
            Response::Success(Value::void())
        );
    }

    #[test]
    fn emergency_shape() {
        let body = encode_emergency_failure(&Failure::new(
            "HOST_IN_EMERGENCY_MODE",
            Vec::<String>::new(),
        ));
        assert_eq!(
            String::from_utf8(body.clone()).unwrap(),
            r#"{"jsonrpc":"2.0","error":["HOST_IN_EMERGENCY_MODE"],"id":0}"#
        );
        let reply = decode_response(&body).unwrap();
        assert_eq!(reply.id, Some(Id::Int(0)));
        assert_eq!(
            reply.response,
            Response::Failure(Failure::new("HOST_IN_EMERGENCY_MODE", Vec::<String>::new()))
        );
    }

    #[test]
    fn non_finite_floats() {
        let body = br#"{"jsonrpc":"2.0","result":{"a":NaN,"b":Infinity,"c":-Infinity,"d":1e3,"e":-0.5},"id":1}"#;
        let Response::Success(value) = decode_response(body).unwrap().response else {
            panic!("not a success")
        };
        assert!(matches!(value.get("a"), Some(Value::Double(x)) if x.is_nan()));
        assert_eq!(value.get("b"), Some(&Value::Double(f64::INFINITY)));
        assert_eq!(value.get("c"), Some(&Value::Double(f64::NEG_INFINITY)));
        assert_eq!(value.get("d"), Some(&Value::Double(1000.0)));
        assert_eq!(
            encode_value(&value),
            r#"{"a":NaN,"b":Infinity,"c":-Infinity,"d":1000.0,"e":-0.5}"#
        );
    }

    #[test]
    fn string_escapes() {
        let text = "a\"b\\c\u{8}\u{c}\n\r\t\u{1}\u{7f}é/";
        let encoded = encode_value(&Value::from(text));
        assert_eq!(encoded, "\"a\\\"b\\\\c\\b\\f\\n\\r\\t\\u0001\\u007fé/\"");
        assert_eq!(decode_value(encoded.as_bytes()).unwrap(), Value::from(text));
        assert_eq!(
            decode_value(br#""\ud83d\ude00\/""#).unwrap(),
            Value::from("😀/")
        );
    }

    #[test]
    fn server_call_rules() {
        // v2 without params, with object params; v1 requires params and id.
        let call = decode_call(br#"{"jsonrpc":"2.0","method":"m","id":"x"}"#).unwrap();
        assert!(call.call.params.is_empty());
        let call =
            decode_call(br#"{"jsonrpc":"2.0","method":"m","params":{"a":1},"id":1}"#).unwrap();
        assert_eq!(
            call.call.params,
            vec![Value::structure([("a", Value::Int(1))])]
        );
        let call = decode_call(br#"{"method":"m","params":[],"id":1}"#).unwrap();
        assert_eq!(call.version, Version::V1);
        for bad in [
            &br#"{"method":"m","id":1}"#[..],
            br#"{"jsonrpc":"2.0","method":"m","params":[]}"#,
            br#"{"jsonrpc":"2.0","method":"m","params":[],"id":null}"#,
            br#"{"jsonrpc":"2.0","method":"m","params":[],"id":1.5}"#,
            br#"{"jsonrpc":"1.0","method":"m","params":[],"id":1}"#,
            br#"{"jsonrpc":"2.0","method":3,"params":[],"id":1}"#,
            br#"{"jsonrpc":"2.0","method":"m","params":"x","id":1}"#,
            br#"[1]"#,
            br#"{"method":"m","params":[],"id":1} x"#,
            b"{\"method\":\"\xff\",\"params\":[],\"id\":1}",
        ] {
            assert!(
                decode_call(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn malformed_json() {
        for bad in [
            "",
            "{",
            "[1,]",
            "{\"a\" 1}",
            "01x",
            "1.",
            "--1",
            "\"abc",
            "tru",
            "{\"a\":1,}",
            "\"\\x\"",
        ] {
            assert!(decode_value(bad.as_bytes()).is_err(), "{bad}");
        }
        let mut deep = String::new();
        for _ in 0..=MAX_DEPTH {
            deep.push('[');
        }
        assert!(matches!(
            decode_value(deep.as_bytes()),
            Err(Error::TooDeep { .. })
        ));
    }

    #[test]
    fn big_ints_fall_back_to_double() {
        assert_eq!(
            decode_value(b"18446744073709551615").unwrap(),
            Value::Double(18_446_744_073_709_551_615.0)
        );
        assert_eq!(
            decode_value(b"-9223372036854775808").unwrap(),
            Value::Int(i64::MIN)
        );
    }
}
