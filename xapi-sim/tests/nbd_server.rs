//! The simulated xapi-nbd (spec xenapi.md §5.3–5.4 and the NBD items of §6; nbd-cbt.md
//! §3.2–3.5): byte-level handshake and transmission checks with a raw client, TLS policy, the
//! connection limit, dom0 VBDs, faults, and `nbd-client`'s own pool reading through TLS with
//! what `VDI.get_nbd_info` hands out.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a failed test"
)]

mod common;
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use futures::StreamExt as _;
use nbd_client::proto::{OptionCode, OptionReplyType};
use support::{dom0_vbds, snapshot, vdi, vdi_bytes, vdi_sha256};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpStream;
use xapi_sim::db::ClassId;
use xapi_sim::{DiskSpec, FaultRule, NetworkSpec, Pool, PoolSpec, Size, VmSpec};
use xenapi::Value;

const DISK: &str = "vm disk 0";
const SIZE: u64 = 8 << 20;

async fn pool(purpose: &str) -> Pool {
    common::start(
        PoolSpec::new("nbd")
            .network(NetworkSpec::new("storage").purpose(purpose))
            .vm(VmSpec::new("vm").disk(DiskSpec::new(Size::mib(8)).random(0, 5 << 20, 31).cbt())),
    )
    .await
}

/// The first `VDI.get_nbd_info` record: (address, port, exportname, cert, subject).
fn nbd_info(pool: &Pool, disk: &str, session: &str) -> (String, u16, String, String, String) {
    let records = pool
        .sim()
        .read(|db| xapi_sim::db::vdi::nbd_info(db, disk, session))
        .unwrap();
    let Value::Array(records) = records else {
        panic!()
    };
    let Value::Struct(fields) = &records[0] else {
        panic!()
    };
    let field = |name: &str| {
        fields
            .iter()
            .find(|(key, _)| key == name)
            .unwrap()
            .1
            .clone()
    };
    let text = |name: &str| field(name).as_str().unwrap().to_owned();
    let Value::Int(port) = field("port") else {
        panic!()
    };
    (
        text("address"),
        u16::try_from(port).unwrap(),
        text("exportname"),
        text("cert"),
        text("subject"),
    )
}

