//! `nbd-copy`: copy a whole NBD export to a file (or discard it) with N connections, to compare
//! with libnbd's `nbdcopy` on the same server.
//!
//! ```text
//! nbd-copy nbd://127.0.0.1:10809/disk /dev/null -C 4
//! nbd-copy 'nbd+unix:///disk?socket=/tmp/nbd.sock' out.raw
//! nbd-copy nbds://127.0.0.1:10809/disk out.raw --tls-ca ca-cert.pem --server-name 127.0.0.1
//! ```
//! Prints bytes, seconds and MB/s (10^6 bytes per second) to stderr.
#![forbid(unsafe_code)]
#![allow(
    clippy::print_stderr,
    clippy::print_stdout,
    reason = "a command-line program reports to its terminal"
)]
#![allow(
    clippy::cast_precision_loss,
    reason = "throughput is displayed with 3 significant digits"
)]

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use clap::Parser;
use futures::StreamExt;
use nbd_client::{Address, ByteRange, ClientConfig, Pool, Profile, StreamOptions, TlsOptions};

/// Copy a whole NBD export to a file or /dev/null.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Source: nbd://HOST:PORT/EXPORT (the port is optional), nbds://… (TLS), or nbd+unix:///EXPORT?socket=PATH.
    source: String,
    /// Destination file; `/dev/null` or `null:` discards the data.
    destination: String,
    /// Connections.
    #[arg(short = 'C', long, default_value_t = 4)]
    connections: usize,
    /// Requests in flight per connection.
    #[arg(short = 'R', long, default_value_t = 16)]
    requests: usize,
    /// Bytes per request (default: the library's, 1 MiB; 2 MiB with --xapi).
    #[arg(long)]
    request_size: Option<u64>,
    /// PEM bundle of CA roots to verify the server with (TLS).
    #[arg(long)]
    tls_ca: Option<PathBuf>,
    /// PEM certificate to pin (xapi style, with --server-name as the subject).
    #[arg(long)]
    tls_pin: Option<PathBuf>,
    /// Name the certificate must be valid for (defaults to the URI host).
    #[arg(long)]
    server_name: Option<String>,
    /// Do not verify the server certificate (explicitly insecure).
    #[arg(long)]
    insecure: bool,
    /// xapi-nbd profile: EXPORT_NAME only, simple replies.
    #[arg(long)]
    xapi: bool,
}

struct Source {
    address: Address,
    export: String,
    host: String,
    tls: bool,
}

fn parse_source(uri: &str) -> Result<Source> {
    if let Some(rest) = uri.strip_prefix("nbd+unix://") {
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let socket = query
            .split('&')
            .find_map(|kv| kv.strip_prefix("socket="))
            .context("nbd+unix:// needs ?socket=PATH")?;
        return Ok(Source {
            address: Address::unix(socket),
            export: path.trim_start_matches('/').to_owned(),
            host: "localhost".into(),
            tls: false,
        });
    }
    let (tls, rest) = if let Some(rest) = uri.strip_prefix("nbds://") {
        (true, rest)
    } else if let Some(rest) = uri.strip_prefix("nbd://") {
        (false, rest)
    } else {
        bail!("unsupported URI {uri:?}: use nbd://, nbds:// or nbd+unix://");
    };
    let rest = rest.split_once('?').map_or(rest, |(before, _)| before);
    let (authority, export) = rest.split_once('/').unwrap_or((rest, ""));
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(']') || authority.starts_with('[') => (
            host.trim_matches(['[', ']']),
            port.parse().context("bad port")?,
        ),
        _ => (authority, nbd_client::proto::DEFAULT_PORT),
    };
    Ok(Source {
        address: Address::tcp(host, port),
        export: export.to_owned(),
        host: host.to_owned(),
        tls,
    })
}

fn tls_options(args: &Args, source: &Source) -> Result<Option<TlsOptions>> {
    let name = args
        .server_name
        .clone()
        .unwrap_or_else(|| source.host.clone());
    let options = if let Some(pin) = &args.tls_pin {
        TlsOptions::pinned(
            std::fs::read_to_string(pin).context("reading --tls-pin")?,
            name,
        )
    } else if let Some(ca) = &args.tls_ca {
        TlsOptions::ca_roots(
            std::fs::read_to_string(ca).context("reading --tls-ca")?,
            name,
        )
    } else if args.insecure {
        TlsOptions::insecure_no_verify(name)
    } else if source.tls {
        TlsOptions::webpki_roots(name)
    } else {
        return Ok(None);
    };
    Ok(Some(options))
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let source = parse_source(&args.source)?;
    let mut config = ClientConfig::new(source.address.clone(), source.export.clone());
    config.tls = tls_options(&args, &source)?;
    config.connections = args.connections;
    config.in_flight_per_connection = args.requests;
    if args.xapi {
        config.profile = Profile::Xapi;
        config.max_request_len = 2 * 1024 * 1024;
    }
    if let Some(request_size) = args.request_size {
        config.max_request_len = request_size;
    }

    let started = Instant::now();
    let pool = Pool::connect(config).await.context("connecting")?;
    let size = pool.info().size;
    let piece = pool.info().max_request_len();

    // Writes go to a thread with positional writes, so completion order does not matter.
    let writer = match args.destination.as_str() {
        "/dev/null" | "null:" => None,
        path => {
            let file = File::create(path).with_context(|| format!("creating {path}"))?;
            file.set_len(size).context("sizing the destination")?;
            let (sender, receiver) = mpsc::sync_channel::<(u64, Bytes)>(8);
            let thread = std::thread::spawn(move || -> std::io::Result<()> {
                for (offset, data) in receiver {
                    file.write_all_at(&data, offset)?;
                }
                file.sync_data()
            });
            Some((sender, thread))
        }
    };

    let whole = ByteRange::new(0, size)?;
    let options = StreamOptions {
        ordered: false,
        max_in_flight: None,
        max_piece_len: Some(piece),
    };
    let mut copied = 0u64;
    let mut results = pool.read_stream(futures::stream::iter([whole]), options);
    while let Some(item) = results.next().await {
        let (range, data) = item.context("reading")?;
        copied += range.length();
        if let Some((sender, _)) = &writer {
            sender
                .send((range.offset(), data))
                .context("the writer thread stopped")?;
        }
    }
    drop(results);
    if let Some((sender, thread)) = writer {
        drop(sender);
        thread
            .join()
            .map_err(|_| anyhow::anyhow!("writer thread panicked"))?
            .context("writing the destination")?;
    }
    pool.close().await.context("disconnecting")?;
    let seconds = started.elapsed().as_secs_f64();
    let megabytes = copied as f64 / 1e6;
    eprintln!(
        "copied {copied} bytes in {seconds:.3} s: {:.0} MB/s",
        megabytes / seconds
    );
    println!("{:.0}", megabytes / seconds);
    Ok(())
}
