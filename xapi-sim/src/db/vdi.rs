//! VDI semantics: xapi's operation checks (spec §3.7 check order), create / destroy /
//! snapshot / clone / copy / resize on the copy-on-write [`Storage`](crate::storage::Storage),
//! CBT (§5.1) and `VDI.get_nbd_info` (§5.3).

use xenapi::Value;

use super::{ApiResult, ClassId, Db, NULL_REF, api_err, as_str, internal, now};
use crate::storage::{ByteLen, DiskId};

const VDI: ClassId = ClassId::Vdi;

/// What an SR type's SM driver can do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SrCapabilities {
    /// `VDI_CREATE`, `VDI_DELETE`, `VDI_RESIZE`.
    pub vdi_create: bool,
    /// `VDI_SNAPSHOT`, `VDI_CLONE`.
    pub vdi_snapshot: bool,
    /// `VDI_CONFIG_CBT`.
    pub cbt: bool,
    /// VDIs are physical devices (`udev`): `VDI_IS_A_PHYSICAL_DEVICE` on destroy.
    pub physical_devices: bool,
}

/// The capabilities of an SR type (sm `libs/sm/drivers/*SR.py`): the VHD-based drivers have CBT,
/// `iso` and `udev` SRs cannot create or snapshot VDIs, other types lack CBT.
#[must_use]
pub fn sr_capabilities(sr_type: &str) -> SrCapabilities {
    match sr_type {
        "ext" | "file" | "lvm" | "lvmohba" | "lvmoiscsi" | "nfs" | "smb" => SrCapabilities {
            vdi_create: true,
            vdi_snapshot: true,
            cbt: true,
            physical_devices: false,
        },
        "iso" => SrCapabilities {
            vdi_create: false,
            vdi_snapshot: false,
            cbt: false,
            physical_devices: false,
        },
        "udev" => SrCapabilities {
            vdi_create: false,
            vdi_snapshot: false,
            cbt: false,
            physical_devices: true,
        },
        _ => SrCapabilities {
            vdi_create: true,
            vdi_snapshot: true,
            cbt: false,
            physical_devices: false,
        },
    }
}

fn capabilities_of(db: &Db, vdi: &str) -> (String, SrCapabilities) {
    let sr = db.str(VDI, vdi, "SR");
    let caps = sr_capabilities(&db.str(ClassId::Sr, &sr, "type"));
    (sr, caps)
}

/// The VBDs of a VDI that are attached.
fn attached_vbds(db: &Db, vdi: &str) -> Vec<String> {
    db.strings(VDI, vdi, "VBDs")
        .into_iter()
        .filter(|vbd| db.bool(ClassId::Vbd, vbd, "currently_attached"))
        .collect()
}

