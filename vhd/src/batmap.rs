//! blktap's batmap ("tdbatmap"): one bit per BAT entry saying the block is fully allocated.
//! Read only; this crate never writes one (creator `tap` would then require it).

use bytes::Buf;

use crate::error::{Error, Result, Structure};
use crate::footer::take_array;
use crate::units::{BlockIndex, ByteOffset};

/// Size of the batmap header.
pub const BATMAP_HEADER_SIZE: usize = 512;
/// The batmap header's cookie.
pub const BATMAP_COOKIE: &[u8; 8] = b"tdbatmap";
/// Newest batmap version blktap writes and accepts (1.2).
pub const BATMAP_VERSION_1_2: u32 = 0x0001_0002;
/// Batmap version 1.1, whose checksum sums *signed* bytes.
pub const BATMAP_VERSION_1_1: u32 = 0x0001_0001;
/// Largest map this crate reads (1 MiB: 8 Mi blocks).
const MAX_MAP_SECTORS: u32 = 2048;

/// The batmap header, found at `table_offset + padded BAT size`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatmapHeader {
    /// Absolute offset of the map.
    pub map_offset: ByteOffset,
    /// Size of the map in sectors.
    pub map_sectors: u32,
    /// Batmap version (≤ 1.2).
    pub version: u32,
    /// Checksum of the map.
    pub checksum: u32,
    /// blktap's marker byte.
    pub marker: u8,
}

impl BatmapHeader {
    /// Parses and validates a batmap header: cookie, version ≤ 1.2, a bounded map size.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        let raw = take_array::<BATMAP_HEADER_SIZE>(bytes, Structure::Batmap)?;
        let mut cursor = &raw[..];
        let mut cookie = [0u8; 8];
        cursor.copy_to_slice(&mut cookie);
        if &cookie != BATMAP_COOKIE {
            return Err(Error::BadCookie {
                structure: Structure::Batmap,
                found: cookie,
                expected: "tdbatmap",
            });
        }
        let header = Self {
            map_offset: ByteOffset(cursor.get_u64()),
            map_sectors: cursor.get_u32(),
            version: cursor.get_u32(),
            checksum: cursor.get_u32(),
            marker: cursor.get_u8(),
        };
        if header.version > BATMAP_VERSION_1_2 {
            return Err(Error::UnsupportedVersion {
                structure: Structure::Batmap,
                found: header.version,
                expected: BATMAP_VERSION_1_2,
            });
        }
        if header.map_sectors == 0 || header.map_sectors > MAX_MAP_SECTORS {
            return Err(Error::InvalidField {
                structure: Structure::Batmap,
                field: "batmap_size",
                value: u64::from(header.map_sectors),
                reason: "must be 1 to 2048 sectors",
            });
        }
        Ok(header)
    }

    /// Bytes of the map to read.
    #[must_use]
    pub fn map_len(&self) -> u64 {
        u64::from(self.map_sectors) * 512
    }
}

/// A validated batmap: which blocks blktap recorded as fully allocated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batmap {
    header: BatmapHeader,
    map: Vec<u8>,
}

impl Batmap {
    /// Checks `map` (the bytes at `header.map_offset`) against the header's checksum, computed
    /// as blktap does over `max(1, ceil((current_size >> 24) / 512))` sectors.
    pub fn parse(header: BatmapHeader, map: &[u8], current_size: u64) -> Result<Self> {
        let map = map
            .get(..usize::try_from(header.map_len()).unwrap_or(usize::MAX))
            .ok_or(Error::Truncated {
                structure: Structure::Batmap,
                needed: header.map_len(),
                available: crate::units::u64_from_usize(map.len()),
            })?;
        let checked_sectors = (current_size >> 24).div_ceil(512).max(1);
        let checked = map
            .get(..usize::try_from(checked_sectors * 512).unwrap_or(usize::MAX))
            .ok_or(Error::InvalidField {
                structure: Structure::Batmap,
                field: "batmap_size",
                value: u64::from(header.map_sectors),
                reason: "smaller than the disk's block count needs",
            })?;
        let computed = if header.version == BATMAP_VERSION_1_1 {
            // blktap 1.1 summed `char`s, which are signed on x86.
            !checked.iter().fold(0u32, |sum, byte| {
                sum.wrapping_add(i32::from(i8::from_ne_bytes([*byte])).cast_unsigned())
            })
        } else {
            !checked
                .iter()
                .fold(0u32, |sum, byte| sum.wrapping_add(u32::from(*byte)))
        };
        if computed != header.checksum {
            return Err(Error::BadChecksum {
                structure: Structure::Batmap,
                found: header.checksum,
                expected: computed,
            });
        }
        Ok(Self {
            header,
            map: map.to_vec(),
        })
    }

    /// The header this map was read with.
    #[must_use]
    pub fn header(&self) -> &BatmapHeader {
        &self.header
    }

    /// True when blktap marked the block fully allocated (every bitmap bit set).
    #[must_use]
    pub fn is_full(&self, index: BlockIndex) -> bool {
        crate::bitmap::bit_is_set(&self.map, index.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header_bytes(version: u32, checksum: u32) -> Vec<u8> {
        let mut raw = vec![0u8; 512];
        raw[..8].copy_from_slice(b"tdbatmap"); // cookie
        raw[8..16].copy_from_slice(&2560u64.to_be_bytes()); // map offset
        raw[16..20].copy_from_slice(&1u32.to_be_bytes()); // one sector of map
        raw[20..24].copy_from_slice(&version.to_be_bytes()); // version
        raw[24..28].copy_from_slice(&checksum.to_be_bytes()); // checksum
        raw
    }

    #[test]
    fn reads_full_block_bits_and_checks_checksum() {
        let mut map = vec![0u8; 512];
        map[0] = 0b1010_0000; // blocks 0 and 2 full
        let checksum = !(0b1010_0000u32);
        let header = BatmapHeader::parse(&header_bytes(BATMAP_VERSION_1_2, checksum)).unwrap();
        assert_eq!(header.map_offset, ByteOffset(2560));
        let batmap = Batmap::parse(header, &map, 10 << 20).unwrap();
        assert!(batmap.is_full(BlockIndex(0)));
        assert!(!batmap.is_full(BlockIndex(1)));
        assert!(batmap.is_full(BlockIndex(2)));
        assert!(!batmap.is_full(BlockIndex(1_000_000)));

        let bad = BatmapHeader::parse(&header_bytes(BATMAP_VERSION_1_2, 0)).unwrap();
        assert!(matches!(
            Batmap::parse(bad, &map, 10 << 20),
            Err(Error::BadChecksum { .. })
        ));
    }

    #[test]
    fn version_1_1_sums_signed_bytes() {
        let mut map = vec![0u8; 512];
        map[0] = 0xFF; // -1 as a signed char
        let checksum = !(u32::MAX); // !(0 + -1) = 0
        let header = BatmapHeader::parse(&header_bytes(BATMAP_VERSION_1_1, checksum)).unwrap();
        assert!(Batmap::parse(header, &map, 10 << 20).is_ok());
    }

    #[test]
    fn rejects_newer_versions_and_bad_cookies() {
        assert!(matches!(
            BatmapHeader::parse(&header_bytes(0x0001_0003, 0)),
            Err(Error::UnsupportedVersion { .. })
        ));
        let mut raw = header_bytes(BATMAP_VERSION_1_2, 0);
        raw[0] = 0;
        assert!(matches!(
            BatmapHeader::parse(&raw),
            Err(Error::BadCookie { .. })
        ));
    }
}
