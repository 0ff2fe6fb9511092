//! Handshake messages, both directions: greeting, client flags, option requests and replies,
//! the EXPORT_NAME reply and the payloads of INFO, LIST and META_CONTEXT.
//!
//! Encoders append to a `BytesMut`; decoders take exactly the bytes of one message and check
//! every length against its container.

use bytes::{BufMut, BytesMut};

use super::consts::{
    ClientFlags, EXPORT_NAME_PADDING, HandshakeFlags, IHAVEOPT, InfoType, MAX_STRING_LEN,
    NBD_MAGIC, OPTION_REPLY_MAGIC, OptionCode, OptionReplyType, TransmissionFlags,
};
use crate::Error;
use crate::units::{ContextId, to_u64, to_usize};

/// Length of the server greeting: `NBDMAGIC`, `IHAVEOPT`, u16 handshake flags.
pub const GREETING_LEN: usize = 18;
/// Length of the client flags word.
pub const CLIENT_FLAGS_LEN: usize = 4;
/// Length of an option request header: `IHAVEOPT`, u32 option, u32 data length.
pub const OPTION_HEADER_LEN: usize = 16;
/// Length of an option reply header: magic, u32 option, u32 reply type, u32 length.
pub const OPTION_REPLY_HEADER_LEN: usize = 20;
/// Length of an EXPORT_NAME reply without padding: u64 size, u16 flags.
pub const EXPORT_NAME_REPLY_LEN: usize = 10;
/// Largest option reply payload this crate accepts (strings are ≤ 4096 bytes; this leaves room).
pub const MAX_OPTION_REPLY_LEN: u32 = 64 * 1024;
/// Largest option request payload a server built on this crate should accept.
pub const MAX_OPTION_REQUEST_LEN: u32 = 64 * 1024;

/// Reads a big-endian integer from a fixed position; the callers have checked the length.
fn be_u16(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(
        bytes.get(at..at.checked_add(2)?)?.try_into().ok()?,
    ))
}
fn be_u32(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(
        bytes.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}
fn be_u64(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(
        bytes.get(at..at.checked_add(8)?)?.try_into().ok()?,
    ))
}

pub(crate) fn read_u16(bytes: &[u8], at: usize, what: &'static str) -> Result<u16, Error> {
    be_u16(bytes, at).ok_or(Error::BadLength {
        what,
        found: to_u64(bytes.len()),
        expected: to_u64(at.saturating_add(2)),
    })
}
pub(crate) fn read_u32(bytes: &[u8], at: usize, what: &'static str) -> Result<u32, Error> {
    be_u32(bytes, at).ok_or(Error::BadLength {
        what,
        found: to_u64(bytes.len()),
        expected: to_u64(at.saturating_add(4)),
    })
}
pub(crate) fn read_u64(bytes: &[u8], at: usize, what: &'static str) -> Result<u64, Error> {
    be_u64(bytes, at).ok_or(Error::BadLength {
        what,
        found: to_u64(bytes.len()),
        expected: to_u64(at.saturating_add(8)),
    })
}

fn exact_len(bytes: &[u8], expected: usize, what: &'static str) -> Result<(), Error> {
    if bytes.len() == expected {
        Ok(())
    } else {
        Err(Error::BadLength {
            what,
            found: to_u64(bytes.len()),
            expected: to_u64(expected),
        })
    }
}

fn utf8_string(bytes: &[u8], what: &'static str) -> Result<String, Error> {
    if bytes.len() > MAX_STRING_LEN {
        return Err(Error::OversizePayload {
            what,
            found: to_u64(bytes.len()),
            max: to_u64(MAX_STRING_LEN),
        });
    }
    String::from_utf8(bytes.to_vec()).map_err(|_| Error::Malformed {
        what,
        reason: "not UTF-8",
    })
}

fn u32_len(len: usize, what: &'static str) -> Result<u32, Error> {
    u32::try_from(len).map_err(|_| Error::OversizePayload {
        what,
        found: to_u64(len),
        max: u64::from(u32::MAX),
    })
}

