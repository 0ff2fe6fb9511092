//! Async XenAPI client for XCP-ng and XenServer, built on a sans-IO wire codec.
#![forbid(unsafe_code)]

pub mod chunked;
pub mod codec;
pub mod datetime;
pub mod error;
pub mod records;
pub mod refs;
pub mod value;

pub use datetime::{DateTime, Zone};
pub use error::{Error, ErrorCode};
pub use records::*;
pub use refs::{
    Certificate, Class, Console, Host, NULL_REF, Network, Pbd, Pif, Pool, Ref, Session, Sr, Task, Vbd, Vdi, Vif, Vm,
    VmGuestMetrics, VmMetrics,
};
pub use value::{FromKey, FromValue, StringMap, Value, string_map};
