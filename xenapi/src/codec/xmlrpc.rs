//! XML-RPC as xapi speaks it (ocaml-rpc `xmlrpc.ml`, non-strict mode).
//!
//! Client side: [`encode_call`], [`decode_response`], [`decode_task_result`].
//! Server side: [`decode_call`], [`encode_response`], [`encode_task_result`],
//! [`encode_bare_response`].
//!
//! Two output styles ([`Style`]): xapi's (untyped strings and int64s, unescaped member names,
//! `%.16g` doubles) and a client style that types everything (`<string>`, `<i8>`) and writes
//! doubles that read back exactly.

use base64::Engine as _;

use super::float::{exact_xml_double, parse_float, xapi_xml_double};
use super::{Failure, MAX_DEPTH, MethodCall, Response, is_space};
use crate::datetime::DateTime;
use crate::error::Error;
use crate::value::Value;

/// Which side's conventions an encoder follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    /// What xapi emits: `<value>text</value>` for strings and int64s, `<i4>` for Int32,
    /// `%.16g` doubles, struct member names written unescaped (as ocaml-rpc does).
    Xapi,
    /// What a careful client sends: `<string>`, `<i8>`, exact doubles, escaped names.
    Client,
}

const DECLARATION: &str = "<?xml version=\"1.0\"?>";

/// Encodes a method call (client style).
///
/// ```
/// use xenapi::codec::xmlrpc;
/// use xenapi::Value;
/// let body = xmlrpc::encode_call("session.logout", &[Value::from("OpaqueRef:abc")]);
/// assert_eq!(
///     String::from_utf8(body).unwrap(),
///     "<?xml version=\"1.0\"?><methodCall><methodName>session.logout</methodName><params>\
///      <param><value><string>OpaqueRef:abc</string></value></param></params></methodCall>"
/// );
/// ```
pub fn encode_call(method: &str, params: &[Value]) -> Vec<u8> {
    let mut out = String::with_capacity(128 + params.len() * 64);
    out.push_str(DECLARATION);
    out.push_str("<methodCall><methodName>");
    escape_into(&mut out, method, Style::Client);
    out.push_str("</methodName><params>");
    for param in params {
        out.push_str("<param>");
        write_value(&mut out, param, Style::Client);
        out.push_str("</param>");
    }
    out.push_str("</params></methodCall>");
    out.into_bytes()
}

/// Encodes a response exactly as xapi does: one line, the XML declaration, a struct with
/// `Status` first, then `Value` or `ErrorDescription`.
pub fn encode_response(response: &Response) -> Vec<u8> {
    let mut out = String::with_capacity(256);
    out.push_str(DECLARATION);
    out.push_str("<methodResponse><params><param><value><struct><member><name>Status</name>");
    match response {
        Response::Success(value) => {
            out.push_str("<value>Success</value></member><member><name>Value</name>");
            write_value(&mut out, value, Style::Xapi);
        }
        Response::Failure(failure) => {
            out.push_str("<value>Failure</value></member><member><name>ErrorDescription</name><value><array><data>");
            write_string_value(&mut out, &failure.code, Style::Xapi);
            for param in &failure.params {
                write_string_value(&mut out, param, Style::Xapi);
            }
            out.push_str("</data></array></value>");
        }
    }
    out.push_str("</member></struct></value></param></params></methodResponse>");
    out.into_bytes()
}

/// Encodes a response whose value is not wrapped in a `Status` struct (xapi does this for
/// `system.listMethods`).
pub fn encode_bare_response(value: &Value) -> Vec<u8> {
    let mut out = String::with_capacity(256);
    out.push_str(DECLARATION);
    out.push_str("<methodResponse><params><param>");
    write_value(&mut out, value, Style::Xapi);
    out.push_str("</param></params></methodResponse>");
    out.into_bytes()
}

/// Encodes one value as a fragment (`<value>…</value>`) in the given style.
pub fn encode_value(value: &Value, style: Style) -> String {
    let mut out = String::new();
    write_value(&mut out, value, style);
    out
}

/// The `task.result` text xapi stores for an async result: the xapi-style fragment of the
/// value (`<value>OpaqueRef:…</value>`; `<value></value>` for void).
pub fn encode_task_result(value: &Value) -> String {
    encode_value(value, Style::Xapi)
}

