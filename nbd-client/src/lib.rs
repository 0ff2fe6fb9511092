//! A fast, robust async NBD client for every server a XenServer / XCP-ng toolkit meets:
//! xapi-nbd (STARTTLS, EXPORT_NAME, simple replies, serves one request at a time), qemu-nbd,
//! nbdkit and nbd-server (GO, structured or extended replies, BLOCK_STATUS, dirty bitmaps).
//!
//! Layers, from the bytes up:
//! - [`proto`]: the sans-IO protocol layer, public in both directions (servers reuse the
//!   encoders): the handshake state machine [`proto::ClientHandshake`] and the reply-stream
//!   framer [`proto::ReplyTracker`].
//! - [`Connection`]: one socket (TCP or Unix, optionally TLS via rustls), many requests in
//!   flight (or exactly one: `in_flight_per_connection = 1`), reads landing in `Bytes` with no
//!   copy beyond the socket (and TLS decryption), oversize requests split, per-request timeout.
//! - [`Pool`]: N connections to one export, least-loaded dispatch, reconnect and bounded retry
//!   with backoff, and [`Pool::read_stream`]: ranges in, `(range, Bytes)` out, ordered or as
//!   completed, with bounded memory.
//! - [`server`]: a small in-memory server (modern or xapi-like) for tests and benches.
//!
//! TLS is verified by default: pin xapi's certificate and subject ([`TlsOptions::pinned`],
//! as `VDI.get_nbd_info` returns them), or use CA roots; skipping verification is the explicit
//! [`TlsOptions::insecure_no_verify`].
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use std::sync::Arc;
//! use futures::StreamExt;
//! use nbd_client::{Address, ByteRange, ClientConfig, Connection, server};
//!
//! // An in-memory export served over an in-process pipe.
//! let content: Vec<u8> = (0..1u32 << 20).map(|i| (i / 4096) as u8).collect();
//! let export = server::MemoryExport::new(content.clone());
//! let (client_side, server_side) = tokio::io::duplex(256 * 1024);
//! let config = Arc::new(server::ServerConfig::modern("disk"));
//! tokio::spawn(server::serve(server_side, export, config));
//!
//! let config = ClientConfig::new(Address::tcp("unused", 10809), "disk");
//! let connection = Connection::handshake(client_side, &config).await.unwrap();
//! assert_eq!(connection.info().size, 1 << 20);
//!
//! // Longer than `max_request_len` (1 MiB by default, 2 MiB with `ClientConfig::xapi`),
//! // a read is split into pipelined requests; these 12 KiB go in one.
//! let data = connection.read(ByteRange::new(4096, 3 * 4096).unwrap()).await.unwrap();
//! assert_eq!(&data[..], &content[4096..4 * 4096]);
//! assert_eq!(data[0], 1);
//! connection.close().await.unwrap();
//! # });
//! ```
#![forbid(unsafe_code)]

mod config;
mod connection;
mod error;
pub mod fuzzing;
mod pool;
pub mod proto;
pub mod server;
mod tls;
mod transport;
mod units;

pub use config::{ClientConfig, DEFAULT_MAX_PAYLOAD, ExportInfo, RetryPolicy};
pub use connection::{
    Connection, MAX_WALK_EXTENTS, MappedExtent, list_exports, list_meta_contexts,
};
pub use error::{Error, MAX_SERVER_MESSAGE_CHARS};
pub use pool::{Pool, StreamOptions};
pub use proto::{ExportName, Profile};
pub use tls::{TlsOptions, TlsVerification, crypto_provider, parse_pem_certificates};
pub use transport::{Address, BoxStream, ByteStream};
pub use units::{ByteRange, ContextId, Cookie};

/// Compiles the README's example with the doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
