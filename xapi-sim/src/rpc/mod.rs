//! XAPI over XML-RPC and JSON-RPC: xapi's dispatcher (spec §1.4, §1.5, §2).
//!
//! Check order, as in xapi's generated dispatcher: method lookup (`MESSAGE_METHOD_UNKNOWN`),
//! parameter count (`MESSAGE_PARAMETER_COUNT_MISMATCH`, trailing defaults filled), unmarshalling
//! (`INTERNAL_ERROR`), session (`SESSION_INVALID`, then `HOST_IS_SLAVE` on a pool member), the
//! `Async.` capability (`Fault`), then fault injection and execution — synchronously, or in a
//! task whose `result` is an XML-RPC fragment on both transports.
//!
//! [`handle_xmlrpc`] and [`handle_jsonrpc`] are sans-IO: body bytes in, a [`RpcReply`] out; a
//! body that does not decode gives [`BadRequest`], which the HTTP layer answers with xapi's
//! HTTP 500 HTML page.

pub(crate) mod methods;
pub(crate) mod params;
pub(crate) mod sim_methods;

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use xenapi::Value;
use xenapi::codec::{Failure, MethodCall, Response, jsonrpc, xmlrpc};

pub use self::methods::Registry;
use self::methods::{Ctx, Kind, Method};
use crate::db::objects::{self, TaskOutcome};
use crate::db::{ApiResult, ClassId, Subscription, new_ref, vdi, vm};
use crate::faults::CallFaults;
use crate::sim::Sim;

/// A request body that does not decode: xapi answers HTTP 500 with an HTML page.
#[derive(Debug, thiserror::Error)]
#[error("malformed RPC request")]
pub struct BadRequest(#[source] pub xenapi::Error);

/// An encoded RPC response.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RpcReply {
    /// `text/xml` or `application/json`.
    pub content_type: &'static str,
    /// The body.
    pub body: Vec<u8>,
    /// The call failed with `HOST_IS_SLAVE`: xapi then adds the master's certificate
    /// thumbprint to the response when the request asked for it.
    pub host_is_slave: bool,
}

fn is_host_is_slave(answer: &Answer) -> bool {
    matches!(answer, Answer::Response(Response::Failure(failure)) if failure.code == "HOST_IS_SLAVE")
}

enum Answer {
    Response(Response),
    Bare(Value),
}

/// Handles an XML-RPC request body received by `host` (`POST /`, `/RPC2`, any other prefix).
///
/// # Errors
/// [`BadRequest`] when the body is not an XML-RPC call.
pub async fn handle_xmlrpc(
    sim: &Arc<Sim>,
    host: &str,
    body: &[u8],
) -> Result<RpcReply, BadRequest> {
    let call = xmlrpc::decode_call(body).map_err(BadRequest)?;
    let answer = dispatch(sim, host, call).await;
    let host_is_slave = is_host_is_slave(&answer);
    let body = match answer {
        Answer::Response(response) => xmlrpc::encode_response(&response),
        Answer::Bare(value) => xmlrpc::encode_bare_response(&value),
    };
    Ok(RpcReply {
        content_type: "text/xml",
        body,
        host_is_slave,
    })
}

/// Handles a JSON-RPC request body received by `host` (`POST /jsonrpc`).
///
/// # Errors
/// [`BadRequest`] when the body is not a JSON-RPC call (bad JSON, no `id`, bad `jsonrpc`, ...).
pub async fn handle_jsonrpc(
    sim: &Arc<Sim>,
    host: &str,
    body: &[u8],
) -> Result<RpcReply, BadRequest> {
    let jsonrpc::Call { version, id, call } = jsonrpc::decode_call(body).map_err(BadRequest)?;
    let mut host_is_slave = false;
    let body = if let Some(failure) = sim.emergency() {
        jsonrpc::encode_emergency_failure(&failure)
    } else {
        let answer = dispatch(sim, host, call).await;
        host_is_slave = is_host_is_slave(&answer);
        let response = match answer {
            Answer::Response(response) => response,
            Answer::Bare(value) => Response::Success(value),
        };
        jsonrpc::encode_response(version, &id, &response)
    };
    Ok(RpcReply {
        content_type: "application/json",
        body,
        host_is_slave,
    })
}

