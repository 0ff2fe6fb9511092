//! Typed records and enums for the classes the replication, seeding and backup flows use.
//!
//! Records are lenient like the wire: unknown members are ignored (records grow with xapi
//! versions), missing members keep their `Default` (older hosts lack newer fields), and enums
//! keep values they do not know in an `Unknown(String)` variant. Fields not listed here are one
//! `client.get_field::<C, T>(&r, "name")` or `client.call(...)` away.
//!
//! `to_value()` writes a record back in wire form, fields in datamodel order (used by tests
//! and simulators).

use std::collections::BTreeMap;
use std::fmt;

use crate::datetime::DateTime;
use crate::error::Error;
use crate::refs::{
    Class, Console, Host, Network, Pbd, Pif, Pool, Ref, Sr, Task, Vbd, Vdi, Vif, Vm,
    VmGuestMetrics, VmMetrics,
};
use crate::value::{FromValue, StringMap, Value, mismatch};

/// A class whose `get_record` this crate decodes into a typed record.
pub trait HasRecord: Class {
    /// The record type.
    type Record: FromValue + Send + 'static;
}

impl<C: Class> Default for Ref<C> {
    fn default() -> Self {
        Ref::null()
    }
}

impl Default for DateTime {
    fn default() -> Self {
        DateTime::EPOCH
    }
}

