//! The `ova.xml` model: the VM, VBD, VDI, VIF, network and SR records of an export.
//!
//! [`OvaXml`] keeps every object's snapshot as an XML-RPC [`Struct`], so nothing of a file we
//! read is lost; the typed [`records`] decode and encode those structs with xapi's rules.
//! [`OvaXml::streamed_disks`] decides which VDIs carry chunks, exactly as xapi's importer does.

pub mod records;
pub mod value;

use std::collections::{HashMap, HashSet};
use std::fmt;

pub use records::{
    DomainType, LockingMode, Network, OnCrash, OnNormalExit, PowerState, StringMap, VbdMode,
    VbdType, VdiType, Version,
};
use records::{Record, Sr, Vbd, Vdi, Vif, Vm};
use value::{Struct, Value};

use crate::error::{Error, excerpt};

/// The id of an object inside one export (`Ref:002`), or `OpaqueRef:NULL`.
///
/// A VDI's id is also the directory name of its chunks. xapi numbers ids from a process-wide
/// counter; we write `Ref:000`, `Ref:001`, … so that numeric and lexicographic order agree.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ExportId(String);

impl ExportId {
    /// The null reference.
    pub const NULL: &'static str = "OpaqueRef:NULL";

    /// Wraps an id string.
    pub fn new(id: impl Into<String>) -> Self {
        Self(id.into())
    }

    /// `OpaqueRef:NULL`.
    pub fn null() -> Self {
        Self(Self::NULL.to_owned())
    }

    /// `Ref:NNN`, zero-padded to three digits as XO writes them.
    pub fn numbered(number: usize) -> Self {
        Self(format!("Ref:{number:03}"))
    }

    /// True for `OpaqueRef:NULL`.
    pub fn is_null(&self) -> bool {
        self.0 == Self::NULL
    }

    /// The id string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ExportId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The class of an `ova.xml` object (xapi compares class names exactly).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Class {
    /// The `version` record (not an object class; used to label errors).
    Version,
    /// `VM`.
    Vm,
    /// `VDI`.
    Vdi,
    /// `VBD`.
    Vbd,
    /// `VIF`.
    Vif,
    /// `SR`.
    Sr,
    /// `network`.
    Network,
    /// Any other class (`host`, `VM_metrics`, `VGPU`, `VTPM`, …), kept as found.
    Other(String),
}

impl Class {
    /// The class name as written in `ova.xml`.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Version => "version",
            Self::Vm => "VM",
            Self::Vdi => "VDI",
            Self::Vbd => "VBD",
            Self::Vif => "VIF",
            Self::Sr => "SR",
            Self::Network => "network",
            Self::Other(name) => name,
        }
    }

    /// Maps a class name to the class.
    pub fn from_name(name: &str) -> Self {
        match name {
            "VM" => Self::Vm,
            "VDI" => Self::Vdi,
            "VBD" => Self::Vbd,
            "VIF" => Self::Vif,
            "SR" => Self::Sr,
            "network" => Self::Network,
            other => Self::Other(other.to_owned()),
        }
    }
}

impl fmt::Display for Class {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One object of `ova.xml`: its class, its export id and its record (`snapshot`).
#[derive(Debug, Clone, PartialEq)]
pub struct Object {
    /// The class.
    pub class: Class,
    /// The export id other records refer to.
    pub id: ExportId,
    /// The record, as found (decode it with [`Object::record`]).
    pub snapshot: Struct,
    /// Members of the object struct other than `class`, `id` and `snapshot`.
    pub extra: Struct,
}

impl Object {
    /// An object holding `record`.
    pub fn new<R: Record>(id: ExportId, record: &R) -> Self {
        Self {
            class: R::CLASS,
            id,
            snapshot: record.to_struct(),
            extra: Struct::new(),
        }
    }

    /// Decodes the snapshot as an `R` with xapi's typing rules.
    pub fn record<R: Record>(&self) -> Result<R, Error> {
        let label = format!("{} {}", self.class, excerpt(self.id.as_str()));
        if self.class != R::CLASS {
            return Err(Error::FieldValue {
                record: label,
                field: "class".to_owned(),
                value: format!("{} (expected {})", self.class, R::CLASS),
            });
        }
        R::decode(&label, &self.snapshot)
    }

