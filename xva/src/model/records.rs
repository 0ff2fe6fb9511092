//! Typed records for the classes xapi needs from `ova.xml` (spec §13.2–13.4).
//!
//! Each record decodes with xapi's typing rules: string fields must be XML-RPC strings (untyped
//! or `<string>`), booleans must be `<boolean>`, ints may be untyped or `<i4>/<i8>/<int>`, enum
//! names are matched case-insensitively. Fields without a datamodel default are required; the
//! others fall back to xapi's default. Members the record does not model are kept in `extra`,
//! in file order, and written back after the modelled ones.

use std::collections::BTreeMap;

use super::value::{Struct, Value};
use super::{Class, ExportId};
use crate::error::{Error, excerpt};

/// Why one field failed to decode (turned into an [`Error`] with the record and field names).
pub(crate) enum FieldProblem {
    Type {
        expected: &'static str,
        found: &'static str,
    },
    Value(String),
}

/// A type that an `ova.xml` field decodes to and encodes from.
pub(crate) trait Field: Sized {
    /// Decodes an XML-RPC value with xapi's typing rules.
    fn decode(value: &Value) -> Result<Self, FieldProblem>;
    /// Encodes the value the way xapi writes it.
    fn encode(&self) -> Value;
}

fn type_problem(expected: &'static str, found: &Value) -> FieldProblem {
    FieldProblem::Type {
        expected,
        found: found.type_name(),
    }
}

fn value_problem(text: &str) -> FieldProblem {
    FieldProblem::Value(excerpt(text))
}

impl Field for String {
    fn decode(value: &Value) -> Result<Self, FieldProblem> {
        match value {
            Value::String(text) => Ok(text.clone()),
            other => Err(type_problem("a string", other)),
        }
    }

    fn encode(&self) -> Value {
        Value::String(self.clone())
    }
}

impl Field for i64 {
    fn decode(value: &Value) -> Result<Self, FieldProblem> {
        match value {
            Value::Int(number) => Ok(*number),
            Value::String(text) => super::value::parse_int(text).ok_or_else(|| value_problem(text)),
            other => Err(type_problem("an int", other)),
        }
    }

    fn encode(&self) -> Value {
        Value::Int(*self)
    }
}

impl Field for u64 {
    fn decode(value: &Value) -> Result<Self, FieldProblem> {
        let signed = i64::decode(value)?;
        u64::try_from(signed).map_err(|_| value_problem(&signed.to_string()))
    }

    fn encode(&self) -> Value {
        // xapi's int64: sizes beyond i64::MAX cannot exist there, so saturate rather than wrap.
        Value::Int(i64::try_from(*self).unwrap_or(i64::MAX))
    }
}

impl Field for bool {
    fn decode(value: &Value) -> Result<Self, FieldProblem> {
        match value {
            Value::Bool(flag) => Ok(*flag),
            other => Err(type_problem("a <boolean>", other)),
        }
    }

    fn encode(&self) -> Value {
        Value::Bool(*self)
    }
}

impl Field for ExportId {
    fn decode(value: &Value) -> Result<Self, FieldProblem> {
        String::decode(value).map(ExportId::new)
    }

    fn encode(&self) -> Value {
        Value::String(self.as_str().to_owned())
    }
}

/// A `(string → string)` map, such as `other_config` or `platform`.
impl Field for BTreeMap<String, String> {
    fn decode(value: &Value) -> Result<Self, FieldProblem> {
        let members = match value {
            Value::Struct(members) => members,
            other => return Err(type_problem("a struct of strings", other)),
        };
        members
            .iter()
            .map(|(key, item)| match item {
                Value::String(text) => Ok((key.to_owned(), text.clone())),
                other => Err(type_problem("a struct of strings", other)),
            })
            .collect()
    }

    fn encode(&self) -> Value {
        Value::Struct(
            self.iter()
                .map(|(key, text)| (key.clone(), Value::String(text.clone())))
                .collect(),
        )
    }
}

