//! XML-RPC values as ocaml-rpc reads and writes them for `ova.xml` (spec §13.1).
//!
//! The encoding keeps the one distinction xapi's decoders care about: an untyped
//! `<value>text</value>` and `<string>` are both [`Value::String`], while `<i4>`, `<i8>` and
//! `<int>` are [`Value::Int`]. xapi accepts an untyped value where it wants an int, but never an
//! `<i8>` where it wants a string; typed records ([`super::records`]) apply exactly that rule.

use std::fmt::Write as _;

use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event};

use crate::error::{Error, excerpt};

/// Deepest nesting of arrays and structs the parser accepts (ova.xml needs four levels).
const MAX_DEPTH: usize = 64;

/// One XML-RPC value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `<value>text</value>` (untyped) or `<value><string>text</string></value>`.
    String(String),
    /// `<i4>`, `<i8>` or `<int>`.
    Int(i64),
    /// `<boolean>0|1</boolean>`.
    Bool(bool),
    /// `<double>`.
    Double(f64),
    /// `<dateTime.iso8601>`, kept as text (`19700101T00:00:00Z`).
    DateTime(String),
    /// `<base64>`, kept as text.
    Base64(String),
    /// `<nil/>`.
    Nil,
    /// `<array><data>…</data></array>`.
    Array(Vec<Value>),
    /// `<struct>…</struct>`.
    Struct(Struct),
}

impl Value {
    /// The XML-RPC type name, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::String(_) => "a string",
            Self::Int(_) => "an int",
            Self::Bool(_) => "a boolean",
            Self::Double(_) => "a double",
            Self::DateTime(_) => "a dateTime",
            Self::Base64(_) => "base64",
            Self::Nil => "nil",
            Self::Array(_) => "an array",
            Self::Struct(_) => "a struct",
        }
    }

    /// The text of a string value.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::String(text) => Some(text),
            _ => None,
        }
    }

    /// The value as an int the way xapi decodes an `int64` field: `<i4>/<i8>/<int>` or an
    /// untyped value holding a decimal number.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Self::Int(number) => Some(*number),
            Self::String(text) => parse_int(text),
            _ => None,
        }
    }

    /// The members of a struct value.
    pub fn as_struct(&self) -> Option<&Struct> {
        match self {
            Self::Struct(members) => Some(members),
            _ => None,
        }
    }

    /// The items of an array value.
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Self::Array(items) => Some(items),
            _ => None,
        }
    }

    /// Parses one XML-RPC `<value>` document (an optional XML declaration, comments and
    /// whitespace around it are allowed).
    pub fn parse(xml: &[u8]) -> Result<Self, Error> {
        let text = std::str::from_utf8(xml).map_err(|utf8| Error::XmlRpc {
            position: u64::try_from(utf8.valid_up_to()).unwrap_or(u64::MAX),
            problem: "the document is not UTF-8".to_owned(),
        })?;
        Parser::new(text).document()
    }

    /// Serialises the value the way xapi does: no whitespace between tags, ints untyped.
    pub fn to_xml(&self) -> String {
        let mut out = String::new();
        self.write_xml(&mut out);
        out
    }

    /// Appends the serialised value to `out`.
    pub fn write_xml(&self, out: &mut String) {
        out.push_str("<value>");
        match self {
            Self::String(text) => escape_into(text, out),
            // Untyped, as ocaml-rpc's non-strict mode writes them and xapi reads them.
            Self::Int(number) => {
                let _ = write!(out, "{number}");
            }
            Self::Bool(flag) => {
                out.push_str(if *flag {
                    "<boolean>1</boolean>"
                } else {
                    "<boolean>0</boolean>"
                });
            }
            Self::Double(number) => {
                let _ = write!(out, "<double>{number:?}</double>");
            }
            Self::DateTime(text) => {
                out.push_str("<dateTime.iso8601>");
                escape_into(text, out);
                out.push_str("</dateTime.iso8601>");
            }
            Self::Base64(text) => {
                out.push_str("<base64>");
                escape_into(text, out);
                out.push_str("</base64>");
            }
            Self::Nil => out.push_str("<nil/>"),
            Self::Array(items) => {
                out.push_str("<array><data>");
                for item in items {
                    item.write_xml(out);
                }
                out.push_str("</data></array>");
            }
            Self::Struct(members) => members.write_xml(out),
        }
        out.push_str("</value>");
    }
}

impl From<&str> for Value {
    fn from(text: &str) -> Self {
        Self::String(text.to_owned())
    }
}