/// A raw NBD client over any stream.
struct Raw<S> {
    stream: S,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Raw<S> {
    async fn read(&mut self, length: usize) -> Vec<u8> {
        let mut buffer = vec![0; length];
        tokio::time::timeout(Duration::from_secs(10), self.stream.read_exact(&mut buffer))
            .await
            .unwrap()
            .unwrap();
        buffer
    }

    /// Whether the server closed the connection (EOF or reset) without sending anything.
    async fn closed(&mut self) -> bool {
        let mut byte = [0u8; 1];
        matches!(
            tokio::time::timeout(Duration::from_secs(10), self.stream.read(&mut byte))
                .await
                .unwrap(),
            Ok(0) | Err(_)
        )
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
        self.stream.flush().await.unwrap();
    }

    async fn option(&mut self, option: OptionCode, data: &[u8]) {
        let mut out = BytesMut::new();
        nbd_client::proto::handshake::encode_option(option, data, &mut out).unwrap();
        self.send(&out).await;
    }

    /// An option reply: (option, type, payload length).
    async fn option_reply(&mut self) -> (OptionCode, OptionReplyType, u32) {
        let header = nbd_client::proto::OptionReplyHeader::decode(&self.read(20).await).unwrap();
        let _payload = self.read(usize::try_from(header.length).unwrap()).await;
        (header.option, header.reply_type, header.length)
    }

    async fn request(&mut self, flags: u16, command: u16, cookie: u64, offset: u64, length: u32) {
        let mut header = Vec::with_capacity(28);
        header.extend_from_slice(&0x2560_9513u32.to_be_bytes());
        header.extend_from_slice(&flags.to_be_bytes());
        header.extend_from_slice(&command.to_be_bytes());
        header.extend_from_slice(&cookie.to_be_bytes());
        header.extend_from_slice(&offset.to_be_bytes());
        header.extend_from_slice(&length.to_be_bytes());
        self.send(&header).await;
    }

    /// A simple reply header: (error, cookie).
    async fn reply(&mut self) -> (u32, u64) {
        let header = self.read(16).await;
        assert_eq!(header[..4], 0x6744_6698u32.to_be_bytes());
        (
            u32::from_be_bytes(header[4..8].try_into().unwrap()),
            u64::from_be_bytes(header[8..16].try_into().unwrap()),
        )
    }
}

/// Connects, checks the greeting, sends the client flags.
async fn connect(pool: &Pool, client_flags: u32) -> Raw<TcpStream> {
    let stream = TcpStream::connect(pool.master().nbd).await.unwrap();
    let mut raw = Raw { stream };
    let greeting = raw.read(18).await;
    assert_eq!(
        greeting,
        [b"NBDMAGIC".as_slice(), b"IHAVEOPT", &[0x00, 0x01]].concat(),
        "fixed newstyle only, never NO_ZEROES"
    );
    raw.send(&client_flags.to_be_bytes()).await;
    raw
}

/// EXPORT_NAME and its 134-byte reply; returns the size.
async fn export<S: AsyncRead + AsyncWrite + Unpin>(raw: &mut Raw<S>, name: &str) -> u64 {
    raw.option(OptionCode::EXPORT_NAME, name.as_bytes()).await;
    let reply = raw.read(134).await;
    assert_eq!(reply[8..10], [0x00, 0x03], "HAS_FLAGS | READ_ONLY");
    assert!(reply[10..].iter().all(|byte| *byte == 0), "124 zero bytes");
    u64::from_be_bytes(reply[..8].try_into().unwrap())
}

fn upgrade_config(pem: &str) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for certificate in rustls_pemfile_certs(pem) {
        roots.add(certificate).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

fn rustls_pemfile_certs(pem: &str) -> Vec<rustls_pki_types::CertificateDer<'static>> {
    nbd_client::parse_pem_certificates(pem).unwrap()
}

#[tokio::test]
async fn a_plain_handshake_refuses_everything_but_export_name_then_serves_aligned_reads() {
    let pool = pool("insecure_nbd").await;
    let session = support::session(&pool);
    let (disk, _) = vdi(&pool, DISK);
    let (_, _, name, _, _) = nbd_info(&pool, &disk, &session);
    let mut raw = connect(&pool, 1).await;
    for (option, expected) in [
        (OptionCode::GO, OptionReplyType::ERR_UNSUP),
        (OptionCode::INFO, OptionReplyType::ERR_UNSUP),
        (OptionCode::STRUCTURED_REPLY, OptionReplyType::ERR_UNSUP),
        (OptionCode::SET_META_CONTEXT, OptionReplyType::ERR_UNSUP),
        (OptionCode::EXTENDED_HEADERS, OptionReplyType::ERR_UNSUP),
        (OptionCode::LIST, OptionReplyType::ERR_POLICY),
        (OptionCode::STARTTLS, OptionReplyType::ERR_POLICY),
    ] {
        raw.option(option, b"").await;
        assert_eq!(
            raw.option_reply().await,
            (option, expected, 0),
            "{option:?}"
        );
    }
    assert_eq!(dom0_vbds(&pool, &disk), 0);
    assert_eq!(export(&mut raw, &name).await, SIZE);
    assert_eq!(
        dom0_vbds(&pool, &disk),
        1,
        "a read-only dom0 VBD per connection"
    );

    let content = vdi_bytes(&pool, &disk);
    raw.request(0, 0, 7, 1 << 20, 1 << 20).await;
    assert_eq!(raw.reply().await, (0, 7));
    assert_eq!(raw.read(1 << 20).await, content[1 << 20..2 << 20]);
    for (flags, command, offset, length) in [
        (0, 0, 100, 512), // unaligned offset
        (0, 0, 512, 100), // unaligned length
        (1, 0, 0, 512),   // FUA flag: the u32 command is unknown
        (0, 3, 0, 0),     // FLUSH
        (0, 4, 0, 512),   // TRIM
        (0, 7, 0, 512),   // BLOCK_STATUS
    ] {
        raw.request(flags, command, 9, offset, length).await;
        assert_eq!(raw.reply().await, (22, 9), "EINVAL for {command}/{flags}");
    }
    // Pipelined requests are answered one at a time, in order.
    for cookie in 1..=3u64 {
        raw.request(0, 0, cookie, (cookie - 1) * 4096, 4096).await;
    }
    for cookie in 1..=3u64 {
        assert_eq!(raw.reply().await, (0, cookie));
        let offset = usize::try_from((cookie - 1) * 4096).unwrap();
        assert_eq!(raw.read(4096).await, content[offset..offset + 4096]);
    }
    raw.request(0, 2, 0, 0, 0).await;
    assert!(raw.closed().await, "DISC closes");
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        dom0_vbds(&pool, &disk),
        0,
        "the VBD goes with the connection"
    );
}

