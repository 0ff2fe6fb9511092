//! What every transfer handler shares (spec §4.1): parameters, authentication, the task, the
//! 302 to the host that sees the storage, response heads, the streamed response body with fault
//! injection, progress, and the clean-up when a transfer ends (dom0 VBDs, temporary sessions).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Request, Response, StatusCode, Version};
use http_body_util::BodyExt as _;
use hyper::body::{Frame, Incoming};
use tokio::sync::mpsc;
use xenapi::codec::Failure;
use xenapi::{Ref, Task, Vbd, Vdi};

use super::params::{self, Authorization, Params};
use crate::db::objects::TaskOutcome;
use crate::db::{ClassId, Db};
use crate::server::{HostContext, ResponseBody, html_error};
use crate::sim::{Authenticated, Sim};

/// Frames buffered between a producer and the socket (each up to 2 MiB).
const BODY_QUEUE: usize = 4;

/// A response body fed by a transfer task; it ends when the task drops its [`BodySender`].
pub(crate) struct ChannelBody {
    frames: mpsc::Receiver<Result<Bytes, io::Error>>,
}

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        self.frames
            .poll_recv(context)
            .map(|frame| frame.map(|result| result.map(Frame::data)))
    }
}

/// Why a body could not take more bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SendStop {
    /// The client went away.
    Disconnected,
    /// A fault rule cut the transfer here.
    Cut,
}

/// The producing end of a [`ChannelBody`]: counts payload bytes and applies a cut rule.
pub(crate) struct BodySender {
    frames: mpsc::Sender<Result<Bytes, io::Error>>,
    sent: u64,
    cut_after: Option<u64>,
}

/// A response body and its sender; `cut_after` truncates the stream after that many bytes.
pub(crate) fn channel_body(cut_after: Option<u64>) -> (BodySender, ResponseBody) {
    let (frames, receiver) = mpsc::channel(BODY_QUEUE);
    (
        BodySender {
            frames,
            sent: 0,
            cut_after,
        },
        ChannelBody { frames: receiver }.boxed(),
    )
}

impl BodySender {
    /// Queues `bytes`. At the cut point the prefix goes out, then the connection is aborted.
    pub(crate) async fn send(&mut self, bytes: Bytes) -> Result<(), SendStop> {
        if let Some(limit) = self.cut_after {
            let room = limit.saturating_sub(self.sent);
            if u64::try_from(bytes.len()).unwrap_or(u64::MAX) > room {
                let keep = usize::try_from(room).unwrap_or(usize::MAX).min(bytes.len());
                if keep > 0 {
                    let _sent = self.frames.send(Ok(bytes.slice(..keep))).await;
                }
                self.sent = limit;
                self.abort().await;
                return Err(SendStop::Cut);
            }
        }
        self.sent = self
            .sent
            .saturating_add(u64::try_from(bytes.len()).unwrap_or(u64::MAX));
        self.frames
            .send(Ok(bytes))
            .await
            .map_err(|_| SendStop::Disconnected)
    }

    /// Ends the body with an error: hyper drops the connection, the client sees a truncated
    /// stream (xapi: the handler raised after the 200 header).
    pub(crate) async fn abort(&mut self) {
        let _sent = self
            .frames
            .send(Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "transfer failed",
            )))
            .await;
    }
}

/// Task progress, reported when it grew by at least 1 %.
pub(crate) struct Progress {
    total: u64,
    done: u64,
    reported: u64,
}

impl Progress {
    /// Progress over `total` units.
    pub(crate) fn new(total: u64) -> Progress {
        Progress {
            total: total.max(1),
            done: 0,
            reported: 0,
        }
    }

    /// Adds `units`; returns the fraction to report, if it moved enough.
    pub(crate) fn advance(&mut self, units: u64) -> Option<f64> {
        self.done = self.done.saturating_add(units).min(self.total);
        let percent = self.done.saturating_mul(100) / self.total;
        (percent > self.reported).then(|| {
            self.reported = percent;
            // Both are at most 100: exact in f64.
            f64::from(u32::try_from(percent).unwrap_or(100)) / 100.0
        })
    }
}

/// The parameters of a request, or the HTML error xapi answers for a malformed URL.
#[allow(
    clippy::result_large_err,
    reason = "the error is the response itself, returned straight to hyper"
)]
fn request_params(request: &Request<Incoming>) -> Result<Params, Response<ResponseBody>> {
    let cookies: Vec<&str> = request
        .headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .collect();
    Params::parse(request.uri().query(), cookies).map_err(|error| {
        tracing::debug!(%error, "malformed transfer URL");
        html_error(StatusCode::BAD_REQUEST)
    })
}

