//! What a kernel can check about the handoff it got (bootloader_api 0.11.17 semantics): the
//! decisions behind the kernel's `boot.*` self-test checks, here so that the host can show each
//! one failing on a synthetic map. The kernel gathers the facts (page walks, fw_cfg); these
//! functions judge them.

use bootloader_api::info::{MemoryRegion, MemoryRegionKind};

/// The first pair of regions that is out of order or overlapping, or a region that ends
/// before it starts.
pub fn unsorted_or_overlapping(regions: &[MemoryRegion]) -> Option<(MemoryRegion, MemoryRegion)> {
    if let Some(r) = regions.iter().find(|r| r.start > r.end) {
        return Some((*r, *r));
    }
    regions.windows(2).find(|w| w[1].start < w[0].end).map(|w| (w[0], w[1]))
}

/// The first byte range of a usable region that no RAM range covers: usable memory must be
/// RAM (QEMU's `etc/e820` type-1 entries, or the platform's equivalent).
pub fn usable_outside_ram(regions: &[MemoryRegion], ram: &[(u64, u64)]) -> Option<(u64, u64)> {
    for r in regions.iter().filter(|r| r.kind == MemoryRegionKind::Usable) {
        let mut cursor = r.start;
        while cursor < r.end {
            // The RAM range holding `cursor` that reaches furthest.
            let covered =
                ram.iter().filter(|(s, e)| *s <= cursor && cursor < *e).map(|&(_, e)| e).max();
            match covered {
                Some(end) => cursor = end,
                None => {
                    let next_ram = ram.iter().map(|&(s, _)| s).filter(|&s| s > cursor).min();
                    return Some((cursor, next_ram.unwrap_or(r.end).min(r.end)));
                }
            }
        }
    }
    None
}

/// The usable region containing physical address `address`, if any: memory the loader still
/// uses for the kernel (its image, stack, boot info, page tables) must not be usable.
pub fn usable_region_at(regions: &[MemoryRegion], address: u64) -> Option<MemoryRegion> {
    regions
        .iter()
        .find(|r| r.kind == MemoryRegionKind::Usable && r.start <= address && address < r.end)
        .copied()
}

/// Segment flag bits (ELF `p_flags`).
pub const PF_X: u32 = 1;
pub const PF_W: u32 = 2;

/// Why a kernel page's mapping does not match its segment's flags: executable segments must
/// not be writable (W^X), and non-executable ones must be NX.
pub fn permission_error(
    segment_flags: u32,
    writable: bool,
    executable: bool,
) -> Option<&'static str> {
    if segment_flags & PF_X != 0 && writable {
        Some("text is mapped writable")
    } else if segment_flags & PF_X == 0 && executable {
        Some("data is mapped executable")
    } else if segment_flags & PF_X != 0 && !executable {
        Some("text is mapped not executable")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use MemoryRegionKind::*;

    fn r(start: u64, end: u64, kind: MemoryRegionKind) -> MemoryRegion {
        MemoryRegion { start, end, kind }
    }

    #[test]
    fn sorted_maps_pass_and_broken_ones_are_named() {
        let good = [r(0, 0x1000, Usable), r(0x1000, 0x2000, Bootloader), r(0x3000, 0x4000, Usable)];
        assert_eq!(unsorted_or_overlapping(&good), None);
        assert_eq!(unsorted_or_overlapping(&[]), None);
        let overlapping = [r(0, 0x2000, Usable), r(0x1000, 0x3000, Bootloader)];
        assert_eq!(unsorted_or_overlapping(&overlapping), Some((overlapping[0], overlapping[1])));
        let unsorted = [r(0x5000, 0x6000, Usable), r(0, 0x1000, Usable)];
        assert!(unsorted_or_overlapping(&unsorted).is_some());
        let backwards = [r(0x2000, 0x1000, Usable)];
        assert!(unsorted_or_overlapping(&backwards).is_some());
    }

    #[test]
    fn usable_memory_must_be_ram() {
        let ram = [(0, 0xa0000), (0x10_0000, 0x2000_0000)];
        let good = [
            r(0, 0x9f000, Usable),
            r(0xa0000, 0x10_0000, UnknownUefi(0)),
            r(0x10_0000, 0x1000_0000, Usable),
        ];
        assert_eq!(usable_outside_ram(&good, &ram), None);
        // A usable region across the VGA hole, and one above the end of RAM.
        let hole = [r(0x9f000, 0x10_1000, Usable)];
        assert_eq!(usable_outside_ram(&hole, &ram), Some((0xa0000, 0x10_0000)));
        let above = [r(0x1fff_0000, 0x2001_0000, Usable)];
        assert_eq!(usable_outside_ram(&above, &ram), Some((0x2000_0000, 0x2001_0000)));
        // Unaccepted memory outside the e820 RAM is fine: it is not usable.
        assert_eq!(
            usable_outside_ram(&[r(0x1_0000_0000, 0x2_0000_0000, UnknownUefi(15))], &ram),
            None
        );
        // Overlapping RAM ranges still cover.
        assert_eq!(
            usable_outside_ram(&[r(0, 0x3000, Usable)], &[(0, 0x2000), (0x1000, 0x3000)]),
            None
        );
    }

    #[test]
    fn loaded_memory_must_not_be_usable() {
        let map = [r(0x10_0000, 0x20_0000, Usable), r(0x20_0000, 0x30_0000, Bootloader)];
        assert_eq!(usable_region_at(&map, 0x25_0000), None);
        assert_eq!(usable_region_at(&map, 0x1f_f000), Some(map[0]));
        assert_eq!(usable_region_at(&map, 0x30_0000), None);
    }

    #[test]
    fn segment_permissions() {
        assert_eq!(permission_error(PF_X | 4, false, true), None);
        assert_eq!(permission_error(PF_W | 4, true, false), None);
        assert_eq!(permission_error(4, false, false), None);
        assert!(permission_error(PF_X | 4, true, true).is_some());
        assert!(permission_error(PF_W | 4, true, true).is_some());
        assert!(permission_error(PF_X | 4, false, false).is_some());
    }
}
