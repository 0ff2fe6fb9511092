//! `xapi-list-vms`: connect to an XCP-ng / XenServer pool and list its VMs with their power
//! state — the smallest useful program on the `xenapi` crate, and a starting point for your own.
//!
//! ```text
//! XAPI_PASSWORD=secret xapi-list-vms https://root@pool-master.lan --pin sha256:3F:A1:…
//! xapi-list-vms https://root@10.0.0.2 --password-file ~/.xapi-password --ca pool-ca.pem
//! xapi-list-vms https://root@lab-host --password-file pw --insecure --all
//! ```
//!
//! The password comes from `--password-file`, else the environment variable named by
//! `--password-env` (default `XAPI_PASSWORD`), else the URL (`https://root:p%40ss@host`; an `@`
//! in the password must be written `%40`). TLS is verified against the Mozilla roots unless
//! `--pin` (SHA-256 fingerprint of the host certificate, as `openssl x509 -fingerprint -sha256`
//! prints it), `--ca` or `--insecure` says otherwise. Connecting to a pool member is fine: the
//! client follows `HOST_IS_SLAVE` to the master.
//!
//! Output: one tab-separated line per VM (`name`, `power state`, `host`, `uuid`), sorted by
//! name, after a header line. Logs go to stderr (`RUST_LOG=xenapi=debug`).
#![forbid(unsafe_code)]
#![allow(
    clippy::print_stdout,
    reason = "a command-line program reports to its terminal"
)]

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Parser;
use xenapi::{Client, ConnectUrl, Host, Secret, TransportKind, Trust, Vm};

/// List the VMs of a XenServer / XCP-ng pool with their power state.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Pool URL: https://USER@HOST or https://USER@HOST:PORT (the user defaults to root).
    url: String,
    /// Read the password from this file (its first line).
    #[arg(long, conflicts_with = "password_env")]
    password_file: Option<PathBuf>,
    /// Read the password from this environment variable.
    #[arg(long, default_value = "XAPI_PASSWORD")]
    password_env: String,
    /// Trust exactly the certificate with this SHA-256 fingerprint.
    #[arg(long, conflicts_with_all = ["ca", "insecure"])]
    pin: Option<String>,
    /// Verify the host certificate against the CA certificates in this PEM file.
    #[arg(long, conflicts_with = "insecure")]
    ca: Option<PathBuf>,
    /// Do not verify the host certificate at all (labs only).
    #[arg(long)]
    insecure: bool,
    /// RPC encoding: auto (JSON-RPC, falling back to XML-RPC), json or xml.
    #[arg(long, default_value = "auto", value_parser = ["auto", "json", "xml"])]
    transport: String,
    /// Also list templates, snapshots and control domains.
    #[arg(long)]
    all: bool,
    /// Give up on a call after this many seconds.
    #[arg(long, default_value_t = 60)]
    timeout: u64,
}

/// One line of the listing.
#[derive(Clone, Debug, PartialEq, Eq)]
struct VmLine {
    name: String,
    power_state: String,
    host: String,
    uuid: String,
}

/// The VMs of the pool, sorted by name then uuid; templates, snapshots and control domains
/// only with `all`. `host` is the name of the host a running VM is resident on (else empty).
async fn list_vms(client: &Client, all: bool) -> Result<Vec<VmLine>, xenapi::Error> {
    let hosts = client.get_all_records::<Host>().await?;
    let vms = client.get_all_records::<Vm>().await?;
    let mut lines: Vec<VmLine> = vms
        .into_values()
        .filter(|vm| all || !(vm.is_a_template || vm.is_a_snapshot || vm.is_control_domain))
        .map(|vm| VmLine {
            host: hosts
                .get(&vm.resident_on)
                .map(|host| host.name_label.clone())
                .unwrap_or_default(),
            power_state: vm.power_state.to_string(),
            uuid: vm.uuid,
            name: vm.name_label,
        })
        .collect();
    lines.sort_by(|a, b| (&a.name, &a.uuid).cmp(&(&b.name, &b.uuid)));
    Ok(lines)
}

/// The listing as printed: a header, then one tab-separated line per VM.
fn render(lines: &[VmLine]) -> String {
    let mut text = String::from("name\tpower_state\thost\tuuid\n");
    for line in lines {
        // Tabs and newlines in a name would break the columns.
        let name: String = line
            .name
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        let _infallible = writeln!(
            text,
            "{name}\t{}\t{}\t{}",
            line.power_state, line.host, line.uuid
        );
    }
    text
}

fn password(args: &Args, url: &ConnectUrl) -> Result<Option<Secret>> {
    if let Some(path) = &args.password_file {
        return Ok(Some(Secret::from_file(path)?));
    }
    match Secret::from_env(&args.password_env) {
        Ok(secret) => Ok(Some(secret)),
        // The URL may carry it; the builder then uses that one.
        Err(_) if url.password().is_some() => Ok(None),
        Err(error) => Err(error).with_context(|| {
            format!(
                "no password: set {}, use --password-file, or put it in the URL",
                args.password_env
            )
        }),
    }
}

fn trust(args: &Args) -> Result<Trust> {
    Ok(match (&args.pin, &args.ca, args.insecure) {
        (Some(pin), _, _) => Trust::pinned(pin)?,
        (None, Some(ca), _) => Trust::ca_file(ca)?,
        (None, None, true) => Trust::InsecureSkipVerification,
        (None, None, false) => Trust::default(),
    })
}