/// Decodes a response body (client side).
///
/// `Status: Success` gives [`Response::Success`] with `Value`; `Status: Failure` gives
/// [`Response::Failure`] from `ErrorDescription`; a value without a `Status` member (e.g.
/// `system.listMethods`) is a bare success; an XML-RPC `<fault>` (never sent by xapi) becomes
/// a failure with code `fault` and params `[faultCode, faultString]`, as ocaml-rpc reads it.
pub fn decode_response(body: &[u8]) -> Result<Response, Error> {
    let mut parser = Parser::new(body, Utf8::Lossy);
    parser.skip_misc()?;
    parser.expect_open("methodResponse")?;
    parser.skip_misc()?;
    let (tag, self_closing) = parser.open_tag()?;
    if self_closing {
        return Err(parser.error("empty methodResponse child"));
    }
    let response = match tag {
        b"params" => {
            if parser.expect_open("param")? {
                return Err(parser.error("empty <param>"));
            }
            let value = parser.value()?;
            parser.close_tag("param")?;
            parser.close_tag("params")?;
            interpret_envelope(value)?
        }
        b"fault" => {
            let value = parser.value()?;
            parser.close_tag("fault")?;
            let code = value.get("faultCode").cloned().unwrap_or(Value::Nil);
            let message = value.get("faultString").cloned().unwrap_or(Value::Nil);
            Response::Failure(Failure::from_description(vec![
                Value::from("fault"),
                code,
                message,
            ])?)
        }
        other => {
            return Err(parser.error(format!(
                "expected <params> or <fault>, found <{}>",
                show(other)
            )));
        }
    };
    parser.close_tag("methodResponse")?;
    parser.finish()?;
    Ok(response)
}

fn interpret_envelope(value: Value) -> Result<Response, Error> {
    let Value::Struct(members) = value else {
        return Ok(Response::Success(value));
    };
    let status = members
        .iter()
        .find(|(name, _)| name == "Status")
        .and_then(|(_, status)| status.as_str());
    match status {
        Some("Success") => {
            if let Some((_, result)) = members.into_iter().find(|(name, _)| name == "Value") {
                return Ok(Response::Success(result));
            }
            Err(Error::protocol("Status Success without Value"))
        }
        Some("Failure") => match members
            .into_iter()
            .find(|(name, _)| name == "ErrorDescription")
        {
            Some((_, Value::Array(items))) => {
                Ok(Response::Failure(Failure::from_description(items)?))
            }
            Some(_) => Err(Error::protocol("ErrorDescription is not an array")),
            None => Err(Error::protocol("Status Failure without ErrorDescription")),
        },
        _ => Ok(Response::Success(Value::Struct(members))),
    }
}

/// Decodes a task `result`: `""` means "no result", anything else is one XML-RPC value
/// fragment (xapi stores it this way on both transports).
pub fn decode_task_result(text: &str) -> Result<Option<Value>, Error> {
    if text.bytes().all(is_space) {
        return Ok(None);
    }
    decode_value(text.as_bytes()).map(Some)
}

/// Decodes one `<value>…</value>` fragment.
pub fn decode_value(fragment: &[u8]) -> Result<Value, Error> {
    let mut parser = Parser::new(fragment, Utf8::Lossy);
    let value = parser.value()?;
    parser.finish()?;
    Ok(value)
}

/// Decodes a method call as xapi does (server side).
///
/// Lenient where xapi is: untyped or `<string>` strings, ints as `<i4>`/`<int>`/`<i8>` (and,
/// by the caller's schema, decimal strings), whitespace between tags, `<data/>`, comments.
/// Faithful where xapi is odd: `<boolean>` is true only for the text `1` (so `true` is
/// false). Invalid UTF-8 is refused. A `<params>` element is required, as in ocaml-rpc.
pub fn decode_call(body: &[u8]) -> Result<MethodCall, Error> {
    let mut parser = Parser::new(body, Utf8::Strict);
    parser.skip_misc()?;
    if parser.expect_open("methodCall")? {
        return Err(parser.error("empty <methodCall/>"));
    }
    let method = if parser.expect_open("methodName")? {
        String::new()
    } else {
        let name = parser.text()?;
        parser.close_tag("methodName")?;
        name
    };
    let mut params = Vec::new();
    if !parser.expect_open("params")? {
        loop {
            parser.skip_misc()?;
            if parser.at_close() {
                break;
            }
            if parser.expect_open("param")? {
                return Err(parser.error("empty <param/>"));
            }
            params.push(parser.value()?);
            parser.close_tag("param")?;
        }
        parser.close_tag("params")?;
    }
    parser.close_tag("methodCall")?;
    parser.finish()?;
    Ok(MethodCall { method, params })
}

// ---------------------------------------------------------------------------------------------
// Writer

