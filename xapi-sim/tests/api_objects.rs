//! Spec §6 "Objects and errors" and the CBT / NBD-info items of the XAPI core, over XML-RPC.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a failed test"
)]

mod common;
mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::{code, fixture, login, named, s, start, wait_task, xml};
use xapi_sim::db::ClassId;
use xapi_sim::{DiskSpec, NetworkSpec, PoolSpec, Size, SrSpec, VmSpec};
use xenapi::Value;
use xenapi::codec::Failure;

struct Api {
    address: SocketAddr,
    session: String,
}

impl Api {
    async fn new(pool: &xapi_sim::Pool) -> Api {
        Api {
            address: pool.master().address,
            session: login(pool).await,
        }
    }

    async fn call(&self, method: &str, params: &[Value]) -> Result<Value, Failure> {
        let mut all = vec![s(&self.session)];
        all.extend_from_slice(params);
        xml(self.address, method, &all).await
    }

    async fn ok(&self, method: &str, params: &[Value]) -> Value {
        self.call(method, params)
            .await
            .unwrap_or_else(|failure| panic!("{method}: {} {:?}", failure.code, failure.params))
    }

    async fn err(&self, method: &str, params: &[Value]) -> (String, Vec<String>) {
        code(self.call(method, params).await)
    }

    async fn get(&self, class: &str, field: &str, reference: &str) -> Value {
        self.ok(&format!("{class}.get_{field}"), &[s(reference)])
            .await
    }

    async fn refs(&self, class: &str, field: &str, reference: &str) -> Vec<String> {
        self.get(class, field, reference).await.decode().unwrap()
    }
}

fn err(code: &str, params: &[&str]) -> (String, Vec<String>) {
    (
        code.to_owned(),
        params.iter().map(|param| (*param).to_owned()).collect(),
    )
}

fn empty_struct() -> Value {
    Value::Struct(Vec::new())
}

#[tokio::test]
async fn refs_lookups_and_map_fields_behave_like_xapi() {
    let pool = start(fixture()).await;
    let api = Api::new(&pool).await;
    let vm = named(&pool, ClassId::Vm, "web01");
    assert!(
        vm.starts_with("OpaqueRef:") && uuid::Uuid::parse_str(&vm["OpaqueRef:".len()..]).is_ok()
    );
    let uuid = api.get("VM", "uuid", &vm).await;
    assert_eq!(
        api.ok("VM.get_by_uuid", std::slice::from_ref(&uuid)).await,
        s(&vm)
    );
    assert_eq!(
        api.err("VM.get_by_uuid", &[s("not-a-uuid")]).await,
        err("UUID_INVALID", &["VM", "not-a-uuid"])
    );
    assert_eq!(
        api.err("VDI.get_uuid", &[s("OpaqueRef:NULL")]).await,
        err("HANDLE_INVALID", &["VDI", "OpaqueRef:NULL"])
    );
    api.ok("VM.add_to_other_config", &[s(&vm), s("key"), s("one")])
        .await;
    assert_eq!(
        api.err("VM.add_to_other_config", &[s(&vm), s("key"), s("two")])
            .await,
        err(
            "MAP_DUPLICATE_KEY",
            &["VM", "other_config", uuid.as_str().unwrap(), "key"]
        )
    );
    api.ok("VM.remove_from_other_config", &[s(&vm), s("absent")])
        .await;
    api.ok("VM.remove_from_other_config", &[s(&vm), s("key")])
        .await;
    api.ok("VM.add_tags", &[s(&vm), s("gold")]).await;
    assert_eq!(api.refs("VM", "tags", &vm).await, ["gold"]);
    assert_eq!(
        api.ok("VM.get_by_name_label", &[s("web01")])
            .await
            .decode::<Vec<String>>()
            .unwrap(),
        vec![vm.clone()]
    );
    assert_eq!(
        api.err("VM.set_uuid", &[s(&vm), s("x")]).await.0,
        "MESSAGE_METHOD_UNKNOWN",
        "DRO fields have no setter"
    );
}

#[tokio::test]
async fn records_are_complete_and_include_dom0_templates_and_snapshots() {
    let pool = start(fixture()).await;
    let api = Api::new(&pool).await;
    let vm = named(&pool, ClassId::Vm, "web01");
    api.ok("VM.snapshot", &[s(&vm), s("snap")]).await;
    let records = api.ok("VM.get_all_records", &[]).await;
    let Value::Struct(records) = records else {
        panic!("a map")
    };
    assert_eq!(records.len(), 6);
    let count = |field: &str| {
        records
            .iter()
            .filter(|(_, record)| record.get(field) == Some(&Value::Bool(true)))
            .count()
    };
    assert_eq!(
        (
            count("is_control_domain"),
            count("is_a_snapshot"),
            count("is_a_template")
        ),
        (2, 1, 2)
    );
    let expected: Vec<&str> = ClassId::Vm
        .fields()
        .iter()
        .map(|field| field.name)
        .collect();
    for (_, record) in &records {
        let Value::Struct(members) = record else {
            panic!("a record")
        };
        let names: Vec<&str> = members.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(names, expected, "every field, in datamodel order");
    }
    for class in [
        "pool",
        "host",
        "SR",
        "PBD",
        "network",
        "PIF",
        "VDI",
        "VBD",
        "VIF",
        "VM_metrics",
        "VM_guest_metrics",
    ] {
        let all = api.ok(&format!("{class}.get_all_records"), &[]).await;
        let class_id = ClassId::from_name(class).unwrap();
        let Value::Struct(all) = all else { panic!() };
        assert!(!all.is_empty(), "{class}");
        let Value::Struct(members) = &all[0].1 else {
            panic!()
        };
        assert_eq!(members.len(), class_id.fields().len(), "{class}");
    }
    let host = pool.master().reference.as_str().to_owned();
    let dom0 = api.get("host", "control_domain", &host).await;
    assert_eq!(
        api.get("VM", "is_control_domain", dom0.as_str().unwrap())
            .await,
        Value::Bool(true)
    );
    assert_eq!(
        api.ok("host.get_server_certificate", &[s(&host)]).await,
        s(pool.certificate_pem())
    );
    let pool_ref = api
        .ok("pool.get_all", &[])
        .await
        .decode::<Vec<String>>()
        .unwrap()
        .remove(0);
    assert_eq!(api.get("pool", "master", &pool_ref).await, s(&host));
}

