//! The client against a small scripted server (tests/common): transports, sessions, redirects,
//! tasks, transfers, TLS.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a failed test"
)]

mod common;

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::{Options, PASSWORD, TestCert, TestHost};
use futures::StreamExt;
use xenapi::{
    CancellationToken, Client, ConnectUrl, Error, ErrorCode, ExportFormat, ImportFormat, Ref,
    Secret, TransportKind, Trust, UploadBody, Value, Vdi, Vm, WaitOptions, Wire,
};

async fn connect(host: &TestHost, transport: TransportKind) -> Client {
    Client::builder(ConnectUrl::parse(&host.url()).unwrap())
        .transport(transport)
        .connect()
        .await
        .unwrap()
}

fn loopback2() -> IpAddr {
    IpAddr::from([127, 0, 0, 2])
}

#[tokio::test]
async fn calls_over_both_transports_and_logout() {
    let host = TestHost::start(Options::default()).await;
    for (transport, wire) in [
        (TransportKind::JsonRpc, Wire::JsonRpc),
        (TransportKind::XmlRpc, Wire::XmlRpc),
    ] {
        let client = connect(&host, transport).await;
        assert_eq!(client.wire(), wire);
        let vms = client.get_all_records::<Vm>().await.unwrap();
        assert_eq!(vms.len(), 3);
        let first = vms.get(&Ref::new("OpaqueRef:vm-0")).unwrap();
        assert_eq!(
            (first.name_label.as_str(), first.memory_static_max),
            ("vm0", 4 << 30)
        );
        let error = client
            .call_value("VM.no_such_method", vec![])
            .await
            .unwrap_err();
        assert!(error.is_api(ErrorCode::MessageMethodUnknown), "{error}");
        client.close().await.unwrap();
        assert!(matches!(
            client.call_value("VM.get_all_records", vec![]).await,
            Err(Error::Closed)
        ));
    }
    let db = host.db();
    assert_eq!(db.count("session.logout"), 2);
    assert!(db.sessions.is_empty());
}

#[tokio::test]
async fn auto_prefers_json_and_falls_back_to_xml() {
    let host = TestHost::start(Options::default()).await;
    assert_eq!(
        connect(&host, TransportKind::Auto).await.wire(),
        Wire::JsonRpc
    );
    let no_json = TestHost::start(Options {
        no_json: true,
        ..Options::default()
    })
    .await;
    let client = connect(&no_json, TransportKind::Auto).await;
    assert_eq!(client.wire(), Wire::XmlRpc);
    let error = client.get_all::<Vm>().await.unwrap_err();
    assert!(
        error.is_api(ErrorCode::MessageMethodUnknown),
        "not scripted: an API error, over XML: {error}"
    );
    assert_eq!(client.get_all_records::<Vm>().await.unwrap().len(), 3);
    // Forced JSON on a host without it fails clearly.
    let error = Client::builder(ConnectUrl::parse(&no_json.url()).unwrap())
        .transport(TransportKind::JsonRpc)
        .connect()
        .await
        .unwrap_err();
    assert!(
        matches!(error, Error::HttpStatus { status: 404, .. }),
        "{error}"
    );
}

#[tokio::test]
async fn wrong_password_is_an_api_error_without_secrets() {
    let host = TestHost::start(Options::default()).await;
    let url = ConnectUrl::parse(&host.base()).unwrap();
    let error = Client::builder(url)
        .user("root")
        .password(Secret::new("wrong-pw"))
        .connect()
        .await
        .unwrap_err();
    assert!(
        error.is_api(ErrorCode::SessionAuthenticationFailed),
        "{error}"
    );
    assert!(!format!("{error} {error:?}").contains("wrong-pw"));
    let missing = Client::builder(ConnectUrl::parse(&host.base()).unwrap())
        .connect()
        .await
        .unwrap_err();
    assert!(matches!(missing, Error::Credentials { .. }), "{missing}");
}

#[tokio::test]
async fn relogs_in_once_on_session_invalid() {
    let host = TestHost::start(Options::default()).await;
    for transport in [TransportKind::JsonRpc, TransportKind::XmlRpc] {
        let client = connect(&host, transport).await;
        let before = client.session().unwrap();
        host.db().expire_sessions = true;
        assert_eq!(client.get_all_records::<Vm>().await.unwrap().len(), 3);
        assert_ne!(client.session().unwrap(), before);
        // Nothing about the session reaches Debug.
        let shown = format!("{client:?} {:?}", client.session().unwrap());
        assert!(
            !shown.contains(client.session().unwrap().as_str()) && !shown.contains(PASSWORD),
            "{shown}"
        );
    }
    assert_eq!(host.db().login_count, 4);
}

