//! Sans-IO reader of the `format=tar` body of `PUT /import_raw_vdi` (xen-api `Stream_vdi.recv_all_vdi`
//! for one VDI): tar entries `vdi/%08d` of at most 1 MiB, each followed by its `.xxhash` (XXH64)
//! or `.checksum` (SHA-1) companion, in increasing chunk order, then the tar end. Chunk `n` is
//! written at `n` MiB; chunks that are absent (all-zero ones) leave the disk untouched.

use bytes::{Bytes, BytesMut};

/// Size of a chunk and of the largest entry accepted.
pub const CHUNK_SIZE: u64 = 1 << 20;
/// Largest checksum companion accepted (SHA-1 hex is 40 bytes).
const MAX_CHECKSUM_LEN: u64 = 128;
const BLOCK: usize = 512;

/// What the reader produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TarEvent {
    /// A verified chunk: write `data` at disk offset `offset`.
    Chunk {
        /// Disk byte offset.
        offset: u64,
        /// The chunk's bytes.
        data: Bytes,
    },
    /// The tar end marker: nothing more is read.
    End,
}

/// Why a body is not a valid chunk stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TarError {
    /// A tar header does not decode.
    Header(String),
    /// An entry is not `vdi/%08d` or its companion, or is out of order.
    UnexpectedEntry(String),
    /// An entry is larger than allowed.
    TooLarge {
        /// Its size.
        size: u64,
    },
    /// A companion does not match its chunk.
    ChecksumMismatch {
        /// The chunk number.
        chunk: u64,
    },
    /// The body ended inside the stream.
    Truncated,
}

impl std::fmt::Display for TarError {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TarError::Header(reason) => write!(formatter, "bad tar header: {reason}"),
            TarError::UnexpectedEntry(name) => write!(formatter, "unexpected tar entry {name:?}"),
            TarError::TooLarge { size } => {
                write!(formatter, "tar entry of {size} bytes is too large")
            }
            TarError::ChecksumMismatch { chunk } => {
                write!(formatter, "checksum mismatch in chunk {chunk}")
            }
            TarError::Truncated => formatter.write_str("the tar stream ended early"),
        }
    }
}

#[derive(Debug)]
enum State {
    Header,
    Data {
        chunk: u64,
        size: u64,
    },
    ChecksumHeader {
        chunk: u64,
        data: Bytes,
    },
    Checksum {
        chunk: u64,
        data: Bytes,
        kind: xva::ChecksumKind,
        size: u64,
    },
    Done,
}

/// The reader: push bytes with [`TarChunkReader::push`], pull events with
/// [`TarChunkReader::next_event`]; memory is bounded by one chunk.
#[derive(Debug)]
pub struct TarChunkReader {
    buffer: BytesMut,
    state: State,
    next_chunk: u64,
    position: u64,
}

impl Default for TarChunkReader {
    fn default() -> Self {
        TarChunkReader::new()
    }
}

fn padded(size: u64) -> u64 {
    size.saturating_add(xva::tar::padding_u64(size))
}

