//! The client: transports, sessions, re-login and pool-master redirects.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use tracing::Instrument as _;

use crate::codec::{Failure, Response, jsonrpc, xmlrpc};
use crate::error::{Error, ErrorCode};
use crate::refs::{Ref, Session};
use crate::tls::{Fingerprint, Trust};
use crate::transport::{Endpoint, HttpClient, RpcPolicy, RpcReply, header};
use crate::url::{ConnectUrl, Secret};
use crate::value::{FromValue, Value};

/// Which RPC encoding to use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TransportKind {
    /// JSON-RPC first; fall back to XML-RPC when `/jsonrpc` does not answer JSON (Xen
    /// Orchestra's rule). The default.
    #[default]
    Auto,
    /// JSON-RPC v2 only (`POST /jsonrpc`).
    JsonRpc,
    /// XML-RPC only (`POST /`).
    XmlRpc,
}

/// The encoding in use after connecting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wire {
    /// JSON-RPC v2.
    JsonRpc,
    /// XML-RPC.
    XmlRpc,
}

const THUMBPRINT_REQUEST: &str = "x-xenapi-request-host-certificate-thumbprint";
const THUMBPRINT_RESPONSE: &str = "x-xenapi-response-host-certificate-thumbprint";
const REDACTED_REF: &str = "OpaqueRef:<redacted>";

/// Builds a [`Client`]: where, as whom, how to trust the host, which transport.
#[derive(Clone, Debug)]
pub struct ClientBuilder {
    url: ConnectUrl,
    user: Option<String>,
    password: Option<Secret>,
    trust: Trust,
    transport: TransportKind,
    originator: String,
    version: String,
    call_timeout: Duration,
    connect_timeout: Duration,
    max_response_bytes: u64,
}

impl ClientBuilder {
    /// Starts from a parsed URL; credentials in the URL are used unless overridden.
    pub fn new(url: ConnectUrl) -> ClientBuilder {
        ClientBuilder {
            user: url.user().map(str::to_owned),
            password: url.password().cloned(),
            url,
            trust: Trust::default(),
            transport: TransportKind::Auto,
            originator: "xenapi-rs".into(),
            version: "1.1".into(),
            call_timeout: Duration::from_secs(3600),
            connect_timeout: Duration::from_secs(30),
            max_response_bytes: 512 << 20,
        }
    }

    /// The user name (overrides the URL's).
    pub fn user(mut self, user: impl Into<String>) -> Self {
        self.user = Some(user.into());
        self
    }

    /// The password (overrides the URL's); see [`Secret::from_env`] and [`Secret::from_file`].
    pub fn password(mut self, password: Secret) -> Self {
        self.password = Some(password);
        self
    }

    /// How to trust the host certificate (default: verified against the Mozilla roots;
    /// [`Trust::system_roots`] for the OS bundle, [`Trust::ca_file`] for your own CA).
    pub fn trust(mut self, trust: Trust) -> Self {
        self.trust = trust;
        self
    }

    /// Transport choice (default: auto).
    pub fn transport(mut self, transport: TransportKind) -> Self {
        self.transport = transport;
        self
    }

    /// `originator` for `session.login_with_password` (xapi groups sessions by it).
    pub fn originator(mut self, originator: impl Into<String>) -> Self {
        self.originator = originator.into();
        self
    }

    /// API `version` sent at login (xapi ignores it; default `1.1`).
    pub fn api_version(mut self, version: impl Into<String>) -> Self {
        self.version = version.into();
        self
    }

    /// Limit for one RPC (default 1 h, as Xen Orchestra).
    pub fn call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = timeout;
        self
    }

    /// Limit for TCP connect plus TLS handshake (default 30 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Largest RPC response accepted (default 512 MiB).
    pub fn max_response_bytes(mut self, limit: u64) -> Self {
        self.max_response_bytes = limit;
        self
    }

    /// Logs in (following one `HOST_IS_SLAVE` redirect to the pool master) and returns the client.
    pub async fn connect(self) -> Result<Client, Error> {
        let user = self.user.clone().ok_or_else(|| Error::Credentials {
            reason: "no user name: put it in the URL (https://root@host) or set it on the builder"
                .into(),
        })?;
        let password = self.password.clone().ok_or_else(|| Error::Credentials {
            reason: "no password: give it in the URL, an environment variable or a file".into(),
        })?;
        let http = Arc::new(HttpClient::new(self.trust.clone(), self.connect_timeout)?);
        let wire = match self.transport {
            TransportKind::Auto | TransportKind::JsonRpc => Wire::JsonRpc,
            TransportKind::XmlRpc => Wire::XmlRpc,
        };
        let inner = Inner {
            http,
            settings: Settings {
                originator: self.originator,
                version: self.version,
                call_timeout: self.call_timeout,
                max_response_bytes: self.max_response_bytes,
                auto: self.transport == TransportKind::Auto,
            },
            user,
            password,
            state: Mutex::new(State {
                master: self.url,
                wire,
                session: None,
                generation: 0,
                closed: false,
            }),
            login_lock: tokio::sync::Mutex::new(()),
            next_id: AtomicI64::new(1),
        };
        let client = Client {
            inner: Arc::new(inner),
        };
        client.login(0).await?;
        Ok(client)
    }
}

