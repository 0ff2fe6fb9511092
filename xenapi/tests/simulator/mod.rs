//! Shared helpers of the tests that run the client against `xapi-sim`: the transport/TLS
//! matrix, connecting (with the simulator's certificate pinned over HTTPS), and reading the
//! simulator's own state to assert on.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    dead_code,
    reason = "test code: a panic is a failed test; each test binary uses a subset"
)]

use std::time::Duration;

use xapi_sim::db::ClassId;
use xapi_sim::{Pool, PoolSpec};
use xenapi::{
    Class, Client, ClientBuilder, ConnectUrl, Fingerprint, Ref, Secret, TransportKind, Trust,
};

pub const USER: &str = "root";
pub const PASSWORD: &str = "sim-s3cret";

/// One cell of the matrix every simulator test runs in: forced transport × plain or TLS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Setup {
    /// JSON-RPC or XML-RPC (forced, never auto).
    pub transport: TransportKind,
    /// HTTPS with the master's certificate pinned, or plain HTTP.
    pub tls: bool,
}

impl Setup {
    pub const JSON_HTTP: Setup = Setup {
        transport: TransportKind::JsonRpc,
        tls: false,
    };
    pub const XML_HTTP: Setup = Setup {
        transport: TransportKind::XmlRpc,
        tls: false,
    };
    pub const JSON_HTTPS: Setup = Setup {
        transport: TransportKind::JsonRpc,
        tls: true,
    };
    pub const XML_HTTPS: Setup = Setup {
        transport: TransportKind::XmlRpc,
        tls: true,
    };

    /// The wire the client must report after connecting.
    pub fn wire(self) -> xenapi::Wire {
        match self.transport {
            TransportKind::XmlRpc => xenapi::Wire::XmlRpc,
            _ => xenapi::Wire::JsonRpc,
        }
    }
}

/// Generates, for each named `async fn(Setup)`, one `#[tokio::test]` per cell of the matrix
/// (modules `json_http`, `xml_http`, `json_https`, `xml_https`), so they run in parallel.
/// Use with `#[macro_use] mod simulator;`.
macro_rules! over_every_setup {
    ($($test:ident),* $(,)?) => {
        mod json_http {
            $( #[tokio::test] async fn $test() { super::$test($crate::simulator::Setup::JSON_HTTP).await } )*
        }
        mod xml_http {
            $( #[tokio::test] async fn $test() { super::$test($crate::simulator::Setup::XML_HTTP).await } )*
        }
        mod json_https {
            $( #[tokio::test] async fn $test() { super::$test($crate::simulator::Setup::JSON_HTTPS).await } )*
        }
        mod xml_https {
            $( #[tokio::test] async fn $test() { super::$test($crate::simulator::Setup::XML_HTTPS).await } )*
        }
    };
}

/// A spec with this file's credentials and no deliberate delays.
pub fn spec(name: &str) -> PoolSpec {
    PoolSpec::new(name)
        .credentials(USER, PASSWORD)
        .auth_failure_delay(Duration::ZERO)
        .data_destroy_wait(Duration::from_millis(200))
}

/// Starts the pool of `spec`, over HTTPS when the setup says so.
pub async fn start(spec: PoolSpec, setup: Setup) -> Pool {
    Pool::start(spec.tls(setup.tls)).await.expect("pool starts")
}

/// The pin of a host's certificate.
pub fn pin_of(pem: &str) -> Trust {
    Trust::Pinned(Fingerprint::of_pem(pem).expect("the simulator's certificate parses"))
}

/// A builder for `url` with the setup's transport, the pool's credentials and, over HTTPS, the
/// pin of `pem`.
pub fn builder_for(url: &str, pem: &str, setup: Setup) -> ClientBuilder {
    let builder = Client::builder(ConnectUrl::parse(url).expect("simulator URLs parse"))
        .user(USER)
        .password(Secret::new(PASSWORD))
        .transport(setup.transport)
        .originator("xenapi-sim-tests")
        .call_timeout(Duration::from_secs(20))
        .connect_timeout(Duration::from_secs(5));
    if setup.tls {
        builder.trust(pin_of(pem))
    } else {
        builder
    }
}

/// A builder for the pool master.
pub fn builder(pool: &Pool, setup: Setup) -> ClientBuilder {
    builder_for(pool.url(), pool.certificate_pem(), setup)
}

/// A logged-in client of the master, on the setup's wire.
pub async fn connect(pool: &Pool, setup: Setup) -> Client {
    let client = builder(pool, setup).connect().await.expect("login");
    assert_eq!(client.wire(), setup.wire());
    client
}

/// The ref of the object of `class` named `name`.
pub fn named<C: Class>(pool: &Pool, class: ClassId, name: &str) -> Ref<C> {
    Ref::new(
        pool.find_by_name(class, name)
            .unwrap_or_else(|| panic!("no {class} named {name}")),
    )
}

/// The simulator's own record of an object (from its JSON dump), `None` when it does not exist.
pub fn sim_record<C: Class>(pool: &Pool, reference: &Ref<C>) -> Option<serde_json::Value> {
    pool.dump()["classes"][C::NAME]
        .get(reference.as_str())
        .cloned()
}

/// One field of the simulator's record (panics if the object is gone).
pub fn sim_field<C: Class>(pool: &Pool, reference: &Ref<C>, field: &str) -> serde_json::Value {
    let record = sim_record(pool, reference)
        .unwrap_or_else(|| panic!("{} {reference} is not in the simulator", C::NAME));
    record
        .get(field)
        .cloned()
        .unwrap_or_else(|| panic!("{} has no field {field}", C::NAME))
}

/// The refs of every object of `class` in the simulator.
pub fn sim_refs(pool: &Pool, class: ClassId) -> Vec<String> {
    pool.sim().read(|db| db.all(class))
}

/// The tasks the simulator holds, as (ref, name_label, status).
pub fn sim_tasks(pool: &Pool) -> Vec<(String, String, String)> {
    pool.sim().read(|db| {
        db.all(ClassId::Task)
            .into_iter()
            .map(|task| {
                let label = db.str(ClassId::Task, &task, "name_label");
                let status = db.str(ClassId::Task, &task, "status");
                (task, label, status)
            })
            .collect()
    })
}

/// Waits (bounded) until `check` holds on the simulator's state.
pub async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
