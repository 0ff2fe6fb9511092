//! [`Pool`]: a running simulated pool — its database built from a [`PoolSpec`], one server per
//! host on a loopback address, and the handles tests use.
//!
//! Hosts listen on distinct loopback addresses (`127.0.0.1` for the master, `127.0.0.2`, … for
//! members) sharing one port, so `host.address` is a bare IP like on a real pool and a client
//! following `HOST_IS_SLAVE [address]` (same scheme and port, new host) reaches the master.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use xenapi::{Host, Ref, Value};

use crate::Error;
use crate::db::{self, ClassId, Db, DbConfig, HostRuntime, XapiVersion, string_map, vdi, vm};
use crate::faults::Faults;
use crate::scenario::{PoolSpec, VmSpec};
use crate::server::{self, Router};
use crate::sim::{Credentials, Sim};
use crate::storage::{ByteExtent, ByteLen, Pattern, Storage};
use crate::tls::HostCertificate;

/// One running host.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct HostHandle {
    /// The host object.
    pub reference: Ref<Host>,
    /// `host.name_label`.
    pub name: String,
    /// Where it listens.
    pub address: SocketAddr,
    /// Base URL (`https://127.0.0.1:port/`).
    pub url: String,
    /// Its TLS identity (also for its NBD server).
    pub certificate: HostCertificate,
    /// Where its NBD server listens (the port `VDI.get_nbd_info` advertises; xapi's is 10809).
    pub nbd: SocketAddr,
}

/// A running simulated pool; dropping it stops its servers.
#[derive(Debug)]
pub struct Pool {
    sim: Arc<Sim>,
    master: HostHandle,
    hosts: Vec<HostHandle>,
    tls: bool,
    servers: Vec<JoinHandle<()>>,
}

impl Drop for Pool {
    fn drop(&mut self) {
        for server in &self.servers {
            server.abort();
        }
    }
}

fn scenario_error(reason: impl Into<String>) -> Error {
    Error::Scenario {
        reason: reason.into(),
    }
}

fn api_error(context: &str, failure: &xenapi::codec::Failure) -> Error {
    scenario_error(format!("{context}: {} {:?}", failure.code, failure.params))
}

/// Binds every host: explicit addresses as given, else `127.0.0.<n>`, all on the master's port.
async fn bind_hosts(spec: &PoolSpec) -> Result<Vec<TcpListener>, Error> {
    let address_of = |index: usize| -> Ipv4Addr {
        spec.hosts
            .get(index)
            .and_then(|host| host.address)
            .unwrap_or_else(|| {
                let last = u8::try_from(index.saturating_add(1)).unwrap_or(u8::MAX);
                Ipv4Addr::new(127, 0, 0, last)
            })
    };
    let mut last_error = None;
    for _attempt in 0..8 {
        let master = TcpListener::bind((address_of(0), 0))
            .await
            .map_err(|source| Error::Io {
                context: "binding the master".to_owned(),
                source,
            })?;
        let port = master
            .local_addr()
            .map_err(|source| Error::Io {
                context: "local address".to_owned(),
                source,
            })?
            .port();
        let mut listeners = vec![master];
        for index in 1..spec.hosts.len() {
            match TcpListener::bind((address_of(index), port)).await {
                Ok(listener) => listeners.push(listener),
                Err(source) => {
                    last_error = Some(Error::Io {
                        context: format!("binding host {index} on port {port}"),
                        source,
                    });
                    break;
                }
            }
        }
        if listeners.len() == spec.hosts.len() {
            return Ok(listeners);
        }
    }
    Err(last_error.unwrap_or_else(|| scenario_error("could not bind the hosts")))
}

impl Pool {
    /// Builds the pool of `spec` and starts its servers.
    ///
    /// # Errors
    /// [`Error::Scenario`] for an inconsistent spec, [`Error::Io`] / [`Error::Tls`] when the
    /// servers cannot start.
    pub async fn start(spec: PoolSpec) -> Result<Pool, Error> {
        Pool::start_with_router(spec, &Router::new()).await
    }

