//! Where metadata goes when we write a dynamic or differencing VHD, and which writer's habits
//! (creator, timestamp, geometry rule, BAT placement, locator) we copy.

use uuid::Uuid;

use crate::bat::Bat;
use crate::error::{Error, Result};
use crate::footer::{Creator, DiskType, FEATURE_RESERVED, Footer, check_virtual_size};
use crate::geometry::{Geometry, GeometryRule};
use crate::header::{DynamicHeader, LOCATOR_COUNT, ParentLocator, PlatformCode};
use crate::units::{BLOCK_SIZE, ByteOffset, VhdTimestamp, blocks_for_size, u64_from_usize};

/// The parent a differencing disk names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParentIdentity {
    /// The parent's footer `unique id`. For xapi deltas this is opaque (the base's VHD file on
    /// the SR); when storing chains, use the stored parent's footer uuid.
    pub unique_id: Uuid,
    /// The parent's modification time.
    pub timestamp: VhdTimestamp,
    /// The parent's name: a path relative to the child for files we store (Xen Orchestra
    /// resolves it that way), the base's dom0 path in xapi-shaped streams.
    pub path: String,
}

/// Dynamic (self-contained) or differencing (on top of a parent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiskKind {
    /// Type 3: absent sectors read as zeros.
    Dynamic,
    /// Type 4: absent sectors come from the parent.
    Differencing(ParentIdentity),
}

impl DiskKind {
    /// The footer disk type.
    #[must_use]
    pub fn disk_type(&self) -> DiskType {
        match self {
            Self::Dynamic => DiskType::Dynamic,
            Self::Differencing(_) => DiskType::Differencing,
        }
    }
}

/// How the parent locator of a differencing disk is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocatorStyle {
    /// xapi's export: one `MacX` entry at byte 1536, one sector of space, length of
    /// `file://<path>`, and the data itself never written (the sector stays zero).
    XapiPlaceholder,
    /// One `MacX` entry whose data `file://./<path>` is written right after the header, before
    /// the BAT (spec §7.4).
    MacXWithData,
    /// Like blktap: `MacX` (`file://./<path>`), `W2ku` and `W2ru` (`.\<path>` in UTF-16LE), so
    /// Windows tools find the parent too; all data written before the BAT.
    MacXAndWindows,
}

/// How the parent unicode name is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParentNameStyle {
    /// Proper UTF-16BE.
    Utf16,
    /// One UTF-16 unit per UTF-8 byte of the path (xen-api's `of_utf8 = of_ascii`); identical
    /// to UTF-16 for ASCII paths.
    BytePerUnit,
}

/// The writer habits to copy: xapi's export layout or ours (spec §7.4). Fields are public so a
/// caller can adjust one habit without re-deriving the others.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayoutProfile {
    /// Creator application, version and host OS.
    pub creator: Creator,
    /// Footer timestamp.
    pub timestamp: VhdTimestamp,
    /// CHS variant written in the footer.
    pub geometry: GeometryRule,
    /// Locator of differencing disks.
    pub locator: LocatorStyle,
    /// Parent name encoding.
    pub parent_name: ParentNameStyle,
    /// Lowest BAT offset; xapi leaves the sector at 1536 free and puts the BAT at 2048.
    pub min_table_offset: u64,
}

impl LayoutProfile {
    /// Exactly what `GET /export_raw_vdi?format=vhd` produces (spec §7.2): creator `caml` v1
    /// OS 0, timestamp 0, xen-api geometry, BAT at 2048 after a zero sector, and for deltas a
    /// data-less `MacX` locator at 1536 and the path stored one byte per unit.
    #[must_use]
    pub fn xapi() -> Self {
        Self {
            creator: Creator::XAPI,
            timestamp: VhdTimestamp(0),
            geometry: GeometryRule::XenApi,
            locator: LocatorStyle::XapiPlaceholder,
            parent_name: ParentNameStyle::BytePerUnit,
            min_table_offset: 2048,
        }
    }

    /// Our own files and streams (spec §7.4): creator `caml` v1 OS 0, the given timestamp,
    /// spec geometry, BAT at 1536 (or after the `MacX` locator data of a differencing disk).
    #[must_use]
    pub fn native(timestamp: VhdTimestamp) -> Self {
        Self {
            creator: Creator::XAPI,
            timestamp,
            geometry: GeometryRule::Spec,
            locator: LocatorStyle::MacXWithData,
            parent_name: ParentNameStyle::Utf16,
            min_table_offset: 1536,
        }
    }
}

/// Footer, header and placement of everything before the first block.
#[derive(Debug, Clone)]
pub(crate) struct Metadata {
    pub(crate) footer: Footer,
    pub(crate) header: DynamicHeader,
    /// Locator data and offsets (written between the header and the BAT).
    pub(crate) locator_data: Vec<(ByteOffset, Vec<u8>)>,
    /// Offset of the first block's bitmap: right after the padded BAT.
    pub(crate) first_block_offset: u64,
}