/// The server's first message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Greeting {
    /// Handshake flags offered by the server.
    pub flags: HandshakeFlags,
}

impl Greeting {
    /// Appends the 18-byte greeting.
    pub fn encode(&self, dst: &mut BytesMut) {
        dst.put_u64(NBD_MAGIC);
        dst.put_u64(IHAVEOPT);
        dst.put_u16(self.flags.0);
    }

    /// Parses the 18-byte greeting. Oldstyle servers (second magic `cliserv_magic`) are refused.
    pub fn decode(bytes: &[u8]) -> Result<Self, Error> {
        exact_len(bytes, GREETING_LEN, "greeting")?;
        let magic = read_u64(bytes, 0, "greeting")?;
        if magic != NBD_MAGIC {
            return Err(Error::BadMagic {
                what: "greeting",
                found: magic,
                expected: NBD_MAGIC,
            });
        }
        let second = read_u64(bytes, 8, "greeting")?;
        if second != IHAVEOPT {
            return Err(Error::BadMagic {
                what: "newstyle greeting",
                found: second,
                expected: IHAVEOPT,
            });
        }
        Ok(Self {
            flags: HandshakeFlags(read_u16(bytes, 16, "greeting")?),
        })
    }
}

/// Appends the 4-byte client flags.
pub fn encode_client_flags(flags: ClientFlags, dst: &mut BytesMut) {
    dst.put_u32(flags.0);
}

/// Parses the 4-byte client flags (server side).
pub fn decode_client_flags(bytes: &[u8]) -> Result<ClientFlags, Error> {
    exact_len(bytes, CLIENT_FLAGS_LEN, "client flags")?;
    Ok(ClientFlags(read_u32(bytes, 0, "client flags")?))
}

/// Header of an option request; `length` bytes of data follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionRequestHeader {
    /// Option code.
    pub option: OptionCode,
    /// Length of the option data that follows.
    pub length: u32,
}

impl OptionRequestHeader {
    /// Parses a 16-byte option request header (server side). The caller must cap `length`
    /// (e.g. at [`MAX_OPTION_REQUEST_LEN`]) before reading the data.
    pub fn decode(bytes: &[u8]) -> Result<Self, Error> {
        exact_len(bytes, OPTION_HEADER_LEN, "option request header")?;
        let magic = read_u64(bytes, 0, "option request header")?;
        if magic != IHAVEOPT {
            return Err(Error::BadMagic {
                what: "option request",
                found: magic,
                expected: IHAVEOPT,
            });
        }
        Ok(Self {
            option: OptionCode(read_u32(bytes, 8, "option request header")?),
            length: read_u32(bytes, 12, "option request header")?,
        })
    }
}

/// Appends a complete option request (header and data).
pub fn encode_option(option: OptionCode, data: &[u8], dst: &mut BytesMut) -> Result<(), Error> {
    let length = u32_len(data.len(), "option data")?;
    dst.reserve(OPTION_HEADER_LEN.saturating_add(data.len()));
    dst.put_u64(IHAVEOPT);
    dst.put_u32(option.0);
    dst.put_u32(length);
    dst.put_slice(data);
    Ok(())
}

/// Header of an option reply; `length` bytes of payload follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionReplyHeader {
    /// The option this replies to.
    pub option: OptionCode,
    /// Reply type.
    pub reply_type: OptionReplyType,
    /// Length of the payload that follows.
    pub length: u32,
}