    /// As [`Pool::start`], with extra routes (transfer handlers) added to every host's router.
    ///
    /// # Errors
    /// As [`Pool::start`].
    pub async fn start_with_router(spec: PoolSpec, extra: &Router) -> Result<Pool, Error> {
        if spec.hosts.is_empty() {
            return Err(scenario_error("a pool needs at least one host"));
        }
        let listeners = bind_hosts(&spec).await?;
        let mut addresses = Vec::new();
        for listener in &listeners {
            addresses.push(listener.local_addr().map_err(|source| Error::Io {
                context: "local address".to_owned(),
                source,
            })?);
        }
        let (sim, host_refs, certificates) = build(&spec, &addresses)?;
        let mut router = Router::with_rpc();
        router.merge(&crate::http::routes());
        router.merge(extra);
        let router = Arc::new(router);
        let scheme = if spec.tls { "https" } else { "http" };
        let mut hosts = Vec::new();
        let mut servers = Vec::new();
        for (((listener, address), certificate), (reference, name)) in listeners
            .into_iter()
            .zip(addresses)
            .zip(certificates)
            .zip(host_refs)
        {
            let acceptor = if spec.tls {
                Some(certificate.acceptor()?)
            } else {
                None
            };
            servers.push(tokio::spawn(server::serve(
                listener,
                acceptor,
                Arc::clone(&router),
                Arc::clone(&sim),
                reference.clone(),
            )));
            let (nbd_listener, nbd_port) =
                crate::nbd::bind(address.ip())
                    .await
                    .map_err(|source| Error::Io {
                        context: format!("binding the NBD server of {name}"),
                        source,
                    })?;
            sim.write(|db| {
                if let Some(mut runtime) = db.host_runtime(reference.as_str()).cloned() {
                    runtime.nbd_port = nbd_port;
                    db.set_host_runtime(reference.as_str(), runtime);
                }
            });
            servers.push(tokio::spawn(crate::nbd::serve(
                nbd_listener,
                Arc::clone(&sim),
                reference.clone(),
                certificate.nbd_acceptor()?,
            )));
            hosts.push(HostHandle {
                reference,
                name,
                address,
                url: format!("{scheme}://{address}/"),
                certificate,
                nbd: SocketAddr::new(address.ip(), nbd_port),
            });
        }
        tracing::info!(pool = %spec.name, master = %hosts.first().map_or("", |host| host.url.as_str()), "pool started");
        let master = hosts
            .first()
            .cloned()
            .ok_or_else(|| scenario_error("a pool needs at least one host"))?;
        Ok(Pool {
            sim,
            master,
            hosts,
            tls: spec.tls,
            servers,
        })
    }

    /// The shared state (database, storage, faults, seams for handlers).
    #[must_use]
    pub fn sim(&self) -> &Arc<Sim> {
        &self.sim
    }

    /// The hosts; the first is the master.
    #[must_use]
    pub fn hosts(&self) -> &[HostHandle] {
        &self.hosts
    }

    /// The master.
    #[must_use]
    pub fn master(&self) -> &HostHandle {
        &self.master
    }

    /// The master's URL.
    #[must_use]
    pub fn url(&self) -> &str {
        &self.master().url
    }

    /// Whether the servers speak HTTPS.
    #[must_use]
    pub fn tls(&self) -> bool {
        self.tls
    }

    /// The accepted credentials.
    #[must_use]
    pub fn credentials(&self) -> &Credentials {
        self.sim.credentials()
    }

    /// The master's certificate, PEM (pin it).
    #[must_use]
    pub fn certificate_pem(&self) -> &str {
        self.master().certificate.pem()
    }

    /// The fault rules.
    #[must_use]
    pub fn faults(&self) -> &Faults {
        self.sim.faults()
    }

    /// The storage behind the VDIs.
    #[must_use]
    pub fn storage(&self) -> &Storage {
        self.sim.storage()
    }

    /// The database as JSON.
    #[must_use]
    pub fn dump(&self) -> serde_json::Value {
        self.sim.dump()
    }

