//! Tar headers as xapi writes them and as XVA readers meet them (spec §12.1).
//!
//! Writing: one V7 header per entry, exactly like ocaml-tar's defaults that xapi uses (mode
//! `0000400`, uid/gid 0, typeflag NUL, no magic, checksum `%07o\0`). Reading: V7, POSIX ustar
//! (with its name prefix) and GNU headers, octal or GNU base-256 sizes, space- or
//! NUL-terminated numbers. Only regular files are accepted: XVA archives hold nothing else.

use crate::error::{Error, TarHeaderProblem, excerpt};

/// Size of a tar header and of the blocks entries are padded to.
pub const BLOCK_SIZE: usize = 512;

/// [`BLOCK_SIZE`] as a `u64`.
pub const BLOCK_SIZE_U64: u64 = 512;

/// Longest entry name we write: V7 has 100 bytes and we keep a terminating NUL.
pub const MAX_NAME_LEN: usize = 99;

/// Largest size an 11-digit octal field holds (8 GiB - 1).
const MAX_OCTAL_11: u64 = (1 << 33) - 1;

/// The facts of one entry header the XVA layer needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryHeader {
    /// The entry name (ustar prefix joined with `/`).
    pub name: String,
    /// The entry size in bytes (its data is padded to 512).
    pub size: u64,
}

/// What a 512-byte header block holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderBlock {
    /// A regular file entry.
    Entry(EntryHeader),
    /// An all-zero block: the end-of-archive marker.
    Zero,
}

/// Zero bytes that pad an entry of `size` bytes to a whole block.
pub fn padding(size: u64) -> usize {
    // The remainder of a division by 512 always fits a usize.
    let remainder = usize::try_from(size % 512).unwrap_or(0);
    if remainder == 0 {
        0
    } else {
        BLOCK_SIZE - remainder
    }
}

/// [`padding`] as a `u64`.
pub fn padding_u64(size: u64) -> u64 {
    (BLOCK_SIZE_U64 - size % BLOCK_SIZE_U64) % BLOCK_SIZE_U64
}

/// Encodes a header the way xapi does (ocaml-tar V7 defaults), with modification time `mtime`
/// (xapi sets the export time on `ova.xml` and 0 on chunks).
pub fn encode_header(name: &str, size: u64, mtime: u64) -> Result<[u8; BLOCK_SIZE], Error> {
    if name.len() > MAX_NAME_LEN || name.is_empty() || name.contains('\0') {
        return Err(Error::NameTooLong {
            name: excerpt(name),
        });
    }
    if size > MAX_OCTAL_11 {
        return Err(Error::EntryTooLarge {
            entry: excerpt(name),
            size,
            limit: MAX_OCTAL_11,
        });
    }
    let mut header = [0u8; BLOCK_SIZE];
    put(&mut header, 0, name.as_bytes());
    put(&mut header, 100, b"0000400\0");
    put(&mut header, 108, b"0000000\0");
    put(&mut header, 116, b"0000000\0");
    put(&mut header, 124, format!("{size:011o}\0").as_bytes());
    put(
        &mut header,
        136,
        format!("{:011o}\0", mtime.min(MAX_OCTAL_11)).as_bytes(),
    );
    // typeflag (156) stays NUL: a V7 regular file; magic and the rest stay zero.
    put(&mut header, 148, b"        ");
    let checksum = header_sum(&header);
    put(&mut header, 148, format!("{checksum:07o}\0").as_bytes());
    Ok(header)
}

/// Copies `bytes` into `header` at `offset`; the callers' offsets and lengths are constants
/// that fit a 512-byte header.
fn put(header: &mut [u8; BLOCK_SIZE], offset: usize, bytes: &[u8]) {
    if let Some(slot) = header.get_mut(offset..offset.saturating_add(bytes.len())) {
        slot.copy_from_slice(bytes);
    }
}

fn field(header: &[u8; BLOCK_SIZE], offset: usize, len: usize) -> &[u8] {
    header
        .get(offset..offset.saturating_add(len))
        .unwrap_or(&[])
}