impl OptionReplyHeader {
    /// Parses a 20-byte option reply header. The length is checked against
    /// [`MAX_OPTION_REPLY_LEN`] so that nothing is allocated for a hostile length.
    pub fn decode(bytes: &[u8]) -> Result<Self, Error> {
        exact_len(bytes, OPTION_REPLY_HEADER_LEN, "option reply header")?;
        let magic = read_u64(bytes, 0, "option reply header")?;
        if magic != OPTION_REPLY_MAGIC {
            return Err(Error::BadMagic {
                what: "option reply",
                found: magic,
                expected: OPTION_REPLY_MAGIC,
            });
        }
        let length = read_u32(bytes, 16, "option reply header")?;
        if length > MAX_OPTION_REPLY_LEN {
            return Err(Error::OversizePayload {
                what: "option reply",
                found: u64::from(length),
                max: u64::from(MAX_OPTION_REPLY_LEN),
            });
        }
        Ok(Self {
            option: OptionCode(read_u32(bytes, 8, "option reply header")?),
            reply_type: OptionReplyType(read_u32(bytes, 12, "option reply header")?),
            length,
        })
    }
}

/// Appends a complete option reply (server side).
pub fn encode_option_reply(
    option: OptionCode,
    reply_type: OptionReplyType,
    payload: &[u8],
    dst: &mut BytesMut,
) -> Result<(), Error> {
    let length = u32_len(payload.len(), "option reply payload")?;
    dst.reserve(OPTION_REPLY_HEADER_LEN.saturating_add(payload.len()));
    dst.put_u64(OPTION_REPLY_MAGIC);
    dst.put_u32(option.0);
    dst.put_u32(reply_type.0);
    dst.put_u32(length);
    dst.put_slice(payload);
    Ok(())
}

/// The server's answer to `NBD_OPT_EXPORT_NAME`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportNameReply {
    /// Export size in bytes.
    pub size: u64,
    /// Transmission flags.
    pub flags: TransmissionFlags,
}

impl ExportNameReply {
    /// Appends the reply: 10 bytes, then 124 zero bytes unless both sides agreed on NO_ZEROES
    /// (xapi-nbd always pads: 134 bytes in total).
    pub fn encode(&self, no_zeroes: bool, dst: &mut BytesMut) {
        dst.put_u64(self.size);
        dst.put_u16(self.flags.0);
        if !no_zeroes {
            dst.put_bytes(0, EXPORT_NAME_PADDING);
        }
    }

    /// Parses the first 10 bytes of the reply (the padding, if any, is read separately).
    pub fn decode(bytes: &[u8]) -> Result<Self, Error> {
        exact_len(bytes, EXPORT_NAME_REPLY_LEN, "export name reply")?;
        Ok(Self {
            size: read_u64(bytes, 0, "export name reply")?,
            flags: TransmissionFlags(read_u16(bytes, 8, "export name reply")?),
        })
    }
}

/// Block size constraints of an export (`NBD_INFO_BLOCK_SIZE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockSizeConstraints {
    /// Offsets and lengths must be multiples of this (power of two, ≤ 64 KiB).
    pub minimum: u32,
    /// Efficient request granularity (power of two).
    pub preferred: u32,
    /// Largest payload of a READ or WRITE (`0xffffffff`: no fixed limit).
    pub maximum_payload: u32,
}

impl BlockSizeConstraints {
    /// Values assumed when the server sends none: 512-byte alignment (safe for every server,
    /// required by xapi-nbd) and 32 MiB requests.
    pub const INTEROPERABLE_DEFAULT: Self = Self {
        minimum: 512,
        preferred: 4096,
        maximum_payload: 32 * 1024 * 1024,
    };

    /// Checks the rules of `doc/proto.md`: powers of two, minimum ≤ 64 KiB, preferred ≥ minimum,
    /// maximum ≥ preferred or `0xffffffff`.
    pub fn validate(self) -> Result<Self, Error> {
        let bad = |reason| Error::Malformed {
            what: "block size constraints",
            reason,
        };
        if !self.minimum.is_power_of_two() || self.minimum > 64 * 1024 {
            return Err(bad("minimum is not a power of two ≤ 64 KiB"));
        }
        if !self.preferred.is_power_of_two() || self.preferred < self.minimum {
            return Err(bad("preferred is not a power of two ≥ minimum"));
        }
        if self.maximum_payload != u32::MAX
            && (self.maximum_payload < self.preferred
                || !self.maximum_payload.is_multiple_of(self.minimum))
        {
            return Err(bad(
                "maximum is below preferred or not a multiple of minimum",
            ));
        }
        Ok(self)
    }
}