    /// The first object of `class` whose `name_label` is `name`.
    #[must_use]
    pub fn find_by_name(&self, class: ClassId, name: &str) -> Option<String> {
        self.sim.read(|db| {
            db.find(class, "name_label", &Value::from(name))
                .into_iter()
                .next()
        })
    }

    /// Stops the servers now.
    pub fn shutdown(self) {
        drop(self);
    }
}

/// A pool's state without servers (hosts get the given addresses): for fuzzing and for tests
/// that drive [`crate::rpc`] directly.
///
/// # Errors
/// As [`Pool::start`], minus the socket errors.
pub fn build_offline(spec: &PoolSpec) -> Result<Arc<Sim>, Error> {
    let addresses: Vec<SocketAddr> = (0..spec.hosts.len())
        .map(|index| {
            let last = u8::try_from(index.saturating_add(1)).unwrap_or(u8::MAX);
            SocketAddr::from((Ipv4Addr::new(127, 0, 0, last), 443))
        })
        .collect();
    build(spec, &addresses).map(|(sim, _, _)| sim)
}

type Built = (Arc<Sim>, Vec<(Ref<Host>, String)>, Vec<HostCertificate>);

fn build(spec: &PoolSpec, addresses: &[SocketAddr]) -> Result<Built, Error> {
    if spec.hosts.is_empty() {
        return Err(scenario_error("a pool needs at least one host"));
    }
    let mut certificates = Vec::new();
    for (host, address) in spec.hosts.iter().zip(addresses) {
        certificates.push(HostCertificate::generate(&host.name, address.ip())?);
    }
    let version = XapiVersion::parse(&spec.xapi_version)
        .ok_or_else(|| scenario_error(format!("invalid xapi version {:?}", spec.xapi_version)))?;
    let config = DbConfig {
        xapi_version: version,
        guest_metrics_delay: Duration::from_millis(spec.guest_metrics_delay_ms),
        data_destroy_wait: Duration::from_millis(spec.data_destroy_wait_ms),
        task_gc_delay: Duration::from_millis(spec.task_gc_delay_ms),
        ..DbConfig::default()
    };
    let mut database = Db::new(Storage::new(), config);
    let host_refs = populate(&mut database, spec, addresses, &certificates)?;
    let sim = Sim::new(
        database,
        Credentials::new(&spec.username, &spec.password),
        Duration::from_millis(spec.auth_failure_delay_ms),
    );
    for rule in &spec.faults {
        sim.faults().add(rule.clone());
    }
    Ok((sim, host_refs, certificates))
}

fn insert_host(db: &mut Db, name: &str, address: IpAddr, version: XapiVersion) -> String {
    let version_text = version.to_string();
    let host = db.insert(
        ClassId::Host,
        vec![
            ("name_label", Value::from(name)),
            ("hostname", Value::from(name)),
            ("address", Value::String(address.to_string())),
            ("enabled", Value::Bool(true)),
            ("API_version_major", Value::Int(2)),
            ("API_version_minor", Value::Int(21)),
            ("API_version_vendor", Value::from("XenSource")),
            (
                "software_version",
                string_map([
                    ("product_brand", "XCP-ng"),
                    ("product_version", "8.3.0"),
                    ("platform_name", "XCP"),
                    ("platform_version", "3.4.0"),
                    ("xapi", version_text.as_str()),
                    ("xen", "4.17.5"),
                ]),
            ),
            (
                "capabilities",
                db::string_set(["xen-3.0-x86_64", "hvm-3.0-x86_64"]),
            ),
            ("sched_policy", Value::from("credit")),
            ("edition", Value::from("xcp-ng")),
            ("display", Value::from("enabled")),
            ("https_only", Value::Bool(false)),
            ("last_software_update", Value::DateTime(db::now())),
        ],
    );
    let metrics = vm::new_metrics(db, 4, 4 << 30);
    let dom0 = db.insert(
        ClassId::Vm,
        vec![
            (
                "name_label",
                Value::String(format!("Control domain on host: {name}")),
            ),
            (
                "name_description",
                Value::from("The domain which manages physical devices and manages other domains"),
            ),
            ("power_state", Value::from("Running")),
            ("user_version", Value::Int(1)),
            ("is_control_domain", Value::Bool(true)),
            ("resident_on", Value::String(host.clone())),
            ("domid", Value::Int(0)),
            ("memory_static_max", Value::Int(4 << 30)),
            ("memory_dynamic_max", Value::Int(4 << 30)),
            ("memory_dynamic_min", Value::Int(4 << 30)),
            ("memory_static_min", Value::Int(4 << 30)),
            ("memory_target", Value::Int(4 << 30)),
            ("VCPUs_max", Value::Int(4)),
            ("VCPUs_at_startup", Value::Int(4)),
            ("actions_after_shutdown", Value::from("destroy")),
            ("actions_after_reboot", Value::from("destroy")),
            ("actions_after_crash", Value::from("destroy")),
            ("metrics", Value::String(metrics)),
            ("domain_type", Value::from("pv")),
            ("other_config", string_map([("storage_driver_domain", "")])),
        ],
    );
    let _set = db.set(ClassId::Host, &host, "control_domain", Value::String(dom0));
    host
}

