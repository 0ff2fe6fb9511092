//! VM semantics: lifecycle checks in xapi's order, power-state transitions, guest metrics, and
//! the snapshot / clone / copy record copies of spec §3.12.

use std::time::Duration;

use sha2::{Digest as _, Sha256};
use xenapi::Value;

use super::{
    ApiResult, ClassId, Db, NULL_REF, Scheduled, api_err, as_map, as_str, new_uuid, now,
    string_map, vdi,
};

const VM: ClassId = ClassId::Vm;

/// Guest-agent behaviour of one VM (simulator-only).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct GuestAgent {
    /// Whether the guest has PV drivers (reports guest metrics at all).
    pub pv_drivers: bool,
    /// Delay after start before the metrics appear (`None`: the pool's default).
    pub delay: Option<Duration>,
    /// IPv4 address reported for VIF 0.
    pub ip: String,
}

impl Default for GuestAgent {
    fn default() -> Self {
        GuestAgent {
            pv_drivers: true,
            delay: None,
            ip: "192.0.2.10".to_owned(),
        }
    }
}

/// Power states from which `op` may run, in xapi's order (`allowed_power_states`).
fn allowed_power_states(
    op: &str,
    is_snapshot: bool,
    is_control_domain: bool,
) -> &'static [&'static str] {
    const ALL: &[&str] = &["Halted", "Paused", "Suspended", "Running"];
    match op {
        "import" => &[],
        "changing_VCPUs" | "changing_static_range" | "changing_memory_limits"
            if is_control_domain =>
        {
            &["Halted", "Running"]
        }
        "changing_VCPUs"
        | "changing_static_range"
        | "changing_memory_limits"
        | "changing_shadow_memory"
        | "make_into_template"
        | "provision"
        | "start"
        | "start_on" => &["Halted"],
        "unpause" => &["Paused"],
        "csvm" | "resume" | "resume_on" => &["Suspended"],
        "awaiting_memory_live"
        | "call_plugin"
        | "clean_reboot"
        | "clean_shutdown"
        | "changing_memory_live"
        | "changing_shadow_memory_live"
        | "changing_VCPUs_live"
        | "data_source_op"
        | "pause"
        | "pool_migrate"
        | "send_sysrq"
        | "send_trigger"
        | "snapshot_with_quiesce"
        | "suspend" => &["Running"],
        "changing_dynamic_range" => &["Halted", "Running"],
        "clone" | "copy" if is_snapshot => &["Halted", "Suspended"],
        "clone" | "copy" => &["Halted"],
        "create_template" | "destroy" | "export" => &["Halted", "Suspended"],
        "hard_reboot" => &["Paused", "Running"],
        "checkpoint" | "get_boot_record" | "shutdown" | "hard_shutdown" => {
            &["Paused", "Suspended", "Running"]
        }
        "migrate_send" => &["Halted", "Suspended", "Running"],
        _ => ALL,
    }
}

/// Whether `op` may run while `current` operations are in progress (`is_allowed_concurrently`).
fn allowed_concurrently(op: &str, current: &[String]) -> bool {
    let group = |ops: &[&str]| {
        ops.contains(&op)
            && current
                .iter()
                .all(|running| ops.contains(&running.as_str()))
    };
    let state_machine = match op {
        "hard_shutdown" => !current.iter().any(|running| running == "hard_shutdown"),
        "hard_reboot" => !current
            .iter()
            .any(|running| running == "hard_shutdown" || running == "hard_reboot"),
        _ => false,
    };
    group(&["clone", "copy", "export"])
        || group(&["snapshot", "checkpoint"])
        || group(&["get_boot_record"])
        || state_machine
}