/// One item of an `NBD_REP_INFO` reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Info {
    /// `NBD_INFO_EXPORT`: size and transmission flags.
    Export {
        /// Export size in bytes.
        size: u64,
        /// Transmission flags.
        flags: TransmissionFlags,
    },
    /// `NBD_INFO_NAME`: canonical name.
    Name(String),
    /// `NBD_INFO_DESCRIPTION`: description.
    Description(String),
    /// `NBD_INFO_BLOCK_SIZE`.
    BlockSize(BlockSizeConstraints),
    /// An information type this crate does not know; ignored per the protocol.
    Unknown(InfoType),
}

impl Info {
    /// Parses the payload of an `NBD_REP_INFO` reply (starting with the u16 type).
    pub fn decode(payload: &[u8]) -> Result<Self, Error> {
        let info_type = InfoType(read_u16(payload, 0, "info reply")?);
        let rest = payload.get(2..).unwrap_or_default();
        Ok(match info_type {
            InfoType::EXPORT => {
                exact_len(payload, 12, "NBD_INFO_EXPORT")?;
                Info::Export {
                    size: read_u64(payload, 2, "NBD_INFO_EXPORT")?,
                    flags: TransmissionFlags(read_u16(payload, 10, "NBD_INFO_EXPORT")?),
                }
            }
            InfoType::NAME => Info::Name(utf8_string(rest, "NBD_INFO_NAME")?),
            InfoType::DESCRIPTION => Info::Description(utf8_string(rest, "NBD_INFO_DESCRIPTION")?),
            InfoType::BLOCK_SIZE => {
                exact_len(payload, 14, "NBD_INFO_BLOCK_SIZE")?;
                Info::BlockSize(BlockSizeConstraints {
                    minimum: read_u32(payload, 2, "NBD_INFO_BLOCK_SIZE")?,
                    preferred: read_u32(payload, 6, "NBD_INFO_BLOCK_SIZE")?,
                    maximum_payload: read_u32(payload, 10, "NBD_INFO_BLOCK_SIZE")?,
                })
            }
            other => Info::Unknown(other),
        })
    }

    /// Appends the payload of an `NBD_REP_INFO` reply (server side). `Unknown` encodes as an
    /// empty item of that type.
    pub fn encode(&self, dst: &mut BytesMut) {
        match self {
            Info::Export { size, flags } => {
                dst.put_u16(InfoType::EXPORT.0);
                dst.put_u64(*size);
                dst.put_u16(flags.0);
            }
            Info::Name(name) => {
                dst.put_u16(InfoType::NAME.0);
                dst.put_slice(name.as_bytes());
            }
            Info::Description(text) => {
                dst.put_u16(InfoType::DESCRIPTION.0);
                dst.put_slice(text.as_bytes());
            }
            Info::BlockSize(sizes) => {
                dst.put_u16(InfoType::BLOCK_SIZE.0);
                dst.put_u32(sizes.minimum);
                dst.put_u32(sizes.preferred);
                dst.put_u32(sizes.maximum_payload);
            }
            Info::Unknown(info_type) => dst.put_u16(info_type.0),
        }
    }
}

/// Data of an INFO or GO request: export name and requested information types.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InfoRequest {
    /// Export name (may be a secret: never logged by this crate).
    pub export_name: String,
    /// Requested information types.
    pub requests: Vec<InfoType>,
}

