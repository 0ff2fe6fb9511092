//! The `sim.*` namespace: test hooks reachable out of process over either transport, without a
//! session (they are not XenAPI; a real host answers `MESSAGE_METHOD_UNKNOWN`).
//!
//! | Method | Params → result |
//! | --- | --- |
//! | `sim.dump` | `()` → JSON text of the whole database |
//! | `sim.fail_call` | `(method, nth, code, params)` → void |
//! | `sim.add_latency` | `(target, milliseconds)` → void; target = method, `*`, `http:<path>`, `nbd` |
//! | `sim.cut_http` | `(path, after_bytes, nth)` → void |
//! | `sim.cut_nbd` | `(after_bytes, nth)` → void |
//! | `sim.clear_faults` | `()` → void |
//! | `sim.set_power_state` | `(vm, state)` → void (as if the guest did it) |
//! | `sim.guest_write` | `(vdi, offset, length, seed)` → void (pseudo-random bytes) |
//! | `sim.guest_write_random_blocks` | `(vdi, count, seed)` → written 2 MiB block indices |
//! | `sim.cbt_mark_inconsistent` / `sim.cbt_truncate_log` | `(vdi)` → void |
//! | `sim.set_emergency` | `(code, params)` → void; `""` turns the JSON emergency shape off |
//! | `sim.inject_non_finite` | `(vm, "nan"\|"inf"\|"-inf")` → void: into `VM_metrics.VCPUs_utilisation` |
//! | `sim.vdi_sha256` | `(vdi)` → hex SHA-256 of the VDI content |

use std::sync::Arc;
use std::time::Duration;

use xenapi::Value;
use xenapi::codec::Failure;

use super::methods::{Kind, Method, SimFn};
use crate::db::{ApiResult, ClassId, Ty, api_err, as_int, as_list, as_str, vdi, vm};
use crate::faults::FaultRule;
use crate::sim::Sim;
use crate::storage::{ByteExtent, Pattern};

fn s(args: &[Value], index: usize) -> &str {
    args.get(index).map_or("", as_str)
}

fn u(args: &[Value], index: usize) -> ApiResult<u64> {
    let number = args.get(index).map_or(0, as_int);
    u64::try_from(number)
        .map_err(|_| Failure::new("INVALID_VALUE", ["number".to_owned(), number.to_string()]))
}

fn void() -> ApiResult<Value> {
    Ok(Value::void())
}

fn method(name: &str, params: &[Ty], f: SimFn) -> Method {
    let mut method = Method::new(name, Kind::Sim(f)).no_session();
    for ty in params {
        method = method.p(*ty);
    }
    method
}

fn disk_of(sim: &Arc<Sim>, vdi: &str) -> ApiResult<crate::storage::DiskId> {
    sim.read(|db| db.disk_of(vdi))
}

