//! The HTTP server of one simulated host (hyper 1, HTTP/1.1 with keep-alive, optionally TLS),
//! and its [`Router`]: handlers are chosen per HTTP method by longest path prefix, as xapi's
//! `http_svr` does, so `POST /xmlrpc` lands on `/` (XML-RPC) and `POST /jsonrpc` on JSON-RPC.
//!
//! The RPC endpoints are registered by [`Router::with_rpc`]; transfer handlers (`/export_raw_vdi`,
//! `/import_raw_vdi`, `/export`, `/import`) plug in with [`Router::route`] and receive a
//! [`HostContext`] giving the shared [`Sim`] and the host that received the request.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use xenapi::{Host, Ref};

use crate::rpc;
use crate::sim::Sim;

/// Body of every response.
pub type ResponseBody = BoxBody<Bytes, std::io::Error>;

/// A boxed, sendable future.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// A request handler.
pub type Handler =
    Arc<dyn Fn(Request<Incoming>, HostContext) -> BoxFuture<Response<ResponseBody>> + Send + Sync>;

/// Largest RPC body xapi reads (`http_limit_max_rpc_size`, 300 KiB).
pub const MAX_RPC_BODY: u64 = 307_200;

/// What a handler knows about where the request arrived.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct HostContext {
    /// The pool.
    pub sim: Arc<Sim>,
    /// The host that received the request.
    pub host: Ref<Host>,
    /// Whether the connection is TLS.
    pub tls: bool,
    /// The client's address.
    pub peer: SocketAddr,
    /// The address the host listens on (its port goes into redirects).
    pub local: SocketAddr,
}

#[derive(Clone)]
struct Route {
    method: Method,
    prefix: String,
    handler: Handler,
}

/// Handlers by HTTP method and path prefix.
#[derive(Clone, Default)]
pub struct Router {
    routes: Vec<Route>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let routes: Vec<String> = self
            .routes
            .iter()
            .map(|route| format!("{} {}", route.method, route.prefix))
            .collect();
        formatter
            .debug_struct("Router")
            .field("routes", &routes)
            .finish()
    }
}

impl Router {
    /// No routes.
    #[must_use]
    pub fn new() -> Router {
        Router::default()
    }

    /// The RPC endpoints: `POST /`, `/RPC2`, `/json` (XML-RPC) and `/jsonrpc` (JSON-RPC), and the
    /// CORS preflight `OPTIONS` of `/`, `/json`, `/jsonrpc`.
    #[must_use]
    pub fn with_rpc() -> Router {
        let mut router = Router::new();
        for prefix in ["/", "/RPC2", "/json"] {
            router.route(Method::POST, prefix, |request, context| {
                rpc_endpoint(request, context, false)
            });
        }
        router.route(Method::POST, "/jsonrpc", |request, context| {
            rpc_endpoint(request, context, true)
        });
        for prefix in ["/", "/json", "/jsonrpc"] {
            router.route(Method::OPTIONS, prefix, |_, _| async { cors_preflight() });
        }
        router
    }

