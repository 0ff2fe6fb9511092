//! `GET /export_raw_vdi` (xen-api `ocaml/xapi/export_raw_vdi.ml`, spec §4.2).
//!
//! Check order: credentials (401) → `vdi` (missing or unknown: 500) → SR visible from this host
//! (else 302) → task → `format` (unknown: `HTTP/1.0 404`, task `INTERNAL_ERROR ["Unknown format
//! x"]`) → `200 OK` without `Content-Length` → from here every failure truncates the stream and
//! fails the task: `VDI_TOO_LARGE` for `vhd` past 2040 GiB, the dom0 attach of the VDI and of
//! `base`, then the copy. On success the task's result is `""`.
//!
//! Bodies: `raw` is `virtual_size` bytes (with `base`, blocks outside the 2 MiB symmetric
//! difference read as zeros); `vhd` is xapi's layout (`vhd::LayoutProfile::xapi`): a dynamic
//! VHD of the blocks allocated anywhere in the VDI's chain, or with `base` a differencing VHD of
//! the symmetric difference whose parent fields name the base's (simulated) VHD file; `tar` is
//! the `vdi/%08d` chunk stream of `Stream_vdi.send_all` with XXH64 companions.

use std::collections::BTreeSet;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{CONTENT_DISPOSITION, CONTENT_TYPE};
use http::{Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use sha2::{Digest as _, Sha256};
use xenapi::codec::Failure;
use xenapi::{Host, Ref, Vdi};

use tracing::Instrument as _;

use super::transfer::{
    self, BodySender, Progress, Reach, SendStop, Transfer, fail_task, head_only, internal_error,
    streaming_ok, transfer_span, transfer_task,
};
use crate::db::ClassId;
use crate::db::objects::TaskOutcome;
use crate::server::{HostContext, ResponseBody, html_error};
use crate::sim::Sim;
use crate::storage::{BLOCK_SIZE, DiskId, VhdBlockIndex};

/// The handler's path.
pub(crate) const PATH: &str = "/export_raw_vdi";
/// xapi's HTTP action name, the realm of its 401.
const REALM: &str = "get_export_raw_vdi";
/// `Constants.max_vhd_size`: 2040 GiB.
pub(crate) const MAX_VHD_SIZE: u64 = 2_190_433_320_960;
/// Size of one `vdi/%08d` chunk of a `tar` export.
const TAR_CHUNK: u64 = 1 << 20;

/// A disk format of the transfer handlers (`Importexport.Format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    /// Raw bytes.
    Raw,
    /// A VHD stream.
    Vhd,
    /// `vdi/%08d` chunks in a tar stream.
    Tar,
}

impl Format {
    /// `Importexport.Format.of_req`: absent → raw; case-insensitive; `Err(text)` when unknown.
    pub(crate) fn from_param(value: Option<&str>) -> Result<Format, String> {
        match value.map(str::to_ascii_lowercase).as_deref() {
            None | Some("raw") => Ok(Format::Raw),
            Some("vhd") => Ok(Format::Vhd),
            Some("tar") => Ok(Format::Tar),
            Some(_) => Err(value.unwrap_or_default().to_owned()),
        }
    }

    fn extension(self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::Vhd => "vhd",
            Format::Tar => "tar",
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Format::Raw => "application/octet-stream",
            Format::Vhd => "application/vhd",
            Format::Tar => "application/x-tar",
        }
    }
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
    // "Missing vdi query parameter" and an unknown uuid are plain exceptions: 500.
    let Some(vdi) = params
        .value("vdi")
        .and_then(|text| context.sim.lookup_vdi(text).ok())
    else {
        return html_error(StatusCode::INTERNAL_SERVER_ERROR);
    };
    let sr = context
        .sim
        .read(|db| db.str(ClassId::Vdi, vdi.as_str(), "SR"));
    match transfer::reach(&context, &[sr], PATH, &params) {
        Reach::Here => {}
        Reach::Redirect(response) => return response,
        Reach::Nowhere => return html_error(StatusCode::INTERNAL_SERVER_ERROR),
    }
    let task = transfer_task(&context, &params, "Exporting raw VDI");
    let format = match Format::from_param(params.value("format")) {
        Ok(format) => format,
        Err(unknown) => {
            fail_task(
                &context.sim,
                &task,
                internal_error(format!("Unknown format {unknown}")),
            );
            return head_only(StatusCode::NOT_FOUND, Version::HTTP_10);
        }
    };
    let uuid = context
        .sim
        .read(|db| db.str(ClassId::Vdi, vdi.as_str(), "uuid"));
    let disposition = format!("attachment; filename=\"{uuid}.{}\"", format.extension());
    let (sender, body) = transfer::channel_body(context.sim.faults().on_http_transfer(PATH));
    let transfer = Transfer::new(Arc::clone(&context.sim), task.clone(), session);
    let job = Job {
        host: context.host.clone(),
        vdi,
        base: params.value("base").map(str::to_owned),
        format,
    };
    tokio::spawn(
        job.run(transfer, sender)
            .instrument(transfer_span(PATH, &task)),
    );
    streaming_ok(
        &task,
        &[
            (CONTENT_TYPE, format.content_type()),
            (CONTENT_DISPOSITION, &disposition),
        ],
        body,
    )
}

