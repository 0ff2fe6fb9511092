//! Entry points shared by the fuzz targets (`fuzz/fuzz_targets/vhd_*.rs`) and the corpus
//! replay in this crate's tests: each takes arbitrary bytes and must return, never panic.

use bytes::Bytes;

use crate::error::Result;
use crate::footer::Footer;
use crate::header::DynamicHeader;
use crate::reader::VhdFile;
use crate::stream::StreamDecoder;
use crate::units::ByteOffset;

/// A structure parsed from arbitrary bytes, and the same structure encoded and parsed again:
/// callers (the fuzz targets, the corpus replay) assert the two are equal.
#[derive(Debug)]
pub struct RoundTrip<T> {
    /// Parsed from the input.
    pub parsed: T,
    /// `parsed`, encoded and parsed again.
    pub reparsed: T,
}

/// Parses a footer and, when valid, encodes and parses it again.
pub fn footer(data: &[u8]) -> Result<RoundTrip<Footer>> {
    let parsed = Footer::parse(data)?;
    let reparsed = Footer::parse(&parsed.encode())?;
    Ok(RoundTrip { parsed, reparsed })
}

/// Parses a dynamic header and, when valid, encodes and parses it again.
pub fn header(data: &[u8]) -> Result<RoundTrip<DynamicHeader>> {
    let parsed = DynamicHeader::parse(data)?;
    let reparsed = DynamicHeader::parse(&parsed.encode()?)?;
    Ok(RoundTrip { parsed, reparsed })
}

/// Decodes `data` as a stream, chunked by a size taken from its first byte; returns the
/// number of events.
pub fn stream(data: &[u8]) -> Result<usize> {
    let (chunk, body) = match data.split_first() {
        Some((first, rest)) => (usize::from(*first).max(1) * 61, rest),
        None => (1, data),
    };
    let mut decoder = StreamDecoder::new();
    let mut events = 0usize;
    for piece in body.chunks(chunk) {
        let mut input = Bytes::copy_from_slice(piece);
        while decoder.decode(&mut input)?.is_some() {
            events += 1;
        }
    }
    decoder.finish()?;
    Ok(events)
}

/// Opens `data` as a VHD file and reads its first and last sectors.
pub fn file(data: &[u8]) -> Result<u64> {
    let vhd = VhdFile::open(data)?;
    let size = vhd.virtual_size();
    let mut sector = [0u8; 512];
    if size >= 512 {
        vhd.read_at(ByteOffset(0), &mut sector)?;
        vhd.read_at(ByteOffset(size - 512), &mut sector)?;
    }
    Ok(size)
}
