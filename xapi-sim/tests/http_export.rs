//! `GET /export_raw_vdi` (spec §4.1, §4.2, vhd-xva.md §7.2) and the HTTP-handler items of the
//! spec §6 checklist it covers: credentials, tasks, `task-id`, "200 means started", 302,
//! formats, no Content-Length, dom0 VBD, fault injection; qemu-img and libvhdi read the VHDs.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a failed test"
)]

mod common;
mod support;

use std::io::Write as _;

use support::{
    Upload, dom0_vbds, get, get_with, snapshot, task_state, vdi, vdi_bytes, wait_task, write,
};
use xapi_sim::{DiskSpec, FaultRule, Pool, PoolSpec, Size, SrSpec, VmSpec};
use xenapi::Value;

const DISK: &str = "vm disk 0";

async fn pool(size: Size) -> Pool {
    common::start(
        PoolSpec::new("export").vm(VmSpec::new("vm").disk(
            DiskSpec::new(size)
                .random(1 << 20, 3 << 20, 7)
                .random(6 << 20, 4096, 8),
        )),
    )
    .await
}

#[tokio::test]
async fn raw_exports_stream_the_whole_disk_with_xapi_headers_and_succeed_with_no_result() {
    let pool = pool(Size::mib(8)).await;
    let session = support::session(&pool);
    let (disk, uuid) = vdi(&pool, DISK);
    let reply = get(
        pool.master().address,
        &format!("/export_raw_vdi?session_id={session}&vdi={disk}"),
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("connection"), Some("close"));
    assert_eq!(reply.header("content-length"), None, "read to EOF");
    assert_eq!(reply.header("transfer-encoding"), None);
    assert_eq!(
        reply.header("content-type"),
        Some("application/octet-stream")
    );
    assert_eq!(
        reply.header("content-disposition"),
        Some(format!("attachment; filename=\"{uuid}.raw\"").as_str())
    );
    assert_eq!(reply.header("cache-control"), Some("no-cache, no-store"));
    assert_eq!(reply.body.len(), 8 << 20, "exactly virtual_size bytes");
    assert_eq!(reply.body, vdi_bytes(&pool, &disk));
    let task = reply.header("task-id").unwrap().to_owned();
    let (status, result, _) = wait_task(&pool, &task).await;
    assert_eq!((status.as_str(), result.as_str()), ("success", ""));
    assert_eq!(
        pool.sim()
            .read(|db| db.str(xapi_sim::db::ClassId::Task, &task, "name_label")),
        "Exporting raw VDI"
    );
    assert_eq!(dom0_vbds(&pool, &disk), 0);
}

#[tokio::test]
async fn the_vdi_may_be_a_uuid_and_formats_are_case_insensitive() {
    let pool = pool(Size::mib(8)).await;
    let session = support::session(&pool);
    let (disk, uuid) = vdi(&pool, DISK);
    let reply = get(
        pool.master().address,
        &format!("/export_raw_vdi?session_id={session}&vdi={uuid}&format=RAW"),
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, vdi_bytes(&pool, &disk));
}

#[tokio::test]
async fn a_read_only_dom0_vbd_is_attached_while_the_export_streams() {
    let pool = pool(Size::mib(64)).await;
    let session = support::session(&pool);
    let (disk, _) = vdi(&pool, DISK);
    let upload = Upload::start(
        pool.master().address,
        &format!(
            "GET /export_raw_vdi?session_id={session}&vdi={disk} HTTP/1.1\r\nHost: sim\r\n\r\n"
        ),
    )
    .await;
    assert_eq!(upload.head.status, 200);
    // The export is paused on our unread socket: the disk is still attached to dom0, read-only.
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert_eq!(dom0_vbds(&pool, &disk), 1);
    let modes: Vec<String> = pool.sim().read(|db| {
        db.strings(xapi_sim::db::ClassId::Vdi, &disk, "VBDs")
            .iter()
            .filter(|vbd| {
                let vm = db.str(xapi_sim::db::ClassId::Vbd, vbd, "VM");
                db.bool(xapi_sim::db::ClassId::Vm, &vm, "is_control_domain")
            })
            .map(|vbd| db.str(xapi_sim::db::ClassId::Vbd, vbd, "mode"))
            .collect()
    });
    assert_eq!(modes, ["RO"]);
    let task = upload.head.header("task-id").unwrap().to_owned();
    let body = upload.finish().await;
    assert_eq!(body.len(), 64 << 20);
    assert_eq!(wait_task(&pool, &task).await.0, "success");
    assert_eq!(dom0_vbds(&pool, &disk), 0);
}

