//! Cross-check of the codec against Python's own marshalling (the `XenAPI` SDK is built on
//! `xmlrpc.client`; Python's `json` reads and writes `NaN`/`Infinity` like Yojson), so a bug
//! shared by our encoder and our decoder cannot hide.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a failed test"
)]

use std::fs;

use xenapi::codec::{Failure, Response, jsonrpc, xmlrpc};
use xenapi::{DateTime, Value, string_map};

/// Python writes call bodies with its marshallers, and reads our responses back, printing
/// what it understood as canonical JSON.
const SCRIPT: &str = r#"
import sys, json, math, datetime, xmlrpc.client, XenAPI, os
d = sys.argv[1]
params = ("OpaqueRef:abc", 42, -7, 0.25, True, False, None,
          xmlrpc.client.DateTime("20250319T04:16:24"), ["a", {"k": "v&<>"}], {}, [],
          xmlrpc.client.Binary(b"\x00\x01xyz"), "caf\u00e9 \u00bb", "")
open(os.path.join(d, "call.xml"), "w").write(xmlrpc.client.dumps(params, "VM.do_thing", allow_none=True))
open(os.path.join(d, "call.json"), "w").write(json.dumps(
    {"jsonrpc": "2.0", "method": "VM.do_thing", "params": [1.5, float("nan"), float("inf"), -float("inf"), 10737418240, {"a": [True, None]}], "id": "x1"}))

def plain(v):
    if isinstance(v, float) and math.isnan(v): return "NaN"
    if isinstance(v, float) and math.isinf(v): return "Infinity" if v > 0 else "-Infinity"
    # As the SDK loads (use_builtin_types=False): a DateTime keeps xapi's text, `Z` included.
    if isinstance(v, xmlrpc.client.DateTime): return "datetime:" + v.value
    if isinstance(v, bytes): return "bytes:" + v.hex()
    if isinstance(v, list): return [plain(x) for x in v]
    if isinstance(v, dict): return {k: plain(x) for k, x in v.items()}
    if isinstance(v, bool): return v
    if isinstance(v, float): return {"float": repr(v)}
    return v

out = {}
for name in sorted(os.listdir(d)):
    path = os.path.join(d, name)
    if name.startswith("resp_") and name.endswith(".xml"):
        (value,), _ = xmlrpc.client.loads(open(path, "rb").read())
        out[name] = plain(value)
        # The SDK's own envelope check (raises XenAPI.Failure on Status=Failure).
        try:
            out[name + ":sdk"] = plain(XenAPI.XenAPI._parse_result(value))
        except XenAPI.Failure as failure:
            out[name + ":sdk"] = {"failure": failure.details}
        except Exception as error:
            out[name + ":sdk"] = {"error": type(error).__name__}
    if name.startswith("resp_") and name.endswith(".json"):
        out[name] = plain(json.loads(open(path, "rb").read()))
print(json.dumps(out, sort_keys=True))
"#;

fn rich_value() -> Value {
    Value::structure([
        ("uuid", Value::from("9f2b1c0e-3d4a-4b5c-8d6e-7f8091a2b3c4")),
        ("virtual_size", Value::Int(10_737_418_240)),
        ("count", Value::Int32(7)),
        ("ratio", Value::Double(1.0)),
        ("tiny", Value::Double(1.5e-7)),
        ("nan", Value::Double(f64::NAN)),
        ("flag", Value::Bool(true)),
        (
            "when",
            Value::DateTime(DateTime::parse("20250319T04:16:24Z").unwrap()),
        ),
        ("text", Value::from("a<b & \"c\" é")),
        ("void", Value::void()),
        (
            "set",
            Value::Array(vec![Value::from("OpaqueRef:1"), Value::from("OpaqueRef:2")]),
        ),
        ("map", string_map([("vhd-parent", "1c2d")])),
        ("empty", Value::Struct(vec![])),
    ])
}

