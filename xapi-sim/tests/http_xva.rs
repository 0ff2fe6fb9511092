//! `GET /export` and `PUT /import` of XVA archives (spec §4.4, §4.5): the round trip preserves
//! disk content, the export is refused for a running VM, and the archive is xapi's (read back
//! by the `xva` crate, compressed on request).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a failed test"
)]

mod common;
mod support;

use support::{Upload, get, put, task_state, vdi, vdi_sha256, wait_task};
use xapi_sim::db::ClassId;
use xapi_sim::{DiskSpec, Pool, PoolSpec, Size, VmSpec};

async fn pool() -> Pool {
    common::start(
        PoolSpec::new("xva")
            .vm(VmSpec::new("web")
                .disk(DiskSpec::new(Size::mib(6)).random(1 << 20, 1 << 20, 21))
                .disk(DiskSpec::new(Size::mib(4)).random(0, 4096, 22))
                .vif("Pool-wide network associated with eth0")
                .other_config("role", "frontend"))
            .vm(VmSpec::new("busy")
                .running()
                .disk(DiskSpec::new(Size::mib(2)))),
    )
    .await
}

/// The `<value><array><data><value>OpaqueRef:…</value>…` result as refs.
fn refs(result: &str) -> Vec<String> {
    match xenapi::codec::xmlrpc::decode_task_result(result).unwrap() {
        Some(xenapi::Value::Array(items)) => items
            .into_iter()
            .map(|item| item.as_str().unwrap().to_owned())
            .collect(),
        other => panic!("not a ref set: {other:?}"),
    }
}

#[tokio::test]
async fn an_exported_vm_imports_back_with_the_same_disks() {
    let pool = pool().await;
    let session = support::session(&pool);
    let vm = pool.find_by_name(ClassId::Vm, "web").unwrap();
    let reply = get(
        pool.master().address,
        &format!("/export?session_id={session}&ref={vm}"),
    )
    .await;
    assert_eq!((reply.version.as_str(), reply.status), ("HTTP/1.0", 200));
    assert_eq!(reply.header("connection"), Some("close"));
    assert_eq!(
        reply.header("content-disposition"),
        Some("attachment; filename=\"export.xva\"")
    );
    assert_eq!(reply.header("content-length"), None);
    assert_eq!(&reply.body[..7], b"ova.xml");
    let (status, result, _) = wait_task(&pool, reply.header("task-id").unwrap()).await;
    assert_eq!((status.as_str(), result.as_str()), ("success", ""));
    let verified = xva::verify(bytes::Bytes::from(reply.body.clone())).unwrap();
    assert_eq!(verified.layout.disks.len(), 2);

    let imported = put(
        pool.master().address,
        &format!("/import?session_id={session}"),
        &reply.body,
    )
    .await;
    assert_eq!(imported.status, 200);
    assert_eq!(imported.header("connection"), Some("close"));
    let (status, result, error) = wait_task(&pool, imported.header("task-id").unwrap()).await;
    assert_eq!(status, "success", "{error:?}");
    let vms = refs(&result);
    assert_eq!(vms.len(), 1);
    let new_vm = &vms[0];
    let (name, power, other_role, uuid, disks) = pool.sim().read(|db| {
        let disks: Vec<String> = db
            .strings(ClassId::Vm, new_vm, "VBDs")
            .iter()
            .map(|vbd| db.str(ClassId::Vbd, vbd, "VDI"))
            .collect();
        (
            db.str(ClassId::Vm, new_vm, "name_label"),
            db.str(ClassId::Vm, new_vm, "power_state"),
            db.map(ClassId::Vm, new_vm, "other_config")
                .into_iter()
                .find(|(key, _)| key == "role")
                .map(|(_, value)| value),
            db.str(ClassId::Vm, new_vm, "uuid"),
            disks,
        )
    });
    assert_eq!((name.as_str(), power.as_str()), ("web", "Halted"));
    assert_eq!(other_role.as_deref(), Some("frontend"));
    assert_ne!(
        uuid,
        pool.sim().read(|db| db.str(ClassId::Vm, &vm, "uuid")),
        "no restore: new identity"
    );
    assert_eq!(disks.len(), 2);
    let originals = [vdi(&pool, "web disk 0").0, vdi(&pool, "web disk 1").0];
    let mut expected: Vec<[u8; 32]> = originals
        .iter()
        .map(|disk| vdi_sha256(&pool, disk))
        .collect();
    let mut found: Vec<[u8; 32]> = disks.iter().map(|disk| vdi_sha256(&pool, disk)).collect();
    expected.sort_unstable();
    found.sort_unstable();
    assert_eq!(found, expected);
    let vifs = pool
        .sim()
        .read(|db| db.strings(ClassId::Vm, new_vm, "VIFs").len());
    assert_eq!(vifs, 1);
}