    fn label(&self) -> String {
        format!("{} {}", self.class, excerpt(self.id.as_str()))
    }

    fn from_value(value: &Value, position: usize) -> Result<Self, Error> {
        let label = format!("object #{position}");
        let members = value.as_struct().ok_or_else(|| Error::FieldType {
            record: "ova.xml".to_owned(),
            field: format!("objects[{position}]"),
            expected: "a struct",
            found: value.type_name(),
        })?;
        let string = |name: &str| -> Result<String, Error> {
            match members.get(name) {
                Some(Value::String(text)) => Ok(text.clone()),
                Some(other) => Err(Error::FieldType {
                    record: label.clone(),
                    field: name.to_owned(),
                    expected: "a string",
                    found: other.type_name(),
                }),
                None => Err(Error::MissingField {
                    record: label.clone(),
                    field: name.to_owned(),
                }),
            }
        };
        let class = Class::from_name(&string("class")?);
        let id = ExportId::new(string("id")?);
        let snapshot = match members.get("snapshot") {
            Some(Value::Struct(snapshot)) => snapshot.clone(),
            Some(other) => {
                return Err(Error::FieldType {
                    record: label,
                    field: "snapshot".to_owned(),
                    expected: "a struct",
                    found: other.type_name(),
                });
            }
            None => {
                return Err(Error::MissingField {
                    record: label,
                    field: "snapshot".into(),
                });
            }
        };
        let extra = members
            .iter()
            .filter(|(name, _)| !matches!(*name, "class" | "id" | "snapshot"))
            .map(|(name, value)| (name.to_owned(), value.clone()))
            .collect();
        Ok(Self {
            class,
            id,
            snapshot,
            extra,
        })
    }

    fn to_value(&self) -> Value {
        let mut members = Struct::new();
        members.push("class", self.class.as_str());
        members.push("id", self.id.as_str());
        members.push("snapshot", self.snapshot.clone());
        members.extend(self.extra.clone());
        Value::Struct(members)
    }
}

/// Objects of one file by id.
struct Index<'a>(HashMap<&'a str, &'a Object>);

impl<'a> Index<'a> {
    /// The object `target` names, which must be of class `class`.
    fn deref(
        &self,
        record: &str,
        field: &str,
        target: &ExportId,
        class: &Class,
    ) -> Result<&'a Object, Error> {
        self.0
            .get(target.as_str())
            .copied()
            .filter(|object| object.class == *class)
            .ok_or_else(|| Error::DanglingRef {
                record: record.to_owned(),
                field: field.to_owned(),
                target: excerpt(target.as_str()),
            })
    }
}

/// A disk that carries chunks in the archive, in streaming order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskInfo {
    /// The VDI's export id: the chunk directory name.
    pub id: ExportId,
    /// The VDI's `virtual_size`: its chunks add up to exactly this.
    pub virtual_size: u64,
}

/// The whole `ova.xml`: the version record and the objects.
#[derive(Debug, Clone, PartialEq)]
pub struct OvaXml {
    /// The `version` record.
    pub version: Version,
    /// The objects, in file order (xapi processes them by class, so order is free).
    pub objects: Vec<Object>,
    /// Top-level members other than `version` and `objects`.
    pub extra: Struct,
}

impl OvaXml {
    /// An export with no objects yet.
    pub fn new(version: Version) -> Self {
        Self {
            version,
            objects: Vec::new(),
            extra: Struct::new(),
        }
    }