pub(crate) fn methods() -> Vec<Method> {
    const STR: Ty = Ty::Str;
    const INT: Ty = Ty::Int;
    vec![
        method("sim.dump", &[], |sim, _| {
            Ok(Value::String(sim.dump().to_string()))
        }),
        method(
            "sim.fail_call",
            &[STR, INT, STR, Ty::Set(&Ty::Str)],
            |sim, args| {
                let params: Vec<String> = args
                    .get(3)
                    .map(|value| {
                        as_list(value)
                            .iter()
                            .map(|item| as_str(item).to_owned())
                            .collect()
                    })
                    .unwrap_or_default();
                sim.faults().add(FaultRule::FailCall {
                    method: s(args, 0).to_owned(),
                    nth: u(args, 1)?.max(1),
                    code: s(args, 2).to_owned(),
                    params,
                });
                void()
            },
        ),
        method("sim.add_latency", &[STR, INT], |sim, args| {
            sim.faults().add(FaultRule::latency(
                s(args, 0),
                Duration::from_millis(u(args, 1)?),
            ));
            void()
        }),
        method("sim.cut_http", &[STR, INT, INT], |sim, args| {
            sim.faults().add(FaultRule::cut_http(
                s(args, 0),
                u(args, 1)?,
                u(args, 2)?.max(1),
            ));
            void()
        }),
        method("sim.cut_nbd", &[INT, INT], |sim, args| {
            sim.faults()
                .add(FaultRule::cut_nbd(u(args, 0)?, u(args, 1)?.max(1)));
            void()
        }),
        method("sim.clear_faults", &[], |sim, _| {
            sim.faults().clear();
            void()
        }),
        method("sim.set_power_state", &[STR, STR], |sim, args| {
            sim.write(|db| vm::force_power_state(db, s(args, 0), s(args, 1)))?;
            void()
        }),
        method("sim.guest_write", &[STR, INT, INT, INT], |sim, args| {
            let disk = disk_of(sim, s(args, 0))?;
            let extent = ByteExtent::at(u(args, 1)?, u(args, 2)?).map_err(|error| {
                Failure::new("INVALID_VALUE", ["extent".to_owned(), error.to_string()])
            })?;
            sim.storage()
                .guest_write(disk, extent, Pattern::Random { seed: u(args, 3)? })
                .map_err(|error| vdi::storage_failure(&error))?;
            sim.write(|db| db.touch(ClassId::Vdi, s(args, 0)).map(|_| ()))?;
            void()
        }),
        method(
            "sim.guest_write_random_blocks",
            &[STR, INT, INT],
            |sim, args| {
                let disk = disk_of(sim, s(args, 0))?;
                let count = u32::try_from(u(args, 1)?).unwrap_or(u32::MAX);
                let seed = u(args, 2)?;
                let blocks = sim
                    .storage()
                    .guest_write_random_blocks(disk, count, seed, Pattern::Random { seed })
                    .map_err(|error| vdi::storage_failure(&error))?;
                sim.write(|db| db.touch(ClassId::Vdi, s(args, 0)).map(|_| ()))?;
                Ok(Value::Array(
                    blocks
                        .into_iter()
                        .map(|block| Value::Int(i64::from(block.get())))
                        .collect(),
                ))
            },
        ),
        method("sim.cbt_mark_inconsistent", &[STR], |sim, args| {
            sim.write(|db| vdi::mark_cbt_inconsistent(db, s(args, 0)))?;
            void()
        }),
        method("sim.cbt_truncate_log", &[STR], |sim, args| {
            sim.write(|db| vdi::truncate_cbt_log(db, s(args, 0)))?;
            void()
        }),
        method(
            "sim.set_emergency",
            &[STR, Ty::Set(&Ty::Str)],
            |sim, args| {
                let code = s(args, 0);
                let params: Vec<String> = args
                    .get(1)
                    .map(|value| {
                        as_list(value)
                            .iter()
                            .map(|item| as_str(item).to_owned())
                            .collect()
                    })
                    .unwrap_or_default();
                sim.set_emergency((!code.is_empty()).then(|| Failure::new(code, params)));
                void()
            },
        ),
        method("sim.inject_non_finite", &[STR, STR], |sim, args| {
            let number = match s(args, 1) {
                "nan" => f64::NAN,
                "inf" => f64::INFINITY,
                "-inf" => f64::NEG_INFINITY,
                other => return api_err("INVALID_VALUE", ["value", other]),
            };
            sim.write(|db| {
                let metrics = db.str(ClassId::Vm, s(args, 0), "metrics");
                db.check(ClassId::VmMetrics, &metrics)?;
                db.map_put(
                    ClassId::VmMetrics,
                    &metrics,
                    "VCPUs_utilisation",
                    "0",
                    Value::Double(number),
                )
            })?;
            void()
        }),
        method("sim.vdi_sha256", &[STR], |sim, args| {
            let disk = disk_of(sim, s(args, 0))?;
            let digest = sim
                .storage()
                .sha256(disk)
                .map_err(|error| vdi::storage_failure(&error))?;
            Ok(Value::String(hex::encode(digest)))
        }),
    ]
}
