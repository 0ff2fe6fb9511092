//! `PUT /import_raw_vdi` (spec §4.3, vhd-xva.md §7.3) and the HTTP-handler items of the spec §6
//! checklist it covers: 200 before the body, exact lengths, `Transfer-Encoding` refused,
//! `chunked` frames, VHD sector bitmaps, `sr_id` creation, `VDI_MISSING`, no `100 Continue`,
//! the connection closed at the end, fault injection.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a failed test"
)]

mod common;
mod support;

use support::{
    Upload, clone_vdi, dom0_vbds, exchange, get, put, put_head, snapshot, task_state, vdi,
    vdi_bytes, vdi_sha256, wait_task, write,
};
use xapi_sim::db::ClassId;
use xapi_sim::{DiskSpec, FaultRule, Pool, PoolSpec, Size, SrSpec, VmSpec};

const DISK: &str = "vm disk 0";

async fn pool() -> Pool {
    common::start(
        PoolSpec::new("import").vm(VmSpec::new("vm").disk(DiskSpec::new(Size::mib(8)).random(
            0,
            8 << 20,
            11,
        ))),
    )
    .await
}

fn pattern(length: usize, seed: u8) -> Vec<u8> {
    (0..length)
        .map(|index| u8::try_from(index % 251).unwrap() ^ seed)
        .collect()
}

fn ref_result(reference: &str) -> String {
    format!("<value>{reference}</value>")
}

#[tokio::test]
async fn raw_imports_answer_200_before_reading_the_body_then_write_it_and_close() {
    let pool = pool().await;
    let session = support::session(&pool);
    let (disk, _) = vdi(&pool, DISK);
    let before = vdi_bytes(&pool, &disk);
    let body = pattern(3 << 20, 0x5a);
    let mut upload = Upload::start(
        pool.master().address,
        &put_head(
            &format!("/import_raw_vdi?session_id={session}&vdi={disk}&format=raw"),
            body.len(),
        ),
    )
    .await;
    // Not one body byte was sent, and the head is already here.
    assert_eq!(upload.head.status, 200);
    assert_eq!(upload.head.header("connection"), Some("close"));
    assert_eq!(
        upload.head.header("content-type"),
        Some("application/octet-stream")
    );
    assert_eq!(upload.head.header("content-length"), None);
    let task = upload.head.header("task-id").unwrap().to_owned();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let modes: Vec<String> = pool.sim().read(|db| {
        db.strings(ClassId::Vdi, &disk, "VBDs")
            .iter()
            .filter(|vbd| {
                let vm = db.str(ClassId::Vbd, vbd, "VM");
                db.bool(ClassId::Vm, &vm, "is_control_domain")
            })
            .map(|vbd| db.str(ClassId::Vbd, vbd, "mode"))
            .collect()
    });
    assert_eq!(modes, ["RW"], "attached read-write to dom0 for the import");
    upload.send(&body).await;
    let rest = upload.finish().await;
    assert!(
        rest.is_empty(),
        "no response body, then the connection closes"
    );
    let (status, result, _) = wait_task(&pool, &task).await;
    assert_eq!((status.as_str(), result), ("success", ref_result(&disk)));
    let after = vdi_bytes(&pool, &disk);
    assert_eq!(after[..3 << 20], body[..]);
    assert_eq!(
        after[3 << 20..],
        before[3 << 20..],
        "beyond Content-Length: untouched"
    );
    assert_eq!(dom0_vbds(&pool, &disk), 0);
}

#[tokio::test]
async fn expect_100_continue_gets_no_interim_response() {
    let pool = pool().await;
    let session = support::session(&pool);
    let (disk, _) = vdi(&pool, DISK);
    let mut upload = Upload::start(
        pool.master().address,
        &format!(
            "PUT /import_raw_vdi?session_id={session}&vdi={disk} HTTP/1.1\r\nHost: sim\r\nExpect: 100-continue\r\nContent-Length: 512\r\n\r\n"
        ),
    )
    .await;
    assert_eq!(upload.head.status, 200, "xapi never sends 100 Continue");
    upload.send(&[1; 512]).await;
    let rest = upload.finish().await;
    assert!(!String::from_utf8_lossy(&rest).contains("100 Continue"));
}

