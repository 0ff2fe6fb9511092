//! Helpers shared by the integration tests.
#![allow(
    dead_code,
    reason = "each test file uses a different subset of the helpers"
)]

use std::path::PathBuf;

use bytes::Bytes;
use sha2::{Digest as _, Sha256};
use xva::model::records::{Sr, Vdi, Vm};
use xva::model::{ExportId, OvaXml, Version};
use xva::{Block, ByteOffset};

/// The third-party fixtures vendored at the repository root (`fixtures/`, see its README).
pub fn fixtures_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures"))
}

pub fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// Lays blocks of one disk over zeros.
pub fn assemble(virtual_size: u64, blocks: &[Block], disk: usize) -> Vec<u8> {
    let mut raw = vec![0u8; usize::try_from(virtual_size).unwrap()];
    for block in blocks.iter().filter(|block| block.disk.get() == disk) {
        let start = usize::try_from(block.offset.get()).unwrap();
        raw[start..start + block.data.len()].copy_from_slice(&block.data);
    }
    raw
}

/// An importable export with one VM and one disk per size; returns the model and the VDI ids
/// in the order the disks were attached.
pub fn export_with_disks(sizes: &[u64]) -> (OvaXml, Vec<ExportId>) {
    let mut ova = OvaXml::new(Version::new("test-host", "2024-05-01"));
    let vm = ova.add(&Vm::new("test-vm", 1 << 30, 1));
    let sr = ova.add(&Sr::new("test-sr"));
    let ids = sizes
        .iter()
        .enumerate()
        .map(|(position, size)| {
            let vdi = Vdi::new(format!("disk{position}"), sr.clone(), *size);
            ova.attach_disk(&vm, &vdi, u32::try_from(position).unwrap(), position == 0)
                .unwrap()
        })
        .collect();
    (ova, ids)
}

/// Extents of `raw` covering exactly the given `(offset, len)` ranges.
pub fn extents_of(raw: &[u8], ranges: &[(u64, u64)]) -> Vec<(ByteOffset, Bytes)> {
    ranges
        .iter()
        .map(|(offset, len)| {
            let start = usize::try_from(*offset).unwrap();
            let end = start + usize::try_from(*len).unwrap();
            (
                ByteOffset::new(*offset),
                Bytes::copy_from_slice(&raw[start..end]),
            )
        })
        .collect()
}

/// Entries of a plain tar archive: (name, data), parsed independently of the crate's reader.
pub fn tar_entries(archive: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut entries = Vec::new();
    let mut position = 0;
    while position + 512 <= archive.len() {
        let header = &archive[position..position + 512];
        if header.iter().all(|byte| *byte == 0) {
            break;
        }
        let name_end = header[..100]
            .iter()
            .position(|byte| *byte == 0)
            .unwrap_or(100);
        let name = String::from_utf8(header[..name_end].to_vec()).unwrap();
        let size_text = std::str::from_utf8(&header[124..135]).unwrap();
        let size = usize::from_str_radix(size_text.trim_matches(['\0', ' ']), 8).unwrap();
        let data = archive[position + 512..position + 512 + size].to_vec();
        entries.push((name, data));
        position += 512 + size.div_ceil(512) * 512;
    }
    entries
}
