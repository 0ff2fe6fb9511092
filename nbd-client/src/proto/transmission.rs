//! Transmission-phase messages: request headers (compact and extended), reply headers (simple,
//! structured, extended) and the payloads of structured reply chunks. Both directions.

use bytes::{BufMut, BytesMut};

use super::consts::{
    ChunkType, CommandFlags, CommandType, EXTENDED_REPLY_MAGIC, EXTENDED_REQUEST_MAGIC, Errno,
    MAX_STRING_LEN, REQUEST_MAGIC, ReplyFlags, SIMPLE_REPLY_MAGIC, STRUCTURED_REPLY_MAGIC,
};
use super::handshake::{read_u16, read_u32, read_u64};
use crate::Error;
use crate::units::{ContextId, Cookie, to_u64, to_usize};

/// Length of a compact request header.
pub const REQUEST_LEN: usize = 28;
/// Length of an extended request header.
pub const EXTENDED_REQUEST_LEN: usize = 32;
/// Length of a simple reply header.
pub const SIMPLE_REPLY_LEN: usize = 16;
/// Length of a structured reply chunk header.
pub const STRUCTURED_REPLY_LEN: usize = 20;
/// Length of an extended reply chunk header.
pub const EXTENDED_REPLY_LEN: usize = 32;
/// Longest reply header; enough bytes to hold any of them.
pub const MAX_REPLY_HEADER_LEN: usize = 32;
/// Largest BLOCK_STATUS payload accepted: 2^20 descriptors as the protocol suggests, extended form.
pub const MAX_BLOCK_STATUS_PAYLOAD: u64 = 8 + 16 * (1 << 20);
/// Largest ERROR / ERROR_OFFSET payload accepted: 4096-byte message plus fixed fields.
pub const MAX_ERROR_PAYLOAD: u64 = 4 + 2 + 4096 + 8;

/// Which request and reply headers the connection uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReplyMode {
    /// Only simple replies (no option negotiated; xapi-nbd, nbd-server).
    Simple,
    /// Structured reply chunks with compact headers (`NBD_OPT_STRUCTURED_REPLY`).
    Structured,
    /// 32-byte headers both ways (`NBD_OPT_EXTENDED_HEADERS`).
    Extended,
}

impl ReplyMode {
    /// Short lowercase name, for messages.
    pub fn name(self) -> &'static str {
        match self {
            ReplyMode::Simple => "simple",
            ReplyMode::Structured => "structured",
            ReplyMode::Extended => "extended",
        }
    }

    /// Length of a request header in this mode.
    pub fn request_len(self) -> usize {
        match self {
            ReplyMode::Extended => EXTENDED_REQUEST_LEN,
            _ => REQUEST_LEN,
        }
    }
}

/// A transmission request header. For a WRITE the payload follows on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    /// Command flags.
    pub flags: CommandFlags,
    /// Command type.
    pub command: CommandType,
    /// Cookie echoed in the replies.
    pub cookie: Cookie,
    /// Offset on the export.
    pub offset: u64,
    /// Length (effect length, or payload length for WRITE).
    pub length: u64,
}

impl Request {
    /// Appends the header in the style of `mode` (compact unless extended). A compact header
    /// cannot carry a length above `u32::MAX`.
    pub fn encode(&self, mode: ReplyMode, dst: &mut BytesMut) -> Result<(), Error> {
        if mode == ReplyMode::Extended {
            dst.put_u32(EXTENDED_REQUEST_MAGIC);
            dst.put_u16(self.flags.0);
            dst.put_u16(self.command.0);
            dst.put_u64(self.cookie.0);
            dst.put_u64(self.offset);
            dst.put_u64(self.length);
        } else {
            let length = u32::try_from(self.length).map_err(|_| Error::OversizePayload {
                what: "compact request length",
                found: self.length,
                max: u64::from(u32::MAX),
            })?;
            dst.put_u32(REQUEST_MAGIC);
            dst.put_u16(self.flags.0);
            dst.put_u16(self.command.0);
            dst.put_u64(self.cookie.0);
            dst.put_u64(self.offset);
            dst.put_u32(length);
        }
        Ok(())
    }

    /// Header length announced by the first 4 bytes of a request (server side).
    pub fn header_len(magic: [u8; 4]) -> Result<usize, Error> {
        match u32::from_be_bytes(magic) {
            REQUEST_MAGIC => Ok(REQUEST_LEN),
            EXTENDED_REQUEST_MAGIC => Ok(EXTENDED_REQUEST_LEN),
            found => Err(Error::BadMagic {
                what: "request",
                found: u64::from(found),
                expected: u64::from(REQUEST_MAGIC),
            }),
        }
    }