/// Why the copy stopped early.
enum Stop {
    /// An API error for the task.
    Failed(Failure),
    /// The body could not take more bytes.
    Body(SendStop),
    /// The client cancelled the task.
    Cancelled,
}

impl From<Failure> for Stop {
    fn from(failure: Failure) -> Stop {
        Stop::Failed(failure)
    }
}

impl From<SendStop> for Stop {
    fn from(stop: SendStop) -> Stop {
        Stop::Body(stop)
    }
}

/// What a disk read failure becomes.
fn io_failure(error: &crate::Error) -> Stop {
    tracing::debug!(%error, "export read failed");
    Stop::Failed(transfer::vdi_io_error())
}

/// Ends a transfer from a copy's outcome; failures abort the body first.
pub(crate) async fn conclude(
    transfer: Transfer,
    sender: &mut BodySender,
    outcome: Result<(), StopReason>,
    success: String,
) {
    let outcome = match outcome {
        Ok(()) => TaskOutcome::Success(success),
        Err(StopReason::Cancelled) => {
            sender.abort().await;
            TaskOutcome::Cancelled
        }
        Err(StopReason::Failed(failure)) => {
            sender.abort().await;
            TaskOutcome::Failure(failure)
        }
        Err(StopReason::Cut) => TaskOutcome::Failure(transfer::vdi_io_error()),
        Err(StopReason::Disconnected) => TaskOutcome::Failure(internal_error(
            "Unix.Unix_error(Unix.EPIPE, \"write\", \"\")",
        )),
    };
    transfer.finish(outcome);
}

/// A copy's end, for [`conclude`].
pub(crate) enum StopReason {
    /// An API error.
    Failed(Failure),
    /// Cancelled by the client.
    Cancelled,
    /// A fault rule cut the stream.
    Cut,
    /// The client went away.
    Disconnected,
}

impl From<Stop> for StopReason {
    fn from(stop: Stop) -> StopReason {
        match stop {
            Stop::Failed(failure) => StopReason::Failed(failure),
            Stop::Cancelled => StopReason::Cancelled,
            Stop::Body(SendStop::Cut) => StopReason::Cut,
            Stop::Body(SendStop::Disconnected) => StopReason::Disconnected,
        }
    }
}

/// One export after its 200 header.
struct Job {
    host: Ref<Host>,
    vdi: Ref<Vdi>,
    base: Option<String>,
    format: Format,
}

/// The disk and what to send of it.
struct Source {
    sim: Arc<Sim>,
    disk: DiskId,
    virtual_size: u64,
}

impl Source {
    fn block(&self, index: u32) -> Result<Bytes, Stop> {
        self.sim
            .storage()
            .read_block(self.disk, VhdBlockIndex::new(index))
            .map_err(|error| io_failure(&error))
    }

    fn block_count(&self) -> u32 {
        u32::try_from(self.virtual_size.div_ceil(BLOCK_SIZE)).unwrap_or(u32::MAX)
    }
}

impl Job {
    async fn run(self, mut transfer: Transfer, mut sender: BodySender) {
        let outcome = self.copy(&mut transfer, &mut sender).await;
        conclude(
            transfer,
            &mut sender,
            outcome.map_err(StopReason::from),
            String::new(),
        )
        .await;
    }

