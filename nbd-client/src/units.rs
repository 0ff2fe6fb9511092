//! Unit newtypes: byte ranges on the export, request cookies and metadata-context ids.

use std::fmt;

use crate::Error;

/// A half-open byte range `[offset, offset + length)` on an export.
///
/// Construction checks that the end does not overflow `u64`, so `end()` never wraps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ByteRange {
    offset: u64,
    length: u64,
}

impl ByteRange {
    /// Builds a range; fails when `offset + length` overflows `u64`.
    pub fn new(offset: u64, length: u64) -> Result<Self, Error> {
        if offset.checked_add(length).is_none() {
            return Err(Error::InvalidRange {
                offset,
                length,
                export_size: u64::MAX,
            });
        }
        Ok(Self { offset, length })
    }

    /// First byte of the range.
    pub fn offset(self) -> u64 {
        self.offset
    }

    /// Number of bytes in the range.
    pub fn length(self) -> u64 {
        self.length
    }

    /// One past the last byte (never overflows: checked at construction).
    pub fn end(self) -> u64 {
        self.offset.saturating_add(self.length)
    }

    /// True when the range holds no byte.
    pub fn is_empty(self) -> bool {
        self.length == 0
    }

    /// True when `other` lies entirely inside `self`.
    pub fn contains(self, other: ByteRange) -> bool {
        other.offset >= self.offset && other.end() <= self.end()
    }

    /// Splits the range into consecutive pieces of at most `max_len` bytes (`max_len` ≥ 1).
    pub fn pieces(self, max_len: u64) -> impl Iterator<Item = ByteRange> {
        let step = max_len.max(1);
        let end = self.end();
        let mut next = self.offset;
        std::iter::from_fn(move || {
            if next >= end {
                return None;
            }
            let length = step.min(end.saturating_sub(next));
            let piece = ByteRange {
                offset: next,
                length,
            };
            next = next.saturating_add(length);
            Some(piece)
        })
    }
}

impl fmt::Display for ByteRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}+{}", self.offset, self.length)
    }
}

/// The opaque 64-bit value that pairs a request with its replies (formerly "handle").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Cookie(pub u64);

impl fmt::Display for Cookie {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

/// A metadata-context id chosen by the server in `NBD_REP_META_CONTEXT`; transient, per connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ContextId(pub u32);

impl fmt::Display for ContextId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Converts a wire length to `usize`, failing (instead of truncating) on 32-bit targets.
pub(crate) fn to_usize(value: u64, what: &'static str) -> Result<usize, Error> {
    usize::try_from(value).map_err(|_| Error::OversizePayload {
        what,
        found: value,
        max: u64::try_from(usize::MAX).unwrap_or(u64::MAX),
    })
}

/// Converts a `usize` length to `u64` (lossless on every supported target).
pub(crate) fn to_u64(value: usize) -> u64 {
    u64::try_from(value).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overflowing_range_is_rejected() {
        assert!(ByteRange::new(u64::MAX, 1).is_err());
        assert_eq!(ByteRange::new(u64::MAX - 1, 1).unwrap().end(), u64::MAX);
    }

    #[test]
    fn pieces_cover_the_range_exactly() {
        let range = ByteRange::new(10, 25).unwrap();
        let pieces: Vec<_> = range.pieces(10).collect();
        assert_eq!(
            pieces,
            vec![
                ByteRange::new(10, 10).unwrap(),
                ByteRange::new(20, 10).unwrap(),
                ByteRange::new(30, 5).unwrap()
            ]
        );
        assert_eq!(ByteRange::new(5, 0).unwrap().pieces(4).count(), 0);
    }
}