impl From<String> for Value {
    fn from(text: String) -> Self {
        Self::String(text)
    }
}

impl From<i64> for Value {
    fn from(number: i64) -> Self {
        Self::Int(number)
    }
}

impl From<bool> for Value {
    fn from(flag: bool) -> Self {
        Self::Bool(flag)
    }
}

impl From<Struct> for Value {
    fn from(members: Struct) -> Self {
        Self::Struct(members)
    }
}

/// An XML-RPC struct: members in file order (order and unknown members survive a round trip).
///
/// Lookups return the first member of a name, as OCaml's `List.assoc` does in xapi.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Struct {
    members: Vec<(String, Value)>,
}

impl Struct {
    /// An empty struct.
    pub fn new() -> Self {
        Self::default()
    }

    /// The first member named `name`.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.members
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value)
    }

    /// Sets `name`: replaces the first member of that name, or appends one.
    pub fn insert(&mut self, name: impl Into<String>, value: impl Into<Value>) {
        let name = name.into();
        let value = value.into();
        match self.members.iter_mut().find(|(key, _)| *key == name) {
            Some((_, slot)) => *slot = value,
            None => self.members.push((name, value)),
        }
    }

    /// Appends a member without looking for an existing one of the same name.
    pub fn push(&mut self, name: impl Into<String>, value: impl Into<Value>) {
        self.members.push((name.into(), value.into()));
    }

    /// Removes and returns the first member named `name`.
    pub fn remove(&mut self, name: &str) -> Option<Value> {
        let position = self.members.iter().position(|(key, _)| key == name)?;
        Some(self.members.remove(position).1)
    }

    /// The members in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.members
            .iter()
            .map(|(key, value)| (key.as_str(), value))
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// True when the struct has no member.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Appends every member of `other`.
    pub fn extend(&mut self, other: Struct) {
        self.members.extend(other.members);
    }

    fn write_xml(&self, out: &mut String) {
        out.push_str("<struct>");
        for (name, value) in &self.members {
            out.push_str("<member><name>");
            escape_into(name, out);
            out.push_str("</name>");
            value.write_xml(out);
            out.push_str("</member>");
        }
        out.push_str("</struct>");
    }
}

impl FromIterator<(String, Value)> for Struct {
    fn from_iter<I: IntoIterator<Item = (String, Value)>>(iter: I) -> Self {
        Self {
            members: iter.into_iter().collect(),
        }
    }
}

impl IntoIterator for Struct {
    type Item = (String, Value);
    type IntoIter = std::vec::IntoIter<(String, Value)>;

    fn into_iter(self) -> Self::IntoIter {
        self.members.into_iter()
    }
}

/// A decimal int the way xapi's decoders take an untyped value: optional sign, digits.
pub(crate) fn parse_int(text: &str) -> Option<i64> {
    let trimmed = text.trim_matches([' ', '\t', '\n', '\r']);
    let digits = trimmed.strip_prefix(['-', '+']).unwrap_or(trimmed);
    if digits.is_empty() || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    trimmed.parse().ok()
}

/// Escapes text as xapi's writer does (`& < > "`), drops control characters XML 1.0 cannot
/// carry, and writes CR as a character reference so that XML parsers do not turn it into LF.
fn escape_into(text: &str, out: &mut String) {
    for character in text.chars() {
        match character {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\r' => out.push_str("&#13;"),
            '\t' | '\n' => out.push(character),
            control if control < ' ' || control == '\u{FFFE}' || control == '\u{FFFF}' => {}
            other => out.push(other),
        }
    }
}

/// Recursive-descent parser over quick-xml events.
struct Parser<'a> {
    reader: Reader<&'a [u8]>,
    depth: usize,
}

/// The structural events the parser works with, with text already decoded.
enum Token {
    Start(String),
    Empty(String),
    End(String),
    Text(String),
    Eof,
}

impl<'a> Parser<'a> {
    fn new(text: &'a str) -> Self {
        let mut reader = Reader::from_str(text);
        let config = reader.config_mut();
        config.trim_text(false);
        config.expand_empty_elements = false;
        config.check_end_names = true;
        Self { reader, depth: 0 }
    }

    fn position(&self) -> u64 {
        self.reader.buffer_position()
    }

    fn problem(&self, problem: impl Into<String>) -> Error {
        Error::XmlRpc {
            position: self.position(),
            problem: problem.into(),
        }
    }