    async fn copy(&self, transfer: &mut Transfer, sender: &mut BodySender) -> Result<(), Stop> {
        let sim = Arc::clone(&transfer.sim);
        let virtual_size = sim.read(|db| {
            u64::try_from(db.int(ClassId::Vdi, self.vdi.as_str(), "virtual_size")).unwrap_or(0)
        });
        if self.format == Format::Vhd && virtual_size > MAX_VHD_SIZE {
            return Err(Stop::Failed(Failure::new(
                "VDI_TOO_LARGE",
                [self.vdi.as_str().to_owned(), MAX_VHD_SIZE.to_string()],
            )));
        }
        transfer.attach(&self.host, &self.vdi, true)?;
        let base = match &self.base {
            Some(text) => {
                let base = sim.lookup_vdi(text)?;
                transfer.attach(&self.host, &base, true)?;
                Some(base)
            }
            None => None,
        };
        let disk = sim.read(|db| db.disk_of(self.vdi.as_str()))?;
        let virtual_size = sim
            .storage()
            .virtual_size(disk)
            .map_err(|error| io_failure(&error))?
            .get();
        let source = Source {
            sim: Arc::clone(&sim),
            disk,
            virtual_size,
        };
        let base_disk = match &base {
            Some(base) => Some(sim.read(|db| db.disk_of(base.as_str()))?),
            None => None,
        };
        let differing = match base_disk {
            Some(base_disk) => Some(
                sim.storage()
                    .differing_blocks(disk, base_disk)
                    .map_err(|error| io_failure(&error))?,
            ),
            None => None,
        };
        match self.format {
            Format::Raw => raw(&source, differing, transfer, sender).await,
            Format::Vhd => {
                let blocks = match differing {
                    Some(blocks) => blocks,
                    None => sim
                        .storage()
                        .allocated_blocks(disk)
                        .map_err(|error| io_failure(&error))?,
                };
                let kind = match &base {
                    Some(base) => vhd::DiskKind::Differencing(parent_identity(&sim, base)),
                    None => vhd::DiskKind::Dynamic,
                };
                vhd_stream(&source, &blocks, kind, transfer, sender).await
            }
            Format::Tar => tar(&source, transfer, sender).await,
        }
    }
}

/// Stops when the client cancelled the task.
fn check_cancel(transfer: &Transfer) -> Result<(), Stop> {
    if transfer.cancel_requested() {
        return Err(Stop::Cancelled);
    }
    Ok(())
}

async fn raw(
    source: &Source,
    differing: Option<Vec<VhdBlockIndex>>,
    transfer: &Transfer,
    sender: &mut BodySender,
) -> Result<(), Stop> {
    let included: Option<BTreeSet<u32>> =
        differing.map(|blocks| blocks.into_iter().map(VhdBlockIndex::get).collect());
    let count = source.block_count();
    let mut progress = Progress::new(u64::from(count));
    let mut remaining = source.virtual_size;
    for index in 0..count {
        check_cancel(transfer)?;
        let data = match &included {
            Some(set) if !set.contains(&index) => zero_block(),
            _ => source.block(index)?,
        };
        let take = usize::try_from(remaining.min(BLOCK_SIZE))
            .unwrap_or(0)
            .min(data.len());
        sender.send(data.slice(..take)).await?;
        remaining = remaining.saturating_sub(BLOCK_SIZE);
        if let Some(fraction) = progress.advance(1) {
            transfer.progress(fraction);
        }
    }
    Ok(())
}

/// A shared 2 MiB zero block.
pub(crate) fn zero_block() -> Bytes {
    static ZEROS: std::sync::OnceLock<Bytes> = std::sync::OnceLock::new();
    ZEROS
        .get_or_init(|| Bytes::from(vec![0; usize::try_from(BLOCK_SIZE).unwrap_or(0)]))
        .clone()
}

/// The parent fields of a delta: the base's VHD file as sm names it on a file SR. Its footer
/// uuid is opaque to API clients (not the VDI uuid); it is derived from the VDI uuid so that it
/// is stable across exports.
fn parent_identity(sim: &Sim, base: &Ref<Vdi>) -> vhd::ParentIdentity {
    let (uuid, sr_uuid) = sim.read(|db| {
        let sr = db.str(ClassId::Vdi, base.as_str(), "SR");
        (
            db.str(ClassId::Vdi, base.as_str(), "uuid"),
            db.str(ClassId::Sr, &sr, "uuid"),
        )
    });
    let digest = Sha256::digest(format!("vhd-file:{uuid}").as_bytes());
    let mut bytes = [0u8; 16];
    for (target, source) in bytes.iter_mut().zip(digest.iter()) {
        *target = *source;
    }
    vhd::ParentIdentity {
        unique_id: uuid::Builder::from_random_bytes(bytes).into_uuid(),
        timestamp: vhd::VhdTimestamp::now(),
        path: format!("/var/run/sr-mount/{sr_uuid}/{uuid}.vhd"),
    }
}

