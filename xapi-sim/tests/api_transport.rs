//! Spec §6 "Transport" and "Pool, sessions, tasks, events", checked over raw HTTP with exact bytes.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a failed test"
)]

mod common;

use std::time::{Duration, Instant};

use common::{
    Connection, code, fixture, json, login, named, post, s, send, start, wait_task, xml, xml_raw,
};
use xapi_sim::db::ClassId;
use xapi_sim::{FaultRule, PoolSpec};
use xenapi::Value;
use xenapi::codec::xmlrpc;

#[tokio::test]
async fn xmlrpc_responses_have_xapis_exact_shape() {
    let pool = start(fixture()).await;
    let master = pool.master().address;
    let response = xml_raw(
        master,
        "session.login_with_password",
        &[s("root"), s("secret")],
    )
    .await;
    assert_eq!(response.header("content-type"), Some("text/xml"));
    assert_eq!(response.header("cache-control"), Some("no-cache, no-store"));
    assert_eq!(response.header("access-control-allow-origin"), Some("*"));
    let text = response.text();
    let session = text
        .strip_prefix("<?xml version=\"1.0\"?><methodResponse><params><param><value><struct><member><name>Status</name><value>Success</value></member><member><name>Value</name><value>")
        .and_then(|rest| rest.strip_suffix("</value></member></struct></value></param></params></methodResponse>"))
        .unwrap_or_else(|| panic!("unexpected envelope {text}"));
    assert!(
        session.starts_with("OpaqueRef:") && session.len() == 46,
        "{session}"
    );

    let failure = xml_raw(master, "VM.get_record", &[s(session), s("OpaqueRef:nope")]).await;
    assert_eq!(
        failure.text(),
        "<?xml version=\"1.0\"?><methodResponse><params><param><value><struct><member><name>Status</name><value>Failure</value></member><member><name>ErrorDescription</name><value><array><data><value>HANDLE_INVALID</value><value>VM</value><value>OpaqueRef:nope</value></data></array></value></member></struct></value></param></params></methodResponse>"
    );

    let vdi = named(&pool, ClassId::Vdi, "web01 disk 0");
    let record = xml_raw(master, "VDI.get_record", &[s(session), s(&vdi)])
        .await
        .text();
    for fragment in [
        "<member><name>virtual_size</name><value>67108864</value></member>",
        "<member><name>sharable</name><value><boolean>0</boolean></value></member>",
        "<member><name>cbt_enabled</name><value><boolean>1</boolean></value></member>",
        "<member><name>snapshot_time</name><value><dateTime.iso8601>19700101T00:00:00Z</dateTime.iso8601></value></member>",
        "<member><name>tags</name><value><array><data></data></array></value></member>",
    ] {
        assert!(
            record.contains(fragment),
            "{fragment} missing from {record}"
        );
    }
    let vm = named(&pool, ClassId::Vm, "web01");
    let record = xml_raw(master, "VM.get_record", &[s(session), s(&vm)])
        .await
        .text();
    assert!(record.contains(
        "<member><name>HVM_shadow_multiplier</name><value><double>1</double></value></member>"
    ));
    assert!(
        !record.contains("<string>") && !record.contains("<i8>"),
        "values are untyped"
    );
    let void = xml_raw(
        master,
        "VM.add_to_other_config",
        &[s(session), s(&vm), s("k"), s("v")],
    )
    .await
    .text();
    assert!(
        void.contains("<member><name>Value</name><value></value></member>"),
        "{void}"
    );
}

#[tokio::test]
async fn xmlrpc_requests_are_read_as_leniently_as_xapi() {
    let pool = start(fixture()).await;
    let master = pool.master().address;
    let session = login(&pool).await;
    let vm = named(&pool, ClassId::Vm, "db01");
    let call = |method: &str, extra: &str| {
        format!(
            "<?xml version=\"1.0\"?>\n<methodCall>\n  <methodName>{method}</methodName>\n  <params>\n    <param><value><string>{session}</string></value></param>\n    <param>\n      <value>{vm}</value>\n    </param>\n    <param><value>{extra}</value></param>\n  </params>\n</methodCall>\n"
        )
    };
    let run = |body: String| async move {
        let response = send(master, &post("/RPC2", "text/xml", body.as_bytes())).await;
        xmlrpc::decode_response(&response.body).unwrap()
    };
    let get = |field: &'static str| {
        let (session, vm) = (session.clone(), vm.clone());
        async move {
            xml(master, &format!("VM.get_{field}"), &[s(&session), s(&vm)])
                .await
                .unwrap()
        }
    };
    run(call("VM.set_user_version", "<i4>5</i4>")).await;
    assert_eq!(get("user_version").await.decode::<i64>().unwrap(), 5);
    run(call("VM.set_user_version", "7")).await;
    assert_eq!(get("user_version").await.decode::<i64>().unwrap(), 7);
    run(call("VM.set_user_version", "<int>9</int>")).await;
    assert_eq!(get("user_version").await.decode::<i64>().unwrap(), 9);
    run(call("VM.set_user_version", "<i8>11</i8>")).await;
    assert_eq!(get("user_version").await.decode::<i64>().unwrap(), 11);
    run(call("VM.set_user_version", "<string>13</string>")).await;
    assert_eq!(get("user_version").await.decode::<i64>().unwrap(), 13);
    run(call("VM.set_is_a_template", "<boolean>true</boolean>")).await;
    assert_eq!(
        get("is_a_template").await,
        Value::Bool(false),
        "only the text 1 is true"
    );
    let refused = run(call("VM.set_is_a_template", "1")).await;
    let xenapi::codec::Response::Failure(failure) = refused else {
        panic!("a string is not a bool")
    };
    assert_eq!(failure.code, "INTERNAL_ERROR");
    run(call("VM.set_is_a_template", "<boolean>1</boolean>")).await;
    assert_eq!(get("is_a_template").await, Value::Bool(true));
}

