//! Scenarios: what a simulated pool contains, from a builder or a TOML file.
//!
//! ```toml
//! [[pool]]
//! name = "site-a"
//! tls = false
//! username = "root"
//! password = "secret"
//! hosts = [{ name = "host-0" }, { name = "host-1" }]
//!
//! [[pool.sr]]
//! name = "Local storage"
//! type = "ext"
//!
//! [[pool.network]]
//! name = "NBD network"
//! purpose = ["insecure_nbd"]
//!
//! [[pool.vm]]
//! name = "web01"
//! power_state = "Running"
//! vif = [{ network = "NBD network" }]
//! disk = [{ size = "64 MiB", content = [{ offset = 0, length = "4 MiB", seed = 7 }] }]
//! ```
//!
//! Sizes are bytes or strings with a binary unit (`"2 TiB"`, `"512MiB"`). Every pool has a
//! management network (`Pool-wide network associated with eth0`, bridge `xenbr0`) unless one
//! network says `management = true`, and a local `ext` SR on the master unless SRs are given.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use crate::Error;
use crate::faults::FaultRule;

/// A size in bytes, read from an integer or from a string with a binary unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct Size(pub u64);

impl Size {
    /// `n` MiB.
    #[must_use]
    pub const fn mib(n: u64) -> Size {
        Size(n.saturating_mul(1 << 20))
    }

    /// `n` GiB.
    #[must_use]
    pub const fn gib(n: u64) -> Size {
        Size(n.saturating_mul(1 << 30))
    }

    /// Parses `"10 GiB"`, `"512MiB"`, `"4M"`, `"4096"`.
    ///
    /// # Errors
    /// [`Error::Scenario`] for anything else or an overflowing size.
    pub fn parse(text: &str) -> Result<Size, Error> {
        let text = text.trim();
        let split = text
            .find(|character: char| !character.is_ascii_digit())
            .unwrap_or(text.len());
        let (digits, unit) = text.split_at(split);
        let invalid = || Error::Scenario {
            reason: format!("invalid size {text:?}"),
        };
        let number: u64 = digits.parse().map_err(|_| invalid())?;
        let shift = match unit.trim() {
            "" | "B" => 0,
            "K" | "KiB" => 10,
            "M" | "MiB" => 20,
            "G" | "GiB" => 30,
            "T" | "TiB" => 40,
            _ => return Err(invalid()),
        };
        number
            .checked_mul(1u64 << shift)
            .map(Size)
            .ok_or_else(invalid)
    }
}

impl<'de> serde::Deserialize<'de> for Size {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Size, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u64),
            Text(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Number(number) => Ok(Size(number)),
            Raw::Text(text) => Size::parse(&text).map_err(serde::de::Error::custom),
        }
    }
}

/// A whole scenario: one or more pools.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Scenario {
    /// The pools.
    #[serde(rename = "pool", default)]
    pub pools: Vec<PoolSpec>,
}

impl Scenario {
    /// A scenario of these pools.
    #[must_use]
    pub fn new(pools: Vec<PoolSpec>) -> Scenario {
        Scenario { pools }
    }

    /// Reads a TOML scenario.
    ///
    /// # Errors
    /// [`Error::Scenario`] with the parser's message.
    pub fn from_toml(text: &str) -> Result<Scenario, Error> {
        toml::from_str(text).map_err(|error| Error::Scenario {
            reason: error.to_string(),
        })
    }

    /// Reads a TOML scenario file.
    ///
    /// # Errors
    /// [`Error::Io`], [`Error::Scenario`].
    pub fn load(path: &Path) -> Result<Scenario, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            context: format!("reading {}", path.display()),
            source,
        })?;
        Scenario::from_toml(&text)
    }
}

