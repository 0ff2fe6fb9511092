//! `xapi-sim`: runs the simulated pools of a TOML scenario on loopback addresses, prints their
//! URLs and credentials, and serves until interrupted.
#![forbid(unsafe_code)]
#![allow(clippy::print_stdout, reason = "a binary reports to its terminal")]

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use xapi_sim::{Pool, Scenario};

/// Run simulated XCP-ng pools.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Scenario file (TOML; see the crate documentation).
    scenario: PathBuf,
    /// Print the pools as JSON instead of text.
    #[arg(long)]
    json: bool,
    /// Write each host's certificate as `<dir>/pool<index>-<host>.pem` for clients to pin
    /// (`<index>` counts the scenario's pools from 0, `<host>` is the host's name).
    #[arg(long)]
    cert_dir: Option<PathBuf>,
}

fn describe(pools: &[Pool], cert_dir: Option<&PathBuf>) -> anyhow::Result<serde_json::Value> {
    let mut described = Vec::new();
    for (index, pool) in pools.iter().enumerate() {
        let name = pool
            .sim()
            .read(|db| db.str(xapi_sim::db::ClassId::Pool, &db.pool_ref(), "name_label"));
        let mut hosts = Vec::new();
        for host in pool.hosts() {
            let certificate = match cert_dir {
                Some(dir) => {
                    let path = dir.join(format!("pool{index}-{}.pem", host.name));
                    std::fs::write(&path, host.certificate.pem())
                        .with_context(|| format!("writing {}", path.display()))?;
                    Some(path.display().to_string())
                }
                None => None,
            };
            hosts.push(serde_json::json!({
                "name": host.name,
                "url": host.url,
                "nbd": host.nbd.to_string(),
                "certificate": certificate,
            }));
        }
        described.push(serde_json::json!({
            "name": name,
            "url": pool.url(),
            "username": pool.credentials().username,
            "password": pool.credentials().password,
            "hosts": hosts,
        }));
    }
    Ok(serde_json::Value::Array(described))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let scenario = Scenario::load(&args.scenario).context("loading the scenario")?;
    if let Some(dir) = &args.cert_dir {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut pools = Vec::new();
    for spec in scenario.pools {
        let name = spec.name.clone();
        pools.push(
            Pool::start(spec)
                .await
                .with_context(|| format!("starting pool {name}"))?,
        );
    }
    let description = describe(&pools, args.cert_dir.as_ref())?;
    if args.json {
        println!("{description}");
    } else {
        for pool in description.as_array().into_iter().flatten() {
            println!("pool {}: {}", pool["name"], pool["url"]);
            println!("  credentials: {} / {}", pool["username"], pool["password"]);
            for host in pool["hosts"].as_array().into_iter().flatten() {
                println!(
                    "  host {}: {} (NBD {}, certificate: {})",
                    host["name"], host["url"], host["nbd"], host["certificate"]
                );
            }
        }
    }
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    Ok(())
}
