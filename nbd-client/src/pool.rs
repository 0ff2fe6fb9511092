//! A pool of connections to one export: spreads requests, reconnects dropped connections and
//! retries failed requests with bounded exponential backoff. Also the streaming read API.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use futures::stream::{self, BoxStream, Stream, StreamExt};
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::Error;
use crate::config::{ClientConfig, ExportInfo, RetryPolicy};
use crate::connection::{Connection, MappedExtent};
use crate::proto::BlockStatusChunk;
use crate::units::ByteRange;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

struct Slot {
    current: Mutex<Option<Arc<Connection>>>,
    reconnect: tokio::sync::Mutex<()>,
    backoff: Mutex<ReconnectBackoff>,
}

/// When a slot may next try a background reconnect, and how long it waits after its next
/// failure: the delay doubles with each failed reconnect, up to `max_backoff`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ReconnectBackoff {
    not_before: Instant,
    next_delay: Duration,
}

impl ReconnectBackoff {
    /// A fresh slot (or one that just reconnected): may reconnect at once.
    fn new(now: Instant, policy: &RetryPolicy) -> Self {
        Self {
            not_before: now,
            next_delay: policy.first_backoff(),
        }
    }

    /// After a failed reconnect at `now`: wait the current delay, and double it for next time.
    fn after_failure(self, now: Instant, policy: &RetryPolicy) -> Self {
        // A delay too long to represent means "not in this process's lifetime".
        const FAR_FUTURE: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
        let not_before = now
            .checked_add(self.next_delay)
            .or_else(|| now.checked_add(FAR_FUTURE))
            .unwrap_or(now);
        Self {
            not_before,
            next_delay: policy.next_backoff(self.next_delay),
        }
    }

    /// True when a background reconnect may be tried at `now`.
    fn allows(&self, now: Instant) -> bool {
        now >= self.not_before
    }
}

struct PoolInner {
    config: ClientConfig,
    info: ExportInfo,
    slots: Vec<Slot>,
    rotation: AtomicUsize,
}

/// Options of [`Pool::read_stream`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamOptions {
    /// Yield results in input order (`true`) or as they complete (`false`).
    pub ordered: bool,
    /// Reads in flight across the pool; `None` = connections × in-flight per connection.
    pub max_in_flight: Option<usize>,
    /// Longest piece read at once; longer input ranges are yielded in pieces. `None` = the
    /// export's maximum request length. Memory stays below `max_in_flight × max_piece_len`.
    pub max_piece_len: Option<u64>,
}

impl Default for StreamOptions {
    fn default() -> Self {
        Self {
            ordered: true,
            max_in_flight: None,
            max_piece_len: None,
        }
    }
}

/// A pool of connections to one export (cheap to clone).
///
/// Connections are opened one after the other (xapi-nbd dislikes parallel opens). Each request
/// goes to the live connection with the fewest requests in flight. A connection that fails
/// (EOF, I/O error, timeout, protocol violation) is replaced; the requests it carried are
/// retried on the others with exponential backoff, up to `config.retry.max_attempts`, after
/// which [`Error::RetriesExhausted`] carries the last failure.
#[derive(Clone)]
pub struct Pool {
    inner: Arc<PoolInner>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("address", &self.inner.config.address)
            .field("connections", &self.inner.slots.len())
            .field("alive", &self.alive_connections())
            .finish_non_exhaustive()
    }
}

impl Pool {
    /// Opens `config.connections` connections, sequentially. The first must succeed; later
    /// failures leave the slot empty, to be filled by a background reconnect.
    pub async fn connect(config: ClientConfig) -> Result<Self, Error> {
        config.validate()?;
        let first = Connection::connect(&config).await?;
        let info = first.info().clone();
        let mut slots = Vec::with_capacity(config.connections);
        slots.push(Slot::new(Some(Arc::new(first)), &config.retry));
        for index in 1..config.connections {
            let connection = match Connection::connect(&config).await {
                Ok(connection) => Some(Arc::new(connection)),
                Err(error) => {
                    warn!(index, %error, "could not open an extra connection");
                    None
                }
            };
            slots.push(Slot::new(connection, &config.retry));
        }
        Ok(Self {
            inner: Arc::new(PoolInner {
                config,
                info,
                slots,
                rotation: AtomicUsize::new(0),
            }),
        })
    }

    /// What the first connection learnt about the export.
    pub fn info(&self) -> &ExportInfo {
        &self.inner.info
    }

    /// Connections currently usable.
    pub fn alive_connections(&self) -> usize {
        self.inner
            .slots
            .iter()
            .filter(|slot| lock(&slot.current).as_ref().is_some_and(|c| c.is_alive()))
            .count()
    }

    /// Reads `range` (retried on failure).
    pub async fn read(&self, range: ByteRange) -> Result<Bytes, Error> {
        self.inner
            .with_retry(range, move |connection| async move {
                connection.read(range).await
            })
            .await
    }

