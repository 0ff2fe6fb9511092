//! Hostile servers: garbage, lies and silence must give typed errors, never a panic, a hang or
//! an allocation sized by the peer.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a failed test"
)]

use std::future::Future;
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use nbd_client::proto::handshake::{ExportNameReply, encode_option_reply};
use nbd_client::proto::transmission::{encode_chunk_header, encode_simple_reply};
use nbd_client::proto::{
    ChunkHeader, ChunkType, Errno, ErrorChunk, Greeting, HandshakeFlags, Info, OptionCode,
    OptionReplyType, OptionRequestHeader, ReplyFlags, Request, TransmissionFlags,
};
use nbd_client::{
    Address, ByteRange, ClientConfig, Connection, Cookie, Error, ExportName, Profile,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

const GUARD: Duration = Duration::from_secs(10);

fn config() -> ClientConfig {
    let mut config = ClientConfig::new(Address::tcp("hostile.invalid", 10809), "disk");
    config.handshake_timeout = Duration::from_millis(500);
    config.request_timeout = Duration::from_millis(300);
    config
}

/// Runs `server` on one end of a pipe and a client handshake with `config` on the other.
async fn against<F, Fut>(config: ClientConfig, server: F) -> Result<Connection, Error>
where
    F: FnOnce(DuplexStream) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (client, server_side) = tokio::io::duplex(1 << 20);
    tokio::spawn(server(server_side));
    tokio::time::timeout(GUARD, Connection::handshake(client, &config))
        .await
        .expect("the handshake must not hang")
}

async fn read_option(stream: &mut DuplexStream) -> Option<OptionCode> {
    let mut header = [0u8; 16];
    stream.read_exact(&mut header).await.ok()?;
    let header = OptionRequestHeader::decode(&header).ok()?;
    let mut data = vec![0u8; usize::try_from(header.length).ok()?];
    stream.read_exact(&mut data).await.ok()?;
    Some(header.option)
}

async fn send(stream: &mut DuplexStream, bytes: &[u8]) {
    let _ = stream.write_all(bytes).await;
}

/// A server that refuses every option until EXPORT_NAME: simple replies, 1 MiB, read-only.
async fn simple_handshake(stream: &mut DuplexStream) {
    let mut out = BytesMut::new();
    Greeting {
        flags: HandshakeFlags::FIXED_NEWSTYLE,
    }
    .encode(&mut out);
    send(stream, &out).await;
    let mut flags = [0u8; 4];
    stream.read_exact(&mut flags).await.unwrap();
    while let Some(option) = read_option(stream).await {
        let mut out = BytesMut::new();
        if option == OptionCode::EXPORT_NAME {
            ExportNameReply {
                size: 1 << 20,
                flags: TransmissionFlags::HAS_FLAGS | TransmissionFlags::READ_ONLY,
            }
            .encode(false, &mut out);
            send(stream, &out).await;
            return;
        }
        encode_option_reply(option, OptionReplyType::ERR_UNSUP, &[], &mut out).unwrap();
        send(stream, &out).await;
    }
}

/// A server with structured replies and GO.
async fn structured_handshake(stream: &mut DuplexStream) {
    let mut out = BytesMut::new();
    Greeting {
        flags: HandshakeFlags::FIXED_NEWSTYLE,
    }
    .encode(&mut out);
    send(stream, &out).await;
    let mut flags = [0u8; 4];
    stream.read_exact(&mut flags).await.unwrap();
    while let Some(option) = read_option(stream).await {
        let mut out = BytesMut::new();
        match option {
            OptionCode::STRUCTURED_REPLY => {
                encode_option_reply(option, OptionReplyType::ACK, &[], &mut out).unwrap();
            }
            OptionCode::GO => {
                let mut info = BytesMut::new();
                Info::Export {
                    size: 1 << 20,
                    flags: TransmissionFlags::HAS_FLAGS,
                }
                .encode(&mut info);
                encode_option_reply(option, OptionReplyType::INFO, &info, &mut out).unwrap();
                encode_option_reply(option, OptionReplyType::ACK, &[], &mut out).unwrap();
                send(stream, &out).await;
                return;
            }
            _ => encode_option_reply(option, OptionReplyType::ERR_UNSUP, &[], &mut out).unwrap(),
        }
        send(stream, &out).await;
    }
}

