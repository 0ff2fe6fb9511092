//! The datamodel subset the simulator serves: classes, their fields in datamodel order, wire
//! types, qualifiers (RW / StaticRO / DynamicRO), constructor rules and defaults.
//!
//! Records are emitted in the order of these tables, with every field, so a `get_record` looks
//! like xapi's (spec §3). Field types drive parameter unmarshalling (xapi's leniency: ints from
//! decimal strings, enums case-insensitively) and the defaults of constructors.

use std::fmt;

/// A class of the simulated datamodel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum ClassId {
    /// `pool`
    Pool,
    /// `host`
    Host,
    /// `SR`
    Sr,
    /// `PBD`
    Pbd,
    /// `network`
    Network,
    /// `PIF`
    Pif,
    /// `VDI`
    Vdi,
    /// `VBD`
    Vbd,
    /// `VM`
    Vm,
    /// `VIF`
    Vif,
    /// `VM_guest_metrics`
    VmGuestMetrics,
    /// `VM_metrics`
    VmMetrics,
    /// `task`
    Task,
    /// `session`
    Session,
}

impl ClassId {
    /// Every class, in the order used for dumps and `valid_ref_counts`.
    pub const ALL: [ClassId; 14] = [
        ClassId::Pool,
        ClassId::Host,
        ClassId::Sr,
        ClassId::Pbd,
        ClassId::Network,
        ClassId::Pif,
        ClassId::Vdi,
        ClassId::Vbd,
        ClassId::Vm,
        ClassId::Vif,
        ClassId::VmGuestMetrics,
        ClassId::VmMetrics,
        ClassId::Task,
        ClassId::Session,
    ];

    /// The datamodel name, as in wire method names and `HANDLE_INVALID`.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            ClassId::Pool => "pool",
            ClassId::Host => "host",
            ClassId::Sr => "SR",
            ClassId::Pbd => "PBD",
            ClassId::Network => "network",
            ClassId::Pif => "PIF",
            ClassId::Vdi => "VDI",
            ClassId::Vbd => "VBD",
            ClassId::Vm => "VM",
            ClassId::Vif => "VIF",
            ClassId::VmGuestMetrics => "VM_guest_metrics",
            ClassId::VmMetrics => "VM_metrics",
            ClassId::Task => "task",
            ClassId::Session => "session",
        }
    }

    /// The lower-case table name of events and `valid_ref_counts`.
    #[must_use]
    pub const fn table(self) -> &'static str {
        match self {
            ClassId::Pool => "pool",
            ClassId::Host => "host",
            ClassId::Sr => "sr",
            ClassId::Pbd => "pbd",
            ClassId::Network => "network",
            ClassId::Pif => "pif",
            ClassId::Vdi => "vdi",
            ClassId::Vbd => "vbd",
            ClassId::Vm => "vm",
            ClassId::Vif => "vif",
            ClassId::VmGuestMetrics => "vm_guest_metrics",
            ClassId::VmMetrics => "vm_metrics",
            ClassId::Task => "task",
            ClassId::Session => "session",
        }
    }

    /// The class with exactly this datamodel name.
    #[must_use]
    pub fn from_name(name: &str) -> Option<ClassId> {
        ClassId::ALL.into_iter().find(|class| class.name() == name)
    }

    /// The class whose name matches case-insensitively (event subscriptions).
    #[must_use]
    pub fn from_name_ci(name: &str) -> Option<ClassId> {
        ClassId::ALL
            .into_iter()
            .find(|class| class.name().eq_ignore_ascii_case(name))
    }

    /// Whether changes to this class produce events (sessions never do: they are secrets).
    #[must_use]
    pub const fn has_events(self) -> bool {
        !matches!(self, ClassId::Session)
    }

    /// Whether the class has the generated `get_all` / `get_all_records`.
    #[must_use]
    pub const fn has_get_all(self) -> bool {
        !matches!(self, ClassId::Session)
    }

    /// The fields of the class, in datamodel order.
    #[must_use]
    pub fn fields(self) -> &'static [Field] {
        match self {
            ClassId::Pool => POOL,
            ClassId::Host => HOST,
            ClassId::Sr => SR,
            ClassId::Pbd => PBD,
            ClassId::Network => NETWORK,
            ClassId::Pif => PIF,
            ClassId::Vdi => VDI,
            ClassId::Vbd => VBD,
            ClassId::Vm => VM,
            ClassId::Vif => VIF,
            ClassId::VmGuestMetrics => VM_GUEST_METRICS,
            ClassId::VmMetrics => VM_METRICS,
            ClassId::Task => TASK,
            ClassId::Session => SESSION,
        }
    }

    /// Index of a field by wire name.
    #[must_use]
    pub fn field_index(self, name: &str) -> Option<usize> {
        self.fields().iter().position(|field| field.name == name)
    }

    /// A field by wire name.
    #[must_use]
    pub fn field(self, name: &str) -> Option<&'static Field> {
        self.fields().iter().find(|field| field.name == name)
    }

    /// Static-RO fields that nevertheless have a generated-looking plain setter (xapi's custom
    /// setters whose checks the simulator does not model beyond the type).
    #[must_use]
    pub const fn plain_custom_setters(self) -> &'static [&'static str] {
        match self {
            ClassId::Sr => &["name_label", "name_description"],
            ClassId::Vdi => &["name_label", "name_description", "sharable", "read_only"],
            ClassId::Vbd => &["mode"],
            ClassId::Vm => &[
                "HVM_boot_policy",
                "actions_after_crash",
                "ha_restart_priority",
                "memory_static_max",
                "memory_static_min",
                "memory_dynamic_max",
                "memory_dynamic_min",
                "suspend_VDI",
                "HVM_shadow_multiplier",
                "domain_type",
                "NVRAM",
                "start_delay",
                "shutdown_delay",
                "order",
                "appliance",
            ],
            _ => &[],
        }
    }
}