#[tokio::test]
async fn control_characters_are_dropped_and_json_envelopes_are_exact() {
    let pool = start(fixture()).await;
    let master = pool.master().address;
    let session = login(&pool).await;
    let vm = named(&pool, ClassId::Vm, "web01");
    json(
        master,
        "VM.set_name_label",
        &[s(&session), s(&vm), s("a\u{1}b\tc\nd\u{1f}")],
    )
    .await
    .unwrap();
    let raw = xml_raw(master, "VM.get_name_label", &[s(&session), s(&vm)])
        .await
        .text();
    assert!(raw.contains("<value>ab\tc\nd</value>"), "{raw}");

    let exchange = |body: String| async move {
        send(
            master,
            &post("/jsonrpc", "application/json", body.as_bytes()),
        )
        .await
    };
    let v2 = exchange(r#"{"jsonrpc":"2.0","method":"session.login_with_password","params":["root","secret"],"id":7}"#.to_owned()).await;
    assert_eq!(v2.header("content-type"), Some("application/json"));
    let text = v2.text();
    assert!(
        text.starts_with(r#"{"jsonrpc":"2.0","result":"OpaqueRef:"#)
            && text.ends_with(r#"","id":7}"#),
        "{text}"
    );
    let v1 = exchange(format!(
        r#"{{"method":"VM.get_record","params":["{session}","OpaqueRef:x"],"id":"c-12"}}"#
    ))
    .await;
    assert_eq!(
        v1.text(),
        r#"{"result":null,"error":["HANDLE_INVALID","VM","OpaqueRef:x"],"id":"c-12"}"#
    );
    let v1_success = exchange(format!(
        r#"{{"method":"VM.get_name_label","params":["{session}","{vm}"],"id":12}}"#
    ))
    .await;
    // Only the XML-RPC printer drops control characters; JSON escapes them (Yojson).
    assert_eq!(
        v1_success.text(),
        r#"{"result":"a\u0001b\tc\nd\u001f","error":null,"id":12}"#
    );
    let void = exchange(format!(
        r#"{{"jsonrpc":"2.0","method":"VM.remove_from_other_config","params":["{session}","{vm}","absent"],"id":"v"}}"#
    ))
    .await;
    assert_eq!(
        void.text(),
        r#"{"jsonrpc":"2.0","result":"","id":"v"}"#,
        "void is an empty string"
    );
    let failure = exchange(
        r#"{"jsonrpc":"2.0","method":"VM.get_all","params":["OpaqueRef:bad"],"id":7}"#.to_owned(),
    )
    .await;
    assert_eq!(
        failure.text(),
        r#"{"jsonrpc":"2.0","error":{"code":1,"message":"SESSION_INVALID","data":["OpaqueRef:bad"]},"id":7}"#
    );
    let object =
        exchange(r#"{"jsonrpc":"2.0","method":"VM.get_all","params":{"a":1},"id":1}"#.to_owned())
            .await;
    assert!(
        object.text().contains(r#""message":"INTERNAL_ERROR""#),
        "an object is one struct param: {}",
        object.text()
    );
    let omitted = exchange(r#"{"jsonrpc":"2.0","method":"VM.get_all","id":1}"#.to_owned()).await;
    assert!(
        omitted.text().contains(r#""data":["VM.get_all","0","-1"]"#),
        "{}",
        omitted.text()
    );
    for malformed in [
        r#"{"jsonrpc":"2.0","method":"VM.get_all","params":[]}"#,
        r#"{"method":"VM.get_all","id":1}"#,
        r#"{"jsonrpc":"1.0","method":"VM.get_all","params":[],"id":1}"#,
    ] {
        let response = exchange(malformed.to_owned()).await;
        assert_eq!(
            (
                response.status,
                response.header("content-type"),
                response.header("connection")
            ),
            (500, Some("text/html"), Some("close")),
            "{malformed}"
        );
    }

    xml(
        master,
        "sim.set_emergency",
        &[s("HOST_STILL_BOOTING"), Value::Array(Vec::new())],
    )
    .await
    .unwrap();
    let emergency =
        exchange(r#"{"jsonrpc":"2.0","method":"VM.get_all","params":[],"id":5}"#.to_owned()).await;
    assert_eq!(
        emergency.text(),
        r#"{"jsonrpc":"2.0","error":["HOST_STILL_BOOTING"],"id":0}"#
    );
    xml(
        master,
        "sim.set_emergency",
        &[s(""), Value::Array(Vec::new())],
    )
    .await
    .unwrap();

    xml(master, "sim.inject_non_finite", &[s(&vm), s("nan")])
        .await
        .unwrap();
    let metrics = xml(master, "VM.get_metrics", &[s(&session), s(&vm)])
        .await
        .unwrap();
    let body = format!(
        r#"{{"jsonrpc":"2.0","method":"VM_metrics.get_VCPUs_utilisation","params":["{session}","{}"],"id":2}}"#,
        metrics.as_str().unwrap()
    );
    assert_eq!(
        exchange(body).await.text(),
        r#"{"jsonrpc":"2.0","result":{"0":NaN},"id":2}"#
    );
    let xml_text = xml_raw(
        master,
        "VM_metrics.get_VCPUs_utilisation",
        &[s(&session), metrics.clone()],
    )
    .await
    .text();
    assert!(xml_text.contains("<double>nan</double>"), "{xml_text}");
    for (which, token) in [("inf", "Infinity"), ("-inf", "-Infinity")] {
        xml(master, "sim.inject_non_finite", &[s(&vm), s(which)])
            .await
            .unwrap();
        let body = format!(
            r#"{{"jsonrpc":"2.0","method":"VM_metrics.get_VCPUs_utilisation","params":["{session}","{}"],"id":3}}"#,
            metrics.as_str().unwrap()
        );
        assert_eq!(
            exchange(body).await.text(),
            format!(r#"{{"jsonrpc":"2.0","result":{{"0":{token}}},"id":3}}"#)
        );
    }
}

#[tokio::test]
async fn bad_requests_get_http_500_html_and_a_closed_connection() {
    let pool = start(fixture()).await;
    let master = pool.master().address;
    let chunked = b"POST / HTTP/1.1\r\nHost: sim\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n".to_vec();
    let huge = post("/", "text/xml", &vec![b' '; 307_201]);
    for request in [
        post("/", "text/xml", b"<methodCall><methodName>x</methodName"),
        chunked,
        huge,
    ] {
        let mut connection = Connection::open(master).await;
        let response = connection.exchange(&request).await;
        assert_eq!(response.status, 500);
        assert_eq!(response.header("content-type"), Some("text/html"));
        assert_eq!(response.header("connection"), Some("close"));
        assert!(
            response.text().contains("HTTP 500 internal server error")
                && !response.text().contains("<fault>")
        );
        assert!(connection.is_closed().await);
    }
    let limit = post("/", "text/xml", &{
        let mut body = xmlrpc::encode_call("pool.get_all", &[s("OpaqueRef:x")]);
        body.resize(307_200, b' ');
        body
    });
    assert_eq!(
        send(master, &limit).await.status,
        200,
        "307200 bytes are still read"
    );
    // No handler at all for the method: 501; GET has transfer handlers, but none for `/`.
    let delete = send(master, b"DELETE / HTTP/1.1\r\nHost: sim\r\n\r\n").await;
    assert_eq!(delete.status, 501);
    let get = send(master, b"GET / HTTP/1.1\r\nHost: sim\r\n\r\n").await;
    assert_eq!(get.status, 404);
}

#[tokio::test]
async fn endpoints_route_by_prefix_on_one_keep_alive_connection() {
    let pool = start(fixture()).await;
    let session = login(&pool).await;
    let mut connection = Connection::open(pool.master().address).await;
    let call = xmlrpc::encode_call("pool.get_all", &[s(&session)]);
    for path in ["/", "/RPC2", "/xmlrpc", "/json"] {
        let response = connection.exchange(&post(path, "text/xml", &call)).await;
        assert_eq!(
            (response.status, response.header("content-type")),
            (200, Some("text/xml")),
            "{path}"
        );
        assert!(response.text().contains("<value>Success</value>"), "{path}");
    }
    let body =
        format!(r#"{{"jsonrpc":"2.0","method":"pool.get_all","params":["{session}"],"id":3}}"#);
    let response = connection
        .exchange(&post("/jsonrpc", "application/json", body.as_bytes()))
        .await;
    assert_eq!(response.header("content-type"), Some("application/json"));
    assert!(
        response
            .text()
            .starts_with(r#"{"jsonrpc":"2.0","result":["OpaqueRef:"#)
    );
    let preflight = connection
        .exchange(b"OPTIONS /jsonrpc HTTP/1.1\r\nHost: sim\r\n\r\n")
        .await;
    assert_eq!(
        preflight.header("access-control-allow-headers"),
        Some("X-Requested-With")
    );
}

#[tokio::test]
async fn arity_defaults_unknown_methods_and_async_faults() {
    let pool = start(fixture()).await;
    let master = pool.master().address;
    let session = login(&pool).await;
    assert_eq!(
        code(xml(master, "session.login_with_password", &[s("root")]).await),
        (
            "MESSAGE_PARAMETER_COUNT_MISMATCH".to_owned(),
            vec!["session.login_with_password".into(), "2".into(), "1".into()]
        )
    );
    let extra = [s("root"), s("secret"), s("1.0"), s("tests"), s("ignored")];
    assert!(
        xml(master, "session.login_with_password", &extra)
            .await
            .is_ok(),
        "defaulted methods ignore extras"
    );
    let vm = named(&pool, ClassId::Vm, "web01");
    assert_eq!(
        code(xml(master, "VM.get_record", &[s(&session), s(&vm), s("x")]).await),
        (
            "MESSAGE_PARAMETER_COUNT_MISMATCH".to_owned(),
            vec!["VM.get_record".into(), "1".into(), "2".into()]
        )
    );
    assert_eq!(
        code(xml(master, "VM.frobnicate", &[s(&session)]).await),
        (
            "MESSAGE_METHOD_UNKNOWN".to_owned(),
            vec!["VM.frobnicate".into()]
        )
    );
    assert_eq!(
        code(xml(master, "Async.VM.get_record", &[s(&session), s(&vm)]).await),
        (
            "Fault".to_owned(),
            vec!["No async mode for this operation (rpc: VM.get_record)".into()]
        )
    );
    assert!(
        xml(master, "VM_get_all", &[s(&session)]).await.is_ok(),
        "Class_method spelling"
    );
    assert_eq!(
        code(xml(master, "Async.VM_get_all", &[s(&session)]).await).0,
        "MESSAGE_METHOD_UNKNOWN"
    );
    assert_eq!(
        code(xml(master, "VM.get_record", &[Value::Int(3), s(&vm)]).await).0,
        "INTERNAL_ERROR",
        "unmarshalling comes before the session check"
    );
    let methods = xml_raw(master, "system.listMethods", &[]).await.text();
    assert!(
        methods.starts_with(
            "<?xml version=\"1.0\"?><methodResponse><params><param><value><array><data>"
        )
    );
    assert!(methods.contains("<value>VM.snapshot</value>") && !methods.contains("Status"));
}

#[tokio::test]
async fn sessions_cross_transports_and_die_at_logout() {
    let pool = start(fixture()).await;
    let master = pool.master().address;
    let session = login(&pool).await;
    let vms = json(master, "VM.get_all", &[s(&session)]).await.unwrap();
    assert_eq!(
        vms.decode::<Vec<String>>().unwrap().len(),
        5,
        "web01, db01, template, two dom0s"
    );
    json(master, "session.logout", &[s(&session)])
        .await
        .unwrap();
    assert_eq!(
        code(xml(master, "VM.get_all", &[s(&session)]).await),
        ("SESSION_INVALID".to_owned(), vec![session.clone()])
    );
    assert_eq!(
        code(json(master, "session.logout", &[s(&session)]).await).0,
        "SESSION_INVALID"
    );
}

/// A request with `thumbprint` in `x-xenapi-request-host-certificate-thumbprint`.
fn login_asking_thumbprint(thumbprint: &str) -> Vec<u8> {
    let body = xmlrpc::encode_call("session.login_with_password", &[s("root"), s("secret")]);
    let request = post("/", "text/xml", &body);
    let head_end = request.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let mut with_header = request[..head_end + 2].to_vec();
    with_header.extend_from_slice(
        format!("x-xenapi-request-host-certificate-thumbprint: {thumbprint}\r\n").as_bytes(),
    );
    with_header.extend_from_slice(&request[head_end + 2..]);
    with_header
}

/// `AB:CD:…` as xapi prints `Certificate.fingerprint_sha256` / `fingerprint_sha1`.
fn colon_hex(digest: &[u8]) -> String {
    digest
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[tokio::test]
async fn host_is_slave_carries_the_masters_thumbprint_when_asked() {
    use sha1::Digest as _;
    let pool = start(fixture()).await;
    let member = pool.hosts()[1].address;
    let master_der = pool.master().certificate.der().to_vec();
    let header = "x-xenapi-response-host-certificate-thumbprint";

    let answer = send(member, &login_asking_thumbprint("sha-256:master")).await;
    assert!(answer.text().contains("HOST_IS_SLAVE"));
    let expected = colon_hex(&sha2::Sha256::digest(&master_der));
    assert_eq!(answer.header(header), Some(expected.as_str()));
    assert_eq!(expected.len(), 32 * 3 - 1);

    let answer = send(member, &login_asking_thumbprint("sha-1:master")).await;
    let expected = colon_hex(&sha1::Sha1::digest(&master_der));
    assert_eq!(answer.header(header), Some(expected.as_str()));

    // Only on HOST_IS_SLAVE, only for the two values xapi knows, only when asked.
    let answer = send(member, &login_asking_thumbprint("sha-512:master")).await;
    assert!(answer.text().contains("HOST_IS_SLAVE"));
    assert_eq!(answer.header(header), None);
    let answer = xml_raw(
        member,
        "session.login_with_password",
        &[s("root"), s("secret")],
    )
    .await;
    assert_eq!(answer.header(header), None);
    let answer = send(
        pool.master().address,
        &login_asking_thumbprint("sha-256:master"),
    )
    .await;
    assert!(answer.text().contains("OpaqueRef:"), "{}", answer.text());
    assert_eq!(answer.header(header), None);
}

#[tokio::test]
async fn members_answer_host_is_slave_before_checking_passwords() {
    let pool = start(fixture().auth_failure_delay(Duration::from_millis(150))).await;
    let member = pool.hosts()[1].address;
    assert_ne!(member.ip(), pool.master().address.ip());
    assert_eq!(member.port(), pool.master().address.port());
    let expected = ("HOST_IS_SLAVE".to_owned(), vec!["127.0.0.1".to_owned()]);
    assert_eq!(
        code(
            xml(
                member,
                "session.login_with_password",
                &[s("root"), s("wrong")]
            )
            .await
        ),
        expected
    );
    let session = login(&pool).await;
    assert_eq!(
        code(json(member, "VM.get_all", &[s(&session)]).await),
        expected
    );
    assert_eq!(
        code(xml(member, "VM.get_all", &[s("OpaqueRef:bad")]).await).0,
        "SESSION_INVALID"
    );

    let started = Instant::now();
    let refused = xml(
        pool.master().address,
        "session.login_with_password",
        &[s("root"), s("wrong")],
    )
    .await;
    assert_eq!(
        code(refused),
        (
            "SESSION_AUTHENTICATION_FAILED".to_owned(),
            vec!["root".into(), "Authentication failure".into()]
        )
    );
    assert!(
        started.elapsed() >= Duration::from_millis(150),
        "the deliberate delay applies"
    );
}

#[tokio::test]
async fn async_calls_return_tasks_with_xml_fragment_results() {
    let pool = start(fixture()).await;
    let master = pool.master().address;
    let session = login(&pool).await;
    let vm = named(&pool, ClassId::Vm, "web01");
    // Looked up before the snapshot: the snapshot's VDI carries the same name_label.
    let vdi = named(&pool, ClassId::Vdi, "web01 disk 1");
    assert_eq!(
        code(
            xml(
                master,
                "Async.VM.snapshot",
                &[s("OpaqueRef:bad"), s(&vm), s("x")]
            )
            .await
        )
        .0,
        "SESSION_INVALID",
        "pre-spawn errors are synchronous"
    );
    let task = json(
        master,
        "Async.VM.snapshot",
        &[s(&session), s(&vm), s("nightly")],
    )
    .await
    .unwrap();
    let task = task.as_str().unwrap().to_owned();
    let record = wait_task(master, &session, &task).await;
    assert_eq!(record.get("name_label"), Some(&s("Async.VM.snapshot")));
    assert_eq!(record.get("status"), Some(&s("success")));
    assert_eq!(record.get("progress"), Some(&Value::Double(1.0)));
    assert_eq!(
        record.get("allowed_operations"),
        Some(&Value::Array(Vec::new()))
    );
    assert_eq!(
        record.get("resident_on"),
        Some(&s(pool.master().reference.as_str()))
    );
    let result = json(master, "task.get_result", &[s(&session), s(&task)])
        .await
        .unwrap();
    let snapshot = xmlrpc::decode_task_result(result.as_str().unwrap())
        .unwrap()
        .unwrap();
    assert!(
        result.as_str().unwrap().starts_with("<value>OpaqueRef:"),
        "an XML fragment over JSON too"
    );
    assert_eq!(
        xml(master, "VM.get_is_a_snapshot", &[s(&session), snapshot])
            .await
            .unwrap(),
        Value::Bool(true)
    );

    let task = xml(master, "Async.VDI.enable_cbt", &[s(&session), s(&vdi)])
        .await
        .unwrap();
    let record = wait_task(master, &session, task.as_str().unwrap()).await;
    assert_eq!(record.get("result"), Some(&s("<value></value>")));

    let task = xml(
        master,
        "Async.VM.start",
        &[s(&session), s(&vm), Value::Bool(false), Value::Bool(false)],
    )
    .await
    .unwrap();
    let record = wait_task(master, &session, task.as_str().unwrap()).await;
    assert_eq!(record.get("status"), Some(&s("failure")));
    assert_eq!(
        record
            .get("error_info")
            .unwrap()
            .clone()
            .decode::<Vec<String>>()
            .unwrap(),
        ["VM_BAD_POWER_STATE", &vm, "halted", "running"]
    );
}

#[tokio::test]
async fn tasks_cancel_cooperatively_and_destroy_or_expire() {
    let pool = start(fixture().task_gc_delay(Duration::from_millis(300))).await;
    let master = pool.master().address;
    let session = login(&pool).await;
    let vm = named(&pool, ClassId::Vm, "db01");
    xml(
        master,
        "sim.add_latency",
        &[s("VM.snapshot"), Value::Int(3000)],
    )
    .await
    .unwrap();
    let task = xml(
        master,
        "Async.VM.snapshot",
        &[s(&session), s(&vm), s("slow")],
    )
    .await
    .unwrap();
    let task = task.as_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let running = xml(master, "task.get_record", &[s(&session), s(&task)])
        .await
        .unwrap();
    assert_eq!(running.get("status"), Some(&s("pending")));
    assert_eq!(
        running.get("allowed_operations"),
        Some(&Value::Array(vec![s("cancel")])),
        "cancellable while it runs"
    );
    assert_eq!(running.get("progress"), Some(&Value::Double(0.0)));
    assert_eq!(
        code(
            xml(
                master,
                "VM.start",
                &[s(&session), s(&vm), Value::Bool(false), Value::Bool(false)]
            )
            .await
        ),
        (
            "OTHER_OPERATION_IN_PROGRESS".to_owned(),
            vec!["VM".into(), vm.clone(), "snapshot".into(), task.clone()]
        )
    );
    xml(master, "task.cancel", &[s(&session), s(&task)])
        .await
        .unwrap();
    let cancelling = xml(
        master,
        "task.get_current_operations",
        &[s(&session), s(&task)],
    )
    .await
    .unwrap();
    let Value::Struct(requests) = cancelling else {
        panic!("a map")
    };
    assert!(
        requests.iter().any(|(_, op)| *op == s("cancel")),
        "the request is recorded: {requests:?}"
    );
    let record = wait_task(master, &session, &task).await;
    assert_eq!(record.get("status"), Some(&s("cancelled")));
    assert_eq!(record.get("progress"), Some(&Value::Double(1.0)));
    assert_eq!(
        record.get("allowed_operations"),
        Some(&Value::Array(Vec::new()))
    );
    assert_ne!(
        record.get("finished"),
        Some(&Value::DateTime(xenapi::DateTime::EPOCH)),
        "finished is stamped"
    );
    assert_eq!(
        record
            .get("error_info")
            .unwrap()
            .clone()
            .decode::<Vec<String>>()
            .unwrap(),
        ["TASK_CANCELLED", task.as_str()]
    );
    assert!(
        xml(master, "VM.get_snapshots", &[s(&session), s(&vm)])
            .await
            .unwrap()
            .decode::<Vec<String>>()
            .unwrap()
            .is_empty()
    );

    xml(master, "sim.clear_faults", &[]).await.unwrap();
    xml(master, "sim.add_latency", &[s("VM.clone"), Value::Int(300)])
        .await
        .unwrap();
    let pending = xml(master, "Async.VM.clone", &[s(&session), s(&vm), s("copy")])
        .await
        .unwrap();
    xml(master, "task.destroy", &[s(&session), pending.clone()])
        .await
        .unwrap();
    let still = xml(master, "task.get_record", &[s(&session), pending.clone()])
        .await
        .unwrap();
    assert_eq!(
        still.get("status"),
        Some(&s("pending")),
        "a pending task is only marked"
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        code(xml(master, "task.get_status", &[s(&session), pending.clone()]).await).0,
        "HANDLE_INVALID"
    );

    let done = xml(
        master,
        "task.create",
        &[s(&session), s("client task"), s("")],
    )
    .await
    .unwrap();
    xml(master, "task.cancel", &[s(&session), done.clone()])
        .await
        .unwrap();
    xml(
        master,
        "task.set_status",
        &[s(&session), done.clone(), s("success")],
    )
    .await
    .unwrap();
    let finished = xml(master, "Async.VM.get_all", &[s(&session)]).await;
    assert_eq!(code(finished).0, "Fault");
    let quick = xml(
        master,
        "Async.SR.scan",
        &[s(&session), s(&named(&pool, ClassId::Sr, "Local storage"))],
    )
    .await
    .unwrap();
    wait_task(master, &session, quick.as_str().unwrap()).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        code(xml(master, "task.get_record", &[s(&session), quick.clone()]).await),
        (
            "HANDLE_INVALID".to_owned(),
            vec!["task".into(), quick.as_str().unwrap().to_owned()]
        ),
        "finished tasks are collected after the GC delay"
    );
}

fn events_of(batch: &Value) -> Vec<Value> {
    batch
        .get("events")
        .unwrap()
        .clone()
        .decode::<Vec<Value>>()
        .unwrap()
}

fn token_of(batch: &Value) -> String {
    batch.get("token").unwrap().as_str().unwrap().to_owned()
}

#[tokio::test]
async fn event_from_snapshots_coalesces_blocks_and_filters() {
    let pool = start(fixture()).await;
    let master = pool.master().address;
    let session = login(&pool).await;
    let from = |classes: &[&str], token: &str, timeout: f64| {
        let params = vec![
            s(&session),
            Value::Array(classes.iter().map(|class| s(class)).collect()),
            s(token),
            Value::Double(timeout),
        ];
        async move { xml(master, "event.from", &params).await }
    };
    let everything = from(&["VM"], "", 0.0).await.unwrap();
    let events = events_of(&everything);
    assert_eq!(events.len(), 5);
    for event in &events {
        assert_eq!(event.get("class"), Some(&s("vm")));
        assert_eq!(event.get("operation"), Some(&s("add")));
        assert_eq!(event.get("timestamp"), Some(&s("0.0")));
        assert!(event.get("snapshot").unwrap().get("uuid").is_some());
    }
    let token = token_of(&everything);
    assert!(
        token.len() == 41
            && token.as_bytes()[20] == b','
            && token.ends_with(",00000000000000000000"),
        "{token}"
    );
    let raw = xml_raw(
        master,
        "event.from",
        &[
            s(&session),
            Value::Array(vec![s("vm")]),
            s(&token),
            Value::Double(0.0),
        ],
    )
    .await
    .text();
    assert!(
        raw.contains("<member><name>vm</name><value><i4>5</i4></value></member>"),
        "{raw}"
    );
    for class in ClassId::ALL {
        assert!(
            raw.contains(&format!(
                "<member><name>{}</name><value><i4>",
                class.table()
            )),
            "every table is counted, {} included: {raw}",
            class.table()
        );
    }

    let web = named(&pool, ClassId::Vm, "web01");
    let db01 = named(&pool, ClassId::Vm, "db01");
    xml(
        master,
        "VM.set_name_label",
        &[s(&session), s(&web), s("one")],
    )
    .await
    .unwrap();
    xml(
        master,
        "VM.set_name_label",
        &[s(&session), s(&web), s("two")],
    )
    .await
    .unwrap();
    let network = xml(
        master,
        "network.create",
        &[
            s(&session),
            Value::structure([
                ("name_label", s("tmp")),
                ("other_config", Value::Struct(Vec::new())),
            ]),
        ],
    )
    .await
    .unwrap();
    xml(master, "network.destroy", &[s(&session), network.clone()])
        .await
        .unwrap();
    let vif = xml(master, "VM.get_VIFs", &[s(&session), s(&db01)])
        .await
        .unwrap()
        .decode::<Vec<String>>()
        .unwrap()
        .remove(0);
    xml(master, "VIF.destroy", &[s(&session), s(&vif)])
        .await
        .unwrap();
    let batch = from(&["vm", "network", "vif"], &token, 1.0).await.unwrap();
    let events = events_of(&batch);
    let web_events: Vec<&Value> = events
        .iter()
        .filter(|event| event.get("ref") == Some(&s(&web)))
        .collect();
    assert_eq!(web_events.len(), 1, "coalesced per object");
    assert_eq!(
        web_events[0].get("snapshot").unwrap().get("name_label"),
        Some(&s("two"))
    );
    assert!(
        events
            .iter()
            .all(|event| event.get("ref") != Some(&network)),
        "created then deleted: nothing"
    );
    assert!(
        events
            .iter()
            .any(|event| event.get("class") == Some(&s("network"))),
        "the NBD network lost a VIF"
    );
    let deleted = events
        .iter()
        .find(|event| event.get("ref") == Some(&s(&vif)))
        .unwrap();
    assert_eq!(deleted.get("operation"), Some(&s("del")));
    assert!(deleted.get("snapshot").is_none());
    assert!(
        events
            .iter()
            .any(|event| event.get("ref") == Some(&s(&db01))),
        "the VM's VIFs changed"
    );

    let token = token_of(&batch);
    let started = Instant::now();
    let idle = from(&["vm"], &token, 0.3).await.unwrap();
    assert!(events_of(&idle).is_empty() && started.elapsed() >= Duration::from_millis(300));
    let waiter = tokio::spawn(from(&[&format!("VM/{db01}")], &token, 10.0));
    tokio::time::sleep(Duration::from_millis(100)).await;
    xml(
        master,
        "VM.set_name_label",
        &[s(&session), s(&web), s("ignored")],
    )
    .await
    .unwrap();
    xml(
        master,
        "VM.set_name_label",
        &[s(&session), s(&db01), s("seen")],
    )
    .await
    .unwrap();
    let woken = waiter.await.unwrap().unwrap();
    let events = events_of(&woken);
    assert_eq!(events.len(), 1, "object subscription");
    assert_eq!(events[0].get("ref"), Some(&s(&db01)));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "woken by the change, not the timeout"
    );

    assert_eq!(
        code(from(&["vm"], "garbage", 0.0).await),
        (
            "EVENT_FROM_TOKEN_PARSE_FAILURE".to_owned(),
            vec!["garbage".into()]
        )
    );
    let injected = xml(master, "event.inject", &[s(&session), s("VM"), s(&web)])
        .await
        .unwrap();
    let batch = from(&["vm"], injected.as_str().unwrap(), 1.0)
        .await
        .unwrap();
    assert_eq!(events_of(&batch)[0].get("operation"), Some(&s("mod")));
    assert_eq!(
        code(xml(master, "event.inject", &[s(&session), s("vm"), s(&web)]).await),
        ("HANDLE_INVALID".to_owned(), vec!["vm".into(), web.clone()])
    );
}

#[tokio::test]
async fn faults_fire_on_the_nth_call_and_latency_applies() {
    let pool = start(fixture()).await;
    let master = pool.master().address;
    let session = login(&pool).await;
    json(
        master,
        "sim.fail_call",
        &[
            s("VM.get_all"),
            Value::Int(2),
            s("TOO_MANY_PENDING_TASKS"),
            Value::Array(Vec::new()),
        ],
    )
    .await
    .unwrap();
    assert!(xml(master, "VM.get_all", &[s(&session)]).await.is_ok());
    assert_eq!(
        code(xml(master, "VM.get_all", &[s(&session)]).await),
        ("TOO_MANY_PENDING_TASKS".to_owned(), vec![])
    );
    assert!(xml(master, "VM.get_all", &[s(&session)]).await.is_ok());

    pool.faults()
        .add(FaultRule::fail_call("VM.clone", 1, "SR_FULL", &["10", "5"]));
    let vm = named(&pool, ClassId::Vm, "db01");
    let task = xml(master, "Async.VM.clone", &[s(&session), s(&vm), s("c")])
        .await
        .unwrap();
    let record = wait_task(master, &session, task.as_str().unwrap()).await;
    assert_eq!(
        record
            .get("error_info")
            .unwrap()
            .clone()
            .decode::<Vec<String>>()
            .unwrap(),
        ["SR_FULL", "10", "5"]
    );

    pool.faults().add(FaultRule::latency(
        "pool.get_all",
        Duration::from_millis(200),
    ));
    let started = Instant::now();
    xml(master, "pool.get_all", &[s(&session)]).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(200));

    let dump = xml(master, "sim.dump", &[]).await.unwrap();
    let dump: serde_json::Value = serde_json::from_str(dump.as_str().unwrap()).unwrap();
    assert_eq!(dump["classes"]["VM"][&vm]["name_label"], "db01");
    assert_eq!(pool.dump()["classes"]["pool"].as_object().unwrap().len(), 1);
}

#[tokio::test]
async fn faults_armed_by_the_builder_fail_the_nth_call_with_their_error() {
    let pool = start(PoolSpec::new("armed").fault(FaultRule::fail_call(
        "VM.get_all",
        2,
        "SR_BACKEND_FAILURE_44",
        &["", "There is insufficient space", ""],
    )))
    .await;
    let master = pool.master().address;
    let session = login(&pool).await;
    assert_eq!(pool.faults().rules().len(), 1, "armed at start");
    assert!(xml(master, "VM.get_all", &[s(&session)]).await.is_ok());
    assert_eq!(
        code(json(master, "VM.get_all", &[s(&session)]).await),
        (
            "SR_BACKEND_FAILURE_44".to_owned(),
            vec![
                String::new(),
                "There is insufficient space".to_owned(),
                String::new()
            ]
        ),
        "the 2nd call, whichever the transport"
    );
    assert!(xml(master, "VM.get_all", &[s(&session)]).await.is_ok());
    assert!(pool.faults().rules().is_empty(), "it fired once");
}

/// A two-pool TOML scenario: `[[pool.fault]]` is armed at start, and the pools share nothing
/// (ports, credentials, sessions, objects, faults).
#[tokio::test]
async fn toml_scenarios_arm_their_faults_and_run_independent_pools() {
    let scenario = xapi_sim::Scenario::from_toml(
        r#"
        [[pool]]
        name = "site-a"
        tls = false
        password = "pw-a"
        [[pool.vm]]
        name = "origin"
        [[pool.fault]]
        kind = "fail_call"
        method = "VM.get_all"
        nth = 2
        code = "SR_BACKEND_FAILURE_44"
        params = ["", "There is insufficient space", ""]

        [[pool]]
        name = "site-b"
        tls = false
        password = "pw-b"
        "#,
    )
    .unwrap();
    let mut pools = Vec::new();
    for spec in scenario.pools {
        pools.push(xapi_sim::Pool::start(spec).await.unwrap());
    }
    let [a, b] = &pools[..] else {
        panic!("two pools")
    };
    let (a_address, b_address) = (a.master().address, b.master().address);
    assert_ne!(a_address, b_address);
    assert_ne!(a.master().nbd, b.master().nbd);
    let login_to = |address, password: &'static str| async move {
        xml(
            address,
            "session.login_with_password",
            &[s("root"), s(password)],
        )
        .await
    };
    assert_eq!(
        code(login_to(b_address, "pw-a").await).0,
        "SESSION_AUTHENTICATION_FAILED"
    );
    let a_session = login_to(a_address, "pw-a").await.unwrap();
    let b_session = login_to(b_address, "pw-b").await.unwrap();
    assert_eq!(
        code(xml(b_address, "VM.get_all", std::slice::from_ref(&a_session)).await).0,
        "SESSION_INVALID"
    );

    // The TOML fault: pool a's 2nd VM.get_all fails exactly as written; pool b's calls are
    // neither counted nor failed.
    assert!(
        xml(a_address, "VM.get_all", std::slice::from_ref(&a_session))
            .await
            .is_ok()
    );
    for _ in 0..2 {
        assert!(
            xml(b_address, "VM.get_all", std::slice::from_ref(&b_session))
                .await
                .is_ok()
        );
    }
    assert_eq!(
        code(xml(a_address, "VM.get_all", std::slice::from_ref(&a_session)).await),
        (
            "SR_BACKEND_FAILURE_44".to_owned(),
            vec![
                String::new(),
                "There is insufficient space".to_owned(),
                String::new()
            ]
        )
    );
    assert!(
        xml(a_address, "VM.get_all", std::slice::from_ref(&a_session))
            .await
            .is_ok()
    );

    // A VM created in pool a exists there only.
    let origin = xml(
        a_address,
        "VM.get_by_name_label",
        &[a_session.clone(), s("origin")],
    )
    .await
    .unwrap()
    .decode::<Vec<String>>()
    .unwrap();
    let created = xml(
        a_address,
        "VM.clone",
        &[a_session.clone(), s(&origin[0]), s("created in a")],
    )
    .await
    .unwrap();
    let find = |address, session: Value, name: &'static str| async move {
        xml(address, "VM.get_by_name_label", &[session, s(name)])
            .await
            .unwrap()
            .decode::<Vec<String>>()
            .unwrap()
    };
    assert_eq!(
        find(a_address, a_session.clone(), "created in a").await,
        [created.as_str().unwrap()]
    );
    assert!(
        find(b_address, b_session.clone(), "created in a")
            .await
            .is_empty()
    );
    assert!(
        find(b_address, b_session.clone(), "origin")
            .await
            .is_empty()
    );
    assert_eq!(
        xml(b_address, "VM.get_record", &[b_session, created])
            .await
            .unwrap_err()
            .code,
        "HANDLE_INVALID"
    );
    let names: Vec<serde_json::Value> = pools
        .iter()
        .map(|pool| {
            let dump = pool.dump();
            let pools = dump["classes"]["pool"].as_object().unwrap().clone();
            pools.values().next().unwrap()["name_label"].clone()
        })
        .collect();
    assert_eq!(names, ["site-a", "site-b"]);
}

#[tokio::test]
async fn tls_pools_serve_https_with_a_pinnable_certificate() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let pool = xapi_sim::Pool::start(PoolSpec::new("tls").credentials("root", "pw"))
        .await
        .unwrap();
    assert!(pool.url().starts_with("https://127.0.0.1:"));
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls_pki_types::CertificateDer::from(
            pool.master().certificate.der().to_vec(),
        ))
        .unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(pool.master().address)
        .await
        .unwrap();
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = connector
        .connect(name, tcp)
        .await
        .expect("the pinned certificate verifies for 127.0.0.1");
    let body = xmlrpc::encode_call("session.login_with_password", &[s("root"), s("pw")]);
    let mut request = post("/", "text/xml", &body);
    request.splice(
        request.len() - body.len() - 2..request.len() - body.len() - 2,
        b"Connection: close\r\n".iter().copied(),
    );
    tls.write_all(&request).await.unwrap();
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut response))
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&response);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("<value>Success</value>"), "{text}");

    let session = login_over_tls_is_needed(&pool).await;
    assert!(session, "plain HTTP on a TLS port is not served");
}

async fn login_over_tls_is_needed(pool: &xapi_sim::Pool) -> bool {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(pool.master().address)
        .await
        .unwrap();
    stream
        .write_all(&post("/", "text/xml", b"<x/>"))
        .await
        .unwrap();
    let mut buffer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut buffer)).await;
    !matches!(read, Ok(Ok(_))) || !buffer.starts_with(b"HTTP/1.1 ")
}

