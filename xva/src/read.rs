//! The sans-IO streaming reader: bytes in, [`Event`]s out.
//!
//! The reader follows xapi's importer (`stream_vdi.ml recv_all_vdi`, spec §15.2): disks in
//! sorted-id order, chunk names compared as strings and as numbers, and a gap of `k` chunk
//! numbers standing for `k ×` *the length of the archive's first chunk* zero bytes. That is what
//! makes empty keepalive chunks of older exports shift every later name by one without moving
//! the data, and it reads v26-style exports (absolute numbering, all-zero chunks included) the
//! same way. Every chunk's `.xxhash` or `.checksum` companion is verified before the chunk is
//! handed out, so a consumer never sees unverified data. One leniency beyond xapi: a chunk may
//! overhang the end of its disk if the overhang is zeros (XO pads its last chunk), and the
//! zeros are dropped. Gaps are not materialised: the
//! consumer gets only the chunks present and knows every other byte is zero.
//!
//! A chunk is never copied to be verified: when it arrives split across input frames (an HTTP
//! body comes in 64 KiB frames), each frame's piece is kept as a slice and fed to a running
//! checksum as it arrives, and once the companion checksum matches, the chunk goes out as one
//! [`Block`] per piece.
//!
//! Memory stays bounded by one chunk (plus `ova.xml`, up to [`ReaderLimits::max_ova_xml_len`]):
//! compressed input is decoded only as far as the next step needs.

use std::collections::VecDeque;

use bytes::Bytes;

use crate::checksum::ChecksumKind;
use crate::compress::{CompressionFormat, Decoder};
use crate::error::{Error, excerpt, excerpt_bytes};
use crate::model::{DiskInfo, OvaXml};
use crate::pieces::ChunkPieces;
use crate::queue::ByteQueue;
use crate::tar::{self, BLOCK_SIZE, EntryHeader, HeaderBlock};
use crate::units::{ByteOffset, CHUNK_SIZE, DiskIndex};

/// Name of the first entry of every XVA.
pub const OVA_XML: &str = "ova.xml";

/// How much compressed input to ask for at a time, and the smallest decompression step.
const COMPRESSED_STEP: usize = 64 * 1024;

/// Largest checksum companion accepted (SHA-1 hex is 40 bytes).
const MAX_COMPANION_LEN: u64 = 128;

/// Limits that keep a hostile archive from using unbounded memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReaderLimits {
    /// Largest `ova.xml` accepted (it is held in memory and parsed into a tree). Default 16 MiB.
    pub max_ova_xml_len: u64,
    /// Largest chunk accepted. Default 1 MiB, the chunk size of every known writer.
    pub max_chunk_len: u64,
    /// Largest zstd window (log2 bytes) accepted. Default 27, the `zstd` tool's own limit.
    pub zstd_window_log_max: u32,
}

impl Default for ReaderLimits {
    fn default() -> Self {
        Self {
            max_ova_xml_len: 16 << 20,
            max_chunk_len: CHUNK_SIZE,
            zstd_window_log_max: 27,
        }
    }
}

/// What `ova.xml` says about the archive: the model and the disks that follow, in order.
#[derive(Debug, Clone, PartialEq)]
pub struct ArchiveLayout {
    /// The parsed `ova.xml`.
    pub ova: OvaXml,
    /// The streamed disks, in archive order; [`Block::disk`] indexes this list.
    pub disks: Vec<DiskInfo>,
    /// The compression found on the input.
    pub compression: CompressionFormat,
}

impl ArchiveLayout {
    /// The disk at `index`.
    pub fn disk(&self, index: DiskIndex) -> Option<&DiskInfo> {
        self.disks.get(index.get())
    }
}

/// Verified data: `data.len()` bytes of disk `disk` starting at `offset`. A whole chunk when it
/// arrived in one input frame, otherwise one contiguous piece of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// The disk, an index into [`ArchiveLayout::disks`].
    pub disk: DiskIndex,
    /// Where the data lands on the disk.
    pub offset: ByteOffset,
    /// The bytes: a slice of the input frame they arrived in (pieces shorter than 16 KiB
    /// that are not a whole chunk are copied together, which bounds their number).
    pub data: Bytes,
}

