//! The `chunked` body format of `PUT /import_raw_vdi?chunked` (xen-api `vhd-tool` `chunked.ml`),
//! sans-IO: frame headers for senders, an incremental decoder for receivers.
//!
//! A body is a sequence of frames, each a 12-byte header — `offset` (u64 little-endian, byte
//! offset on the virtual disk) and `len` (u32 little-endian) — followed by `len` data bytes,
//! and ends with a header whose `offset` and `len` are both zero. This is *not* HTTP chunked
//! transfer encoding: the request still carries an exact `Content-Length`.
//!
//! ```
//! use bytes::BytesMut;
//! use xenapi::chunked::{self, ChunkEvent, FrameDecoder};
//!
//! // 4 bytes at offset 1 MiB, then the terminator.
//! let mut body = BytesMut::new();
//! body.extend_from_slice(&chunked::frame_header(1 << 20, 4).unwrap());
//! body.extend_from_slice(b"data");
//! body.extend_from_slice(&chunked::TERMINATOR);
//! assert_eq!(chunked::body_length([4]), Some(12 + 4 + 12));
//!
//! let mut decoder = FrameDecoder::new();
//! let Some(ChunkEvent::Data { offset, data }) = decoder.decode(&mut body).unwrap() else { panic!() };
//! assert_eq!((offset, &data[..]), (1 << 20, &b"data"[..]));
//! assert_eq!(decoder.decode(&mut body).unwrap(), Some(ChunkEvent::End));
//! ```

use bytes::{Buf, Bytes, BytesMut};

use crate::error::Error;

/// Size of a frame header.
pub const HEADER_LEN: usize = 12;

/// The end-of-stream header (offset 0, length 0).
pub const TERMINATOR: [u8; HEADER_LEN] = [0; HEADER_LEN];

/// The header of a frame carrying `len` bytes for disk offset `offset`.
///
/// `None` for an empty frame at offset 0, which would read as the terminator.
pub fn frame_header(offset: u64, len: u32) -> Option<[u8; HEADER_LEN]> {
    if offset == 0 && len == 0 {
        return None;
    }
    let mut header = [0u8; HEADER_LEN];
    let (offset_part, len_part) = header.split_at_mut(8);
    offset_part.copy_from_slice(&offset.to_le_bytes());
    len_part.copy_from_slice(&len.to_le_bytes());
    Some(header)
}

/// The exact body length (for `Content-Length`) of frames with these data lengths plus the
/// terminator, or `None` on overflow.
pub fn body_length(frame_lengths: impl IntoIterator<Item = u32>) -> Option<u64> {
    let header = u64::try_from(HEADER_LEN).ok()?;
    frame_lengths.into_iter().try_fold(header, |total, len| {
        total.checked_add(header)?.checked_add(u64::from(len))
    })
}

/// What the decoder found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChunkEvent {
    /// Data for the disk at `offset`. A large frame arrives as several events with increasing
    /// offsets, so memory stays bounded by what the caller buffers.
    Data {
        /// Disk byte offset of `data[0]`.
        offset: u64,
        /// The bytes.
        data: Bytes,
    },
    /// The terminator: the body is complete.
    End,
}

/// Incremental decoder of a `chunked` body.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    /// Offset and remaining length of the frame being read, if inside one.
    current: Option<(u64, u32)>,
    finished: bool,
}

impl FrameDecoder {
    /// A decoder at the start of a body.
    pub fn new() -> FrameDecoder {
        FrameDecoder::default()
    }

    /// True once the terminator was seen.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Consumes what it can from `buffer`; `Ok(None)` means "need more bytes".
    ///
    /// Bytes after the terminator are an error; so is an offset + length past `u64::MAX`.
    pub fn decode(&mut self, buffer: &mut BytesMut) -> Result<Option<ChunkEvent>, Error> {
        loop {
            if self.finished {
                return if buffer.is_empty() {
                    Ok(None)
                } else {
                    Err(Error::protocol("data after the chunked terminator"))
                };
            }
            if let Some((offset, remaining)) = self.current {
                if remaining == 0 {
                    self.current = None;
                    continue;
                }
                if buffer.is_empty() {
                    return Ok(None);
                }
                let available = u32::try_from(buffer.len())
                    .unwrap_or(u32::MAX)
                    .min(remaining);
                let take =
                    usize::try_from(available).map_err(|_| Error::protocol("frame too large"))?;
                let data = buffer.split_to(take).freeze();
                let next_offset = offset.checked_add(u64::from(available)).ok_or_else(|| {
                    Error::protocol("chunked frame runs past the end of the address space")
                })?;
                self.current = Some((next_offset, remaining - available));
                return Ok(Some(ChunkEvent::Data { offset, data }));
            }
            if buffer.len() < HEADER_LEN {
                return Ok(None);
            }
            let offset = buffer.get_u64_le();
            let len = buffer.get_u32_le();
            if offset == 0 && len == 0 {
                self.finished = true;
                return Ok(Some(ChunkEvent::End));
            }
            if offset.checked_add(u64::from(len)).is_none() {
                return Err(Error::protocol(
                    "chunked frame runs past the end of the address space",
                ));
            }
            self.current = Some((offset, len));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_example_bytes() {
        // Spec §4.3: 64 KiB at 1 MiB, then the end; Content-Length 65560.
        assert_eq!(
            frame_header(0x10_0000, 0x1_0000).unwrap(),
            [
                0x00, 0x00, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00
            ]
        );
        assert_eq!(body_length([65536]), Some(65560));
        assert_eq!(frame_header(0, 0), None);
    }

    #[test]
    fn decoder_splits_and_resumes() {
        let mut body = BytesMut::new();
        body.extend_from_slice(&frame_header(512, 6).unwrap());
        body.extend_from_slice(b"abcdef");
        body.extend_from_slice(&frame_header(4096, 0).unwrap());
        body.extend_from_slice(&TERMINATOR);
        // Feed one byte at a time: every event must come out exactly once.
        let mut decoder = FrameDecoder::new();
        let mut buffer = BytesMut::new();
        let mut data = Vec::new();
        let mut ended = false;
        for byte in body.iter() {
            buffer.extend_from_slice(&[*byte]);
            while let Some(event) = decoder.decode(&mut buffer).unwrap() {
                match event {
                    ChunkEvent::Data {
                        offset,
                        data: bytes,
                    } => data.push((offset, bytes)),
                    ChunkEvent::End => ended = true,
                }
            }
        }
        assert!(ended && decoder.is_finished());
        let offsets: Vec<u64> = data.iter().map(|(offset, _)| *offset).collect();
        assert_eq!(offsets, (512..518).collect::<Vec<u64>>());
        let joined: Vec<u8> = data.iter().flat_map(|(_, bytes)| bytes.to_vec()).collect();
        assert_eq!(joined, b"abcdef");
    }

    #[test]
    fn rejects_trailing_and_overflow() {
        let mut buffer = BytesMut::from(&TERMINATOR[..]);
        buffer.extend_from_slice(b"x");
        let mut decoder = FrameDecoder::new();
        assert_eq!(decoder.decode(&mut buffer).unwrap(), Some(ChunkEvent::End));
        assert!(decoder.decode(&mut buffer).is_err());

        let mut buffer = BytesMut::from(&frame_header(u64::MAX, 2).unwrap()[..]);
        assert!(FrameDecoder::new().decode(&mut buffer).is_err());
    }
}