#[tokio::test]
async fn constructors_require_fields_fill_defaults_and_round_sizes() {
    let pool = start(fixture()).await;
    let api = Api::new(&pool).await;
    let (code, params) = api
        .err("VM.create", &[Value::structure([("name_label", s("x"))])])
        .await;
    assert_eq!(code, "INTERNAL_ERROR");
    assert!(params[0].contains("Dispatcher_FieldNotFound"), "{params:?}");
    // A required field of each other constructor (SR of a VDI, userdevice of a VBD, MAC of
    // a VIF) is missing from otherwise complete records.
    let vm01 = named(&pool, ClassId::Vm, "db01");
    for (method, record) in [
        (
            "VDI.create",
            Value::structure([
                ("virtual_size", Value::Int(1 << 20)),
                ("type", s("user")),
                ("sharable", Value::Bool(false)),
                ("read_only", Value::Bool(false)),
                ("other_config", empty_struct()),
            ]),
        ),
        (
            "VBD.create",
            Value::structure([
                ("VM", s(&vm01)),
                ("VDI", s(&named(&pool, ClassId::Vdi, "db01 disk 0"))),
                ("bootable", Value::Bool(false)),
                ("mode", s("RO")),
                ("type", s("Disk")),
                ("empty", Value::Bool(false)),
                ("other_config", empty_struct()),
                ("qos_algorithm_type", s("")),
                ("qos_algorithm_params", empty_struct()),
            ]),
        ),
        (
            "VIF.create",
            Value::structure([
                ("device", s("3")),
                ("network", s(&named(&pool, ClassId::Network, "NBD network"))),
                ("VM", s(&vm01)),
                ("MTU", Value::Int(1500)),
                ("other_config", empty_struct()),
                ("qos_algorithm_type", s("")),
                ("qos_algorithm_params", empty_struct()),
            ]),
        ),
    ] {
        let (code, params) = api.err(method, &[record]).await;
        assert_eq!(code, "INTERNAL_ERROR", "{method}");
        assert!(
            params[0].contains("Dispatcher_FieldNotFound"),
            "{method}: {params:?}"
        );
    }
    let record = Value::structure([
        ("name_label", s("created")),
        ("user_version", s("1")),
        ("is_a_template", Value::Bool(false)),
        ("affinity", s("OpaqueRef:NULL")),
        ("memory_static_max", Value::Int(1 << 30)),
        ("memory_dynamic_max", Value::Int(1 << 30)),
        ("memory_dynamic_min", Value::Int(1 << 30)),
        ("memory_static_min", Value::Int(1 << 29)),
        ("VCPUs_params", empty_struct()),
        ("VCPUs_max", Value::Int(2)),
        ("VCPUs_at_startup", Value::Int(2)),
        ("actions_after_shutdown", s("destroy")),
        ("actions_after_reboot", s("Restart")),
        ("actions_after_crash", s("restart")),
        ("PV_bootloader", s("")),
        ("PV_kernel", s("")),
        ("PV_ramdisk", s("")),
        ("PV_args", s("")),
        ("PV_bootloader_args", s("")),
        ("PV_legacy_args", s("")),
        ("HVM_boot_policy", s("BIOS order")),
        ("HVM_boot_params", empty_struct()),
        ("platform", empty_struct()),
        ("PCI_bus", s("")),
        ("other_config", Value::structure([("mine", s("1"))])),
        ("recommendations", s("")),
        ("blocked_operations", Value::structure([("start", s("no"))])),
    ]);
    let vm = api.ok("VM.create", &[record]).await;
    let vm = vm.as_str().unwrap();
    assert_eq!(
        api.get("VM", "blocked_operations", vm).await,
        empty_struct(),
        "ignored by VM.create"
    );
    let other_config: std::collections::BTreeMap<String, String> =
        api.get("VM", "other_config", vm).await.decode().unwrap();
    assert!(other_config.contains_key("mac_seed") && other_config.contains_key("mine"));
    assert_eq!(
        api.get("VM", "actions_after_reboot", vm).await,
        s("restart"),
        "enums match case-insensitively"
    );
    assert_eq!(api.get("VM", "power_state", vm).await, s("Halted"));
    assert_eq!(
        api.get("VM", "HVM_shadow_multiplier", vm).await,
        Value::Double(1.0),
        "default"
    );

    let sr = named(&pool, ClassId::Sr, "Local storage");
    let vdi_record = |size: i64, vdi_type: &str| {
        Value::structure([
            ("SR", s(&sr)),
            ("virtual_size", Value::Int(size)),
            ("type", s(vdi_type)),
            ("sharable", Value::Bool(false)),
            ("read_only", Value::Bool(false)),
            ("other_config", empty_struct()),
            ("name_label", s("new disk")),
        ])
    };
    let vdi = api.ok("VDI.create", &[vdi_record(1_000_000, "user")]).await;
    assert_eq!(
        api.get("VDI", "virtual_size", vdi.as_str().unwrap())
            .await
            .decode::<i64>()
            .unwrap(),
        2 << 20
    );
    assert_eq!(
        api.err("VDI.create", &[vdi_record(1 << 20, "cbt_metadata")])
            .await,
        err("VDI_INCOMPATIBLE_TYPE", &["", "cbt_metadata"])
    );
    let iso = named(&pool, ClassId::Sr, "ISO library");
    let mut on_iso = vdi_record(1 << 20, "user");
    if let Value::Struct(members) = &mut on_iso {
        members[0].1 = s(&iso);
    }
    assert_eq!(
        api.err("VDI.create", &[on_iso]).await,
        err("SR_OPERATION_NOT_SUPPORTED", &[&iso])
    );
    let network = api
        .ok(
            "network.create",
            &[Value::structure([
                ("name_label", s("n")),
                ("other_config", empty_struct()),
            ])],
        )
        .await;
    assert_eq!(
        api.get("network", "MTU", network.as_str().unwrap())
            .await
            .decode::<i64>()
            .unwrap(),
        1500
    );
}