    /// Writes `data` at `offset` (retried on failure: writes of the same bytes are idempotent).
    pub async fn write(&self, offset: u64, data: Bytes) -> Result<(), Error> {
        let range = ByteRange::new(offset, crate::units::to_u64(data.len()))?;
        self.inner
            .with_retry(range, move |connection| {
                let data = data.clone();
                async move { connection.write(offset, data).await }
            })
            .await
    }

    /// Flushes every live connection (a flush covers only writes its own connection completed).
    pub async fn flush(&self) -> Result<(), Error> {
        for slot in &self.inner.slots {
            let connection = lock(&slot.current).clone();
            if let Some(connection) = connection.filter(|c| c.is_alive()) {
                connection.flush().await?;
            }
        }
        Ok(())
    }

    /// Discards `range`.
    pub async fn trim(&self, range: ByteRange) -> Result<(), Error> {
        self.inner
            .with_retry(range, move |connection| async move {
                connection.trim(range).await
            })
            .await
    }

    /// Writes zeros over `range`.
    pub async fn write_zeroes(&self, range: ByteRange, no_hole: bool) -> Result<(), Error> {
        self.inner
            .with_retry(range, move |connection| async move {
                connection.write_zeroes(range, no_hole).await
            })
            .await
    }

    /// One BLOCK_STATUS request (see [`Connection::block_status`]).
    pub async fn block_status(&self, range: ByteRange) -> Result<Vec<BlockStatusChunk>, Error> {
        self.inner
            .with_retry(range, move |connection| async move {
                connection.block_status(range).await
            })
            .await
    }

    /// Extents of `context` over `range` (see [`Connection::extents`]).
    pub async fn extents(
        &self,
        context: &str,
        range: ByteRange,
    ) -> Result<Vec<MappedExtent>, Error> {
        let context = context.to_owned();
        self.inner
            .with_retry(range, move |connection| {
                let context = context.clone();
                async move { connection.extents(&context, range).await }
            })
            .await
    }

    /// Reads a stream of ranges and yields `(range, data)` in input order or as completed,
    /// with at most `max_in_flight` reads outstanding (bounded memory; back-pressure comes
    /// from the consumer). Ranges longer than the piece length are yielded in pieces.
    pub fn read_stream<S>(
        &self,
        ranges: S,
        options: StreamOptions,
    ) -> BoxStream<'static, Result<(ByteRange, Bytes), Error>>
    where
        S: Stream<Item = ByteRange> + Send + 'static,
    {
        let config = &self.inner.config;
        let in_flight = options
            .max_in_flight
            .unwrap_or_else(|| {
                config
                    .connections
                    .saturating_mul(config.in_flight_per_connection)
            })
            .max(1);
        let piece_len = options
            .max_piece_len
            .unwrap_or_else(|| self.inner.info.max_request_len())
            .max(1);
        let pool = self.clone();
        let reads = ranges
            .flat_map(move |range| stream::iter(range.pieces(piece_len)))
            .map(move |piece| {
                let pool = pool.clone();
                async move { pool.read(piece).await.map(|data| (piece, data)) }
            });
        if options.ordered {
            reads.buffered(in_flight).boxed()
        } else {
            reads.buffer_unordered(in_flight).boxed()
        }
    }

