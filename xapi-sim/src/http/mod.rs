//! The HTTP data handlers of a host (spec §4): `GET /export_raw_vdi`, `PUT /import_raw_vdi`,
//! `GET /export` and `PUT /import`, with xapi's authentication, tasks, 302 redirects and
//! check orders. Every [`crate::Pool`] serves them ([`routes`] is part of its default router).
//!
//! What all of them share (module `transfer`):
//! - credentials as `Xapi_http.assert_credentials_ok` checks them (`session_id` cookie or query,
//!   else Basic; 401 with `WWW-Authenticate: Basic realm="<action>"`);
//! - the client's `task_id` task, or a new one; the response's `task-id` header;
//! - a `302` to a host that sees the storage, built from the URL query only, before any body
//!   byte is read;
//! - `200` means "started": transfer bodies have no `Content-Length`, close the connection when
//!   done, and a failure after the header truncates the stream and fails the task;
//! - a read-only (exports) or read-write (imports) dom0 VBD per VDI for the transfer's duration;
//! - fault injection: `http:<path>` latency and [`crate::FaultRule::CutHttp`] cuts.
//!
//! hyper delimits a body without length only by closing the connection in HTTP/1.0, so streamed
//! responses say `HTTP/1.0 200 OK` (xapi writes 1.1 for raw transfers): the bytes, headers and
//! close are otherwise xapi's.
//!
//! A raw export read to EOF:
//!
//! ```
//! use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
//! use xapi_sim::{DiskSpec, Pool, PoolSpec, Size, VmSpec, db::ClassId};
//!
//! # tokio::runtime::Runtime::new()?.block_on(async {
//! let spec = PoolSpec::new("demo")
//!     .tls(false)
//!     .vm(VmSpec::new("vm").disk(DiskSpec::new(Size::mib(4)).random(0, 4096, 1)));
//! let pool = Pool::start(spec).await?;
//! let login = pool.sim().authenticate(&pool.master().reference, None, Some(("root", "xapi-sim")));
//! let session = login.map_err(|failure| failure.code)?;
//! let vdi = pool.find_by_name(ClassId::Vdi, "vm disk 0").expect("the disk");
//! let request = format!(
//!     "GET /export_raw_vdi?session_id={}&vdi={vdi} HTTP/1.1\r\nHost: sim\r\n\r\n",
//!     session.session.as_str()
//! );
//! let mut stream = tokio::net::TcpStream::connect(pool.master().address).await?;
//! stream.write_all(request.as_bytes()).await?;
//! let mut response = Vec::new();
//! stream.read_to_end(&mut response).await?; // no Content-Length: the server closes
//! let body_at = response.windows(4).position(|w| w == b"\r\n\r\n").map_or(0, |at| at + 4);
//! assert!(response.starts_with(b"HTTP/1.0 200 OK"));
//! assert_eq!(response.len() - body_at, 4 << 20);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # })?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod params;
mod raw_export;
mod raw_import;
pub mod tar_chunks;
mod transfer;
mod vm_xva;

use http::Method;

pub use self::params::{
    Authorization, MAX_PARAMS_TEXT, Params, ParamsError, parse_authorization, parse_cookies,
    parse_query, redirect_query,
};
use crate::server::Router;

/// `Constants.max_vhd_size`: the largest VDI `format=vhd` exports (2040 GiB).
pub const MAX_VHD_EXPORT_SIZE: u64 = raw_export::MAX_VHD_SIZE;

/// The transfer handlers as routes: `GET /export_raw_vdi`, `PUT /import_raw_vdi`, `GET /export`,
/// `PUT /import`.
#[must_use]
pub fn routes() -> Router {
    let mut router = Router::new();
    router.route(Method::GET, raw_export::PATH, raw_export::handle);
    router.route(Method::PUT, raw_import::PATH, raw_import::handle);
    router.route(Method::GET, vm_xva::EXPORT_PATH, vm_xva::export);
    router.route(Method::PUT, vm_xva::IMPORT_PATH, vm_xva::import);
    router
}