impl InfoRequest {
    /// Appends the option data.
    pub fn encode(&self, dst: &mut BytesMut) -> Result<(), Error> {
        dst.put_u32(u32_len(self.export_name.len(), "export name")?);
        dst.put_slice(self.export_name.as_bytes());
        let count = u16::try_from(self.requests.len()).map_err(|_| Error::OversizePayload {
            what: "info request count",
            found: to_u64(self.requests.len()),
            max: u64::from(u16::MAX),
        })?;
        dst.put_u16(count);
        for info in &self.requests {
            dst.put_u16(info.0);
        }
        Ok(())
    }

    /// Parses the option data (server side).
    pub fn decode(data: &[u8]) -> Result<Self, Error> {
        let name_len = to_usize(u64::from(read_u32(data, 0, "info request")?), "export name")?;
        let name_end = name_len.checked_add(4).ok_or(Error::Malformed {
            what: "info request",
            reason: "name length overflows",
        })?;
        let name = data.get(4..name_end).ok_or(Error::BadLength {
            what: "info request",
            found: to_u64(data.len()),
            expected: to_u64(name_end.saturating_add(2)),
        })?;
        let export_name = utf8_string(name, "export name")?;
        let count = usize::from(read_u16(data, name_end, "info request")?);
        let list_start = name_end.saturating_add(2);
        let expected = list_start.saturating_add(count.saturating_mul(2));
        exact_len(data, expected, "info request")?;
        let requests = (0..count)
            .map(|i| {
                read_u16(
                    data,
                    list_start.saturating_add(i.saturating_mul(2)),
                    "info request",
                )
            })
            .map(|r| r.map(InfoType))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            export_name,
            requests,
        })
    }
}

/// Data of LIST_META_CONTEXT / SET_META_CONTEXT: export name and context queries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaContextRequest {
    /// Export name (may be a secret).
    pub export_name: String,
    /// Queries such as `base:allocation` or `qemu:dirty-bitmap:bm0`.
    pub queries: Vec<String>,
}

/// Largest number of queries accepted in one meta-context request (server side).
pub const MAX_META_QUERIES: usize = 1024;

impl MetaContextRequest {
    /// Appends the option data.
    pub fn encode(&self, dst: &mut BytesMut) -> Result<(), Error> {
        dst.put_u32(u32_len(self.export_name.len(), "export name")?);
        dst.put_slice(self.export_name.as_bytes());
        dst.put_u32(u32_len(self.queries.len(), "query count")?);
        for query in &self.queries {
            dst.put_u32(u32_len(query.len(), "query")?);
            dst.put_slice(query.as_bytes());
        }
        Ok(())
    }

    /// Parses the option data (server side).
    pub fn decode(data: &[u8]) -> Result<Self, Error> {
        let mut cursor = 0usize;
        let mut take_string = |what: &'static str| -> Result<String, Error> {
            let len = to_usize(u64::from(read_u32(data, cursor, what)?), what)?;
            let start = cursor.saturating_add(4);
            let end = start.saturating_add(len);
            let bytes = data.get(start..end).ok_or(Error::BadLength {
                what,
                found: to_u64(data.len()),
                expected: to_u64(end),
            })?;
            cursor = end;
            utf8_string(bytes, what)
        };
        let export_name = take_string("export name")?;
        let count = to_usize(
            u64::from(read_u32(data, cursor, "query count")?),
            "query count",
        )?;
        cursor = cursor.saturating_add(4);
        if count > MAX_META_QUERIES {
            return Err(Error::TooMany {
                what: "meta context queries",
                max: MAX_META_QUERIES,
            });
        }
        let mut queries = Vec::with_capacity(count);
        for _ in 0..count {
            let len = to_usize(u64::from(read_u32(data, cursor, "query")?), "query")?;
            let start = cursor.saturating_add(4);
            let end = start.saturating_add(len);
            let bytes = data.get(start..end).ok_or(Error::BadLength {
                what: "query",
                found: to_u64(data.len()),
                expected: to_u64(end),
            })?;
            queries.push(utf8_string(bytes, "query")?);
            cursor = end;
        }
        exact_len(data, cursor, "meta context request")?;
        Ok(Self {
            export_name,
            queries,
        })
    }
}