async fn read_request(stream: &mut DuplexStream) -> Request {
    let mut header = [0u8; 28];
    stream.read_exact(&mut header).await.unwrap();
    Request::decode(&header).unwrap()
}

/// Issues one 4 KiB read and returns its error.
async fn failing_read(connection: &Connection) -> Error {
    tokio::time::timeout(GUARD, connection.read(ByteRange::new(0, 4096).unwrap()))
        .await
        .expect("the read must not hang")
        .expect_err("the read must fail")
}

fn lost_cause(error: &Error) -> &Error {
    match error {
        Error::ConnectionLost { cause } => cause,
        other => panic!("expected ConnectionLost, got {other:?}"),
    }
}

#[tokio::test]
async fn garbage_greeting() {
    let result = against(config(), |mut s| async move {
        send(&mut s, &[0x41; 64]).await;
    })
    .await;
    assert!(matches!(
        result,
        Err(Error::BadMagic {
            what: "greeting",
            ..
        })
    ));
}

#[tokio::test]
async fn oversize_option_reply_is_refused_unread() {
    let result = against(config(), |mut s| async move {
        let mut out = BytesMut::new();
        Greeting {
            flags: HandshakeFlags::FIXED_NEWSTYLE,
        }
        .encode(&mut out);
        send(&mut s, &out).await;
        let mut flags = [0u8; 4];
        s.read_exact(&mut flags).await.unwrap();
        read_option(&mut s).await;
        let mut reply = BytesMut::new();
        reply.put_u64(0x0003_e889_0455_65a9);
        reply.put_u32(OptionCode::EXTENDED_HEADERS.0);
        reply.put_u32(OptionReplyType::ACK.0);
        reply.put_u32(0xffff_fff0);
        send(&mut s, &reply).await;
    })
    .await;
    assert!(matches!(
        result,
        Err(Error::OversizePayload {
            what: "option reply",
            ..
        })
    ));
}

#[tokio::test]
async fn wrong_option_echo() {
    let result = against(config(), |mut s| async move {
        let mut out = BytesMut::new();
        Greeting {
            flags: HandshakeFlags::FIXED_NEWSTYLE,
        }
        .encode(&mut out);
        send(&mut s, &out).await;
        let mut flags = [0u8; 4];
        s.read_exact(&mut flags).await.unwrap();
        read_option(&mut s).await;
        let mut reply = BytesMut::new();
        encode_option_reply(OptionCode::LIST, OptionReplyType::ACK, &[], &mut reply).unwrap();
        send(&mut s, &reply).await;
    })
    .await;
    assert!(matches!(result, Err(Error::UnexpectedOptionReply { .. })));
}

#[tokio::test]
async fn silent_server_times_out_the_handshake() {
    let result = against(config(), |s| async move {
        tokio::time::sleep(Duration::from_secs(5)).await;
        drop(s);
    })
    .await;
    assert!(matches!(
        result,
        Err(Error::Timeout {
            what: "handshake",
            ..
        })
    ));
}

#[tokio::test]
async fn close_after_export_name_is_a_refusal() {
    let mut config = config();
    config.profile = Profile::Xapi;
    let result = against(config, |mut s| async move {
        let mut out = BytesMut::new();
        Greeting {
            flags: HandshakeFlags::FIXED_NEWSTYLE,
        }
        .encode(&mut out);
        send(&mut s, &out).await;
        let mut flags = [0u8; 4];
        s.read_exact(&mut flags).await.unwrap();
        read_option(&mut s).await;
        drop(s);
    })
    .await;
    assert!(matches!(result, Err(Error::ExportRefused)));
}

#[tokio::test]
async fn wrong_cookie() {
    let connection = against(config(), |mut s| async move {
        simple_handshake(&mut s).await;
        let request = read_request(&mut s).await;
        let mut out = BytesMut::new();
        encode_simple_reply(Errno(0), Cookie(request.cookie.0 + 100), &mut out);
        out.put_bytes(0, 4096);
        send(&mut s, &out).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
    })
    .await
    .unwrap();
    let error = failing_read(&connection).await;
    assert!(
        matches!(lost_cause(&error), Error::UnknownCookie { .. }),
        "{error:?}"
    );
    assert!(!connection.is_alive());
}