fn populate(
    db: &mut Db,
    spec: &PoolSpec,
    addresses: &[SocketAddr],
    certificates: &[HostCertificate],
) -> Result<Vec<(Ref<Host>, String)>, Error> {
    let version = db.config().xapi_version;
    let mut hosts = Vec::new();
    for ((host_spec, address), certificate) in spec.hosts.iter().zip(addresses).zip(certificates) {
        let host = insert_host(db, &host_spec.name, address.ip(), version);
        db.set_host_runtime(
            &host,
            HostRuntime::new(
                certificate.pem().to_owned(),
                certificate.der(),
                certificate.subject().to_owned(),
            ),
        );
        hosts.push((host, host_spec.name.clone()));
    }
    let master = hosts
        .first()
        .map(|(host, _)| host.clone())
        .ok_or_else(|| scenario_error("no host"))?;
    let restrictions: Vec<(&str, &str)> = spec
        .restrictions
        .iter()
        .map(|(key, value)| (key.as_str(), value.as_str()))
        .collect();
    let pool = db.insert(
        ClassId::Pool,
        vec![
            ("name_label", Value::from(spec.name.as_str())),
            ("master", Value::String(master.clone())),
            ("restrictions", string_map(restrictions)),
            (
                "cpu_info",
                string_map([("vendor", "GenuineIntel"), ("cpu_count", "4")]),
            ),
        ],
    );
    add_networks(db, spec, &hosts)?;
    let default_sr = add_srs(db, spec, &hosts, &master)?;
    db.set(
        ClassId::Pool,
        &pool,
        "default_SR",
        Value::String(default_sr.clone()),
    )
    .map_err(|f| api_error("pool", &f))?;
    for vm_spec in &spec.vms {
        add_vm(db, vm_spec, &hosts, &default_sr).map_err(|error| match error {
            Error::Scenario { reason } => scenario_error(format!("VM {}: {reason}", vm_spec.name)),
            other => other,
        })?;
    }
    Ok(hosts
        .into_iter()
        .map(|(host, name)| (Ref::new(host), name))
        .collect())
}