/// A set (XML-RPC array) of strings or references.
impl<T: Field> Field for Vec<T> {
    fn decode(value: &Value) -> Result<Self, FieldProblem> {
        match value {
            Value::Array(items) => items.iter().map(T::decode).collect(),
            other => Err(type_problem("an array", other)),
        }
    }

    fn encode(&self) -> Value {
        Value::Array(self.iter().map(Field::encode).collect())
    }
}

/// Reads the fields of one record and remembers which members it used.
pub(crate) struct FieldReader<'a> {
    record: &'a str,
    source: &'a Struct,
    used: Vec<&'static str>,
}

impl<'a> FieldReader<'a> {
    pub(crate) fn new(record: &'a str, source: &'a Struct) -> Self {
        Self {
            record,
            source,
            used: Vec::new(),
        }
    }

    fn error(&self, field: &str, problem: FieldProblem) -> Error {
        match problem {
            FieldProblem::Type { expected, found } => Error::FieldType {
                record: self.record.to_owned(),
                field: field.to_owned(),
                expected,
                found,
            },
            FieldProblem::Value(value) => Error::FieldValue {
                record: self.record.to_owned(),
                field: field.to_owned(),
                value,
            },
        }
    }

    pub(crate) fn optional<T: Field>(&mut self, name: &'static str) -> Result<Option<T>, Error> {
        self.used.push(name);
        match self.source.get(name) {
            None => Ok(None),
            Some(value) => T::decode(value)
                .map(Some)
                .map_err(|problem| self.error(name, problem)),
        }
    }

    pub(crate) fn required<T: Field>(&mut self, name: &'static str) -> Result<T, Error> {
        self.optional(name)?.ok_or_else(|| Error::MissingField {
            record: self.record.to_owned(),
            field: name.to_owned(),
        })
    }

    /// The members no field used, in file order.
    pub(crate) fn finish(self) -> Struct {
        self.source
            .iter()
            .filter(|(name, _)| !self.used.contains(name))
            .map(|(name, value)| (name.to_owned(), value.clone()))
            .collect()
    }
}

macro_rules! xapi_enum {
    ($(#[$meta:meta])* $name:ident { $( $(#[$vmeta:meta])* $variant:ident = $wire:literal, )* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )*
        }

        impl $name {
            /// The name xapi writes.
            pub fn as_str(self) -> &'static str {
                match self {
                    $( Self::$variant => $wire, )*
                }
            }

            /// Parses a name case-insensitively, as xapi's generated decoders do.
            pub fn parse(name: &str) -> Option<Self> {
                $( if name.eq_ignore_ascii_case($wire) { return Some(Self::$variant); } )*
                None
            }
        }

        impl Field for $name {
            fn decode(value: &Value) -> Result<Self, FieldProblem> {
                let text = String::decode(value)?;
                Self::parse(&text).ok_or_else(|| value_problem(&text))
            }

            fn encode(&self) -> Value {
                Value::String(self.as_str().to_owned())
            }
        }
    };
}

xapi_enum! {
    /// `VBD.type`.
    VbdType {
        /// A CD drive: its VDI is never streamed.
        Cd = "CD",
        /// A disk.
        Disk = "Disk",
        /// A floppy drive.
        Floppy = "Floppy",
    }
}

xapi_enum! {
    /// `VBD.mode`.
    VbdMode {
        /// Read-only.
        Ro = "RO",
        /// Read-write.
        Rw = "RW",
    }
}

xapi_enum! {
    /// `VDI.type`.
    VdiType {
        /// A system disk.
        System = "system",
        /// A user disk (what we write).
        User = "user",
        /// Discarded on shutdown.
        Ephemeral = "ephemeral",
        /// A suspend image: always streamed.
        Suspend = "suspend",
        /// A crash dump.
        Crashdump = "crashdump",
        /// HA state file.
        HaStatefile = "ha_statefile",
        /// Pool metadata.
        Metadata = "metadata",
        /// Redo log.
        RedoLog = "redo_log",
        /// RRD store.
        Rrd = "rrd",
        /// PVS cache.
        PvsCache = "pvs_cache",
        /// CBT metadata.
        CbtMetadata = "cbt_metadata",
    }
}