    /// Soft-disconnects every connection (DISC, TLS close_notify).
    pub async fn close(&self) -> Result<(), Error> {
        let mut first_error = None;
        for slot in &self.inner.slots {
            let connection = lock(&slot.current).take();
            if let Some(connection) = connection
                && let Err(error) = connection.close().await
            {
                first_error.get_or_insert(error);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

impl Slot {
    fn new(connection: Option<Arc<Connection>>, policy: &RetryPolicy) -> Self {
        Self {
            current: Mutex::new(connection),
            reconnect: tokio::sync::Mutex::new(()),
            backoff: Mutex::new(ReconnectBackoff::new(Instant::now(), policy)),
        }
    }
}

impl PoolInner {
    /// The live connection with the fewest requests in flight; dead slots are reconnected in
    /// the background, or in the foreground when no connection is left.
    async fn acquire(self: &Arc<Self>) -> Result<Arc<Connection>, Error> {
        let count = self.slots.len();
        let start = self.rotation.fetch_add(1, Ordering::Relaxed);
        let mut best: Option<Arc<Connection>> = None;
        let mut dead = None;
        for step in 0..count {
            let index = start.wrapping_add(step) % count;
            let Some(slot) = self.slots.get(index) else {
                continue;
            };
            let connection = lock(&slot.current).clone();
            match connection {
                Some(c) if c.is_alive() => {
                    if best.as_ref().is_none_or(|b| c.in_flight() < b.in_flight()) {
                        best = Some(c);
                    }
                }
                _ => {
                    dead.get_or_insert(index);
                }
            }
        }
        match (best, dead) {
            (Some(connection), Some(index)) => {
                self.reconnect_in_background(index);
                Ok(connection)
            }
            (Some(connection), None) => Ok(connection),
            (None, Some(index)) => self.reconnect(index).await,
            (None, None) => Err(Error::Closed),
        }
    }

    fn reconnect_in_background(self: &Arc<Self>, index: usize) {
        let Some(slot) = self.slots.get(index) else {
            return;
        };
        if !lock(&slot.backoff).allows(Instant::now()) {
            return;
        }
        let inner = self.clone();
        tokio::spawn(async move {
            if let Err(error) = inner.reconnect(index).await {
                debug!(index, %error, "background reconnect failed");
            }
        });
    }

    async fn reconnect(&self, index: usize) -> Result<Arc<Connection>, Error> {
        let slot = self.slots.get(index).ok_or(Error::Closed)?;
        let Ok(_guard) = slot.reconnect.try_lock() else {
            // Someone else is reconnecting this slot: wait for them, then use what they got.
            let _guard = slot.reconnect.lock().await;
            let current = lock(&slot.current).clone();
            return current
                .filter(|c| c.is_alive())
                .ok_or_else(|| Error::ConnectionLost {
                    cause: Arc::new(Error::Closed),
                });
        };
        if let Some(current) = lock(&slot.current).clone().filter(|c| c.is_alive()) {
            return Ok(current);
        }
        debug!(index, "reconnecting");
        match Connection::connect(&self.config).await {
            Ok(connection) => {
                if connection.info().size != self.info.size {
                    return Err(Error::Malformed {
                        what: "reconnected export",
                        reason: "export size changed",
                    });
                }
                let connection = Arc::new(connection);
                *lock(&slot.current) = Some(connection.clone());
                *lock(&slot.backoff) = ReconnectBackoff::new(Instant::now(), &self.config.retry);
                Ok(connection)
            }
            Err(error) => {
                let mut backoff = lock(&slot.backoff);
                *backoff = backoff.after_failure(Instant::now(), &self.config.retry);
                Err(error)
            }
        }
    }

    async fn with_retry<T, F, Fut>(self: &Arc<Self>, range: ByteRange, op: F) -> Result<T, Error>
    where
        F: Fn(Arc<Connection>) -> Fut,
        Fut: Future<Output = Result<T, Error>>,
    {
        let policy = self.config.retry;
        let mut delay = policy.first_backoff();
        let mut last = None;
        for attempt in 1..=policy.max_attempts {
            let outcome = match self.acquire().await {
                Ok(connection) => op(connection).await,
                Err(error) => Err(error),
            };
            match outcome {
                Ok(value) => return Ok(value),
                Err(error) if error.is_retryable() => {
                    warn!(%range, attempt, %error, "request failed; retrying");
                    last = Some(error);
                }
                Err(error) => return Err(error),
            }
            if attempt < policy.max_attempts {
                tokio::time::sleep(delay).await;
                delay = policy.next_backoff(delay);
            }
        }
        Err(Error::RetriesExhausted {
            range,
            attempts: policy.max_attempts,
            last: Box::new(last.unwrap_or(Error::Closed)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnect_backoff_doubles_and_is_capped() {
        let policy = RetryPolicy::default();
        let now = Instant::now();
        let mut backoff = ReconnectBackoff::new(now, &policy);
        assert!(backoff.allows(now), "a fresh slot reconnects at once");
        let mut waits = Vec::new();
        for _ in 0..9 {
            backoff = backoff.after_failure(now, &policy);
            waits.push(backoff.not_before.duration_since(now));
            assert!(!backoff.allows(now));
            assert!(backoff.allows(backoff.not_before));
        }
        let ms = Duration::from_millis;
        assert_eq!(
            waits,
            [
                ms(100),
                ms(200),
                ms(400),
                ms(800),
                ms(1600),
                ms(3200),
                ms(6400),
                ms(10_000),
                ms(10_000),
            ]
        );
        // A successful reconnect starts over from the initial delay.
        let reset = ReconnectBackoff::new(now, &policy);
        assert_eq!(
            reset
                .after_failure(now, &policy)
                .not_before
                .duration_since(now),
            ms(100)
        );
    }

    #[test]
    fn reconnect_backoff_survives_an_unrepresentable_delay() {
        let policy = RetryPolicy {
            max_attempts: 1,
            initial_backoff: Duration::MAX,
            max_backoff: Duration::MAX,
        };
        let now = Instant::now();
        let backoff = ReconnectBackoff::new(now, &policy).after_failure(now, &policy);
        assert!(!backoff.allows(now));
        assert_eq!(backoff.next_delay, Duration::MAX);
    }
}
