//! Sans-IO reply-stream state machine of the client.
//!
//! Simple replies cannot be framed without knowing which cookies are READs and how long they
//! are, and structured replies must be checked against the request they answer; the
//! [`ReplyTracker`] remembers every request in flight and turns each header and payload into
//! an [`Action`] for the I/O layer: read a small payload and hand it back, read data straight
//! into the request's buffer at a given position, or deliver a finished request.
//!
//! Every `Err` returned by a `ReplyTracker` method is a protocol violation: the connection
//! must be dropped and every request in flight failed. Errors the server reports for one
//! request arrive as `Ok(Action::Complete)` with an `Err` result, and the connection stays
//! usable.

use std::collections::{BTreeMap, HashMap};

use super::consts::{ChunkType, CommandType, EXTENDED_REPLY_MAGIC, Errno, ReplyFlags};
use super::consts::{SIMPLE_REPLY_MAGIC, STRUCTURED_REPLY_MAGIC};
use super::transmission::{
    BlockStatusChunk, ChunkHeader, ErrorChunk, MAX_BLOCK_STATUS_PAYLOAD, MAX_ERROR_PAYLOAD,
    ReplyHeader, ReplyMode, decode_offset_hole,
};
use crate::Error;
use crate::units::{ByteRange, ContextId, Cookie, to_usize};

/// Most disjoint pieces one READ reply may arrive in before the server is deemed hostile.
pub const MAX_READ_FRAGMENTS: usize = 4096;
/// Most requests in flight one tracker accepts.
pub const MAX_IN_FLIGHT: usize = 4096;

/// What the I/O layer must do next.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// Read exactly `len` payload bytes and pass them to [`ReplyTracker::on_payload`].
    ReadPayload {
        /// Bytes to read (bounded by the chunk-type caps of this module).
        len: usize,
    },
    /// Read exactly `len` bytes into the read buffer of `cookie` at position `at` (relative to
    /// the request offset), then call [`ReplyTracker::on_data`]. Bytes of the buffer that no
    /// `ReadData` writes must read as zeros (holes).
    ReadData {
        /// Request the data belongs to.
        cookie: Cookie,
        /// Position inside the request's buffer.
        at: usize,
        /// Number of bytes.
        len: usize,
    },
    /// The chunk was consumed and no request finished; read the next header.
    Continue,
    /// A request finished (successfully or with a server-reported error).
    Complete(Completion),
}

/// A finished request.
#[derive(Debug, PartialEq, Eq)]
pub struct Completion {
    /// Cookie of the request.
    pub cookie: Cookie,
    /// The outcome: `Err` carries [`Error::Command`] (the connection stays usable).
    pub result: Result<Reply, CommandFailure>,
}

/// A server-reported failure of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandFailure {
    /// Error value.
    pub errno: Errno,
    /// Message from an ERROR chunk (empty for simple replies).
    pub message: String,
}

/// The successful outcome of a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply {
    /// A command without reply data (WRITE, FLUSH, TRIM, WRITE_ZEROES, CACHE).
    Done,
    /// A READ whose buffer is now complete (data placed by `ReadData`, zeros elsewhere).
    Read,
    /// BLOCK_STATUS: one chunk per selected metadata context.
    BlockStatus(Vec<BlockStatusChunk>),
}

#[derive(Debug)]
struct InFlight {
    command: CommandType,
    range: ByteRange,
    coverage: Coverage,
    failure: Option<CommandFailure>,
    statuses: Vec<BlockStatusChunk>,
}

/// Disjoint covered intervals of a READ, relative to the request offset, merged when adjacent.
#[derive(Debug, Default)]
struct Coverage {
    intervals: BTreeMap<u64, u64>,
    covered: u64,
}

impl Coverage {
    /// Adds `[start, start + len)`; `Err(reason)` on overlap or fragmentation.
    fn insert(&mut self, start: u64, len: u64) -> Result<(), &'static str> {
        let end = start.checked_add(len).ok_or("range overflows")?;
        let mut new_start = start;
        let mut new_end = end;
        if let Some((&prev_start, &prev_end)) = self.intervals.range(..=start).next_back() {
            if prev_end > start {
                return Err("overlaps earlier content");
            }
            if prev_end == start {
                new_start = prev_start;
            }
        }
        if let Some((&next_start, &next_end)) = self.intervals.range(start..).next() {
            if next_start < end {
                return Err("overlaps earlier content");
            }
            if next_start == end {
                new_end = next_end;
                self.intervals.remove(&next_start);
            }
        }
        self.intervals.insert(new_start, new_end);
        if self.intervals.len() > MAX_READ_FRAGMENTS {
            return Err("too fragmented");
        }
        self.covered = self.covered.saturating_add(len);
        Ok(())
    }
}

