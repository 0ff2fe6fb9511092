//! Chunk checksums: the `.xxhash` and `.checksum` companion entries (spec §14).

use std::fmt::Write as _;

use sha1::{Digest as _, Sha1};

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
            Self::Xxhash => format!("{:016X}", xxhash_rust::xxh64::xxh64(data, 0)),
            Self::Sha1 => {
                let hash = Sha1::digest(data);
                let mut text = String::with_capacity(40);
                for byte in hash {
                    let _ = write!(text, "{byte:02x}");
                }
                text
            }
        }
    }
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
    fn extensions_round_trip() {
        for kind in [ChecksumKind::Xxhash, ChecksumKind::Sha1] {
            assert_eq!(ChecksumKind::from_extension(kind.extension()), Some(kind));
        }
        assert_eq!(ChecksumKind::from_extension(".md5"), None);
    }
}