/// A connection closed with no answer: a read is resent once on a new connection, a call that
/// changes something is not (it may have run), so the caller sees a transport error and the
/// server saw exactly one such call.
#[tokio::test]
async fn only_read_calls_are_resent_after_a_connection_dies_unanswered() {
    let host = TestHost::start(Options::default()).await;
    for transport in [TransportKind::JsonRpc, TransportKind::XmlRpc] {
        let client = connect(&host, transport).await;
        let vm: Ref<Vm> = Ref::new("OpaqueRef:vm-0");

        host.db()
            .drop_unanswered
            .push("VM.get_other_config".to_owned());
        let before = host.db().count("VM.get_other_config");
        client
            .call_value("VM.get_other_config", vec![Value::from(vm.as_str())])
            .await
            .unwrap();
        assert_eq!(host.db().count("VM.get_other_config"), before + 2);

        host.db()
            .drop_unanswered
            .push("VM.add_to_other_config".to_owned());
        let before = host.db().count("VM.add_to_other_config");
        let error = client
            .call_value(
                "VM.add_to_other_config",
                vec![Value::from(vm.as_str()), Value::from("k"), Value::from("v")],
            )
            .await
            .unwrap_err();
        assert!(!matches!(error, Error::Api { .. }), "{error:?}");
        assert_eq!(host.db().count("VM.add_to_other_config"), before + 1);
        client.close().await.unwrap();
    }
}

#[tokio::test]
async fn session_invalid_is_retried_once_and_redacted() {
    let host = TestHost::start(Options::default()).await;
    let client = connect(&host, TransportKind::JsonRpc).await;
    host.db().reject_sessions = true;
    let error = client.get_all_records::<Vm>().await.unwrap_err();
    assert!(error.is_api(ErrorCode::SessionInvalid), "{error}");
    let shown = format!("{error} {error:?}");
    assert!(
        !shown.contains("OpaqueRef:session") && shown.contains("<redacted>"),
        "{shown}"
    );
    assert_eq!(host.db().login_count, 2, "exactly one re-login");
}

#[tokio::test]
async fn follows_host_is_slave_to_the_master() {
    let master = TestHost::start(Options::default()).await;
    let slave = TestHost::start(Options {
        slave_of: Some("127.0.0.1".into()),
        ip: Some(loopback2()),
        port: master.addr.port(),
        ..Options::default()
    })
    .await;
    let client = connect(&slave, TransportKind::Auto).await;
    assert_eq!(client.master_url().host(), "127.0.0.1");
    assert_eq!(client.get_all_records::<Vm>().await.unwrap().len(), 3);
    assert_eq!(slave.db().count("session.login_with_password"), 1);

    // A member pointing at another member: give up after one redirect.
    let loop_host = TestHost::start(Options {
        slave_of: Some("127.0.0.2".into()),
        ip: Some(loopback2()),
        ..Options::default()
    })
    .await;
    let error = connect_err(&loop_host).await;
    assert!(matches!(error, Error::TooManyRedirects { .. }), "{error}");
}

async fn connect_err(host: &TestHost) -> Error {
    Client::builder(ConnectUrl::parse(&host.url()).unwrap())
        .connect()
        .await
        .unwrap_err()
}

#[tokio::test]
async fn async_task_success_with_progress() {
    let host = TestHost::start(Options::default()).await;
    for transport in [TransportKind::JsonRpc, TransportKind::XmlRpc] {
        let client = connect(&host, transport).await;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        let options = WaitOptions::with_timeout(Duration::from_secs(10))
            .progress(move |progress| record.lock().unwrap().push(progress));
        let snapshot = client
            .vm_snapshot(&Ref::new("OpaqueRef:vm-0"), "snap", &[], &options)
            .await
            .unwrap();
        assert_eq!(snapshot, Ref::<Vm>::new("OpaqueRef:vm-snapshot"));
        let progress = seen.lock().unwrap().clone();
        assert_eq!(progress.last(), Some(&1.0), "{progress:?}");
        // Void async result.
        client
            .vdi_enable_cbt(&Ref::new("OpaqueRef:vdi-1"), &WaitOptions::default())
            .await
            .unwrap();
    }
    let db = host.db();
    assert!(db.tasks.is_empty(), "every finished task is destroyed");
}

