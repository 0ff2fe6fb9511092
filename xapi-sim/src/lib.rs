//! `xapi-sim`: a faithful simulated XCP-ng pool, so that replication, seeding, backup and restore
//! can be tested end to end without a real host.
//!
//! A [`Pool`] runs one HTTP(S) server per host on loopback addresses and speaks XAPI over
//! XML-RPC and JSON-RPC with xapi's encodings, envelopes, errors and check orders, on the
//! sans-IO codec of the `xenapi` crate. Modules:
//! - [`db`]: the objects (pool, hosts, SRs, PBDs, networks, PIFs, VDIs, VBDs, VMs with dom0s,
//!   templates and snapshots, VIFs, metrics, tasks, sessions) with xapi's semantics: full
//!   records, lifecycle checks, snapshot/clone/copy, CBT, `VDI.get_nbd_info`, events.
//! - [`rpc`]: the dispatcher (`MESSAGE_*` errors, defaults, sessions, `HOST_IS_SLAVE`, `Async.*`
//!   tasks, `event.from`) and the `sim.*` test hooks usable out of process.
//! - [`server`]: hyper server with a prefix [`Router`] where transfer handlers plug in;
//!   [`tls`]: generated self-signed host certificates to pin.
//! - [`scenario`]: builder and TOML scenarios; [`faults`]: fault injection.
//! - [`sim`]: the shared pool state and the seams for HTTP transfer and NBD handlers.
//! - [`http`]: the transfer handlers (`/export_raw_vdi`, `/import_raw_vdi`, `/export`,
//!   `/import`) every pool serves; [`nbd`]: an xapi-nbd look-alike per host.
//! - [`storage`]: disk data as copy-on-write layers of 2 MiB blocks shared between snapshots and
//!   clones, xapi's transfer views (allocated blocks, 2 MiB deltas, sector-bitmap imports), and
//!   sm's CBT logs with `list_changed_blocks`' exact bitmap.
//!
//! Start a pool and make a call (here with the `xenapi` codec over a raw TCP connection):
//!
//! ```
//! use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
//! use xapi_sim::{DiskSpec, Pool, PoolSpec, Size, VmSpec};
//! use xenapi::codec::{Response, xmlrpc};
//!
//! # tokio::runtime::Runtime::new()?.block_on(async {
//! let spec = PoolSpec::new("demo")
//!     .tls(false)
//!     .credentials("root", "secret")
//!     .vm(VmSpec::new("web01").running().disk(DiskSpec::new(Size::mib(64)).random(0, 1 << 20, 7)));
//! let pool = Pool::start(spec).await?;
//!
//! let body = xmlrpc::encode_call("session.login_with_password", &["root".into(), "secret".into()]);
//! let request = format!(
//!     "POST / HTTP/1.1\r\nHost: sim\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
//!     body.len()
//! );
//! let mut stream = tokio::net::TcpStream::connect(pool.master().address).await?;
//! stream.write_all(request.as_bytes()).await?;
//! stream.write_all(&body).await?;
//! let mut response = Vec::new();
//! stream.read_to_end(&mut response).await?;
//! let split = response.windows(4).position(|w| w == b"\r\n\r\n").map_or(0, |at| at + 4);
//! let Ok(Response::Success(session)) = xmlrpc::decode_response(response.get(split..).unwrap_or(&[])) else {
//!     panic!("login failed")
//! };
//! assert!(session.as_str().is_some_and(|r| r.starts_with("OpaqueRef:")));
//! assert_eq!(pool.find_by_name(xapi_sim::db::ClassId::Vm, "web01").is_some(), true);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # })?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The storage layer on its own:
//!
//! ```
//! use xapi_sim::storage::{ByteLen, ByteOffset, Storage};
//!
//! let storage = Storage::new();
//! // A 2 TiB disk costs nothing until written.
//! let disk = storage.create(ByteLen::new(2 << 40))?;
//! storage.enable_cbt(disk)?;
//! let base = storage.snapshot(disk)?;
//! storage.write(disk, ByteOffset::new(3 << 20), b"hello")?;
//! let newer = storage.snapshot(disk)?;
//!
//! assert_eq!(storage.read(newer, ByteOffset::new(3 << 20), 5)?.as_ref(), b"hello");
//! assert_eq!(storage.stats().unique_blocks, 1);
//! // 64 KiB unit 48 changed between the two snapshots: bit 0x80 of byte 6.
//! let changed = storage.list_changed_blocks(base, newer)?;
//! assert_eq!(changed.to_bitmap_bytes().get(..8), Some(&[0, 0, 0, 0, 0, 0, 0x80, 0][..]));
//! # Ok::<(), xapi_sim::Error>(())
//! ```
#![forbid(unsafe_code)]

pub mod db;
mod error;
pub mod faults;
pub mod fuzzing;
pub mod http;
pub mod nbd;
pub mod pool;
pub mod rpc;
pub mod scenario;
pub mod server;
pub mod sim;
pub mod storage;
pub mod tls;

pub use error::{Error, SmBackendFailure};
pub use faults::{FaultRule, Faults};
pub use pool::{HostHandle, Pool};
pub use scenario::{DiskSpec, HostSpec, NetworkSpec, PoolSpec, Scenario, Size, SrSpec, VmSpec};
pub use server::{HostContext, Router};
pub use sim::{Credentials, Sim};
