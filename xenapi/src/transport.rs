//! HTTP/1.1 over TCP or TLS with hyper 1: a keep-alive pool for RPCs, one-shot connections for
//! transfers (xapi closes those), per-host TLS configurations (pins differ per host).

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, HOST, USER_AGENT};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::error::Error;
use crate::tls::{Fingerprint, Trust};
use crate::url::Scheme;

/// Boxed error of request body streams.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The one request body type (full bodies for RPCs, streams for uploads).
pub(crate) type RequestBody = UnsyncBoxBody<Bytes, BoxError>;

const USER_AGENT_VALUE: &str = concat!("xenapi-rs/", env!("CARGO_PKG_VERSION"));
/// Idle keep-alive connections kept per host.
const MAX_IDLE_PER_HOST: usize = 8;

/// Where a request goes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Endpoint {
    pub(crate) scheme: Scheme,
    pub(crate) host: String,
    pub(crate) port: u16,
}

impl Endpoint {
    pub(crate) fn authority(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == self.scheme.default_port() {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

/// A fully read RPC response.
pub(crate) struct RpcReply {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

impl RpcReply {
    pub(crate) fn content_type(&self) -> &str {
        self.headers
            .get(CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
    }
}

pub(crate) struct HttpClient {
    trust: Trust,
    /// Pins learnt for hosts other than the configured one (pinned trust only).
    pins: Mutex<HashMap<String, Fingerprint>>,
    configs: Mutex<HashMap<String, Arc<ClientConfig>>>,
    idle: Mutex<HashMap<Endpoint, Vec<SendRequest<RequestBody>>>>,
    connect_timeout: Duration,
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(stream) => Pin::new(stream).poll_read(cx, buf),
            Stream::Tls(stream) => Pin::new(stream).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(stream) => Pin::new(stream).poll_write(cx, buf),
            Stream::Tls(stream) => Pin::new(stream).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(stream) => Pin::new(stream).poll_flush(cx),
            Stream::Tls(stream) => Pin::new(stream).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(stream) => Pin::new(stream).poll_shutdown(cx),
            Stream::Tls(stream) => Pin::new(stream).poll_shutdown(cx),
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) fn full_body(bytes: Bytes) -> RequestBody {
    Full::new(bytes)
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// How [`HttpClient::rpc`] treats one call: the response size cap, and whether a request that got
/// no answer at all may be sent again.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RpcPolicy {
    /// Largest response body read, in bytes.
    pub(crate) limit: u64,
    /// Resend once when the connection closed without an answer (only for calls safe twice).
    pub(crate) resend_unanswered: bool,
}

impl HttpClient {
    pub(crate) fn new(trust: Trust, connect_timeout: Duration) -> Result<HttpClient, Error> {
        // Fail early on an unusable trust configuration.
        trust.client_config()?;
        Ok(HttpClient {
            trust,
            pins: Mutex::new(HashMap::new()),
            configs: Mutex::new(HashMap::new()),
            idle: Mutex::new(HashMap::new()),
            connect_timeout,
        })
    }

    pub(crate) fn trust(&self) -> &Trust {
        &self.trust
    }

    /// Records the pin of another host (learnt through the API or the thumbprint header).
    pub(crate) fn add_pin(&self, host: &str, fingerprint: Fingerprint) {
        lock(&self.pins).insert(host.to_owned(), fingerprint);
        lock(&self.configs).remove(host);
    }

    pub(crate) fn has_pin(&self, host: &str) -> bool {
        lock(&self.pins).contains_key(host)
    }

    fn config_for(&self, host: &str) -> Result<Arc<ClientConfig>, Error> {
        if let Some(config) = lock(&self.configs).get(host) {
            return Ok(config.clone());
        }
        let trust = match (&self.trust, lock(&self.pins).get(host)) {
            (Trust::Pinned(_), Some(pin)) => Trust::Pinned(*pin),
            (other, _) => other.clone(),
        };
        let config = trust.client_config()?;
        lock(&self.configs).insert(host.to_owned(), config.clone());
        Ok(config)
    }

    async fn connect(&self, endpoint: &Endpoint) -> Result<Stream, Error> {
        let context = || format!("connecting to {}", endpoint.authority());
        let tcp = tokio::time::timeout(
            self.connect_timeout,
            TcpStream::connect((endpoint.host.as_str(), endpoint.port)),
        )
        .await
        .map_err(|_| Error::Timeout {
            context: context(),
            seconds: self.connect_timeout.as_secs_f64(),
        })?
        .map_err(|source| Error::io(context(), source))?;
        tcp.set_nodelay(true)
            .map_err(|source| Error::io(context(), source))?;
        match endpoint.scheme {
            Scheme::Http => Ok(Stream::Plain(tcp)),
            Scheme::Https => {
                let config = self.config_for(&endpoint.host)?;
                let name = ServerName::try_from(endpoint.host.clone()).map_err(|_| {
                    Error::tls(format!(
                        "`{}` is not a valid TLS server name",
                        endpoint.host
                    ))
                })?;
                let handshake = TlsConnector::from(config).connect(name, tcp);
                let tls = tokio::time::timeout(self.connect_timeout, handshake)
                    .await
                    .map_err(|_| Error::Timeout {
                        context: context(),
                        seconds: self.connect_timeout.as_secs_f64(),
                    })?
                    .map_err(|source| Error::Tls {
                        reason: format!("handshake with {} failed", endpoint.authority()),
                        source: Some(Box::new(source)),
                    })?;
                Ok(Stream::Tls(Box::new(tls)))
            }
        }
    }

    /// A new HTTP/1.1 connection; its driver runs on a task whose handle is returned.
    pub(crate) async fn open(
        &self,
        endpoint: &Endpoint,
    ) -> Result<
        (
            SendRequest<RequestBody>,
            JoinHandle<Result<(), hyper::Error>>,
        ),
        Error,
    > {
        let stream = self.connect(endpoint).await?;
        let (sender, connection) =
            http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|error| {
                    Error::http(
                        format!("HTTP handshake with {}", endpoint.authority()),
                        error,
                    )
                })?;
        let driver = tokio::spawn(connection);
        Ok((sender, driver))
    }

    fn checkout(&self, endpoint: &Endpoint) -> Option<SendRequest<RequestBody>> {
        let mut idle = lock(&self.idle);
        let senders = idle.get_mut(endpoint)?;
        while let Some(sender) = senders.pop() {
            if !sender.is_closed() {
                return Some(sender);
            }
        }
        None
    }

    fn checkin(&self, endpoint: &Endpoint, sender: SendRequest<RequestBody>) {
        let mut idle = lock(&self.idle);
        let senders = idle.entry(endpoint.clone()).or_default();
        if senders.len() < MAX_IDLE_PER_HOST {
            senders.push(sender);
        }
    }

    /// Drops every idle connection (used after a redirect or on close).
    pub(crate) fn clear_idle(&self) {
        lock(&self.idle).clear();
    }

    /// POSTs an RPC body on a keep-alive connection and reads the whole response (at most
    /// `limit` bytes). A reused connection found closed before the request went out is replaced
    /// by a fresh one. A request that went out but got no answer at all (the server closed the
    /// connection: an idle close racing the request, or a host dying mid-call) is resent once
    /// only when `resend_unanswered` says the call is safe to run twice.
    pub(crate) async fn rpc(
        &self,
        endpoint: &Endpoint,
        path: &str,
        content_type: &'static str,
        body: Bytes,
        extra_headers: &[(&'static str, &'static str)],
        policy: RpcPolicy,
    ) -> Result<RpcReply, Error> {
        let RpcPolicy {
            limit,
            resend_unanswered,
        } = policy;
        for attempt in 0..2 {
            let (mut sender, reused) = match self.checkout(endpoint) {
                Some(sender) if attempt == 0 => (sender, true),
                _ => (self.open(endpoint).await?.0, false),
            };
            if sender.ready().await.is_err() {
                if reused {
                    continue;
                }
                return Err(Error::protocol(format!(
                    "connection to {} closed before the request",
                    endpoint.authority()
                )));
            }
            let mut request = Request::builder()
                .method(Method::POST)
                .uri(path)
                .header(HOST, endpoint.authority())
                .header(USER_AGENT, USER_AGENT_VALUE)
                .header(CONTENT_TYPE, content_type)
                .header(CONTENT_LENGTH, body.len());
            for (name, value) in extra_headers {
                request = request.header(*name, *value);
            }
            let request = request
                .body(full_body(body.clone()))
                .map_err(|error| Error::http(format!("building a request for {path}"), error))?;
            let response = match sender.send_request(request).await {
                Ok(response) => response,
                // Canceled: hyper never wrote the request, the connection was already gone.
                Err(error) if reused && error.is_canceled() => {
                    tracing::debug!(endpoint = %endpoint.authority(), "idle connection was closed by the server; retrying on a new one");
                    continue;
                }
                // The request was written and may have run: resend only what is safe twice.
                Err(error)
                    if reused
                        && resend_unanswered
                        && (error.is_closed() || error.is_incomplete_message()) =>
                {
                    tracing::debug!(endpoint = %endpoint.authority(), "connection closed without an answer; resending a read-only call on a new one");
                    continue;
                }
                Err(error) => {
                    return Err(Error::http(
                        format!("POST {path} to {}", endpoint.authority()),
                        error,
                    ));
                }
            };
            let (parts, incoming) = response.into_parts();
            let keep_alive = !parts
                .headers
                .get(CONNECTION)
                .and_then(|value| value.to_str().ok())
                .is_some_and(|value| value.eq_ignore_ascii_case("close"));
            let body = collect_limited(
                incoming,
                limit,
                &format!("reading the response to POST {path}"),
            )
            .await?;
            if keep_alive {
                self.checkin(endpoint, sender);
            }
            return Ok(RpcReply {
                status: parts.status,
                headers: parts.headers,
                body,
            });
        }
        Err(Error::protocol(format!(
            "could not send a request to {}",
            endpoint.authority()
        )))
    }
}

/// Reads a body to its end, refusing more than `limit` bytes.
pub(crate) async fn collect_limited(
    mut body: Incoming,
    limit: u64,
    context: &str,
) -> Result<Bytes, Error> {
    let mut buffer = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|error| Error::http(context.to_owned(), error))?;
        if let Ok(data) = frame.into_data() {
            let total = u64::try_from(buffer.len().saturating_add(data.len())).unwrap_or(u64::MAX);
            if total > limit {
                return Err(Error::TooLarge {
                    found: total,
                    limit,
                });
            }
            buffer.extend_from_slice(&data);
        }
    }
    Ok(buffer.freeze())
}

/// Reads a header as text.
pub(crate) fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|value: &HeaderValue| value.to_str().ok())
        .map(str::trim)
}

/// A response head plus the connection driver it came on.
pub(crate) struct Opened {
    pub(crate) response: Response<Incoming>,
    pub(crate) driver: JoinHandle<Result<(), hyper::Error>>,
    /// Kept alive for the whole exchange: dropping it lets hyper wind the connection down
    /// while an upload body is still streaming.
    pub(crate) _sender: SendRequest<RequestBody>,
}