#[tokio::test]
async fn a_transfer_encoding_is_refused_with_404_and_a_failed_task() {
    let pool = pool().await;
    let session = support::session(&pool);
    let (disk, _) = vdi(&pool, DISK);
    let task = support::client_task(&pool);
    let reply = exchange(
        pool.master().address,
        &format!(
            "PUT /import_raw_vdi?session_id={session}&vdi={disk}&task_id={task} HTTP/1.1\r\nHost: sim\r\nTransfer-Encoding: chunked\r\n\r\n"
        ),
        b"200\r\n",
    )
    .await;
    assert_eq!((reply.version.as_str(), reply.status), ("HTTP/1.0", 404));
    assert_eq!(reply.header("connection"), Some("close"));
    let (status, _, error) = task_state(&pool, &task);
    assert_eq!(status, "failure");
    assert_eq!(error, ["INTERNAL_ERROR", "Cannot handle encoding: chunked"]);
}

/// A `chunked` body: frames `(offset, data)` then the terminator.
fn frames(items: &[(u64, &[u8])]) -> Vec<u8> {
    let mut body = Vec::new();
    for (offset, data) in items {
        body.extend_from_slice(
            &xenapi::chunked::frame_header(*offset, u32::try_from(data.len()).unwrap()).unwrap(),
        );
        body.extend_from_slice(data);
    }
    body.extend_from_slice(&xenapi::chunked::TERMINATOR);
    body
}

#[tokio::test]
async fn chunked_frames_land_at_their_offsets_and_the_flag_is_a_presence_test() {
    let pool = pool().await;
    let session = support::session(&pool);
    let (disk, _) = vdi(&pool, DISK);
    let before = vdi_bytes(&pool, &disk);
    let first = pattern(65536, 1);
    let second = pattern(2 << 20, 2);
    // Spec §4.3's example frame (64 KiB at 1 MiB), a whole block at 4 MiB, frames out of order.
    let body = frames(&[(4 << 20, &second), (1 << 20, &first)]);
    let reply = put(
        pool.master().address,
        &format!("/import_raw_vdi?session_id={session}&vdi={disk}&chunked=false"),
        &body,
    )
    .await;
    assert_eq!(reply.status, 200);
    let (status, result, _) = wait_task(&pool, reply.header("task-id").unwrap()).await;
    assert_eq!((status.as_str(), result), ("success", ref_result(&disk)));
    let mut expected = before;
    expected[1 << 20..(1 << 20) + 65536].copy_from_slice(&first);
    expected[4 << 20..6 << 20].copy_from_slice(&second);
    assert_eq!(vdi_bytes(&pool, &disk), expected);
}

#[tokio::test]
async fn chunked_frames_are_twelve_little_endian_bytes_ended_by_twelve_zeros() {
    let pool = pool().await;
    let session = support::session(&pool);
    let (disk, _) = vdi(&pool, DISK);
    let before = vdi_bytes(&pool, &disk);
    let data = pattern(65536, 6);
    // Spec §4.3's example, byte for byte: 64 KiB at 1 MiB, then the terminator.
    let mut body = vec![0x00, 0x00, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00];
    body.extend_from_slice(&[0x00, 0x00, 0x01, 0x00]);
    body.extend_from_slice(&data);
    body.extend_from_slice(&[0; 12]);
    assert_eq!(body.len(), 65560);
    let reply = put(
        pool.master().address,
        &format!("/import_raw_vdi?session_id={session}&vdi={disk}&chunked"),
        &body,
    )
    .await;
    let (status, result, _) = wait_task(&pool, reply.header("task-id").unwrap()).await;
    assert_eq!((status.as_str(), result), ("success", ref_result(&disk)));
    let mut expected = before;
    expected[1 << 20..(1 << 20) + 65536].copy_from_slice(&data);
    assert_eq!(vdi_bytes(&pool, &disk), expected);

    // Without its terminator the body is incomplete.
    let unterminated = &body[..body.len() - 12];
    let reply = put(
        pool.master().address,
        &format!("/import_raw_vdi?session_id={session}&vdi={disk}&chunked"),
        unterminated,
    )
    .await;
    let (status, _, error) = wait_task(&pool, reply.header("task-id").unwrap()).await;
    assert_eq!(
        (status.as_str(), error),
        (
            "failure",
            vec!["VDI_IO_ERROR".to_owned(), "Device I/O errors".to_owned()]
        )
    );
}