/// Unsigned sum of the header bytes with the checksum field read as spaces.
fn header_sum(header: &[u8; BLOCK_SIZE]) -> u64 {
    header
        .iter()
        .enumerate()
        .map(|(index, byte)| {
            if (148..156).contains(&index) {
                32
            } else {
                u64::from(*byte)
            }
        })
        .sum()
}

/// Signed sum (some old tars computed the checksum over `i8`s).
fn header_sum_signed(header: &[u8; BLOCK_SIZE]) -> i64 {
    header
        .iter()
        .enumerate()
        .map(|(index, byte)| {
            if (148..156).contains(&index) {
                32
            } else {
                i64::from(i8::from_ne_bytes([*byte]))
            }
        })
        .sum()
}

/// Decodes one header block; `offset` is its position in the tar stream, for errors.
pub fn decode_header(header: &[u8; BLOCK_SIZE], offset: u64) -> Result<HeaderBlock, Error> {
    if header.iter().all(|byte| *byte == 0) {
        return Ok(HeaderBlock::Zero);
    }
    let bad = |problem| Error::BadTarHeader { offset, problem };
    let stored = parse_number(field(header, 148, 8))
        .ok_or(bad(TarHeaderProblem::Number { field: "chksum" }))?;
    let computed = header_sum(header);
    let signed_matches =
        i64::try_from(stored).is_ok_and(|stored| stored == header_sum_signed(header));
    if stored != computed && !signed_matches {
        return Err(bad(TarHeaderProblem::Checksum { stored, computed }));
    }
    let typeflag = header.get(156).copied().unwrap_or(0);
    if typeflag != b'0' && typeflag != 0 {
        return Err(bad(TarHeaderProblem::EntryType { typeflag }));
    }
    let size = parse_number(field(header, 124, 12))
        .ok_or(bad(TarHeaderProblem::Number { field: "size" }))?;
    let name = until_nul(field(header, 0, 100));
    let is_posix_ustar = field(header, 257, 6) == b"ustar\0";
    let prefix = if is_posix_ustar {
        until_nul(field(header, 345, 155))
    } else {
        &[]
    };
    let mut full_name =
        Vec::with_capacity(prefix.len().saturating_add(name.len()).saturating_add(1));
    if !prefix.is_empty() {
        full_name.extend_from_slice(prefix);
        full_name.push(b'/');
    }
    full_name.extend_from_slice(name);
    let name = String::from_utf8(full_name).map_err(|_| bad(TarHeaderProblem::Name))?;
    if name.is_empty() {
        return Err(bad(TarHeaderProblem::Name));
    }
    Ok(HeaderBlock::Entry(EntryHeader { name, size }))
}

fn until_nul(bytes: &[u8]) -> &[u8] {
    match bytes.iter().position(|byte| *byte == 0) {
        Some(end) => bytes.get(..end).unwrap_or(bytes),
        None => bytes,
    }
}

