//! The 1024-byte dynamic disk header ("cxsparse") with its parent locators and parent name.

use bytes::{Buf, BufMut};
use uuid::Uuid;

use crate::checksum::vhd_checksum;
use crate::error::{Error, Result, Structure};
use crate::footer::{Footer, take_array};
use crate::units::{ByteOffset, VhdTimestamp};

/// Size of the dynamic header in bytes.
pub const HEADER_SIZE: usize = 1024;
/// The header's magic cookie.
pub const HEADER_COOKIE: &[u8; 8] = b"cxsparse";
/// The only header version accepted (1.0).
pub const HEADER_VERSION: u32 = 0x0001_0000;
/// Number of parent locator entries.
pub const LOCATOR_COUNT: usize = 8;
/// Maximum UTF-16 code units of the parent unicode name (512 bytes).
pub const PARENT_NAME_UNITS: usize = 256;
/// Offset of the checksum field in the header.
const CHECKSUM_OFFSET: usize = 36;
/// Offset of the first parent locator entry.
const LOCATORS_OFFSET: usize = 576;

/// Platform code of a parent locator: how its data names the parent file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PlatformCode {
    /// `Wi2r`: deprecated relative Windows path.
    Wi2r,
    /// `Wi2k`: deprecated absolute Windows path.
    Wi2k,
    /// `W2ru`: relative Windows path, UTF-16LE.
    W2ru,
    /// `W2ku`: absolute Windows path, UTF-16LE.
    W2ku,
    /// `Mac `: Mac OS alias blob.
    Mac,
    /// `MacX`: file URL, UTF-8 (`file://./parent.vhd`).
    MacX,
}

impl PlatformCode {
    /// The on-disk code.
    #[must_use]
    pub fn code(self) -> u32 {
        u32::from_be_bytes(*self.tag())
    }

    /// The four ASCII bytes of the code.
    #[must_use]
    pub fn tag(self) -> &'static [u8; 4] {
        match self {
            Self::Wi2r => b"Wi2r",
            Self::Wi2k => b"Wi2k",
            Self::W2ru => b"W2ru",
            Self::W2ku => b"W2ku",
            Self::Mac => b"Mac ",
            Self::MacX => b"MacX",
        }
    }

    /// Parses a code; 0 (unused entry) gives `None`, unknown codes an error (xen-api fails the
    /// whole header on them).
    fn from_code(index: usize, code: u32) -> Result<Option<Self>> {
        let all = [
            Self::Wi2r,
            Self::Wi2k,
            Self::W2ru,
            Self::W2ku,
            Self::Mac,
            Self::MacX,
        ];
        if code == 0 {
            return Ok(None);
        }
        all.into_iter()
            .find(|candidate| candidate.code() == code)
            .map(Some)
            .ok_or(Error::UnknownLocatorCode { index, code })
    }
}

/// One parent locator entry: where a platform-specific name of the parent file is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ParentLocator {
    /// How the data is encoded.
    pub platform_code: PlatformCode,
    /// Space reserved for the data: sectors per the spec (blktap writes bytes; see
    /// [`ParentLocator::data_space_bytes`]).
    pub data_space: u32,
    /// Length of the data in bytes.
    pub data_length: u32,
    /// Absolute file offset of the data.
    pub data_offset: ByteOffset,
}

impl ParentLocator {
    /// Reserved space in bytes, reading `data_space` as xen-api does: sectors when below 512,
    /// bytes otherwise.
    #[must_use]
    pub fn data_space_bytes(&self) -> u64 {
        if self.data_space < 512 {
            u64::from(self.data_space) * 512
        } else {
            u64::from(self.data_space)
        }
    }

