//! Pipelining and back-pressure as seen from the server's side of the wire.
//!
//! A scripted server counts the requests that reach it and decides when to reply, so the tests
//! assert what really travels on the socket, not what the client believes it sent:
//! - with the default config several requests are outstanding before the first reply, and
//!   `in_flight_per_connection` caps them exactly (1 = strictly serial);
//! - `Pool::read_stream` stops reading ahead when its consumer stops polling: requests received
//!   never exceed what was consumed plus the stream's in-flight limit.
//!
//! No test bounds how long anything takes. Where a test must show that something does *not*
//! happen, it waits a while first; on a loaded machine that can only make it pass too easily,
//! never fail wrongly.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a failed test"
)]

mod common;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use common::{TEST_TIMEOUT, pattern};
use futures::StreamExt;
use nbd_client::proto::handshake::{ExportNameReply, encode_option_reply};
use nbd_client::proto::transmission::{REQUEST_LEN, encode_simple_reply};
use nbd_client::proto::{
    CommandType, Errno, Greeting, HandshakeFlags, OptionCode, OptionReplyType, OptionRequestHeader,
    Request, TransmissionFlags,
};
use nbd_client::{Address, ByteRange, ClientConfig, Connection, Pool, StreamOptions};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const EXPORT_SIZE: usize = 8 << 20;

/// How long the server waits for a request that a correct client must not send.
const GRACE: Duration = Duration::from_millis(200);

/// How long a consumer stays away, giving an over-eager client time to over-issue.
const IDLE: Duration = Duration::from_millis(500);

fn content() -> Arc<Vec<u8>> {
    Arc::new(pattern(EXPORT_SIZE, 7))
}

fn config(address: Address) -> ClientConfig {
    ClientConfig::new(address, "disk")
}

fn range(offset: u64, length: u64) -> ByteRange {
    ByteRange::new(offset, length).unwrap()
}

fn slice(content: &[u8], range: ByteRange) -> &[u8] {
    let start = usize::try_from(range.offset()).unwrap();
    let end = usize::try_from(range.end()).unwrap();
    &content[start..end]
}

async fn guarded<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(TEST_TIMEOUT, future)
        .await
        .unwrap_or_else(|_| panic!("{what} hung"))
}