    /// Adds (or replaces) the handler of `method` for paths starting with `prefix`.
    pub fn route<F, Fut>(&mut self, method: Method, prefix: &str, handler: F) -> &mut Router
    where
        F: Fn(Request<Incoming>, HostContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response<ResponseBody>> + Send + 'static,
    {
        let handler: Handler =
            Arc::new(move |request, context| Box::pin(handler(request, context)));
        self.routes
            .retain(|route| !(route.method == method && route.prefix == prefix));
        self.routes.push(Route {
            method,
            prefix: prefix.to_owned(),
            handler,
        });
        self
    }

    /// Adds every route of `other` (later wins).
    pub fn merge(&mut self, other: &Router) -> &mut Router {
        for route in &other.routes {
            self.routes.retain(|existing| {
                !(existing.method == route.method && existing.prefix == route.prefix)
            });
            self.routes.push(route.clone());
        }
        self
    }

    /// The handler for a request: longest prefix among the method's routes; 501 when the method
    /// has no route at all, 404 when none matches.
    fn resolve(&self, method: &Method, path: &str) -> Result<&Handler, StatusCode> {
        let candidates: Vec<&Route> = self
            .routes
            .iter()
            .filter(|route| route.method == method)
            .collect();
        if candidates.is_empty() {
            return Err(StatusCode::NOT_IMPLEMENTED);
        }
        candidates
            .into_iter()
            .filter(|route| path.starts_with(&route.prefix))
            .max_by_key(|route| route.prefix.len())
            .map(|route| &route.handler)
            .ok_or(StatusCode::NOT_FOUND)
    }
}

/// A complete body.
#[must_use]
pub fn full(bytes: impl Into<Bytes>) -> ResponseBody {
    Full::new(bytes.into())
        .map_err(|never: Infallible| match never {})
        .boxed()
}

/// xapi's HTML error page (`http_svr.ml`) with `connection: close`.
#[must_use]
pub fn html_error(status: StatusCode) -> Response<ResponseBody> {
    let text = match status {
        StatusCode::INTERNAL_SERVER_ERROR => {
            "<html><body><h1>HTTP 500 internal server error</h1>An unexpected error occurred; please wait a while and try again. If the problem persists, please contact your support representative.<h1> Additional information </h1></body></html>"
        }
        StatusCode::NOT_FOUND => {
            "<html><body><h1>HTTP 404 not found</h1>The requested resource was not found.</body></html>"
        }
        StatusCode::NOT_IMPLEMENTED => {
            "<html><body><h1>HTTP 501 Not Implemented</h1></body></html>"
        }
        _ => "<html><body><h1>HTTP error</h1></body></html>",
    };
    let mut response = Response::new(full(text));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

fn cors_preflight() -> Response<ResponseBody> {
    let mut response = Response::new(full(Bytes::new()));
    let headers = response.headers_mut();
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("X-Requested-With"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("POST, OPTIONS"),
    );
    response
}

/// Request header asking for the master's certificate thumbprint on `HOST_IS_SLAVE`.
const THUMBPRINT_REQUEST: &str = "x-xenapi-request-host-certificate-thumbprint";
/// Response header carrying it (xapi `api_server.ml` `create_thumbprint_header`).
const THUMBPRINT_RESPONSE: &str = "x-xenapi-response-host-certificate-thumbprint";

/// The digest a client asked for with [`THUMBPRINT_REQUEST`].
#[derive(Clone, Copy)]
enum ThumbprintKind {
    Sha256,
    Sha1,
}

impl ThumbprintKind {
    /// xapi accepts exactly `sha-256:master` and `sha-1:master`; anything else is ignored.
    fn requested(request: &Request<Incoming>) -> Option<Self> {
        match request.headers().get(THUMBPRINT_REQUEST)?.as_bytes() {
            b"sha-256:master" => Some(Self::Sha256),
            b"sha-1:master" => Some(Self::Sha1),
            _ => None,
        }
    }
}

fn master_thumbprint(sim: &Sim, kind: ThumbprintKind) -> Option<String> {
    sim.read(|db| {
        let runtime = db.host_runtime(&db.master())?;
        Some(match kind {
            ThumbprintKind::Sha256 => runtime.fingerprint_sha256.clone(),
            ThumbprintKind::Sha1 => runtime.fingerprint_sha1.clone(),
        })
    })
}

/// The length an RPC request declares, if xapi would read it: `Content-Length` required, no
/// `Transfer-Encoding`, at most [`MAX_RPC_BODY`].
fn rpc_body_length(request: &Request<Incoming>) -> Option<u64> {
    if request.headers().contains_key(header::TRANSFER_ENCODING) {
        return None;
    }
    let length = request
        .headers()
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()?;
    (length <= MAX_RPC_BODY).then_some(length)
}

async fn rpc_endpoint(
    request: Request<Incoming>,
    context: HostContext,
    json: bool,
) -> Response<ResponseBody> {
    let Some(length) = rpc_body_length(&request) else {
        return html_error(StatusCode::INTERNAL_SERVER_ERROR);
    };
    let thumbprint_kind = ThumbprintKind::requested(&request);
    let limit = usize::try_from(length).unwrap_or(usize::MAX);
    let body = match Limited::new(request.into_body(), limit).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => return html_error(StatusCode::INTERNAL_SERVER_ERROR),
    };
    let host = context.host.as_str();
    let reply = if json {
        rpc::handle_jsonrpc(&context.sim, host, &body).await
    } else {
        rpc::handle_xmlrpc(&context.sim, host, &body).await
    };
    match reply {
        Ok(reply) => {
            let mut response = Response::new(full(reply.body));
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(reply.content_type),
            );
            headers.insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("no-cache, no-store"),
            );
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_ORIGIN,
                HeaderValue::from_static("*"),
            );
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                HeaderValue::from_static("X-Requested-With"),
            );
            if reply.host_is_slave
                && let Some(kind) = thumbprint_kind
                && let Some(thumbprint) = master_thumbprint(&context.sim, kind)
                && let Ok(value) = HeaderValue::from_str(&thumbprint)
            {
                headers.insert(THUMBPRINT_RESPONSE, value);
            }
            response
        }
        Err(error) => {
            tracing::debug!(%error, "malformed RPC body");
            html_error(StatusCode::INTERNAL_SERVER_ERROR)
        }
    }
}

