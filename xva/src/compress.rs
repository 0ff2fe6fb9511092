//! Whole-archive gzip and zstd (spec §16), sans-IO in both directions.
//!
//! The decoders fill a caller-sized output buffer and stop there, so a small compressed input
//! can never make the reader hold more than it asked for (zstd turns a few bytes into 128 KiB of
//! zeros; deflate reaches ~1000:1).

use std::collections::VecDeque;
use std::io::{self, Write as _};

use bytes::Bytes;
use flate2::{Decompress, FlushDecompress, Status};
use zstd::stream::raw::{DParameter, InBuffer, Operation as _, OutBuffer};

use crate::error::Error;

/// Compression of a whole archive written by [`crate::ArchiveWriter`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// A plain tar stream (what xapi writes without `use_compression`).
    #[default]
    None,
    /// gzip, as `use_compression=true` (level 0–9).
    Gzip {
        /// flate2 compression level, 0–9.
        level: u32,
    },
    /// zstd, as `use_compression=zstd` (level 1–22).
    Zstd {
        /// zstd compression level.
        level: i32,
    },
}

impl Compression {
    /// gzip at level 6, `gzip`'s default.
    pub const GZIP: Self = Self::Gzip { level: 6 };
    /// zstd at level 3, `zstd`'s default.
    pub const ZSTD: Self = Self::Zstd { level: 3 };
}

/// The compression the reader found on its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompressionFormat {
    /// A plain tar stream.
    None,
    /// gzip (magic `1F 8B`).
    Gzip,
    /// zstd (magic `28 B5 2F FD`).
    Zstd,
}

impl CompressionFormat {
    /// Bytes needed to recognise a format.
    pub const MAGIC_LEN: usize = 4;

    /// Recognises a format from the first bytes of the input; anything else is a plain tar
    /// (which starts with the name `ova.xml`).
    pub fn detect(prefix: &[u8]) -> Self {
        if prefix.starts_with(&[0x1f, 0x8b]) {
            Self::Gzip
        } else if prefix.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Self::Zstd
        } else {
            Self::None
        }
    }
}

/// Compressed output is handed on once this much has accumulated.
const COMPRESSED_FRAME: usize = 256 * 1024;

/// Sans-IO compressor: frames in, compressed frames out.
pub(crate) enum Compressor {
    Plain,
    Gzip(flate2::write::GzEncoder<Vec<u8>>),
    Zstd(zstd::stream::write::Encoder<'static, Vec<u8>>),
}

fn compress_error(format: &'static str) -> impl FnOnce(io::Error) -> Error {
    move |source| Error::Compress { format, source }
}

impl Compressor {
    pub(crate) fn new(compression: Compression) -> Result<Self, Error> {
        Ok(match compression {
            Compression::None => Self::Plain,
            Compression::Gzip { level } => Self::Gzip(flate2::write::GzEncoder::new(
                Vec::with_capacity(COMPRESSED_FRAME),
                flate2::Compression::new(level.min(9)),
            )),
            Compression::Zstd { level } => Self::Zstd(
                zstd::stream::write::Encoder::new(Vec::with_capacity(COMPRESSED_FRAME), level)
                    .map_err(compress_error("zstd"))?,
            ),
        })
    }

    /// Feeds one frame; moves it through untouched when not compressing.
    pub(crate) fn push(&mut self, frame: Bytes, out: &mut VecDeque<Bytes>) -> Result<(), Error> {
        let drained = match self {
            Self::Plain => {
                out.push_back(frame);
                return Ok(());
            }
            Self::Gzip(encoder) => {
                encoder.write_all(&frame).map_err(compress_error("gzip"))?;
                drain(encoder.get_mut())
            }
            Self::Zstd(encoder) => {
                encoder.write_all(&frame).map_err(compress_error("zstd"))?;
                drain(encoder.get_mut())
            }
        };
        out.extend(drained);
        Ok(())
    }

