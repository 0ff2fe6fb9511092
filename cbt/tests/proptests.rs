//! Property tests: base64 round trip, extents ↔ bitmap, VHD block view, read-request splitting,
//! set operations and block-status building, each checked against a naive bit-by-bit model.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a failed test"
)]

use std::collections::BTreeSet;

use cbt::{
    BlockStatusBuilder, ByteExtent, ByteLen, CbtBlockIndex, ChangedBlocks, Granularity,
    ReadPlanConfig, StatusRule, VHD_BLOCK_SIZE,
};
use proptest::prelude::*;

/// Granularity shifts 9..=17 cover VHD blocks of 4096 down to 16 bits (both scan paths).
fn arb_map() -> impl Strategy<Value = ChangedBlocks> {
    (9u32..=17, 0u64..700)
        .prop_flat_map(|(shift, blocks)| {
            let granularity = 1u64 << shift;
            // Any size whose block count is `blocks`: the last block may be partial.
            let size = if blocks == 0 {
                Just(0).boxed()
            } else {
                ((blocks - 1) * granularity + 1..=blocks * granularity).boxed()
            };
            let byte = prop_oneof![Just(0u8), Just(0xFFu8), any::<u8>()];
            let len = usize::try_from(blocks.div_ceil(8)).unwrap();
            (Just(shift), size, prop::collection::vec(byte, len))
        })
        .prop_map(|(shift, size, bytes)| {
            let granularity = Granularity::new(1 << shift).unwrap();
            // Tolerant decoding clears the padding bits of the last byte.
            ChangedBlocks::from_bitmap_bytes_tolerant(&bytes, ByteLen::new(size), granularity)
                .unwrap()
                .blocks
        })
}

/// Changed bytes as a set of naive per-block ranges, merged.
fn model_extents(map: &ChangedBlocks) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for block in 0..map.block_count() {
        if map.is_changed(CbtBlockIndex::new(block)) {
            let extent = map.block_extent(CbtBlockIndex::new(block)).unwrap();
            let (start, end) = (extent.offset().get(), extent.end().get());
            match out.last_mut() {
                Some(last) if last.1 == start => last.1 = end,
                _ => out.push((start, end)),
            }
        }
    }
    out
}

