//! Property tests: values round-trip through both encodings, on both sides of the wire.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a failed test"
)]

use proptest::prelude::*;
use xenapi::codec::float::{parse_float, xapi_xml_double};
use xenapi::codec::{Failure, Response, jsonrpc, xmlrpc};
use xenapi::{DateTime, Value, Zone};

fn datetime() -> impl Strategy<Value = DateTime> {
    (
        0u16..=9999,
        1u8..=12,
        1u8..=28,
        0u8..24,
        0u8..60,
        0u8..60,
        prop_oneof![Just(0u32), 1u32..1_000_000_000],
        prop_oneof![
            Just(Zone::Utc),
            Just(Zone::Unspecified),
            (-1439i16..=1439).prop_map(Zone::Offset)
        ],
    )
        .prop_map(|(year, month, day, hour, minute, second, nanos, zone)| {
            DateTime::new(year, month, day, hour, minute, second, nanos, zone).unwrap()
        })
}

/// Any text, control characters included (encoders must cope).
fn text() -> impl Strategy<Value = String> {
    prop_oneof![".{0,12}", "[a-z<>&\"' \t\r\n\u{1}\u{7f}é😀]{0,12}"]
}

/// Struct member names: xapi writes them unescaped, so keep them to the characters real
/// field and map keys use.
fn name() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_:/.-]{0,10}"
}

fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        text().prop_map(Value::String),
        any::<i64>().prop_map(Value::Int),
        any::<i32>().prop_map(Value::Int32),
        any::<f64>().prop_map(Value::Double),
        prop_oneof![
            Just(f64::NAN),
            Just(f64::INFINITY),
            Just(f64::NEG_INFINITY),
            Just(0.1),
            Just(1e-7)
        ]
        .prop_map(Value::Double),
        any::<bool>().prop_map(Value::Bool),
        datetime().prop_map(Value::DateTime),
        proptest::collection::vec(any::<u8>(), 0..8).prop_map(Value::Base64),
        Just(Value::Nil),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::vec((name(), inner), 0..6).prop_map(Value::Struct),
        ]
    })
}

fn strip_controls(text: &str) -> String {
    text.chars()
        .filter(|c| *c >= ' ' || matches!(c, '\t' | '\n' | '\r'))
        .collect()
}

fn map(value: &Value, leaf: &dyn Fn(&Value) -> Value) -> Value {
    match value {
        Value::Array(items) => Value::Array(items.iter().map(|item| map(item, leaf)).collect()),
        Value::Struct(members) => Value::Struct(
            members
                .iter()
                .map(|(k, v)| (k.clone(), map(v, leaf)))
                .collect(),
        ),
        other => leaf(other),
    }
}

/// What a client's typed XML-RPC call reads as on a lenient server: `<i4>` comes back as an
/// int64 (ocaml-rpc does the same); control characters XML cannot carry are dropped.
fn after_client_xml(value: &Value) -> Value {
    map(value, &|leaf| match leaf {
        Value::String(text) => Value::String(strip_controls(text)),
        Value::Int32(number) => Value::Int(i64::from(*number)),
        other => other.clone(),
    })
}

/// What a client reads from xapi-style XML-RPC: int64s untyped (strings), doubles at `%.16g`
/// precision, raw CR read as LF, control characters dropped.
fn after_xapi_xml(value: &Value) -> Value {
    map(value, &|leaf| match leaf {
        Value::String(text) => Value::String(
            strip_controls(text)
                .replace("\r\n", "\n")
                .replace('\r', "\n"),
        ),
        Value::Int(number) => Value::String(number.to_string()),
        Value::Int32(number) => Value::Int(i64::from(*number)),
        Value::Double(number) => Value::Double(parse_float(&xapi_xml_double(*number)).unwrap()),
        other => other.clone(),
    })
}

/// JSON has no datetime, int32 or base64 types: they read back as strings / int64.
fn after_json(value: &Value) -> Value {
    map(value, &|leaf| match leaf {
        Value::Int32(number) => Value::Int(i64::from(*number)),
        Value::DateTime(date) => Value::String(date.to_string()),
        Value::Base64(bytes) => {
            use base64::Engine as _;
            Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
        }
        other => other.clone(),
    })
}