fn write_value(out: &mut String, value: &Value, style: Style) {
    match value {
        Value::String(text) => write_string_value(out, text, style),
        Value::Int(number) => match style {
            Style::Xapi => {
                out.push_str("<value>");
                out.push_str(&number.to_string());
                out.push_str("</value>");
            }
            Style::Client => {
                out.push_str("<value><i8>");
                out.push_str(&number.to_string());
                out.push_str("</i8></value>");
            }
        },
        Value::Int32(number) => {
            out.push_str("<value><i4>");
            out.push_str(&number.to_string());
            out.push_str("</i4></value>");
        }
        Value::Double(number) => {
            out.push_str("<value><double>");
            out.push_str(&match style {
                Style::Xapi => xapi_xml_double(*number),
                Style::Client => exact_xml_double(*number),
            });
            out.push_str("</double></value>");
        }
        Value::Bool(flag) => out.push_str(if *flag {
            "<value><boolean>1</boolean></value>"
        } else {
            "<value><boolean>0</boolean></value>"
        }),
        Value::DateTime(date) => {
            out.push_str("<value><dateTime.iso8601>");
            out.push_str(&date.to_string());
            out.push_str("</dateTime.iso8601></value>");
        }
        Value::Array(items) => {
            out.push_str("<value><array><data>");
            for item in items {
                write_value(out, item, style);
            }
            out.push_str("</data></array></value>");
        }
        Value::Struct(members) => {
            out.push_str("<value><struct>");
            for (name, item) in members {
                out.push_str("<member><name>");
                match style {
                    // ocaml-rpc writes member names verbatim (a key holding `<` or `&` yields
                    // malformed XML on a real host); reproduce it.
                    Style::Xapi => out.push_str(name),
                    Style::Client => escape_into(out, name, style),
                }
                out.push_str("</name>");
                write_value(out, item, style);
                out.push_str("</member>");
            }
            out.push_str("</struct></value>");
        }
        Value::Base64(bytes) => {
            out.push_str("<value><base64>");
            out.push_str(&base64::engine::general_purpose::STANDARD.encode(bytes));
            out.push_str("</base64></value>");
        }
        Value::Nil => out.push_str("<value><nil/></value>"),
    }
}

fn write_string_value(out: &mut String, text: &str, style: Style) {
    match style {
        Style::Xapi => {
            out.push_str("<value>");
            escape_into(out, text, style);
            out.push_str("</value>");
        }
        Style::Client => {
            out.push_str("<value><string>");
            escape_into(out, text, style);
            out.push_str("</string></value>");
        }
    }
}

/// Escapes `& < > "` and drops control characters other than TAB, LF and CR, which XML 1.0
/// cannot carry at all (xapi drops them the same way).
///
/// A client also writes CR as `&#13;`: XML parsers (xapi's xmlm included) turn a raw CR into LF.
fn escape_into(out: &mut String, text: &str, style: Style) {
    let mut rest = text;
    while let Some(index) = rest.find(|c: char| {
        matches!(c, '&' | '<' | '>' | '"')
            || (c < ' ' && !matches!(c, '\t' | '\n' | '\r'))
            || (c == '\r' && style == Style::Client)
    }) {
        let (plain, tail) = rest.split_at(index);
        out.push_str(plain);
        let mut chars = tail.chars();
        match chars.next() {
            Some('&') => out.push_str("&amp;"),
            Some('<') => out.push_str("&lt;"),
            Some('>') => out.push_str("&gt;"),
            Some('"') => out.push_str("&quot;"),
            Some('\r') => out.push_str("&#13;"),
            _ => {}
        }
        rest = chars.as_str();
    }
    out.push_str(rest);
}

// ---------------------------------------------------------------------------------------------
// Parser: a small recursive-descent reader of the XML subset XML-RPC uses (elements, text,
// entity and character references, CDATA, comments, processing instructions; attributes are
// skipped; DOCTYPE is refused).

#[derive(Clone, Copy, PartialEq, Eq)]
enum Utf8 {
    /// Server side: invalid UTF-8 is an error.
    Strict,
    /// Client side: invalid sequences become U+FFFD so one odd byte in a VM description does
    /// not fail a whole `get_all_records`.
    Lossy,
}

struct Parser<'a> {
    input: &'a [u8],
    pos: usize,
    depth: usize,
    utf8: Utf8,
}

fn show(bytes: &[u8]) -> String {
    crate::datetime::truncate_for_error(&String::from_utf8_lossy(bytes))
}

impl<'a> Parser<'a> {
    fn new(input: &'a [u8], utf8: Utf8) -> Parser<'a> {
        Parser {
            input,
            pos: 0,
            depth: 0,
            utf8,
        }
    }

    fn error(&self, reason: impl Into<String>) -> Error {
        Error::Xml {
            offset: self.pos,
            reason: reason.into(),
        }
    }

    fn rest(&self) -> &'a [u8] {
        self.input.get(self.pos..).unwrap_or_default()
    }