#[tokio::test]
async fn a_vhd_body_shorter_than_the_stream_fails_the_task() {
    let pool = pool().await;
    let session = support::session(&pool);
    let (disk, _) = vdi(&pool, DISK);
    let stream = get(
        pool.master().address,
        &format!("/export_raw_vdi?session_id={session}&vdi={disk}&format=vhd"),
    )
    .await
    .body;
    // The Content-Length announces the whole stream, the body stops in the middle of a block.
    let mut upload = Upload::start(
        pool.master().address,
        &put_head(
            &format!("/import_raw_vdi?session_id={session}&vdi={disk}&format=vhd"),
            stream.len(),
        ),
    )
    .await;
    let task = upload.head.header("task-id").unwrap().to_owned();
    upload.send(&stream[..stream.len() / 2]).await;
    upload.abandon();
    let (status, _, error) = wait_task(&pool, &task).await;
    assert_eq!(
        (status.as_str(), error),
        (
            "failure",
            vec!["VDI_IO_ERROR".to_owned(), "Device I/O errors".to_owned()]
        )
    );
    // A Content-Length shorter than the stream cuts the stream: refused as well.
    let reply = exchange(
        pool.master().address,
        &put_head(
            &format!("/import_raw_vdi?session_id={session}&vdi={disk}&format=vhd"),
            stream.len() - 512,
        ),
        &stream[..stream.len() - 512],
    )
    .await;
    let (status, _, _) = wait_task(&pool, reply.header("task-id").unwrap()).await;
    assert_eq!(status, "failure", "the trailing footer is missing");
}

#[tokio::test]
async fn vhd_chunked_and_unknown_formats_fail_the_clients_task_with_404() {
    let pool = pool().await;
    let session = support::session(&pool);
    let (disk, _) = vdi(&pool, DISK);
    for (query, message) in [
        ("format=vhd&chunked", "Cannot handle chunked VHD"),
        ("format=qcow9", "Unknown format qcow9"),
    ] {
        let task = support::client_task(&pool);
        let reply = put(
            pool.master().address,
            &format!("/import_raw_vdi?session_id={session}&vdi={disk}&task_id={task}&{query}"),
            &[0; 512],
        )
        .await;
        assert_eq!((reply.version.as_str(), reply.status), ("HTTP/1.0", 404));
        assert_eq!(task_state(&pool, &task).2, ["INTERNAL_ERROR", message]);
    }
}