fn assert_same(found: &Value, expected: &Value) {
    assert!(
        found.same_as(expected),
        "found {found:?}\nexpected {expected:?}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn xml_client_call_to_server(method in "[A-Za-z_.]{1,20}", params in proptest::collection::vec(value(), 0..4)) {
        let body = xmlrpc::encode_call(&method, &params);
        let call = xmlrpc::decode_call(&body).unwrap();
        prop_assert_eq!(&call.method, &method);
        prop_assert_eq!(call.params.len(), params.len());
        for (found, sent) in call.params.iter().zip(&params) {
            assert_same(found, &after_client_xml(sent));
        }
    }

    #[test]
    fn xml_xapi_response_to_client(value in value()) {
        let body = xmlrpc::encode_response(&Response::Success(value.clone()));
        let Response::Success(found) = xmlrpc::decode_response(&body).unwrap() else { panic!("failure") };
        assert_same(&found, &after_xapi_xml(&value));
        // Task results travel as the same fragments.
        let fragment = xmlrpc::encode_task_result(&value);
        assert_same(&xmlrpc::decode_task_result(&fragment).unwrap().unwrap(), &after_xapi_xml(&value));
    }

    #[test]
    fn xml_failure_round_trip(code in "[A-Z_]{1,20}", params in proptest::collection::vec(text(), 0..4)) {
        let failure = Failure::new(code, params.clone());
        let body = xmlrpc::encode_response(&Response::Failure(failure.clone()));
        let expected = Failure::new(failure.code.clone(), params.iter().map(|p| strip_controls(p).replace("\r\n", "\n").replace('\r', "\n")));
        prop_assert_eq!(xmlrpc::decode_response(&body).unwrap(), Response::Failure(expected));
    }

    #[test]
    fn json_client_call_to_server(method in "[A-Za-z_.]{1,20}", id in any::<i64>(), params in proptest::collection::vec(value(), 0..4), v2 in any::<bool>()) {
        let version = if v2 { jsonrpc::Version::V2 } else { jsonrpc::Version::V1 };
        let body = jsonrpc::encode_call(version, &jsonrpc::Id::Int(id), &method, &params);
        let call = jsonrpc::decode_call(&body).unwrap();
        prop_assert_eq!(call.version, version);
        prop_assert_eq!(call.id, jsonrpc::Id::Int(id));
        prop_assert_eq!(call.call.params.len(), params.len());
        for (found, sent) in call.call.params.iter().zip(&params) {
            assert_same(found, &after_json(sent));
        }
    }

    #[test]
    fn json_server_response_to_client(value in value(), id in prop_oneof![any::<i64>().prop_map(jsonrpc::Id::Int), "[a-z0-9-]{0,8}".prop_map(jsonrpc::Id::String)], v2 in any::<bool>()) {
        let version = if v2 { jsonrpc::Version::V2 } else { jsonrpc::Version::V1 };
        let body = jsonrpc::encode_response(version, &id, &Response::Success(value.clone()));
        let reply = jsonrpc::decode_response(&body).unwrap();
        prop_assert_eq!(reply.id, Some(id.clone()));
        let Response::Success(found) = reply.response else { panic!("failure") };
        assert_same(&found, &after_json(&value));

        let failure = Failure::new("HANDLE_INVALID", ["VM", "OpaqueRef:x"]);
        let body = jsonrpc::encode_response(version, &id, &Response::Failure(failure.clone()));
        prop_assert_eq!(jsonrpc::decode_response(&body).unwrap().response, Response::Failure(failure));
    }

    /// An independent parser (serde_json) reads our JSON the same way whenever it is standard
    /// JSON (no NaN/Infinity), so a bug shared by our encoder and decoder cannot hide.
    #[test]
    fn json_agrees_with_serde(value in value()) {
        let text = jsonrpc::encode_value(&value);
        if !(text.contains("NaN") || text.contains("Infinity")) {
            let theirs: serde_json::Value = serde_json::from_str(&text).unwrap();
            prop_assert!(agrees(&theirs, &after_json(&value)), "{text}");
        }
    }

    #[test]
    fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = xmlrpc::decode_call(&bytes);
        let _ = xmlrpc::decode_response(&bytes);
        let _ = jsonrpc::decode_call(&bytes);
        let _ = jsonrpc::decode_response(&bytes);
    }
}

fn agrees(theirs: &serde_json::Value, ours: &Value) -> bool {
    match (theirs, ours) {
        (serde_json::Value::Null, Value::Nil) => true,
        (serde_json::Value::Bool(a), Value::Bool(b)) => a == b,
        (serde_json::Value::String(a), Value::String(b)) => a == b,
        (serde_json::Value::Number(a), Value::Int(b)) => a.as_i64() == Some(*b),
        // serde_json without `float_roundtrip` may be one ulp off on long mantissas.
        (serde_json::Value::Number(a), Value::Double(b)) => a
            .as_f64()
            .is_some_and(|a| a == *b || (a - b).abs() <= b.abs() * 4e-16),
        (serde_json::Value::Array(a), Value::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| agrees(x, y))
        }
        // serde_json keeps the last of duplicate keys and sorts; compare as maps of last values.
        (serde_json::Value::Object(a), Value::Struct(b)) => {
            let mut last = std::collections::BTreeMap::new();
            for (key, item) in b {
                last.insert(key.clone(), item);
            }
            a.len() == last.len()
                && last
                    .iter()
                    .all(|(key, item)| a.get(key).is_some_and(|x| agrees(x, item)))
        }
        _ => false,
    }
}
