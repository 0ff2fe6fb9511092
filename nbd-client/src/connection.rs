//! One NBD connection: handshake driver, request writer and a reader task that demultiplexes
//! replies by cookie, reading READ payloads straight into the request's buffer.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader, WriteHalf};
use tokio::sync::{Semaphore, oneshot};
use tokio::task::AbortHandle;
use tracing::{Instrument, debug, debug_span, warn};

use crate::Error;
use crate::config::{ClientConfig, ExportInfo};
use crate::error::MessageRedactor;
use crate::proto::{
    Action, BlockStatusChunk, ClientHandshake, CommandFailure, CommandFlags, CommandType,
    ExportEntry, Goal, HandshakeConfig, Outcome, Reply, ReplyHeader, ReplyMode, ReplyTracker,
    Request, Step, TransmissionFlags, transmission::MAX_REPLY_HEADER_LEN,
};
use crate::transport::{self, BoxStream, ByteStream};
use crate::units::{ByteRange, Cookie, to_u64, to_usize};

/// Most extents one [`Connection::extents`] walk collects before giving up.
pub const MAX_WALK_EXTENTS: usize = 1 << 22;

/// Socket read buffer: large enough for headers and small payloads; big READ payloads bypass it.
const READ_BUFFER: usize = 16 * 1024;

static NEXT_CONNECTION_ID: AtomicU64 = AtomicU64::new(1);

/// A range of the export and its metadata flags, from [`Connection::extents`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MappedExtent {
    /// Bytes described.
    pub range: ByteRange,
    /// Context flags (`base:allocation`: HOLE = 1, ZERO = 2; dirty bitmap: DIRTY = 1).
    pub flags: u64,
}

#[derive(Debug)]
enum Completed {
    Done,
    Read(BytesMut),
    BlockStatus(Vec<BlockStatusChunk>),
}

struct Waiter {
    command: CommandType,
    range: ByteRange,
    buffer: Option<BytesMut>,
    reply: oneshot::Sender<Result<Completed, Error>>,
}

struct Table {
    tracker: ReplyTracker,
    waiters: HashMap<Cookie, Waiter>,
    failure: Option<Arc<Error>>,
}

struct Shared {
    id: u64,
    info: ExportInfo,
    table: Mutex<Table>,
    writer: tokio::sync::Mutex<Option<WriteHalf<BoxStream>>>,
    permits: Semaphore,
    max_in_flight: usize,
    next_cookie: AtomicU64,
    in_flight: AtomicUsize,
    request_timeout: Duration,
    closing: AtomicBool,
    reader: Mutex<Option<AbortHandle>>,
    /// Cleans server messages before they become errors.
    redactor: MessageRedactor,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One connection to an export, with pipelined requests.
///
/// Cheap to share behind an `Arc`; every method takes `&self`. Requests longer than
/// [`ExportInfo::max_request_len`] are split and pipelined; at most
/// `in_flight_per_connection` requests are outstanding at once.
pub struct Connection {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("id", &self.shared.id)
            .field("info", &self.shared.info)
            .field("in_flight", &self.in_flight())
            .finish_non_exhaustive()
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        if let Some(reader) = lock(&self.shared.reader).take() {
            reader.abort();
        }
    }
}

fn handshake_config(config: &ClientConfig, goal: Goal) -> HandshakeConfig {
    HandshakeConfig {
        export_name: config.export_name.clone(),
        profile: config.profile,
        tls: config.tls.is_some(),
        structured_replies: config.structured_replies,
        extended_headers: config.extended_headers,
        meta_contexts: config.meta_contexts.clone(),
        goal,
    }
}