    /// Parses `ova.xml`. Objects are kept as found; only the version record and the object
    /// envelopes (`class`, `id`, `snapshot`) are checked here.
    pub fn parse(xml: &[u8]) -> Result<Self, Error> {
        let root = Value::parse(xml)?;
        let Value::Struct(members) = root else {
            return Err(Error::FieldType {
                record: "ova.xml".to_owned(),
                field: "<top level>".to_owned(),
                expected: "a struct",
                found: root.type_name(),
            });
        };
        let version = match members.get("version") {
            Some(Value::Struct(version)) => Version::decode("version", version)?,
            Some(other) => {
                return Err(Error::FieldType {
                    record: "ova.xml".to_owned(),
                    field: "version".to_owned(),
                    expected: "a struct",
                    found: other.type_name(),
                });
            }
            None => {
                return Err(Error::MissingField {
                    record: "ova.xml".to_owned(),
                    field: "version".to_owned(),
                });
            }
        };
        let objects = match members.get("objects") {
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(position, item)| Object::from_value(item, position))
                .collect::<Result<Vec<_>, _>>()?,
            Some(other) => {
                return Err(Error::FieldType {
                    record: "ova.xml".to_owned(),
                    field: "objects".to_owned(),
                    expected: "an array",
                    found: other.type_name(),
                });
            }
            None => {
                return Err(Error::MissingField {
                    record: "ova.xml".to_owned(),
                    field: "objects".to_owned(),
                });
            }
        };
        let extra = members
            .into_iter()
            .filter(|(name, _)| name != "version" && name != "objects")
            .collect();
        Ok(Self {
            version,
            objects,
            extra,
        })
    }

    /// Serialises `ova.xml` as xapi writes it (one line, no XML declaration).
    pub fn to_xml(&self) -> String {
        let mut members = Struct::new();
        members.push("version", self.version.to_struct());
        members.push(
            "objects",
            Value::Array(self.objects.iter().map(Object::to_value).collect()),
        );
        members.extend(self.extra.clone());
        Value::Struct(members).to_xml()
    }

    /// The object with export id `id`.
    pub fn find(&self, id: &ExportId) -> Option<&Object> {
        self.objects.iter().find(|object| object.id == *id)
    }

    fn find_mut(&mut self, id: &ExportId) -> Option<&mut Object> {
        self.objects.iter_mut().find(|object| object.id == *id)
    }

    /// Adds `record` under a fresh `Ref:NNN` id and returns the id.
    pub fn add<R: Record>(&mut self, record: &R) -> ExportId {
        let mut number = self.objects.len();
        let id = loop {
            let candidate = ExportId::numbered(number);
            if self.find(&candidate).is_none() {
                break candidate;
            }
            number = number.saturating_add(1);
        };
        self.objects.push(Object::new(id.clone(), record));
        id
    }

    /// Adds a VDI and the VBD that plugs it into `vm` at `userdevice`, and lists them in the
    /// VM's `VBDs` and the SR's `VDIs`. Returns the VDI's id (its chunk directory).
    pub fn attach_disk(
        &mut self,
        vm: &ExportId,
        vdi: &Vdi,
        userdevice: u32,
        bootable: bool,
    ) -> Result<ExportId, Error> {
        self.require_class(vm, &Class::Vm, "VM")?;
        self.require_class(&vdi.sr, &Class::Sr, "SR")?;
        let vdi_id = self.add(vdi);
        let vbd_id = self.add(&Vbd::new(vm.clone(), vdi_id.clone(), userdevice, bootable));
        self.append_ref(vm, "VBDs", &vbd_id);
        self.append_ref(&vdi.sr, "VDIs", &vdi_id);
        Ok(vdi_id)
    }

    /// Adds a VIF of `vm` on `network` and lists it in the VM's `VIFs`.
    pub fn attach_vif(
        &mut self,
        vm: &ExportId,
        network: &ExportId,
        device: u32,
        mac: &str,
    ) -> Result<ExportId, Error> {
        self.require_class(vm, &Class::Vm, "VM")?;
        self.require_class(network, &Class::Network, "network")?;
        let vif_id = self.add(&Vif::new(vm.clone(), network.clone(), device, mac));
        self.append_ref(vm, "VIFs", &vif_id);
        Ok(vif_id)
    }

    fn require_class(&self, id: &ExportId, class: &Class, field: &str) -> Result<(), Error> {
        match self.find(id) {
            Some(object) if object.class == *class => Ok(()),
            _ => Err(Error::DanglingRef {
                record: "ova.xml".to_owned(),
                field: field.to_owned(),
                target: excerpt(id.as_str()),
            }),
        }
    }

    fn append_ref(&mut self, owner: &ExportId, field: &str, target: &ExportId) {
        if let Some(object) = self.find_mut(owner) {
            let mut items = match object.snapshot.get(field) {
                Some(Value::Array(items)) => items.clone(),
                _ => Vec::new(),
            };
            items.push(Value::String(target.as_str().to_owned()));
            object.snapshot.insert(field, Value::Array(items));
        }
    }

    /// The VDIs that carry chunks, sorted by id string (xapi's `Stream_vdi.vdi_ordering`), as
    /// xapi's importer picks them (`import.ml non_cdrom_vdis`): VDIs plugged by a VBD whose type
    /// is not `CD` and whose SR's `content_type` is not `iso`, plus VDIs of type `suspend`.
    ///
    /// Only the fields this needs are decoded, so archives with otherwise incomplete records
    /// (XO writes a bare SR record) can still be read; [`OvaXml::check_importable`] checks the rest.
    pub fn streamed_disks(&self) -> Result<Vec<DiskInfo>, Error> {
        self.streamed_disks_with(&self.index()?)
    }

    /// Objects by id (an error for duplicate or null ids), so that lookups stay cheap on
    /// files with many objects.
    fn index(&self) -> Result<Index<'_>, Error> {
        let mut by_id = HashMap::with_capacity(self.objects.len());
        for object in &self.objects {
            if object.id.is_null() || by_id.insert(object.id.as_str(), object).is_some() {
                return Err(Error::DuplicateId {
                    id: excerpt(object.id.as_str()),
                });
            }
        }
        Ok(Index(by_id))
    }

    fn streamed_disks_with(&self, index: &Index<'_>) -> Result<Vec<DiskInfo>, Error> {
        let mut plugged = HashSet::new();
        for vbd in self
            .objects
            .iter()
            .filter(|object| object.class == Class::Vbd)
        {
            let label = vbd.label();
            let mut fields = records::FieldReader::new(&label, &vbd.snapshot);
            let vbd_type: Option<VbdType> = fields.optional("type")?;
            if vbd_type == Some(VbdType::Cd) {
                continue;
            }
            let vdi_id: ExportId = fields.required("VDI")?;
            if vdi_id.is_null() {
                continue;
            }
            let vdi = index.deref(&label, "VDI", &vdi_id, &Class::Vdi)?;
            let vdi_label = vdi.label();
            let sr_id: ExportId =
                records::FieldReader::new(&vdi_label, &vdi.snapshot).required("SR")?;
            let sr = index.deref(&vdi_label, "SR", &sr_id, &Class::Sr)?;
            let sr_label = sr.label();
            let content_type: Option<String> =
                records::FieldReader::new(&sr_label, &sr.snapshot).optional("content_type")?;
            if content_type.as_deref() != Some("iso") {
                plugged.insert(vdi_id);
            }
        }
        let mut disks = Vec::new();
        for vdi in self
            .objects
            .iter()
            .filter(|object| object.class == Class::Vdi)
        {
            let label = vdi.label();
            let mut fields = records::FieldReader::new(&label, &vdi.snapshot);
            let vdi_type: Option<VdiType> = fields.optional("type")?;
            if plugged.contains(&vdi.id) || vdi_type == Some(VdiType::Suspend) {
                let virtual_size: u64 = fields.required("virtual_size")?;
                disks.push(DiskInfo {
                    id: vdi.id.clone(),
                    virtual_size,
                });
            }
        }
        disks.sort_by(|left, right| left.id.as_str().cmp(right.id.as_str()));
        Ok(disks)
    }

    /// Checks what xapi's importer would check: every VM, VDI, VBD, VIF, SR and network record
    /// decodes with all required fields and strict typing, references between them resolve,
    /// and the version record says `export_vsn` 2 or less.
    pub fn check_importable(&self) -> Result<(), Error> {
        if !(0..=2).contains(&self.version.export_vsn) {
            return Err(Error::FieldValue {
                record: "version".to_owned(),
                field: "export_vsn".to_owned(),
                value: self.version.export_vsn.to_string(),
            });
        }
        let index = self.index()?;
        self.streamed_disks_with(&index)?;
        for object in &self.objects {
            let label = object.label();
            match object.class {
                Class::Vm => {
                    let vm: Vm = object.record()?;
                    for vbd in &vm.vbds {
                        index.deref(&label, "VBDs", vbd, &Class::Vbd)?;
                    }
                    for vif in &vm.vifs {
                        index.deref(&label, "VIFs", vif, &Class::Vif)?;
                    }
                }
                Class::Vdi => {
                    let vdi: Vdi = object.record()?;
                    index.deref(&label, "SR", &vdi.sr, &Class::Sr)?;
                }
                Class::Vbd => {
                    let vbd: Vbd = object.record()?;
                    index.deref(&label, "VM", &vbd.vm, &Class::Vm)?;
                    if !vbd.vdi.is_null() {
                        index.deref(&label, "VDI", &vbd.vdi, &Class::Vdi)?;
                    }
                }
                Class::Vif => {
                    let vif: Vif = object.record()?;
                    index.deref(&label, "VM", &vif.vm, &Class::Vm)?;
                    index.deref(&label, "network", &vif.network, &Class::Network)?;
                }
                Class::Sr => {
                    object.record::<Sr>()?;
                }
                Class::Network => {
                    object.record::<Network>()?;
                }
                Class::Version | Class::Other(_) => {}
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> (OvaXml, ExportId, ExportId) {
        let mut ova = OvaXml::new(Version::new("host", "2024-01-01"));
        let vm = ova.add(&Vm::new("vm", 256 << 20, 1));
        let sr = ova.add(&Sr::new("sr"));
        let network = ova.add(&Network::new("net", "xenbr0"));
        let disk = ova
            .attach_disk(&vm, &Vdi::new("d0", sr.clone(), 5 << 20), 0, true)
            .unwrap();
        ova.attach_vif(&vm, &network, 0, "").unwrap();
        (ova, vm, disk)
    }

    #[test]
    fn built_exports_are_importable_and_round_trip() {
        let (ova, vm, disk) = sample();
        ova.check_importable().unwrap();
        let parsed = OvaXml::parse(ova.to_xml().as_bytes()).unwrap();
        // Ints are written untyped, as xapi does, so they read back as untyped values: the
        // serialisation and the typed records are what round-trip.
        assert_eq!(parsed.to_xml(), ova.to_xml());
        assert_eq!(parsed.version, ova.version);
        let vm_record: Vm = parsed.find(&vm).unwrap().record().unwrap();
        assert_eq!(vm_record, ova.find(&vm).unwrap().record::<Vm>().unwrap());
        assert_eq!(vm_record.vbds.len(), 1);
        assert_eq!(
            parsed.streamed_disks().unwrap(),
            vec![DiskInfo {
                id: disk,
                virtual_size: 5 << 20
            }]
        );
    }

    #[test]
    fn cd_and_iso_disks_are_not_streamed_and_order_is_lexicographic() {
        let mut ova = OvaXml::new(Version::new("host", "date"));
        let vm = ova.add(&Vm::new("vm", 1 << 30, 2));
        let sr = ova.add(&Sr::new("sr"));
        let mut iso = Sr::new("iso");
        iso.content_type = "iso".to_owned();
        let iso = ova.add(&iso);
        for number in [9, 10] {
            let vdi = Vdi::new("d", sr.clone(), 1 << 20);
            let id = ExportId::new(format!("Ref:{number}"));
            ova.objects.push(Object::new(id.clone(), &vdi));
            let vbd = Vbd::new(vm.clone(), id, number, false);
            ova.add(&vbd);
        }
        let cd_vdi = ova.add(&Vdi::new("cd", sr.clone(), 1 << 20));
        let mut cd = Vbd::new(vm.clone(), cd_vdi, 3, false);
        cd.vbd_type = VbdType::Cd;
        ova.add(&cd);
        let iso_vdi = ova.add(&Vdi::new("iso", iso, 1 << 20));
        ova.add(&Vbd::new(vm, iso_vdi, 4, false));
        let mut suspend = Vdi::new("suspend", sr, 7);
        suspend.vdi_type = VdiType::Suspend;
        let suspend = ova.add(&suspend);

        let ids: Vec<String> = ova
            .streamed_disks()
            .unwrap()
            .into_iter()
            .map(|disk| disk.id.to_string())
            .collect();
        // `Ref:10` sorts before `Ref:9`, as in xapi.
        assert_eq!(
            ids,
            vec![suspend.to_string(), "Ref:10".to_owned(), "Ref:9".to_owned()]
        );
    }

    #[test]
    fn dangling_and_duplicate_ids_are_errors() {
        let (mut ova, _, disk) = sample();
        let mut dangling = ova.clone();
        dangling.objects.retain(|object| object.id != disk);
        assert!(matches!(
            dangling.streamed_disks(),
            Err(Error::DanglingRef { .. })
        ));
        let copy = ova.objects[0].clone();
        ova.objects.push(copy);
        assert!(matches!(
            ova.streamed_disks(),
            Err(Error::DuplicateId { .. })
        ));
    }
}
