//! Deterministic guest data: every byte is a function of its absolute disk offset, so data
//! written in pieces equals data written at once, and data read at the wrong place is visible.

/// What a simulated guest writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Pattern {
    /// 16-byte records: each aligned record at disk offset `o` holds `o` then `tag`, both
    /// big-endian `u64`s, so every record names where it belongs and which write produced it.
    Tagged {
        /// Distinguishes one write generation from another.
        tag: u64,
    },
    /// Pseudo-random bytes from `seed` (splitmix64 of the seed and the 8-byte word index).
    Random {
        /// Selects the byte stream.
        seed: u64,
    },
    /// Every byte the same.
    Fill(u8),
}

/// splitmix64 finaliser: a cheap, well-mixed 64-bit hash.
pub(crate) const fn splitmix64(value: u64) -> u64 {
    let mut z = value.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Pattern {
    /// Fills `buffer` with the pattern's bytes for disk offsets `offset..offset + buffer.len()`.
    pub fn fill(&self, offset: u64, buffer: &mut [u8]) {
        match *self {
            Self::Fill(byte) => buffer.fill(byte),
            Self::Tagged { tag } => fill_units(offset, buffer, |record_start| {
                let mut record = [0u8; 16];
                let (position, tag_bytes) = record.split_at_mut(8);
                position.copy_from_slice(&record_start.to_be_bytes());
                tag_bytes.copy_from_slice(&tag.to_be_bytes());
                record
            }),
            Self::Random { seed } => fill_units(offset, buffer, |word_start| {
                splitmix64(seed ^ splitmix64(word_start >> 3)).to_be_bytes()
            }),
        }
    }

    /// The pattern's bytes for `length` bytes at `offset`.
    #[must_use]
    pub fn bytes(&self, offset: u64, length: usize) -> Vec<u8> {
        let mut buffer = vec![0; length];
        self.fill(offset, &mut buffer);
        buffer
    }
}

/// Fills `buffer` (disk bytes from `offset`) with aligned `N`-byte units made by `make(unit_start)`.
fn fill_units<const N: usize>(offset: u64, buffer: &mut [u8], make: impl Fn(u64) -> [u8; N]) {
    let unit = u64::try_from(N).unwrap_or(u64::MAX);
    let skip = usize::try_from(offset % unit).unwrap_or(0);
    let head_len = if skip == 0 {
        0
    } else {
        (N - skip).min(buffer.len())
    };
    let (head, rest) = buffer.split_at_mut(head_len);
    if let Some(source) = make(offset - offset % unit).get(skip..skip + head_len) {
        head.copy_from_slice(source);
    }
    let mut position = offset.wrapping_add(u64::try_from(head_len).unwrap_or(0));
    let mut chunks = rest.chunks_exact_mut(N);
    for chunk in &mut chunks {
        chunk.copy_from_slice(&make(position));
        position = position.wrapping_add(unit);
    }
    let tail = chunks.into_remainder();
    if let Some(source) = make(position).get(..tail.len()) {
        tail.copy_from_slice(source);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tagged_records_name_their_offset() {
        // Record at offset 0x10: position 0x10 then tag 7, both big-endian.
        let bytes = Pattern::Tagged { tag: 7 }.bytes(0x10, 16);
        assert_eq!(hex_of(&bytes), "00000000000000100000000000000007");
        // Starting mid-record yields the tail of the same record.
        let tail = Pattern::Tagged { tag: 7 }.bytes(0x18, 8);
        assert_eq!(tail, bytes[8..]);
    }

    #[test]
    fn pieces_equal_the_whole() {
        for pattern in [
            Pattern::Tagged { tag: 3 },
            Pattern::Random { seed: 9 },
            Pattern::Fill(5),
        ] {
            let whole = pattern.bytes(1000, 300);
            let mut pieces = pattern.bytes(1000, 13);
            pieces.extend(pattern.bytes(1013, 287));
            assert_eq!(whole, pieces);
        }
    }

    #[test]
    fn random_streams_differ_by_seed() {
        assert_ne!(
            Pattern::Random { seed: 1 }.bytes(0, 64),
            Pattern::Random { seed: 2 }.bytes(0, 64)
        );
    }

    fn hex_of(bytes: &[u8]) -> String {
        bytes.iter().map(|byte| format!("{byte:02x}")).collect()
    }
}