/// xapi's `check_operation_error` for VMs, stopping at the first error: blocked operations,
/// power state, concurrent operations, template rules, snapshot rules, control-domain rules.
///
/// # Errors
/// `OPERATION_BLOCKED`, `VM_BAD_POWER_STATE`, `OTHER_OPERATION_IN_PROGRESS`, `VM_IS_TEMPLATE`,
/// `VM_IS_SNAPSHOT`, `OPERATION_NOT_ALLOWED`, `HANDLE_INVALID`.
pub fn check_operation(db: &Db, vm: &str, op: &str) -> ApiResult<()> {
    db.check(VM, vm)?;
    if let Some(reason) = super::map_get(db.get(VM, vm, "blocked_operations")?, op) {
        return api_err("OPERATION_BLOCKED", [vm, reason]);
    }
    let power = db.str(VM, vm, "power_state");
    let is_snapshot = db.bool(VM, vm, "is_a_snapshot");
    let is_template = db.bool(VM, vm, "is_a_template");
    let is_control_domain = db.bool(VM, vm, "is_control_domain");
    let allowed = allowed_power_states(op, is_snapshot, is_control_domain);
    if !allowed.contains(&power.as_str()) {
        let expected: Vec<String> = allowed
            .iter()
            .map(|state| state.to_ascii_lowercase())
            .collect();
        return api_err(
            "VM_BAD_POWER_STATE",
            [
                vm.to_owned(),
                expected.join(", "),
                power.to_ascii_lowercase(),
            ],
        );
    }
    let current = db.map(VM, vm, "current_operations");
    let running: Vec<String> = current.iter().map(|(_, running)| running.clone()).collect();
    if !current.is_empty() && !allowed_concurrently(op, &running) {
        let (ops, tasks) = match current.as_slice() {
            [(task, running)] => (running.clone(), task.clone()),
            _ => (
                format!("{{{}}}", running.join(",")),
                format!(
                    "{{{}}}",
                    current
                        .iter()
                        .map(|(task, _)| task.as_str())
                        .collect::<Vec<_>>()
                        .join(",")
                ),
            ),
        };
        return api_err(
            "OTHER_OPERATION_IN_PROGRESS",
            ["VM".to_owned(), vm.to_owned(), ops, tasks],
        );
    }
    if is_template && !is_snapshot {
        let default_template = db.bool(VM, vm, "is_default_template")
            || super::map_get(db.get(VM, vm, "other_config")?, "default_template")
                .is_some_and(|flag| flag == "true" || flag == "1");
        let allowed = [
            "changing_dynamic_range",
            "changing_static_range",
            "changing_memory_limits",
            "changing_shadow_memory",
            "changing_VCPUs",
            "clone",
            "copy",
            "export",
            "metadata_export",
            "provision",
        ];
        if !(allowed.contains(&op)
            || ((op == "destroy" || op == "migrate_send") && !default_template))
        {
            return api_err("VM_IS_TEMPLATE", [vm, op]);
        }
    }
    if is_snapshot
        && ![
            "revert",
            "clone",
            "copy",
            "export",
            "destroy",
            "hard_shutdown",
            "metadata_export",
        ]
        .contains(&op)
    {
        return api_err("VM_IS_SNAPSHOT", [vm, op]);
    }
    if is_control_domain {
        if op == "changing_VCPUs" || op == "destroy" {
            return api_err(
                "OPERATION_NOT_ALLOWED",
                ["This operation is not allowed on dom0"],
            );
        }
        let allowed = [
            "data_source_op",
            "changing_memory_live",
            "awaiting_memory_live",
            "metadata_export",
            "changing_dynamic_range",
            "changing_memory_limits",
            "changing_static_range",
            "start",
            "start_on",
        ];
        if !allowed.contains(&op) {
            return api_err(
                "OPERATION_NOT_ALLOWED",
                ["This operation is not allowed on a control domain"],
            );
        }
    }
    Ok(())
}

/// The operations `check_operation` currently allows, among those clients look at.
pub(crate) fn allowed_operations(db: &Db, vm: &str) -> Vec<&'static str> {
    const LISTED: &[&str] = &[
        "snapshot",
        "clone",
        "copy",
        "start",
        "start_on",
        "pause",
        "unpause",
        "clean_shutdown",
        "clean_reboot",
        "hard_shutdown",
        "hard_reboot",
        "shutdown",
        "export",
        "metadata_export",
        "destroy",
        "make_into_template",
        "changing_memory_limits",
        "changing_VCPUs",
    ];
    LISTED
        .iter()
        .copied()
        .filter(|op| check_operation(db, vm, op).is_ok())
        .collect()
}

