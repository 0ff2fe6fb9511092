//! Client configuration and what a connection learns about its export.

use std::time::Duration;

use crate::Error;
use crate::proto::{
    BlockSizeConstraints, ExportName, MetaContextReply, Negotiated, Profile, ReplyMode,
    TransmissionFlags,
};
use crate::tls::TlsOptions;
use crate::transport::Address;
use crate::units::ContextId;

/// Largest request this crate ever sends when the server states no limit (the protocol's
/// interoperable maximum).
pub const DEFAULT_MAX_PAYLOAD: u64 = 32 * 1024 * 1024;

/// Retry policy of a [`crate::Pool`]: bounded attempts with exponential backoff.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts per request, the first included (≥ 1).
    pub max_attempts: u32,
    /// Delay before the second attempt; doubled after each failure.
    pub initial_backoff: Duration,
    /// Upper bound of the delay.
    pub max_backoff: Duration,
}

impl RetryPolicy {
    /// Delay after the first failure: `initial_backoff`, but never above `max_backoff`.
    pub(crate) fn first_backoff(&self) -> Duration {
        self.initial_backoff.min(self.max_backoff)
    }

    /// Delay that follows `delay` after one more failure: doubled, capped at `max_backoff`.
    pub(crate) fn next_backoff(&self, delay: Duration) -> Duration {
        delay.saturating_mul(2).min(self.max_backoff)
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
        }
    }
}

/// Everything needed to open connections to one export.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Server address.
    pub address: Address,
    /// Export name (redacted in `Debug`).
    pub export_name: ExportName,
    /// Negotiation profile.
    pub profile: Profile,
    /// TLS settings; `None` = plaintext.
    pub tls: Option<TlsOptions>,
    /// Ask for structured replies (Auto profile).
    pub structured_replies: bool,
    /// Ask for extended headers (Auto profile).
    pub extended_headers: bool,
    /// Metadata contexts to select (e.g. `base:allocation`, `qemu:dirty-bitmap:bm0`).
    pub meta_contexts: Vec<String>,
    /// Connections a [`crate::Pool`] opens.
    pub connections: usize,
    /// Requests in flight per connection (1 = strictly serial).
    pub in_flight_per_connection: usize,
    /// Largest READ/WRITE sent; longer requests are split (also capped by the server's maximum).
    pub max_request_len: u64,
    /// Time allowed to open the socket.
    pub connect_timeout: Duration,
    /// Time allowed for the whole handshake (xapi plugs a dom0 VBD before answering).
    pub handshake_timeout: Duration,
    /// Time allowed for one request; a stalled connection is closed and its requests retried.
    pub request_timeout: Duration,
    /// Retry policy of the pool.
    pub retry: RetryPolicy,
}

impl ClientConfig {
    /// Auto profile, plaintext, one connection, 16 requests of ≤ 1 MiB in flight.
    ///
    /// 1 MiB × 16 was the fastest shape measured on loopback against both qemu-nbd and nbdkit,
    /// plain and TLS (`benches/nbd-compare.sh`): 512 KiB requests were up to 20% slower with one
    /// connection, and 2 MiB requests slowed qemu-nbd down badly; xapi keeps 2 MiB requests.
    pub fn new(address: Address, export_name: impl Into<String>) -> Self {
        Self {
            address,
            export_name: ExportName::new(export_name),
            profile: Profile::Auto,
            tls: None,
            structured_replies: true,
            extended_headers: true,
            meta_contexts: Vec::new(),
            connections: 1,
            in_flight_per_connection: 16,
            max_request_len: 1024 * 1024,
            connect_timeout: Duration::from_secs(30),
            handshake_timeout: Duration::from_secs(60),
            request_timeout: Duration::from_secs(60),
            retry: RetryPolicy::default(),
        }
    }

    /// xapi-nbd as handed out by `VDI.get_nbd_info`: TLS pinned to `certificate_pem` and
    /// checked against `subject`, EXPORT_NAME only, requests of 2 MiB on 4 connections, 1 s
    /// before reconnecting (the previous dom0 VBD must be torn down).
    ///
    /// xapi-nbd serves each connection strictly in order, one request at a time. Two requests
    /// are kept in flight anyway: the second waits in the socket while the first is served,
    /// which hides the round trip (throughput `S / (t + S/B)` instead of `S / (r + t + S/B)`);
    /// a third buys nothing on a serial server.
    pub fn xapi(
        address: Address,
        export_name: impl Into<String>,
        certificate_pem: impl Into<String>,
        subject: impl Into<String>,
    ) -> Self {
        Self {
            profile: Profile::Xapi,
            tls: Some(TlsOptions::pinned(certificate_pem, subject)),
            structured_replies: false,
            extended_headers: false,
            connections: 4,
            in_flight_per_connection: 2,
            max_request_len: 2 * 1024 * 1024,
            retry: RetryPolicy {
                initial_backoff: Duration::from_secs(1),
                ..RetryPolicy::default()
            },
            ..Self::new(address, export_name)
        }
    }

