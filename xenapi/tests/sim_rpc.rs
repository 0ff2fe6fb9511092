//! The client against the simulated pool (`xapi-sim`): every RPC the replication, seeding and
//! backup flows use, each test run over JSON-RPC and XML-RPC (forced), over plain HTTP and over
//! HTTPS with the simulator's certificate pinned. Assertions read the simulator's own state as
//! well as the client's return values.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a failed test"
)]

#[macro_use]
mod simulator;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use serde_json::json;
use simulator::{
    PASSWORD, Setup, builder, builder_for, connect, eventually, named, sim_field, sim_record,
    sim_refs, sim_tasks, spec, start,
};
use tokio::time::Instant;
use xapi_sim::db::{ClassId, value_to_json};
use xapi_sim::storage::{ByteExtent, Pattern};
use xapi_sim::{DiskSpec, FaultRule, NetworkSpec, Pool, PoolSpec, Size, SrSpec, VmSpec};
use xenapi::{
    CancellationToken, Class, Client, ConnectUrl, Error, ErrorCode, EventOperation, Host,
    HostRecord, Network, NetworkPurpose, NetworkRecord, Pbd, PbdRecord, Pif, PifRecord, PoolRecord,
    PowerState, Ref, Secret, Sr, SrRecord, StringMap, Task, TaskRecord, TaskStatus, Trust, Value,
    VbdCreate, VbdRecord, VdiCreate, VdiRecord, VdiType, Vif, VifCreate, VifRecord, Vm,
    VmGuestMetrics, VmGuestMetricsRecord, VmRecord, WaitOptions, task_outcome,
};

/// Two VMs with disks and VIFs on an NBD-enabled network, a template, and a second (ISO) SR.
fn fixture() -> PoolSpec {
    spec("rpc pool")
        .sr(SrSpec::new("Local storage", "ext"))
        .sr(SrSpec::new("ISO library", "iso").shared())
        .network(NetworkSpec::new("NBD network").purpose("insecure_nbd"))
        .vm(VmSpec::new("web01")
            .running()
            .other_config("xo:owner", "alice")
            .disk(DiskSpec::new(Size::mib(8)).random(0, 1 << 20, 1))
            .disk(DiskSpec::new(Size::mib(4)))
            .vif("NBD network"))
        .vm(VmSpec::new("db01")
            .disk(DiskSpec::new(Size::mib(4)).random(0, 64 << 10, 2))
            .vif("NBD network"))
        .vm(VmSpec::new("Debian template").template())
}

fn wait() -> WaitOptions {
    WaitOptions::with_timeout(Duration::from_secs(10))
}

fn vm_named(pool: &Pool, name: &str) -> Ref<Vm> {
    named(pool, ClassId::Vm, name)
}

fn vdi_named(pool: &Pool, name: &str) -> Ref<xenapi::Vdi> {
    named(pool, ClassId::Vdi, name)
}

/// Whether the simulator still holds a session.
fn session_alive(pool: &Pool, client: &Client) -> bool {
    pool.sim().session_valid(client.session().unwrap().as_str())
}

/// The sessions in the simulator's dump (keyed by uuid there: refs are secrets).
fn sim_sessions(pool: &Pool) -> Vec<serde_json::Value> {
    pool.dump()["classes"]["session"]
        .as_object()
        .unwrap()
        .values()
        .cloned()
        .collect()
}

fn vm_snapshots(pool: &Pool, vm: &Ref<Vm>) -> Vec<serde_json::Value> {
    sim_field(pool, vm, "snapshots").as_array().unwrap().clone()
}

async fn login_calls_and_logout(setup: Setup) {
    let pool = start(fixture(), setup).await;
    let client = connect(&pool, setup).await;
    assert_eq!(client.master_url().host(), "127.0.0.1");

    let sessions = sim_sessions(&pool);
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0]["originator"], "xenapi-sim-tests");
    assert_eq!(sessions[0]["auth_user_name"], "root");
    assert_eq!(
        sessions[0]["this_host"],
        pool.master().reference.as_str(),
        "the session lives on the master"
    );
    assert!(session_alive(&pool, &client));

    let (pool_ref, record) = client.pool().await.unwrap();
    assert_eq!(record.name_label, "rpc pool");
    assert_eq!(record.master, pool.master().reference);
    assert_eq!(
        json!(record.default_sr.as_str()),
        sim_field(&pool, &pool_ref, "default_SR")
    );

    // Unknown methods and bad refs come back as typed API errors.
    let unknown = client.call_value("VM.no_such_call", vec![]).await;
    assert!(
        unknown
            .as_ref()
            .is_err_and(|error| error.is_api(ErrorCode::MessageMethodUnknown)),
        "{unknown:?}"
    );
    let missing = client
        .get_record(&Ref::<Vm>::new(
            "OpaqueRef:00000000-0000-0000-0000-000000000000",
        ))
        .await
        .unwrap_err();
    assert!(missing.is_api(ErrorCode::HandleInvalid), "{missing}");
    let bad_uuid = client.get_by_uuid::<Vm>("not-a-uuid").await.unwrap_err();
    assert!(bad_uuid.is_api(ErrorCode::UuidInvalid), "{bad_uuid}");

    let session = client.session().unwrap();
    client.close().await.unwrap();
    assert!(!pool.sim().session_valid(session.as_str()), "logged out");
    assert!(sim_sessions(&pool).is_empty());
    assert!(matches!(client.get_all::<Vm>().await, Err(Error::Closed)));

    // A wrong password is a typed error that never repeats the password.
    let refused = builder(&pool, setup)
        .password(Secret::new("wrong-horse"))
        .connect()
        .await
        .unwrap_err();
    assert!(
        refused.is_api(ErrorCode::SessionAuthenticationFailed),
        "{refused}"
    );
    for shown in [refused.to_string(), format!("{refused:?}")] {
        assert!(
            !shown.contains("wrong-horse") && !shown.contains(PASSWORD),
            "{shown}"
        );
    }
    assert!(sim_sessions(&pool).is_empty());
}