/// Runs the sans-IO handshake over `stream`, upgrading it to TLS when asked.
async fn drive_handshake(
    mut stream: BoxStream,
    config: &ClientConfig,
    goal: Goal,
) -> Result<(BoxStream, Outcome), Error> {
    let mut handshake = ClientHandshake::new(handshake_config(config, goal));
    let mut buffer = Vec::new();
    loop {
        match handshake.next_step()? {
            Step::Send(bytes) => {
                stream
                    .write_all(&bytes)
                    .await
                    .map_err(Error::io("sending an option"))?;
                stream
                    .flush()
                    .await
                    .map_err(Error::io("sending an option"))?;
            }
            Step::Receive(len) => {
                buffer.resize(len, 0);
                match stream.read_exact(&mut buffer).await {
                    Ok(_) => handshake.receive(&buffer)?,
                    Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                        return Err(handshake.eof_error());
                    }
                    Err(e) => return Err(Error::io("reading the handshake")(e)),
                }
            }
            Step::StartTls => {
                let tls = config.tls.as_ref().ok_or(Error::Config {
                    reason: "STARTTLS without TLS options".into(),
                })?;
                let (connector, name) = tls.connector()?;
                let secured = connector
                    .connect(name, stream)
                    .await
                    .map_err(|source| Error::Tls { source })?;
                stream = Box::new(secured);
                handshake.tls_established()?;
            }
            Step::Done(outcome) => return Ok((stream, outcome)),
        }
    }
}

async fn handshake_with_timeout(
    stream: BoxStream,
    config: &ClientConfig,
    goal: Goal,
) -> Result<(BoxStream, Outcome), Error> {
    tokio::time::timeout(
        config.handshake_timeout,
        drive_handshake(stream, config, goal),
    )
    .await
    .map_err(|_| Error::Timeout {
        what: "handshake",
        after: config.handshake_timeout,
    })?
}

/// Lists the server's exports (`NBD_OPT_LIST`).
pub async fn list_exports(config: &ClientConfig) -> Result<Vec<ExportEntry>, Error> {
    config.validate()?;
    let stream = transport::connect(&config.address, config.connect_timeout).await?;
    let (mut stream, outcome) = handshake_with_timeout(stream, config, Goal::ListExports).await?;
    let _ = stream.shutdown().await;
    match outcome {
        Outcome::Exports(list) => Ok(list),
        _ => Err(Error::Malformed {
            what: "handshake",
            reason: "LIST produced no export list",
        }),
    }
}

/// Lists the metadata contexts of the configured export matching `queries` (empty = all).
pub async fn list_meta_contexts(
    config: &ClientConfig,
    queries: Vec<String>,
) -> Result<Vec<String>, Error> {
    config.validate()?;
    let stream = transport::connect(&config.address, config.connect_timeout).await?;
    let (mut stream, outcome) =
        handshake_with_timeout(stream, config, Goal::ListMetaContexts(queries)).await?;
    let _ = stream.shutdown().await;
    match outcome {
        Outcome::MetaContexts(list) => Ok(list),
        _ => Err(Error::Malformed {
            what: "handshake",
            reason: "LIST_META_CONTEXT produced no list",
        }),
    }
}

impl Connection {
    /// Connects to `config.address` and negotiates the export.
    pub async fn connect(config: &ClientConfig) -> Result<Self, Error> {
        config.validate()?;
        let stream = transport::connect(&config.address, config.connect_timeout).await?;
        Self::handshake(stream, config).await
    }

    /// Negotiates the export over an already open stream (e.g. an in-memory duplex in tests).
    pub async fn handshake<S: ByteStream>(stream: S, config: &ClientConfig) -> Result<Self, Error> {
        config.validate()?;
        let id = NEXT_CONNECTION_ID.fetch_add(1, Ordering::Relaxed);
        let span = debug_span!("nbd_connection", id, address = %config.address);
        async move {
            let (stream, outcome) =
                handshake_with_timeout(Box::new(stream), config, Goal::Transmission).await?;
            let Outcome::Transmission(negotiated) = outcome else {
                return Err(Error::Malformed {
                    what: "handshake",
                    reason: "no transmission phase",
                });
            };
            let info = ExportInfo::new(negotiated, config);
            debug!(
                size = info.size,
                mode = info.mode.name(),
                tls = info.tls,
                "negotiated"
            );
            Ok(Self::start(id, stream, info, config))
        }
        .instrument(span)
        .await
    }