    fn starts_with(&self, prefix: &[u8]) -> bool {
        self.rest().starts_with(prefix)
    }

    fn advance(&mut self, count: usize) {
        self.pos = self.pos.saturating_add(count).min(self.input.len());
    }

    /// Moves past the next occurrence of `terminator`, or fails.
    fn skip_past(&mut self, terminator: &[u8], what: &str) -> Result<(), Error> {
        match find(self.rest(), terminator) {
            Some(index) => {
                self.advance(index + terminator.len());
                Ok(())
            }
            None => Err(self.error(format!("unterminated {what}"))),
        }
    }

    /// Skips whitespace, comments and processing instructions (the XML declaration).
    fn skip_misc(&mut self) -> Result<(), Error> {
        loop {
            let spaces = self
                .rest()
                .iter()
                .take_while(|byte| is_space(**byte))
                .count();
            self.advance(spaces);
            // Common case first: a tag (or text) that is not `<?` / `<!`.
            if !matches!(self.rest(), [b'<', b'?' | b'!', ..]) {
                return Ok(());
            }
            if self.starts_with(b"<?") {
                self.skip_past(b"?>", "processing instruction")?;
            } else if self.starts_with(b"<!--") {
                self.skip_past(b"-->", "comment")?;
            } else if self.starts_with(b"<!") && !self.starts_with(b"<![CDATA[") {
                return Err(self.error("DOCTYPE and declarations are not accepted"));
            } else {
                return Ok(());
            }
        }
    }

    fn at_close(&self) -> bool {
        self.starts_with(b"</")
    }

    /// Reads `<name attr="...">` or `<name/>`; returns the name and whether it self-closed.
    fn open_tag(&mut self) -> Result<(&'a [u8], bool), Error> {
        self.skip_misc()?;
        if !self.starts_with(b"<") || self.at_close() {
            return Err(self.error("expected an opening tag"));
        }
        self.advance(1);
        let rest = self.rest();
        let name_len = rest
            .iter()
            .take_while(|byte| !is_space(**byte) && !matches!(byte, b'>' | b'/'))
            .count();
        let name = rest.get(..name_len).unwrap_or_default();
        if name.is_empty() {
            return Err(self.error("empty tag name"));
        }
        self.advance(name_len);
        // Attributes: skip to the closing `>`, honouring quotes.
        let mut quote: Option<u8> = None;
        loop {
            let Some(&byte) = self.rest().first() else {
                return Err(self.error("unterminated tag"));
            };
            self.advance(1);
            match (quote, byte) {
                (Some(open), _) if byte == open => quote = None,
                (Some(_), _) => {}
                (None, b'"' | b'\'') => quote = Some(byte),
                (None, b'>') => return Ok((name, false)),
                (None, b'/') if self.starts_with(b">") => {
                    self.advance(1);
                    return Ok((name, true));
                }
                (None, b'<') => return Err(self.error("`<` inside a tag")),
                (None, _) => {}
            }
        }
    }

    /// Opens the named tag; returns whether it self-closed.
    fn expect_open(&mut self, wanted: &str) -> Result<bool, Error> {
        let start = self.pos;
        let (name, self_closing) = self.open_tag()?;
        if name != wanted.as_bytes() {
            self.pos = start;
            return Err(self.error(format!("expected <{wanted}>, found <{}>", show(name))));
        }
        Ok(self_closing)
    }

    /// Reads `</name>`, after optional whitespace.
    fn close_tag(&mut self, wanted: &str) -> Result<(), Error> {
        self.skip_misc()?;
        if !self.at_close() {
            return Err(self.error(format!("expected </{wanted}>")));
        }
        self.advance(2);
        if !self.starts_with(wanted.as_bytes()) {
            return Err(self.error(format!("expected </{wanted}>")));
        }
        self.advance(wanted.len());
        let spaces = self
            .rest()
            .iter()
            .take_while(|byte| is_space(**byte))
            .count();
        self.advance(spaces);
        if !self.starts_with(b">") {
            return Err(self.error(format!("expected </{wanted}>")));
        }
        self.advance(1);
        Ok(())
    }