async fn run(args: &Args) -> Result<String> {
    let url = ConnectUrl::parse(&args.url)?;
    let password = password(args, &url)?;
    let transport = match args.transport.as_str() {
        "json" => TransportKind::JsonRpc,
        "xml" => TransportKind::XmlRpc,
        "auto" => TransportKind::Auto,
        other => bail!("unknown transport {other:?}"),
    };
    let mut builder = Client::builder(url.clone())
        .trust(trust(args)?)
        .transport(transport)
        .originator("xapi-list-vms")
        .call_timeout(Duration::from_secs(args.timeout))
        .connect_timeout(Duration::from_secs(args.timeout.min(30)));
    if url.user().is_none() {
        builder = builder.user("root");
    }
    if let Some(password) = password {
        builder = builder.password(password);
    }
    let client = builder
        .connect()
        .await
        .with_context(|| format!("connecting to {}", url.host()))?;
    let listed = list_vms(&client, args.all).await;
    // Log out whatever happened to the listing.
    let closed = client.close().await;
    let lines = listed.context("listing the VMs")?;
    closed.context("logging out")?;
    Ok(render(&lines))
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let listing = run(&args).await?;
    print!("{listing}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_sanitises_names_and_keeps_columns() {
        let text = render(&[VmLine {
            name: "web\t01\n".into(),
            power_state: "Running".into(),
            host: "host-0".into(),
            uuid: "u1".into(),
        }]);
        assert_eq!(
            text,
            "name\tpower_state\thost\tuuid\nweb 01 \tRunning\thost-0\tu1\n"
        );
    }

    #[test]
    fn arguments_parse_and_conflict() {
        let args = Args::try_parse_from(["xapi-list-vms", "https://root@h", "--insecure"]).unwrap();
        assert!(matches!(
            trust(&args).unwrap(),
            Trust::InsecureSkipVerification
        ));
        assert!(
            Args::try_parse_from(["xapi-list-vms", "https://h", "--pin", "x", "--insecure"])
                .is_err()
        );
        assert!(
            Args::try_parse_from(["xapi-list-vms", "https://h", "--transport", "soap"]).is_err()
        );
    }
}

/// The whole program against a simulated pool: its listing matches the simulator's VMs.
#[cfg(test)]
mod against_the_simulator {
    use super::*;
    use xapi_sim::{DiskSpec, HostSpec, PoolSpec, Size, VmSpec};

    fn pool_spec() -> PoolSpec {
        PoolSpec::new("list-vms")
            .credentials("root", "p@ss word")
            .host(HostSpec::new("host-1"))
            .vm(VmSpec::new("web01")
                .running()
                .disk(DiskSpec::new(Size::mib(4))))
            .vm(VmSpec::new("db01"))
            .vm(VmSpec::new("Debian template").template())
    }

    #[tokio::test]
    async fn lists_the_pools_vms_through_a_member_with_a_password_file() {
        let pool = xapi_sim::Pool::start(pool_spec()).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let password_file = dir.path().join("password");
        std::fs::write(&password_file, "p@ss word\n").unwrap();
        let ca = dir.path().join("pool.pem");
        let bundle: String = pool
            .hosts()
            .iter()
            .map(|host| host.certificate.pem().to_owned())
            .collect();
        std::fs::write(&ca, bundle).unwrap();
        // A pool member: the client follows HOST_IS_SLAVE to the master.
        let member = &pool.hosts()[1];
        let url = format!("https://root@{}", member.address);
        let args = Args::try_parse_from([
            "xapi-list-vms",
            url.as_str(),
            "--password-file",
            password_file.to_str().unwrap(),
            "--ca",
            ca.to_str().unwrap(),
            "--transport",
            "xml",
        ])
        .unwrap();
        let listing = run(&args).await.unwrap();
        let master = &pool.hosts()[0].name;
        let uuid = |name: &str| {
            let vm = pool.find_by_name(xapi_sim::db::ClassId::Vm, name).unwrap();
            pool.sim()
                .read(|db| db.str(xapi_sim::db::ClassId::Vm, &vm, "uuid"))
        };
        assert_eq!(
            listing,
            format!(
                "name\tpower_state\thost\tuuid\ndb01\tHalted\t\t{}\nweb01\tRunning\t{master}\t{}\n",
                uuid("db01"),
                uuid("web01")
            )
        );
        // Logged out at the end.
        assert_eq!(
            pool.dump()["classes"]["session"].as_object().unwrap().len(),
            0
        );
    }

    #[tokio::test]
    async fn all_includes_templates_and_control_domains_and_pins_work() {
        let pool = xapi_sim::Pool::start(pool_spec()).await.unwrap();
        let pin = xenapi::Fingerprint::of_pem(pool.certificate_pem())
            .unwrap()
            .to_string();
        let url = format!("https://root:p%40ss%20word@{}", pool.master().address);
        let args = Args::try_parse_from([
            "xapi-list-vms",
            url.as_str(),
            "--password-env",
            "XAPI_LIST_VMS_TEST_UNSET_VARIABLE",
            "--pin",
            pin.as_str(),
            "--all",
        ])
        .unwrap();
        let listing = run(&args).await.unwrap();
        assert!(listing.contains("Debian template\tHalted\t"), "{listing}");
        assert_eq!(
            listing.matches("Control domain on host").count(),
            2,
            "{listing}"
        );
        // Default verification refuses the self-signed certificate.
        let args = Args::try_parse_from([
            "xapi-list-vms",
            url.as_str(),
            "--password-env",
            "XAPI_LIST_VMS_TEST_UNSET_VARIABLE",
        ])
        .unwrap();
        let refused = run(&args).await.unwrap_err();
        assert!(
            refused
                .chain()
                .any(|cause| matches!(cause.downcast_ref(), Some(xenapi::Error::Tls { .. }))),
            "{refused:?}"
        );
    }
}