async fn relogin_after_session_invalid(setup: Setup) {
    let pool = start(fixture(), setup).await;
    let client = connect(&pool, setup).await;

    // The session disappears behind the client's back (expiry, a host restart).
    let first = client.session().unwrap();
    pool.sim().logout(&first);
    let vms = client.get_all::<Vm>().await.unwrap();
    assert_eq!(vms.len(), sim_refs(&pool, ClassId::Vm).len());
    let second = client.session().unwrap();
    assert_ne!(first, second, "a new session");
    assert!(pool.sim().session_valid(second.as_str()));
    assert_eq!(sim_sessions(&pool).len(), 1);

    // Someone logs the shared session out through the API (a clone, another tool).
    let clone = client.clone();
    clone.call::<()>("session.logout", vec![]).await.unwrap();
    assert!(!pool.sim().session_valid(second.as_str()));
    let (_, record) = client.pool().await.unwrap();
    assert_eq!(record.name_label, "rpc pool");
    let third = clone.session().unwrap();
    assert_ne!(third, second);
    assert!(pool.sim().session_valid(third.as_str()));
    assert_eq!(sim_sessions(&pool).len(), 1);

    // Only one re-login per call: a second SESSION_INVALID in a row surfaces, redacted.
    let reported = third.as_str().to_owned();
    for nth in [1, 2] {
        pool.faults().add(FaultRule::fail_call(
            "VM.get_all",
            nth,
            "SESSION_INVALID",
            &[&reported],
        ));
    }
    let error = client.get_all::<Vm>().await.unwrap_err();
    assert!(error.is_api(ErrorCode::SessionInvalid), "{error}");
    let Error::Api { params, .. } = &error else {
        panic!("{error:?}")
    };
    assert_eq!(params, &["OpaqueRef:<redacted>".to_owned()]);
    assert!(!format!("{error} {error:?}").contains(&reported));
    assert!(pool.faults().rules().is_empty(), "both faults fired");
    // The client recovered: the next call works.
    assert!(!client.get_all::<Vm>().await.unwrap().is_empty());
}

async fn host_is_slave_redirects_to_the_master(setup: Setup) {
    let pool = start(fixture().hosts(3), setup).await;
    let master = pool.master().clone();
    let member = pool.hosts()[2].clone();
    assert_ne!(member.address.ip(), master.address.ip());

    let client = if setup.tls {
        // With every host's certificate as the trusted CA set, names and chains are verified
        // and the redirect goes through.
        let mut bundle = Vec::new();
        for host in pool.hosts() {
            bundle.extend_from_slice(host.certificate.pem().as_bytes());
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pool-ca.pem");
        std::fs::write(&path, &bundle).unwrap();
        let with_ca = builder_for(&member.url, member.certificate.pem(), setup)
            .trust(Trust::ca_file(&path).unwrap())
            .connect()
            .await
            .unwrap();
        assert_eq!(with_ca.master_url().host(), master.address.ip().to_string());
        with_ca.close().await.unwrap();
        assert!(sim_sessions(&pool).is_empty());
        // With a pin for the member only, the client learns the master's fingerprint from the
        // member's HOST_IS_SLAVE answer (`x-xenapi-response-host-certificate-thumbprint`, sent
        // because the client asks with `x-xenapi-request-host-certificate-thumbprint`).
        builder_for(&member.url, member.certificate.pem(), setup)
            .connect()
            .await
            .unwrap()
    } else {
        builder_for(&member.url, member.certificate.pem(), setup)
            .connect()
            .await
            .unwrap()
    };
    assert_eq!(client.master_url().host(), master.address.ip().to_string());
    assert_eq!(client.master_url().port(), master.address.port());
    let sessions = sim_sessions(&pool);
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0]["this_host"], master.reference.as_str());
    let hosts = client.get_all_records::<Host>().await.unwrap();
    assert_eq!(hosts.len(), 3);
    assert_eq!(
        hosts[&member.reference].address,
        member.address.ip().to_string()
    );

    // A call answered HOST_IS_SLAVE (the master moved) is retried once on the named host.
    pool.faults().add(FaultRule::fail_call(
        "pool.get_all_records",
        1,
        "HOST_IS_SLAVE",
        &[&master.address.ip().to_string()],
    ));
    let (_, record) = client.pool().await.unwrap();
    assert_eq!(record.master, master.reference);
    assert!(pool.faults().rules().is_empty());
    client.close().await.unwrap();
    assert!(sim_sessions(&pool).is_empty());
}

/// Checks one class: `get_all_records` decodes every object of the simulator into the typed
/// record, field for field (re-encoded, the typed record equals the simulator's record on every
/// field it models); `get_record`, `get_by_uuid` and `get_all` agree with it.
macro_rules! check_class {
    ($client:expr, $pool:expr, $class:ty, $record:ty) => {{
        let client: &Client = $client;
        let pool: &Pool = $pool;
        let name = <$class as Class>::NAME;
        let all = client.get_all_records::<$class>().await.unwrap();
        let sim_all = pool.dump()["classes"][name].as_object().unwrap().clone();
        let ours: BTreeSet<&str> = all.keys().map(Ref::as_str).collect();
        let theirs: BTreeSet<&str> = sim_all.keys().map(String::as_str).collect();
        assert_eq!(ours, theirs, "{name}: the same objects");
        assert!(!all.is_empty(), "{name}: the fixture has some");
        let listed: BTreeSet<Ref<$class>> = client
            .get_all::<$class>()
            .await
            .unwrap()
            .into_iter()
            .collect();
        assert_eq!(listed, all.keys().cloned().collect(), "{name}: get_all");
        for (reference, record) in &all {
            let expected = &sim_all[reference.as_str()];
            let encoded = value_to_json(&record.to_value());
            for field in <$record>::FIELDS {
                let Some(wanted) = expected.get(*field) else {
                    panic!(
                        "{name}.{field}: modelled by the client but not in the simulator's record"
                    );
                };
                assert_eq!(&encoded[*field], wanted, "{name}.{field} of {reference}");
            }
            let single: $record = client.get_record(reference).await.unwrap();
            assert_eq!(&single, record, "{name}: get_record");
            let by_uuid = client.get_by_uuid::<$class>(&record.uuid).await.unwrap();
            assert_eq!(&by_uuid, reference, "{name}: get_by_uuid");
        }
        all
    }};
}