impl fmt::Display for ClassId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.name())
    }
}

/// The wire type of a field or parameter.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub enum Ty {
    /// string (also uuids)
    Str,
    /// 64-bit int
    Int,
    /// float
    Float,
    /// bool
    Bool,
    /// datetime
    Date,
    /// reference to a simulated class
    Ref(ClassId),
    /// reference to a class the simulator does not model (always `OpaqueRef:NULL` or empty sets)
    OtherRef(&'static str),
    /// enum with these wire values; input is matched case-insensitively
    Enum(&'static [&'static str]),
    /// enum that also accepts values it does not know (newer hosts add some)
    OpenEnum(&'static [&'static str]),
    /// set of values
    Set(&'static Ty),
    /// map
    Map(&'static Ty, &'static Ty),
}

/// Who may write a field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Access {
    /// RW: generated setter.
    Rw,
    /// StaticRO: settable through the constructor only.
    Sro,
    /// DynamicRO: server-managed.
    Dro,
}

/// Role of a field in the class constructor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Ctor {
    /// Must be in the `create` struct.
    Required,
    /// May be in the `create` struct.
    Optional,
    /// Not accepted by the constructor.
    Absent,
}

/// A default value (beyond the type's zero).
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub enum Default {
    /// The type's zero: `""`, `0`, `0.0`, `false`, epoch, `OpaqueRef:NULL`, empty set/map, first enum value.
    Zero,
    /// A string or enum value.
    Str(&'static str),
    /// An int.
    Int(i64),
    /// A float.
    Float(f64),
    /// A bool.
    Bool(bool),
}

/// One field of a class.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub struct Field {
    /// Wire name (`name_label`, `VCPUs_max`).
    pub name: &'static str,
    /// Wire type.
    pub ty: Ty,
    /// Qualifier.
    pub access: Access,
    /// Constructor role.
    pub ctor: Ctor,
    /// Default value.
    pub default: Default,
}

const fn dro(name: &'static str, ty: Ty) -> Field {
    Field {
        name,
        ty,
        access: Access::Dro,
        ctor: Ctor::Absent,
        default: Default::Zero,
    }
}

const fn sro(name: &'static str, ty: Ty) -> Field {
    Field {
        name,
        ty,
        access: Access::Sro,
        ctor: Ctor::Absent,
        default: Default::Zero,
    }
}

const fn rw(name: &'static str, ty: Ty) -> Field {
    Field {
        name,
        ty,
        access: Access::Rw,
        ctor: Ctor::Absent,
        default: Default::Zero,
    }
}

impl Field {
    const fn req(self) -> Field {
        Field {
            ctor: Ctor::Required,
            ..self
        }
    }

    const fn opt(self) -> Field {
        Field {
            ctor: Ctor::Optional,
            ..self
        }
    }

    const fn dv(self, default: Default) -> Field {
        Field { default, ..self }
    }
}

const S: Ty = Ty::Str;
const I: Ty = Ty::Int;
const F: Ty = Ty::Float;
const B: Ty = Ty::Bool;
const D: Ty = Ty::Date;
const SS: Ty = Ty::Set(&Ty::Str);
const SM: Ty = Ty::Map(&Ty::Str, &Ty::Str);
const R_POOL: Ty = Ty::Ref(ClassId::Pool);
const R_HOST: Ty = Ty::Ref(ClassId::Host);
const R_SR: Ty = Ty::Ref(ClassId::Sr);
const R_NETWORK: Ty = Ty::Ref(ClassId::Network);
const R_VDI: Ty = Ty::Ref(ClassId::Vdi);
const R_VM: Ty = Ty::Ref(ClassId::Vm);
const R_TASK: Ty = Ty::Ref(ClassId::Task);
const RS_VM: Ty = Ty::Set(&Ty::Ref(ClassId::Vm));
const RS_PBD: Ty = Ty::Set(&Ty::Ref(ClassId::Pbd));
const RS_PIF: Ty = Ty::Set(&Ty::Ref(ClassId::Pif));
const RS_VDI: Ty = Ty::Set(&Ty::Ref(ClassId::Vdi));
const RS_VBD: Ty = Ty::Set(&Ty::Ref(ClassId::Vbd));
const RS_VIF: Ty = Ty::Set(&Ty::Ref(ClassId::Vif));
const RS_TASK: Ty = Ty::Set(&Ty::Ref(ClassId::Task));
const fn other(class: &'static str) -> Ty {
    Ty::OtherRef(class)
}
const RS_OTHER: Ty = Ty::Set(&Ty::OtherRef("other"));
const INT_SET: Ty = Ty::Set(&Ty::Int);

