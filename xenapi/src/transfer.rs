//! HTTP transfers: `/export_raw_vdi`, `/import_raw_vdi`, VM `/export` and `/import`, as byte
//! streams tracked by a task.
//!
//! Every transfer runs under a task the client creates (`task_id=`): xapi answers `200` as soon
//! as it *starts*, and the outcome is in the task. So a download is a [`Download`] stream
//! followed by [`Download::finish`], which waits for the task; an upload returns only after
//! the body is sent *and* the task succeeded. `302` redirects (storage not visible from the
//! contacted host) are followed before any body byte moves: uploads hold their body back until
//! xapi's response head arrives (xapi answers before reading the body). Uploads always carry an
//! exact `Content-Length` and never use HTTP chunked transfer encoding (xapi rejects it).

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::stream::{BoxStream, Stream, StreamExt};
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, HOST, LOCATION, USER_AGENT};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Empty, StreamBody};
use hyper::body::{Frame, Incoming};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use tokio::sync::oneshot;

use crate::chunked;
use crate::client::Client;
use crate::error::Error;
use crate::records::{HostRecord, TaskStatus};
use crate::refs::{Host, Ref, Sr, Task, Vdi, Vm};
use crate::task::{WaitOptions, task_outcome};
use crate::tls::{Fingerprint, Trust};
use crate::transport::{BoxError, Endpoint, Opened, RequestBody, collect_limited};
use crate::url::Scheme;
use crate::value::Value;

/// Redirects followed per transfer.
const MAX_REDIRECTS: usize = 3;
/// How long an upload holds its body back waiting for the response head before sending anyway
/// (a server that reads the body first would otherwise wait forever).
const BODY_GATE_GRACE: Duration = Duration::from_secs(5);

/// The caller's upload stream.
type ByteStream = BoxStream<'static, Result<Bytes, BoxError>>;
/// Where an upload stream waits until a request may take it (kept across redirects).
type StreamSlot = Arc<Mutex<Option<ByteStream>>>;

const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Disk image format of `/export_raw_vdi`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExportFormat {
    /// Exactly `virtual_size` bytes.
    Raw,
    /// A dynamic VHD of the allocated blocks; with a base, a differencing VHD of the blocks
    /// that differ from that older snapshot.
    Vhd,
}

/// Body format of `/import_raw_vdi`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImportFormat {
    /// Bytes from offset 0.
    Raw,
    /// A VHD stream (dynamic or differencing): only the blocks it carries are written.
    Vhd,
    /// xapi's `chunked` frames (see [`crate::chunked`]); raw data only.
    Chunked,
}

/// Compression of a VM export.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Compression {
    /// Plain tar.
    #[default]
    None,
    /// gzip.
    Gzip,
    /// zstd.
    Zstd,
}

/// An upload body: a byte stream and its exact length.
pub struct UploadBody {
    length: u64,
    stream: BoxStream<'static, Result<Bytes, BoxError>>,
}

impl std::fmt::Debug for UploadBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UploadBody")
            .field("length", &self.length)
            .finish_non_exhaustive()
    }
}

impl UploadBody {
    /// A stream that will produce exactly `length` bytes (checked while sending).
    pub fn new<S, E>(length: u64, stream: S) -> UploadBody
    where
        S: Stream<Item = Result<Bytes, E>> + Send + 'static,
        E: Into<BoxError>,
    {
        UploadBody {
            length,
            stream: stream.map(|item| item.map_err(Into::into)).boxed(),
        }
    }

    /// An in-memory body.
    pub fn from_bytes(bytes: Bytes) -> UploadBody {
        let length = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
        UploadBody::new(length, futures::stream::iter([Ok::<_, BoxError>(bytes)]))
    }