#[tokio::test]
async fn a_delta_vhd_imported_onto_a_clone_of_its_base_reproduces_the_newer_snapshot() {
    let pool = pool().await;
    let session = support::session(&pool);
    let (disk, _) = vdi(&pool, DISK);
    let base = snapshot(&pool, &disk);
    write(&pool, &disk, 3 << 20, &pattern(70_000, 9));
    write(&pool, &disk, 7 << 20, &[0; 4096]);
    let newer = snapshot(&pool, &disk);
    let delta = get(
        pool.master().address,
        &format!("/export_raw_vdi?session_id={session}&vdi={newer}&base={base}&format=vhd"),
    )
    .await;
    assert_eq!(delta.status, 200);
    let target = clone_vdi(&pool, &base);
    assert_ne!(vdi_sha256(&pool, &target), vdi_sha256(&pool, &newer));
    let reply = put(
        pool.master().address,
        &format!("/import_raw_vdi?session_id={session}&vdi={target}&format=vhd"),
        &delta.body,
    )
    .await;
    assert_eq!(reply.status, 200);
    let (status, result, error) = wait_task(&pool, reply.header("task-id").unwrap()).await;
    assert_eq!(
        (status.as_str(), result),
        ("success", ref_result(&target)),
        "{error:?}"
    );
    assert_eq!(vdi_sha256(&pool, &target), vdi_sha256(&pool, &newer));
}

#[tokio::test]
async fn vhd_imports_write_only_the_sectors_whose_bitmap_bit_is_set() {
    let pool = pool().await;
    let session = support::session(&pool);
    let (disk, _) = vdi(&pool, DISK);
    let before = vdi_bytes(&pool, &disk);
    let mut sectors = vhd::SectorBitmap::empty();
    sectors.insert_range(8..16).unwrap();
    let encoder = vhd::StreamEncoder::new(vhd::StreamSpec {
        virtual_size: 8 << 20,
        unique_id: uuid::Uuid::new_v4(),
        kind: vhd::DiskKind::Dynamic,
        blocks: [vhd::BlockIndex(1)].into_iter().collect(),
        profile: vhd::LayoutProfile::xapi(),
        bitmaps: vhd::BitmapMode::Partial,
    })
    .unwrap();
    let block = vhd::Block::partial(
        vhd::BlockIndex(1),
        bytes::Bytes::from(vec![0xee; 2 << 20]),
        sectors,
    );
    let mut stream = Vec::new();
    for piece in encoder.into_pieces([Ok(block)]) {
        stream.extend_from_slice(&piece.unwrap());
    }
    let reply = put(
        pool.master().address,
        &format!("/import_raw_vdi?session_id={session}&vdi={disk}&format=vhd"),
        &stream,
    )
    .await;
    assert_eq!(
        wait_task(&pool, reply.header("task-id").unwrap()).await.0,
        "success"
    );
    let mut expected = before;
    expected[(2 << 20) + 4096..(2 << 20) + 8192].fill(0xee);
    assert_eq!(vdi_bytes(&pool, &disk), expected);
}