    fn start(id: u64, stream: BoxStream, info: ExportInfo, config: &ClientConfig) -> Self {
        let (read_half, write_half) = tokio::io::split(stream);
        let contexts = info.contexts.iter().map(|c| c.id).collect();
        let shared = Arc::new(Shared {
            id,
            table: Mutex::new(Table {
                tracker: ReplyTracker::new(info.mode, contexts),
                waiters: HashMap::new(),
                failure: None,
            }),
            info,
            writer: tokio::sync::Mutex::new(Some(write_half)),
            permits: Semaphore::new(config.in_flight_per_connection),
            max_in_flight: config.in_flight_per_connection,
            next_cookie: AtomicU64::new(1),
            in_flight: AtomicUsize::new(0),
            request_timeout: config.request_timeout,
            closing: AtomicBool::new(false),
            reader: Mutex::new(None),
            redactor: MessageRedactor::for_export(&config.export_name),
        });
        let reader_shared = shared.clone();
        let span = debug_span!("nbd_reader", id);
        let task = tokio::spawn(
            async move {
                let reader = BufReader::with_capacity(READ_BUFFER, read_half);
                let result = read_replies(&reader_shared, reader).await;
                match result {
                    Ok(()) => {
                        reader_shared.fail(Error::Closed);
                    }
                    Err(error) => {
                        if !reader_shared.closing.load(Ordering::Relaxed) {
                            warn!(%error, "connection failed");
                        }
                        reader_shared.fail(error);
                    }
                }
            }
            .instrument(span),
        );
        *lock(&shared.reader) = Some(task.abort_handle());
        Self { shared }
    }

    /// What the handshake established.
    pub fn info(&self) -> &ExportInfo {
        &self.shared.info
    }

