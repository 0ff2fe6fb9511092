//! Our archives checked by other implementations: xva-img unpacks them (SHA-1), Python's
//! xxhash recomputes our `.xxhash` companions, Python's tarfile and gzip read our framing, and
//! Python's xmlrpc.client reads our `ova.xml`. And the other way: we read what xva-img writes.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a failed test"
)]

mod common;

use std::path::Path;

use bytes::Bytes;
use common::{assemble, export_with_disks, extents_of};
use xva::{ChecksumKind, Compression, WriteOptions};

const MIB: u64 = 1 << 20;

/// A disk of `size` bytes with data in a few places (and holes of whole chunks between).
fn sample_disk(size: u64, seed: u8) -> (Vec<u8>, Vec<(u64, u64)>) {
    let mut raw = vec![0u8; usize::try_from(size).unwrap()];
    let ranges: Vec<(u64, u64)> = [(0, 4096), (MIB + 777, 70_000), (size - 8192, 8192)]
        .into_iter()
        .filter(|(start, len)| start + len <= size)
        .collect();
    for (start, len) in &ranges {
        for index in *start..start + len {
            raw[usize::try_from(index).unwrap()] =
                u8::try_from(index % 249).unwrap().wrapping_add(seed) | 1;
        }
    }
    (raw, ranges)
}

/// Unpacks with GNU tar; `None` when tar is missing (the test then skips, or fails under CI).
#[must_use]
fn extract(archive: &Path, into: &Path) -> Option<()> {
    let tar = test_peers::require("tar")?;
    test_peers::run_ok(&tar, [Path::new("-C"), into, Path::new("-xf"), archive]);
    Some(())
}

