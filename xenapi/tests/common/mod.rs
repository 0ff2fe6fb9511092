//! A small scripted XenAPI server for the client tests, built on the crate's own server-side
//! codec: sessions, a few methods, tasks with `event.from`, and the HTTP transfer handlers.
//! It is not the simulator: just enough xapi behaviour to drive every client path.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    dead_code,
    reason = "test code: a panic is a failed test; each test binary uses a subset"
)]

use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use xenapi::chunked::{ChunkEvent, FrameDecoder};
use xenapi::codec::{Failure, Response as RpcResponse, jsonrpc, xmlrpc};
use xenapi::{Fingerprint, HostRecord, PoolRecord, Ref, TaskRecord, TaskStatus, Value, VmRecord};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Body = UnsyncBoxBody<Bytes, BoxError>;
/// Encodes a response in the transport the call came in.
type Reply = Box<dyn Fn(&RpcResponse) -> Vec<u8> + Send>;

pub const USER: &str = "root";
pub const PASSWORD: &str = "s3cret";

/// A self-signed certificate for a test host.
#[derive(Clone)]
pub struct TestCert {
    pub pem: String,
    pub der: CertificateDer<'static>,
    pub key_der: Vec<u8>,
}

impl TestCert {
    pub fn new(names: &[&str]) -> TestCert {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(
            names
                .iter()
                .map(|name| (*name).to_owned())
                .collect::<Vec<_>>(),
        )
        .unwrap();
        let cert = params.self_signed(&key).unwrap();
        TestCert {
            pem: cert.pem(),
            der: cert.der().clone(),
            key_der: key.serialize_der(),
        }
    }

    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint::of_der(self.der.as_ref())
    }

    fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![self.der.clone()],
                PrivateKeyDer::Pkcs8(self.key_der.clone().into()),
            )
            .unwrap();
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    }
}

/// The pool-wide database shared by every listener of one test pool.
#[derive(Default)]
pub struct Db {
    pub sessions: HashSet<String>,
    pub calls: Vec<String>,
    pub tasks: BTreeMap<String, TaskRecord>,
    pub task_generation: BTreeMap<String, u64>,
    pub generation: u64,
    pub next_id: u64,
    pub vm_count: usize,
    pub vm_other_config: BTreeMap<String, String>,
    /// Hosts: address → certificate PEM.
    pub hosts: Vec<(String, String)>,
    /// Bytes served by the export handlers.
    pub export_data: Vec<u8>,
    /// Export handlers: send this many bytes, then break the stream and fail the task.
    pub export_fail_after: Option<usize>,
    /// Last upload: raw body bytes, or the disk image written from `chunked` frames.
    pub uploaded: Option<Vec<u8>>,
    /// Upload handlers: fail the task (`VDI_IO_ERROR`) after reading the body.
    pub upload_fail: bool,
    /// Upload handlers: stop reading after this many bytes and break the connection.
    pub upload_break_after: Option<usize>,
    pub upload_headers: Vec<(String, String)>,
    /// Force the next calls to answer SESSION_INVALID (sessions expired).
    pub expire_sessions: bool,
    /// Logins so far.
    pub login_count: usize,
    /// Every call answers SESSION_INVALID, re-login or not.
    pub reject_sessions: bool,
    /// Methods whose next call is recorded, then its connection closed without an answer (as
    /// when a host dies mid-call or closes an idle keep-alive connection); each entry once.
    pub drop_unanswered: Vec<String>,
}

/// Returned by the service to make hyper close the connection without writing a response.
#[derive(Debug)]
pub struct DropConnection;

impl std::fmt::Display for DropConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped on purpose")
    }
}

impl std::error::Error for DropConnection {}

impl Db {
    fn new_ref(&mut self, kind: &str) -> String {
        self.next_id += 1;
        format!("OpaqueRef:{kind}-{:08}", self.next_id)
    }

    fn bump(&mut self, task: &str) {
        self.generation += 1;
        self.task_generation
            .insert(task.to_owned(), self.generation);
    }