#[tokio::test]
async fn writes_get_eperm_and_their_undrained_payload_kills_the_connection() {
    let pool = pool("insecure_nbd").await;
    let session = support::session(&pool);
    let (disk, _) = vdi(&pool, DISK);
    let (_, _, name, _, _) = nbd_info(&pool, &disk, &session);
    let mut raw = connect(&pool, 1).await;
    export(&mut raw, &name).await;
    raw.request(0, 1, 5, 0, 512).await;
    raw.send(&[0xaa; 512]).await;
    assert_eq!(raw.reply().await, (1, 5), "EPERM");
    assert!(
        raw.closed().await,
        "the payload is parsed as a request: bad magic, closed"
    );
}

#[tokio::test]
async fn a_read_past_the_end_gets_a_success_header_then_the_connection_drops() {
    let pool = pool("insecure_nbd").await;
    let session = support::session(&pool);
    let (disk, _) = vdi(&pool, DISK);
    let (_, _, name, _, _) = nbd_info(&pool, &disk, &session);
    let mut raw = connect(&pool, 1).await;
    export(&mut raw, &name).await;
    raw.request(0, 0, 3, SIZE - 4096, 8192).await;
    assert_eq!(raw.reply().await, (0, 3));
    assert!(raw.closed().await || raw.closed().await);
}