    /// Requests awaiting replies.
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight.load(Ordering::Relaxed)
    }

    /// False once the connection failed or was closed.
    pub fn is_alive(&self) -> bool {
        lock(&self.shared.table).failure.is_none()
    }

    /// Why the connection failed, if it did.
    pub fn failure(&self) -> Option<Arc<Error>> {
        lock(&self.shared.table).failure.clone()
    }

    fn check_range(&self, range: ByteRange) -> Result<(), Error> {
        let info = &self.shared.info;
        if range.end() > info.size {
            return Err(Error::InvalidRange {
                offset: range.offset(),
                length: range.length(),
                export_size: info.size,
            });
        }
        let alignment = info.alignment();
        // The last block of an export whose size is not aligned may end unaligned.
        let end_ok = range.end().is_multiple_of(alignment) || range.end() == info.size;
        if !range.offset().is_multiple_of(alignment) || !end_ok {
            return Err(Error::Unaligned {
                offset: range.offset(),
                length: range.length(),
                alignment,
            });
        }
        Ok(())
    }

    fn require(&self, flag: TransmissionFlags, what: &'static str) -> Result<(), Error> {
        if self.shared.info.flags.contains(flag) {
            Ok(())
        } else {
            Err(Error::Unsupported { what })
        }
    }

    fn require_writable(&self) -> Result<(), Error> {
        if self.shared.info.is_read_only() {
            Err(Error::Unsupported {
                what: "writes (read-only export)",
            })
        } else {
            Ok(())
        }
    }

    /// Reads `range` into one `Bytes`. Longer than one request: split, pipelined, and landed in
    /// a single allocation (each piece is a disjoint part of it, so nothing is copied).
    pub async fn read(&self, range: ByteRange) -> Result<Bytes, Error> {
        self.check_range(range)?;
        if range.is_empty() {
            return Ok(Bytes::new());
        }
        let total = to_usize(range.length(), "read length")?;
        let max = self.shared.info.max_request_len();
        if range.length() <= max {
            let buffer = BytesMut::with_capacity(total);
            let completed = self
                .shared
                .submit(
                    CommandType::READ,
                    CommandFlags::EMPTY,
                    range,
                    None,
                    Some(buffer),
                )
                .await?;
            return into_read(completed).map(BytesMut::freeze);
        }
        let mut rest = BytesMut::with_capacity(total);
        let mut requests = Vec::new();
        for piece in range.pieces(max) {
            let tail = rest.split_off(to_usize(piece.length(), "read length")?);
            let buffer = std::mem::replace(&mut rest, tail);
            requests.push(self.shared.submit(
                CommandType::READ,
                CommandFlags::EMPTY,
                piece,
                None,
                Some(buffer),
            ));
        }
        let mut whole = BytesMut::new();
        for completed in futures::future::try_join_all(requests).await? {
            whole.unsplit(into_read(completed)?);
        }
        Ok(whole.freeze())
    }

    /// Writes `data` at `offset` (split into pipelined requests when long; never copied).
    pub async fn write(&self, offset: u64, data: Bytes) -> Result<(), Error> {
        self.require_writable()?;
        let range = ByteRange::new(offset, to_u64(data.len()))?;
        self.check_range(range)?;
        let max = self.shared.info.max_request_len();
        let mut requests = Vec::new();
        for piece in range.pieces(max) {
            let start = to_usize(piece.offset().saturating_sub(offset), "write offset")?;
            let end = start.saturating_add(to_usize(piece.length(), "write length")?);
            let payload = data.slice(start..end);
            requests.push(self.shared.submit(
                CommandType::WRITE,
                CommandFlags::EMPTY,
                piece,
                Some(payload),
                None,
            ));
        }
        futures::future::try_join_all(requests).await?;
        Ok(())
    }

    /// Persists written data (`NBD_CMD_FLUSH`).
    pub async fn flush(&self) -> Result<(), Error> {
        self.require(TransmissionFlags::SEND_FLUSH, "FLUSH")?;
        self.shared
            .submit(
                CommandType::FLUSH,
                CommandFlags::EMPTY,
                ByteRange::default(),
                None,
                None,
            )
            .await
            .map(drop)
    }

    /// Discards `range` (`NBD_CMD_TRIM`).
    pub async fn trim(&self, range: ByteRange) -> Result<(), Error> {
        self.require_writable()?;
        self.require(TransmissionFlags::SEND_TRIM, "TRIM")?;
        self.effect_command(CommandType::TRIM, CommandFlags::EMPTY, range)
            .await
    }

    /// Writes zeros over `range` (`NBD_CMD_WRITE_ZEROES`); `no_hole` asks the server to allocate.
    pub async fn write_zeroes(&self, range: ByteRange, no_hole: bool) -> Result<(), Error> {
        self.require_writable()?;
        self.require(TransmissionFlags::SEND_WRITE_ZEROES, "WRITE_ZEROES")?;
        let flags = if no_hole {
            CommandFlags::NO_HOLE
        } else {
            CommandFlags::EMPTY
        };
        self.effect_command(CommandType::WRITE_ZEROES, flags, range)
            .await
    }

    async fn effect_command(
        &self,
        command: CommandType,
        flags: CommandFlags,
        range: ByteRange,
    ) -> Result<(), Error> {
        self.check_range(range)?;
        let requests = range
            .pieces(self.shared.info.max_effect_len())
            .map(|piece| self.shared.submit(command, flags, piece, None, None))
            .collect::<Vec<_>>();
        futures::future::try_join_all(requests).await?;
        Ok(())
    }

    /// One BLOCK_STATUS request over `range` (capped at the longest effect length): one chunk
    /// per selected context, each covering at least one byte from `range.offset()`.
    pub async fn block_status(&self, range: ByteRange) -> Result<Vec<BlockStatusChunk>, Error> {
        let info = &self.shared.info;
        if info.mode == ReplyMode::Simple || info.contexts.is_empty() {
            return Err(Error::Unsupported {
                what: "BLOCK_STATUS (no metadata context selected)",
            });
        }
        self.check_range(range)?;
        let capped = ByteRange::new(range.offset(), range.length().min(info.max_effect_len()))?;
        match self
            .shared
            .submit(
                CommandType::BLOCK_STATUS,
                CommandFlags::EMPTY,
                capped,
                None,
                None,
            )
            .await?
        {
            Completed::BlockStatus(chunks) => Ok(chunks),
            _ => Err(Error::Malformed {
                what: "BLOCK_STATUS reply",
                reason: "no status chunks",
            }),
        }
    }

    /// Walks `range` with as many BLOCK_STATUS requests as needed and returns the extents of
    /// `context` (e.g. `base:allocation` or `qemu:dirty-bitmap:bm0`), clipped to `range`, with
    /// adjacent extents of equal flags merged.
    pub async fn extents(
        &self,
        context: &str,
        range: ByteRange,
    ) -> Result<Vec<MappedExtent>, Error> {
        let id = self
            .shared
            .info
            .context_id(context)
            .ok_or(Error::Unsupported {
                what: "the requested metadata context (not selected or not offered)",
            })?;
        let mut extents: Vec<MappedExtent> = Vec::new();
        let mut cursor = range.offset();
        while cursor < range.end() {
            let request = ByteRange::new(cursor, range.end().saturating_sub(cursor))?;
            let chunks = self.block_status(request).await?;
            let chunk = chunks
                .into_iter()
                .find(|c| c.context == id)
                .ok_or(Error::Malformed {
                    what: "BLOCK_STATUS reply",
                    reason: "no chunk for the requested context",
                })?;
            let start = cursor;
            for extent in chunk.extents {
                if cursor >= range.end() {
                    break;
                }
                let length = extent.length.min(range.end().saturating_sub(cursor));
                let piece = ByteRange::new(cursor, length)?;
                match extents.last_mut() {
                    Some(last) if last.flags == extent.flags && last.range.end() == cursor => {
                        last.range = ByteRange::new(
                            last.range.offset(),
                            last.range.length().saturating_add(length),
                        )?;
                    }
                    _ => extents.push(MappedExtent {
                        range: piece,
                        flags: extent.flags,
                    }),
                }
                cursor = cursor.saturating_add(length);
            }
            if cursor == start {
                return Err(Error::Malformed {
                    what: "BLOCK_STATUS reply",
                    reason: "no progress",
                });
            }
            if extents.len() > MAX_WALK_EXTENTS {
                return Err(Error::TooMany {
                    what: "extents",
                    max: MAX_WALK_EXTENTS,
                });
            }
        }
        Ok(extents)
    }

    /// Soft disconnect: waits for requests in flight, sends `NBD_CMD_DISC`, shuts TLS down
    /// (close_notify) and waits for the server to close.
    pub async fn close(&self) -> Result<(), Error> {
        let shared = &self.shared;
        shared.closing.store(true, Ordering::Relaxed);
        let max = u32::try_from(shared.max_in_flight).unwrap_or(u32::MAX);
        let drained =
            tokio::time::timeout(shared.request_timeout, shared.permits.acquire_many(max))
                .await
                .map_err(|_| Error::Timeout {
                    what: "draining requests before DISC",
                    after: shared.request_timeout,
                })?
                .map_err(|_| Error::Closed)?;
        if let Some(cause) = lock(&shared.table).failure.clone() {
            drop(drained);
            return match &*cause {
                Error::Closed => Ok(()),
                _ => Err(Error::ConnectionLost { cause }),
            };
        }
        let mut header = BytesMut::with_capacity(32);
        Request {
            flags: CommandFlags::EMPTY,
            command: CommandType::DISC,
            cookie: Cookie(shared.next_cookie.fetch_add(1, Ordering::Relaxed)),
            offset: 0,
            length: 0,
        }
        .encode(shared.info.mode, &mut header)?;
        {
            let mut writer = shared.writer.lock().await;
            if let Some(writer) = writer.as_mut() {
                writer
                    .write_all(&header)
                    .await
                    .map_err(Error::io("sending DISC"))?;
                writer.flush().await.map_err(Error::io("sending DISC"))?;
                // Sends TLS close_notify, then FIN.
                let _ = writer.shutdown().await;
            }
        }
        // The reader sees the server's close and ends; don't wait forever for a rude server.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while lock(&shared.table).failure.is_none() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        shared.fail(Error::Closed);
        drop(drained);
        Ok(())
    }
}

