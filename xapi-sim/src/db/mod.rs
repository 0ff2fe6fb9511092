//! The simulated xapi database: objects with xapi's semantics.
//!
//! [`Db`] holds one table per [`ClassId`]; every row keeps the values of its class's fields in
//! datamodel order (so records come out exactly as xapi orders them), a creation and a
//! modification generation (for `event.from`), and one-to-many relations are maintained on both
//! sides as xapi's database does (creating a VBD modifies its VM and its VDI). Deletions are
//! remembered for `del` events.
//!
//! The class-specific behaviour lives in submodules: [`vm`] (lifecycle, snapshot/clone/copy),
//! [`vdi`] (VDI operations, CBT, NBD info), [`objects`] (VBD, VIF, network, pool, host, task,
//! session, events). Everything is synchronous and runs under the pool's lock; operations that
//! must happen later (guest metrics appearing after a start) are queued as [`Scheduled`] items
//! that the owner of the lock runs at the due time.

pub mod objects;
pub mod schema;
pub mod vdi;
pub mod vm;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use xenapi::codec::Failure;
use xenapi::{DateTime, Value};

pub use self::schema::{Access, ClassId, Ctor, Field, Ty};
use crate::storage::{DiskId, Storage};

/// Result of an operation that fails with a XenAPI error.
pub type ApiResult<T> = Result<T, Failure>;

/// `Err(Failure)` with this code and these parameters.
pub(crate) fn api_err<T>(
    code: &str,
    params: impl IntoIterator<Item = impl Into<String>>,
) -> ApiResult<T> {
    Err(Failure::new(code, params))
}

/// `HANDLE_INVALID [class; ref]`.
pub(crate) fn handle_invalid(class: ClassId, reference: &str) -> Failure {
    Failure::new("HANDLE_INVALID", [class.name(), reference])
}

/// `INTERNAL_ERROR [message]`.
pub(crate) fn internal(message: impl Into<String>) -> Failure {
    Failure::new("INTERNAL_ERROR", [message.into()])
}

/// The null reference.
pub const NULL_REF: &str = xenapi::NULL_REF;

/// A fresh `OpaqueRef:<uuid>`.
#[must_use]
pub fn new_ref() -> String {
    format!("OpaqueRef:{}", uuid::Uuid::new_v4())
}

/// A fresh uuid.
#[must_use]
pub fn new_uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Now, as xapi stores datetimes (whole seconds, UTC).
#[must_use]
pub fn now() -> DateTime {
    let seconds = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs());
    DateTime::from_unix_seconds(i64::try_from(seconds).unwrap_or(0)).unwrap_or(DateTime::EPOCH)
}

/// The string inside a value (`""` for anything else).
#[must_use]
pub fn as_str(value: &Value) -> &str {
    value.as_str().unwrap_or("")
}

/// The bool inside a value (`false` for anything else).
#[must_use]
pub fn as_bool(value: &Value) -> bool {
    matches!(value, Value::Bool(true))
}

/// The int inside a value (`0` for anything else).
#[must_use]
pub fn as_int(value: &Value) -> i64 {
    match value {
        Value::Int(number) => *number,
        Value::Int32(number) => i64::from(*number),
        _ => 0,
    }
}

/// The items of a set value (empty for anything else).
#[must_use]
pub fn as_list(value: &Value) -> &[Value] {
    match value {
        Value::Array(items) => items,
        _ => &[],
    }
}

/// The members of a map value (empty for anything else).
#[must_use]
pub fn as_map(value: &Value) -> &[(String, Value)] {
    match value {
        Value::Struct(members) => members,
        _ => &[],
    }
}

/// The string value of `key` in a map value.
#[must_use]
pub fn map_get<'a>(value: &'a Value, key: &str) -> Option<&'a str> {
    as_map(value)
        .iter()
        .find(|(name, _)| name == key)
        .map(|(_, item)| as_str(item))
}

/// A string map value from pairs.
#[must_use]
pub fn string_map<K: Into<String>, V: Into<String>>(
    pairs: impl IntoIterator<Item = (K, V)>,
) -> Value {
    Value::Struct(
        pairs
            .into_iter()
            .map(|(key, value)| (key.into(), Value::String(value.into())))
            .collect(),
    )
}

/// A set of strings value.
#[must_use]
pub fn string_set<S: Into<String>>(items: impl IntoIterator<Item = S>) -> Value {
    Value::Array(
        items
            .into_iter()
            .map(|item| Value::String(item.into()))
            .collect(),
    )
}