#[tokio::test]
async fn unknown_formats_answer_http_1_0_404_and_fail_the_task() {
    let pool = pool(Size::mib(8)).await;
    let session = support::session(&pool);
    let (disk, _) = vdi(&pool, DISK);
    let task = support::client_task(&pool);
    let reply = get(
        pool.master().address,
        &format!("/export_raw_vdi?session_id={session}&vdi={disk}&format=qcow2&task_id={task}"),
    )
    .await;
    assert_eq!((reply.version.as_str(), reply.status), ("HTTP/1.0", 404));
    assert_eq!(reply.header("connection"), Some("close"));
    assert!(reply.body.is_empty());
    let (status, _, error) = task_state(&pool, &task);
    assert_eq!(status, "failure");
    assert_eq!(error, ["INTERNAL_ERROR", "Unknown format qcow2"]);
}

#[tokio::test]
async fn a_missing_or_unknown_vdi_is_an_http_500() {
    let pool = pool(Size::mib(8)).await;
    let session = support::session(&pool);
    let missing = get(
        pool.master().address,
        &format!("/export_raw_vdi?session_id={session}"),
    )
    .await;
    assert_eq!(missing.status, 500);
    assert_eq!(missing.header("content-type"), Some("text/html"));
    let unknown = get(
        pool.master().address,
        &format!("/export_raw_vdi?session_id={session}&vdi=not-a-vdi"),
    )
    .await;
    assert_eq!(unknown.status, 500);
}

#[tokio::test]
async fn the_session_cookie_wins_over_the_query_and_basic_auth_opens_a_temporary_session() {
    let pool = pool(Size::mib(8)).await;
    let session = support::session(&pool);
    let (disk, _) = vdi(&pool, DISK);
    let address = pool.master().address;
    let path = format!("/export_raw_vdi?vdi={disk}&session_id=OpaqueRef:bogus");
    let with_cookie = get_with(address, &path, &format!("Cookie: session_id={session}\r\n")).await;
    assert_eq!(with_cookie.status, 200, "the cookie wins");

    let task = support::client_task(&pool);
    let refused = get_with(
        address,
        &format!("/export_raw_vdi?vdi={disk}&session_id={session}&task_id={task}"),
        "Cookie: session_id=OpaqueRef:bogus\r\n",
    )
    .await;
    assert_eq!(refused.status, 401);
    assert_eq!(
        refused.header("www-authenticate"),
        Some("Basic realm=\"get_export_raw_vdi\"")
    );
    assert_eq!(refused.header("connection"), Some("close"));
    // xapi's handler table refuses the credentials before the handler's `with_context` could
    // fail the task: it stays pending (upstream `Xapi_http.add_handler`).
    assert_eq!(task_state(&pool, &task).0, "pending");

    let sessions = || {
        pool.sim()
            .read(|db| db.count(xapi_sim::db::ClassId::Session))
    };
    let before = sessions();
    let credentials = pool.credentials().clone();
    let basic = base64_basic(&credentials.username, &credentials.password);
    let with_basic = get_with(
        address,
        &format!("/export_raw_vdi?vdi={disk}"),
        &format!("Authorization: Basic {basic}\r\n"),
    )
    .await;
    assert_eq!(with_basic.status, 200);
    wait_task(&pool, with_basic.header("task-id").unwrap()).await;
    assert_eq!(sessions(), before, "the temporary session is logged out");

    let wrong = get_with(
        address,
        &format!("/export_raw_vdi?vdi={disk}"),
        &format!("Authorization: Basic {}\r\n", base64_basic("root", "wrong")),
    )
    .await;
    assert_eq!(wrong.status, 401);
    let anonymous = get(address, &format!("/export_raw_vdi?vdi={disk}")).await;
    assert_eq!(anonymous.status, 401);
}