fn pairs(map: &ChangedBlocks) -> Vec<(u64, u64)> {
    map.byte_extents()
        .map(|extent| (extent.offset().get(), extent.end().get()))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn base64_round_trip(map in arb_map()) {
        let text = map.to_base64();
        let decoded =
            ChangedBlocks::from_base64(&text, map.virtual_size(), map.granularity()).unwrap();
        prop_assert_eq!(&decoded, &map);
        prop_assert_eq!(decoded.to_base64(), text);
        prop_assert_eq!(map.to_bitmap_bytes().len() as u64, map.block_count().div_ceil(8));
    }

    #[test]
    fn extents_match_the_model_and_round_trip(map in arb_map()) {
        let extents = pairs(&map);
        prop_assert_eq!(&extents, &model_extents(&map));
        let total: u64 = extents.iter().map(|(start, end)| end - start).sum();
        prop_assert_eq!(total, map.changed_bytes().get());
        let rebuilt = ChangedBlocks::from_byte_extents(
            map.virtual_size(),
            map.granularity(),
            map.byte_extents(),
        )
        .unwrap();
        prop_assert_eq!(&rebuilt, &map);
        let runs: u64 = map.block_runs().map(|run| run.end.get() - run.start.get()).sum();
        prop_assert_eq!(runs, map.changed_block_count());
        let singles: Vec<u64> = map.changed_blocks().map(CbtBlockIndex::get).collect();
        let model: Vec<u64> = (0..map.block_count())
            .filter(|block| map.is_changed(CbtBlockIndex::new(*block)))
            .collect();
        prop_assert_eq!(singles, model);
    }

    /// Arbitrary written ranges mark exactly the blocks they touch.
    #[test]
    fn marked_ranges_cover_exactly_the_touched_blocks(
        shift in 9u32..=16,
        size in 0u64..3_000_000,
        ranges in prop::collection::vec((0f64..1.0, 0u64..200_000), 0..8),
    ) {
        let granularity = Granularity::new(1 << shift).unwrap();
        let extents: Vec<ByteExtent> = ranges
            .iter()
            .map(|(start, length)| {
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_precision_loss, reason = "test input scaling")]
                let start = (start * size as f64) as u64;
                ByteExtent::at(start, (*length).min(size - start)).unwrap()
            })
            .collect();
        let map = ChangedBlocks::from_byte_extents(ByteLen::new(size), granularity, extents.clone())
            .unwrap();
        let mut expected = BTreeSet::new();
        for extent in extents.iter().filter(|extent| !extent.is_empty()) {
            expected.extend((extent.offset().get() >> shift)..=((extent.end().get() - 1) >> shift));
        }
        let found: BTreeSet<u64> = map.changed_blocks().map(CbtBlockIndex::get).collect();
        prop_assert_eq!(found, expected);
    }

    /// The VHD view holds exactly the 2 MiB blocks containing a changed byte.
    #[test]
    fn vhd_blocks_cover_exactly_the_changed_bytes(map in arb_map()) {
        let blocks: Vec<u32> = map.vhd_blocks().unwrap().map(|block| block.get()).collect();
        let mut expected = BTreeSet::new();
        for (start, end) in pairs(&map) {
            let first = start / VHD_BLOCK_SIZE.get();
            let last = (end - 1) / VHD_BLOCK_SIZE.get();
            expected.extend((first..=last).map(|block| u32::try_from(block).unwrap()));
        }
        // Ascending and unique, equal to the model.
        prop_assert_eq!(blocks, expected.into_iter().collect::<Vec<_>>());
        prop_assert!(map.vhd_blocks().unwrap().all(|block| block.get() < map.vhd_block_count()));
    }

    /// Requests are aligned, at most the maximum, disjoint, ascending, inside the disk, and every
    /// changed byte is read by exactly one request.
    #[test]
    fn read_requests_cover_every_changed_byte_once(
        map in arb_map(),
        alignment_shift in 9u32..=16,
        pieces in 1u32..=8,
        gap in prop_oneof![Just(0u64), 0u64..300_000],
    ) {
        let alignment = 1u32 << alignment_shift;
        let config = ReadPlanConfig::new(alignment * pieces, alignment)
            .unwrap()
            .with_merge_gap(ByteLen::new(gap));
        let size = map.virtual_size().get();
        let requests: Vec<_> = map.read_requests(config).collect();
        let mut previous_end = 0;
        for request in &requests {
            let (start, end) = (request.offset.get(), request.extent().end().get());
            prop_assert!(request.length > 0 && request.length <= config.max_request());
            prop_assert_eq!(start % u64::from(alignment), 0);
            prop_assert!(end <= size);
            prop_assert!(end == size || request.length % alignment == 0);
            prop_assert!(start >= previous_end, "overlap or disorder at {}", start);
            previous_end = end;
        }
        for (start, end) in pairs(&map) {
            // Requests are sorted and disjoint: walk them to cover [start, end).
            let mut cursor = start;
            for request in &requests {
                let extent = request.extent();
                if extent.offset().get() <= cursor && cursor < extent.end().get() {
                    cursor = extent.end().get();
                }
            }
            prop_assert!(cursor >= end, "bytes {}..{} not read", cursor, end);
        }
        // With no widening or merging, the plan reads exactly the changed bytes.
        if gap == 0 && alignment_shift <= map.granularity().shift() && size % u64::from(alignment) == 0 {
            let read: u64 = requests.iter().map(|request| u64::from(request.length)).sum();
            prop_assert_eq!(read, map.changed_bytes().get());
        }
    }

    #[test]
    fn set_operations_match_the_model(left in arb_map(), seed in prop::collection::vec(any::<u8>(), 0..100)) {
        // A second map of the same shape.
        let right = ChangedBlocks::from_bitmap_bytes_tolerant(
            &seed.iter().cycle().take(usize::try_from(left.block_count().div_ceil(8)).unwrap()).copied().collect::<Vec<_>>(),
            left.virtual_size(),
            left.granularity(),
        )
        .unwrap()
        .blocks;
        let union = left.union(&right).unwrap();
        let intersection = left.intersection(&right).unwrap();
        let difference = left.difference(&right).unwrap();
        for block in (0..left.block_count()).map(CbtBlockIndex::new) {
            let (a, b) = (left.is_changed(block), right.is_changed(block));
            prop_assert_eq!(union.is_changed(block), a || b);
            prop_assert_eq!(intersection.is_changed(block), a && b);
            prop_assert_eq!(difference.is_changed(block), a && !b);
        }
    }

    /// Dirty-bitmap descriptors give the same map as marking their dirty ranges.
    #[test]
    fn block_status_matches_marked_extents(
        size in 1u64..5_000_000,
        descriptors in prop::collection::vec((1u64..400_000, 0u64..4), 1..40),
    ) {
        let granularity = Granularity::XAPI_CBT;
        let mut builder =
            BlockStatusBuilder::new(ByteLen::new(size), granularity, StatusRule::DirtyBitmap).unwrap();
        let mut expected = ChangedBlocks::new(ByteLen::new(size), granularity).unwrap();
        let mut position = 0;
        for (length, flags) in descriptors.into_iter().chain([(size, 0)]) {
            if position < size && flags & 1 != 0 {
                let end = (position + length).min(size);
                expected.mark_changed(ByteExtent::at(position, end - position).unwrap()).unwrap();
            }
            position = (position + length).min(size);
            builder.push_descriptor(length, flags).unwrap();
        }
        prop_assert_eq!(builder.finish().unwrap(), expected);
    }
}