async fn typed_records_of_every_class(setup: Setup) {
    let pool = start(fixture().hosts(2), setup).await;
    let client = connect(&pool, setup).await;
    // A task exists only while someone uses one.
    let task = client
        .task_create("sim test task", "typed records")
        .await
        .unwrap();

    let pools = check_class!(&client, &pool, xenapi::Pool, PoolRecord);
    let hosts = check_class!(&client, &pool, Host, HostRecord);
    let srs = check_class!(&client, &pool, Sr, SrRecord);
    let pbds = check_class!(&client, &pool, Pbd, PbdRecord);
    let networks = check_class!(&client, &pool, Network, NetworkRecord);
    let pifs = check_class!(&client, &pool, Pif, PifRecord);
    let vdis = check_class!(&client, &pool, xenapi::Vdi, VdiRecord);
    let vbds = check_class!(&client, &pool, xenapi::Vbd, VbdRecord);
    let vms = check_class!(&client, &pool, Vm, VmRecord);
    let vifs = check_class!(&client, &pool, Vif, VifRecord);
    let tasks = check_class!(&client, &pool, Task, TaskRecord);
    let metrics = check_class!(&client, &pool, VmGuestMetrics, VmGuestMetricsRecord);

    // Cross-references decode into the right typed refs.
    assert_eq!(pools.len(), 1);
    assert_eq!(hosts.len(), 2);
    let web = &vms[&vm_named(&pool, "web01")];
    assert_eq!(web.power_state, PowerState::Running);
    assert_eq!(
        web.other_config.get("xo:owner").map(String::as_str),
        Some("alice")
    );
    assert!(hosts.contains_key(&web.resident_on));
    assert_eq!(web.vbds.len(), 2);
    for vbd in &web.vbds {
        let vbd = &vbds[vbd];
        assert!(vdis.contains_key(&vbd.vdi));
        assert!(srs.contains_key(&vdis[&vbd.vdi].sr));
    }
    let vif = &vifs[&web.vifs[0]];
    let network = &networks[&vif.network];
    assert_eq!(network.name_label, "NBD network");
    assert!(network.purpose.contains(&NetworkPurpose::InsecureNbd));
    assert!(network.pifs.iter().all(|pif| pifs.contains_key(pif)));
    assert!(
        pbds.values()
            .all(|pbd| srs.contains_key(&pbd.sr) && hosts.contains_key(&pbd.host))
    );
    let guest = &metrics[&web.guest_metrics];
    assert!(
        guest
            .networks
            .values()
            .any(|address| address == "192.0.2.10")
    );
    let dom0s = vms.values().filter(|vm| vm.is_control_domain).count();
    assert_eq!(dom0s, 2, "one control domain per host");
    assert!(
        vms.values()
            .any(|vm| vm.is_a_template && vm.name_label == "Debian template")
    );
    assert_eq!(tasks[&task].status, TaskStatus::Pending);
    assert_eq!(tasks[&task].name_label, "sim test task");
    // xapi destroys a pending task only once it completes: the request is recorded.
    client.task_destroy(&task).await.unwrap();
    let operations = sim_field(&pool, &task, "current_operations");
    assert!(
        operations
            .as_object()
            .unwrap()
            .values()
            .any(|op| op == "destroy"),
        "{operations}"
    );
}

async fn map_fields_put_and_remove(setup: Setup) {
    let pool = start(fixture(), setup).await;
    let client = connect(&pool, setup).await;
    let web = vm_named(&pool, "web01");
    let disk = vdi_named(&pool, "web01 disk 0");

    // An existing key is replaced (remove then add: a plain add_to_ would refuse it).
    client
        .map_put(&web, "other_config", "xo:owner", "bob")
        .await
        .unwrap();
    client
        .map_put(&web, "other_config", "xo:backup:job", "job-1")
        .await
        .unwrap();
    let other_config = sim_field(&pool, &web, "other_config");
    assert_eq!(other_config["xo:owner"], "bob");
    assert_eq!(other_config["xo:backup:job"], "job-1");
    let duplicate = client
        .call::<()>(
            "VM.add_to_other_config",
            vec![
                Value::from(&web),
                Value::from("xo:owner"),
                Value::from("carol"),
            ],
        )
        .await
        .unwrap_err();
    assert!(duplicate.is_api(ErrorCode::MapDuplicateKey), "{duplicate}");

    client
        .map_remove(&web, "other_config", "xo:owner")
        .await
        .unwrap();
    // Removing an absent key is not an error.
    client
        .map_remove(&web, "other_config", "xo:owner")
        .await
        .unwrap();
    let other_config = sim_field(&pool, &web, "other_config");
    assert!(other_config.get("xo:owner").is_none());
    assert_eq!(other_config["xo:backup:job"], "job-1");

    client
        .map_put(&disk, "other_config", "xo:copy_of", "some-uuid")
        .await
        .unwrap();
    assert_eq!(
        sim_field(&pool, &disk, "other_config")["xo:copy_of"],
        "some-uuid"
    );
    let record = client.get_record(&disk).await.unwrap();
    assert_eq!(
        record.other_config.get("xo:copy_of").map(String::as_str),
        Some("some-uuid")
    );

    // Whole-field setters and getters for what the typed records leave out.
    client
        .set_field(&web, "name_description", "replicated by tests")
        .await
        .unwrap();
    assert_eq!(
        sim_field(&pool, &web, "name_description"),
        "replicated by tests"
    );
    let description: String = client.get_field(&web, "name_description").await.unwrap();
    assert_eq!(description, "replicated by tests");
}

