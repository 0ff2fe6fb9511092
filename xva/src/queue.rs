//! A queue of byte frames that hands out contiguous pieces, without copying when a piece lies
//! inside one frame.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

/// Frames waiting to be parsed, in order.
#[derive(Debug, Default)]
pub(crate) struct ByteQueue {
    frames: VecDeque<Bytes>,
    len: usize,
}

impl ByteQueue {
    pub(crate) fn push(&mut self, frame: Bytes) {
        if !frame.is_empty() {
            self.len = self.len.saturating_add(frame.len());
            self.frames.push_back(frame);
        }
    }

    /// Bytes queued.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The first frame.
    pub(crate) fn front(&self) -> Option<&Bytes> {
        self.frames.front()
    }

    /// Copies up to `out.len()` leading bytes into `out`; returns how many.
    pub(crate) fn peek(&self, out: &mut [u8]) -> usize {
        let mut filled = 0;
        for frame in &self.frames {
            let Some(slot) = out.get_mut(filled..) else {
                break;
            };
            let count = slot.len().min(frame.len());
            if let (Some(target), Some(source)) = (slot.get_mut(..count), frame.get(..count)) {
                target.copy_from_slice(source);
            }
            filled = filled.saturating_add(count);
        }
        filled
    }

    /// Removes and returns the next `count` bytes (fewer if fewer are queued): a slice of the
    /// first frame when it holds them all, otherwise one copy.
    pub(crate) fn take(&mut self, count: usize) -> Bytes {
        let count = count.min(self.len);
        if count == 0 {
            return Bytes::new();
        }
        if let Some(front) = self.frames.front_mut()
            && front.len() >= count
        {
            let piece = front.split_to(count);
            if front.is_empty() {
                self.frames.pop_front();
            }
            self.len = self.len.saturating_sub(count);
            return piece;
        }
        let mut joined = BytesMut::with_capacity(count);
        while joined.len() < count {
            let Some(front) = self.frames.front_mut() else {
                break;
            };
            let wanted = count.saturating_sub(joined.len()).min(front.len());
            joined.extend_from_slice(&front.split_to(wanted));
            if front.is_empty() {
                self.frames.pop_front();
            }
        }
        self.len = self.len.saturating_sub(joined.len());
        joined.freeze()
    }

    /// Removes and returns up to `max` leading bytes of the first frame: never a copy, so a
    /// piece spread over several frames comes out one frame at a time.
    pub(crate) fn take_front(&mut self, max: usize) -> Bytes {
        let Some(front) = self.frames.front_mut() else {
            return Bytes::new();
        };
        let piece = if front.len() > max {
            front.split_to(max)
        } else {
            self.frames.pop_front().unwrap_or_default()
        };
        self.len = self.len.saturating_sub(piece.len());
        piece
    }

    /// Drops the next `count` bytes (fewer if fewer are queued); returns how many.
    pub(crate) fn discard(&mut self, count: usize) -> usize {
        let mut left = count.min(self.len);
        let dropped = left;
        while left > 0 {
            let Some(front) = self.frames.front_mut() else {
                break;
            };
            if front.len() > left {
                let _ = front.split_to(left);
                left = 0;
            } else {
                left = left.saturating_sub(front.len());
                self.frames.pop_front();
            }
        }
        self.len = self.len.saturating_sub(dropped);
        dropped
    }

    /// Removes every frame.
    pub(crate) fn drain(&mut self) -> impl Iterator<Item = Bytes> + '_ {
        self.len = 0;
        self.frames.drain(..)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_within_and_across_frames() {
        let mut queue = ByteQueue::default();
        let first = Bytes::from_static(b"hello ");
        queue.push(first.clone());
        queue.push(Bytes::new());
        queue.push(Bytes::from_static(b"world"));
        assert_eq!(queue.len(), 11);
        let mut peeked = [0u8; 8];
        assert_eq!(queue.peek(&mut peeked), 8);
        assert_eq!(&peeked, b"hello wo");
        let hello = queue.take(5);
        assert_eq!(hello, "hello");
        // Within one frame: the same memory, no copy.
        assert_eq!(hello.as_ptr(), first.as_ptr());
        assert_eq!(queue.take(3), " wo");
        assert_eq!(queue.discard(10), 3);
        assert!(queue.is_empty());
        assert_eq!(queue.take(4), "");

        // Front pieces: slices of each frame in turn, never joined.
        let second = Bytes::from_static(b"xyz");
        queue.push(first.clone());
        queue.push(second.clone());
        let piece = queue.take_front(4);
        assert_eq!(
            (piece.as_ref(), piece.as_ptr()),
            (&b"hell"[..], first.as_ptr())
        );
        assert_eq!(queue.take_front(100), "o ");
        assert_eq!(queue.take_front(100).as_ptr(), second.as_ptr());
        assert!(queue.is_empty());
        assert_eq!(queue.take_front(1), "");
    }
}