    pub(crate) fn validate(&self) -> Result<(), Error> {
        let bad = |reason: &str| {
            Err(Error::Config {
                reason: reason.to_owned(),
            })
        };
        if self.connections == 0 {
            return bad("connections must be at least 1");
        }
        if self.in_flight_per_connection == 0 {
            return bad("in_flight_per_connection must be at least 1");
        }
        if self.max_request_len < 512 {
            return bad("max_request_len must be at least 512 bytes");
        }
        if self.retry.max_attempts == 0 {
            return bad("retry.max_attempts must be at least 1");
        }
        Ok(())
    }
}

/// What a connection knows about its export after the handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportInfo {
    /// Export size in bytes.
    pub size: u64,
    /// Transmission flags.
    pub flags: TransmissionFlags,
    /// Block size constraints sent by the server, if any.
    pub server_block_size: Option<BlockSizeConstraints>,
    /// Negotiated reply mode.
    pub mode: ReplyMode,
    /// Selected metadata contexts.
    pub contexts: Vec<MetaContextReply>,
    /// True when the export was opened with EXPORT_NAME.
    pub via_export_name: bool,
    /// True when the session runs inside TLS.
    pub tls: bool,
    alignment: u64,
    max_request_len: u64,
}

impl ExportInfo {
    pub(crate) fn new(negotiated: Negotiated, config: &ClientConfig) -> Self {
        // Without server constraints: xapi-nbd needs 512-byte alignment; others accept bytes.
        let alignment = match (negotiated.block_size, config.profile) {
            (Some(sizes), _) => u64::from(sizes.minimum),
            (None, Profile::Xapi) => 512,
            (None, Profile::Auto) => 1,
        };
        let server_max = match negotiated.block_size {
            Some(sizes) if sizes.maximum_payload != u32::MAX => u64::from(sizes.maximum_payload),
            _ => DEFAULT_MAX_PAYLOAD,
        };
        let max = config.max_request_len.min(server_max);
        let max_request_len = (max / alignment).max(1).saturating_mul(alignment);
        Self {
            size: negotiated.size,
            flags: negotiated.flags,
            server_block_size: negotiated.block_size,
            mode: negotiated.mode,
            contexts: negotiated.contexts,
            via_export_name: negotiated.via_export_name,
            tls: negotiated.tls,
            alignment,
            max_request_len,
        }
    }

    /// Offsets and lengths of requests must be multiples of this.
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Longest READ or WRITE sent in one request; longer ones are split.
    pub fn max_request_len(&self) -> u64 {
        self.max_request_len
    }

    /// Longest effect length (TRIM, WRITE_ZEROES, BLOCK_STATUS) sent in one request.
    pub fn max_effect_len(&self) -> u64 {
        let cap = if self.mode == ReplyMode::Extended {
            1 << 40
        } else {
            u64::from(u32::MAX)
        };
        (cap / self.alignment).saturating_mul(self.alignment)
    }

    /// Id of a selected metadata context.
    pub fn context_id(&self, name: &str) -> Option<ContextId> {
        self.contexts.iter().find(|c| c.name == name).map(|c| c.id)
    }

    /// True when the export refuses writes.
    pub fn is_read_only(&self) -> bool {
        self.flags.contains(TransmissionFlags::READ_ONLY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The delays `with_retry` sleeps between attempts, in order.
    fn schedule(policy: &RetryPolicy, count: usize) -> Vec<Duration> {
        std::iter::successors(Some(policy.first_backoff()), |&delay| {
            Some(policy.next_backoff(delay))
        })
        .take(count)
        .collect()
    }

    #[test]
    fn backoff_doubles_then_stays_at_the_cap() {
        let ms = Duration::from_millis;
        // Default policy: 100 ms doubling up to 10 s (6.4 s × 2 = 12.8 s is cut to 10 s).
        assert_eq!(
            schedule(&RetryPolicy::default(), 10),
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
                ms(10_000),
            ]
        );
    }

    #[test]
    fn xapi_backoff_starts_at_one_second() {
        let config = ClientConfig::xapi(Address::tcp("h", 10809), "e", "pem", "subject");
        let s = Duration::from_secs;
        assert_eq!(
            schedule(&config.retry, 6),
            [s(1), s(2), s(4), s(8), s(10), s(10)]
        );
    }

    #[test]
    fn backoff_never_exceeds_the_cap_nor_overflows() {
        // An initial delay above the cap is cut to the cap.
        let policy = RetryPolicy {
            max_attempts: 3,
            initial_backoff: Duration::from_secs(60),
            max_backoff: Duration::from_secs(5),
        };
        assert_eq!(schedule(&policy, 3), [Duration::from_secs(5); 3]);
        // Doubling saturates instead of panicking.
        let huge = RetryPolicy {
            max_attempts: 3,
            initial_backoff: Duration::MAX / 2 + Duration::from_secs(1),
            max_backoff: Duration::MAX,
        };
        assert_eq!(schedule(&huge, 3)[1..], [Duration::MAX, Duration::MAX]);
        // A zero delay stays zero (retry at once), it does not become the cap.
        let zero = RetryPolicy {
            initial_backoff: Duration::ZERO,
            ..RetryPolicy::default()
        };
        assert_eq!(schedule(&zero, 3), [Duration::ZERO; 3]);
    }
}