    pub fn new_task(&mut self, label: &str) -> String {
        let reference = self.new_ref("task");
        let record = TaskRecord {
            uuid: reference.trim_start_matches("OpaqueRef:").to_owned(),
            name_label: label.to_owned(),
            status: TaskStatus::Pending,
            allowed_operations: vec!["cancel".into()],
            ..TaskRecord::default()
        };
        self.tasks.insert(reference.clone(), record);
        self.bump(&reference);
        reference
    }

    pub fn complete(&mut self, task: &str, result: Option<Value>) {
        if let Some(record) = self.tasks.get_mut(task)
            && record.status == TaskStatus::Pending
        {
            record.status = TaskStatus::Success;
            record.progress = 1.0;
            record.result = result
                .map(|value| xmlrpc::encode_task_result(&value))
                .unwrap_or_default();
            record.allowed_operations.clear();
            self.bump(task);
        }
    }

    pub fn fail(&mut self, task: &str, error_info: &[&str]) {
        if let Some(record) = self.tasks.get_mut(task)
            && record.status == TaskStatus::Pending
        {
            record.status = TaskStatus::Failure;
            record.progress = 1.0;
            record.error_info = error_info.iter().map(|item| (*item).to_owned()).collect();
            record.allowed_operations.clear();
            self.bump(task);
        }
    }

    pub fn progress(&mut self, task: &str, progress: f64) {
        if let Some(record) = self.tasks.get_mut(task) {
            record.progress = progress;
            self.bump(task);
        }
    }

    pub fn count(&self, method: &str) -> usize {
        self.calls.iter().filter(|call| *call == method).count()
    }
}

/// How one listener behaves.
#[derive(Clone, Default)]
pub struct Options {
    pub tls: Option<TestCert>,
    /// Serve `/jsonrpc` (else it answers 404 HTML, like a host without JSON-RPC).
    pub no_json: bool,
    /// A pool member: every RPC answers HOST_IS_SLAVE with this address.
    pub slave_of: Option<String>,
    /// Thumbprint to send with HOST_IS_SLAVE when asked (`sha-256:master`).
    pub master_thumbprint: Option<String>,
    /// Transfers answer 302 to this base URL (this host "cannot see the storage").
    pub redirect_transfers_to: Option<String>,
    /// Bind address (default 127.0.0.1), and port (default any).
    pub ip: Option<IpAddr>,
    pub port: u16,
}

pub struct TestHost {
    pub addr: SocketAddr,
    pub db: Arc<Mutex<Db>>,
    pub options: Options,
    accept: JoinHandle<()>,
}

impl Drop for TestHost {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl TestHost {
    pub async fn start(options: Options) -> TestHost {
        let db = Arc::new(Mutex::new(Db {
            vm_count: 3,
            ..Db::default()
        }));
        TestHost::start_with_db(options, db).await
    }

    /// Another host of the same pool (shared database).
    pub async fn start_with_db(options: Options, db: Arc<Mutex<Db>>) -> TestHost {
        let ip = options.ip.unwrap_or(IpAddr::from([127, 0, 0, 1]));
        let listener = TcpListener::bind(SocketAddr::new(ip, options.port))
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        if let Some(cert) = &options.tls {
            db.lock()
                .unwrap()
                .hosts
                .push((ip.to_string(), cert.pem.clone()));
        } else {
            db.lock()
                .unwrap()
                .hosts
                .push((ip.to_string(), String::new()));
        }
        let shared = Arc::new(Listener {
            db: db.clone(),
            options: options.clone(),
        });
        let accept = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let shared = shared.clone();
                tokio::spawn(async move {
                    let tls = shared.options.tls.clone();
                    let service = service_fn(move |request| {
                        let shared = shared.clone();
                        async move { shared.handle(request).await }
                    });
                    match &tls {
                        None => {
                            let _ = hyper::server::conn::http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        }
                        Some(cert) => {
                            let Ok(tls) = cert.acceptor().accept(stream).await else {
                                return;
                            };
                            let _ = hyper::server::conn::http1::Builder::new()
                                .serve_connection(TokioIo::new(tls), service)
                                .await;
                        }
                    }
                });
            }
        });
        TestHost {
            addr,
            db,
            options,
            accept,
        }
    }

    pub fn url(&self) -> String {
        let scheme = if self.options.tls.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}:{}@{}", USER, PASSWORD, self.addr)
    }

    pub fn base(&self) -> String {
        let scheme = if self.options.tls.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.addr)
    }

    pub fn db(&self) -> std::sync::MutexGuard<'_, Db> {
        self.db.lock().unwrap()
    }
}