impl Metadata {
    /// Lays out a new disk of `virtual_size` bytes with 2 MiB blocks.
    pub(crate) fn plan(
        virtual_size: u64,
        unique_id: Uuid,
        kind: &DiskKind,
        profile: &LayoutProfile,
    ) -> Result<Self> {
        check_virtual_size(virtual_size)?;
        let entries =
            u32::try_from(blocks_for_size(virtual_size)).map_err(|_| Error::Overflow {
                what: "BAT entries",
            })?;
        let min_table_offset = profile.min_table_offset.max(1536).next_multiple_of(512);
        let mut parent_locators = [None; LOCATOR_COUNT];
        let mut locator_data = Vec::new();
        let mut table_offset = min_table_offset;
        let (parent_unique_id, parent_timestamp, parent_unicode_name) = match kind {
            DiskKind::Dynamic => (Uuid::nil(), VhdTimestamp(0), String::new()),
            DiskKind::Differencing(parent) => {
                let too_long = |_| Error::InvalidParentName {
                    reason: "path too long",
                };
                let entries: Vec<(PlatformCode, Vec<u8>)> = match profile.locator {
                    LocatorStyle::XapiPlaceholder => {
                        // One sector reserved at 1536, its data never written.
                        let url_len = u64_from_usize("file://".len() + parent.path.len());
                        parent_locators[0] = Some(ParentLocator {
                            platform_code: PlatformCode::MacX,
                            data_space: 1,
                            data_length: u32::try_from(url_len).map_err(too_long)?,
                            data_offset: ByteOffset(1536),
                        });
                        Vec::new()
                    }
                    LocatorStyle::MacXWithData => {
                        vec![(
                            PlatformCode::MacX,
                            ParentLocator::encode_path(PlatformCode::MacX, &parent.path),
                        )]
                    }
                    LocatorStyle::MacXAndWindows => {
                        [PlatformCode::MacX, PlatformCode::W2ku, PlatformCode::W2ru]
                            .into_iter()
                            .map(|code| (code, ParentLocator::encode_path(code, &parent.path)))
                            .collect()
                    }
                };
                // Locator data goes between the header and the BAT, one entry after another.
                let mut next_data = min_table_offset.min(1536);
                for (slot, (code, data)) in parent_locators.iter_mut().zip(entries) {
                    let len = u64_from_usize(data.len());
                    let sectors = len.div_ceil(512).max(1);
                    *slot = Some(ParentLocator {
                        platform_code: code,
                        data_space: u32::try_from(sectors).map_err(too_long)?,
                        data_length: u32::try_from(len).map_err(too_long)?,
                        data_offset: ByteOffset(next_data),
                    });
                    locator_data.push((ByteOffset(next_data), data));
                    next_data += sectors * 512;
                }
                table_offset = table_offset.max(next_data);
                let name = match profile.parent_name {
                    ParentNameStyle::Utf16 => parent.path.clone(),
                    ParentNameStyle::BytePerUnit => {
                        parent.path.bytes().map(char::from).collect::<String>()
                    }
                };
                (parent.unique_id, parent.timestamp, name)
            }
        };
        let header = DynamicHeader {
            table_offset: ByteOffset(table_offset),
            max_table_entries: entries,
            block_size: u32::try_from(BLOCK_SIZE).unwrap_or(u32::MAX),
            parent_unique_id,
            parent_timestamp,
            parent_unicode_name,
            parent_locators,
        };
        // Validate the name now rather than when the first byte is produced.
        header.encode()?;
        let footer = Footer {
            features: FEATURE_RESERVED,
            data_offset: Some(ByteOffset(512)),
            timestamp: profile.timestamp,
            creator: profile.creator,
            original_size: virtual_size,
            current_size: virtual_size,
            geometry: Geometry::for_size(virtual_size, profile.geometry),
            disk_type: kind.disk_type(),
            unique_id,
            saved_state: 0,
            hidden: 0,
        };
        Ok(Self {
            footer,
            header,
            locator_data,
            first_block_offset: table_offset + Bat::padded_len(entries),
        })
    }