    /// Encodes `path` as locator data for `code`: `file://./<path>` (or `file://<path>` when
    /// absolute or already `./`-relative) for `MacX`; UTF-16LE with backslashes, `.\<path>` when
    /// relative, for the Windows codes; the raw UTF-8 bytes for `Mac `.
    #[must_use]
    pub fn encode_path(code: PlatformCode, path: &str) -> Vec<u8> {
        let relative = !path.starts_with('/') && !path.starts_with("./");
        match code {
            PlatformCode::MacX if relative => format!("file://./{path}").into_bytes(),
            PlatformCode::MacX => format!("file://{path}").into_bytes(),
            PlatformCode::W2ru | PlatformCode::W2ku | PlatformCode::Wi2r | PlatformCode::Wi2k => {
                let windows = path.trim_start_matches("./").replace('/', "\\");
                let windows = if path.starts_with('/') {
                    windows
                } else {
                    format!(".\\{windows}")
                };
                windows.encode_utf16().flat_map(u16::to_le_bytes).collect()
            }
            PlatformCode::Mac => path.as_bytes().to_vec(),
        }
    }

    /// Decodes locator data read from the file into a path: UTF-8 for `MacX` (with a
    /// `file://` prefix removed), UTF-16LE for the Windows codes; `None` for `Mac ` aliases or
    /// undecodable data.
    #[must_use]
    pub fn decode_path(&self, data: &[u8]) -> Option<String> {
        match self.platform_code {
            PlatformCode::MacX => {
                let text = std::str::from_utf8(data).ok()?.trim_end_matches('\0');
                Some(text.strip_prefix("file://").unwrap_or(text).to_owned())
            }
            PlatformCode::W2ru | PlatformCode::W2ku | PlatformCode::Wi2r | PlatformCode::Wi2k => {
                let units: Vec<u16> = data
                    .chunks_exact(2)
                    .map(|pair| <[u8; 2]>::try_from(pair).map_or(0, u16::from_le_bytes))
                    .take_while(|unit| *unit != 0)
                    .collect();
                let path = String::from_utf16(&units).ok()?.replace('\\', "/");
                Some(path.strip_prefix("./").map(str::to_owned).unwrap_or(path))
            }
            PlatformCode::Mac => None,
        }
    }
}

/// A parsed, validated dynamic disk header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DynamicHeader {
    /// Absolute offset of the BAT.
    pub table_offset: ByteOffset,
    /// Entries in the BAT (some writers add spare ones).
    pub max_table_entries: u32,
    /// Bytes per block, a power of two (2 MiB everywhere in this ecosystem).
    pub block_size: u32,
    /// Footer uuid of the parent (differencing disks); nil otherwise.
    pub parent_unique_id: Uuid,
    /// Modification time of the parent.
    pub parent_timestamp: VhdTimestamp,
    /// Parent file name (UTF-16BE on disk); Xen Orchestra resolves it relative to the child.
    pub parent_unicode_name: String,
    /// The eight locator entries; `None` where the platform code is 0.
    pub parent_locators: [Option<ParentLocator>; LOCATOR_COUNT],
}

impl DynamicHeader {
    /// Parses and validates the first [`HEADER_SIZE`] bytes of `bytes`: cookie, all-ones data
    /// offset, version, checksum, power-of-two block size, known locator codes and a decodable
    /// parent name.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        let raw = take_array::<HEADER_SIZE>(bytes, Structure::Header)?;
        let mut cursor = &raw[..];
        let mut cookie = [0u8; 8];
        cursor.copy_to_slice(&mut cookie);
        if &cookie != HEADER_COOKIE {
            return Err(Error::BadCookie {
                structure: Structure::Header,
                found: cookie,
                expected: "cxsparse",
            });
        }
        let data_offset = cursor.get_u64();
        let table_offset = cursor.get_u64();
        let version = cursor.get_u32();
        let max_table_entries = cursor.get_u32();
        let block_size = cursor.get_u32();
        let stored_checksum = cursor.get_u32();
        let mut parent_uuid = [0u8; 16];
        cursor.copy_to_slice(&mut parent_uuid);
        let parent_timestamp = VhdTimestamp(cursor.get_u32());
        cursor.advance(4);
        let mut name = [0u8; 2 * PARENT_NAME_UNITS];
        cursor.copy_to_slice(&mut name);