#[derive(Debug, Clone, Copy)]
enum Pending {
    /// Simple READ reply: data being read.
    SimpleData { cookie: Cookie },
    /// OFFSET_DATA: waiting for the 8-byte offset.
    DataOffset { header: ChunkHeader, data_len: u64 },
    /// OFFSET_DATA: data being read.
    Data { cookie: Cookie, done: bool },
    /// Any other chunk: waiting for its whole payload.
    Payload { header: ChunkHeader },
}

/// Tracks requests in flight and frames the reply stream (see the module docs).
#[derive(Debug)]
pub struct ReplyTracker {
    mode: ReplyMode,
    contexts: Vec<ContextId>,
    in_flight: HashMap<Cookie, InFlight>,
    pending: Option<Pending>,
}

impl ReplyTracker {
    /// A tracker for a connection in `mode` with the metadata contexts selected at negotiation.
    pub fn new(mode: ReplyMode, contexts: Vec<ContextId>) -> Self {
        Self {
            mode,
            contexts,
            in_flight: HashMap::new(),
            pending: None,
        }
    }

    /// The negotiated reply mode.
    pub fn mode(&self) -> ReplyMode {
        self.mode
    }

    /// Number of requests awaiting replies.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Records a request before it is sent. DISC must not be registered (it has no reply).
    pub fn register(
        &mut self,
        cookie: Cookie,
        command: CommandType,
        range: ByteRange,
    ) -> Result<(), Error> {
        if self.in_flight.len() >= MAX_IN_FLIGHT {
            return Err(Error::TooMany {
                what: "requests in flight",
                max: MAX_IN_FLIGHT,
            });
        }
        if self.in_flight.contains_key(&cookie) {
            return Err(Error::DuplicateCookie { cookie });
        }
        self.in_flight.insert(
            cookie,
            InFlight {
                command,
                range,
                coverage: Coverage::default(),
                failure: None,
                statuses: Vec::new(),
            },
        );
        Ok(())
    }

    /// Forgets every request (after the connection failed) and returns their cookies.
    pub fn drain(&mut self) -> Vec<Cookie> {
        self.pending = None;
        self.in_flight.drain().map(|(cookie, _)| cookie).collect()
    }

    /// Length of the header starting with `magic`, checked against the negotiated mode.
    pub fn header_len(&self, magic: [u8; 4]) -> Result<usize, Error> {
        let value = u32::from_be_bytes(magic);
        let allowed = match self.mode {
            ReplyMode::Simple => value == SIMPLE_REPLY_MAGIC,
            ReplyMode::Structured => value == SIMPLE_REPLY_MAGIC || value == STRUCTURED_REPLY_MAGIC,
            ReplyMode::Extended => value == EXTENDED_REPLY_MAGIC,
        };
        let len = ReplyHeader::header_len(magic)?;
        if allowed {
            Ok(len)
        } else {
            Err(Error::UnexpectedReplyMagic {
                found: value,
                mode: self.mode.name(),
            })
        }
    }

    fn request(&mut self, cookie: Cookie) -> Result<&mut InFlight, Error> {
        self.in_flight
            .get_mut(&cookie)
            .ok_or(Error::UnknownCookie { cookie })
    }

    /// Processes a reply header (decoded with [`ReplyHeader::decode`]).
    pub fn on_header(&mut self, header: ReplyHeader) -> Result<Action, Error> {
        if self.pending.is_some() {
            return Err(Error::Malformed {
                what: "reply tracker",
                reason: "header before the previous chunk was consumed",
            });
        }
        match header {
            ReplyHeader::Simple { errno, cookie } => self.on_simple(errno, cookie),
            ReplyHeader::Chunk(chunk) => self.on_chunk(chunk),
        }
    }

