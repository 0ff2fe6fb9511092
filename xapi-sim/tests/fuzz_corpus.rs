//! Replays the `xapi_sim_rpc` fuzz corpus through the fuzz target's entry point, and checks the
//! dispatcher's robustness property: any method with any parameters yields a well-formed reply.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a failed test"
)]

use std::sync::Arc;

use proptest::prelude::*;
use xapi_sim::{PoolSpec, Sim};
use xenapi::Value;
use xenapi::codec::{jsonrpc, xmlrpc};

fn paused_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap()
}

fn sim() -> Arc<Sim> {
    xapi_sim::pool::build_offline(&PoolSpec::new("fuzz")).unwrap()
}

#[test]
fn the_fuzz_corpus_replays_without_panics() {
    let directory = concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/corpus/xapi_sim_rpc");
    let mut replayed = 0;
    for entry in std::fs::read_dir(directory).unwrap() {
        let body = std::fs::read(entry.unwrap().path()).unwrap();
        let runtime = paused_runtime();
        let (xml, json) = runtime.block_on(xapi_sim::rpc::dispatch_untrusted(&sim(), &body));
        if let Some(reply) = xml {
            xmlrpc::decode_response(&reply.body).expect("XML replies decode");
        }
        if let Some(reply) = json {
            jsonrpc::decode_response(&reply.body).expect("JSON replies decode");
        }
        replayed += 1;
    }
    assert!(replayed >= 8, "corpus files: {replayed}");
}

#[test]
fn a_login_from_the_corpus_really_logs_in() {
    // Test vector: the corpus' `xml_login` body is a complete login with the default password.
    let body = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../fuzz/corpus/xapi_sim_rpc/xml_login"
    ))
    .unwrap();
    let (xml, json) = paused_runtime().block_on(xapi_sim::rpc::dispatch_untrusted(&sim(), &body));
    let reply = xml.unwrap();
    assert!(
        String::from_utf8(reply.body)
            .unwrap()
            .contains("<value>OpaqueRef:")
    );
    assert!(json.is_none(), "XML is not JSON");
}

fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        "[a-zA-Z0-9:_ .-]{0,12}".prop_map(Value::String),
        any::<i64>().prop_map(Value::Int),
        any::<bool>().prop_map(Value::Bool),
        any::<f64>().prop_map(Value::Double),
        Just(Value::String("OpaqueRef:NULL".to_owned())),
    ];
    leaf.prop_recursive(2, 8, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec(("[a-z_]{1,8}", inner), 0..4).prop_map(Value::Struct),
        ]
    })
}

const METHODS: &[&str] = &[
    "VM.snapshot",
    "Async.VM.clone",
    "VM.create",
    "VDI.create",
    "VDI.list_changed_blocks",
    "VDI.data_destroy",
    "VBD.create",
    "VIF.create",
    "event.from",
    "event.inject",
    "task.cancel",
    "VM.add_to_blocked_operations",
    "network.add_purpose",
    "sim.add_latency",
    "sim.set_power_state",
    "session.login_with_password",
    "unknown.method",
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn any_call_gets_a_well_formed_reply(method in prop::sample::select(METHODS), params in prop::collection::vec(value(), 0..5), json in any::<bool>()) {
        let sim = sim();
        let runtime = paused_runtime();
        let reply = runtime.block_on(async {
            let master = sim.read(xapi_sim::db::Db::master);
            if json {
                let body = jsonrpc::encode_call(jsonrpc::Version::V2, &jsonrpc::Id::Int(1), method, &params);
                xapi_sim::rpc::handle_jsonrpc(&sim, &master, &body).await.map(|reply| reply.body)
            } else {
                let body = xmlrpc::encode_call(method, &params);
                xapi_sim::rpc::handle_xmlrpc(&sim, &master, &body).await.map(|reply| reply.body)
            }
        });
        let body = reply.expect("encoded calls always decode");
        if json {
            prop_assert!(jsonrpc::decode_response(&body).is_ok());
        } else {
            prop_assert!(xmlrpc::decode_response(&body).is_ok());
        }
    }
}

#[test]
fn the_transfer_corpus_replays_without_panics() {
    let directory = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../fuzz/corpus/xapi_sim_transfer"
    );
    let mut replayed = 0;
    for entry in std::fs::read_dir(directory).unwrap() {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let accepted = xapi_sim::fuzzing::transfer_inputs(&data);
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name == "tar_two_chunks" {
            let events = xapi_sim::http::tar_chunks::read_all(&data).unwrap();
            assert_eq!(events.len(), 3, "two chunks and the end");
        }
        match name.as_str() {
            "nbd_read" => assert_eq!(
                xapi_sim::nbd::policy::request_action(data.first_chunk::<28>().unwrap()),
                Some((
                    0x0102_0304_0506_0708,
                    xapi_sim::nbd::policy::RequestAction::Read {
                        offset: 1 << 20,
                        length: 1 << 20
                    }
                ))
            ),
            "export_name" => {
                assert!(xapi_sim::nbd::policy::parse_export_name(&data).is_some());
            }
            "basic_auth" => assert!(matches!(
                xapi_sim::http::parse_authorization(&data),
                xapi_sim::http::Authorization::Basic { .. }
            )),
            _ => {}
        }
        assert!(accepted <= 6);
        replayed += 1;
    }
    assert!(replayed >= 8, "corpus files: {replayed}");
}