/// `vm_power_state`
pub const POWER_STATES: &[&str] = &["Halted", "Paused", "Running", "Suspended"];
/// `vm_operations` (keys of `blocked_operations`).
pub const VM_OPERATIONS: &[&str] = &[
    "snapshot",
    "clone",
    "copy",
    "create_template",
    "revert",
    "checkpoint",
    "snapshot_with_quiesce",
    "provision",
    "start",
    "start_on",
    "pause",
    "unpause",
    "clean_shutdown",
    "clean_reboot",
    "hard_shutdown",
    "power_state_reset",
    "hard_reboot",
    "suspend",
    "csvm",
    "resume",
    "resume_on",
    "pool_migrate",
    "migrate_send",
    "get_boot_record",
    "send_sysrq",
    "send_trigger",
    "query_services",
    "shutdown",
    "call_plugin",
    "changing_memory_live",
    "awaiting_memory_live",
    "changing_dynamic_range",
    "changing_static_range",
    "changing_memory_limits",
    "changing_shadow_memory",
    "changing_shadow_memory_live",
    "changing_VCPUs",
    "changing_VCPUs_live",
    "changing_NVRAM",
    "assert_operation_valid",
    "data_source_op",
    "update_allowed_operations",
    "make_into_template",
    "import",
    "export",
    "metadata_export",
    "reverting",
    "destroy",
    "create_vtpm",
    "sysprep",
];
/// `vdi_operations`
pub const VDI_OPERATIONS: &[&str] = &[
    "clone",
    "copy",
    "resize",
    "resize_online",
    "snapshot",
    "mirror",
    "destroy",
    "forget",
    "update",
    "force_unlock",
    "generate_config",
    "enable_cbt",
    "disable_cbt",
    "data_destroy",
    "list_changed_blocks",
    "set_on_boot",
    "blocked",
];
/// `vdi_type`
pub const VDI_TYPES: &[&str] = &[
    "system",
    "user",
    "ephemeral",
    "suspend",
    "crashdump",
    "ha_statefile",
    "metadata",
    "redo_log",
    "rrd",
    "pvs_cache",
    "cbt_metadata",
];
/// `storage_operations`
pub const STORAGE_OPERATIONS: &[&str] = &[
    "scan",
    "destroy",
    "forget",
    "plug",
    "unplug",
    "update",
    "vdi_create",
    "vdi_introduce",
    "vdi_destroy",
    "vdi_resize",
    "vdi_clone",
    "vdi_snapshot",
    "vdi_mirror",
    "vdi_enable_cbt",
    "vdi_disable_cbt",
    "vdi_data_destroy",
    "vdi_list_changed_blocks",
    "vdi_set_on_boot",
    "pbd_create",
    "pbd_destroy",
];
/// `vbd_operations`
pub const VBD_OPERATIONS: &[&str] = &[
    "attach",
    "eject",
    "insert",
    "plug",
    "unplug",
    "unplug_force",
    "pause",
    "unpause",
];
/// `vif_operations`
pub const VIF_OPERATIONS: &[&str] = &["attach", "plug", "unplug", "unplug_force"];
/// `task_allowed_operations`
pub const TASK_OPERATIONS: &[&str] = &["cancel", "destroy"];
/// `task_status_type`
pub const TASK_STATUS: &[&str] = &["pending", "success", "failure", "cancelling", "cancelled"];
/// `network_purpose`
pub const NETWORK_PURPOSES: &[&str] = &["nbd", "insecure_nbd"];