        let computed = vhd_checksum(&raw, CHECKSUM_OFFSET);
        if stored_checksum != computed {
            return Err(Error::BadChecksum {
                structure: Structure::Header,
                found: stored_checksum,
                expected: computed,
            });
        }
        if data_offset != u64::MAX {
            // xen-api and Xen Orchestra require all 64 bits (the spec text says 0xFFFFFFFF).
            return Err(Error::InvalidField {
                structure: Structure::Header,
                field: "data_offset",
                value: data_offset,
                reason: "must be 0xFFFFFFFFFFFFFFFF",
            });
        }
        if version != HEADER_VERSION {
            return Err(Error::UnsupportedVersion {
                structure: Structure::Header,
                found: version,
                expected: HEADER_VERSION,
            });
        }
        if !block_size.is_power_of_two() || block_size < 512 {
            return Err(Error::InvalidField {
                structure: Structure::Header,
                field: "block_size",
                value: u64::from(block_size),
                reason: "must be a power of two of at least 512",
            });
        }
        let mut parent_locators = [None; LOCATOR_COUNT];
        let mut entries = &raw[LOCATORS_OFFSET..];
        for (index, slot) in parent_locators.iter_mut().enumerate() {
            let code = entries.get_u32();
            let data_space = entries.get_u32();
            let data_length = entries.get_u32();
            entries.advance(4);
            let data_offset = ByteOffset(entries.get_u64());
            *slot = PlatformCode::from_code(index, code)?.map(|platform_code| ParentLocator {
                platform_code,
                data_space,
                data_length,
                data_offset,
            });
        }
        Ok(Self {
            table_offset: ByteOffset(table_offset),
            max_table_entries,
            block_size,
            parent_unique_id: Uuid::from_bytes(parent_uuid),
            parent_timestamp,
            parent_unicode_name: decode_parent_name(&name)?,
            parent_locators,
        })
    }

    /// Encodes the header with a fresh checksum. Fails when the parent name does not fit its
    /// 256 UTF-16 units.
    pub fn encode(&self) -> Result<[u8; HEADER_SIZE]> {
        let name = encode_parent_name(&self.parent_unicode_name)?;
        let mut raw = [0u8; HEADER_SIZE];
        let mut out = &mut raw[..];
        out.put_slice(HEADER_COOKIE);
        out.put_u64(u64::MAX);
        out.put_u64(self.table_offset.0);
        out.put_u32(HEADER_VERSION);
        out.put_u32(self.max_table_entries);
        out.put_u32(self.block_size);
        out.put_u32(0);
        out.put_slice(self.parent_unique_id.as_bytes());
        out.put_u32(self.parent_timestamp.0);
        out.put_u32(0);
        out.put_slice(&name);
        for locator in &self.parent_locators {
            match locator {
                Some(locator) => {
                    out.put_u32(locator.platform_code.code());
                    out.put_u32(locator.data_space);
                    out.put_u32(locator.data_length);
                    out.put_u32(0);
                    out.put_u64(locator.data_offset.0);
                }
                None => out.put_bytes(0, 24),
            }
        }
        let checksum = vhd_checksum(&raw, CHECKSUM_OFFSET);
        let mut field = &mut raw[CHECKSUM_OFFSET..CHECKSUM_OFFSET + 4];
        field.put_u32(checksum);
        Ok(raw)
    }

    /// BAT entries readers use: `min(max_table_entries, ceil(current_size / block_size))`,
    /// after checking that the table covers the whole disk.
    pub fn used_table_entries(&self, footer: &Footer) -> Result<u32> {
        let needed = footer.current_size.div_ceil(u64::from(self.block_size));
        if u64::from(self.max_table_entries) < needed {
            return Err(Error::InvalidField {
                structure: Structure::Header,
                field: "max_table_entries",
                value: u64::from(self.max_table_entries),
                reason: "the BAT does not cover the virtual size",
            });
        }
        // `needed <= max_table_entries`, a u32.
        Ok(u32::try_from(needed).unwrap_or(self.max_table_entries))
    }
}