#[tokio::test]
async fn forced_tls_refuses_clear_text_then_serves_tls_1_2_with_xapis_suites() {
    let pool = pool("nbd").await;
    let session = support::session(&pool);
    let (disk, _) = vdi(&pool, DISK);
    let (_, _, name, cert, subject) = nbd_info(&pool, &disk, &session);

    let mut no_fixed = connect(&pool, 0).await;
    assert!(no_fixed.closed().await, "C_FIXED_NEWSTYLE is required");
    let mut clear = connect(&pool, 1).await;
    for option in [
        OptionCode::GO,
        OptionCode::LIST,
        OptionCode::STRUCTURED_REPLY,
    ] {
        clear.option(option, b"").await;
        assert_eq!(
            clear.option_reply().await,
            (option, OptionReplyType::ERR_TLS_REQD, 0)
        );
    }
    clear.option(OptionCode::EXPORT_NAME, name.as_bytes()).await;
    assert!(clear.closed().await, "EXPORT_NAME in clear text is dropped");
    let mut abort = connect(&pool, 1).await;
    abort.option(OptionCode::ABORT, b"").await;
    assert!(abort.closed().await, "ABORT before TLS: closed without ACK");

    let mut raw = connect(&pool, 1).await;
    raw.option(OptionCode::STARTTLS, b"").await;
    assert_eq!(
        raw.option_reply().await,
        (OptionCode::STARTTLS, OptionReplyType::ACK, 0)
    );
    let server_name = rustls_pki_types::ServerName::try_from(subject.clone()).unwrap();
    let tls = upgrade_config(&cert)
        .connect(server_name, raw.stream)
        .await
        .unwrap();
    let (_, connection) = tls.get_ref();
    assert_eq!(
        connection.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    assert_eq!(
        connection.negotiated_cipher_suite().unwrap().suite(),
        rustls::CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        "the server's preference"
    );
    assert_eq!(
        connection.negotiated_key_exchange_group().unwrap().name(),
        rustls::NamedGroup::secp384r1
    );
    let mut raw = Raw { stream: tls };
    raw.option(OptionCode::STARTTLS, b"").await;
    assert_eq!(
        raw.option_reply().await,
        (OptionCode::STARTTLS, OptionReplyType::ERR_INVALID, 0)
    );
    raw.option(OptionCode::GO, b"").await;
    assert_eq!(
        raw.option_reply().await,
        (OptionCode::GO, OptionReplyType::ERR_UNSUP, 0)
    );
    for option in [
        OptionCode::INFO,
        OptionCode::STRUCTURED_REPLY,
        OptionCode::LIST_META_CONTEXT,
        OptionCode::SET_META_CONTEXT,
    ] {
        raw.option(option, b"").await;
        assert_eq!(
            raw.option_reply().await,
            (option, OptionReplyType::ERR_UNSUP, 0),
            "{option:?} after TLS"
        );
    }
    raw.option(OptionCode::LIST, b"").await;
    assert_eq!(
        raw.option_reply().await,
        (OptionCode::LIST, OptionReplyType::ERR_POLICY, 0)
    );
    assert_eq!(export(&mut raw, &name).await, SIZE);
    raw.request(0, 0, 1, 0, 65536).await;
    assert_eq!(raw.reply().await, (0, 1));
    assert_eq!(raw.read(65536).await, vdi_bytes(&pool, &disk)[..65536]);
}

#[tokio::test]
async fn tls_1_3_only_clients_are_refused() {
    let pool = pool("nbd").await;
    let session = support::session(&pool);
    let (disk, _) = vdi(&pool, DISK);
    let (_, _, _, cert, subject) = nbd_info(&pool, &disk, &session);
    let mut raw = connect(&pool, 1).await;
    raw.option(OptionCode::STARTTLS, b"").await;
    assert_eq!(
        raw.option_reply().await,
        (OptionCode::STARTTLS, OptionReplyType::ACK, 0)
    );
    let mut roots = rustls::RootCertStore::empty();
    for certificate in rustls_pemfile_certs(&cert) {
        roots.add(certificate).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let server_name = rustls_pki_types::ServerName::try_from(subject).unwrap();
    let handshake = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_rustls::TlsConnector::from(Arc::new(config)).connect(server_name, raw.stream),
    )
    .await
    .unwrap();
    assert!(handshake.is_err(), "TLS 1.2 only");
}

#[tokio::test]
async fn an_abort_in_clear_text_mode_is_acknowledged_then_closed() {
    let pool = pool("insecure_nbd").await;
    let mut raw = connect(&pool, 1).await;
    raw.option(OptionCode::ABORT, b"").await;
    assert_eq!(
        raw.option_reply().await,
        (OptionCode::ABORT, OptionReplyType::ACK, 0)
    );
    assert!(raw.closed().await);
}

#[tokio::test]
async fn the_dom0_vbd_of_a_connection_shows_in_events_and_goes_with_it() {
    let pool = pool("insecure_nbd").await;
    let session = common::login(&pool).await;
    let (disk, _) = vdi(&pool, DISK);
    let (_, _, name, _, _) = nbd_info(&pool, &disk, &session);
    let master = pool.master().address;
    let from = |token: String| {
        let session = session.clone();
        async move {
            common::xml(
                master,
                "event.from",
                &[
                    Value::from(session.as_str()),
                    Value::Array(vec![Value::from("vbd")]),
                    Value::from(token.as_str()),
                    Value::Double(5.0),
                ],
            )
            .await
            .unwrap()
        }
    };
    let events =
        |batch: &Value| -> Vec<Value> { batch.get("events").unwrap().clone().decode().unwrap() };
    let token = |batch: &Value| batch.get("token").unwrap().as_str().unwrap().to_owned();
    let start = from(String::new()).await;
    let mut raw = connect(&pool, 1).await;
    export(&mut raw, &name).await;
    let attached = from(token(&start)).await;
    let added = events(&attached);
    assert_eq!(added.len(), 1, "{added:?}");
    assert_eq!(added[0].get("operation"), Some(&Value::from("add")));
    let snapshot = added[0].get("snapshot").unwrap();
    assert_eq!(snapshot.get("VDI"), Some(&Value::from(disk.as_str())));
    assert_eq!(snapshot.get("mode"), Some(&Value::from("RO")));
    assert_eq!(snapshot.get("currently_attached"), Some(&Value::Bool(true)));
    let vm = snapshot.get("VM").unwrap().as_str().unwrap().to_owned();
    assert!(
        pool.sim()
            .read(|db| db.bool(ClassId::Vm, &vm, "is_control_domain"))
    );
    let vbd = added[0].get("ref").unwrap().clone();
    assert!(
        pool.sim()
            .read(|db| db.strings(ClassId::Vdi, &disk, "VBDs"))
            .contains(&vbd.as_str().unwrap().to_owned()),
        "listed in VDI.VBDs"
    );
    raw.request(0, 2, 0, 0, 0).await;
    assert!(raw.closed().await);
    let detached = from(token(&attached)).await;
    let removed = events(&detached);
    assert_eq!(removed.len(), 1, "{removed:?}");
    assert_eq!(removed[0].get("ref"), Some(&vbd));
    assert_eq!(removed[0].get("operation"), Some(&Value::from("del")));
    assert_eq!(dom0_vbds(&pool, &disk), 0);
}

#[tokio::test]
async fn export_names_need_a_live_session_and_a_vdi_uuid() {
    let pool = pool("insecure_nbd").await;
    let session = support::session(&pool);
    let (disk, uuid) = vdi(&pool, DISK);
    for name in [
        format!("/{uuid}?session_id=OpaqueRef:not-a-session"),
        format!("/{uuid}"),
        format!("/00000000-0000-0000-0000-000000000000?session_id={session}"),
        format!("/{disk}?session_id={session}"),
    ] {
        let mut raw = connect(&pool, 1).await;
        raw.option(OptionCode::EXPORT_NAME, name.as_bytes()).await;
        assert!(raw.closed().await, "closed without a reply: {name}");
    }
    pool.sim().logout(&xenapi::Ref::new(session.as_str()));
    let mut raw = connect(&pool, 1).await;
    raw.option(
        OptionCode::EXPORT_NAME,
        format!("/{uuid}?session_id={session}").as_bytes(),
    )
    .await;
    assert!(raw.closed().await, "a logged-out session");
    assert_eq!(dom0_vbds(&pool, &disk), 0);
}

#[tokio::test]
async fn both_or_neither_nbd_purpose_refuses_connections_before_the_greeting() {
    let pool = pool("insecure_nbd").await;
    let set_purposes = |purposes: &[&str]| {
        pool.sim().write(|db| {
            let network = db
                .find(ClassId::Network, "name_label", &Value::from("storage"))
                .pop()
                .unwrap();
            db.set(
                ClassId::Network,
                &network,
                "purpose",
                Value::Array(
                    purposes
                        .iter()
                        .map(|purpose| Value::from(*purpose))
                        .collect(),
                ),
            )
            .unwrap();
        });
    };
    for purposes in [&[][..], &["nbd", "insecure_nbd"][..]] {
        set_purposes(purposes);
        let mut stream = TcpStream::connect(pool.master().nbd).await.unwrap();
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut byte))
            .await
            .unwrap();
        assert!(matches!(read, Ok(0) | Err(_)), "{purposes:?}");
    }
}