const POWER: Ty = Ty::Enum(POWER_STATES);
const VM_OPS_SET: Ty = Ty::Set(&Ty::OpenEnum(VM_OPERATIONS));
const VM_OPS_MAP: Ty = Ty::Map(&Ty::Str, &Ty::OpenEnum(VM_OPERATIONS));
const VM_BLOCKED: Ty = Ty::Map(&Ty::OpenEnum(VM_OPERATIONS), &Ty::Str);
const VDI_OPS_SET: Ty = Ty::Set(&Ty::OpenEnum(VDI_OPERATIONS));
const VDI_OPS_MAP: Ty = Ty::Map(&Ty::Str, &Ty::OpenEnum(VDI_OPERATIONS));
const SR_OPS_SET: Ty = Ty::Set(&Ty::OpenEnum(STORAGE_OPERATIONS));
const SR_OPS_MAP: Ty = Ty::Map(&Ty::Str, &Ty::OpenEnum(STORAGE_OPERATIONS));
const VBD_OPS_SET: Ty = Ty::Set(&Ty::Enum(VBD_OPERATIONS));
const VBD_OPS_MAP: Ty = Ty::Map(&Ty::Str, &Ty::Enum(VBD_OPERATIONS));
const VIF_OPS_SET: Ty = Ty::Set(&Ty::Enum(VIF_OPERATIONS));
const VIF_OPS_MAP: Ty = Ty::Map(&Ty::Str, &Ty::Enum(VIF_OPERATIONS));
const TASK_OPS_SET: Ty = Ty::Set(&Ty::Enum(TASK_OPERATIONS));
const TASK_OPS_MAP: Ty = Ty::Map(&Ty::Str, &Ty::Enum(TASK_OPERATIONS));
const HOST_OPS_SET: Ty = Ty::Set(&Ty::OpenEnum(&[
    "provision",
    "evacuate",
    "shutdown",
    "reboot",
    "power_on",
    "vm_start",
    "vm_resume",
    "vm_migrate",
    "apply_updates",
    "enable",
]));
const HOST_OPS_MAP: Ty = Ty::Map(&Ty::Str, &Ty::OpenEnum(&[]));
const NETWORK_OPS_SET: Ty = Ty::Set(&Ty::Enum(&["attaching"]));
const NETWORK_OPS_MAP: Ty = Ty::Map(&Ty::Str, &Ty::Enum(&["attaching"]));
const POOL_OPS_SET: Ty = Ty::Set(&Ty::OpenEnum(&[
    "ha_enable",
    "ha_disable",
    "cluster_create",
]));
const POOL_OPS_MAP: Ty = Ty::Map(&Ty::Str, &Ty::OpenEnum(&[]));
const IP_MODE: Ty = Ty::Enum(&["None", "DHCP", "Static"]);
const IPV6_MODE: Ty = Ty::Enum(&["None", "DHCP", "Static", "Autoconf"]);
const TRISTATE: Ty = Ty::Enum(&["yes", "no", "unspecified"]);

static POOL: &[Field] = &[
    dro("uuid", S),
    rw("name_label", S),
    rw("name_description", S),
    dro("master", R_HOST),
    rw("default_SR", R_SR),
    rw("suspend_image_SR", R_SR),
    rw("crash_dump_SR", R_SR),
    rw("other_config", SM),
    dro("ha_enabled", B),
    dro("ha_configuration", SM),
    dro("ha_statefiles", SS),
    dro("ha_host_failures_to_tolerate", I),
    dro("ha_plan_exists_for", I),
    rw("ha_allow_overcommit", B),
    dro("ha_overcommitted", B),
    dro("blobs", Ty::Map(&Ty::Str, &Ty::OtherRef("blob"))),
    rw("tags", SS),
    rw("gui_config", SM),
    rw("health_check_config", SM),
    dro("wlb_url", S),
    dro("wlb_username", S),
    rw("wlb_enabled", B),
    rw("wlb_verify_cert", B),
    dro("redo_log_enabled", B),
    dro("redo_log_vdi", R_VDI),
    dro("vswitch_controller", S),
    dro("restrictions", SM),
    dro("metadata_VDIs", RS_VDI),
    dro("ha_cluster_stack", S).dv(Default::Str("xhad")),
    dro("allowed_operations", POOL_OPS_SET),
    dro("current_operations", POOL_OPS_MAP),
    dro("guest_agent_config", SM),
    dro("cpu_info", SM),
    rw("policy_no_vendor_device", B),
    rw("live_patching_disabled", B),
    dro("igmp_snooping_enabled", B),
    dro("uefi_certificates", S),
    rw("is_psr_pending", B),
    dro("tls_verification_enabled", B),
    dro("repositories", RS_OTHER),
    dro("client_certificate_auth_enabled", B),
    dro("client_certificate_auth_name", S),
    dro("repository_proxy_url", S),
    dro("repository_proxy_username", S),
    dro("repository_proxy_password", other("secret")),
    rw("migration_compression", B),
    rw("coordinator_bias", B).dv(Default::Bool(true)),
];