    fn on_simple(&mut self, errno: Errno, cookie: Cookie) -> Result<Action, Error> {
        let mode = self.mode;
        let request = self.request(cookie)?;
        let mismatch = |reason| Error::ChunkMismatch {
            cookie,
            command: request.command,
            chunk: 0,
            reason,
        };
        if mode == ReplyMode::Extended {
            return Err(mismatch("simple reply after extended headers"));
        }
        if errno.0 != 0 {
            request.failure = Some(CommandFailure {
                errno,
                message: String::new(),
            });
            return self.finish(cookie);
        }
        match request.command {
            CommandType::READ if mode == ReplyMode::Simple => {
                let len = to_usize(request.range.length(), "read length")?;
                request
                    .coverage
                    .insert(0, request.range.length())
                    .map_err(mismatch)?;
                self.pending = Some(Pending::SimpleData { cookie });
                Ok(Action::ReadData { cookie, at: 0, len })
            }
            CommandType::READ => Err(mismatch("simple reply with data after structured replies")),
            CommandType::BLOCK_STATUS => Err(mismatch("successful simple reply to BLOCK_STATUS")),
            _ => self.finish(cookie),
        }
    }

    fn on_chunk(&mut self, header: ChunkHeader) -> Result<Action, Error> {
        let cookie = header.cookie;
        let request = self.request(cookie)?;
        let command = request.command;
        let range = request.range;
        let mismatch = |reason| Error::ChunkMismatch {
            cookie,
            command,
            chunk: header.chunk_type.0,
            reason,
        };
        if let Some(offset) = header.offset
            && offset != range.offset()
        {
            return Err(mismatch("extended header offset differs from the request"));
        }
        let done = header.flags.contains(ReplyFlags::DONE);
        match header.chunk_type {
            ChunkType::NONE => {
                if header.length != 0 || !done {
                    return Err(mismatch("NONE chunk must be empty and final"));
                }
                self.finish(cookie)
            }
            ChunkType::OFFSET_DATA => {
                if command != CommandType::READ {
                    return Err(mismatch("data chunk for a non-READ request"));
                }
                let data_len = header
                    .length
                    .checked_sub(8)
                    .filter(|&len| len > 0)
                    .ok_or_else(|| mismatch("OFFSET_DATA without data"))?;
                if data_len > range.length() {
                    return Err(Error::OversizePayload {
                        what: "OFFSET_DATA chunk",
                        found: header.length,
                        max: range.length().saturating_add(8),
                    });
                }
                self.pending = Some(Pending::DataOffset { header, data_len });
                Ok(Action::ReadPayload { len: 8 })
            }
            ChunkType::OFFSET_HOLE => {
                if command != CommandType::READ {
                    return Err(mismatch("hole chunk for a non-READ request"));
                }
                if header.length != 12 {
                    return Err(Error::BadLength {
                        what: "OFFSET_HOLE chunk",
                        found: header.length,
                        expected: 12,
                    });
                }
                self.pending = Some(Pending::Payload { header });
                Ok(Action::ReadPayload { len: 12 })
            }
            ChunkType::BLOCK_STATUS | ChunkType::BLOCK_STATUS_EXT => {
                if command != CommandType::BLOCK_STATUS {
                    return Err(mismatch("block status chunk for another command"));
                }
                self.payload(header, MAX_BLOCK_STATUS_PAYLOAD, "BLOCK_STATUS chunk")
            }
            chunk_type if chunk_type.is_error() => {
                self.payload(header, MAX_ERROR_PAYLOAD, "error chunk")
            }
            _ => Err(mismatch("unknown non-error chunk type")),
        }
    }

    fn payload(
        &mut self,
        header: ChunkHeader,
        max: u64,
        what: &'static str,
    ) -> Result<Action, Error> {
        if header.length > max {
            return Err(Error::OversizePayload {
                what,
                found: header.length,
                max,
            });
        }
        let len = to_usize(header.length, what)?;
        self.pending = Some(Pending::Payload { header });
        Ok(Action::ReadPayload { len })
    }

    /// Processes the payload requested by [`Action::ReadPayload`].
    pub fn on_payload(&mut self, payload: &[u8]) -> Result<Action, Error> {
        match self.pending.take() {
            Some(Pending::DataOffset { header, data_len }) => {
                let cookie = header.cookie;
                let offset = super::handshake::read_u64(payload, 0, "OFFSET_DATA offset")?;
                let request = self.request(cookie)?;
                let (at, len) = place(request, header, offset, data_len)?;
                self.pending = Some(Pending::Data {
                    cookie,
                    done: header.flags.contains(ReplyFlags::DONE),
                });
                Ok(Action::ReadData { cookie, at, len })
            }
            Some(Pending::Payload { header }) => self.on_chunk_payload(header, payload),
            other => {
                self.pending = other;
                Err(Error::Malformed {
                    what: "reply tracker",
                    reason: "payload delivered while none was requested",
                })
            }
        }
    }