/// Parses a numeric field: octal digits between optional leading spaces and a space/NUL
/// terminator, or GNU base-256 (high bit of the first byte set; negative values refused).
fn parse_number(bytes: &[u8]) -> Option<u64> {
    let (&first, rest) = bytes.split_first()?;
    if first & 0x80 != 0 {
        if first & 0x40 != 0 {
            return None;
        }
        let mut value = u64::from(first & 0x3f);
        for byte in rest {
            value = value.checked_mul(256)?.checked_add(u64::from(*byte))?;
        }
        return Some(value);
    }
    let mut digits = bytes.iter().skip_while(|byte| **byte == b' ').peekable();
    let mut value: u64 = 0;
    while let Some(&&byte) = digits.peek() {
        if !(b'0'..=b'7').contains(&byte) {
            break;
        }
        value = value.checked_mul(8)?.checked_add(u64::from(byte - b'0'))?;
        digits.next();
    }
    // Whatever follows the digits must be terminators.
    if !digits.all(|byte| *byte == b' ' || *byte == 0) {
        return None;
    }
    // An empty field reads as 0, as ocaml-tar and GNU tar do.
    Some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xapi_flavour_vector() {
        // The header xapi writes for the first chunk of VDI Ref:2: V7, mode 0400, size 1 MiB
        // (octal 4000000), mtime 0, typeflag NUL, no magic.
        let header = encode_header("Ref:2/00000000", 1 << 20, 0).unwrap();
        assert_eq!(&header[..14], b"Ref:2/00000000");
        assert_eq!(&header[100..108], b"0000400\0");
        assert_eq!(&header[124..136], b"00004000000\0");
        assert_eq!(&header[136..148], b"00000000000\0");
        assert_eq!(header[156], 0);
        assert!(header[257..].iter().all(|byte| *byte == 0));
        // Checksum: the byte sum with the field as spaces, written %07o + NUL.
        let expected = header_sum(&header);
        assert_eq!(&header[148..156], format!("{expected:07o}\0").as_bytes());
        assert_eq!(
            decode_header(&header, 0).unwrap(),
            HeaderBlock::Entry(EntryHeader {
                name: "Ref:2/00000000".into(),
                size: 1 << 20
            })
        );
    }

    #[test]
    fn reads_ustar_prefix_gnu_numbers_and_space_terminators() {
        let mut header = [0u8; BLOCK_SIZE];
        header[..5].copy_from_slice(b"chunk");
        header[100..108].copy_from_slice(b"000644 \0");
        // XO's tar-stream ends numbers with a space.
        header[124..136].copy_from_slice(b"00000000020 ");
        header[156] = b'0';
        header[257..263].copy_from_slice(b"ustar\0");
        header[263..265].copy_from_slice(b"00");
        header[345..352].copy_from_slice(b"Ref:002");
        header[148..156].copy_from_slice(b"        ");
        let sum = header_sum(&header);
        header[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        assert_eq!(
            decode_header(&header, 0).unwrap(),
            HeaderBlock::Entry(EntryHeader {
                name: "Ref:002/chunk".into(),
                size: 16
            })
        );
        // GNU base-256 size.
        let mut big = [0u8; 12];
        big[0] = 0x80;
        big[11] = 1;
        big[10] = 2;
        assert_eq!(parse_number(&big), Some(513));
        assert_eq!(parse_number(b"  17 \0\0"), Some(15));
        assert_eq!(parse_number(b"\0\0\0"), Some(0));
        assert_eq!(parse_number(b"18"), None);
        assert_eq!(parse_number(b"1 2"), None);
        assert_eq!(parse_number(&[0xff; 12]), None);
    }

    #[test]
    fn rejects_bad_headers() {
        let mut header = encode_header("ova.xml", 10, 0).unwrap();
        header[0] = b'O';
        assert!(matches!(
            decode_header(&header, 512),
            Err(Error::BadTarHeader {
                offset: 512,
                problem: TarHeaderProblem::Checksum { .. }
            })
        ));
        let mut link = encode_header("x", 0, 0).unwrap();
        link[156] = b'5';
        link[148..156].copy_from_slice(b"        ");
        let sum = header_sum(&link);
        link[148..156].copy_from_slice(format!("{sum:07o}\0").as_bytes());
        assert!(matches!(
            decode_header(&link, 0),
            Err(Error::BadTarHeader {
                problem: TarHeaderProblem::EntryType { typeflag: b'5' },
                ..
            })
        ));
        assert_eq!(
            decode_header(&[0; BLOCK_SIZE], 0).unwrap(),
            HeaderBlock::Zero
        );
        assert!(encode_header(&"x".repeat(100), 0, 0).is_err());
    }

    #[test]
    fn padding_rounds_to_blocks() {
        assert_eq!(padding(0), 0);
        assert_eq!(padding(1), 511);
        assert_eq!(padding(512), 0);
        assert_eq!(padding(16), 496);
    }
}