/// xapi's `check_operation_error` for VDIs, in its order: another operation in progress,
/// attached VBDs, SR capability, `cbt_metadata` restrictions, `VDI_CBT_ENABLED`, then the
/// operation's own checks.
///
/// # Errors
/// `OTHER_OPERATION_IN_PROGRESS`, `VDI_IN_USE`, `SR_OPERATION_NOT_SUPPORTED`,
/// `VDI_IS_A_PHYSICAL_DEVICE`, `VDI_INCOMPATIBLE_TYPE`, `VDI_CBT_ENABLED`, `VDI_IS_SHARABLE`,
/// `VDI_ON_BOOT_MODE_INCOMPATIBLE_WITH_OPERATION`, `OPERATION_NOT_ALLOWED`, `VDI_NO_CBT_METADATA`,
/// `LICENCE_RESTRICTION`, `HANDLE_INVALID`.
pub fn check_operation(db: &Db, vdi: &str, op: &str) -> ApiResult<()> {
    db.check(VDI, vdi)?;
    let current = db.map(VDI, vdi, "current_operations");
    if let Some((task, running)) = current.iter().find(|(_, running)| running != "copy") {
        return api_err(
            "OTHER_OPERATION_IN_PROGRESS",
            ["VDI", vdi, running.as_str(), task.as_str()],
        );
    }
    let attached = attached_vbds(db, vdi);
    if !attached.is_empty() {
        let allowed = match op {
            "snapshot" | "clone" | "mirror" | "enable_cbt" | "disable_cbt" | "data_destroy"
            | "resize_online" => true,
            "copy" => attached
                .iter()
                .all(|vbd| db.str(ClassId::Vbd, vbd, "mode") == "RO"),
            "list_changed_blocks" => attached.iter().all(|vbd| {
                let vm = db.str(ClassId::Vbd, vbd, "VM");
                db.bool(ClassId::Vm, &vm, "is_a_snapshot")
            }),
            _ => false,
        };
        if !allowed {
            return api_err("VDI_IN_USE", [vdi, op]);
        }
    }
    let (sr, caps) = capabilities_of(db, vdi);
    let supported = match op {
        "destroy" if caps.physical_devices => return api_err("VDI_IS_A_PHYSICAL_DEVICE", [vdi]),
        "destroy" | "resize" | "resize_online" | "copy" | "data_destroy" => caps.vdi_create,
        "snapshot" | "clone" => caps.vdi_snapshot,
        "enable_cbt" | "disable_cbt" | "list_changed_blocks" => caps.cbt,
        _ => true,
    };
    if !supported || db.bool(ClassId::Sr, &sr, "is_tools_sr") && op == "destroy" {
        return api_err("SR_OPERATION_NOT_SUPPORTED", [sr.as_str()]);
    }
    let vdi_type = db.str(VDI, vdi, "type");
    if vdi_type == "cbt_metadata"
        && [
            "clone",
            "copy",
            "snapshot",
            "resize",
            "resize_online",
            "mirror",
            "enable_cbt",
            "disable_cbt",
            "revert",
            "set_on_boot",
        ]
        .contains(&op)
    {
        return api_err("VDI_INCOMPATIBLE_TYPE", [vdi, "cbt_metadata"]);
    }
    let cbt_enabled = db.bool(VDI, vdi, "cbt_enabled");
    if cbt_enabled && (op == "mirror" || op == "set_on_boot") {
        return api_err("VDI_CBT_ENABLED", [vdi]);
    }
    let on_boot_reset = db.str(VDI, vdi, "on_boot") == "reset";
    match op {
        "snapshot" if db.bool(VDI, vdi, "sharable") => api_err("VDI_IS_SHARABLE", [vdi]),
        "snapshot" | "clone" | "copy" if on_boot_reset => api_err(
            "VDI_ON_BOOT_MODE_INCOMPATIBLE_WITH_OPERATION",
            Vec::<String>::new(),
        ),
        "enable_cbt" | "disable_cbt" => {
            if db.bool(VDI, vdi, "is_a_snapshot") {
                return api_err(
                    "OPERATION_NOT_ALLOWED",
                    [format!("VDI is a snapshot: {vdi}")],
                );
            }
            if vdi_type != "user" && vdi_type != "system" {
                return api_err("VDI_INCOMPATIBLE_TYPE", [vdi, vdi_type.as_str()]);
            }
            if on_boot_reset {
                return api_err(
                    "VDI_ON_BOOT_MODE_INCOMPATIBLE_WITH_OPERATION",
                    Vec::<String>::new(),
                );
            }
            let pool = db.pool_ref();
            if op == "enable_cbt"
                && super::map_get(
                    db.get(ClassId::Pool, &pool, "restrictions")?,
                    "restrict_cbt",
                ) == Some("true")
            {
                return api_err("LICENCE_RESTRICTION", ["CBT"]);
            }
            Ok(())
        }
        "data_destroy" if vdi_type != "cbt_metadata" => {
            if !db.bool(VDI, vdi, "is_a_snapshot") {
                return api_err(
                    "OPERATION_NOT_ALLOWED",
                    [format!("VDI is not a snapshot: {vdi}")],
                );
            }
            if !cbt_enabled {
                return api_err("VDI_NO_CBT_METADATA", [vdi]);
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// The VDI operations currently allowed (approximate, as the spec allows).
pub(crate) fn allowed_operations(db: &Db, vdi: &str) -> Vec<&'static str> {
    const LISTED: &[&str] = &[
        "clone",
        "copy",
        "resize",
        "snapshot",
        "destroy",
        "forget",
        "enable_cbt",
        "disable_cbt",
        "data_destroy",
        "list_changed_blocks",
        "set_on_boot",
    ];
    LISTED
        .iter()
        .copied()
        .filter(|op| check_operation(db, vdi, op).is_ok())
        .collect()
}

/// Maps a storage error to the XAPI error xapi would raise.
pub(crate) fn storage_failure(error: &crate::Error) -> xenapi::codec::Failure {
    if let Some(failure) = error.sm_backend_failure() {
        return xenapi::codec::Failure::new(
            format!("SR_BACKEND_FAILURE_{}", failure.code),
            ["", failure.message.as_str(), ""],
        );
    }
    match error {
        // sm's `VDISize` error with the opterr of every VHD-based driver's resize.
        crate::Error::CannotShrink { .. } => xenapi::codec::Failure::new(
            "SR_BACKEND_FAILURE_79",
            ["", "VDI Invalid size [opterr=shrinking not allowed]", ""],
        ),
        crate::Error::VirtualSizeTooLarge { .. } => xenapi::codec::Failure::new(
            "SR_BACKEND_FAILURE_79",
            [
                String::new(),
                format!("VDI Invalid size [opterr={error}]"),
                String::new(),
            ],
        ),
        _ => internal(error.to_string()),
    }
}

fn size_of(value: i64) -> ApiResult<ByteLen> {
    u64::try_from(value).map(ByteLen::new).map_err(|_| {
        xenapi::codec::Failure::new(
            "SR_BACKEND_FAILURE_79",
            ["", "VDI Invalid size [opterr=negative size]", ""],
        )
    })
}

/// Inserts a VDI record bound to an existing disk (scenario set-up and the operations below).
pub(crate) fn insert_with_disk(
    db: &mut Db,
    disk: DiskId,
    mut fields: Vec<(&'static str, Value)>,
) -> ApiResult<String> {
    let size = db
        .storage()
        .virtual_size(disk)
        .map_err(|error| storage_failure(&error))?;
    let uuid = super::new_uuid();
    fields.retain(|(name, _)| *name != "virtual_size" && *name != "uuid");
    fields.push(("uuid", Value::String(uuid.clone())));
    fields.push(("location", Value::String(uuid)));
    fields.push((
        "virtual_size",
        Value::Int(i64::try_from(size.get()).unwrap_or(i64::MAX)),
    ));
    let vdi = db.insert(VDI, fields);
    db.bind_disk(&vdi, disk);
    Ok(vdi)
}

/// `VDI.create`: the typed constructor fields; the size is rounded by the storage (VHD: 2 MiB).
///
/// # Errors
/// `VDI_INCOMPATIBLE_TYPE [""; "cbt_metadata"]`, `HANDLE_INVALID ["SR"; sr]`, `SR_HAS_NO_PBDS`,
/// `SR_OPERATION_NOT_SUPPORTED`, `SR_BACKEND_FAILURE_79` for a size the storage refuses.
pub fn create(db: &mut Db, fields: Vec<(&'static str, Value)>) -> ApiResult<String> {
    let field = |name: &str| {
        fields
            .iter()
            .find(|(existing, _)| *existing == name)
            .map(|(_, value)| value.clone())
    };
    if field("type").as_ref().map(as_str) == Some("cbt_metadata") {
        return api_err("VDI_INCOMPATIBLE_TYPE", ["", "cbt_metadata"]);
    }
    let sr = field("SR")
        .as_ref()
        .map(as_str)
        .unwrap_or(NULL_REF)
        .to_owned();
    db.check(ClassId::Sr, &sr)?;
    check_sr_attached(db, &sr)?;
    if !sr_capabilities(&db.str(ClassId::Sr, &sr, "type")).vdi_create {
        return api_err("SR_OPERATION_NOT_SUPPORTED", [sr.as_str()]);
    }
    let size = size_of(field("virtual_size").as_ref().map_or(0, super::as_int))?;
    let disk = db
        .storage()
        .create(size)
        .map_err(|error| storage_failure(&error))?;
    insert_with_disk(db, disk, fields)
}

/// `SR_HAS_NO_PBDS [sr]` unless some host has the SR plugged.
pub(crate) fn check_sr_attached(db: &Db, sr: &str) -> ApiResult<()> {
    let attached = db
        .strings(ClassId::Sr, sr, "PBDs")
        .iter()
        .any(|pbd| db.bool(ClassId::Pbd, pbd, "currently_attached"));
    if attached {
        Ok(())
    } else {
        api_err("SR_HAS_NO_PBDS", [sr])
    }
}

fn copied_metadata(db: &Db, vdi: &str, names: &[&'static str]) -> Vec<(&'static str, Value)> {
    names
        .iter()
        .filter_map(|name| {
            db.get(VDI, vdi, name)
                .ok()
                .map(|value| (*name, value.clone()))
        })
        .collect()
}

const SNAPSHOT_METADATA: &[&str] = &[
    "name_label",
    "name_description",
    "SR",
    "type",
    "sharable",
    "read_only",
    "other_config",
    "xenstore_data",
    "on_boot",
    "allow_caching",
    "tags",
];

/// `VDI.snapshot`: shares every block, takes the CBT log (`cbt_enabled` inherited).
///
/// # Errors
/// [`check_operation`] errors for `snapshot`.
pub fn snapshot(db: &mut Db, vdi: &str) -> ApiResult<String> {
    check_operation(db, vdi, "snapshot")?;
    let disk = db
        .storage()
        .snapshot(db.disk_of(vdi)?)
        .map_err(|error| storage_failure(&error))?;
    let mut fields = copied_metadata(db, vdi, SNAPSHOT_METADATA);
    fields.extend([
        ("is_a_snapshot", Value::Bool(true)),
        ("snapshot_of", Value::from(vdi)),
        ("snapshot_time", Value::DateTime(now())),
        ("cbt_enabled", Value::Bool(db.bool(VDI, vdi, "cbt_enabled"))),
    ]);
    insert_with_disk(db, disk, fields)
}

/// `VDI.clone`: shares every block; CBT is not inherited.
///
/// # Errors
/// [`check_operation`] errors for `clone`.
pub fn clone(db: &mut Db, vdi: &str) -> ApiResult<String> {
    check_operation(db, vdi, "clone")?;
    let disk = db
        .storage()
        .clone_disk(db.disk_of(vdi)?)
        .map_err(|error| storage_failure(&error))?;
    insert_with_disk(db, disk, copied_metadata(db, vdi, SNAPSHOT_METADATA))
}

/// `VDI.copy(vdi, sr, base_vdi, into_vdi)`: into a new VDI on `sr` (NULL: the same SR), or into
/// the existing `into_vdi`; with `base_vdi` only blocks differing from it are copied.
///
/// # Errors
/// [`check_operation`] errors for `copy`, `VDI_READONLY`, `VDI_TOO_SMALL`, `HANDLE_INVALID`.
pub fn copy(db: &mut Db, vdi: &str, sr: &str, base: &str, into: &str) -> ApiResult<String> {
    check_operation(db, vdi, "copy")?;
    let source = db.disk_of(vdi)?;
    let base_disk = if base == NULL_REF {
        None
    } else {
        Some(db.disk_of(base)?)
    };
    if into != NULL_REF {
        db.check(VDI, into)?;
        if db.bool(VDI, into, "read_only") {
            return api_err("VDI_READONLY", [into]);
        }
        let required = db.int(VDI, vdi, "virtual_size");
        if db.int(VDI, into, "virtual_size") < required {
            return api_err("VDI_TOO_SMALL", [into.to_owned(), required.to_string()]);
        }
        db.storage()
            .copy_into(source, db.disk_of(into)?, base_disk)
            .map_err(|error| storage_failure(&error))?;
        return Ok(into.to_owned());
    }
    let sr = if sr == NULL_REF {
        db.str(VDI, vdi, "SR")
    } else {
        sr.to_owned()
    };
    db.check(ClassId::Sr, &sr)?;
    if !sr_capabilities(&db.str(ClassId::Sr, &sr, "type")).vdi_create {
        return api_err("SR_OPERATION_NOT_SUPPORTED", [sr.as_str()]);
    }
    let disk = match base_disk {
        None => db
            .storage()
            .copy(source)
            .map_err(|error| storage_failure(&error))?,
        Some(base_disk) => {
            let size = db
                .storage()
                .virtual_size(source)
                .map_err(|error| storage_failure(&error))?;
            let disk = db
                .storage()
                .create(size)
                .map_err(|error| storage_failure(&error))?;
            db.storage()
                .copy_into(source, disk, Some(base_disk))
                .map_err(|error| storage_failure(&error))?;
            disk
        }
    };
    let mut fields = copied_metadata(
        db,
        vdi,
        &[
            "name_label",
            "name_description",
            "type",
            "sharable",
            "other_config",
            "xenstore_data",
            "tags",
            "allow_caching",
            "on_boot",
        ],
    );
    fields.push(("SR", Value::String(sr)));
    insert_with_disk(db, disk, fields)
}

/// `VDI.destroy`: data and record go, every VBD record of the VDI too, `VM.suspend_VDI`
/// references are cleared.
///
/// # Errors
/// [`check_operation`] errors for `destroy` (`VDI_IN_USE` while any VBD, dom0 included, is attached).
pub fn destroy(db: &mut Db, vdi: &str) -> ApiResult<()> {
    check_operation(db, vdi, "destroy")?;
    destroy_unchecked(db, vdi)
}

pub(crate) fn destroy_unchecked(db: &mut Db, vdi: &str) -> ApiResult<()> {
    if let Ok(disk) = db.disk_of(vdi) {
        db.storage()
            .destroy(disk)
            .map_err(|error| storage_failure(&error))?;
    }
    for vbd in db.strings(VDI, vdi, "VBDs") {
        db.remove(ClassId::Vbd, &vbd)?;
    }
    for vm in db.find(ClassId::Vm, "suspend_VDI", &Value::from(vdi)) {
        db.set(ClassId::Vm, &vm, "suspend_VDI", Value::from(NULL_REF))?;
    }
    db.remove(VDI, vdi)
}

/// `VDI.forget`: removes the record only.
///
/// # Errors
/// `HANDLE_INVALID`.
pub fn forget(db: &mut Db, vdi: &str) -> ApiResult<()> {
    check_operation(db, vdi, "forget")?;
    for vbd in db.strings(VDI, vdi, "VBDs") {
        db.remove(ClassId::Vbd, &vbd)?;
    }
    db.remove(VDI, vdi)
}

/// `VDI.resize(vdi, size)`; the new size is rounded like a creation.
///
/// # Errors
/// [`check_operation`] errors for `resize`; `SR_BACKEND_FAILURE_79` (sm's "shrinking not
/// allowed") when `size` is below the current size, compared before rounding as sm does.
pub fn resize(db: &mut Db, vdi: &str, size: i64) -> ApiResult<()> {
    check_operation(db, vdi, "resize")?;
    let size = db
        .storage()
        .resize(db.disk_of(vdi)?, size_of(size)?)
        .map_err(|error| storage_failure(&error))?;
    db.set(
        VDI,
        vdi,
        "virtual_size",
        Value::Int(i64::try_from(size.get()).unwrap_or(i64::MAX)),
    )
}

/// `VDI.enable_cbt` / `VDI.disable_cbt` (idempotent).
///
/// # Errors
/// [`check_operation`] errors for the operation.
pub fn set_cbt(db: &mut Db, vdi: &str, enable: bool) -> ApiResult<()> {
    check_operation(db, vdi, if enable { "enable_cbt" } else { "disable_cbt" })?;
    let disk = db.disk_of(vdi)?;
    let result = if enable {
        db.storage().enable_cbt(disk)
    } else {
        db.storage().disable_cbt(disk)
    };
    result.map_err(|error| storage_failure(&error))?;
    db.set(VDI, vdi, "cbt_enabled", Value::Bool(enable))
}

/// `VDI.list_changed_blocks(vdi_from, vdi_to)`: base64 bitmap of the 64 KiB blocks changed after
/// `vdi_from` up to `vdi_to`. Checks apply to `vdi_to`.
///
/// # Errors
/// `HANDLE_INVALID`, [`check_operation`] errors on `vdi_to`, `SR_BACKEND_FAILURE_460/459`.
pub fn list_changed_blocks(db: &Db, from: &str, to: &str) -> ApiResult<String> {
    db.check(VDI, from)?;
    check_operation(db, to, "list_changed_blocks")?;
    db.storage()
        .list_changed_blocks_base64(db.disk_of(from)?, db.disk_of(to)?)
        .map_err(|error| storage_failure(&error))
}

/// What `VDI.data_destroy` must do after its preconditions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DataDestroy {
    /// Already a `cbt_metadata` VDI: nothing to do (idempotent).
    AlreadyDone,
    /// Wait for VBDs to disappear, then [`data_destroy_commit`].
    Proceed,
}

/// `VDI.data_destroy` preconditions (snapshot, CBT on, SR capability).
///
/// # Errors
/// [`check_operation`] errors for `data_destroy`.
pub fn data_destroy_check(db: &Db, vdi: &str) -> ApiResult<DataDestroy> {
    check_operation(db, vdi, "data_destroy")?;
    Ok(if db.str(VDI, vdi, "type") == "cbt_metadata" {
        DataDestroy::AlreadyDone
    } else {
        DataDestroy::Proceed
    })
}

/// Whether the VDI still has VBD records (`data_destroy` waits for them to go).
#[must_use]
pub fn has_vbds(db: &Db, vdi: &str) -> bool {
    !db.strings(VDI, vdi, "VBDs").is_empty()
}

/// Drops the VDI's data, keeping the record and CBT log; `type` becomes `cbt_metadata`.
///
/// # Errors
/// `VDI_IN_USE [vdi; "data_destroy"]` while VBDs remain; storage failures.
pub fn data_destroy_commit(db: &mut Db, vdi: &str) -> ApiResult<()> {
    if has_vbds(db, vdi) {
        return api_err("VDI_IN_USE", [vdi, "data_destroy"]);
    }
    db.storage()
        .data_destroy(db.disk_of(vdi)?)
        .map_err(|error| storage_failure(&error))?;
    db.set(VDI, vdi, "type", Value::from("cbt_metadata"))
}

/// `VDI.set_on_boot(vdi, value)`.
///
/// # Errors
/// [`check_operation`] errors for `set_on_boot` (`VDI_CBT_ENABLED`).
pub fn set_on_boot(db: &mut Db, vdi: &str, value: &str) -> ApiResult<()> {
    check_operation(db, vdi, "set_on_boot")?;
    db.set(VDI, vdi, "on_boot", Value::from(value))
}

/// `VDI.get_nbd_info`: one record per address of every attached PIF on an NBD network, of every
/// host with an attached PBD for the VDI's SR (IPv4 first, then the IPv6 entries verbatim, in
/// CIDR form as `PIF.IPv6` holds them).
///
/// # Errors
/// `HANDLE_INVALID`, `VDI_INCOMPATIBLE_TYPE [vdi; "cbt_metadata"]`.
pub fn nbd_info(db: &Db, vdi: &str, session: &str) -> ApiResult<Value> {
    db.check(VDI, vdi)?;
    if db.str(VDI, vdi, "type") == "cbt_metadata" {
        return api_err("VDI_INCOMPATIBLE_TYPE", [vdi, "cbt_metadata"]);
    }
    let sr = db.str(VDI, vdi, "SR");
    let exportname = format!("/{}?session_id={session}", db.str(VDI, vdi, "uuid"));
    let mut records = Vec::new();
    for pbd in db.strings(ClassId::Sr, &sr, "PBDs") {
        if !db.bool(ClassId::Pbd, &pbd, "currently_attached") {
            continue;
        }
        let host = db.str(ClassId::Pbd, &pbd, "host");
        let Some(runtime) = db.host_runtime(&host) else {
            continue;
        };
        for pif in db.strings(ClassId::Host, &host, "PIFs") {
            let network = db.str(ClassId::Pif, &pif, "network");
            let purposes = db.strings(ClassId::Network, &network, "purpose");
            if !db.bool(ClassId::Pif, &pif, "currently_attached")
                || !purposes
                    .iter()
                    .any(|purpose| purpose == "nbd" || purpose == "insecure_nbd")
            {
                continue;
            }
            let ipv4 = db.str(ClassId::Pif, &pif, "IP");
            let ipv6 = db.strings(ClassId::Pif, &pif, "IPv6");
            // `PIF.IPv6` entries are CIDR (`addr/prefix`) and xapi hands them out verbatim.
            let addresses = (!ipv4.is_empty())
                .then_some(ipv4)
                .into_iter()
                .chain(ipv6.into_iter().filter(|cidr| !cidr.is_empty()));
            for address in addresses {
                records.push(Value::Struct(vec![
                    ("exportname".to_owned(), Value::String(exportname.clone())),
                    ("address".to_owned(), Value::String(address)),
                    ("port".to_owned(), Value::Int(i64::from(runtime.nbd_port))),
                    (
                        "cert".to_owned(),
                        Value::String(runtime.certificate_pem.clone()),
                    ),
                    (
                        "subject".to_owned(),
                        Value::String(runtime.certificate_subject.clone()),
                    ),
                ]));
            }
        }
    }
    Ok(Value::Array(records))
}

/// Usage figures of a VDI for its record: bytes allocated in its own layer.
pub(crate) fn physical_utilisation(db: &Db, vdi: &str) -> i64 {
    db.disk_of(vdi)
        .ok()
        .and_then(|disk| db.storage().info(disk).ok())
        .map_or(0, |info| {
            i64::try_from(info.leaf_blocks.saturating_mul(crate::storage::BLOCK_SIZE))
                .unwrap_or(i64::MAX)
        })
}

/// The set of VDI types a VBD may attach (`VDI_INCOMPATIBLE_TYPE` otherwise).
pub(crate) const ATTACHABLE_TYPES: &[&str] = &[
    "system",
    "user",
    "ephemeral",
    "suspend",
    "crashdump",
    "metadata",
    "rrd",
    "pvs_cache",
];

/// Test hook: marks the VDI's CBT log inconsistent (sm disables CBT; the VDI's `cbt_enabled`
/// is cleared as xapi does after the `VDI_CBT_METADATA_INCONSISTENT` alert).
///
/// # Errors
/// `HANDLE_INVALID`.
pub fn mark_cbt_inconsistent(db: &mut Db, vdi: &str) -> ApiResult<()> {
    db.storage()
        .cbt_mark_inconsistent(db.disk_of(vdi)?)
        .map_err(|error| storage_failure(&error))?;
    db.set(VDI, vdi, "cbt_enabled", Value::Bool(false))
}

/// Test hook: truncates the VDI's CBT log (`list_changed_blocks` through it fails with 459).
///
/// # Errors
/// `HANDLE_INVALID`.
pub fn truncate_cbt_log(db: &mut Db, vdi: &str) -> ApiResult<()> {
    db.storage()
        .cbt_truncate_log(db.disk_of(vdi)?)
        .map_err(|error| storage_failure(&error))?;
    Ok(())
}

/// Refreshes the usage fields of an SR record from its VDIs.
pub(crate) fn sr_usage(db: &Db, sr: &str) -> (i64, i64) {
    db.strings(ClassId::Sr, sr, "VDIs").iter().fold(
        (0i64, 0i64),
        |(physical, virtual_size), vdi| {
            (
                physical.saturating_add(physical_utilisation(db, vdi)),
                virtual_size.saturating_add(db.int(VDI, vdi, "virtual_size")),
            )
        },
    )
}