    /// Parses a complete request header (28 or 32 bytes, chosen by its magic; server side).
    pub fn decode(bytes: &[u8]) -> Result<Self, Error> {
        let magic: [u8; 4] =
            bytes
                .get(..4)
                .and_then(|m| m.try_into().ok())
                .ok_or(Error::BadLength {
                    what: "request header",
                    found: to_u64(bytes.len()),
                    expected: to_u64(REQUEST_LEN),
                })?;
        let len = Self::header_len(magic)?;
        if bytes.len() != len {
            return Err(Error::BadLength {
                what: "request header",
                found: to_u64(bytes.len()),
                expected: to_u64(len),
            });
        }
        let length = if len == EXTENDED_REQUEST_LEN {
            read_u64(bytes, 24, "request header")?
        } else {
            u64::from(read_u32(bytes, 24, "request header")?)
        };
        Ok(Self {
            flags: CommandFlags(read_u16(bytes, 4, "request header")?),
            command: CommandType(read_u16(bytes, 6, "request header")?),
            cookie: Cookie(read_u64(bytes, 8, "request header")?),
            offset: read_u64(bytes, 16, "request header")?,
            length,
        })
    }
}

/// A decoded reply header of any of the three formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyHeader {
    /// Simple reply; READ data follows only when `errno` is 0.
    Simple {
        /// Error (0 on success).
        errno: Errno,
        /// Cookie of the request.
        cookie: Cookie,
    },
    /// Structured or extended chunk; `length` payload bytes follow.
    Chunk(ChunkHeader),
}

/// Header of a structured (compact) or extended reply chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkHeader {
    /// Chunk flags (DONE).
    pub flags: ReplyFlags,
    /// Chunk type.
    pub chunk_type: ChunkType,
    /// Cookie of the request.
    pub cookie: Cookie,
    /// Extended headers only: the request's offset (`None` for compact chunks).
    pub offset: Option<u64>,
    /// Payload length.
    pub length: u64,
}

impl ReplyHeader {
    /// Header length announced by the first 4 bytes of a reply.
    pub fn header_len(magic: [u8; 4]) -> Result<usize, Error> {
        match u32::from_be_bytes(magic) {
            SIMPLE_REPLY_MAGIC => Ok(SIMPLE_REPLY_LEN),
            STRUCTURED_REPLY_MAGIC => Ok(STRUCTURED_REPLY_LEN),
            EXTENDED_REPLY_MAGIC => Ok(EXTENDED_REPLY_LEN),
            found => Err(Error::BadMagic {
                what: "reply",
                found: u64::from(found),
                expected: u64::from(SIMPLE_REPLY_MAGIC),
            }),
        }
    }

    /// Parses a complete reply header (16, 20 or 32 bytes, chosen by its magic).
    pub fn decode(bytes: &[u8]) -> Result<Self, Error> {
        let magic: [u8; 4] =
            bytes
                .get(..4)
                .and_then(|m| m.try_into().ok())
                .ok_or(Error::BadLength {
                    what: "reply header",
                    found: to_u64(bytes.len()),
                    expected: to_u64(SIMPLE_REPLY_LEN),
                })?;
        let len = Self::header_len(magic)?;
        if bytes.len() != len {
            return Err(Error::BadLength {
                what: "reply header",
                found: to_u64(bytes.len()),
                expected: to_u64(len),
            });
        }
        let what = "reply header";
        Ok(match len {
            SIMPLE_REPLY_LEN => ReplyHeader::Simple {
                errno: Errno(read_u32(bytes, 4, what)?),
                cookie: Cookie(read_u64(bytes, 8, what)?),
            },
            STRUCTURED_REPLY_LEN => ReplyHeader::Chunk(ChunkHeader {
                flags: ReplyFlags(read_u16(bytes, 4, what)?),
                chunk_type: ChunkType(read_u16(bytes, 6, what)?),
                cookie: Cookie(read_u64(bytes, 8, what)?),
                offset: None,
                length: u64::from(read_u32(bytes, 16, what)?),
            }),
            _ => ReplyHeader::Chunk(ChunkHeader {
                flags: ReplyFlags(read_u16(bytes, 4, what)?),
                chunk_type: ChunkType(read_u16(bytes, 6, what)?),
                cookie: Cookie(read_u64(bytes, 8, what)?),
                offset: Some(read_u64(bytes, 16, what)?),
                length: read_u64(bytes, 24, what)?,
            }),
        })
    }

