//! The UEFI memory map, turned into bootloader_api's `MemoryRegion`s.
//!
//! What each UEFI type means comes from the UEFI specification 2.10, 7.2 "Memory Allocation
//! Services" (table "Memory Type Usage after ExitBootServices()"): loader and boot-services
//! memory and conventional memory are free for the OS once boot services have exited;
//! everything else is not. Type 15, `EfiUnacceptedMemoryType` (UEFI 2.9 and later), is RAM that
//! the firmware has not accepted: in a TD, touching it before TDG.MEM.PAGE.ACCEPT is a #VE or a
//! TD exit (TDVF since edk2-stable202211 hands RAM above 4 GiB over this way). It is never
//! reported as usable.
//!
//! The conversion runs after ExitBootServices, so it allocates nothing: it writes into a slice
//! that the loader reserved before, and it is infallible (a full slice keeps what fits; see
//! [`convert`]).

use bootloader_api::info::{MemoryRegion, MemoryRegionKind};

/// The UEFI memory types this conversion distinguishes (UEFI 2.10, 7.2, `EFI_MEMORY_TYPE`).
pub mod uefi_type {
    pub const LOADER_CODE: u32 = 1;
    pub const LOADER_DATA: u32 = 2;
    pub const BOOT_SERVICES_CODE: u32 = 3;
    pub const BOOT_SERVICES_DATA: u32 = 4;
    pub const CONVENTIONAL: u32 = 7;
    pub const UNACCEPTED: u32 = 15;
}

/// The OS-defined memory type (0x8000_0000 and above are the OS's, UEFI 2.10 table 7.6) of
/// every allocation the loader hands over to the kernel: page tables, the kernel's ELF file
/// and image, its stack, the boot info and the regions array. The conversion reports it as
/// `Bootloader`.
pub const LOADER_ALLOCATION_TYPE: u32 = 0x8000_7444;

pub const PAGE_SIZE: u64 = 4096;

/// One UEFI memory descriptor, reduced to what the conversion reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UefiDescriptor {
    pub memory_type: u32,
    pub physical_start: u64,
    pub page_count: u64,
}

impl UefiDescriptor {
    /// The exclusive end, saturated at the top of the address space rather than wrapped.
    pub fn end(&self) -> u64 {
        self.physical_start.saturating_add(self.page_count.saturating_mul(PAGE_SIZE))
    }
}

/// What a UEFI type means for the kernel.
pub fn region_kind(memory_type: u32) -> MemoryRegionKind {
    use uefi_type::*;
    match memory_type {
        LOADER_CODE | LOADER_DATA | BOOT_SERVICES_CODE | BOOT_SERVICES_DATA | CONVENTIONAL => {
            MemoryRegionKind::Usable
        }
        LOADER_ALLOCATION_TYPE => MemoryRegionKind::Bootloader,
        other => MemoryRegionKind::UnknownUefi(other),
    }
}

/// Where two descriptors overlap (a firmware bug, but one the kernel must survive), the more
/// restrictive kind wins: anything beats `Usable`, firmware types beat `Bootloader`, and among
/// firmware types the higher number wins so that the choice does not depend on the map's order.
fn restrictiveness(kind: MemoryRegionKind) -> (u8, u32) {
    match kind {
        MemoryRegionKind::Usable => (0, 0),
        MemoryRegionKind::Bootloader => (1, 0),
        MemoryRegionKind::UnknownUefi(t) => (2, t),
        MemoryRegionKind::UnknownBios(t) => (2, t),
        _ => (3, 0),
    }
}

/// How many regions [`convert`] can produce from `descriptors` descriptors: every descriptor
/// adds at most two boundaries, and n boundaries cut at most n - 1 intervals.
pub const fn max_regions(descriptors: usize) -> usize {
    descriptors.saturating_mul(2)
}

/// Converts a UEFI memory map into sorted, non-overlapping regions in `out`; returns how many
/// were written.
///
/// Adjacent ranges of the same kind are merged; gaps between descriptors stay gaps (not RAM);
/// empty descriptors are ignored; overlaps take the more restrictive kind. With
/// `out.len() >= max_regions(n)` everything fits. When `out` is shorter, the regions that do not
/// fit are dropped: the kernel then knows less memory, but nothing becomes usable that was not.
///
/// Quadratic in the number of descriptors (a few hundred at most), with no allocation.
pub fn convert<I>(descriptors: I, out: &mut [MemoryRegion]) -> usize
where
    I: Iterator<Item = UefiDescriptor> + Clone,
{
    let nonempty = move || descriptors.clone().filter(|d| d.end() > d.physical_start);
    let Some(mut cursor) = nonempty().map(|d| d.physical_start).min() else {
        return 0;
    };
    let mut written = 0;
    loop {
        // The next boundary above the cursor: where some descriptor starts or ends.
        let next =
            nonempty().flat_map(|d| [d.physical_start, d.end()]).filter(|&b| b > cursor).min();
        let Some(next) = next else { break };
        let kind = nonempty()
            .filter(|d| d.physical_start <= cursor && cursor < d.end())
            .map(|d| region_kind(d.memory_type))
            .max_by_key(|&k| restrictiveness(k));
        if let Some(kind) = kind {
            let capacity = out.len();
            match out[..written].last_mut() {
                Some(last) if last.end == cursor && last.kind == kind => last.end = next,
                _ if written < capacity => {
                    out[written] = MemoryRegion { start: cursor, end: next, kind };
                    written += 1;
                }
                _ => {}
            }
        }
        cursor = next;
    }
    written
}

