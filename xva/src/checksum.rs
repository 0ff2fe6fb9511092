//! Chunk checksums: the `.xxhash` and `.checksum` companion entries (spec §14).

use std::fmt::Write as _;

use sha1::{Digest as _, Sha1};
use xxhash_rust::xxh64::Xxh64;

/// The checksum written after every chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ChecksumKind {
    /// `.xxhash`: XXH64, seed 0, 16 upper-case hex digits. xapi ≥ 1.170 writes and reads it.
    #[default]
    Xxhash,
    /// `.checksum`: SHA-1, 40 lower-case hex digits. Every xapi reads it, including < 1.170.
    Sha1,
}

impl ChecksumKind {
    /// The companion entry's extension, with its dot.
    pub fn extension(self) -> &'static str {
        match self {
            Self::Xxhash => ".xxhash",
            Self::Sha1 => ".checksum",
        }
    }

    /// The kind a companion extension (with its dot) names.
    pub fn from_extension(extension: &str) -> Option<Self> {
        match extension {
            ".xxhash" => Some(Self::Xxhash),
            ".checksum" => Some(Self::Sha1),
            _ => None,
        }
    }

    /// The companion's content for `data`, exactly as xapi writes it (no newline).
    pub fn digest(self, data: &[u8]) -> String {
        match self {
            Self::Xxhash => xxhash_text(xxhash_rust::xxh64::xxh64(data, 0)),
            Self::Sha1 => sha1_text(&Sha1::digest(data)),
        }
    }

    /// A hasher that computes [`ChecksumKind::digest`] piece by piece, for a chunk that arrives
    /// in several frames.
    ///
    /// ```
    /// # use xva::ChecksumKind;
    /// let mut hasher = ChecksumKind::Xxhash.hasher();
    /// hasher.update(b"hello ");
    /// hasher.update(b"world");
    /// assert_eq!(hasher.finish(), ChecksumKind::Xxhash.digest(b"hello world"));
    /// ```
    pub fn hasher(self) -> ChecksumHasher {
        ChecksumHasher {
            state: match self {
                Self::Xxhash => HasherState::Xxhash(Xxh64::new(0)),
                Self::Sha1 => HasherState::Sha1(Sha1::new()),
            },
        }
    }
}

/// A running chunk checksum (see [`ChecksumKind::hasher`]): the digest of every byte given to
/// [`ChecksumHasher::update`], in order.
#[derive(Clone)]
pub struct ChecksumHasher {
    state: HasherState,
}

#[derive(Clone)]
enum HasherState {
    Xxhash(Xxh64),
    Sha1(Sha1),
}

impl ChecksumHasher {
    /// The kind of checksum being computed.
    pub fn kind(&self) -> ChecksumKind {
        match self.state {
            HasherState::Xxhash(_) => ChecksumKind::Xxhash,
            HasherState::Sha1(_) => ChecksumKind::Sha1,
        }
    }

    /// Adds the next bytes.
    pub fn update(&mut self, data: &[u8]) {
        match &mut self.state {
            HasherState::Xxhash(hasher) => hasher.update(data),
            HasherState::Sha1(hasher) => hasher.update(data),
        }
    }

    /// The companion's content for every byte added, as [`ChecksumKind::digest`] gives it.
    pub fn finish(self) -> String {
        match self.state {
            HasherState::Xxhash(hasher) => xxhash_text(hasher.digest()),
            HasherState::Sha1(hasher) => sha1_text(&hasher.finalize()),
        }
    }
}

impl std::fmt::Debug for ChecksumHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChecksumHasher")
            .field("kind", &self.kind())
            .finish_non_exhaustive()
    }
}

/// XXH64 as xapi writes it: 16 upper-case hex digits.
fn xxhash_text(hash: u64) -> String {
    format!("{hash:016X}")
}

/// SHA-1 as xapi writes it: 40 lower-case hex digits.
fn sha1_text(hash: &[u8]) -> String {
    let mut text = String::with_capacity(40);
    for byte in hash {
        let _ = write!(text, "{byte:02x}");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_vectors() {
        // Spec §14, checked there against python-xxhash and hashlib.
        let zeros = vec![0u8; 1 << 20];
        let letters = vec![0x41u8; 1 << 20];
        assert_eq!(ChecksumKind::Xxhash.digest(b""), "EF46DB3751D8E999");
        assert_eq!(ChecksumKind::Xxhash.digest(&zeros), "87D2A1B6E1163EF1");
        assert_eq!(ChecksumKind::Xxhash.digest(&letters), "25E9982AE4F7E71F");
        assert_eq!(
            ChecksumKind::Sha1.digest(b""),
            "da39a3ee5e6b4b0d3255bfef95601890afd80709"
        );
        assert_eq!(
            ChecksumKind::Sha1.digest(&zeros),
            "3b71f43ff30f4b15b5cd85dd9e95ebc7e84eb5a3"
        );
    }

    #[test]
    fn streaming_matches_one_shot() {
        let data: Vec<u8> = (0..100_000u32)
            .map(|index| u8::try_from(index % 251).unwrap())
            .collect();
        for kind in [ChecksumKind::Xxhash, ChecksumKind::Sha1] {
            let mut hasher = kind.hasher();
            assert_eq!(hasher.kind(), kind);
            for piece in data.chunks(7919) {
                hasher.update(piece);
            }
            assert_eq!(hasher.finish(), kind.digest(&data));
        }
    }

    #[test]
    fn extensions_round_trip() {
        for kind in [ChecksumKind::Xxhash, ChecksumKind::Sha1] {
            assert_eq!(ChecksumKind::from_extension(kind.extension()), Some(kind));
        }
        assert_eq!(ChecksumKind::from_extension(".md5"), None);
    }
}
