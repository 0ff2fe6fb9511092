//! libnbd reads the simulated xapi-nbd: `nbdinfo` and `nbdcopy` with and without TLS (the
//! content matches the simulated disk), and libnbd asking for `NBD_OPT_INFO`/`NBD_OPT_GO` is
//! refused as xapi refuses it (`ERR_UNSUP`), after which it falls back to
//! `NBD_OPT_EXPORT_NAME`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a failed test"
)]

mod common;
mod support;

use std::path::{Path, PathBuf};

use support::{vdi, vdi_sha256};
use xapi_sim::{DiskSpec, NetworkSpec, Pool, PoolSpec, Size, VmSpec};

const DISK: &str = "vm disk 0";

async fn pool(purpose: &str) -> Pool {
    common::start(
        PoolSpec::new("libnbd")
            .network(NetworkSpec::new("storage").purpose(purpose))
            .vm(VmSpec::new("vm").disk(DiskSpec::new(Size::mib(8)).random(0, 6 << 20, 41))),
    )
    .await
}

/// An NBD URI for the export name `VDI.get_nbd_info` gives (the whole name percent-encoded
/// after the path's `/`, so that its own `/` and `?` survive).
fn uri(pool: &Pool, tls_dir: Option<&Path>) -> String {
    let session = support::session(pool);
    let (_, uuid) = vdi(pool, DISK);
    let name = format!("/{uuid}?session_id={session}");
    let encoded = percent_encoding::utf8_percent_encode(&name, percent_encoding::NON_ALPHANUMERIC);
    let port = pool.master().nbd.port();
    match tls_dir {
        Some(dir) => format!(
            "nbds://localhost:{port}/{encoded}?tls-certificates={}",
            dir.display()
        ),
        None => format!("nbd://127.0.0.1:{port}/{encoded}"),
    }
}

/// A directory with the host certificate as `ca-cert.pem` (libnbd's trust anchor).
fn trust_dir(pool: &Pool) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca-cert.pem"), pool.certificate_pem()).unwrap();
    dir
}

fn copy_and_hash(nbdcopy: &Path, uri: &str, out: PathBuf) -> [u8; 32] {
    test_peers::run_ok(nbdcopy, [uri, out.to_str().unwrap()]);
    support::sha256(&std::fs::read(out).unwrap())
}

async fn read_with_libnbd(purpose: &str) {
    let (Some(nbdinfo), Some(nbdcopy)) = (
        test_peers::require("nbdinfo"),
        test_peers::require("nbdcopy"),
    ) else {
        return;
    };
    let pool = pool(purpose).await;
    let (disk, _) = vdi(&pool, DISK);
    let trust = trust_dir(&pool);
    let tls = (purpose == "nbd").then(|| trust.path());
    let uri = uri(&pool, tls);
    let size = tokio::task::spawn_blocking({
        let uri = uri.clone();
        move || String::from_utf8(test_peers::run_ok(&nbdinfo, ["--size", uri.as_str()])).unwrap()
    })
    .await
    .unwrap();
    assert_eq!(size.trim(), (8u64 << 20).to_string());
    let out = trust.path().join("copy.raw");
    let digest = tokio::task::spawn_blocking(move || copy_and_hash(&nbdcopy, &uri, out))
        .await
        .unwrap();
    assert_eq!(digest, vdi_sha256(&pool, &disk));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nbdinfo_and_nbdcopy_read_a_vdi_in_clear_text() {
    read_with_libnbd("insecure_nbd").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nbdinfo_and_nbdcopy_read_a_vdi_over_tls() {
    read_with_libnbd("nbd").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_asking_for_nbd_opt_go_is_refused_with_err_unsup_then_falls_back() {
    let Some(nbdinfo) = test_peers::require("nbdinfo") else {
        return;
    };
    let pool = pool("insecure_nbd").await;
    let uri = uri(&pool, None);
    // libnbd's debug trace shows each option: INFO and GO get ERR_UNSUP ("Operation not
    // supported"), then libnbd falls back to NBD_OPT_EXPORT_NAME as with any old server.
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(nbdinfo)
            .arg(&uri)
            .env("LIBNBD_DEBUG", "1")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(output.status.success());
    let trace = String::from_utf8_lossy(&output.stderr);
    assert!(
        trace.contains("server replied with error to opt_info request: Operation not supported"),
        "{trace}"
    );
    assert!(
        trace.contains("server is confused by NBD_OPT_GO"),
        "{trace}"
    );
    assert!(trace.contains("NEWSTYLE.OPT_EXPORT_NAME.START"), "{trace}");
    let info = String::from_utf8_lossy(&output.stdout);
    assert!(info.contains("using simple packets"), "{info}");
    assert!(
        info.contains(&format!("export-size: {}", 8u64 << 20)),
        "{info}"
    );
}