fn add_networks(db: &mut Db, spec: &PoolSpec, hosts: &[(String, String)]) -> Result<(), Error> {
    let mut networks = spec.networks.clone();
    if !networks.iter().any(|network| network.management) {
        let mut management =
            crate::scenario::NetworkSpec::new("Pool-wide network associated with eth0")
                .management();
        management.bridge = Some("xenbr0".to_owned());
        networks.insert(0, management);
    }
    for (index, network_spec) in networks.iter().enumerate() {
        let bridge = network_spec
            .bridge
            .clone()
            .unwrap_or_else(|| format!("xenbr{index}"));
        let network = db.insert(
            ClassId::Network,
            vec![
                ("name_label", Value::from(network_spec.name.as_str())),
                ("MTU", Value::Int(network_spec.mtu)),
                ("bridge", Value::String(bridge)),
                ("managed", Value::Bool(network_spec.managed)),
                ("other_config", string_map(Vec::<(String, String)>::new())),
                ("default_locking_mode", Value::from("unlocked")),
            ],
        );
        for purpose in &network_spec.purpose {
            db::objects::add_purpose(db, &network, purpose).map_err(|failure| {
                api_error(&format!("network {}", network_spec.name), &failure)
            })?;
        }
        for (host, _) in hosts {
            let address = db.str(ClassId::Host, host, "address");
            let mac = vm::mac_from_seed(host, &index.to_string());
            db.insert(
                ClassId::Pif,
                vec![
                    ("device", Value::String(format!("eth{index}"))),
                    ("network", Value::String(network.clone())),
                    ("host", Value::String(host.clone())),
                    ("MAC", Value::String(mac)),
                    ("MTU", Value::Int(network_spec.mtu)),
                    ("VLAN", Value::Int(-1)),
                    ("physical", Value::Bool(true)),
                    ("currently_attached", Value::Bool(true)),
                    ("ip_configuration_mode", Value::from("Static")),
                    ("IP", Value::String(address)),
                    ("netmask", Value::from("255.0.0.0")),
                    ("management", Value::Bool(network_spec.management)),
                    (
                        "ipv6_configuration_mode",
                        Value::from(if network_spec.ipv6.is_empty() {
                            "None"
                        } else {
                            "Static"
                        }),
                    ),
                    ("IPv6", db::string_set(network_spec.ipv6.clone())),
                    ("primary_address_type", Value::from("IPv4")),
                    ("managed", Value::Bool(true)),
                    ("igmp_snooping_status", Value::from("unknown")),
                ],
            );
        }
    }
    Ok(())
}

fn host_by_name(hosts: &[(String, String)], name: &str) -> Result<String, Error> {
    hosts
        .iter()
        .find(|(_, host_name)| host_name == name)
        .map(|(host, _)| host.clone())
        .ok_or_else(|| scenario_error(format!("unknown host {name:?}")))
}

/// SR types backed by LVM.
const LVM_TYPES: &[&str] = &["lvm", "lvmoiscsi", "lvmohba"];

fn add_srs(
    db: &mut Db,
    spec: &PoolSpec,
    hosts: &[(String, String)],
    master: &str,
) -> Result<String, Error> {
    let srs = if spec.srs.is_empty() {
        vec![crate::scenario::SrSpec::default()]
    } else {
        spec.srs.clone()
    };
    let mut default_sr = None;
    let mut first_user_sr = None;
    for sr_spec in &srs {
        let content_type = sr_spec.content_type.clone().unwrap_or_else(|| {
            if sr_spec.sr_type == "iso" {
                "iso".to_owned()
            } else {
                "user".to_owned()
            }
        });
        let sr = db.insert(
            ClassId::Sr,
            vec![
                ("name_label", Value::from(sr_spec.name.as_str())),
                ("type", Value::from(sr_spec.sr_type.as_str())),
                ("content_type", Value::String(content_type.clone())),
                ("shared", Value::Bool(sr_spec.shared)),
                (
                    "physical_size",
                    Value::Int(i64::try_from(sr_spec.physical_size.0).unwrap_or(i64::MAX)),
                ),
                ("other_config", string_map(Vec::<(String, String)>::new())),
                (
                    "sm_config",
                    // XCP-ng's LVM SRs are LVHD: their VDIs are VHDs (VHD imports work).
                    if LVM_TYPES.contains(&sr_spec.sr_type.as_str()) {
                        string_map([("use_vhd", "true")])
                    } else {
                        string_map(Vec::<(String, String)>::new())
                    },
                ),
            ],
        );
        let owners = if sr_spec.shared {
            hosts.iter().map(|(host, _)| host.clone()).collect()
        } else {
            vec![match &sr_spec.host {
                Some(name) => host_by_name(hosts, name)?,
                None => master.to_owned(),
            }]
        };
        for host in owners {
            db.insert(
                ClassId::Pbd,
                vec![
                    ("host", Value::String(host)),
                    ("SR", Value::String(sr.clone())),
                    (
                        "device_config",
                        string_map([(
                            "location",
                            format!("/var/run/sr-mount/{}", db.str(ClassId::Sr, &sr, "uuid")),
                        )]),
                    ),
                    ("currently_attached", Value::Bool(sr_spec.attached)),
                ],
            );
        }
        if sr_spec.default {
            default_sr = Some(sr.clone());
        }
        if first_user_sr.is_none() && content_type != "iso" {
            first_user_sr = Some(sr);
        }
    }
    default_sr
        .or(first_user_sr)
        .ok_or_else(|| scenario_error("no SR can hold VM disks"))
}

