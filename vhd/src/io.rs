//! Positional sources and sinks: the only I/O the random-access reader and the writer need.

use std::io;

/// A source that reads at absolute positions (a file, a buffer, an HTTP range client...).
pub trait ReadAt {
    /// Fills `buf` from `offset`; fails (`UnexpectedEof`) if the source is shorter.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Current length of the source in bytes.
    fn size(&self) -> io::Result<u64>;
}

/// A sink that writes at absolute positions; it must also read back (the writer reads bitmaps
/// before updating them).
pub trait WriteAt: ReadAt {
    /// Writes all of `buf` at `offset`, growing the sink if needed.
    fn write_all_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Pushes buffered writes down (not necessarily to stable storage).
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<T: ReadAt + ?Sized> ReadAt for &T {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        (**self).read_exact_at(buf, offset)
    }
    fn size(&self) -> io::Result<u64> {
        (**self).size()
    }
}

impl<T: ReadAt + ?Sized> ReadAt for &mut T {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        (**self).read_exact_at(buf, offset)
    }
    fn size(&self) -> io::Result<u64> {
        (**self).size()
    }
}

impl<T: WriteAt + ?Sized> WriteAt for &mut T {
    fn write_all_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        (**self).write_all_at(buf, offset)
    }
    fn flush(&mut self) -> io::Result<()> {
        (**self).flush()
    }
}

impl<T: ReadAt + ?Sized> ReadAt for std::sync::Arc<T> {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        (**self).read_exact_at(buf, offset)
    }
    fn size(&self) -> io::Result<u64> {
        (**self).size()
    }
}

impl ReadAt for [u8] {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let source = usize::try_from(offset)
            .ok()
            .and_then(|start| Some(start..start.checked_add(buf.len())?))
            .and_then(|range| self.get(range))
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        buf.copy_from_slice(source);
        Ok(())
    }
    fn size(&self) -> io::Result<u64> {
        Ok(crate::units::u64_from_usize(self.len()))
    }
}

impl ReadAt for Vec<u8> {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.as_slice().read_exact_at(buf, offset)
    }
    fn size(&self) -> io::Result<u64> {
        self.as_slice().size()
    }
}

impl ReadAt for bytes::Bytes {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.as_ref().read_exact_at(buf, offset)
    }
    fn size(&self) -> io::Result<u64> {
        self.as_ref().size()
    }
}

/// Most an in-memory sink grows to (4 GiB): a guard against runaway offsets in tests.
const MAX_IN_MEMORY: usize = 4 << 30;

impl WriteAt for Vec<u8> {
    fn write_all_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        let start =
            usize::try_from(offset).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let end = start
            .checked_add(buf.len())
            .filter(|end| *end <= MAX_IN_MEMORY)
            .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        if self.len() < end {
            self.resize(end, 0);
        }
        let target = self
            .get_mut(start..end)
            .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        target.copy_from_slice(buf);
        Ok(())
    }
}

#[cfg(unix)]
impl ReadAt for std::fs::File {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(self, buf, offset)
    }
    fn size(&self) -> io::Result<u64> {
        Ok(self.metadata()?.len())
    }
}

#[cfg(unix)]
impl WriteAt for std::fs::File {
    fn write_all_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        std::os::unix::fs::FileExt::write_all_at(self, buf, offset)
    }
    fn flush(&mut self) -> io::Result<()> {
        io::Write::flush(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_memory_sources_and_sinks() {
        let mut sink = Vec::new();
        sink.write_all_at(b"abc", 4).unwrap();
        assert_eq!(sink, b"\0\0\0\0abc");
        let mut buf = [0u8; 2];
        sink.read_exact_at(&mut buf, 5).unwrap();
        assert_eq!(&buf, b"bc");
        assert!(sink.read_exact_at(&mut buf, 6).is_err());
        assert!(sink.read_exact_at(&mut buf, u64::MAX).is_err());
        assert!(sink.write_all_at(b"x", u64::MAX).is_err());
        assert_eq!(sink.size().unwrap(), 7);
    }
}
