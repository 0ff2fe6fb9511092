//! Throughput of the simulator's data paths on loopback, without latency injection (the issue's
//! target: over 1 GB/s each, so that the simulator is never the bottleneck):
//! - `export_raw` / `export_vhd`: `GET /export_raw_vdi` read to EOF by a raw socket;
//! - `import_raw`: `PUT /import_raw_vdi` of the whole disk, until the server closes (the task
//!   is complete by then);
//! - `nbd_read`: the xapi-like NBD server read end to end by `nbd-client`'s pool (4 plain
//!   connections, 2 MiB requests, 2 in flight each, as its xapi profile).
//!
//! The disk is 256 MiB of random, fully allocated 2 MiB blocks.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a bench that cannot set up has nothing to measure"
)]
#![allow(
    missing_docs,
    reason = "criterion_group! generates an undocumented pub fn"
)]

use std::net::SocketAddr;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use futures::StreamExt as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use xapi_sim::db::ClassId;
use xapi_sim::{DiskSpec, NetworkSpec, Pool, PoolSpec, Size, VmSpec};

const DISK_MIB: u64 = 256;
const DISK_BYTES: u64 = DISK_MIB << 20;

struct Fixture {
    pool: Pool,
    session: String,
    disk: String,
    export_name: String,
}

async fn fixture() -> Fixture {
    let blocks = u32::try_from(DISK_MIB / 2).unwrap();
    let pool =
        Pool::start(
            PoolSpec::new("bench")
                .tls(false)
                .network(NetworkSpec::new("storage").purpose("insecure_nbd"))
                .vm(VmSpec::new("vm")
                    .disk(DiskSpec::new(Size::mib(DISK_MIB)).random_blocks(blocks, 1))),
        )
        .await
        .unwrap();
    let credentials = pool.credentials().clone();
    let session = pool
        .sim()
        .authenticate(
            &pool.master().reference,
            None,
            Some((&credentials.username, &credentials.password)),
        )
        .unwrap()
        .session
        .as_str()
        .to_owned();
    let disk = pool.find_by_name(ClassId::Vdi, "vm disk 0").unwrap();
    let uuid = pool.sim().read(|db| db.str(ClassId::Vdi, &disk, "uuid"));
    let export_name = format!("/{uuid}?session_id={session}");
    Fixture {
        pool,
        session,
        disk,
        export_name,
    }
}

/// Sends a request head (and body), reads everything to EOF; the bytes after the head.
async fn exchange(address: SocketAddr, head: &str, body: &[u8]) -> u64 {
    let mut stream = TcpStream::connect(address).await.unwrap();
    stream.set_nodelay(true).unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut buffer = vec![0u8; 4 << 20];
    let mut total = 0u64;
    loop {
        let read = stream.read(&mut buffer).await.unwrap();
        if read == 0 {
            return total;
        }
        total += u64::try_from(read).unwrap();
    }
}

fn transfers(criterion: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let fixture = runtime.block_on(fixture());
    let address = fixture.pool.master().address;
    let mut group = criterion.benchmark_group("xapi_sim_transfer");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Bytes(DISK_BYTES));

    for format in ["raw", "vhd"] {
        let head = format!(
            "GET /export_raw_vdi?session_id={}&vdi={}&format={format} HTTP/1.1\r\nHost: bench\r\n\r\n",
            fixture.session, fixture.disk
        );
        group.bench_function(format!("export_{format}"), |bencher| {
            bencher.iter(|| {
                let received = runtime.block_on(exchange(address, &head, b""));
                assert!(received >= DISK_BYTES);
            });
        });
    }

    let body = vec![0x5au8; usize::try_from(DISK_BYTES).unwrap()];
    let head = format!(
        "PUT /import_raw_vdi?session_id={}&vdi={} HTTP/1.1\r\nHost: bench\r\nContent-Length: {DISK_BYTES}\r\n\r\n",
        fixture.session, fixture.disk
    );
    group.bench_function("import_raw", |bencher| {
        bencher.iter(|| runtime.block_on(exchange(address, &head, &body)));
    });

    let nbd = fixture.pool.master().nbd;
    let mut config = nbd_client::ClientConfig::new(
        nbd_client::Address::tcp(nbd.ip().to_string(), nbd.port()),
        fixture.export_name.clone(),
    );
    config.connections = 4;
    config.in_flight_per_connection = 2;
    config.max_request_len = 2 << 20;
    let reader = runtime.block_on(nbd_client::Pool::connect(config)).unwrap();
    group.bench_function("nbd_read", |bencher| {
        bencher.iter(|| {
            runtime.block_on(async {
                let ranges = (0..DISK_BYTES / (2 << 20))
                    .map(|index| nbd_client::ByteRange::new(index * (2 << 20), 2 << 20).unwrap());
                let mut stream = reader.read_stream(
                    futures::stream::iter(ranges),
                    nbd_client::StreamOptions::default(),
                );
                let mut total = 0u64;
                while let Some(piece) = stream.next().await {
                    total += piece.unwrap().0.length();
                }
                assert_eq!(total, DISK_BYTES);
            });
        });
    });
    group.finish();
    runtime.block_on(reader.close()).unwrap();
}

criterion_group!(benches, transfers);
criterion_main!(benches);