/// Counts a request in flight until dropped (also when the caller cancels the future).
struct InFlightGuard<'a>(&'a AtomicUsize);

impl<'a> InFlightGuard<'a> {
    fn new(counter: &'a AtomicUsize) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        Self(counter)
    }
}

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

fn into_read(completed: Completed) -> Result<BytesMut, Error> {
    match completed {
        Completed::Read(buffer) => Ok(buffer),
        _ => Err(Error::Malformed {
            what: "READ reply",
            reason: "no data",
        }),
    }
}

impl Shared {
    /// Marks the connection failed (first cause wins), fails every waiter and closes the socket.
    fn fail(&self, cause: Error) -> Arc<Error> {
        let (waiters, cause) = {
            let mut table = lock(&self.table);
            if let Some(existing) = &table.failure {
                return existing.clone();
            }
            let cause = Arc::new(cause);
            table.failure = Some(cause.clone());
            table.tracker.drain();
            (std::mem::take(&mut table.waiters), cause)
        };
        for (_, waiter) in waiters {
            let _ = waiter.reply.send(Err(Error::ConnectionLost {
                cause: cause.clone(),
            }));
        }
        if let Some(reader) = lock(&self.reader).take() {
            reader.abort();
        }
        if let Ok(mut writer) = self.writer.try_lock() {
            writer.take();
        }
        cause
    }