    /// Footer, header, locator data and the given BAT, laid out from byte 0 up to the first
    /// block.
    pub(crate) fn encode_head(&self, bat: &Bat) -> Result<Vec<u8>> {
        let table_offset =
            usize::try_from(self.header.table_offset.0).map_err(|_| Error::Overflow {
                what: "table offset",
            })?;
        let mut head = Vec::with_capacity(table_offset + bat.encode().len());
        head.extend_from_slice(&self.footer.encode());
        head.extend_from_slice(&self.header.encode()?);
        head.resize(table_offset, 0);
        for (offset, data) in &self.locator_data {
            let start = usize::try_from(offset.0).unwrap_or(usize::MAX);
            let slot = start
                .checked_add(data.len())
                .and_then(|end| head.get_mut(start..end))
                .ok_or(Error::Overflow {
                    what: "locator data placement",
                })?;
            slot.copy_from_slice(data);
        }
        head.extend_from_slice(&bat.encode());
        Ok(head)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delta() -> DiskKind {
        DiskKind::Differencing(ParentIdentity {
            unique_id: Uuid::from_u128(9),
            timestamp: VhdTimestamp(77),
            path: "/var/run/sr-mount/sr/base.vhd".to_owned(),
        })
    }

    #[test]
    fn xapi_layout_keeps_sector_1536_empty() {
        let meta = Metadata::plan(
            10 << 30,
            Uuid::from_u128(1),
            &delta(),
            &LayoutProfile::xapi(),
        )
        .unwrap();
        assert_eq!(meta.header.table_offset, ByteOffset(2048));
        assert_eq!(meta.header.max_table_entries, 5120);
        assert_eq!(meta.first_block_offset, 22528);
        let locator = meta.header.parent_locators[0].unwrap();
        assert_eq!(locator.platform_code, PlatformCode::MacX);
        assert_eq!(locator.data_offset, ByteOffset(1536));
        assert_eq!(locator.data_length, 36); // "file://" + 29-byte path
        assert!(meta.locator_data.is_empty());
        let head = meta.encode_head(&Bat::unallocated(5120).unwrap()).unwrap();
        assert_eq!(head.len(), 22528);
        assert!(head[1536..2048].iter().all(|byte| *byte == 0));
        assert_eq!(meta.footer.timestamp, VhdTimestamp(0));
    }

    #[test]
    fn native_layout_writes_locator_data_before_the_bat() {
        let kind = DiskKind::Differencing(ParentIdentity {
            unique_id: Uuid::from_u128(9),
            timestamp: VhdTimestamp(77),
            path: "parent.vhd".to_owned(),
        });
        let meta = Metadata::plan(
            4 << 20,
            Uuid::from_u128(1),
            &kind,
            &LayoutProfile::native(VhdTimestamp(5)),
        )
        .unwrap();
        assert_eq!(meta.header.table_offset, ByteOffset(2048));
        let head = meta.encode_head(&Bat::unallocated(2).unwrap()).unwrap();
        assert_eq!(&head[1536..1536 + 20], b"file://./parent.vhd\0");
        assert_eq!(meta.first_block_offset, 2560);

        let dynamic = Metadata::plan(
            4 << 20,
            Uuid::from_u128(1),
            &DiskKind::Dynamic,
            &LayoutProfile::native(VhdTimestamp(5)),
        )
        .unwrap();
        assert_eq!(dynamic.header.table_offset, ByteOffset(1536));
        assert_eq!(dynamic.first_block_offset, 2048);
    }

    #[test]
    fn windows_and_mac_locators_are_placed_one_after_another() {
        let kind = DiskKind::Differencing(ParentIdentity {
            unique_id: Uuid::from_u128(9),
            timestamp: VhdTimestamp(77),
            path: "parent.vhd".to_owned(),
        });
        let mut profile = LayoutProfile::native(VhdTimestamp(5));
        profile.locator = LocatorStyle::MacXAndWindows;
        let meta = Metadata::plan(4 << 20, Uuid::from_u128(1), &kind, &profile).unwrap();
        let codes: Vec<_> = meta
            .header
            .parent_locators
            .iter()
            .flatten()
            .map(|locator| (locator.platform_code, locator.data_offset.0))
            .collect();
        assert_eq!(
            codes,
            vec![
                (PlatformCode::MacX, 1536),
                (PlatformCode::W2ku, 2048),
                (PlatformCode::W2ru, 2560)
            ]
        );
        assert_eq!(meta.header.table_offset, ByteOffset(3072));
        let head = meta.encode_head(&Bat::unallocated(2).unwrap()).unwrap();
        assert_eq!(&head[2048..2052], &[b'.', 0, b'\\', 0]);
    }

    #[test]
    fn refuses_sizes_beyond_the_limit() {
        assert!(matches!(
            Metadata::plan(
                crate::units::MAX_VIRTUAL_SIZE + 512,
                Uuid::nil(),
                &DiskKind::Dynamic,
                &LayoutProfile::xapi()
            ),
            Err(Error::DiskTooLarge { .. })
        ));
        assert!(matches!(
            Metadata::plan(
                1000,
                Uuid::nil(),
                &DiskKind::Dynamic,
                &LayoutProfile::xapi()
            ),
            Err(Error::UnalignedSize { .. })
        ));
    }
}