/// Payload of `NBD_REP_META_CONTEXT`: a context id and its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaContextReply {
    /// Id used in BLOCK_STATUS chunks (meaningless in LIST answers).
    pub id: ContextId,
    /// Context name.
    pub name: String,
}

impl MetaContextReply {
    /// Parses the payload.
    pub fn decode(payload: &[u8]) -> Result<Self, Error> {
        let id = ContextId(read_u32(payload, 0, "meta context reply")?);
        let name = utf8_string(payload.get(4..).unwrap_or_default(), "meta context name")?;
        Ok(Self { id, name })
    }

    /// Appends the payload (server side).
    pub fn encode(&self, dst: &mut BytesMut) {
        dst.put_u32(self.id.0);
        dst.put_slice(self.name.as_bytes());
    }
}

/// Payload of `NBD_REP_SERVER` (one LIST entry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportEntry {
    /// Export name.
    pub name: String,
    /// Optional description (the rest of the payload).
    pub description: String,
}

impl ExportEntry {
    /// Parses the payload.
    pub fn decode(payload: &[u8]) -> Result<Self, Error> {
        let len = to_usize(
            u64::from(read_u32(payload, 0, "server reply")?),
            "export name",
        )?;
        let end = len.checked_add(4).ok_or(Error::Malformed {
            what: "server reply",
            reason: "name length overflows",
        })?;
        let name = payload.get(4..end).ok_or(Error::BadLength {
            what: "server reply",
            found: to_u64(payload.len()),
            expected: to_u64(end),
        })?;
        Ok(Self {
            name: utf8_string(name, "export name")?,
            description: utf8_string(payload.get(end..).unwrap_or_default(), "export description")?,
        })
    }

    /// Appends the payload (server side).
    pub fn encode(&self, dst: &mut BytesMut) -> Result<(), Error> {
        dst.put_u32(u32_len(self.name.len(), "export name")?);
        dst.put_slice(self.name.as_bytes());
        dst.put_slice(self.description.as_bytes());
        Ok(())
    }
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
    fn greeting_vectors() {
        // Spec §2.4 row 1: xapi-nbd offers FIXED_NEWSTYLE only.
        let xapi = Greeting::decode(&hex("4e42444d41474943 49484156454f5054 0001")).unwrap();
        assert_eq!(xapi.flags, HandshakeFlags::FIXED_NEWSTYLE);
        // Spec §2.5 row 1: qemu-nbd adds NO_ZEROES.
        let qemu = Greeting::decode(&hex("4e42444d41474943 49484156454f5054 0003")).unwrap();
        assert!(qemu.flags.contains(HandshakeFlags::NO_ZEROES));
        // Oldstyle servers send cliserv_magic instead of IHAVEOPT.
        let oldstyle = Greeting::decode(&hex("4e42444d41474943 0000420281861253 0000"));
        assert!(matches!(oldstyle, Err(Error::BadMagic { .. })));
        let mut encoded = BytesMut::new();
        xapi.encode(&mut encoded);
        assert_eq!(
            &encoded[..],
            &hex("4e42444d41474943 49484156454f5054 0001")[..]
        );
    }

    #[test]
    fn option_vectors() {
        // Spec §2.4 row 3: STARTTLS with no data.
        let mut buf = BytesMut::new();
        encode_option(OptionCode::STARTTLS, &[], &mut buf).unwrap();
        assert_eq!(&buf[..], &hex("49484156454f5054 00000005 00000000")[..]);
        // Spec §2.4 row 6: GO refused with ERR_UNSUP, empty payload.
        let reply =
            OptionReplyHeader::decode(&hex("0003e889045565a9 00000007 80000001 00000000")).unwrap();
        assert_eq!(reply.option, OptionCode::GO);
        assert_eq!(reply.reply_type, OptionReplyType::ERR_UNSUP);
        assert!(reply.reply_type.is_error());
        // A hostile 4 GiB reply length is refused before anything is allocated.
        let huge = OptionReplyHeader::decode(&hex("0003e889045565a9 00000007 00000003 ffffffff"));
        assert!(matches!(huge, Err(Error::OversizePayload { .. })));
    }