/// Waits the latency configured for `http:<path>`.
async fn inject_latency(sim: &Sim, path: &str) {
    let delay = sim.faults().latency(&format!("http:{path}"));
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
}

/// A session for one transfer; a temporary one (from Basic credentials) is logged out on drop.
pub(crate) struct SessionGuard {
    sim: Arc<Sim>,
    authenticated: Authenticated,
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        if self.authenticated.temporary {
            self.sim.logout(&self.authenticated.session);
        }
    }
}

/// xapi's 401 (`Http_svr.response_unauthorised`): HTML, `WWW-Authenticate: Basic realm=…`.
fn unauthorised(realm: &str) -> Response<ResponseBody> {
    let mut response = Response::new(crate::server::full(
        "<html><body><h1>HTTP 401 unauthorised</h1>Please check your credentials and retry.</body></html>",
    ));
    *response.status_mut() = StatusCode::UNAUTHORIZED;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-store"),
    );
    if let Ok(value) = HeaderValue::from_str(&format!("Basic realm=\"{realm}\"")) {
        headers.insert(header::WWW_AUTHENTICATE, value);
    }
    response
}

/// `Xapi_http.assert_credentials_ok`, run by xapi's handler table before every transfer handler
/// (the realm is the HTTP action name, e.g. `get_export_raw_vdi`): a `session_id` (cookie or
/// query) must be valid — Basic credentials are not tried then —, else Basic credentials open a
/// temporary session. Failures answer 401 and leave any `task_id` task untouched (the handler,
/// which would fail it in `with_context`, never runs); another `Authorization` scheme is 500.
#[allow(
    clippy::result_large_err,
    reason = "the error is the response itself, returned straight to hyper"
)]
fn authenticate(
    context: &HostContext,
    params: &Params,
    headers: &HeaderMap,
    realm: &str,
) -> Result<SessionGuard, Response<ResponseBody>> {
    let guard = |authenticated| SessionGuard {
        sim: Arc::clone(&context.sim),
        authenticated,
    };
    if let Some(session) = params.reference("session_id") {
        return context
            .sim
            .authenticate(&context.host, Some(session), None)
            .map(guard)
            .map_err(|_| unauthorised(realm));
    }
    match headers
        .get(header::AUTHORIZATION)
        .map(|value| params::parse_authorization(value.as_bytes()))
    {
        Some(Authorization::Basic { user, password }) => context
            .sim
            .authenticate(&context.host, None, Some((&user, &password)))
            .map(guard)
            .map_err(|_| unauthorised(realm)),
        Some(Authorization::Unknown) => Err(html_error(StatusCode::INTERNAL_SERVER_ERROR)),
        None => Err(unauthorised(realm)),
    }
}

/// The start every transfer handler shares, in xapi's order: the URL's parameters (a malformed
/// URL is a 400), the `http:<path>` latency fault, then the handler table's credential check
/// ([`authenticate`]: 401 with `realm`). `Err` is the response to send as is.
#[allow(
    clippy::result_large_err,
    reason = "the error is the response itself, returned straight to hyper"
)]
pub(crate) async fn admit(
    request: &Request<Incoming>,
    context: &HostContext,
    path: &str,
    realm: &str,
) -> Result<(Params, SessionGuard), Response<ResponseBody>> {
    let params = request_params(request)?;
    inject_latency(&context.sim, path).await;
    let session = authenticate(context, &params, request.headers(), realm)?;
    Ok((params, session))
}

/// Whether this host can serve a transfer of storage on `srs` (`Importexport` host selection).
pub(crate) enum Reach {
    /// This host sees every SR.
    Here,
    /// Another host does: the `302` to send, before any body byte is read.
    Redirect(Response<ResponseBody>),
    /// No host sees them all; each handler answers that its own way.
    Nowhere,
}

/// [`Reach`] of `srs` from the contacted host: [`host_sees_sr`] for each, else the `302` of
/// [`redirect`] to the first host (master first) that sees them all.
pub(crate) fn reach(context: &HostContext, srs: &[String], path: &str, params: &Params) -> Reach {
    let here = context.sim.read(|db| {
        srs.iter()
            .all(|sr| host_sees_sr(db, context.host.as_str(), sr))
    });
    if here {
        return Reach::Here;
    }
    match context.sim.read(|db| host_seeing(db, srs)) {
        Some(host) => Reach::Redirect(redirect(context, &host, path, params)),
        None => Reach::Nowhere,
    }
}