/// What the reader found next.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// `ova.xml` was read: always the first event.
    Layout(Box<ArchiveLayout>),
    /// Verified data: a whole chunk, or, when the chunk arrived split across input frames,
    /// one block per contiguous piece, back to back. A chunk's blocks come only once its
    /// checksum is verified. Blocks of a disk come in increasing offset order; bytes no block
    /// covers are zero.
    Block(Block),
    /// Every byte of this disk has been accounted for.
    DiskEnd(DiskIndex),
    /// The archive ended cleanly; nothing follows.
    End,
}

/// Where the reader is in the archive.
#[derive(Debug)]
enum State {
    Detect,
    OvaHeader,
    OvaBody {
        size: u64,
    },
    ChunkHeader(Cursor),
    ChunkData {
        cursor: Cursor,
        chunk: Chunk,
        body: ChunkPieces,
    },
    CompanionHeader {
        cursor: Cursor,
        chunk: Chunk,
        body: ChunkPieces,
    },
    CompanionData {
        cursor: Cursor,
        chunk: Chunk,
        body: ChunkPieces,
        kind: ChecksumKind,
        size: u64,
    },
    Trailer {
        table_allowed: bool,
    },
    TrailerSkip {
        remaining: u64,
    },
    Done,
}

/// Progress through one disk, as xapi tracks it.
#[derive(Debug, Clone)]
struct Cursor {
    disk: usize,
    /// Next byte of the disk not yet accounted for.
    offset: u64,
    /// Name suffix and number of the previous chunk (`None` stands for xapi's `"-1"`).
    previous: Option<(String, u64)>,
}

/// A chunk whose header has been read.
#[derive(Debug, Clone)]
struct Chunk {
    name: String,
    suffix: String,
    number: u64,
    start: u64,
    size: u64,
    /// Bytes of the chunk past the disk's end, which must be zero (see `parse_chunk`).
    overhang: u64,
    virtual_size: u64,
    disk: String,
}

enum Step {
    Event(Event),
    NeedInput,
    Continue,
}

enum Fill {
    Ready,
    Pending,
    Ended,
}

/// The streaming XVA reader: push input with [`ArchiveReader::push`], pull [`Event`]s with
/// [`ArchiveReader::next_event`].
///
/// ```
/// # use xva::{ArchiveReader, Event};
/// let mut reader = ArchiveReader::new();
/// reader.push(bytes::Bytes::from_static(b"not an archive"));
/// reader.finish_input();
/// assert!(reader.next_event().is_err());
/// ```
#[derive(Debug)]
pub struct ArchiveReader {
    limits: ReaderLimits,
    raw: ByteQueue,
    input_ended: bool,
    format: Option<CompressionFormat>,
    decoder: Option<DecoderSlot>,
    tar: ByteQueue,
    tar_offset: u64,
    state: State,
    disks: Vec<DiskInfo>,
    export_vsn: i64,
    first_chunk_len: Option<u64>,
    pending_header: Option<HeaderBlock>,
    /// The checksum the next companion is expected to be (the previous one's), so that a
    /// chunk is hashed while its frames arrive; a wrong guess costs one more hash pass.
    expected_checksum: Option<ChecksumKind>,
    /// Verified blocks of the last chunk, not yet handed out.
    ready: VecDeque<Block>,
}

/// The decoder, wrapped so that the reader can derive `Debug`.
struct DecoderSlot(Decoder);

impl std::fmt::Debug for DecoderSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Decoder")
    }
}

impl Default for ArchiveReader {
    fn default() -> Self {
        Self::new()
    }
}

impl ArchiveReader {
    /// A reader with the default [`ReaderLimits`].
    pub fn new() -> Self {
        Self::with_limits(ReaderLimits::default())
    }

    /// A reader with explicit limits.
    pub fn with_limits(limits: ReaderLimits) -> Self {
        Self {
            limits,
            raw: ByteQueue::default(),
            input_ended: false,
            format: None,
            decoder: None,
            tar: ByteQueue::default(),
            tar_offset: 0,
            state: State::Detect,
            disks: Vec::new(),
            export_vsn: 0,
            first_chunk_len: None,
            pending_header: None,
            expected_checksum: None,
            ready: VecDeque::new(),
        }
    }

    /// Adds input bytes (as they came: compressed or not). Plain input is parsed in place, so
    /// a chunk that arrives in one frame is handed out without a copy.
    pub fn push(&mut self, data: Bytes) {
        if self.format.is_some() && self.decoder.is_none() {
            self.tar.push(data);
        } else {
            self.raw.push(data);
        }
    }