struct Listener {
    db: Arc<Mutex<Db>>,
    options: Options,
}

fn full(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(
            Full::new(body.into())
                .map_err(|never| match never {})
                .boxed_unsync(),
        )
        .unwrap()
}

fn html_500() -> Response<Body> {
    let mut response = full(
        StatusCode::INTERNAL_SERVER_ERROR,
        "text/html",
        "<html><body>Internal error</body></html>",
    );
    response
        .headers_mut()
        .insert("connection", "close".parse().unwrap());
    response
}

fn query_pairs(query: &str) -> BTreeMap<String, String> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (
                key.to_owned(),
                percent_encoding::percent_decode_str(value)
                    .decode_utf8()
                    .unwrap()
                    .into_owned(),
            )
        })
        .collect()
}

fn task_value(record: &TaskRecord) -> Value {
    record.to_value()
}

impl Listener {
    async fn handle(
        self: Arc<Self>,
        request: Request<Incoming>,
    ) -> Result<Response<Body>, DropConnection> {
        let path = request.uri().path().to_owned();
        let method = request.method().clone();
        Ok(match (method.as_str(), path.as_str()) {
            ("POST", "/jsonrpc") if self.options.no_json => full(
                StatusCode::NOT_FOUND,
                "text/html",
                "<html><body>Not found</body></html>",
            ),
            ("POST", _) => self.rpc(request, path == "/jsonrpc").await?,
            ("GET", "/export_raw_vdi" | "/export") => self.export(request).await,
            ("PUT", "/import_raw_vdi" | "/import") => self.import(request).await,
            _ => full(
                StatusCode::NOT_IMPLEMENTED,
                "text/html",
                "<html>Not implemented</html>",
            ),
        })
    }

    async fn rpc(
        &self,
        request: Request<Incoming>,
        json: bool,
    ) -> Result<Response<Body>, DropConnection> {
        let asks_thumbprint = request
            .headers()
            .get("x-xenapi-request-host-certificate-thumbprint")
            .is_some_and(|value| value == "sha-256:master");
        if request.headers().get("content-length").is_none() {
            return Ok(html_500());
        }
        let body = request.into_body().collect().await.unwrap().to_bytes();
        let (call, reply): (xenapi::codec::MethodCall, Reply) = if json {
            let Ok(decoded) = jsonrpc::decode_call(&body) else {
                return Ok(html_500());
            };
            let (version, id) = (decoded.version, decoded.id.clone());
            (
                decoded.call,
                Box::new(move |response| jsonrpc::encode_response(version, &id, response)),
            )
        } else {
            let Ok(call) = xmlrpc::decode_call(&body) else {
                return Ok(html_500());
            };
            (call, Box::new(xmlrpc::encode_response))
        };
        {
            let mut db = self.db.lock().unwrap();
            if let Some(index) = db.drop_unanswered.iter().position(|m| *m == call.method) {
                db.drop_unanswered.remove(index);
                db.calls.push(call.method.clone());
                return Err(DropConnection);
            }
        }
        let response = self.dispatch(&call.method, call.params).await;
        let slave_failure =
            matches!(&response, RpcResponse::Failure(failure) if failure.code == "HOST_IS_SLAVE");
        let mut http = full(
            StatusCode::OK,
            if json { "application/json" } else { "text/xml" },
            reply(&response),
        );
        if slave_failure
            && asks_thumbprint
            && let Some(thumbprint) = &self.options.master_thumbprint
        {
            http.headers_mut().insert(
                "x-xenapi-response-host-certificate-thumbprint",
                thumbprint.parse().unwrap(),
            );
        }
        Ok(http)
    }