macro_rules! xapi_enum {
    ($(#[$meta:meta])* pub enum $name:ident default $default:ident { $( $(#[$vmeta:meta])* $variant:ident = $wire:literal, )* }) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )*
            /// A value this crate does not know (newer hosts add some), kept verbatim.
            Unknown(String),
        }

        impl $name {
            /// The wire spelling.
            pub fn as_str(&self) -> &str {
                match self {
                    $( $name::$variant => $wire, )*
                    $name::Unknown(text) => text,
                }
            }

            /// Reads a wire value: exact spelling first, then case-insensitively (xapi matches
            /// enum params case-insensitively), else `Unknown`.
            pub fn parse(text: &str) -> $name {
                match text {
                    $( $wire => $name::$variant, )*
                    other => {
                        $( if other.eq_ignore_ascii_case($wire) { return $name::$variant; } )*
                        $name::Unknown(other.to_owned())
                    }
                }
            }
        }

        impl Default for $name {
            fn default() -> Self {
                $name::$default
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromValue for $name {
            fn from_value(value: Value) -> Result<Self, Error> {
                match value {
                    Value::String(text) => Ok($name::parse(&text)),
                    other => Err(mismatch("enum", &other)),
                }
            }
        }

        impl From<$name> for Value {
            fn from(item: $name) -> Value {
                Value::String(item.as_str().to_owned())
            }
        }

        impl From<&$name> for Value {
            fn from(item: &$name) -> Value {
                Value::String(item.as_str().to_owned())
            }
        }
    };
}

xapi_enum! {
    /// `VM.power_state`.
    pub enum PowerState default Halted {
        /// Not running.
        Halted = "Halted",
        /// Paused.
        Paused = "Paused",
        /// Running.
        Running = "Running",
        /// Suspended to disk.
        Suspended = "Suspended",
    }
}

xapi_enum! {
    /// `VM.domain_type`.
    pub enum DomainType default Unspecified {
        /// Hardware virtualised.
        Hvm = "hvm",
        /// Paravirtualised.
        Pv = "pv",
        /// PV inside a PVH container.
        PvInPvh = "pv_in_pvh",
        /// PVH.
        Pvh = "pvh",
        /// Not set.
        Unspecified = "unspecified",
    }
}

xapi_enum! {
    /// `VDI.type`.
    pub enum VdiType default User {
        /// System disk.
        System = "system",
        /// User disk.
        User = "user",
        /// Ephemeral.
        Ephemeral = "ephemeral",
        /// Suspend image.
        Suspend = "suspend",
        /// Crash dump.
        Crashdump = "crashdump",
        /// HA state file.
        HaStatefile = "ha_statefile",
        /// Pool metadata.
        Metadata = "metadata",
        /// Redo log.
        RedoLog = "redo_log",
        /// RRD storage.
        Rrd = "rrd",
        /// PVS cache.
        PvsCache = "pvs_cache",
        /// Data destroyed, CBT log kept (`VDI.data_destroy`).
        CbtMetadata = "cbt_metadata",
    }
}

xapi_enum! {
    /// `VDI.on_boot`.
    pub enum OnBoot default Persist {
        /// Changes persist.
        Persist = "persist",
        /// Reset at boot.
        Reset = "reset",
    }
}

xapi_enum! {
    /// `VBD.mode`.
    pub enum VbdMode default Rw {
        /// Read-only.
        Ro = "RO",
        /// Read-write.
        Rw = "RW",
    }
}

xapi_enum! {
    /// `VBD.type`.
    pub enum VbdType default Disk {
        /// CD drive.
        Cd = "CD",
        /// Disk.
        Disk = "Disk",
        /// Floppy.
        Floppy = "Floppy",
    }
}

xapi_enum! {
    /// `VIF.locking_mode`.
    pub enum VifLockingMode default NetworkDefault {
        /// The network's default.
        NetworkDefault = "network_default",
        /// Locked to the allowed addresses.
        Locked = "locked",
        /// Unlocked.
        Unlocked = "unlocked",
        /// All traffic dropped.
        Disabled = "disabled",
    }
}

xapi_enum! {
    /// `network.purpose` entries.
    pub enum NetworkPurpose default Nbd {
        /// NBD over TLS.
        Nbd = "nbd",
        /// NBD in clear.
        InsecureNbd = "insecure_nbd",
    }
}

xapi_enum! {
    /// `PIF.ip_configuration_mode`.
    pub enum IpConfigurationMode default None {
        /// No address.
        None = "None",
        /// DHCP.
        Dhcp = "DHCP",
        /// Static.
        Static = "Static",
    }
}

xapi_enum! {
    /// `PIF.ipv6_configuration_mode`.
    pub enum Ipv6ConfigurationMode default None {
        /// No address.
        None = "None",
        /// DHCP.
        Dhcp = "DHCP",
        /// Static.
        Static = "Static",
        /// Router advertisement.
        Autoconf = "Autoconf",
    }
}

xapi_enum! {
    /// `PIF.primary_address_type`.
    pub enum PrimaryAddressType default Ipv4 {
        /// IPv4.
        Ipv4 = "IPv4",
        /// IPv6.
        Ipv6 = "IPv6",
    }
}

xapi_enum! {
    /// `task.status`.
    pub enum TaskStatus default Pending {
        /// Running.
        Pending = "pending",
        /// Finished with a result.
        Success = "success",
        /// Finished with `error_info`.
        Failure = "failure",
        /// Never set by xapi.
        Cancelling = "cancelling",
        /// Cancelled (`error_info = ["TASK_CANCELLED"; task]`).
        Cancelled = "cancelled",
    }
}

xapi_enum! {
    /// `VM_guest_metrics.can_use_hotplug_*`.
    pub enum Tristate default Unspecified {
        /// Yes.
        Yes = "yes",
        /// No.
        No = "no",
        /// Unknown.
        Unspecified = "unspecified",
    }
}

macro_rules! record {
    ($(#[$meta:meta])* pub struct $name:ident for $class:ty { $( $(#[$fmeta:meta])* $field:ident : $ty:ty = $wire:literal, )* }) => {
        $(#[$meta])*
        ///
        /// Build one with `..Default::default()`: fields are added as xapi grows.
        #[derive(Clone, Debug, Default, PartialEq)]
        pub struct $name {
            $( $(#[$fmeta])* pub $field: $ty, )*
        }

        impl FromValue for $name {
            fn from_value(value: Value) -> Result<Self, Error> {
                let Value::Struct(members) = value else { return Err(mismatch("record", &value)) };
                let mut record = Self::default();
                for (name, item) in members {
                    match name.as_str() {
                        $( $wire => record.$field = <$ty as FromValue>::from_value(item).map_err(|error| error.with_field($wire))?, )*
                        _ => {}
                    }
                }
                Ok(record)
            }
        }

        impl $name {
            /// The record in wire form, fields in datamodel order.
            pub fn to_value(&self) -> Value {
                Value::Struct(vec![ $( ($wire.to_owned(), Value::from(self.$field.clone())), )* ])
            }

            /// The wire names of the fields this type decodes.
            pub const FIELDS: &'static [&'static str] = &[ $( $wire, )* ];
        }

        impl HasRecord for $class {
            type Record = $name;
        }
    };
}

record! {
    /// `pool` record.
    pub struct PoolRecord for Pool {
        /// Stable id.
        uuid: String = "uuid",
        /// Pool name.
        name_label: String = "name_label",
        /// Description.
        name_description: String = "name_description",
        /// The coordinator.
        master: Ref<Host> = "master",
        /// Default SR for imports and new disks.
        default_sr: Ref<Sr> = "default_SR",
        /// SR for suspend images.
        suspend_image_sr: Ref<Sr> = "suspend_image_SR",
        /// SR for crash dumps.
        crash_dump_sr: Ref<Sr> = "crash_dump_SR",
        /// Free-form map (Xen Orchestra keeps `xo:*` keys here).
        other_config: StringMap = "other_config",
        /// HA on.
        ha_enabled: bool = "ha_enabled",
        /// Licence restrictions (`restrict_cbt` ...).
        restrictions: StringMap = "restrictions",
        /// Tags.
        tags: Vec<String> = "tags",
    }
}

record! {
    /// `host` record.
    pub struct HostRecord for Host {
        /// Stable id.
        uuid: String = "uuid",
        /// Name.
        name_label: String = "name_label",
        /// Description.
        name_description: String = "name_description",
        /// Enabled for new VMs.
        enabled: bool = "enabled",
        /// `product_brand`, `product_version`, `xapi`, ...
        software_version: StringMap = "software_version",
        /// Free-form map.
        other_config: StringMap = "other_config",
        /// PBDs (one per SR it can reach).
        pbds: Vec<Ref<Pbd>> = "PBDs",
        /// Physical interfaces.
        pifs: Vec<Ref<Pif>> = "PIFs",
        /// VMs running here.
        resident_vms: Vec<Ref<Vm>> = "resident_VMs",
        /// Host name.
        hostname: String = "hostname",
        /// Management address (used by `HOST_IS_SLAVE` and HTTP 302 `Location`).
        address: String = "address",
        /// API major version.
        api_version_major: i64 = "API_version_major",
        /// API minor version.
        api_version_minor: i64 = "API_version_minor",
        /// dom0 of this host.
        control_domain: Ref<Vm> = "control_domain",
        /// Port 80 closed (newer hosts).
        https_only: bool = "https_only",
    }
}

record! {
    /// `SR` record.
    pub struct SrRecord for Sr {
        /// Stable id.
        uuid: String = "uuid",
        /// Name.
        name_label: String = "name_label",
        /// Description.
        name_description: String = "name_description",
        /// Allowed storage operations.
        allowed_operations: Vec<String> = "allowed_operations",
        /// Operations in progress (task → operation).
        current_operations: StringMap = "current_operations",
        /// Disks.
        vdis: Vec<Ref<Vdi>> = "VDIs",
        /// Host attachments.
        pbds: Vec<Ref<Pbd>> = "PBDs",
        /// Bytes allocated on the SR.
        virtual_allocation: i64 = "virtual_allocation",
        /// Bytes used.
        physical_utilisation: i64 = "physical_utilisation",
        /// Size in bytes.
        physical_size: i64 = "physical_size",
        /// SM driver (`ext`, `lvm`, `nfs`, ...).
        sr_type: String = "type",
        /// `user`, `iso`, `disk`, ...
        content_type: String = "content_type",
        /// Shared between hosts.
        shared: bool = "shared",
        /// Free-form map.
        other_config: StringMap = "other_config",
        /// Tags.
        tags: Vec<String> = "tags",
        /// SM data (`use_vhd`, ...).
        sm_config: StringMap = "sm_config",
        /// The tools ISO SR.
        is_tools_sr: bool = "is_tools_sr",
        /// Clustered storage.
        clustered: bool = "clustered",
    }
}

record! {
    /// `PBD` record (`device_config` is left out on purpose: it may hold storage passwords;
    /// read it with `get_field` if you must).
    pub struct PbdRecord for Pbd {
        /// Stable id.
        uuid: String = "uuid",
        /// The host.
        host: Ref<Host> = "host",
        /// The SR.
        sr: Ref<Sr> = "SR",
        /// SR plugged on that host.
        currently_attached: bool = "currently_attached",
        /// Free-form map.
        other_config: StringMap = "other_config",
    }
}

record! {
    /// `VDI` record.
    pub struct VdiRecord for Vdi {
        /// Stable id.
        uuid: String = "uuid",
        /// Name.
        name_label: String = "name_label",
        /// Description.
        name_description: String = "name_description",
        /// Allowed operations.
        allowed_operations: Vec<String> = "allowed_operations",
        /// Operations in progress (task → operation).
        current_operations: StringMap = "current_operations",
        /// The SR.
        sr: Ref<Sr> = "SR",
        /// Attachments (dom0 ones included).
        vbds: Vec<Ref<Vbd>> = "VBDs",
        /// Size in bytes (SM may have rounded it up).
        virtual_size: i64 = "virtual_size",
        /// Bytes on disk.
        physical_utilisation: i64 = "physical_utilisation",
        /// Kind of disk.
        vdi_type: VdiType = "type",
        /// Attachable by several VMs.
        sharable: bool = "sharable",
        /// Read-only.
        read_only: bool = "read_only",
        /// Free-form map (copied to snapshots and clones).
        other_config: StringMap = "other_config",
        /// Locked by storage.
        storage_lock: bool = "storage_lock",
        /// SM location.
        location: String = "location",
        /// False for hidden VHD parents.
        managed: bool = "managed",
        /// Missing from the SR after a scan.
        missing: bool = "missing",
        /// xenstore entries.
        xenstore_data: StringMap = "xenstore_data",
        /// SM data (`vhd-parent`, `image-format`, ...).
        sm_config: StringMap = "sm_config",
        /// A snapshot.
        is_a_snapshot: bool = "is_a_snapshot",
        /// Source of this snapshot.
        snapshot_of: Ref<Vdi> = "snapshot_of",
        /// Snapshots of this disk.
        snapshots: Vec<Ref<Vdi>> = "snapshots",
        /// When snapshotted (epoch when not a snapshot).
        snapshot_time: DateTime = "snapshot_time",
        /// Tags.
        tags: Vec<String> = "tags",
        /// Read caching allowed.
        allow_caching: bool = "allow_caching",
        /// Persist or reset at boot.
        on_boot: OnBoot = "on_boot",
        /// Changed block tracking on.
        cbt_enabled: bool = "cbt_enabled",
    }
}

record! {
    /// `VBD` record.
    pub struct VbdRecord for Vbd {
        /// Stable id.
        uuid: String = "uuid",
        /// Allowed operations.
        allowed_operations: Vec<String> = "allowed_operations",
        /// Operations in progress.
        current_operations: StringMap = "current_operations",
        /// The VM.
        vm: Ref<Vm> = "VM",
        /// The disk (null for an empty CD).
        vdi: Ref<Vdi> = "VDI",
        /// Device name set at plug (`xvda`).
        device: String = "device",
        /// Slot (`"0"`, `"1"`, ...).
        userdevice: String = "userdevice",
        /// Bootable.
        bootable: bool = "bootable",
        /// RO or RW.
        mode: VbdMode = "mode",
        /// CD, Disk or Floppy.
        vbd_type: VbdType = "type",
        /// Hot-unpluggable.
        unpluggable: bool = "unpluggable",
        /// Locked by storage.
        storage_lock: bool = "storage_lock",
        /// Empty drive.
        empty: bool = "empty",
        /// Free-form map.
        other_config: StringMap = "other_config",
        /// Plugged.
        currently_attached: bool = "currently_attached",
        /// Last plug status.
        status_code: i64 = "status_code",
        /// Last plug message.
        status_detail: String = "status_detail",
        /// Runtime data.
        runtime_properties: StringMap = "runtime_properties",
        /// QoS algorithm.
        qos_algorithm_type: String = "qos_algorithm_type",
        /// QoS parameters.
        qos_algorithm_params: StringMap = "qos_algorithm_params",
    }
}

record! {
    /// `VIF` record.
    pub struct VifRecord for Vif {
        /// Stable id.
        uuid: String = "uuid",
        /// Allowed operations.
        allowed_operations: Vec<String> = "allowed_operations",
        /// Operations in progress.
        current_operations: StringMap = "current_operations",
        /// Device number (`"0"`, ...).
        device: String = "device",
        /// The network.
        network: Ref<Network> = "network",
        /// The VM.
        vm: Ref<Vm> = "VM",
        /// MAC address.
        mac: String = "MAC",
        /// MTU.
        mtu: i64 = "MTU",
        /// Free-form map.
        other_config: StringMap = "other_config",
        /// Plugged.
        currently_attached: bool = "currently_attached",
        /// Last plug status.
        status_code: i64 = "status_code",
        /// Last plug message.
        status_detail: String = "status_detail",
        /// Runtime data.
        runtime_properties: StringMap = "runtime_properties",
        /// QoS algorithm.
        qos_algorithm_type: String = "qos_algorithm_type",
        /// QoS parameters.
        qos_algorithm_params: StringMap = "qos_algorithm_params",
        /// MAC generated by xapi.
        mac_autogenerated: bool = "MAC_autogenerated",
        /// Locking mode.
        locking_mode: VifLockingMode = "locking_mode",
        /// Allowed IPv4 addresses.
        ipv4_allowed: Vec<String> = "ipv4_allowed",
        /// Allowed IPv6 addresses.
        ipv6_allowed: Vec<String> = "ipv6_allowed",
    }
}

record! {
    /// `network` record.
    pub struct NetworkRecord for Network {
        /// Stable id.
        uuid: String = "uuid",
        /// Name.
        name_label: String = "name_label",
        /// Description.
        name_description: String = "name_description",
        /// VIFs on it.
        vifs: Vec<Ref<Vif>> = "VIFs",
        /// PIFs on it.
        pifs: Vec<Ref<Pif>> = "PIFs",
        /// MTU.
        mtu: i64 = "MTU",
        /// Free-form map.
        other_config: StringMap = "other_config",
        /// dom0 bridge.
        bridge: String = "bridge",
        /// Managed by xapi.
        managed: bool = "managed",
        /// Tags.
        tags: Vec<String> = "tags",
        /// NBD enablement.
        purpose: Vec<NetworkPurpose> = "purpose",
    }
}

record! {
    /// `PIF` record.
    pub struct PifRecord for Pif {
        /// Stable id.
        uuid: String = "uuid",
        /// `eth0`, ...
        device: String = "device",
        /// Network.
        network: Ref<Network> = "network",
        /// Host.
        host: Ref<Host> = "host",
        /// MAC address.
        mac: String = "MAC",
        /// MTU.
        mtu: i64 = "MTU",
        /// VLAN tag, -1 for none.
        vlan: i64 = "VLAN",
        /// Physical NIC.
        physical: bool = "physical",
        /// Plugged.
        currently_attached: bool = "currently_attached",
        /// IPv4 mode.
        ip_configuration_mode: IpConfigurationMode = "ip_configuration_mode",
        /// IPv4 address (no prefix).
        ip: String = "IP",
        /// Netmask.
        netmask: String = "netmask",
        /// Gateway.
        gateway: String = "gateway",
        /// DNS servers.
        dns: String = "DNS",
        /// Carries the management address.
        management: bool = "management",
        /// Free-form map.
        other_config: StringMap = "other_config",
        /// IPv6 mode.
        ipv6_configuration_mode: Ipv6ConfigurationMode = "ipv6_configuration_mode",
        /// IPv6 addresses in CIDR form (`addr/prefix`).
        ipv6: Vec<String> = "IPv6",
        /// IPv6 gateway.
        ipv6_gateway: String = "ipv6_gateway",
        /// Primary address family.
        primary_address_type: PrimaryAddressType = "primary_address_type",
        /// Managed by xapi.
        managed: bool = "managed",
    }
}

record! {
    /// `VM` record (templates, snapshots and dom0s are VMs too: check `is_a_template`,
    /// `is_a_snapshot`, `is_control_domain`).
    pub struct VmRecord for Vm {
        /// Stable id.
        uuid: String = "uuid",
        /// Allowed operations.
        allowed_operations: Vec<String> = "allowed_operations",
        /// Operations in progress (task → operation).
        current_operations: StringMap = "current_operations",
        /// Name.
        name_label: String = "name_label",
        /// Description.
        name_description: String = "name_description",
        /// Power state.
        power_state: PowerState = "power_state",
        /// User version.
        user_version: i64 = "user_version",
        /// A template.
        is_a_template: bool = "is_a_template",
        /// A default (built-in) template.
        is_default_template: bool = "is_default_template",
        /// Suspend image.
        suspend_vdi: Ref<Vdi> = "suspend_VDI",
        /// Host it runs on.
        resident_on: Ref<Host> = "resident_on",
        /// Preferred host.
        affinity: Ref<Host> = "affinity",
        /// Memory overhead, bytes.
        memory_overhead: i64 = "memory_overhead",
        /// Deprecated target, bytes.
        memory_target: i64 = "memory_target",
        /// Static maximum, bytes.
        memory_static_max: i64 = "memory_static_max",
        /// Dynamic maximum, bytes.
        memory_dynamic_max: i64 = "memory_dynamic_max",
        /// Dynamic minimum, bytes.
        memory_dynamic_min: i64 = "memory_dynamic_min",
        /// Static minimum, bytes.
        memory_static_min: i64 = "memory_static_min",
        /// VCPU parameters.
        vcpus_params: StringMap = "VCPUs_params",
        /// Maximum VCPUs.
        vcpus_max: i64 = "VCPUs_max",
        /// VCPUs at boot.
        vcpus_at_startup: i64 = "VCPUs_at_startup",
        /// `destroy` or `restart`.
        actions_after_shutdown: String = "actions_after_shutdown",
        /// `destroy` or `restart`.
        actions_after_reboot: String = "actions_after_reboot",
        /// `destroy`, `restart`, `preserve`, ...
        actions_after_crash: String = "actions_after_crash",
        /// Consoles.
        consoles: Vec<Ref<Console>> = "consoles",
        /// Virtual interfaces.
        vifs: Vec<Ref<Vif>> = "VIFs",
        /// Virtual disks.
        vbds: Vec<Ref<Vbd>> = "VBDs",
        /// PV bootloader.
        pv_bootloader: String = "PV_bootloader",
        /// PV kernel.
        pv_kernel: String = "PV_kernel",
        /// PV ramdisk.
        pv_ramdisk: String = "PV_ramdisk",
        /// PV kernel arguments.
        pv_args: String = "PV_args",
        /// PV bootloader arguments.
        pv_bootloader_args: String = "PV_bootloader_args",
        /// Legacy PV arguments.
        pv_legacy_args: String = "PV_legacy_args",
        /// Deprecated HVM boot policy.
        hvm_boot_policy: String = "HVM_boot_policy",
        /// HVM boot parameters.
        hvm_boot_params: StringMap = "HVM_boot_params",
        /// Shadow memory multiplier.
        hvm_shadow_multiplier: f64 = "HVM_shadow_multiplier",
        /// Platform flags.
        platform: StringMap = "platform",
        /// Deprecated PCI bus.
        pci_bus: String = "PCI_bus",
        /// Free-form map (`mac_seed`, Xen Orchestra's `xo:*` keys).
        other_config: StringMap = "other_config",
        /// Domain id while running.
        domid: i64 = "domid",
        /// Domain architecture.
        domarch: String = "domarch",
        /// dom0 of some host.
        is_control_domain: bool = "is_control_domain",
        /// Metrics object.
        metrics: Ref<VmMetrics> = "metrics",
        /// Guest metrics object.
        guest_metrics: Ref<VmGuestMetrics> = "guest_metrics",
        /// Recommendations XML.
        recommendations: String = "recommendations",
        /// xenstore entries.
        xenstore_data: StringMap = "xenstore_data",
        /// HA always run (deprecated).
        ha_always_run: bool = "ha_always_run",
        /// HA priority.
        ha_restart_priority: String = "ha_restart_priority",
        /// A snapshot.
        is_a_snapshot: bool = "is_a_snapshot",
        /// Source of this snapshot.
        snapshot_of: Ref<Vm> = "snapshot_of",
        /// Snapshots of this VM.
        snapshots: Vec<Ref<Vm>> = "snapshots",
        /// When snapshotted (epoch when not a snapshot).
        snapshot_time: DateTime = "snapshot_time",
        /// Transportable snapshot id.
        transportable_snapshot_id: String = "transportable_snapshot_id",
        /// Tags.
        tags: Vec<String> = "tags",
        /// Blocked operations (operation → reason).
        blocked_operations: StringMap = "blocked_operations",
        /// Snapshot info (`power-state-at-snapshot`, ...).
        snapshot_info: StringMap = "snapshot_info",
        /// Serialized source record of a snapshot.
        snapshot_metadata: String = "snapshot_metadata",
        /// Parent in the snapshot tree.
        parent: Ref<Vm> = "parent",
        /// Children in the snapshot tree.
        children: Vec<Ref<Vm>> = "children",
        /// BIOS strings.
        bios_strings: StringMap = "bios_strings",
        /// Start order.
        order: i64 = "order",
        /// Start delay, seconds.
        start_delay: i64 = "start_delay",
        /// Shutdown delay, seconds.
        shutdown_delay: i64 = "shutdown_delay",
        /// Virtual hardware platform version.
        hardware_platform_version: i64 = "hardware_platform_version",
        /// Has the vendor device.
        has_vendor_device: bool = "has_vendor_device",
        /// Generation id.
        generation_id: String = "generation_id",
        /// Reference label.
        reference_label: String = "reference_label",
        /// Domain type.
        domain_type: DomainType = "domain_type",
        /// UEFI variables.
        nvram: StringMap = "NVRAM",
    }
}

/// Fields of a VM record that `VM.create` takes (SRO and RW fields, spec §3.10), in the order
/// [`VmRecord::create_args`] writes them.
const VM_CREATE_FIELDS: &[&str] = &[
    "name_label",
    "name_description",
    "user_version",
    "is_a_template",
    "affinity",
    "memory_target",
    "memory_static_max",
    "memory_dynamic_max",
    "memory_dynamic_min",
    "memory_static_min",
    "VCPUs_params",
    "VCPUs_max",
    "VCPUs_at_startup",
    "actions_after_shutdown",
    "actions_after_reboot",
    "actions_after_crash",
    "PV_bootloader",
    "PV_kernel",
    "PV_ramdisk",
    "PV_args",
    "PV_bootloader_args",
    "PV_legacy_args",
    "HVM_boot_policy",
    "HVM_boot_params",
    "HVM_shadow_multiplier",
    "platform",
    "PCI_bus",
    "other_config",
    "recommendations",
    "xenstore_data",
    "ha_always_run",
    "ha_restart_priority",
    "tags",
    "blocked_operations",
    "order",
    "start_delay",
    "shutdown_delay",
    "hardware_platform_version",
    "has_vendor_device",
    "reference_label",
    "domain_type",
    "NVRAM",
];

impl VmRecord {
    /// The `VM.create` argument built from this record: its constructor fields only (DRO
    /// fields such as `power_state` are not accepted by xapi). xapi ignores
    /// `blocked_operations` here: set it afterwards.
    pub fn create_args(&self) -> Value {
        let Value::Struct(members) = self.to_value() else {
            return Value::Struct(Vec::new());
        };
        Value::Struct(
            members
                .into_iter()
                .filter(|(name, _)| VM_CREATE_FIELDS.contains(&name.as_str()))
                .collect(),
        )
    }
}

record! {
    /// `task` record.
    pub struct TaskRecord for Task {
        /// Stable id.
        uuid: String = "uuid",
        /// Operation (`Async.VM.snapshot`, ...).
        name_label: String = "name_label",
        /// Description.
        name_description: String = "name_description",
        /// `cancel` while cancellable.
        allowed_operations: Vec<String> = "allowed_operations",
        /// Requested `cancel`/`destroy`.
        current_operations: StringMap = "current_operations",
        /// Creation time.
        created: DateTime = "created",
        /// Completion time (meaningless while pending).
        finished: DateTime = "finished",
        /// Status.
        status: TaskStatus = "status",
        /// Host running it.
        resident_on: Ref<Host> = "resident_on",
        /// 0.0 to 1.0.
        progress: f64 = "progress",
        /// Informational type.
        task_type: String = "type",
        /// XML-RPC fragment of the result (`""` for none): see `codec::xmlrpc::decode_task_result`.
        result: String = "result",
        /// `[CODE, params...]` on failure or cancellation.
        error_info: Vec<String> = "error_info",
        /// Free-form map.
        other_config: StringMap = "other_config",
        /// Parent task.
        subtask_of: Ref<Task> = "subtask_of",
        /// Child tasks.
        subtasks: Vec<Ref<Task>> = "subtasks",
    }
}

record! {
    /// `VM_guest_metrics` record.
    pub struct VmGuestMetricsRecord for VmGuestMetrics {
        /// Stable id.
        uuid: String = "uuid",
        /// `name`, `distro`, `major`, ...
        os_version: StringMap = "os_version",
        /// Driver version parts.
        pv_drivers_version: StringMap = "PV_drivers_version",
        /// Deprecated.
        pv_drivers_up_to_date: bool = "PV_drivers_up_to_date",
        /// Always empty.
        memory: StringMap = "memory",
        /// Always empty.
        disks: StringMap = "disks",
        /// `<dev>/ip`, `<dev>/ipv4/<n>`, ... → address.
        networks: StringMap = "networks",
        /// Other guest data.
        other: StringMap = "other",
        /// Last update.
        last_updated: DateTime = "last_updated",
        /// Free-form map.
        other_config: StringMap = "other_config",
        /// Agent alive.
        live: bool = "live",
        /// Hotplug VBD support.
        can_use_hotplug_vbd: Tristate = "can_use_hotplug_vbd",
        /// Hotplug VIF support.
        can_use_hotplug_vif: Tristate = "can_use_hotplug_vif",
        /// Drivers detected.
        pv_drivers_detected: bool = "PV_drivers_detected",
        /// Guest NetBIOS name (newer hosts).
        netbios_name: StringMap = "netbios_name",
    }
}

/// One entry of `VDI.get_nbd_info` (`vdi_nbd_server_info`). `exportname` embeds the caller's
/// session, so `Debug` redacts it.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct NbdInfo {
    /// `/<vdi-uuid>?session_id=<session ref>`: a secret.
    pub exportname: String,
    /// One IPv4 or IPv6 address (IPv6 may come in CIDR form).
    pub address: String,
    /// Always 10809.
    pub port: i64,
    /// PEM certificate of the host.
    pub cert: String,
    /// DNS name to verify the certificate against.
    pub subject: String,
}

impl fmt::Debug for NbdInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NbdInfo")
            .field("exportname", &"<redacted>")
            .field("address", &self.address)
            .field("port", &self.port)
            .field("subject", &self.subject)
            .finish_non_exhaustive()
    }
}

impl FromValue for NbdInfo {
    fn from_value(value: Value) -> Result<Self, Error> {
        let Value::Struct(members) = value else {
            return Err(mismatch("record", &value));
        };
        let mut info = NbdInfo::default();
        for (name, item) in members {
            let field = |error: Error| error.with_field(&name);
            match name.as_str() {
                "exportname" => info.exportname = String::from_value(item).map_err(field)?,
                "address" => info.address = String::from_value(item).map_err(field)?,
                "port" => info.port = i64::from_value(item).map_err(field)?,
                "cert" => info.cert = String::from_value(item).map_err(field)?,
                "subject" => info.subject = String::from_value(item).map_err(field)?,
                _ => {}
            }
        }
        Ok(info)
    }
}

xapi_enum! {
    /// `event.from` operation.
    pub enum EventOperation default Mod {
        /// Object created (or present at the first call).
        Add = "add",
        /// Object modified.
        Mod = "mod",
        /// Object deleted (no snapshot).
        Del = "del",
    }
}

/// One event of an `event.from` batch.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Event {
    /// DB generation, decimal string.
    pub id: String,
    /// Lower-case class name (`vm`, `vdi`, `task`).
    pub class: String,
    /// add / mod / del.
    pub operation: EventOperation,
    /// The object's ref (cast it with `Ref::new` / `Ref::cast`).
    pub reference: String,
    /// The full record as `get_record` returns it; `None` for `del`.
    pub snapshot: Option<Value>,
}

/// The result of `event.from`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EventBatch {
    /// Events, coalesced per object.
    pub events: Vec<Event>,
    /// Row count of every table (lower-case table name).
    pub valid_ref_counts: BTreeMap<String, i64>,
    /// Token for the next call.
    pub token: String,
}