static HOST: &[Field] = &[
    dro("uuid", S),
    rw("name_label", S),
    rw("name_description", S),
    dro("memory_overhead", I),
    dro("allowed_operations", HOST_OPS_SET),
    dro("current_operations", HOST_OPS_MAP),
    dro("API_version_major", I),
    dro("API_version_minor", I),
    dro("API_version_vendor", S),
    dro("API_version_vendor_implementation", SM),
    dro("enabled", B),
    sro("software_version", SM),
    rw("other_config", SM),
    dro("capabilities", SS),
    dro("cpu_configuration", SM),
    dro("sched_policy", S),
    dro("supported_bootloaders", SS),
    dro("resident_VMs", RS_VM),
    rw("logging", SM),
    dro("PIFs", RS_PIF),
    rw("suspend_image_sr", R_SR),
    rw("crash_dump_sr", R_SR),
    dro("crashdumps", RS_OTHER),
    dro("patches", RS_OTHER),
    dro("updates", RS_OTHER),
    dro("PBDs", RS_PBD),
    dro("host_CPUs", RS_OTHER),
    dro("cpu_info", SM),
    rw("hostname", S),
    rw("address", S),
    dro("metrics", other("host_metrics")),
    dro("license_params", SM),
    dro("ha_statefiles", SS),
    dro("ha_network_peers", SS),
    dro("blobs", Ty::Map(&Ty::Str, &Ty::OtherRef("blob"))),
    rw("tags", SS),
    dro("external_auth_type", S),
    dro("external_auth_service_name", S),
    dro("external_auth_configuration", SM),
    dro("edition", S),
    rw("license_server", SM),
    dro("bios_strings", SM),
    dro("power_on_mode", S),
    dro("power_on_config", SM),
    dro("local_cache_sr", R_SR),
    dro("chipset_info", SM),
    dro("PCIs", RS_OTHER),
    dro("PGPUs", RS_OTHER),
    dro("PUSBs", RS_OTHER),
    dro("ssl_legacy", B),
    rw("guest_VCPUs_params", SM),
    dro(
        "display",
        Ty::Enum(&[
            "enabled",
            "disable_on_reboot",
            "disabled",
            "enable_on_reboot",
        ]),
    ),
    dro("virtual_hardware_platform_versions", INT_SET),
    dro("control_domain", R_VM),
    dro("updates_requiring_reboot", RS_OTHER),
    dro("features", RS_OTHER),
    dro("iscsi_iqn", S),
    dro("multipathing", B),
    dro("uefi_certificates", S),
    dro("certificates", RS_OTHER),
    dro("editions", SS),
    dro("pending_guidances", SS),
    dro("tls_verification_enabled", B),
    dro("last_software_update", D),
    dro("https_only", B),
];

static SR: &[Field] = &[
    dro("uuid", S),
    sro("name_label", S).opt(),
    sro("name_description", S).opt(),
    dro("allowed_operations", SR_OPS_SET),
    dro("current_operations", SR_OPS_MAP),
    dro("VDIs", RS_VDI),
    dro("PBDs", RS_PBD),
    dro("virtual_allocation", I),
    dro("physical_utilisation", I),
    sro("physical_size", I),
    sro("type", S),
    sro("content_type", S),
    dro("shared", B),
    rw("other_config", SM),
    rw("tags", SS),
    rw("sm_config", SM),
    dro("blobs", Ty::Map(&Ty::Str, &Ty::OtherRef("blob"))),
    dro("local_cache_enabled", B),
    dro("introduced_by", other("DR_task")),
    dro("clustered", B),
    dro("is_tools_sr", B),
];

static PBD: &[Field] = &[
    dro("uuid", S),
    sro("host", R_HOST).req(),
    sro("SR", R_SR).req(),
    sro("device_config", SM).req(),
    dro("currently_attached", B),
    rw("other_config", SM).opt(),
];

static NETWORK: &[Field] = &[
    dro("uuid", S),
    rw("name_label", S).opt(),
    rw("name_description", S).opt(),
    dro("allowed_operations", NETWORK_OPS_SET),
    dro("current_operations", NETWORK_OPS_MAP),
    dro("VIFs", RS_VIF),
    dro("PIFs", RS_PIF),
    rw("MTU", I).opt().dv(Default::Int(1500)),
    rw("other_config", SM).req(),
    sro("bridge", S).opt(),
    sro("managed", B).opt().dv(Default::Bool(true)),
    dro("blobs", Ty::Map(&Ty::Str, &Ty::OtherRef("blob"))),
    rw("tags", SS).opt(),
    dro("default_locking_mode", Ty::Enum(&["unlocked", "disabled"])),
    dro("assigned_ips", Ty::Map(&Ty::Ref(ClassId::Vif), &Ty::Str)),
    dro("purpose", Ty::Set(&Ty::Enum(NETWORK_PURPOSES))),
];

static PIF: &[Field] = &[
    dro("uuid", S),
    dro("device", S),
    dro("network", R_NETWORK),
    dro("host", R_HOST),
    dro("MAC", S),
    dro("MTU", I),
    dro("VLAN", I),
    dro("metrics", other("PIF_metrics")),
    dro("physical", B),
    dro("currently_attached", B),
    dro("ip_configuration_mode", IP_MODE),
    dro("IP", S),
    dro("netmask", S),
    dro("gateway", S),
    dro("DNS", S),
    dro("bond_slave_of", other("Bond")),
    dro("bond_master_of", RS_OTHER),
    dro("VLAN_master_of", other("VLAN")),
    dro("VLAN_slave_of", RS_OTHER),
    dro("management", B),
    rw("other_config", SM),
    dro("disallow_unplug", B),
    dro("tunnel_access_PIF_of", RS_OTHER),
    dro("tunnel_transport_PIF_of", RS_OTHER),
    dro("ipv6_configuration_mode", IPV6_MODE),
    dro("IPv6", SS),
    dro("ipv6_gateway", S),
    dro("primary_address_type", Ty::Enum(&["IPv4", "IPv6"])),
    dro("managed", B),
    dro("properties", SM),
    dro("capabilities", SS),
    dro(
        "igmp_snooping_status",
        Ty::Enum(&["enabled", "disabled", "unknown"]),
    ),
    dro("sriov_physical_PIF_of", RS_OTHER),
    dro("sriov_logical_PIF_of", RS_OTHER),
    dro("PCI", other("PCI")),
];