/// One pool.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct PoolSpec {
    /// `pool.name_label`.
    pub name: String,
    /// Hosts; the first is the master.
    pub hosts: Vec<HostSpec>,
    /// Accepted user name.
    pub username: String,
    /// Accepted password.
    pub password: String,
    /// HTTPS with a generated self-signed certificate (else plain HTTP).
    pub tls: bool,
    /// xapi version whose API shapes are served (`VM.snapshot`'s third parameter from 21.4.0).
    pub xapi_version: String,
    /// Delay before `SESSION_AUTHENTICATION_FAILED` (xapi: 5000).
    pub auth_failure_delay_ms: u64,
    /// Default delay before a started VM reports guest metrics.
    pub guest_metrics_delay_ms: u64,
    /// How long `VDI.data_destroy` waits for VBDs (xapi: 4000).
    pub data_destroy_wait_ms: u64,
    /// Completed tasks are deleted this long after finishing (xapi: 3 900 000).
    pub task_gc_delay_ms: u64,
    /// `pool.restrictions` (e.g. `restrict_cbt = "true"`).
    pub restrictions: BTreeMap<String, String>,
    /// Storage repositories.
    #[serde(rename = "sr")]
    pub srs: Vec<SrSpec>,
    /// Networks beyond the management one (or including it, with `management = true`).
    #[serde(rename = "network")]
    pub networks: Vec<NetworkSpec>,
    /// VMs and templates.
    #[serde(rename = "vm")]
    pub vms: Vec<VmSpec>,
    /// Fault rules armed at start.
    #[serde(rename = "fault")]
    pub faults: Vec<FaultRule>,
}

impl Default for PoolSpec {
    fn default() -> Self {
        PoolSpec {
            name: "xapi-sim pool".to_owned(),
            hosts: vec![HostSpec::new("host-0")],
            username: "root".to_owned(),
            password: "xapi-sim".to_owned(),
            tls: true,
            xapi_version: crate::db::XapiVersion::DEFAULT.to_string(),
            auth_failure_delay_ms: 0,
            guest_metrics_delay_ms: 0,
            data_destroy_wait_ms: 4000,
            task_gc_delay_ms: 3_900_000,
            restrictions: BTreeMap::new(),
            srs: Vec::new(),
            networks: Vec::new(),
            vms: Vec::new(),
            faults: Vec::new(),
        }
    }
}

impl PoolSpec {
    /// A pool with one host, a local `ext` SR and the management network.
    #[must_use]
    pub fn new(name: &str) -> PoolSpec {
        PoolSpec {
            name: name.to_owned(),
            ..PoolSpec::default()
        }
    }

    /// `count` hosts named `host-0`…; the first is the master.
    #[must_use]
    pub fn hosts(mut self, count: usize) -> PoolSpec {
        self.hosts = (0..count.max(1))
            .map(|index| HostSpec::new(&format!("host-{index}")))
            .collect();
        self
    }

    /// Adds a host.
    #[must_use]
    pub fn host(mut self, host: HostSpec) -> PoolSpec {
        self.hosts.push(host);
        self
    }

    /// The accepted credentials.
    #[must_use]
    pub fn credentials(mut self, username: &str, password: &str) -> PoolSpec {
        self.username = username.to_owned();
        self.password = password.to_owned();
        self
    }

    /// HTTPS (`true`) or plain HTTP.
    #[must_use]
    pub fn tls(mut self, tls: bool) -> PoolSpec {
        self.tls = tls;
        self
    }

    /// The xapi version served (`"21.3.0"` refuses `VM.snapshot`'s third parameter).
    #[must_use]
    pub fn xapi_version(mut self, version: &str) -> PoolSpec {
        version.clone_into(&mut self.xapi_version);
        self
    }

    /// Delay before `SESSION_AUTHENTICATION_FAILED`.
    #[must_use]
    pub fn auth_failure_delay(mut self, delay: Duration) -> PoolSpec {
        self.auth_failure_delay_ms = millis(delay);
        self
    }

    /// Default delay before started VMs report guest metrics.
    #[must_use]
    pub fn guest_metrics_delay(mut self, delay: Duration) -> PoolSpec {
        self.guest_metrics_delay_ms = millis(delay);
        self
    }

    /// How long `VDI.data_destroy` waits for VBDs to go.
    #[must_use]
    pub fn data_destroy_wait(mut self, delay: Duration) -> PoolSpec {
        self.data_destroy_wait_ms = millis(delay);
        self
    }

    /// How long finished tasks live.
    #[must_use]
    pub fn task_gc_delay(mut self, delay: Duration) -> PoolSpec {
        self.task_gc_delay_ms = millis(delay);
        self
    }

    /// Sets a `pool.restrictions` entry.
    #[must_use]
    pub fn restriction(mut self, key: &str, value: &str) -> PoolSpec {
        self.restrictions.insert(key.to_owned(), value.to_owned());
        self
    }