#[tokio::test]
async fn data_chunk_outside_the_request() {
    let connection = against(config(), |mut s| async move {
        structured_handshake(&mut s).await;
        let request = read_request(&mut s).await;
        let mut out = BytesMut::new();
        encode_chunk_header(
            &ChunkHeader {
                flags: ReplyFlags::DONE,
                chunk_type: ChunkType::OFFSET_DATA,
                cookie: request.cookie,
                offset: None,
                length: 8 + 4096,
            },
            &mut out,
        )
        .unwrap();
        // Claims bytes 2048..6144 of a 0..4096 request.
        out.put_u64(2048);
        out.put_bytes(0xee, 4096);
        send(&mut s, &out).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
    })
    .await
    .unwrap();
    let error = failing_read(&connection).await;
    assert!(
        matches!(lost_cause(&error), Error::ChunkMismatch { .. }),
        "{error:?}"
    );
}

#[tokio::test]
async fn oversize_data_chunk() {
    let connection = against(config(), |mut s| async move {
        structured_handshake(&mut s).await;
        let request = read_request(&mut s).await;
        let mut out = BytesMut::new();
        encode_chunk_header(
            &ChunkHeader {
                flags: ReplyFlags::DONE,
                chunk_type: ChunkType::OFFSET_DATA,
                cookie: request.cookie,
                offset: None,
                length: u64::from(u32::MAX),
            },
            &mut out,
        )
        .unwrap();
        send(&mut s, &out).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
    })
    .await
    .unwrap();
    let error = failing_read(&connection).await;
    assert!(
        matches!(lost_cause(&error), Error::OversizePayload { .. }),
        "{error:?}"
    );
}

#[tokio::test]
async fn eof_in_the_middle_of_read_data() {
    let connection = against(config(), |mut s| async move {
        simple_handshake(&mut s).await;
        let request = read_request(&mut s).await;
        let mut out = BytesMut::new();
        encode_simple_reply(Errno(0), request.cookie, &mut out);
        out.put_bytes(0x55, 100);
        send(&mut s, &out).await;
    })
    .await
    .unwrap();
    let error = failing_read(&connection).await;
    assert!(
        matches!(lost_cause(&error), Error::UnexpectedEof { .. }),
        "{error:?}"
    );
}

