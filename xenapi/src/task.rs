//! Asynchronous calls and waiting for tasks through `event.from`.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::client::Client;
use crate::codec::xmlrpc;
use crate::error::{Error, ErrorCode};
use crate::records::{EventBatch, EventOperation, TaskRecord, TaskStatus};
use crate::refs::{Class, Ref, Task};
use crate::value::{FromValue, Value};

/// How long one `event.from` call may block on the server.
const EVENT_POLL_SECONDS: f64 = 30.0;

/// How to wait for a task.
#[derive(Clone, Default)]
pub struct WaitOptions {
    /// Give up (and cancel the task) after this long. `None`: wait forever.
    pub timeout: Option<Duration>,
    /// Cancel (the task too) when this token fires.
    pub cancel: Option<CancellationToken>,
    /// Called with the task's `progress` (0.0 to 1.0) whenever it changes.
    pub on_progress: Option<Arc<dyn Fn(f64) + Send + Sync>>,
}

impl fmt::Debug for WaitOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WaitOptions")
            .field("timeout", &self.timeout)
            .field("cancel", &self.cancel.is_some())
            .field("on_progress", &self.on_progress.is_some())
            .finish()
    }
}

impl WaitOptions {
    /// Waits at most `timeout`.
    pub fn with_timeout(timeout: Duration) -> WaitOptions {
        WaitOptions {
            timeout: Some(timeout),
            ..WaitOptions::default()
        }
    }

    /// Adds a cancellation token.
    pub fn cancel_on(mut self, token: CancellationToken) -> WaitOptions {
        self.cancel = Some(token);
        self
    }

    /// Adds a progress callback.
    pub fn progress(mut self, callback: impl Fn(f64) + Send + Sync + 'static) -> WaitOptions {
        self.on_progress = Some(Arc::new(callback));
        self
    }
}

impl Client {
    /// Waits until `task` leaves `pending`, then destroys it.
    ///
    /// Success gives the decoded result (`None` when xapi stored none); failure gives
    /// [`Error::Api`] from `error_info`; a cancelled task gives [`Error::TaskCancelled`]; a
    /// task that vanished gives `HANDLE_INVALID`. On timeout or cancellation the task is
    /// asked to cancel (`task.cancel`) and destroyed, and [`Error::Timeout`] or
    /// [`Error::Cancelled`] is returned.
    pub async fn wait_task(
        &self,
        task: &Ref<Task>,
        options: &WaitOptions,
    ) -> Result<Option<Value>, Error> {
        let span = tracing::debug_span!("xenapi_task", task = %task);
        let record = self.wait_task_record(task, options).instrument(span).await;
        let record = match record {
            Ok(record) => record,
            Err(error @ (Error::Timeout { .. } | Error::Cancelled { .. })) => {
                self.abandon_task(task).await;
                return Err(error);
            }
            Err(error) => return Err(error),
        };
        self.destroy_task_quietly(task).await;
        // A task's error_info can name the session (e.g. SESSION_INVALID): redact as for calls.
        task_outcome(&record).map_err(|error| self.inner.redact_error(error))
    }

    /// `Async.<method>` + [`Client::wait_task`] + conversion of the result.
    ///
    /// A void result (`<value></value>` or none) converts into `()`.
    pub async fn run_async<T: FromValue>(
        &self,
        method: &str,
        params: Vec<Value>,
        options: &WaitOptions,
    ) -> Result<T, Error> {
        let task = self.call_async(method, params).await?;
        let result = self.wait_task(&task, options).await?;
        result.unwrap_or_else(Value::void).decode()
    }

