//! Helpers for the transfer and NBD tests: raw HTTP exchanges that read bodies to EOF (transfer
//! responses have no length), uploads that read the response head before sending the body,
//! and shortcuts into the simulated pool's state.
#![allow(
    dead_code,
    reason = "each test binary uses a different subset of the helpers"
)]

use std::net::SocketAddr;
use std::time::Duration;

use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use xapi_sim::Pool;
use xapi_sim::db::ClassId;
use xenapi::Value;

/// How long any exchange may take.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// One response, body read to EOF.
#[derive(Debug)]
pub struct Reply {
    pub version: String,
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

/// Splits a response head from what follows it.
fn parse_head(buffer: &[u8]) -> Option<(Reply, usize)> {
    let end = buffer.windows(4).position(|window| window == b"\r\n\r\n")?;
    let head = String::from_utf8(buffer[..end].to_vec()).expect("ASCII head");
    let mut lines = head.split("\r\n");
    let mut status_line = lines.next().unwrap().splitn(3, ' ');
    let version = status_line.next().unwrap().to_owned();
    let status = status_line.next().unwrap().parse().unwrap();
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(key, value)| (key.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    Some((
        Reply {
            version,
            status,
            headers,
            body: Vec::new(),
        },
        end + 4,
    ))
}

/// A request on a fresh connection: the head (ending with an empty line) and the body, then
/// everything up to EOF.
pub async fn exchange(address: SocketAddr, head: &str, body: &[u8]) -> Reply {
    tokio::time::timeout(TIMEOUT, async {
        let mut stream = TcpStream::connect(address).await.unwrap();
        stream.write_all(head.as_bytes()).await.unwrap();
        // The server may answer early and close: a failed write is part of the test.
        let _written = stream.write_all(body).await;
        let mut buffer = Vec::new();
        let _read = stream.read_to_end(&mut buffer).await;
        let (mut reply, at) = parse_head(&buffer).expect("a response head");
        reply.body = buffer[at..].to_vec();
        reply
    })
    .await
    .expect("exchange in time")
}

/// `GET path` on a fresh connection.
pub async fn get(address: SocketAddr, path: &str) -> Reply {
    exchange(
        address,
        &format!("GET {path} HTTP/1.1\r\nHost: sim\r\n\r\n"),
        b"",
    )
    .await
}

/// `GET path` with extra header lines (each ending with CRLF).
pub async fn get_with(address: SocketAddr, path: &str, headers: &str) -> Reply {
    exchange(
        address,
        &format!("GET {path} HTTP/1.1\r\nHost: sim\r\n{headers}\r\n"),
        b"",
    )
    .await
}

/// `PUT path` with an exact Content-Length.
pub async fn put(address: SocketAddr, path: &str, body: &[u8]) -> Reply {
    exchange(
        address,
        &format!(
            "PUT {path} HTTP/1.1\r\nHost: sim\r\nContent-Length: {}\r\n\r\n",
            body.len()
        ),
        body,
    )
    .await
}

/// An upload that reads the response head before sending any body byte.
pub struct Upload {
    stream: TcpStream,
    buffer: Vec<u8>,
    pub head: Reply,
}

impl Upload {
    /// Sends `head` and waits for the response head.
    pub async fn start(address: SocketAddr, head: &str) -> Upload {
        tokio::time::timeout(TIMEOUT, async {
            let mut stream = TcpStream::connect(address).await.unwrap();
            stream.write_all(head.as_bytes()).await.unwrap();
            let mut buffer = Vec::new();
            loop {
                if let Some((reply, at)) = parse_head(&buffer) {
                    buffer.drain(..at);
                    return Upload {
                        stream,
                        buffer,
                        head: reply,
                    };
                }
                let mut chunk = [0u8; 4096];
                let read = stream.read(&mut chunk).await.unwrap();
                assert!(read > 0, "closed before a response head");
                buffer.extend_from_slice(&chunk[..read]);
            }
        })
        .await
        .expect("response head in time")
    }

    /// Sends body bytes.
    pub async fn send(&mut self, data: &[u8]) {
        self.stream.write_all(data).await.unwrap();
    }

    /// Reads what follows the head until the server closes; the bytes.
    pub async fn finish(mut self) -> Vec<u8> {
        tokio::time::timeout(TIMEOUT, async {
            let _read = self.stream.read_to_end(&mut self.buffer).await;
            self.buffer
        })
        .await
        .expect("the server closes the connection")
    }

    /// Closes our side without sending the rest.
    pub fn abandon(self) {
        drop(self.stream);
    }
}

/// The head of a raw `PUT` (no body).
pub fn put_head(path: &str, length: usize) -> String {
    format!("PUT {path} HTTP/1.1\r\nHost: sim\r\nContent-Length: {length}\r\n\r\n")
}

/// SHA-256 of bytes.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// The first VDI named `name`: (ref, uuid).
pub fn vdi(pool: &Pool, name: &str) -> (String, String) {
    let reference = pool
        .find_by_name(ClassId::Vdi, name)
        .expect("the VDI exists");
    let uuid = pool
        .sim()
        .read(|db| db.str(ClassId::Vdi, &reference, "uuid"));
    (reference, uuid)
}

/// The content hash of a VDI's disk.
pub fn vdi_sha256(pool: &Pool, vdi: &str) -> [u8; 32] {
    let disk = pool.sim().read(|db| db.disk_of(vdi)).unwrap();
    pool.storage().sha256(disk).unwrap()
}

/// The whole content of a VDI.
pub fn vdi_bytes(pool: &Pool, vdi: &str) -> Vec<u8> {
    let disk = pool.sim().read(|db| db.disk_of(vdi)).unwrap();
    let size = pool.storage().virtual_size(disk).unwrap().get();
    pool.storage()
        .read(
            disk,
            xapi_sim::storage::ByteOffset::new(0),
            usize::try_from(size).unwrap(),
        )
        .unwrap()
        .to_vec()
}

/// dom0 VBDs attached to a VDI (transfer and NBD attachments).
pub fn dom0_vbds(pool: &Pool, vdi: &str) -> usize {
    pool.sim().read(|db| {
        db.strings(ClassId::Vdi, vdi, "VBDs")
            .iter()
            .filter(|vbd| {
                let vm = db.str(ClassId::Vbd, vbd, "VM");
                db.bool(ClassId::Vm, &vm, "is_control_domain")
            })
            .count()
    })
}

/// A task's status, result and error_info.
pub fn task_state(pool: &Pool, task: &str) -> (String, String, Vec<String>) {
    pool.sim().read(|db| {
        (
            db.str(ClassId::Task, task, "status"),
            db.str(ClassId::Task, task, "result"),
            db.strings(ClassId::Task, task, "error_info"),
        )
    })
}

/// Waits until a task leaves `pending`; its final state.
pub async fn wait_task(pool: &Pool, task: &str) -> (String, String, Vec<String>) {
    tokio::time::timeout(TIMEOUT, async {
        loop {
            let state = task_state(pool, task);
            if state.0 != "pending" {
                return state;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the task completes")
}

/// A client-created pending task (as `task.create`).
pub fn client_task(pool: &Pool) -> String {
    pool.sim()
        .create_task("client task", &pool.master().reference)
        .as_str()
        .to_owned()
}

/// Snapshots a VDI (sm semantics); the new VDI ref.
pub fn snapshot(pool: &Pool, vdi: &str) -> String {
    pool.sim()
        .write(|db| xapi_sim::db::vdi::snapshot(db, vdi))
        .unwrap()
}

/// Clones a VDI; the new VDI ref.
pub fn clone_vdi(pool: &Pool, vdi: &str) -> String {
    pool.sim()
        .write(|db| xapi_sim::db::vdi::clone(db, vdi))
        .unwrap()
}

/// Writes guest data into a VDI.
pub fn write(pool: &Pool, vdi: &str, offset: u64, data: &[u8]) {
    let disk = pool.sim().read(|db| db.disk_of(vdi)).unwrap();
    pool.storage()
        .write(disk, xapi_sim::storage::ByteOffset::new(offset), data)
        .unwrap();
}

/// The session of a fresh login (direct, no RPC).
pub fn session(pool: &Pool) -> String {
    let credentials = pool.credentials().clone();
    pool.sim()
        .authenticate(
            &pool.master().reference,
            None,
            Some((&credentials.username, &credentials.password)),
        )
        .unwrap()
        .session
        .as_str()
        .to_owned()
}

/// A string value.
pub fn s(text: &str) -> Value {
    Value::from(text)
}
