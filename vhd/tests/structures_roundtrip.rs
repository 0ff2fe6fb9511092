//! Property tests per structure: any valid footer or dynamic header encodes to bytes that parse
//! back to the same value (the fuzz targets check the other direction, bytes → value → bytes).
#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "test code: a panic is a failed test"
)]

use proptest::prelude::*;
use uuid::Uuid;
use vhd::{
    ByteOffset, Creator, DiskType, DynamicHeader, Footer, Geometry, LOCATOR_COUNT,
    MAX_VIRTUAL_SIZE, ParentLocator, PlatformCode, VhdTimestamp,
};

fn footer_strategy() -> impl Strategy<Value = Footer> {
    let disk_type = prop_oneof![
        Just(DiskType::Fixed),
        Just(DiskType::Dynamic),
        Just(DiskType::Differencing)
    ];
    (
        (
            any::<u32>(),
            any::<u32>(),
            any::<[u8; 4]>(),
            any::<u32>(),
            any::<u32>(),
        ),
        (any::<u64>(), 0..=MAX_VIRTUAL_SIZE / 512, 1u64..1 << 40),
        (any::<u16>(), any::<u8>(), any::<u8>()),
        (disk_type, any::<u128>(), any::<u8>(), any::<u8>()),
    )
        .prop_map(
            |(
                (features, timestamp, application, version, host_os),
                (original_size, size_sectors, header_sector),
                (cylinders, heads, sectors_per_track),
                (disk_type, uuid, saved_state, hidden),
            )| Footer {
                features: features | vhd::FEATURE_RESERVED,
                // Fixed disks have no header: whatever the field holds reads back as None.
                data_offset: (disk_type != DiskType::Fixed)
                    .then_some(ByteOffset(header_sector * 512)),
                timestamp: VhdTimestamp(timestamp),
                creator: Creator {
                    application,
                    version,
                    host_os,
                },
                original_size,
                current_size: size_sectors * 512,
                geometry: Geometry {
                    cylinders,
                    heads,
                    sectors_per_track,
                },
                disk_type,
                unique_id: Uuid::from_u128(uuid),
                saved_state,
                hidden,
            },
        )
}

fn locator_strategy() -> impl Strategy<Value = Option<ParentLocator>> {
    let code = prop_oneof![
        Just(PlatformCode::Wi2r),
        Just(PlatformCode::Wi2k),
        Just(PlatformCode::W2ru),
        Just(PlatformCode::W2ku),
        Just(PlatformCode::Mac),
        Just(PlatformCode::MacX),
    ];
    proptest::option::of((code, any::<u32>(), any::<u32>(), any::<u64>()).prop_map(
        |(platform_code, data_space, data_length, data_offset)| ParentLocator {
            platform_code,
            data_space,
            data_length,
            data_offset: ByteOffset(data_offset),
        },
    ))
}

fn header_strategy() -> impl Strategy<Value = DynamicHeader> {
    (
        (any::<u64>(), any::<u32>(), 9u32..32),
        (any::<u128>(), any::<u32>()),
        // Any text without NUL (the terminator) or U+FEFF (a byte-order mark readers drop),
        // astral characters included (two UTF-16 units each): at most 200 units of 256.
        "[^\u{0}\u{FEFF}]{0,100}",
        proptest::collection::vec(locator_strategy(), LOCATOR_COUNT),
    )
        .prop_map(
            |(
                (table_offset, max_table_entries, block_shift),
                (parent, parent_timestamp),
                parent_unicode_name,
                locators,
            )| {
                let mut parent_locators = [None; LOCATOR_COUNT];
                parent_locators.copy_from_slice(&locators);
                DynamicHeader {
                    table_offset: ByteOffset(table_offset),
                    max_table_entries,
                    block_size: 1 << block_shift,
                    parent_unique_id: Uuid::from_u128(parent),
                    parent_timestamp: VhdTimestamp(parent_timestamp),
                    parent_unicode_name,
                    parent_locators,
                }
            },
        )
}

proptest! {
    #[test]
    fn footers_round_trip(footer in footer_strategy()) {
        prop_assert_eq!(Footer::parse(&footer.encode()).unwrap(), footer);
    }

    #[test]
    fn headers_round_trip(header in header_strategy()) {
        prop_assert_eq!(DynamicHeader::parse(&header.encode().unwrap()).unwrap(), header);
    }
}
