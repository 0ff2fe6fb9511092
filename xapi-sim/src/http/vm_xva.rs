//! `GET /export` and `PUT /import` of XVA archives (xen-api `ocaml/xapi/export.ml`, `import.ml`;
//! spec §4.4, §4.5), written and read with the `xva` crate.
//!
//! Export: credentials (401) → the VM (`ref` from the URL query, else `uuid`; unknown: 500) →
//! every SR of its disks visible from this host (else 302) → task → the `export` lifecycle
//! check (failure: task failed, 500) → `HTTP/1.0 200` (`task-id`, `Content-Disposition:
//! attachment; filename="export.xva"`), `export` recorded in the VM's `current_operations`
//! while streaming → `ova.xml` (the VM, its disk VBDs, VDIs, SRs, VIFs and networks) and each
//! disk's allocated data as 1 MiB chunks with XXH64 companions; `use_compression=true|gzip` or
//! `zstd` compresses the whole stream. Snapshots are not included. Result `""`.
//!
//! Import: credentials → the SR (`sr_id`/`sr_uuid`, else `pool.default_SR`; invalid:
//! `DEFAULT_SR_NOT_FOUND`, 500; an ISO SR: 400 + `SR_OPERATION_NOT_SUPPORTED []`) → visible
//! from this host (else 302) → task → `Transfer-Encoding`: 403 → `200` → the archive is read
//! (gzip/zstd detected, every checksum verified) and becomes a halted VM with new VDIs in the
//! SR, its VBDs and VIFs (networks matched by bridge, then name, else created); `restore=true`
//! keeps uuids and MACs. The task's result is the set of created VMs; a bad archive fails it
//! with `IMPORT_ERROR [message]` and removes what was created.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::StreamExt as _;
use http::header::{CONTENT_DISPOSITION, CONTENT_TYPE, SERVER, TRANSFER_ENCODING};
use http::{Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use xenapi::Value;
use xenapi::codec::{Failure, xmlrpc};
use xva::model::records::{Network as XvaNetwork, Sr as XvaSr, Vbd as XvaVbd, Vdi as XvaVdi};
use xva::model::records::{Vif as XvaVif, Vm as XvaVm};
use xva::model::{Class, ExportId, OvaXml};

use super::raw_export::{StopReason, conclude};
use tracing::Instrument as _;

use super::transfer::{
    self, BodySender, Progress, Reach, SendStop, Transfer, fail_task, head_only, next_data,
    streaming_ok, transfer_span, transfer_task,
};
use crate::db::{self, ClassId, Db, objects, vdi as vdi_ops, vm as vm_ops};
use crate::server::{HostContext, ResponseBody, html_error};
use crate::sim::Sim;
use crate::storage::{BLOCK_SIZE, DiskId, VhdBlockIndex};

/// The export handler's path.
pub(crate) const EXPORT_PATH: &str = "/export";
/// The import handler's path.
pub(crate) const IMPORT_PATH: &str = "/import";
/// What xapi sends as `Server:`.
const SERVER_NAME: &str = "xapi/25.6";

/// The non-CD disks of a VM: `(vbd, vdi)`.
fn vm_disks(db: &Db, vm: &str) -> Vec<(String, String)> {
    db.strings(ClassId::Vm, vm, "VBDs")
        .into_iter()
        .filter(|vbd| {
            db.str(ClassId::Vbd, vbd, "type") != "CD" && !db.bool(ClassId::Vbd, vbd, "empty")
        })
        .filter_map(|vbd| {
            let vdi = db.str(ClassId::Vbd, &vbd, "VDI");
            db.exists(ClassId::Vdi, &vdi).then_some((vbd, vdi))
        })
        .collect()
}

/// The export handler.
pub(crate) async fn export(
    request: Request<Incoming>,
    context: HostContext,
) -> Response<ResponseBody> {
    let (params, session) =
        match transfer::admit(&request, &context, EXPORT_PATH, "get_export").await {
            Ok(admitted) => admitted,
            Err(response) => return response,
        };
    let vm = context.sim.read(|db| match params.query("ref") {
        Some(vm) => db.check(ClassId::Vm, vm).map(|()| vm.to_owned()),
        None => db.by_uuid(ClassId::Vm, params.value("uuid").unwrap_or_default()),
    });
    let Ok(vm) = vm else {
        return html_error(StatusCode::INTERNAL_SERVER_ERROR);
    };
    let srs: Vec<String> = context.sim.read(|db| {
        let mut srs: Vec<String> = vm_disks(db, &vm)
            .iter()
            .map(|(_, vdi)| db.str(ClassId::Vdi, vdi, "SR"))
            .collect();
        srs.sort();
        srs.dedup();
        srs
    });
    match transfer::reach(&context, &srs, EXPORT_PATH, &params) {
        Reach::Here => {}
        Reach::Redirect(response) => return response,
        Reach::Nowhere => {
            let task = transfer_task(&context, &params, "VM.export");
            fail_task(
                &context.sim,
                &task,
                Failure::new("NO_HOSTS_AVAILABLE", Vec::<String>::new()),
            );
            return html_error(StatusCode::INTERNAL_SERVER_ERROR);
        }
    }
    let task = transfer_task(&context, &params, "VM.export");
    let locked = context.sim.write(|db| {
        vm_ops::check_operation(db, &vm, "export")?;
        db.map_put(
            ClassId::Vm,
            &vm,
            "current_operations",
            task.as_str(),
            Value::from("export"),
        )
    });
    if let Err(failure) = locked {
        fail_task(&context.sim, &task, failure);
        return html_error(StatusCode::INTERNAL_SERVER_ERROR);
    }
    let compression = match params.query("use_compression") {
        Some("true" | "gzip") => xva::Compression::GZIP,
        Some("zstd") => xva::Compression::ZSTD,
        _ => xva::Compression::None,
    };
    let (sender, body) = transfer::channel_body(context.sim.faults().on_http_transfer(EXPORT_PATH));
    let transfer = Transfer::new(Arc::clone(&context.sim), task.clone(), session);
    tokio::spawn(
        run_export(transfer, sender, vm, compression).instrument(transfer_span(EXPORT_PATH, &task)),
    );
    let mut response = streaming_ok(
        &task,
        &[
            (SERVER, SERVER_NAME),
            (CONTENT_TYPE, "application/octet-stream"),
            (CONTENT_DISPOSITION, "attachment; filename=\"export.xva\""),
        ],
        body,
    );
    *response.version_mut() = Version::HTTP_10;
    response
}

async fn run_export(
    transfer: Transfer,
    mut sender: BodySender,
    vm: String,
    compression: xva::Compression,
) {
    let sim = Arc::clone(&transfer.sim);
    let outcome = write_archive(&sim, &transfer, &mut sender, &vm, compression).await;
    let task = transfer.task.as_str().to_owned();
    sim.write(|db| {
        let _removed = db.map_remove(ClassId::Vm, &vm, "current_operations", &task);
    });
    conclude(transfer, &mut sender, outcome, String::new()).await;
}

/// A disk of an export: its id in `ova.xml`, its data, its size.
type StreamedDisk = (ExportId, DiskId, u64);

/// `ova.xml` for `vm` and the disks it streams, by export id.
fn describe_vm(db: &Db, vm: &str) -> Result<(OvaXml, Vec<StreamedDisk>), Failure> {
    let hostname = db.str(ClassId::Host, &db.master(), "hostname");
    let mut ova = OvaXml::new(xva::model::Version::new(hostname, "simulated"));
    let text = |field: &str| db.str(ClassId::Vm, vm, field);
    let map = |class: ClassId, reference: &str, field: &str| -> BTreeMap<String, String> {
        db.map(class, reference, field).into_iter().collect()
    };
    let mut record = XvaVm::new(
        text("name_label"),
        db.int(ClassId::Vm, vm, "memory_static_max"),
        db.int(ClassId::Vm, vm, "VCPUs_max"),
    );
    record.uuid = text("uuid");
    record.name_description = text("name_description");
    record.memory_dynamic_max = db.int(ClassId::Vm, vm, "memory_dynamic_max");
    record.memory_dynamic_min = db.int(ClassId::Vm, vm, "memory_dynamic_min");
    record.memory_static_min = db.int(ClassId::Vm, vm, "memory_static_min");
    record.vcpus_at_startup = db.int(ClassId::Vm, vm, "VCPUs_at_startup");
    record.is_a_template = db.bool(ClassId::Vm, vm, "is_a_template");
    record.other_config = map(ClassId::Vm, vm, "other_config");
    record.platform = map(ClassId::Vm, vm, "platform");
    record.hvm_boot_params = map(ClassId::Vm, vm, "HVM_boot_params");
    record.hvm_boot_policy = text("HVM_boot_policy");
    let vm_id = ova.add(&record);
    let mut srs: BTreeMap<String, ExportId> = BTreeMap::new();
    let mut disks = Vec::new();
    for (vbd, vdi) in vm_disks(db, vm) {
        let sr = db.str(ClassId::Vdi, &vdi, "SR");
        let sr_id = match srs.get(&sr) {
            Some(id) => id.clone(),
            None => {
                let mut sr_record = XvaSr::new(db.str(ClassId::Sr, &sr, "name_label"));
                sr_record.uuid = db.str(ClassId::Sr, &sr, "uuid");
                sr_record.sr_type = db.str(ClassId::Sr, &sr, "type");
                sr_record.content_type = db.str(ClassId::Sr, &sr, "content_type");
                sr_record.shared = db.bool(ClassId::Sr, &sr, "shared");
                let id = ova.add(&sr_record);
                srs.insert(sr.clone(), id.clone());
                id
            }
        };
        let disk = db.disk_of(&vdi)?;
        let size = db
            .storage()
            .virtual_size(disk)
            .map_err(|error| transfer::internal_error(error.to_string()))?
            .get();
        let mut vdi_record = XvaVdi::new(db.str(ClassId::Vdi, &vdi, "name_label"), sr_id, size);
        vdi_record.uuid = db.str(ClassId::Vdi, &vdi, "uuid");
        vdi_record.name_description = db.str(ClassId::Vdi, &vdi, "name_description");
        vdi_record.other_config = map(ClassId::Vdi, &vdi, "other_config");
        let userdevice = db
            .str(ClassId::Vbd, &vbd, "userdevice")
            .parse()
            .unwrap_or(0);
        let id = ova
            .attach_disk(
                &vm_id,
                &vdi_record,
                userdevice,
                db.bool(ClassId::Vbd, &vbd, "bootable"),
            )
            .map_err(|error| transfer::internal_error(error.to_string()))?;
        disks.push((id, disk, size));
    }
    let mut networks: BTreeMap<String, ExportId> = BTreeMap::new();
    for vif in db.strings(ClassId::Vm, vm, "VIFs") {
        let network = db.str(ClassId::Vif, &vif, "network");
        let network_id = match networks.get(&network) {
            Some(id) => id.clone(),
            None => {
                let mut network_record = XvaNetwork::new(
                    db.str(ClassId::Network, &network, "name_label"),
                    db.str(ClassId::Network, &network, "bridge"),
                );
                network_record.uuid = db.str(ClassId::Network, &network, "uuid");
                let id = ova.add(&network_record);
                networks.insert(network.clone(), id.clone());
                id
            }
        };
        let device = db.str(ClassId::Vif, &vif, "device").parse().unwrap_or(0);
        ova.attach_vif(
            &vm_id,
            &network_id,
            device,
            &db.str(ClassId::Vif, &vif, "MAC"),
        )
        .map_err(|error| transfer::internal_error(error.to_string()))?;
    }
    Ok((ova, disks))
}

async fn write_archive(
    sim: &Arc<Sim>,
    transfer: &Transfer,
    sender: &mut BodySender,
    vm: &str,
    compression: xva::Compression,
) -> Result<(), StopReason> {
    let (ova, disks) = sim
        .read(|db| describe_vm(db, vm))
        .map_err(StopReason::Failed)?;
    let mut total = 0u64;
    let mut sources = Vec::new();
    for (id, disk, size) in disks {
        let blocks = sim
            .storage()
            .allocated_blocks(disk)
            .map_err(|_| StopReason::Failed(transfer::vdi_io_error()))?;
        total = total.saturating_add(u64::try_from(blocks.len()).unwrap_or(u64::MAX));
        let storage = sim.storage().clone();
        let extents = futures::stream::iter(blocks).map(move |block: VhdBlockIndex| {
            storage.read_block(disk, block).map(|data| {
                let offset = u64::from(block.get()).saturating_mul(BLOCK_SIZE);
                // The last block of a disk is cut to the disk's size.
                let keep =
                    usize::try_from(size.saturating_sub(offset).min(BLOCK_SIZE)).unwrap_or(0);
                xva::Extent {
                    offset: xva::ByteOffset::new(offset),
                    data: data.slice(..keep.min(data.len())),
                }
            })
        });
        sources.push(xva::DiskSource::new(id, size, extents));
    }
    let options = xva::WriteOptions {
        compression,
        mtime: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_secs()),
        ..xva::WriteOptions::default()
    };
    let frames = xva::archive_stream(&ova, sources, options)
        .map_err(|error| StopReason::Failed(transfer::internal_error(error.to_string())))?;
    let mut frames = std::pin::pin!(frames);
    let mut progress = Progress::new(total.saturating_mul(BLOCK_SIZE));
    while let Some(frame) = frames.next().await {
        let frame = frame.map_err(|error| {
            tracing::warn!(%error, "XVA export failed");
            StopReason::Failed(transfer::vdi_io_error())
        })?;
        if transfer.cancel_requested() {
            return Err(StopReason::Cancelled);
        }
        let length = u64::try_from(frame.len()).unwrap_or(u64::MAX);
        sender.send(frame).await.map_err(|stop| match stop {
            SendStop::Cut => StopReason::Cut,
            SendStop::Disconnected => StopReason::Disconnected,
        })?;
        if let Some(fraction) = progress.advance(length) {
            transfer.progress(fraction);
        }
    }
    Ok(())
}