/// The zero value of a type (`""`, `0`, `false`, epoch, NULL, empty set/map, first enum value).
#[must_use]
pub fn zero(ty: &Ty) -> Value {
    match ty {
        Ty::Str => Value::void(),
        Ty::Int => Value::Int(0),
        Ty::Float => Value::Double(0.0),
        Ty::Bool => Value::Bool(false),
        Ty::Date => Value::DateTime(DateTime::EPOCH),
        Ty::Ref(_) | Ty::OtherRef(_) => Value::String(NULL_REF.to_owned()),
        Ty::Enum(values) | Ty::OpenEnum(values) => {
            Value::String(values.first().copied().unwrap_or("").to_owned())
        }
        Ty::Set(_) => Value::Array(Vec::new()),
        Ty::Map(_, _) => Value::Struct(Vec::new()),
    }
}

/// The default of a field.
#[must_use]
pub fn default_of(field: &Field) -> Value {
    match field.default {
        schema::Default::Zero => zero(&field.ty),
        schema::Default::Str(text) => Value::String(text.to_owned()),
        schema::Default::Int(number) => Value::Int(number),
        schema::Default::Float(number) => Value::Double(number),
        schema::Default::Bool(flag) => Value::Bool(flag),
    }
}

/// A version of xapi, deciding version-dependent API shapes.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct XapiVersion {
    /// Major version (xapi 21.4.0 → 21).
    pub major: u32,
    /// Minor version.
    pub minor: u32,
    /// Patch version.
    pub patch: u32,
}

impl XapiVersion {
    /// The first xapi accepting `VM.snapshot`'s `ignore_vdis`.
    pub const SNAPSHOT_IGNORE_VDIS: XapiVersion = XapiVersion {
        major: 21,
        minor: 4,
        patch: 0,
    };
    /// The default: a recent XCP-ng 8.3 xapi.
    pub const DEFAULT: XapiVersion = XapiVersion {
        major: 25,
        minor: 6,
        patch: 0,
    };

    /// Parses `"21.4.0"`.
    #[must_use]
    pub fn parse(text: &str) -> Option<XapiVersion> {
        let mut parts = text.trim().split('.').map(str::parse::<u32>);
        let major = parts.next()?.ok()?;
        let minor = parts.next().unwrap_or(Ok(0)).ok()?;
        let patch = parts.next().unwrap_or(Ok(0)).ok()?;
        parts.next().is_none().then_some(XapiVersion {
            major,
            minor,
            patch,
        })
    }

    /// Whether `VM.snapshot` takes a third parameter.
    #[must_use]
    pub fn snapshot_takes_ignore_vdis(self) -> bool {
        self >= XapiVersion::SNAPSHOT_IGNORE_VDIS
    }
}

impl std::fmt::Display for XapiVersion {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// Pool-wide behaviour knobs (xapi's values in the comments).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct DbConfig {
    /// Version whose API shapes are served.
    pub xapi_version: XapiVersion,
    /// Delay before a started VM reports guest metrics (PV drivers), unless the VM sets its own.
    pub guest_metrics_delay: Duration,
    /// How long `VDI.data_destroy` waits for VBDs to disappear (xapi: 4 s).
    pub data_destroy_wait: Duration,
    /// Completed tasks are deleted this long after finishing (xapi: 65 min).
    pub task_gc_delay: Duration,
    /// More completed tasks than this are deleted oldest first (xapi: 200).
    pub max_completed_tasks: usize,
}

impl Default for DbConfig {
    fn default() -> Self {
        DbConfig {
            xapi_version: XapiVersion::DEFAULT,
            guest_metrics_delay: Duration::ZERO,
            data_destroy_wait: Duration::from_secs(4),
            task_gc_delay: Duration::from_secs(3900),
            max_completed_tasks: 200,
        }
    }
}

/// Simulator-only facts about a host (not in its record).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct HostRuntime {
    /// PEM of the host's TLS certificate (HTTPS, NBD).
    pub certificate_pem: String,
    /// The DNS name clients should verify (`vdi_nbd_server_info.subject`).
    pub certificate_subject: String,
    /// Port `VDI.get_nbd_info` advertises (xapi: 10809; the NBD server may bind another).
    pub nbd_port: u16,
    /// SHA-256 fingerprint of the certificate, as xapi stores it in `Certificate.fingerprint_sha256`
    /// (upper-case hex pairs joined by `:`); sent to clients that ask for it on `HOST_IS_SLAVE`.
    pub fingerprint_sha256: String,
    /// SHA-1 fingerprint of the certificate, in the same form (`Certificate.fingerprint_sha1`).
    pub fingerprint_sha1: String,
}