    /// Adds an SR.
    #[must_use]
    pub fn sr(mut self, sr: SrSpec) -> PoolSpec {
        self.srs.push(sr);
        self
    }

    /// Adds a network.
    #[must_use]
    pub fn network(mut self, network: NetworkSpec) -> PoolSpec {
        self.networks.push(network);
        self
    }

    /// Adds a VM.
    #[must_use]
    pub fn vm(mut self, vm: VmSpec) -> PoolSpec {
        self.vms.push(vm);
        self
    }

    /// Arms a fault rule at start.
    #[must_use]
    pub fn fault(mut self, rule: FaultRule) -> PoolSpec {
        self.faults.push(rule);
        self
    }
}

fn millis(delay: Duration) -> u64 {
    u64::try_from(delay.as_millis()).unwrap_or(u64::MAX)
}

/// One host.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct HostSpec {
    /// `host.name_label` and `host.hostname`.
    pub name: String,
    /// Loopback address to listen on (default: `127.0.0.<index + 1>`); also `host.address`.
    #[serde(default)]
    pub address: Option<Ipv4Addr>,
}

impl HostSpec {
    /// A host with a default address.
    #[must_use]
    pub fn new(name: &str) -> HostSpec {
        HostSpec {
            name: name.to_owned(),
            address: None,
        }
    }
}

/// One SR.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct SrSpec {
    /// `SR.name_label`.
    pub name: String,
    /// SM driver type (`ext`, `lvm`, `nfs`, `iso`, …): decides CBT and snapshot support.
    #[serde(rename = "type")]
    pub sr_type: String,
    /// Shared: a PBD on every host; else one PBD on `host` (default: the master).
    pub shared: bool,
    /// The host of a local SR.
    pub host: Option<String>,
    /// `SR.content_type` (default `user`, `iso` for `iso` SRs).
    pub content_type: Option<String>,
    /// `SR.physical_size`.
    pub physical_size: Size,
    /// Make it `pool.default_SR`.
    pub default: bool,
    /// Whether its PBDs start plugged.
    pub attached: bool,
}

impl Default for SrSpec {
    fn default() -> Self {
        SrSpec {
            name: "Local storage".to_owned(),
            sr_type: "ext".to_owned(),
            shared: false,
            host: None,
            content_type: None,
            physical_size: Size(4 << 40),
            default: false,
            attached: true,
        }
    }
}

impl SrSpec {
    /// An SR of this SM type.
    #[must_use]
    pub fn new(name: &str, sr_type: &str) -> SrSpec {
        SrSpec {
            name: name.to_owned(),
            sr_type: sr_type.to_owned(),
            ..SrSpec::default()
        }
    }

    /// Shared between all hosts.
    #[must_use]
    pub fn shared(mut self) -> SrSpec {
        self.shared = true;
        self
    }

    /// Local to this host.
    #[must_use]
    pub fn on_host(mut self, host: &str) -> SrSpec {
        self.host = Some(host.to_owned());
        self
    }

    /// Makes it the pool's default SR.
    #[must_use]
    pub fn default_sr(mut self) -> SrSpec {
        self.default = true;
        self
    }
}

/// One network.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct NetworkSpec {
    /// `network.name_label`.
    pub name: String,
    /// Bridge (default `xenbr<n>`).
    pub bridge: Option<String>,
    /// `nbd` and/or `insecure_nbd` (mutually exclusive pool-wide).
    pub purpose: Vec<String>,
    /// MTU.
    pub mtu: i64,
    /// Carries the management interface (PIFs with `management = true`).
    pub management: bool,
    /// `network.managed`.
    pub managed: bool,
    /// IPv6 addresses (CIDR) of every host's PIF on this network, besides the IPv4 host address.
    pub ipv6: Vec<String>,
}

impl Default for NetworkSpec {
    fn default() -> Self {
        NetworkSpec {
            name: "Pool-wide network".to_owned(),
            bridge: None,
            purpose: Vec::new(),
            mtu: 1500,
            management: false,
            managed: true,
            ipv6: Vec::new(),
        }
    }
}

impl NetworkSpec {
    /// A network.
    #[must_use]
    pub fn new(name: &str) -> NetworkSpec {
        NetworkSpec {
            name: name.to_owned(),
            ..NetworkSpec::default()
        }
    }

