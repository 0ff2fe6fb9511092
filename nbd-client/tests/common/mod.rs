//! Helpers shared by the integration tests: peer processes killed on drop, free ports,
//! readiness polling, deterministic content and generated x509 credentials.
#![allow(
    dead_code,
    reason = "each test binary uses a different subset of these helpers"
)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// A spawned peer, killed (and reaped) when dropped.
pub struct PeerProcess {
    child: Option<Child>,
    pid_file: Option<PathBuf>,
}

impl PeerProcess {
    pub fn spawn(command: &mut Command) -> Self {
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("peer starts");
        Self {
            child: Some(child),
            pid_file: None,
        }
    }

    /// A daemonizing peer that writes its pid to `pid_file` (nbd-server).
    pub fn daemon(command: &mut Command, pid_file: &Path) -> Self {
        let status = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status()
            .expect("daemon starts");
        assert!(status.success(), "daemon failed to start: {status}");
        Self {
            child: None,
            pid_file: Some(pid_file.to_owned()),
        }
    }
}

impl Drop for PeerProcess {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(pid_file) = &self.pid_file {
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(pid) = std::fs::read_to_string(pid_file) {
                    let _ = Command::new("kill").arg(pid.trim()).status();
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// A TCP port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until a Unix socket accepts connections.
pub fn wait_for_unix(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{} never accepted connections", path.display());
}

/// Waits until a TCP port on 127.0.0.1 accepts connections.
pub fn wait_for_tcp(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("port {port} never accepted connections");
}

/// Deterministic pseudo-random bytes (xorshift), different for each seed.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// x509 credentials written as `ca-cert.pem`, `server-cert.pem`, `server-key.pem` (the layout
/// qemu's `tls-creds-x509` and nbdkit's `--tls-certificates` expect).
pub struct Pki {
    pub dir: PathBuf,
    pub ca_pem: String,
    pub server_cert_pem: String,
    pub server_key_pem: String,
}

pub const SERVER_NAME: &str = "nbd.example.test";

/// A CA and a server certificate for [`SERVER_NAME`] and 127.0.0.1, signed by it.
pub fn make_pki(dir: &Path) -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "nbd-client test CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);

    let server_key = KeyPair::generate().unwrap();
    let mut params =
        CertificateParams::new(vec![SERVER_NAME.to_string(), "127.0.0.1".to_string()]).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, SERVER_NAME);
    // qemu (GnuTLS) insists on keyEncipherment even for ECDSA keys.
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server_cert = params.signed_by(&server_key, &issuer).unwrap();

    std::fs::create_dir_all(dir).unwrap();
    let pki = Pki {
        dir: dir.to_owned(),
        ca_pem: ca_cert.pem(),
        server_cert_pem: server_cert.pem(),
        server_key_pem: server_key.serialize_pem(),
    };
    std::fs::write(dir.join("ca-cert.pem"), &pki.ca_pem).unwrap();
    std::fs::write(dir.join("server-cert.pem"), &pki.server_cert_pem).unwrap();
    std::fs::write(dir.join("server-key.pem"), &pki.server_key_pem).unwrap();
    pki
}

/// Runs a peer tool to completion and returns its stdout (panics with stderr on failure).
pub fn run(tool: &Path, args: &[&str]) -> String {
    String::from_utf8_lossy(&test_peers::run_ok(tool, args)).into_owned()
}

/// Upper bound for any async step of a test: a hang is a failure, not a stuck CI.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(60);