    /// Says that no more input will come: a step that still needs bytes is then an error.
    pub fn finish_input(&mut self) {
        self.input_ended = true;
    }

    /// True once [`Event::End`] has been returned or an error has stopped the reader.
    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done) && self.ready.is_empty()
    }

    /// How many input bytes the next step needs: an adapter that reads exactly this much gets
    /// every chunk of a plain archive in one frame (so it comes out as one block).
    pub fn input_hint(&self) -> usize {
        if self.format.is_none() {
            return BLOCK_SIZE.saturating_sub(self.raw.len()).max(1);
        }
        if self.decoder.is_some() {
            return COMPRESSED_STEP;
        }
        let needed = match &self.state {
            State::Detect | State::OvaHeader | State::Trailer { .. } => BLOCK_SIZE,
            State::ChunkHeader(_) | State::CompanionHeader { .. } => {
                if self.pending_header.is_some() {
                    0
                } else {
                    BLOCK_SIZE
                }
            }
            State::OvaBody { size } => padded(*size),
            State::ChunkData { chunk, body, .. } => usize::try_from(body.missing())
                .unwrap_or(usize::MAX)
                .saturating_add(tar::padding(chunk.size)),
            State::CompanionData { size, .. } => padded(*size),
            State::TrailerSkip { remaining } => usize::try_from(*remaining)
                .unwrap_or(usize::MAX)
                .min(COMPRESSED_STEP),
            State::Done => 0,
        };
        needed.saturating_sub(self.tar.len()).max(1)
    }

    /// The next event, or `Ok(None)` when more input is needed (or after [`Event::End`] or an
    /// error, which stop the reader).
    pub fn next_event(&mut self) -> Result<Option<Event>, Error> {
        loop {
            if let Some(block) = self.ready.pop_front() {
                return Ok(Some(Event::Block(block)));
            }
            let state = std::mem::replace(&mut self.state, State::Done);
            if matches!(state, State::Done) {
                return Ok(None);
            }
            // On error the state stays `Done`: the reader stops.
            let (next, step) = self.advance(state)?;
            self.state = next;
            match step {
                Step::Event(event) => return Ok(Some(event)),
                Step::NeedInput => return Ok(None),
                Step::Continue => {}
            }
        }
    }

    fn advance(&mut self, state: State) -> Result<(State, Step), Error> {
        match state {
            State::Detect => self.detect(),
            State::OvaHeader => self.ova_header(),
            State::OvaBody { size } => self.ova_body(size),
            State::ChunkHeader(cursor) => self.chunk_header(cursor),
            State::ChunkData {
                cursor,
                chunk,
                body,
            } => self.chunk_data(cursor, chunk, body),
            State::CompanionHeader {
                cursor,
                chunk,
                body,
            } => self.companion_header(cursor, chunk, body),
            State::CompanionData {
                cursor,
                chunk,
                body,
                kind,
                size,
            } => self.companion_data(cursor, chunk, body, kind, size),
            State::Trailer { table_allowed } => self.trailer(table_allowed),
            State::TrailerSkip { remaining } => self.trailer_skip(remaining),
            State::Done => Ok((State::Done, Step::NeedInput)),
        }
    }

    fn detect(&mut self) -> Result<(State, Step), Error> {
        if self.raw.len() < CompressionFormat::MAGIC_LEN && !self.input_ended {
            return Ok((State::Detect, Step::NeedInput));
        }
        if self.raw.is_empty() {
            return Err(Error::MissingOvaXml {
                found: "<empty input>".to_owned(),
            });
        }
        let mut magic = [0u8; CompressionFormat::MAGIC_LEN];
        let seen = self.raw.peek(&mut magic);
        let format = CompressionFormat::detect(magic.get(..seen).unwrap_or_default());
        tracing::debug!(?format, "detected archive compression");
        self.format = Some(format);
        match Decoder::new(format, self.limits.zstd_window_log_max)? {
            Some(decoder) => self.decoder = Some(DecoderSlot(decoder)),
            None => {
                for frame in self.raw.drain() {
                    self.tar.push(frame);
                }
            }
        }
        Ok((State::OvaHeader, Step::Continue))
    }

    /// Makes `needed` tar bytes available, decoding compressed input as far as that takes.
    fn fill(&mut self, needed: usize) -> Result<Fill, Error> {
        while self.tar.len() < needed {
            let Some(DecoderSlot(decoder)) = self.decoder.as_mut() else {
                return Ok(if self.input_ended {
                    Fill::Ended
                } else {
                    Fill::Pending
                });
            };
            if self.raw.is_empty() {
                return Ok(if self.input_ended {
                    Fill::Ended
                } else {
                    Fill::Pending
                });
            }
            let step = needed.saturating_sub(self.tar.len()).max(COMPRESSED_STEP);
            let mut out = Vec::with_capacity(step);
            // Decode across input frames into one buffer: the fewer pieces a chunk has, the
            // fewer blocks it makes.
            let mut used = 0usize;
            while out.len() < out.capacity() {
                let Some(front) = self.raw.front() else {
                    break;
                };
                let before = out.len();
                let taken = decoder.decode(front, &mut out)?;
                self.raw.discard(taken);
                used = used.saturating_add(taken);
                if taken == 0 && out.len() == before {
                    break;
                }
            }
            if out.is_empty() && used == 0 {
                // A decoder that takes nothing and gives nothing from non-empty input is stuck
                // on data that is not its format.
                return Err(Error::Decompress {
                    format: if matches!(self.format, Some(CompressionFormat::Zstd)) {
                        "zstd"
                    } else {
                        "gzip"
                    },
                    source: std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        "trailing data that does not decode",
                    ),
                });
            }
            // A chunk keeps its decoded pieces until verified: give back room they do not use.
            if out.capacity().saturating_sub(out.len()) > out.len() / 8 {
                out.shrink_to_fit();
            }
            self.tar.push(Bytes::from(out));
        }
        Ok(Fill::Ready)
    }

    fn consume(&mut self, count: u64) -> Bytes {
        let count = usize::try_from(count).unwrap_or(usize::MAX);
        let piece = self.tar.take(count);
        self.advance_offset(piece.len());
        piece
    }

    fn discard(&mut self, count: usize) -> usize {
        let dropped = self.tar.discard(count);
        self.advance_offset(dropped);
        dropped
    }

    fn advance_offset(&mut self, count: usize) {
        self.tar_offset = self
            .tar_offset
            .saturating_add(u64::try_from(count).unwrap_or(u64::MAX));
    }

    /// The next header block: the one put back by a lenient `export_vsn` 0 read, or a new one.
    /// `Ok(None)` means more input is needed; `Some(None)` that the input ended cleanly here.
    fn next_header(&mut self, context: &'static str) -> Result<Option<Option<HeaderBlock>>, Error> {
        if let Some(header) = self.pending_header.take() {
            return Ok(Some(Some(header)));
        }
        match self.fill(BLOCK_SIZE)? {
            Fill::Pending => Ok(None),
            Fill::Ended if self.tar.is_empty() => Ok(Some(None)),
            Fill::Ended => Err(Error::Truncated { context }),
            Fill::Ready => {
                let offset = self.tar_offset;
                let block = self.consume(tar::BLOCK_SIZE_U64);
                let block: &[u8; BLOCK_SIZE] = block
                    .as_ref()
                    .try_into()
                    .map_err(|_| Error::Truncated { context })?;
                tar::decode_header(block, offset).map(|header| Some(Some(header)))
            }
        }
    }

    /// Makes `size` bytes of entry data plus padding available; `None` if more input is needed.
    fn fill_entry(&mut self, size: u64, context: &'static str) -> Result<bool, Error> {
        match self.fill(padded(size))? {
            Fill::Ready => Ok(true),
            Fill::Pending => Ok(false),
            Fill::Ended => Err(Error::Truncated { context }),
        }
    }

    fn ova_header(&mut self) -> Result<(State, Step), Error> {
        let header = match self.next_header("the first tar header")? {
            None => return Ok((State::OvaHeader, Step::NeedInput)),
            Some(None) => {
                return Err(Error::MissingOvaXml {
                    found: "<end of input>".to_owned(),
                });
            }
            Some(Some(HeaderBlock::Zero)) => {
                return Err(Error::MissingOvaXml {
                    found: "<end of archive>".to_owned(),
                });
            }
            Some(Some(HeaderBlock::Entry(header))) => header,
        };
        if header.name != OVA_XML {
            return Err(Error::MissingOvaXml {
                found: excerpt(&header.name),
            });
        }
        if header.size > self.limits.max_ova_xml_len {
            return Err(Error::EntryTooLarge {
                entry: OVA_XML.to_owned(),
                size: header.size,
                limit: self.limits.max_ova_xml_len,
            });
        }
        Ok((State::OvaBody { size: header.size }, Step::Continue))
    }

    fn ova_body(&mut self, size: u64) -> Result<(State, Step), Error> {
        if !self.fill_entry(size, "ova.xml")? {
            return Ok((State::OvaBody { size }, Step::NeedInput));
        }
        let xml = self.consume(size);
        self.discard(tar::padding(size));
        let ova = OvaXml::parse(&xml)?;
        let disks = ova.streamed_disks()?;
        self.export_vsn = ova.version.export_vsn;
        // Archives with companions get XXH64 from every current writer.
        self.expected_checksum = (self.export_vsn > 0).then_some(ChecksumKind::Xxhash);
        tracing::debug!(
            disks = disks.len(),
            export_vsn = self.export_vsn,
            "read ova.xml"
        );
        self.disks = disks.clone();
        let layout = ArchiveLayout {
            ova,
            disks,
            compression: self.format.unwrap_or(CompressionFormat::None),
        };
        Ok((
            self.disk_start(0),
            Step::Event(Event::Layout(Box::new(layout))),
        ))
    }

    /// The state that reads disk `disk`, or the trailer after the last one.
    fn disk_start(&self, disk: usize) -> State {
        if disk < self.disks.len() {
            State::ChunkHeader(Cursor {
                disk,
                offset: 0,
                previous: None,
            })
        } else {
            State::Trailer {
                table_allowed: self.export_vsn < 2,
            }
        }
    }

    fn chunk_header(&mut self, mut cursor: Cursor) -> Result<(State, Step), Error> {
        let Some(disk) = self.disks.get(cursor.disk) else {
            return Ok((self.disk_start(cursor.disk), Step::Continue));
        };
        let (id, virtual_size) = (disk.id.as_str().to_owned(), disk.virtual_size);
        if cursor.offset >= virtual_size {
            tracing::debug!(disk = %id, virtual_size, "disk complete");
            let index = DiskIndex::new(cursor.disk);
            return Ok((
                self.disk_start(cursor.disk.saturating_add(1)),
                Step::Event(Event::DiskEnd(index)),
            ));
        }
        let header = match self.next_header("the chunks of a disk")? {
            None => return Ok((State::ChunkHeader(cursor), Step::NeedInput)),
            Some(None) => {
                return Err(Error::Truncated {
                    context: "the chunks of a disk",
                });
            }
            Some(Some(HeaderBlock::Zero)) => {
                return Err(Error::UnexpectedEntry {
                    expected: format!("a chunk of disk {}", excerpt(&id)),
                    found: "<end of archive>".to_owned(),
                });
            }
            Some(Some(HeaderBlock::Entry(header))) => header,
        };
        let chunk = self.parse_chunk(&id, virtual_size, &mut cursor, header)?;
        let body = ChunkPieces::new(chunk.size, self.expected_checksum);
        Ok((
            State::ChunkData {
                cursor,
                chunk,
                body,
            },
            Step::Continue,
        ))
    }

    /// Checks a chunk header against xapi's rules and places the chunk on the disk.
    fn parse_chunk(
        &mut self,
        id: &str,
        virtual_size: u64,
        cursor: &mut Cursor,
        header: EntryHeader,
    ) -> Result<Chunk, Error> {
        let suffix = header
            .name
            .strip_prefix(id)
            .and_then(|rest| rest.strip_prefix('/'))
            .filter(|suffix| {
                (1..=19).contains(&suffix.len()) && suffix.bytes().all(|byte| byte.is_ascii_digit())
            })
            .ok_or_else(|| Error::UnexpectedEntry {
                expected: format!("a chunk {}/NNNNNNNN", excerpt(id)),
                found: excerpt(&header.name),
            })?
            .to_owned();
        let number: u64 = suffix.parse().map_err(|_| Error::UnexpectedEntry {
            expected: format!("a chunk {}/NNNNNNNN", excerpt(id)),
            found: excerpt(&header.name),
        })?;
        let first_expected = match &cursor.previous {
            None => 0,
            Some((previous, previous_number)) => {
                if suffix.as_str() <= previous.as_str() || number <= *previous_number {
                    return Err(Error::ChunksOutOfOrder {
                        disk: excerpt(id),
                        previous: previous.clone(),
                        found: suffix,
                    });
                }
                previous_number.saturating_add(1)
            }
        };
        if header.size > self.limits.max_chunk_len {
            return Err(Error::EntryTooLarge {
                entry: excerpt(&header.name),
                size: header.size,
                limit: self.limits.max_chunk_len,
            });
        }
        // xapi's arithmetic: skipped numbers stand for copies of the archive's first chunk length.
        let first_len = *self.first_chunk_len.get_or_insert(header.size);
        let gap = number.saturating_sub(first_expected);
        let start = gap
            .checked_mul(first_len)
            .and_then(|skipped| cursor.offset.checked_add(skipped));
        let end = start.and_then(|start| start.checked_add(header.size));
        let (Some(start), Some(end)) = (start, end) else {
            return Err(Error::ChunkBeyondDisk {
                disk: excerpt(id),
                chunk: excerpt(&header.name),
                end: u64::MAX,
                virtual_size,
            });
        };
        // A chunk may overhang the disk's end only with zeros, checked once its data is
        // verified: XO pads its last chunk to 1 MiB in some versions, and some add an all-zero
        // last chunk one number too far. A chunk starting beyond the end is an error.
        if start > virtual_size {
            return Err(Error::ChunkBeyondDisk {
                disk: excerpt(id),
                chunk: excerpt(&header.name),
                end,
                virtual_size,
            });
        }
        if gap > 0 {
            tracing::trace!(disk = %id, chunk = %header.name, gap, "zero chunks skipped");
        }
        Ok(Chunk {
            name: header.name,
            suffix,
            number,
            start,
            size: header.size,
            overhang: end.saturating_sub(virtual_size),
            virtual_size,
            disk: excerpt(id),
        })
    }

    /// Takes the chunk's bytes as they come, frame by frame, without joining them.
    fn chunk_data(
        &mut self,
        cursor: Cursor,
        chunk: Chunk,
        mut body: ChunkPieces,
    ) -> Result<(State, Step), Error> {
        let padding = tar::padding(chunk.size);
        let needed = usize::try_from(body.missing())
            .unwrap_or(usize::MAX)
            .saturating_add(padding);
        let fill = self.fill(needed)?;
        while body.missing() > 0 {
            let piece = self
                .tar
                .take_front(usize::try_from(body.missing()).unwrap_or(usize::MAX));
            if piece.is_empty() {
                break;
            }
            self.advance_offset(piece.len());
            body.push(piece);
        }
        if body.missing() > 0 || self.tar.len() < padding {
            if matches!(fill, Fill::Ended) {
                return Err(Error::Truncated { context: "a chunk" });
            }
            return Ok((
                State::ChunkData {
                    cursor,
                    chunk,
                    body,
                },
                Step::NeedInput,
            ));
        }
        self.discard(padding);
        Ok((
            State::CompanionHeader {
                cursor,
                chunk,
                body,
            },
            Step::Continue,
        ))
    }

    fn companion_header(
        &mut self,
        cursor: Cursor,
        chunk: Chunk,
        body: ChunkPieces,
    ) -> Result<(State, Step), Error> {
        let checksums_required = self.export_vsn > 0;
        let header = match self.next_header("a checksum entry")? {
            None => {
                return Ok((
                    State::CompanionHeader {
                        cursor,
                        chunk,
                        body,
                    },
                    Step::NeedInput,
                ));
            }
            Some(None) if checksums_required => {
                return Err(Error::Truncated {
                    context: "a checksum entry",
                });
            }
            Some(None) => {
                self.expected_checksum = None;
                return self.chunk_done(cursor, chunk, body);
            }
            Some(Some(header)) => header,
        };
        let companion = match &header {
            HeaderBlock::Entry(entry) => entry
                .name
                .strip_prefix(chunk.name.as_str())
                .filter(|extension| extension.starts_with('.'))
                .map(|extension| (ChecksumKind::from_extension(extension), entry.size)),
            HeaderBlock::Zero => None,
        };
        match companion {
            Some((Some(kind), size)) => {
                if size > MAX_COMPANION_LEN {
                    return Err(Error::EntryTooLarge {
                        entry: format!("{}{}", excerpt(&chunk.name), kind.extension()),
                        size,
                        limit: MAX_COMPANION_LEN,
                    });
                }
                Ok((
                    State::CompanionData {
                        cursor,
                        chunk,
                        body,
                        kind,
                        size,
                    },
                    Step::Continue,
                ))
            }
            Some((None, _)) => {
                let HeaderBlock::Entry(entry) = header else {
                    return Err(Error::Truncated {
                        context: "a checksum entry",
                    });
                };
                Err(Error::UnsupportedChecksum {
                    entry: excerpt(&entry.name),
                })
            }
            None if checksums_required => Err(Error::UnexpectedEntry {
                expected: format!("{}.xxhash or .checksum", excerpt(&chunk.name)),
                found: match header {
                    HeaderBlock::Entry(entry) => excerpt(&entry.name),
                    HeaderBlock::Zero => "<end of archive>".to_owned(),
                },
            }),
            None => {
                // export_vsn 0 archives carry no inline checksums: this header is the next entry.
                self.pending_header = Some(header);
                self.expected_checksum = None;
                self.chunk_done(cursor, chunk, body)
            }
        }
    }

    fn companion_data(
        &mut self,
        cursor: Cursor,
        chunk: Chunk,
        mut body: ChunkPieces,
        kind: ChecksumKind,
        size: u64,
    ) -> Result<(State, Step), Error> {
        if !self.fill_entry(size, "a checksum entry")? {
            return Ok((
                State::CompanionData {
                    cursor,
                    chunk,
                    body,
                    kind,
                    size,
                },
                Step::NeedInput,
            ));
        }
        let expected = self.consume(size);
        self.discard(tar::padding(size));
        let found = body.digest(kind);
        self.expected_checksum = Some(kind);
        // xapi compares the strings exactly: case and whitespace matter.
        if expected.as_ref() != found.as_bytes() {
            return Err(Error::ChecksumMismatch {
                chunk: excerpt(&chunk.name),
                expected: excerpt_bytes(&expected),
                found,
            });
        }
        self.chunk_done(cursor, chunk, body)
    }

    /// Accounts for a chunk and queues its blocks (empty keepalive chunks only advance the
    /// name).
    fn chunk_done(
        &mut self,
        mut cursor: Cursor,
        chunk: Chunk,
        mut body: ChunkPieces,
    ) -> Result<(State, Step), Error> {
        if chunk.overhang > 0 {
            let inside = chunk.size.saturating_sub(chunk.overhang);
            if !body.drop_zero_tail(inside) {
                return Err(Error::ChunkBeyondDisk {
                    disk: chunk.disk,
                    chunk: excerpt(&chunk.name),
                    end: chunk.start.saturating_add(chunk.size),
                    virtual_size: chunk.virtual_size,
                });
            }
            tracing::debug!(
                chunk = %chunk.name,
                overhang = chunk.overhang,
                "zero padding past the end of the disk dropped"
            );
        }
        cursor.offset = chunk.start.saturating_add(chunk.size);
        let disk = DiskIndex::new(cursor.disk);
        let mut offset = chunk.start;
        for data in body.into_pieces() {
            let length = u64::try_from(data.len()).unwrap_or(u64::MAX);
            self.ready.push_back(Block {
                disk,
                offset: ByteOffset::new(offset),
                data,
            });
            offset = offset.saturating_add(length);
        }
        if self.ready.is_empty() {
            tracing::trace!(chunk = %chunk.name, "empty chunk");
        }
        cursor.previous = Some((chunk.suffix, chunk.number));
        Ok((State::ChunkHeader(cursor), Step::Continue))
    }

    fn trailer(&mut self, table_allowed: bool) -> Result<(State, Step), Error> {
        let header = match self.next_header("the end of the archive")? {
            None => return Ok((State::Trailer { table_allowed }, Step::NeedInput)),
            Some(None) | Some(Some(HeaderBlock::Zero)) => {
                tracing::debug!("archive complete");
                return Ok((State::Done, Step::Event(Event::End)));
            }
            Some(Some(HeaderBlock::Entry(header))) => header,
        };
        if !table_allowed {
            return Err(Error::UnexpectedEntry {
                expected: "the end of the archive".to_owned(),
                found: excerpt(&header.name),
            });
        }
        // export_vsn < 2: a checksum table follows the disks; the inline checksums were checked.
        if header.size > self.limits.max_ova_xml_len {
            return Err(Error::EntryTooLarge {
                entry: excerpt(&header.name),
                size: header.size,
                limit: self.limits.max_ova_xml_len,
            });
        }
        tracing::debug!(entry = %header.name, "skipping the checksum table of an old export");
        let remaining = header.size.saturating_add(tar::padding_u64(header.size));
        Ok((State::TrailerSkip { remaining }, Step::Continue))
    }

    fn trailer_skip(&mut self, remaining: u64) -> Result<(State, Step), Error> {
        if remaining == 0 {
            return Ok((
                State::Trailer {
                    table_allowed: false,
                },
                Step::Continue,
            ));
        }
        let step = usize::try_from(remaining)
            .unwrap_or(usize::MAX)
            .min(COMPRESSED_STEP);
        match self.fill(step)? {
            Fill::Pending if self.tar.is_empty() => {
                return Ok((State::TrailerSkip { remaining }, Step::NeedInput));
            }
            Fill::Ended if self.tar.is_empty() => {
                return Err(Error::Truncated {
                    context: "a checksum table",
                });
            }
            Fill::Ready | Fill::Pending | Fill::Ended => {}
        }
        let dropped = self.discard(step);
        let remaining = remaining.saturating_sub(u64::try_from(dropped).unwrap_or(u64::MAX));
        Ok((State::TrailerSkip { remaining }, Step::Continue))
    }
}

