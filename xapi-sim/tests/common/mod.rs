//! Test helpers: a minimal HTTP/1.1 client over a raw TCP stream (so exact bytes can be
//! asserted), and XML-RPC / JSON-RPC call helpers built on the `xenapi` codec.
#![allow(
    dead_code,
    reason = "each test binary uses a different subset of the helpers"
)]

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use xapi_sim::{Pool, PoolSpec};
use xenapi::Value;
use xenapi::codec::{Failure, Response, jsonrpc, xmlrpc};

/// A plain-HTTP pool from a spec (TLS off).
pub async fn start(spec: PoolSpec) -> Pool {
    Pool::start(spec.tls(false)).await.expect("pool starts")
}

/// One HTTP response.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A keep-alive connection.
pub struct Connection {
    stream: TcpStream,
    buffer: Vec<u8>,
}

impl Connection {
    pub async fn open(address: SocketAddr) -> Connection {
        let stream = TcpStream::connect(address).await.expect("connect");
        Connection {
            stream,
            buffer: Vec::new(),
        }
    }

    /// Sends raw request bytes and reads one response (bounded by a timeout).
    pub async fn exchange(&mut self, request: &[u8]) -> RawResponse {
        self.stream.write_all(request).await.expect("write");
        tokio::time::timeout(Duration::from_secs(10), self.read_response())
            .await
            .expect("response in time")
    }

    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 16384];
        let read = self.stream.read(&mut chunk).await.unwrap_or(0);
        self.buffer.extend_from_slice(&chunk[..read]);
        read > 0
    }

    async fn read_response(&mut self) -> RawResponse {
        let header_end = loop {
            if let Some(position) = self
                .buffer
                .windows(4)
                .position(|window| window == b"\r\n\r\n")
            {
                break position;
            }
            assert!(self.fill().await, "connection closed before the headers");
        };
        let head = String::from_utf8(self.buffer[..header_end].to_vec()).expect("ASCII headers");
        self.buffer.drain(..header_end + 4);
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .unwrap()
            .split(' ')
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        let headers: Vec<(String, String)> = lines
            .filter_map(|line| line.split_once(':'))
            .map(|(key, value)| (key.trim().to_ascii_lowercase(), value.trim().to_owned()))
            .collect();
        let length: usize = headers
            .iter()
            .find(|(key, _)| key == "content-length")
            .map(|(_, value)| value.parse().unwrap())
            .expect("responses carry content-length");
        while self.buffer.len() < length {
            assert!(self.fill().await, "connection closed inside the body");
        }
        let body = self.buffer.drain(..length).collect();
        RawResponse {
            status,
            headers,
            body,
        }
    }

    /// Whether the server closed the connection (reads EOF within a second).
    pub async fn is_closed(&mut self) -> bool {
        let mut byte = [0u8; 1];
        matches!(
            tokio::time::timeout(Duration::from_secs(1), self.stream.read(&mut byte)).await,
            Ok(Ok(0) | Err(_))
        )
    }
}

/// A POST request with Content-Length.
pub fn post(path: &str, content_type: &str, body: &[u8]) -> Vec<u8> {
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: sim\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    request
}

/// Sends one request on a fresh connection.
pub async fn send(address: SocketAddr, request: &[u8]) -> RawResponse {
    Connection::open(address).await.exchange(request).await
}

/// XML-RPC call on a fresh connection; the raw response.
pub async fn xml_raw(address: SocketAddr, method: &str, params: &[Value]) -> RawResponse {
    send(
        address,
        &post("/", "text/xml", &xmlrpc::encode_call(method, params)),
    )
    .await
}

/// XML-RPC call: the decoded outcome.
pub async fn xml(address: SocketAddr, method: &str, params: &[Value]) -> Result<Value, Failure> {
    let response = xml_raw(address, method, params).await;
    assert_eq!(response.status, 200, "{}", response.text());
    match xmlrpc::decode_response(&response.body).expect("XML-RPC response") {
        Response::Success(value) => Ok(value),
        Response::Failure(failure) => Err(failure),
    }
}

/// JSON-RPC v2 call: the decoded outcome.
pub async fn json(address: SocketAddr, method: &str, params: &[Value]) -> Result<Value, Failure> {
    let body = jsonrpc::encode_call(jsonrpc::Version::V2, &jsonrpc::Id::Int(1), method, params);
    let response = send(address, &post("/jsonrpc", "application/json", &body)).await;
    assert_eq!(response.status, 200, "{}", response.text());
    match jsonrpc::decode_response(&response.body)
        .expect("JSON-RPC response")
        .response
    {
        Response::Success(value) => Ok(value),
        Response::Failure(failure) => Err(failure),
    }
}

/// Logs in over XML-RPC; the session ref.
pub async fn login(pool: &Pool) -> String {
    let credentials = pool.credentials();
    let session = xml(
        pool.master().address,
        "session.login_with_password",
        &[
            Value::from(credentials.username.as_str()),
            Value::from(credentials.password.as_str()),
            Value::from("1.0"),
            Value::from("xapi-sim tests"),
        ],
    )
    .await
    .expect("login");
    session.as_str().unwrap().to_owned()
}

/// A string value.
pub fn s(text: &str) -> Value {
    Value::from(text)
}

/// The error code and params of a failure.
pub fn code(result: Result<Value, Failure>) -> (String, Vec<String>) {
    let failure = result.expect_err("expected a failure");
    (failure.code, failure.params)
}

/// Waits for an async task to finish; returns its record.
pub async fn wait_task(address: SocketAddr, session: &str, task: &str) -> Value {
    for _ in 0..500 {
        let record = xml(address, "task.get_record", &[s(session), s(task)])
            .await
            .expect("task record");
        if record.get("status") != Some(&s("pending")) {
            return record;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("task {task} did not finish");
}

/// The standard test pool: two hosts, a local `ext` SR and a shared ISO SR, an
/// `insecure_nbd` network, a running VM with a CBT disk, a second disk and a CD, a halted VM,
/// and a template.
pub fn fixture() -> PoolSpec {
    use xapi_sim::{DiskSpec, NetworkSpec, Size, SrSpec, VmSpec};
    PoolSpec::new("test pool")
        .hosts(2)
        .credentials("root", "secret")
        .sr(SrSpec::new("Local storage", "ext"))
        .sr(SrSpec::new("ISO library", "iso").shared())
        .network(NetworkSpec::new("NBD network").purpose("insecure_nbd"))
        .vm(VmSpec::new("web01")
            .running()
            .other_config("xo:owner", "alice")
            .other_config("xensource_internal", "1")
            .other_config("default_template", "false")
            .blocked("destroy", "protected by the tests")
            .disk(DiskSpec::new(Size::mib(64)).random(0, 4 << 20, 1).cbt())
            .disk(DiskSpec::new(Size::mib(32)))
            .disk(DiskSpec::new(Size::mib(4)).cd().on_sr("ISO library"))
            .vif("NBD network"))
        .vm(VmSpec::new("db01")
            .disk(DiskSpec::new(Size::mib(16)))
            .vif("NBD network")
            .guest_metrics_delay(Duration::from_millis(300)))
        .vm(VmSpec::new("Debian template").template())
}

/// The ref of the object of `class` named `name`.
pub fn named(pool: &Pool, class: xapi_sim::db::ClassId, name: &str) -> String {
    pool.find_by_name(class, name)
        .unwrap_or_else(|| panic!("no {class} named {name}"))
}