/// [`convert`], with the pages `kept` (page-aligned) reported as `Bootloader` whatever type the
/// firmware gives them: the loader's trampoline, which lies in the loader's own image (UEFI
/// `LOADER_CODE`, usable memory) and stays mapped, executable, at its identity address in the
/// kernel's tables. Reported usable, the kernel could put data there and find it executable.
/// `out` needs room for two more regions than [`max_regions`] of the descriptors gives.
pub fn convert_keeping<I>(
    descriptors: I,
    kept: core::ops::Range<u64>,
    out: &mut [MemoryRegion],
) -> usize
where
    I: Iterator<Item = UefiDescriptor> + Clone,
{
    let kept = UefiDescriptor {
        memory_type: LOADER_ALLOCATION_TYPE,
        physical_start: kept.start,
        page_count: kept.end.saturating_sub(kept.start) / PAGE_SIZE,
    };
    convert(descriptors.chain(core::iter::once(kept)), out)
}

/// The end of the highest descriptor: how far the physical-memory mapping must reach.
pub fn highest_address<I: Iterator<Item = UefiDescriptor>>(descriptors: I) -> u64 {
    descriptors.map(|d| d.end()).max().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::uefi_type::*;
    use super::*;
    use proptest::prelude::*;

    fn d(memory_type: u32, start: u64, pages: u64) -> UefiDescriptor {
        UefiDescriptor { memory_type, physical_start: start, page_count: pages }
    }

    fn run(map: &[UefiDescriptor]) -> Vec<MemoryRegion> {
        let mut out = vec![MemoryRegion::empty(); max_regions(map.len())];
        let n = convert(map.iter().copied(), &mut out);
        out.truncate(n);
        out
    }

    fn r(start: u64, end: u64, kind: MemoryRegionKind) -> MemoryRegion {
        MemoryRegion { start, end, kind }
    }

    #[test]
    fn the_trampoline_page_is_not_usable() {
        // The loader's image (LOADER_CODE) with the trampoline's page inside it.
        let map = [
            d(CONVENTIONAL, 0, 0x100),
            d(LOADER_CODE, 0x10_0000, 0x40),
            d(CONVENTIONAL, 0x14_0000, 0x10),
        ];
        let mut out = vec![MemoryRegion::empty(); max_regions(map.len()) + 2];
        let n = convert_keeping(map.iter().copied(), 0x12_3000..0x12_4000, &mut out);
        assert_eq!(
            out[..n],
            [
                r(0, 0x12_3000, MemoryRegionKind::Usable),
                r(0x12_3000, 0x12_4000, MemoryRegionKind::Bootloader),
                r(0x12_4000, 0x15_0000, MemoryRegionKind::Usable),
            ]
        );
        // Without the carve-out the same page is usable.
        assert!(run(&map).iter().all(|region| region.kind == MemoryRegionKind::Usable));
        // Kept pages inside a firmware-reserved range stay reserved.
        let reserved = [d(CONVENTIONAL, 0, 0x10), d(0, 0x1_0000, 4)];
        let mut out = vec![MemoryRegion::empty(); 6];
        let n = convert_keeping(reserved.iter().copied(), 0x1_0000..0x1_1000, &mut out);
        assert_eq!(
            out[..n],
            [
                r(0, 0x1_0000, MemoryRegionKind::Usable),
                r(0x1_0000, 0x1_4000, MemoryRegionKind::UnknownUefi(0))
            ]
        );
    }

    #[test]
    fn empty_map_gives_no_regions() {
        assert!(run(&[]).is_empty());
        assert!(run(&[d(CONVENTIONAL, 0x1000, 0)]).is_empty());
    }

    #[test]
    fn unaccepted_memory_is_never_usable() {
        let map = [d(CONVENTIONAL, 0, 0x100), d(UNACCEPTED, 0x1_0000_0000, 0x40000)];
        assert_eq!(
            run(&map),
            vec![
                r(0, 0x10_0000, MemoryRegionKind::Usable),
                r(0x1_0000_0000, 0x1_4000_0000, MemoryRegionKind::UnknownUefi(15)),
            ]
        );
    }

    #[test]
    fn unaccepted_memory_overlapping_usable_memory_wins() {
        let map = [d(CONVENTIONAL, 0, 0x10), d(UNACCEPTED, 0x4000, 4)];
        assert_eq!(
            run(&map),
            vec![
                r(0, 0x4000, MemoryRegionKind::Usable),
                r(0x4000, 0x8000, MemoryRegionKind::UnknownUefi(15)),
                r(0x8000, 0x10000, MemoryRegionKind::Usable),
            ]
        );
    }

    #[test]
    fn loader_allocations_are_bootloader_and_free_types_merge() {
        let map = [
            d(BOOT_SERVICES_DATA, 0x2000, 1),
            d(CONVENTIONAL, 0x3000, 1),
            d(LOADER_ALLOCATION_TYPE, 0x4000, 2),
            d(LOADER_CODE, 0x6000, 1),
            d(0, 0x8000, 1), // reserved, after a gap
        ];
        assert_eq!(
            run(&map),
            vec![
                r(0x2000, 0x4000, MemoryRegionKind::Usable),
                r(0x4000, 0x6000, MemoryRegionKind::Bootloader),
                r(0x6000, 0x7000, MemoryRegionKind::Usable),
                r(0x8000, 0x9000, MemoryRegionKind::UnknownUefi(0)),
            ]
        );
    }

    #[test]
    fn an_unsorted_map_comes_out_sorted() {
        let map = [d(CONVENTIONAL, 0x10000, 1), d(CONVENTIONAL, 0, 1)];
        assert_eq!(
            run(&map),
            vec![
                r(0, 0x1000, MemoryRegionKind::Usable),
                r(0x10000, 0x11000, MemoryRegionKind::Usable)
            ]
        );
    }

    #[test]
    fn a_descriptor_reaching_past_the_top_saturates() {
        let map = [d(CONVENTIONAL, u64::MAX - 0xfff, u64::MAX)];
        assert_eq!(run(&map), vec![r(u64::MAX - 0xfff, u64::MAX, MemoryRegionKind::Usable)]);
    }

    #[test]
    fn a_short_output_drops_regions_but_stays_sorted() {
        let map = [d(CONVENTIONAL, 0, 1), d(0, 0x1000, 1), d(CONVENTIONAL, 0x2000, 1)];
        let mut out = [MemoryRegion::empty(); 2];
        assert_eq!(convert(map.iter().copied(), &mut out), 2);
        assert_eq!(out[1], r(0x1000, 0x2000, MemoryRegionKind::UnknownUefi(0)));
    }

    /// The reference model: the kind of one page, straight from the definition.
    fn page_kind(map: &[UefiDescriptor], page: u64) -> Option<MemoryRegionKind> {
        map.iter()
            .filter(|d| d.physical_start <= page && page < d.end())
            .map(|d| region_kind(d.memory_type))
            .max_by_key(|&k| restrictiveness(k))
    }

    fn arbitrary_map() -> impl Strategy<Value = Vec<UefiDescriptor>> {
        let memory_type = prop_oneof![
            Just(CONVENTIONAL),
            Just(BOOT_SERVICES_DATA),
            Just(LOADER_CODE),
            Just(UNACCEPTED),
            Just(LOADER_ALLOCATION_TYPE),
            0u32..16,
        ];
        prop::collection::vec((memory_type, 0u64..64, 0u64..12), 0..24)
            .prop_map(|v| v.into_iter().map(|(t, p, n)| d(t, p * PAGE_SIZE, n)).collect())
    }

    proptest! {
        /// Sorted, non-overlapping, merged, and every page has the kind the model gives it.
        #[test]
        fn conversion_matches_the_page_by_page_model(map in arbitrary_map()) {
            let regions = run(&map);
            for pair in regions.windows(2) {
                prop_assert!(pair[0].end <= pair[1].start);
                prop_assert!(!(pair[0].end == pair[1].start && pair[0].kind == pair[1].kind));
            }
            for page in (0..80).map(|p| p * PAGE_SIZE) {
                let found = regions.iter().find(|r| r.start <= page && page < r.end).map(|r| r.kind);
                prop_assert_eq!(found, page_kind(&map, page), "page {:#x}", page);
            }
        }

        #[test]
        fn type_15_never_comes_out_usable(map in arbitrary_map()) {
            let regions = run(&map);
            for desc in map.iter().filter(|d| d.memory_type == UNACCEPTED && d.page_count > 0) {
                for r in &regions {
                    let overlaps = r.start < desc.end() && desc.physical_start < r.end;
                    prop_assert!(!(overlaps && r.kind == MemoryRegionKind::Usable));
                }
            }
        }
    }
}