/// Fuzzing and corpus-replay entry point: `body`, as untrusted bytes, is handled both as an
/// XML-RPC and as a JSON-RPC request received by the master. Returns the two replies (`None`
/// where the body does not decode). Calls may sleep (latency, `event.from`): run it on a
/// runtime with paused time.
pub async fn dispatch_untrusted(
    sim: &Arc<Sim>,
    body: &[u8],
) -> (Option<RpcReply>, Option<RpcReply>) {
    let master = sim.read(crate::db::Db::master);
    let xml = handle_xmlrpc(sim, &master, body).await.ok();
    let json = handle_jsonrpc(sim, &master, body).await.ok();
    (xml, json)
}

async fn dispatch(sim: &Arc<Sim>, host: &str, call: MethodCall) -> Answer {
    let MethodCall { method, params } = call;
    if method == "system.listMethods" {
        return Answer::Bare(Value::Array(
            sim.registry()
                .names()
                .into_iter()
                .map(Value::String)
                .collect(),
        ));
    }
    let response = match dispatch_call(sim, host, &method, params).await {
        Ok(value) => Response::Success(value),
        Err(failure) => Response::Failure(failure),
    };
    Answer::Response(response)
}

/// A checked call ready to run.
struct Prepared {
    name: String,
    session: String,
    args: Vec<Value>,
}

fn prepare(
    sim: &Sim,
    host: &str,
    asynchronous: bool,
    name: &str,
    mut params: Vec<Value>,
) -> ApiResult<Prepared> {
    let method = sim
        .registry()
        .lookup(name, asynchronous)
        .ok_or_else(|| Failure::new("MESSAGE_METHOD_UNKNOWN", [name]))?;
    let session_count = usize::from(method.session);
    let mandatory = method
        .params
        .iter()
        .filter(|param| param.default.is_none())
        .count();
    let total = method.params.len();
    let count_ok = if mandatory < total {
        params.len() >= session_count + mandatory
    } else {
        params.len() == session_count + total
    };
    if !count_ok {
        let received = i64::try_from(params.len()).unwrap_or(i64::MAX) - i64::from(method.session);
        return Err(Failure::new(
            "MESSAGE_PARAMETER_COUNT_MISMATCH",
            [
                method.name.clone(),
                mandatory.to_string(),
                received.to_string(),
            ],
        ));
    }
    params.truncate(session_count + total);
    let mut given = params.into_iter();
    let session = if method.session {
        match given
            .next()
            .map(|value| params::unmarshal(&crate::db::Ty::Ref(ClassId::Session), value))
        {
            Some(Ok(Value::String(session))) => session,
            Some(Err(failure)) => return Err(failure),
            _ => String::new(),
        }
    } else {
        String::new()
    };
    let mut args = Vec::with_capacity(total);
    for param in &method.params {
        let value = match (given.next(), &param.default) {
            (Some(value), _) => match method.kind {
                Kind::Create(class) => {
                    let fields = params::constructor_fields(class, value)?;
                    Value::Struct(
                        fields
                            .into_iter()
                            .map(|(name, value)| (name.to_owned(), value))
                            .collect(),
                    )
                }
                _ => params::unmarshal(&param.ty, value)?,
            },
            (None, Some(default)) => default.clone(),
            (None, None) => return Err(crate::db::internal("missing parameter")),
        };
        args.push(value);
    }
    if method.session {
        sim.read(|db| objects::check_session(db, &session))?;
        if !sim.read(|db| db.master() == host) {
            return Err(Failure::new("HOST_IS_SLAVE", [sim.master_address()]));
        }
    }
    if asynchronous && !method.async_ok {
        return Err(Failure::new(
            "Fault",
            [format!(
                "No async mode for this operation (rpc: {})",
                method.name
            )],
        ));
    }
    Ok(Prepared {
        name: method.name.clone(),
        session,
        args,
    })
}