#[tokio::test]
async fn async_task_failure_and_synchronous_fault() {
    let host = TestHost::start(Options::default()).await;
    let client = connect(&host, TransportKind::XmlRpc).await;
    let error = client
        .destroy::<Vdi>(&Ref::new("OpaqueRef:vdi-7"), &WaitOptions::default())
        .await
        .unwrap_err();
    match &error {
        Error::Api { code, params } => {
            assert_eq!(code, "VDI_IN_USE");
            assert_eq!(params, &["OpaqueRef:vdi-7", "destroy"]);
        }
        other => panic!("{other}"),
    }
    assert!(error.is_api(ErrorCode::VdiInUse));
    let fault = client.call_async("VM.get_all", vec![]).await.unwrap_err();
    assert!(fault.is_api(ErrorCode::Fault), "{fault}");
}

#[tokio::test]
async fn task_timeout_and_cancellation_cancel_the_task() {
    let host = TestHost::start(Options::default()).await;
    let client = connect(&host, TransportKind::JsonRpc).await;
    let started = tokio::time::Instant::now();
    let error = client
        .run_async::<Ref<Vm>>(
            "VM.clone",
            vec![Value::from("OpaqueRef:vm-0"), Value::from("c")],
            &WaitOptions::with_timeout(Duration::from_millis(300)),
        )
        .await
        .unwrap_err();
    assert!(matches!(error, Error::Timeout { .. }), "{error}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(host.db().count("task.cancel"), 1);

    let token = CancellationToken::new();
    let trigger = token.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        trigger.cancel();
    });
    let error = client
        .vm_clone(
            &Ref::new("OpaqueRef:vm-0"),
            "c",
            &WaitOptions::default().cancel_on(token),
        )
        .await
        .unwrap_err();
    assert!(matches!(error, Error::Cancelled { .. }), "{error}");
    let db = host.db();
    assert_eq!(db.count("task.cancel"), 2);
    assert!(db.tasks.is_empty(), "abandoned tasks are destroyed");
}

#[tokio::test]
async fn server_side_cancellation_is_reported() {
    let host = TestHost::start(Options::default()).await;
    let client = connect(&host, TransportKind::JsonRpc).await;
    let task = client
        .call_async(
            "VM.clone",
            vec![Value::from("OpaqueRef:vm-0"), Value::from("c")],
        )
        .await
        .unwrap();
    client.task_cancel(&task).await.unwrap();
    let error = client
        .wait_task(&task, &WaitOptions::with_timeout(Duration::from_secs(5)))
        .await
        .unwrap_err();
    assert!(matches!(error, Error::TaskCancelled), "{error}");
}

#[tokio::test]
async fn map_put_is_remove_then_add() {
    let host = TestHost::start(Options::default()).await;
    let client = connect(&host, TransportKind::JsonRpc).await;
    let vm: Ref<Vm> = Ref::new("OpaqueRef:vm-0");
    client
        .map_put(&vm, "other_config", "xo:k", "1")
        .await
        .unwrap();
    client
        .map_put(&vm, "other_config", "xo:k", "2")
        .await
        .unwrap();
    let config: xenapi::StringMap = client.get_field(&vm, "other_config").await.unwrap();
    assert_eq!(config.get("xo:k").map(String::as_str), Some("2"));
    client
        .map_remove(&vm, "other_config", "xo:k")
        .await
        .unwrap();
    assert!(host.db().vm_other_config.is_empty());
}

#[tokio::test]
async fn json_non_finite_floats_decode() {
    let host = TestHost::start(Options::default()).await;
    let client = connect(&host, TransportKind::JsonRpc).await;
    let value = client.call_value("test.non_finite", vec![]).await.unwrap();
    assert!(matches!(value.get("nan"), Some(Value::Double(x)) if x.is_nan()));
    assert_eq!(value.get("inf"), Some(&Value::Double(f64::INFINITY)));
}

fn disk(len: usize) -> Vec<u8> {
    (0..len)
        .map(|index| u8::try_from(index % 251).unwrap())
        .collect()
}