static VDI: &[Field] = &[
    dro("uuid", S),
    sro("name_label", S).opt(),
    sro("name_description", S).opt(),
    dro("allowed_operations", VDI_OPS_SET),
    dro("current_operations", VDI_OPS_MAP),
    sro("SR", R_SR).req(),
    dro("VBDs", RS_VBD),
    dro("crash_dumps", RS_OTHER),
    sro("virtual_size", I).req(),
    dro("physical_utilisation", I),
    sro("type", Ty::Enum(VDI_TYPES)).req(),
    sro("sharable", B).req(),
    sro("read_only", B).req(),
    rw("other_config", SM).req(),
    dro("storage_lock", B),
    dro("location", S),
    dro("managed", B).dv(Default::Bool(true)),
    dro("missing", B),
    dro("parent", R_VDI),
    rw("xenstore_data", SM).opt(),
    rw("sm_config", SM).opt(),
    dro("is_a_snapshot", B),
    dro("snapshot_of", R_VDI),
    dro("snapshots", RS_VDI),
    dro("snapshot_time", D),
    rw("tags", SS).opt(),
    dro("allow_caching", B),
    dro("on_boot", Ty::Enum(&["reset", "persist"])).dv(Default::Str("persist")),
    dro("metadata_of_pool", R_POOL),
    dro("metadata_latest", B),
    dro("is_tools_iso", B),
    dro("cbt_enabled", B),
];

static VBD: &[Field] = &[
    dro("uuid", S),
    dro("allowed_operations", VBD_OPS_SET),
    dro("current_operations", VBD_OPS_MAP),
    sro("VM", R_VM).req(),
    sro("VDI", R_VDI).req(),
    sro("device", S).opt(),
    rw("userdevice", S).req(),
    rw("bootable", B).req(),
    sro("mode", Ty::Enum(&["RO", "RW"])).req(),
    rw("type", Ty::Enum(&["CD", "Disk", "Floppy"])).req(),
    rw("unpluggable", B).opt().dv(Default::Bool(true)),
    dro("storage_lock", B),
    sro("empty", B).req(),
    rw("other_config", SM).req(),
    sro("currently_attached", B).opt(),
    dro("status_code", I),
    dro("status_detail", S),
    dro("runtime_properties", SM),
    rw("qos_algorithm_type", S).req(),
    rw("qos_algorithm_params", SM).req(),
    dro("qos_supported_algorithms", SS),
    dro("metrics", other("VBD_metrics")),
];

static VIF: &[Field] = &[
    dro("uuid", S),
    dro("allowed_operations", VIF_OPS_SET),
    dro("current_operations", VIF_OPS_MAP),
    sro("device", S).req(),
    sro("network", R_NETWORK).req(),
    sro("VM", R_VM).req(),
    sro("MAC", S).req(),
    sro("MTU", I).req(),
    rw("other_config", SM).req(),
    sro("currently_attached", B).opt(),
    dro("status_code", I),
    dro("status_detail", S),
    dro("runtime_properties", SM),
    rw("qos_algorithm_type", S).req(),
    rw("qos_algorithm_params", SM).req(),
    dro("qos_supported_algorithms", SS),
    dro("metrics", other("VIF_metrics")),
    dro("MAC_autogenerated", B),
    sro(
        "locking_mode",
        Ty::Enum(&["network_default", "locked", "unlocked", "disabled"]),
    )
    .opt(),
    sro("ipv4_allowed", SS).opt(),
    sro("ipv6_allowed", SS).opt(),
    dro("ipv4_configuration_mode", Ty::Enum(&["None", "Static"])),
    dro("ipv4_addresses", SS),
    dro("ipv4_gateway", S),
    dro("ipv6_configuration_mode", Ty::Enum(&["None", "Static"])),
    dro("ipv6_addresses", SS),
    dro("ipv6_gateway", S),
    dro("PCI", other("PCI")),
];