    /// The next structural token; comments and processing instructions are skipped.
    fn token(&mut self) -> Result<Token, Error> {
        loop {
            let position = self.position();
            let event = self
                .reader
                .read_event()
                .map_err(|source| Error::XmlSyntax { position, source })?;
            return Ok(match event {
                Event::Start(start) => Token::Start(self.element_name(&start)?),
                Event::Empty(start) => Token::Empty(self.element_name(&start)?),
                Event::End(end) => {
                    Token::End(String::from_utf8_lossy(end.name().as_ref()).into_owned())
                }
                Event::Text(text) => Token::Text(
                    text.decode()
                        .map_err(|source| Error::XmlSyntax {
                            position,
                            source: source.into(),
                        })?
                        .into_owned(),
                ),
                Event::CData(data) => Token::Text(
                    data.decode()
                        .map_err(|source| Error::XmlSyntax {
                            position,
                            source: source.into(),
                        })?
                        .into_owned(),
                ),
                Event::GeneralRef(reference) => {
                    let resolved = match reference.resolve_char_ref() {
                        Ok(Some(character)) => character.to_string(),
                        Ok(None) => {
                            let name = reference.decode().map_err(|source| Error::XmlSyntax {
                                position,
                                source: source.into(),
                            })?;
                            match quick_xml::escape::resolve_predefined_entity(&name) {
                                Some(text) => text.to_owned(),
                                None => {
                                    return Err(self
                                        .problem(format!("unknown entity &{};", excerpt(&name))));
                                }
                            }
                        }
                        Err(source) => return Err(Error::XmlSyntax { position, source }),
                    };
                    Token::Text(resolved)
                }
                Event::DocType(_) => return Err(self.problem("a DOCTYPE is not allowed")),
                Event::Comment(_) | Event::PI(_) | Event::Decl(_) => continue,
                Event::Eof => Token::Eof,
            });
        }
    }

    fn element_name(&self, start: &BytesStart<'_>) -> Result<String, Error> {
        if start.attributes().next().is_some() {
            return Err(self.problem("XML-RPC elements carry no attributes"));
        }
        Ok(String::from_utf8_lossy(start.name().as_ref()).into_owned())
    }

    /// The next token that is not whitespace text.
    fn significant(&mut self) -> Result<Token, Error> {
        loop {
            match self.token()? {
                Token::Text(text) if is_blank(&text) => continue,
                Token::Text(text) => {
                    return Err(self.problem(format!("unexpected text {:?}", excerpt(&text))));
                }
                other => return Ok(other),
            }
        }
    }

    fn document(mut self) -> Result<Value, Error> {
        let value = match self.significant()? {
            Token::Start(name) if name == "value" => self.value_body()?,
            Token::Empty(name) if name == "value" => Value::String(String::new()),
            _ => return Err(self.problem("the document must be one <value> element")),
        };
        match self.significant()? {
            Token::Eof => Ok(value),
            _ => Err(self.problem("content after the top-level <value>")),
        }
    }

    /// Parses what follows `<value>` up to and including `</value>`.
    fn value_body(&mut self) -> Result<Value, Error> {
        self.depth = self.depth.saturating_add(1);
        if self.depth > MAX_DEPTH {
            return Err(self.problem("values nest too deeply"));
        }
        let mut text = String::new();
        let value = loop {
            match self.token()? {
                Token::Text(piece) => text.push_str(&piece),
                Token::End(name) if name == "value" => {
                    self.depth = self.depth.saturating_sub(1);
                    return Ok(Value::String(text));
                }
                Token::Start(name) => {
                    if !is_blank(&text) {
                        return Err(self.problem("text before a typed value"));
                    }
                    break self.typed(&name)?;
                }
                Token::Empty(name) => {
                    if !is_blank(&text) {
                        return Err(self.problem("text before a typed value"));
                    }
                    break self.empty_typed(&name)?;
                }
                Token::End(_) | Token::Eof => return Err(self.problem("unterminated <value>")),
            }
        };
        match self.significant()? {
            Token::End(name) if name == "value" => {
                self.depth = self.depth.saturating_sub(1);
                Ok(value)
            }
            _ => Err(self.problem("a <value> holds one typed element")),
        }
    }

    /// A typed element written as `<type/>`.
    fn empty_typed(&self, name: &str) -> Result<Value, Error> {
        Ok(match name {
            "nil" => Value::Nil,
            "string" => Value::String(String::new()),
            "struct" => Value::Struct(Struct::new()),
            "array" => Value::Array(Vec::new()),
            "base64" => Value::Base64(String::new()),
            other => return Err(self.problem(format!("empty <{}/>", excerpt(other)))),
        })
    }