async fn vm_snapshot_clone_copy_destroy(setup: Setup) {
    let pool = start(fixture(), setup).await;
    let client = connect(&pool, setup).await;
    let web = vm_named(&pool, "web01");
    let db01 = vm_named(&pool, "db01");
    let second_disk = vdi_named(&pool, "web01 disk 1");

    let snapshot = client
        .vm_snapshot(&web, "web01 backup", &[], &wait())
        .await
        .unwrap();
    assert_eq!(sim_field(&pool, &snapshot, "is_a_snapshot"), true);
    assert_eq!(sim_field(&pool, &snapshot, "snapshot_of"), web.as_str());
    assert_eq!(sim_field(&pool, &snapshot, "name_label"), "web01 backup");
    assert_eq!(vm_snapshots(&pool, &web), vec![json!(snapshot.as_str())]);
    let record = client.get_record(&snapshot).await.unwrap();
    assert!(record.is_a_snapshot && record.is_a_template);
    assert_eq!(record.snapshot_of, web);
    for vbd in &record.vbds {
        let vdi = client.get_record(vbd).await.unwrap().vdi;
        assert_eq!(sim_field(&pool, &vdi, "is_a_snapshot"), true);
    }

    // As Xen Orchestra does right after a snapshot.
    client
        .call::<()>(
            "VM.set_is_a_template",
            vec![Value::from(&snapshot), Value::Bool(false)],
        )
        .await
        .unwrap();
    assert_eq!(sim_field(&pool, &snapshot, "is_a_template"), false);

    // ignore_vdis leaves that disk out of the snapshot.
    let partial = client
        .vm_snapshot(
            &web,
            "without disk 1",
            std::slice::from_ref(&second_disk),
            &wait(),
        )
        .await
        .unwrap();
    let partial_vdis: Vec<String> = client
        .get_record(&partial)
        .await
        .unwrap()
        .vbds
        .iter()
        .map(|vbd| sim_field(&pool, vbd, "VDI").as_str().unwrap().to_owned())
        .collect();
    assert_eq!(partial_vdis.len(), 1);
    assert_ne!(
        sim_field(
            &pool,
            &Ref::<xenapi::Vdi>::new(partial_vdis[0].as_str()),
            "snapshot_of"
        ),
        second_disk.as_str()
    );

    let clone = client
        .vm_clone(&snapshot, "web01 clone", &wait())
        .await
        .unwrap();
    assert_eq!(sim_field(&pool, &clone, "is_a_snapshot"), false);
    assert_eq!(sim_field(&pool, &clone, "name_label"), "web01 clone");
    assert_eq!(sim_field(&pool, &clone, "power_state"), "Halted");

    let sr: Ref<Sr> = named(&pool, ClassId::Sr, "Local storage");
    // Read before copying: the copy's disk has the same name.
    let source_vdi = vdi_named(&pool, "db01 disk 0");
    let copy = client
        .vm_copy(&db01, "db01 copy", &sr, &wait())
        .await
        .unwrap();
    let copy_record = client.get_record(&copy).await.unwrap();
    assert_eq!(copy_record.name_label, "db01 copy");
    let copied_vdi = client.get_record(&copy_record.vbds[0]).await.unwrap().vdi;
    assert_ne!(copied_vdi, source_vdi, "a full copy has its own disks");
    let digest = |vdi: &Ref<xenapi::Vdi>| {
        let disk = pool.sim().read(|db| db.disk_of(vdi.as_str())).unwrap();
        pool.storage().sha256(disk).unwrap()
    };
    assert_eq!(digest(&copied_vdi), digest(&source_vdi), "same content");
    assert_eq!(sim_field(&pool, &copied_vdi, "SR"), sr.as_str());

    // VM.destroy removes the VM and its devices, never its disks.
    client.destroy::<Vm>(&copy, &wait()).await.unwrap();
    assert!(sim_record(&pool, &copy).is_none());
    assert!(sim_record(&pool, &copy_record.vbds[0]).is_none());
    assert!(sim_record(&pool, &copied_vdi).is_some());
    let running = client.destroy::<Vm>(&web, &wait()).await.unwrap_err();
    assert!(running.is_api(ErrorCode::VmBadPowerState), "{running}");

    // Every Async task the client ran was destroyed once read.
    assert_eq!(sim_tasks(&pool), vec![]);
}

async fn vdi_vbd_vif_constructors(setup: Setup) {
    let pool = start(fixture(), setup).await;
    let client = connect(&pool, setup).await;
    let sr: Ref<Sr> = named(&pool, ClassId::Sr, "Local storage");
    let network: Ref<Network> = named(&pool, ClassId::Network, "NBD network");
    let db01 = vm_named(&pool, "db01");

    let mut args = VdiCreate::new(sr.clone(), (5 << 20) + 1);
    args.name_label = "scratch".into();
    args.other_config.insert("xo:purpose".into(), "test".into());
    let vdi = client.vdi_create(&args, &wait()).await.unwrap();
    assert_eq!(sim_field(&pool, &vdi, "name_label"), "scratch");
    assert_eq!(sim_field(&pool, &vdi, "SR"), sr.as_str());
    assert_eq!(sim_field(&pool, &vdi, "type"), "user");
    assert_eq!(sim_field(&pool, &vdi, "other_config")["xo:purpose"], "test");
    let record = client.get_record(&vdi).await.unwrap();
    assert_eq!(record.virtual_size, 6 << 20, "VHD SRs round up to 2 MiB");
    assert_eq!(
        json!(record.virtual_size),
        sim_field(&pool, &vdi, "virtual_size")
    );

    let snapshot = client
        .vdi_snapshot(&vdi, &StringMap::new(), &wait())
        .await
        .unwrap();
    assert_eq!(sim_field(&pool, &snapshot, "is_a_snapshot"), true);
    assert_eq!(sim_field(&pool, &snapshot, "snapshot_of"), vdi.as_str());
    let clone = client
        .vdi_clone(&snapshot, &StringMap::new(), &wait())
        .await
        .unwrap();
    assert_eq!(sim_field(&pool, &clone, "is_a_snapshot"), false);
    assert_eq!(sim_field(&pool, &clone, "virtual_size"), json!(6 << 20));

    // Attach the clone to a halted VM as XO's import does, then a VIF.
    let vbd = client
        .vbd_create(&VbdCreate::disk(db01.clone(), clone.clone(), "3"), &wait())
        .await
        .unwrap();
    assert_eq!(sim_field(&pool, &vbd, "VM"), db01.as_str());
    assert_eq!(sim_field(&pool, &vbd, "VDI"), clone.as_str());
    assert_eq!(sim_field(&pool, &vbd, "userdevice"), "3");
    assert_eq!(sim_field(&pool, &vbd, "mode"), "RW");
    assert!(
        sim_field(&pool, &db01, "VBDs")
            .as_array()
            .unwrap()
            .contains(&json!(vbd.as_str()))
    );
    let vif = client
        .vif_create(&VifCreate::new(db01.clone(), network.clone(), "4"), &wait())
        .await
        .unwrap();
    let vif_record = client.get_record(&vif).await.unwrap();
    assert_eq!(vif_record.device, "4");
    assert_eq!(vif_record.network, network);
    assert!(
        !vif_record.mac.is_empty(),
        "MAC generated from the VM's seed"
    );
    assert_eq!(sim_field(&pool, &vif, "MAC"), vif_record.mac.as_str());
    let duplicate = client
        .vif_create(&VifCreate::new(db01.clone(), network.clone(), "4"), &wait())
        .await
        .unwrap_err();
    assert!(
        duplicate.is_api(ErrorCode::DeviceAlreadyExists),
        "{duplicate}"
    );

    // A disk attached to a running VM cannot go; detached ones can.
    let live = vdi_named(&pool, "web01 disk 0");
    let in_use = client
        .destroy::<xenapi::Vdi>(&live, &wait())
        .await
        .unwrap_err();
    assert!(in_use.is_api(ErrorCode::VdiInUse), "{in_use}");
    client.destroy::<xenapi::Vbd>(&vbd, &wait()).await.unwrap();
    client.destroy::<Vif>(&vif, &wait()).await.unwrap();
    for disk in [&clone, &snapshot, &vdi] {
        client.destroy::<xenapi::Vdi>(disk, &wait()).await.unwrap();
        assert!(sim_record(&pool, disk).is_none());
    }
    assert!(sim_record(&pool, &vbd).is_none());
    assert!(sim_record(&pool, &vif).is_none());
    assert_eq!(sim_tasks(&pool), vec![]);
}