    /// Adds a purpose (`nbd`, `insecure_nbd`).
    #[must_use]
    pub fn purpose(mut self, purpose: &str) -> NetworkSpec {
        self.purpose.push(purpose.to_owned());
        self
    }

    /// Gives every host's PIF on this network an IPv6 address (CIDR, e.g. `fd00::5/64`).
    #[must_use]
    pub fn ipv6(mut self, cidr: &str) -> NetworkSpec {
        self.ipv6.push(cidr.to_owned());
        self
    }

    /// Makes it the management network.
    #[must_use]
    pub fn management(mut self) -> NetworkSpec {
        self.management = true;
        self
    }
}

/// One VM (or template).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct VmSpec {
    /// `VM.name_label`.
    pub name: String,
    /// Initial power state (`Halted`, `Running`, `Paused`, `Suspended`).
    pub power_state: String,
    /// A template rather than a VM.
    pub template: bool,
    /// Host to run on (default: the master).
    pub host: Option<String>,
    /// `memory_static_max` (and the other limits).
    pub memory: Size,
    /// `VCPUs_max` and `VCPUs_at_startup`.
    pub vcpus: i64,
    /// Disks, in `userdevice` order.
    #[serde(rename = "disk")]
    pub disks: Vec<DiskSpec>,
    /// Network interfaces, in device order.
    #[serde(rename = "vif")]
    pub vifs: Vec<VifSpec>,
    /// `other_config` entries.
    pub other_config: BTreeMap<String, String>,
    /// `blocked_operations` entries (operation → reason).
    pub blocked_operations: BTreeMap<String, String>,
    /// The guest has PV drivers (reports guest metrics when running).
    pub pv_drivers: bool,
    /// Delay before guest metrics after a start (default: the pool's).
    pub guest_metrics_delay_ms: Option<u64>,
    /// IPv4 address reported by the guest agent.
    pub ip: Option<String>,
}

impl Default for VmSpec {
    fn default() -> Self {
        VmSpec {
            name: "vm".to_owned(),
            power_state: "Halted".to_owned(),
            template: false,
            host: None,
            memory: Size::gib(1),
            vcpus: 1,
            disks: Vec::new(),
            vifs: Vec::new(),
            other_config: BTreeMap::new(),
            blocked_operations: BTreeMap::new(),
            pv_drivers: true,
            guest_metrics_delay_ms: None,
            ip: None,
        }
    }
}

impl VmSpec {
    /// A halted VM without disks.
    #[must_use]
    pub fn new(name: &str) -> VmSpec {
        VmSpec {
            name: name.to_owned(),
            ..VmSpec::default()
        }
    }

    /// Starts `Running`.
    #[must_use]
    pub fn running(mut self) -> VmSpec {
        "Running".clone_into(&mut self.power_state);
        self
    }

    /// A template.
    #[must_use]
    pub fn template(mut self) -> VmSpec {
        self.template = true;
        self
    }

    /// Adds a disk.
    #[must_use]
    pub fn disk(mut self, disk: DiskSpec) -> VmSpec {
        self.disks.push(disk);
        self
    }

    /// Adds a VIF on a network (by name).
    #[must_use]
    pub fn vif(mut self, network: &str) -> VmSpec {
        self.vifs.push(VifSpec {
            network: network.to_owned(),
            mac: None,
        });
        self
    }

    /// Adds an `other_config` entry.
    #[must_use]
    pub fn other_config(mut self, key: &str, value: &str) -> VmSpec {
        self.other_config.insert(key.to_owned(), value.to_owned());
        self
    }

    /// Blocks an operation with a reason.
    #[must_use]
    pub fn blocked(mut self, operation: &str, reason: &str) -> VmSpec {
        self.blocked_operations
            .insert(operation.to_owned(), reason.to_owned());
        self
    }

    /// Guest metrics appear this long after a start.
    #[must_use]
    pub fn guest_metrics_delay(mut self, delay: Duration) -> VmSpec {
        self.guest_metrics_delay_ms = Some(millis(delay));
        self
    }

    /// Whether the guest has PV drivers.
    #[must_use]
    pub fn pv_drivers(mut self, present: bool) -> VmSpec {
        self.pv_drivers = present;
        self
    }
}