    /// Parses a typed element after its start tag, through its end tag.
    fn typed(&mut self, name: &str) -> Result<Value, Error> {
        match name {
            "string" => Ok(Value::String(self.text_until("string")?)),
            "i4" | "i8" | "int" => {
                let text = self.text_until(name)?;
                parse_int(&text)
                    .map(Value::Int)
                    .ok_or_else(|| self.problem(format!("bad integer {:?}", excerpt(&text))))
            }
            "boolean" => {
                let text = self.text_until("boolean")?;
                match text.trim_matches([' ', '\t', '\n', '\r']) {
                    "1" | "true" => Ok(Value::Bool(true)),
                    "0" | "false" => Ok(Value::Bool(false)),
                    _ => Err(self.problem(format!("bad boolean {:?}", excerpt(&text)))),
                }
            }
            "double" => {
                let text = self.text_until("double")?;
                text.trim_matches([' ', '\t', '\n', '\r'])
                    .parse()
                    .map(Value::Double)
                    .map_err(|_| self.problem(format!("bad double {:?}", excerpt(&text))))
            }
            "dateTime.iso8601" => Ok(Value::DateTime(self.text_until("dateTime.iso8601")?)),
            "base64" => Ok(Value::Base64(self.text_until("base64")?)),
            "nil" => match self.significant()? {
                Token::End(end) if end == "nil" => Ok(Value::Nil),
                _ => Err(self.problem("<nil> holds nothing")),
            },
            "struct" => self.struct_body().map(Value::Struct),
            "array" => self.array_body().map(Value::Array),
            other => Err(self.problem(format!("unknown XML-RPC type <{}>", excerpt(other)))),
        }
    }

    /// Text content up to `</tag>`; no child elements allowed.
    fn text_until(&mut self, tag: &str) -> Result<String, Error> {
        let mut text = String::new();
        loop {
            match self.token()? {
                Token::Text(piece) => text.push_str(&piece),
                Token::End(name) if name == tag => return Ok(text),
                _ => return Err(self.problem(format!("<{tag}> holds only text"))),
            }
        }
    }

    fn struct_body(&mut self) -> Result<Struct, Error> {
        let mut members = Vec::new();
        loop {
            match self.significant()? {
                Token::End(name) if name == "struct" => return Ok(Struct { members }),
                Token::Start(name) if name == "member" => {
                    let key = match self.significant()? {
                        Token::Start(tag) if tag == "name" => self.text_until("name")?,
                        Token::Empty(tag) if tag == "name" => String::new(),
                        _ => return Err(self.problem("a <member> starts with its <name>")),
                    };
                    let value = match self.significant()? {
                        Token::Start(tag) if tag == "value" => self.value_body()?,
                        Token::Empty(tag) if tag == "value" => Value::String(String::new()),
                        _ => return Err(self.problem("a <member> has a <value> after its <name>")),
                    };
                    match self.significant()? {
                        Token::End(tag) if tag == "member" => members.push((key, value)),
                        _ => return Err(self.problem("a <member> holds one name and one value")),
                    }
                }
                _ => return Err(self.problem("a <struct> holds only <member> elements")),
            }
        }
    }

    fn array_body(&mut self) -> Result<Vec<Value>, Error> {
        let items = match self.significant()? {
            Token::Empty(name) if name == "data" => Vec::new(),
            Token::Start(name) if name == "data" => {
                let mut items = Vec::new();
                loop {
                    match self.significant()? {
                        Token::End(tag) if tag == "data" => break items,
                        Token::Start(tag) if tag == "value" => items.push(self.value_body()?),
                        Token::Empty(tag) if tag == "value" => {
                            items.push(Value::String(String::new()))
                        }
                        _ => return Err(self.problem("<data> holds only <value> elements")),
                    }
                }
            }
            Token::End(name) if name == "array" => return Ok(Vec::new()),
            _ => return Err(self.problem("an <array> holds one <data>")),
        };
        match self.significant()? {
            Token::End(name) if name == "array" => Ok(items),
            _ => Err(self.problem("an <array> holds one <data>")),
        }
    }
}