    async fn submit(
        &self,
        command: CommandType,
        flags: CommandFlags,
        range: ByteRange,
        payload: Option<Bytes>,
        buffer: Option<BytesMut>,
    ) -> Result<Completed, Error> {
        let _permit = self.permits.acquire().await.map_err(|_| Error::Closed)?;
        let cookie = Cookie(self.next_cookie.fetch_add(1, Ordering::Relaxed));
        let (reply, receiver) = oneshot::channel();
        {
            let mut table = lock(&self.table);
            if let Some(cause) = &table.failure {
                return Err(Error::ConnectionLost {
                    cause: cause.clone(),
                });
            }
            table.tracker.register(cookie, command, range)?;
            table.waiters.insert(
                cookie,
                Waiter {
                    command,
                    range,
                    buffer,
                    reply,
                },
            );
        }
        let _counted = InFlightGuard::new(&self.in_flight);
        self.send_and_wait(command, flags, cookie, range, payload, receiver)
            .await
    }

    async fn send_and_wait(
        &self,
        command: CommandType,
        flags: CommandFlags,
        cookie: Cookie,
        range: ByteRange,
        payload: Option<Bytes>,
        receiver: oneshot::Receiver<Result<Completed, Error>>,
    ) -> Result<Completed, Error> {
        let length = match command {
            CommandType::FLUSH => 0,
            _ => range.length(),
        };
        let mut header = BytesMut::with_capacity(32);
        Request {
            flags,
            command,
            cookie,
            offset: range.offset(),
            length,
        }
        .encode(self.info.mode, &mut header)?;
        let timeout = self.request_timeout;
        let send = async {
            let mut writer = self.writer.lock().await;
            let writer = writer.as_mut().ok_or(Error::Closed)?;
            writer
                .write_all(&header)
                .await
                .map_err(Error::io("sending a request"))?;
            if let Some(payload) = &payload {
                writer
                    .write_all(payload)
                    .await
                    .map_err(Error::io("sending a request"))?;
            }
            writer.flush().await.map_err(Error::io("sending a request"))
        };
        match tokio::time::timeout(timeout, send).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                let cause = self.fail(error);
                return Err(Error::ConnectionLost { cause });
            }
            Err(_) => {
                self.fail(Error::Timeout {
                    what: "request",
                    after: timeout,
                });
                return Err(Error::Timeout {
                    what: "sending a request",
                    after: timeout,
                });
            }
        }
        match tokio::time::timeout(timeout, receiver).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(Error::ConnectionLost {
                cause: lock(&self.table)
                    .failure
                    .clone()
                    .unwrap_or_else(|| Arc::new(Error::Closed)),
            }),
            Err(_) => {
                // A stalled server: close the connection so the pool can retry elsewhere.
                self.fail(Error::Timeout {
                    what: "request",
                    after: timeout,
                });
                Err(Error::Timeout {
                    what: "request",
                    after: timeout,
                })
            }
        }
    }

    fn deliver(&self, cookie: Cookie, result: Result<Reply, CommandFailure>) -> Result<(), Error> {
        let waiter = lock(&self.table)
            .waiters
            .remove(&cookie)
            .ok_or(Error::UnknownCookie { cookie })?;
        let outcome = match result {
            Ok(Reply::Done) => Ok(Completed::Done),
            Ok(Reply::Read) => {
                let mut buffer = waiter.buffer.unwrap_or_default();
                // Bytes no data chunk wrote are holes: zeros.
                buffer.resize(to_usize(waiter.range.length(), "read length")?, 0);
                Ok(Completed::Read(buffer))
            }
            Ok(Reply::BlockStatus(chunks)) => Ok(Completed::BlockStatus(chunks)),
            Err(failure) => {
                if failure.errno == crate::proto::Errno::ESHUTDOWN {
                    debug!("server is shutting down");
                }
                Err(Error::Command {
                    command: waiter.command,
                    offset: waiter.range.offset(),
                    length: waiter.range.length(),
                    errno: failure.errno,
                    message: self.redactor.redact(failure.message.as_bytes()),
                })
            }
        };
        let _ = waiter.reply.send(outcome);
        Ok(())
    }
}