/// The target-side calls of a seed or replication run: a VM from a snapshot's record, its
/// limits, boot protection, disks resized and attached, started and stopped.
async fn seeding_calls(setup: Setup) {
    let pool = start(fixture(), setup).await;
    let client = connect(&pool, setup).await;
    let web = vm_named(&pool, "web01");
    let sr: Ref<Sr> = named(&pool, ClassId::Sr, "Local storage");
    let snapshot = client
        .vm_snapshot(&web, "seed source", &[], &wait())
        .await
        .unwrap();
    let source = client.get_record(&snapshot).await.unwrap();

    let mut wanted = source.clone();
    wanted.name_label = "[Importing…] web01".into();
    wanted.is_a_template = false;
    wanted
        .other_config
        .insert("xo:copy_of".into(), source.uuid.clone());
    let replica = client
        .create::<Vm>(wanted.create_args(), &wait())
        .await
        .unwrap();
    let created = client.get_record(&replica).await.unwrap();
    assert_eq!(created.name_label, "[Importing…] web01");
    assert!(!created.is_a_template && !created.is_a_snapshot);
    assert_eq!(created.power_state, PowerState::Halted);
    assert_eq!(created.memory_static_max, source.memory_static_max);
    assert_eq!(
        created.other_config.get("mac_seed"),
        source.other_config.get("mac_seed")
    );
    assert_eq!(
        sim_field(&pool, &replica, "other_config")["xo:copy_of"],
        source.uuid.as_str()
    );

    let limits = [256 << 20, 512 << 20, 512 << 20, 512 << 20];
    client
        .call::<()>(
            "VM.set_memory_limits",
            std::iter::once(Value::from(&replica))
                .chain(limits.iter().map(|bytes: &i64| Value::Int(*bytes)))
                .collect(),
        )
        .await
        .unwrap();
    assert_eq!(
        sim_field(&pool, &replica, "memory_static_max"),
        json!(512 << 20)
    );
    for operation in ["start", "start_on"] {
        client
            .map_put(&replica, "blocked_operations", operation, "Importing…")
            .await
            .unwrap();
    }
    let blocked = client
        .run_async::<()>(
            "VM.start",
            vec![
                Value::from(&replica),
                Value::Bool(false),
                Value::Bool(false),
            ],
            &wait(),
        )
        .await
        .unwrap_err();
    assert!(blocked.is_api(ErrorCode::OperationBlocked), "{blocked}");

    let mut disk = VdiCreate::new(sr.clone(), 2 << 20);
    disk.name_label = "[Importing] web01 disk 0".into();
    let vdi = client.vdi_create(&disk, &wait()).await.unwrap();
    client
        .run_async::<()>(
            "VDI.resize",
            vec![Value::from(&vdi), Value::Int(8 << 20)],
            &wait(),
        )
        .await
        .unwrap();
    assert_eq!(sim_field(&pool, &vdi, "virtual_size"), json!(8 << 20));
    let mut vbd = VbdCreate::disk(replica.clone(), vdi.clone(), "0");
    vbd.bootable = true;
    let vbd = client.vbd_create(&vbd, &wait()).await.unwrap();
    client
        .set_field(&vdi, "name_label", "web01 disk 0")
        .await
        .unwrap();

    for operation in ["start", "start_on"] {
        client
            .map_remove(&replica, "blocked_operations", operation)
            .await
            .unwrap();
    }
    client
        .run_async::<()>(
            "VM.start",
            vec![
                Value::from(&replica),
                Value::Bool(false),
                Value::Bool(false),
            ],
            &wait(),
        )
        .await
        .unwrap();
    assert_eq!(sim_field(&pool, &replica, "power_state"), "Running");
    assert_eq!(sim_field(&pool, &vbd, "currently_attached"), true);
    client
        .run_async::<()>("VM.clean_shutdown", vec![Value::from(&replica)], &wait())
        .await
        .unwrap();
    assert_eq!(sim_field(&pool, &replica, "power_state"), "Halted");
    client.sr_scan(&sr, &wait()).await.unwrap();
    assert_eq!(sim_tasks(&pool), vec![]);
}

async fn cbt_changed_blocks_and_data_destroy(setup: Setup) {
    let pool = start(fixture(), setup).await;
    let client = connect(&pool, setup).await;
    let live = vdi_named(&pool, "web01 disk 0");
    let disk_of = |vdi: &Ref<xenapi::Vdi>| pool.sim().read(|db| db.disk_of(vdi.as_str())).unwrap();

    client.vdi_enable_cbt(&live, &wait()).await.unwrap();
    assert_eq!(sim_field(&pool, &live, "cbt_enabled"), true);
    let first = client
        .vdi_snapshot(&live, &StringMap::new(), &wait())
        .await
        .unwrap();
    assert_eq!(sim_field(&pool, &first, "cbt_enabled"), true);

    // The guest writes 4 bytes at 3 MiB and 1 byte at 7 MiB + 64 KiB: 64 KiB units 48 and 113.
    for (offset, length) in [(3 << 20, 4), ((7 << 20) + (64 << 10), 1)] {
        pool.storage()
            .guest_write(
                disk_of(&live),
                ByteExtent::at(offset, length).unwrap(),
                Pattern::Random { seed: 9 },
            )
            .unwrap();
    }
    let second = client
        .vdi_snapshot(&live, &StringMap::new(), &wait())
        .await
        .unwrap();
    let bitmap = client
        .vdi_list_changed_blocks(&first, &second, &wait())
        .await
        .unwrap();
    let bits = base64::engine::general_purpose::STANDARD
        .decode(&bitmap)
        .unwrap();
    assert_eq!(bits.len(), (8 << 20) / (64 << 10) / 8, "one bit per 64 KiB");
    let set: Vec<usize> = (0..bits.len() * 8)
        .filter(|bit| bits[bit / 8] & (0x80 >> (bit % 8)) != 0)
        .collect();
    assert_eq!(set, vec![48, 113]);
    assert_eq!(
        bitmap,
        pool.storage()
            .list_changed_blocks_base64(disk_of(&first), disk_of(&second))
            .unwrap()
    );

    // The backup flow's purge: the snapshot keeps its CBT log, loses its data.
    client.vdi_data_destroy(&first, &wait()).await.unwrap();
    assert_eq!(sim_field(&pool, &first, "type"), "cbt_metadata");
    let record = client.get_record(&first).await.unwrap();
    assert_eq!(record.vdi_type, VdiType::CbtMetadata);
    assert_eq!(
        client
            .vdi_list_changed_blocks(&first, &second, &wait())
            .await
            .unwrap(),
        bitmap,
        "the log survives data_destroy"
    );
    let no_nbd = client.vdi_get_nbd_info(&first).await.unwrap_err();
    assert!(no_nbd.is_api(ErrorCode::VdiIncompatibleType), "{no_nbd}");
    let unrelated = client
        .vdi_list_changed_blocks(&second, &first, &wait())
        .await
        .unwrap_err();
    assert!(unrelated.is_api(ErrorCode::SrBackendFailure), "{unrelated}");

    client.vdi_disable_cbt(&live, &wait()).await.unwrap();
    assert_eq!(sim_field(&pool, &live, "cbt_enabled"), false);
    assert_eq!(sim_tasks(&pool), vec![]);
}