#[derive(Debug)]
struct Settings {
    originator: String,
    version: String,
    call_timeout: Duration,
    max_response_bytes: u64,
    auto: bool,
}

struct State {
    master: ConnectUrl,
    wire: Wire,
    session: Option<Ref<Session>>,
    generation: u64,
    closed: bool,
}

pub(crate) struct Inner {
    pub(crate) http: Arc<HttpClient>,
    settings: Settings,
    user: String,
    password: Secret,
    state: Mutex<State>,
    login_lock: tokio::sync::Mutex<()>,
    next_id: AtomicI64,
}

/// A logged-in XenAPI client. Cheap to clone (shared session and connection pool).
///
/// Calls take the session implicitly. A call that fails with `SESSION_INVALID` logs in again
/// once and is retried once; a call answered `HOST_IS_SLAVE` (the master moved) is retried once
/// on the new master. [`Client::close`] logs out; dropping the last clone without closing logs
/// out in the background when a Tokio runtime is running.
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.inner.lock_state();
        f.debug_struct("Client")
            .field("master", &state.master)
            .field("wire", &state.wire)
            .field("user", &self.inner.user)
            .field("logged_in", &state.session.is_some())
            .finish_non_exhaustive()
    }
}

/// One RPC target as seen at the time of a call.
#[derive(Clone)]
struct Target {
    url: ConnectUrl,
    wire: Wire,
}

impl Inner {
    fn lock_state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn target(&self) -> Target {
        let state = self.lock_state();
        Target {
            url: state.master.clone(),
            wire: state.wire,
        }
    }

    /// [`Inner::redact`] for an error already built (a task's `error_info`), others unchanged.
    pub(crate) fn redact_error(&self, error: Error) -> Error {
        match error {
            Error::Api { code, params } => self.redact(Failure { code, params }),
            other => other,
        }
    }

    /// Replaces session refs in API error parameters: they are credentials.
    fn redact(&self, failure: Failure) -> Error {
        let session = self
            .lock_state()
            .session
            .as_ref()
            .map(|session| session.as_str().to_owned());
        let session_invalid = failure.code == ErrorCode::SessionInvalid.as_str();
        let params = failure
            .params
            .into_iter()
            .map(|param| {
                let is_session = session.as_deref() == Some(param.as_str())
                    || (session_invalid && param.starts_with("OpaqueRef:"))
                    || param.contains("session_id=");
                if is_session {
                    REDACTED_REF.to_owned()
                } else {
                    param
                }
            })
            .collect();
        Error::Api {
            code: failure.code,
            params,
        }
    }