#[tokio::test]
async fn compressed_exports_are_read_back_and_the_vm_is_locked_while_streaming() {
    let pool = pool().await;
    let session = support::session(&pool);
    let vm = pool.find_by_name(ClassId::Vm, "web").unwrap();
    for (compression, magic) in [
        ("true", &[0x1f, 0x8b][..]),
        ("zstd", &[0x28, 0xb5, 0x2f, 0xfd][..]),
    ] {
        let upload = Upload::start(
            pool.master().address,
            &format!(
                "GET /export?session_id={session}&ref={vm}&use_compression={compression} HTTP/1.1\r\nHost: sim\r\n\r\n"
            ),
        )
        .await;
        let task = upload.head.header("task-id").unwrap().to_owned();
        let body = upload.finish().await;
        assert!(body.starts_with(magic), "{compression}");
        assert_eq!(wait_task(&pool, &task).await.0, "success");
        assert_eq!(
            xva::verify(bytes::Bytes::from(body))
                .unwrap()
                .layout
                .disks
                .len(),
            2
        );
    }
    let operations = pool
        .sim()
        .read(|db| db.map(ClassId::Vm, &vm, "current_operations").len());
    assert_eq!(operations, 0, "the export lock is released");
}

#[tokio::test]
async fn a_running_vm_is_not_exported() {
    let pool = pool().await;
    let session = support::session(&pool);
    let vm = pool.find_by_name(ClassId::Vm, "busy").unwrap();
    let task = support::client_task(&pool);
    let reply = get(
        pool.master().address,
        &format!("/export?session_id={session}&ref={vm}&task_id={task}"),
    )
    .await;
    assert_eq!(reply.status, 500);
    let (status, _, error) = task_state(&pool, &task);
    assert_eq!(status, "failure");
    assert_eq!(
        error,
        [
            "VM_BAD_POWER_STATE",
            vm.as_str(),
            "halted, suspended",
            "running"
        ]
    );
}

#[tokio::test]
async fn a_corrupt_archive_fails_the_import_and_leaves_nothing_behind() {
    let pool = pool().await;
    let session = support::session(&pool);
    let vm = pool.find_by_name(ClassId::Vm, "web").unwrap();
    let mut archive = get(
        pool.master().address,
        &format!("/export?session_id={session}&ref={vm}"),
    )
    .await
    .body;
    let count = |pool: &Pool| {
        pool.sim()
            .read(|db| (db.count(ClassId::Vm), db.count(ClassId::Vdi)))
    };
    let before = count(&pool);
    // Flip a byte inside the first data chunk: its checksum no longer matches.
    let header = (0..archive.len())
        .step_by(512)
        .find(|at| archive[*at..].starts_with(b"Ref:"))
        .unwrap();
    archive[header + 512 + 100] ^= 0xff;
    let reply = put(
        pool.master().address,
        &format!("/import?session_id={session}"),
        &archive,
    )
    .await;
    assert_eq!(reply.status, 200);
    let (status, _, error) = wait_task(&pool, reply.header("task-id").unwrap()).await;
    assert_eq!(status, "failure");
    assert_eq!(error[0], "IMPORT_ERROR");
    assert_eq!(count(&pool), before);
}

#[tokio::test]
async fn an_xva_import_with_a_transfer_encoding_is_forbidden() {
    let pool = pool().await;
    let session = support::session(&pool);
    let task = support::client_task(&pool);
    let reply = support::exchange(
        pool.master().address,
        &format!(
            "PUT /import?session_id={session}&task_id={task} HTTP/1.1\r\nHost: sim\r\nTransfer-Encoding: chunked\r\n\r\n"
        ),
        b"0\r\n\r\n",
    )
    .await;
    assert_eq!(reply.status, 403);
    assert_eq!(reply.header("connection"), Some("close"));
    assert_eq!(task_state(&pool, &task).0, "failure");
}