async fn nbd_info_and_network_purposes(setup: Setup) {
    let pool = start(fixture().hosts(2), setup).await;
    let client = connect(&pool, setup).await;
    let vdi = vdi_named(&pool, "web01 disk 0");
    let uuid = sim_field(&pool, &vdi, "uuid");
    let session = client.session().unwrap();
    let network: Ref<Network> = named(&pool, ClassId::Network, "NBD network");

    let infos = client.vdi_get_nbd_info(&vdi).await.unwrap();
    // A local SR on the master: one entry, the master's NBD address on that network.
    assert_eq!(infos.len(), 1);
    let info = &infos[0];
    // xapi's is 10809; the simulator's NBD server listens where its host handle says.
    assert_eq!(info.port, i64::from(pool.master().nbd.port()));
    assert_eq!(info.address, pool.master().address.ip().to_string());
    assert_eq!(info.cert, pool.master().certificate.pem());
    assert!(!info.subject.is_empty());
    assert_eq!(
        info.exportname,
        format!(
            "/{}?session_id={}",
            uuid.as_str().unwrap(),
            session.as_str()
        )
    );
    assert!(
        !format!("{info:?}").contains(session.as_str()),
        "Debug redacts the export name"
    );

    client
        .network_remove_purpose(&network, &NetworkPurpose::InsecureNbd)
        .await
        .unwrap();
    assert_eq!(sim_field(&pool, &network, "purpose"), json!([]));
    assert!(client.vdi_get_nbd_info(&vdi).await.unwrap().is_empty());
    client
        .network_add_purpose(&network, &NetworkPurpose::Nbd)
        .await
        .unwrap();
    assert_eq!(sim_field(&pool, &network, "purpose"), json!(["nbd"]));
    let conflict = client
        .network_add_purpose(&network, &NetworkPurpose::InsecureNbd)
        .await
        .unwrap_err();
    assert!(
        conflict.is_api(ErrorCode::NetworkIncompatiblePurposes),
        "{conflict}"
    );
    assert_eq!(client.vdi_get_nbd_info(&vdi).await.unwrap().len(), 1);

    // What an NBD client pins: the host's certificate, also through the API.
    let pem = client
        .host_get_server_certificate(&pool.master().reference)
        .await
        .unwrap();
    assert_eq!(pem, pool.master().certificate.pem());
}

async fn event_from_waits_for_changes(setup: Setup) {
    let pool = start(fixture(), setup).await;
    let client = connect(&pool, setup).await;
    let web = vm_named(&pool, "web01");

    // From "" every existing object comes back once, as it is now.
    let initial = client.event_from(&["VM"], "", 0.0).await.unwrap();
    let listed: BTreeSet<String> = initial
        .events
        .iter()
        .map(|event| event.reference.clone())
        .collect();
    assert_eq!(listed, sim_refs(&pool, ClassId::Vm).into_iter().collect());
    assert!(initial.events.iter().all(|event| event.class == "vm"));
    assert_eq!(
        initial.valid_ref_counts.get("vm").copied(),
        i64::try_from(listed.len()).ok()
    );

    // A change made while the call blocks wakes it up with the new record.
    let writer = client.clone();
    let target = web.clone();
    let change = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(150)).await;
        writer
            .set_field(&target, "name_label", "web01 renamed")
            .await
            .unwrap();
    });
    let started = Instant::now();
    let batch = client
        .event_from(&["VM"], &initial.token, 8.0)
        .await
        .unwrap();
    let waited = started.elapsed();
    change.await.unwrap();
    assert!(
        waited >= Duration::from_millis(100),
        "it blocked: {waited:?}"
    );
    assert!(
        waited < Duration::from_secs(5),
        "woken by the change: {waited:?}"
    );
    assert_eq!(batch.events.len(), 1, "{batch:?}");
    let event = &batch.events[0];
    assert_eq!(
        (event.reference.as_str(), event.operation.clone()),
        (web.as_str(), EventOperation::Mod)
    );
    let record: VmRecord = event.snapshot.clone().unwrap().decode().unwrap();
    assert_eq!(record.name_label, "web01 renamed");
    assert_ne!(batch.token, initial.token);

    // Nothing changes: the call returns empty when its timeout passes.
    let started = Instant::now();
    let quiet = client.event_from(&["VM"], &batch.token, 0.3).await.unwrap();
    assert!(quiet.events.is_empty(), "{quiet:?}");
    assert!(started.elapsed() >= Duration::from_millis(250));

    // event.inject gives a token just before a mod event of that object; deletions show as del.
    let token = client.event_inject(&web).await.unwrap();
    let injected = client.event_from(&["vm"], &token, 1.0).await.unwrap();
    assert!(
        injected
            .events
            .iter()
            .any(|event| event.reference == web.as_str() && event.operation == EventOperation::Mod)
    );
    let scratch = client
        .vdi_create(
            &VdiCreate::new(named(&pool, ClassId::Sr, "Local storage"), 2 << 20),
            &wait(),
        )
        .await
        .unwrap();
    let before = client
        .event_from(&["VDI"], &injected.token, 0.0)
        .await
        .unwrap()
        .token;
    client
        .destroy::<xenapi::Vdi>(&scratch, &wait())
        .await
        .unwrap();
    let deleted = client.event_from(&["VDI"], &before, 1.0).await.unwrap();
    assert!(
        deleted
            .events
            .iter()
            .any(|event| event.reference == scratch.as_str()
                && event.operation == EventOperation::Del
                && event.snapshot.is_none())
    );
    let bad = client
        .event_from(&["VM"], "not a token", 0.0)
        .await
        .unwrap_err();
    assert!(bad.is_api(ErrorCode::EventFromTokenParseFailure), "{bad}");
}

