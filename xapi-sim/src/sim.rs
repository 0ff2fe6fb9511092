//! [`Sim`]: the shared state of one simulated pool, used by every host's server.
//!
//! It owns the [`Db`] behind a mutex (never held across an `.await`), a change notifier for
//! blocking `event.from` calls, the fault rules, the credentials and test switches. The HTTP
//! transfer handlers and the NBD server use the methods of the "seams" section: session and
//! Basic authentication, task creation and completion, VDI lookup by ref or uuid, dom0 VBDs.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::watch;
use xenapi::codec::Failure;
use xenapi::{Host, Ref, Session, Task, Vbd, Vdi};

use crate::db::objects::{self, TaskOutcome};
use crate::db::{ApiResult, ClassId, Db, Scheduled, vm};
use crate::faults::Faults;
use crate::rpc::Registry;
use crate::storage::Storage;

/// The user name and password a pool accepts.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// User name (xapi: `root`).
    pub username: String,
    /// Password (never printed by `Debug`).
    pub password: String,
}

impl Credentials {
    /// These credentials.
    #[must_use]
    pub fn new(username: &str, password: &str) -> Credentials {
        Credentials {
            username: username.to_owned(),
            password: password.to_owned(),
        }
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// A caller authenticated for an HTTP transfer or an NBD export.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Authenticated {
    /// The session.
    pub session: Ref<Session>,
    /// Whether the session was made for this request from Basic credentials (log it out after).
    pub temporary: bool,
}

/// The shared state of one simulated pool.
pub struct Sim {
    db: Mutex<Db>,
    changes: watch::Sender<u64>,
    faults: Faults,
    registry: Registry,
    credentials: Credentials,
    auth_failure_delay: Duration,
    emergency: Mutex<Option<Failure>>,
    storage: Storage,
}

impl fmt::Debug for Sim {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("Sim")
            .field("generation", &self.read(Db::generation))
            .field("credentials", &self.credentials)
            .finish_non_exhaustive()
    }
}