fn base64_basic(user: &str, password: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
}

#[tokio::test]
async fn the_clients_task_runs_the_transfer_and_is_named_in_the_task_id_header() {
    let pool = pool(Size::mib(8)).await;
    let session = support::session(&pool);
    let (disk, _) = vdi(&pool, DISK);
    let task = support::client_task(&pool);
    let reply = get_with(
        pool.master().address,
        &format!("/export_raw_vdi?vdi={disk}"),
        &format!("Cookie: session_id={session}; task_id={task}\r\n"),
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("task-id"), Some(task.as_str()));
    let (status, result, _) = wait_task(&pool, &task).await;
    assert_eq!((status.as_str(), result.as_str()), ("success", ""));
    let progress = pool.sim().read(|db| {
        db.get(xapi_sim::db::ClassId::Task, &task, "progress")
            .cloned()
            .unwrap()
    });
    assert_eq!(progress, Value::Double(1.0));
}

#[tokio::test]
async fn a_failure_after_the_200_truncates_the_stream_and_fails_the_task() {
    let pool = pool(Size::mib(8)).await;
    let session = support::session(&pool);
    let (disk, _) = vdi(&pool, DISK);
    pool.faults()
        .add(FaultRule::cut_http("/export_raw_vdi", (1 << 20) + 123, 1));
    let reply = get(
        pool.master().address,
        &format!("/export_raw_vdi?session_id={session}&vdi={disk}"),
    )
    .await;
    assert_eq!(reply.status, 200, "200 only means started");
    assert_eq!(reply.body.len(), (1 << 20) + 123);
    assert_eq!(reply.body, vdi_bytes(&pool, &disk)[..(1 << 20) + 123]);
    let (status, _, error) = wait_task(&pool, reply.header("task-id").unwrap()).await;
    assert_eq!(status, "failure");
    assert_eq!(error, ["VDI_IO_ERROR", "Device I/O errors"]);
    assert_eq!(dom0_vbds(&pool, &disk), 0);
    // The rule fired once: the next export is whole.
    let again = get(
        pool.master().address,
        &format!("/export_raw_vdi?session_id={session}&vdi={disk}"),
    )
    .await;
    assert_eq!(again.body.len(), 8 << 20);
}

/// `sim.*` hooks over the wire count transfers from when they are called: the 2nd export is cut.
#[tokio::test]
async fn sim_cut_http_called_over_xml_rpc_cuts_the_nth_export_after_n_bytes() {
    const CUT: usize = (3 << 20) + 7;
    let pool = pool(Size::mib(8)).await;
    let address = pool.master().address;
    let session = support::session(&pool);
    let (disk, _) = vdi(&pool, DISK);
    let armed = common::xml(
        address,
        "sim.cut_http",
        &[
            support::s("/export_raw_vdi"),
            Value::Int(i64::try_from(CUT).unwrap()),
            Value::Int(2),
        ],
    )
    .await
    .unwrap();
    assert_eq!(armed, Value::void());
    let path = format!("/export_raw_vdi?session_id={session}&vdi={disk}");

    let whole = get(address, &path).await;
    assert_eq!(
        whole.body.len(),
        8 << 20,
        "the 1st export is not the one cut"
    );
    assert_eq!(whole.body, vdi_bytes(&pool, &disk));
    let (status, _, _) = wait_task(&pool, whole.header("task-id").unwrap()).await;
    assert_eq!(status, "success");

    let cut = get(address, &path).await;
    assert_eq!(cut.status, 200, "200 only means started");
    assert_eq!(cut.body.len(), CUT);
    assert_eq!(cut.body, whole.body[..CUT]);
    let (status, _, error) = wait_task(&pool, cut.header("task-id").unwrap()).await;
    assert_eq!(status, "failure");
    assert_eq!(error, ["VDI_IO_ERROR", "Device I/O errors"]);
    assert_eq!(dom0_vbds(&pool, &disk), 0);

    let again = get(address, &path).await;
    assert_eq!(again.body.len(), 8 << 20, "the rule fired once");
}