fn add_vm(
    db: &mut Db,
    spec: &VmSpec,
    hosts: &[(String, String)],
    default_sr: &str,
) -> Result<(), Error> {
    let memory = i64::try_from(spec.memory.0).unwrap_or(i64::MAX);
    let mut other_config: Vec<(String, String)> = spec.other_config.clone().into_iter().collect();
    if !other_config.iter().any(|(key, _)| key == "mac_seed") {
        other_config.push(("mac_seed".to_owned(), db::new_uuid()));
    }
    let fields = vec![
        ("name_label", Value::from(spec.name.as_str())),
        ("user_version", Value::Int(1)),
        ("is_a_template", Value::Bool(spec.template)),
        ("memory_static_max", Value::Int(memory)),
        ("memory_dynamic_max", Value::Int(memory)),
        ("memory_dynamic_min", Value::Int(memory)),
        ("memory_static_min", Value::Int(memory.min(512 << 20))),
        ("VCPUs_max", Value::Int(spec.vcpus)),
        ("VCPUs_at_startup", Value::Int(spec.vcpus)),
        ("actions_after_shutdown", Value::from("destroy")),
        ("actions_after_reboot", Value::from("restart")),
        ("actions_after_crash", Value::from("restart")),
        ("HVM_boot_policy", Value::from("BIOS order")),
        ("HVM_boot_params", string_map([("order", "cd")])),
        (
            "platform",
            string_map([
                ("acpi", "1"),
                ("apic", "true"),
                ("pae", "true"),
                ("viridian", "true"),
                ("device-model", "qemu-upstream-compat"),
            ]),
        ),
        ("other_config", string_map(other_config)),
        ("recommendations", Value::void()),
        ("domain_type", Value::from("hvm")),
        ("generation_id", Value::from("0:0")),
        ("hardware_platform_version", Value::Int(2)),
        (
            "bios_strings",
            string_map([("bios-vendor", "Xen"), ("system-manufacturer", "Xen")]),
        ),
    ];
    let vm = vm::create(db, fields).map_err(|failure| api_error("create", &failure))?;
    for (operation, reason) in &spec.blocked_operations {
        db.map_put(
            ClassId::Vm,
            &vm,
            "blocked_operations",
            operation,
            Value::from(reason.as_str()),
        )
        .map_err(|failure| api_error("blocked_operations", &failure))?;
    }
    vm::set_guest_agent(
        db,
        &vm,
        vm::GuestAgent {
            pv_drivers: spec.pv_drivers,
            delay: spec.guest_metrics_delay_ms.map(Duration::from_millis),
            ip: spec.ip.clone().unwrap_or_else(|| "192.0.2.10".to_owned()),
        },
    );
    for (index, disk) in spec.disks.iter().enumerate() {
        add_disk(db, spec, &vm, index, disk, default_sr)?;
    }
    for (index, vif) in spec.vifs.iter().enumerate() {
        let network = db
            .find(
                ClassId::Network,
                "name_label",
                &Value::from(vif.network.as_str()),
            )
            .into_iter()
            .next()
            .ok_or_else(|| scenario_error(format!("unknown network {:?}", vif.network)))?;
        let fields = vec![
            ("device", Value::String(index.to_string())),
            ("network", Value::String(network)),
            ("VM", Value::String(vm.clone())),
            ("MAC", Value::String(vif.mac.clone().unwrap_or_default())),
            ("MTU", Value::Int(1500)),
            ("other_config", string_map(Vec::<(String, String)>::new())),
            ("locking_mode", Value::from("network_default")),
        ];
        db::objects::create_vif(db, fields).map_err(|failure| api_error("VIF", &failure))?;
    }
    if spec.power_state != "Halted" {
        if let Some(name) = &spec.host {
            let host = host_by_name(hosts, name)?;
            db.set(ClassId::Vm, &vm, "affinity", Value::String(host))
                .map_err(|failure| api_error("affinity", &failure))?;
        }
        vm::force_power_state(db, &vm, &spec.power_state)
            .map_err(|failure| api_error("power state", &failure))?;
        let domid = db.int(ClassId::Vm, &vm, "domid");
        if spec.pv_drivers && spec.power_state == "Running" {
            vm::report_guest_metrics(db, &vm, domid)
                .map_err(|failure| api_error("guest metrics", &failure))?;
        }
    }
    let _scheduled = db.take_scheduled();
    Ok(())
}