/// The reader task: frames replies with the tracker until the connection fails or closes.
async fn read_replies<R: AsyncRead + Unpin>(
    shared: &Shared,
    mut reader: BufReader<R>,
) -> Result<(), Error> {
    let mut header = [0u8; MAX_REPLY_HEADER_LEN];
    let mut payload = Vec::new();
    loop {
        let magic = header.get_mut(..4).ok_or(Error::Closed)?;
        match reader.read_exact(magic).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                let idle = lock(&shared.table).waiters.is_empty();
                return if shared.closing.load(Ordering::Relaxed) && idle {
                    Ok(())
                } else {
                    Err(Error::UnexpectedEof {
                        while_reading: "reply header",
                    })
                };
            }
            Err(e) => return Err(Error::io("reading a reply")(e)),
        }
        let magic_bytes = [header[0], header[1], header[2], header[3]];
        let len = lock(&shared.table).tracker.header_len(magic_bytes)?;
        let rest = header.get_mut(4..len).ok_or(Error::Closed)?;
        reader
            .read_exact(rest)
            .await
            .map_err(Error::io("reading a reply header"))?;
        let parsed = ReplyHeader::decode(header.get(..len).unwrap_or_default())?;
        let mut action = lock(&shared.table).tracker.on_header(parsed)?;
        loop {
            match action {
                Action::ReadPayload { len } => {
                    payload.resize(len, 0);
                    reader
                        .read_exact(&mut payload)
                        .await
                        .map_err(Error::io("reading a reply payload"))?;
                    action = lock(&shared.table).tracker.on_payload(&payload)?;
                }
                Action::ReadData { cookie, at, len } => {
                    let buffer = lock(&shared.table)
                        .waiters
                        .get_mut(&cookie)
                        .and_then(|w| w.buffer.take());
                    let Some(mut buffer) = buffer else {
                        return Err(Error::UnknownCookie { cookie });
                    };
                    let filled = fill(&mut reader, &mut buffer, at, len).await;
                    if let Some(waiter) = lock(&shared.table).waiters.get_mut(&cookie) {
                        waiter.buffer = Some(buffer);
                    }
                    filled?;
                    action = lock(&shared.table).tracker.on_data()?;
                }
                Action::Continue => break,
                Action::Complete(completion) => {
                    shared.deliver(completion.cookie, completion.result)?;
                    break;
                }
            }
        }
    }
}

/// Reads `len` bytes into `buffer[at..at + len]`, appending into spare capacity where possible
/// (no zeroing, and large reads bypass the socket buffer) and zero-filling any gap before `at`.
async fn fill<R: AsyncRead + Unpin>(
    reader: &mut BufReader<R>,
    buffer: &mut BytesMut,
    at: usize,
    len: usize,
) -> Result<(), Error> {
    let end = at.checked_add(len).ok_or(Error::Malformed {
        what: "read placement",
        reason: "overflow",
    })?;
    if end > buffer.capacity() {
        return Err(Error::Malformed {
            what: "read placement",
            reason: "past the request buffer",
        });
    }
    if at > buffer.len() {
        buffer.resize(at, 0);
    }
    if at < buffer.len() {
        let overlap_end = end.min(buffer.len());
        let slot = buffer.get_mut(at..overlap_end).ok_or(Error::Malformed {
            what: "read placement",
            reason: "bad slice",
        })?;
        reader
            .read_exact(slot)
            .await
            .map_err(Error::io("reading READ data"))?;
    }
    while buffer.len() < end {
        let want = to_u64(end.saturating_sub(buffer.len()));
        let read = (&mut *reader)
            .take(want)
            .read_buf(buffer)
            .await
            .map_err(Error::io("reading READ data"))?;
        if read == 0 {
            return Err(Error::UnexpectedEof {
                while_reading: "READ data",
            });
        }
    }
    Ok(())
}