    /// Sends one call to `target` and decodes the reply. `Err` is a transport or decoding
    /// failure; an API failure is `Ok` with `outcome: Err(Error::Api)`.
    async fn rpc(
        &self,
        target: &Target,
        method: &str,
        params: &[Value],
        login: bool,
    ) -> Result<Answer, Error> {
        let endpoint = endpoint_of(&target.url);
        let pinned = matches!(self.http.trust(), Trust::Pinned(_));
        let extra: &[(&'static str, &'static str)] = if login && pinned {
            &[(THUMBPRINT_REQUEST, "sha-256:master")]
        } else {
            &[]
        };
        let limit = self.settings.max_response_bytes;
        let (path, reply) = match target.wire {
            Wire::JsonRpc => {
                let id = self.next_id.fetch_add(1, Ordering::Relaxed);
                let body = jsonrpc::encode_call(
                    jsonrpc::Version::V2,
                    &jsonrpc::Id::Int(id),
                    method,
                    params,
                );
                let path = target.url.endpoint("jsonrpc");
                let reply = self
                    .http
                    .rpc(
                        &endpoint,
                        &path,
                        "application/json",
                        Bytes::from(body),
                        extra,
                        RpcPolicy {
                            limit,
                            resend_unanswered: login || safe_to_resend(method),
                        },
                    )
                    .await?;
                (path, reply)
            }
            Wire::XmlRpc => {
                let body = xmlrpc::encode_call(method, params);
                let path = target.url.path().to_owned();
                let reply = self
                    .http
                    .rpc(
                        &endpoint,
                        &path,
                        "text/xml",
                        Bytes::from(body),
                        extra,
                        RpcPolicy {
                            limit,
                            resend_unanswered: login || safe_to_resend(method),
                        },
                    )
                    .await?;
                (path, reply)
            }
        };
        let thumbprint = header(&reply.headers, THUMBPRINT_RESPONSE).map(str::to_owned);
        let outcome = match decode_reply(target.wire, &path, &reply)? {
            Response::Success(value) => Ok(value),
            Response::Failure(failure) => Err(self.redact(failure)),
        };
        Ok(Answer {
            outcome,
            thumbprint,
        })
    }
}

/// A decoded RPC answer: the API outcome, plus the master's certificate thumbprint that xapi
/// adds to a `HOST_IS_SLAVE` answer when asked.
struct Answer {
    outcome: Result<Value, Error>,
    thumbprint: Option<String>,
}

/// Calls that only read (`*.get_*`, `*.list_*`, `event.from`, `*.get_all_records` …): running
/// one twice changes nothing, so it may be resent when its connection closed without an answer.
/// Everything else (snapshot, clone, create, set, `Async.*`) is never sent twice by the client.
fn safe_to_resend(method: &str) -> bool {
    if method.starts_with("Async.") {
        return false;
    }
    let name = method.rsplit_once('.').map_or(method, |(_, name)| name);
    name.starts_with("get_") || name.starts_with("list_") || method == "event.from"
}

fn endpoint_of(url: &ConnectUrl) -> Endpoint {
    Endpoint {
        scheme: url.scheme(),
        host: url.host().to_owned(),
        port: url.port(),
    }
}

fn decode_reply(wire: Wire, path: &str, reply: &RpcReply) -> Result<Response, Error> {
    if reply.status != StatusCode::OK {
        return Err(Error::HttpStatus {
            status: reply.status.as_u16(),
            method: "POST".into(),
            path: path.to_owned(),
        });
    }
    match wire {
        Wire::JsonRpc => {
            if !reply
                .content_type()
                .to_ascii_lowercase()
                .starts_with("application/json")
            {
                return Err(Error::protocol(format!(
                    "{path} answered `{}` instead of application/json",
                    reply.content_type()
                )));
            }
            Ok(jsonrpc::decode_response(&reply.body)?.response)
        }
        Wire::XmlRpc => xmlrpc::decode_response(&reply.body),
    }
}

impl Client {
    /// Connects with the URL's credentials and default settings (verified TLS, auto transport).
    pub async fn connect(url: &str) -> Result<Client, Error> {
        ClientBuilder::new(ConnectUrl::parse(url)?).connect().await
    }

    /// A builder for everything else.
    pub fn builder(url: ConnectUrl) -> ClientBuilder {
        ClientBuilder::new(url)
    }

    /// The pool master this client talks to (after any redirect).
    pub fn master_url(&self) -> ConnectUrl {
        self.inner.lock_state().master.clone()
    }

    /// The encoding in use.
    pub fn wire(&self) -> Wire {
        self.inner.lock_state().wire
    }

    /// The current session ref (a secret: for building NBD/HTTP requests, never for logs).
    pub fn session(&self) -> Result<Ref<Session>, Error> {
        self.inner.lock_state().session.clone().ok_or(Error::Closed)
    }

    /// Calls `method` with the session prepended to `params` and converts the result.
    ///
    /// ```no_run
    /// # async fn demo(client: xenapi::Client) -> Result<(), xenapi::Error> {
    /// let vms: Vec<xenapi::Ref<xenapi::Vm>> = client.call("VM.get_all", vec![]).await?;
    /// # Ok(()) }
    /// ```
    pub async fn call<T: FromValue>(&self, method: &str, params: Vec<Value>) -> Result<T, Error> {
        self.call_value(method, params).await?.decode()
    }