    /// Waits for the task to finish and returns its final record (the task is not destroyed).
    pub async fn wait_task_record(
        &self,
        task: &Ref<Task>,
        options: &WaitOptions,
    ) -> Result<TaskRecord, Error> {
        // A timeout too large to add (`Duration::MAX`) means no deadline, not a panic.
        let deadline = options
            .timeout
            .and_then(|timeout| Instant::now().checked_add(timeout));
        let cancel = options.cancel.clone().unwrap_or_default();
        let subscription = Value::Array(vec![Value::from(format!(
            "{}/{}",
            Task::NAME,
            task.as_str()
        ))]);
        let mut token = String::new();
        let mut last_progress = None;
        loop {
            let poll = match deadline {
                Some(deadline) => {
                    let left = deadline
                        .saturating_duration_since(Instant::now())
                        .as_secs_f64();
                    left.clamp(0.0, EVENT_POLL_SECONDS)
                }
                None => EVENT_POLL_SECONDS,
            };
            let call = self.call::<EventBatch>(
                "event.from",
                vec![
                    subscription.clone(),
                    Value::from(token.as_str()),
                    Value::Double(poll),
                ],
            );
            let sleep_until_deadline = async {
                match deadline {
                    Some(deadline) => tokio::time::sleep_until(deadline).await,
                    None => std::future::pending().await,
                }
            };
            let batch = tokio::select! {
                batch = call => batch?,
                () = cancel.cancelled() => return Err(Error::Cancelled { context: format!("waiting for task {task}") }),
                () = sleep_until_deadline => {
                    return Err(Error::Timeout {
                        context: format!("waiting for task {task}"),
                        seconds: options.timeout.unwrap_or_default().as_secs_f64(),
                    })
                }
            };
            let first = token.is_empty();
            token = batch.token;
            let mut seen = false;
            for event in batch
                .events
                .into_iter()
                .filter(|event| event.reference == task.as_str())
            {
                seen = true;
                if event.operation == EventOperation::Del {
                    return Err(Error::Api {
                        code: ErrorCode::HandleInvalid.as_str().into(),
                        params: vec![Task::NAME.into(), task.to_string()],
                    });
                }
                let Some(snapshot) = event.snapshot else {
                    continue;
                };
                let record: TaskRecord = snapshot.decode()?;
                if last_progress != Some(record.progress) {
                    last_progress = Some(record.progress);
                    if let Some(callback) = &options.on_progress {
                        callback(record.progress);
                    }
                }
                if record.status != TaskStatus::Pending {
                    return Ok(record);
                }
            }
            if first && !seen {
                // A snapshot from "" always includes the task if it exists: check it directly,
                // which also surfaces HANDLE_INVALID for a task already garbage-collected.
                let record: TaskRecord = self
                    .call("task.get_record", vec![Value::from(task)])
                    .await?;
                if record.status != TaskStatus::Pending {
                    return Ok(record);
                }
            }
        }
    }

    /// Best effort: cancel then destroy (used when the caller gives up on a task).
    pub(crate) async fn abandon_task(&self, task: &Ref<Task>) {
        if let Err(error) = self
            .call::<()>("task.cancel", vec![Value::from(task)])
            .await
        {
            tracing::debug!(%error, %task, "task.cancel failed");
        }
        self.destroy_task_quietly(task).await;
    }

    pub(crate) async fn destroy_task_quietly(&self, task: &Ref<Task>) {
        if let Err(error) = self
            .call::<()>("task.destroy", vec![Value::from(task)])
            .await
        {
            tracing::debug!(%error, %task, "task.destroy failed");
        }
    }

    /// `task.create(label, description)`: a client-owned pending task (for HTTP transfers).
    pub async fn task_create(&self, label: &str, description: &str) -> Result<Ref<Task>, Error> {
        self.call(
            "task.create",
            vec![Value::from(label), Value::from(description)],
        )
        .await
    }

    /// `task.cancel`.
    pub async fn task_cancel(&self, task: &Ref<Task>) -> Result<(), Error> {
        self.call("task.cancel", vec![Value::from(task)]).await
    }

    /// `task.destroy`.
    pub async fn task_destroy(&self, task: &Ref<Task>) -> Result<(), Error> {
        self.call("task.destroy", vec![Value::from(task)]).await
    }
}

/// Interprets a finished task record: result, API error or cancellation.
pub fn task_outcome(record: &TaskRecord) -> Result<Option<Value>, Error> {
    match record.status {
        TaskStatus::Success => xmlrpc::decode_task_result(&record.result),
        TaskStatus::Cancelled => Err(Error::TaskCancelled),
        TaskStatus::Failure | TaskStatus::Cancelling | TaskStatus::Unknown(_) => {
            let mut info = record.error_info.iter().cloned();
            let code = info
                .next()
                .unwrap_or_else(|| format!("task ended with status {}", record.status));
            if code == ErrorCode::TaskCancelled.as_str() {
                return Err(Error::TaskCancelled);
            }
            Err(Error::Api {
                code,
                params: info.collect(),
            })
        }
        TaskStatus::Pending => Err(Error::protocol("task is still pending")),
    }
}