static VM: &[Field] = &[
    dro("uuid", S),
    dro("allowed_operations", VM_OPS_SET),
    dro("current_operations", VM_OPS_MAP),
    rw("name_label", S).opt(),
    rw("name_description", S).opt(),
    sro("power_state", POWER).opt(),
    rw("user_version", I).req(),
    rw("is_a_template", B).req(),
    dro("is_default_template", B),
    sro("suspend_VDI", R_VDI).opt(),
    dro("resident_on", R_HOST),
    dro("scheduled_to_be_resident_on", R_HOST),
    rw("affinity", R_HOST).req(),
    dro("memory_overhead", I),
    sro("memory_target", I).opt(),
    sro("memory_static_max", I).req(),
    sro("memory_dynamic_max", I).req(),
    sro("memory_dynamic_min", I).req(),
    sro("memory_static_min", I).req(),
    rw("VCPUs_params", SM).req(),
    sro("VCPUs_max", I).req(),
    sro("VCPUs_at_startup", I).req(),
    rw(
        "actions_after_softreboot",
        Ty::Enum(&["soft_reboot", "destroy", "restart", "preserve"]),
    )
    .opt()
    .dv(Default::Str("soft_reboot")),
    rw("actions_after_shutdown", Ty::Enum(&["destroy", "restart"])).req(),
    rw("actions_after_reboot", Ty::Enum(&["destroy", "restart"])).req(),
    sro(
        "actions_after_crash",
        Ty::Enum(&[
            "destroy",
            "coredump_and_destroy",
            "restart",
            "coredump_and_restart",
            "preserve",
            "rename_restart",
        ]),
    )
    .req(),
    dro("consoles", RS_OTHER),
    dro("VIFs", RS_VIF),
    dro("VBDs", RS_VBD),
    dro("VUSBs", RS_OTHER),
    dro("crash_dumps", RS_OTHER),
    dro("VTPMs", RS_OTHER),
    rw("PV_bootloader", S).req(),
    rw("PV_kernel", S).req(),
    rw("PV_ramdisk", S).req(),
    rw("PV_args", S).req(),
    rw("PV_bootloader_args", S).req(),
    rw("PV_legacy_args", S).req(),
    sro("HVM_boot_policy", S).req(),
    rw("HVM_boot_params", SM).req(),
    sro("HVM_shadow_multiplier", F)
        .opt()
        .dv(Default::Float(1.0)),
    rw("platform", SM).req(),
    rw("PCI_bus", S).req(),
    rw("other_config", SM).req(),
    dro("domid", I).dv(Default::Int(-1)),
    dro("domarch", S),
    dro("last_boot_CPU_flags", SM),
    dro("is_control_domain", B),
    dro("metrics", Ty::Ref(ClassId::VmMetrics)),
    dro("guest_metrics", Ty::Ref(ClassId::VmGuestMetrics)),
    sro("last_booted_record", S).opt(),
    rw("recommendations", S).req(),
    rw("xenstore_data", SM).opt(),
    sro("ha_always_run", B).opt(),
    sro("ha_restart_priority", S).opt(),
    dro("is_a_snapshot", B),
    dro("snapshot_of", R_VM),
    dro("snapshots", RS_VM),
    dro("snapshot_time", D),
    dro("transportable_snapshot_id", S),
    dro("blobs", Ty::Map(&Ty::Str, &Ty::OtherRef("blob"))),
    rw("tags", SS).opt(),
    rw("blocked_operations", VM_BLOCKED).opt(),
    dro("snapshot_info", SM),
    dro("snapshot_metadata", S),
    dro("parent", R_VM),
    dro("children", RS_VM),
    dro("bios_strings", SM),
    sro("protection_policy", other("VMPP")),
    dro("is_snapshot_from_vmpp", B),
    sro("snapshot_schedule", other("VMSS")),
    dro("is_vmss_snapshot", B),
    sro("appliance", other("VM_appliance")).opt(),
    sro("start_delay", I).opt(),
    sro("shutdown_delay", I).opt(),
    sro("order", I).opt(),
    dro("VGPUs", RS_OTHER),
    dro("attached_PCIs", RS_OTHER),
    sro("suspend_SR", R_SR).opt(),
    sro("version", I).opt(),
    sro("generation_id", S).opt(),
    sro("hardware_platform_version", I).opt(),
    sro("has_vendor_device", B).opt(),
    dro("requires_reboot", B),
    sro("reference_label", S).opt(),
    sro(
        "domain_type",
        Ty::Enum(&["hvm", "pv", "pv_in_pvh", "pvh", "unspecified"]),
    )
    .opt()
    .dv(Default::Str("unspecified")),
    sro("NVRAM", SM).opt(),
    dro("pending_guidances", SS),
];

static VM_GUEST_METRICS: &[Field] = &[
    dro("uuid", S),
    dro("os_version", SM),
    dro("netbios_name", SM),
    dro("PV_drivers_version", SM),
    dro("PV_drivers_up_to_date", B),
    dro("memory", SM),
    dro("disks", SM),
    dro("networks", SM),
    dro("other", SM),
    dro("last_updated", D),
    rw("other_config", SM),
    dro("live", B),
    dro("can_use_hotplug_vbd", TRISTATE).dv(Default::Str("unspecified")),
    dro("can_use_hotplug_vif", TRISTATE).dv(Default::Str("unspecified")),
    dro("PV_drivers_detected", B),
    dro("services", SM),
];