impl Sim {
    pub(crate) fn new(db: Db, credentials: Credentials, auth_failure_delay: Duration) -> Arc<Sim> {
        let storage = db.storage().clone();
        let registry = Registry::new(db.config().xapi_version);
        let (changes, _) = watch::channel(db.generation());
        Arc::new(Sim {
            db: Mutex::new(db),
            changes,
            faults: Faults::new(),
            registry,
            credentials,
            auth_failure_delay,
            emergency: Mutex::new(None),
            storage,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Db> {
        // Every db operation leaves rows consistent before it can fail, so a panic in another
        // thread leaves a usable database behind.
        self.db.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reads the database.
    pub fn read<R>(&self, read: impl FnOnce(&Db) -> R) -> R {
        read(&self.lock())
    }

    /// Changes the database; then wakes blocked `event.from` calls and starts scheduled work.
    pub fn write<R>(self: &Arc<Self>, write: impl FnOnce(&mut Db) -> R) -> R {
        let (result, generation, scheduled) = {
            let mut db = self.lock();
            let result = write(&mut db);
            (result, db.generation(), db.take_scheduled())
        };
        self.changes.send_if_modified(|seen| {
            let changed = *seen != generation;
            *seen = generation;
            changed
        });
        for item in scheduled {
            self.run_later(item);
        }
        result
    }

    fn run_later(self: &Arc<Self>, item: Scheduled) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(?item, "no runtime to run scheduled work");
            return;
        };
        let sim = Arc::downgrade(self);
        runtime.spawn(async move {
            match item {
                Scheduled::GuestMetrics { vm, domid, after } => {
                    tokio::time::sleep(after).await;
                    if let Some(sim) = sim.upgrade() {
                        let reported = sim.write(|db| vm::report_guest_metrics(db, &vm, domid));
                        if let Err(failure) = reported {
                            tracing::warn!(code = %failure.code, "guest metrics report failed");
                        }
                    }
                }
            }
        });
    }

    /// A receiver of the database generation, changed on every write.
    #[must_use]
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// The fault rules.
    #[must_use]
    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    /// The storage behind the VDIs.
    #[must_use]
    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    pub(crate) fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The accepted credentials.
    #[must_use]
    pub fn credentials(&self) -> &Credentials {
        &self.credentials
    }

    /// Whether a user name and password are accepted.
    #[must_use]
    pub fn credentials_match(&self, username: &str, password: &str) -> bool {
        username == self.credentials.username && password == self.credentials.password
    }

    /// The deliberate delay before `SESSION_AUTHENTICATION_FAILED` (xapi: 5 s).
    #[must_use]
    pub fn auth_failure_delay(&self) -> Duration {
        self.auth_failure_delay
    }

    /// Test switch: every JSON-RPC call is answered with xapi's emergency-path shape
    /// (`{"jsonrpc":"2.0","error":[...],"id":0}`) carrying this error; `None` turns it off.
    pub fn set_emergency(&self, failure: Option<Failure>) {
        *self
            .emergency
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = failure;
    }

    /// The emergency error, if the switch is on.
    #[must_use]
    pub fn emergency(&self) -> Option<Failure> {
        self.emergency
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The database as JSON (see [`Db::dump`]).
    #[must_use]
    pub fn dump(&self) -> serde_json::Value {
        self.read(Db::dump)
    }

    // ---- seams for the HTTP transfer handlers and the NBD server ----

    /// Authenticates a transfer as xapi does: a valid `session_id` wins; else Basic credentials
    /// open a temporary session on `host` (log it out with [`Sim::logout`] afterwards).
    ///
    /// # Errors
    /// `SESSION_INVALID [ref]` for an unknown session, `SESSION_AUTHENTICATION_FAILED [user;
    /// message]` for wrong or missing credentials.
    pub fn authenticate(
        self: &Arc<Self>,
        host: &Ref<Host>,
        session_id: Option<&str>,
        basic: Option<(&str, &str)>,
    ) -> ApiResult<Authenticated> {
        if let Some(session) = session_id {
            self.read(|db| objects::check_session(db, session))?;
            return Ok(Authenticated {
                session: Ref::new(session),
                temporary: false,
            });
        }
        match basic {
            Some((user, password)) if self.credentials_match(user, password) => {
                let session =
                    self.write(|db| objects::login(db, user, host.as_str(), "basic-auth"));
                Ok(Authenticated {
                    session: Ref::new(session),
                    temporary: true,
                })
            }
            Some((user, _)) => Err(Failure::new(
                "SESSION_AUTHENTICATION_FAILED",
                [user, "Authentication failure"],
            )),
            None => Err(Failure::new(
                "SESSION_AUTHENTICATION_FAILED",
                ["", "Authentication failure"],
            )),
        }
    }

    /// Ends a session (no-op if it is already gone).
    pub fn logout(self: &Arc<Self>, session: &Ref<Session>) {
        let _ignored = self.write(|db| objects::logout(db, session.as_str()));
    }

    /// Whether a session is valid.
    #[must_use]
    pub fn session_valid(&self, session: &str) -> bool {
        self.read(|db| db.exists(ClassId::Session, session))
    }

    /// Creates a pending task resident on `host` (label e.g. `"Importing raw VDI"`).
    pub fn create_task(self: &Arc<Self>, label: &str, host: &Ref<Host>) -> Ref<Task> {
        Ref::new(self.write(|db| objects::create_task(db, label, "", host.as_str(), true)))
    }

    /// Sets a pending task's progress (0.0–1.0).
    ///
    /// # Errors
    /// `HANDLE_INVALID ["task"; ref]`.
    pub fn set_task_progress(self: &Arc<Self>, task: &Ref<Task>, progress: f64) -> ApiResult<()> {
        self.write(|db| {
            db.set(
                ClassId::Task,
                task.as_str(),
                "progress",
                xenapi::Value::Double(progress.clamp(0.0, 1.0)),
            )
        })
    }

    /// Completes a task (success with an XML-RPC fragment or `""`, failure, or cancelled).
    ///
    /// # Errors
    /// `HANDLE_INVALID ["task"; ref]`.
    pub fn complete_task(
        self: &Arc<Self>,
        task: &Ref<Task>,
        outcome: TaskOutcome,
    ) -> ApiResult<()> {
        self.write(|db| objects::complete_task(db, task.as_str(), outcome))
    }

    /// Whether cancellation of a task was requested.
    #[must_use]
    pub fn task_cancel_requested(&self, task: &Ref<Task>) -> bool {
        self.read(|db| objects::cancel_requested(db, task.as_str()))
    }

    /// A VDI named by ref or by uuid (as `/export_raw_vdi?vdi=` accepts either).
    ///
    /// # Errors
    /// `HANDLE_INVALID ["VDI"; text]` when neither matches.
    pub fn lookup_vdi(&self, ref_or_uuid: &str) -> ApiResult<Ref<Vdi>> {
        self.read(|db| {
            if db.exists(ClassId::Vdi, ref_or_uuid) {
                return Ok(Ref::new(ref_or_uuid));
            }
            db.by_uuid(ClassId::Vdi, ref_or_uuid)
                .map(Ref::new)
                .map_err(|_| crate::db::handle_invalid(ClassId::Vdi, ref_or_uuid))
        })
    }

    /// Attaches a VDI to `host`'s control domain for a transfer or NBD connection.
    ///
    /// # Errors
    /// `HANDLE_INVALID`, `VDI_INCOMPATIBLE_TYPE`.
    pub fn plug_dom0_vbd(
        self: &Arc<Self>,
        host: &Ref<Host>,
        vdi: &Ref<Vdi>,
        read_only: bool,
    ) -> ApiResult<Ref<Vbd>> {
        self.write(|db| objects::plug_dom0_vbd(db, host.as_str(), vdi.as_str(), read_only))
            .map(Ref::new)
    }

    /// Detaches and destroys a dom0 VBD from [`Sim::plug_dom0_vbd`].
    pub fn unplug_dom0_vbd(self: &Arc<Self>, vbd: &Ref<Vbd>) {
        let _ignored = self.write(|db| objects::unplug_dom0_vbd(db, vbd.as_str()));
    }

    /// Whether `host` is the pool master.
    #[must_use]
    pub fn is_master(&self, host: &Ref<Host>) -> bool {
        self.read(|db| db.master() == host.as_str())
    }

    /// The master's `host.address`.
    #[must_use]
    pub fn master_address(&self) -> String {
        self.read(|db| db.str(ClassId::Host, &db.master(), "address"))
    }
}