/// One disk of a VM.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct DiskSpec {
    /// `VDI.name_label` (default: `<vm> disk <n>`).
    pub name: Option<String>,
    /// Virtual size (rounded up to 2 MiB).
    pub size: Size,
    /// SR by name (default: the pool's default SR).
    pub sr: Option<String>,
    /// Initial content.
    pub content: Vec<ContentSpec>,
    /// Enable CBT at start.
    pub cbt: bool,
    /// A CD (read-only VBD of type `CD`) instead of a disk.
    pub cd: bool,
}

impl Default for DiskSpec {
    fn default() -> Self {
        DiskSpec {
            name: None,
            size: Size::mib(64),
            sr: None,
            content: Vec::new(),
            cbt: false,
            cd: false,
        }
    }
}

impl DiskSpec {
    /// An empty disk of `size`.
    #[must_use]
    pub fn new(size: Size) -> DiskSpec {
        DiskSpec {
            size,
            ..DiskSpec::default()
        }
    }

    /// Pseudo-random content (`seed`) over `length` bytes at `offset`.
    #[must_use]
    pub fn random(mut self, offset: u64, length: u64, seed: u64) -> DiskSpec {
        self.content.push(ContentSpec {
            offset: Size(offset),
            length: Size(length),
            seed,
            random_blocks: None,
        });
        self
    }

    /// `count` whole 2 MiB blocks chosen from `seed`, filled with pseudo-random bytes.
    #[must_use]
    pub fn random_blocks(mut self, count: u32, seed: u64) -> DiskSpec {
        self.content.push(ContentSpec {
            offset: Size(0),
            length: Size(0),
            seed,
            random_blocks: Some(count),
        });
        self
    }

    /// CBT enabled.
    #[must_use]
    pub fn cbt(mut self) -> DiskSpec {
        self.cbt = true;
        self
    }

    /// A CD (read-only `CD` VBD), e.g. an ISO on an `iso` SR.
    #[must_use]
    pub fn cd(mut self) -> DiskSpec {
        self.cd = true;
        self
    }

    /// On this SR.
    #[must_use]
    pub fn on_sr(mut self, sr: &str) -> DiskSpec {
        self.sr = Some(sr.to_owned());
        self
    }
}

/// Initial content written into a disk.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct ContentSpec {
    /// Start of the range.
    pub offset: Size,
    /// Length of the range.
    pub length: Size,
    /// Seed of the pseudo-random bytes.
    pub seed: u64,
    /// Instead of a range: this many whole blocks chosen from `seed`.
    pub random_blocks: Option<u32>,
}

impl Default for ContentSpec {
    fn default() -> Self {
        ContentSpec {
            offset: Size(0),
            length: Size(0),
            seed: 0,
            random_blocks: None,
        }
    }
}

/// One VIF of a VM.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct VifSpec {
    /// Network by name.
    pub network: String,
    /// MAC (default: generated from the VM's `mac_seed`).
    #[serde(default)]
    pub mac: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!(Size::parse("64 MiB").unwrap(), Size::mib(64));
        assert_eq!(Size::parse("2T").unwrap(), Size(2 << 40));
        assert_eq!(Size::parse("512").unwrap(), Size(512));
        assert!(Size::parse("1 parsec").is_err());
        assert!(Size::parse("99999999999 TiB").is_err());
    }

    #[test]
    fn the_module_example_parses() {
        let text = "[[pool]]\nname = \"site-a\"\ntls = false\nhosts = [{ name = \"host-0\" }, { name = \"host-1\" }]\n\
            [[pool.sr]]\nname = \"Local storage\"\ntype = \"ext\"\n\
            [[pool.network]]\nname = \"NBD network\"\npurpose = [\"insecure_nbd\"]\n\
            [[pool.vm]]\nname = \"web01\"\npower_state = \"Running\"\nvif = [{ network = \"NBD network\" }]\n\
            disk = [{ size = \"64 MiB\", content = [{ offset = 0, length = \"4 MiB\", seed = 7 }] }]\n";
        let scenario = Scenario::from_toml(text).unwrap();
        let pool = &scenario.pools[0];
        assert_eq!(
            (pool.hosts.len(), pool.tls, pool.username.as_str()),
            (2, false, "root")
        );
        assert_eq!(pool.vms[0].disks[0].content[0].length, Size::mib(4));
        assert!(Scenario::from_toml("[[pool]]\nbogus = 1\n").is_err());
    }
}