    /// A `chunked` body from `(disk offset, data)` frames; `frame_lengths` are the data lengths
    /// of the frames the stream will yield, in any order, so the exact `Content-Length` is known
    /// before the first byte. Frames must be non-empty and at most `u32::MAX` bytes.
    pub fn chunked<S, E>(
        frame_lengths: impl IntoIterator<Item = u32>,
        frames: S,
    ) -> Result<UploadBody, Error>
    where
        S: Stream<Item = Result<(u64, Bytes), E>> + Send + 'static,
        E: Into<BoxError>,
    {
        let length = chunked::body_length(frame_lengths)
            .ok_or_else(|| Error::protocol("chunked body length overflows"))?;
        let framed = frames
            .map(
                |item| -> Result<futures::stream::Iter<std::array::IntoIter<Bytes, 2>>, BoxError> {
                    let (offset, data) = item.map_err(Into::into)?;
                    let len = u32::try_from(data.len())
                        .map_err(|_| BoxError::from("chunked frame larger than 4 GiB"))?;
                    let header = chunked::frame_header(offset, len)
                        .ok_or_else(|| BoxError::from("empty chunked frame at offset 0"))?;
                    Ok(futures::stream::iter([
                        Bytes::copy_from_slice(&header),
                        data,
                    ]))
                },
            )
            .flat_map(|item| match item {
                Ok(parts) => parts.map(Ok).left_stream(),
                Err(error) => futures::stream::iter([Err(error)]).right_stream(),
            })
            .chain(futures::stream::iter([Ok(Bytes::from_static(
                &chunked::TERMINATOR,
            ))]));
        Ok(UploadBody::new(length, framed))
    }

    /// The declared length.
    pub fn len(&self) -> u64 {
        self.length
    }

    /// True for an empty body.
    pub fn is_empty(&self) -> bool {
        self.length == 0
    }
}

/// A download in progress: a stream of body bytes, then [`Download::finish`].
pub struct Download {
    client: Client,
    task: Ref<Task>,
    body: Incoming,
    checked_start: bool,
    ended: bool,
    settled: bool,
    what: String,
}

impl std::fmt::Debug for Download {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Download")
            .field("what", &self.what)
            .field("task", &self.task)
            .field("ended", &self.ended)
            .finish()
    }
}

impl Download {
    /// The task tracking the transfer.
    pub fn task(&self) -> &Ref<Task> {
        &self.task
    }

    /// After the stream ended: waits for the task and returns its result (`None` for exports,
    /// which store none). xapi truncates the stream on a failure after `200`; this is where
    /// that failure shows. Calling it before the end of the stream aborts the transfer.
    pub async fn finish(mut self, options: &WaitOptions) -> Result<Option<Value>, Error> {
        self.settled = true;
        if !self.ended {
            self.client.abandon_task(&self.task).await;
            return Err(Error::Cancelled {
                context: format!("{} (finished before the end of the stream)", self.what),
            });
        }
        self.client.wait_task(&self.task, options).await
    }

    /// Stops the transfer and cancels its task.
    pub async fn abort(mut self) {
        self.settled = true;
        self.client.abandon_task(&self.task).await;
    }
}

impl Stream for Download {
    type Item = Result<Bytes, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if this.ended {
                return Poll::Ready(None);
            }
            let frame = match hyper::body::Body::poll_frame(Pin::new(&mut this.body), cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => {
                    this.ended = true;
                    return Poll::Ready(None);
                }
                Poll::Ready(Some(Err(error))) => {
                    this.ended = true;
                    return Poll::Ready(Some(Err(Error::http(
                        format!("reading {}", this.what),
                        error,
                    ))));
                }
                Poll::Ready(Some(Ok(frame))) => frame,
            };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            if data.is_empty() {
                continue;
            }
            if !this.checked_start {
                this.checked_start = true;
                // A known xapi defect: a 200 body that starts with a whole error response.
                if data.starts_with(b"HTTP/") {
                    this.ended = true;
                    return Poll::Ready(Some(Err(Error::protocol(format!(
                        "{}: the body starts with an HTTP response (server-side failure)",
                        this.what
                    )))));
                }
            }
            return Poll::Ready(Some(Ok(data)));
        }
    }
}

impl Drop for Download {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let client = self.client.clone();
        let task = self.task.clone();
        runtime.spawn(async move { client.abandon_task(&task).await });
    }
}