    /// Calls `method` with the session prepended and returns the raw value.
    pub async fn call_value(&self, method: &str, params: Vec<Value>) -> Result<Value, Error> {
        let span = tracing::debug_span!("xenapi_call", method);
        self.call_value_inner(method, params).instrument(span).await
    }

    async fn call_value_inner(&self, method: &str, params: Vec<Value>) -> Result<Value, Error> {
        let mut relogged = false;
        let mut redirected = false;
        loop {
            let (session, generation) = {
                let state = self.inner.lock_state();
                if state.closed {
                    return Err(Error::Closed);
                }
                (
                    state.session.clone().ok_or(Error::Closed)?,
                    state.generation,
                )
            };
            let mut full = Vec::with_capacity(params.len() + 1);
            full.push(Value::from(session));
            full.extend(params.iter().cloned());
            let target = self.inner.target();
            let call = self.inner.rpc(&target, method, &full, false);
            let outcome = tokio::time::timeout(self.inner.settings.call_timeout, call)
                .await
                .map_err(|_| Error::Timeout {
                    context: format!("calling {method}"),
                    seconds: self.inner.settings.call_timeout.as_secs_f64(),
                })?;
            let Answer {
                outcome,
                thumbprint,
            } = outcome?;
            match outcome {
                Ok(value) => return Ok(value),
                Err(error) if error.is_api(ErrorCode::SessionInvalid) && !relogged => {
                    tracing::info!(method, "session expired; logging in again");
                    relogged = true;
                    self.login(generation).await?;
                }
                Err(error) if error.is_api(ErrorCode::HostIsSlave) && !redirected => {
                    redirected = true;
                    self.follow_master(&error, thumbprint.as_deref())?;
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// Calls `Async.<method>` and returns the task (see [`Client::wait_task`]).
    pub async fn call_async(
        &self,
        method: &str,
        params: Vec<Value>,
    ) -> Result<Ref<crate::refs::Task>, Error> {
        self.call(&format!("Async.{method}"), params).await
    }

    /// Points the client at the master named by a `HOST_IS_SLAVE` error.
    fn follow_master(&self, error: &Error, thumbprint: Option<&str>) -> Result<(), Error> {
        let Error::Api { params, .. } = error else {
            return Ok(());
        };
        let address = params
            .first()
            .filter(|address| !address.is_empty())
            .ok_or_else(|| Error::protocol("HOST_IS_SLAVE without the master's address"))?;
        if matches!(self.inner.http.trust(), Trust::Pinned(_)) && !self.inner.http.has_pin(address)
        {
            let thumbprint = thumbprint.ok_or_else(|| {
                Error::tls(format!(
                    "the pool master is {address}, but with a pinned certificate the client needs its fingerprint: \
                     the member sent none (connect to the master directly, with its own pin)"
                ))
            })?;
            self.inner
                .http
                .add_pin(address, Fingerprint::parse(thumbprint)?);
        }
        let mut state = self.inner.lock_state();
        tracing::info!(master = %address, "HOST_IS_SLAVE: switching to the pool master");
        state.master = state.master.with_host(address);
        Ok(())
    }

    /// Logs in unless another task already did since `seen_generation`.
    async fn login(&self, seen_generation: u64) -> Result<(), Error> {
        let _guard = self.inner.login_lock.lock().await;
        if self.inner.lock_state().generation != seen_generation {
            return Ok(());
        }
        let span = tracing::info_span!("xenapi_login", user = %self.inner.user);
        async {
            let mut redirected = false;
            let mut fell_back = false;
            loop {
                let target = self.inner.target();
                let params = [
                    Value::from(self.inner.user.as_str()),
                    Value::from(self.inner.password.expose()),
                    Value::from(self.inner.settings.version.as_str()),
                    Value::from(self.inner.settings.originator.as_str()),
                ];
                let call = self
                    .inner
                    .rpc(&target, "session.login_with_password", &params, true);
                let outcome = tokio::time::timeout(self.inner.settings.call_timeout, call)
                    .await
                    .map_err(|_| Error::Timeout {
                        context: "logging in".into(),
                        seconds: self.inner.settings.call_timeout.as_secs_f64(),
                    })?;
                let answer = match outcome {
                    Ok(answer) => answer,
                    Err(error)
                        if self.inner.settings.auto
                            && !fell_back
                            && target.wire == Wire::JsonRpc
                            && matches!(
                                error,
                                Error::Protocol { .. }
                                    | Error::HttpStatus { .. }
                                    | Error::Json { .. }
                            ) =>
                    {
                        tracing::info!(%error, "JSON-RPC unavailable; falling back to XML-RPC");
                        fell_back = true;
                        self.inner.lock_state().wire = Wire::XmlRpc;
                        continue;
                    }
                    Err(error) => return Err(error),
                };
                match answer.outcome {
                    Ok(value) => {
                        let session: Ref<Session> = value.decode()?;
                        let mut state = self.inner.lock_state();
                        state.session = Some(session);
                        state.generation += 1;
                        state.closed = false;
                        tracing::info!(master = %state.master, wire = ?state.wire, "logged in");
                        return Ok(());
                    }
                    Err(error) if error.is_api(ErrorCode::HostIsSlave) => {
                        if redirected {
                            return Err(Error::TooManyRedirects {
                                count: 2,
                                context: "logging in (HOST_IS_SLAVE twice)".into(),
                            });
                        }
                        redirected = true;
                        self.follow_master(&error, answer.thumbprint.as_deref())?;
                    }
                    Err(error) => return Err(error),
                }
            }
        }
        .instrument(span)
        .await
    }

    /// Logs out and marks the client closed; later calls fail with [`Error::Closed`].
    pub async fn close(&self) -> Result<(), Error> {
        let session = {
            let mut state = self.inner.lock_state();
            state.closed = true;
            state.session.take()
        };
        let Some(session) = session else {
            return Ok(());
        };
        let target = self.inner.target();
        let answer = self
            .inner
            .rpc(&target, "session.logout", &[Value::from(session)], false)
            .await;
        self.inner.http.clear_idle();
        match answer?.outcome {
            Ok(_) => Ok(()),
            Err(error) if error.is_api(ErrorCode::SessionInvalid) => Ok(()),
            Err(error) => Err(error),
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let state = self.state.get_mut().unwrap_or_else(PoisonError::into_inner);
        let Some(session) = state.session.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let target = Target {
            url: state.master.clone(),
            wire: state.wire,
        };
        let http = self.http.clone();
        let limit = self.settings.max_response_bytes;
        runtime.spawn(async move {
            let endpoint = endpoint_of(&target.url);
            let (path, content_type, body) = match target.wire {
                Wire::JsonRpc => (
                    target.url.endpoint("jsonrpc"),
                    "application/json",
                    jsonrpc::encode_call(
                        jsonrpc::Version::V2,
                        &jsonrpc::Id::Int(0),
                        "session.logout",
                        &[Value::from(session)],
                    ),
                ),
                Wire::XmlRpc => (
                    target.url.path().to_owned(),
                    "text/xml",
                    xmlrpc::encode_call("session.logout", &[Value::from(session)]),
                ),
            };
            let logout = http.rpc(
                &endpoint,
                &path,
                content_type,
                Bytes::from(body),
                &[],
                // Logging out twice is harmless (the second gets SESSION_INVALID).
                RpcPolicy {
                    limit,
                    resend_unanswered: true,
                },
            );
            if tokio::time::timeout(Duration::from_secs(10), logout)
                .await
                .is_err()
            {
                tracing::debug!("background logout timed out");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}

    #[test]
    fn only_reads_are_resent() {
        for method in [
            "VM.get_all_records",
            "VDI.get_record",
            "VDI.list_changed_blocks",
            "event.from",
            "session.get_this_host",
        ] {
            assert!(safe_to_resend(method), "{method}");
        }
        for method in [
            "VM.snapshot",
            "VM.clone",
            "VDI.copy",
            "VM.add_to_other_config",
            "Async.VM.get_record",
            "task.cancel",
        ] {
            assert!(!safe_to_resend(method), "{method}");
        }
    }

    #[test]
    fn handles_cross_tasks() {
        send_sync::<Client>();
        send_sync::<Error>();
        send::<crate::transfer::Download>();
        send::<crate::transfer::UploadBody>();
    }

    #[test]
    fn builder_debug_hides_the_password() {
        let url = ConnectUrl::parse("https://root:hunter2@host").unwrap();
        let builder = ClientBuilder::new(url).password(Secret::new("hunter3"));
        let shown = format!("{builder:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("hunter3"),
            "{shown}"
        );
    }
}