static VM_METRICS: &[Field] = &[
    dro("uuid", S),
    dro("memory_actual", I),
    dro("VCPUs_number", I),
    dro("VCPUs_utilisation", Ty::Map(&Ty::Int, &Ty::Float)),
    dro("VCPUs_CPU", Ty::Map(&Ty::Int, &Ty::Int)),
    dro("VCPUs_params", SM),
    dro("VCPUs_flags", Ty::Map(&Ty::Int, &SS)),
    dro("state", SS),
    dro("start_time", D),
    dro("install_time", D),
    dro("last_updated", D),
    rw("other_config", SM),
    dro("hvm", B),
    dro("nested_virt", B),
    dro("nomigrate", B),
    dro(
        "current_domain_type",
        Ty::Enum(&["hvm", "pv", "pv_in_pvh", "pvh", "unspecified"]),
    )
    .dv(Default::Str("unspecified")),
];

static TASK: &[Field] = &[
    dro("uuid", S),
    dro("name_label", S),
    dro("name_description", S),
    dro("allowed_operations", TASK_OPS_SET),
    dro("current_operations", TASK_OPS_MAP),
    dro("created", D),
    dro("finished", D),
    dro("status", Ty::Enum(TASK_STATUS)),
    dro("resident_on", R_HOST),
    dro("progress", F),
    dro("type", S),
    dro("result", S),
    dro("error_info", SS),
    rw("other_config", SM),
    dro("subtask_of", R_TASK),
    dro("subtasks", RS_TASK),
    dro("backtrace", S),
];

static SESSION: &[Field] = &[
    dro("uuid", S),
    dro("this_host", R_HOST),
    dro("this_user", other("user")),
    dro("last_active", D),
    dro("pool", B),
    rw("other_config", SM),
    dro("is_local_superuser", B),
    dro("subject", other("subject")),
    dro("validation_time", D),
    dro("auth_user_sid", S),
    dro("auth_user_name", S),
    dro("rbac_permissions", SS),
    dro("tasks", RS_TASK),
    dro("parent", Ty::Ref(ClassId::Session)),
    dro("originator", S),
    dro("client_certificate", B),
];

/// One-to-many relations xapi maintains: `(child class, child ref field, parent class, parent set field)`.
pub const RELATIONS: &[(ClassId, &str, ClassId, &str)] = &[
    (ClassId::Vbd, "VM", ClassId::Vm, "VBDs"),
    (ClassId::Vbd, "VDI", ClassId::Vdi, "VBDs"),
    (ClassId::Vif, "VM", ClassId::Vm, "VIFs"),
    (ClassId::Vif, "network", ClassId::Network, "VIFs"),
    (ClassId::Vdi, "SR", ClassId::Sr, "VDIs"),
    (ClassId::Vdi, "snapshot_of", ClassId::Vdi, "snapshots"),
    (ClassId::Pbd, "SR", ClassId::Sr, "PBDs"),
    (ClassId::Pbd, "host", ClassId::Host, "PBDs"),
    (ClassId::Pif, "host", ClassId::Host, "PIFs"),
    (ClassId::Pif, "network", ClassId::Network, "PIFs"),
    (ClassId::Vm, "resident_on", ClassId::Host, "resident_VMs"),
    (ClassId::Vm, "snapshot_of", ClassId::Vm, "snapshots"),
    (ClassId::Vm, "parent", ClassId::Vm, "children"),
    (ClassId::Task, "subtask_of", ClassId::Task, "subtasks"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_class_starts_with_uuid_and_has_unique_field_names() {
        for class in ClassId::ALL {
            let fields = class.fields();
            assert_eq!(
                fields.first().map(|field| field.name),
                Some("uuid"),
                "{class}"
            );
            let mut names: Vec<_> = fields.iter().map(|field| field.name).collect();
            names.sort_unstable();
            let count = names.len();
            names.dedup();
            assert_eq!(names.len(), count, "duplicate field in {class}");
        }
    }

    #[test]
    fn relations_name_existing_fields_of_the_right_types() {
        for (child, field, parent, set) in RELATIONS {
            assert_eq!(
                child.field(field).map(|f| f.ty),
                Some(Ty::Ref(*parent)),
                "{child}.{field}"
            );
            assert!(
                matches!(parent.field(set).map(|f| f.ty), Some(Ty::Set(Ty::Ref(c))) if *c == *child),
                "{parent}.{set}"
            );
        }
    }

    #[test]
    fn class_names_round_trip() {
        for class in ClassId::ALL {
            assert_eq!(ClassId::from_name(class.name()), Some(class));
            assert_eq!(ClassId::from_name_ci(class.table()), Some(class));
        }
        assert_eq!(ClassId::from_name("vm"), None);
    }
}