xapi_enum! {
    /// `VM.actions_after_shutdown` and `VM.actions_after_reboot`.
    OnNormalExit {
        /// Destroy the domain.
        Destroy = "destroy",
        /// Restart it.
        Restart = "restart",
    }
}

xapi_enum! {
    /// `VM.actions_after_crash`.
    OnCrash {
        /// Destroy the domain.
        Destroy = "destroy",
        /// Dump core, then destroy.
        CoredumpAndDestroy = "coredump_and_destroy",
        /// Restart.
        Restart = "restart",
        /// Dump core, then restart.
        CoredumpAndRestart = "coredump_and_restart",
        /// Keep the domain.
        Preserve = "preserve",
        /// Rename and restart.
        RenameRestart = "rename_restart",
    }
}

xapi_enum! {
    /// `VM.power_state`.
    PowerState {
        /// Halted (what exports of stopped VMs and snapshots say).
        Halted = "Halted",
        /// Paused.
        Paused = "Paused",
        /// Running.
        Running = "Running",
        /// Suspended.
        Suspended = "Suspended",
    }
}

xapi_enum! {
    /// `VM.domain_type`.
    DomainType {
        /// Hardware virtualised.
        Hvm = "hvm",
        /// Paravirtualised.
        Pv = "pv",
        /// PVH.
        Pvh = "pvh",
        /// PV inside a PVH container.
        PvInPvh = "pv_in_pvh",
        /// Derived from `HVM_boot_policy` by xapi.
        Unspecified = "unspecified",
    }
}

xapi_enum! {
    /// `VIF.locking_mode`.
    LockingMode {
        /// Follow the network's default.
        NetworkDefault = "network_default",
        /// Only the listed addresses.
        Locked = "locked",
        /// Any traffic.
        Unlocked = "unlocked",
        /// No traffic.
        Disabled = "disabled",
    }
}

/// A typed record of one `ova.xml` class.
pub trait Record: Sized {
    /// The class the record belongs to.
    const CLASS: Class;

    /// Decodes a snapshot struct; `label` names the record in errors (e.g. `VDI Ref:002`).
    fn decode(label: &str, snapshot: &Struct) -> Result<Self, Error>;

    /// Decodes a snapshot struct with xapi's typing rules.
    fn from_struct(snapshot: &Struct) -> Result<Self, Error> {
        Self::decode(Self::CLASS.as_str(), snapshot)
    }

    /// Encodes the record as the snapshot struct xapi reads.
    fn to_struct(&self) -> Struct;
}