async fn dispatch_call(
    sim: &Arc<Sim>,
    host: &str,
    wire_name: &str,
    params: Vec<Value>,
) -> ApiResult<Value> {
    sim.write(objects::gc_tasks);
    let (asynchronous, name) = match wire_name.strip_prefix("Async.") {
        Some(name) => (true, name),
        None => (false, wire_name),
    };
    let prepared = prepare(sim, host, asynchronous, name, params)?;
    let faults = if prepared.name.starts_with("sim.") {
        CallFaults::default()
    } else {
        sim.faults().on_call(&prepared.name)
    };
    if asynchronous {
        let label = format!("Async.{}", prepared.name);
        let task = sim.write(|db| objects::create_task(db, &label, "", host, true));
        tokio::spawn(run_async(
            Arc::clone(sim),
            host.to_owned(),
            prepared,
            faults,
            task.clone(),
        ));
        return Ok(Value::String(task));
    }
    if !faults.latency.is_zero() {
        delay_operation(sim, &prepared, faults.latency, None).await?;
    }
    if let Some(failure) = faults.fail {
        return Err(failure);
    }
    execute(sim, host, &prepared).await
}

/// `now + wait`, capped at a day: waits come from scenarios and `sim.*` calls, and an
/// overflowing deadline must not panic.
fn deadline_after(wait: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(wait.min(MAX_EVENT_WAIT)).unwrap_or(now)
}

/// Why a delayed operation did not proceed.
enum Stop {
    Failed(Failure),
    Cancelled,
}

impl From<Failure> for Stop {
    fn from(failure: Failure) -> Stop {
        Stop::Failed(failure)
    }
}

/// Waits out an injected latency, with the operation checked and recorded in the object's
/// `current_operations` meanwhile (so concurrent calls meet `OTHER_OPERATION_IN_PROGRESS`), and
/// with the task cancellable.
async fn delay_operation(
    sim: &Arc<Sim>,
    prepared: &Prepared,
    latency: Duration,
    task: Option<&str>,
) -> Result<(), Failure> {
    match delay_cancellable(sim, prepared, latency, task).await {
        Ok(()) => Ok(()),
        Err(Stop::Failed(failure)) => Err(failure),
        Err(Stop::Cancelled) => Err(Failure::new("TASK_CANCELLED", [task.unwrap_or("")])),
    }
}

async fn delay_cancellable(
    sim: &Arc<Sim>,
    prepared: &Prepared,
    latency: Duration,
    task: Option<&str>,
) -> Result<(), Stop> {
    let method = sim.registry().lookup(&prepared.name, false).cloned();
    let reservation = method.and_then(|method| method.reserve).map(|(class, op)| {
        let object = prepared
            .args
            .first()
            .map_or("", crate::db::as_str)
            .to_owned();
        (class, op, object, task.map_or_else(new_ref, str::to_owned))
    });
    if let Some((class, op, object, key)) = &reservation {
        sim.write(|db| {
            match class {
                ClassId::Vm => vm::check_operation(db, object, op)?,
                ClassId::Vdi => vdi::check_operation(db, object, op)?,
                _ => db.check(*class, object)?,
            }
            db.map_put(*class, object, "current_operations", key, Value::from(*op))
        })?;
    }
    let deadline = deadline_after(latency);
    let mut cancelled = false;
    while Instant::now() < deadline {
        tokio::time::sleep_until(deadline.min(deadline_after(Duration::from_millis(10)))).await;
        if task.is_some_and(|task| sim.read(|db| objects::cancel_requested(db, task))) {
            cancelled = true;
            break;
        }
    }
    if let Some((class, _, object, key)) = &reservation {
        let _ignored = sim.write(|db| db.map_remove(*class, object, "current_operations", key));
    }
    if cancelled {
        Err(Stop::Cancelled)
    } else {
        Ok(())
    }
}