#[tokio::test]
async fn an_sr_gets_an_imported_vdi_only_for_raw_bodies_with_a_length() {
    let pool = pool().await;
    let session = support::session(&pool);
    let sr = pool.sim().read(|db| {
        let default = db.str(ClassId::Pool, &db.pool_ref(), "default_SR");
        (default.clone(), db.str(ClassId::Sr, &default, "uuid"))
    });
    let body = pattern(3 << 20, 3);
    let reply = put(
        pool.master().address,
        &format!("/import_raw_vdi?session_id={session}&sr_uuid={}", sr.1),
        &body,
    )
    .await;
    assert_eq!(reply.status, 200);
    let (status, result, _) = wait_task(&pool, reply.header("task-id").unwrap()).await;
    assert_eq!(status, "success");
    let created = result
        .strip_prefix("<value>")
        .and_then(|rest| rest.strip_suffix("</value>"))
        .unwrap()
        .to_owned();
    let (name, size) = pool.sim().read(|db| {
        (
            db.str(ClassId::Vdi, &created, "name_label"),
            db.int(ClassId::Vdi, &created, "virtual_size"),
        )
    });
    assert_eq!(name, "Imported VDI");
    assert_eq!(
        size,
        4 << 20,
        "Content-Length rounded up to 2 MiB by the VHD SR"
    );
    assert_eq!(vdi_bytes(&pool, &created)[..3 << 20], body[..]);

    let task = support::client_task(&pool);
    let vhd_into_sr = put(
        pool.master().address,
        &format!(
            "/import_raw_vdi?session_id={session}&sr_id={}&format=vhd&task_id={task}",
            sr.0
        ),
        &[0; 512],
    )
    .await;
    assert_eq!(
        (vhd_into_sr.version.as_str(), vhd_into_sr.status),
        ("HTTP/1.0", 400)
    );
    assert_eq!(
        task_state(&pool, &task).2,
        [
            "INTERNAL_ERROR",
            "Importing a VHD directly into an SR not yet supported"
        ]
    );

    // Raw into an SR needs a Content-Length (a PUT without one has an empty body).
    let task = support::client_task(&pool);
    let unsized_raw = exchange(
        pool.master().address,
        &format!(
            "PUT /import_raw_vdi?session_id={session}&sr_id={}&task_id={task} HTTP/1.1\r\nHost: sim\r\n\r\n",
            sr.0
        ),
        b"",
    )
    .await;
    assert_eq!(
        (unsized_raw.version.as_str(), unsized_raw.status),
        ("HTTP/1.0", 400)
    );
    assert_eq!(
        task_state(&pool, &task).2,
        ["INTERNAL_ERROR", "Not enough info supplied to import"]
    );

    let task = support::client_task(&pool);
    let nothing = put(
        pool.master().address,
        &format!("/import_raw_vdi?session_id={session}&task_id={task}"),
        &[0; 512],
    )
    .await;
    assert_eq!(nothing.status, 400);
    assert_eq!(nothing.header("connection"), Some("close"));
    let (status, _, error) = task_state(&pool, &task);
    assert_eq!(
        (status.as_str(), error),
        ("failure", vec!["VDI_MISSING".to_owned()])
    );
}

#[tokio::test]
async fn a_body_shorter_than_its_length_fails_the_task_with_vdi_io_error() {
    let pool = pool().await;
    let session = support::session(&pool);
    let (disk, _) = vdi(&pool, DISK);
    let mut upload = Upload::start(
        pool.master().address,
        &put_head(
            &format!("/import_raw_vdi?session_id={session}&vdi={disk}"),
            1 << 20,
        ),
    )
    .await;
    let task = upload.head.header("task-id").unwrap().to_owned();
    upload.send(&[7; 1000]).await;
    upload.abandon();
    let (status, _, error) = wait_task(&pool, &task).await;
    assert_eq!(status, "failure");
    assert_eq!(error, ["VDI_IO_ERROR", "Device I/O errors"]);
    assert_eq!(dom0_vbds(&pool, &disk), 0);

    // Without Content-Length xapi expects the whole device: an empty body is short too.
    let reply = exchange(
        pool.master().address,
        &format!(
            "PUT /import_raw_vdi?session_id={session}&vdi={disk} HTTP/1.1\r\nHost: sim\r\n\r\n"
        ),
        b"",
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        wait_task(&pool, reply.header("task-id").unwrap()).await.2[0],
        "VDI_IO_ERROR"
    );
}

#[tokio::test]
async fn a_cut_import_fails_the_task_and_drops_the_connection() {
    let pool = pool().await;
    let session = support::session(&pool);
    let (disk, _) = vdi(&pool, DISK);
    pool.faults()
        .add(FaultRule::cut_http("/import_raw_vdi", 1 << 20, 1));
    let reply = put(
        pool.master().address,
        &format!("/import_raw_vdi?session_id={session}&vdi={disk}"),
        &pattern(3 << 20, 4),
    )
    .await;
    assert_eq!(reply.status, 200);
    let (status, _, error) = wait_task(&pool, reply.header("task-id").unwrap()).await;
    assert_eq!(status, "failure");
    assert_eq!(error, ["VDI_IO_ERROR", "Device I/O errors"]);
}

