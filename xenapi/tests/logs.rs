//! Secrets never reach the logs: every event the client emits at TRACE level during a login, a
//! call, a session expiry with re-login, a failed login and a logout is captured and searched
//! for the password and the session refs the server handed out.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a failed test"
)]

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::{Options, PASSWORD, TestHost};
use xenapi::{Client, ConnectUrl, ErrorCode, Secret, TransportKind, Vm};

/// A `MakeWriter` that appends every formatted event to one shared buffer.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

// A current-thread runtime: the thread-local subscriber sees the client's spawned tasks too.
#[tokio::test(flavor = "current_thread")]
async fn no_password_or_session_in_trace_logs() {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(captured.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let host = TestHost::start(Options::default()).await;
    for transport in [TransportKind::JsonRpc, TransportKind::XmlRpc] {
        let client = Client::builder(ConnectUrl::parse(&host.url()).unwrap())
            .transport(transport)
            .connect()
            .await
            .unwrap();
        client.get_all_records::<Vm>().await.unwrap();
        host.db().expire_sessions = true;
        client.get_all_records::<Vm>().await.unwrap();
        client.close().await.unwrap();
    }
    let wrong = Client::builder(ConnectUrl::parse(&host.base()).unwrap())
        .user("root")
        .password(Secret::new("wrong-pw-77"))
        .connect()
        .await
        .unwrap_err();
    assert!(
        wrong.is_api(ErrorCode::SessionAuthenticationFailed),
        "{wrong}"
    );

    let sessions: Vec<String> = host.db().sessions.iter().cloned().collect();
    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    // The capture must have seen the client at work, or the assertions below prove nothing.
    assert!(
        logs.contains("xenapi"),
        "no client events captured:\n{logs}"
    );
    assert!(!logs.contains(PASSWORD), "password in the logs:\n{logs}");
    assert!(
        !logs.contains("wrong-pw-77"),
        "password in the logs:\n{logs}"
    );
    assert!(
        !logs.contains("OpaqueRef:session"),
        "session ref in the logs:\n{logs}"
    );
    for session in sessions {
        assert!(!logs.contains(&session), "session {session} in the logs");
    }
}