/// Whitespace between elements (space, TAB, LF and CR).
fn is_blank(text: &str) -> bool {
    text.bytes()
        .all(|byte| matches!(byte, b' ' | b'\t' | b'\n' | b'\r'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_spec_vbd_vector() {
        // Spec §13.4: a VBD snapshot with exactly the 16 required fields, one line, as xapi writes it.
        let xml = concat!(
            "<value><struct><member><name>uuid</name><value>5b0d3a53-2c3e-4b7e-9d0a-8f5e6c1b2a10</value></member>",
            "<member><name>VM</name><value>Ref:000</value></member><member><name>VDI</name><value>Ref:002</value></member>",
            "<member><name>userdevice</name><value>0</value></member><member><name>bootable</name><value><boolean>1</boolean></value></member>",
            "<member><name>mode</name><value>RW</value></member><member><name>type</name><value>Disk</value></member>",
            "<member><name>storage_lock</name><value><boolean>0</boolean></value></member><member><name>empty</name><value><boolean>0</boolean></value></member>",
            "<member><name>other_config</name><value><struct></struct></value></member><member><name>status_code</name><value>0</value></member>",
            "<member><name>status_detail</name><value></value></member><member><name>runtime_properties</name><value><struct></struct></value></member>",
            "<member><name>qos_algorithm_type</name><value></value></member><member><name>qos_algorithm_params</name><value><struct></struct></value></member>",
            "<member><name>qos_supported_algorithms</name><value><array><data></data></array></value></member></struct></value>"
        );
        let value = Value::parse(xml.as_bytes()).unwrap();
        let members = value.as_struct().unwrap();
        assert_eq!(members.len(), 16);
        assert_eq!(members.get("bootable"), Some(&Value::Bool(true)));
        // Untyped values are strings; xapi reads them as ints where it wants ints.
        assert_eq!(members.get("status_code"), Some(&Value::String("0".into())));
        assert_eq!(members.get("status_code").and_then(Value::as_int), Some(0));
        assert_eq!(
            members.get("qos_supported_algorithms"),
            Some(&Value::Array(vec![]))
        );
        // Written back the way xapi writes it: byte-identical.
        assert_eq!(value.to_xml(), xml);
    }

    #[test]
    fn typed_ints_whitespace_and_entities() {
        let xml = "<?xml version=\"1.0\"?>\n<value>\n <struct>\n  <member><name>a</name><value><i8>-42</i8></value></member>\n  <member><name>b</name><value>x &amp; &lt;y&gt; &#65;&#x42;</value></member>\n  <member><name>c</name><value><nil/></value></member>\n  <member><name>d</name><value><double>1.5</double></value></member>\n </struct>\n</value>\n";
        let value = Value::parse(xml.as_bytes()).unwrap();
        let members = value.as_struct().unwrap();
        assert_eq!(members.get("a"), Some(&Value::Int(-42)));
        assert_eq!(members.get("b"), Some(&Value::String("x & <y> AB".into())));
        assert_eq!(members.get("c"), Some(&Value::Nil));
        assert_eq!(members.get("d"), Some(&Value::Double(1.5)));
    }

    #[test]
    fn writer_escapes_and_drops_controls() {
        let value = Value::String("a&b<c>\"d\u{1}\r\n\te".into());
        let xml = value.to_xml();
        assert_eq!(xml, "<value>a&amp;b&lt;c&gt;&quot;d&#13;\n\te</value>");
        assert_eq!(
            Value::parse(xml.as_bytes()).unwrap(),
            Value::String("a&b<c>\"d\r\n\te".into())
        );
    }

    #[test]
    fn rejects_malformed_values() {
        for bad in [
            "",
            "<value>",
            "<value><i8>x</i8></value>",
            "<value><boolean>2</boolean></value>",
            "<value><struct><member><value>1</value></member></struct></value>",
            "<value><unknown>1</unknown></value>",
            "<value>1</value><value>2</value>",
            "<value>text<struct></struct></value>",
            "<value>&foo;</value>",
            "<!DOCTYPE x><value>1</value>",
            "<value a=\"1\">1</value>",
        ] {
            assert!(Value::parse(bad.as_bytes()).is_err(), "accepted {bad:?}");
        }
        let deep = "<value><array><data>".repeat(100) + &"</data></array></value>".repeat(100);
        assert!(matches!(
            Value::parse(deep.as_bytes()),
            Err(Error::XmlRpc { .. })
        ));
    }

    #[test]
    fn struct_lookup_takes_the_first_member() {
        let value = Value::parse(
            b"<value><struct><member><name>k</name><value>1</value></member><member><name>k</name><value>2</value></member></struct></value>",
        )
        .unwrap();
        let members = value.as_struct().unwrap();
        assert_eq!(members.get("k"), Some(&Value::String("1".into())));
        assert_eq!(members.len(), 2);
    }
}
