//! The crate's single error type.

use crate::storage::DiskId;

/// Everything that can go wrong inside the simulator.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No disk with this id exists (never created, or destroyed).
    #[error("unknown disk {disk}")]
    UnknownDisk {
        /// The disk asked for.
        disk: DiskId,
    },
    /// A virtual size exceeds what the simulated storage accepts.
    #[error("virtual size {requested} exceeds the maximum of {max} bytes")]
    VirtualSizeTooLarge {
        /// Size asked for, in bytes.
        requested: u64,
        /// Largest accepted size, in bytes.
        max: u64,
    },
    /// A resize asked for a smaller disk (VHD SRs cannot shrink).
    #[error("cannot shrink disk {disk} from {current} to {requested} bytes")]
    CannotShrink {
        /// The disk being resized.
        disk: DiskId,
        /// Its virtual size, in bytes.
        current: u64,
        /// The smaller size asked for, in bytes.
        requested: u64,
    },
    /// A byte range does not fit inside the disk.
    #[error("{length} bytes at offset {offset} do not fit in disk {disk} of {virtual_size} bytes")]
    OutOfRange {
        /// The disk accessed.
        disk: DiskId,
        /// Start of the range.
        offset: u64,
        /// Length of the range.
        length: u64,
        /// Virtual size of the disk.
        virtual_size: u64,
    },
    /// A single read asked for more bytes than one call may return.
    #[error("read of {length} bytes exceeds the limit of {max}")]
    ReadTooLarge {
        /// Bytes asked for.
        length: u64,
        /// Largest read served by one call.
        max: u64,
    },
    /// A 2 MiB block index lies past the end of the disk.
    #[error("block {block} is past the end of disk {disk} ({block_count} blocks)")]
    BlockOutOfRange {
        /// The disk accessed.
        disk: DiskId,
        /// The block asked for.
        block: u32,
        /// Number of blocks of the disk.
        block_count: u64,
    },
    /// A block payload is not exactly one 2 MiB block.
    #[error("block payload of {found} bytes, expected {expected}")]
    BlockLength {
        /// Bytes received.
        found: usize,
        /// Bytes of a block.
        expected: usize,
    },
    /// A sector bitmap is not exactly the 512 bytes covering a 2 MiB block.
    #[error("sector bitmap of {found} bytes, expected {expected}")]
    SectorBitmapLength {
        /// Bytes received.
        found: usize,
        /// Bytes of a block's sector bitmap.
        expected: usize,
    },
    /// The disk's data was dropped by `data_destroy`; only its CBT log remains.
    #[error("the data of disk {disk} was destroyed")]
    DataDestroyed {
        /// The disk accessed.
        disk: DiskId,
    },
    /// A copy target is smaller than its source.
    #[error("target disk {target} has {available} bytes, {required} are needed")]
    TargetTooSmall {
        /// The disk written into.
        target: DiskId,
        /// Virtual size of the source, in bytes.
        required: u64,
        /// Virtual size of the target, in bytes.
        available: u64,
    },
    /// Changed blocks were asked between a disk and itself (sm: "Source and target VDI are same").
    #[error("changed blocks asked between disk {disk} and itself")]
    CbtSameDisk {
        /// The disk given twice.
        disk: DiskId,
    },
    /// A disk of a changed-block query has no CBT log (CBT off, disabled or dropped).
    #[error("changed block tracking is not enabled on disk {disk}")]
    CbtNotEnabled {
        /// The disk without a log.
        disk: DiskId,
    },
    /// `to` is not reachable from `from` along the CBT child pointers (unrelated or reversed).
    #[error("disk {to} is not reachable from disk {from} along the CBT chain")]
    CbtUnrelated {
        /// The older end asked for.
        from: DiskId,
        /// The newer end asked for.
        to: DiskId,
    },
    /// A CBT log met on the walk is shorter than its disk, or smaller than an older log.
    #[error("the CBT log of disk {disk} is inconsistent")]
    CbtInconsistent {
        /// The disk whose log is inconsistent.
        disk: DiskId,
    },
    /// A changed-block bitmap could not be built.
    #[error("changed-block bitmap could not be built")]
    Bitmap(#[source] cbt::Error),
    /// A socket could not be bound, accepted or served.
    #[error("{context}")]
    Io {
        /// What was being done.
        context: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A TLS certificate or server configuration could not be built.
    #[error("TLS set-up failed: {reason}")]
    Tls {
        /// What failed.
        reason: String,
    },
    /// A scenario (builder or TOML) is invalid.
    #[error("invalid scenario: {reason}")]
    Scenario {
        /// What is wrong with it.
        reason: String,
    },
}

/// Code and message of the `SR_BACKEND_FAILURE_<code> [""; message; ""]` error xapi raises when sm fails.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SmBackendFailure {
    /// sm error code (`XE_SR_ERRORCODES.xml`), e.g. 460.
    pub code: u16,
    /// The second parameter of the XAPI error, `<description> [opterr=<detail>]`.
    pub message: String,
}

impl Error {
    /// The sm failure xapi reports for this error, if sm (not xapi) raises it.
    ///
    /// sm's `list_changed_blocks` answers "unrelated" both for disks on different chains and for
    /// a disk without a CBT log, so [`Error::CbtNotEnabled`] and [`Error::CbtUnrelated`] map alike.
    #[must_use]
    pub fn sm_backend_failure(&self) -> Option<SmBackendFailure> {
        const CHANGED_BLOCKS: &str = "Failed to calculate changed blocks for given VDIs.";
        const INCONSISTENT: &str = "Changed block tracking log is in an inconsistent state.";
        let (code, description, detail) = match self {
            Self::CbtSameDisk { .. } => (460, CHANGED_BLOCKS, "Source and target VDI are same"),
            Self::CbtNotEnabled { .. } | Self::CbtUnrelated { .. } => {
                (460, CHANGED_BLOCKS, "Source and target VDI are unrelated")
            }
            Self::CbtInconsistent { .. } => (459, INCONSISTENT, "Inconsistent bitmaps"),
            _ => return None,
        };
        Some(SmBackendFailure {
            code,
            message: format!("{description} [opterr={detail}]"),
        })
    }
}
