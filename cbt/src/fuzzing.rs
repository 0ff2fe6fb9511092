//! Entry point shared by the fuzz target `cbt_decode` and the corpus replay test.

use crate::{ByteLen, ChangedBlocks, Error, Granularity, ReadPlanConfig};

/// Decodes fuzz input and walks every view of the result.
///
/// Input layout: byte 0 picks the granularity (`512 << (byte % 13)`), bytes 1..3 the virtual size
/// (big-endian `u16` × 1000 bytes), the rest is the base64 text. The strict decoder's result is
/// returned; the tolerant decoder runs too.
///
/// # Errors
/// Whatever the strict decoder rejects.
pub fn decode(data: &[u8]) -> Result<ChangedBlocks, Error> {
    let (header, text) = data.split_at(data.len().min(3));
    let [shift_byte, high, low] = match header {
        [a, b, c] => [*a, *b, *c],
        _ => [0, 0, 0],
    };
    let granularity = Granularity::new(512 << (shift_byte % 13))?;
    let size = ByteLen::new(u64::from(u16::from_be_bytes([high, low])) * 1000);
    if let Ok(tolerated) = ChangedBlocks::from_base64_tolerant(text, size, granularity) {
        walk(&tolerated.blocks);
    }
    let map = ChangedBlocks::from_base64(text, size, granularity)?;
    walk(&map);
    Ok(map)
}

fn walk(map: &ChangedBlocks) {
    let _ = map.byte_extents().count();
    let _ = map.changed_bytes();
    if let Ok(blocks) = map.vhd_blocks() {
        let _ = blocks.count();
    }
    let _ = map.read_requests(ReadPlanConfig::XAPI).count();
}
