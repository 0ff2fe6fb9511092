//! Merges: apply a differencing disk (file or stream) onto its parent honouring sector
//! bitmaps, and coalesce a chain into one dynamic disk (a synthetic full).

use uuid::Uuid;

use crate::block::Block;
use crate::error::{Error, Result};
use crate::footer::DiskType;
use crate::io::{ReadAt, WriteAt};
use crate::layout::{DiskKind, LayoutProfile};
use crate::reader::{VhdChain, VhdFile};
use crate::stream::{
    BitmapMode, Pieces, ReadDecoder, StreamDecoder, StreamEncoder, StreamEvent, StreamSpec,
};
use crate::writer::{CreateOptions, VhdWriter};

/// What a merge did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MergeStats {
    /// Blocks written into the target.
    pub blocks: usize,
    /// Sectors written into the target.
    pub sectors: u64,
}

impl MergeStats {
    fn add(&mut self, block: &Block) {
        self.blocks += 1;
        self.sectors += block
            .sectors
            .as_ref()
            .map_or(u64::from(crate::units::SECTORS_PER_BLOCK), |sectors| {
                u64::from(sectors.count())
            });
    }
}

/// Whether a stream's parent uuid must name the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParentCheck {
    /// The differencing stream's parent uuid must equal the target's footer uuid.
    Verify,
    /// Skip the check: an xapi delta's parent uuid is opaque (the base's VHD file on the SR),
    /// so it never matches a stored copy.
    Ignore,
}

/// Writes every allocated block of `child` (a differencing disk) into `parent`, sector by
/// sector as the child's bitmaps say. Afterwards `parent` reads as the chain did; the child
/// can be deleted.
pub fn merge_child_into_parent<P, C>(
    parent: &mut VhdWriter<P>,
    child: &VhdFile<C>,
) -> Result<MergeStats>
where
    P: WriteAt,
    C: ReadAt,
{
    if child.disk_type() != DiskType::Differencing {
        return Err(Error::UnsupportedDiskType {
            operation: "merging into a parent",
            found: child.disk_type(),
        });
    }
    check_parent(child.parent_unique_id().unwrap_or_default(), parent)?;
    check_size(child.virtual_size(), parent)?;
    let _span = tracing::debug_span!("merge", child = %child.unique_id(), parent = %parent.footer().unique_id).entered();
    let mut stats = MergeStats::default();
    let blocks: Vec<_> = child
        .bat()
        .map(|bat| bat.allocated().map(|(index, _)| index).collect())
        .unwrap_or_default();
    for index in blocks {
        if let Some(block) = child.read_layer_block(index)? {
            parent.write_block(&block)?;
            stats.add(&block);
        }
    }
    parent.flush()?;
    tracing::debug!(
        blocks = stats.blocks,
        sectors = stats.sectors,
        "merged child into parent"
    );
    Ok(stats)
}

/// Decodes a VHD stream from `stream` and writes its blocks into `target`, honouring bitmaps
/// (xapi's `import_raw_vdi` semantics). A differencing stream's parent uuid is checked against
/// `target` when `check` says so.
pub fn apply_stream<P, S>(
    target: &mut VhdWriter<P>,
    stream: S,
    check: ParentCheck,
) -> Result<MergeStats>
where
    P: WriteAt,
    S: std::io::Read,
{
    let mut reader = ReadDecoder::new(stream, StreamDecoder::new());
    let mut stats = MergeStats::default();
    let mut differencing = false;
    while let Some(event) = reader.next_event()? {
        match event {
            StreamEvent::Footer(footer) => {
                check_size(footer.current_size, target)?;
                differencing = footer.disk_type == DiskType::Differencing;
            }
            StreamEvent::Header(header) if differencing && check == ParentCheck::Verify => {
                check_parent(header.parent_unique_id, target)?;
            }
            StreamEvent::Block(block) => {
                target.write_block(&block)?;
                stats.add(&block);
            }
            _ => {}
        }
    }
    target.flush()?;
    Ok(stats)
}

/// Writes the content of `chain` into a new dynamic disk in `out`: every block allocated in
/// any layer, whole, with every bitmap bit set.
pub fn coalesce<R, W>(
    chain: &VhdChain<R>,
    out: W,
    unique_id: Uuid,
    profile: LayoutProfile,
) -> Result<VhdWriter<W>>
where
    R: ReadAt,
    W: WriteAt,
{
    let mut writer = VhdWriter::create(
        out,
        &CreateOptions {
            virtual_size: chain.virtual_size(),
            unique_id,
            kind: DiskKind::Dynamic,
            profile,
        },
    )?;
    for index in chain.allocated_blocks().iter() {
        writer.write_block(&chain.read_block(index)?)?;
    }
    writer.flush()?;
    Ok(writer)
}

/// The content of `chain` as a dynamic-disk stream (full blocks); its exact length is
/// [`Pieces::total_len`].
pub fn coalesce_stream<R: ReadAt>(
    chain: &VhdChain<R>,
    unique_id: Uuid,
    profile: LayoutProfile,
) -> Result<Pieces<impl Iterator<Item = Result<Block>> + '_>> {
    let blocks = chain.allocated_blocks();
    let encoder = StreamEncoder::new(StreamSpec {
        virtual_size: chain.virtual_size(),
        unique_id,
        kind: DiskKind::Dynamic,
        blocks: blocks.clone(),
        profile,
        bitmaps: BitmapMode::Full,
    })?;
    let indices: Vec<_> = blocks.iter().collect();
    Ok(encoder.into_pieces(indices.into_iter().map(|index| chain.read_block(index))))
}

fn check_parent<P: WriteAt>(expected: Uuid, parent: &VhdWriter<P>) -> Result<()> {
    let found = parent.footer().unique_id;
    if expected != found {
        return Err(Error::ParentMismatch { expected, found });
    }
    Ok(())
}

fn check_size<P: WriteAt>(size: u64, target: &VhdWriter<P>) -> Result<()> {
    let target_size = target.footer().current_size;
    if size > target_size {
        return Err(Error::SizeMismatch {
            expected: target_size,
            found: size,
        });
    }
    Ok(())
}
