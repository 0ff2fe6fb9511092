//! `nbd-client`: reply decoding (sans-IO) and reads against an in-process server.
//!
//! - decode/simple_read_header: parse a simple reply header and frame it with the tracker.
//! - decode/block_status_4096: parse a BLOCK_STATUS payload of 4096 extents.
//! - read/structured_2MiB_x16: 2 MiB READs, 16 in flight, against the crate's in-memory
//!   server over a Unix socket pair (structured replies); throughput in bytes.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a bench that cannot set up has nothing to measure"
)]
#![allow(
    missing_docs,
    reason = "criterion_group! generates an undocumented pub fn"
)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use nbd_client::proto::transmission::encode_simple_reply;
use nbd_client::proto::{
    Action, BlockStatusChunk, CommandType, Errno, ReplyHeader, ReplyMode, ReplyTracker,
};
use nbd_client::server::{MemoryExport, ServerConfig, serve};
use nbd_client::{Address, ByteRange, ClientConfig, Connection, Cookie};

fn decoding(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode");
    let mut header = BytesMut::new();
    encode_simple_reply(Errno(0), Cookie(7), &mut header);
    group.throughput(Throughput::Elements(1));
    group.bench_function("simple_read_header", |b| {
        let range = ByteRange::new(0, 2 << 20).unwrap();
        b.iter(|| {
            let mut tracker = ReplyTracker::new(ReplyMode::Simple, vec![]);
            tracker
                .register(Cookie(7), CommandType::READ, range)
                .unwrap();
            let parsed = ReplyHeader::decode(black_box(&header)).unwrap();
            let action = tracker.on_header(parsed).unwrap();
            assert!(matches!(action, Action::ReadData { .. }));
            black_box(tracker.on_data().unwrap())
        });
    });
    let mut payload = BytesMut::new();
    payload.put_u32(2);
    for i in 0..4096u32 {
        payload.put_u32(65536);
        payload.put_u32(i & 1);
    }
    group.throughput(Throughput::Bytes(u64::try_from(payload.len()).unwrap()));
    group.bench_function("block_status_4096", |b| {
        b.iter(|| BlockStatusChunk::decode(black_box(&payload)).unwrap());
    });
    group.finish();
}

fn reads(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    const EXPORT: u64 = 64 << 20;
    const REQUEST: u64 = 2 << 20;
    let connection = runtime.block_on(async {
        let export = MemoryExport::new(vec![0x5a; usize::try_from(EXPORT).unwrap()]);
        let (client, server) = tokio::net::UnixStream::pair().unwrap();
        tokio::spawn(serve(
            server,
            export,
            Arc::new(ServerConfig::modern("bench")),
        ));
        let mut config = ClientConfig::new(Address::tcp("in-process", 0), "bench");
        config.in_flight_per_connection = 16;
        Connection::handshake(client, &config).await.unwrap()
    });
    let mut group = c.benchmark_group("read");
    group.throughput(Throughput::Bytes(EXPORT));
    group.bench_function("structured_2MiB_x16", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let reads = (0..EXPORT / REQUEST)
                    .map(|i| connection.read(ByteRange::new(i * REQUEST, REQUEST).unwrap()));
                let parts = futures::future::try_join_all(reads).await.unwrap();
                black_box(parts.len())
            })
        });
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).sample_size(10);
    targets = decoding, reads
}
criterion_main!(benches);