impl FromValue for Event {
    fn from_value(value: Value) -> Result<Self, Error> {
        let Value::Struct(members) = value else {
            return Err(mismatch("event", &value));
        };
        let mut event = Event::default();
        for (name, item) in members {
            match name.as_str() {
                "id" => {
                    event.id = String::from_value(item).map_err(|error| error.with_field("id"))?
                }
                "class" => {
                    event.class =
                        String::from_value(item).map_err(|error| error.with_field("class"))?
                }
                "operation" => {
                    event.operation = EventOperation::from_value(item)
                        .map_err(|error| error.with_field("operation"))?
                }
                "ref" => {
                    event.reference =
                        String::from_value(item).map_err(|error| error.with_field("ref"))?
                }
                "snapshot" => event.snapshot = Some(item),
                _ => {}
            }
        }
        Ok(event)
    }
}

impl FromValue for EventBatch {
    fn from_value(value: Value) -> Result<Self, Error> {
        let Value::Struct(members) = value else {
            return Err(mismatch("event batch", &value));
        };
        let mut batch = EventBatch::default();
        for (name, item) in members {
            match name.as_str() {
                "events" => {
                    batch.events =
                        Vec::from_value(item).map_err(|error| error.with_field("events"))?
                }
                "valid_ref_counts" => {
                    batch.valid_ref_counts = BTreeMap::from_value(item)
                        .map_err(|error| error.with_field("valid_ref_counts"))?;
                }
                "token" => {
                    batch.token =
                        String::from_value(item).map_err(|error| error.with_field("token"))?
                }
                _ => {}
            }
        }
        Ok(batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{jsonrpc, xmlrpc};

    #[test]
    fn enums_keep_unknown_values() {
        assert_eq!(PowerState::parse("Running"), PowerState::Running);
        assert_eq!(PowerState::parse("running"), PowerState::Running);
        assert_eq!(
            PowerState::parse("Crashed"),
            PowerState::Unknown("Crashed".into())
        );
        assert_eq!(
            Value::from(PowerState::Unknown("Crashed".into())),
            Value::from("Crashed")
        );
        assert_eq!(VdiType::parse("cbt_metadata"), VdiType::CbtMetadata);
    }

    #[test]
    fn vdi_record_from_both_transports() {
        // The spec §1.2 fragment over XML-RPC (ints untyped) and its JSON equivalent.
        let xml = "<value><struct><member><name>uuid</name><value>9f2b</value></member><member><name>virtual_size</name><value>10737418240</value></member><member><name>sharable</name><value><boolean>0</boolean></value></member><member><name>type</name><value>user</value></member><member><name>snapshot_time</name><value><dateTime.iso8601>19700101T00:00:00Z</dateTime.iso8601></value></member><member><name>SR</name><value>OpaqueRef:5e1f</value></member><member><name>VBDs</name><value><array><data></data></array></value></member><member><name>sm_config</name><value><struct><member><name>vhd-parent</name><value>1c2d</value></member></struct></value></member><member><name>future_field</name><value>x</value></member></struct></value>";
        let json = r#"{"uuid":"9f2b","virtual_size":10737418240,"sharable":false,"type":"user","snapshot_time":"19700101T00:00:00Z","SR":"OpaqueRef:5e1f","VBDs":[],"sm_config":{"vhd-parent":"1c2d"},"future_field":"x"}"#;
        let from_xml: VdiRecord = xmlrpc::decode_value(xml.as_bytes())
            .unwrap()
            .decode()
            .unwrap();
        let from_json: VdiRecord = jsonrpc::decode_value(json.as_bytes())
            .unwrap()
            .decode()
            .unwrap();
        assert_eq!(from_xml, from_json);
        assert_eq!(from_xml.virtual_size, 10_737_418_240);
        assert_eq!(from_xml.vdi_type, VdiType::User);
        assert_eq!(from_xml.sr, Ref::new("OpaqueRef:5e1f"));
        assert_eq!(
            from_xml.sm_config.get("vhd-parent").map(String::as_str),
            Some("1c2d")
        );
        assert_eq!(from_xml.snapshot_time, DateTime::EPOCH);
    }

    #[test]
    fn record_round_trip_and_field_errors() {
        let vm = VmRecord {
            name_label: "web01".into(),
            memory_static_max: 4 << 30,
            power_state: PowerState::Running,
            hvm_shadow_multiplier: 1.0,
            ..VmRecord::default()
        };
        let back: VmRecord = vm.to_value().decode().unwrap();
        assert_eq!(back, vm);
        let args = vm.create_args();
        assert!(args.get("power_state").is_none());
        assert_eq!(args.get("name_label"), Some(&Value::from("web01")));

        let bad = Value::structure([("memory_static_max", Value::from("lots"))]);
        let error = bad.decode::<VmRecord>().unwrap_err();
        assert!(error.to_string().contains("memory_static_max"), "{error}");
    }

    #[test]
    fn event_batch() {
        let json = r#"{"events":[{"id":"118733","timestamp":"0.0","class":"task","operation":"mod","ref":"OpaqueRef:44e0","snapshot":{"status":"success","progress":1.0,"result":"<value>OpaqueRef:9b7c</value>","error_info":[]}},{"id":"5","class":"vm","operation":"del","ref":"OpaqueRef:1"}],"valid_ref_counts":{"vm":14,"task":3},"token":"00000000000000118733,00000000000000000000"}"#;
        let batch: EventBatch = jsonrpc::decode_value(json.as_bytes())
            .unwrap()
            .decode()
            .unwrap();
        assert_eq!(batch.events.len(), 2);
        let task: TaskRecord = batch.events[0].snapshot.clone().unwrap().decode().unwrap();
        assert_eq!(task.status, TaskStatus::Success);
        assert_eq!(batch.events[1].operation, EventOperation::Del);
        assert!(batch.events[1].snapshot.is_none());
        assert_eq!(batch.valid_ref_counts.get("vm"), Some(&14));
    }

    #[test]
    fn nbd_info_debug_redacts_the_session() {
        let info: NbdInfo = Value::structure([
            (
                "exportname",
                Value::from("/uuid?session_id=OpaqueRef:secret"),
            ),
            ("address", Value::from("192.0.2.1")),
            ("port", Value::from("10809")),
        ])
        .decode()
        .unwrap();
        assert_eq!(info.port, 10809);
        assert!(!format!("{info:?}").contains("secret"));
    }
}