#[tokio::test]
async fn the_seventeenth_connection_is_closed_before_the_greeting() {
    let pool = pool("insecure_nbd").await;
    let mut open = Vec::new();
    for _ in 0..16 {
        open.push(connect(&pool, 1).await);
    }
    let mut stream = TcpStream::connect(pool.master().nbd).await.unwrap();
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut byte))
        .await
        .unwrap();
    assert!(matches!(read, Ok(0) | Err(_)), "no greeting for the 17th");
    drop(open.pop());
    tokio::time::sleep(Duration::from_millis(50)).await;
    let _greeted = connect(&pool, 1).await;
}

#[tokio::test]
async fn an_open_connection_makes_list_changed_blocks_fail_with_vdi_in_use() {
    let pool = pool("insecure_nbd").await;
    let session = support::session(&pool);
    let (disk, _) = vdi(&pool, DISK);
    let base = snapshot(&pool, &disk);
    support::write(&pool, &disk, 0, &[1; 512]);
    let newer = snapshot(&pool, &disk);
    let changed = || {
        pool.sim()
            .read(|db| xapi_sim::db::vdi::list_changed_blocks(db, &base, &newer))
    };
    assert!(changed().is_ok());
    let (_, _, name, _, _) = nbd_info(&pool, &newer, &session);
    let mut raw = connect(&pool, 1).await;
    export(&mut raw, &name).await;
    let failure = changed().unwrap_err();
    assert_eq!(failure.code, "VDI_IN_USE");
    assert_eq!(failure.params, [newer.as_str(), "list_changed_blocks"]);
    raw.request(0, 2, 0, 0, 0).await;
    assert!(raw.closed().await);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(changed().is_ok());
}