async fn vhd_stream(
    source: &Source,
    blocks: &[VhdBlockIndex],
    kind: vhd::DiskKind,
    transfer: &Transfer,
    sender: &mut BodySender,
) -> Result<(), Stop> {
    let vhd_failure = |error: vhd::Error| {
        tracing::warn!(%error, "VHD stream encoding failed");
        Stop::Failed(internal_error(error.to_string()))
    };
    let mut encoder = vhd::StreamEncoder::new(vhd::StreamSpec {
        virtual_size: source.virtual_size,
        unique_id: uuid::Uuid::new_v4(),
        kind,
        blocks: blocks
            .iter()
            .map(|block| vhd::BlockIndex(block.get()))
            .collect(),
        profile: vhd::LayoutProfile::xapi(),
        bitmaps: vhd::BitmapMode::Full,
    })
    .map_err(vhd_failure)?;
    sender.send(encoder.head().map_err(vhd_failure)?).await?;
    let mut progress = Progress::new(u64::try_from(blocks.len()).unwrap_or(u64::MAX));
    for block in blocks {
        check_cancel(transfer)?;
        let data = source.block(block.get())?;
        let [bitmap, payload] = encoder
            .encode_block(vhd::Block::full(vhd::BlockIndex(block.get()), data))
            .map_err(vhd_failure)?;
        sender.send(bitmap).await?;
        sender.send(payload).await?;
        if let Some(fraction) = progress.advance(1) {
            transfer.progress(fraction);
        }
    }
    sender.send(encoder.tail().map_err(vhd_failure)?).await?;
    Ok(())
}

/// `Stream_vdi.send_all` for one VDI named `vdi`: 1 MiB chunks `vdi/%08d`, each followed by
/// `vdi/%08d.xxhash`; all-zero chunks skipped except the first and the last; the tar end.
async fn tar(source: &Source, transfer: &Transfer, sender: &mut BodySender) -> Result<(), Stop> {
    let tar_failure = |error: xva::Error| Stop::Failed(internal_error(error.to_string()));
    let chunks = source.virtual_size.div_ceil(TAR_CHUNK);
    let mut progress = Progress::new(chunks);
    for chunk in 0..chunks {
        check_cancel(transfer)?;
        let offset = chunk.saturating_mul(TAR_CHUNK);
        let length =
            usize::try_from(TAR_CHUNK.min(source.virtual_size.saturating_sub(offset))).unwrap_or(0);
        let data = source
            .sim
            .storage()
            .read(source.disk, crate::storage::ByteOffset::new(offset), length)
            .map_err(|error| io_failure(&error))?;
        let last = chunk.saturating_add(1) == chunks;
        if chunk == 0 || last || data.iter().any(|byte| *byte != 0) {
            let name = format!("vdi/{chunk:08}");
            let size = u64::try_from(data.len()).unwrap_or(u64::MAX);
            let checksum = xva::ChecksumKind::Xxhash.digest(&data);
            sender
                .send(Bytes::copy_from_slice(
                    &xva::tar::encode_header(&name, size, 0).map_err(tar_failure)?,
                ))
                .await?;
            sender.send(data).await?;
            send_padding(sender, size).await?;
            let checksum_size = u64::try_from(checksum.len()).unwrap_or(u64::MAX);
            sender
                .send(Bytes::copy_from_slice(
                    &xva::tar::encode_header(&format!("{name}.xxhash"), checksum_size, 0)
                        .map_err(tar_failure)?,
                ))
                .await?;
            sender.send(Bytes::from(checksum.into_bytes())).await?;
            send_padding(sender, checksum_size).await?;
        }
        if let Some(fraction) = progress.advance(1) {
            transfer.progress(fraction);
        }
    }
    sender
        .send(Bytes::from(vec![0u8; xva::tar::BLOCK_SIZE * 2]))
        .await?;
    Ok(())
}

async fn send_padding(sender: &mut BodySender, size: u64) -> Result<(), SendStop> {
    let padding = xva::tar::padding(size);
    if padding > 0 {
        sender.send(Bytes::from(vec![0u8; padding])).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_parse_like_importexport() {
        assert_eq!(Format::from_param(None), Ok(Format::Raw));
        assert_eq!(Format::from_param(Some("VHD")), Ok(Format::Vhd));
        assert_eq!(Format::from_param(Some("Tar")), Ok(Format::Tar));
        assert_eq!(Format::from_param(Some("QCow2")), Err("QCow2".to_owned()));
    }
}