async fn run_async(
    sim: Arc<Sim>,
    host: String,
    prepared: Prepared,
    faults: CallFaults,
    task: String,
) {
    let outcome = async {
        if !faults.latency.is_zero() {
            match delay_cancellable(&sim, &prepared, faults.latency, Some(&task)).await {
                Ok(()) => {}
                Err(Stop::Cancelled) => return TaskOutcome::Cancelled,
                Err(Stop::Failed(failure)) => return TaskOutcome::Failure(failure),
            }
        }
        if sim.read(|db| objects::cancel_requested(db, &task)) {
            return TaskOutcome::Cancelled;
        }
        if let Some(failure) = faults.fail {
            return TaskOutcome::Failure(failure);
        }
        match execute(&sim, &host, &prepared).await {
            Ok(value) => TaskOutcome::Success(xmlrpc::encode_task_result(&value)),
            Err(failure) if failure.code == "TASK_CANCELLED" => TaskOutcome::Cancelled,
            Err(failure) => TaskOutcome::Failure(failure),
        }
    }
    .await;
    if let Err(failure) = sim.write(|db| objects::complete_task(db, &task, outcome)) {
        tracing::debug!(code = %failure.code, "async task vanished before completion");
    }
}

async fn execute(sim: &Arc<Sim>, host: &str, prepared: &Prepared) -> ApiResult<Value> {
    let method: Method = sim
        .registry()
        .lookup(&prepared.name, false)
        .cloned()
        .ok_or_else(|| Failure::new("MESSAGE_METHOD_UNKNOWN", [prepared.name.as_str()]))?;
    let args = &prepared.args;
    match method.kind {
        Kind::Login => login(sim, host, args).await,
        Kind::EventFrom => event_from(sim, &prepared.session, args).await,
        Kind::DataDestroy => data_destroy(sim, args).await,
        Kind::Sim(function) => function(sim, args),
        kind => sim.write(|db| {
            let mut ctx = Ctx {
                db,
                session: &prepared.session,
                host,
            };
            run_sync(&mut ctx, kind, args)
        }),
    }
}

fn arg(args: &[Value], index: usize) -> &str {
    args.get(index).map_or("", crate::db::as_str)
}

fn run_sync(ctx: &mut Ctx<'_>, kind: Kind, args: &[Value]) -> ApiResult<Value> {
    if let Kind::Sync(function) = kind {
        return function(ctx, args);
    }
    let db = &mut *ctx.db;
    let this = arg(args, 0);
    match kind {
        Kind::Get(class, field) => db.get(class, this, field).cloned(),
        Kind::Set(class, field) => {
            db.check(class, this)?;
            db.set(
                class,
                this,
                field,
                args.get(1).cloned().unwrap_or(Value::Nil),
            )?;
            Ok(Value::void())
        }
        Kind::MapAdd(class, field) => {
            db.map_add(
                class,
                this,
                field,
                arg(args, 1),
                args.get(2).cloned().unwrap_or(Value::Nil),
            )?;
            Ok(Value::void())
        }
        Kind::MapRemove(class, field) => db
            .map_remove(class, this, field, arg(args, 1))
            .map(|()| Value::void()),
        Kind::SetAdd(class, field) => db
            .set_add(
                class,
                this,
                field,
                args.get(1).cloned().unwrap_or(Value::Nil),
            )
            .map(|()| Value::void()),
        Kind::SetRemove(class, field) => db
            .set_remove(class, this, field, args.get(1).unwrap_or(&Value::Nil))
            .map(|()| Value::void()),
        Kind::Record(class) => db.record(class, this),
        Kind::ByUuid(class) => db.by_uuid(class, this).map(Value::String),
        Kind::All(class) => Ok(Value::Array(
            db.all(class).into_iter().map(Value::String).collect(),
        )),
        Kind::AllRecords(class) => Ok(db.all_records(class)),
        Kind::ByNameLabel(class) => Ok(Value::Array(
            db.find(class, "name_label", &Value::from(this))
                .into_iter()
                .map(Value::String)
                .collect(),
        )),
        Kind::Create(class) => {
            let fields = crate::db::as_map(args.first().unwrap_or(&Value::Nil))
                .iter()
                .filter_map(|(name, value)| {
                    class.field(name).map(|field| (field.name, value.clone()))
                })
                .collect();
            objects::create(db, class, fields).map(Value::String)
        }
        Kind::Sync(_) | Kind::Sim(_) | Kind::Login | Kind::EventFrom | Kind::DataDestroy => Err(
            crate::db::internal("asynchronous handler run synchronously"),
        ),
    }
}