    /// Reads character data up to the next tag: entities decoded, CDATA and comments folded in.
    fn text(&mut self) -> Result<String, Error> {
        // Fast path, nearly every text: one plain run up to a tag.
        let rest = self.rest();
        let run = rest
            .iter()
            .take_while(|byte| !matches!(byte, b'<' | b'&' | b'\r'))
            .count();
        let special = |tail: &[u8]| {
            tail.starts_with(b"<![CDATA[") || tail.starts_with(b"<!--") || tail.starts_with(b"<?")
        };
        if let (Some(plain), Some(tail)) = (rest.get(..run), rest.get(run..))
            && tail.starts_with(b"<")
            && !special(tail)
        {
            let text = self.decode_utf8(plain.to_vec())?;
            self.advance(run);
            return Ok(text);
        }
        let mut bytes: Vec<u8> = Vec::new();
        loop {
            let rest = self.rest();
            let run = rest
                .iter()
                .take_while(|byte| !matches!(byte, b'<' | b'&'))
                .count();
            push_normalising_newlines(&mut bytes, rest.get(..run).unwrap_or_default());
            self.advance(run);
            if self.starts_with(b"&") {
                self.entity(&mut bytes)?;
            } else if self.starts_with(b"<![CDATA[") {
                self.advance(9);
                let rest = self.rest();
                let Some(end) = find(rest, b"]]>") else {
                    return Err(self.error("unterminated CDATA"));
                };
                push_normalising_newlines(&mut bytes, rest.get(..end).unwrap_or_default());
                self.advance(end + 3);
            } else if self.starts_with(b"<!--") {
                self.skip_past(b"-->", "comment")?;
            } else if self.starts_with(b"<?") {
                self.skip_past(b"?>", "processing instruction")?;
            } else if self.starts_with(b"<") {
                break;
            } else {
                return Err(self.error("unexpected end of document"));
            }
        }
        self.decode_utf8(bytes)
    }

    fn decode_utf8(&self, bytes: Vec<u8>) -> Result<String, Error> {
        match self.utf8 {
            Utf8::Strict => {
                String::from_utf8(bytes).map_err(|_| self.error("invalid UTF-8 in text"))
            }
            Utf8::Lossy => Ok(match String::from_utf8(bytes) {
                Ok(text) => text,
                Err(error) => String::from_utf8_lossy(error.as_bytes()).into_owned(),
            }),
        }
    }

    fn entity(&mut self, out: &mut Vec<u8>) -> Result<(), Error> {
        let rest = self.rest();
        let Some(end) = rest.iter().take(12).position(|byte| *byte == b';') else {
            return Err(self.error("unterminated entity reference"));
        };
        let name = rest.get(1..end).unwrap_or_default();
        let decoded: char = match name {
            b"amp" => '&',
            b"lt" => '<',
            b"gt" => '>',
            b"quot" => '"',
            b"apos" => '\'',
            _ => {
                let code = match name {
                    [b'#', b'x' | b'X', hex @ ..] => std::str::from_utf8(hex)
                        .ok()
                        .and_then(|hex| u32::from_str_radix(hex, 16).ok()),
                    [b'#', decimal @ ..] => std::str::from_utf8(decimal)
                        .ok()
                        .and_then(|decimal| decimal.parse().ok()),
                    _ => None,
                };
                match code.and_then(char::from_u32) {
                    Some(character) => character,
                    None => return Err(self.error(format!("unknown entity &{};", show(name)))),
                }
            }
        };
        let mut buffer = [0u8; 4];
        out.extend_from_slice(decoded.encode_utf8(&mut buffer).as_bytes());
        self.advance(end + 1);
        Ok(())
    }

    /// `<value>…</value>`: untyped text is a string; otherwise one typed element.
    fn value(&mut self) -> Result<Value, Error> {
        if self.expect_open("value")? {
            return Ok(Value::String(String::new()));
        }
        let text = self.text()?;
        if self.at_close() {
            self.close_tag("value")?;
            return Ok(Value::String(text));
        }
        if !text.bytes().all(is_space) {
            return Err(self.error("text before a typed value"));
        }
        let value = self.typed()?;
        self.close_tag("value")?;
        Ok(value)
    }

