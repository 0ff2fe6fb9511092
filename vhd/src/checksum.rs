//! The one's-complement byte-sum checksum of footers and dynamic headers (VHD spec).

/// Checksum of `bytes` with the 4-byte checksum field at `field_offset` counted as zero:
/// the one's complement of the wrapping 32-bit sum of all other bytes.
#[must_use]
pub fn vhd_checksum(bytes: &[u8], field_offset: usize) -> u32 {
    let field = field_offset..field_offset.saturating_add(4);
    let sum = bytes
        .iter()
        .enumerate()
        .filter(|(position, _)| !field.contains(position))
        .fold(0u32, |sum, (_, byte)| sum.wrapping_add(u32::from(*byte)));
    !sum
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_ignores_its_own_field() {
        // Sum of 1 + 2 = 3, one's complement 0xFFFFFFFC, whatever the checksum field holds.
        let bytes = [1u8, 0xAA, 0xBB, 0xCC, 0xDD, 2];
        assert_eq!(vhd_checksum(&bytes, 1), 0xFFFF_FFFC);
        assert_eq!(vhd_checksum(&[], 0), u32::MAX);
    }
}
