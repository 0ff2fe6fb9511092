//! XVA write and read-with-verify throughput, each beside the raw hash throughput on the same
//! bytes in the same run (target: within 70% of the raw hash speed).
//!
//! The disk is 32 MiB of incompressible data given as 1 MiB extents (whole chunks, which the
//! writer moves into the archive without copying). "read" pushes the archive as one buffer, as
//! the `AsyncArchiveReader` does when it reads each chunk in one go; "read_64k_frames" pushes
//! it in 64 KiB frames, as an HTTP body arrives: each chunk is then hashed frame by frame and
//! handed out as one block per frame-sized piece, never copied back together.
#![allow(
    clippy::unwrap_used,
    reason = "a bench that cannot set up has nothing to measure"
)]
#![allow(
    missing_docs,
    reason = "criterion_group! generates an undocumented pub fn"
)]

use std::hint::black_box;
use std::time::Duration;

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use xva::model::records::{Sr, Vdi, Vm};
use xva::model::{OvaXml, Version};
use xva::{ArchiveReader, ArchiveWriter, ByteOffset, ChecksumKind, Event, WriteOptions};

const MIB: usize = 1 << 20;
const DISK_MIB: usize = 32;

/// Incompressible, never-zero bytes (xorshift), cut into 1 MiB extents.
fn disk_chunks() -> Vec<Bytes> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    (0..DISK_MIB)
        .map(|_| {
            let chunk: Vec<u8> = (0..MIB / 8)
                .flat_map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    (state | 0x0101_0101_0101_0101).to_le_bytes()
                })
                .collect();
            Bytes::from(chunk)
        })
        .collect()
}

fn model() -> OvaXml {
    let mut ova = OvaXml::new(Version::new("bench", "2024-05-01"));
    let vm = ova.add(&Vm::new("bench", 1 << 30, 1));
    let sr = ova.add(&Sr::new("sr"));
    let size = u64::try_from(DISK_MIB * MIB).unwrap();
    ova.attach_disk(&vm, &Vdi::new("disk", sr, size), 0, true)
        .unwrap();
    ova
}

/// Writes the archive and returns its size (frames are dropped as they come, like a socket).
fn write(ova: &OvaXml, chunks: &[Bytes], options: WriteOptions) -> usize {
    let mut writer = ArchiveWriter::new(ova, options).unwrap();
    let mut total = 0;
    writer.begin_disk().unwrap().unwrap();
    for (index, chunk) in chunks.iter().enumerate() {
        let offset = u64::try_from(index * MIB).unwrap();
        writer
            .push_extent(ByteOffset::new(offset), chunk.clone())
            .unwrap();
        while let Some(frame) = writer.pop_output() {
            total += black_box(frame).len();
        }
    }
    writer.end_disk().unwrap();
    assert!(writer.begin_disk().unwrap().is_none());
    writer.finish().unwrap();
    while let Some(frame) = writer.pop_output() {
        total += frame.len();
    }
    total
}

fn write_to_bytes(ova: &OvaXml, chunks: &[Bytes], options: WriteOptions) -> Bytes {
    let mut writer = ArchiveWriter::new(ova, options).unwrap();
    let mut archive = Vec::new();
    writer.begin_disk().unwrap().unwrap();
    for (index, chunk) in chunks.iter().enumerate() {
        writer
            .push_extent(
                ByteOffset::new(u64::try_from(index * MIB).unwrap()),
                chunk.clone(),
            )
            .unwrap();
    }
    writer.end_disk().unwrap();
    writer.begin_disk().unwrap();
    writer.finish().unwrap();
    while let Some(frame) = writer.pop_output() {
        archive.extend_from_slice(&frame);
    }
    Bytes::from(archive)
}

/// Reads and verifies the archive pushed in frames of `frame` bytes; returns the data bytes.
fn read(archive: &Bytes, frame: usize) -> usize {
    let mut reader = ArchiveReader::new();
    let mut offset = 0;
    let mut data = 0;
    loop {
        match reader.next_event().unwrap() {
            Some(Event::Block(block)) => data += black_box(block.data).len(),
            Some(Event::End) => return data,
            Some(_) => {}
            None if offset < archive.len() => {
                let end = (offset + frame).min(archive.len());
                reader.push(archive.slice(offset..end));
                offset = end;
            }
            None => reader.finish_input(),
        }
    }
}

fn throughput(c: &mut Criterion) {
    let chunks = disk_chunks();
    let ova = model();
    for kind in [ChecksumKind::Xxhash, ChecksumKind::Sha1] {
        let options = WriteOptions {
            checksum: kind,
            ..WriteOptions::default()
        };
        let archive = write_to_bytes(&ova, &chunks, options);
        let name = match kind {
            ChecksumKind::Xxhash => "xva_xxhash",
            ChecksumKind::Sha1 => "xva_sha1",
        };
        let mut group = c.benchmark_group(name);
        group.throughput(Throughput::Bytes(u64::try_from(DISK_MIB * MIB).unwrap()));
        group.sample_size(10);
        group.warm_up_time(Duration::from_millis(500));
        group.measurement_time(Duration::from_secs(2));
        group.bench_function("raw_hash", |b| {
            b.iter(|| {
                for chunk in &chunks {
                    black_box(kind.digest(chunk));
                }
            });
        });
        group.bench_function("write", |b| b.iter(|| write(&ova, &chunks, options)));
        group.bench_with_input(
            BenchmarkId::new("read", "one_buffer"),
            &archive,
            |b, archive| {
                b.iter(|| read(archive, archive.len()));
            },
        );
        group.bench_with_input(
            BenchmarkId::new("read", "64k_frames"),
            &archive,
            |b, archive| {
                b.iter(|| read(archive, 64 * 1024));
            },
        );
        group.finish();
    }
}

criterion_group!(benches, throughput);
criterion_main!(benches);