    fn typed(&mut self) -> Result<Value, Error> {
        let tag_start = self.pos;
        let (tag, self_closing) = self.open_tag()?;
        if self_closing {
            return match tag {
                b"string" | b"value" => Ok(Value::String(String::new())),
                b"array" => Ok(Value::Array(Vec::new())),
                b"struct" => Ok(Value::Struct(Vec::new())),
                b"nil" => Ok(Value::Nil),
                other => Err(self.error(format!("empty <{}/>", show(other)))),
            };
        }
        let value = match tag {
            b"int" | b"i4" | b"i8" => {
                let text = self.text()?;
                let number = text.parse().map_err(|_| Error::Xml {
                    offset: tag_start,
                    reason: "invalid integer".into(),
                })?;
                Value::Int(number)
            }
            b"boolean" => Value::Bool(self.text()? == "1"),
            b"double" => {
                let text = self.text()?;
                let number = parse_float(&text).ok_or_else(|| Error::Xml {
                    offset: tag_start,
                    reason: "invalid double".into(),
                })?;
                Value::Double(number)
            }
            b"string" => Value::String(self.text()?),
            b"dateTime.iso8601" => {
                let text = self.text()?;
                // An unparseable date stays a string: the caller's schema decides.
                match DateTime::parse(&text) {
                    Ok(date) => Value::DateTime(date),
                    Err(_) => Value::String(text),
                }
            }
            b"base64" => {
                let text = self.text()?;
                let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(compact)
                    .map_err(|_| Error::Xml {
                        offset: tag_start,
                        reason: "invalid base64".into(),
                    })?;
                Value::Base64(bytes)
            }
            b"nil" => {
                let text = self.text()?;
                if !text.bytes().all(is_space) {
                    return Err(self.error("text inside <nil>"));
                }
                Value::Nil
            }
            b"array" => {
                self.enter()?;
                let items = self.array_body()?;
                self.depth -= 1;
                Value::Array(items)
            }
            b"struct" => {
                self.enter()?;
                let members = self.struct_body()?;
                self.depth -= 1;
                Value::Struct(members)
            }
            other => return Err(self.error(format!("unknown value type <{}>", show(other)))),
        };
        let name = std::str::from_utf8(tag).unwrap_or_default();
        self.close_tag(name)?;
        Ok(value)
    }

    fn enter(&mut self) -> Result<(), Error> {
        if self.depth >= MAX_DEPTH {
            return Err(Error::TooDeep { limit: MAX_DEPTH });
        }
        self.depth += 1;
        Ok(())
    }

    fn array_body(&mut self) -> Result<Vec<Value>, Error> {
        let mut items = Vec::new();
        if self.expect_open("data")? {
            return Ok(items);
        }
        loop {
            self.skip_misc()?;
            if self.at_close() {
                break;
            }
            items.push(self.value()?);
        }
        self.close_tag("data")?;
        Ok(items)
    }

    fn struct_body(&mut self) -> Result<Vec<(String, Value)>, Error> {
        let mut members = Vec::new();
        loop {
            self.skip_misc()?;
            if self.at_close() {
                break;
            }
            if self.expect_open("member")? {
                return Err(self.error("empty <member/>"));
            }
            let name = if self.expect_open("name")? {
                String::new()
            } else {
                let name = self.text()?;
                self.close_tag("name")?;
                name
            };
            let value = self.value()?;
            self.close_tag("member")?;
            members.push((name, value));
        }
        Ok(members)
    }