/// The import handler.
pub(crate) async fn import(
    request: Request<Incoming>,
    context: HostContext,
) -> Response<ResponseBody> {
    let (params, session) =
        match transfer::admit(&request, &context, IMPORT_PATH, "put_import").await {
            Ok(admitted) => admitted,
            Err(response) => return response,
        };
    let sr = context.sim.read(|db| {
        if let Some(sr) = params.value("sr_id") {
            return db.check(ClassId::Sr, sr).map(|()| sr.to_owned());
        }
        if let Some(uuid) = params.value("sr_uuid") {
            return db.by_uuid(ClassId::Sr, uuid);
        }
        let default = db.str(ClassId::Pool, &db.pool_ref(), "default_SR");
        db.check(ClassId::Sr, &default)
            .map(|()| default.clone())
            .map_err(|_| Failure::new("DEFAULT_SR_NOT_FOUND", [default.as_str()]))
    });
    let Ok(sr) = sr else {
        return html_error(StatusCode::INTERNAL_SERVER_ERROR);
    };
    // When no host sees the SR the import proceeds here (xapi's `find_host_for_sr` would raise).
    if let Reach::Redirect(response) =
        transfer::reach(&context, std::slice::from_ref(&sr), IMPORT_PATH, &params)
    {
        return response;
    }
    let task = transfer_task(&context, &params, "VM.import");
    let iso = context.sim.read(|db| {
        db.str(ClassId::Sr, &sr, "content_type") == "iso"
            || db.str(ClassId::Sr, &sr, "type") == "iso"
    });
    if iso {
        fail_task(
            &context.sim,
            &task,
            Failure::new("SR_OPERATION_NOT_SUPPORTED", Vec::<String>::new()),
        );
        return head_only(StatusCode::BAD_REQUEST, Version::HTTP_11);
    }
    if request.headers().contains_key(TRANSFER_ENCODING) {
        fail_task(
            &context.sim,
            &task,
            transfer::internal_error("import code cannot handle encoding: chunked"),
        );
        return head_only(StatusCode::FORBIDDEN, Version::HTTP_11);
    }
    let (sender, body) = transfer::channel_body(None);
    let transfer = Transfer::new(Arc::clone(&context.sim), task.clone(), session);
    let job = ImportJob {
        sr,
        restore: params.value("restore") == Some("true"),
        cut_after: context.sim.faults().on_http_transfer(IMPORT_PATH),
        length: transfer::content_length(request.headers()),
    };
    tokio::spawn(
        job.run(transfer, sender, request.into_body())
            .instrument(transfer_span(IMPORT_PATH, &task)),
    );
    streaming_ok(&task, &[(CONTENT_TYPE, "application/octet-stream")], body)
}