macro_rules! record {
    (
        $(#[$meta:meta])*
        $name:ident = $class:expr;
        $( $(#[$fmeta:meta])* $field:ident : $ty:ty = $wire:literal $(, default $default:expr)? ; )*
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq)]
        pub struct $name {
            $( $(#[$fmeta])* pub $field: $ty, )*
            /// Members this crate does not model, kept in file order and written back.
            pub extra: Struct,
        }

        impl Record for $name {
            const CLASS: Class = $class;

            fn decode(label: &str, snapshot: &Struct) -> Result<Self, Error> {
                let mut fields = FieldReader::new(label, snapshot);
                let mut record = Self {
                    $( $field: record!(@read fields, $wire $(, $default)?), )*
                    extra: Struct::new(),
                };
                record.extra = fields.finish();
                Ok(record)
            }

            fn to_struct(&self) -> Struct {
                let mut snapshot = Struct::new();
                $( snapshot.push($wire, Field::encode(&self.$field)); )*
                snapshot.extend(self.extra.clone());
                snapshot
            }
        }
    };
    (@read $fields:ident, $wire:literal) => { $fields.required($wire)? };
    (@read $fields:ident, $wire:literal, $default:expr) => {
        match $fields.optional($wire)? { Some(value) => value, None => $default }
    };
}

/// A `(string → string)` map field.
pub type StringMap = BTreeMap<String, String>;

record! {
    /// The `version` record at the top of `ova.xml` (`importexport.ml`).
    Version = Class::Version;
    /// Exporting host name.
    hostname: String = "hostname";
    /// Export date, free text.
    date: String = "date";
    /// Product version, e.g. `8.2.1`.
    product_version: String = "product_version";
    /// Product brand, e.g. `XCP-ng`.
    product_brand: String = "product_brand";
    /// Build number, free text.
    build_number: String = "build_number";
    /// xapi major version: the importer refuses archives from a newer xapi.
    xapi_major: i64 = "xapi_major";
    /// xapi minor version.
    xapi_minor: i64 = "xapi_minor";
    /// 0: no inline checksums; 1: inline + end table; 2: inline only. Missing means 0.
    export_vsn: i64 = "export_vsn", default 0;
}

record! {
    /// A `VM` record (spec §13.4: the 32 fields without a datamodel default, plus the ones to write).
    Vm = Class::Vm;
    /// VM UUID.
    uuid: String = "uuid";
    /// Name.
    name_label: String = "name_label", default String::new();
    /// Description.
    name_description: String = "name_description", default String::new();
    /// Incremented by the user on changes.
    user_version: i64 = "user_version";
    /// A template rather than a VM.
    is_a_template: bool = "is_a_template";
    /// dom0.
    is_control_domain: bool = "is_control_domain";
    /// Power state (exports say `Halted`).
    power_state: PowerState = "power_state", default PowerState::Halted;
    /// Host the VM runs on (`OpaqueRef:NULL`).
    resident_on: ExportId = "resident_on";
    /// Preferred host (`OpaqueRef:NULL`).
    affinity: ExportId = "affinity";
    /// Metrics object (`OpaqueRef:NULL`).
    metrics: ExportId = "metrics";
    /// Guest metrics object (`OpaqueRef:NULL`).
    guest_metrics: ExportId = "guest_metrics";
    /// Static maximum memory, bytes.
    memory_static_max: i64 = "memory_static_max";
    /// Dynamic maximum memory, bytes.
    memory_dynamic_max: i64 = "memory_dynamic_max";
    /// Dynamic minimum memory, bytes.
    memory_dynamic_min: i64 = "memory_dynamic_min";
    /// Static minimum memory, bytes.
    memory_static_min: i64 = "memory_static_min";
    /// Maximum vCPUs.
    vcpus_max: i64 = "VCPUs_max";
    /// vCPUs at boot.
    vcpus_at_startup: i64 = "VCPUs_at_startup";
    /// vCPU scheduler parameters.
    vcpus_params: StringMap = "VCPUs_params";
    /// Action after a guest shutdown.
    actions_after_shutdown: OnNormalExit = "actions_after_shutdown";
    /// Action after a guest reboot.
    actions_after_reboot: OnNormalExit = "actions_after_reboot";
    /// Action after a crash.
    actions_after_crash: OnCrash = "actions_after_crash";
    /// PV bootloader.
    pv_bootloader: String = "PV_bootloader";
    /// PV kernel path.
    pv_kernel: String = "PV_kernel";
    /// PV ramdisk path.
    pv_ramdisk: String = "PV_ramdisk";
    /// PV kernel arguments.
    pv_args: String = "PV_args";
    /// PV bootloader arguments.
    pv_bootloader_args: String = "PV_bootloader_args";
    /// Legacy PV arguments.
    pv_legacy_args: String = "PV_legacy_args";
    /// `BIOS order` for HVM guests, empty for PV.
    hvm_boot_policy: String = "HVM_boot_policy";
    /// HVM boot parameters (`order`, `firmware`).
    hvm_boot_params: StringMap = "HVM_boot_params";
    /// Platform flags (values are strings).
    platform: StringMap = "platform";
    /// PCI bus path.
    pci_bus: String = "PCI_bus";
    /// Free-form configuration.
    other_config: StringMap = "other_config";
    /// Domain id (-1 when halted).
    domid: i64 = "domid";
    /// Domain architecture.
    domarch: String = "domarch";
    /// Recommendations XML.
    recommendations: String = "recommendations";
    /// Domain type.
    domain_type: DomainType = "domain_type", default DomainType::Unspecified;
    /// The VM's VBDs.
    vbds: Vec<ExportId> = "VBDs", default Vec::new();
    /// The VM's VIFs.
    vifs: Vec<ExportId> = "VIFs", default Vec::new();
}

record! {
    /// A `VDI` record: one disk (spec §13.4).
    Vdi = Class::Vdi;
    /// VDI UUID.
    uuid: String = "uuid";
    /// Name.
    name_label: String = "name_label", default String::new();
    /// Description.
    name_description: String = "name_description", default String::new();
    /// The SR object holding it.
    sr: ExportId = "SR";
    /// Exact disk size in bytes: the sum of its chunk lengths.
    virtual_size: u64 = "virtual_size";
    /// Space used on the SR.
    physical_utilisation: i64 = "physical_utilisation";
    /// Disk type.
    vdi_type: VdiType = "type";
    /// Shareable between VMs.
    sharable: bool = "sharable";
    /// Read-only.
    read_only: bool = "read_only";
    /// Storage lock.
    storage_lock: bool = "storage_lock";
    /// Missing from its SR.
    missing: bool = "missing";
    /// Managed by xapi.
    managed: bool = "managed";
    /// Free-form configuration.
    other_config: StringMap = "other_config";
    /// Parent VDI (`OpaqueRef:NULL`).
    parent: ExportId = "parent";
}

record! {
    /// A `VBD` record: how a VM sees a VDI (spec §13.4).
    Vbd = Class::Vbd;
    /// VBD UUID.
    uuid: String = "uuid";
    /// The VM.
    vm: ExportId = "VM";
    /// The VDI (`OpaqueRef:NULL` only for an empty CD drive).
    vdi: ExportId = "VDI";
    /// Device name, e.g. `xvda`.
    device: String = "device", default String::new();
    /// Position, a **string**: `"0"`, `"1"`, …
    userdevice: String = "userdevice";
    /// The boot disk.
    bootable: bool = "bootable";
    /// Read-only or read-write.
    mode: VbdMode = "mode";
    /// Disk, CD or floppy.
    vbd_type: VbdType = "type";
    /// Hot-unpluggable.
    unpluggable: bool = "unpluggable", default true;
    /// Storage lock.
    storage_lock: bool = "storage_lock";
    /// An empty drive.
    empty: bool = "empty";
    /// Currently plugged.
    currently_attached: bool = "currently_attached", default false;
    /// Free-form configuration.
    other_config: StringMap = "other_config";
    /// Status code.
    status_code: i64 = "status_code";
    /// Status text.
    status_detail: String = "status_detail";
    /// Runtime properties.
    runtime_properties: StringMap = "runtime_properties";
    /// QoS algorithm.
    qos_algorithm_type: String = "qos_algorithm_type";
    /// QoS parameters.
    qos_algorithm_params: StringMap = "qos_algorithm_params";
    /// Supported QoS algorithms.
    qos_supported_algorithms: Vec<String> = "qos_supported_algorithms";
}

record! {
    /// A `VIF` record: a network interface (spec §13.4).
    Vif = Class::Vif;
    /// VIF UUID.
    uuid: String = "uuid";
    /// Position, a **string**: `"0"`, `"1"`, …
    device: String = "device";
    /// The network.
    network: ExportId = "network";
    /// The VM.
    vm: ExportId = "VM";
    /// MAC address, or empty for a generated one.
    mac: String = "MAC";
    /// MTU.
    mtu: i64 = "MTU";
    /// Whether xapi generated the MAC.
    mac_autogenerated: bool = "MAC_autogenerated", default false;
    /// Locking mode.
    locking_mode: LockingMode = "locking_mode", default LockingMode::NetworkDefault;
    /// Free-form configuration.
    other_config: StringMap = "other_config";
    /// Status code.
    status_code: i64 = "status_code";
    /// Status text.
    status_detail: String = "status_detail";
    /// Runtime properties.
    runtime_properties: StringMap = "runtime_properties";
    /// QoS algorithm.
    qos_algorithm_type: String = "qos_algorithm_type";
    /// QoS parameters.
    qos_algorithm_params: StringMap = "qos_algorithm_params";
    /// Supported QoS algorithms.
    qos_supported_algorithms: Vec<String> = "qos_supported_algorithms";
}

record! {
    /// An `SR` record (only parsed by xapi on a full restore; its `content_type` decides which
    /// VDIs are streamed).
    Sr = Class::Sr;
    /// SR UUID.
    uuid: String = "uuid";
    /// Name.
    name_label: String = "name_label", default String::new();
    /// Description.
    name_description: String = "name_description", default String::new();
    /// Allocated bytes.
    virtual_allocation: i64 = "virtual_allocation";
    /// Used bytes.
    physical_utilisation: i64 = "physical_utilisation";
    /// Size in bytes.
    physical_size: i64 = "physical_size";
    /// SR driver type, e.g. `ext`.
    sr_type: String = "type";
    /// `user` or empty; `iso` makes its VDIs non-streamed.
    content_type: String = "content_type";
    /// Shared between hosts.
    shared: bool = "shared";
    /// Free-form configuration.
    other_config: StringMap = "other_config";
    /// The SR's VDIs in this export.
    vdis: Vec<ExportId> = "VDIs", default Vec::new();
}

record! {
    /// A `network` record.
    Network = Class::Network;
    /// Network UUID.
    uuid: String = "uuid";
    /// Name.
    name_label: String = "name_label", default String::new();
    /// Description.
    name_description: String = "name_description", default String::new();
    /// Bridge name.
    bridge: String = "bridge", default String::new();
    /// MTU.
    mtu: i64 = "MTU", default 1500;
    /// Free-form configuration.
    other_config: StringMap = "other_config";
}

fn new_uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

impl Version {
    /// The version record we write: xapi 1.20 (accepted by every XCP-ng and XenServer
    /// release), `export_vsn` 2 (inline checksums only).
    pub fn new(hostname: impl Into<String>, date: impl Into<String>) -> Self {
        Self {
            hostname: hostname.into(),
            date: date.into(),
            product_version: "8.2.1".to_owned(),
            product_brand: "XCP-ng".to_owned(),
            build_number: "xcp-replicate".to_owned(),
            xapi_major: 1,
            xapi_minor: 20,
            export_vsn: 2,
            extra: Struct::new(),
        }
    }
}

impl Vm {
    /// A halted HVM guest with BIOS boot, fixed memory and `vcpus` vCPUs, with the values of
    /// spec §13.4 (XO's working set) for every other required field and a fresh UUID.
    pub fn new(name_label: impl Into<String>, memory_bytes: i64, vcpus: i64) -> Self {
        let platform = [
            ("acpi", "1"),
            ("apic", "true"),
            ("pae", "true"),
            ("nx", "true"),
            ("hpet", "true"),
            ("viridian", "true"),
            ("timeoffset", "0"),
            ("device-model", "qemu-upstream-compat"),
            ("secureboot", "false"),
        ];
        Self {
            uuid: new_uuid(),
            name_label: name_label.into(),
            name_description: String::new(),
            user_version: 1,
            is_a_template: false,
            is_control_domain: false,
            power_state: PowerState::Halted,
            resident_on: ExportId::null(),
            affinity: ExportId::null(),
            metrics: ExportId::null(),
            guest_metrics: ExportId::null(),
            memory_static_max: memory_bytes,
            memory_dynamic_max: memory_bytes,
            memory_dynamic_min: memory_bytes,
            memory_static_min: memory_bytes,
            vcpus_max: vcpus,
            vcpus_at_startup: vcpus,
            vcpus_params: StringMap::new(),
            actions_after_shutdown: OnNormalExit::Destroy,
            actions_after_reboot: OnNormalExit::Restart,
            actions_after_crash: OnCrash::Restart,
            pv_bootloader: String::new(),
            pv_kernel: String::new(),
            pv_ramdisk: String::new(),
            pv_args: String::new(),
            pv_bootloader_args: String::new(),
            pv_legacy_args: String::new(),
            hvm_boot_policy: "BIOS order".to_owned(),
            hvm_boot_params: [("order", "cdn"), ("firmware", "bios")]
                .into_iter()
                .map(|(key, value)| (key.to_owned(), value.to_owned()))
                .collect(),
            platform: platform
                .into_iter()
                .map(|(key, value)| (key.to_owned(), value.to_owned()))
                .collect(),
            pci_bus: String::new(),
            other_config: StringMap::new(),
            domid: -1,
            domarch: String::new(),
            recommendations: String::new(),
            domain_type: DomainType::Hvm,
            vbds: Vec::new(),
            vifs: Vec::new(),
            extra: Struct::new(),
        }
    }
}

impl Vdi {
    /// A user disk of `virtual_size` bytes on `sr`, with a fresh UUID.
    pub fn new(name_label: impl Into<String>, sr: ExportId, virtual_size: u64) -> Self {
        Self {
            uuid: new_uuid(),
            name_label: name_label.into(),
            name_description: String::new(),
            sr,
            virtual_size,
            physical_utilisation: i64::try_from(virtual_size).unwrap_or(i64::MAX),
            vdi_type: VdiType::User,
            sharable: false,
            read_only: false,
            storage_lock: false,
            missing: false,
            managed: true,
            other_config: StringMap::new(),
            parent: ExportId::null(),
            extra: Struct::new(),
        }
    }
}

impl Vbd {
    /// A read-write disk VBD at position `userdevice`, with a fresh UUID.
    pub fn new(vm: ExportId, vdi: ExportId, userdevice: u32, bootable: bool) -> Self {
        Self {
            uuid: new_uuid(),
            vm,
            vdi,
            device: xen_device_name(userdevice),
            userdevice: userdevice.to_string(),
            bootable,
            mode: VbdMode::Rw,
            vbd_type: VbdType::Disk,
            unpluggable: false,
            storage_lock: false,
            empty: false,
            currently_attached: false,
            other_config: StringMap::new(),
            status_code: 0,
            status_detail: String::new(),
            runtime_properties: StringMap::new(),
            qos_algorithm_type: String::new(),
            qos_algorithm_params: StringMap::new(),
            qos_supported_algorithms: Vec::new(),
            extra: Struct::new(),
        }
    }
}

/// `xvda`, `xvdb`, … for positions 0–25; empty beyond (xapi then picks the name).
fn xen_device_name(userdevice: u32) -> String {
    u8::try_from(userdevice)
        .ok()
        .filter(|position| *position < 26)
        .map(|position| format!("xvd{}", char::from(b'a'.saturating_add(position))))
        .unwrap_or_default()
}

impl Vif {
    /// A VIF at position `device` on `network` with MAC `mac` (empty: xapi generates one).
    pub fn new(vm: ExportId, network: ExportId, device: u32, mac: impl Into<String>) -> Self {
        let mac = mac.into();
        Self {
            uuid: new_uuid(),
            device: device.to_string(),
            network,
            vm,
            mac_autogenerated: mac.is_empty(),
            mac,
            mtu: 1500,
            locking_mode: LockingMode::NetworkDefault,
            other_config: StringMap::new(),
            status_code: 0,
            status_detail: String::new(),
            runtime_properties: StringMap::new(),
            qos_algorithm_type: String::new(),
            qos_algorithm_params: StringMap::new(),
            qos_supported_algorithms: Vec::new(),
            extra: Struct::new(),
        }
    }
}

impl Sr {
    /// A user-content `ext` SR record with a fresh UUID (xapi imports into the SR of the
    /// request; this record only tells which VDIs are streamed).
    pub fn new(name_label: impl Into<String>) -> Self {
        Self {
            uuid: new_uuid(),
            name_label: name_label.into(),
            name_description: String::new(),
            virtual_allocation: 0,
            physical_utilisation: 0,
            physical_size: 0,
            sr_type: "ext".to_owned(),
            content_type: "user".to_owned(),
            shared: false,
            other_config: StringMap::new(),
            vdis: Vec::new(),
            extra: Struct::new(),
        }
    }
}

impl Network {
    /// A network record with a fresh UUID.
    pub fn new(name_label: impl Into<String>, bridge: impl Into<String>) -> Self {
        Self {
            uuid: new_uuid(),
            name_label: name_label.into(),
            name_description: String::new(),
            bridge: bridge.into(),
            mtu: 1500,
            other_config: StringMap::new(),
            extra: Struct::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enums_are_case_insensitive() {
        assert_eq!(PowerState::parse("halted"), Some(PowerState::Halted));
        assert_eq!(VbdMode::parse("rw"), Some(VbdMode::Rw));
        assert_eq!(VbdType::parse("cd"), Some(VbdType::Cd));
        assert_eq!(VbdType::parse("tape"), None);
    }

    #[test]
    fn strings_must_be_strings_and_booleans_booleans() {
        let vbd = Vbd::new(ExportId::new("Ref:0"), ExportId::new("Ref:1"), 0, true);
        let mut snapshot = vbd.to_struct();
        assert_eq!(Vbd::from_struct(&snapshot).unwrap(), vbd);

        // userdevice as <i8>: xapi says "Expected string".
        snapshot.insert("userdevice", Value::Int(0));
        let error = Vbd::from_struct(&snapshot).unwrap_err();
        assert!(
            matches!(error, Error::FieldType { ref field, expected: "a string", found: "an int", .. } if field == "userdevice")
        );

        // bootable as an untyped "1": xapi accepts only <boolean>.
        let mut snapshot = vbd.to_struct();
        snapshot.insert("bootable", Value::String("1".into()));
        assert!(matches!(
            Vbd::from_struct(&snapshot),
            Err(Error::FieldType { .. })
        ));

        // status_code may be <i4> or untyped.
        let mut snapshot = vbd.to_struct();
        snapshot.insert("status_code", Value::String("7".into()));
        assert_eq!(Vbd::from_struct(&snapshot).unwrap().status_code, 7);

        // A required field missing, and an optional one defaulting.
        let mut snapshot = vbd.to_struct();
        snapshot.remove("qos_supported_algorithms");
        snapshot.remove("unpluggable");
        assert!(
            matches!(Vbd::from_struct(&snapshot), Err(Error::MissingField { ref field, .. }) if field == "qos_supported_algorithms")
        );
        snapshot.insert("qos_supported_algorithms", Value::Array(vec![]));
        assert!(Vbd::from_struct(&snapshot).unwrap().unpluggable);
    }

    #[test]
    fn unknown_members_survive() {
        let mut snapshot = Vdi::new("d", ExportId::new("Ref:1"), 5).to_struct();
        snapshot.push("cbt_enabled", Value::Bool(true));
        snapshot.push("tags", Value::Array(vec![Value::from("a")]));
        let vdi = Vdi::from_struct(&snapshot).unwrap();
        assert_eq!(vdi.extra.len(), 2);
        assert_eq!(vdi.to_struct(), snapshot);
    }

    #[test]
    fn negative_sizes_are_rejected() {
        let mut snapshot = Vdi::new("d", ExportId::new("Ref:1"), 5).to_struct();
        snapshot.insert("virtual_size", Value::Int(-1));
        assert!(matches!(
            Vdi::from_struct(&snapshot),
            Err(Error::FieldValue { .. })
        ));
    }

    #[test]
    fn device_names() {
        assert_eq!(xen_device_name(0), "xvda");
        assert_eq!(xen_device_name(25), "xvdz");
        assert_eq!(xen_device_name(26), "");
    }
}