/// Serves one host until the task is aborted: accepts connections on `listener`, optionally
/// wraps them in TLS, and routes requests. Connections die with the task.
pub(crate) async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    router: Arc<Router>,
    sim: Arc<Sim>,
    host: Ref<Host>,
) {
    let mut connections = JoinSet::new();
    let local = match listener.local_addr() {
        Ok(local) => local,
        Err(error) => {
            tracing::warn!(%error, "listener has no local address");
            return;
        }
    };
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                continue;
            }
        };
        while connections.try_join_next().is_some() {}
        let context = HostContext {
            sim: Arc::clone(&sim),
            host: host.clone(),
            tls: tls.is_some(),
            peer,
            local,
        };
        let router = Arc::clone(&router);
        let tls = tls.clone();
        connections.spawn(async move {
            let _nodelay = stream.set_nodelay(true);
            match tls {
                Some(acceptor) => match acceptor.accept(stream).await {
                    Ok(stream) => serve_connection(TokioIo::new(stream), router, context).await,
                    Err(error) => tracing::debug!(%error, %peer, "TLS handshake failed"),
                },
                None => serve_connection(TokioIo::new(stream), router, context).await,
            }
        });
    }
}

async fn serve_connection<I>(io: I, router: Arc<Router>, context: HostContext)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let router = Arc::clone(&router);
        let context = context.clone();
        async move {
            let response = match router.resolve(request.method(), request.uri().path()) {
                Ok(handler) => handler(request, context).await,
                Err(status) => html_error(status),
            };
            Ok::<_, Infallible>(response)
        }
    });
    if let Err(error) = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(io, service)
        .await
    {
        tracing::debug!(%error, "connection ended with an error");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_resolve_by_longest_prefix_per_method() {
        let router = Router::with_rpc();
        let resolve = |method: Method, path: &str| {
            router
                .resolve(&method, path)
                .map(|handler| Arc::as_ptr(handler) as *const u8)
        };
        let root = resolve(Method::POST, "/").unwrap();
        assert_eq!(resolve(Method::POST, "/xmlrpc").unwrap(), root);
        assert_ne!(resolve(Method::POST, "/jsonrpc").unwrap(), root);
        assert_eq!(
            resolve(Method::POST, "/jsonrpc/x").unwrap(),
            resolve(Method::POST, "/jsonrpc").unwrap()
        );
        assert_eq!(
            resolve(Method::GET, "/").unwrap_err(),
            StatusCode::NOT_IMPLEMENTED
        );
    }
}