/// One VM import after its 200 header.
struct ImportJob {
    sr: String,
    restore: bool,
    cut_after: Option<u64>,
    length: Option<u64>,
}

/// Objects created so far, removed if the import fails (`Importexport.cleanup`).
#[derive(Default)]
struct Created {
    vms: Vec<String>,
    vdis: Vec<String>,
    /// The disks in the archive's streaming order (`ArchiveLayout::disks`).
    disks: Vec<Option<DiskId>>,
}

fn import_error(message: impl Into<String>) -> StopReason {
    StopReason::Failed(Failure::new("IMPORT_ERROR", [message.into()]))
}

impl ImportJob {
    async fn run(self, transfer: Transfer, mut sender: BodySender, body: Incoming) {
        let sim = Arc::clone(&transfer.sim);
        let mut created = Created::default();
        let outcome = self.receive(&sim, &transfer, body, &mut created).await;
        if outcome.is_err() {
            sim.write(|db| {
                for vm in &created.vms {
                    let _destroyed = vm_ops::destroy(db, vm);
                }
                for vdi in &created.vdis {
                    let _destroyed = vdi_ops::destroy(db, vdi);
                }
            });
        }
        let result = Value::Array(
            created
                .vms
                .iter()
                .map(|vm| Value::from(vm.as_str()))
                .collect(),
        );
        conclude(
            transfer,
            &mut sender,
            outcome,
            xmlrpc::encode_task_result(&result),
        )
        .await;
    }

