//! HTTP transfers against the simulated pool (`xapi-sim`): `/export_raw_vdi` (raw and vhd, with
//! and without base), `/import_raw_vdi` (vhd, raw, `chunked`), VM `/export` and `/import`, 302
//! redirects to the host that sees the storage, and transfers cut mid-stream by the simulator's
//! fault rules. Each test runs over JSON-RPC and XML-RPC (the task calls), over HTTP and over
//! HTTPS with the master's certificate pinned; disk contents are checked against the
//! simulator's storage.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a failed test"
)]

#[macro_use]
mod simulator;

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt as _;
use serde_json::json;
use simulator::{Setup, connect, eventually, named, sim_field, sim_record, sim_tasks, spec, start};
use xapi_sim::db::ClassId;
use xapi_sim::storage::{ByteExtent, ByteOffset, Pattern};
use xapi_sim::{DiskSpec, FaultRule, NetworkSpec, Pool, PoolSpec, Size, SrSpec, VmSpec};
use xenapi::{
    Client, Compression, Download, Error, ErrorCode, ExportFormat, ImportFormat, Ref, Sr,
    StringMap, UploadBody, Value, Vdi, VdiCreate, Vm, WaitOptions,
};

const MIB: u64 = 1 << 20;

/// A halted VM with an 8 MiB disk (3 MiB written), a VM whose disk lives on storage only the
/// second host sees, and an NBD network.
fn fixture() -> PoolSpec {
    spec("transfer pool")
        .hosts(2)
        .sr(SrSpec::new("Local storage", "ext"))
        .sr(SrSpec::new("Remote storage", "ext").on_host("host-1"))
        .network(NetworkSpec::new("NBD network").purpose("insecure_nbd"))
        .vm(VmSpec::new("web01")
            .disk(DiskSpec::new(Size::mib(8)).random(0, 3 * MIB, 1))
            .vif("NBD network"))
        .vm(VmSpec::new("far01")
            .disk(
                DiskSpec::new(Size::mib(4))
                    .random(MIB, MIB, 3)
                    .on_sr("Remote storage"),
            )
            .vif("NBD network"))
}

fn wait() -> WaitOptions {
    WaitOptions::with_timeout(Duration::from_secs(10))
}

fn vdi_of(pool: &Pool, name: &str) -> Ref<Vdi> {
    named(pool, ClassId::Vdi, name)
}

fn sr_of(pool: &Pool, name: &str) -> Ref<Sr> {
    named(pool, ClassId::Sr, name)
}

/// The simulator's bytes of a whole (small) VDI.
fn content(pool: &Pool, vdi: &Ref<Vdi>) -> Vec<u8> {
    let disk = pool.sim().read(|db| db.disk_of(vdi.as_str())).unwrap();
    let size = pool.storage().virtual_size(disk).unwrap().get();
    pool.storage()
        .read(disk, ByteOffset::new(0), usize::try_from(size).unwrap())
        .unwrap()
        .to_vec()
}

fn guest_write(pool: &Pool, vdi: &Ref<Vdi>, offset: u64, length: u64, seed: u64) {
    let disk = pool.sim().read(|db| db.disk_of(vdi.as_str())).unwrap();
    pool.storage()
        .guest_write(
            disk,
            ByteExtent::at(offset, length).unwrap(),
            Pattern::Random { seed },
        )
        .unwrap();
}

/// The VBDs of a VDI in the simulator (transfers plug dom0 VBDs while they run).
fn vbds_of(pool: &Pool, vdi: &Ref<Vdi>) -> serde_json::Value {
    sim_field(pool, vdi, "VBDs")
}

/// Reads a download to its end; the bytes and the stream's error, if it broke.
async fn drain(download: &mut Download) -> (Vec<u8>, Option<Error>) {
    let mut bytes = Vec::new();
    while let Some(chunk) = download.next().await {
        match chunk {
            Ok(chunk) => bytes.extend_from_slice(&chunk),
            Err(error) => return (bytes, Some(error)),
        }
    }
    (bytes, None)
}