/// `sim.guest_write_random_blocks` rewrites exactly the blocks it returns, and `sim.vdi_sha256`
/// is the SHA-256 of what a full raw export streams, before and after.
#[tokio::test]
async fn random_guest_writes_change_the_sha256_that_a_full_export_agrees_with() {
    const BLOCK: usize = 2 << 20;
    let pool = pool(Size::mib(8)).await;
    let address = pool.master().address;
    let session = support::session(&pool);
    let (disk, _) = vdi(&pool, DISK);
    let path = format!("/export_raw_vdi?session_id={session}&vdi={disk}");
    let remote_sha256 = || async {
        common::json(address, "sim.vdi_sha256", &[support::s(&disk)])
            .await
            .unwrap()
            .decode::<String>()
            .unwrap()
    };

    let before_hash = remote_sha256().await;
    let before = get(address, &path).await.body;
    assert_eq!(before.len(), 8 << 20);
    assert_eq!(hex::encode(support::sha256(&before)), before_hash);

    let blocks: Vec<u64> = common::json(
        address,
        "sim.guest_write_random_blocks",
        &[support::s(&disk), Value::Int(2), Value::Int(99)],
    )
    .await
    .unwrap()
    .decode()
    .unwrap();
    let blocks: Vec<usize> = blocks
        .into_iter()
        .map(|block| usize::try_from(block).unwrap())
        .collect();
    assert_eq!(blocks.len(), 2);
    assert!(blocks[0] < blocks[1] && blocks[1] < 4, "{blocks:?}");

    let after_hash = remote_sha256().await;
    assert_ne!(after_hash, before_hash);
    let after = get(address, &path).await.body;
    assert_eq!(hex::encode(support::sha256(&after)), after_hash);
    for block in 0..4 {
        let range = block * BLOCK..(block + 1) * BLOCK;
        if blocks.contains(&block) {
            assert_ne!(after[range.clone()], before[range.clone()], "block {block}");
            assert!(
                after[range].iter().any(|byte| *byte != 0),
                "block {block} holds data"
            );
        } else {
            assert_eq!(
                after[range.clone()],
                before[range],
                "block {block} untouched"
            );
        }
    }
}

#[tokio::test]
async fn vhd_exports_past_2040_gib_fail_after_the_200() {
    let pool = common::start(
        PoolSpec::new("big").vm(VmSpec::new("vm").disk(DiskSpec::new(Size::gib(2100)))),
    )
    .await;
    let session = support::session(&pool);
    let (disk, _) = vdi(&pool, DISK);
    let reply = get(
        pool.master().address,
        &format!("/export_raw_vdi?session_id={session}&vdi={disk}&format=vhd"),
    )
    .await;
    assert_eq!(reply.status, 200);
    assert!(reply.body.is_empty());
    let (status, _, error) = wait_task(&pool, reply.header("task-id").unwrap()).await;
    assert_eq!(status, "failure");
    assert_eq!(error, ["VDI_TOO_LARGE", disk.as_str(), "2190433320960"]);
}