    async fn receive(
        &self,
        sim: &Arc<Sim>,
        transfer: &Transfer,
        body: Incoming,
        created: &mut Created,
    ) -> Result<(), StopReason> {
        let cut_after = self.cut_after;
        let input = Box::pin(futures::stream::unfold(
            (body, 0u64),
            move |(mut body, received)| async move {
                let frame = next_data(&mut body).await?;
                let frame = match frame {
                    Ok(frame) => frame,
                    Err(error) => return Some((Err(xva::BoxError::from(error)), (body, received))),
                };
                let length = u64::try_from(frame.len()).unwrap_or(u64::MAX);
                let received = received.saturating_add(length);
                if cut_after.is_some_and(|limit| received > limit) {
                    let cut: xva::BoxError = "transfer cut by a fault rule".into();
                    return Some((Err(cut), (body, received)));
                }
                Some((Ok(frame), (body, received)))
            },
        ));
        let events = xva::read_stream(input, xva::ReaderLimits::default());
        let mut events = std::pin::pin!(events);
        let mut progress = Progress::new(self.length.unwrap_or(1));
        while let Some(event) = events.next().await {
            let event = event.map_err(|error| import_error(error.to_string()))?;
            if transfer.cancel_requested() {
                return Err(StopReason::Cancelled);
            }
            match event {
                xva::Event::Layout(layout) => {
                    sim.write(|db| self.create_objects(db, &layout, created))
                        .map_err(StopReason::Failed)?;
                }
                xva::Event::Block(block) => {
                    let Some(Some(disk)) = created.disks.get(block.disk.get()) else {
                        return Err(import_error("a chunk for an unknown disk"));
                    };
                    let length = u64::try_from(block.data.len()).unwrap_or(u64::MAX);
                    sim.storage()
                        .write(
                            *disk,
                            crate::storage::ByteOffset::new(block.offset.get()),
                            &block.data,
                        )
                        .map_err(|error| import_error(error.to_string()))?;
                    if let Some(fraction) = progress.advance(length) {
                        transfer.progress(fraction);
                    }
                }
                xva::Event::DiskEnd(_) => {}
                xva::Event::End => return Ok(()),
                _ => {}
            }
        }
        Err(import_error("the archive ended early"))
    }