/// The chunk number of `vdi/%08d`.
fn chunk_number(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("vdi/")?;
    (digits.len() == 8 && digits.bytes().all(|byte| byte.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

impl TarChunkReader {
    /// A reader at the start of a body.
    #[must_use]
    pub fn new() -> TarChunkReader {
        TarChunkReader {
            buffer: BytesMut::new(),
            state: State::Header,
            next_chunk: 0,
            position: 0,
        }
    }

    /// Adds body bytes.
    pub fn push(&mut self, data: &[u8]) {
        self.buffer.extend_from_slice(data);
    }

    /// Whether the tar end was read.
    #[must_use]
    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    fn take(&mut self, length: u64) -> Option<Bytes> {
        let length = usize::try_from(length).ok()?;
        if self.buffer.len() < length {
            return None;
        }
        self.position = self
            .position
            .saturating_add(u64::try_from(length).unwrap_or(u64::MAX));
        Some(self.buffer.split_to(length).freeze())
    }

    fn header(&mut self) -> Result<Option<xva::tar::HeaderBlock>, TarError> {
        let offset = self.position;
        let Some(block) = self.take(512) else {
            return Ok(None);
        };
        let mut header = [0u8; BLOCK];
        header.copy_from_slice(&block);
        xva::tar::decode_header(&header, offset)
            .map(Some)
            .map_err(|error| TarError::Header(error.to_string()))
    }

    /// The next event, `Ok(None)` when more bytes are needed.
    ///
    /// # Errors
    /// [`TarError`]; the reader is then unusable.
    pub fn next_event(&mut self) -> Result<Option<TarEvent>, TarError> {
        loop {
            match std::mem::replace(&mut self.state, State::Done) {
                State::Done => {
                    if self.buffer.iter().any(|byte| *byte != 0) {
                        return Err(TarError::UnexpectedEntry(
                            "data after the tar end".to_owned(),
                        ));
                    }
                    self.buffer.clear();
                    return Ok(None);
                }
                State::Header => match self.header()? {
                    None => {
                        self.state = State::Header;
                        return Ok(None);
                    }
                    Some(xva::tar::HeaderBlock::Zero) => {
                        self.state = State::Done;
                        return Ok(Some(TarEvent::End));
                    }
                    Some(xva::tar::HeaderBlock::Entry(entry)) => {
                        let chunk = chunk_number(&entry.name)
                            .filter(|chunk| *chunk >= self.next_chunk)
                            .ok_or_else(|| TarError::UnexpectedEntry(entry.name.clone()))?;
                        if entry.size > CHUNK_SIZE {
                            return Err(TarError::TooLarge { size: entry.size });
                        }
                        self.state = State::Data {
                            chunk,
                            size: entry.size,
                        };
                    }
                },
                State::Data { chunk, size } => match self.take(padded(size)) {
                    None => {
                        self.state = State::Data { chunk, size };
                        return Ok(None);
                    }
                    Some(mut data) => {
                        data.truncate(usize::try_from(size).unwrap_or(0));
                        self.state = State::ChecksumHeader { chunk, data };
                    }
                },
                State::ChecksumHeader { chunk, data } => match self.header()? {
                    None => {
                        self.state = State::ChecksumHeader { chunk, data };
                        return Ok(None);
                    }
                    Some(xva::tar::HeaderBlock::Zero) => return Err(TarError::Truncated),
                    Some(xva::tar::HeaderBlock::Entry(entry)) => {
                        let kind = entry
                            .name
                            .strip_prefix(&format!("vdi/{chunk:08}"))
                            .and_then(xva::ChecksumKind::from_extension)
                            .ok_or_else(|| TarError::UnexpectedEntry(entry.name.clone()))?;
                        if entry.size > MAX_CHECKSUM_LEN {
                            return Err(TarError::TooLarge { size: entry.size });
                        }
                        self.state = State::Checksum {
                            chunk,
                            data,
                            kind,
                            size: entry.size,
                        };
                    }
                },
                State::Checksum {
                    chunk,
                    data,
                    kind,
                    size,
                } => match self.take(padded(size)) {
                    None => {
                        self.state = State::Checksum {
                            chunk,
                            data,
                            kind,
                            size,
                        };
                        return Ok(None);
                    }
                    Some(mut stored) => {
                        stored.truncate(usize::try_from(size).unwrap_or(0));
                        if kind.digest(&data).as_bytes() != stored.as_ref() {
                            return Err(TarError::ChecksumMismatch { chunk });
                        }
                        self.next_chunk = chunk.saturating_add(1);
                        self.state = State::Header;
                        return Ok(Some(TarEvent::Chunk {
                            offset: chunk.saturating_mul(CHUNK_SIZE),
                            data,
                        }));
                    }
                },
            }
        }
    }

    /// Declares the end of the body.
    ///
    /// # Errors
    /// [`TarError::Truncated`] unless the tar end was read.
    pub fn finish(&self) -> Result<(), TarError> {
        if self.is_done() {
            Ok(())
        } else {
            Err(TarError::Truncated)
        }
    }
}

/// Every event of a complete body (for tests and fuzzing).
///
/// # Errors
/// [`TarError`].
pub fn read_all(body: &[u8]) -> Result<Vec<TarEvent>, TarError> {
    let mut reader = TarChunkReader::new();
    let mut events = Vec::new();
    for piece in body.chunks(4096) {
        reader.push(piece);
        while let Some(event) = reader.next_event()? {
            events.push(event);
        }
    }
    reader.finish()?;
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A body like xapi's `format=tar` export: chunks `(number, data)` with XXH64 companions.
    fn body(chunks: &[(u64, Vec<u8>)]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut entry = |name: &str, data: &[u8]| {
            let size = u64::try_from(data.len()).unwrap();
            out.extend_from_slice(&xva::tar::encode_header(name, size, 0).unwrap());
            out.extend_from_slice(data);
            out.extend(std::iter::repeat_n(0u8, xva::tar::padding(size)));
        };
        for (number, data) in chunks {
            let name = format!("vdi/{number:08}");
            entry(&name, data);
            entry(
                &format!("{name}.xxhash"),
                xva::ChecksumKind::Xxhash.digest(data).as_bytes(),
            );
        }
        out.extend_from_slice(&[0u8; 1024]);
        out
    }

    #[test]
    fn chunks_land_at_their_mebibyte() {
        // Chunk 0 (3 bytes) and chunk 2 (one sector): chunk 1 was all zeros and skipped.
        let events = read_all(&body(&[(0, b"abc".to_vec()), (2, vec![7; 512])])).unwrap();
        assert_eq!(
            events,
            vec![
                TarEvent::Chunk {
                    offset: 0,
                    data: Bytes::from_static(b"abc")
                },
                TarEvent::Chunk {
                    offset: 2 << 20,
                    data: Bytes::from(vec![7; 512])
                },
                TarEvent::End,
            ]
        );
    }

    #[test]
    fn bad_streams_are_typed_errors() {
        let mut corrupt = body(&[(0, b"abc".to_vec())]);
        corrupt[512] = b'x';
        assert_eq!(
            read_all(&corrupt),
            Err(TarError::ChecksumMismatch { chunk: 0 })
        );
        let out_of_order = body(&[(3, vec![1]), (1, vec![1])]);
        assert!(matches!(
            read_all(&out_of_order),
            Err(TarError::UnexpectedEntry(_))
        ));
        let whole = body(&[(0, vec![1])]);
        assert_eq!(read_all(&whole[..1024]), Err(TarError::Truncated));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]

        #[test]
        fn written_chunks_read_back(
            chunks in proptest::collection::btree_map(0u64..64, proptest::collection::vec(any::<u8>(), 1..2048), 0..5)
        ) {
            let chunks: Vec<(u64, Vec<u8>)> = chunks.into_iter().collect();
            let events = read_all(&body(&chunks)).unwrap();
            let expected: Vec<TarEvent> = chunks
                .iter()
                .map(|(number, data)| TarEvent::Chunk { offset: number << 20, data: Bytes::from(data.clone()) })
                .chain(std::iter::once(TarEvent::End))
                .collect();
            prop_assert_eq!(events, expected);
        }

        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..4096)) {
            let _result = read_all(&data);
        }
    }
}