#[tokio::test]
async fn latency_and_cut_faults_shape_requests() {
    let pool = pool("insecure_nbd").await;
    let session = support::session(&pool);
    let (disk, _) = vdi(&pool, DISK);
    let (_, _, name, _, _) = nbd_info(&pool, &disk, &session);
    pool.faults()
        .add(FaultRule::latency("nbd", Duration::from_millis(40)));
    let mut raw = connect(&pool, 1).await;
    export(&mut raw, &name).await;
    let started = Instant::now();
    for cookie in 0..3 {
        raw.request(0, 0, cookie, 0, 512).await;
        raw.reply().await;
        raw.read(512).await;
    }
    assert!(
        started.elapsed() >= Duration::from_millis(120),
        "40 ms per request"
    );
    pool.faults().clear();

    pool.faults().add(FaultRule::cut_nbd(4096, 1));
    let mut cut = connect(&pool, 1).await;
    export(&mut cut, &name).await;
    cut.request(0, 0, 1, 0, 1 << 20).await;
    assert_eq!(cut.reply().await, (0, 1), "a success header first");
    let content = vdi_bytes(&pool, &disk);
    assert_eq!(cut.read(4096).await, content[..4096]);
    assert!(cut.closed().await, "then the connection drops mid-payload");
}

/// xapi-nbd serves one request at a time per connection: with a per-request latency, reads
/// pipelined on one connection take at least the sum of their latencies (a server handling
/// them concurrently would answer all of them after about one).
#[tokio::test]
async fn pipelined_reads_on_one_connection_are_served_one_after_another() {
    const LATENCY_MS: i64 = 100;
    const READS: u64 = 4;
    const LENGTH: u32 = 64 << 10;
    let pool = pool("insecure_nbd").await;
    let session = support::session(&pool);
    let (disk, _) = vdi(&pool, DISK);
    let (_, _, name, _, _) = nbd_info(&pool, &disk, &session);
    let content = vdi_bytes(&pool, &disk);
    common::xml(
        pool.master().address,
        "sim.add_latency",
        &[Value::from("nbd"), Value::Int(LATENCY_MS)],
    )
    .await
    .unwrap();
    let mut raw = connect(&pool, 1).await;
    export(&mut raw, &name).await;

    let started = Instant::now();
    for index in 0..READS {
        raw.request(0, 0, 100 + index, index * u64::from(LENGTH), LENGTH)
            .await;
    }
    for index in 0..READS {
        assert_eq!(raw.reply().await, (0, 100 + index), "answered in order");
        let offset = usize::try_from(index * u64::from(LENGTH)).unwrap();
        let length = usize::try_from(LENGTH).unwrap();
        assert_eq!(raw.read(length).await, content[offset..offset + length]);
    }
    let elapsed = started.elapsed();
    let serial = Duration::from_millis(u64::try_from(LATENCY_MS).unwrap() * READS);
    assert!(
        elapsed >= serial,
        "{READS} pipelined reads took {elapsed:?}, less than {serial:?}: served concurrently"
    );
}