    fn on_chunk_payload(&mut self, header: ChunkHeader, payload: &[u8]) -> Result<Action, Error> {
        let cookie = header.cookie;
        let mode = self.mode;
        let done = header.flags.contains(ReplyFlags::DONE);
        let known_contexts = self.contexts.clone();
        let request = self.request(cookie)?;
        let mismatch = |reason| Error::ChunkMismatch {
            cookie,
            command: request.command,
            chunk: header.chunk_type.0,
            reason,
        };
        match header.chunk_type {
            ChunkType::OFFSET_HOLE => {
                let (offset, length) = decode_offset_hole(payload)?;
                // Holes need no I/O: bytes no data chunk writes read as zeros.
                place(request, header, offset, length)?;
            }
            ChunkType::BLOCK_STATUS | ChunkType::BLOCK_STATUS_EXT => {
                let chunk = if header.chunk_type == ChunkType::BLOCK_STATUS_EXT {
                    if mode != ReplyMode::Extended {
                        return Err(mismatch("BLOCK_STATUS_EXT without extended headers"));
                    }
                    BlockStatusChunk::decode_extended(payload)?
                } else {
                    BlockStatusChunk::decode(payload)?
                };
                if !known_contexts.contains(&chunk.context) {
                    return Err(mismatch("unknown metadata context id"));
                }
                if request.statuses.iter().any(|s| s.context == chunk.context) {
                    return Err(mismatch("second chunk for the same context"));
                }
                request.statuses.push(chunk);
            }
            ChunkType::ERROR | ChunkType::ERROR_OFFSET => {
                let error =
                    ErrorChunk::decode(payload, header.chunk_type == ChunkType::ERROR_OFFSET)?;
                request.failure.get_or_insert(CommandFailure {
                    errno: error.errno,
                    message: error.message,
                });
            }
            _ => {
                // Unknown error chunk: its payload starts like ERROR when well formed.
                let failure = ErrorChunk::decode(payload, false)
                    .map(|e| CommandFailure {
                        errno: e.errno,
                        message: e.message,
                    })
                    .unwrap_or(CommandFailure {
                        errno: Errno::EINVAL,
                        message: String::from("unknown error chunk type"),
                    });
                request.failure.get_or_insert(failure);
            }
        }
        if done {
            self.finish(cookie)
        } else {
            Ok(Action::Continue)
        }
    }

    /// Reports that the data requested by [`Action::ReadData`] is in place.
    pub fn on_data(&mut self) -> Result<Action, Error> {
        match self.pending.take() {
            Some(Pending::SimpleData { cookie }) => self.finish(cookie),
            Some(Pending::Data { cookie, done }) => {
                if done {
                    self.finish(cookie)
                } else {
                    Ok(Action::Continue)
                }
            }
            other => {
                self.pending = other;
                Err(Error::Malformed {
                    what: "reply tracker",
                    reason: "data delivered while none was requested",
                })
            }
        }
    }

    fn finish(&mut self, cookie: Cookie) -> Result<Action, Error> {
        let request = self
            .in_flight
            .remove(&cookie)
            .ok_or(Error::UnknownCookie { cookie })?;
        if let Some(failure) = request.failure {
            return Ok(Action::Complete(Completion {
                cookie,
                result: Err(failure),
            }));
        }
        let reply = match request.command {
            CommandType::READ => {
                if request.coverage.covered != request.range.length() {
                    return Err(Error::IncompleteRead {
                        cookie,
                        covered: request.coverage.covered,
                        expected: request.range.length(),
                    });
                }
                Reply::Read
            }
            CommandType::BLOCK_STATUS => {
                if request.statuses.len() != self.contexts.len() {
                    return Err(Error::ChunkMismatch {
                        cookie,
                        command: request.command,
                        chunk: ChunkType::BLOCK_STATUS.0,
                        reason: "not one chunk per selected metadata context",
                    });
                }
                Reply::BlockStatus(request.statuses)
            }
            _ => Reply::Done,
        };
        Ok(Action::Complete(Completion {
            cookie,
            result: Ok(reply),
        }))
    }
}

