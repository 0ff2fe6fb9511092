//! Replays the fuzz corpora (`fuzz/corpus/nbd_client_*`) through the same entry points as the
//! fuzz targets: every input must return (Ok or a typed error) without panicking.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a failed test"
)]

use std::path::Path;

use nbd_client::fuzzing;

fn replay(target: &str, entry: impl Fn(&[u8])) -> usize {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut count = 0;
    for file in std::fs::read_dir(&dir).expect("corpus directory exists") {
        let bytes = std::fs::read(file.unwrap().path()).unwrap();
        entry(&bytes);
        count += 1;
    }
    count
}

#[test]
fn client_handshake_corpus() {
    let count = replay("nbd_client_handshake", |bytes| {
        let _ = fuzzing::client_handshake(bytes);
    });
    assert!(count >= 3, "corpus has seeds");
    // The spec §2.5-style capture negotiates to the end.
    let seed = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fuzz/corpus/nbd_client_handshake/qemu_structured_go"),
    )
    .unwrap();
    assert!(matches!(fuzzing::client_handshake(&seed), Ok(Some(_))));
}

#[test]
fn reply_stream_corpus() {
    let count = replay("nbd_client_replies", |bytes| {
        let _ = fuzzing::reply_stream(bytes);
    });
    assert!(count >= 3, "corpus has seeds");
    let seed = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/nbd_client_replies/simple_read"),
    )
    .unwrap();
    assert_eq!(fuzzing::reply_stream(&seed).unwrap(), 1);
}

#[test]
fn server_messages_corpus() {
    let count = replay("nbd_client_server_messages", |bytes| {
        let _ = fuzzing::server_messages(bytes);
    });
    assert!(count >= 2, "corpus has seeds");
}
