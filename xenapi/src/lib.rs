//! Async XenAPI client for XCP-ng and XenServer, built on a sans-IO wire codec.
//!
//! - [`codec`]: XML-RPC and JSON-RPC (v1/v2) for both ends of the wire, byte-exact with xapi's
//!   output (untyped int64s in XML-RPC, `%.16g` doubles, bare `NaN` in JSON, task results as
//!   XML fragments). A server (the `xapi-sim` simulator) uses the same module.
//! - [`Client`]: JSON-RPC with XML-RPC fallback (or forced), HTTP/1.1 keep-alive over hyper and
//!   rustls; TLS verified by default, a CA file, SHA-256 pinning or an explicit insecure mode
//!   ([`Trust`]); login with version and originator, logout on close, one transparent re-login
//!   on `SESSION_INVALID`, `HOST_IS_SLAVE` redirect to the pool master.
//! - Typed refs ([`Ref<Vm>`](Ref) is not a [`Ref<Vdi>`](Ref)) and records ([`VmRecord`],
//!   [`VdiRecord`], ...); enums keep unknown values; [`Client::call`] for everything else;
//!   [`Client::map_put`] does xapi's remove-then-add.
//! - Tasks: `Async.*` calls waited for through `event.from`, with timeout, cancellation (which
//!   cancels the task) and progress ([`WaitOptions`]).
//! - HTTP transfers as streams tracked by a task ([`Client::export_raw_vdi`],
//!   [`Client::import_raw_vdi`], [`Client::export_vm`], [`Client::import_vm`]), following
//!   302 redirects, with exact `Content-Length` uploads and the task checked after the body.
//! - One [`Error`]: API errors are `Error::Api { code, params }` (see [`ErrorCode`]); no
//!   password or session ref ever appears in `Debug`, `Display` or logs.
//!
//! The wire codec, as a simulator uses it (this example runs):
//!
//! ```
//! use xenapi::codec::{jsonrpc, xmlrpc, Response};
//! use xenapi::{Ref, Value, Vm, VmRecord};
//!
//! // A client's XML-RPC call, decoded on the server side...
//! let body = xmlrpc::encode_call("VM.get_record", &[Value::from("OpaqueRef:s"), Value::from("OpaqueRef:vm")]);
//! let call = xmlrpc::decode_call(&body)?;
//! assert_eq!(call.method, "VM.get_record");
//!
//! // ... answered as xapi would: int64 untyped, `Status` first.
//! let record = VmRecord { name_label: "web01".into(), memory_static_max: 4 << 30, ..VmRecord::default() };
//! let reply = xmlrpc::encode_response(&Response::Success(record.to_value()));
//! assert!(String::from_utf8_lossy(&reply).contains("<name>memory_static_max</name><value>4294967296</value>"));
//!
//! // The client reads it back into a typed record, from either transport.
//! let Response::Success(value) = xmlrpc::decode_response(&reply)? else { unreachable!() };
//! assert_eq!(value.decode::<VmRecord>()?, record);
//! let json = jsonrpc::encode_response(jsonrpc::Version::V2, &jsonrpc::Id::Int(1), &Response::Success(record.to_value()));
//! let Response::Success(value) = jsonrpc::decode_response(&json)?.response else { unreachable!() };
//! assert_eq!(value.decode::<VmRecord>()?, record);
//!
//! // Typed refs.
//! let vm: Ref<Vm> = Value::from("OpaqueRef:vm").decode()?;
//! assert!(!vm.is_null());
//! # Ok::<(), xenapi::Error>(())
//! ```
//!
//! Talking to a pool:
//!
//! ```no_run
//! use std::time::Duration;
//! use xenapi::{Client, ConnectUrl, ExportFormat, Secret, Trust, Vm, WaitOptions};
//! use futures::StreamExt;
//!
//! # async fn run() -> Result<(), xenapi::Error> {
//! let client = Client::builder(ConnectUrl::parse("https://root@pool-master.lan")?)
//!     .password(Secret::from_env("XAPI_PASSWORD")?)
//!     .trust(Trust::pinned("sha256:3F:A1:...")?)
//!     .originator("my-backup-tool")
//!     .connect()
//!     .await?;
//! for (vm, record) in client.get_all_records::<Vm>().await? {
//!     if record.is_a_template || record.is_control_domain || record.is_a_snapshot {
//!         continue;
//!     }
//!     let options = WaitOptions::with_timeout(Duration::from_secs(600));
//!     let snapshot = client.vm_snapshot(&vm, "backup", &[], &options).await?;
//!     println!("{} -> {snapshot}", record.name_label);
//! }
//! # let vdi = xenapi::Ref::new("OpaqueRef:…");
//! let mut download = client.export_raw_vdi(&vdi, ExportFormat::Vhd, None).await?;
//! while let Some(chunk) = download.next().await {
//!     let _bytes = chunk?; // write them somewhere
//! }
//! download.finish(&WaitOptions::default()).await?; // 200 only meant "started"
//! client.close().await?;
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

pub mod api;
pub mod chunked;
pub mod client;
pub mod codec;
pub mod datetime;
pub mod error;
pub mod fuzzing;
pub mod records;
pub mod refs;
pub mod task;
pub mod tls;
pub mod transfer;
mod transport;
pub mod url;
pub mod value;

pub use api::{VbdCreate, VdiCreate, VifCreate};
pub use client::{Client, ClientBuilder, TransportKind, Wire};
pub use datetime::{DateTime, Zone};
pub use error::{Error, ErrorCode};
pub use records::*;
pub use refs::{
    Certificate, Class, Console, Host, NULL_REF, Network, Pbd, Pif, Pool, Ref, Session, Sr, Task,
    Vbd, Vdi, Vif, Vm, VmGuestMetrics, VmMetrics,
};
pub use task::{WaitOptions, task_outcome};
pub use tls::{Fingerprint, Trust};
pub use tokio_util::sync::CancellationToken;
pub use transfer::{Compression, Download, ExportFormat, ImportFormat, UploadBody};
pub use url::{ConnectUrl, Scheme, Secret};
pub use value::{FromKey, FromValue, StringMap, Value, string_map};

/// Compiles and runs the README's example with the doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