/// Checks that `[offset, offset + len)` lies inside the request and does not overlap earlier
/// content, records it, and returns its position in the request's buffer.
fn place(
    request: &mut InFlight,
    header: ChunkHeader,
    offset: u64,
    len: u64,
) -> Result<(usize, usize), Error> {
    let mismatch = |reason| Error::ChunkMismatch {
        cookie: header.cookie,
        command: request.command,
        chunk: header.chunk_type.0,
        reason,
    };
    let inside = offset
        .checked_add(len)
        .is_some_and(|end| offset >= request.range.offset() && end <= request.range.end());
    if !inside {
        return Err(mismatch("content outside the requested range"));
    }
    let at = offset.saturating_sub(request.range.offset());
    request.coverage.insert(at, len).map_err(mismatch)?;
    Ok((
        to_usize(at, "read position")?,
        to_usize(len, "read length")?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::consts::ReplyFlags;

    fn chunk(cookie: u64, chunk_type: ChunkType, done: bool, length: u64) -> ReplyHeader {
        ReplyHeader::Chunk(ChunkHeader {
            flags: if done {
                ReplyFlags::DONE
            } else {
                ReplyFlags::EMPTY
            },
            chunk_type,
            cookie: Cookie(cookie),
            offset: None,
            length,
        })
    }

    fn range(offset: u64, length: u64) -> ByteRange {
        ByteRange::new(offset, length).unwrap()
    }

    #[test]
    fn simple_read_is_framed_by_the_registered_length() {
        let mut tracker = ReplyTracker::new(ReplyMode::Simple, vec![]);
        tracker
            .register(Cookie(1), CommandType::READ, range(4096, 512))
            .unwrap();
        let action = tracker
            .on_header(ReplyHeader::Simple {
                errno: Errno(0),
                cookie: Cookie(1),
            })
            .unwrap();
        assert_eq!(
            action,
            Action::ReadData {
                cookie: Cookie(1),
                at: 0,
                len: 512
            }
        );
        let Action::Complete(done) = tracker.on_data().unwrap() else {
            panic!("read should complete")
        };
        assert_eq!(done.result, Ok(Reply::Read));
        assert_eq!(tracker.in_flight(), 0);
    }

    #[test]
    fn wrong_cookie_is_a_protocol_violation() {
        let mut tracker = ReplyTracker::new(ReplyMode::Simple, vec![]);
        tracker
            .register(Cookie(1), CommandType::READ, range(0, 512))
            .unwrap();
        let err = tracker
            .on_header(ReplyHeader::Simple {
                errno: Errno(0),
                cookie: Cookie(7),
            })
            .unwrap_err();
        assert!(matches!(err, Error::UnknownCookie { cookie: Cookie(7) }));
        assert!(err.is_protocol_violation());
    }

    #[test]
    fn structured_read_in_pieces_with_a_hole() {
        let mut tracker = ReplyTracker::new(ReplyMode::Structured, vec![]);
        tracker
            .register(Cookie(3), CommandType::READ, range(1000, 300))
            .unwrap();
        // Second half first: data 1150..1300.
        assert_eq!(
            tracker
                .on_header(chunk(3, ChunkType::OFFSET_DATA, false, 8 + 150))
                .unwrap(),
            Action::ReadPayload { len: 8 }
        );
        assert_eq!(
            tracker.on_payload(&1150u64.to_be_bytes()).unwrap(),
            Action::ReadData {
                cookie: Cookie(3),
                at: 150,
                len: 150
            }
        );
        assert_eq!(tracker.on_data().unwrap(), Action::Continue);
        // Then a hole 1000..1150, final.
        assert_eq!(
            tracker
                .on_header(chunk(3, ChunkType::OFFSET_HOLE, true, 12))
                .unwrap(),
            Action::ReadPayload { len: 12 }
        );
        let mut hole = 1000u64.to_be_bytes().to_vec();
        hole.extend_from_slice(&150u32.to_be_bytes());
        let Action::Complete(done) = tracker.on_payload(&hole).unwrap() else {
            panic!("read should complete")
        };
        assert_eq!(done.result, Ok(Reply::Read));
    }

    #[test]
    fn overlapping_or_outside_chunks_are_rejected() {
        let mut tracker = ReplyTracker::new(ReplyMode::Structured, vec![]);
        tracker
            .register(Cookie(1), CommandType::READ, range(0, 100))
            .unwrap();
        tracker
            .on_header(chunk(1, ChunkType::OFFSET_DATA, false, 8 + 50))
            .unwrap();
        tracker.on_payload(&60u64.to_be_bytes()).unwrap_err();

        let mut tracker = ReplyTracker::new(ReplyMode::Structured, vec![]);
        tracker
            .register(Cookie(1), CommandType::READ, range(0, 100))
            .unwrap();
        tracker
            .on_header(chunk(1, ChunkType::OFFSET_DATA, false, 8 + 50))
            .unwrap();
        tracker.on_payload(&0u64.to_be_bytes()).unwrap();
        tracker.on_data().unwrap();
        tracker
            .on_header(chunk(1, ChunkType::OFFSET_DATA, true, 8 + 50))
            .unwrap();
        let err = tracker.on_payload(&40u64.to_be_bytes()).unwrap_err();
        assert!(matches!(err, Error::ChunkMismatch { .. }));
    }

    #[test]
    fn oversize_data_chunk_is_refused_before_allocation() {
        let mut tracker = ReplyTracker::new(ReplyMode::Structured, vec![]);
        tracker
            .register(Cookie(1), CommandType::READ, range(0, 4096))
            .unwrap();
        let err = tracker
            .on_header(chunk(1, ChunkType::OFFSET_DATA, true, u64::from(u32::MAX)))
            .unwrap_err();
        assert!(matches!(err, Error::OversizePayload { .. }));
        let mut tracker = ReplyTracker::new(ReplyMode::Structured, vec![ContextId(0)]);
        tracker
            .register(Cookie(2), CommandType::BLOCK_STATUS, range(0, 4096))
            .unwrap();
        let err = tracker
            .on_header(chunk(2, ChunkType::BLOCK_STATUS, true, u64::from(u32::MAX)))
            .unwrap_err();
        assert!(matches!(err, Error::OversizePayload { .. }));
    }

    #[test]
    fn error_chunk_fails_only_that_request() {
        let mut tracker = ReplyTracker::new(ReplyMode::Structured, vec![]);
        tracker
            .register(Cookie(9), CommandType::READ, range(0, 1 << 20))
            .unwrap();
        let mut payload = 22u32.to_be_bytes().to_vec();
        payload.extend_from_slice(&3u16.to_be_bytes());
        payload.extend_from_slice(b"bad");
        let len = payload.len() as u64;
        tracker
            .on_header(chunk(9, ChunkType::ERROR, true, len))
            .unwrap();
        let Action::Complete(done) = tracker.on_payload(&payload).unwrap() else {
            panic!("request should complete")
        };
        assert_eq!(
            done.result,
            Err(CommandFailure {
                errno: Errno::EINVAL,
                message: "bad".into()
            })
        );
    }

    #[test]
    fn incomplete_read_is_a_violation() {
        let mut tracker = ReplyTracker::new(ReplyMode::Structured, vec![]);
        tracker
            .register(Cookie(1), CommandType::READ, range(0, 100))
            .unwrap();
        tracker
            .on_header(chunk(1, ChunkType::OFFSET_DATA, true, 8 + 50))
            .unwrap();
        tracker.on_payload(&0u64.to_be_bytes()).unwrap();
        assert!(matches!(
            tracker.on_data(),
            Err(Error::IncompleteRead { covered: 50, .. })
        ));
    }

    #[test]
    fn block_status_needs_one_chunk_per_context() {
        let mut tracker =
            ReplyTracker::new(ReplyMode::Structured, vec![ContextId(0), ContextId(2)]);
        tracker
            .register(Cookie(5), CommandType::BLOCK_STATUS, range(0, 1 << 20))
            .unwrap();
        let mut payload = 2u32.to_be_bytes().to_vec();
        payload.extend_from_slice(&(1u32 << 20).to_be_bytes());
        payload.extend_from_slice(&1u32.to_be_bytes());
        tracker
            .on_header(chunk(5, ChunkType::BLOCK_STATUS, true, 12))
            .unwrap();
        assert!(tracker.on_payload(&payload).is_err());
    }

    #[test]
    fn magic_must_match_the_mode() {
        let simple = ReplyTracker::new(ReplyMode::Simple, vec![]);
        assert!(
            simple
                .header_len(STRUCTURED_REPLY_MAGIC.to_be_bytes())
                .is_err()
        );
        let extended = ReplyTracker::new(ReplyMode::Extended, vec![]);
        assert!(
            extended
                .header_len(SIMPLE_REPLY_MAGIC.to_be_bytes())
                .is_err()
        );
        assert_eq!(
            extended
                .header_len(EXTENDED_REPLY_MAGIC.to_be_bytes())
                .unwrap(),
            32
        );
    }
}
