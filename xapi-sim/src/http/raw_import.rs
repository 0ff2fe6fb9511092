//! `PUT /import_raw_vdi` (xen-api `ocaml/xapi/import_raw_vdi.ml`, spec §4.3).
//!
//! Check order, all before any body byte is read: credentials (401) → `vdi` (unknown: 500) → the
//! SR (`vdi`'s, else `sr_id`/`sr_uuid`; neither: 400 with the `task_id` task failed
//! `VDI_MISSING []`; an invalid one: 400 with that error) → SR visible from this host (else 302,
//! task untouched) → task → `format` (unknown: `HTTP/1.0 404` + `INTERNAL_ERROR ["Unknown format
//! x"]`), `chunked` with a non-raw format (404, `"Cannot handle chunked VHD"`), a
//! `Transfer-Encoding` (404, `"Cannot handle encoding: …"`) → the target: `vdi`, or for `raw`
//! with a `Content-Length` and an SR a new "Imported VDI" of that size (`vhd` into an SR: 400,
//! anything else: 400 `"Not enough info supplied to import"`) → `200 OK` (`Connection: close`,
//! `task-id`) → the body is read and written through a read-write dom0 VBD → the task succeeds
//! with `<value>OpaqueRef:…</value>` and the connection closes. Failures while reading fail the
//! task with `VDI_IO_ERROR ["Device I/O errors"]`, as vhd-tool's do.
//!
//! Bodies: `raw` (bytes from offset 0, exactly `Content-Length` of them, or the device size
//! without one), `raw` + `chunked` (xenapi's frames), `vhd` (a dynamic or differencing stream:
//! only sectors whose bitmap bit is set are written; refused on raw-LVM SRs, which are not
//! "prezeroed"), `tar` (`vdi/%08d` chunks).

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http::header::{CONTENT_TYPE, TRANSFER_ENCODING};
use http::{Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use xenapi::codec::{Failure, xmlrpc};
use xenapi::{Host, Ref, Value, Vdi};

use super::params::Params;
use super::raw_export::{Format, StopReason, conclude};
use super::tar_chunks::{TarChunkReader, TarEvent};
use tracing::Instrument as _;

use super::transfer::{
    self, BodySender, Progress, Reach, Transfer, fail_task, head_only, internal_error, next_data,
    streaming_ok, transfer_span, transfer_task,
};
use crate::db::{ClassId, Db, vdi as vdi_ops};
use crate::server::{HostContext, ResponseBody, html_error};
use crate::sim::Sim;
use crate::storage::{BLOCK_SIZE, ByteOffset, DiskId, Storage, VhdBlockIndex};

/// The handler's path.
pub(crate) const PATH: &str = "/import_raw_vdi";
/// xapi's HTTP action name, the realm of its 401.
const REALM: &str = "put_import_raw_vdi";
/// SR types whose VDIs are raw logical volumes unless `sm_config:use_vhd=true`
/// (`Sm_fs_ops.must_write_zeroes_into_new_vdi`): vhd-tool refuses to import a VHD there.
const NOT_PREZEROED_TYPES: &[&str] = &["lvm", "lvmoiscsi", "lvmohba"];

/// A 400 with the `task_id` task (if any) failed with `failure` (`fail_task_in_request`).
fn bad_request(
    context: &HostContext,
    task: Option<&str>,
    failure: Failure,
) -> Response<ResponseBody> {
    if let Some(task) = task {
        fail_task(&context.sim, &Ref::new(task), failure);
    }
    head_only(StatusCode::BAD_REQUEST, Version::HTTP_11)
}

/// The SR named by `sr_id` (not checked) or `sr_uuid`.
fn sr_of_request(db: &Db, params: &Params) -> Option<Result<String, Failure>> {
    if let Some(sr) = params.value("sr_id") {
        return Some(Ok(sr.to_owned()));
    }
    params
        .value("sr_uuid")
        .map(|uuid| db.by_uuid(ClassId::Sr, uuid))
}

/// The handler.
pub(crate) async fn handle(
    request: Request<Incoming>,
    context: HostContext,
) -> Response<ResponseBody> {
    let (params, session) = match transfer::admit(&request, &context, PATH, REALM).await {
        Ok(admitted) => admitted,
        Err(response) => return response,
    };
    let vdi = match params.value("vdi") {
        Some(text) => match context.sim.lookup_vdi(text) {
            Ok(vdi) => Some(vdi),
            Err(_) => return html_error(StatusCode::INTERNAL_SERVER_ERROR),
        },
        None => None,
    };
    let client_task = params.reference("task_id");
    let sr = match &vdi {
        Some(vdi) => Ok(context
            .sim
            .read(|db| db.str(ClassId::Vdi, vdi.as_str(), "SR"))),
        None => match context.sim.read(|db| sr_of_request(db, &params)) {
            Some(sr) => sr,
            None => {
                return bad_request(
                    &context,
                    client_task,
                    Failure::new("VDI_MISSING", Vec::<String>::new()),
                );
            }
        },
    };
    let sr = match sr.and_then(|sr| {
        context
            .sim
            .read(|db| db.check(ClassId::Sr, &sr).map(|()| sr))
    }) {
        Ok(sr) => sr,
        Err(failure) => return bad_request(&context, client_task, failure),
    };
    match transfer::reach(&context, std::slice::from_ref(&sr), PATH, &params) {
        Reach::Here => {}
        Reach::Redirect(response) => return response,
        Reach::Nowhere => {
            return bad_request(
                &context,
                client_task,
                Failure::new("NO_HOSTS_AVAILABLE", Vec::<String>::new()),
            );
        }
    }
    let task = transfer_task(&context, &params, "Importing raw VDI");
    let refuse = |message: String, status: StatusCode| {
        fail_task(&context.sim, &task, internal_error(message));
        head_only(status, Version::HTTP_10)
    };
    let format = match Format::from_param(params.value("format")) {
        Ok(format) => format,
        Err(unknown) => return refuse(format!("Unknown format {unknown}"), StatusCode::NOT_FOUND),
    };
    let chunked = params.flag("chunked");
    if format != Format::Raw && chunked {
        return refuse(
            "Cannot handle chunked VHD".to_owned(),
            StatusCode::NOT_FOUND,
        );
    }
    if let Some(encoding) = request.headers().get(TRANSFER_ENCODING) {
        let encoding = String::from_utf8_lossy(encoding.as_bytes()).into_owned();
        return refuse(
            format!("Cannot handle encoding: {encoding}"),
            StatusCode::NOT_FOUND,
        );
    }
    let length = transfer::content_length(request.headers());
    let vdi = match (vdi, format, length) {
        (Some(vdi), _, _) => vdi,
        (None, Format::Raw, Some(length)) => match create_imported_vdi(&context.sim, &sr, length) {
            Ok(vdi) => vdi,
            Err(failure) => {
                fail_task(&context.sim, &task, failure);
                return html_error(StatusCode::INTERNAL_SERVER_ERROR);
            }
        },
        (None, Format::Vhd, _) => {
            return refuse(
                "Importing a VHD directly into an SR not yet supported".to_owned(),
                StatusCode::BAD_REQUEST,
            );
        }
        (None, _, _) => {
            return refuse(
                "Not enough info supplied to import".to_owned(),
                StatusCode::BAD_REQUEST,
            );
        }
    };
    let (sender, body) = transfer::channel_body(None);
    let transfer = Transfer::new(Arc::clone(&context.sim), task.clone(), session);
    let job = Job {
        host: context.host.clone(),
        vdi,
        sr,
        format,
        chunked,
        length,
        cut_after: context.sim.faults().on_http_transfer(PATH),
    };
    tokio::spawn(
        job.run(transfer, sender, request.into_body())
            .instrument(transfer_span(PATH, &task)),
    );
    streaming_ok(&task, &[(CONTENT_TYPE, "application/octet-stream")], body)
}

/// `VDI.create` of xapi's raw import into an SR: a user VDI "Imported VDI" of `length` bytes.
fn create_imported_vdi(sim: &Arc<Sim>, sr: &str, length: u64) -> Result<Ref<Vdi>, Failure> {
    let size = i64::try_from(length).unwrap_or(i64::MAX);
    sim.write(|db| {
        vdi_ops::create(
            db,
            vec![
                ("name_label", Value::from("Imported VDI")),
                ("name_description", Value::from("")),
                ("SR", Value::from(sr)),
                ("virtual_size", Value::Int(size)),
                ("type", Value::from("user")),
                ("sharable", Value::Bool(false)),
                ("read_only", Value::Bool(false)),
                (
                    "other_config",
                    crate::db::string_map(Vec::<(String, String)>::new()),
                ),
            ],
        )
    })
    .map(Ref::new)
}

/// One import after its 200 header.
struct Job {
    host: Ref<Host>,
    vdi: Ref<Vdi>,
    sr: String,
    format: Format,
    chunked: bool,
    length: Option<u64>,
    cut_after: Option<u64>,
}

impl Job {
    async fn run(self, mut transfer: Transfer, mut sender: BodySender, body: Incoming) {
        let outcome = self.receive(&mut transfer, body).await;
        let result = xmlrpc::encode_task_result(&Value::String(self.vdi.as_str().to_owned()));
        conclude(transfer, &mut sender, outcome, result).await;
    }

    fn sink(&self, sim: &Sim, disk: DiskId, size: u64) -> Result<Box<dyn Sink + Send>, Failure> {
        Ok(match (self.format, self.chunked) {
            (Format::Raw, true) => Box::new(ChunkedSink::new(sim.storage().clone(), disk, size)),
            (Format::Raw, false) => Box::new(RawSink::new(
                sim.storage().clone(),
                disk,
                size,
                self.length.unwrap_or(size),
            )),
            (Format::Vhd, _) => {
                let prezeroed = sim.read(|db| {
                    let sr_type = db.str(ClassId::Sr, &self.sr, "type");
                    !NOT_PREZEROED_TYPES.contains(&sr_type.as_str())
                        || db
                            .map(ClassId::Sr, &self.sr, "sm_config")
                            .iter()
                            .any(|(key, value)| key == "use_vhd" && value == "true")
                });
                if !prezeroed {
                    tracing::debug!("vhd-tool: unimplemented: prezeroed");
                    return Err(transfer::vdi_io_error());
                }
                Box::new(VhdSink::new(sim.storage().clone(), disk, size))
            }
            (Format::Tar, _) => Box::new(TarSink::new(sim.storage().clone(), disk, size)),
        })
    }

    async fn receive(&self, transfer: &mut Transfer, mut body: Incoming) -> Result<(), StopReason> {
        let sim = Arc::clone(&transfer.sim);
        transfer
            .attach(&self.host, &self.vdi, false)
            .map_err(StopReason::Failed)?;
        let disk = sim
            .read(|db| db.disk_of(self.vdi.as_str()))
            .map_err(StopReason::Failed)?;
        let size = sim
            .storage()
            .virtual_size(disk)
            .map_err(|_| StopReason::Failed(transfer::vdi_io_error()))?
            .get();
        let mut sink = self.sink(&sim, disk, size).map_err(StopReason::Failed)?;
        let mut progress = Progress::new(self.length.unwrap_or(size));
        let mut received: u64 = 0;
        while let Some(frame) = next_data(&mut body).await {
            let data = frame.map_err(|error| {
                tracing::debug!(%error, "import body failed");
                StopReason::Failed(transfer::vdi_io_error())
            })?;
            let length = u64::try_from(data.len()).unwrap_or(u64::MAX);
            if let Some(limit) = self.cut_after
                && received.saturating_add(length) > limit
            {
                let keep = usize::try_from(limit.saturating_sub(received)).unwrap_or(0);
                sink.push(data.slice(..keep.min(data.len())))
                    .map_err(StopReason::Failed)?;
                return Err(StopReason::Failed(transfer::vdi_io_error()));
            }
            received = received.saturating_add(length);
            if transfer.cancel_requested() {
                return Err(StopReason::Cancelled);
            }
            sink.push(data).map_err(StopReason::Failed)?;
            if let Some(fraction) = progress.advance(length) {
                transfer.progress(fraction);
            }
        }
        sink.finish().map_err(StopReason::Failed)
    }
}

/// Where body bytes go.
trait Sink {
    /// Consumes the next bytes of the body.
    fn push(&mut self, data: Bytes) -> Result<(), Failure>;
    /// The body ended.
    fn finish(&mut self) -> Result<(), Failure>;
}

fn io_failure(error: &dyn std::fmt::Display) -> Failure {
    tracing::debug!(%error, "import failed");
    transfer::vdi_io_error()
}

/// Writes `data` at `offset`; a whole aligned block is stored without a copy.
fn write_at(
    storage: &Storage,
    disk: DiskId,
    offset: u64,
    data: Bytes,
    size: u64,
) -> Result<(), Failure> {
    let length = u64::try_from(data.len()).unwrap_or(u64::MAX);
    if offset.checked_add(length).is_none_or(|end| end > size) {
        return Err(io_failure(&"write past the end of the device"));
    }
    let whole_block = offset.is_multiple_of(BLOCK_SIZE) && length == BLOCK_SIZE;
    let result = match u32::try_from(offset / BLOCK_SIZE) {
        Ok(index) if whole_block => {
            storage.apply_block(disk, VhdBlockIndex::new(index), data, None)
        }
        _ => storage.write(disk, ByteOffset::new(offset), &data),
    };
    result.map_err(|error| io_failure(&error))
}

/// `raw`: bytes from offset 0, `expected` of them; whole blocks are gathered before writing.
struct RawSink {
    storage: Storage,
    disk: DiskId,
    size: u64,
    expected: u64,
    /// Disk offset of `pending[0]`.
    start: u64,
    pending: BytesMut,
}

impl RawSink {
    fn new(storage: Storage, disk: DiskId, size: u64, expected: u64) -> RawSink {
        RawSink {
            storage,
            disk,
            size,
            expected,
            start: 0,
            pending: BytesMut::new(),
        }
    }

    fn flush(&mut self) -> Result<(), Failure> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let data = self.pending.split().freeze();
        let length = u64::try_from(data.len()).unwrap_or(u64::MAX);
        write_at(&self.storage, self.disk, self.start, data, self.size)?;
        self.start = self.start.saturating_add(length);
        Ok(())
    }
}

