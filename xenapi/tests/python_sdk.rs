//! The official Python `XenAPI` SDK as a client of a server built on our server-side codec: if
//! our envelopes or value encodings were off, the SDK (not our decoder) would notice.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a failed test"
)]

mod common;

use common::{Options, PASSWORD, TestHost, USER};

const SCRIPT: &str = r#"
import sys, json, XenAPI
url, user, password = sys.argv[1:4]
session = XenAPI.Session(url)
session.xenapi.login_with_password(user, password, "1.0", "xenapi-rs-test")
out = {}
vms = session.xenapi.VM.get_all_records()
out["vm_count"] = len(vms)
out["vm0_memory"] = vms["OpaqueRef:vm-0"]["memory_static_max"]
out["vm0_power"] = vms["OpaqueRef:vm-0"]["power_state"]
out["vm0_template"] = vms["OpaqueRef:vm-0"]["is_a_template"]
out["vm0_snapshot_time"] = vms["OpaqueRef:vm-0"]["snapshot_time"].value
out["vm0_shadow"] = vms["OpaqueRef:vm-0"]["HVM_shadow_multiplier"]
try:
    session.xenapi.task.get_record("OpaqueRef:nope")
except XenAPI.Failure as failure:
    out["failure"] = failure.details
task = session.xenapi.task.create("label", "")
out["task_status"] = session.xenapi.task.get_record(task)["status"]
session.xenapi.session.logout()
print(json.dumps(out))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_talks_to_our_server_codec() {
    let Some(python) = test_peers::require_python_module("XenAPI") else {
        return;
    };
    let host = TestHost::start(Options::default()).await;
    let url = host.base();
    let stdout = tokio::task::spawn_blocking(move || {
        test_peers::run_ok(&python, ["-c", SCRIPT, &url, USER, PASSWORD])
    })
    .await
    .unwrap();
    let seen: serde_json::Value = serde_json::from_slice(&stdout).unwrap();
    assert_eq!(seen["vm_count"], 3);
    // int64 arrives untyped, as with a real xapi.
    assert_eq!(seen["vm0_memory"], "4294967296");
    assert_eq!(seen["vm0_power"], "Halted");
    assert_eq!(seen["vm0_template"], false);
    assert_eq!(seen["vm0_snapshot_time"], "19700101T00:00:00Z");
    assert_eq!(seen["vm0_shadow"], 0.0);
    assert_eq!(
        seen["failure"],
        serde_json::json!(["HANDLE_INVALID", "task", "OpaqueRef:nope"])
    );
    assert_eq!(seen["task_status"], "pending");
    let db = host.db();
    assert_eq!(db.count("session.logout"), 1);
    assert!(db.sessions.is_empty());
}
