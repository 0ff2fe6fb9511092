//! The 512-byte hard-disk footer ("conectix"), present at the end of every VHD and copied at
//! offset 0 of dynamic and differencing disks.

use bytes::{Buf, BufMut};
use uuid::Uuid;

use crate::checksum::vhd_checksum;
use crate::error::{Error, Result, Structure};
use crate::geometry::Geometry;
use crate::units::{ByteOffset, MAX_VIRTUAL_SIZE, SECTOR_SIZE, VhdTimestamp};

/// Size of the footer in bytes.
pub const FOOTER_SIZE: usize = 512;
/// The footer's magic cookie.
pub const FOOTER_COOKIE: &[u8; 8] = b"conectix";
/// The only file format version xen-api and Xen Orchestra accept (1.0).
pub const FORMAT_VERSION: u32 = 0x0001_0000;
/// Features bit 1, "reserved, must be set" by the VHD spec; xen-api always sets it.
pub const FEATURE_RESERVED: u32 = 0x0000_0002;
/// Features bit 0: a temporary disk.
pub const FEATURE_TEMPORARY: u32 = 0x0000_0001;
/// Offset of the checksum field in the footer.
const CHECKSUM_OFFSET: usize = 64;
/// `data offset` of a fixed disk: all ones.
const NO_DATA_OFFSET: u64 = u64::MAX;

/// The footer's disk type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DiskType {
    /// Type 2: raw data followed by the footer.
    Fixed,
    /// Type 3: sparse, blocks allocated on demand.
    Dynamic,
    /// Type 4: sparse, unallocated sectors come from a parent disk.
    Differencing,
}

impl DiskType {
    /// The on-disk code (2, 3 or 4).
    #[must_use]
    pub fn code(self) -> u32 {
        match self {
            Self::Fixed => 2,
            Self::Dynamic => 3,
            Self::Differencing => 4,
        }
    }

    /// Parses an on-disk code; the reserved codes 0, 1, 5 and 6 and anything else are refused.
    pub fn from_code(code: u32) -> Result<Self> {
        match code {
            2 => Ok(Self::Fixed),
            3 => Ok(Self::Dynamic),
            4 => Ok(Self::Differencing),
            found => Err(Error::UnknownDiskType { found }),
        }
    }

    /// True for dynamic and differencing disks (header, BAT and blocks follow the footer copy).
    #[must_use]
    pub fn is_sparse(self) -> bool {
        !matches!(self, Self::Fixed)
    }
}

impl std::fmt::Display for DiskType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Fixed => "fixed",
            Self::Dynamic => "dynamic",
            Self::Differencing => "differencing",
        })
    }
}

/// Creator application, version and host OS: they steer qemu's size rule and blktap's batmap
/// rule (spec §3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Creator {
    /// Four ASCII bytes, e.g. `caml`, `tap\0`, `qemu`, `xo  `.
    pub application: [u8; 4],
    /// `major << 16 | minor`.
    pub version: u32,
    /// `Wi2k` (0x5769326B), `Mac ` (0x4D616320) or 0.
    pub host_os: u32,
}

impl Creator {
    /// What xapi's vhd-tool writes: `caml`, version 1, host OS 0. Our writers use it too: it is
    /// byte-compatible with xapi streams and makes qemu ≥ 10 size the disk from `current size`.
    pub const XAPI: Self = Self {
        application: *b"caml",
        version: 1,
        host_os: 0,
    };

    /// True for blktap (`tap\0`), whose version decides batmap presence and bitmap bit order.
    #[must_use]
    pub fn is_blktap(&self) -> bool {
        self.application.starts_with(b"tap")
    }
}

/// A parsed, validated hard-disk footer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Footer {
    /// Feature flags ([`FEATURE_RESERVED`] is always written).
    pub features: u32,
    /// Absolute offset of the dynamic header; `None` (all ones) for fixed disks.
    pub data_offset: Option<ByteOffset>,
    /// Creation time.
    pub timestamp: VhdTimestamp,
    /// Creator application, version and host.
    pub creator: Creator,
    /// Size at creation, in bytes.
    pub original_size: u64,
    /// Virtual size in bytes: the size every reader here uses.
    pub current_size: u64,
    /// CHS geometry (informational; never used to size the disk).
    pub geometry: Geometry,
    /// Fixed, dynamic or differencing.
    pub disk_type: DiskType,
    /// The disk's identity; a child's header names it as its parent.
    pub unique_id: Uuid,
    /// Saved-state byte (0 for every disk this crate deals with).
    pub saved_state: u8,
    /// blktap/SM "hidden" byte at offset 85.
    pub hidden: u8,
}