    #[test]
    fn info_vectors() {
        // Spec §2.5 row 9: INFO_BLOCK_SIZE 1 / 4096 / 32 MiB.
        let block = Info::decode(&hex("0003 00000001 00001000 02000000")).unwrap();
        assert_eq!(
            block,
            Info::BlockSize(BlockSizeConstraints {
                minimum: 1,
                preferred: 4096,
                maximum_payload: 32 * 1024 * 1024
            })
        );
        // Spec §2.5 row 10: INFO_EXPORT 256 MiB, flags 0x048f.
        let export = Info::decode(&hex("0000 0000000010000000 048f")).unwrap();
        assert_eq!(
            export,
            Info::Export {
                size: 256 << 20,
                flags: TransmissionFlags(0x048f)
            }
        );
        assert!(Info::decode(&hex("0000 00000000")).is_err());
        assert_eq!(
            Info::decode(&hex("0009 ff")).unwrap(),
            Info::Unknown(InfoType(9))
        );
    }

    #[test]
    fn go_request_vector() {
        // Spec §2.5 row 8: GO "disk" with one INFO_BLOCK_SIZE request.
        let go = InfoRequest {
            export_name: "disk".into(),
            requests: vec![InfoType::BLOCK_SIZE],
        };
        let mut buf = BytesMut::new();
        go.encode(&mut buf).unwrap();
        assert_eq!(&buf[..], &hex("00000004 6469736b 0001 0003")[..]);
        assert_eq!(InfoRequest::decode(&buf).unwrap(), go);
    }

    #[test]
    fn meta_context_vectors() {
        // Spec §2.5 row 5: SET_META_CONTEXT "disk", query qemu:dirty-bitmap:bm0.
        let data =
            hex("00000004 6469736b 00000001 00000015 71656d753a64697274792d6269746d61703a626d30");
        let request = MetaContextRequest::decode(&data).unwrap();
        assert_eq!(request.queries, vec!["qemu:dirty-bitmap:bm0".to_string()]);
        let mut buf = BytesMut::new();
        request.encode(&mut buf).unwrap();
        assert_eq!(&buf[..], &data[..]);
        // Spec §2.5 row 6: the server selects it as context id 2.
        let reply =
            MetaContextReply::decode(&hex("00000002 71656d753a64697274792d6269746d61703a626d30"))
                .unwrap();
        assert_eq!(reply.id, ContextId(2));
        assert_eq!(reply.name, "qemu:dirty-bitmap:bm0");
    }

    #[test]
    fn export_name_reply_is_134_bytes_with_padding() {
        // Spec §2.4 row 8: 10 GiB, HAS_FLAGS|READ_ONLY, then 124 zero bytes.
        let reply = ExportNameReply {
            size: 10 << 30,
            flags: TransmissionFlags(3),
        };
        let mut buf = BytesMut::new();
        reply.encode(false, &mut buf);
        assert_eq!(buf.len(), 134);
        assert_eq!(&buf[..10], &hex("0000000280000000 0003")[..]);
        assert!(buf[10..].iter().all(|&b| b == 0));
        assert_eq!(ExportNameReply::decode(&buf[..10]).unwrap(), reply);
    }

    #[test]
    fn block_size_rules() {
        assert!(
            BlockSizeConstraints::INTEROPERABLE_DEFAULT
                .validate()
                .is_ok()
        );
        let bad = BlockSizeConstraints {
            minimum: 3,
            preferred: 4096,
            maximum_payload: 1 << 25,
        };
        assert!(bad.validate().is_err());
        let unlimited = BlockSizeConstraints {
            minimum: 1,
            preferred: 4096,
            maximum_payload: u32::MAX,
        };
        assert!(unlimited.validate().is_ok());
    }
}
