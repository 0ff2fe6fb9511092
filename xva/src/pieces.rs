//! A chunk that arrives in several frames (an HTTP body comes in 64 KiB frames): its pieces are
//! kept as slices of the frames and hashed as they arrive, so the chunk is never copied back
//! together. Its checksum entry follows it, so the pieces wait (memory: one chunk) until the
//! checksum is verified, then go out as one block each.

use bytes::{Bytes, BytesMut};

use crate::checksum::{ChecksumHasher, ChecksumKind};
use crate::write::is_all_zero;

/// Pieces shorter than this (unless one holds the whole chunk) are copied together, so a chunk
/// arriving in tiny frames still makes at most `2 × size / MIN_PIECE + 1` pieces.
const MIN_PIECE: usize = 16 * 1024;

/// The data of one chunk received so far.
#[derive(Debug)]
pub(crate) struct ChunkPieces {
    size: u64,
    received: u64,
    pieces: Vec<Bytes>,
    /// Short pieces being copied together.
    small: BytesMut,
    /// Running checksum of the kind the companion is expected to be (the previous chunk's).
    hasher: Option<ChecksumHasher>,
}

impl ChunkPieces {
    /// An empty chunk of `size` bytes, hashed on the fly as `expected` when that is known.
    pub(crate) fn new(size: u64, expected: Option<ChecksumKind>) -> Self {
        Self {
            size,
            received: 0,
            pieces: Vec::new(),
            small: BytesMut::new(),
            hasher: expected.map(ChecksumKind::hasher),
        }
    }

    /// Bytes still to come.
    pub(crate) fn missing(&self) -> u64 {
        self.size.saturating_sub(self.received)
    }

    /// Adds the next piece (the caller never gives more than [`ChunkPieces::missing`]).
    pub(crate) fn push(&mut self, piece: Bytes) {
        if piece.is_empty() {
            return;
        }
        if let Some(hasher) = self.hasher.as_mut() {
            hasher.update(&piece);
        }
        let length = u64::try_from(piece.len()).unwrap_or(u64::MAX);
        let whole_chunk = self.received == 0 && length == self.size;
        self.received = self.received.saturating_add(length);
        if whole_chunk || piece.len() >= MIN_PIECE {
            self.flush_small();
            self.pieces.push(piece);
        } else {
            self.small.extend_from_slice(&piece);
            if self.small.len() >= MIN_PIECE {
                self.flush_small();
            }
        }
    }

    fn flush_small(&mut self) {
        if !self.small.is_empty() {
            self.pieces.push(self.small.split().freeze());
        }
    }

    /// The companion's content for the data, as `kind` computes it: from the running hasher
    /// when it guessed the kind right, otherwise over the pieces now.
    pub(crate) fn digest(&mut self, kind: ChecksumKind) -> String {
        self.flush_small();
        match self.hasher.take() {
            Some(hasher) if hasher.kind() == kind => hasher.finish(),
            _ => {
                let mut hasher = kind.hasher();
                for piece in &self.pieces {
                    hasher.update(piece);
                }
                hasher.finish()
            }
        }
    }

    /// Keeps the first `keep` bytes; `false` (and the chunk is spoilt) if a byte past them is
    /// not zero.
    pub(crate) fn drop_zero_tail(&mut self, keep: u64) -> bool {
        self.flush_small();
        let mut kept = Vec::with_capacity(self.pieces.len());
        let mut start = 0u64;
        for piece in std::mem::take(&mut self.pieces) {
            let length = u64::try_from(piece.len()).unwrap_or(u64::MAX);
            let end = start.saturating_add(length);
            if end <= keep {
                kept.push(piece);
            } else {
                // `keep - start` is below this piece's length, so it fits a usize.
                let inside = usize::try_from(keep.saturating_sub(start)).unwrap_or(0);
                if !is_all_zero(piece.get(inside..).unwrap_or_default()) {
                    return false;
                }
                if inside > 0 {
                    kept.push(piece.slice(..inside));
                }
            }
            start = end;
        }
        self.pieces = kept;
        true
    }

    /// The pieces, in order and non-empty: one when the chunk arrived in one frame.
    pub(crate) fn into_pieces(mut self) -> Vec<Bytes> {
        self.flush_small();
        self.pieces
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces_of(data: &[u8], frame: usize, expected: Option<ChecksumKind>) -> ChunkPieces {
        let mut pieces = ChunkPieces::new(u64::try_from(data.len()).unwrap(), expected);
        for frame in data.chunks(frame) {
            pieces.push(Bytes::copy_from_slice(frame));
        }
        assert_eq!(pieces.missing(), 0);
        pieces
    }

    #[test]
    fn one_frame_is_one_piece_without_a_copy() {
        let data = Bytes::from(vec![7u8; 100]);
        let mut pieces = ChunkPieces::new(100, Some(ChecksumKind::Xxhash));
        pieces.push(data.clone());
        assert_eq!(
            pieces.digest(ChecksumKind::Xxhash),
            ChecksumKind::Xxhash.digest(&data)
        );
        let out = pieces.into_pieces();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].as_ptr(), data.as_ptr());
    }

    #[test]
    fn digests_whatever_kind_was_guessed() {
        let data: Vec<u8> = (0..200_000u32)
            .map(|i| u8::try_from(i % 253).unwrap())
            .collect();
        for guess in [None, Some(ChecksumKind::Xxhash), Some(ChecksumKind::Sha1)] {
            for kind in [ChecksumKind::Xxhash, ChecksumKind::Sha1] {
                let mut pieces = pieces_of(&data, 65_536, guess);
                assert_eq!(
                    pieces.digest(kind),
                    kind.digest(&data),
                    "{guess:?} {kind:?}"
                );
            }
        }
    }

    #[test]
    fn tiny_frames_are_copied_together_into_few_pieces() {
        let data: Vec<u8> = (0..100_000u32)
            .map(|i| u8::try_from(i % 7).unwrap())
            .collect();
        let out = pieces_of(&data, 100, None).into_pieces();
        assert!(
            out.len() <= 2 * data.len() / MIN_PIECE + 1,
            "{} pieces",
            out.len()
        );
        assert_eq!(out.concat(), data);
    }

    #[test]
    fn zero_tail_is_dropped_across_pieces_and_data_in_it_refused() {
        let mut data = vec![1u8; 70_000];
        data.resize(200_000, 0);
        let mut pieces = pieces_of(&data, 65_536, None);
        assert!(pieces.drop_zero_tail(70_000));
        assert_eq!(pieces.into_pieces().concat(), &data[..70_000]);

        let mut pieces = pieces_of(&data, 65_536, None);
        assert!(!pieces.drop_zero_tail(69_999));
    }
}