#[tokio::test]
async fn lifecycle_checks_run_in_xapis_order() {
    let pool = start(fixture()).await;
    let api = Api::new(&pool).await;
    let web = named(&pool, ClassId::Vm, "web01");
    let db01 = named(&pool, ClassId::Vm, "db01");
    let template = named(&pool, ClassId::Vm, "Debian template");
    let start = |vm: &str| vec![s(vm), Value::Bool(false), Value::Bool(false)];
    assert_eq!(
        api.err("VM.destroy", &[s(&web)]).await,
        err("OPERATION_BLOCKED", &[&web, "protected by the tests"]),
        "blocked first"
    );
    api.ok(
        "VM.remove_from_blocked_operations",
        &[s(&web), s("destroy")],
    )
    .await;
    assert_eq!(
        api.err("VM.destroy", &[s(&web)]).await,
        err(
            "VM_BAD_POWER_STATE",
            &[&web, "halted, suspended", "running"]
        )
    );
    api.ok(
        "VM.add_to_blocked_operations",
        &[s(&web), s("start"), s("maintenance")],
    )
    .await;
    assert_eq!(
        api.err("VM.start", &start(&web)).await,
        err("OPERATION_BLOCKED", &[&web, "maintenance"])
    );
    api.ok(
        "VM.set_blocked_operations",
        &[s(&db01), Value::structure([("start", s("frozen"))])],
    )
    .await;
    assert_eq!(
        api.err("VM.start", &start(&db01)).await,
        err("OPERATION_BLOCKED", &[&db01, "frozen"]),
        "start refused when blocked"
    );
    api.ok("VM.set_blocked_operations", &[s(&db01), empty_struct()])
        .await;
    assert_eq!(
        api.err("VM.start", &start(&template)).await,
        err("VM_IS_TEMPLATE", &[&template, "start"])
    );
    assert_eq!(
        api.err("VM.hard_shutdown", &[s(&db01)]).await,
        err(
            "VM_BAD_POWER_STATE",
            &[&db01, "paused, suspended, running", "halted"]
        )
    );
    let snapshot = api.ok("VM.snapshot", &[s(&db01), s("s")]).await;
    let snapshot = snapshot.as_str().unwrap();
    assert_eq!(
        api.err("VM.start", &start(snapshot)).await,
        err("VM_IS_SNAPSHOT", &[snapshot, "start"])
    );
    assert_eq!(
        api.err("VM.snapshot", &[s(snapshot), s("x")]).await,
        err("VM_IS_SNAPSHOT", &[snapshot, "snapshot"])
    );
    let host = pool.master().reference.as_str().to_owned();
    let dom0 = api.get("host", "control_domain", &host).await;
    assert_eq!(
        api.err("VM.snapshot", &[dom0, s("x")]).await,
        err(
            "OPERATION_NOT_ALLOWED",
            &["This operation is not allowed on a control domain"]
        )
    );
    assert_eq!(
        api.err("VM.set_is_a_template", &[s(&web), Value::Bool(true)])
            .await,
        err("VM_BAD_POWER_STATE", &[&web, "halted", "running"])
    );
}

#[tokio::test]
async fn power_state_comes_before_concurrency_which_comes_before_template_rules() {
    let pool = start(fixture()).await;
    let api = Api::new(&pool).await;
    let web = named(&pool, ClassId::Vm, "web01");
    let template = named(&pool, ClassId::Vm, "Debian template");
    for method in ["VM.snapshot", "VM.clone"] {
        xml(
            api.address,
            "sim.add_latency",
            &[s(method), Value::Int(1500)],
        )
        .await
        .unwrap();
    }
    // A snapshot is allowed in any power state: it runs on the Running web01.
    let snapshotting = api.ok("Async.VM.snapshot", &[s(&web), s("slow")]).await;
    let cloning = api.ok("Async.VM.clone", &[s(&template), s("slow")]).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        api.err("VM.clone", &[s(&web), s("c")]).await,
        err("VM_BAD_POWER_STATE", &[&web, "halted", "running"]),
        "the power state is checked before the snapshot in progress"
    );
    assert_eq!(
        api.err(
            "VM.start",
            &[s(&template), Value::Bool(false), Value::Bool(false)]
        )
        .await,
        err(
            "OTHER_OPERATION_IN_PROGRESS",
            &["VM", &template, "clone", cloning.as_str().unwrap()]
        ),
        "operations in progress are checked before the template rule"
    );
    for task in [snapshotting, cloning] {
        let record = wait_task(api.address, &api.session, task.as_str().unwrap()).await;
        assert_eq!(record.get("status"), Some(&s("success")));
    }
    assert_eq!(
        api.err(
            "VM.start",
            &[s(&template), Value::Bool(false), Value::Bool(false)]
        )
        .await,
        err("VM_IS_TEMPLATE", &[&template, "start"])
    );
}