    /// The VM, VDIs, VBDs and VIFs of `ova.xml`.
    fn create_objects(
        &self,
        db: &mut Db,
        layout: &xva::ArchiveLayout,
        created: &mut Created,
    ) -> Result<(), Failure> {
        let ova = &layout.ova;
        let decode = |error: xva::Error| Failure::new("IMPORT_ERROR", [error.to_string()]);
        let mut vms: BTreeMap<String, String> = BTreeMap::new();
        for object in ova
            .objects
            .iter()
            .filter(|object| object.class == Class::Vm)
        {
            let record: XvaVm = object.record().map_err(decode)?;
            if record.is_control_domain {
                continue;
            }
            let map = |entries: &BTreeMap<String, String>| {
                db::string_map(
                    entries
                        .iter()
                        .map(|(key, value)| (key.clone(), value.clone())),
                )
            };
            let mut fields = vec![
                ("name_label", Value::String(record.name_label.clone())),
                (
                    "name_description",
                    Value::String(record.name_description.clone()),
                ),
                ("user_version", Value::Int(record.user_version)),
                ("is_a_template", Value::Bool(record.is_a_template)),
                ("memory_static_max", Value::Int(record.memory_static_max)),
                ("memory_dynamic_max", Value::Int(record.memory_dynamic_max)),
                ("memory_dynamic_min", Value::Int(record.memory_dynamic_min)),
                ("memory_static_min", Value::Int(record.memory_static_min)),
                ("VCPUs_max", Value::Int(record.vcpus_max)),
                ("VCPUs_at_startup", Value::Int(record.vcpus_at_startup)),
                (
                    "HVM_boot_policy",
                    Value::String(record.hvm_boot_policy.clone()),
                ),
                ("HVM_boot_params", map(&record.hvm_boot_params)),
                ("platform", map(&record.platform)),
                ("other_config", map(&record.other_config)),
            ];
            if self.restore {
                fields.push(("uuid", Value::String(record.uuid.clone())));
            }
            let vm = vm_ops::create(db, fields)?;
            created.vms.push(vm.clone());
            vms.insert(object.id.as_str().to_owned(), vm);
        }
        let mut vdis: BTreeMap<String, String> = BTreeMap::new();
        for disk in &layout.disks {
            let Some(object) = ova.find(&disk.id) else {
                created.disks.push(None);
                continue;
            };
            let record: XvaVdi = object.record().map_err(decode)?;
            let mut fields = vec![
                ("name_label", Value::String(record.name_label.clone())),
                (
                    "name_description",
                    Value::String(record.name_description.clone()),
                ),
                ("SR", Value::String(self.sr.clone())),
                (
                    "virtual_size",
                    Value::Int(i64::try_from(disk.virtual_size).unwrap_or(i64::MAX)),
                ),
                ("type", Value::from("user")),
                ("sharable", Value::Bool(record.sharable)),
                ("read_only", Value::Bool(record.read_only)),
                (
                    "other_config",
                    db::string_map(
                        record
                            .other_config
                            .iter()
                            .map(|(k, v)| (k.clone(), v.clone())),
                    ),
                ),
            ];
            if self.restore {
                fields.push(("uuid", Value::String(record.uuid.clone())));
            }
            let vdi = vdi_ops::create(db, fields)?;
            created.vdis.push(vdi.clone());
            let disk_id = db.disk_of(&vdi)?;
            created.disks.push(Some(disk_id));
            vdis.insert(disk.id.as_str().to_owned(), vdi);
        }
        for object in ova
            .objects
            .iter()
            .filter(|object| object.class == Class::Vbd)
        {
            let record: XvaVbd = object.record().map_err(decode)?;
            let (Some(vm), Some(vdi)) =
                (vms.get(record.vm.as_str()), vdis.get(record.vdi.as_str()))
            else {
                continue;
            };
            objects::create_vbd(
                db,
                vec![
                    ("VM", Value::String(vm.clone())),
                    ("VDI", Value::String(vdi.clone())),
                    ("userdevice", Value::String(record.userdevice.clone())),
                    ("bootable", Value::Bool(record.bootable)),
                    ("mode", Value::from(record.mode.as_str())),
                    ("type", Value::from("Disk")),
                    ("empty", Value::Bool(false)),
                    (
                        "other_config",
                        db::string_map(Vec::<(String, String)>::new()),
                    ),
                    ("qos_algorithm_type", Value::from("")),
                    (
                        "qos_algorithm_params",
                        db::string_map(Vec::<(String, String)>::new()),
                    ),
                ],
            )?;
        }
        for object in ova
            .objects
            .iter()
            .filter(|object| object.class == Class::Vif)
        {
            let record: XvaVif = object.record().map_err(decode)?;
            let Some(vm) = vms.get(record.vm.as_str()) else {
                continue;
            };
            let network = match ova.find(&record.network) {
                Some(object) => {
                    let network: XvaNetwork = object.record().map_err(decode)?;
                    match_network(db, &network)?
                }
                None => continue,
            };
            let mac = if self.restore {
                record.mac.clone()
            } else {
                String::new()
            };
            objects::create_vif(
                db,
                vec![
                    ("device", Value::String(record.device.clone())),
                    ("network", Value::String(network)),
                    ("VM", Value::String(vm.clone())),
                    ("MAC", Value::String(mac)),
                    ("MTU", Value::Int(record.mtu)),
                    (
                        "other_config",
                        db::string_map(Vec::<(String, String)>::new()),
                    ),
                    ("locking_mode", Value::from("network_default")),
                ],
            )?;
        }
        Ok(())
    }
}

/// The pool's network for an exported one: same bridge, else same name, else a new network.
fn match_network(db: &mut Db, network: &XvaNetwork) -> Result<String, Failure> {
    let by = |db: &Db, field: &str, value: &str| {
        db.find(ClassId::Network, field, &Value::from(value))
            .into_iter()
            .next()
    };
    if let Some(found) =
        by(db, "bridge", &network.bridge).or_else(|| by(db, "name_label", &network.name_label))
    {
        return Ok(found);
    }
    objects::create(
        db,
        ClassId::Network,
        vec![
            ("name_label", Value::String(network.name_label.clone())),
            ("MTU", Value::Int(network.mtu)),
            (
                "other_config",
                db::string_map(Vec::<(String, String)>::new()),
            ),
        ],
    )
}