/// A complete, successful download.
async fn download(download: Download) -> Vec<u8> {
    let mut download = download;
    let (bytes, error) = drain(&mut download).await;
    assert!(error.is_none(), "{error:?}");
    let result = download.finish(&wait()).await.unwrap();
    assert!(
        result.is_none_or(|value| value.decode::<()>().is_ok()),
        "exports have no result"
    );
    bytes
}

/// The fields of a VHD footer (the last 512 bytes, also the first 512 of a dynamic VHD).
struct Footer {
    disk_type: u32,
    current_size: u64,
}

fn footer(vhd: &[u8]) -> Footer {
    assert!(
        vhd.len() >= 1024 && vhd.len().is_multiple_of(512),
        "{} bytes",
        vhd.len()
    );
    let footer = &vhd[vhd.len() - 512..];
    assert_eq!(&footer[..8], b"conectix", "footer cookie");
    assert_eq!(&vhd[..512], footer, "the header copy of the footer");
    Footer {
        current_size: u64::from_be_bytes(footer[48..56].try_into().unwrap()),
        disk_type: u32::from_be_bytes(footer[60..64].try_into().unwrap()),
    }
}

const DYNAMIC: u32 = 3;
const DIFFERENCING: u32 = 4;

fn body(bytes: Vec<u8>) -> UploadBody {
    UploadBody::from_bytes(Bytes::from(bytes))
}

/// A fresh, empty VDI on `sr`.
async fn blank(client: &Client, sr: &Ref<Sr>, size: u64) -> Ref<Vdi> {
    client
        .vdi_create(&VdiCreate::new(sr.clone(), size), &wait())
        .await
        .unwrap()
}