async fn login(sim: &Arc<Sim>, host: &str, args: &[Value]) -> ApiResult<Value> {
    if !sim.read(|db| db.master() == host) {
        return Err(Failure::new("HOST_IS_SLAVE", [sim.master_address()]));
    }
    let (user, password, originator) = (arg(args, 0), arg(args, 1), arg(args, 3));
    if !sim.credentials_match(user, password) {
        tokio::time::sleep(sim.auth_failure_delay()).await;
        return Err(Failure::new(
            "SESSION_AUTHENTICATION_FAILED",
            [user, "Authentication failure"],
        ));
    }
    Ok(Value::String(
        sim.write(|db| objects::login(db, user, host, originator)),
    ))
}

/// Longest wait accepted by `event.from` (a day; xapi has no cap, this only bounds tasks).
const MAX_EVENT_WAIT: Duration = Duration::from_secs(86_400);

async fn event_from(sim: &Arc<Sim>, session: &str, args: &[Value]) -> ApiResult<Value> {
    let classes: Vec<Subscription> = args
        .first()
        .map(|value| {
            crate::db::as_list(value)
                .iter()
                .map(|item| Subscription::parse(crate::db::as_str(item)))
                .collect()
        })
        .unwrap_or_default();
    let since = objects::parse_token(arg(args, 1))?;
    let timeout = match args.get(2) {
        Some(Value::Double(seconds)) if seconds.is_finite() && *seconds > 0.0 => {
            Duration::try_from_secs_f64(*seconds)
                .unwrap_or(MAX_EVENT_WAIT)
                .min(MAX_EVENT_WAIT)
        }
        _ => Duration::ZERO,
    };
    let deadline = deadline_after(timeout);
    let mut changes = sim.subscribe();
    loop {
        changes.borrow_and_update();
        let (events, generation, counts) = sim.read(|db| {
            let (events, generation) = db.events_since(since, &classes);
            (events, generation, db.valid_ref_counts())
        });
        if !events.is_empty() || Instant::now() >= deadline {
            return Ok(Value::Struct(vec![
                ("events".to_owned(), Value::Array(events)),
                ("valid_ref_counts".to_owned(), counts),
                (
                    "token".to_owned(),
                    Value::String(objects::token(generation)),
                ),
            ]));
        }
        sim.read(|db| objects::check_session(db, session))?;
        let _timed_out = tokio::time::timeout_at(deadline, changes.changed()).await;
    }
}

async fn data_destroy(sim: &Arc<Sim>, args: &[Value]) -> ApiResult<Value> {
    let target = arg(args, 0).to_owned();
    if sim.read(|db| vdi::data_destroy_check(db, &target))? == vdi::DataDestroy::AlreadyDone {
        return Ok(Value::void());
    }
    let deadline = deadline_after(sim.read(|db| db.config().data_destroy_wait));
    loop {
        let ready = Instant::now() >= deadline || !sim.read(|db| vdi::has_vbds(db, &target));
        if ready {
            return sim
                .write(|db| vdi::data_destroy_commit(db, &target))
                .map(|()| Value::void());
        }
        tokio::time::sleep_until(deadline.min(deadline_after(Duration::from_millis(20)))).await;
    }
}
