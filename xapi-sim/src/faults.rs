//! Fault injection: rules set from the scenario builder, from TOML, or out of process through
//! the `sim.*` XAPI methods, and consulted by the RPC dispatcher, the HTTP transfer handlers and
//! the NBD server.
//!
//! - [`FaultRule::FailCall`]: the `nth` call of a method (counted from when the rule is added,
//!   sync and `Async.` alike) fails with the given error, once. An `Async.` call fails in its task.
//! - [`FaultRule::Latency`]: every matching call waits first. Targets: a method name
//!   (`VM.snapshot`), `*` (every method), `http:<path>` (transfer handlers, per request) or
//!   `nbd` (per NBD request).
//! - [`FaultRule::CutHttp`] / [`FaultRule::CutNbd`]: the `nth` transfer on a path / the `nth` NBD
//!   connection is cut after `after_bytes` bytes of payload, once.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use xenapi::codec::Failure;

/// One fault-injection rule.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum FaultRule {
    /// The `nth` call of `method` (1 = the next) fails with `code` and `params`.
    FailCall {
        /// Wire method name without `Async.` (`VM.snapshot`), or `*`.
        method: String,
        /// Which matching call fails, counting from 1.
        #[serde(default = "one")]
        nth: u64,
        /// Error code (`SR_BACKEND_FAILURE_44`).
        code: String,
        /// Error parameters.
        #[serde(default)]
        params: Vec<String>,
    },
    /// Every matching call or request waits `delay_ms` first.
    Latency {
        /// A method name, `*`, `http:<path>` or `nbd`.
        target: String,
        /// Milliseconds.
        delay_ms: u64,
    },
    /// The `nth` HTTP transfer on `path` is cut after `after_bytes` bytes.
    CutHttp {
        /// Path of the handler (`/export_raw_vdi`).
        path: String,
        /// Payload bytes sent or received before the cut.
        after_bytes: u64,
        /// Which matching transfer is cut, counting from 1.
        #[serde(default = "one")]
        nth: u64,
    },
    /// The `nth` NBD connection is cut after `after_bytes` bytes of read replies.
    CutNbd {
        /// Payload bytes served before the cut.
        after_bytes: u64,
        /// Which connection is cut, counting from 1.
        #[serde(default = "one")]
        nth: u64,
    },
}

const fn one() -> u64 {
    1
}

impl FaultRule {
    /// The `nth` call of `method` fails with `code [params]`.
    #[must_use]
    pub fn fail_call(method: &str, nth: u64, code: &str, params: &[&str]) -> FaultRule {
        FaultRule::FailCall {
            method: method.to_owned(),
            nth,
            code: code.to_owned(),
            params: params.iter().map(|param| (*param).to_owned()).collect(),
        }
    }

    /// Every call or request matching `target` waits `delay`.
    #[must_use]
    pub fn latency(target: &str, delay: Duration) -> FaultRule {
        FaultRule::Latency {
            target: target.to_owned(),
            delay_ms: u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
        }
    }

    /// The `nth` transfer on `path` is cut after `after_bytes`.
    #[must_use]
    pub fn cut_http(path: &str, after_bytes: u64, nth: u64) -> FaultRule {
        FaultRule::CutHttp {
            path: path.to_owned(),
            after_bytes,
            nth,
        }
    }

    /// The `nth` NBD connection is cut after `after_bytes`.
    #[must_use]
    pub fn cut_nbd(after_bytes: u64, nth: u64) -> FaultRule {
        FaultRule::CutNbd { after_bytes, nth }
    }
}

#[derive(Debug)]
struct Armed {
    rule: FaultRule,
    seen: u64,
}

/// What the dispatcher must do to one call.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CallFaults {
    /// Fail the call with this error.
    pub fail: Option<Failure>,
    /// Wait this long first.
    pub latency: Duration,
}

/// The active rules of one pool.
#[derive(Debug, Default)]
pub struct Faults {
    rules: Mutex<Vec<Armed>>,
}

fn method_matches(pattern: &str, method: &str) -> bool {
    pattern == "*" || pattern == method
}