/// `sim.cut_nbd(after_bytes, nth)` over JSON-RPC: the 2nd connection made after the call drops
/// mid-payload after exactly `after_bytes`; the 1st and later ones are untouched.
#[tokio::test]
async fn sim_cut_nbd_called_over_json_rpc_cuts_the_nth_connection_after_n_bytes() {
    const CUT: usize = 700_000;
    const LENGTH: u32 = 1 << 20;
    let pool = pool("insecure_nbd").await;
    let session = support::session(&pool);
    let (disk, _) = vdi(&pool, DISK);
    let (_, _, name, _, _) = nbd_info(&pool, &disk, &session);
    let content = vdi_bytes(&pool, &disk);
    let whole = usize::try_from(LENGTH).unwrap();
    common::json(
        pool.master().address,
        "sim.cut_nbd",
        &[Value::Int(i64::try_from(CUT).unwrap()), Value::Int(2)],
    )
    .await
    .unwrap();

    let mut first = connect(&pool, 1).await;
    export(&mut first, &name).await;
    first.request(0, 0, 1, 0, LENGTH).await;
    assert_eq!(first.reply().await, (0, 1));
    assert_eq!(first.read(whole).await, content[..whole]);

    let mut second = connect(&pool, 1).await;
    export(&mut second, &name).await;
    second.request(0, 0, 2, 0, LENGTH).await;
    assert_eq!(second.reply().await, (0, 2), "a success header first");
    assert_eq!(second.read(CUT).await, content[..CUT]);
    assert!(
        second.closed().await,
        "then the connection drops mid-payload"
    );

    // The first connection goes on; the rule fired once, so a third connection is whole.
    first.request(0, 0, 3, u64::from(LENGTH), LENGTH).await;
    assert_eq!(first.reply().await, (0, 3));
    assert_eq!(first.read(whole).await, content[whole..2 * whole]);
    let mut third = connect(&pool, 1).await;
    export(&mut third, &name).await;
    third.request(0, 0, 4, 0, LENGTH).await;
    assert_eq!(third.reply().await, (0, 4));
    assert_eq!(third.read(whole).await, content[..whole]);
    assert!(pool.faults().rules().is_empty());
}

#[tokio::test]
async fn nbd_clients_pool_reads_through_tls_pinned_to_get_nbd_info() {
    let pool = pool("nbd").await;
    let session = support::session(&pool);
    let (disk, _) = vdi(&pool, DISK);
    let (address, port, name, cert, subject) = nbd_info(&pool, &disk, &session);
    assert_eq!(
        port,
        pool.master().nbd.port(),
        "the advertised port is the server's"
    );
    assert_eq!(cert, pool.master().certificate.pem());
    let config = nbd_client::ClientConfig::xapi(
        nbd_client::Address::tcp(address, port),
        name,
        cert,
        subject,
    );
    let reader = nbd_client::Pool::connect(config).await.unwrap();
    assert_eq!(reader.info().size, SIZE);
    let ranges = (0..SIZE / (2 << 20))
        .map(|index| nbd_client::ByteRange::new(index * (2 << 20), 2 << 20).unwrap());
    let mut pieces: Vec<(nbd_client::ByteRange, bytes::Bytes)> = reader
        .read_stream(
            futures::stream::iter(ranges),
            nbd_client::StreamOptions::default(),
        )
        .map(Result::unwrap)
        .collect()
        .await;
    assert!(dom0_vbds(&pool, &disk) >= 1);
    pieces.sort_by_key(|(range, _)| range.offset());
    let content: Vec<u8> = pieces.iter().flat_map(|(_, data)| data.to_vec()).collect();
    assert_eq!(support::sha256(&content), vdi_sha256(&pool, &disk));
    reader.close().await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(dom0_vbds(&pool, &disk), 0);
}

#[tokio::test]
async fn get_nbd_info_over_the_api_names_this_server() {
    let pool = pool("insecure_nbd").await;
    let session = common::login(&pool).await;
    let (disk, uuid) = vdi(&pool, DISK);
    let records = common::xml(
        pool.master().address,
        "VDI.get_nbd_info",
        &[Value::from(session.as_str()), Value::from(disk.as_str())],
    )
    .await
    .unwrap();
    let Value::Array(records) = records else {
        panic!()
    };
    let Value::Struct(fields) = &records[0] else {
        panic!()
    };
    let text = |name: &str| {
        fields
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
            .unwrap()
    };
    assert_eq!(text("address"), Value::from("127.0.0.1"));
    // An int64: untyped text in XML-RPC.
    assert_eq!(
        text("port"),
        Value::String(pool.master().nbd.port().to_string())
    );
    assert_eq!(
        text("exportname"),
        Value::String(format!("/{uuid}?session_id={session}"))
    );
}