#[tokio::test]
async fn unknown_reply_magic() {
    let connection = against(config(), |mut s| async move {
        simple_handshake(&mut s).await;
        read_request(&mut s).await;
        send(
            &mut s,
            &[0x12, 0x56, 0x09, 0x53, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
        )
        .await;
        tokio::time::sleep(Duration::from_secs(2)).await;
    })
    .await
    .unwrap();
    let error = failing_read(&connection).await;
    assert!(
        matches!(lost_cause(&error), Error::BadMagic { .. }),
        "{error:?}"
    );
}

#[tokio::test]
async fn stalled_request_times_out_and_closes_the_connection() {
    let connection = against(config(), |mut s| async move {
        simple_handshake(&mut s).await;
        read_request(&mut s).await;
        tokio::time::sleep(Duration::from_secs(5)).await;
    })
    .await
    .unwrap();
    let error = failing_read(&connection).await;
    assert!(
        matches!(
            error,
            Error::Timeout {
                what: "request",
                ..
            }
        ),
        "{error:?}"
    );
    assert!(!connection.is_alive());
    assert!(error.is_retryable());
}

#[tokio::test]
async fn server_error_keeps_the_connection() {
    let connection = against(config(), |mut s| async move {
        simple_handshake(&mut s).await;
        let first = read_request(&mut s).await;
        let mut out = BytesMut::new();
        encode_simple_reply(Errno::EIO, first.cookie, &mut out);
        send(&mut s, &out).await;
        let second = read_request(&mut s).await;
        let mut out = BytesMut::new();
        encode_simple_reply(Errno(0), second.cookie, &mut out);
        out.put_bytes(0x42, 4096);
        send(&mut s, &out).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
    })
    .await
    .unwrap();
    let error = failing_read(&connection).await;
    assert!(
        matches!(
            error,
            Error::Command {
                errno: Errno::EIO,
                ..
            }
        ),
        "{error:?}"
    );
    assert!(connection.is_alive());
    let data = connection
        .read(ByteRange::new(0, 4096).unwrap())
        .await
        .unwrap();
    assert!(data.iter().all(|&b| b == 0x42));
}

/// An xapi export name: the session reference in it is a secret.
const SECRET_EXPORT: &str = "/3f2504e0-4f89-11d3-9a0c-0305e82c3301?session_id=OpaqueRef:6c1f2b1e-aaaa-bbbb-cccc-ddddeeeeffff";
const SESSION_TOKEN: &str = "6c1f2b1e-aaaa-bbbb-cccc-ddddeeeeffff";

/// A server message that echoes the secret in every form, with a forged log line.
fn leaky_message() -> String {
    format!(
        "no such export {SECRET_EXPORT}\nWARN session OpaqueRef:{SESSION_TOKEN} ({SESSION_TOKEN}) expired"
    )
}

fn assert_redacted(error: &Error, message: &str) {
    assert!(message.contains("<redacted>"), "{message}");
    assert!(
        !message.contains('\n'),
        "control characters must not pass: {message:?}"
    );
    for text in [message.to_owned(), error.to_string(), format!("{error:?}")] {
        assert!(!text.contains(SESSION_TOKEN), "secret leaked: {text}");
        assert!(!text.contains("OpaqueRef"), "secret leaked: {text}");
    }
    // What is not secret stays readable.
    assert!(
        message.starts_with("no such export <redacted>"),
        "{message}"
    );
    assert!(message.ends_with("expired"), "{message}");
}

#[tokio::test]
async fn option_refusal_message_is_redacted() {
    let mut config = config();
    config.export_name = ExportName::new(SECRET_EXPORT);
    let result = against(config, |mut s| async move {
        let mut out = BytesMut::new();
        Greeting {
            flags: HandshakeFlags::FIXED_NEWSTYLE,
        }
        .encode(&mut out);
        send(&mut s, &out).await;
        let mut flags = [0u8; 4];
        s.read_exact(&mut flags).await.unwrap();
        while let Some(option) = read_option(&mut s).await {
            let mut out = BytesMut::new();
            let (reply, message) = match option {
                OptionCode::GO => (OptionReplyType::ERR_UNKNOWN, leaky_message()),
                OptionCode::ABORT => return,
                _ => (OptionReplyType::ERR_UNSUP, String::new()),
            };
            encode_option_reply(option, reply, message.as_bytes(), &mut out).unwrap();
            send(&mut s, &out).await;
        }
    })
    .await;
    let error = result.expect_err("the export is refused");
    let Error::OptionRefused {
        option: OptionCode::GO,
        reply: OptionReplyType::ERR_UNKNOWN,
        message,
    } = &error
    else {
        panic!("expected a GO refusal, got {error:?}");
    };
    assert_redacted(&error, message);
}

#[tokio::test]
async fn command_error_message_is_redacted() {
    let mut config = config();
    config.export_name = ExportName::new(SECRET_EXPORT);
    let connection = against(config, |mut s| async move {
        structured_handshake(&mut s).await;
        let request = read_request(&mut s).await;
        let mut payload = BytesMut::new();
        ErrorChunk {
            errno: Errno::EIO,
            message: leaky_message(),
            offset: None,
        }
        .encode(&mut payload);
        let mut out = BytesMut::new();
        encode_chunk_header(
            &ChunkHeader {
                flags: ReplyFlags::DONE,
                chunk_type: ChunkType::ERROR,
                cookie: request.cookie,
                offset: None,
                length: u64::try_from(payload.len()).unwrap(),
            },
            &mut out,
        )
        .unwrap();
        out.extend_from_slice(&payload);
        send(&mut s, &out).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
    })
    .await
    .unwrap();
    let error = failing_read(&connection).await;
    let Error::Command {
        errno: Errno::EIO,
        message,
        ..
    } = &error
    else {
        panic!("expected a command error, got {error:?}");
    };
    assert_redacted(&error, message);
    assert!(connection.is_alive());
}
