//! Interop: the official Python `XenAPI` SDK (PyPI) runs a scripted scenario against the
//! simulator over HTTPS with the pool's certificate pinned, once over XML-RPC (the SDK's own
//! transport) and once over JSON-RPC (the SDK driven through a transport that speaks
//! `/jsonrpc`, so the SDK's session and result handling still run). The SDK's session then
//! downloads a VDI over HTTPS with `urllib` (`/export_raw_vdi` under a `task.create` task).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a failed test"
)]

mod common;

const SCRIPT: &str = r#"
import hashlib, http.client, itertools, json, ssl, sys, time, urllib.parse, urllib.request, xmlrpc.client
import XenAPI

url, user, password, cafile, mode = sys.argv[1:6]
context = ssl.create_default_context(cafile=cafile)

class JsonRpcTransport(xmlrpc.client.SafeTransport):
    """Carries the SDK's calls over JSON-RPC v2 and hands back XML-RPC-shaped results."""
    ids = itertools.count(1)

    def request(self, host, handler, request_body, verbose=False):
        params, method = xmlrpc.client.loads(request_body)
        connection = http.client.HTTPSConnection(host, context=context)
        body = json.dumps({"jsonrpc": "2.0", "method": method, "params": list(params), "id": next(self.ids)})
        connection.request("POST", "/jsonrpc", body, {"Content-Type": "application/json"})
        response = connection.getresponse()
        assert response.getheader("Content-Type") == "application/json", response.getheader("Content-Type")
        reply = json.loads(response.read())
        connection.close()
        if "error" in reply:
            error = reply["error"]
            return ({"Status": "Failure", "ErrorDescription": [error["message"]] + list(error.get("data", []))},)
        return ({"Status": "Success", "Value": reply["result"]},)

transport = JsonRpcTransport(context=context) if mode == "json" else xmlrpc.client.SafeTransport(context=context)
session = XenAPI.Session(url, transport=transport)
session.xenapi.login_with_password(user, password, "2.21", "xapi-sim python test")
api = session.xenapi

records = api.VM.get_all_records()
assert any(record["is_control_domain"] for record in records.values()), "dom0 listed"
web = [ref for ref, record in records.items() if record["name_label"] == "web01"][0]
assert records[web]["power_state"] == "Running"
assert int(records[web]["VCPUs_max"]) == 1
assert api.pool.get_master(api.pool.get_all()[0]).startswith("OpaqueRef:")

snapshot = api.VM.snapshot(web, "python snapshot")
assert api.VM.get_is_a_snapshot(snapshot) is True
assert api.VM.get_is_a_template(snapshot) is True
assert api.VM.get_blocked_operations(snapshot) == {}

api.VM.add_to_other_config(snapshot, "xo:python", mode)
assert api.VM.get_other_config(snapshot)["xo:python"] == mode
try:
    api.VM.add_to_other_config(snapshot, "xo:python", "again")
    raise SystemExit("duplicate key accepted")
except XenAPI.Failure as failure:
    assert failure.details[0] == "MAP_DUPLICATE_KEY", failure.details
api.VM.remove_from_other_config(snapshot, "xo:python")
assert "xo:python" not in api.VM.get_other_config(snapshot)

task = api.Async.VM.clone(snapshot, "python clone")
deadline = time.time() + 10
while api.task.get_status(task) == "pending":
    assert time.time() < deadline, "task never finished"
    time.sleep(0.02)
assert api.task.get_status(task) == "success", api.task.get_error_info(task)
assert float(api.task.get_progress(task)) == 1.0
fragment = api.task.get_result(task)
clone = xmlrpc.client.loads("<methodResponse><params><param>" + fragment + "</param></params></methodResponse>")[0][0]
assert api.VM.get_name_label(clone) == "python clone"
api.task.destroy(task)

disk = [ref for ref, record in api.VDI.get_all_records().items() if record["name_label"] == "web01 disk 0"][0]
export_task = api.task.create("python export", "")
query = urllib.parse.urlencode({"session_id": session._session, "vdi": disk, "format": "raw", "task_id": export_task})
with urllib.request.urlopen(url.rstrip("/") + "/export_raw_vdi?" + query, context=context) as response:
    assert response.getheader("task-id") == export_task
    data = response.read()
deadline = time.time() + 10
while api.task.get_status(export_task) == "pending":
    assert time.time() < deadline, "export task never finished"
    time.sleep(0.02)
assert api.task.get_status(export_task) == "success", api.task.get_error_info(export_task)
api.task.destroy(export_task)
print("downloaded", len(data), hashlib.sha256(data).hexdigest())

session.xenapi.session.logout()
print("python XenAPI scenario passed over", mode)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_python_sdk_runs_a_scenario_over_both_transports() {
    let Some(python) = test_peers::require_python_module("XenAPI") else {
        return;
    };
    let pool = xapi_sim::Pool::start(common::fixture()).await.unwrap();
    assert!(pool.url().starts_with("https://"));
    let directory = tempfile::tempdir().unwrap();
    let script = directory.path().join("scenario.py");
    std::fs::write(&script, SCRIPT).unwrap();
    let cafile = directory.path().join("pool.pem");
    std::fs::write(&cafile, pool.certificate_pem()).unwrap();
    for mode in ["xml", "json"] {
        let args: Vec<String> = vec![
            script.display().to_string(),
            pool.url().to_owned(),
            pool.credentials().username.clone(),
            pool.credentials().password.clone(),
            cafile.display().to_string(),
            mode.to_owned(),
        ];
        let python = python.clone();
        let output = tokio::task::spawn_blocking(move || test_peers::run_ok(&python, &args))
            .await
            .unwrap();
        let output = String::from_utf8(output).unwrap();
        assert!(output.contains(&format!("passed over {mode}")), "{output}");
        let disk = common::named(&pool, xapi_sim::db::ClassId::Vdi, "web01 disk 0");
        let content = pool.sim().read(|db| db.disk_of(&disk)).unwrap();
        let expected = hex::encode(pool.storage().sha256(content).unwrap());
        assert!(
            output.contains(&format!("downloaded {} {expected}", 64 << 20)),
            "{output}"
        );
    }
    let clones = pool.sim().read(|db| {
        db.find(
            xapi_sim::db::ClassId::Vm,
            "name_label",
            &xenapi::Value::from("python clone"),
        )
    });
    assert_eq!(clones.len(), 2, "one clone per transport");
}