impl Faults {
    /// No rules.
    #[must_use]
    pub fn new() -> Faults {
        Faults::default()
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Armed>> {
        // Rules are plain data; a panic elsewhere cannot leave them half-updated.
        self.rules.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds a rule.
    pub fn add(&self, rule: FaultRule) {
        tracing::debug!(?rule, "fault rule added");
        self.lock().push(Armed { rule, seen: 0 });
    }

    /// Removes every rule.
    pub fn clear(&self) {
        self.lock().clear();
    }

    /// The rules still armed.
    #[must_use]
    pub fn rules(&self) -> Vec<FaultRule> {
        self.lock().iter().map(|armed| armed.rule.clone()).collect()
    }

    /// Counts a call of `method` (without `Async.`) and returns what to inject.
    #[must_use]
    pub fn on_call(&self, method: &str) -> CallFaults {
        let mut rules = self.lock();
        let mut faults = CallFaults::default();
        let mut fired = None;
        for (index, armed) in rules.iter_mut().enumerate() {
            match &armed.rule {
                FaultRule::FailCall {
                    method: pattern,
                    nth,
                    code,
                    params,
                } if method_matches(pattern, method) => {
                    armed.seen = armed.seen.saturating_add(1);
                    if armed.seen == *nth && faults.fail.is_none() {
                        faults.fail = Some(Failure::new(code.clone(), params.clone()));
                        fired = Some(index);
                    }
                }
                FaultRule::Latency { target, delay_ms } if method_matches(target, method) => {
                    faults.latency = faults
                        .latency
                        .saturating_add(Duration::from_millis(*delay_ms));
                }
                _ => {}
            }
        }
        if let Some(index) = fired {
            rules.remove(index);
        }
        faults
    }

    /// Latency for an HTTP request on `path` or (`target` = `"nbd"`) an NBD request.
    #[must_use]
    pub fn latency(&self, target: &str) -> Duration {
        self.lock()
            .iter()
            .filter_map(|armed| match &armed.rule {
                FaultRule::Latency {
                    target: wanted,
                    delay_ms,
                } if wanted == target => Some(Duration::from_millis(*delay_ms)),
                _ => None,
            })
            .fold(Duration::ZERO, Duration::saturating_add)
    }

    /// Counts a transfer on `path`; `Some(bytes)` if it must be cut after that many bytes.
    #[must_use]
    pub fn on_http_transfer(&self, path: &str) -> Option<u64> {
        self.take_cut(|rule| match rule {
            FaultRule::CutHttp {
                path: wanted,
                after_bytes,
                nth,
            } if wanted == path => Some((*after_bytes, *nth)),
            _ => None,
        })
    }

    /// Counts an NBD connection; `Some(bytes)` if it must be cut after that many bytes.
    #[must_use]
    pub fn on_nbd_connection(&self) -> Option<u64> {
        self.take_cut(|rule| match rule {
            FaultRule::CutNbd { after_bytes, nth } => Some((*after_bytes, *nth)),
            _ => None,
        })
    }

    fn take_cut(&self, select: impl Fn(&FaultRule) -> Option<(u64, u64)>) -> Option<u64> {
        let mut rules = self.lock();
        let mut cut = None;
        let mut fired = None;
        for (index, armed) in rules.iter_mut().enumerate() {
            if let Some((after_bytes, nth)) = select(&armed.rule) {
                armed.seen = armed.seen.saturating_add(1);
                if armed.seen == nth && cut.is_none() {
                    cut = Some(after_bytes);
                    fired = Some(index);
                }
            }
        }
        if let Some(index) = fired {
            rules.remove(index);
        }
        cut
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nth_call_fails_once() {
        let faults = Faults::new();
        faults.add(FaultRule::fail_call(
            "VM.snapshot",
            2,
            "SR_FULL",
            &["1", "2"],
        ));
        assert_eq!(faults.on_call("VM.snapshot").fail, None);
        assert_eq!(faults.on_call("VM.clone").fail, None);
        let failure = faults.on_call("VM.snapshot").fail.unwrap();
        assert_eq!(
            (failure.code.as_str(), failure.params.len()),
            ("SR_FULL", 2)
        );
        assert_eq!(faults.on_call("VM.snapshot").fail, None);
        assert!(faults.rules().is_empty());
    }

    #[test]
    fn latency_adds_up_and_cuts_fire_on_their_turn() {
        let faults = Faults::new();
        faults.add(FaultRule::latency("*", Duration::from_millis(5)));
        faults.add(FaultRule::latency("VM.start", Duration::from_millis(7)));
        faults.add(FaultRule::latency("nbd", Duration::from_millis(3)));
        assert_eq!(
            faults.on_call("VM.start").latency,
            Duration::from_millis(12)
        );
        assert_eq!(faults.latency("nbd"), Duration::from_millis(3));
        faults.add(FaultRule::cut_http("/export_raw_vdi", 100, 2));
        assert_eq!(faults.on_http_transfer("/export_raw_vdi"), None);
        assert_eq!(faults.on_http_transfer("/import_raw_vdi"), None);
        assert_eq!(faults.on_http_transfer("/export_raw_vdi"), Some(100));
        faults.add(FaultRule::cut_nbd(4096, 1));
        assert_eq!(faults.on_nbd_connection(), Some(4096));
        assert_eq!(faults.on_nbd_connection(), None);
    }

    #[test]
    fn rules_read_from_toml() {
        #[derive(serde::Deserialize)]
        struct Wrapper {
            fault: Vec<FaultRule>,
        }
        let parsed: Wrapper = toml::from_str(
            "[[fault]]\nkind = \"fail_call\"\nmethod = \"VM.start\"\ncode = \"X\"\n\
             [[fault]]\nkind = \"cut_nbd\"\nafter_bytes = 10\n",
        )
        .unwrap();
        assert_eq!(
            parsed.fault[0],
            FaultRule::fail_call("VM.start", 1, "X", &[])
        );
        assert_eq!(parsed.fault[1], FaultRule::cut_nbd(10, 1));
    }
}