fn add_disk(
    db: &mut Db,
    spec: &VmSpec,
    vm: &str,
    index: usize,
    disk: &crate::scenario::DiskSpec,
    default_sr: &str,
) -> Result<(), Error> {
    let storage = db.storage().clone();
    let sr = match &disk.sr {
        Some(name) => db
            .find(ClassId::Sr, "name_label", &Value::from(name.as_str()))
            .into_iter()
            .next()
            .ok_or_else(|| scenario_error(format!("unknown SR {name:?}")))?,
        None => default_sr.to_owned(),
    };
    let id = storage
        .create(ByteLen::new(disk.size.0))
        .map_err(|error| scenario_error(error.to_string()))?;
    for content in &disk.content {
        let pattern = Pattern::Random { seed: content.seed };
        match content.random_blocks {
            Some(count) => {
                storage
                    .guest_write_random_blocks(id, count, content.seed, pattern)
                    .map_err(|error| scenario_error(error.to_string()))?;
            }
            None => {
                let extent = ByteExtent::at(content.offset.0, content.length.0)
                    .map_err(|error| scenario_error(error.to_string()))?;
                storage
                    .guest_write(id, extent, pattern)
                    .map_err(|error| scenario_error(error.to_string()))?;
            }
        }
    }
    let name = disk
        .name
        .clone()
        .unwrap_or_else(|| format!("{} disk {index}", spec.name));
    let vdi = vdi::insert_with_disk(
        db,
        id,
        vec![
            ("name_label", Value::String(name)),
            ("SR", Value::String(sr)),
            ("type", Value::from("user")),
            ("read_only", Value::Bool(disk.cd)),
            ("other_config", string_map(Vec::<(String, String)>::new())),
        ],
    )
    .map_err(|failure| api_error("VDI", &failure))?;
    if disk.cbt {
        vdi::set_cbt(db, &vdi, true).map_err(|failure| api_error("enable CBT", &failure))?;
    }
    let fields = vec![
        ("VM", Value::from(vm)),
        ("VDI", Value::String(vdi)),
        ("userdevice", Value::String(index.to_string())),
        ("bootable", Value::Bool(index == 0)),
        ("mode", Value::from(if disk.cd { "RO" } else { "RW" })),
        ("type", Value::from(if disk.cd { "CD" } else { "Disk" })),
        ("empty", Value::Bool(false)),
        ("other_config", string_map(Vec::<(String, String)>::new())),
        ("qos_algorithm_type", Value::void()),
        (
            "qos_algorithm_params",
            string_map(Vec::<(String, String)>::new()),
        ),
    ];
    db::objects::create_vbd(db, fields).map_err(|failure| api_error("VBD", &failure))?;
    Ok(())
}
