//! The method table: generated accessors for every class (spec §1.4) and the custom messages
//! with their parameter lists, defaults and Async support.

use std::collections::HashMap;
use std::sync::Arc;

use xenapi::Value;

use crate::db::objects;
use crate::db::schema::NETWORK_PURPOSES;
use crate::db::{
    Access, ApiResult, ClassId, Db, NULL_REF, Ty, XapiVersion, as_bool, as_int, as_list, as_str,
    vdi, vm,
};
use crate::sim::Sim;

/// Context of a synchronous handler: the locked database, the caller's session and the host
/// that received the call.
pub(crate) struct Ctx<'a> {
    pub(crate) db: &'a mut Db,
    pub(crate) session: &'a str,
    pub(crate) host: &'a str,
}

pub(crate) type SyncFn = fn(&mut Ctx<'_>, &[Value]) -> ApiResult<Value>;
pub(crate) type SimFn = fn(&Arc<Sim>, &[Value]) -> ApiResult<Value>;

/// What a method does.
#[derive(Clone, Copy)]
pub(crate) enum Kind {
    Get(ClassId, &'static str),
    Set(ClassId, &'static str),
    MapAdd(ClassId, &'static str),
    MapRemove(ClassId, &'static str),
    SetAdd(ClassId, &'static str),
    SetRemove(ClassId, &'static str),
    Record(ClassId),
    ByUuid(ClassId),
    All(ClassId),
    AllRecords(ClassId),
    ByNameLabel(ClassId),
    Create(ClassId),
    Sync(SyncFn),
    Sim(SimFn),
    Login,
    EventFrom,
    DataDestroy,
}

/// One parameter after the session.
#[derive(Clone)]
pub(crate) struct Param {
    pub(crate) ty: Ty,
    pub(crate) default: Option<Value>,
}

/// One wire method.
#[derive(Clone)]
pub(crate) struct Method {
    pub(crate) name: String,
    pub(crate) session: bool,
    pub(crate) params: Vec<Param>,
    pub(crate) async_ok: bool,
    pub(crate) kind: Kind,
    /// The operation this method runs on its first argument, checked and recorded in
    /// `current_operations` while an injected latency delays it.
    pub(crate) reserve: Option<(ClassId, &'static str)>,
}

impl Method {
    pub(crate) fn new(name: impl Into<String>, kind: Kind) -> Method {
        Method {
            name: name.into(),
            session: true,
            params: Vec::new(),
            async_ok: false,
            kind,
            reserve: None,
        }
    }

    pub(crate) fn p(mut self, ty: Ty) -> Method {
        self.params.push(Param { ty, default: None });
        self
    }

    fn opt(mut self, ty: Ty, default: Value) -> Method {
        self.params.push(Param {
            ty,
            default: Some(default),
        });
        self
    }

    fn asynchronous(mut self) -> Method {
        self.async_ok = true;
        self
    }

    pub(crate) fn no_session(mut self) -> Method {
        self.session = false;
        self
    }

    fn reserves(mut self, class: ClassId, op: &'static str) -> Method {
        self.reserve = Some((class, op));
        self
    }
}

/// Every method a pool serves, by wire name (and by the `Class_method` alternative).
pub struct Registry {
    methods: HashMap<String, Method>,
    alternatives: HashMap<String, String>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Registry")
            .field("methods", &self.methods.len())
            .finish()
    }
}

const STR: Ty = Ty::Str;
const INT: Ty = Ty::Int;
const BOOL: Ty = Ty::Bool;
const FLOAT: Ty = Ty::Float;
const STRINGS: Ty = Ty::Set(&Ty::Str);
const STRING_MAP: Ty = Ty::Map(&Ty::Str, &Ty::Str);
const VM: Ty = Ty::Ref(ClassId::Vm);
const VDI: Ty = Ty::Ref(ClassId::Vdi);
const VDIS: Ty = Ty::Set(&Ty::Ref(ClassId::Vdi));
const SR: Ty = Ty::Ref(ClassId::Sr);
const HOST: Ty = Ty::Ref(ClassId::Host);
const VBD: Ty = Ty::Ref(ClassId::Vbd);
const VIF: Ty = Ty::Ref(ClassId::Vif);
const NETWORK: Ty = Ty::Ref(ClassId::Network);
const PBD: Ty = Ty::Ref(ClassId::Pbd);
const TASK: Ty = Ty::Ref(ClassId::Task);
const PURPOSE: Ty = Ty::Enum(NETWORK_PURPOSES);

fn self_ref(class: ClassId) -> Ty {
    Ty::Ref(class)
}

fn null() -> Value {
    Value::from(NULL_REF)
}

impl Registry {
    /// The methods of a pool running `version`.
    #[must_use]
    pub fn new(version: XapiVersion) -> Registry {
        let mut methods = HashMap::new();
        for class in ClassId::ALL {
            for method in generated(class) {
                methods.insert(method.name.clone(), method);
            }
        }
        for method in custom(version)
            .into_iter()
            .chain(super::sim_methods::methods())
        {
            methods.insert(method.name.clone(), method);
        }
        let alternatives = methods
            .keys()
            .filter(|name| !name.starts_with("sim."))
            .map(|name| (name.replacen('.', "_", 1), name.clone()))
            .collect();
        Registry {
            methods,
            alternatives,
        }
    }

    /// A method by wire name; the `Class_method` spelling only for synchronous calls.
    pub(crate) fn lookup(&self, name: &str, asynchronous: bool) -> Option<&Method> {
        self.methods.get(name).or_else(|| {
            (!asynchronous)
                .then(|| {
                    self.alternatives
                        .get(name)
                        .and_then(|real| self.methods.get(real))
                })
                .flatten()
        })
    }

    /// Every synchronous wire name (`system.listMethods`), sorted.
    #[must_use]
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .methods
            .keys()
            .filter(|name| !name.starts_with("sim."))
            .cloned()
            .collect();
        names.sort();
        names
    }
}

fn generated(class: ClassId) -> Vec<Method> {
    let prefix = class.name();
    let name = |method: &str| format!("{prefix}.{method}");
    let this = self_ref(class);
    let mut methods = vec![
        Method::new(name("get_record"), Kind::Record(class)).p(this),
        Method::new(name("get_by_uuid"), Kind::ByUuid(class)).p(STR),
    ];
    if class.has_get_all() {
        methods.push(Method::new(name("get_all"), Kind::All(class)));
        methods.push(Method::new(
            name("get_all_records"),
            Kind::AllRecords(class),
        ));
    }
    if class.field("name_label").is_some() && class != ClassId::Session {
        methods.push(Method::new(name("get_by_name_label"), Kind::ByNameLabel(class)).p(STR));
    }
    for field in class.fields() {
        methods.push(
            Method::new(
                name(&format!("get_{}", field.name)),
                Kind::Get(class, field.name),
            )
            .p(this),
        );
        let settable =
            field.access == Access::Rw || class.plain_custom_setters().contains(&field.name);
        if !settable {
            continue;
        }
        methods.push(
            Method::new(
                name(&format!("set_{}", field.name)),
                Kind::Set(class, field.name),
            )
            .p(this)
            .p(field.ty),
        );
        if field.access != Access::Rw {
            continue;
        }
        match field.ty {
            Ty::Map(key, value) => {
                methods.push(
                    Method::new(
                        name(&format!("add_to_{}", field.name)),
                        Kind::MapAdd(class, field.name),
                    )
                    .p(this)
                    .p(*key)
                    .p(*value),
                );
                methods.push(
                    Method::new(
                        name(&format!("remove_from_{}", field.name)),
                        Kind::MapRemove(class, field.name),
                    )
                    .p(this)
                    .p(*key),
                );
            }
            Ty::Set(item) => {
                methods.push(
                    Method::new(
                        name(&format!("add_{}", field.name)),
                        Kind::SetAdd(class, field.name),
                    )
                    .p(this)
                    .p(*item),
                );
                methods.push(
                    Method::new(
                        name(&format!("remove_{}", field.name)),
                        Kind::SetRemove(class, field.name),
                    )
                    .p(this)
                    .p(*item),
                );
            }
            _ => {}
        }
    }
    if matches!(
        class,
        ClassId::Vm | ClassId::Vdi | ClassId::Vbd | ClassId::Vif | ClassId::Network | ClassId::Pbd
    ) {
        methods.push(
            Method::new(name("create"), Kind::Create(class))
                .p(STRING_MAP)
                .asynchronous(),
        );
    }
    methods
}

fn s(args: &[Value], index: usize) -> &str {
    args.get(index).map_or("", as_str)
}

fn b(args: &[Value], index: usize) -> bool {
    args.get(index).is_some_and(as_bool)
}

fn i(args: &[Value], index: usize) -> i64 {
    args.get(index).map_or(0, as_int)
}

fn strings(args: &[Value], index: usize) -> Vec<String> {
    args.get(index)
        .map(|value| {
            as_list(value)
                .iter()
                .map(|item| as_str(item).to_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn void(result: ApiResult<()>) -> ApiResult<Value> {
    result.map(|()| Value::void())
}

fn reference(result: ApiResult<String>) -> ApiResult<Value> {
    result.map(Value::String)
}

fn custom(version: XapiVersion) -> Vec<Method> {
    let sync = |name: &str, f: SyncFn| Method::new(name, Kind::Sync(f));
    let mut snapshot = sync("VM.snapshot", |ctx, args| {
        reference(vm::snapshot(
            ctx.db,
            s(args, 0),
            s(args, 1),
            &strings(args, 2),
        ))
    })
    .p(VM)
    .p(STR)
    .asynchronous()
    .reserves(ClassId::Vm, "snapshot");
    if version.snapshot_takes_ignore_vdis() {
        snapshot = snapshot.opt(VDIS, Value::Array(Vec::new()));
    }
    let power = |name: &'static str, op: &'static str, f: SyncFn| {
        sync(name, f).p(VM).asynchronous().reserves(ClassId::Vm, op)
    };
    vec![
        // session
        Method::new("session.login_with_password", Kind::Login)
            .no_session()
            .p(STR)
            .p(STR)
            .opt(STR, Value::from("1.1"))
            .opt(STR, Value::void()),
        sync("session.logout", |ctx, _| {
            void(objects::logout(ctx.db, ctx.session))
        }),
        // host
        sync("host.get_server_certificate", |ctx, args| {
            ctx.db.check(ClassId::Host, s(args, 0))?;
            Ok(Value::String(
                ctx.db
                    .host_runtime(s(args, 0))
                    .map(|runtime| runtime.certificate_pem.clone())
                    .unwrap_or_default(),
            ))
        })
        .p(HOST),
        // SR, PBD
        sync("SR.scan", |ctx, args| {
            void(ctx.db.check(ClassId::Sr, s(args, 0)))
        })
        .p(SR)
        .asynchronous(),
        sync("PBD.plug", |ctx, args| {
            void(objects::plug_pbd(ctx.db, s(args, 0), true))
        })
        .p(PBD)
        .asynchronous(),
        sync("PBD.unplug", |ctx, args| {
            void(objects::plug_pbd(ctx.db, s(args, 0), false))
        })
        .p(PBD)
        .asynchronous(),
        sync("PBD.destroy", |ctx, args| {
            void(ctx.db.remove(ClassId::Pbd, s(args, 0)))
        })
        .p(PBD)
        .asynchronous(),
        // network
        sync("network.destroy", |ctx, args| {
            void(objects::destroy_network(ctx.db, s(args, 0)))
        })
        .p(NETWORK)
        .asynchronous(),
        sync("network.add_purpose", |ctx, args| {
            void(objects::add_purpose(ctx.db, s(args, 0), s(args, 1)))
        })
        .p(NETWORK)
        .p(PURPOSE)
        .asynchronous(),
        sync("network.remove_purpose", |ctx, args| {
            void(objects::remove_purpose(ctx.db, s(args, 0), s(args, 1)))
        })
        .p(NETWORK)
        .p(PURPOSE)
        .asynchronous(),
        // VDI
        sync("VDI.destroy", |ctx, args| {
            void(vdi::destroy(ctx.db, s(args, 0)))
        })
        .p(VDI)
        .asynchronous()
        .reserves(ClassId::Vdi, "destroy"),
        sync("VDI.snapshot", |ctx, args| {
            reference(vdi::snapshot(ctx.db, s(args, 0)))
        })
        .p(VDI)
        .opt(STRING_MAP, Value::Struct(Vec::new()))
        .asynchronous()
        .reserves(ClassId::Vdi, "snapshot"),
        sync("VDI.clone", |ctx, args| {
            reference(vdi::clone(ctx.db, s(args, 0)))
        })
        .p(VDI)
        .opt(STRING_MAP, Value::Struct(Vec::new()))
        .asynchronous()
        .reserves(ClassId::Vdi, "clone"),
        sync("VDI.copy", |ctx, args| {
            reference(vdi::copy(
                ctx.db,
                s(args, 0),
                s(args, 1),
                s(args, 2),
                s(args, 3),
            ))
        })
        .p(VDI)
        .opt(SR, null())
        .opt(VDI, null())
        .opt(VDI, null())
        .asynchronous()
        .reserves(ClassId::Vdi, "copy"),
        sync("VDI.resize", |ctx, args| {
            void(vdi::resize(ctx.db, s(args, 0), i(args, 1)))
        })
        .p(VDI)
        .p(INT)
        .asynchronous(),
        sync("VDI.forget", |ctx, args| {
            void(vdi::forget(ctx.db, s(args, 0)))
        })
        .p(VDI)
        .asynchronous(),
        sync("VDI.enable_cbt", |ctx, args| {
            void(vdi::set_cbt(ctx.db, s(args, 0), true))
        })
        .p(VDI)
        .asynchronous(),
        sync("VDI.disable_cbt", |ctx, args| {
            void(vdi::set_cbt(ctx.db, s(args, 0), false))
        })
        .p(VDI)
        .asynchronous(),
        Method::new("VDI.data_destroy", Kind::DataDestroy)
            .p(VDI)
            .asynchronous(),
        sync("VDI.list_changed_blocks", |ctx, args| {
            vdi::list_changed_blocks(ctx.db, s(args, 0), s(args, 1)).map(Value::String)
        })
        .p(VDI)
        .p(VDI)
        .asynchronous(),
        sync("VDI.get_nbd_info", |ctx, args| {
            vdi::nbd_info(ctx.db, s(args, 0), ctx.session)
        })
        .p(VDI),
        sync("VDI.set_on_boot", |ctx, args| {
            void(vdi::set_on_boot(ctx.db, s(args, 0), s(args, 1)))
        })
        .p(VDI)
        .p(Ty::Enum(&["reset", "persist"]))
        .asynchronous(),
        // VBD, VIF
        sync("VBD.destroy", |ctx, args| {
            void(objects::destroy_vbd(ctx.db, s(args, 0)))
        })
        .p(VBD)
        .asynchronous(),
        sync("VBD.plug", |ctx, args| {
            void(objects::plug_vbd(ctx.db, s(args, 0), true))
        })
        .p(VBD)
        .asynchronous(),
        sync("VBD.unplug", |ctx, args| {
            void(objects::plug_vbd(ctx.db, s(args, 0), false))
        })
        .p(VBD)
        .asynchronous(),
        sync("VBD.unplug_force", |ctx, args| {
            void(objects::plug_vbd(ctx.db, s(args, 0), false))
        })
        .p(VBD)
        .asynchronous(),
        sync("VIF.destroy", |ctx, args| {
            void(
                ctx.db
                    .check(ClassId::Vif, s(args, 0))
                    .and_then(|()| ctx.db.remove(ClassId::Vif, s(args, 0))),
            )
        })
        .p(VIF)
        .asynchronous(),
        // VM
        snapshot,
        sync("VM.clone", |ctx, args| {
            reference(vm::clone(ctx.db, s(args, 0), s(args, 1)))
        })
        .p(VM)
        .p(STR)
        .asynchronous()
        .reserves(ClassId::Vm, "clone"),
        sync("VM.copy", |ctx, args| {
            reference(vm::copy(ctx.db, s(args, 0), s(args, 1), s(args, 2)))
        })
        .p(VM)
        .p(STR)
        .p(SR)
        .asynchronous()
        .reserves(ClassId::Vm, "copy"),
        power("VM.destroy", "destroy", |ctx, args| {
            void(vm::destroy(ctx.db, s(args, 0)))
        }),
        sync("VM.start", |ctx, args| {
            void(vm::start(ctx.db, s(args, 0), None, b(args, 1)))
        })
        .p(VM)
        .p(BOOL)
        .p(BOOL)
        .asynchronous()
        .reserves(ClassId::Vm, "start"),
        sync("VM.start_on", |ctx, args| {
            void(vm::start(ctx.db, s(args, 0), Some(s(args, 1)), b(args, 2)))
        })
        .p(VM)
        .p(HOST)
        .p(BOOL)
        .p(BOOL)
        .asynchronous()
        .reserves(ClassId::Vm, "start_on"),
        power("VM.clean_shutdown", "clean_shutdown", |ctx, args| {
            void(vm::power_operation(ctx.db, s(args, 0), "clean_shutdown"))
        }),
        power("VM.hard_shutdown", "hard_shutdown", |ctx, args| {
            void(vm::power_operation(ctx.db, s(args, 0), "hard_shutdown"))
        }),
        power("VM.shutdown", "shutdown", |ctx, args| {
            void(vm::power_operation(ctx.db, s(args, 0), "shutdown"))
        }),
        power("VM.clean_reboot", "clean_reboot", |ctx, args| {
            void(vm::power_operation(ctx.db, s(args, 0), "clean_reboot"))
        }),
        power("VM.hard_reboot", "hard_reboot", |ctx, args| {
            void(vm::power_operation(ctx.db, s(args, 0), "hard_reboot"))
        }),
        power("VM.pause", "pause", |ctx, args| {
            void(vm::power_operation(ctx.db, s(args, 0), "pause"))
        }),
        power("VM.unpause", "unpause", |ctx, args| {
            void(vm::power_operation(ctx.db, s(args, 0), "unpause"))
        }),
        power("VM.power_state_reset", "power_state_reset", |ctx, args| {
            void(vm::power_operation(ctx.db, s(args, 0), "power_state_reset"))
        }),
        sync("VM.set_is_a_template", |ctx, args| {
            void(vm::set_is_a_template(ctx.db, s(args, 0), b(args, 1)))
        })
        .p(VM)
        .p(BOOL),
        sync("VM.set_memory_limits", |ctx, args| {
            void(vm::set_memory_limits(
                ctx.db,
                s(args, 0),
                [i(args, 1), i(args, 2), i(args, 3), i(args, 4)],
            ))
        })
        .p(VM)
        .p(INT)
        .p(INT)
        .p(INT)
        .p(INT)
        .asynchronous(),
        sync("VM.set_VCPUs_max", |ctx, args| {
            void(vm::set_vcpus(ctx.db, s(args, 0), "VCPUs_max", i(args, 1)))
        })
        .p(VM)
        .p(INT),
        sync("VM.set_VCPUs_at_startup", |ctx, args| {
            void(vm::set_vcpus(
                ctx.db,
                s(args, 0),
                "VCPUs_at_startup",
                i(args, 1),
            ))
        })
        .p(VM)
        .p(INT),
        // task
        sync("task.create", |ctx, args| {
            Ok(Value::String(objects::create_task(
                ctx.db,
                s(args, 0),
                s(args, 1),
                ctx.host,
                false,
            )))
        })
        .p(STR)
        .p(STR),
        sync("task.cancel", |ctx, args| {
            void(objects::cancel_task(ctx.db, s(args, 0)))
        })
        .p(TASK)
        .asynchronous(),
        sync("task.destroy", |ctx, args| {
            void(objects::destroy_task(ctx.db, s(args, 0)))
        })
        .p(TASK),
        sync("task.set_status", |ctx, args| {
            void(ctx.db.check(ClassId::Task, s(args, 0)).and_then(|()| {
                ctx.db
                    .set(ClassId::Task, s(args, 0), "status", Value::from(s(args, 1)))
            }))
        })
        .p(TASK)
        .p(Ty::Enum(crate::db::schema::TASK_STATUS)),
        sync("task.set_progress", |ctx, args| {
            void(ctx.db.check(ClassId::Task, s(args, 0)).and_then(|()| {
                let progress = args.get(1).cloned().unwrap_or(Value::Double(0.0));
                ctx.db.set(ClassId::Task, s(args, 0), "progress", progress)
            }))
        })
        .p(TASK)
        .p(FLOAT),
        sync("task.set_result", |ctx, args| {
            void(ctx.db.check(ClassId::Task, s(args, 0)).and_then(|()| {
                ctx.db
                    .set(ClassId::Task, s(args, 0), "result", Value::from(s(args, 1)))
            }))
        })
        .p(TASK)
        .p(STR),
        sync("task.set_error_info", |ctx, args| {
            void(ctx.db.check(ClassId::Task, s(args, 0)).and_then(|()| {
                ctx.db.set(
                    ClassId::Task,
                    s(args, 0),
                    "error_info",
                    crate::db::string_set(strings(args, 1)),
                )
            }))
        })
        .p(TASK)
        .p(STRINGS),
        // event
        Method::new("event.from", Kind::EventFrom)
            .p(STRINGS)
            .p(STR)
            .p(FLOAT),
        sync("event.inject", |ctx, args| {
            objects::inject(ctx.db, s(args, 0), s(args, 1)).map(Value::String)
        })
        .p(STR)
        .p(STR),
        sync("event.get_current_id", |ctx, _| {
            Ok(Value::Int(
                i64::try_from(ctx.db.generation()).unwrap_or(i64::MAX),
            ))
        }),
    ]
}