/// The server end of one connection: simple replies, every option refused until EXPORT_NAME,
/// READ only. Requests are read through a buffer so that waiting for one can be abandoned
/// without losing bytes.
struct ScriptedServer<S> {
    stream: S,
    buffered: BytesMut,
    content: Arc<Vec<u8>>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> ScriptedServer<S> {
    async fn handshake(mut stream: S, content: Arc<Vec<u8>>) -> Self {
        let mut out = BytesMut::new();
        Greeting {
            flags: HandshakeFlags::FIXED_NEWSTYLE,
        }
        .encode(&mut out);
        stream.write_all(&out).await.unwrap();
        let mut flags = [0u8; 4];
        stream.read_exact(&mut flags).await.unwrap();
        loop {
            let mut header = [0u8; 16];
            stream.read_exact(&mut header).await.unwrap();
            let header = OptionRequestHeader::decode(&header).unwrap();
            let mut data = vec![0u8; usize::try_from(header.length).unwrap()];
            stream.read_exact(&mut data).await.unwrap();
            let mut out = BytesMut::new();
            if header.option == OptionCode::EXPORT_NAME {
                ExportNameReply {
                    size: u64::try_from(content.len()).unwrap(),
                    flags: TransmissionFlags::HAS_FLAGS | TransmissionFlags::READ_ONLY,
                }
                .encode(false, &mut out);
                stream.write_all(&out).await.unwrap();
                break;
            }
            encode_option_reply(header.option, OptionReplyType::ERR_UNSUP, &[], &mut out).unwrap();
            stream.write_all(&out).await.unwrap();
        }
        Self {
            stream,
            buffered: BytesMut::new(),
            content,
        }
    }

    /// Complete requests already received and not yet taken.
    fn buffered_requests(&self) -> usize {
        self.buffered.len() / REQUEST_LEN
    }

    /// The next request, however long it takes; `None` when the client hung up.
    async fn next_request(&mut self) -> Option<Request> {
        while self.buffered.len() < REQUEST_LEN {
            if self.stream.read_buf(&mut self.buffered).await.ok()? == 0 {
                return None;
            }
        }
        let header = self.buffered.split_to(REQUEST_LEN);
        Some(Request::decode(&header).unwrap())
    }

    /// True when request bytes beyond those taken are here or arrive within `wait`.
    async fn more_arrives_within(&mut self, wait: Duration) -> bool {
        if !self.buffered.is_empty() {
            return true;
        }
        // `read_buf` is cancel-safe: bytes read before the timeout stay in the buffer.
        matches!(
            tokio::time::timeout(wait, self.stream.read_buf(&mut self.buffered)).await,
            Ok(Ok(read)) if read > 0
        )
    }

    async fn reply(&mut self, request: &Request) {
        assert_eq!(request.command, CommandType::READ, "{request:?}");
        let mut out = BytesMut::new();
        encode_simple_reply(Errno(0), request.cookie, &mut out);
        out.extend_from_slice(slice(&self.content, range(request.offset, request.length)));
        self.stream.write_all(&out).await.unwrap();
    }

    /// Waits for the client's DISC (or EOF) so that the client's close is clean.
    async fn until_disconnect(&mut self) {
        if let Some(request) = self.next_request().await {
            assert_eq!(
                request.command,
                CommandType::DISC,
                "unexpected request after the test's reads: {request:?}"
            );
        }
    }
}

/// What the server saw.
struct Observed {
    /// Most requests received and not yet answered, at any time.
    max_outstanding: usize,
    /// Every request, in arrival order.
    requests: Vec<Request>,
}

/// Serves `total` READs, holding back replies until `depth` requests (or all that remain) are
/// outstanding, then checking that no further request arrives before the replies go out.
async fn serve_in_batches<S: AsyncRead + AsyncWrite + Unpin>(
    mut server: ScriptedServer<S>,
    depth: usize,
    total: usize,
) -> Observed {
    let mut observed = Observed {
        max_outstanding: 0,
        requests: Vec::new(),
    };
    while observed.requests.len() < total {
        let want = depth.min(total - observed.requests.len());
        let mut batch = Vec::new();
        while batch.len() < want {
            // A client that does not pipeline hangs here until the test's guard fires.
            let request = server.next_request().await.expect("client hung up early");
            batch.push(request);
        }
        let mut outstanding = batch.len();
        if server.more_arrives_within(GRACE).await {
            // A partial header counts too: the client sent it before any reply.
            outstanding += server.buffered_requests().max(1);
        }
        observed.max_outstanding = observed.max_outstanding.max(outstanding);
        for request in &batch {
            server.reply(request).await;
        }
        observed.requests.extend(batch);
    }
    server.until_disconnect().await;
    observed
}

/// A client connection over an in-memory pipe to a scripted server running `serve_in_batches`.
async fn pipelined_pair(
    config: &ClientConfig,
    depth: usize,
    total: usize,
) -> (Connection, tokio::task::JoinHandle<Observed>) {
    let (client_side, server_side) = tokio::io::duplex(1 << 20);
    let content = content();
    let server = tokio::spawn(async move {
        let server = ScriptedServer::handshake(server_side, content).await;
        serve_in_batches(server, depth, total).await
    });
    let connection = guarded("handshake", Connection::handshake(client_side, config)).await;
    (connection.unwrap(), server)
}

#[tokio::test]
async fn default_config_puts_several_requests_on_the_wire_at_once() {
    let config = config(Address::tcp("scripted.invalid", 10809));
    // The documented defaults: 16 in flight, 1 MiB requests.
    assert_eq!(config.in_flight_per_connection, 16);
    assert_eq!(config.max_request_len, MIB);
    let (connection, server) = pipelined_pair(&config, 4, 4).await;

    // One 4 MiB read becomes four 1 MiB requests; the server answers none of them until all
    // four have arrived, which only a pipelining client survives.
    let wanted = range(MIB, 4 * MIB);
    let data = guarded("pipelined read", connection.read(wanted))
        .await
        .unwrap();
    assert_eq!(&data[..], slice(&content(), wanted));
    guarded("close", connection.close()).await.unwrap();

    let observed = guarded("server", server).await.unwrap();
    assert_eq!(observed.max_outstanding, 4);
    let mut pieces: Vec<(u64, u64)> = observed
        .requests
        .iter()
        .map(|r| (r.offset, r.length))
        .collect();
    pieces.sort_unstable();
    assert_eq!(
        pieces,
        [(MIB, MIB), (2 * MIB, MIB), (3 * MIB, MIB), (4 * MIB, MIB)]
    );
}

#[tokio::test]
async fn one_in_flight_per_connection_is_strictly_serial() {
    let mut config = config(Address::tcp("scripted.invalid", 10809));
    config.in_flight_per_connection = 1;
    let reads = 6;
    let (connection, server) = pipelined_pair(&config, 1, reads).await;

    // Six callers at once: still one request on the wire until its reply has been sent.
    let ranges: Vec<ByteRange> = (0..6u64).map(|i| range(i * 256 * KIB, 64 * KIB)).collect();
    let results = guarded(
        "serial reads",
        futures::future::join_all(ranges.iter().map(|&r| connection.read(r))),
    )
    .await;
    let content = content();
    for (wanted, data) in ranges.iter().zip(results) {
        assert_eq!(&data.unwrap()[..], slice(&content, *wanted));
    }
    guarded("close", connection.close()).await.unwrap();

    let observed = guarded("server", server).await.unwrap();
    assert_eq!(
        observed.max_outstanding, 1,
        "a second request overtook a reply"
    );
    assert_eq!(observed.requests.len(), reads);
}

#[tokio::test]
async fn in_flight_per_connection_caps_the_requests_on_the_wire() {
    let mut config = config(Address::tcp("scripted.invalid", 10809));
    config.in_flight_per_connection = 3;
    config.max_request_len = 64 * KIB;
    let (connection, server) = pipelined_pair(&config, 3, 8).await;

    // 512 KiB in eight 64 KiB pieces, with room for three at a time.
    let wanted = range(0, 512 * KIB);
    let data = guarded("capped read", connection.read(wanted))
        .await
        .unwrap();
    assert_eq!(&data[..], slice(&content(), wanted));
    guarded("close", connection.close()).await.unwrap();

    let observed = guarded("server", server).await.unwrap();
    assert_eq!(observed.max_outstanding, 3);
    assert_eq!(observed.requests.len(), 8);
}

/// A TCP server for a pool: every connection answers every READ at once and counts it.
async fn counting_server(content: Arc<Vec<u8>>) -> (Address, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let received = Arc::new(AtomicUsize::new(0));
    let counter = received.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let content = content.clone();
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut server = ScriptedServer::handshake(socket, content).await;
                while let Some(request) = server.next_request().await {
                    if request.command == CommandType::DISC {
                        break;
                    }
                    counter.fetch_add(1, Ordering::SeqCst);
                    server.reply(&request).await;
                }
            });
        }
    });
    (Address::tcp("127.0.0.1", port), received)
}