    fn finish(&mut self) -> Result<(), Error> {
        self.skip_misc()?;
        if self.pos < self.input.len() {
            return Err(self.error("trailing data after the document"));
        }
        Ok(())
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// XML end-of-line handling (XML 1.0 §2.11, done by xmlm and expat alike): CRLF and a lone CR
/// in raw text read as LF. A CR written as `&#13;` is kept.
fn push_normalising_newlines(out: &mut Vec<u8>, raw: &[u8]) {
    if !raw.contains(&b'\r') {
        out.extend_from_slice(raw);
        return;
    }
    let mut previous_cr = false;
    for &byte in raw {
        match byte {
            b'\r' => out.push(b'\n'),
            b'\n' if previous_cr => {}
            other => out.push(other),
        }
        previous_cr = byte == b'\r';
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::string_map;

    #[test]
    fn login_call_from_the_spec() {
        // Spec §1.2 request, with the whitespace between tags the spec shows.
        let body = b"<?xml version=\"1.0\"?>\n<methodCall><methodName>session.login_with_password</methodName><params>\n<param><value><string>root</string></value></param>\n<param><value><string>s3cret</string></value></param>\n<param><value><string>1.0</string></value></param>\n<param><value><string>xenapi-rs</string></value></param>\n</params></methodCall>\n";
        let call = decode_call(body).unwrap();
        assert_eq!(call.method, "session.login_with_password");
        assert_eq!(
            call.params,
            vec![
                Value::from("root"),
                "s3cret".into(),
                "1.0".into(),
                "xenapi-rs".into()
            ]
        );
    }

    #[test]
    fn success_response_byte_exact() {
        // Spec §1.2 literal success response.
        let expected = "<?xml version=\"1.0\"?><methodResponse><params><param><value><struct><member><name>Status</name><value>Success</value></member><member><name>Value</name><value>OpaqueRef:0b0d6f5c-7d8a-4c36-9d35-2f3c1b6f0e11</value></member></struct></value></param></params></methodResponse>";
        let response = Response::Success(Value::from(
            "OpaqueRef:0b0d6f5c-7d8a-4c36-9d35-2f3c1b6f0e11",
        ));
        assert_eq!(
            String::from_utf8(encode_response(&response)).unwrap(),
            expected
        );
        assert_eq!(decode_response(expected.as_bytes()).unwrap(), response);
    }

    #[test]
    fn failure_response_byte_exact() {
        // Spec §1.2 literal failure response.
        let expected = "<?xml version=\"1.0\"?><methodResponse><params><param><value><struct><member><name>Status</name><value>Failure</value></member><member><name>ErrorDescription</name><value><array><data><value>HOST_IS_SLAVE</value><value>192.0.2.10</value></data></array></value></member></struct></value></param></params></methodResponse>";
        let response = Response::Failure(Failure::new("HOST_IS_SLAVE", ["192.0.2.10"]));
        assert_eq!(
            String::from_utf8(encode_response(&response)).unwrap(),
            expected
        );
        assert_eq!(decode_response(expected.as_bytes()).unwrap(), response);
    }

    #[test]
    fn vdi_record_fragment_from_the_spec() {
        // Spec §1.2 fragment of a VDI.get_record value (with its line breaks).
        let fragment = "<value><struct>\n<member><name>uuid</name><value>9f2b1c0e-3d4a-4b5c-8d6e-7f8091a2b3c4</value></member>\n<member><name>virtual_size</name><value>10737418240</value></member>\n<member><name>sharable</name><value><boolean>0</boolean></value></member>\n<member><name>type</name><value>user</value></member>\n<member><name>snapshot_time</name><value><dateTime.iso8601>19700101T00:00:00Z</dateTime.iso8601></value></member>\n<member><name>SR</name><value>OpaqueRef:5e1f</value></member>\n<member><name>VBDs</name><value><array><data></data></array></value></member>\n<member><name>sm_config</name><value><struct><member><name>vhd-parent</name><value>1c2d</value></member></struct></value></member>\n</struct></value>";
        let value = decode_value(fragment.as_bytes()).unwrap();
        assert_eq!(value.get("virtual_size"), Some(&Value::from("10737418240")));
        assert_eq!(value.get("sharable"), Some(&Value::Bool(false)));
        assert_eq!(
            value.get("snapshot_time"),
            Some(&Value::DateTime(DateTime::EPOCH))
        );
        assert_eq!(value.get("VBDs"), Some(&Value::Array(vec![])));
        assert_eq!(
            value.get("sm_config"),
            Some(&string_map([("vhd-parent", "1c2d")]))
        );
        // Re-encoding in xapi style gives xapi's whitespace-free form of the same fragment.
        let compact: String = fragment.split('\n').collect();
        assert_eq!(encode_value(&value, Style::Xapi), compact);
    }

    #[test]
    fn xapi_value_shapes() {
        let value = Value::structure([
            ("i", Value::Int(42)),
            ("c", Value::Int32(7)),
            ("d", Value::Double(1.0)),
            ("e", Value::Double(1.5e-7)),
            ("n", Value::Double(f64::NAN)),
            ("b", Value::Bool(true)),
            ("s", Value::from("a<b&\"c\">\u{1}\t")),
            ("v", Value::void()),
            ("a", Value::Array(vec![])),
        ]);
        assert_eq!(
            encode_value(&value, Style::Xapi),
            "<value><struct><member><name>i</name><value>42</value></member><member><name>c</name><value><i4>7</i4></value></member><member><name>d</name><value><double>1</double></value></member><member><name>e</name><value><double>1.5e-07</double></value></member><member><name>n</name><value><double>nan</double></value></member><member><name>b</name><value><boolean>1</boolean></value></member><member><name>s</name><value>a&lt;b&amp;&quot;c&quot;&gt;\t</value></member><member><name>v</name><value></value></member><member><name>a</name><value><array><data></data></array></value></member></struct></value>"
        );
    }

    #[test]
    fn task_results() {
        // Spec §2.3: task.result fragments.
        assert_eq!(decode_task_result("").unwrap(), None);
        assert_eq!(
            decode_task_result("<value></value>").unwrap(),
            Some(Value::void())
        );
        assert_eq!(
            decode_task_result("<value>OpaqueRef:2c1d</value>").unwrap(),
            Some(Value::from("OpaqueRef:2c1d"))
        );
        assert_eq!(
            decode_task_result(
                "<value><array><data><value>OpaqueRef:1</value></data></array></value>"
            )
            .unwrap(),
            Some(Value::Array(vec![Value::from("OpaqueRef:1")]))
        );
        assert_eq!(
            encode_task_result(&Value::from("OpaqueRef:2c1d")),
            "<value>OpaqueRef:2c1d</value>"
        );
        assert_eq!(encode_task_result(&Value::void()), "<value></value>");
        assert_eq!(
            decode_task_result("<value>a&amp;b</value>").unwrap(),
            Some(Value::from("a&b"))
        );
    }

    #[test]
    fn lenient_call_forms() {
        // Untyped strings, every int tag, <data/>, comments, CDATA, character references,
        // and xapi's boolean rule: only "1" is true.
        let body = br#"<?xml version='1.0'?><!-- hi --><methodCall><methodName>VM.set_x</methodName><params>
            <param><value>OpaqueRef:s</value></param>
            <param><value><i4>1</i4></value></param><param><value><int>2</int></value></param>
            <param><value><i8>-3</i8></value></param>
            <param><value><boolean>true</boolean></value></param>
            <param><value><boolean>1</boolean></value></param>
            <param><value><array><data/></array></value></param>
            <param><value><string><![CDATA[<x>]]>&#65;&#x42;</string></value></param>
            <param><value><nil/></value></param>
            <param><value/></param>
            <param><value> <struct> <member> <name>k</name> <value><double>inf</double></value> </member> </struct> </value></param>
        </params></methodCall>"#;
        let call = decode_call(body).unwrap();
        assert_eq!(call.params.len(), 11);
        assert_eq!(call.params.get(1), Some(&Value::Int(1)));
        assert_eq!(call.params.get(2), Some(&Value::Int(2)));
        assert_eq!(call.params.get(3), Some(&Value::Int(-3)));
        assert_eq!(call.params.get(4), Some(&Value::Bool(false)));
        assert_eq!(call.params.get(5), Some(&Value::Bool(true)));
        assert_eq!(call.params.get(6), Some(&Value::Array(vec![])));
        assert_eq!(call.params.get(7), Some(&Value::from("<x>AB")));
        assert_eq!(call.params.get(8), Some(&Value::Nil));
        assert_eq!(call.params.get(9), Some(&Value::void()));
        assert_eq!(
            call.params.get(10),
            Some(&Value::structure([("k", Value::Double(f64::INFINITY))]))
        );
    }

    #[test]
    fn rejects_malformed() {
        let cases: &[&[u8]] = &[
            b"",
            b"<methodCall>",
            b"<methodCall><methodName>x</methodName></methodCall>",
            b"<methodCall><methodName>x</methodName><params><param><value><int>x</int></value></param></params></methodCall>",
            b"<methodCall><methodName>x</methodName><params><param><value><foo>1</foo></value></param></params></methodCall>",
            b"<methodCall><methodName>x</methodName><params><param><value>a<i4>1</i4></value></param></params></methodCall>",
            b"<methodCall><methodName>x</methodName><params></params></methodCall>junk",
            b"<!DOCTYPE x><methodCall/>",
            b"<methodCall><methodName>\xff</methodName><params/></methodCall>",
            b"<methodCall><methodName>&bogus;</methodName><params/></methodCall>",
        ];
        for case in cases {
            assert!(
                decode_call(case).is_err(),
                "{}",
                String::from_utf8_lossy(case)
            );
        }
    }

    #[test]
    fn depth_is_bounded() {
        let mut body = String::from("<value>");
        for _ in 0..(MAX_DEPTH + 1) {
            body.push_str("<array><data><value>");
        }
        assert!(matches!(
            decode_value(body.as_bytes()),
            Err(Error::TooDeep { .. })
        ));
    }

    #[test]
    fn client_call_shapes() {
        let body = encode_call(
            "VM.f",
            &[
                Value::Int(5),
                Value::Double(0.1 + 0.2),
                Value::structure([("a&b", Value::Nil)]),
            ],
        );
        assert_eq!(
            String::from_utf8(body).unwrap(),
            "<?xml version=\"1.0\"?><methodCall><methodName>VM.f</methodName><params><param><value><i8>5</i8></value></param><param><value><double>0.30000000000000004</double></value></param><param><value><struct><member><name>a&amp;b</name><value><nil/></value></member></struct></value></param></params></methodCall>"
        );
    }

    #[test]
    fn fault_and_bare_responses() {
        let fault = b"<?xml version='1.0'?><methodResponse><fault><value><struct><member><name>faultCode</name><value><int>143</int></value></member><member><name>faultString</name><value><string>bad</string></value></member></struct></value></fault></methodResponse>";
        assert_eq!(
            decode_response(fault).unwrap(),
            Response::Failure(Failure::new("fault", ["143", "bad"]))
        );
        let bare = encode_bare_response(&Value::Array(vec!["VM.get_all".into()]));
        assert_eq!(
            decode_response(&bare).unwrap(),
            Response::Success(Value::Array(vec!["VM.get_all".into()]))
        );
    }
}