    /// Ends the compressed stream and hands on what is left.
    pub(crate) fn finish(&mut self, out: &mut VecDeque<Bytes>) -> Result<(), Error> {
        let rest = match std::mem::replace(self, Self::Plain) {
            Self::Plain => return Ok(()),
            Self::Gzip(encoder) => encoder.finish().map_err(compress_error("gzip"))?,
            Self::Zstd(encoder) => encoder.finish().map_err(compress_error("zstd"))?,
        };
        if !rest.is_empty() {
            out.push_back(Bytes::from(rest));
        }
        Ok(())
    }
}

/// Takes the encoder's output once a frame's worth has accumulated.
fn drain(buffer: &mut Vec<u8>) -> Option<Bytes> {
    if buffer.len() < COMPRESSED_FRAME {
        return None;
    }
    let full = std::mem::replace(buffer, Vec::with_capacity(COMPRESSED_FRAME));
    Some(Bytes::from(full))
}

/// Sans-IO decompressor with bounded output.
pub(crate) enum Decoder {
    Gzip(Box<GzipDecoder>),
    Zstd(Box<zstd::stream::raw::Decoder<'static>>),
}

fn decompress_error(format: &'static str, problem: impl Into<String>) -> Error {
    Error::Decompress {
        format,
        source: io::Error::new(io::ErrorKind::InvalidData, problem.into()),
    }
}

impl Decoder {
    /// A decoder for `format`; `None` for plain input.
    pub(crate) fn new(
        format: CompressionFormat,
        window_log_max: u32,
    ) -> Result<Option<Self>, Error> {
        Ok(match format {
            CompressionFormat::None => None,
            CompressionFormat::Gzip => Some(Self::Gzip(Box::new(GzipDecoder::new()))),
            CompressionFormat::Zstd => {
                let mut decoder =
                    zstd::stream::raw::Decoder::new().map_err(|source| Error::Decompress {
                        format: "zstd",
                        source,
                    })?;
                decoder
                    .set_parameter(DParameter::WindowLogMax(window_log_max))
                    .map_err(|source| Error::Decompress {
                        format: "zstd",
                        source,
                    })?;
                Some(Self::Zstd(Box::new(decoder)))
            }
        })
    }

    /// Decodes from `input` into the spare capacity of `out` (never beyond it) and returns how
    /// many input bytes were consumed.
    pub(crate) fn decode(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<usize, Error> {
        match self {
            Self::Gzip(decoder) => decoder.decode(input, out),
            Self::Zstd(decoder) => {
                let mut consumed = 0;
                while consumed < input.len() && out.len() < out.capacity() {
                    let rest = input.get(consumed..).unwrap_or_default();
                    let mut in_buffer = InBuffer::around(rest);
                    let before = out.len();
                    let position = out.len();
                    let mut out_buffer = OutBuffer::around_pos(out, position);
                    decoder
                        .run(&mut in_buffer, &mut out_buffer)
                        .map_err(|source| Error::Decompress {
                            format: "zstd",
                            source,
                        })?;
                    let used = in_buffer.pos();
                    consumed = consumed.saturating_add(used);
                    if used == 0 && out.len() == before {
                        break;
                    }
                }
                Ok(consumed)
            }
        }
    }
}

/// Longest gzip member header accepted (name and comment included).
const MAX_GZIP_HEADER: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GzipState {
    Header,
    Body,
    Trailer,
}

/// gzip (RFC 1952) over raw deflate: members may follow each other, each CRC-checked.
pub(crate) struct GzipDecoder {
    state: GzipState,
    header: Vec<u8>,
    inflate: Decompress,
    crc: crc32fast::Hasher,
    member_size: u64,
    trailer: Vec<u8>,
}

impl GzipDecoder {
    fn new() -> Self {
        Self {
            state: GzipState::Header,
            header: Vec::new(),
            inflate: Decompress::new(false),
            crc: crc32fast::Hasher::new(),
            member_size: 0,
            trailer: Vec::with_capacity(8),
        }
    }