#[test]
fn python_reads_our_responses_and_we_read_its_calls() {
    let Some(python) = test_peers::require_python_module("XenAPI") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name);

    fs::write(
        path("resp_success.xml"),
        xmlrpc::encode_response(&Response::Success(rich_value())),
    )
    .unwrap();
    fs::write(
        path("resp_failure.xml"),
        xmlrpc::encode_response(&Response::Failure(Failure::new(
            "HANDLE_INVALID",
            ["VM", "OpaqueRef:7a1e"],
        ))),
    )
    .unwrap();
    fs::write(
        path("resp_bare.xml"),
        xmlrpc::encode_bare_response(&Value::Array(vec!["VM.get_all".into()])),
    )
    .unwrap();
    for (version, tag) in [(jsonrpc::Version::V1, "v1"), (jsonrpc::Version::V2, "v2")] {
        let success = jsonrpc::encode_response(
            version,
            &jsonrpc::Id::Int(9),
            &Response::Success(rich_value()),
        );
        fs::write(path(&format!("resp_{tag}_success.json")), success).unwrap();
        let failure = Response::Failure(Failure::new("SESSION_INVALID", ["OpaqueRef:s"]));
        fs::write(
            path(&format!("resp_{tag}_failure.json")),
            jsonrpc::encode_response(version, &jsonrpc::Id::String("c".into()), &failure),
        )
        .unwrap();
    }

    let stdout = test_peers::run_ok(&python, ["-c", SCRIPT, dir.path().to_str().unwrap()]);
    let seen: serde_json::Value = serde_json::from_slice(&stdout).unwrap();

    // XML-RPC success: xapi's untyped int64 reads as a string in Python too; the envelope has
    // Status first and the SDK's _parse_result returns Value.
    let xml = &seen["resp_success.xml"];
    assert_eq!(xml["Status"], "Success");
    let record = &seen["resp_success.xml:sdk"];
    assert_eq!(record["virtual_size"], "10737418240");
    assert_eq!(record["count"], 7);
    assert_eq!(record["ratio"]["float"], "1.0");
    assert_eq!(record["tiny"]["float"], "1.5e-07");
    assert_eq!(record["nan"], "NaN");
    assert_eq!(record["flag"], true);
    assert_eq!(record["when"], "datetime:20250319T04:16:24Z");
    assert_eq!(record["text"], "a<b & \"c\" é");
    assert_eq!(record["void"], "");
    assert_eq!(
        record["set"],
        serde_json::json!(["OpaqueRef:1", "OpaqueRef:2"])
    );
    assert_eq!(record["map"], serde_json::json!({"vhd-parent": "1c2d"}));
    assert_eq!(record["empty"], serde_json::json!({}));
    assert_eq!(
        seen["resp_failure.xml:sdk"],
        serde_json::json!({"failure": ["HANDLE_INVALID", "VM", "OpaqueRef:7a1e"]})
    );
    assert_eq!(seen["resp_bare.xml"], serde_json::json!(["VM.get_all"]));

    // JSON-RPC: Python's json reads Yojson's NaN; ints stay numbers; envelopes per version.
    let v1 = &seen["resp_v1_success.json"];
    assert_eq!(v1["error"], serde_json::Value::Null);
    assert_eq!(v1["id"], 9);
    assert_eq!(v1["result"]["virtual_size"], 10_737_418_240_i64);
    assert_eq!(v1["result"]["nan"], "NaN");
    assert_eq!(v1["result"]["ratio"]["float"], "1.0");
    assert_eq!(v1["result"]["when"], "20250319T04:16:24Z");
    let v2 = &seen["resp_v2_failure.json"];
    assert_eq!(
        v2,
        &serde_json::json!({"jsonrpc": "2.0", "error": {"code": 1, "message": "SESSION_INVALID", "data": ["OpaqueRef:s"]}, "id": "c"})
    );
    assert_eq!(
        seen["resp_v1_failure.json"],
        serde_json::json!({"result": null, "error": ["SESSION_INVALID", "OpaqueRef:s"], "id": "c"})
    );

    // Python's xmlrpc.client call, decoded by our server side.
    let call = xmlrpc::decode_call(&fs::read(path("call.xml")).unwrap()).unwrap();
    assert_eq!(call.method, "VM.do_thing");
    let expected = vec![
        Value::from("OpaqueRef:abc"),
        Value::Int(42),
        Value::Int(-7),
        Value::Double(0.25),
        Value::Bool(true),
        Value::Bool(false),
        Value::Nil,
        Value::DateTime(DateTime::parse("20250319T04:16:24").unwrap()),
        Value::Array(vec![Value::from("a"), string_map([("k", "v&<>")])]),
        Value::Struct(vec![]),
        Value::Array(vec![]),
        Value::Base64(b"\x00\x01xyz".to_vec()),
        Value::from("café »"),
        Value::from(""),
    ];
    assert_eq!(call.params, expected);

    // Python's json call (with NaN/Infinity), decoded by our server side.
    let call = jsonrpc::decode_call(&fs::read(path("call.json")).unwrap()).unwrap();
    assert_eq!(call.id, jsonrpc::Id::String("x1".into()));
    let params = &call.call.params;
    assert_eq!(params[0], Value::Double(1.5));
    assert!(matches!(params[1], Value::Double(x) if x.is_nan()));
    assert_eq!(params[2], Value::Double(f64::INFINITY));
    assert_eq!(params[3], Value::Double(f64::NEG_INFINITY));
    assert_eq!(params[4], Value::Int(10_737_418_240));
    assert_eq!(
        params[5],
        Value::structure([("a", Value::Array(vec![Value::Bool(true), Value::Nil]))])
    );
}

/// Our client-style call body is accepted by Python's xmlrpc parser with the values intact.
#[test]
fn python_reads_our_calls() {
    let Some(python) = test_peers::require_python_module("XenAPI") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let body = xmlrpc::encode_call(
        "session.login_with_password",
        &[
            Value::from("root"),
            Value::from("p<a&ss\r"),
            Value::Int(1_099_511_627_776),
            Value::Double(0.1),
            Value::Nil,
        ],
    );
    fs::write(dir.path().join("call.xml"), body).unwrap();
    let script = r#"
import sys, json, xmlrpc.client
params, method = xmlrpc.client.loads(open(sys.argv[1], "rb").read())
print(json.dumps({"method": method, "params": [repr(p) for p in params]}))
"#;
    let stdout = test_peers::run_ok(
        &python,
        ["-c", script, dir.path().join("call.xml").to_str().unwrap()],
    );
    let seen: serde_json::Value = serde_json::from_slice(&stdout).unwrap();
    assert_eq!(seen["method"], "session.login_with_password");
    assert_eq!(
        seen["params"],
        serde_json::json!(["'root'", "'p<a&ss\\r'", "1099511627776", "0.1", "None"])
    );
}
