//! The XenAPI value model shared by both wire encodings, and typed conversions out of it.
//!
//! Decoding is schema-driven: XML-RPC from xapi carries ints untyped (indistinguishable from
//! strings) while JSON-RPC carries them as numbers, so [`FromValue`] accepts every form xapi
//! can produce for a type (`"42"` or `42` for an `i64`, a datetime string or a typed datetime).

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, Hash};

use crate::datetime::DateTime;
use crate::error::Error;

/// One XenAPI value, as decoded from or encoded to XML-RPC or JSON-RPC.
///
/// Struct members keep their wire order (xapi writes record fields in datamodel order and the
/// `Status` member first), so a simulator can reproduce xapi's output byte for byte.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// A string, uuid, ref or enum; also every untyped XML-RPC `<value>text</value>`.
    String(String),
    /// A 64-bit API int (xapi writes it untyped in XML-RPC, as a number in JSON).
    Int(i64),
    /// A 32-bit int: only `event.from`'s `valid_ref_counts` (`<i4>` in XML-RPC).
    Int32(i32),
    /// A float, NaN and infinities included.
    Double(f64),
    /// A boolean.
    Bool(bool),
    /// A datetime (`<dateTime.iso8601>` in XML-RPC, a string in JSON).
    DateTime(DateTime),
    /// A set (`<array>`, JSON array).
    Array(Vec<Value>),
    /// A map or record (`<struct>`, JSON object), members in wire order.
    Struct(Vec<(String, Value)>),
    /// Raw bytes (`<base64>`); no class in this crate uses it.
    Base64(Vec<u8>),
    /// `<nil/>` / JSON `null`; xapi never emits it in results.
    Nil,
}

impl Value {
    /// The void result xapi sends: an empty string.
    pub fn void() -> Value {
        Value::String(String::new())
    }

    /// Builds a struct from `(name, value)` pairs, keeping their order.
    pub fn structure<K: Into<String>>(members: impl IntoIterator<Item = (K, Value)>) -> Value {
        Value::Struct(
            members
                .into_iter()
                .map(|(name, value)| (name.into(), value))
                .collect(),
        )
    }

    /// The string inside a `String`, if it is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(text) => Some(text),
            _ => None,
        }
    }

    /// The first member called `name` of a struct.
    pub fn get(&self, name: &str) -> Option<&Value> {
        match self {
            Value::Struct(members) => members
                .iter()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value),
            _ => None,
        }
    }

    /// A short name of the variant, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::String(_) => "string",
            Value::Int(_) => "int",
            Value::Int32(_) => "int32",
            Value::Double(_) => "double",
            Value::Bool(_) => "boolean",
            Value::DateTime(_) => "datetime",
            Value::Array(_) => "array",
            Value::Struct(_) => "struct",
            Value::Base64(_) => "base64",
            Value::Nil => "nil",
        }
    }

    /// Equality that also holds between two NaNs (`PartialEq` follows IEEE and says no).
    pub fn same_as(&self, other: &Value) -> bool {
        match (self, other) {
            (Value::Double(a), Value::Double(b)) => {
                (a.is_nan() && b.is_nan()) || a.to_bits() == b.to_bits() || a == b
            }
            (Value::Array(a), Value::Array(b)) => {
                a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.same_as(y))
            }
            (Value::Struct(a), Value::Struct(b)) => {
                a.len() == b.len()
                    && a.iter()
                        .zip(b)
                        .all(|((ka, va), (kb, vb))| ka == kb && va.same_as(vb))
            }
            _ => self == other,
        }
    }

    /// Converts into `T` leniently (see [`FromValue`]).
    pub fn decode<T: FromValue>(self) -> Result<T, Error> {
        T::from_value(self)
    }
}

/// Conversion from a decoded [`Value`], accepting every form either transport may produce.
pub trait FromValue: Sized {
    /// Converts, or fails with [`Error::Conversion`].
    fn from_value(value: Value) -> Result<Self, Error>;
}

pub(crate) fn mismatch(expected: &'static str, found: &Value) -> Error {
    Error::Conversion {
        expected,
        found: found.kind(),
        field: None,
    }
}

impl FromValue for Value {
    fn from_value(value: Value) -> Result<Self, Error> {
        Ok(value)
    }
}