/// The task a transfer runs under: the client's `task_id`, or a new one labelled `label`
/// (`subtask_of` honoured).
pub(crate) fn transfer_task(context: &HostContext, params: &Params, label: &str) -> Ref<Task> {
    if let Some(task) = params.reference("task_id") {
        return Ref::new(task);
    }
    let task = context.sim.create_task(label, &context.host);
    if let Some(parent) = params.reference("subtask_of") {
        let parent = parent.to_owned();
        let child = task.as_str().to_owned();
        context.sim.write(|db| {
            if db.exists(ClassId::Task, &parent) {
                let _set = db.set(
                    ClassId::Task,
                    &child,
                    "subtask_of",
                    xenapi::Value::String(parent.clone()),
                );
                let _added = db.set_add(
                    ClassId::Task,
                    &parent,
                    "subtasks",
                    xenapi::Value::String(child.clone()),
                );
            }
        });
    }
    task
}

/// Fails a task (a vanished task is ignored, as xapi's `TaskHelper.failed` on a dead task).
pub(crate) fn fail_task(sim: &Arc<Sim>, task: &Ref<Task>, failure: Failure) {
    tracing::debug!(task = %task.as_str(), code = %failure.code, "transfer failed");
    let _ignored = sim.complete_task(task, TaskOutcome::Failure(failure));
}

/// `INTERNAL_ERROR [message]`.
pub(crate) fn internal_error(message: impl Into<String>) -> Failure {
    Failure::new("INTERNAL_ERROR", [message.into()])
}

/// `VDI_IO_ERROR ["Device I/O errors"]`: what vhd-tool failures become.
pub(crate) fn vdi_io_error() -> Failure {
    Failure::new("VDI_IO_ERROR", ["Device I/O errors"])
}

/// A response with no body: `Connection: close`, `Cache-Control: no-cache, no-store`; HTTP/1.0
/// where xapi writes `~version:"1.0"`.
pub(crate) fn head_only(status: StatusCode, version: Version) -> Response<ResponseBody> {
    let mut response = Response::new(crate::server::full(Bytes::new()));
    *response.status_mut() = status;
    *response.version_mut() = version;
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-store"),
    );
    response
}

/// A `200 OK` transfer head over a body read to EOF: no `Content-Length`, `Connection: close`,
/// `task-id`. hyper can only delimit a body by closing the connection in HTTP/1.0, so the
/// status line says `HTTP/1.0` (xapi says 1.1 for raw transfers, 1.0 for XVA exports).
pub(crate) fn streaming_ok(
    task: &Ref<Task>,
    extra: &[(HeaderName, &str)],
    body: ResponseBody,
) -> Response<ResponseBody> {
    let mut response = Response::new(body);
    *response.version_mut() = Version::HTTP_10;
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-store"),
    );
    if let Ok(value) = HeaderValue::from_str(task.as_str()) {
        headers.insert(HeaderName::from_static("task-id"), value);
    }
    for (name, value) in extra {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(name.clone(), value);
        }
    }
    response
}

/// The span a transfer's work runs in (the task ref identifies it; sessions never appear).
pub(crate) fn transfer_span(path: &str, task: &Ref<Task>) -> tracing::Span {
    tracing::debug_span!("transfer", path, task = %task.as_str())
}

/// Whether `host` has a currently attached PBD for `sr` (`Importexport.check_sr_availability`).
fn host_sees_sr(db: &Db, host: &str, sr: &str) -> bool {
    db.strings(ClassId::Sr, sr, "PBDs").iter().any(|pbd| {
        db.str(ClassId::Pbd, pbd, "host") == host
            && db.bool(ClassId::Pbd, pbd, "currently_attached")
    })
}

/// A host that sees every SR of `srs` (`find_host_for_sr`, `find_host_for_VM`): the master
/// first, then the others in table order.
fn host_seeing(db: &Db, srs: &[String]) -> Option<String> {
    let master = db.master();
    std::iter::once(master.clone())
        .chain(
            db.all(ClassId::Host)
                .into_iter()
                .filter(|host| *host != master),
        )
        .find(|host| srs.iter().all(|sr| host_sees_sr(db, host, sr)))
}