    fn decode(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<usize, Error> {
        let mut consumed = 0usize;
        while consumed < input.len() {
            let rest = input.get(consumed..).unwrap_or_default();
            match self.state {
                GzipState::Header => {
                    let before = self.header.len();
                    let room = MAX_GZIP_HEADER.saturating_sub(before);
                    let take = rest.len().min(room);
                    self.header
                        .extend_from_slice(rest.get(..take).unwrap_or_default());
                    match parse_gzip_header(&self.header)
                        .map_err(|problem| decompress_error("gzip", problem))?
                    {
                        Some(header_len) => {
                            consumed = consumed.saturating_add(header_len.saturating_sub(before));
                            self.header.clear();
                            self.inflate.reset(false);
                            self.crc = crc32fast::Hasher::new();
                            self.member_size = 0;
                            self.state = GzipState::Body;
                        }
                        None if self.header.len() >= MAX_GZIP_HEADER => {
                            return Err(decompress_error("gzip", "member header too long"));
                        }
                        None => consumed = consumed.saturating_add(take),
                    }
                }
                GzipState::Body => {
                    if out.len() >= out.capacity() {
                        break;
                    }
                    let in_before = self.inflate.total_in();
                    let out_before = out.len();
                    let status = self
                        .inflate
                        .decompress_vec(rest, out, FlushDecompress::None)
                        .map_err(|error| decompress_error("gzip", error.to_string()))?;
                    let used = usize::try_from(self.inflate.total_in().saturating_sub(in_before))
                        .unwrap_or(rest.len());
                    let produced = out.get(out_before..).unwrap_or_default();
                    self.crc.update(produced);
                    self.member_size = self
                        .member_size
                        .wrapping_add(u64::try_from(produced.len()).unwrap_or(u64::MAX));
                    consumed = consumed.saturating_add(used);
                    if status == Status::StreamEnd {
                        self.state = GzipState::Trailer;
                        self.trailer.clear();
                    } else if used == 0 && produced.is_empty() {
                        break;
                    }
                }
                GzipState::Trailer => {
                    let take = rest.len().min(8usize.saturating_sub(self.trailer.len()));
                    self.trailer
                        .extend_from_slice(rest.get(..take).unwrap_or_default());
                    consumed = consumed.saturating_add(take);
                    if let Some((crc, size)) = split_trailer(&self.trailer) {
                        let computed = std::mem::take(&mut self.crc).finalize();
                        if crc != computed {
                            return Err(decompress_error("gzip", "member CRC32 mismatch"));
                        }
                        if u64::from(size) != self.member_size & 0xffff_ffff {
                            return Err(decompress_error("gzip", "member size mismatch"));
                        }
                        self.state = GzipState::Header;
                    }
                }
            }
        }
        Ok(consumed)
    }
}

fn split_trailer(trailer: &[u8]) -> Option<(u32, u32)> {
    let crc = trailer.get(..4)?.try_into().ok()?;
    let size = trailer.get(4..8)?.try_into().ok()?;
    Some((u32::from_le_bytes(crc), u32::from_le_bytes(size)))
}

/// Parses a gzip member header; `Ok(None)` when more bytes are needed.
fn parse_gzip_header(buffer: &[u8]) -> Result<Option<usize>, &'static str> {
    const FHCRC: u8 = 0x02;
    const FEXTRA: u8 = 0x04;
    const FNAME: u8 = 0x08;
    const FCOMMENT: u8 = 0x10;
    for (position, expected, problem) in [
        (0, 0x1f, "bad gzip magic"),
        (1, 0x8b, "bad gzip magic"),
        (2, 8, "not deflate"),
    ] {
        match buffer.get(position) {
            None => return Ok(None),
            Some(byte) if *byte != expected => return Err(problem),
            Some(_) => {}
        }
    }
    let Some(&flags) = buffer.get(3) else {
        return Ok(None);
    };
    if flags & 0xe0 != 0 {
        return Err("reserved gzip flags set");
    }
    let mut position = 10usize;
    if flags & FEXTRA != 0 {
        let Some(length) = buffer.get(position..position.saturating_add(2)) else {
            return Ok(None);
        };
        let length = u16::from_le_bytes([
            length.first().copied().unwrap_or(0),
            length.get(1).copied().unwrap_or(0),
        ]);
        position = position
            .saturating_add(2)
            .saturating_add(usize::from(length));
    }
    for flag in [FNAME, FCOMMENT] {
        if flags & flag != 0 {
            let Some(tail) = buffer.get(position..) else {
                return Ok(None);
            };
            let Some(nul) = tail.iter().position(|byte| *byte == 0) else {
                return Ok(None);
            };
            position = position.saturating_add(nul).saturating_add(1);
        }
    }
    if flags & FHCRC != 0 {
        position = position.saturating_add(2);
    }
    Ok((buffer.len() >= position).then_some(position))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compress(compression: Compression, data: &[u8]) -> Vec<u8> {
        let mut compressor = Compressor::new(compression).unwrap();
        let mut out = VecDeque::new();
        for piece in data.chunks(100_000) {
            compressor
                .push(Bytes::copy_from_slice(piece), &mut out)
                .unwrap();
        }
        compressor.finish(&mut out).unwrap();
        out.into_iter().flat_map(|frame| frame.to_vec()).collect()
    }