/// Void results: xapi sends `""`; anything is accepted and dropped.
impl FromValue for () {
    fn from_value(_: Value) -> Result<Self, Error> {
        Ok(())
    }
}

impl FromValue for String {
    fn from_value(value: Value) -> Result<Self, Error> {
        match value {
            Value::String(text) => Ok(text),
            Value::Int(number) => Ok(number.to_string()),
            Value::Int32(number) => Ok(number.to_string()),
            Value::DateTime(date) => Ok(date.to_string()),
            other => Err(mismatch("string", &other)),
        }
    }
}

impl FromValue for i64 {
    fn from_value(value: Value) -> Result<Self, Error> {
        match value {
            Value::Int(number) => Ok(number),
            Value::Int32(number) => Ok(i64::from(number)),
            Value::String(ref text) => text.trim().parse().map_err(|_| mismatch("int", &value)),
            other => Err(mismatch("int", &other)),
        }
    }
}

impl FromValue for i32 {
    fn from_value(value: Value) -> Result<Self, Error> {
        let wide = i64::from_value(value)?;
        i32::try_from(wide).map_err(|_| Error::Conversion {
            expected: "int32",
            found: "int out of range",
            field: None,
        })
    }
}

impl FromValue for u64 {
    fn from_value(value: Value) -> Result<Self, Error> {
        let wide = i64::from_value(value)?;
        u64::try_from(wide).map_err(|_| Error::Conversion {
            expected: "non-negative int",
            found: "negative int",
            field: None,
        })
    }
}

impl FromValue for f64 {
    fn from_value(value: Value) -> Result<Self, Error> {
        match value {
            Value::Double(number) => Ok(number),
            Value::Int32(number) => Ok(f64::from(number)),
            // i64 → f64 through its decimal text: exact for every int a float can hold, and no `as`.
            Value::Int(number) => number
                .to_string()
                .parse()
                .map_err(|_| mismatch("double", &value)),
            Value::String(ref text) => crate::codec::float::parse_float(text.trim())
                .ok_or_else(|| mismatch("double", &value)),
            other => Err(mismatch("double", &other)),
        }
    }
}

impl FromValue for bool {
    fn from_value(value: Value) -> Result<Self, Error> {
        match value {
            Value::Bool(flag) => Ok(flag),
            Value::String(ref text) => match text.as_str() {
                "true" | "1" => Ok(true),
                "false" | "0" => Ok(false),
                _ => Err(mismatch("boolean", &value)),
            },
            other => Err(mismatch("boolean", &other)),
        }
    }
}

impl FromValue for DateTime {
    fn from_value(value: Value) -> Result<Self, Error> {
        match value {
            Value::DateTime(date) => Ok(date),
            Value::String(text) => DateTime::parse(&text),
            other => Err(mismatch("datetime", &other)),
        }
    }
}

impl<T: FromValue> FromValue for Vec<T> {
    fn from_value(value: Value) -> Result<Self, Error> {
        match value {
            Value::Array(items) => items.into_iter().map(T::from_value).collect(),
            other => Err(mismatch("array", &other)),
        }
    }
}

impl<T: FromValue> FromValue for Option<T> {
    /// `None` for `Nil` (and for the empty-string void); `Some` otherwise.
    fn from_value(value: Value) -> Result<Self, Error> {
        match value {
            Value::Nil => Ok(None),
            other => T::from_value(other).map(Some),
        }
    }
}

/// Map keys: struct member names are always strings on the wire; typed keys parse from them.
pub trait FromKey: Sized {
    /// Converts a member name.
    fn from_key(key: String) -> Result<Self, Error>;
}

impl FromKey for String {
    fn from_key(key: String) -> Result<Self, Error> {
        Ok(key)
    }
}

impl FromKey for i64 {
    fn from_key(key: String) -> Result<Self, Error> {
        key.parse().map_err(|_| Error::Conversion {
            expected: "int key",
            found: "string",
            field: None,
        })
    }
}

impl<K: FromKey + Ord, V: FromValue> FromValue for BTreeMap<K, V> {
    fn from_value(value: Value) -> Result<Self, Error> {
        match value {
            Value::Struct(members) => members
                .into_iter()
                .map(|(key, item)| Ok((K::from_key(key)?, V::from_value(item)?)))
                .collect(),
            other => Err(mismatch("struct", &other)),
        }
    }
}

