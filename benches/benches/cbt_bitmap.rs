//! `cbt` bitmaps of a 2 TiB disk at 64 KiB granularity (32 Mi bits, a 5.6 MB base64 string), with
//! 1% and 50% of the bits set uniformly at random (the worst case for run scanning: at 50% the
//! map has about 8 million runs). Targets: decode and extent iteration under 20 ms each.
#![allow(
    missing_docs,
    clippy::expect_used,
    reason = "bench code on its own fixed-size data: a failure aborts the measurement"
)]

use std::hint::black_box;
use std::time::Duration;

use cbt::{ByteLen, CbtBlockIndex, ChangedBlocks, ReadPlanConfig};
use criterion::{Criterion, criterion_group, criterion_main};

const DISK: u64 = 2 << 40;

/// splitmix64: a reproducible pseudo-random stream without extra dependencies.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A map with each bit set with probability `percent`/100.
fn random_map(percent: u64) -> ChangedBlocks {
    let mut map = ChangedBlocks::new_xapi(ByteLen::new(DISK)).expect("2 TiB is within limits");
    let mut state = percent;
    for block in 0..map.block_count() {
        if splitmix(&mut state) % 100 < percent {
            map.mark_block(CbtBlockIndex::new(block))
                .expect("block inside the disk");
        }
    }
    map
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("cbt_bitmap_2TiB");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(4));
    for percent in [1, 50] {
        let map = random_map(percent);
        let text = map.to_base64();
        group.bench_function(format!("decode_{percent}pct"), |b| {
            b.iter(|| ChangedBlocks::from_xapi_base64(black_box(&text), ByteLen::new(DISK)))
        });
        group.bench_function(format!("extents_{percent}pct"), |b| {
            b.iter(|| {
                black_box(&map)
                    .byte_extents()
                    .map(|extent| extent.length().get())
                    .sum::<u64>()
            })
        });
        group.bench_function(format!("vhd_blocks_{percent}pct"), |b| {
            b.iter(|| black_box(&map).vhd_blocks().map(Iterator::count))
        });
        group.bench_function(format!("read_requests_{percent}pct"), |b| {
            b.iter(|| black_box(&map).read_requests(ReadPlanConfig::XAPI).count())
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