    async fn dispatch(&self, method: &str, params: Vec<Value>) -> RpcResponse {
        self.db.lock().unwrap().calls.push(method.to_owned());
        let fail = |code: &str, params: &[&str]| {
            RpcResponse::Failure(Failure::new(code, params.iter().copied()))
        };
        if let Some(master) = &self.options.slave_of {
            return fail("HOST_IS_SLAVE", &[master]);
        }
        if method == "session.login_with_password" {
            let user = params.first().and_then(Value::as_str).unwrap_or_default();
            let password = params.get(1).and_then(Value::as_str).unwrap_or_default();
            if user != USER || password != PASSWORD {
                return fail(
                    "SESSION_AUTHENTICATION_FAILED",
                    &[user, "Authentication failure"],
                );
            }
            let mut db = self.db.lock().unwrap();
            db.login_count += 1;
            db.expire_sessions = false;
            let session = db.new_ref("session");
            db.sessions.insert(session.clone());
            return RpcResponse::Success(Value::from(session));
        }
        let session = params
            .first()
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        {
            let mut db = self.db.lock().unwrap();
            if db.expire_sessions {
                db.sessions.clear();
            }
            if !db.sessions.contains(&session) || db.reject_sessions {
                return fail("SESSION_INVALID", &[&session]);
            }
        }
        let arg = |index: usize| {
            params
                .get(index)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        match method {
            "session.logout" => {
                self.db.lock().unwrap().sessions.remove(&session);
                RpcResponse::Success(Value::void())
            }
            "VM.get_all_records" => {
                let count = self.db.lock().unwrap().vm_count;
                RpcResponse::Success(Value::Struct(
                    (0..count)
                        .map(|index| {
                            let record = VmRecord {
                                uuid: format!("00000000-0000-0000-0000-{index:012}"),
                                name_label: format!("vm{index}"),
                                memory_static_max: 4 << 30,
                                ..VmRecord::default()
                            };
                            (format!("OpaqueRef:vm-{index}"), record.to_value())
                        })
                        .collect(),
                ))
            }
            "VM.get_other_config" => {
                RpcResponse::Success(Value::from(self.db.lock().unwrap().vm_other_config.clone()))
            }
            "VM.add_to_other_config" => {
                let mut db = self.db.lock().unwrap();
                let key = arg(2);
                if db.vm_other_config.contains_key(&key) {
                    return fail("MAP_DUPLICATE_KEY", &["VM", "other_config", "uuid", &key]);
                }
                db.vm_other_config.insert(key, arg(3));
                RpcResponse::Success(Value::void())
            }
            "VM.remove_from_other_config" => {
                self.db.lock().unwrap().vm_other_config.remove(&arg(2));
                RpcResponse::Success(Value::void())
            }
            "pool.get_all_records" => {
                let record = PoolRecord {
                    name_label: "test pool".into(),
                    master: Ref::new("OpaqueRef:host-master"),
                    ..PoolRecord::default()
                };
                RpcResponse::Success(Value::structure([("OpaqueRef:pool-0", record.to_value())]))
            }
            "host.get_all_records" => {
                let hosts = self.db.lock().unwrap().hosts.clone();
                RpcResponse::Success(Value::Struct(
                    hosts
                        .iter()
                        .enumerate()
                        .map(|(index, (address, _))| {
                            let record = HostRecord {
                                address: address.clone(),
                                ..HostRecord::default()
                            };
                            (format!("OpaqueRef:host-{index}"), record.to_value())
                        })
                        .collect(),
                ))
            }
            "host.get_server_certificate" => {
                let hosts = self.db.lock().unwrap().hosts.clone();
                let index: usize = arg(1)
                    .trim_start_matches("OpaqueRef:host-")
                    .parse()
                    .unwrap_or(usize::MAX);
                match hosts.get(index) {
                    Some((_, pem)) => RpcResponse::Success(Value::from(pem.as_str())),
                    None => fail("HANDLE_INVALID", &["host", &arg(1)]),
                }
            }
            "test.non_finite" => RpcResponse::Success(Value::structure([
                ("nan", Value::Double(f64::NAN)),
                ("inf", Value::Double(f64::INFINITY)),
                ("one", Value::Double(1.0)),
            ])),
            "task.create" => {
                RpcResponse::Success(Value::from(self.db.lock().unwrap().new_task(&arg(1))))
            }
            "task.get_record" => match self.db.lock().unwrap().tasks.get(&arg(1)) {
                Some(record) => RpcResponse::Success(task_value(record)),
                None => fail("HANDLE_INVALID", &["task", &arg(1)]),
            },
            "task.cancel" => {
                let mut db = self.db.lock().unwrap();
                let task = arg(1);
                let Some(record) = db.tasks.get_mut(&task) else {
                    return fail("HANDLE_INVALID", &["task", &task]);
                };
                if record.status == TaskStatus::Pending {
                    record.status = TaskStatus::Cancelled;
                    record.error_info = vec!["TASK_CANCELLED".into(), task.clone()];
                    db.bump(&task);
                }
                RpcResponse::Success(Value::void())
            }
            "task.destroy" => {
                let mut db = self.db.lock().unwrap();
                db.tasks.remove(&arg(1));
                db.generation += 1;
                RpcResponse::Success(Value::void())
            }
            "Async.VM.snapshot" => {
                let task = self.db.lock().unwrap().new_task(method);
                let db = self.db.clone();
                let task_ref = task.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(30)).await;
                    db.lock().unwrap().progress(&task_ref, 0.5);
                    tokio::time::sleep(Duration::from_millis(30)).await;
                    db.lock()
                        .unwrap()
                        .complete(&task_ref, Some(Value::from("OpaqueRef:vm-snapshot")));
                });
                RpcResponse::Success(Value::from(task))
            }
            "Async.VDI.destroy" => {
                let mut db = self.db.lock().unwrap();
                let task = db.new_task(method);
                let vdi = arg(1);
                db.fail(&task, &["VDI_IN_USE", &vdi, "destroy"]);
                RpcResponse::Success(Value::from(task))
            }
            "Async.VDI.enable_cbt" => {
                let mut db = self.db.lock().unwrap();
                let task = db.new_task(method);
                db.complete(&task, Some(Value::void()));
                RpcResponse::Success(Value::from(task))
            }
            // Never completes on its own: for timeout and cancellation tests.
            "Async.VM.clone" => {
                RpcResponse::Success(Value::from(self.db.lock().unwrap().new_task(method)))
            }
            "Async.VM.get_all" => fail(
                "Fault",
                &["No async mode for this operation (rpc: VM.get_all)"],
            ),
            "event.from" => self.event_from(&params).await,
            _ => fail("MESSAGE_METHOD_UNKNOWN", &[method]),
        }
    }

    async fn event_from(&self, params: &[Value]) -> RpcResponse {
        let classes: Vec<String> = params
            .get(1)
            .cloned()
            .unwrap_or(Value::Nil)
            .decode()
            .unwrap_or_default();
        let token = params
            .get(2)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let timeout: f64 = params
            .get(3)
            .cloned()
            .unwrap_or(Value::Double(0.0))
            .decode()
            .unwrap_or(0.0);
        let since: u64 = if token.is_empty() {
            0
        } else {
            match token.split(',').next().and_then(|part| part.parse().ok()) {
                Some(generation) => generation,
                None => {
                    return RpcResponse::Failure(Failure::new(
                        "EVENT_FROM_TOKEN_PARSE_FAILURE",
                        [token],
                    ));
                }
            }
        };
        let watched: Vec<String> = classes
            .iter()
            .filter_map(|class| class.strip_prefix("task/").map(str::to_owned))
            .collect();
        let deadline =
            tokio::time::Instant::now() + Duration::from_secs_f64(timeout.clamp(0.0, 60.0));
        loop {
            {
                let db = self.db.lock().unwrap();
                let events: Vec<Value> = watched
                    .iter()
                    .filter(|task| {
                        db.task_generation.get(*task).copied().unwrap_or(0) > since
                            || (since == 0 && db.tasks.contains_key(*task))
                    })
                    .map(|task| match db.tasks.get(task) {
                        Some(record) => Value::structure([
                            ("id", Value::from(db.generation.to_string())),
                            ("timestamp", Value::from("0.0")),
                            ("class", Value::from("task")),
                            (
                                "operation",
                                Value::from(if since == 0 { "add" } else { "mod" }),
                            ),
                            ("ref", Value::from(task.as_str())),
                            ("snapshot", task_value(record)),
                        ]),
                        None => Value::structure([
                            ("id", Value::from(db.generation.to_string())),
                            ("timestamp", Value::from("0.0")),
                            ("class", Value::from("task")),
                            ("operation", Value::from("del")),
                            ("ref", Value::from(task.as_str())),
                        ]),
                    })
                    .collect();
                if !events.is_empty() || tokio::time::Instant::now() >= deadline {
                    return RpcResponse::Success(Value::structure([
                        ("events", Value::Array(events)),
                        (
                            "valid_ref_counts",
                            Value::structure([(
                                "task",
                                Value::Int32(i32::try_from(db.tasks.len()).unwrap()),
                            )]),
                        ),
                        (
                            "token",
                            Value::from(format!("{:020},{:020}", db.generation, 0)),
                        ),
                    ]));
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn redirect(&self, request: &Request<Incoming>) -> Option<Response<Body>> {
        let base = self.options.redirect_transfers_to.as_ref()?;
        let path_and_query = request
            .uri()
            .path_and_query()
            .map(|pq| pq.as_str())
            .unwrap_or("/");
        let response = Response::builder()
            .status(StatusCode::FOUND)
            .header("location", format!("{base}{path_and_query}"))
            .header("connection", "close")
            .body(
                Full::new(Bytes::new())
                    .map_err(|never| match never {})
                    .boxed_unsync(),
            )
            .unwrap();
        Some(response)
    }

    /// Checks `session_id` and `task_id`; returns the task.
    fn authorize(&self, query: &BTreeMap<String, String>) -> Result<String, Box<Response<Body>>> {
        let db = self.db.lock().unwrap();
        let session = query.get("session_id").cloned().unwrap_or_default();
        if !db.sessions.contains(&session) {
            let mut response = full(StatusCode::UNAUTHORIZED, "text/html", "");
            response
                .headers_mut()
                .insert("www-authenticate", "Basic realm=\"xapi\"".parse().unwrap());
            return Err(Box::new(response));
        }
        let task = query.get("task_id").cloned().unwrap_or_default();
        if !db.tasks.contains_key(&task) {
            return Err(Box::new(full(StatusCode::BAD_REQUEST, "text/html", "")));
        }
        Ok(task)
    }

    async fn export(&self, request: Request<Incoming>) -> Response<Body> {
        if let Some(redirect) = self.redirect(&request) {
            return redirect;
        }
        let query = query_pairs(request.uri().query().unwrap_or_default());
        let task = match self.authorize(&query) {
            Ok(task) => task,
            Err(response) => return *response,
        };
        if query
            .get("format")
            .is_some_and(|format| format != "raw" && format != "vhd")
        {
            self.db
                .lock()
                .unwrap()
                .fail(&task, &["INTERNAL_ERROR", "Unknown format"]);
            return full(StatusCode::NOT_FOUND, "text/html", "");
        }
        let (data, fail_after) = {
            let db = self.db.lock().unwrap();
            (db.export_data.clone(), db.export_fail_after)
        };
        let db = self.db.clone();
        let chunks: Vec<Bytes> = data.chunks(4096).map(Bytes::copy_from_slice).collect();
        let stream = futures::stream::unfold(
            (chunks.into_iter(), 0usize, false),
            move |(mut chunks, sent, done)| {
                let db = db.clone();
                let task = task.clone();
                async move {
                    if done {
                        return None;
                    }
                    if let Some(limit) = fail_after
                        && sent >= limit
                    {
                        // Let what was sent so far reach the client first (xapi flushes as it goes).
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        db.lock()
                            .unwrap()
                            .fail(&task, &["VDI_IO_ERROR", "Device I/O errors"]);
                        return Some((
                            Err(BoxError::from("injected failure")),
                            (chunks, sent, true),
                        ));
                    }
                    match chunks.next() {
                        Some(chunk) => {
                            let len = chunk.len();
                            Some((Ok(Frame::data(chunk)), (chunks, sent + len, false)))
                        }
                        None => {
                            db.lock().unwrap().complete(&task, None);
                            None
                        }
                    }
                }
            },
        );
        Response::builder()
            .status(StatusCode::OK)
            .header("connection", "close")
            .header("content-type", "application/octet-stream")
            .body(StreamBody::new(stream).boxed_unsync())
            .unwrap()
    }

    async fn import(&self, request: Request<Incoming>) -> Response<Body> {
        if let Some(redirect) = self.redirect(&request) {
            return redirect;
        }
        let query = query_pairs(request.uri().query().unwrap_or_default());
        let task = match self.authorize(&query) {
            Ok(task) => task,
            Err(response) => return *response,
        };
        if request.headers().get("transfer-encoding").is_some() {
            self.db
                .lock()
                .unwrap()
                .fail(&task, &["INTERNAL_ERROR", "chunked transfer encoding"]);
            return full(StatusCode::NOT_FOUND, "text/html", "");
        }
        let headers: Vec<(String, String)> = request
            .headers()
            .iter()
            .map(|(name, value)| {
                (
                    name.as_str().to_owned(),
                    value.to_str().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        let is_vm_import = request.uri().path() == "/import";
        let chunked = query.contains_key("chunked");
        let db = self.db.clone();
        db.lock().unwrap().upload_headers = headers;
        // Like xapi: answer 200 first, then consume the body; the response (no length) ends
        // when the handler is done, as xapi's ends when it closes the connection.
        let mut body = request.into_body();
        let (finished, finished_rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let _finished = finished;
            let break_after = db.lock().unwrap().upload_break_after;
            let mut raw = BytesMut::new();
            while let Some(frame) = body.frame().await {
                let Ok(frame) = frame else { break };
                if let Ok(data) = frame.into_data() {
                    raw.extend_from_slice(&data);
                }
                if let Some(limit) = break_after
                    && raw.len() >= limit
                {
                    db.lock()
                        .unwrap()
                        .fail(&task, &["VDI_IO_ERROR", "Device I/O errors"]);
                    return;
                }
            }
            let written = if chunked {
                let mut disk = Vec::new();
                let mut decoder = FrameDecoder::new();
                while let Ok(Some(event)) = decoder.decode(&mut raw) {
                    if let ChunkEvent::Data { offset, data } = event {
                        let start = usize::try_from(offset).unwrap();
                        if disk.len() < start + data.len() {
                            disk.resize(start + data.len(), 0);
                        }
                        disk[start..start + data.len()].copy_from_slice(&data);
                    }
                }
                disk
            } else {
                raw.to_vec()
            };
            let mut db = db.lock().unwrap();
            db.uploaded = Some(written);
            if db.upload_fail {
                db.fail(&task, &["VDI_IO_ERROR", "Device I/O errors"]);
            } else if is_vm_import {
                db.complete(
                    &task,
                    Some(Value::Array(vec![Value::from("OpaqueRef:vm-imported")])),
                );
            } else {
                db.complete(&task, Some(Value::from("OpaqueRef:vdi-imported")));
            }
        });
        let end = futures::stream::once(async move {
            let _ = finished_rx.await;
            Ok::<_, BoxError>(Frame::data(Bytes::new()))
        });
        Response::builder()
            .status(StatusCode::OK)
            .header("connection", "close")
            .header("content-type", "application/octet-stream")
            .body(StreamBody::new(end).boxed_unsync())
            .unwrap()
    }
}