    /// Cookie of the request this header answers.
    pub fn cookie(&self) -> Cookie {
        match self {
            ReplyHeader::Simple { cookie, .. } => *cookie,
            ReplyHeader::Chunk(chunk) => chunk.cookie,
        }
    }
}

/// Appends a simple reply header (server side); READ data, if any, follows separately.
pub fn encode_simple_reply(errno: Errno, cookie: Cookie, dst: &mut BytesMut) {
    dst.put_u32(SIMPLE_REPLY_MAGIC);
    dst.put_u32(errno.0);
    dst.put_u64(cookie.0);
}

/// Appends a structured (compact, `offset == None`) or extended chunk header (server side).
pub fn encode_chunk_header(header: &ChunkHeader, dst: &mut BytesMut) -> Result<(), Error> {
    match header.offset {
        None => {
            let length = u32::try_from(header.length).map_err(|_| Error::OversizePayload {
                what: "structured chunk length",
                found: header.length,
                max: u64::from(u32::MAX),
            })?;
            dst.put_u32(STRUCTURED_REPLY_MAGIC);
            dst.put_u16(header.flags.0);
            dst.put_u16(header.chunk_type.0);
            dst.put_u64(header.cookie.0);
            dst.put_u32(length);
        }
        Some(offset) => {
            dst.put_u32(EXTENDED_REPLY_MAGIC);
            dst.put_u16(header.flags.0);
            dst.put_u16(header.chunk_type.0);
            dst.put_u64(header.cookie.0);
            dst.put_u64(offset);
            dst.put_u64(header.length);
        }
    }
    Ok(())
}

/// One extent of a BLOCK_STATUS reply: `length` bytes with context-specific `flags`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Extent {
    /// Length in bytes (never 0).
    pub length: u64,
    /// Flags (`base:allocation`: HOLE = 1, ZERO = 2; dirty bitmaps: DIRTY = 1).
    pub flags: u64,
}

/// Decoded payload of a BLOCK_STATUS or BLOCK_STATUS_EXT chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockStatusChunk {
    /// Metadata context the extents describe.
    pub context: ContextId,
    /// Consecutive extents starting at the request offset.
    pub extents: Vec<Extent>,
}