impl HostRuntime {
    /// The runtime facts of a host serving `certificate_der` (PEM `certificate_pem`).
    #[must_use]
    pub fn new(
        certificate_pem: String,
        certificate_der: &[u8],
        certificate_subject: String,
    ) -> Self {
        use sha1::Digest as _;
        Self {
            certificate_pem,
            certificate_subject,
            nbd_port: 10809,
            fingerprint_sha256: colon_hex(&sha2::Sha256::digest(certificate_der)),
            fingerprint_sha1: colon_hex(&sha1::Sha1::digest(certificate_der)),
        }
    }
}

/// `AB:CD:…`, the form xapi prints certificate fingerprints in.
fn colon_hex(digest: &[u8]) -> String {
    digest
        .iter()
        .map(|byte| format!("{byte:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Work due later, run by the owner of the lock.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Scheduled {
    /// A started VM's guest agent reports (PV drivers detected).
    GuestMetrics {
        /// The VM.
        vm: String,
        /// Its `domid` at start: a later boot supersedes this report.
        domid: i64,
        /// When, from now.
        after: Duration,
    },
}

#[derive(Clone, Debug)]
struct Row {
    values: Vec<Value>,
    ctime: u64,
    mtime: u64,
}

#[derive(Clone, Debug)]
struct Deletion {
    class: ClassId,
    reference: String,
    ctime: u64,
    dtime: u64,
}

/// Deletions remembered for `del` events; older ones are forgotten (clients then miss a `del`,
/// which xapi never guarantees either across long gaps).
const MAX_REMEMBERED_DELETIONS: usize = 100_000;

/// The simulated database of one pool.
#[derive(Debug)]
pub struct Db {
    tables: BTreeMap<ClassId, BTreeMap<String, Row>>,
    generation: u64,
    deleted: VecDeque<Deletion>,
    disks: HashMap<String, DiskId>,
    storage: Storage,
    config: DbConfig,
    hosts: HashMap<String, HostRuntime>,
    scheduled: Vec<Scheduled>,
    next_domid: i64,
    task_finish: HashMap<String, SystemTime>,
    cancel_requests: HashMap<String, bool>,
    guest_agents: HashMap<String, vm::GuestAgent>,
}

impl Db {
    /// An empty database over `storage`.
    #[must_use]
    pub fn new(storage: Storage, config: DbConfig) -> Db {
        Db {
            tables: ClassId::ALL
                .into_iter()
                .map(|class| (class, BTreeMap::new()))
                .collect(),
            generation: 0,
            deleted: VecDeque::new(),
            disks: HashMap::new(),
            storage,
            config,
            hosts: HashMap::new(),
            scheduled: Vec::new(),
            next_domid: 1,
            task_finish: HashMap::new(),
            cancel_requests: HashMap::new(),
            guest_agents: HashMap::new(),
        }
    }

    /// The storage behind the VDIs.
    #[must_use]
    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// The behaviour knobs.
    #[must_use]
    pub fn config(&self) -> &DbConfig {
        &self.config
    }

    /// Mutable knobs (test hooks).
    pub fn config_mut(&mut self) -> &mut DbConfig {
        &mut self.config
    }

    /// The last generation used (every change consumes one).
    #[must_use]
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Work queued for later; the caller runs it.
    pub fn take_scheduled(&mut self) -> Vec<Scheduled> {
        std::mem::take(&mut self.scheduled)
    }

    pub(crate) fn schedule(&mut self, item: Scheduled) {
        self.scheduled.push(item);
    }

    fn next_generation(&mut self) -> u64 {
        self.generation = self.generation.saturating_add(1);
        self.generation
    }

    fn table(&self, class: ClassId) -> Option<&BTreeMap<String, Row>> {
        self.tables.get(&class)
    }

    fn row(&self, class: ClassId, reference: &str) -> ApiResult<&Row> {
        self.table(class)
            .and_then(|table| table.get(reference))
            .ok_or_else(|| handle_invalid(class, reference))
    }

    fn row_mut(&mut self, class: ClassId, reference: &str) -> ApiResult<&mut Row> {
        self.tables
            .get_mut(&class)
            .and_then(|table| table.get_mut(reference))
            .ok_or_else(|| handle_invalid(class, reference))
    }

    /// Whether the object exists.
    #[must_use]
    pub fn exists(&self, class: ClassId, reference: &str) -> bool {
        self.table(class)
            .is_some_and(|table| table.contains_key(reference))
    }

    /// `Ok` if the object exists, else `HANDLE_INVALID [class; ref]`.
    ///
    /// # Errors
    /// `HANDLE_INVALID`.
    pub fn check(&self, class: ClassId, reference: &str) -> ApiResult<()> {
        self.row(class, reference).map(|_| ())
    }

    /// Every object of a class, in ref order.
    #[must_use]
    pub fn all(&self, class: ClassId) -> Vec<String> {
        self.table(class)
            .map(|table| table.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Number of objects of a class.
    #[must_use]
    pub fn count(&self, class: ClassId) -> usize {
        self.table(class).map_or(0, BTreeMap::len)
    }

    /// Objects whose `field` equals `value`.
    #[must_use]
    pub fn find(&self, class: ClassId, field: &str, value: &Value) -> Vec<String> {
        let Some(index) = class.field_index(field) else {
            return Vec::new();
        };
        self.table(class)
            .map(|table| {
                table
                    .iter()
                    .filter(|(_, row)| row.values.get(index).is_some_and(|item| item == value))
                    .map(|(reference, _)| reference.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The object with this uuid, else `UUID_INVALID [class; uuid]`.
    ///
    /// # Errors
    /// `UUID_INVALID`.
    pub fn by_uuid(&self, class: ClassId, uuid: &str) -> ApiResult<String> {
        self.find(class, "uuid", &Value::String(uuid.to_owned()))
            .into_iter()
            .next()
            .ok_or_else(|| Failure::new("UUID_INVALID", [class.name(), uuid]))
    }

    /// A field's value.
    ///
    /// # Errors
    /// `HANDLE_INVALID`; `INTERNAL_ERROR` for a field the class does not have.
    pub fn get(&self, class: ClassId, reference: &str, field: &str) -> ApiResult<&Value> {
        let row = self.row(class, reference)?;
        let index = class
            .field_index(field)
            .ok_or_else(|| internal(format!("no field {class}.{field}")))?;
        row.values
            .get(index)
            .ok_or_else(|| internal(format!("row of {class} lacks {field}")))
    }

    /// A string field (`""` if absent).
    #[must_use]
    pub fn str(&self, class: ClassId, reference: &str, field: &str) -> String {
        self.get(class, reference, field)
            .map(|value| as_str(value).to_owned())
            .unwrap_or_default()
    }

    /// A bool field (`false` if absent).
    #[must_use]
    pub fn bool(&self, class: ClassId, reference: &str, field: &str) -> bool {
        self.get(class, reference, field).is_ok_and(as_bool)
    }

    /// An int field (`0` if absent).
    #[must_use]
    pub fn int(&self, class: ClassId, reference: &str, field: &str) -> i64 {
        self.get(class, reference, field).map_or(0, as_int)
    }

    /// The strings of a set field.
    #[must_use]
    pub fn strings(&self, class: ClassId, reference: &str, field: &str) -> Vec<String> {
        self.get(class, reference, field)
            .map(|value| {
                as_list(value)
                    .iter()
                    .map(|item| as_str(item).to_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A map field as pairs of strings.
    #[must_use]
    pub fn map(&self, class: ClassId, reference: &str, field: &str) -> Vec<(String, String)> {
        self.get(class, reference, field)
            .map(|value| {
                as_map(value)
                    .iter()
                    .map(|(key, item)| (key.clone(), as_str(item).to_owned()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Creates an object: the given fields, defaults for the others, a fresh uuid unless given.
    /// Relations are updated on both sides. Returns the new ref.
    pub fn insert(&mut self, class: ClassId, fields: Vec<(&str, Value)>) -> String {
        let reference = new_ref();
        self.insert_with_ref(class, reference.clone(), fields);
        reference
    }

    fn insert_with_ref(&mut self, class: ClassId, reference: String, fields: Vec<(&str, Value)>) {
        let mut values: Vec<Value> = class.fields().iter().map(default_of).collect();
        if let Some(slot) = values.first_mut() {
            *slot = Value::String(new_uuid());
        }
        for (name, value) in fields {
            if let Some(slot) = class
                .field_index(name)
                .and_then(|index| values.get_mut(index))
            {
                *slot = value;
            }
        }
        let generation = self.next_generation();
        let row = Row {
            values,
            ctime: generation,
            mtime: generation,
        };
        let links = self.child_links(class, &row);
        if let Some(table) = self.tables.get_mut(&class) {
            table.insert(reference.clone(), row);
        }
        for (parent_class, parent, set_field) in links {
            self.set_add_raw(parent_class, &parent, set_field, &reference);
        }
    }

    /// The parents this row links to through relations.
    fn child_links(&self, class: ClassId, row: &Row) -> Vec<(ClassId, String, &'static str)> {
        schema::RELATIONS
            .iter()
            .filter(|(child, _, _, _)| *child == class)
            .filter_map(|(_, field, parent_class, set_field)| {
                let index = class.field_index(field)?;
                let parent = as_str(row.values.get(index)?).to_owned();
                self.exists(*parent_class, &parent)
                    .then_some((*parent_class, parent, *set_field))
            })
            .collect()
    }

    fn set_add_raw(&mut self, class: ClassId, reference: &str, field: &str, item: &str) {
        let generation = self.next_generation();
        let Some(index) = class.field_index(field) else {
            return;
        };
        if let Ok(row) = self.row_mut(class, reference)
            && let Some(Value::Array(items)) = row.values.get_mut(index)
        {
            if !items.iter().any(|existing| as_str(existing) == item) {
                items.push(Value::String(item.to_owned()));
            }
            row.mtime = generation;
        }
    }

    fn set_remove_raw(&mut self, class: ClassId, reference: &str, field: &str, item: &str) {
        let generation = self.next_generation();
        let Some(index) = class.field_index(field) else {
            return;
        };
        if let Ok(row) = self.row_mut(class, reference)
            && let Some(Value::Array(items)) = row.values.get_mut(index)
        {
            items.retain(|existing| as_str(existing) != item);
            row.mtime = generation;
        }
    }

    /// Sets a field (any qualifier: callers enforce the API's rules), maintaining relations.
    ///
    /// # Errors
    /// `HANDLE_INVALID`; `INTERNAL_ERROR` for a field the class does not have.
    pub fn set(
        &mut self,
        class: ClassId,
        reference: &str,
        field: &str,
        value: Value,
    ) -> ApiResult<()> {
        let index = class
            .field_index(field)
            .ok_or_else(|| internal(format!("no field {class}.{field}")))?;
        let relation = schema::RELATIONS
            .iter()
            .find(|(child, name, _, _)| *child == class && *name == field)
            .copied();
        let generation = self.next_generation();
        let row = self.row_mut(class, reference)?;
        let old = row
            .values
            .get(index)
            .map(|item| as_str(item).to_owned())
            .unwrap_or_default();
        let new = as_str(&value).to_owned();
        if let Some(slot) = row.values.get_mut(index) {
            *slot = value;
        }
        row.mtime = generation;
        if let Some((_, _, parent_class, set_field)) = relation
            && old != new
        {
            if self.exists(parent_class, &old) {
                self.set_remove_raw(parent_class, &old, set_field, reference);
            }
            if self.exists(parent_class, &new) {
                self.set_add_raw(parent_class, &new, set_field, reference);
            }
        }
        Ok(())
    }

    /// Marks an object modified without changing it (`event.inject`). Returns its new generation.
    ///
    /// # Errors
    /// `HANDLE_INVALID`.
    pub fn touch(&mut self, class: ClassId, reference: &str) -> ApiResult<u64> {
        self.check(class, reference)?;
        let generation = self.next_generation();
        self.row_mut(class, reference)?.mtime = generation;
        Ok(generation)
    }

    /// Deletes an object (relations updated; refs to it elsewhere dangle, as in xapi).
    ///
    /// # Errors
    /// `HANDLE_INVALID`.
    pub fn remove(&mut self, class: ClassId, reference: &str) -> ApiResult<()> {
        let row = self.row(class, reference)?.clone();
        let links = self.child_links(class, &row);
        if let Some(table) = self.tables.get_mut(&class) {
            table.remove(reference);
        }
        for (parent_class, parent, set_field) in links {
            self.set_remove_raw(parent_class, &parent, set_field, reference);
        }
        let dtime = self.next_generation();
        if class.has_events() {
            self.deleted.push_back(Deletion {
                class,
                reference: reference.to_owned(),
                ctime: row.ctime,
                dtime,
            });
            while self.deleted.len() > MAX_REMEMBERED_DELETIONS {
                self.deleted.pop_front();
            }
        }
        if class == ClassId::Vdi {
            self.disks.remove(reference);
        }
        if class == ClassId::Task {
            self.task_finish.remove(reference);
            self.cancel_requests.remove(reference);
        }
        Ok(())
    }

    /// Adds `key → value` to a map field; `MAP_DUPLICATE_KEY [table; field; uuid; key]` if present.
    ///
    /// # Errors
    /// `HANDLE_INVALID`, `MAP_DUPLICATE_KEY`.
    pub fn map_add(
        &mut self,
        class: ClassId,
        reference: &str,
        field: &str,
        key: &str,
        value: Value,
    ) -> ApiResult<()> {
        let mut members = as_map(self.get(class, reference, field)?).to_vec();
        if members.iter().any(|(name, _)| name == key) {
            let uuid = self.str(class, reference, "uuid");
            return api_err("MAP_DUPLICATE_KEY", [class.name(), field, &uuid, key]);
        }
        members.push((key.to_owned(), value));
        self.set(class, reference, field, Value::Struct(members))
    }

    /// Removes `key` from a map field; absent keys are a no-op.
    ///
    /// # Errors
    /// `HANDLE_INVALID`.
    pub fn map_remove(
        &mut self,
        class: ClassId,
        reference: &str,
        field: &str,
        key: &str,
    ) -> ApiResult<()> {
        let mut members = as_map(self.get(class, reference, field)?).to_vec();
        let before = members.len();
        members.retain(|(name, _)| name != key);
        if members.len() != before {
            self.set(class, reference, field, Value::Struct(members))?;
        }
        Ok(())
    }

    /// Sets `key → value` in a map field, replacing any previous value.
    ///
    /// # Errors
    /// `HANDLE_INVALID`.
    pub fn map_put(
        &mut self,
        class: ClassId,
        reference: &str,
        field: &str,
        key: &str,
        value: Value,
    ) -> ApiResult<()> {
        let mut members = as_map(self.get(class, reference, field)?).to_vec();
        match members.iter_mut().find(|(name, _)| name == key) {
            Some((_, slot)) => *slot = value,
            None => members.push((key.to_owned(), value)),
        }
        self.set(class, reference, field, Value::Struct(members))
    }

    /// Adds an item to a set field (no-op if present).
    ///
    /// # Errors
    /// `HANDLE_INVALID`.
    pub fn set_add(
        &mut self,
        class: ClassId,
        reference: &str,
        field: &str,
        item: Value,
    ) -> ApiResult<()> {
        let mut items = as_list(self.get(class, reference, field)?).to_vec();
        if !items.contains(&item) {
            items.push(item);
            self.set(class, reference, field, Value::Array(items))?;
        }
        Ok(())
    }

    /// Removes an item from a set field (no-op if absent).
    ///
    /// # Errors
    /// `HANDLE_INVALID`.
    pub fn set_remove(
        &mut self,
        class: ClassId,
        reference: &str,
        field: &str,
        item: &Value,
    ) -> ApiResult<()> {
        let mut items = as_list(self.get(class, reference, field)?).to_vec();
        let before = items.len();
        items.retain(|existing| existing != item);
        if items.len() != before {
            self.set(class, reference, field, Value::Array(items))?;
        }
        Ok(())
    }

    /// The record as `get_record` returns it: every field in datamodel order.
    ///
    /// # Errors
    /// `HANDLE_INVALID`.
    pub fn record(&self, class: ClassId, reference: &str) -> ApiResult<Value> {
        let row = self.row(class, reference)?;
        let mut members: Vec<(String, Value)> = class
            .fields()
            .iter()
            .zip(&row.values)
            .map(|(field, value)| (field.name.to_owned(), value.clone()))
            .collect();
        let computed = match class {
            ClassId::Vm => Some(vm::allowed_operations(self, reference)),
            ClassId::Vdi => Some(vdi::allowed_operations(self, reference)),
            _ => None,
        };
        let mut put = |name: &str, value: Value| {
            if let Some((_, slot)) = members.iter_mut().find(|(existing, _)| existing == name) {
                *slot = value;
            }
        };
        if let Some(allowed) = computed {
            put("allowed_operations", string_set(allowed));
        }
        match class {
            ClassId::Vdi => put(
                "physical_utilisation",
                Value::Int(vdi::physical_utilisation(self, reference)),
            ),
            ClassId::Sr => {
                let (physical, virtual_allocation) = vdi::sr_usage(self, reference);
                put("physical_utilisation", Value::Int(physical));
                put("virtual_allocation", Value::Int(virtual_allocation));
            }
            _ => {}
        }
        Ok(Value::Struct(members))
    }

    /// `get_all_records`: ref → record.
    #[must_use]
    pub fn all_records(&self, class: ClassId) -> Value {
        Value::Struct(
            self.all(class)
                .into_iter()
                .filter_map(|reference| {
                    self.record(class, &reference)
                        .ok()
                        .map(|record| (reference, record))
                })
                .collect(),
        )
    }

    /// The storage disk of a VDI.
    ///
    /// # Errors
    /// `HANDLE_INVALID ["VDI"; ref]`.
    pub fn disk_of(&self, vdi: &str) -> ApiResult<DiskId> {
        self.disks
            .get(vdi)
            .copied()
            .ok_or_else(|| handle_invalid(ClassId::Vdi, vdi))
    }

    pub(crate) fn bind_disk(&mut self, vdi: &str, disk: DiskId) {
        self.disks.insert(vdi.to_owned(), disk);
    }

    /// Simulator-only facts about a host.
    #[must_use]
    pub fn host_runtime(&self, host: &str) -> Option<&HostRuntime> {
        self.hosts.get(host)
    }

    /// Records simulator-only facts about a host (the pool does this at start; the NBD server may
    /// update `nbd_port`).
    pub fn set_host_runtime(&mut self, host: &str, runtime: HostRuntime) {
        self.hosts.insert(host.to_owned(), runtime);
    }

    pub(crate) fn next_domid(&mut self) -> i64 {
        let domid = self.next_domid;
        self.next_domid = self.next_domid.saturating_add(1);
        domid
    }

    /// The pool object.
    #[must_use]
    pub fn pool_ref(&self) -> String {
        self.all(ClassId::Pool)
            .into_iter()
            .next()
            .unwrap_or_else(|| NULL_REF.to_owned())
    }

    /// The master host.
    #[must_use]
    pub fn master(&self) -> String {
        self.str(ClassId::Pool, &self.pool_ref(), "master")
    }

    /// The events since generation `since` for the subscriptions, coalesced as xapi does: an
    /// object created since gives one `add` (its current record), one modified gives one `mod`,
    /// one deleted gives a `del` unless it was also created since. Returns the events and the
    /// generation the next token should carry.
    #[must_use]
    pub fn events_since(&self, since: u64, subscriptions: &[Subscription]) -> (Vec<Value>, u64) {
        let mut adds = Vec::new();
        let mut mods = Vec::new();
        let mut dels = Vec::new();
        for class in ClassId::ALL.into_iter().filter(|class| class.has_events()) {
            if !subscriptions
                .iter()
                .any(|subscription| subscription.matches_class(class))
            {
                continue;
            }
            for (reference, row) in self.table(class).into_iter().flatten() {
                if row.mtime <= since
                    || !subscriptions
                        .iter()
                        .any(|subscription| subscription.matches(class, reference))
                {
                    continue;
                }
                let Ok(snapshot) = self.record(class, reference) else {
                    continue;
                };
                if row.ctime > since {
                    adds.push((
                        row.ctime,
                        event(class, reference, "add", row.ctime, Some(snapshot)),
                    ));
                } else {
                    mods.push((
                        row.mtime,
                        event(class, reference, "mod", row.mtime, Some(snapshot)),
                    ));
                }
            }
        }
        for deletion in &self.deleted {
            if deletion.dtime > since
                && deletion.ctime <= since
                && subscriptions
                    .iter()
                    .any(|subscription| subscription.matches(deletion.class, &deletion.reference))
            {
                dels.push((
                    deletion.dtime,
                    event(
                        deletion.class,
                        &deletion.reference,
                        "del",
                        deletion.dtime,
                        None,
                    ),
                ));
            }
        }
        adds.sort_by_key(|(generation, _)| *generation);
        mods.sort_by_key(|(generation, _)| *generation);
        dels.sort_by_key(|(generation, _)| *generation);
        let events = adds
            .into_iter()
            .chain(mods)
            .chain(dels)
            .map(|(_, event)| event)
            .collect();
        (events, self.generation.max(since))
    }

    /// `valid_ref_counts`: every table's row count, lower-case table names, as Int32.
    #[must_use]
    pub fn valid_ref_counts(&self) -> Value {
        Value::Struct(
            ClassId::ALL
                .into_iter()
                .map(|class| {
                    (
                        class.table().to_owned(),
                        Value::Int32(i32::try_from(self.count(class)).unwrap_or(i32::MAX)),
                    )
                })
                .collect(),
        )
    }

    /// The whole database as JSON, for assertions (`sim.dump`): per class, ref → record (sessions
    /// by uuid: their refs are secrets); plus
    /// the generation and storage statistics.
    #[must_use]
    pub fn dump(&self) -> serde_json::Value {
        let mut classes = serde_json::Map::new();
        for class in ClassId::ALL {
            let mut objects = serde_json::Map::new();
            for reference in self.all(class) {
                if let Ok(record) = self.record(class, &reference) {
                    // Session refs are credentials: sessions are listed by uuid instead.
                    let key = if class == ClassId::Session {
                        self.str(class, &reference, "uuid")
                    } else {
                        reference
                    };
                    objects.insert(key, value_to_json(&record));
                }
            }
            classes.insert(class.name().to_owned(), serde_json::Value::Object(objects));
        }
        let stats = self.storage.stats();
        serde_json::json!({
            "generation": self.generation,
            "classes": classes,
            "storage": {
                "disks": stats.disks,
                "layers": stats.layers,
                "unique_blocks": stats.unique_blocks,
                "block_bytes": stats.block_bytes,
                "cbt_logs": stats.cbt_logs,
            },
        })
    }
}

fn event(
    class: ClassId,
    reference: &str,
    operation: &str,
    generation: u64,
    snapshot: Option<Value>,
) -> Value {
    let mut members = vec![
        ("id".to_owned(), Value::String(generation.to_string())),
        ("timestamp".to_owned(), Value::String("0.0".to_owned())),
        ("class".to_owned(), Value::String(class.table().to_owned())),
        ("operation".to_owned(), Value::String(operation.to_owned())),
        ("ref".to_owned(), Value::String(reference.to_owned())),
    ];
    if let Some(snapshot) = snapshot {
        members.push(("snapshot".to_owned(), snapshot));
    }
    Value::Struct(members)
}

/// One `event.from` subscription entry: `*`, a class, or `class/ref`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Subscription {
    /// `*`
    All,
    /// A class name, lower-cased (unknown names match nothing).
    Class(String),
    /// `class/ref`
    Object(String, String),
}

impl Subscription {
    /// Parses an entry as xapi does (split at the first `/`, class case-insensitive).
    #[must_use]
    pub fn parse(entry: &str) -> Subscription {
        if entry == "*" {
            return Subscription::All;
        }
        match entry.split_once('/') {
            Some((class, reference)) => {
                Subscription::Object(class.to_ascii_lowercase(), reference.to_owned())
            }
            None => Subscription::Class(entry.to_ascii_lowercase()),
        }
    }

    fn matches_class(&self, class: ClassId) -> bool {
        match self {
            Subscription::All => true,
            Subscription::Class(name) | Subscription::Object(name, _) => {
                class.name().eq_ignore_ascii_case(name)
            }
        }
    }

    fn matches(&self, class: ClassId, reference: &str) -> bool {
        match self {
            Subscription::Object(_, wanted) => self.matches_class(class) && wanted == reference,
            _ => self.matches_class(class),
        }
    }
}

/// A value as JSON for dumps (datetimes as xapi strings, non-finite floats as strings).
#[must_use]
pub fn value_to_json(value: &Value) -> serde_json::Value {
    match value {
        Value::String(text) => serde_json::Value::String(text.clone()),
        Value::Int(number) => serde_json::Value::from(*number),
        Value::Int32(number) => serde_json::Value::from(*number),
        Value::Double(number) => serde_json::Number::from_f64(*number).map_or_else(
            || serde_json::Value::String(number.to_string()),
            serde_json::Value::Number,
        ),
        Value::Bool(flag) => serde_json::Value::Bool(*flag),
        Value::DateTime(date) => serde_json::Value::String(date.to_string()),
        Value::Array(items) => serde_json::Value::Array(items.iter().map(value_to_json).collect()),
        Value::Struct(members) => serde_json::Value::Object(
            members
                .iter()
                .map(|(key, item)| (key.clone(), value_to_json(item)))
                .collect(),
        ),
        Value::Base64(bytes) => serde_json::Value::String(hex::encode(bytes)),
        Value::Nil => serde_json::Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> Db {
        Db::new(Storage::new(), DbConfig::default())
    }

    #[test]
    fn inserting_a_child_updates_the_parent_set_and_its_generation() {
        let mut db = db();
        let vm = db.insert(ClassId::Vm, vec![("name_label", Value::from("a"))]);
        let before = db.row(ClassId::Vm, &vm).unwrap().mtime;
        let vbd = db.insert(ClassId::Vbd, vec![("VM", Value::from(vm.as_str()))]);
        assert_eq!(db.strings(ClassId::Vm, &vm, "VBDs"), vec![vbd.clone()]);
        assert!(db.row(ClassId::Vm, &vm).unwrap().mtime > before);
        db.remove(ClassId::Vbd, &vbd).unwrap();
        assert!(db.strings(ClassId::Vm, &vm, "VBDs").is_empty());
    }

    #[test]
    fn events_coalesce_per_object_and_skip_created_then_deleted() {
        let mut db = db();
        let kept = db.insert(ClassId::Network, vec![]);
        let since = db.generation();
        db.set(ClassId::Network, &kept, "name_label", Value::from("x"))
            .unwrap();
        db.set(ClassId::Network, &kept, "name_label", Value::from("y"))
            .unwrap();
        let transient = db.insert(ClassId::Network, vec![]);
        db.remove(ClassId::Network, &transient).unwrap();
        let (events, token) = db.events_since(since, &[Subscription::parse("Network")]);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].get("operation"), Some(&Value::from("mod")));
        assert_eq!(token, db.generation());
    }

    #[test]
    fn versions_parse_and_compare() {
        assert_eq!(
            XapiVersion::parse("21.4"),
            Some(XapiVersion {
                major: 21,
                minor: 4,
                patch: 0
            })
        );
        assert!(
            !XapiVersion::parse("1.329.0")
                .unwrap()
                .snapshot_takes_ignore_vdis()
        );
        assert!(XapiVersion::DEFAULT.snapshot_takes_ignore_vdis());
        assert_eq!(XapiVersion::parse("x"), None);
    }
}
