//! VHD stream encode and decode over a 1 GiB disk with half of its 2 MiB blocks allocated,
//! each beside a plain copy of the same bytes in the same run (target: ≥ 50% of the copy).
//!
//! - encode: plan the stream and write every piece into a reused in-memory sink;
//!   copy: write the same pieces into the same sink.
//! - decode: feed the stream in 64 KiB chunks (as a socket delivers it) and take every block;
//!   copy: copy the same chunks into a reused 2 MiB block buffer.
#![allow(
    clippy::panic,
    clippy::indexing_slicing,
    reason = "bench code on its own fixed-size data: a failure aborts the measurement"
)]
#![allow(
    missing_docs,
    reason = "criterion_group! generates an undocumented pub fn"
)]

use std::hint::black_box;
use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use vhd::{
    BitmapMode, Block, BlockIndex, BlockSet, DiskKind, LayoutProfile, StreamDecoder, StreamEncoder,
    StreamSpec,
};

const DISK_SIZE: u64 = 1 << 30;
const BLOCKS: u32 = 512;
const CHUNK: usize = 64 * 1024;

/// Every other block of the disk, each with its own 2 MiB buffer (so the data really streams
/// through memory rather than staying in cache).
fn blocks() -> Vec<Block> {
    let pattern: Vec<u8> = (0..2usize << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13).to_le_bytes()[0])
        .collect();
    (0..BLOCKS)
        .step_by(2)
        .map(|index| {
            let mut data = pattern.clone();
            data[..4].copy_from_slice(&index.to_be_bytes());
            Block::full(BlockIndex(index), Bytes::from(data))
        })
        .collect()
}

fn encoder(blocks: &[Block]) -> StreamEncoder {
    StreamEncoder::new(StreamSpec {
        virtual_size: DISK_SIZE,
        unique_id: uuid::Uuid::from_u128(1),
        kind: DiskKind::Dynamic,
        blocks: blocks.iter().map(|block| block.index).collect::<BlockSet>(),
        profile: LayoutProfile::xapi(),
        bitmaps: BitmapMode::Full,
    })
    .unwrap_or_else(|error| panic!("bench setup: {error}"))
}

fn pieces(blocks: &[Block]) -> Vec<Bytes> {
    encoder(blocks)
        .into_pieces(blocks.iter().cloned().map(Ok))
        .collect::<Result<_, _>>()
        .unwrap_or_else(|error| panic!("bench setup: {error}"))
}

fn encode(c: &mut Criterion) {
    let blocks = blocks();
    let total = encoder(&blocks).total_len();
    let stream = pieces(&blocks);
    let mut sink: Vec<u8> = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    let mut group = c.benchmark_group("vhd_stream_encode");
    group.throughput(Throughput::Bytes(total));
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(5));
    group.bench_function("encode", |b| {
        b.iter(|| {
            sink.clear();
            for piece in encoder(&blocks).into_pieces(blocks.iter().cloned().map(Ok)) {
                let piece = piece.unwrap_or_else(|error| panic!("encode: {error}"));
                sink.extend_from_slice(&piece);
            }
            black_box(sink.len())
        });
    });
    group.bench_function("copy", |b| {
        b.iter(|| {
            sink.clear();
            for piece in &stream {
                sink.extend_from_slice(piece);
            }
            black_box(sink.len())
        });
    });
    group.finish();
}

fn decode(c: &mut Criterion) {
    let blocks = blocks();
    // The stream as a socket would deliver it: 64 KiB chunks (zero-copy slices of the pieces).
    let chunks: Vec<Bytes> = pieces(&blocks)
        .into_iter()
        .flat_map(|piece| {
            (0..piece.len())
                .step_by(CHUNK)
                .map(move |start| piece.slice(start..(start + CHUNK).min(piece.len())))
                .collect::<Vec<_>>()
        })
        .collect();
    let total: usize = chunks.iter().map(Bytes::len).sum();
    // The decoder assembles each block in a 2 MiB buffer; the copy does the same.
    let mut block_buffer = vec![0u8; 2 << 20];
    let mut group = c.benchmark_group("vhd_stream_decode");
    group.throughput(Throughput::Bytes(u64::try_from(total).unwrap_or(0)));
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(5));
    group.bench_function("decode", |b| {
        b.iter(|| {
            let mut decoder = StreamDecoder::new();
            let mut events = 0usize;
            for chunk in &chunks {
                let mut input = chunk.clone();
                while let Some(event) = decoder
                    .decode(&mut input)
                    .unwrap_or_else(|error| panic!("decode: {error}"))
                {
                    black_box(&event);
                    events += 1;
                }
            }
            decoder
                .finish()
                .unwrap_or_else(|error| panic!("decode: {error}"));
            black_box(events)
        });
    });
    group.bench_function("copy", |b| {
        b.iter(|| {
            let mut position = 0usize;
            for chunk in &chunks {
                if position + chunk.len() > block_buffer.len() {
                    position = 0;
                }
                block_buffer[position..position + chunk.len()].copy_from_slice(chunk);
                position += chunk.len();
                black_box(&block_buffer);
            }
            black_box(position)
        });
    });
    group.finish();
}

criterion_group!(benches, encode, decode);
criterion_main!(benches);