    /// Decodes in small input and output steps, checking the output bound every time.
    fn decompress(
        format: CompressionFormat,
        data: &[u8],
        out_step: usize,
    ) -> Result<Vec<u8>, Error> {
        let mut decoder = Decoder::new(format, 27)?.unwrap();
        let mut result = Vec::new();
        let mut input = data;
        loop {
            let mut out = Vec::with_capacity(out_step);
            let used = decoder.decode(input.get(..input.len().min(333)).unwrap(), &mut out)?;
            assert!(out.len() <= out_step);
            input = &input[used..];
            if used == 0 && out.is_empty() {
                return Ok(result);
            }
            result.extend_from_slice(&out);
        }
    }

    #[test]
    fn round_trips_with_bounded_output() {
        let mut data = vec![0u8; 3 << 20];
        data.extend((0..100_000u32).flat_map(|n| n.to_le_bytes()));
        for (compression, format) in [
            (Compression::GZIP, CompressionFormat::Gzip),
            (Compression::Gzip { level: 1 }, CompressionFormat::Gzip),
            (Compression::ZSTD, CompressionFormat::Zstd),
        ] {
            let packed = compress(compression, &data);
            assert_eq!(CompressionFormat::detect(&packed), format);
            assert_eq!(decompress(format, &packed, 4096).unwrap(), data);
        }
        assert_eq!(
            CompressionFormat::detect(b"ova.xml\0"),
            CompressionFormat::None
        );
    }

    #[test]
    fn gzip_members_concatenate_and_are_checked() {
        let mut packed = compress(Compression::GZIP, b"hello ");
        packed.extend(compress(Compression::GZIP, b"world"));
        assert_eq!(
            decompress(CompressionFormat::Gzip, &packed, 7).unwrap(),
            b"hello world"
        );

        // A flipped byte of the CRC32 trailer.
        let mut corrupt = compress(Compression::GZIP, b"hello");
        let crc_at = corrupt.len() - 8;
        corrupt[crc_at] ^= 1;
        assert!(matches!(
            decompress(CompressionFormat::Gzip, &corrupt, 64),
            Err(Error::Decompress { format: "gzip", .. })
        ));
    }

    #[test]
    fn gzip_headers_with_optional_fields() {
        // Header vector: magic, deflate, FLG = FEXTRA|FNAME|FCOMMENT|FHCRC, mtime, xfl, os,
        // XLEN 2 + 2 bytes, "a\0", "b\0", 2-byte header CRC.
        let header = [
            0x1f, 0x8b, 8, 0x1e, 0, 0, 0, 0, 0, 3, 2, 0, 9, 9, b'a', 0, b'b', 0, 0xaa, 0xbb,
        ];
        assert_eq!(parse_gzip_header(&header), Ok(Some(header.len())));
        assert_eq!(parse_gzip_header(&header[..15]), Ok(None));
        assert!(parse_gzip_header(&[0x1f, 0x8c]).is_err());
        assert!(parse_gzip_header(&[0x1f, 0x8b, 8, 0x20, 0, 0, 0, 0, 0, 0]).is_err());
    }
}