#[tokio::test]
async fn the_binary_runs_a_toml_scenario_and_prints_urls() {
    struct Child(std::process::Child);
    impl Drop for Child {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let directory = tempfile::tempdir().unwrap();
    let scenario = directory.path().join("scenario.toml");
    std::fs::write(
        &scenario,
        "[[pool]]\nname = \"from toml\"\ntls = false\npassword = \"pw\"\n\
         [[pool.vm]]\nname = \"vm1\"\npower_state = \"Running\"\ndisk = [{ size = \"8 MiB\" }]\n\
         [[pool]]\nname = \"second\"\ntls = false\n",
    )
    .unwrap();
    let mut child = Child(
        std::process::Command::new(env!("CARGO_BIN_EXE_xapi-sim"))
            .arg(&scenario)
            .arg("--json")
            .arg("--cert-dir")
            .arg(directory.path())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stdout = child.0.stdout.take().unwrap();
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line).unwrap();
        line
    });
    let line = tokio::time::timeout(Duration::from_secs(20), line)
        .await
        .unwrap()
        .unwrap();
    let pools: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(pools[0]["name"], "from toml");
    assert_eq!(pools[0]["password"], "pw");
    let url = pools[0]["url"].as_str().unwrap();
    let address: std::net::SocketAddr = url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .unwrap();
    let session = xml(
        address,
        "session.login_with_password",
        &[s("root"), s("pw")],
    )
    .await
    .unwrap();
    let vms = xml(address, "VM.get_by_name_label", &[session, s("vm1")])
        .await
        .unwrap();
    assert_eq!(vms.decode::<Vec<String>>().unwrap().len(), 1);
    // `--cert-dir` names files `pool<index>-<host>.pem`, as its help says.
    assert_eq!(pools[1]["name"], "second");
    assert_ne!(pools[0]["url"], pools[1]["url"]);
    for (index, pool) in pools.as_array().unwrap().iter().enumerate() {
        let certificate = std::path::Path::new(pool["hosts"][0]["certificate"].as_str().unwrap());
        assert_eq!(
            certificate,
            directory.path().join(format!("pool{index}-host-0.pem"))
        );
        let pem = std::fs::read_to_string(certificate).unwrap();
        assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"), "{pem}");
    }
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_xapi-sim"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&help.stdout).contains("pool<index>-<host>.pem"),
        "the help names the files"
    );
}