#[tokio::test]
async fn vms_start_report_guest_metrics_later_and_shut_down() {
    let pool = start(fixture()).await;
    let api = Api::new(&pool).await;
    let vm = named(&pool, ClassId::Vm, "db01");
    api.ok(
        "VM.start",
        &[s(&vm), Value::Bool(false), Value::Bool(false)],
    )
    .await;
    assert_eq!(api.get("VM", "power_state", &vm).await, s("Running"));
    assert_eq!(
        api.get("VM", "resident_on", &vm).await,
        s(pool.master().reference.as_str())
    );
    let vbd = api.refs("VM", "VBDs", &vm).await.remove(0);
    assert_eq!(
        api.get("VBD", "currently_attached", &vbd).await,
        Value::Bool(true)
    );
    assert_eq!(
        api.get("VM", "guest_metrics", &vm).await,
        s("OpaqueRef:NULL"),
        "no PV drivers yet"
    );
    let started = Instant::now();
    let metrics = loop {
        let metrics = api.get("VM", "guest_metrics", &vm).await;
        if metrics != s("OpaqueRef:NULL") {
            break metrics;
        }
        assert!(started.elapsed() < Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "after the configured delay"
    );
    assert_eq!(
        api.get(
            "VM_guest_metrics",
            "PV_drivers_detected",
            metrics.as_str().unwrap()
        )
        .await,
        Value::Bool(true)
    );
    api.ok("VM.clean_shutdown", &[s(&vm)]).await;
    assert_eq!(api.get("VM", "power_state", &vm).await, s("Halted"));
    assert_eq!(
        api.get("VM", "guest_metrics", &vm).await,
        s("OpaqueRef:NULL")
    );
    assert_eq!(
        api.get("VBD", "currently_attached", &vbd).await,
        Value::Bool(false)
    );
    let web = named(&pool, ClassId::Vm, "web01");
    api.ok("VM.hard_shutdown", &[s(&web)]).await;
    xml(api.address, "sim.set_power_state", &[s(&web), s("running")])
        .await
        .unwrap();
    assert_eq!(api.get("VM", "power_state", &web).await, s("Running"));
}

#[tokio::test]
async fn snapshots_and_clones_copy_records_as_xapi_does() {
    let pool = start(fixture()).await;
    let api = Api::new(&pool).await;
    let vm = named(&pool, ClassId::Vm, "web01");
    for disk in ["web01 disk 0", "web01 disk 1"] {
        api.ok(
            "VDI.add_to_other_config",
            &[s(&named(&pool, ClassId::Vdi, disk)), s("backup"), s(disk)],
        )
        .await;
    }
    let snapshot = api.ok("VM.snapshot", &[s(&vm), s("nightly")]).await;
    let snapshot = snapshot.as_str().unwrap().to_owned();
    assert_eq!(
        api.get("VM", "is_a_template", &snapshot).await,
        Value::Bool(true)
    );
    assert_eq!(
        api.get("VM", "is_a_snapshot", &snapshot).await,
        Value::Bool(true)
    );
    assert_eq!(api.get("VM", "snapshot_of", &snapshot).await, s(&vm));
    assert_eq!(
        api.refs("VM", "snapshots", &vm).await,
        vec![snapshot.clone()]
    );
    assert_ne!(
        api.get("VM", "snapshot_time", &snapshot).await,
        Value::DateTime(xenapi::DateTime::EPOCH)
    );
    assert_eq!(api.get("VM", "power_state", &snapshot).await, s("Halted"));
    assert_eq!(
        api.get("VM", "blocked_operations", &snapshot).await,
        empty_struct()
    );
    assert_eq!(api.get("VM", "parent", &vm).await, s(&snapshot));
    let info: std::collections::BTreeMap<String, String> = api
        .get("VM", "snapshot_info", &snapshot)
        .await
        .decode()
        .unwrap();
    assert_eq!(info["power-state-at-snapshot"], "Running");
    let source_config: std::collections::BTreeMap<String, String> =
        api.get("VM", "other_config", &vm).await.decode().unwrap();
    let config: std::collections::BTreeMap<String, String> = api
        .get("VM", "other_config", &snapshot)
        .await
        .decode()
        .unwrap();
    assert_eq!(config.get("xo:owner").map(String::as_str), Some("alice"));
    assert_eq!(config.get("mac_seed"), source_config.get("mac_seed"));
    assert!(!config.contains_key("xensource_internal") && !config.contains_key("default_template"));
    let api_ref = &api;
    let mac = move |vm: String| async move {
        let vif = api_ref.refs("VM", "VIFs", &vm).await.remove(0);
        api_ref.get("VIF", "MAC", &vif).await
    };
    assert_eq!(
        mac(snapshot.clone()).await,
        mac(vm.clone()).await,
        "snapshot MACs are preserved"
    );
    let vbds = api.refs("VM", "VBDs", &snapshot).await;
    assert_eq!(vbds.len(), 3);
    let source_cd = api
        .refs("VM", "VBDs", &vm)
        .await
        .into_iter()
        .find(|vbd| pool.sim().read(|db| db.str(ClassId::Vbd, vbd, "type")) == "CD")
        .unwrap();
    for vbd in &vbds {
        let vdi = api.get("VBD", "VDI", vbd).await;
        let vdi = vdi.as_str().unwrap();
        if api.get("VBD", "type", vbd).await == s("CD") {
            assert_eq!(
                s(vdi),
                api.get("VBD", "VDI", &source_cd).await,
                "CDs are shared"
            );
            continue;
        }
        let other_config: std::collections::BTreeMap<String, String> =
            api.get("VBD", "other_config", vbd).await.decode().unwrap();
        assert_eq!(other_config.get("owner").map(String::as_str), Some(""));
        assert_eq!(
            api.get("VBD", "currently_attached", vbd).await,
            Value::Bool(false)
        );
        assert_eq!(
            api.get("VDI", "is_a_snapshot", vdi).await,
            Value::Bool(true)
        );
        let source = api.get("VDI", "snapshot_of", vdi).await;
        let source = source.as_str().unwrap();
        for field in ["name_label", "other_config", "type", "sharable", "on_boot"] {
            assert_eq!(
                api.get("VDI", field, vdi).await,
                api.get("VDI", field, source).await,
                "VDI {field} copied"
            );
        }
        assert!(
            api.refs("VDI", "snapshots", source)
                .await
                .contains(&vdi.to_owned())
        );
        assert_eq!(
            api.get("VDI", "cbt_enabled", vdi).await,
            api.get("VDI", "cbt_enabled", source).await
        );
    }
    let clone = api.ok("VM.clone", &[s(&snapshot), s("restored")]).await;
    let clone = clone.as_str().unwrap().to_owned();
    assert_eq!(
        api.get("VM", "is_a_template", &clone).await,
        Value::Bool(true),
        "a clone of a snapshot is a template"
    );
    assert_eq!(
        api.get("VM", "is_a_snapshot", &clone).await,
        Value::Bool(false)
    );
    let clone_config: std::collections::BTreeMap<String, String> = api
        .get("VM", "other_config", &clone)
        .await
        .decode()
        .unwrap();
    assert_ne!(clone_config.get("mac_seed"), config.get("mac_seed"));
    assert_ne!(
        mac(clone.clone()).await,
        mac(vm.clone()).await,
        "clone MACs are regenerated"
    );
    let halted = named(&pool, ClassId::Vm, "db01");
    api.ok(
        "VM.add_to_blocked_operations",
        &[s(&halted), s("start"), s("frozen")],
    )
    .await;
    let plain_clone = api.ok("VM.clone", &[s(&halted), s("twin")]).await;
    assert_eq!(
        api.get("VM", "blocked_operations", plain_clone.as_str().unwrap())
            .await,
        empty_struct(),
        "clones do not inherit blocked operations"
    );
    assert_eq!(
        api.get("VM", "is_a_template", plain_clone.as_str().unwrap())
            .await,
        Value::Bool(false)
    );
    let copy = api
        .ok("VM.copy", &[s(&clone), s("copy"), s("OpaqueRef:NULL")])
        .await;
    assert_eq!(
        api.refs("VM", "VBDs", copy.as_str().unwrap()).await.len(),
        3
    );
}

#[tokio::test]
async fn snapshot_third_parameter_depends_on_the_xapi_version() {
    let old = start(fixture().xapi_version("1.329.0")).await;
    let api = Api::new(&old).await;
    let vm = named(&old, ClassId::Vm, "web01");
    assert_eq!(
        api.err("VM.snapshot", &[s(&vm), s("x"), Value::Array(Vec::new())])
            .await,
        err(
            "MESSAGE_PARAMETER_COUNT_MISMATCH",
            &["VM.snapshot", "2", "3"]
        )
    );
    let new = start(fixture()).await;
    let api = Api::new(&new).await;
    let vm = named(&new, ClassId::Vm, "web01");
    let skipped = named(&new, ClassId::Vdi, "web01 disk 1");
    let snapshot = api
        .ok(
            "VM.snapshot",
            &[s(&vm), s("x"), Value::Array(vec![s(&skipped)])],
        )
        .await;
    assert_eq!(
        api.refs("VM", "VBDs", snapshot.as_str().unwrap())
            .await
            .len(),
        2,
        "ignored disk skipped"
    );
}

#[tokio::test]
async fn destroying_vms_keeps_vdis_and_vdi_destroy_checks_vbds() {
    let pool = start(fixture()).await;
    let api = Api::new(&pool).await;
    let vm = named(&pool, ClassId::Vm, "db01");
    let vdi = named(&pool, ClassId::Vdi, "db01 disk 0");
    let vbd = api.refs("VM", "VBDs", &vm).await.remove(0);
    let handle = pool
        .sim()
        .plug_dom0_vbd(
            &pool.master().reference,
            &xenapi::Ref::new(vdi.as_str()),
            true,
        )
        .unwrap();
    assert_eq!(
        api.refs("VDI", "VBDs", &vdi).await.len(),
        2,
        "the dom0 VBD is visible"
    );
    assert_eq!(
        api.err("VDI.destroy", &[s(&vdi)]).await,
        err("VDI_IN_USE", &[&vdi, "destroy"])
    );
    assert_eq!(
        api.err("VBD.destroy", &[s(handle.as_str())]).await.0,
        "OPERATION_NOT_ALLOWED"
    );
    pool.sim().unplug_dom0_vbd(&handle);
    let snapshot = api.ok("VM.snapshot", &[s(&vm), s("s")]).await;
    let snapshot_vdi = api
        .get(
            "VBD",
            "VDI",
            &api.refs("VM", "VBDs", snapshot.as_str().unwrap())
                .await
                .remove(0),
        )
        .await;
    let snapshot_vbds = api.refs("VM", "VBDs", snapshot.as_str().unwrap()).await;
    let snapshot_vifs = api.refs("VM", "VIFs", snapshot.as_str().unwrap()).await;
    assert!(!snapshot_vbds.is_empty() && !snapshot_vifs.is_empty());
    api.ok("VM.destroy", std::slice::from_ref(&snapshot)).await;
    for (class, reference) in snapshot_vbds
        .iter()
        .map(|vbd| ("VBD", vbd))
        .chain(snapshot_vifs.iter().map(|vif| ("VIF", vif)))
    {
        assert_eq!(
            api.err(&format!("{class}.get_record"), &[s(reference)])
                .await,
            err("HANDLE_INVALID", &[class, reference]),
            "VM.destroy removes its {class}s"
        );
    }
    assert_eq!(
        api.get("VDI", "is_a_snapshot", snapshot_vdi.as_str().unwrap())
            .await,
        Value::Bool(true),
        "VDIs survive"
    );
    assert_eq!(
        api.err("VM.get_record", std::slice::from_ref(&snapshot))
            .await
            .0,
        "HANDLE_INVALID"
    );
    api.ok("VDI.destroy", &[s(&vdi)]).await;
    assert_eq!(
        api.err("VBD.get_record", &[s(&vbd)]).await.0,
        "HANDLE_INVALID",
        "VBD records go with the VDI"
    );
    assert!(api.refs("VM", "VBDs", &vm).await.is_empty());
}

#[tokio::test]
async fn vbd_and_vif_constructors_validate_in_order() {
    let pool = start(fixture()).await;
    let api = Api::new(&pool).await;
    let vm = named(&pool, ClassId::Vm, "db01");
    let vdi = named(&pool, ClassId::Vdi, "db01 disk 0");
    let vbd = |vdi: &str, userdevice: &str, mode: &str, kind: &str, empty: bool| {
        Value::structure([
            ("VM", s(&vm)),
            ("VDI", s(vdi)),
            ("userdevice", s(userdevice)),
            ("bootable", Value::Bool(false)),
            ("mode", s(mode)),
            ("type", s(kind)),
            ("empty", Value::Bool(empty)),
            ("other_config", empty_struct()),
            ("qos_algorithm_type", s("")),
            ("qos_algorithm_params", empty_struct()),
        ])
    };
    assert_eq!(
        api.err("VBD.create", &[vbd(&vdi, "0", "RW", "CD", false)])
            .await,
        err("VBD_CDS_MUST_BE_READONLY", &[]),
        "before the device checks"
    );
    assert_eq!(
        api.err(
            "VBD.create",
            &[vbd("OpaqueRef:NULL", "0", "RO", "Disk", true)]
        )
        .await,
        err("VBD_NOT_REMOVABLE_MEDIA", &["in constructor"]),
        "before the device checks"
    );
    api.ok("VDI.set_read_only", &[s(&vdi), Value::Bool(true)])
        .await;
    assert_eq!(
        api.err("VBD.create", &[vbd(&vdi, "bogus", "RW", "Disk", false)])
            .await,
        err("VDI_READONLY", &[&vdi]),
        "before the device checks"
    );
    api.ok("VDI.set_read_only", &[s(&vdi), Value::Bool(false)])
        .await;
    assert_eq!(
        api.err("VBD.create", &[vbd(&vdi, "bogus", "RW", "Disk", false)])
            .await,
        err("INVALID_DEVICE", &["bogus"])
    );
    assert_eq!(
        api.err("VBD.create", &[vbd(&vdi, "0", "RW", "Disk", false)])
            .await,
        err("DEVICE_ALREADY_EXISTS", &["0"])
    );
    let created = api
        .ok(
            "VBD.create",
            &[vbd(&vdi, "autodetect", "RO", "Disk", false)],
        )
        .await;
    assert_eq!(
        api.get("VBD", "userdevice", created.as_str().unwrap())
            .await,
        s("1")
    );
    let network = named(&pool, ClassId::Network, "NBD network");
    let vif = |device: &str, mac: &str| {
        Value::structure([
            ("device", s(device)),
            ("network", s(&network)),
            ("VM", s(&vm)),
            ("MAC", s(mac)),
            ("MTU", Value::Int(1500)),
            ("other_config", empty_struct()),
            ("qos_algorithm_type", s("")),
            ("qos_algorithm_params", empty_struct()),
        ])
    };
    assert_eq!(
        api.err("VIF.create", &[vif("eth1", "zz:00")]).await,
        err("INVALID_DEVICE", &["eth1"]),
        "the device before the MAC"
    );
    assert_eq!(
        api.err("VIF.create", &[vif("0", "zz:00")]).await,
        err("MAC_INVALID", &["zz:00"]),
        "the MAC before the device's uniqueness"
    );
    assert_eq!(
        api.err("VIF.create", &[vif("0", "")]).await,
        err("DEVICE_ALREADY_EXISTS", &["0"])
    );
    let created = api.ok("VIF.create", &[vif("1", "")]).await;
    assert_eq!(
        api.get("VIF", "MAC_autogenerated", created.as_str().unwrap())
            .await,
        Value::Bool(true)
    );
    assert_eq!(
        api.get("VIF", "MAC", created.as_str().unwrap())
            .await
            .as_str()
            .unwrap()
            .len(),
        17
    );
}

fn bitmap(size: u64, changed_units: &[usize]) -> String {
    let units = usize::try_from(size >> 16).unwrap();
    let mut bytes = vec![0u8; units.div_ceil(8)];
    for unit in changed_units {
        bytes[unit >> 3] |= 0x80 >> (unit & 7);
    }
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[tokio::test]
async fn cbt_calls_check_track_and_destroy_data_like_xapi() {
    let pool = start(fixture().data_destroy_wait(Duration::from_millis(300))).await;
    let api = Api::new(&pool).await;
    let live = named(&pool, ClassId::Vdi, "web01 disk 0");
    let plain = named(&pool, ClassId::Vdi, "web01 disk 1");
    let iso = pool
        .sim()
        .read(|db| {
            db.all(ClassId::Vdi)
                .into_iter()
                .find(|vdi| db.str(ClassId::Vdi, vdi, "name_label") == "web01 disk 2")
        })
        .unwrap();
    let iso_sr = named(&pool, ClassId::Sr, "ISO library");
    assert_eq!(
        api.err("VDI.enable_cbt", &[s(&iso)]).await,
        err("SR_OPERATION_NOT_SUPPORTED", &[&iso_sr])
    );
    api.ok("VDI.enable_cbt", &[s(&live)]).await;
    api.ok("VDI.enable_cbt", &[s(&live)]).await;
    let first = api.ok("VDI.snapshot", &[s(&live)]).await;
    let first = first.as_str().unwrap().to_owned();
    assert_eq!(
        api.get("VDI", "cbt_enabled", &first).await,
        Value::Bool(true)
    );
    assert_eq!(
        api.err("VDI.disable_cbt", &[s(&first)]).await,
        err(
            "OPERATION_NOT_ALLOWED",
            &[&format!("VDI is a snapshot: {first}")]
        )
    );
    xml(
        api.address,
        "sim.guest_write",
        &[s(&live), Value::Int(3 << 20), Value::Int(4), Value::Int(9)],
    )
    .await
    .unwrap();
    xml(
        api.address,
        "sim.guest_write",
        &[s(&live), Value::Int(0), Value::Int(1), Value::Int(9)],
    )
    .await
    .unwrap();
    let second = api.ok("VDI.snapshot", &[s(&live)]).await;
    let second = second.as_str().unwrap().to_owned();
    assert_eq!(
        api.ok("VDI.list_changed_blocks", &[s(&first), s(&second)])
            .await,
        s(&bitmap(64 << 20, &[0, 48]))
    );
    let task = api
        .ok("Async.VDI.list_changed_blocks", &[s(&first), s(&second)])
        .await;
    let record = wait_task(api.address, &api.session, task.as_str().unwrap()).await;
    assert_eq!(
        record.get("result"),
        Some(&s(&format!(
            "<value>{}</value>",
            bitmap(64 << 20, &[0, 48])
        )))
    );
    let same = "Failed to calculate changed blocks for given VDIs. [opterr=Source and target VDI are same]";
    assert_eq!(
        api.err("VDI.list_changed_blocks", &[s(&first), s(&first)])
            .await,
        err("SR_BACKEND_FAILURE_460", &["", same, ""])
    );
    let unrelated = "Failed to calculate changed blocks for given VDIs. [opterr=Source and target VDI are unrelated]";
    assert_eq!(
        api.err("VDI.list_changed_blocks", &[s(&second), s(&first)])
            .await,
        err("SR_BACKEND_FAILURE_460", &["", unrelated, ""])
    );
    assert_eq!(
        api.err("VDI.list_changed_blocks", &[s(&second), s(&live)])
            .await,
        err("VDI_IN_USE", &[&live, "list_changed_blocks"])
    );
    let dom0 = pool
        .sim()
        .plug_dom0_vbd(
            &pool.master().reference,
            &xenapi::Ref::new(second.as_str()),
            true,
        )
        .unwrap();
    assert_eq!(
        api.err("VDI.list_changed_blocks", &[s(&first), s(&second)])
            .await,
        err("VDI_IN_USE", &[&second, "list_changed_blocks"])
    );
    pool.sim().unplug_dom0_vbd(&dom0);

    assert_eq!(
        api.err("VDI.data_destroy", &[s(&live)]).await,
        err(
            "OPERATION_NOT_ALLOWED",
            &[&format!("VDI is not a snapshot: {live}")]
        )
    );
    let plain_snapshot = api.ok("VDI.snapshot", &[s(&plain)]).await;
    assert_eq!(
        api.err("VDI.data_destroy", std::slice::from_ref(&plain_snapshot))
            .await,
        err("VDI_NO_CBT_METADATA", &[plain_snapshot.as_str().unwrap()])
    );
    let held = pool
        .sim()
        .plug_dom0_vbd(
            &pool.master().reference,
            &xenapi::Ref::new(first.as_str()),
            true,
        )
        .unwrap();
    let started = Instant::now();
    assert_eq!(
        api.err("VDI.data_destroy", &[s(&first)]).await,
        err("VDI_IN_USE", &[&first, "data_destroy"])
    );
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "waits for VBDs first"
    );
    let releaser = {
        let sim = pool.sim().clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            sim.unplug_dom0_vbd(&held);
        })
    };
    api.ok("VDI.data_destroy", &[s(&first)]).await;
    releaser.await.unwrap();
    api.ok("VDI.data_destroy", &[s(&first)]).await;
    assert_eq!(api.get("VDI", "type", &first).await, s("cbt_metadata"));
    assert_eq!(
        api.get("VDI", "cbt_enabled", &first).await,
        Value::Bool(true)
    );
    assert_eq!(
        api.ok("VDI.list_changed_blocks", &[s(&first), s(&second)])
            .await,
        s(&bitmap(64 << 20, &[0, 48]))
    );
    for (method, extra) in [
        ("VDI.clone", None),
        ("VDI.snapshot", None),
        ("VDI.copy", None),
        ("VDI.resize", Some(Value::Int(128 << 20))),
        ("VDI.enable_cbt", None),
        ("VDI.disable_cbt", None),
        ("VDI.set_on_boot", Some(s("persist"))),
    ] {
        let mut params = vec![s(&first)];
        params.extend(extra);
        assert_eq!(
            api.err(method, &params).await,
            err("VDI_INCOMPATIBLE_TYPE", &[&first, "cbt_metadata"]),
            "{method}"
        );
    }
    assert_eq!(
        api.err("VDI.get_nbd_info", &[s(&first)]).await,
        err("VDI_INCOMPATIBLE_TYPE", &[&first, "cbt_metadata"])
    );
    let vm = named(&pool, ClassId::Vm, "db01");
    let attach = Value::structure([
        ("VM", s(&vm)),
        ("VDI", s(&first)),
        ("userdevice", s("3")),
        ("bootable", Value::Bool(false)),
        ("mode", s("RO")),
        ("type", s("Disk")),
        ("empty", Value::Bool(false)),
        ("other_config", empty_struct()),
        ("qos_algorithm_type", s("")),
        ("qos_algorithm_params", empty_struct()),
    ]);
    assert_eq!(
        api.err("VBD.create", &[attach]).await,
        err("VDI_INCOMPATIBLE_TYPE", &[&first, "cbt_metadata"])
    );

    xml(api.address, "sim.cbt_truncate_log", &[s(&second)])
        .await
        .unwrap();
    assert_eq!(
        api.err("VDI.list_changed_blocks", &[s(&first), s(&second)])
            .await,
        err(
            "SR_BACKEND_FAILURE_459",
            &[
                "",
                "Changed block tracking log is in an inconsistent state. [opterr=Inconsistent bitmaps]",
                ""
            ]
        )
    );
    // A log found inconsistent at activation: sm disables CBT, so the next query is refused
    // as for any VDI without CBT (460) and the next run must be a full copy.
    let third = api.ok("VDI.snapshot", &[s(&live)]).await;
    xml(api.address, "sim.cbt_mark_inconsistent", &[s(&live)])
        .await
        .unwrap();
    assert_eq!(
        api.get("VDI", "cbt_enabled", &live).await,
        Value::Bool(false)
    );
    let fourth = api.ok("VDI.snapshot", &[s(&live)]).await;
    assert_eq!(
        api.get("VDI", "cbt_enabled", fourth.as_str().unwrap())
            .await,
        Value::Bool(false)
    );
    let (code, params) = api.err("VDI.list_changed_blocks", &[third, fourth]).await;
    assert_eq!(code, "SR_BACKEND_FAILURE_460");
    assert!(
        params.len() == 3
            && params[1].starts_with("Failed to calculate changed blocks for given VDIs. [opterr="),
        "{params:?}"
    );
    api.ok("VDI.disable_cbt", &[s(&live)]).await;
    assert_eq!(
        api.get("VDI", "cbt_enabled", &live).await,
        Value::Bool(false)
    );
}