/// Decodes a VHD stream with the `vhd` crate: (footer, allocated block indices, blocks' data).
fn decode_vhd(bytes: &[u8]) -> (vhd::Footer, Vec<u32>, Vec<bytes::Bytes>) {
    let mut decoder = vhd::StreamDecoder::new();
    let mut input = bytes::Bytes::copy_from_slice(bytes);
    let (mut footer, mut indices, mut blocks) = (None, Vec::new(), Vec::new());
    while let Some(event) = decoder.decode(&mut input).unwrap() {
        match event {
            vhd::StreamEvent::Footer(found) => footer = Some(found),
            vhd::StreamEvent::Block(block) => {
                assert_eq!(block.sectors, None, "xapi bitmaps are all ones");
                indices.push(block.index.0);
                blocks.push(block.data);
            }
            _ => {}
        }
    }
    decoder.finish().unwrap();
    (footer.unwrap(), indices, blocks)
}

#[tokio::test]
async fn vhd_exports_are_xapi_shaped_dynamic_vhds_of_the_allocated_blocks() {
    let pool = pool(Size::mib(8)).await;
    let session = support::session(&pool);
    let (disk, uuid) = vdi(&pool, DISK);
    let reply = get(
        pool.master().address,
        &format!("/export_raw_vdi?session_id={session}&vdi={disk}&format=vhd"),
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some("application/vhd"));
    assert_eq!(
        reply.header("content-disposition"),
        Some(format!("attachment; filename=\"{uuid}.vhd\"").as_str())
    );
    let (footer, indices, _) = decode_vhd(&reply.body);
    assert_eq!(footer.disk_type, vhd::DiskType::Dynamic);
    assert_eq!(&footer.creator.application, b"caml");
    // Random data at 1–4 MiB and 6 MiB: blocks 0, 1 and 3.
    assert_eq!(indices, [0, 1, 3]);
    // Length = 2048 + padded BAT (4 entries → 512) + 3 × 2097664 + 512.
    assert_eq!(reply.body.len(), 2048 + 512 + 3 * 2_097_664 + 512);
    assert_eq!(
        wait_task(&pool, reply.header("task-id").unwrap()).await.0,
        "success"
    );

    let Some(qemu_img) = test_peers::require("qemu-img") else {
        return;
    };
    let raw = get(
        pool.master().address,
        &format!("/export_raw_vdi?session_id={session}&vdi={disk}"),
    )
    .await;
    let directory = tempfile::tempdir().unwrap();
    let vhd_path = directory.path().join("export.vhd");
    let raw_path = directory.path().join("export.raw");
    std::fs::write(&vhd_path, &reply.body).unwrap();
    std::fs::write(&raw_path, &raw.body).unwrap();
    test_peers::run_ok(
        &qemu_img,
        [
            "compare".to_owned(),
            "--image-opts".to_owned(),
            format!("driver=raw,file.filename={}", raw_path.display()),
            format!(
                "driver=vpc,force_size_calc=current_size,file.filename={}",
                vhd_path.display()
            ),
        ],
    );
}