async fn async_task_success(setup: Setup) {
    let pool = start(fixture(), setup).await;
    let client = connect(&pool, setup).await;
    let web = vm_named(&pool, "web01");

    let task = client
        .call_async(
            "VM.snapshot",
            vec![Value::from(&web), Value::from("async one")],
        )
        .await
        .unwrap();
    assert_eq!(sim_field(&pool, &task, "name_label"), "Async.VM.snapshot");
    let progress = Arc::new(Mutex::new(Vec::new()));
    let seen = progress.clone();
    let options = wait().progress(move |value| seen.lock().unwrap().push(value));
    let record = client.wait_task_record(&task, &options).await.unwrap();
    assert_eq!(record.status, TaskStatus::Success);
    assert_eq!(progress.lock().unwrap().last().copied(), Some(1.0));
    // The finished task is still in the simulator, with the XML fragment the client decoded.
    assert_eq!(sim_field(&pool, &task, "status"), "success");
    assert_eq!(sim_field(&pool, &task, "result"), record.result.as_str());
    let snapshot: Ref<Vm> = task_outcome(&record).unwrap().unwrap().decode().unwrap();
    assert_eq!(sim_field(&pool, &snapshot, "snapshot_of"), web.as_str());
    client.task_destroy(&task).await.unwrap();
    assert!(sim_record(&pool, &task).is_none());

    // A void result.
    let sr: Ref<Sr> = named(&pool, ClassId::Sr, "Local storage");
    let scanned: Option<Value> = client
        .wait_task(
            &client
                .call_async("SR.scan", vec![Value::from(&sr)])
                .await
                .unwrap(),
            &wait(),
        )
        .await
        .unwrap();
    assert!(scanned.is_none_or(|value| value.decode::<()>().is_ok()));
    // Methods without an async form are refused as xapi does.
    let no_async = client
        .call_async(
            "VDI.get_nbd_info",
            vec![Value::from(&vdi_named(&pool, "web01 disk 0"))],
        )
        .await
        .unwrap_err();
    assert!(no_async.is_api(ErrorCode::Fault), "{no_async}");
    assert_eq!(sim_tasks(&pool), vec![]);
}

async fn task_failure_from_injected_faults(setup: Setup) {
    let pool = start(fixture(), setup).await;
    let client = connect(&pool, setup).await;
    let web = vm_named(&pool, "web01");

    // The 2nd snapshot fails in its task, as sm would on a full SR.
    pool.faults().add(FaultRule::fail_call(
        "VM.snapshot",
        2,
        "SR_BACKEND_FAILURE_44",
        &["", "There is insufficient space", ""],
    ));
    let first = client.vm_snapshot(&web, "ok", &[], &wait()).await.unwrap();
    let error = client
        .vm_snapshot(&web, "fails", &[], &wait())
        .await
        .unwrap_err();
    assert_eq!(error.api_code(), Some(ErrorCode::SrBackendFailure));
    let Error::Api { code, params } = &error else {
        panic!("{error:?}")
    };
    assert_eq!(code, "SR_BACKEND_FAILURE_44");
    assert_eq!(params, &["", "There is insufficient space", ""]);
    assert_eq!(vm_snapshots(&pool, &web), vec![json!(first.as_str())]);
    assert_eq!(sim_tasks(&pool), vec![], "the failed task was destroyed");

    // The failed task as the simulator holds it before anyone destroys it.
    pool.faults().add(FaultRule::fail_call(
        "VM.clone",
        1,
        "SR_FULL",
        &["1024", "512"],
    ));
    let task = client
        .call_async("VM.clone", vec![Value::from(&first), Value::from("never")])
        .await
        .unwrap();
    let record = client.wait_task_record(&task, &wait()).await.unwrap();
    assert_eq!(record.status, TaskStatus::Failure);
    assert_eq!(sim_field(&pool, &task, "status"), "failure");
    assert_eq!(
        sim_field(&pool, &task, "error_info"),
        json!(["SR_FULL", "1024", "512"])
    );
    let outcome = task_outcome(&record).unwrap_err();
    assert!(outcome.is_api(ErrorCode::SrFull), "{outcome}");
    client.task_destroy(&task).await.unwrap();

    // A synchronous call fails directly.
    pool.faults().add(FaultRule::fail_call(
        "VM.get_record",
        1,
        "INTERNAL_ERROR",
        &["injected"],
    ));
    let sync = client.get_record(&web).await.unwrap_err();
    assert!(sync.is_api(ErrorCode::InternalError), "{sync}");
    assert_eq!(client.get_record(&web).await.unwrap().name_label, "web01");
    assert!(pool.faults().rules().is_empty());
}

/// Starts a slow `Async.VM.snapshot` and returns its waiting future's handle and the task.
async fn slow_snapshot(
    pool: &Pool,
    client: &Client,
    options: WaitOptions,
) -> (tokio::task::JoinHandle<Result<Ref<Vm>, Error>>, Ref<Task>) {
    let web = vm_named(pool, "web01");
    let handle = {
        let client = client.clone();
        let web = web.clone();
        tokio::spawn(async move { client.vm_snapshot(&web, "too slow", &[], &options).await })
    };
    let mut task = None;
    eventually("the snapshot task runs and holds the VM", || {
        task = sim_tasks(pool)
            .into_iter()
            .find(|(_, label, status)| label == "Async.VM.snapshot" && status == "pending")
            .map(|(task, _, _)| Ref::new(task));
        task.is_some()
            && sim_field(pool, &web, "current_operations")
                .as_object()
                .is_some_and(|ops| !ops.is_empty())
    })
    .await;
    (handle, task.unwrap())
}

/// The cancelled operation left nothing behind.
async fn assert_abandoned(pool: &Pool, task: &Ref<Task>) {
    let web = vm_named(pool, "web01");
    eventually("the cancelled task is destroyed", || {
        sim_record(pool, task).is_none()
    })
    .await;
    assert!(vm_snapshots(pool, &web).is_empty(), "no snapshot was taken");
    assert_eq!(sim_field(pool, &web, "current_operations"), json!({}));
}