impl Sink for RawSink {
    fn push(&mut self, mut data: Bytes) -> Result<(), Failure> {
        while !data.is_empty() {
            let end = self
                .start
                .saturating_add(u64::try_from(self.pending.len()).unwrap_or(u64::MAX));
            if self.pending.is_empty()
                && end.is_multiple_of(BLOCK_SIZE)
                && data.len() >= crate::storage::BLOCK_BYTES
            {
                let block = data.split_to(crate::storage::BLOCK_BYTES);
                write_at(&self.storage, self.disk, self.start, block, self.size)?;
                self.start = self.start.saturating_add(BLOCK_SIZE);
                continue;
            }
            let room = usize::try_from(BLOCK_SIZE - end % BLOCK_SIZE).unwrap_or(usize::MAX);
            let take = room.min(data.len());
            self.pending.extend_from_slice(&data.split_to(take));
            if take == room {
                self.flush()?;
            }
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), Failure> {
        self.flush()?;
        if self.start != self.expected {
            return Err(io_failure(&format!(
                "{} bytes written, {} expected",
                self.start, self.expected
            )));
        }
        Ok(())
    }
}

/// `raw` + `chunked`: xapi's 12-byte little-endian frames, ended by an all-zero header.
struct ChunkedSink {
    storage: Storage,
    disk: DiskId,
    size: u64,
    decoder: xenapi::chunked::FrameDecoder,
    buffer: BytesMut,
}

impl ChunkedSink {
    fn new(storage: Storage, disk: DiskId, size: u64) -> ChunkedSink {
        ChunkedSink {
            storage,
            disk,
            size,
            decoder: xenapi::chunked::FrameDecoder::new(),
            buffer: BytesMut::new(),
        }
    }
}

impl Sink for ChunkedSink {
    fn push(&mut self, data: Bytes) -> Result<(), Failure> {
        self.buffer.extend_from_slice(&data);
        while let Some(event) = self
            .decoder
            .decode(&mut self.buffer)
            .map_err(|error| io_failure(&error))?
        {
            match event {
                xenapi::chunked::ChunkEvent::Data { offset, data } => {
                    write_at(&self.storage, self.disk, offset, data, self.size)?;
                }
                xenapi::chunked::ChunkEvent::End => {}
            }
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), Failure> {
        if self.decoder.is_finished() {
            Ok(())
        } else {
            Err(io_failure(&"the chunked body ended before its terminator"))
        }
    }
}

/// `vhd`: the stream decoded forward; only sectors whose bitmap bit is set are written.
struct VhdSink {
    storage: Storage,
    disk: DiskId,
    size: u64,
    decoder: vhd::StreamDecoder,
}

impl VhdSink {
    fn new(storage: Storage, disk: DiskId, size: u64) -> VhdSink {
        VhdSink {
            storage,
            disk,
            size,
            // xapi parses the trailing footer but does not compare it with the head copy.
            decoder: vhd::StreamDecoder::with_options(vhd::DecoderOptions {
                require_identical_footers: false,
                ..vhd::DecoderOptions::default()
            }),
        }
    }
}

impl Sink for VhdSink {
    fn push(&mut self, mut data: Bytes) -> Result<(), Failure> {
        while let Some(event) = self
            .decoder
            .decode(&mut data)
            .map_err(|error| io_failure(&error))?
        {
            if let vhd::StreamEvent::Block(block) = event {
                let index = block.index.0;
                if u64::from(index).saturating_mul(BLOCK_SIZE) >= self.size {
                    return Err(io_failure(&format!(
                        "block {index} is past the end of the device"
                    )));
                }
                let sectors = block.sectors.as_ref().map(|bitmap| &bitmap.as_bytes()[..]);
                self.storage
                    .apply_block(self.disk, VhdBlockIndex::new(index), block.data, sectors)
                    .map_err(|error| io_failure(&error))?;
            }
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), Failure> {
        self.decoder.finish().map_err(|error| io_failure(&error))
    }
}

/// `tar`: `vdi/%08d` chunks with checksums.
struct TarSink {
    storage: Storage,
    disk: DiskId,
    size: u64,
    reader: TarChunkReader,
}

impl TarSink {
    fn new(storage: Storage, disk: DiskId, size: u64) -> TarSink {
        TarSink {
            storage,
            disk,
            size,
            reader: TarChunkReader::new(),
        }
    }
}

impl Sink for TarSink {
    fn push(&mut self, data: Bytes) -> Result<(), Failure> {
        self.reader.push(&data);
        while let Some(event) = self
            .reader
            .next_event()
            .map_err(|error| io_failure(&error))?
        {
            if let TarEvent::Chunk { offset, data } = event {
                write_at(&self.storage, self.disk, offset, data, self.size)?;
            }
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), Failure> {
        self.reader.finish().map_err(|error| io_failure(&error))
    }
}