#[tokio::test]
async fn resize_grows_keeping_data_and_refuses_shrinks_like_sm() {
    const MIB: i64 = 1 << 20;
    async fn virtual_size(api: &Api, disk: &str) -> i64 {
        api.get("VDI", "virtual_size", disk).await.decode().unwrap()
    }
    let pool = start(fixture()).await;
    let api = Api::new(&pool).await;
    let disk = named(&pool, ClassId::Vdi, "db01 disk 0");
    assert_eq!(virtual_size(&api, &disk).await, 16 * MIB);
    // Data up to the last byte, so a lost or shifted tail would show.
    xml(
        api.address,
        "sim.guest_write",
        &[
            s(&disk),
            Value::Int(15 * MIB),
            Value::Int(MIB),
            Value::Int(5),
        ],
    )
    .await
    .unwrap();
    let before = support::vdi_bytes(&pool, &disk);

    // 20 MiB + 1 byte rounds up to whole 2 MiB blocks, as at creation.
    assert_eq!(
        api.ok("VDI.resize", &[s(&disk), Value::Int(20 * MIB + 1)])
            .await,
        Value::void()
    );
    assert_eq!(virtual_size(&api, &disk).await, 22 * MIB);
    let after = support::vdi_bytes(&pool, &disk);
    assert_eq!(after.len(), 22 << 20);
    assert_eq!(after[..16 << 20], before[..], "the data stays");
    assert!(
        after[16 << 20..].iter().all(|byte| *byte == 0),
        "the new tail reads as zeros"
    );
    let mut expected = before.clone();
    expected.resize(22 << 20, 0);
    assert_eq!(
        xml(api.address, "sim.vdi_sha256", &[s(&disk)])
            .await
            .unwrap(),
        s(&hex::encode(support::sha256(&expected)))
    );
    api.ok("VDI.resize", &[s(&disk), Value::Int(22 * MIB)])
        .await;
    assert_eq!(
        virtual_size(&api, &disk).await,
        22 * MIB,
        "the same size is a no-op"
    );

    // sm compares the size asked for before rounding: one byte less is already a shrink.
    for smaller in [8 * MIB, 22 * MIB - 1] {
        assert_eq!(
            api.err("VDI.resize", &[s(&disk), Value::Int(smaller)])
                .await,
            err(
                "SR_BACKEND_FAILURE_79",
                &["", "VDI Invalid size [opterr=shrinking not allowed]", ""]
            ),
            "{smaller}"
        );
    }
    assert_eq!(virtual_size(&api, &disk).await, 22 * MIB);
    assert_eq!(support::vdi_bytes(&pool, &disk), after);

    // Offline resize only: a disk of a running VM is in use.
    let busy = named(&pool, ClassId::Vdi, "web01 disk 1");
    assert_eq!(
        api.err("VDI.resize", &[s(&busy), Value::Int(64 * MIB)])
            .await,
        err("VDI_IN_USE", &[&busy, "resize"])
    );
}