#[tokio::test]
async fn delta_exports_are_differencing_vhds_of_the_symmetric_difference_that_libvhdi_chains() {
    let pool = pool(Size::mib(8)).await;
    let session = support::session(&pool);
    let (disk, _) = vdi(&pool, DISK);
    let base = snapshot(&pool, &disk);
    write(&pool, &disk, (6 << 20) + 8192, &[0xab; 4096]);
    write(&pool, &disk, 4096, &[0xcd; 512]);
    let newer = snapshot(&pool, &disk);
    let address = pool.master().address;
    let full = get(
        address,
        &format!("/export_raw_vdi?session_id={session}&vdi={base}&format=vhd"),
    )
    .await;
    let delta = get(
        address,
        &format!("/export_raw_vdi?session_id={session}&vdi={newer}&base={base}&format=vhd"),
    )
    .await;
    assert_eq!(delta.status, 200);
    assert_eq!(
        wait_task(&pool, delta.header("task-id").unwrap()).await.0,
        "success"
    );
    let (footer, indices, blocks) = decode_vhd(&delta.body);
    assert_eq!(footer.disk_type, vhd::DiskType::Differencing);
    assert_eq!(indices, [0, 3], "the 2 MiB blocks written since the base");
    let expected = vdi_bytes(&pool, &newer);
    assert_eq!(blocks[1][..], expected[6 << 20..8 << 20]);

    // Raw with base: the same blocks as data, zeros elsewhere.
    let base_uuid = pool
        .sim()
        .read(|db| db.str(xapi_sim::db::ClassId::Vdi, &base, "uuid"));
    let raw_delta = get(
        address,
        &format!("/export_raw_vdi?session_id={session}&vdi={newer}&base={base_uuid}"),
    )
    .await;
    assert_eq!(raw_delta.body.len(), 8 << 20);
    assert_eq!(raw_delta.body[..2 << 20], expected[..2 << 20]);
    assert!(
        raw_delta.body[2 << 20..6 << 20]
            .iter()
            .all(|byte| *byte == 0)
    );
    assert_eq!(raw_delta.body[6 << 20..], expected[6 << 20..]);

    let Some(python) = test_peers::require_python_module("pyvhdi") else {
        return;
    };
    // As when storing a chain: the child names the stored parent's footer uuid (xapi's parent
    // uuid is its SR file's, which no API client can know).
    let mut child = delta.body.clone();
    let parent_footer = vhd::Footer::parse(&full.body[..512]).unwrap();
    let mut header = vhd::DynamicHeader::parse(&child[512..1536]).unwrap();
    header.parent_unique_id = parent_footer.unique_id;
    child[512..1536].copy_from_slice(&header.encode().unwrap());
    let directory = tempfile::tempdir().unwrap();
    let parent_path = directory.path().join("parent.vhd");
    let child_path = directory.path().join("child.vhd");
    std::fs::write(&parent_path, &full.body).unwrap();
    std::fs::write(&child_path, &child).unwrap();
    if let Some(vhdiinfo) = test_peers::require("vhdiinfo") {
        let info =
            String::from_utf8(test_peers::run_ok(&vhdiinfo, [child_path.as_os_str()])).unwrap();
        assert!(info.contains("Differential"), "{info}");
    }
    let script = format!(
        r#"
import hashlib, pyvhdi
child, parent = pyvhdi.file(), pyvhdi.file()
child.open("{child}"); parent.open("{parent}")
child.set_parent(parent)
digest, offset, size = hashlib.sha256(), 0, child.get_media_size()
while offset < size:
    piece = child.read_buffer_at_offset(min(1 << 20, size - offset), offset)
    digest.update(piece); offset += len(piece)
print(size, digest.hexdigest())
"#,
        child = child_path.display(),
        parent = parent_path.display()
    );
    let script_path = directory.path().join("chain.py");
    std::fs::File::create(&script_path)
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let output = String::from_utf8(test_peers::run_ok(&python, [script_path.as_os_str()])).unwrap();
    assert_eq!(
        output.trim(),
        format!("{} {}", 8 << 20, hex::encode(support::sha256(&expected)))
    );
}

