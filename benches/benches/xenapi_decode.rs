//! Decoding a `VM.get_all_records` response for 1,000 VMs, as xapi writes it, in each transport:
//! XML-RPC (untyped int64s, one line) and JSON-RPC v2. Two levels per transport: the generic
//! `Value` tree, and the typed `BTreeMap<Ref<Vm>, VmRecord>` callers use.
#![allow(
    clippy::panic,
    clippy::unwrap_used,
    reason = "bench code on its own generated data: a failure aborts the measurement"
)]
#![allow(
    missing_docs,
    reason = "criterion_group! generates an undocumented pub fn"
)]

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use xenapi::codec::{Response, jsonrpc, xmlrpc};
use xenapi::{DateTime, PowerState, Ref, Value, Vm, VmRecord};

const VMS: usize = 1000;

/// A record shaped like a real one: the typed fields filled in, plus the members a real host
/// sends that `VmRecord` does not decode (about 110 members in all).
fn record(index: usize) -> Value {
    let refs = |kind: &str, count: usize| -> Vec<Ref<Vm>> {
        (0..count)
            .map(|n| {
                Ref::new(format!(
                    "OpaqueRef:{kind}-{index:04}-{n}-7d8a-4c36-9d35-2f3c1b6f0e11"
                ))
            })
            .collect()
    };
    let map = |pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect::<BTreeMap<_, _>>()
    };
    let typed = VmRecord {
        uuid: format!("9f2b1c0e-3d4a-4b5c-8d6e-{index:012}"),
        allowed_operations: ["snapshot", "clone", "copy", "export", "destroy", "start", "changing_VCPUs"].map(String::from).to_vec(),
        name_label: format!("web-{index:04}"),
        name_description: "A web server & its <friends>".into(),
        power_state: if index.is_multiple_of(3) { PowerState::Running } else { PowerState::Halted },
        memory_static_max: 4 << 30,
        memory_dynamic_max: 4 << 30,
        memory_dynamic_min: 2 << 30,
        memory_static_min: 1 << 30,
        memory_overhead: 41_943_040,
        vcpus_params: map(&[("weight", "256"), ("cap", "0")]),
        vcpus_max: 4,
        vcpus_at_startup: 2,
        actions_after_shutdown: "destroy".into(),
        actions_after_reboot: "restart".into(),
        actions_after_crash: "restart".into(),
        vifs: refs("vif", 2).into_iter().map(Ref::cast).collect(),
        vbds: refs("vbd", 3).into_iter().map(Ref::cast).collect(),
        hvm_boot_policy: "BIOS order".into(),
        hvm_boot_params: map(&[("order", "cdn"), ("firmware", "bios")]),
        hvm_shadow_multiplier: 1.0,
        platform: map(&[("timeoffset", "0"), ("device-model", "qemu-upstream-compat"), ("viridian", "true"), ("acpi", "1"), ("apic", "true"), ("pae", "true"), ("nx", "true")]),
        other_config: map(&[("mac_seed", "2c1d6f5c-7d8a-4c36-9d35-2f3c1b6f0e11"), ("base_template_name", "Debian Bookworm 12"), ("install-methods", "cdrom,nfs,http,ftp"), ("import_task", "OpaqueRef:NULL")]),
        domid: if index.is_multiple_of(3) { i64::try_from(index).unwrap() } else { -1 },
        domarch: "x64".into(),
        metrics: Ref::new(format!("OpaqueRef:metrics-{index:04}")),
        guest_metrics: Ref::new(format!("OpaqueRef:guest-metrics-{index:04}")),
        recommendations: "<restrictions><restriction field=\"memory-static-max\" max=\"1649267441664\"/><restriction field=\"vcpus-max\" max=\"32\"/></restrictions>".into(),
        tags: vec!["prod".into(), "web".into()],
        blocked_operations: map(&[("destroy", "protected")]),
        snapshot_time: DateTime::EPOCH,
        snapshots: refs("snap", 2),
        bios_strings: map(&[("bios-vendor", "Xen"), ("system-manufacturer", "Xen"), ("system-product-name", "HVM domU")]),
        generation_id: "0:0".into(),
        hardware_platform_version: 2,
        domain_type: xenapi::DomainType::Hvm,
        nvram: BTreeMap::new(),
        ..VmRecord::default()
    };
    let Value::Struct(mut members) = typed.to_value() else {
        panic!("a record is a struct")
    };
    let empty_set = || Value::Array(Vec::new());
    for name in [
        "VGPUs",
        "VTPMs",
        "VUSBs",
        "attached_PCIs",
        "crash_dumps",
        "pending_guidances",
        "pending_guidances_recommended",
        "pending_guidances_full",
    ] {
        members.push((name.to_owned(), empty_set()));
    }
    for name in [
        "appliance",
        "protection_policy",
        "snapshot_schedule",
        "scheduled_to_be_resident_on",
        "suspend_SR",
    ] {
        members.push((name.to_owned(), Value::from("OpaqueRef:NULL")));
    }
    for name in [
        "is_vmss_snapshot",
        "is_snapshot_from_vmpp",
        "requires_reboot",
        "ha_always_run",
    ] {
        members.push((name.to_owned(), Value::Bool(false)));
    }
    members.push((
        "last_boot_CPU_flags".into(),
        xenapi::string_map([
            ("vendor", "GenuineIntel"),
            ("features", "1fc98b75-bfebfbff-00000121-2c100800"),
        ]),
    ));
    members.push(("last_booted_record".into(), Value::from("")));
    members.push((
        "actions_after_softreboot".into(),
        Value::from("soft_reboot"),
    ));
    members.push(("current_operations".into(), Value::Struct(Vec::new())));
    Value::Struct(members)
}