#[tokio::test]
async fn enable_and_disable_cbt_check_in_xapis_order_and_are_idempotent() {
    let pool = start(
        fixture()
            .sr(SrSpec::new("No CBT", "dummy"))
            .vm(VmSpec::new("plain").disk(DiskSpec::new(Size::mib(4)).on_sr("No CBT"))),
    )
    .await;
    let api = Api::new(&pool).await;
    let no_cbt = named(&pool, ClassId::Vdi, "plain disk 0");
    assert_eq!(
        api.err("VDI.enable_cbt", &[s(&no_cbt)]).await,
        err(
            "SR_OPERATION_NOT_SUPPORTED",
            &[&named(&pool, ClassId::Sr, "No CBT")]
        ),
        "the SR type lacks VDI_CONFIG_CBT"
    );
    // Allowed while attached to a running VM; both calls are idempotent.
    let live = named(&pool, ClassId::Vdi, "web01 disk 0");
    let vbd = api.refs("VDI", "VBDs", &live).await.remove(0);
    assert_eq!(
        api.get("VBD", "currently_attached", &vbd).await,
        Value::Bool(true)
    );
    for _ in 0..2 {
        api.ok("VDI.disable_cbt", &[s(&live)]).await;
        assert_eq!(
            api.get("VDI", "cbt_enabled", &live).await,
            Value::Bool(false)
        );
    }
    for _ in 0..2 {
        api.ok("VDI.enable_cbt", &[s(&live)]).await;
        assert_eq!(
            api.get("VDI", "cbt_enabled", &live).await,
            Value::Bool(true)
        );
    }
    let sr = named(&pool, ClassId::Sr, "Local storage");
    let create = |vdi_type: &str| {
        Value::structure([
            ("SR", s(&sr)),
            ("virtual_size", Value::Int(2 << 20)),
            ("type", s(vdi_type)),
            ("sharable", Value::Bool(false)),
            ("read_only", Value::Bool(false)),
            ("other_config", empty_struct()),
        ])
    };
    let suspend = api.ok("VDI.create", &[create("suspend")]).await;
    assert_eq!(
        api.err("VDI.enable_cbt", std::slice::from_ref(&suspend))
            .await,
        err(
            "VDI_INCOMPATIBLE_TYPE",
            &[suspend.as_str().unwrap(), "suspend"]
        ),
        "only user and system VDIs"
    );
    let tracked = api.ok("VDI.create", &[create("system")]).await;
    api.ok("VDI.enable_cbt", std::slice::from_ref(&tracked))
        .await;
    assert_eq!(
        api.err("VDI.set_on_boot", &[tracked.clone(), s("reset")])
            .await,
        err("VDI_CBT_ENABLED", &[tracked.as_str().unwrap()])
    );
    let reset = api.ok("VDI.create", &[create("user")]).await;
    api.ok("VDI.set_on_boot", &[reset.clone(), s("reset")])
        .await;
    assert_eq!(
        api.err("VDI.enable_cbt", std::slice::from_ref(&reset))
            .await,
        err("VDI_ON_BOOT_MODE_INCOMPATIBLE_WITH_OPERATION", &[])
    );

    let unlicensed = start(
        PoolSpec::new("unlicensed")
            .restriction("restrict_cbt", "true")
            .vm(VmSpec::new("vm").disk(DiskSpec::new(Size::mib(4)))),
    )
    .await;
    let api = Api::new(&unlicensed).await;
    let disk = named(&unlicensed, ClassId::Vdi, "vm disk 0");
    assert_eq!(
        api.err("VDI.enable_cbt", &[s(&disk)]).await,
        err("LICENCE_RESTRICTION", &["CBT"]),
        "behind the licensing switch"
    );
}