impl BlockStatusChunk {
    /// Parses a compact BLOCK_STATUS payload: u32 id, then {u32 length, u32 flags}*.
    pub fn decode(payload: &[u8]) -> Result<Self, Error> {
        let what = "BLOCK_STATUS payload";
        let body_len = payload.len().checked_sub(4).ok_or(Error::BadLength {
            what,
            found: to_u64(payload.len()),
            expected: 12,
        })?;
        if body_len == 0 || body_len % 8 != 0 {
            return Err(Error::BadLength {
                what,
                found: to_u64(payload.len()),
                expected: to_u64(4 + 8 * (body_len / 8).max(1)),
            });
        }
        let context = ContextId(read_u32(payload, 0, what)?);
        let extents = payload
            .get(4..)
            .unwrap_or_default()
            .chunks_exact(8)
            .map(|d| {
                let length = u64::from(read_u32(d, 0, what)?);
                if length == 0 {
                    return Err(Error::Malformed {
                        what,
                        reason: "zero-length extent",
                    });
                }
                Ok(Extent {
                    length,
                    flags: u64::from(read_u32(d, 4, what)?),
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { context, extents })
    }

    /// Parses an extended BLOCK_STATUS_EXT payload: u32 id, u32 count, {u64 length, u64 flags}*.
    pub fn decode_extended(payload: &[u8]) -> Result<Self, Error> {
        let what = "BLOCK_STATUS_EXT payload";
        let context = ContextId(read_u32(payload, 0, what)?);
        let count = to_usize(u64::from(read_u32(payload, 4, what)?), what)?;
        let expected = count.saturating_mul(16).saturating_add(8);
        if count == 0 || payload.len() != expected {
            return Err(Error::BadLength {
                what,
                found: to_u64(payload.len()),
                expected: to_u64(expected.max(24)),
            });
        }
        let extents = payload
            .get(8..)
            .unwrap_or_default()
            .chunks_exact(16)
            .map(|d| {
                let length = read_u64(d, 0, what)?;
                if length == 0 {
                    return Err(Error::Malformed {
                        what,
                        reason: "zero-length extent",
                    });
                }
                Ok(Extent {
                    length,
                    flags: read_u64(d, 8, what)?,
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { context, extents })
    }

    /// Appends the payload in compact (`extended == false`) or extended form (server side).
    pub fn encode(&self, extended: bool, dst: &mut BytesMut) -> Result<(), Error> {
        dst.put_u32(self.context.0);
        if extended {
            dst.put_u32(
                u32::try_from(self.extents.len()).map_err(|_| Error::TooMany {
                    what: "extents",
                    max: usize::try_from(u32::MAX).unwrap_or(usize::MAX),
                })?,
            );
            for extent in &self.extents {
                dst.put_u64(extent.length);
                dst.put_u64(extent.flags);
            }
        } else {
            for extent in &self.extents {
                let too_big = |found| Error::OversizePayload {
                    what: "compact extent",
                    found,
                    max: u64::from(u32::MAX),
                };
                dst.put_u32(u32::try_from(extent.length).map_err(|_| too_big(extent.length))?);
                dst.put_u32(u32::try_from(extent.flags).map_err(|_| too_big(extent.flags))?);
            }
        }
        Ok(())
    }
}

/// Decoded payload of an ERROR or ERROR_OFFSET chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorChunk {
    /// Error value (never 0).
    pub errno: Errno,
    /// Human-readable message (lossy UTF-8).
    pub message: String,
    /// ERROR_OFFSET only: the offset the error applies to.
    pub offset: Option<u64>,
}

impl ErrorChunk {
    /// Parses an ERROR (`with_offset == false`) or ERROR_OFFSET payload.
    pub fn decode(payload: &[u8], with_offset: bool) -> Result<Self, Error> {
        let what = "error chunk";
        let errno = Errno(read_u32(payload, 0, what)?);
        let message_len = usize::from(read_u16(payload, 4, what)?);
        if message_len > MAX_STRING_LEN {
            return Err(Error::OversizePayload {
                what: "error message",
                found: to_u64(message_len),
                max: to_u64(MAX_STRING_LEN),
            });
        }
        let message_end = message_len.saturating_add(6);
        let expected = if with_offset {
            message_end.saturating_add(8)
        } else {
            message_end
        };
        if payload.len() != expected {
            return Err(Error::BadLength {
                what,
                found: to_u64(payload.len()),
                expected: to_u64(expected),
            });
        }
        if errno.0 == 0 {
            return Err(Error::Malformed {
                what,
                reason: "error value 0",
            });
        }
        let message =
            String::from_utf8_lossy(payload.get(6..message_end).unwrap_or_default()).into_owned();
        let offset = if with_offset {
            Some(read_u64(payload, message_end, what)?)
        } else {
            None
        };
        Ok(Self {
            errno,
            message,
            offset,
        })
    }

    /// Appends the payload (server side); the message is truncated to 4096 bytes.
    pub fn encode(&self, dst: &mut BytesMut) {
        let message = self.message.as_bytes();
        let message = message.get(..MAX_STRING_LEN).unwrap_or(message);
        dst.put_u32(self.errno.0);
        dst.put_u16(u16::try_from(message.len()).unwrap_or(0));
        dst.put_slice(message);
        if let Some(offset) = self.offset {
            dst.put_u64(offset);
        }
    }
}

/// Parses an OFFSET_HOLE payload: u64 offset, u32 length (≠ 0).
pub fn decode_offset_hole(payload: &[u8]) -> Result<(u64, u64), Error> {
    let what = "OFFSET_HOLE payload";
    if payload.len() != 12 {
        return Err(Error::BadLength {
            what,
            found: to_u64(payload.len()),
            expected: 12,
        });
    }
    let offset = read_u64(payload, 0, what)?;
    let length = u64::from(read_u32(payload, 8, what)?);
    if length == 0 {
        return Err(Error::Malformed {
            what,
            reason: "zero-length hole",
        });
    }
    Ok((offset, length))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let clean: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        (0..clean.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&clean[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn request_vectors() {
        // Spec §2.4 row 9: READ, cookie 1, offset 2 MiB, length 2 MiB (compact).
        let read = Request {
            flags: CommandFlags::EMPTY,
            command: CommandType::READ,
            cookie: Cookie(1),
            offset: 2 << 20,
            length: 2 << 20,
        };
        let mut buf = BytesMut::new();
        read.encode(ReplyMode::Simple, &mut buf).unwrap();
        let wire = hex("25609513 0000 0000 0000000000000001 0000000000200000 00200000");
        assert_eq!(&buf[..], &wire[..]);
        assert_eq!(Request::decode(&wire).unwrap(), read);
        // Spec §2.6 row 4: READ 512 B at 1 MiB with an extended header (u64 length).
        let ext = hex("21e41c71 0000 0000 0000000000000001 0000000000100000 0000000000000200");
        let decoded = Request::decode(&ext).unwrap();
        assert_eq!(decoded.length, 512);
        let mut buf = BytesMut::new();
        decoded.encode(ReplyMode::Extended, &mut buf).unwrap();
        assert_eq!(&buf[..], &ext[..]);
        // A compact header cannot carry 4 GiB.
        let big = Request {
            length: 1 << 32,
            ..read
        };
        assert!(
            big.encode(ReplyMode::Structured, &mut BytesMut::new())
                .is_err()
        );
    }

    #[test]
    fn reply_header_vectors() {
        // Spec §2.4 row 12: simple reply with EINVAL.
        let simple = ReplyHeader::decode(&hex("67446698 00000016 0000000000000002")).unwrap();
        assert_eq!(
            simple,
            ReplyHeader::Simple {
                errno: Errno::EINVAL,
                cookie: Cookie(2)
            }
        );
        // Spec §2.5 row 13: OFFSET_DATA chunk with DONE, 4104-byte payload.
        let chunk =
            ReplyHeader::decode(&hex("668e33ef 0001 0001 0000000000000001 00001008")).unwrap();
        let ReplyHeader::Chunk(chunk) = chunk else {
            panic!("expected a chunk")
        };
        assert_eq!(chunk.chunk_type, ChunkType::OFFSET_DATA);
        assert!(chunk.flags.contains(ReplyFlags::DONE));
        assert_eq!(chunk.length, 0x1008);
        // Spec §2.6 row 5: extended OFFSET_DATA echoing offset 1 MiB.
        let ext = hex("6e8a278c 0001 0001 0000000000000001 0000000000100000 0000000000000208");
        let ReplyHeader::Chunk(ext_chunk) = ReplyHeader::decode(&ext).unwrap() else {
            panic!("expected a chunk")
        };
        assert_eq!(ext_chunk.offset, Some(1 << 20));
        let mut buf = BytesMut::new();
        encode_chunk_header(&ext_chunk, &mut buf).unwrap();
        assert_eq!(&buf[..], &ext[..]);
        assert!(ReplyHeader::header_len([0x12, 0x56, 0x09, 0x53]).is_err());
    }

    #[test]
    fn block_status_vectors() {
        // Spec §2.5 row 15: context 2, five extents summing to 16 MiB.
        let payload = hex(
            "00000002 00100000 00000000 00010000 00000001 008f0000 00000000 00020000 00000001 005e0000 00000000",
        );
        let chunk = BlockStatusChunk::decode(&payload).unwrap();
        assert_eq!(chunk.context, ContextId(2));
        assert_eq!(chunk.extents.len(), 5);
        assert_eq!(
            chunk.extents.iter().map(|e| e.length).sum::<u64>(),
            16 << 20
        );
        assert_eq!(
            chunk.extents[1],
            Extent {
                length: 65536,
                flags: 1
            }
        );
        // Spec §2.6 row 7: extended form, 4 MiB data then 4 MiB hole+zero.
        let ext = hex(
            "00000000 00000002 0000000000400000 0000000000000000 0000000000400000 0000000000000003",
        );
        let chunk = BlockStatusChunk::decode_extended(&ext).unwrap();
        assert_eq!(
            chunk.extents[1],
            Extent {
                length: 4 << 20,
                flags: 3
            }
        );
        let mut buf = BytesMut::new();
        chunk.encode(true, &mut buf).unwrap();
        assert_eq!(&buf[..], &ext[..]);
        assert!(BlockStatusChunk::decode(&hex("00000002")).is_err());
        assert!(BlockStatusChunk::decode(&hex("00000002 00000000 00000000")).is_err());
    }

    #[test]
    fn error_chunk_vector() {
        // Spec §2.6 row 9: EINVAL with a 48-byte message.
        let message = "len (33554944) is larger than max len (33554432)";
        let mut payload = hex("00000016 0030");
        payload.extend_from_slice(message.as_bytes());
        let chunk = ErrorChunk::decode(&payload, false).unwrap();
        assert_eq!(chunk.errno, Errno::EINVAL);
        assert_eq!(chunk.message, message);
        let mut buf = BytesMut::new();
        chunk.encode(&mut buf);
        assert_eq!(&buf[..], &payload[..]);
        // Message length pointing past the payload.
        assert!(ErrorChunk::decode(&hex("00000016 0030 41"), false).is_err());
    }
}