async fn cancellation_and_timeout_cancel_the_task(setup: Setup) {
    let pool = start(fixture(), setup).await;
    let client = connect(&pool, setup).await;
    pool.faults()
        .add(FaultRule::latency("VM.snapshot", Duration::from_secs(30)));
    // The client cancels then destroys the task; slowing the destroy down lets the test see the
    // task end `cancelled` in the simulator before it goes.
    pool.faults().add(FaultRule::latency(
        "task.destroy",
        Duration::from_millis(300),
    ));

    let token = CancellationToken::new();
    let (handle, task) = slow_snapshot(&pool, &client, wait().cancel_on(token.clone())).await;
    let started = Instant::now();
    token.cancel();
    eventually("the simulator marks the task cancelled", || {
        sim_record(&pool, &task).is_some_and(|record| record["status"] == "cancelled")
    })
    .await;
    assert_eq!(
        sim_field(&pool, &task, "error_info"),
        json!(["TASK_CANCELLED", task.as_str()])
    );
    let result = handle.await.unwrap();
    assert!(matches!(result, Err(Error::Cancelled { .. })), "{result:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "did not wait for the operation"
    );
    assert_abandoned(&pool, &task).await;

    // A timeout takes the same path.
    let options = WaitOptions::with_timeout(Duration::from_millis(300));
    let (handle, task) = slow_snapshot(&pool, &client, options).await;
    let result = handle.await.unwrap();
    assert!(matches!(result, Err(Error::Timeout { .. })), "{result:?}");
    assert_abandoned(&pool, &task).await;

    // Cancelled on the server by someone else: the waiter reports TaskCancelled.
    let web = vm_named(&pool, "web01");
    let task = client
        .call_async(
            "VM.snapshot",
            vec![Value::from(&web), Value::from("cancelled elsewhere")],
        )
        .await
        .unwrap();
    let other = connect(&pool, setup).await;
    other.task_cancel(&task).await.unwrap();
    let record = client.wait_task_record(&task, &wait()).await.unwrap();
    assert_eq!(record.status, TaskStatus::Cancelled);
    assert_eq!(sim_field(&pool, &task, "status"), "cancelled");
    assert!(matches!(task_outcome(&record), Err(Error::TaskCancelled)));
    pool.faults().clear();
    client.task_destroy(&task).await.unwrap();
    assert!(sim_record(&pool, &task).is_none());
    assert!(vm_snapshots(&pool, &web).is_empty());
}

async fn blocked_operations_are_operation_blocked(setup: Setup) {
    let pool = start(fixture(), setup).await;
    let client = connect(&pool, setup).await;
    let web = vm_named(&pool, "web01");
    let db01 = vm_named(&pool, "db01");

    client
        .map_put(
            &web,
            "blocked_operations",
            "snapshot",
            "frozen by the tests",
        )
        .await
        .unwrap();
    assert_eq!(
        sim_field(&pool, &web, "blocked_operations"),
        json!({ "snapshot": "frozen by the tests" })
    );
    let error = client
        .vm_snapshot(&web, "refused", &[], &wait())
        .await
        .unwrap_err();
    assert_eq!(error.api_code(), Some(ErrorCode::OperationBlocked));
    let Error::Api { params, .. } = &error else {
        panic!("{error:?}")
    };
    assert_eq!(
        params,
        &[web.as_str().to_owned(), "frozen by the tests".to_owned()]
    );
    assert!(vm_snapshots(&pool, &web).is_empty());
    client
        .map_remove(&web, "blocked_operations", "snapshot")
        .await
        .unwrap();
    client
        .vm_snapshot(&web, "allowed", &[], &wait())
        .await
        .unwrap();

    client
        .map_put(&db01, "blocked_operations", "destroy", "replica: clone it")
        .await
        .unwrap();
    let destroy = client.destroy::<Vm>(&db01, &wait()).await.unwrap_err();
    assert!(destroy.is_api(ErrorCode::OperationBlocked), "{destroy}");
    assert!(sim_record(&pool, &db01).is_some());
    assert_eq!(sim_tasks(&pool), vec![]);
}

over_every_setup!(
    login_calls_and_logout,
    relogin_after_session_invalid,
    host_is_slave_redirects_to_the_master,
    typed_records_of_every_class,
    map_fields_put_and_remove,
    vm_snapshot_clone_copy_destroy,
    vdi_vbd_vif_constructors,
    seeding_calls,
    cbt_changed_blocks_and_data_destroy,
    nbd_info_and_network_purposes,
    event_from_waits_for_changes,
    async_task_success,
    task_failure_from_injected_faults,
    cancellation_and_timeout_cancel_the_task,
    blocked_operations_are_operation_blocked,
);

/// TLS is verified by default: the simulator's self-signed certificate is refused unless pinned.
#[tokio::test]
async fn default_verification_refuses_the_self_signed_certificate() {
    let pool = start(fixture(), Setup::JSON_HTTPS).await;
    let refused = Client::builder(ConnectUrl::parse(pool.url()).unwrap())
        .user(simulator::USER)
        .password(Secret::new(PASSWORD))
        .connect()
        .await
        .unwrap_err();
    assert!(matches!(refused, Error::Tls { .. }), "{refused:?}");
    assert!(sim_sessions(&pool).is_empty(), "nothing reached the API");
    // A wrong pin is refused too (the simulator's certificates are deterministic per host name,
    // so another pool's master would carry the same one); the right one works.
    let wrong = Client::builder(ConnectUrl::parse(pool.url()).unwrap())
        .user(simulator::USER)
        .password(Secret::new(PASSWORD))
        .trust(Trust::pinned(&"3f".repeat(32)).unwrap())
        .connect()
        .await
        .unwrap_err();
    assert!(matches!(wrong, Error::Tls { .. }), "{wrong:?}");
    let pinned = connect(&pool, Setup::JSON_HTTPS).await;
    assert_eq!(sim_sessions(&pool).len(), 1);
    pinned.close().await.unwrap();
}

/// Auto transport picks JSON-RPC against the simulator (which serves both).
#[tokio::test]
async fn auto_transport_prefers_json_rpc() {
    let pool = start(fixture(), Setup::JSON_HTTP).await;
    let client = builder(&pool, Setup::JSON_HTTP)
        .transport(xenapi::TransportKind::Auto)
        .connect()
        .await
        .unwrap();
    assert_eq!(client.wire(), xenapi::Wire::JsonRpc);
    assert_eq!(
        client.get_all_records::<Vm>().await.unwrap().len(),
        sim_refs(&pool, ClassId::Vm).len()
    );
}