/// Decodes the UTF-16BE parent name: up to the first NUL, leading byte-order marks skipped
/// (the data is big-endian whatever they say, as in xen-api). All of them, not just one, so that
/// a parsed name encodes and parses back to itself.
fn decode_parent_name(raw: &[u8]) -> Result<String> {
    let mut units: Vec<u16> = raw
        .chunks_exact(2)
        .map(|pair| <[u8; 2]>::try_from(pair).map_or(0, u16::from_be_bytes))
        .take_while(|unit| *unit != 0)
        .collect();
    let marks = units
        .iter()
        .take_while(|unit| matches!(unit, 0xFEFF | 0xFFFE))
        .count();
    units.drain(..marks);
    String::from_utf16(&units).map_err(|_| Error::InvalidParentName {
        reason: "unpaired UTF-16 surrogate",
    })
}

/// Encodes a parent name as NUL-padded UTF-16BE. A leading byte-order mark is refused: readers
/// (xen-api, this crate) would drop it, so the name would not read back as written.
fn encode_parent_name(name: &str) -> Result<[u8; 2 * PARENT_NAME_UNITS]> {
    if name.starts_with('\u{FEFF}') {
        return Err(Error::InvalidParentName {
            reason: "starts with a byte-order mark",
        });
    }
    let mut raw = [0u8; 2 * PARENT_NAME_UNITS];
    let mut out = &mut raw[..];
    for (count, unit) in name.encode_utf16().enumerate() {
        if count >= PARENT_NAME_UNITS || unit == 0 {
            return Err(Error::InvalidParentName {
                reason: if unit == 0 {
                    "contains a NUL character"
                } else {
                    "longer than 256 UTF-16 units"
                },
            });
        }
        out.put_u16(unit);
    }
    Ok(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Spec §3.1 header vector: table offset 2048, 50 entries, 2 MiB blocks, no parent;
    /// checksum 0xFFFFF443.
    fn spec_header() -> DynamicHeader {
        DynamicHeader {
            table_offset: ByteOffset(2048),
            max_table_entries: 50,
            block_size: 0x0020_0000,
            parent_unique_id: Uuid::nil(),
            parent_timestamp: VhdTimestamp(0),
            parent_unicode_name: String::new(),
            parent_locators: [None; LOCATOR_COUNT],
        }
    }

    #[test]
    fn spec_vector_bytes_and_checksum() {
        let encoded = spec_header().encode().unwrap();
        let expected_head: &[u8] = &[
            0x63, 0x78, 0x73, 0x70, 0x61, 0x72, 0x73, 0x65, // "cxsparse"
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // data offset: all ones
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x08, 0x00, // table offset 2048
            0x00, 0x01, 0x00, 0x00, // header version 1.0
            0x00, 0x00, 0x00, 0x32, // max table entries 50
            0x00, 0x20, 0x00, 0x00, // block size 2 MiB
            0xff, 0xff, 0xf4, 0x43, // checksum
        ];
        assert_eq!(&encoded[..40], expected_head);
        assert!(encoded[40..].iter().all(|byte| *byte == 0));
        assert_eq!(DynamicHeader::parse(&encoded).unwrap(), spec_header());
    }

    #[test]
    fn locators_and_parent_name_round_trip() {
        let mut header = spec_header();
        header.parent_unique_id = Uuid::from_u128(7);
        header.parent_unicode_name = "parent-é.vhd".to_owned();
        header.parent_locators[0] = Some(ParentLocator {
            platform_code: PlatformCode::MacX,
            data_space: 1,
            data_length: 22,
            data_offset: ByteOffset(1536),
        });
        let encoded = header.encode().unwrap();
        // Name "p" in UTF-16BE at offset 64; MacX code at 576.
        assert_eq!(&encoded[64..66], &[0x00, b'p']);
        assert_eq!(&encoded[576..580], b"MacX");
        assert_eq!(DynamicHeader::parse(&encoded).unwrap(), header);
    }

    /// Found by review: a name written with two byte-order marks (`FE FF FE FF 00 78`) lost only
    /// the first one on parse, so parse → encode → parse was not a fixed point.
    #[test]
    fn every_leading_byte_order_mark_is_dropped() {
        let mut raw = spec_header().encode().unwrap();
        raw[64..70].copy_from_slice(&[0xfe, 0xff, 0xfe, 0xff, 0x00, b'x']);
        let checksum = vhd_checksum(&raw, CHECKSUM_OFFSET).to_be_bytes();
        raw[36..40].copy_from_slice(&checksum);
        let parsed = DynamicHeader::parse(&raw).unwrap();
        assert_eq!(parsed.parent_unicode_name, "x");
        assert_eq!(
            DynamicHeader::parse(&parsed.encode().unwrap()).unwrap(),
            parsed
        );

        let mut header = spec_header();
        header.parent_unicode_name = "\u{FEFF}x".to_owned();
        assert!(matches!(
            header.encode(),
            Err(Error::InvalidParentName { .. })
        ));
    }

    #[test]
    fn rejects_unknown_locator_and_bad_fields() {
        let mut raw = spec_header().encode().unwrap();
        raw[576..580].copy_from_slice(b"ABCD");
        let checksum = vhd_checksum(&raw, CHECKSUM_OFFSET).to_be_bytes();
        raw[36..40].copy_from_slice(&checksum);
        assert!(matches!(
            DynamicHeader::parse(&raw),
            Err(Error::UnknownLocatorCode {
                index: 0,
                code: 0x4142_4344
            })
        ));

        let mut header = spec_header();
        header.block_size = 3 << 20;
        assert!(matches!(
            DynamicHeader::parse(&header.encode().unwrap()),
            Err(Error::InvalidField {
                field: "block_size",
                ..
            })
        ));

        let mut raw = spec_header().encode().unwrap();
        raw[12] = 0;
        assert!(matches!(
            DynamicHeader::parse(&raw),
            Err(Error::BadChecksum { .. })
        ));
    }

    #[test]
    fn parent_name_quirks() {
        // A byte-order mark is skipped; an unpaired surrogate is refused.
        let mut raw = [0u8; 512];
        raw[..6].copy_from_slice(&[0xFE, 0xFF, 0x00, b'a', 0x00, b'b']);
        assert_eq!(decode_parent_name(&raw).unwrap(), "ab");
        raw[..2].copy_from_slice(&[0xD8, 0x00]);
        assert!(decode_parent_name(&raw).is_err());
        assert!(encode_parent_name(&"x".repeat(257)).is_err());
        assert!(encode_parent_name(&"x".repeat(256)).is_ok());
    }

    #[test]
    fn locator_paths_decode() {
        let macx = ParentLocator {
            platform_code: PlatformCode::MacX,
            data_space: 1,
            data_length: 19,
            data_offset: ByteOffset(1536),
        };
        assert_eq!(
            macx.decode_path(b"file://./parent.vhd").unwrap(),
            "./parent.vhd"
        );
        assert_eq!(macx.data_space_bytes(), 512);
        let w2ku = ParentLocator {
            platform_code: PlatformCode::W2ku,
            data_space: 1024,
            ..macx
        };
        assert_eq!(
            w2ku.decode_path(&[b'a', 0, b'.', 0, b'v', 0]).unwrap(),
            "a.v"
        );
        assert_eq!(w2ku.data_space_bytes(), 1024);

        // Encoding and decoding are inverse for relative paths, for every text code.
        for code in [PlatformCode::MacX, PlatformCode::W2ku, PlatformCode::W2ru] {
            let locator = ParentLocator {
                platform_code: code,
                ..macx
            };
            let data = ParentLocator::encode_path(code, "dir/parent.vhd");
            let decoded = locator.decode_path(&data).unwrap();
            assert_eq!(
                decoded.trim_start_matches("./"),
                "dir/parent.vhd",
                "{code:?}"
            );
        }
        // W2ku data is ".\dir\parent.vhd" in UTF-16LE.
        assert_eq!(
            &ParentLocator::encode_path(PlatformCode::W2ku, "dir/p")[..6],
            &[b'.', 0, b'\\', 0, b'd', 0]
        );
    }
}