#[tokio::test]
async fn tar_exports_are_checksummed_mebibyte_chunks_without_zero_ones() {
    let pool = pool(Size::mib(8)).await;
    let session = support::session(&pool);
    let (disk, _) = vdi(&pool, DISK);
    let reply = get(
        pool.master().address,
        &format!("/export_raw_vdi?session_id={session}&vdi={disk}&format=tar"),
    )
    .await;
    assert_eq!(reply.header("content-type"), Some("application/x-tar"));
    let events = xapi_sim::http::tar_chunks::read_all(&reply.body).unwrap();
    let offsets: Vec<u64> = events
        .iter()
        .filter_map(|event| match event {
            xapi_sim::http::tar_chunks::TarEvent::Chunk { offset, .. } => Some(*offset >> 20),
            xapi_sim::http::tar_chunks::TarEvent::End => None,
        })
        .collect();
    // Chunk 0 and the last always; 1–3 and 6 hold data; 5 is all zero.
    assert_eq!(offsets, [0, 1, 2, 3, 6, 7]);
    let mut rebuilt = vec![0u8; 8 << 20];
    for event in events {
        if let xapi_sim::http::tar_chunks::TarEvent::Chunk { offset, data } = event {
            let offset = usize::try_from(offset).unwrap();
            rebuilt[offset..offset + data.len()].copy_from_slice(&data);
        }
    }
    assert_eq!(rebuilt, vdi_bytes(&pool, &disk));
}

#[tokio::test]
async fn transfers_of_storage_another_host_sees_are_redirected_before_anything_else() {
    let pool = common::start(
        PoolSpec::new("two hosts")
            .hosts(2)
            .sr(SrSpec::new("host-1 local", "ext").on_host("host-1"))
            .vm(VmSpec::new("vm").disk(
                DiskSpec::new(Size::mib(4))
                    .random(0, 1 << 20, 3)
                    .on_sr("host-1 local"),
            )),
    )
    .await;
    let session = support::session(&pool);
    let (disk, _) = vdi(&pool, DISK);
    let task = support::client_task(&pool);
    let member = &pool.hosts()[1];
    let reply = get_with(
        pool.master().address,
        &format!("/export_raw_vdi?vdi={disk}&task_id={task}&format=raw"),
        &format!("Cookie: session_id={session}\r\n"),
    )
    .await;
    assert_eq!(reply.status, 302);
    assert_eq!(reply.header("connection"), Some("close"));
    let location = reply.header("location").unwrap().to_owned();
    assert_eq!(
        location,
        format!(
            "http://{}/export_raw_vdi?vdi={disk}&task_id={task}&format=raw",
            member.address
        ),
        "the URL query only: the cookie is not carried"
    );
    assert_eq!(
        task_state(&pool, &task).0,
        "pending",
        "the redirecting host leaves the task"
    );
    let path = location.split_once(&member.address.to_string()).unwrap().1;
    let followed = get_with(
        member.address,
        path,
        &format!("Cookie: session_id={session}\r\n"),
    )
    .await;
    assert_eq!(followed.status, 200);
    assert_eq!(followed.body, vdi_bytes(&pool, &disk));
    assert_eq!(wait_task(&pool, &task).await.0, "success");
}

#[tokio::test]
async fn redirects_of_a_tls_pool_name_https() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let pool = Pool::start(
        PoolSpec::new("tls two hosts")
            .hosts(2)
            .sr(SrSpec::new("host-1 local", "ext").on_host("host-1"))
            .vm(VmSpec::new("vm").disk(DiskSpec::new(Size::mib(2)).on_sr("host-1 local"))),
    )
    .await
    .unwrap();
    let session = support::session(&pool);
    let (disk, _) = vdi(&pool, DISK);
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls_pki_types::CertificateDer::from(
            pool.master().certificate.der().to_vec(),
        ))
        .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(pool.master().address)
        .await
        .unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(
            rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap(),
            tcp,
        )
        .await
        .unwrap();
    let path = format!("/export_raw_vdi?session_id={session}&vdi={disk}");
    tls.write_all(format!("GET {path} HTTP/1.1\r\nHost: sim\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut response = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        tls.read_to_end(&mut response),
    )
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&response);
    assert!(text.starts_with("HTTP/1.1 302"), "{text}");
    let location = format!("location: https://{}{path}\r\n", pool.hosts()[1].address);
    assert!(
        text.to_ascii_lowercase()
            .contains(&location.to_ascii_lowercase()),
        "{text}"
    );
}