/// xapi's `return_302_redirect`: `Location: https://<host.address><path>?<query>` with the URL
/// query only (cookies are not carried), `Connection: close`. The simulator's hosts share a port
/// that is not 443, so the port is included, and the scheme is `http` for a plain pool.
fn redirect(
    context: &HostContext,
    target_host: &str,
    path: &str,
    params: &Params,
) -> Response<ResponseBody> {
    let address = context
        .sim
        .read(|db| db.str(ClassId::Host, target_host, "address"));
    let address = if address.contains(':') {
        format!("[{address}]")
    } else {
        address
    };
    let scheme = if context.tls { "https" } else { "http" };
    let location = format!(
        "{scheme}://{address}:{}{path}?{}",
        context.local.port(),
        params::redirect_query(params.query_pairs())
    );
    tracing::debug!(%path, to = %address, "302 to the host that sees the storage");
    let mut response = head_only(StatusCode::FOUND, Version::HTTP_11);
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

/// A running transfer's resources, released when it ends however it ends: dom0 VBDs, the
/// temporary session, and the task (failed if nobody completed it).
pub(crate) struct Transfer {
    pub(crate) sim: Arc<Sim>,
    pub(crate) task: Ref<Task>,
    vbds: Vec<Ref<Vbd>>,
    _session: SessionGuard,
    completed: bool,
}

impl Transfer {
    /// A transfer under `task`.
    pub(crate) fn new(sim: Arc<Sim>, task: Ref<Task>, session: SessionGuard) -> Transfer {
        Transfer {
            sim,
            task,
            vbds: Vec::new(),
            _session: session,
            completed: false,
        }
    }

    /// Attaches `vdi` to the host's control domain for the rest of the transfer.
    ///
    /// # Errors
    /// `HANDLE_INVALID`, `VDI_INCOMPATIBLE_TYPE`.
    pub(crate) fn attach(
        &mut self,
        host: &Ref<xenapi::Host>,
        vdi: &Ref<Vdi>,
        read_only: bool,
    ) -> Result<(), Failure> {
        let vbd = self.sim.plug_dom0_vbd(host, vdi, read_only)?;
        self.vbds.push(vbd);
        Ok(())
    }

    /// Reports progress.
    pub(crate) fn progress(&self, fraction: f64) {
        let _ignored = self.sim.set_task_progress(&self.task, fraction);
    }

    /// Whether the client asked to cancel the task.
    pub(crate) fn cancel_requested(&self) -> bool {
        self.sim.task_cancel_requested(&self.task)
    }

    /// Ends the transfer: VBDs are unplugged first (xapi detaches before completing), then the
    /// task is completed.
    pub(crate) fn finish(mut self, outcome: TaskOutcome) {
        self.release();
        if let TaskOutcome::Failure(failure) = &outcome {
            tracing::debug!(task = %self.task.as_str(), code = %failure.code, "transfer failed");
        }
        let _ignored = self.sim.complete_task(&self.task, outcome);
        self.completed = true;
    }

    fn release(&mut self) {
        for vbd in self.vbds.drain(..) {
            self.sim.unplug_dom0_vbd(&vbd);
        }
    }
}

impl Drop for Transfer {
    fn drop(&mut self) {
        self.release();
        if !self.completed {
            fail_task(
                &self.sim,
                &self.task,
                internal_error("the transfer was interrupted"),
            );
        }
    }
}

/// The exact `Content-Length` of a request, if it has a valid one.
pub(crate) fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The request body as a stream of byte frames (trailers skipped); errors are I/O errors.
pub(crate) async fn next_data(body: &mut Incoming) -> Option<Result<Bytes, hyper::Error>> {
    loop {
        match body.frame().await? {
            Ok(frame) => {
                if let Ok(data) = frame.into_data() {
                    return Some(Ok(data));
                }
            }
            Err(error) => return Some(Err(error)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_reports_each_percent_once() {
        let mut progress = Progress::new(200);
        assert_eq!(progress.advance(1), None);
        assert_eq!(progress.advance(1), Some(0.01));
        assert_eq!(progress.advance(1), None);
        assert_eq!(progress.advance(500), Some(1.0));
        assert_eq!(progress.advance(1), None);
    }

    #[tokio::test]
    async fn a_cut_sends_the_prefix_then_aborts() {
        let (mut sender, body) = channel_body(Some(5));
        let reader = tokio::spawn(async move {
            let mut body = body;
            let mut received = Vec::new();
            let mut failed = false;
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(frame) => received.extend_from_slice(&frame.into_data().unwrap()),
                    Err(_) => failed = true,
                }
            }
            (received, failed)
        });
        assert_eq!(sender.send(Bytes::from_static(b"abc")).await, Ok(()));
        assert_eq!(
            sender.send(Bytes::from_static(b"defgh")).await,
            Err(SendStop::Cut)
        );
        drop(sender);
        let (received, failed) = reader.await.unwrap();
        assert_eq!(received, b"abcde");
        assert!(failed);
    }
}