#[tokio::test]
async fn tar_imports_read_what_tar_exports_write() {
    let pool = common::start(
        PoolSpec::new("tar").vm(VmSpec::new("vm")
            .disk(DiskSpec::new(Size::mib(6)).random(1 << 20, 1 << 20, 5))
            .disk(DiskSpec::new(Size::mib(6)))),
    )
    .await;
    let session = support::session(&pool);
    let (source, _) = vdi(&pool, "vm disk 0");
    let (target, _) = vdi(&pool, "vm disk 1");
    let exported = get(
        pool.master().address,
        &format!("/export_raw_vdi?session_id={session}&vdi={source}&format=tar"),
    )
    .await;
    let reply = put(
        pool.master().address,
        &format!("/import_raw_vdi?session_id={session}&vdi={target}&format=tar"),
        &exported.body,
    )
    .await;
    assert_eq!(
        wait_task(&pool, reply.header("task-id").unwrap()).await.0,
        "success"
    );
    assert_eq!(vdi_sha256(&pool, &target), vdi_sha256(&pool, &source));
}

#[tokio::test]
async fn vhd_imports_need_a_prezeroed_sr() {
    let pool = common::start(
        PoolSpec::new("lvm")
            .sr(SrSpec::new("lvm", "lvm").default_sr())
            .vm(VmSpec::new("vm").disk(DiskSpec::new(Size::mib(4)))),
    )
    .await;
    let session = support::session(&pool);
    let (disk, _) = vdi(&pool, DISK);
    let stream = get(
        pool.master().address,
        &format!("/export_raw_vdi?session_id={session}&vdi={disk}&format=vhd"),
    )
    .await
    .body;
    // XCP-ng's LVM SRs are LVHD (`sm_config:use_vhd=true`): VHD imports work.
    let reply = put(
        pool.master().address,
        &format!("/import_raw_vdi?session_id={session}&vdi={disk}&format=vhd"),
        &stream,
    )
    .await;
    assert_eq!(
        wait_task(&pool, reply.header("task-id").unwrap()).await.0,
        "success"
    );
    // A raw LVM SR is not prezeroed: vhd-tool refuses.
    pool.sim().write(|db| {
        let sr = db.str(ClassId::Vdi, &disk, "SR");
        db.map_remove(ClassId::Sr, &sr, "sm_config", "use_vhd")
            .unwrap();
    });
    let reply = put(
        pool.master().address,
        &format!("/import_raw_vdi?session_id={session}&vdi={disk}&format=vhd"),
        &stream,
    )
    .await;
    assert_eq!(reply.status, 200);
    let (status, _, error) = wait_task(&pool, reply.header("task-id").unwrap()).await;
    assert_eq!(
        (status.as_str(), error[0].as_str()),
        ("failure", "VDI_IO_ERROR")
    );
}

#[tokio::test]
async fn an_import_to_storage_another_host_sees_is_redirected_before_the_body() {
    let pool = common::start(
        PoolSpec::new("two hosts")
            .hosts(2)
            .sr(SrSpec::new("host-1 local", "ext").on_host("host-1"))
            .vm(VmSpec::new("vm").disk(DiskSpec::new(Size::mib(4)).on_sr("host-1 local"))),
    )
    .await;
    let session = support::session(&pool);
    let (disk, _) = vdi(&pool, DISK);
    let path = format!("/import_raw_vdi?session_id={session}&vdi={disk}");
    // The 302 arrives although no body byte was sent.
    let upload = Upload::start(pool.master().address, &put_head(&path, 1 << 20)).await;
    assert_eq!(upload.head.status, 302);
    assert_eq!(
        upload.head.header("location"),
        Some(format!("http://{}{path}", pool.hosts()[1].address).as_str())
    );
    assert!(
        upload.finish().await.is_empty(),
        "closed without reading the body"
    );
    let body = pattern(1 << 20, 8);
    let reply = put(pool.hosts()[1].address, &path, &body).await;
    assert_eq!(
        wait_task(&pool, reply.header("task-id").unwrap()).await.0,
        "success"
    );
    assert_eq!(vdi_bytes(&pool, &disk)[..1 << 20], body[..]);
}