impl<K: FromKey + Eq + Hash, V: FromValue, S: BuildHasher + Default> FromValue
    for HashMap<K, V, S>
{
    fn from_value(value: Value) -> Result<Self, Error> {
        match value {
            Value::Struct(members) => members
                .into_iter()
                .map(|(key, item)| Ok((K::from_key(key)?, V::from_value(item)?)))
                .collect(),
            other => Err(mismatch("struct", &other)),
        }
    }
}

impl From<String> for Value {
    fn from(text: String) -> Self {
        Value::String(text)
    }
}
impl From<&str> for Value {
    fn from(text: &str) -> Self {
        Value::String(text.to_owned())
    }
}
impl From<&String> for Value {
    fn from(text: &String) -> Self {
        Value::String(text.clone())
    }
}
impl From<i64> for Value {
    fn from(number: i64) -> Self {
        Value::Int(number)
    }
}
impl From<i32> for Value {
    /// API ints are 64-bit; only `valid_ref_counts` is Int32, build that with `Value::Int32`.
    fn from(number: i32) -> Self {
        Value::Int(i64::from(number))
    }
}
impl From<f64> for Value {
    fn from(number: f64) -> Self {
        Value::Double(number)
    }
}
impl From<bool> for Value {
    fn from(flag: bool) -> Self {
        Value::Bool(flag)
    }
}
impl From<DateTime> for Value {
    fn from(date: DateTime) -> Self {
        Value::DateTime(date)
    }
}
impl<T: Into<Value>> From<Vec<T>> for Value {
    fn from(items: Vec<T>) -> Self {
        Value::Array(items.into_iter().map(Into::into).collect())
    }
}
impl<K: ToString, V: Into<Value>> From<BTreeMap<K, V>> for Value {
    fn from(map: BTreeMap<K, V>) -> Self {
        Value::Struct(
            map.into_iter()
                .map(|(key, item)| (key.to_string(), item.into()))
                .collect(),
        )
    }
}

/// A string map (`other_config`, `sm_config`, ...): the most common XenAPI map type.
pub type StringMap = BTreeMap<String, String>;

/// Builds a `Value::Struct` of strings from pairs, handy for `other_config` literals.
pub fn string_map<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Value {
    Value::Struct(
        pairs
            .into_iter()
            .map(|(key, item)| (key.to_owned(), Value::String(item.to_owned())))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ints_decode_from_untyped_xml_text_and_json_numbers() {
        // XML-RPC from xapi: `<value>10737418240</value>`; JSON-RPC: `10737418240`.
        assert_eq!(
            Value::from("10737418240").decode::<i64>().unwrap(),
            10_737_418_240
        );
        assert_eq!(
            Value::Int(10_737_418_240).decode::<i64>().unwrap(),
            10_737_418_240
        );
        assert_eq!(Value::Int32(7).decode::<i64>().unwrap(), 7);
        assert!(Value::from("ten").decode::<i64>().is_err());
        assert!(Value::from("-1").decode::<u64>().is_err());
    }

    #[test]
    fn floats_accept_ints_and_strings() {
        assert_eq!(Value::Int(1).decode::<f64>().unwrap(), 1.0);
        assert_eq!(Value::from("0.25").decode::<f64>().unwrap(), 0.25);
        assert!(Value::from("nan").decode::<f64>().unwrap().is_nan());
    }

    #[test]
    fn maps_and_sets() {
        let value = Value::structure([("a", Value::from("1")), ("b", Value::from("2"))]);
        let map: BTreeMap<String, i64> = value.decode().unwrap();
        assert_eq!(map.get("b"), Some(&2));
        let set: Vec<String> = Value::Array(vec!["x".into(), "y".into()]).decode().unwrap();
        assert_eq!(set, ["x", "y"]);
        assert!(Value::from("x").decode::<Vec<String>>().is_err());
    }

    #[test]
    fn nan_equality_helper() {
        assert!(Value::Double(f64::NAN).same_as(&Value::Double(f64::NAN)));
        assert!(!Value::Double(1.0).same_as(&Value::Double(2.0)));
    }
}