#[test]
fn xva_img_unpacks_our_sha1_archive() {
    let Some(xva_img) = test_peers::require("xva-img") else {
        return;
    };
    let sizes = [4 * MIB, 2 * MIB];
    let (ova, ids) = export_with_disks(&sizes);
    let disks: Vec<_> = sizes
        .iter()
        .zip([1u8, 2])
        .map(|(size, seed)| sample_disk(*size, seed))
        .collect();
    let archive = xva::write_all(
        &ova,
        disks
            .iter()
            .map(|(raw, ranges)| extents_of(raw, ranges))
            .collect(),
        WriteOptions {
            checksum: ChecksumKind::Sha1,
            ..WriteOptions::default()
        },
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ours.xva");
    std::fs::write(&path, &archive).unwrap();
    let unpacked = dir.path().join("x");
    std::fs::create_dir(&unpacked).unwrap();
    let Some(()) = extract(&path, &unpacked) else {
        return;
    };
    for (id, (raw, _)) in ids.iter().zip(&disks) {
        let out = dir.path().join(format!("{id}.raw"));
        // xva-img verifies every .checksum while it reassembles the disk.
        test_peers::run_ok(
            &xva_img,
            [Path::new("disk-export"), &unpacked.join(id.as_str()), &out],
        );
        assert_eq!(std::fs::read(&out).unwrap(), *raw, "disk {id}");
    }
}

#[test]
fn we_read_what_xva_img_packages() {
    let Some(xva_img) = test_peers::require("xva-img") else {
        return;
    };
    let size = 3 * MIB;
    let (ova, ids) = export_with_disks(&[size]);
    let (raw, _) = sample_disk(size, 9);
    let dir = tempfile::tempdir().unwrap();
    let raw_path = dir.path().join("disk.raw");
    std::fs::write(&raw_path, &raw).unwrap();
    let chunks = dir.path().join(ids[0].as_str());
    std::fs::create_dir(&chunks).unwrap();
    test_peers::run_ok(&xva_img, [Path::new("disk-import"), &chunks, &raw_path]);
    std::fs::write(dir.path().join("ova.xml"), ova.to_xml()).unwrap();
    let archive = dir.path().join("theirs.xva");
    // xva-img names entries after the last two path components: pass ./ova.xml (see fixtures).
    let ova_arg = dir.path().join(".").join("ova.xml");
    test_peers::run_ok(
        &xva_img,
        [Path::new("package"), &archive, &ova_arg, &chunks],
    );
    let (layout, blocks) = xva::read_all(Bytes::from(std::fs::read(&archive).unwrap())).unwrap();
    assert_eq!(assemble(layout.disks[0].virtual_size, &blocks, 0), raw);
}

#[test]
fn xva_img_agrees_on_the_keepalive_vector() {
    // Spec §15.2: chunk 00000002 is an empty keepalive; xva-img fills skipped numbers with
    // 1 MiB of zeros and writes nothing for the empty chunk, which equals xapi's arithmetic.
    let Some(xva_img) = test_peers::require("xva-img") else {
        return;
    };
    let (ova, ids) = export_with_disks(&[5 * MIB]);
    let disk = ids[0].as_str();
    let mut archive = Vec::new();
    let mut add = |name: &str, data: &[u8]| {
        archive.extend_from_slice(&xva::tar::encode_header(name, data.len() as u64, 0).unwrap());
        archive.extend_from_slice(data);
        archive.resize(archive.len().div_ceil(512) * 512, 0);
    };
    add("ova.xml", ova.to_xml().as_bytes());
    for (number, fill, len) in [(0, b'A', MIB), (2, 0, 0), (3, b'C', MIB), (5, b'E', MIB)] {
        let data = vec![fill; usize::try_from(len).unwrap()];
        let name = format!("{disk}/{number:08}");
        add(&name, &data);
        add(
            &format!("{name}.checksum"),
            ChecksumKind::Sha1.digest(&data).as_bytes(),
        );
    }
    archive.extend_from_slice(&[0; 1024]);
    let (layout, blocks) = xva::read_all(Bytes::from(archive.clone())).unwrap();
    let ours = assemble(layout.disks[0].virtual_size, &blocks, 0);

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keepalive.xva");
    std::fs::write(&path, &archive).unwrap();
    let unpacked = dir.path().join("x");
    std::fs::create_dir(&unpacked).unwrap();
    let Some(()) = extract(&path, &unpacked) else {
        return;
    };
    let out = dir.path().join("disk.raw");
    test_peers::run_ok(
        &xva_img,
        [Path::new("disk-export"), &unpacked.join(disk), &out],
    );
    assert_eq!(std::fs::read(&out).unwrap(), ours);
}

#[test]
fn python_xxhash_confirms_our_companions() {
    let Some(python) = test_peers::require_python_module("xxhash") else {
        return;
    };
    let size = 3 * MIB + 1234;
    let (ova, _) = export_with_disks(&[size, MIB]);
    let (raw, ranges) = sample_disk(size, 5);
    let archive = xva::write_all(
        &ova,
        vec![extents_of(&raw, &ranges), vec![]],
        WriteOptions::default(),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ours.xva");
    std::fs::write(&path, &archive).unwrap();
    let script = r#"
import sys, tarfile, xxhash
checked = 0
with tarfile.open(sys.argv[1]) as archive:
    members = archive.getmembers()
    data = {m.name: archive.extractfile(m).read() for m in members}
    for member in members:
        if member.name.endswith('.xxhash'):
            chunk = data[member.name[:-len('.xxhash')]]
            want = ('%016X' % xxhash.xxh64_intdigest(chunk)).encode()
            if data[member.name] != want:
                sys.exit('mismatch for %s: %r != %r' % (member.name, data[member.name], want))
            checked += 1
print(checked)
"#;
    let stdout = test_peers::run_ok(
        &python,
        [
            std::ffi::OsStr::new("-c"),
            script.as_ref(),
            path.as_os_str(),
        ],
    );
    // Disk 1: chunks 0, 1, 3 (data) and the partial last one; disk 2: chunk 0 (first and last).
    assert_eq!(String::from_utf8(stdout).unwrap().trim(), "5");
}

#[test]
fn python_reads_our_gzip_framing_and_ova_xml() {
    let Some(python) = test_peers::require("python3") else {
        return;
    };
    let (ova, ids) = export_with_disks(&[2 * MIB]);
    let archive = xva::write_all(
        &ova,
        vec![vec![]],
        WriteOptions {
            compression: Compression::GZIP,
            ..WriteOptions::default()
        },
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ours.xva.gz");
    std::fs::write(&path, &archive).unwrap();
    // tarfile + gzip read the framing; xmlrpc.client reads ova.xml with XML-RPC typing (the
    // well-formedness check of spec §17.5).
    let script = r#"
import json, sys, tarfile, xmlrpc.client
with tarfile.open(sys.argv[1], 'r:gz') as archive:
    names = archive.getnames()
    xml = archive.extractfile('ova.xml').read().decode()
(ova,), _ = xmlrpc.client.loads('<methodResponse><params><param>' + xml + '</param></params></methodResponse>')
objects = {o['id']: o for o in ova['objects']}
vbd = next(o['snapshot'] for o in ova['objects'] if o['class'] == 'VBD')
vdi = next(o['snapshot'] for o in ova['objects'] if o['class'] == 'VDI')
print(json.dumps({'names': names, 'export_vsn': ova['version']['export_vsn'],
    'bootable': vbd['bootable'], 'userdevice': vbd['userdevice'], 'virtual_size': vdi['virtual_size']}))
"#;
    let stdout = test_peers::run_ok(
        &python,
        [
            std::ffi::OsStr::new("-c"),
            script.as_ref(),
            path.as_os_str(),
        ],
    );
    let report: serde_json::Value = serde_json::from_slice(&stdout).unwrap();
    let disk = ids[0].as_str();
    assert_eq!(
        report["names"],
        serde_json::json!([
            "ova.xml",
            format!("{disk}/00000000"),
            format!("{disk}/00000000.xxhash"),
            format!("{disk}/00000001"),
            format!("{disk}/00000001.xxhash"),
        ])
    );
    // Booleans are <boolean>; strings and untyped ints read as strings, as xapi writes them.
    assert_eq!(report["bootable"], serde_json::json!(true));
    assert_eq!(report["userdevice"], serde_json::json!("0"));
    assert_eq!(
        report["virtual_size"],
        serde_json::json!((2 * MIB).to_string())
    );
    assert_eq!(report["export_vsn"], serde_json::json!("2"));
}
