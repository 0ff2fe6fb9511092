//! Interop with nbdkit (memory and data plugins, `--tls=require`) and nbd-server (spec §6.4,
//! §6.6).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a failed test"
)]

mod common;

use std::process::Command;

use bytes::Bytes;
use common::{
    PeerProcess, TEST_TIMEOUT, free_port, make_pki, pattern, wait_for_tcp, wait_for_unix,
};
use futures::StreamExt;
use nbd_client::proto::{OptionReplyType, ReplyMode, STATE_HOLE, STATE_ZERO};
use nbd_client::{
    Address, ByteRange, ClientConfig, Connection, Error, Pool, StreamOptions, TlsOptions,
};

const MIB: u64 = 1 << 20;

fn nbdkit(socket: &std::path::Path, args: &[&str]) -> Option<PeerProcess> {
    let nbdkit = test_peers::require("nbdkit")?;
    let mut command = Command::new(nbdkit);
    command
        .args(["-f", "--exit-with-parent", "-U"])
        .arg(socket)
        .args(args);
    let peer = PeerProcess::spawn(&mut command);
    wait_for_unix(socket);
    Some(peer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_plugin_write_trim_zero_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("nbdkit.sock");
    let Some(_peer) = nbdkit(&socket, &["memory", "8M"]) else {
        return;
    };

    let mut config = ClientConfig::new(Address::unix(&socket), "");
    config.connections = 3;
    config.max_request_len = 512 * 1024;
    let pool = tokio::time::timeout(TEST_TIMEOUT, Pool::connect(config))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(pool.info().size, 8 * MIB);
    assert_eq!(
        pool.info().mode,
        ReplyMode::Structured,
        "nbdkit 1.32 has no extended headers"
    );
    assert!(pool.alive_connections() >= 2);

    let mut expected = pattern(8 << 20, 7);
    pool.write(0, Bytes::from(expected.clone())).await.unwrap();
    pool.flush().await.unwrap();
    pool.trim(ByteRange::new(MIB, 512 * 1024).unwrap())
        .await
        .unwrap();
    pool.write_zeroes(ByteRange::new(5 * MIB, 4096).unwrap(), true)
        .await
        .unwrap();
    // nbdkit's memory plugin reads trimmed ranges as zeros.
    expected[1 << 20..(1 << 20) + (512 << 10)].fill(0);
    expected[5 << 20..(5 << 20) + 4096].fill(0);

    // Read back as a stream of 1 MiB ranges, completed in any order.
    let ranges = futures::stream::iter((0..8).map(|i| ByteRange::new(i * MIB, MIB).unwrap()));
    let options = StreamOptions {
        ordered: false,
        max_in_flight: Some(4),
        max_piece_len: Some(MIB),
    };
    let mut seen = 0u64;
    let mut results = pool.read_stream(ranges, options);
    while let Some(item) = results.next().await {
        let (range, data) = item.unwrap();
        let start = usize::try_from(range.offset()).unwrap();
        assert!(
            data[..] == expected[start..start + data.len()],
            "mismatch at {range}"
        );
        seen += range.length();
    }
    assert_eq!(seen, 8 * MIB);
    pool.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_plugin_content_and_allocation() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("nbdkit.sock");
    let Some(_peer) = nbdkit(
        &socket,
        &["-r", "data", "1 2 3 @1048576 0xff*512", "size=4M"],
    ) else {
        return;
    };
    let mut config = ClientConfig::new(Address::unix(&socket), "");
    config.meta_contexts = vec!["base:allocation".into()];
    let connection = Connection::connect(&config).await.unwrap();
    assert!(connection.info().is_read_only());
    let data = connection
        .read(ByteRange::new(0, 4 * MIB).unwrap())
        .await
        .unwrap();
    let mut expected = vec![0u8; 4 << 20];
    expected[..3].copy_from_slice(&[1, 2, 3]);
    expected[1 << 20..(1 << 20) + 512].fill(0xff);
    assert!(data == expected[..]);
    // Writes to a read-only export are refused locally.
    assert!(matches!(
        connection.write(0, Bytes::from_static(&[0; 512])).await,
        Err(Error::Unsupported { .. })
    ));
    // Spec §6.4: data 0+32768, hole 32768+1015808, data 1048576+32768, hole to 4 MiB.
    let map: Vec<(u64, u64, bool)> = connection
        .extents("base:allocation", ByteRange::new(0, 4 * MIB).unwrap())
        .await
        .unwrap()
        .into_iter()
        .map(|e| {
            let hole = e.flags & u64::from(STATE_HOLE | STATE_ZERO) != 0;
            (e.range.offset(), e.range.length(), hole)
        })
        .collect();
    assert_eq!(
        map,
        vec![
            (0, 32768, false),
            (32768, 1_015_808, true),
            (MIB, 32768, false),
            (MIB + 32768, 3 * MIB - 32768, true),
        ]
    );
    connection.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_required() {
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(&dir.path().join("pki"));
    let socket = dir.path().join("nbdkit.sock");
    let tls_dir = format!("--tls-certificates={}", pki.dir.display());
    let Some(_peer) = nbdkit(&socket, &["--tls=require", &tls_dir, "memory", "4M"]) else {
        return;
    };
    let mut config = ClientConfig::new(Address::unix(&socket), "");
    config.tls = Some(TlsOptions::ca_roots(
        pki.ca_pem.clone(),
        common::SERVER_NAME,
    ));
    let connection = Connection::connect(&config).await.unwrap();
    assert!(connection.info().tls);
    let payload = Bytes::from(pattern(3 << 20, 11));
    connection.write(4096, payload.clone()).await.unwrap();
    let back = connection
        .read(ByteRange::new(4096, 3 * MIB).unwrap())
        .await
        .unwrap();
    assert_eq!(back, payload);
    connection.close().await.unwrap();

    let mut plain = config.clone();
    plain.tls = None;
    match Connection::connect(&plain).await {
        Err(Error::OptionRefused { reply, .. }) => assert_eq!(reply, OptionReplyType::ERR_TLS_REQD),
        other => panic!("expected ERR_TLS_REQD, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nbd_server_simple_replies() {
    let Some(nbd_server) = test_peers::require("nbd-server") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let content = pattern(3 << 20, 3);
    let data_path = dir.path().join("data.raw");
    std::fs::write(&data_path, &content).unwrap();
    let port = free_port();
    let conf = dir.path().join("nbd-server.conf");
    std::fs::write(
        &conf,
        format!(
            "[generic]\n    port = {port}\n    listenaddr = 127.0.0.1\n    allowlist = true\n[data]\n    exportname = {}\n    readonly = true\n",
            data_path.display()
        ),
    )
    .unwrap();
    let pid_file = dir.path().join("nbd-server.pid");
    let mut command = Command::new(nbd_server);
    command.arg("-C").arg(&conf).arg("-p").arg(&pid_file);
    let _peer = PeerProcess::daemon(&mut command, &pid_file);
    wait_for_tcp(port);

    let mut config = ClientConfig::new(Address::tcp("127.0.0.1", port), "data");
    config.connections = 2;
    let exports = nbd_client::list_exports(&config).await.unwrap();
    assert!(exports.iter().any(|e| e.name == "data"), "{exports:?}");
    let pool = Pool::connect(config).await.unwrap();
    // GO gives the real size (INFO would say 0, spec §3.8); simple replies only.
    assert_eq!(pool.info().size, 3 * MIB);
    assert_eq!(pool.info().mode, ReplyMode::Simple);
    let all = pool
        .read(ByteRange::new(0, 3 * MIB).unwrap())
        .await
        .unwrap();
    assert!(all == content[..]);
    pool.close().await.unwrap();
}
