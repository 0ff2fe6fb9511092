//! CHS geometry of the footer (VHD spec appendix), in the spec's and xen-api's variants.

/// Cylinders, heads and sectors per track, as stored in the footer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Geometry {
    /// Cylinders (16 bits).
    pub cylinders: u16,
    /// Heads (8 bits).
    pub heads: u8,
    /// Sectors per track (8 bits).
    pub sectors_per_track: u8,
}

/// Which variant of the CHS algorithm to apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum GeometryRule {
    /// The VHD specification (and blktap): `total_sectors >= 65535·16·63` selects 255 sectors
    /// per track; sectors are `ceil(size / 512)`.
    #[default]
    Spec,
    /// xen-api's `Geometry.of_sectors`: the first test uses `>`, so exactly 66 059 280 sectors
    /// give 65535/16/63 instead of 16191/16/255; sectors are `size >> 9`.
    XenApi,
}

/// Sectors addressable by the largest geometry, 65535·16·255.
const MAX_CHS_SECTORS: u64 = 65535 * 16 * 255;
/// Threshold above which 255 sectors per track are used, 65535·16·63.
const LARGE_DISK_SECTORS: u64 = 65535 * 16 * 63;

impl Geometry {
    /// The geometry of a disk of `size` bytes under `rule`.
    #[must_use]
    pub fn for_size(size: u64, rule: GeometryRule) -> Self {
        let total_sectors = match rule {
            GeometryRule::Spec => size.div_ceil(512),
            GeometryRule::XenApi => size >> 9,
        };
        let secs = total_sectors.min(MAX_CHS_SECTORS);
        let large = match rule {
            GeometryRule::Spec => secs >= LARGE_DISK_SECTORS,
            GeometryRule::XenApi => secs > LARGE_DISK_SECTORS,
        };
        let (sectors_per_track, heads, cylinder_times_heads) = if large {
            (255u64, 16u64, secs / 255)
        } else {
            let mut spt = 17u64;
            let mut cth = secs / spt;
            let mut heads = cth.div_ceil(1024).max(4);
            if cth >= heads * 1024 || heads > 16 {
                spt = 31;
                heads = 16;
                cth = secs / spt;
            }
            if cth >= heads * 1024 {
                spt = 63;
                heads = 16;
                cth = secs / spt;
            }
            (spt, heads, cth)
        };
        // Every value is bounded by construction (cylinders ≤ 65535, heads ≤ 16, spt ≤ 255);
        // the saturating conversions only guard the arithmetic's reasoning.
        Self {
            cylinders: u16::try_from(cylinder_times_heads / heads).unwrap_or(u16::MAX),
            heads: u8::try_from(heads).unwrap_or(u8::MAX),
            sectors_per_track: u8::try_from(sectors_per_track).unwrap_or(u8::MAX),
        }
    }

    /// Bytes addressed by the geometry, C·H·S·512 (what qemu uses for creators `vpc `/`qemu`).
    #[must_use]
    pub fn chs_size(self) -> u64 {
        u64::from(self.cylinders) * u64::from(self.heads) * u64::from(self.sectors_per_track) * 512
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chs(c: u16, h: u8, s: u8) -> Geometry {
        Geometry {
            cylinders: c,
            heads: h,
            sectors_per_track: s,
        }
    }

    /// Spec §3.3 test vectors: size → spec CHS (and the spec C·H·S byte count).
    #[test]
    fn spec_vectors() {
        const MIB: u64 = 1 << 20;
        const GIB: u64 = 1 << 30;
        let vectors = [
            (MIB, chs(30, 4, 17), 1_044_480),
            (10 * MIB, chs(301, 4, 17), 10_479_616),
            (100 * MIB, chs(1003, 12, 17), 104_761_344),
            (GIB, chs(2080, 16, 63), 1_073_479_680),
            (10 * GIB, chs(20805, 16, 63), 10_737_377_280),
            (33_822_351_360, chs(16191, 16, 255), 33_822_351_360),
            (100 * GIB, chs(51400, 16, 255), 107_372_544_000),
            (127 * GIB, chs(65278, 16, 255), 136_363_130_880),
            (2040 * GIB, chs(65535, 16, 255), 136_899_993_600),
        ];
        for (size, expected, chs_bytes) in vectors {
            let geometry = Geometry::for_size(size, GeometryRule::Spec);
            assert_eq!(geometry, expected, "size {size}");
            assert_eq!(geometry.chs_size(), chs_bytes, "size {size}");
        }
    }

    /// The `>` vs `>=` boundary: exactly 65535·16·63 sectors.
    #[test]
    fn xen_api_boundary() {
        let size = 66_059_280 * 512;
        assert_eq!(
            Geometry::for_size(size, GeometryRule::Spec),
            chs(16191, 16, 255)
        );
        assert_eq!(
            Geometry::for_size(size, GeometryRule::XenApi),
            chs(65535, 16, 63)
        );
        // Elsewhere the two rules agree.
        let other = 100 * 1024 * 1024;
        assert_eq!(
            Geometry::for_size(other, GeometryRule::Spec),
            Geometry::for_size(other, GeometryRule::XenApi)
        );
    }

    #[test]
    fn tiny_and_huge_sizes_do_not_overflow() {
        assert_eq!(Geometry::for_size(0, GeometryRule::Spec), chs(0, 4, 17));
        assert_eq!(
            Geometry::for_size(u64::MAX, GeometryRule::XenApi),
            chs(65535, 16, 255)
        );
    }
}