impl Footer {
    /// Parses and validates the first [`FOOTER_SIZE`] bytes of `bytes`: cookie, checksum,
    /// version, disk type, and a virtual size that is sector-aligned and within
    /// [`MAX_VIRTUAL_SIZE`].
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        let raw = take_array::<FOOTER_SIZE>(bytes, Structure::Footer)?;
        let mut cursor = &raw[..];
        let mut cookie = [0u8; 8];
        cursor.copy_to_slice(&mut cookie);
        if &cookie != FOOTER_COOKIE {
            return Err(Error::BadCookie {
                structure: Structure::Footer,
                found: cookie,
                expected: "conectix",
            });
        }
        let features = cursor.get_u32();
        let version = cursor.get_u32();
        let data_offset = cursor.get_u64();
        let timestamp = VhdTimestamp(cursor.get_u32());
        let mut application = [0u8; 4];
        cursor.copy_to_slice(&mut application);
        let creator = Creator {
            application,
            version: cursor.get_u32(),
            host_os: cursor.get_u32(),
        };
        let original_size = cursor.get_u64();
        let current_size = cursor.get_u64();
        let geometry = Geometry {
            cylinders: cursor.get_u16(),
            heads: cursor.get_u8(),
            sectors_per_track: cursor.get_u8(),
        };
        let disk_type_code = cursor.get_u32();
        let stored_checksum = cursor.get_u32();
        let mut uuid = [0u8; 16];
        cursor.copy_to_slice(&mut uuid);
        let saved_state = cursor.get_u8();
        let hidden = cursor.get_u8();

        let computed = vhd_checksum(&raw, CHECKSUM_OFFSET);
        if stored_checksum != computed {
            return Err(Error::BadChecksum {
                structure: Structure::Footer,
                found: stored_checksum,
                expected: computed,
            });
        }
        if version != FORMAT_VERSION {
            return Err(Error::UnsupportedVersion {
                structure: Structure::Footer,
                found: version,
                expected: FORMAT_VERSION,
            });
        }
        let disk_type = DiskType::from_code(disk_type_code)?;
        check_virtual_size(current_size)?;
        let data_offset = if disk_type.is_sparse() {
            if data_offset == NO_DATA_OFFSET || !data_offset.is_multiple_of(SECTOR_SIZE) {
                return Err(Error::InvalidField {
                    structure: Structure::Footer,
                    field: "data_offset",
                    value: data_offset,
                    reason: "a dynamic disk needs a sector-aligned header offset",
                });
            }
            Some(ByteOffset(data_offset))
        } else {
            // Fixed disks have no header; the field is ignored whatever it holds.
            None
        };
        Ok(Self {
            features,
            data_offset,
            timestamp,
            creator,
            original_size,
            current_size,
            geometry,
            disk_type,
            unique_id: Uuid::from_bytes(uuid),
            saved_state,
            hidden,
        })
    }

    /// Encodes the footer with a fresh checksum.
    #[must_use]
    pub fn encode(&self) -> [u8; FOOTER_SIZE] {
        let mut raw = [0u8; FOOTER_SIZE];
        let mut out = &mut raw[..];
        out.put_slice(FOOTER_COOKIE);
        out.put_u32(self.features);
        out.put_u32(FORMAT_VERSION);
        out.put_u64(self.data_offset.map_or(NO_DATA_OFFSET, |offset| offset.0));
        out.put_u32(self.timestamp.0);
        out.put_slice(&self.creator.application);
        out.put_u32(self.creator.version);
        out.put_u32(self.creator.host_os);
        out.put_u64(self.original_size);
        out.put_u64(self.current_size);
        out.put_u16(self.geometry.cylinders);
        out.put_u8(self.geometry.heads);
        out.put_u8(self.geometry.sectors_per_track);
        out.put_u32(self.disk_type.code());
        out.put_u32(0);
        out.put_slice(self.unique_id.as_bytes());
        out.put_u8(self.saved_state);
        out.put_u8(self.hidden);
        let checksum = vhd_checksum(&raw, CHECKSUM_OFFSET);
        let mut field = &mut raw[CHECKSUM_OFFSET..CHECKSUM_OFFSET + 4];
        field.put_u32(checksum);
        raw
    }
}

/// Refuses virtual sizes that are not sector multiples or exceed [`MAX_VIRTUAL_SIZE`].
pub(crate) fn check_virtual_size(size: u64) -> Result<()> {
    if size > MAX_VIRTUAL_SIZE {
        return Err(Error::DiskTooLarge {
            size,
            max: MAX_VIRTUAL_SIZE,
        });
    }
    if !size.is_multiple_of(SECTOR_SIZE) {
        return Err(Error::UnalignedSize { size });
    }
    Ok(())
}