/// A MAC derived from a VM's `mac_seed` and a VIF device, locally administered and unicast.
#[must_use]
pub fn mac_from_seed(seed: &str, device: &str) -> String {
    let digest = Sha256::digest(format!("{seed}/{device}").as_bytes());
    let mut bytes = [0u8; 6];
    for (slot, byte) in bytes.iter_mut().zip(digest.iter()) {
        *slot = *byte;
    }
    bytes[0] = (bytes[0] & 0xfe) | 0x02;
    bytes
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Creates a VM_metrics object for a VM being created.
pub(crate) fn new_metrics(db: &mut Db, vcpus: i64, memory: i64) -> String {
    db.insert(
        ClassId::VmMetrics,
        vec![
            ("VCPUs_number", Value::Int(vcpus)),
            ("memory_actual", Value::Int(memory)),
            ("install_time", Value::DateTime(now())),
            ("last_updated", Value::DateTime(now())),
            ("state", Value::Array(Vec::new())),
        ],
    )
}

/// `VM.create`: the constructor fields (already typed), `blocked_operations` ignored, a
/// `mac_seed` added, a metrics object created. Only `Halted` may be asked for.
///
/// # Errors
/// `VM_BAD_POWER_STATE`.
pub fn create(db: &mut Db, mut fields: Vec<(&'static str, Value)>) -> ApiResult<String> {
    fields.retain(|(name, _)| *name != "blocked_operations");
    if let Some((_, state)) = fields.iter().find(|(name, _)| *name == "power_state")
        && as_str(state) != "Halted"
    {
        return api_err(
            "VM_BAD_POWER_STATE",
            [
                NULL_REF.to_owned(),
                "halted".to_owned(),
                as_str(state).to_ascii_lowercase(),
            ],
        );
    }
    fields.retain(|(name, _)| *name != "power_state");
    let mut other_config = fields
        .iter()
        .find(|(name, _)| *name == "other_config")
        .map(|(_, value)| as_map(value).to_vec())
        .unwrap_or_default();
    if !other_config.iter().any(|(key, _)| key == "mac_seed") {
        other_config.push(("mac_seed".to_owned(), Value::String(new_uuid())));
    }
    fields.retain(|(name, _)| *name != "other_config");
    fields.push(("other_config", Value::Struct(other_config)));
    let vcpus = fields
        .iter()
        .find(|(name, _)| *name == "VCPUs_at_startup")
        .map_or(1, |(_, value)| super::as_int(value));
    let memory = fields
        .iter()
        .find(|(name, _)| *name == "memory_static_max")
        .map_or(0, |(_, value)| super::as_int(value));
    let metrics = new_metrics(db, vcpus, memory);
    fields.push(("metrics", Value::from(metrics.as_str())));
    fields.push(("power_state", Value::from("Halted")));
    Ok(db.insert(VM, fields))
}

/// The kind of copy made by [`copy_vm`].
#[derive(Clone, Debug, PartialEq, Eq)]
enum CopyKind {
    Snapshot { ignore_vdis: Vec<String> },
    Clone,
    Copy { sr: String },
}

/// `VM.snapshot(vm, new_name, ignore_vdis)`.
///
/// # Errors
/// Lifecycle errors for `snapshot`, and any `VDI.snapshot` error of a disk (the partial
/// snapshot is undone).
pub fn snapshot(
    db: &mut Db,
    vm: &str,
    new_name: &str,
    ignore_vdis: &[String],
) -> ApiResult<String> {
    check_operation(db, vm, "snapshot")?;
    copy_vm(
        db,
        vm,
        new_name,
        &CopyKind::Snapshot {
            ignore_vdis: ignore_vdis.to_vec(),
        },
    )
}

/// `VM.clone(vm, new_name)`.
///
/// # Errors
/// Lifecycle errors for `clone`, and any `VDI.clone` error.
pub fn clone(db: &mut Db, vm: &str, new_name: &str) -> ApiResult<String> {
    check_operation(db, vm, "clone")?;
    copy_vm(db, vm, new_name, &CopyKind::Clone)
}

/// `VM.copy(vm, new_name, sr)`; `sr` NULL keeps each disk's SR.
///
/// # Errors
/// Lifecycle errors for `copy`, `HANDLE_INVALID ["SR"; sr]`, and any `VDI.copy` error.
pub fn copy(db: &mut Db, vm: &str, new_name: &str, sr: &str) -> ApiResult<String> {
    check_operation(db, vm, "copy")?;
    if sr != NULL_REF {
        db.check(ClassId::Sr, sr)?;
    }
    copy_vm(db, vm, new_name, &CopyKind::Copy { sr: sr.to_owned() })
}

fn copy_vm(db: &mut Db, source: &str, new_name: &str, kind: &CopyKind) -> ApiResult<String> {
    let record = db.record(VM, source)?;
    let get = |name: &str| record.get(name).cloned().unwrap_or(Value::Nil);
    let source_power = as_str(&get("power_state")).to_owned();
    let source_is_template = super::as_bool(&get("is_a_template"));
    let is_snapshot = matches!(kind, CopyKind::Snapshot { .. });
    let null = || Value::from(NULL_REF);

    let mut other_config: Vec<(String, Value)> = as_map(&get("other_config"))
        .iter()
        .filter(|(key, _)| key != "default_template" && key != "xensource_internal")
        .cloned()
        .collect();
    if is_snapshot {
        if source_is_template {
            other_config.retain(|(key, _)| key != "base_template_name");
            other_config.push(("base_template_name".to_owned(), get("name_label")));
        }
    } else {
        other_config.retain(|(key, _)| key != "mac_seed");
        other_config.push(("mac_seed".to_owned(), Value::String(new_uuid())));
    }
    let mac_seed = other_config
        .iter()
        .find(|(key, _)| key == "mac_seed")
        .map(|(_, value)| as_str(value).to_owned())
        .unwrap_or_default();

    let power_state = if !is_snapshot && source_power == "Suspended" {
        "Suspended"
    } else {
        "Halted"
    };
    let generation_id = if as_str(&get("generation_id")).is_empty() {
        String::new()
    } else {
        new_uuid()
    };
    let mut overrides: Vec<(&'static str, Value)> = vec![
        ("allowed_operations", Value::Array(Vec::new())),
        ("current_operations", Value::Struct(Vec::new())),
        ("name_label", Value::from(new_name)),
        ("power_state", Value::from(power_state)),
        (
            "is_a_template",
            Value::Bool(is_snapshot || source_is_template),
        ),
        ("is_default_template", Value::Bool(false)),
        ("suspend_VDI", null()),
        ("resident_on", null()),
        ("scheduled_to_be_resident_on", null()),
        ("consoles", Value::Array(Vec::new())),
        ("VIFs", Value::Array(Vec::new())),
        ("VBDs", Value::Array(Vec::new())),
        ("VUSBs", Value::Array(Vec::new())),
        ("crash_dumps", Value::Array(Vec::new())),
        ("VTPMs", Value::Array(Vec::new())),
        ("domid", Value::Int(-1)),
        ("domarch", Value::void()),
        ("other_config", Value::Struct(other_config)),
        ("ha_always_run", Value::Bool(false)),
        ("is_a_snapshot", Value::Bool(is_snapshot)),
        (
            "snapshot_of",
            if is_snapshot {
                Value::from(source)
            } else {
                null()
            },
        ),
        ("snapshots", Value::Array(Vec::new())),
        (
            "snapshot_time",
            Value::DateTime(if is_snapshot {
                now()
            } else {
                xenapi::DateTime::EPOCH
            }),
        ),
        ("transportable_snapshot_id", Value::void()),
        ("blobs", Value::Struct(Vec::new())),
        ("blocked_operations", Value::Struct(Vec::new())),
        (
            "snapshot_info",
            if is_snapshot {
                string_map([
                    ("disk-snapshot-type", "crash_consistent"),
                    ("power-state-at-snapshot", source_power.as_str()),
                ])
            } else {
                Value::Struct(Vec::new())
            },
        ),
        ("snapshot_metadata", Value::void()),
        ("parent", if is_snapshot { get("parent") } else { null() }),
        ("children", Value::Array(Vec::new())),
        ("protection_policy", null()),
        ("is_snapshot_from_vmpp", Value::Bool(false)),
        ("snapshot_schedule", null()),
        ("is_vmss_snapshot", Value::Bool(false)),
        ("appliance", null()),
        ("start_delay", Value::Int(0)),
        ("shutdown_delay", Value::Int(0)),
        ("order", Value::Int(0)),
        ("VGPUs", Value::Array(Vec::new())),
        ("attached_PCIs", Value::Array(Vec::new())),
        ("suspend_SR", null()),
        ("version", Value::Int(0)),
        ("generation_id", Value::String(generation_id)),
        ("requires_reboot", Value::Bool(false)),
        ("pending_guidances", Value::Array(Vec::new())),
        ("last_boot_CPU_flags", get("last_boot_CPU_flags")),
    ];
    let metrics = new_metrics(
        db,
        super::as_int(&get("VCPUs_at_startup")),
        super::as_int(&get("memory_static_max")),
    );
    overrides.push(("metrics", Value::from(metrics.as_str())));
    let guest_metrics = as_str(&get("guest_metrics")).to_owned();
    let guest_copy = if db.exists(ClassId::VmGuestMetrics, &guest_metrics) {
        let copy = db.record(ClassId::VmGuestMetrics, &guest_metrics)?;
        let fields = as_map(&copy)
            .iter()
            .filter(|(name, _)| name != "uuid")
            .filter_map(|(name, value)| {
                ClassId::VmGuestMetrics
                    .field(name)
                    .map(|field| (field.name, value.clone()))
            })
            .collect();
        Value::from(db.insert(ClassId::VmGuestMetrics, fields).as_str())
    } else {
        null()
    };
    overrides.push(("guest_metrics", guest_copy));

    let mut fields: Vec<(&'static str, Value)> = VM
        .fields()
        .iter()
        .filter(|field| field.name != "uuid")
        .map(|field| (field.name, get(field.name)))
        .collect();
    for (name, value) in overrides {
        if let Some(slot) = fields.iter_mut().find(|(existing, _)| *existing == name) {
            slot.1 = value;
        }
    }
    let new_vm = db.insert(VM, fields);
    if is_snapshot {
        db.set(VM, source, "parent", Value::from(new_vm.as_str()))?;
    }

    let mut created_vdis = Vec::new();
    match copy_devices(db, source, &new_vm, kind, &mac_seed, &mut created_vdis) {
        Ok(()) => Ok(new_vm),
        Err(failure) => {
            for vdi in created_vdis {
                let _ignored = vdi::destroy_unchecked(db, &vdi);
            }
            let _ignored = remove_vm_and_devices(db, &new_vm);
            if is_snapshot {
                let parent = as_str(&get("parent")).to_owned();
                db.set(VM, source, "parent", Value::from(parent.as_str()))?;
            }
            Err(failure)
        }
    }
}

fn copy_devices(
    db: &mut Db,
    source: &str,
    new_vm: &str,
    kind: &CopyKind,
    mac_seed: &str,
    created_vdis: &mut Vec<String>,
) -> ApiResult<()> {
    let mut vbds = db.strings(VM, source, "VBDs");
    vbds.sort_by_key(|vbd| db.str(ClassId::Vbd, vbd, "userdevice"));
    for vbd in vbds {
        let record = db.record(ClassId::Vbd, &vbd)?;
        let get = |name: &str| record.get(name).cloned().unwrap_or(Value::Nil);
        let source_vdi = as_str(&get("VDI")).to_owned();
        let is_disk = as_str(&get("type")) == "Disk";
        let empty = super::as_bool(&get("empty"));
        let new_vdi = if !is_disk || empty || !db.exists(ClassId::Vdi, &source_vdi) {
            source_vdi
        } else {
            let made = match kind {
                CopyKind::Snapshot { ignore_vdis } if ignore_vdis.contains(&source_vdi) => continue,
                CopyKind::Snapshot { .. } => vdi::snapshot(db, &source_vdi)?,
                CopyKind::Clone => vdi::clone(db, &source_vdi)?,
                CopyKind::Copy { sr } => vdi::copy(db, &source_vdi, sr, NULL_REF, NULL_REF)?,
            };
            created_vdis.push(made.clone());
            made
        };
        let mut other_config = as_map(&get("other_config")).to_vec();
        if is_disk && !other_config.iter().any(|(key, _)| key == "owner") {
            other_config.push(("owner".to_owned(), Value::void()));
        }
        db.insert(
            ClassId::Vbd,
            vec![
                ("VM", Value::from(new_vm)),
                ("VDI", Value::from(new_vdi.as_str())),
                ("device", get("device")),
                ("userdevice", get("userdevice")),
                ("bootable", get("bootable")),
                ("mode", get("mode")),
                ("type", get("type")),
                ("unpluggable", get("unpluggable")),
                ("empty", get("empty")),
                ("other_config", Value::Struct(other_config)),
                ("qos_algorithm_type", get("qos_algorithm_type")),
                ("qos_algorithm_params", get("qos_algorithm_params")),
                ("qos_supported_algorithms", get("qos_supported_algorithms")),
            ],
        );
    }
    let mut vifs = db.strings(VM, source, "VIFs");
    vifs.sort_by_key(|vif| db.str(ClassId::Vif, vif, "device"));
    for vif in vifs {
        let record = db.record(ClassId::Vif, &vif)?;
        let get = |name: &str| record.get(name).cloned().unwrap_or(Value::Nil);
        let device = as_str(&get("device")).to_owned();
        let (mac, autogenerated) = match kind {
            CopyKind::Snapshot { .. } => (get("MAC"), get("MAC_autogenerated")),
            _ => (
                Value::String(mac_from_seed(mac_seed, &device)),
                Value::Bool(true),
            ),
        };
        db.insert(
            ClassId::Vif,
            vec![
                ("device", Value::String(device)),
                ("network", get("network")),
                ("VM", Value::from(new_vm)),
                ("MAC", mac),
                ("MTU", get("MTU")),
                ("other_config", get("other_config")),
                ("qos_algorithm_type", get("qos_algorithm_type")),
                ("qos_algorithm_params", get("qos_algorithm_params")),
                ("MAC_autogenerated", autogenerated),
                ("locking_mode", get("locking_mode")),
                ("ipv4_allowed", get("ipv4_allowed")),
                ("ipv6_allowed", get("ipv6_allowed")),
            ],
        );
    }
    Ok(())
}

fn remove_vm_and_devices(db: &mut Db, vm: &str) -> ApiResult<()> {
    for vbd in db.strings(VM, vm, "VBDs") {
        db.remove(ClassId::Vbd, &vbd)?;
    }
    for vif in db.strings(VM, vm, "VIFs") {
        db.remove(ClassId::Vif, &vif)?;
    }
    for field in ["metrics", "guest_metrics"] {
        let object = db.str(VM, vm, field);
        let class = if field == "metrics" {
            ClassId::VmMetrics
        } else {
            ClassId::VmGuestMetrics
        };
        if db.exists(class, &object) {
            db.remove(class, &object)?;
        }
    }
    db.remove(VM, vm)
}

/// `VM.destroy`: removes the VM, its VBDs, VIFs and metrics; **never its VDIs**. Children are
/// re-parented to the VM's parent.
///
/// # Errors
/// Lifecycle errors for `destroy`.
pub fn destroy(db: &mut Db, vm: &str) -> ApiResult<()> {
    check_operation(db, vm, "destroy")?;
    let parent = db.str(VM, vm, "parent");
    for child in db.strings(VM, vm, "children") {
        db.set(VM, &child, "parent", Value::from(parent.as_str()))?;
    }
    remove_vm_and_devices(db, vm)
}

/// `VM.start` / `VM.start_on`: the VM runs on `host` (its affinity, else the master, when
/// `None`), disks and VIFs attach, and guest metrics are scheduled.
///
/// # Errors
/// Lifecycle errors for `start` / `start_on`, `HANDLE_INVALID ["host"; ref]`.
pub fn start(db: &mut Db, vm: &str, host: Option<&str>, paused: bool) -> ApiResult<()> {
    check_operation(db, vm, if host.is_some() { "start_on" } else { "start" })?;
    let host = match host {
        Some(host) => {
            db.check(ClassId::Host, host)?;
            host.to_owned()
        }
        None => {
            let affinity = db.str(VM, vm, "affinity");
            if db.exists(ClassId::Host, &affinity) {
                affinity
            } else {
                db.master()
            }
        }
    };
    boot(db, vm, &host, if paused { "Paused" } else { "Running" })
}

fn boot(db: &mut Db, vm: &str, host: &str, state: &str) -> ApiResult<()> {
    let domid = db.next_domid();
    db.set(VM, vm, "power_state", Value::from(state))?;
    db.set(VM, vm, "resident_on", Value::from(host))?;
    db.set(VM, vm, "domid", Value::Int(domid))?;
    for vbd in db.strings(VM, vm, "VBDs") {
        if !db.bool(ClassId::Vbd, &vbd, "empty") {
            let device = device_name(&db.str(ClassId::Vbd, &vbd, "userdevice"));
            db.set(ClassId::Vbd, &vbd, "device", Value::String(device))?;
        }
        db.set(ClassId::Vbd, &vbd, "currently_attached", Value::Bool(true))?;
    }
    for vif in db.strings(VM, vm, "VIFs") {
        db.set(ClassId::Vif, &vif, "currently_attached", Value::Bool(true))?;
    }
    let metrics = db.str(VM, vm, "metrics");
    if db.exists(ClassId::VmMetrics, &metrics) {
        db.set(
            ClassId::VmMetrics,
            &metrics,
            "start_time",
            Value::DateTime(now()),
        )?;
        db.set(
            ClassId::VmMetrics,
            &metrics,
            "state",
            super::string_set([state.to_ascii_lowercase()]),
        )?;
    }
    clear_guest_metrics(db, vm)?;
    let agent = db.guest_agents.get(vm).cloned().unwrap_or_default();
    if agent.pv_drivers && state == "Running" {
        let after = agent.delay.unwrap_or(db.config.guest_metrics_delay);
        if after.is_zero() {
            report_guest_metrics(db, vm, domid)?;
        } else {
            db.schedule(Scheduled::GuestMetrics {
                vm: vm.to_owned(),
                domid,
                after,
            });
        }
    }
    Ok(())
}

fn device_name(userdevice: &str) -> String {
    match userdevice.parse::<u8>() {
        Ok(index) if index < 26 => format!("xvd{}", char::from(b'a'.saturating_add(index))),
        _ => userdevice.to_owned(),
    }
}

fn clear_guest_metrics(db: &mut Db, vm: &str) -> ApiResult<()> {
    let guest_metrics = db.str(VM, vm, "guest_metrics");
    if db.exists(ClassId::VmGuestMetrics, &guest_metrics) {
        db.remove(ClassId::VmGuestMetrics, &guest_metrics)?;
    }
    db.set(VM, vm, "guest_metrics", Value::from(NULL_REF))
}

/// The guest agent of a running VM reports: a `VM_guest_metrics` object with PV drivers
/// detected. Ignored if the VM was halted or rebooted since (`domid` changed).
///
/// # Errors
/// `HANDLE_INVALID` only if the VM vanished between checks (not in practice).
pub fn report_guest_metrics(db: &mut Db, vm: &str, domid: i64) -> ApiResult<()> {
    if !db.exists(VM, vm)
        || db.int(VM, vm, "domid") != domid
        || db.str(VM, vm, "power_state") != "Running"
    {
        return Ok(());
    }
    let agent = db.guest_agents.get(vm).cloned().unwrap_or_default();
    clear_guest_metrics(db, vm)?;
    let metrics = db.insert(
        ClassId::VmGuestMetrics,
        vec![
            (
                "os_version",
                string_map([
                    ("name", "Debian GNU/Linux 12 (bookworm)"),
                    ("distro", "debian"),
                    ("major", "12"),
                    ("minor", "0"),
                    ("uname", "6.1.0-18-amd64"),
                ]),
            ),
            (
                "PV_drivers_version",
                string_map([
                    ("major", "8"),
                    ("minor", "4"),
                    ("micro", "0"),
                    ("build", "1"),
                ]),
            ),
            ("PV_drivers_up_to_date", Value::Bool(true)),
            (
                "networks",
                string_map([("0/ip", agent.ip.as_str()), ("0/ipv4/0", agent.ip.as_str())]),
            ),
            (
                "other",
                string_map([
                    ("feature-shutdown", "1"),
                    ("feature-poweroff", "1"),
                    ("feature-reboot", "1"),
                    ("feature-suspend", "1"),
                    ("has-vendor-device", "0"),
                ]),
            ),
            ("last_updated", Value::DateTime(now())),
            ("live", Value::Bool(true)),
            ("can_use_hotplug_vbd", Value::from("yes")),
            ("can_use_hotplug_vif", Value::from("yes")),
            ("PV_drivers_detected", Value::Bool(true)),
        ],
    );
    db.set(VM, vm, "guest_metrics", Value::from(metrics.as_str()))
}

/// Sets a VM's guest-agent behaviour (scenario).
pub fn set_guest_agent(db: &mut Db, vm: &str, agent: GuestAgent) {
    db.guest_agents.insert(vm.to_owned(), agent);
}

/// Halts a VM: devices detach, guest metrics go away.
pub(crate) fn halt(db: &mut Db, vm: &str) -> ApiResult<()> {
    db.set(VM, vm, "power_state", Value::from("Halted"))?;
    db.set(VM, vm, "resident_on", Value::from(NULL_REF))?;
    db.set(VM, vm, "domid", Value::Int(-1))?;
    for vbd in db.strings(VM, vm, "VBDs") {
        db.set(ClassId::Vbd, &vbd, "currently_attached", Value::Bool(false))?;
    }
    for vif in db.strings(VM, vm, "VIFs") {
        db.set(ClassId::Vif, &vif, "currently_attached", Value::Bool(false))?;
    }
    let metrics = db.str(VM, vm, "metrics");
    if db.exists(ClassId::VmMetrics, &metrics) {
        db.set(
            ClassId::VmMetrics,
            &metrics,
            "state",
            Value::Array(Vec::new()),
        )?;
    }
    clear_guest_metrics(db, vm)
}

/// A power operation: `clean_shutdown`, `hard_shutdown`, `shutdown`, `clean_reboot`,
/// `hard_reboot`, `pause`, `unpause`, `power_state_reset`.
///
/// # Errors
/// Lifecycle errors for the operation; `INTERNAL_ERROR` for an unknown one.
pub fn power_operation(db: &mut Db, vm: &str, op: &str) -> ApiResult<()> {
    check_operation(db, vm, op)?;
    match op {
        "clean_shutdown" | "hard_shutdown" | "shutdown" | "power_state_reset" => halt(db, vm),
        "clean_reboot" | "hard_reboot" => {
            let host = db.str(VM, vm, "resident_on");
            halt(db, vm)?;
            boot(db, vm, &host, "Running")
        }
        "pause" => db.set(VM, vm, "power_state", Value::from("Paused")),
        "unpause" => db.set(VM, vm, "power_state", Value::from("Running")),
        other => Err(super::internal(format!("unknown power operation {other}"))),
    }
}

/// Test hook: sets the power state directly (as the harness of a real host would by acting on
/// the guest), with the side effects of a real transition.
///
/// # Errors
/// `HANDLE_INVALID`, `INVALID_VALUE` for an unknown state.
pub fn force_power_state(db: &mut Db, vm: &str, state: &str) -> ApiResult<()> {
    db.check(VM, vm)?;
    let Some(state) = super::schema::POWER_STATES
        .iter()
        .find(|known| known.eq_ignore_ascii_case(state))
    else {
        return api_err("INVALID_VALUE", ["power_state", state]);
    };
    match *state {
        "Halted" => halt(db, vm),
        "Running" | "Paused" => {
            let host = db.str(VM, vm, "resident_on");
            let host = if db.exists(ClassId::Host, &host) {
                host
            } else {
                db.master()
            };
            boot(db, vm, &host, state)
        }
        _ => {
            halt(db, vm)?;
            db.set(VM, vm, "power_state", Value::from(*state))
        }
    }
}

/// `VM.set_is_a_template`: `true` is checked as `make_into_template`; `false` always passes.
///
/// # Errors
/// Lifecycle errors for `make_into_template`.
pub fn set_is_a_template(db: &mut Db, vm: &str, value: bool) -> ApiResult<()> {
    if value {
        check_operation(db, vm, "make_into_template")?;
    } else {
        db.check(VM, vm)?;
    }
    db.set(VM, vm, "is_a_template", Value::Bool(value))
}

/// `VM.set_memory_limits(static_min, static_max, dynamic_min, dynamic_max)`.
///
/// # Errors
/// Lifecycle errors for `changing_memory_limits`; `MEMORY_CONSTRAINT_VIOLATION` unless
/// `static_min ≤ dynamic_min ≤ dynamic_max ≤ static_max`.
pub fn set_memory_limits(db: &mut Db, vm: &str, limits: [i64; 4]) -> ApiResult<()> {
    check_operation(db, vm, "changing_memory_limits")?;
    let [static_min, static_max, dynamic_min, dynamic_max] = limits;
    if !(static_min <= dynamic_min && dynamic_min <= dynamic_max && dynamic_max <= static_max) {
        return api_err(
            "MEMORY_CONSTRAINT_VIOLATION",
            ["Memory limits must satisfy: static_min <= dynamic_min <= dynamic_max <= static_max"],
        );
    }
    for (field, value) in [
        ("memory_static_min", static_min),
        ("memory_static_max", static_max),
        ("memory_dynamic_min", dynamic_min),
        ("memory_dynamic_max", dynamic_max),
    ] {
        db.set(VM, vm, field, Value::Int(value))?;
    }
    Ok(())
}

/// `VM.set_VCPUs_max` / `VM.set_VCPUs_at_startup` (Halted; `0 < at_startup ≤ max`).
///
/// # Errors
/// Lifecycle errors for `changing_VCPUs`; `INVALID_VALUE`.
pub fn set_vcpus(db: &mut Db, vm: &str, field: &str, value: i64) -> ApiResult<()> {
    check_operation(db, vm, "changing_VCPUs")?;
    let (max, at_startup) = if field == "VCPUs_max" {
        (value, db.int(VM, vm, "VCPUs_at_startup"))
    } else {
        (db.int(VM, vm, "VCPUs_max"), value)
    };
    if value < 1 || at_startup > max {
        return api_err("INVALID_VALUE", [field.to_owned(), value.to_string()]);
    }
    db.set(VM, vm, field, Value::Int(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_are_stable_local_and_unicast() {
        let mac = mac_from_seed("seed", "0");
        assert_eq!(mac, mac_from_seed("seed", "0"));
        assert_ne!(mac, mac_from_seed("seed", "1"));
        let first = u8::from_str_radix(&mac[..2], 16).unwrap();
        assert_eq!(first & 0x03, 0x02);
        assert_eq!(mac.len(), 17);
    }

    #[test]
    fn power_state_lists_follow_xapi_order() {
        assert_eq!(
            allowed_power_states("destroy", false, false),
            &["Halted", "Suspended"]
        );
        assert_eq!(
            allowed_power_states("hard_shutdown", false, false),
            &["Paused", "Suspended", "Running"]
        );
        assert_eq!(
            allowed_power_states("clone", true, false),
            &["Halted", "Suspended"]
        );
        assert!(allowed_concurrently("snapshot", &["snapshot".to_owned()]));
        assert!(!allowed_concurrently("start", &["snapshot".to_owned()]));
    }
}