fn all_records() -> Value {
    Value::Struct(
        (0..VMS)
            .map(|index| {
                (
                    format!("OpaqueRef:vm-{index:04}-7d8a-4c36-9d35-2f3c1b6f0e11"),
                    record(index),
                )
            })
            .collect(),
    )
}

fn decode_all_records(c: &mut Criterion) {
    let records = Response::Success(all_records());
    let xml = xmlrpc::encode_response(&records);
    let json = jsonrpc::encode_response(jsonrpc::Version::V2, &jsonrpc::Id::Int(1), &records);

    let mut group = c.benchmark_group("xenapi_decode_vm_get_all_records_1000");
    group
        .measurement_time(Duration::from_secs(5))
        .sample_size(20);

    group.throughput(Throughput::Bytes(u64::try_from(xml.len()).unwrap()));
    group.bench_function("xmlrpc_value", |b| {
        b.iter(|| black_box(xmlrpc::decode_response(black_box(&xml)).unwrap()))
    });
    group.bench_function("xmlrpc_typed", |b| {
        b.iter(|| {
            let Response::Success(value) = xmlrpc::decode_response(black_box(&xml)).unwrap() else {
                panic!("failure")
            };
            black_box(value.decode::<BTreeMap<Ref<Vm>, VmRecord>>().unwrap())
        })
    });

    group.throughput(Throughput::Bytes(u64::try_from(json.len()).unwrap()));
    group.bench_function("jsonrpc_value", |b| {
        b.iter(|| black_box(jsonrpc::decode_response(black_box(&json)).unwrap()))
    });
    group.bench_function("jsonrpc_typed", |b| {
        b.iter(|| {
            let Response::Success(value) =
                jsonrpc::decode_response(black_box(&json)).unwrap().response
            else {
                panic!("failure")
            };
            black_box(value.decode::<BTreeMap<Ref<Vm>, VmRecord>>().unwrap())
        })
    });
    group.finish();
}

criterion_group!(benches, decode_all_records);
criterion_main!(benches);