/// Copies the first `N` bytes of `bytes`, or reports the structure as truncated.
pub(crate) fn take_array<const N: usize>(bytes: &[u8], structure: Structure) -> Result<[u8; N]> {
    bytes
        .get(..N)
        .and_then(|head| <[u8; N]>::try_from(head).ok())
        .ok_or(Error::Truncated {
            structure,
            needed: crate::units::u64_from_usize(N),
            available: crate::units::u64_from_usize(bytes.len()),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The footer of spec §3.1: `caml` v1, 100 MiB, CHS 1003/12/17, dynamic, uuid
    /// 12345678-9abc-def0-1234-56789abcdef0. Checksum 0xFFFFF0F5 (qemu and libvhdi open it).
    fn spec_footer() -> Footer {
        Footer {
            features: FEATURE_RESERVED,
            data_offset: Some(ByteOffset(512)),
            timestamp: VhdTimestamp(0),
            creator: Creator::XAPI,
            original_size: 104_857_600,
            current_size: 104_857_600,
            geometry: Geometry {
                cylinders: 1003,
                heads: 12,
                sectors_per_track: 17,
            },
            disk_type: DiskType::Dynamic,
            unique_id: Uuid::from_u128(0x1234_5678_9abc_def0_1234_5678_9abc_def0),
            saved_state: 0,
            hidden: 0,
        }
    }

    #[test]
    fn spec_vector_bytes_and_checksum() {
        let expected_head: &[u8] = &[
            0x63, 0x6f, 0x6e, 0x65, 0x63, 0x74, 0x69, 0x78, // "conectix"
            0x00, 0x00, 0x00, 0x02, // features: reserved bit
            0x00, 0x01, 0x00, 0x00, // format version 1.0
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x00, // data offset 512
            0x00, 0x00, 0x00, 0x00, // timestamp 0
            0x63, 0x61, 0x6d, 0x6c, // creator "caml"
            0x00, 0x00, 0x00, 0x01, // creator version 1
            0x00, 0x00, 0x00, 0x00, // host OS 0
            0x00, 0x00, 0x00, 0x00, 0x06, 0x40, 0x00, 0x00, // original size 100 MiB
            0x00, 0x00, 0x00, 0x00, 0x06, 0x40, 0x00, 0x00, // current size 100 MiB
            0x03, 0xeb, 0x0c, 0x11, // CHS 1003/12/17
            0x00, 0x00, 0x00, 0x03, // dynamic
            0xff, 0xff, 0xf0, 0xf5, // checksum
            0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0, // uuid, RFC 4122 byte order
            0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0, //
            0x00, // saved state
        ];
        let encoded = spec_footer().encode();
        assert_eq!(&encoded[..85], expected_head);
        assert!(encoded[85..].iter().all(|byte| *byte == 0));
        assert_eq!(Footer::parse(&encoded).unwrap(), spec_footer());
    }

    #[test]
    fn rejects_bad_checksum_cookie_version_type_and_size() {
        let good = spec_footer().encode();

        let mut bad = good;
        bad[100] ^= 1;
        assert!(matches!(
            Footer::parse(&bad),
            Err(Error::BadChecksum {
                found: 0xFFFF_F0F5,
                ..
            })
        ));

        let mut bad = good;
        bad[0] = b'X';
        assert!(matches!(Footer::parse(&bad), Err(Error::BadCookie { .. })));

        let mut footer = spec_footer();
        footer.current_size = MAX_VIRTUAL_SIZE + 512;
        assert!(matches!(
            Footer::parse(&footer.encode()),
            Err(Error::DiskTooLarge { .. })
        ));
        footer.current_size = 1000;
        assert!(matches!(
            Footer::parse(&footer.encode()),
            Err(Error::UnalignedSize { size: 1000 })
        ));

        assert!(matches!(
            Footer::parse(&good[..100]),
            Err(Error::Truncated {
                needed: 512,
                available: 100,
                ..
            })
        ));
    }

    #[test]
    fn fixed_disks_ignore_data_offset() {
        let mut footer = spec_footer();
        footer.disk_type = DiskType::Fixed;
        footer.data_offset = None;
        let encoded = footer.encode();
        assert_eq!(&encoded[16..24], &[0xff; 8]);
        assert_eq!(Footer::parse(&encoded).unwrap(), footer);
    }
}