fn encode_query(pairs: &[(&str, String)]) -> String {
    pairs
        .iter()
        .map(|(key, value)| {
            if value.is_empty() {
                (*key).to_owned()
            } else {
                format!("{key}={}", utf8_percent_encode(value, QUERY_VALUE))
            }
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// Where the next attempt goes: endpoint and path-with-query.
struct Hop {
    endpoint: Endpoint,
    path_and_query: String,
    path: String,
}

impl Client {
    /// `GET /export_raw_vdi`: the disk as raw bytes or as a VHD; with `base` (an older snapshot
    /// of the same disk), only what changed since, as a differencing VHD.
    pub async fn export_raw_vdi(
        &self,
        vdi: &Ref<Vdi>,
        format: ExportFormat,
        base: Option<&Ref<Vdi>>,
    ) -> Result<Download, Error> {
        let mut query = vec![
            ("vdi", vdi.as_str().to_owned()),
            (
                "format",
                match format {
                    ExportFormat::Raw => "raw".to_owned(),
                    ExportFormat::Vhd => "vhd".to_owned(),
                },
            ),
        ];
        if let Some(base) = base {
            query.push(("base", base.as_str().to_owned()));
        }
        self.download("/export_raw_vdi", "exporting a VDI", query)
            .await
    }

    /// `GET /export`: a VM (halted or suspended) as an XVA stream.
    pub async fn export_vm(
        &self,
        vm: &Ref<Vm>,
        compression: Compression,
    ) -> Result<Download, Error> {
        let mut query = vec![("ref", vm.as_str().to_owned())];
        match compression {
            Compression::None => {}
            Compression::Gzip => query.push(("use_compression", "true".into())),
            Compression::Zstd => query.push(("use_compression", "zstd".into())),
        }
        self.download("/export", "exporting a VM", query).await
    }

    /// `PUT /import_raw_vdi` into an existing VDI; returns when the body is sent and the task
    /// succeeded.
    pub async fn import_raw_vdi(
        &self,
        vdi: &Ref<Vdi>,
        format: ImportFormat,
        body: UploadBody,
        options: &WaitOptions,
    ) -> Result<(), Error> {
        let mut query = vec![
            ("vdi", vdi.as_str().to_owned()),
            (
                "format",
                match format {
                    ImportFormat::Vhd => "vhd".to_owned(),
                    ImportFormat::Raw | ImportFormat::Chunked => "raw".to_owned(),
                },
            ),
        ];
        if format == ImportFormat::Chunked {
            query.push(("chunked", String::new()));
        }
        self.upload("/import_raw_vdi", "importing a VDI", query, body, options)
            .await
            .map(|_| ())
    }

    /// `PUT /import`: an XVA stream into `sr` (the pool's default SR when `None`); returns the
    /// created VMs. `restore` keeps MACs and identity.
    pub async fn import_vm(
        &self,
        sr: Option<&Ref<Sr>>,
        restore: bool,
        body: UploadBody,
        options: &WaitOptions,
    ) -> Result<Vec<Ref<Vm>>, Error> {
        let mut query = Vec::new();
        if let Some(sr) = sr {
            query.push(("sr_id", sr.as_str().to_owned()));
        }
        if restore {
            query.push(("restore", "true".to_owned()));
        }
        let result = self
            .upload("/import", "importing a VM", query, body, options)
            .await?;
        result.unwrap_or_else(|| Value::Array(Vec::new())).decode()
    }

    fn first_hop(
        &self,
        path: &str,
        task: &Ref<Task>,
        query: Vec<(&str, String)>,
    ) -> Result<Hop, Error> {
        let session = self.session()?;
        let master = self.master_url();
        let mut pairs = vec![
            ("session_id", session.as_str().to_owned()),
            ("task_id", task.as_str().to_owned()),
        ];
        pairs.extend(query);
        Ok(Hop {
            endpoint: Endpoint {
                scheme: master.scheme(),
                host: master.host().to_owned(),
                port: master.port(),
            },
            path_and_query: format!("{path}?{}", encode_query(&pairs)),
            path: path.to_owned(),
        })
    }

    /// Follows a `Location`: scheme and host from it (xapi sends `https://<address>/…`).
    async fn next_hop(&self, current: &Hop, location: &str) -> Result<Hop, Error> {
        let uri: http::Uri = location
            .parse()
            .map_err(|_| Error::protocol("unparseable Location header in a redirect"))?;
        let path_and_query = uri
            .path_and_query()
            .map(|pq| pq.as_str().to_owned())
            .unwrap_or_else(|| current.path_and_query.clone());
        let path = uri.path().to_owned();
        let endpoint = match uri.host() {
            None => current.endpoint.clone(),
            Some(host) => {
                let scheme = match uri.scheme_str() {
                    Some("http") => Scheme::Http,
                    _ => Scheme::Https,
                };
                // xapi always redirects to https; following an http Location from an https
                // host would send the session id in clear text.
                if scheme == Scheme::Http && current.endpoint.scheme == Scheme::Https {
                    return Err(Error::protocol(
                        "refusing a redirect from https to plain http (it would send the session in clear text)",
                    ));
                }
                let host = host
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_owned();
                Endpoint {
                    scheme,
                    port: uri.port_u16().unwrap_or(scheme.default_port()),
                    host,
                }
            }
        };
        if endpoint.scheme == Scheme::Https {
            self.ensure_pin(&endpoint.host).await?;
        }
        tracing::info!(to = %endpoint.authority(), path = %path, "following a redirect to the host that sees the storage");
        Ok(Hop {
            endpoint,
            path_and_query,
            path,
        })
    }

    /// With pinned trust, learns another host's certificate through the API (a channel already
    /// authenticated by the master's pin).
    async fn ensure_pin(&self, address: &str) -> Result<(), Error> {
        if !matches!(self.inner.http.trust(), Trust::Pinned(_)) || self.inner.http.has_pin(address)
        {
            return Ok(());
        }
        if self.master_url().host() == address {
            return Ok(());
        }
        let hosts = self.get_all_records::<Host>().await?;
        let found: Option<(Ref<Host>, HostRecord)> = hosts
            .into_iter()
            .find(|(_, record)| record.address == address);
        let (host, _) = found.ok_or_else(|| {
            Error::tls(format!(
                "redirected to {address}, which is no host of this pool"
            ))
        })?;
        let pem = self.host_get_server_certificate(&host).await?;
        self.inner.http.add_pin(address, Fingerprint::of_pem(&pem)?);
        Ok(())
    }

    async fn send(
        &self,
        hop: &Hop,
        method: Method,
        body: RequestBody,
        length: Option<u64>,
    ) -> Result<Opened, Error> {
        let (mut sender, driver) = self.inner.http.open(&hop.endpoint).await?;
        let mut request = Request::builder()
            .method(method.clone())
            .uri(hop.path_and_query.as_str())
            .header(HOST, hop.endpoint.authority())
            .header(USER_AGENT, concat!("xenapi-rs/", env!("CARGO_PKG_VERSION")));
        if let Some(length) = length {
            request = request
                .header(CONTENT_LENGTH, length)
                .header(CONTENT_TYPE, "application/octet-stream");
        }
        let request = request
            .body(body)
            .map_err(|error| Error::http(format!("building {method} {}", hop.path), error))?;
        let response = sender.send_request(request).await.map_err(|error| {
            Error::http(
                format!("{method} {} on {}", hop.path, hop.endpoint.authority()),
                error,
            )
        })?;
        Ok(Opened {
            response,
            driver,
            _sender: sender,
        })
    }

    /// The error for a refused transfer: the task's error if xapi failed it, else the status.
    async fn refused(
        &self,
        task: &Ref<Task>,
        status: StatusCode,
        method: &Method,
        path: &str,
    ) -> Error {
        let record = self.get_record::<Task>(task).await;
        self.abandon_task(task).await;
        match record {
            Ok(record) if record.status != TaskStatus::Pending => match task_outcome(&record) {
                Err(error) => self.inner.redact_error(error),
                Ok(_) => Error::HttpStatus {
                    status: status.as_u16(),
                    method: method.to_string(),
                    path: path.to_owned(),
                },
            },
            _ => Error::HttpStatus {
                status: status.as_u16(),
                method: method.to_string(),
                path: path.to_owned(),
            },
        }
    }

    async fn download(
        &self,
        path: &str,
        what: &str,
        query: Vec<(&str, String)>,
    ) -> Result<Download, Error> {
        let task = self.task_create(&format!("xenapi-rs: {what}"), "").await?;
        let result = async {
            let mut hop = self.first_hop(path, &task, query)?;
            for _ in 0..=MAX_REDIRECTS {
                let opened = self
                    .send(
                        &hop,
                        Method::GET,
                        Empty::new().map_err(|never| match never {}).boxed_unsync(),
                        None,
                    )
                    .await?;
                let status = opened.response.status();
                if status.is_redirection() {
                    let location =
                        crate::transport::header(opened.response.headers(), LOCATION.as_str())
                            .ok_or_else(|| Error::protocol("redirect without Location"))?
                            .to_owned();
                    hop = self.next_hop(&hop, &location).await?;
                    continue;
                }
                if status != StatusCode::OK {
                    return Err(self.refused(&task, status, &Method::GET, &hop.path).await);
                }
                return Ok(opened.response.into_body());
            }
            Err(Error::TooManyRedirects {
                count: MAX_REDIRECTS,
                context: what.to_owned(),
            })
        }
        .await;
        match result {
            Ok(body) => Ok(Download {
                client: self.clone(),
                task,
                body,
                checked_start: false,
                ended: false,
                settled: false,
                what: what.to_owned(),
            }),
            Err(error) => {
                self.abandon_task(&task).await;
                Err(error)
            }
        }
    }

    async fn upload(
        &self,
        path: &str,
        what: &str,
        query: Vec<(&str, String)>,
        body: UploadBody,
        options: &WaitOptions,
    ) -> Result<Option<Value>, Error> {
        let task = self.task_create(&format!("xenapi-rs: {what}"), "").await?;
        let length = body.length;
        let slot = Arc::new(Mutex::new(Some(body.stream)));
        let sent = async {
            let mut hop = self.first_hop(path, &task, query)?;
            for _ in 0..=MAX_REDIRECTS {
                let (gate, gate_rx) = oneshot::channel::<()>();
                let (done_tx, done) = oneshot::channel::<Result<u64, Error>>();
                let request_body = gated_body(gate_rx, slot.clone(), length, done_tx);
                let mut gate = Some(gate);
                let opened = {
                    let sending = self.send(&hop, Method::PUT, request_body, Some(length));
                    tokio::pin!(sending);
                    tokio::select! {
                        opened = &mut sending => opened?,
                        () = tokio::time::sleep(BODY_GATE_GRACE) => {
                            if let Some(gate) = gate.take() {
                                let _ = gate.send(());
                            }
                            sending.await?
                        }
                    }
                };
                let status = opened.response.status();
                if status.is_redirection() {
                    if gate.is_none() {
                        return Err(Error::protocol(
                            "redirected after the upload body had started",
                        ));
                    }
                    let location =
                        crate::transport::header(opened.response.headers(), LOCATION.as_str())
                            .ok_or_else(|| Error::protocol("redirect without Location"))?
                            .to_owned();
                    hop = self.next_hop(&hop, &location).await?;
                    continue;
                }
                if status != StatusCode::OK {
                    return Err(self.refused(&task, status, &Method::PUT, &hop.path).await);
                }
                if let Some(gate) = gate.take() {
                    let _ = gate.send(());
                }
                let body_outcome = match done.await {
                    Ok(outcome) => outcome,
                    Err(_) => Err(Error::protocol(format!(
                        "the connection closed while {what}"
                    ))),
                };
                let response_body =
                    collect_limited(opened.response.into_body(), 1 << 20, what).await;
                match opened.driver.await {
                    Ok(Err(error)) => {
                        tracing::debug!(%error, "transfer connection ended with an error")
                    }
                    Err(error) => tracing::debug!(%error, "transfer connection task failed"),
                    Ok(Ok(())) => {}
                }
                body_outcome?;
                if let Err(error) = response_body {
                    tracing::debug!(%error, "reading the (empty) upload response failed");
                }
                return Ok(());
            }
            Err(Error::TooManyRedirects {
                count: MAX_REDIRECTS,
                context: what.to_owned(),
            })
        }
        .await;
        match sent {
            Ok(()) => self.wait_task(&task, options).await,
            Err(error) => {
                // The task may carry the real reason (xapi fails it when the transfer breaks).
                if let Ok(record) = self.get_record::<Task>(&task).await
                    && record.status == TaskStatus::Failure
                    && let Err(task_error) = task_outcome(&record)
                {
                    self.destroy_task_quietly(&task).await;
                    return Err(self.inner.redact_error(task_error));
                }
                self.abandon_task(&task).await;
                Err(error)
            }
        }
    }
}

/// A request body that yields nothing until `gate` fires, then streams the caller's body from
/// `slot`, checking that it produces exactly `expected` bytes, and reports the outcome on `done`.
/// If the gate is dropped (a redirect), the caller's stream stays in `slot` for the next try.
fn gated_body(
    gate: oneshot::Receiver<()>,
    slot: StreamSlot,
    expected: u64,
    done: oneshot::Sender<Result<u64, Error>>,
) -> RequestBody {
    enum State {
        Waiting(
            oneshot::Receiver<()>,
            StreamSlot,
            oneshot::Sender<Result<u64, Error>>,
        ),
        Streaming(
            BoxStream<'static, Result<Bytes, BoxError>>,
            u64,
            oneshot::Sender<Result<u64, Error>>,
        ),
        /// All declared bytes sent (and reported): hyper stops polling at `Content-Length`.
        Sent(BoxStream<'static, Result<Bytes, BoxError>>),
        Done,
    }
    async fn pull(
        mut stream: BoxStream<'static, Result<Bytes, BoxError>>,
        sent: u64,
        expected: u64,
        done: oneshot::Sender<Result<u64, Error>>,
    ) -> Option<(Result<Frame<Bytes>, BoxError>, State)> {
        match stream.next().await {
            Some(Ok(bytes)) => {
                let total = sent.saturating_add(u64::try_from(bytes.len()).unwrap_or(u64::MAX));
                if total > expected {
                    let _ = done.send(Err(Error::BodyLength {
                        expected,
                        found: total,
                    }));
                    return Some((
                        Err(BoxError::from("upload body longer than its Content-Length")),
                        State::Done,
                    ));
                }
                if total == expected {
                    let _ = done.send(Ok(total));
                    return Some((Ok(Frame::data(bytes)), State::Sent(stream)));
                }
                Some((
                    Ok(Frame::data(bytes)),
                    State::Streaming(stream, total, done),
                ))
            }
            Some(Err(error)) => {
                let message = error.to_string();
                let _ = done.send(Err(Error::Body { source: error }));
                Some((Err(BoxError::from(message)), State::Done))
            }
            None if sent != expected => {
                let _ = done.send(Err(Error::BodyLength {
                    expected,
                    found: sent,
                }));
                Some((
                    Err(BoxError::from(
                        "upload body shorter than its Content-Length",
                    )),
                    State::Done,
                ))
            }
            None => {
                let _ = done.send(Ok(sent));
                None
            }
        }
    }
    let frames =
        futures::stream::unfold(State::Waiting(gate, slot, done), move |state| async move {
            match state {
                State::Done => None,
                State::Waiting(gate, slot, done) => {
                    if gate.await.is_err() {
                        return Some((
                            Err(BoxError::from("upload abandoned before its body started")),
                            State::Done,
                        ));
                    }
                    let taken = slot.lock().unwrap_or_else(PoisonError::into_inner).take();
                    match taken {
                        Some(stream) if expected == 0 => {
                            let _ = done.send(Ok(0));
                            Some((Ok(Frame::data(Bytes::new())), State::Sent(stream)))
                        }
                        Some(stream) => pull(stream, 0, expected, done).await,
                        None => {
                            let _ = done
                                .send(Err(Error::protocol("the upload body was already consumed")));
                            Some((
                                Err(BoxError::from("upload body already consumed")),
                                State::Done,
                            ))
                        }
                    }
                }
                State::Streaming(stream, sent, done) => pull(stream, sent, expected, done).await,
                State::Sent(mut stream) => loop {
                    match stream.next().await {
                        None => return None,
                        Some(Ok(extra)) if extra.is_empty() => {}
                        Some(Ok(_)) => {
                            return Some((
                                Err(BoxError::from("upload body longer than its Content-Length")),
                                State::Done,
                            ));
                        }
                        Some(Err(error)) => return Some((Err(error), State::Done)),
                    }
                },
            }
        });
    StreamBody::new(frames).boxed_unsync()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_encoding() {
        let query = encode_query(&[
            ("session_id", "OpaqueRef:a b".into()),
            ("chunked", String::new()),
            ("format", "vhd".into()),
        ]);
        assert_eq!(query, "session_id=OpaqueRef%3Aa%20b&chunked&format=vhd");
    }

    #[tokio::test]
    async fn chunked_body_frames_and_length() {
        let frames =
            futures::stream::iter([Ok::<_, BoxError>((512u64, Bytes::from_static(b"abcd")))]);
        let body = UploadBody::chunked([4], frames).unwrap();
        assert_eq!(body.len(), 12 + 4 + 12);
        let bytes: Vec<Bytes> = body.stream.map(|item| item.unwrap()).collect().await;
        let joined: Vec<u8> = bytes.iter().flat_map(|b| b.to_vec()).collect();
        let mut expected = chunked::frame_header(512, 4).unwrap().to_vec();
        expected.extend_from_slice(b"abcd");
        expected.extend_from_slice(&chunked::TERMINATOR);
        assert_eq!(joined, expected);
    }
}