/// Reads 64 ranges through `read_stream`, consuming a few, then pausing: while the consumer
/// pauses the server must not receive more than `consumed + bound` requests.
async fn check_read_ahead_is_bounded(
    connections: usize,
    per_connection: usize,
    options: StreamOptions,
    bound: usize,
) {
    let content = content();
    let (address, received) = counting_server(content.clone()).await;
    let mut config = config(address);
    config.connections = connections;
    config.in_flight_per_connection = per_connection;
    let pool = guarded("pool connect", Pool::connect(config))
        .await
        .unwrap();
    assert_eq!(pool.alive_connections(), connections);

    let total = 64;
    let ranges: Vec<ByteRange> = (0..total).map(|i| range(i * 64 * KIB, 64 * KIB)).collect();
    let mut stream = pool.read_stream(futures::stream::iter(ranges.clone()), options);

    // Not polled yet: nothing is read.
    tokio::time::sleep(IDLE).await;
    assert_eq!(received.load(Ordering::SeqCst), 0);

    let mut yielded = Vec::new();
    let consumed = 5;
    for _ in 0..consumed {
        let (piece, data) = guarded("stream item", stream.next())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&data[..], slice(&content, piece));
        yielded.push(piece);
    }
    // The consumer stops polling; the server keeps answering at once, so only the stream's
    // own limit keeps the client from reading (and buffering) everything.
    tokio::time::sleep(IDLE).await;
    let during_pause = received.load(Ordering::SeqCst);
    assert!(
        during_pause <= consumed + bound,
        "{during_pause} requests reached the server while {consumed} results were consumed \
         (limit {bound} in flight)"
    );
    assert!(during_pause >= consumed);

    // Resuming delivers everything, each range exactly once.
    while let Some(item) = guarded("stream item", stream.next()).await {
        let (piece, data) = item.unwrap();
        assert_eq!(&data[..], slice(&content, piece));
        yielded.push(piece);
    }
    if !options.ordered {
        yielded.sort_unstable_by_key(|r| r.offset());
    }
    assert_eq!(yielded, ranges);
    assert_eq!(received.load(Ordering::SeqCst), ranges.len());
    guarded("pool close", pool.close()).await.unwrap();
}

#[tokio::test]
async fn read_stream_defaults_to_connections_times_in_flight() {
    // 2 connections × 2 in flight: at most 4 reads ahead of the consumer.
    check_read_ahead_is_bounded(2, 2, StreamOptions::default(), 4).await;
}

#[tokio::test]
async fn read_stream_limit_applies_below_the_connection_capacity() {
    // The connections could carry 2 × 8 requests; the stream's own limit of 3 must hold.
    let options = StreamOptions {
        ordered: false,
        max_in_flight: Some(3),
        max_piece_len: None,
    };
    check_read_ahead_is_bounded(2, 8, options, 3).await;
}