#[tokio::test]
async fn nbd_info_enumerates_attached_pbds_and_nbd_pifs() {
    let pool = start(fixture()).await;
    let api = Api::new(&pool).await;
    let vdi = named(&pool, ClassId::Vdi, "web01 disk 0");
    let infos = api
        .ok("VDI.get_nbd_info", &[s(&vdi)])
        .await
        .decode::<Vec<Value>>()
        .unwrap();
    assert_eq!(infos.len(), 1, "a local SR: one host");
    let info = &infos[0];
    let uuid = api.get("VDI", "uuid", &vdi).await;
    let Value::Struct(members) = info else {
        panic!()
    };
    let names: Vec<&str> = members.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names, ["exportname", "address", "port", "cert", "subject"]);
    assert_eq!(
        info.get("exportname"),
        Some(&s(&format!(
            "/{}?session_id={}",
            uuid.as_str().unwrap(),
            api.session
        )))
    );
    assert_eq!(info.get("address"), Some(&s("127.0.0.1")));
    // xapi's is always 10809; the simulator advertises where its NBD server really listens.
    assert_eq!(
        info.get("port").unwrap().clone().decode::<i64>().unwrap(),
        i64::from(pool.master().nbd.port())
    );
    assert_eq!(info.get("cert"), Some(&s(pool.certificate_pem())));
    assert_eq!(
        info.get("subject"),
        Some(&s("host-0")),
        "the smallest DNS name of the certificate"
    );
    let network = named(&pool, ClassId::Network, "NBD network");
    let other = api
        .ok(
            "network.create",
            &[Value::structure([
                ("name_label", s("n2")),
                ("other_config", empty_struct()),
            ])],
        )
        .await;
    assert_eq!(
        api.err("network.add_purpose", &[other, s("nbd")]).await,
        err("NETWORK_INCOMPATIBLE_PURPOSES", &["nbd", "insecure_nbd"])
    );
    api.ok("network.add_purpose", &[s(&network), s("insecure_nbd")])
        .await;
    api.ok("network.remove_purpose", &[s(&network), s("insecure_nbd")])
        .await;
    assert!(
        api.ok("VDI.get_nbd_info", &[s(&vdi)])
            .await
            .decode::<Vec<Value>>()
            .unwrap()
            .is_empty(),
        "no NBD network: empty"
    );

    let shared = start(
        PoolSpec::new("shared")
            .hosts(2)
            .sr(SrSpec::new("NFS", "nfs").shared())
            .network(NetworkSpec::new("nbd").purpose("nbd").ipv6("fd00::5/64"))
            .vm(VmSpec::new("vm").disk(DiskSpec::new(Size::mib(8)))),
    )
    .await;
    let api = Api::new(&shared).await;
    let vdi = named(&shared, ClassId::Vdi, "vm disk 0");
    let infos = api
        .ok("VDI.get_nbd_info", &[s(&vdi)])
        .await
        .decode::<Vec<Value>>()
        .unwrap();
    let addresses: Vec<&str> = infos
        .iter()
        .map(|info| info.get("address").unwrap().as_str().unwrap())
        .collect();
    assert_eq!(addresses.len(), 4, "{addresses:?}");
    // PIF.IPv6 holds CIDR entries and xapi copies them verbatim (`_get_nbd_info`): the
    // client strips the prefix length.
    assert!(
        addresses.contains(&"127.0.0.2") && addresses.contains(&"fd00::5/64"),
        "{addresses:?}"
    );
    assert_eq!(
        addresses
            .iter()
            .map(|address| address.contains(':'))
            .collect::<Vec<_>>(),
        [false, true, false, true],
        "per host: IPv4 first, then IPv6"
    );
    let pbd = api
        .refs("SR", "PBDs", &named(&shared, ClassId::Sr, "NFS"))
        .await
        .remove(0);
    api.ok("PBD.unplug", &[s(&pbd)]).await;
    assert_eq!(
        api.ok("VDI.get_nbd_info", &[s(&vdi)])
            .await
            .decode::<Vec<Value>>()
            .unwrap()
            .len(),
        2,
        "unplugged PBD: no records"
    );
}