/// An entry's size plus its padding, as a buffer length (saturating: limits are checked first).
fn padded(size: u64) -> usize {
    usize::try_from(size)
        .unwrap_or(usize::MAX)
        .saturating_add(tar::padding(size))
}

/// What [`verify`] found in an archive.
#[derive(Debug, Clone, PartialEq)]
pub struct Verified {
    /// The archive's layout.
    pub layout: ArchiveLayout,
    /// Number of blocks handed out: one per chunk with data, as the archive is one buffer.
    pub blocks: u64,
    /// Bytes of chunk data (zeros in gaps not counted).
    pub data_bytes: u64,
}

/// Reads a whole archive and checks everything (tar framing, `ova.xml`, chunk order and sizes,
/// every checksum) without keeping the data: memory stays bounded by one chunk whatever the
/// archive holds. This is also the fuzzing entry point.
pub fn verify(archive: Bytes) -> Result<Verified, Error> {
    let mut reader = ArchiveReader::new();
    reader.push(archive);
    reader.finish_input();
    let mut layout = None;
    let (mut blocks, mut data_bytes) = (0u64, 0u64);
    loop {
        match reader.next_event()? {
            Some(Event::Layout(found)) => layout = Some(*found),
            Some(Event::Block(block)) => {
                blocks = blocks.saturating_add(1);
                data_bytes =
                    data_bytes.saturating_add(u64::try_from(block.data.len()).unwrap_or(u64::MAX));
            }
            Some(Event::DiskEnd(_)) => {}
            Some(Event::End) | None => break,
        }
    }
    let layout = layout.ok_or(Error::Truncated { context: "ova.xml" })?;
    Ok(Verified {
        layout,
        blocks,
        data_bytes,
    })
}

/// Reads a whole archive held in memory and returns its layout and every block: for small
/// archives, tests and fuzzing. Memory grows with the archive; stream big ones instead.
pub fn read_all(archive: Bytes) -> Result<(ArchiveLayout, Vec<Block>), Error> {
    read_all_with_limits(archive, ReaderLimits::default())
}

/// [`read_all`] with explicit limits.
pub fn read_all_with_limits(
    archive: Bytes,
    limits: ReaderLimits,
) -> Result<(ArchiveLayout, Vec<Block>), Error> {
    let mut reader = ArchiveReader::with_limits(limits);
    reader.push(archive);
    reader.finish_input();
    let mut layout = None;
    let mut blocks = Vec::new();
    loop {
        match reader.next_event()? {
            Some(Event::Layout(found)) => layout = Some(*found),
            Some(Event::Block(block)) => blocks.push(block),
            Some(Event::DiskEnd(_)) => {}
            Some(Event::End) | None => break,
        }
    }
    let layout = layout.ok_or(Error::Truncated { context: "ova.xml" })?;
    Ok((layout, blocks))
}
