//! Property: random sparse disks written as an XVA read back identical, whatever the checksum,
//! the compression, the zero-chunk policy and the framing of the input.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a failed test"
)]

mod common;

use bytes::Bytes;
use common::{assemble, export_with_disks};
use proptest::prelude::*;
use xva::{ArchiveReader, ByteOffset, ChecksumKind, Compression, Event, WriteOptions};

const MIB: u64 = 1 << 20;

/// A disk size: tiny, around one chunk, or a few chunks with a partial tail.
fn disk_size() -> impl Strategy<Value = u64> {
    prop_oneof![1u64..5000, (MIB - 3)..(MIB + 3), 1u64..(3 * MIB + MIB / 2)]
}

/// Raw extents: (offset seed, length, fill byte); zero fills exercise zero-chunk skipping.
fn extent_seeds() -> impl Strategy<Value = Vec<(u64, u64, u8)>> {
    prop::collection::vec(
        (
            any::<u64>(),
            1u64..1_600_000,
            prop_oneof![Just(0u8), any::<u8>()],
        ),
        0..6,
    )
}

/// Turns seeds into sorted, non-overlapping extents and the disk they describe.
fn build_disk(size: u64, seeds: &[(u64, u64, u8)]) -> (Vec<u8>, Vec<(ByteOffset, Bytes)>) {
    let mut starts: Vec<(u64, u64, u8)> = seeds
        .iter()
        .map(|(seed, len, fill)| (seed % size, *len, *fill))
        .collect();
    starts.sort_unstable();
    let mut raw = vec![0u8; usize::try_from(size).unwrap()];
    let mut extents = Vec::new();
    let mut end = 0;
    for (start, len, fill) in starts {
        if start < end {
            continue;
        }
        let len = len.min(size - start);
        let data: Vec<u8> = (0..len)
            .map(|index| {
                if fill == 0 {
                    0
                } else {
                    fill ^ u8::try_from(index % 7).unwrap()
                }
            })
            .collect();
        let from = usize::try_from(start).unwrap();
        raw[from..from + data.len()].copy_from_slice(&data);
        extents.push((ByteOffset::new(start), Bytes::from(data)));
        end = start + len;
    }
    (raw, extents)
}

fn options(sha1: bool, compression: u8, skip_zero_chunks: bool) -> WriteOptions {
    WriteOptions {
        checksum: if sha1 {
            ChecksumKind::Sha1
        } else {
            ChecksumKind::Xxhash
        },
        compression: match compression {
            0 => Compression::None,
            1 => Compression::Gzip { level: 1 },
            _ => Compression::Zstd { level: 1 },
        },
        skip_zero_chunks,
        ..WriteOptions::default()
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40))]

    #[test]
    fn sparse_disks_round_trip(
        disks in prop::collection::vec((disk_size(), extent_seeds()), 1..4),
        sha1 in any::<bool>(),
        compression in 0u8..3,
        skip_zero_chunks in any::<bool>(),
        frame in 1usize..300_000,
    ) {
        let sizes: Vec<u64> = disks.iter().map(|(size, _)| *size).collect();
        let (ova, _) = export_with_disks(&sizes);
        let built: Vec<_> = disks.iter().map(|(size, seeds)| build_disk(*size, seeds)).collect();
        // The writer streams disks in sorted-id order, which here is the order they were attached.
        let archive = xva::write_all(
            &ova,
            built.iter().map(|(_, extents)| extents.clone()).collect(),
            options(sha1, compression, skip_zero_chunks),
        ).unwrap();

        // Read it back in frames of an arbitrary size.
        let mut reader = ArchiveReader::new();
        let mut blocks = Vec::new();
        let mut layout = None;
        let mut pieces = archive.chunks(frame).map(Bytes::copy_from_slice);
        let ended = loop {
            match reader.next_event().unwrap() {
                Some(Event::Layout(found)) => layout = Some(found),
                Some(Event::Block(block)) => blocks.push(block),
                Some(Event::DiskEnd(_)) => {}
                Some(Event::End) => break true,
                Some(_) => {}
                None => match pieces.next() {
                    Some(piece) => reader.push(piece),
                    None => reader.finish_input(),
                },
            }
        };
        prop_assert!(ended);
        let layout = layout.unwrap();
        prop_assert_eq!(layout.disks.len(), built.len());
        for (index, (raw, _)) in built.iter().enumerate() {
            prop_assert_eq!(layout.disks[index].virtual_size, sizes[index]);
            let read = assemble(sizes[index], &blocks, index);
            prop_assert!(read == *raw, "disk {} differs", index);
        }
        // Blocks of each disk come in increasing offset order.
        for pair in blocks.windows(2) {
            if pair[0].disk == pair[1].disk {
                prop_assert!(pair[0].offset < pair[1].offset);
            }
        }
    }
}