#[tokio::test]
async fn export_streams_and_checks_the_task() {
    let host = TestHost::start(Options::default()).await;
    host.db().export_data = disk(100_000);
    let client = connect(&host, TransportKind::JsonRpc).await;
    let vdi: Ref<Vdi> = Ref::new("OpaqueRef:vdi-1");
    let mut download = client
        .export_raw_vdi(&vdi, ExportFormat::Vhd, Some(&Ref::new("OpaqueRef:vdi-0")))
        .await
        .unwrap();
    let mut received = Vec::new();
    while let Some(chunk) = download.next().await {
        received.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(received, disk(100_000));
    assert_eq!(
        download
            .finish(&WaitOptions::with_timeout(Duration::from_secs(5)))
            .await
            .unwrap(),
        None
    );
    assert!(host.db().tasks.is_empty());

    // A failure after the 200: the stream breaks, and finish() reports the task's error.
    host.db().export_fail_after = Some(8192);
    let mut download = client
        .export_vm(&Ref::new("OpaqueRef:vm-0"), xenapi::Compression::Zstd)
        .await
        .unwrap();
    let mut received = 0usize;
    let mut stream_error = None;
    while let Some(chunk) = download.next().await {
        match chunk {
            Ok(bytes) => received += bytes.len(),
            Err(error) => stream_error = Some(error),
        }
    }
    assert!(received <= 8192, "{received}");
    assert!(
        stream_error.is_some(),
        "a truncated stream is an error on the stream"
    );
    let error = download
        .finish(&WaitOptions::with_timeout(Duration::from_secs(5)))
        .await
        .unwrap_err();
    assert!(error.is_api(ErrorCode::VdiIoError), "{error}");
}

#[tokio::test]
async fn dropped_download_cancels_its_task() {
    let host = TestHost::start(Options::default()).await;
    host.db().export_data = disk(10_000);
    let client = connect(&host, TransportKind::JsonRpc).await;
    let download = client
        .export_raw_vdi(&Ref::new("OpaqueRef:vdi-1"), ExportFormat::Raw, None)
        .await
        .unwrap();
    drop(download);
    for _ in 0..100 {
        if host.db().count("task.destroy") == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(host.db().count("task.cancel"), 1);
    assert_eq!(host.db().count("task.destroy"), 1);
}

#[tokio::test]
async fn import_sends_exact_content_length() {
    let host = TestHost::start(Options::default()).await;
    let client = connect(&host, TransportKind::XmlRpc).await;
    let data = disk(70_000);
    let stream = futures::stream::iter(
        data.chunks(10_000)
            .map(|chunk| Ok::<_, std::io::Error>(Bytes::copy_from_slice(chunk)))
            .collect::<Vec<_>>(),
    );
    let body = UploadBody::new(70_000, stream);
    client
        .import_raw_vdi(
            &Ref::new("OpaqueRef:vdi-1"),
            ImportFormat::Vhd,
            body,
            &WaitOptions::default(),
        )
        .await
        .unwrap();
    let db = host.db();
    assert_eq!(db.uploaded.as_deref(), Some(&data[..]));
    let header = |name: &str| {
        db.upload_headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
    };
    assert_eq!(header("content-length").as_deref(), Some("70000"));
    assert_eq!(header("transfer-encoding"), None);
    assert_eq!(header("expect"), None);
    assert!(db.tasks.is_empty());
}

#[tokio::test]
async fn import_chunked_frames() {
    let host = TestHost::start(Options::default()).await;
    let client = connect(&host, TransportKind::JsonRpc).await;
    let frames = vec![
        (4096u64, Bytes::from(vec![1u8; 512])),
        (512u64, Bytes::from(vec![2u8; 1024])),
    ];
    let lengths: Vec<u32> = frames
        .iter()
        .map(|(_, data)| u32::try_from(data.len()).unwrap())
        .collect();
    let body = UploadBody::chunked(
        lengths,
        futures::stream::iter(frames.into_iter().map(Ok::<_, std::io::Error>)),
    )
    .unwrap();
    assert_eq!(body.len(), 12 + 512 + 12 + 1024 + 12);
    client
        .import_raw_vdi(
            &Ref::new("OpaqueRef:vdi-1"),
            ImportFormat::Chunked,
            body,
            &WaitOptions::default(),
        )
        .await
        .unwrap();
    let written = host.db().uploaded.clone().unwrap();
    assert_eq!(written.len(), 4608);
    assert!(written[512..1536].iter().all(|byte| *byte == 2));
    assert!(written[4096..4608].iter().all(|byte| *byte == 1));
    assert!(written[..512].iter().all(|byte| *byte == 0));
}

#[tokio::test]
async fn upload_failures() {
    let host = TestHost::start(Options::default()).await;
    let client = connect(&host, TransportKind::JsonRpc).await;
    let vdi: Ref<Vdi> = Ref::new("OpaqueRef:vdi-1");
    // A stream shorter than its declared length never reaches the server as "complete".
    let short = UploadBody::new(
        100,
        futures::stream::iter([Ok::<_, std::io::Error>(Bytes::from_static(b"only ten b"))]),
    );
    let error = client
        .import_raw_vdi(&vdi, ImportFormat::Raw, short, &WaitOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            Error::BodyLength {
                expected: 100,
                found: 10
            }
        ),
        "{error}"
    );
    // The caller's stream failing.
    let failing = UploadBody::new(
        100,
        futures::stream::iter([
            Ok(Bytes::from_static(b"abc")),
            Err(std::io::Error::other("disk read failed")),
        ]),
    );
    let error = client
        .import_raw_vdi(&vdi, ImportFormat::Raw, failing, &WaitOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(error, Error::Body { .. }), "{error}");
    // The server failing the task after reading the body.
    host.db().upload_fail = true;
    let error = client
        .import_raw_vdi(
            &vdi,
            ImportFormat::Raw,
            UploadBody::from_bytes(Bytes::from(disk(5000))),
            &WaitOptions::default(),
        )
        .await
        .unwrap_err();
    assert!(error.is_api(ErrorCode::VdiIoError), "{error}");
    // The server breaking the connection mid-body.
    host.db().upload_fail = false;
    host.db().upload_break_after = Some(64 * 1024);
    let big = disk(4 << 20);
    let stream = futures::stream::iter(
        big.chunks(64 * 1024)
            .map(|chunk| Ok::<_, std::io::Error>(Bytes::copy_from_slice(chunk)))
            .collect::<Vec<_>>(),
    );
    let error = client
        .import_raw_vdi(
            &vdi,
            ImportFormat::Raw,
            UploadBody::new(4 << 20, stream),
            &WaitOptions::with_timeout(Duration::from_secs(10)),
        )
        .await
        .unwrap_err();
    assert!(
        error.is_api(ErrorCode::VdiIoError)
            || matches!(error, Error::Http { .. } | Error::Protocol { .. }),
        "{error}"
    );
    assert!(
        host.db().tasks.is_empty(),
        "failed transfers leave no task behind"
    );
}

#[tokio::test]
async fn vm_import_returns_the_new_vms() {
    let host = TestHost::start(Options::default()).await;
    let client = connect(&host, TransportKind::JsonRpc).await;
    let vms = client
        .import_vm(
            Some(&Ref::new("OpaqueRef:sr-1")),
            false,
            UploadBody::from_bytes(Bytes::from_static(b"xva bytes")),
            &WaitOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(vms, vec![Ref::<Vm>::new("OpaqueRef:vm-imported")]);
}

#[tokio::test]
async fn transfers_follow_302_to_the_host_that_sees_the_storage() {
    let member = TestHost::start(Options::default()).await;
    member.db().export_data = disk(50_000);
    let master = TestHost::start_with_db(
        Options {
            redirect_transfers_to: Some(member.base()),
            ..Options::default()
        },
        member.db.clone(),
    )
    .await;
    let client = connect(&master, TransportKind::JsonRpc).await;
    let download = client
        .export_raw_vdi(&Ref::new("OpaqueRef:vdi-1"), ExportFormat::Raw, None)
        .await
        .unwrap();
    let chunks: Vec<_> = download.collect::<Vec<_>>().await;
    assert_eq!(
        chunks
            .into_iter()
            .map(|chunk| chunk.unwrap().to_vec())
            .collect::<Vec<_>>()
            .concat(),
        disk(50_000)
    );

    // The upload body is held back until the 302 is seen, then sent whole to the member.
    let data = disk(30_000);
    client
        .import_raw_vdi(
            &Ref::new("OpaqueRef:vdi-1"),
            ImportFormat::Raw,
            UploadBody::from_bytes(Bytes::from(data.clone())),
            &WaitOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(member.db().uploaded.as_deref(), Some(&data[..]));
}

/// A master reached over https that redirects a transfer to plain http is refused: following
/// it would send the session id in clear text (xapi always redirects to https).
#[tokio::test]
async fn a_redirect_from_https_to_http_is_refused() {
    let member = TestHost::start(Options::default()).await;
    member.db().export_data = disk(4_096);
    let cert = TestCert::new(&["127.0.0.1"]);
    let master = TestHost::start_with_db(
        Options {
            tls: Some(cert.clone()),
            redirect_transfers_to: Some(member.base()),
            ..Options::default()
        },
        member.db.clone(),
    )
    .await;
    let client = Client::builder(ConnectUrl::parse(&master.url()).unwrap())
        .trust(Trust::Pinned(cert.fingerprint()))
        .connect()
        .await
        .unwrap();
    let error = client
        .export_raw_vdi(&Ref::new("OpaqueRef:vdi-1"), ExportFormat::Raw, None)
        .await
        .expect_err("the redirect must be refused");
    assert!(
        error.to_string().contains("from https to plain http"),
        "{error}"
    );
}

#[tokio::test]
async fn tls_pinning_ca_and_insecure() {
    let cert = TestCert::new(&["127.0.0.1", "localhost"]);
    let host = TestHost::start(Options {
        tls: Some(cert.clone()),
        ..Options::default()
    })
    .await;
    let url = ConnectUrl::parse(&host.url()).unwrap();

    let pinned = Client::builder(url.clone())
        .trust(Trust::Pinned(cert.fingerprint()))
        .connect()
        .await
        .unwrap();
    assert_eq!(pinned.get_all_records::<Vm>().await.unwrap().len(), 3);

    let other = TestCert::new(&["127.0.0.1"]);
    let error = Client::builder(url.clone())
        .trust(Trust::Pinned(other.fingerprint()))
        .connect()
        .await
        .unwrap_err();
    assert!(matches!(error, Error::Tls { .. }), "{error}");

    let ca = Client::builder(url.clone())
        .trust(Trust::CaPem(cert.pem.clone().into_bytes()))
        .connect()
        .await;
    assert!(ca.is_ok(), "{ca:?}");

    let default = Client::builder(url.clone()).connect().await.unwrap_err();
    assert!(
        matches!(default, Error::Tls { .. }),
        "verification is on by default: {default}"
    );

    let insecure = Client::builder(url)
        .trust(Trust::InsecureSkipVerification)
        .connect()
        .await;
    assert!(insecure.is_ok());
}

#[tokio::test]
async fn pinned_trust_follows_the_master_thumbprint() {
    let master_cert = TestCert::new(&["127.0.0.1"]);
    let slave_cert = TestCert::new(&["127.0.0.2"]);
    let master = TestHost::start(Options {
        tls: Some(master_cert.clone()),
        ..Options::default()
    })
    .await;
    let slave = TestHost::start(Options {
        tls: Some(slave_cert.clone()),
        slave_of: Some("127.0.0.1".into()),
        master_thumbprint: Some(master_cert.fingerprint().to_string()),
        ip: Some(loopback2()),
        port: master.addr.port(),
        ..Options::default()
    })
    .await;
    let client = Client::builder(ConnectUrl::parse(&slave.url()).unwrap())
        .trust(Trust::Pinned(slave_cert.fingerprint()))
        .connect()
        .await
        .unwrap();
    assert_eq!(client.master_url().host(), "127.0.0.1");
    assert_eq!(client.get_all_records::<Vm>().await.unwrap().len(), 3);
}

#[tokio::test]
async fn pinned_trust_learns_redirect_hosts_through_the_api() {
    let master_cert = TestCert::new(&["127.0.0.1"]);
    let member_cert = TestCert::new(&["127.0.0.2"]);
    let member = TestHost::start(Options {
        tls: Some(member_cert),
        ip: Some(loopback2()),
        ..Options::default()
    })
    .await;
    member.db().export_data = disk(20_000);
    let master = TestHost::start_with_db(
        Options {
            tls: Some(master_cert.clone()),
            redirect_transfers_to: Some(member.base()),
            ..Options::default()
        },
        member.db.clone(),
    )
    .await;
    let client = Client::builder(ConnectUrl::parse(&master.url()).unwrap())
        .trust(Trust::Pinned(master_cert.fingerprint()))
        .connect()
        .await
        .unwrap();
    let download = client
        .export_raw_vdi(&Ref::new("OpaqueRef:vdi-1"), ExportFormat::Raw, None)
        .await
        .unwrap();
    let bytes: usize = download
        .map(|chunk| chunk.unwrap().len())
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .sum();
    assert_eq!(bytes, 20_000);
    assert_eq!(master.db().count("host.get_server_certificate"), 1);
}

#[tokio::test]
async fn dropping_the_last_clone_logs_out() {
    let host = TestHost::start(Options::default()).await;
    let client = connect(&host, TransportKind::JsonRpc).await;
    let clone = client.clone();
    drop(client);
    assert_eq!(clone.get_all_records::<Vm>().await.unwrap().len(), 3);
    drop(clone);
    for _ in 0..100 {
        if host.db().count("session.logout") == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(host.db().count("session.logout"), 1);
}