async fn raw_and_vhd_exports_with_and_without_base(setup: Setup) {
    let pool = start(fixture(), setup).await;
    let client = connect(&pool, setup).await;
    let live = vdi_of(&pool, "web01 disk 0");
    let sr = sr_of(&pool, "Local storage");
    let vbds_before = vbds_of(&pool, &live);

    let raw = download(
        client
            .export_raw_vdi(&live, ExportFormat::Raw, None)
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(raw.len(), usize::try_from(8 * MIB).unwrap());
    assert_eq!(raw, content(&pool, &live));
    assert_eq!(vbds_of(&pool, &live), vbds_before, "the dom0 VBD is gone");
    assert_eq!(sim_tasks(&pool), vec![], "the transfer task was destroyed");

    // Two snapshots with a guest write in between (blocks 2 and 3 change).
    let base = client
        .vdi_snapshot(&live, &StringMap::new(), &wait())
        .await
        .unwrap();
    guest_write(&pool, &live, 5 * MIB, 4096, 7);
    guest_write(&pool, &live, 7 * MIB, 100, 8);
    let top = client
        .vdi_snapshot(&live, &StringMap::new(), &wait())
        .await
        .unwrap();
    let top_content = content(&pool, &top);

    // A dynamic VHD of every allocated block; imported into a blank disk it is the disk.
    let full_vhd = download(
        client
            .export_raw_vdi(&top, ExportFormat::Vhd, None)
            .await
            .unwrap(),
    )
    .await;
    let full = footer(&full_vhd);
    assert_eq!((full.disk_type, full.current_size), (DYNAMIC, 8 * MIB));
    let restored = blank(&client, &sr, 8 * MIB).await;
    client
        .import_raw_vdi(
            &restored,
            ImportFormat::Vhd,
            body(full_vhd.clone()),
            &wait(),
        )
        .await
        .unwrap();
    assert_eq!(content(&pool, &restored), top_content);

    // Raw with base: the blocks that differ, zeros elsewhere.
    let raw_delta = download(
        client
            .export_raw_vdi(&top, ExportFormat::Raw, Some(&base))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(raw_delta.len(), top_content.len());
    let block = usize::try_from(2 * MIB).unwrap();
    for index in 0..4 {
        let range = index * block..(index + 1) * block;
        if index >= 2 {
            assert_eq!(
                raw_delta[range.clone()],
                top_content[range],
                "block {index} differs"
            );
        } else {
            assert!(
                raw_delta[range].iter().all(|&byte| byte == 0),
                "block {index} is the same"
            );
        }
    }

    // A differencing VHD of the same blocks; applied onto a clone of the base it gives the top.
    let delta_vhd = download(
        client
            .export_raw_vdi(&top, ExportFormat::Vhd, Some(&base))
            .await
            .unwrap(),
    )
    .await;
    let delta = footer(&delta_vhd);
    assert_eq!(
        (delta.disk_type, delta.current_size),
        (DIFFERENCING, 8 * MIB)
    );
    assert!(delta_vhd.len() < full_vhd.len(), "only the changed blocks");
    let replica = client
        .vdi_clone(&base, &StringMap::new(), &wait())
        .await
        .unwrap();
    assert_ne!(content(&pool, &replica), top_content);
    client
        .import_raw_vdi(&replica, ImportFormat::Vhd, body(delta_vhd), &wait())
        .await
        .unwrap();
    assert_eq!(content(&pool, &replica), top_content);
    for vdi in [&live, &base, &top, &restored, &replica] {
        assert_eq!(
            vbds_of(&pool, vdi).as_array().map(Vec::len),
            Some(usize::from(vdi == &live)),
            "no dom0 VBD left on {vdi}"
        );
    }
    assert_eq!(sim_tasks(&pool), vec![]);
}

async fn raw_and_chunked_imports(setup: Setup) {
    let pool = start(fixture(), setup).await;
    let client = connect(&pool, setup).await;
    let sr = sr_of(&pool, "Local storage");

    // raw: bytes from offset 0, fewer than the disk holds.
    let target = blank(&client, &sr, 4 * MIB).await;
    let data: Vec<u8> = (0..MIB + 5)
        .map(|i| u8::try_from(i % 251).unwrap())
        .collect();
    let chunks: Vec<Result<Bytes, std::io::Error>> = data
        .chunks(100_000)
        .map(|chunk| Ok(Bytes::copy_from_slice(chunk)))
        .collect();
    client
        .import_raw_vdi(
            &target,
            ImportFormat::Raw,
            UploadBody::new(MIB + 5, futures::stream::iter(chunks)),
            &wait(),
        )
        .await
        .unwrap();
    let written = content(&pool, &target);
    assert_eq!(written[..data.len()], data[..]);
    assert!(written[data.len()..].iter().all(|&byte| byte == 0));

    // chunked: frames at any offsets, in any order; only those bytes change.
    let frames = vec![
        (3 * MIB + 512, Bytes::from(vec![0xAB; 4096])),
        (0, Bytes::from(vec![0xCD; 65536])),
    ];
    let lengths: Vec<u32> = frames
        .iter()
        .map(|(_, data)| u32::try_from(data.len()).unwrap())
        .collect();
    let before = content(&pool, &target);
    client
        .import_raw_vdi(
            &target,
            ImportFormat::Chunked,
            UploadBody::chunked(
                lengths,
                futures::stream::iter(frames.into_iter().map(Ok::<_, std::io::Error>)),
            )
            .unwrap(),
            &wait(),
        )
        .await
        .unwrap();
    let mut expected = before;
    expected[..65536].fill(0xCD);
    let at = usize::try_from(3 * MIB + 512).unwrap();
    expected[at..at + 4096].fill(0xAB);
    assert_eq!(content(&pool, &target), expected);

    // A body shorter than its declared length never completes an import.
    let short = client
        .import_raw_vdi(
            &target,
            ImportFormat::Raw,
            UploadBody::new(
                MIB,
                futures::stream::iter([Ok::<_, std::io::Error>(Bytes::from(vec![1; 1000]))]),
            ),
            &wait(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(short, Error::BodyLength { expected, found: 1000 } if expected == MIB)
            || short.is_api(ErrorCode::VdiIoError),
        "{short:?}"
    );
    eventually("the failed import's task is gone", || {
        sim_tasks(&pool).is_empty()
    })
    .await;
    assert_eq!(vbds_of(&pool, &target), json!([]));
}

async fn vm_export_and_import(setup: Setup) {
    let pool = start(fixture(), setup).await;
    let client = connect(&pool, setup).await;
    let web: Ref<Vm> = named(&pool, ClassId::Vm, "web01");
    let sr = sr_of(&pool, "Local storage");
    let disk = vdi_of(&pool, "web01 disk 0");
    let original = content(&pool, &disk);
    let vms_before = pool.sim().read(|db| db.count(ClassId::Vm));

    let xva = download(client.export_vm(&web, Compression::None).await.unwrap()).await;
    assert_eq!(
        &xva[..7],
        b"ova.xml",
        "the archive starts with its metadata"
    );
    assert_eq!(sim_field(&pool, &web, "current_operations"), json!({}));

    let imported = client
        .import_vm(Some(&sr), false, body(xva), &wait())
        .await
        .unwrap();
    assert_eq!(imported.len(), 1);
    let vm = &imported[0];
    let record = client.get_record(vm).await.unwrap();
    assert_eq!(record.name_label, "web01");
    assert_eq!(sim_field(&pool, vm, "power_state"), "Halted");
    assert_ne!(
        &record.uuid,
        sim_field(&pool, &web, "uuid").as_str().unwrap(),
        "a new identity"
    );
    assert_eq!(record.vifs.len(), 1);
    let vbd = client.get_record(&record.vbds[0]).await.unwrap();
    assert_eq!(sim_field(&pool, &vbd.vdi, "SR"), sr.as_str());
    assert_eq!(content(&pool, &vbd.vdi), original, "the disk came through");

    // Compressed, into the pool's default SR.
    let gzipped = download(client.export_vm(&web, Compression::Gzip).await.unwrap()).await;
    assert_eq!(&gzipped[..2], &[0x1f, 0x8b], "gzip magic");
    let again = client
        .import_vm(None, false, body(gzipped), &wait())
        .await
        .unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(pool.sim().read(|db| db.count(ClassId::Vm)), vms_before + 2);

    // A running VM cannot be exported: the task's error, typed.
    client
        .run_async::<()>(
            "VM.start",
            vec![Value::from(&web), Value::Bool(false), Value::Bool(false)],
            &wait(),
        )
        .await
        .unwrap();
    let running = client.export_vm(&web, Compression::None).await.unwrap_err();
    assert!(running.is_api(ErrorCode::VmBadPowerState), "{running:?}");
    assert_eq!(sim_tasks(&pool), vec![]);
}

async fn redirects_to_the_host_that_sees_the_storage(setup: Setup) {
    let pool = start(fixture(), setup).await;
    let client = connect(&pool, setup).await;
    let far = vdi_of(&pool, "far01 disk 0");
    let remote = sr_of(&pool, "Remote storage");
    let member = &pool.hosts()[1];
    // Only the member has a PBD for the SR: the master answers 302 to it.
    let pbds = sim_field(&pool, &remote, "PBDs");
    assert_eq!(pbds.as_array().unwrap().len(), 1);
    let pbd = Ref::<xenapi::Pbd>::new(pbds[0].as_str().unwrap());
    assert_eq!(sim_field(&pool, &pbd, "host"), member.reference.as_str());

    if !setup.tls {
        // What the client is sent first, seen on the wire.
        let head = raw_get_head(
            pool.master().address,
            &format!(
                "/export_raw_vdi?session_id={}&vdi={}&format=raw",
                client.session().unwrap().as_str(),
                far.as_str()
            ),
        )
        .await;
        assert!(head.starts_with("HTTP/1.1 302"), "{head}");
        assert!(
            head.to_ascii_lowercase().contains(&format!(
                "location: http://{}/export_raw_vdi?",
                member.address
            )),
            "{head}"
        );
    }
    let raw = download(
        client
            .export_raw_vdi(&far, ExportFormat::Raw, None)
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(raw, content(&pool, &far));

    let target = blank(&client, &remote, 4 * MIB).await;
    let vhd = download(
        client
            .export_raw_vdi(&far, ExportFormat::Vhd, None)
            .await
            .unwrap(),
    )
    .await;
    client
        .import_raw_vdi(&target, ImportFormat::Vhd, body(vhd), &wait())
        .await
        .unwrap();
    assert_eq!(content(&pool, &target), content(&pool, &far));

    let far_vm: Ref<Vm> = named(&pool, ClassId::Vm, "far01");
    let xva = download(client.export_vm(&far_vm, Compression::Zstd).await.unwrap()).await;
    let imported = client
        .import_vm(Some(&remote), false, body(xva), &wait())
        .await
        .unwrap();
    let record = client.get_record(&imported[0]).await.unwrap();
    let vdi = client.get_record(&record.vbds[0]).await.unwrap().vdi;
    assert_eq!(sim_field(&pool, &vdi, "SR"), remote.as_str());
    assert_eq!(content(&pool, &vdi), content(&pool, &far));
    // The master's session was used on the member; nothing was left behind.
    assert_eq!(
        pool.dump()["classes"]["session"].as_object().unwrap().len(),
        1
    );
    assert_eq!(sim_tasks(&pool), vec![]);
}

/// Sends a plain `GET` and returns the response head.
async fn raw_get_head(address: std::net::SocketAddr, path_and_query: &str) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let request = format!("GET {path_and_query} HTTP/1.1\r\nHost: {address}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut byte))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(read, 1, "the connection closed inside the head");
        head.push(byte[0]);
    }
    String::from_utf8(head).unwrap()
}

/// The task of the transfer in flight, once the simulator failed it.
async fn failed_transfer_task(pool: &Pool) -> serde_json::Value {
    let mut found = None;
    eventually("the simulator fails the transfer's task", || {
        found = pool.dump()["classes"]["task"]
            .as_object()
            .unwrap()
            .values()
            .find(|task| task["status"] == "failure")
            .cloned();
        found.is_some()
    })
    .await;
    found.unwrap()
}

async fn transfers_cut_mid_stream_fail_with_typed_errors(setup: Setup) {
    let pool = start(fixture(), setup).await;
    let client = connect(&pool, setup).await;
    let live = vdi_of(&pool, "web01 disk 0");
    let sr = sr_of(&pool, "Local storage");
    let vbds_before = vbds_of(&pool, &live);
    let cut = MIB + 1234;

    // Downloads: the stream ends early (xapi closes the connection; the status was 200), the
    // task says why, and finish() turns it into a typed error.
    for format in [ExportFormat::Raw, ExportFormat::Vhd] {
        pool.faults()
            .add(FaultRule::cut_http("/export_raw_vdi", cut, 1));
        let mut transfer = client
            .export_raw_vdi(&live, format.clone(), None)
            .await
            .unwrap();
        let (bytes, _stream_error) = drain(&mut transfer).await;
        assert!(
            u64::try_from(bytes.len()).unwrap() <= cut,
            "{format:?}: {} bytes after a cut at {cut}",
            bytes.len()
        );
        let task = failed_transfer_task(&pool).await;
        assert_eq!(task["error_info"][0], "VDI_IO_ERROR");
        let error = transfer.finish(&wait()).await.unwrap_err();
        assert!(error.is_api(ErrorCode::VdiIoError), "{format:?}: {error:?}");
        assert_eq!(
            sim_tasks(&pool),
            vec![],
            "{format:?}: the task was destroyed"
        );
        assert_eq!(vbds_of(&pool, &live), vbds_before);
    }

    // Uploads: the simulator stops reading after the cut and fails the task.
    let raw = content(&pool, &live);
    let target = blank(&client, &sr, 8 * MIB).await;
    pool.faults()
        .add(FaultRule::cut_http("/import_raw_vdi", cut, 1));
    let error = client
        .import_raw_vdi(&target, ImportFormat::Raw, body(raw.clone()), &wait())
        .await
        .unwrap_err();
    assert!(error.is_api(ErrorCode::VdiIoError), "{error:?}");
    eventually("the failed import's task is gone", || {
        sim_tasks(&pool).is_empty()
    })
    .await;
    assert_eq!(vbds_of(&pool, &target), json!([]));
    assert_ne!(content(&pool, &target), raw, "the import did not complete");
    // The next transfer is not cut.
    client
        .import_raw_vdi(&target, ImportFormat::Raw, body(raw.clone()), &wait())
        .await
        .unwrap();
    assert_eq!(content(&pool, &target), raw);

    // VM export and import.
    let web: Ref<Vm> = named(&pool, ClassId::Vm, "web01");
    pool.faults().add(FaultRule::cut_http("/export", cut, 1));
    let mut export = client.export_vm(&web, Compression::None).await.unwrap();
    let (partial, _) = drain(&mut export).await;
    assert!(u64::try_from(partial.len()).unwrap() <= cut);
    let error = export.finish(&wait()).await.unwrap_err();
    assert!(error.is_api(ErrorCode::VdiIoError), "{error:?}");
    assert_eq!(sim_field(&pool, &web, "current_operations"), json!({}));

    let xva = download(client.export_vm(&web, Compression::None).await.unwrap()).await;
    let vms_before = pool.sim().read(|db| db.count(ClassId::Vm));
    let vdis_before = pool.sim().read(|db| db.count(ClassId::Vdi));
    pool.faults().add(FaultRule::cut_http("/import", cut, 1));
    let error = client
        .import_vm(Some(&sr), false, body(xva), &wait())
        .await
        .unwrap_err();
    assert!(
        matches!(error, Error::Api { .. }),
        "a task error: {error:?}"
    );
    eventually("the failed VM import is cleaned up", || {
        sim_tasks(&pool).is_empty()
            && pool
                .sim()
                .read(|db| (db.count(ClassId::Vm), db.count(ClassId::Vdi)))
                == (vms_before, vdis_before)
    })
    .await;
    assert!(pool.faults().rules().is_empty(), "every cut fired");
}

async fn aborted_download_cancels_its_task(setup: Setup) {
    let spec = fixture().vm(VmSpec::new("big01").disk(DiskSpec::new(Size::mib(64))));
    let pool = start(spec, setup).await;
    let client = connect(&pool, setup).await;
    let big = vdi_of(&pool, "big01 disk 0");
    let mut transfer = client
        .export_raw_vdi(&big, ExportFormat::Raw, None)
        .await
        .unwrap();
    let task = transfer.task().clone();
    let first = transfer.next().await.unwrap().unwrap();
    assert!(!first.is_empty());
    assert_eq!(sim_field(&pool, &task, "status"), "pending");
    assert_eq!(
        vbds_of(&pool, &big).as_array().unwrap().len(),
        2,
        "its own and dom0's"
    );
    transfer.abort().await;
    eventually(
        "the aborted export's task is gone and its VBD unplugged",
        || {
            sim_record(&pool, &task).is_none()
                && vbds_of(&pool, &big)
                    .as_array()
                    .is_some_and(|vbds| vbds.len() == 1)
        },
    )
    .await;
}

over_every_setup!(
    raw_and_vhd_exports_with_and_without_base,
    raw_and_chunked_imports,
    vm_export_and_import,
    redirects_to_the_host_that_sees_the_storage,
    transfers_cut_mid_stream_fail_with_typed_errors,
    aborted_download_cancels_its_task,
);
