//! The other classes: VBD and VIF constructors with xapi's validations (§3.8, §3.9), network
//! purposes (§3.5), PBD plugging, tasks (§2.3), sessions (§2.1), events (§2.4), and the dom0
//! VBDs transfers and NBD connections hold.

use std::time::{Duration, SystemTime};

use xenapi::Value;
use xenapi::codec::Failure;

use super::{
    ApiResult, ClassId, Db, NULL_REF, api_err, as_bool, as_str, new_ref, now, string_map, vdi, vm,
};

/// Dispatches a constructor to its class: `VM`, `VDI`, `VBD`, `VIF`, `network`, `PBD`.
///
/// # Errors
/// The class's constructor errors; `INTERNAL_ERROR` for a class without constructor.
pub fn create(
    db: &mut Db,
    class: ClassId,
    fields: Vec<(&'static str, Value)>,
) -> ApiResult<String> {
    match class {
        ClassId::Vm => vm::create(db, fields),
        ClassId::Vdi => vdi::create(db, fields),
        ClassId::Vbd => create_vbd(db, fields),
        ClassId::Vif => create_vif(db, fields),
        ClassId::Network => create_network(db, fields),
        ClassId::Pbd => create_pbd(db, fields),
        other => Err(super::internal(format!("{other} has no constructor"))),
    }
}

fn field<'a>(fields: &'a [(&'static str, Value)], name: &str) -> Option<&'a Value> {
    fields
        .iter()
        .find(|(existing, _)| *existing == name)
        .map(|(_, value)| value)
}

fn field_str<'a>(fields: &'a [(&'static str, Value)], name: &str) -> &'a str {
    field(fields, name).map_or("", as_str)
}

fn valid_vbd_device(userdevice: &str) -> bool {
    let is_letters =
        |rest: &str| !rest.is_empty() && rest.bytes().all(|byte| byte.is_ascii_lowercase());
    (!userdevice.is_empty()
        && userdevice.len() <= 3
        && userdevice.bytes().all(|byte| byte.is_ascii_digit()))
        || ["xvd", "hd", "sd"]
            .iter()
            .any(|prefix| userdevice.strip_prefix(prefix).is_some_and(is_letters))
}

fn lowest_free_device(used: &[String]) -> String {
    (0u32..)
        .map(|index| index.to_string())
        .find(|candidate| !used.contains(candidate))
        .unwrap_or_default()
}

/// `VBD.create`, with xapi's checks in order (§3.8).
///
/// # Errors
/// `HANDLE_INVALID`, `VDI_INCOMPATIBLE_TYPE`, `VBD_CDS_MUST_BE_READONLY`,
/// `VBD_NOT_REMOVABLE_MEDIA ["in constructor"]`, `VDI_READONLY`, `INVALID_DEVICE`,
/// `DEVICE_ALREADY_EXISTS`.
pub fn create_vbd(db: &mut Db, mut fields: Vec<(&'static str, Value)>) -> ApiResult<String> {
    let vm = field_str(&fields, "VM").to_owned();
    db.check(ClassId::Vm, &vm)?;
    let vdi = field_str(&fields, "VDI").to_owned();
    let empty = field(&fields, "empty").is_some_and(as_bool);
    let vbd_type = field_str(&fields, "type").to_owned();
    let mode = field_str(&fields, "mode").to_owned();
    if !empty {
        db.check(ClassId::Vdi, &vdi)?;
        let vdi_type = db.str(ClassId::Vdi, &vdi, "type");
        if !vdi::ATTACHABLE_TYPES.contains(&vdi_type.as_str()) {
            return api_err("VDI_INCOMPATIBLE_TYPE", [vdi.as_str(), vdi_type.as_str()]);
        }
    }
    if vbd_type == "CD" && mode == "RW" {
        return api_err("VBD_CDS_MUST_BE_READONLY", Vec::<String>::new());
    }
    if empty && vbd_type != "CD" {
        return api_err("VBD_NOT_REMOVABLE_MEDIA", ["in constructor"]);
    }
    if !empty && mode == "RW" && db.bool(ClassId::Vdi, &vdi, "read_only") {
        return api_err("VDI_READONLY", [vdi.as_str()]);
    }
    let used: Vec<String> = db
        .strings(ClassId::Vm, &vm, "VBDs")
        .iter()
        .map(|vbd| db.str(ClassId::Vbd, vbd, "userdevice"))
        .collect();
    let mut userdevice = field_str(&fields, "userdevice").to_owned();
    if userdevice == "autodetect" {
        userdevice = lowest_free_device(&used);
    } else if !valid_vbd_device(&userdevice) {
        return api_err("INVALID_DEVICE", [userdevice.as_str()]);
    }
    if used.contains(&userdevice) {
        return api_err("DEVICE_ALREADY_EXISTS", [userdevice.as_str()]);
    }
    let suspended = db.str(ClassId::Vm, &vm, "power_state") == "Suspended";
    fields.retain(|(name, _)| {
        *name != "userdevice" && (suspended || !matches!(*name, "device" | "currently_attached"))
    });
    fields.push(("userdevice", Value::String(userdevice)));
    if empty {
        fields.retain(|(name, _)| *name != "VDI");
        fields.push(("VDI", Value::from(NULL_REF)));
    }
    Ok(db.insert(ClassId::Vbd, fields))
}

/// `VBD.destroy`.
///
/// # Errors
/// `OPERATION_NOT_ALLOWED ["VBD '<vbd uuid>' still attached to '<vm uuid>'"]`, `HANDLE_INVALID`.
pub fn destroy_vbd(db: &mut Db, vbd: &str) -> ApiResult<()> {
    db.check(ClassId::Vbd, vbd)?;
    if db.bool(ClassId::Vbd, vbd, "currently_attached") {
        let vm = db.str(ClassId::Vbd, vbd, "VM");
        let message = format!(
            "VBD '{}' still attached to '{}'",
            db.str(ClassId::Vbd, vbd, "uuid"),
            db.str(ClassId::Vm, &vm, "uuid")
        );
        return api_err("OPERATION_NOT_ALLOWED", [message]);
    }
    db.remove(ClassId::Vbd, vbd)
}

/// `VBD.plug` / `VBD.unplug` / `VBD.unplug_force` (hot-plug on a running VM).
///
/// # Errors
/// `VM_BAD_POWER_STATE [vm; "running"; state]`, `DEVICE_ALREADY_ATTACHED`, `DEVICE_ALREADY_DETACHED`.
pub fn plug_vbd(db: &mut Db, vbd: &str, plug: bool) -> ApiResult<()> {
    db.check(ClassId::Vbd, vbd)?;
    let vm = db.str(ClassId::Vbd, vbd, "VM");
    let state = db.str(ClassId::Vm, &vm, "power_state");
    if state != "Running" {
        return api_err(
            "VM_BAD_POWER_STATE",
            [vm, "running".to_owned(), state.to_ascii_lowercase()],
        );
    }
    let attached = db.bool(ClassId::Vbd, vbd, "currently_attached");
    match (plug, attached) {
        (true, true) => api_err("DEVICE_ALREADY_ATTACHED", [vbd]),
        (false, false) => api_err("DEVICE_ALREADY_DETACHED", [vbd]),
        _ => db.set(ClassId::Vbd, vbd, "currently_attached", Value::Bool(plug)),
    }
}

fn valid_mac(mac: &str) -> bool {
    let parts: Vec<&str> = mac.split(':').collect();
    parts.len() == 6
        && parts
            .iter()
            .all(|part| part.len() == 2 && part.bytes().all(|byte| byte.is_ascii_hexdigit()))
}

/// `VIF.create`, with xapi's checks (§3.9); an empty MAC is generated from the VM's `mac_seed`.
///
/// # Errors
/// `HANDLE_INVALID`, `INVALID_DEVICE`, `MAC_INVALID`, `DEVICE_ALREADY_EXISTS`.
pub fn create_vif(db: &mut Db, mut fields: Vec<(&'static str, Value)>) -> ApiResult<String> {
    let vm = field_str(&fields, "VM").to_owned();
    db.check(ClassId::Vm, &vm)?;
    db.check(ClassId::Network, field_str(&fields, "network"))?;
    let device = field_str(&fields, "device").to_owned();
    if device.is_empty() || device.len() > 4 || !device.bytes().all(|byte| byte.is_ascii_digit()) {
        return api_err("INVALID_DEVICE", [device.as_str()]);
    }
    let mac = field_str(&fields, "MAC").to_owned();
    if !mac.is_empty() && !valid_mac(&mac) {
        return api_err("MAC_INVALID", [mac.as_str()]);
    }
    let used = db
        .strings(ClassId::Vm, &vm, "VIFs")
        .iter()
        .any(|vif| db.str(ClassId::Vif, vif, "device") == device);
    if used {
        return api_err("DEVICE_ALREADY_EXISTS", [device.as_str()]);
    }
    fields.retain(|(name, _)| !matches!(*name, "MAC" | "currently_attached"));
    if mac.is_empty() {
        let config = db.get(ClassId::Vm, &vm, "other_config")?;
        let seed = super::map_get(config, "mac_seed").unwrap_or("").to_owned();
        fields.push(("MAC", Value::String(vm::mac_from_seed(&seed, &device))));
        fields.push(("MAC_autogenerated", Value::Bool(true)));
    } else {
        fields.push(("MAC", Value::String(mac.to_ascii_lowercase())));
    }
    Ok(db.insert(ClassId::Vif, fields))
}

fn create_network(db: &mut Db, mut fields: Vec<(&'static str, Value)>) -> ApiResult<String> {
    if field_str(&fields, "bridge").is_empty() {
        let bridge = format!("xapi{}", db.count(ClassId::Network));
        fields.retain(|(name, _)| *name != "bridge");
        fields.push(("bridge", Value::String(bridge)));
    }
    Ok(db.insert(ClassId::Network, fields))
}

fn create_pbd(db: &mut Db, fields: Vec<(&'static str, Value)>) -> ApiResult<String> {
    db.check(ClassId::Host, field_str(&fields, "host"))?;
    db.check(ClassId::Sr, field_str(&fields, "SR"))?;
    Ok(db.insert(ClassId::Pbd, fields))
}

/// `network.add_purpose`: no-op if present; `nbd` and `insecure_nbd` exclude each other pool-wide.
///
/// # Errors
/// `HANDLE_INVALID`, `NETWORK_UNMANAGED`, `NETWORK_INCOMPATIBLE_PURPOSES [new; conflicting]`.
pub fn add_purpose(db: &mut Db, network: &str, purpose: &str) -> ApiResult<()> {
    db.check(ClassId::Network, network)?;
    if !db.bool(ClassId::Network, network, "managed") {
        return api_err("NETWORK_UNMANAGED", [network]);
    }
    let conflicting = match purpose {
        "nbd" => Some("insecure_nbd"),
        "insecure_nbd" => Some("nbd"),
        _ => None,
    };
    if let Some(conflicting) = conflicting {
        let clash = db.all(ClassId::Network).iter().any(|other| {
            db.strings(ClassId::Network, other, "purpose")
                .iter()
                .any(|existing| existing == conflicting)
        });
        if clash {
            return api_err("NETWORK_INCOMPATIBLE_PURPOSES", [purpose, conflicting]);
        }
    }
    db.set_add(ClassId::Network, network, "purpose", Value::from(purpose))
}

/// `network.remove_purpose`.
///
/// # Errors
/// `HANDLE_INVALID`.
pub fn remove_purpose(db: &mut Db, network: &str, purpose: &str) -> ApiResult<()> {
    db.set_remove(ClassId::Network, network, "purpose", &Value::from(purpose))
}

/// `network.destroy`.
///
/// # Errors
/// `HANDLE_INVALID`, `NETWORK_CONTAINS_PIF`, `NETWORK_CONTAINS_VIF`.
pub fn destroy_network(db: &mut Db, network: &str) -> ApiResult<()> {
    db.check(ClassId::Network, network)?;
    let pifs = db.strings(ClassId::Network, network, "PIFs");
    if !pifs.is_empty() {
        return api_err("NETWORK_CONTAINS_PIF", pifs);
    }
    let vifs = db.strings(ClassId::Network, network, "VIFs");
    if !vifs.is_empty() {
        return api_err("NETWORK_CONTAINS_VIF", vifs);
    }
    db.remove(ClassId::Network, network)
}

/// A dom0 VBD as xapi creates for an NBD connection or an HTTP transfer: on the host's control
/// domain, attached, visible in `VDI.VBDs` and events. Remove it with [`unplug_dom0_vbd`].
///
/// # Errors
/// `HANDLE_INVALID`, `VDI_INCOMPATIBLE_TYPE` for a VDI that cannot be attached.
pub fn plug_dom0_vbd(db: &mut Db, host: &str, vdi: &str, read_only: bool) -> ApiResult<String> {
    db.check(ClassId::Host, host)?;
    db.check(ClassId::Vdi, vdi)?;
    let vdi_type = db.str(ClassId::Vdi, vdi, "type");
    if !vdi::ATTACHABLE_TYPES.contains(&vdi_type.as_str()) {
        return api_err("VDI_INCOMPATIBLE_TYPE", [vdi, vdi_type.as_str()]);
    }
    let dom0 = db.str(ClassId::Host, host, "control_domain");
    db.check(ClassId::Vm, &dom0)?;
    let used: Vec<String> = db
        .strings(ClassId::Vm, &dom0, "VBDs")
        .iter()
        .map(|vbd| db.str(ClassId::Vbd, vbd, "userdevice"))
        .collect();
    let userdevice = lowest_free_device(&used);
    Ok(db.insert(
        ClassId::Vbd,
        vec![
            ("VM", Value::String(dom0)),
            ("VDI", Value::from(vdi)),
            ("device", Value::String(format!("xvd{userdevice}"))),
            ("userdevice", Value::String(userdevice)),
            ("mode", Value::from(if read_only { "RO" } else { "RW" })),
            ("type", Value::from("Disk")),
            ("currently_attached", Value::Bool(true)),
        ],
    ))
}

/// Detaches and destroys a dom0 VBD made by [`plug_dom0_vbd`] (no-op if already gone).
///
/// # Errors
/// None in practice.
pub fn unplug_dom0_vbd(db: &mut Db, vbd: &str) -> ApiResult<()> {
    if db.exists(ClassId::Vbd, vbd) {
        db.remove(ClassId::Vbd, vbd)?;
    }
    Ok(())
}

/// Creates a pending task (`task.create`, an `Async.*` call, an HTTP transfer).
pub fn create_task(
    db: &mut Db,
    label: &str,
    description: &str,
    host: &str,
    cancellable: bool,
) -> String {
    let allowed = if cancellable {
        vec!["cancel"]
    } else {
        Vec::new()
    };
    db.insert(
        ClassId::Task,
        vec![
            ("name_label", Value::from(label)),
            ("name_description", Value::from(description)),
            ("allowed_operations", super::string_set(allowed)),
            ("created", Value::DateTime(now())),
            ("status", Value::from("pending")),
            ("resident_on", Value::from(host)),
            ("progress", Value::Double(0.0)),
        ],
    )
}

/// How a task ended.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum TaskOutcome {
    /// `success` with this `result` (an XML-RPC fragment, or `""`).
    Success(String),
    /// `failure` with this error.
    Failure(Failure),
    /// `cancelled` (`error_info = ["TASK_CANCELLED"; task]`).
    Cancelled,
}

/// Completes a pending task (a second completion is ignored, as in xapi). A task whose
/// destruction was requested while pending is deleted.
///
/// # Errors
/// `HANDLE_INVALID` if the task vanished.
pub fn complete_task(db: &mut Db, task: &str, outcome: TaskOutcome) -> ApiResult<()> {
    db.check(ClassId::Task, task)?;
    if db.str(ClassId::Task, task, "status") != "pending" {
        return Ok(());
    }
    let (status, result, error_info) = match outcome {
        TaskOutcome::Success(result) => ("success", result, Vec::new()),
        TaskOutcome::Failure(failure) => {
            let info = std::iter::once(failure.code)
                .chain(failure.params)
                .collect();
            ("failure", String::new(), info)
        }
        TaskOutcome::Cancelled => (
            "cancelled",
            String::new(),
            vec!["TASK_CANCELLED".to_owned(), task.to_owned()],
        ),
    };
    db.set(
        ClassId::Task,
        task,
        "allowed_operations",
        Value::Array(Vec::new()),
    )?;
    db.set(ClassId::Task, task, "finished", Value::DateTime(now()))?;
    db.set(ClassId::Task, task, "progress", Value::Double(1.0))?;
    db.set(ClassId::Task, task, "result", Value::String(result))?;
    db.set(
        ClassId::Task,
        task,
        "error_info",
        super::string_set(error_info),
    )?;
    db.set(ClassId::Task, task, "status", Value::from(status))?;
    db.task_finish.insert(task.to_owned(), SystemTime::now());
    let destroy_requested = db
        .map(ClassId::Task, task, "current_operations")
        .iter()
        .any(|(_, op)| op == "destroy");
    if destroy_requested {
        db.remove(ClassId::Task, task)?;
    }
    Ok(())
}

/// `task.cancel`: records the request; the running operation ends `cancelled` at its next
/// cancellation point (cooperative). Finished tasks are left alone.
///
/// # Errors
/// `HANDLE_INVALID`.
pub fn cancel_task(db: &mut Db, task: &str) -> ApiResult<()> {
    db.check(ClassId::Task, task)?;
    if db.str(ClassId::Task, task, "status") == "pending" {
        db.map_put(
            ClassId::Task,
            task,
            "current_operations",
            &new_ref(),
            Value::from("cancel"),
        )?;
        db.cancel_requests.insert(task.to_owned(), true);
    }
    Ok(())
}

/// Whether cancellation of a task was requested (for operations and transfer handlers).
#[must_use]
pub fn cancel_requested(db: &Db, task: &str) -> bool {
    db.cancel_requests.get(task).copied().unwrap_or(false)
}

/// `task.destroy`: a finished task goes now; a pending one is marked and goes when it completes.
///
/// # Errors
/// `HANDLE_INVALID`.
pub fn destroy_task(db: &mut Db, task: &str) -> ApiResult<()> {
    db.check(ClassId::Task, task)?;
    if db.str(ClassId::Task, task, "status") == "pending" {
        db.map_put(
            ClassId::Task,
            task,
            "current_operations",
            &new_ref(),
            Value::from("destroy"),
        )
    } else {
        db.remove(ClassId::Task, task)
    }
}

/// Deletes finished tasks older than the GC delay, and the oldest beyond the maximum count.
pub fn gc_tasks(db: &mut Db) {
    let now = SystemTime::now();
    let delay = db.config.task_gc_delay;
    let mut finished: Vec<(SystemTime, String)> = db
        .task_finish
        .iter()
        .map(|(task, at)| (*at, task.clone()))
        .collect();
    finished.sort();
    let excess = finished.len().saturating_sub(db.config.max_completed_tasks);
    for (index, (at, task)) in finished.into_iter().enumerate() {
        let expired = now.duration_since(at).unwrap_or(Duration::ZERO) >= delay;
        if expired || index < excess {
            db.task_finish.remove(&task);
            if db.exists(ClassId::Task, &task) {
                let _ignored = db.remove(ClassId::Task, &task);
            }
        }
    }
}

/// Opens a session for a user on a host (`session.login_with_password` after the checks).
pub fn login(db: &mut Db, user: &str, host: &str, originator: &str) -> String {
    let now = Value::DateTime(now());
    db.insert(
        ClassId::Session,
        vec![
            ("this_host", Value::from(host)),
            ("last_active", now.clone()),
            ("is_local_superuser", Value::Bool(true)),
            ("validation_time", now),
            ("auth_user_name", Value::from(user)),
            ("originator", Value::from(originator)),
            ("other_config", string_map(Vec::<(String, String)>::new())),
        ],
    )
}

/// `SESSION_INVALID [ref]` unless the session exists.
///
/// # Errors
/// `SESSION_INVALID`.
pub fn check_session(db: &Db, session: &str) -> ApiResult<()> {
    if db.exists(ClassId::Session, session) {
        Ok(())
    } else {
        api_err("SESSION_INVALID", [session])
    }
}

/// `session.logout`.
///
/// # Errors
/// `SESSION_INVALID`.
pub fn logout(db: &mut Db, session: &str) -> ApiResult<()> {
    check_session(db, session)?;
    db.remove(ClassId::Session, session)
}

/// An `event.from` token: `%020d,%020d` (generation, message generation).
#[must_use]
pub fn token(generation: u64) -> String {
    format!("{generation:020},{:020}", 0)
}

/// Parses an `event.from` token as xapi does: `""` is the beginning, else two decimal ints.
///
/// # Errors
/// `EVENT_FROM_TOKEN_PARSE_FAILURE [token]`.
pub fn parse_token(text: &str) -> ApiResult<u64> {
    if text.is_empty() {
        return Ok(0);
    }
    let parsed = text.split_once(',').and_then(|(generation, messages)| {
        let generation = generation.trim().parse::<i64>().ok()?;
        messages.trim().parse::<i64>().ok()?;
        Some(u64::try_from(generation).unwrap_or(0))
    });
    parsed.ok_or_else(|| Failure::new("EVENT_FROM_TOKEN_PARSE_FAILURE", [text]))
}

/// `event.inject(class, ref)`: touches the object and returns the token just before the touch.
///
/// # Errors
/// `HANDLE_INVALID [class; ref]` for an unknown class name (exact spelling) or object.
pub fn inject(db: &mut Db, class: &str, reference: &str) -> ApiResult<String> {
    let invalid = || Failure::new("HANDLE_INVALID", [class, reference]);
    let class_id = ClassId::from_name(class)
        .filter(|class| class.has_events())
        .ok_or_else(invalid)?;
    if !db.exists(class_id, reference) {
        return Err(invalid());
    }
    let generation = db.touch(class_id, reference)?;
    Ok(token(generation.saturating_sub(1)))
}

/// `PBD.plug` / `PBD.unplug`.
///
/// # Errors
/// `HANDLE_INVALID`.
pub fn plug_pbd(db: &mut Db, pbd: &str, plug: bool) -> ApiResult<()> {
    db.check(ClassId::Pbd, pbd)?;
    db.set(ClassId::Pbd, pbd, "currently_attached", Value::Bool(plug))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_reject_garbage() {
        assert_eq!(token(42), "00000000000000000042,00000000000000000000");
        assert_eq!(parse_token(&token(42)), Ok(42));
        assert_eq!(parse_token(""), Ok(0));
        assert_eq!(
            parse_token("12").unwrap_err().code,
            "EVENT_FROM_TOKEN_PARSE_FAILURE"
        );
        assert_eq!(
            parse_token("a,b").unwrap_err().params,
            vec!["a,b".to_owned()]
        );
    }

    #[test]
    fn completed_tasks_beyond_the_maximum_are_collected_oldest_first() {
        let config = crate::db::DbConfig {
            max_completed_tasks: 2,
            ..crate::db::DbConfig::default()
        };
        let mut db = Db::new(crate::storage::Storage::new(), config);
        let mut finished = Vec::new();
        for index in 0..4 {
            let task = create_task(&mut db, &format!("t{index}"), "", NULL_REF, false);
            complete_task(&mut db, &task, TaskOutcome::Success(String::new())).unwrap();
            finished.push(task);
            // Distinct finish times: the oldest go first.
            std::thread::sleep(Duration::from_millis(2));
        }
        let pending = create_task(&mut db, "running", "", NULL_REF, true);
        gc_tasks(&mut db);
        let alive: Vec<bool> = finished
            .iter()
            .map(|task| db.exists(ClassId::Task, task))
            .collect();
        assert_eq!(alive, [false, false, true, true]);
        assert!(db.exists(ClassId::Task, &pending), "pending tasks stay");
    }

    #[test]
    fn device_names_and_macs_validate_like_xapi() {
        assert!(valid_vbd_device("0") && valid_vbd_device("15") && valid_vbd_device("xvdb"));
        assert!(!valid_vbd_device("") && !valid_vbd_device("-1") && !valid_vbd_device("disk"));
        assert!(valid_mac("aa:bb:cc:00:11:22"));
        assert!(!valid_mac("aa:bb:cc:00:11") && !valid_mac("zz:bb:cc:00:11:22"));
        assert_eq!(lowest_free_device(&["0".to_owned(), "2".to_owned()]), "1");
    }
}
