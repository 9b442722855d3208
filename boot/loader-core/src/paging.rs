//! 4-level page tables for the kernel's address space (Intel SDM Vol. 3A, 4.5 "4-Level Paging
//! and 5-Level Paging"): 4 KiB and 2 MiB leaves, with intermediate entries present, writable and
//! executable so that the leaf alone decides.
//!
//! The tables are built before ExitBootServices in memory the firmware hands out, reached through
//! the [`Frames`] trait: the loader gives it UEFI pages (identity-mapped by the firmware), the
//! host tests a vector.

use core::fmt;

pub const PRESENT: u64 = 1 << 0;
pub const WRITABLE: u64 = 1 << 1;
pub const HUGE_PAGE: u64 = 1 << 7;
pub const NO_EXECUTE: u64 = 1 << 63;
pub const ADDRESS_MASK: u64 = 0x000F_FFFF_FFFF_F000;

pub const PAGE_4K: u64 = 4096;
pub const PAGE_2M: u64 = 2 * 1024 * 1024;

/// Where page-table frames come from.
pub trait Frames {
    /// A zeroed, 4 KiB-aligned frame; its physical address.
    fn allocate_zeroed(&mut self) -> Option<u64>;
    /// The 512 entries of the table at physical address `frame`.
    fn table(&mut self, frame: u64) -> &mut [u64; 512];
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapError {
    OutOfFrames,
    AlreadyMapped(u64),
    Misaligned(u64),
    NonCanonical(u64),
    /// A physical address with bits above 51: in an entry they would land in the ignored,
    /// protection-key and XD bits.
    PhysicalTooHigh(u64),
}

impl fmt::Display for MapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MapError::OutOfFrames => write!(f, "out of memory for page tables"),
            MapError::AlreadyMapped(v) => write!(f, "virtual address {v:#x} is mapped twice"),
            MapError::Misaligned(v) => write!(f, "address {v:#x} is not aligned to its page size"),
            MapError::NonCanonical(v) => write!(f, "virtual address {v:#x} is not canonical"),
            MapError::PhysicalTooHigh(p) => {
                write!(f, "physical address {p:#x} is above the 52-bit maximum")
            }
        }
    }
}

pub fn is_canonical(virt: u64) -> bool {
    let upper = (virt as i64) >> 47;
    upper == 0 || upper == -1
}

/// The canonical address where level-4 slot `slot` (PML4 entry `slot`) starts.
pub fn slot_address(slot: usize) -> u64 {
    let raw = (slot as u64) << 39;
    if slot >= 256 {
        raw | 0xFFFF_0000_0000_0000
    } else {
        raw
    }
}

/// Leaf flags for a page: always present; writable and executable as asked.
pub fn leaf_flags(writable: bool, executable: bool) -> u64 {
    let mut flags = PRESENT;
    if writable {
        flags |= WRITABLE;
    }
    if !executable {
        flags |= NO_EXECUTE;
    }
    flags
}

pub struct PageTables<F: Frames> {
    pub frames: F,
    pub root: u64,
    /// The PML4 index that points at the PML4 itself, once [`PageTables::map_recursive`] ran.
    recursive: Option<usize>,
}

impl<F: Frames> PageTables<F> {
    pub fn new(mut frames: F) -> Result<Self, MapError> {
        let root = frames.allocate_zeroed().ok_or(MapError::OutOfFrames)?;
        Ok(PageTables { frames, root, recursive: None })
    }

    /// The table one level below `table[index]`, created when absent.
    fn next_table(&mut self, table: u64, index: usize, virt: u64) -> Result<u64, MapError> {
        let entry = self.frames.table(table)[index];
        if entry & PRESENT != 0 {
            if entry & HUGE_PAGE != 0 {
                return Err(MapError::AlreadyMapped(virt));
            }
            return Ok(entry & ADDRESS_MASK);
        }
        let frame = self.frames.allocate_zeroed().ok_or(MapError::OutOfFrames)?;
        self.frames.table(table)[index] = frame | PRESENT | WRITABLE;
        Ok(frame)
    }

    fn map(&mut self, virt: u64, phys: u64, flags: u64, level: u32) -> Result<(), MapError> {
        let size = if level == 1 { PAGE_4K } else { PAGE_2M };
        if !virt.is_multiple_of(size) || !phys.is_multiple_of(size) {
            return Err(MapError::Misaligned(if virt.is_multiple_of(size) { phys } else { virt }));
        }
        if !is_canonical(virt) {
            return Err(MapError::NonCanonical(virt));
        }
        if phys & !ADDRESS_MASK != 0 {
            return Err(MapError::PhysicalTooHigh(phys));
        }
        let index = |l: u32| ((virt >> (12 + 9 * (l - 1))) & 0x1FF) as usize;
        // Through the recursive slot the walk would reach the PML4 as a lower-level table.
        if self.recursive == Some(index(4)) {
            return Err(MapError::AlreadyMapped(virt));
        }
        let mut table = self.root;
        for l in (level + 1..=4).rev() {
            table = self.next_table(table, index(l), virt)?;
        }
        let entry = &mut self.frames.table(table)[index(level)];
        if *entry & PRESENT != 0 {
            return Err(MapError::AlreadyMapped(virt));
        }
        *entry = phys | flags | if level == 2 { HUGE_PAGE } else { 0 };
        Ok(())
    }

    pub fn map_4k(&mut self, virt: u64, phys: u64, flags: u64) -> Result<(), MapError> {
        self.map(virt, phys, flags, 1)
    }

    pub fn map_2m(&mut self, virt: u64, phys: u64, flags: u64) -> Result<(), MapError> {
        self.map(virt, phys, flags, 2)
    }

    /// Maps `[phys, phys + len)` at `virt` with 4 KiB pages.
    pub fn map_range_4k(
        &mut self,
        virt: u64,
        phys: u64,
        len: u64,
        flags: u64,
    ) -> Result<(), MapError> {
        let mut offset = 0;
        while offset < len {
            let page = virt.checked_add(offset).ok_or(MapError::NonCanonical(virt))?;
            let frame = phys.checked_add(offset).ok_or(MapError::PhysicalTooHigh(phys))?;
            self.map_4k(page, frame, flags)?;
            offset += PAGE_4K;
        }
        Ok(())
    }

    /// Points PML4 entry `index` at the PML4 itself (a recursive mapping), not executable.
    /// Map it last: an entry already in use is refused, and so is any later mapping in that
    /// slot.
    pub fn map_recursive(&mut self, index: usize) -> Result<(), MapError> {
        let root = self.root;
        let entry = &mut self.frames.table(root)[index];
        if *entry & PRESENT != 0 {
            return Err(MapError::AlreadyMapped(slot_address(index)));
        }
        *entry = root | PRESENT | WRITABLE | NO_EXECUTE;
        self.recursive = Some(index);
        Ok(())
    }

    /// The physical address and leaf flags `virt` translates to (for tests and checks).
    pub fn translate(&mut self, virt: u64) -> Option<(u64, u64)> {
        let mut table = self.root;
        for level in (1..=4).rev() {
            let index = ((virt >> (12 + 9 * (level - 1))) & 0x1FF) as usize;
            let entry = self.frames.table(table)[index];
            if entry & PRESENT == 0 {
                return None;
            }
            let size = 1u64 << (12 + 9 * (level - 1));
            if level == 1 || (level == 2 && entry & HUGE_PAGE != 0) {
                let flags = entry & !ADDRESS_MASK & !HUGE_PAGE;
                return Some(((entry & ADDRESS_MASK & !(size - 1)) + (virt & (size - 1)), flags));
            }
            table = entry & ADDRESS_MASK;
        }
        None
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// Frames in a vector; frame n lives at physical address (n + 1) * 4096.
    #[derive(Default)]
    pub struct VecFrames {
        pub tables: Vec<Box<[u64; 512]>>,
        pub limit: usize,
    }

    impl Frames for VecFrames {
        fn allocate_zeroed(&mut self) -> Option<u64> {
            if self.tables.len() >= self.limit {
                return None;
            }
            self.tables.push(Box::new([0; 512]));
            Some(self.tables.len() as u64 * PAGE_4K)
        }
        fn table(&mut self, frame: u64) -> &mut [u64; 512] {
            &mut self.tables[(frame / PAGE_4K - 1) as usize]
        }
    }

    pub fn tables(limit: usize) -> PageTables<VecFrames> {
        PageTables::new(VecFrames { tables: Vec::new(), limit }).unwrap()
    }

    #[test]
    fn maps_and_translates_4k_and_2m() {
        let mut pt = tables(64);
        let rw = leaf_flags(true, false);
        pt.map_4k(0xffff_ffff_8000_1000, 0x20_3000, leaf_flags(false, true)).unwrap();
        pt.map_2m(0xffff_8000_0020_0000, 0x20_0000, rw).unwrap();
        assert_eq!(pt.translate(0xffff_ffff_8000_1abc), Some((0x20_3abc, PRESENT)));
        assert_eq!(
            pt.translate(0xffff_8000_0023_4567),
            Some((0x23_4567, PRESENT | WRITABLE | NO_EXECUTE))
        );
        assert_eq!(pt.translate(0xffff_ffff_8000_0000), None);
        assert_eq!(pt.translate(0), None);
    }

    #[test]
    fn double_mapping_misalignment_and_holes_are_errors() {
        let mut pt = tables(64);
        let f = leaf_flags(true, false);
        pt.map_2m(0x20_0000, 0, f).unwrap();
        assert_eq!(pt.map_4k(0x20_1000, 0, f), Err(MapError::AlreadyMapped(0x20_1000)));
        assert_eq!(pt.map_2m(0x20_0000, 0, f), Err(MapError::AlreadyMapped(0x20_0000)));
        assert_eq!(pt.map_2m(0x1000, 0, f), Err(MapError::Misaligned(0x1000)));
        assert_eq!(
            pt.map_4k(0x8000_0000_0000, 0, f),
            Err(MapError::NonCanonical(0x8000_0000_0000))
        );
        pt.map_recursive(510).unwrap();
        assert!(pt.map_recursive(510).is_err());
        assert_eq!(pt.map_recursive(0), Err(MapError::AlreadyMapped(0)), "slot 0 is in use");
        let mut tiny = tables(2);
        assert_eq!(tiny.map_4k(0x1000, 0, f), Err(MapError::OutOfFrames));
    }

    #[test]
    fn physical_addresses_above_52_bits_and_ranges_past_the_top_are_refused() {
        // Found by fuzzing (fuzz/regressions/page_tables): a range ending above 2^52 wrote its
        // bit 52 into the entry; a range past 2^64 overflowed.
        let mut pt = tables(64);
        let f = leaf_flags(true, false);
        assert_eq!(pt.map_4k(0, 1 << 52, f), Err(MapError::PhysicalTooHigh(1 << 52)));
        assert_eq!(pt.map_2m(0, 1 << 63, f), Err(MapError::PhysicalTooHigh(1 << 63)));
        let top = ADDRESS_MASK & !0xfff;
        assert_eq!(
            pt.map_range_4k(0, top, 0x2000, f),
            Err(MapError::PhysicalTooHigh(top + 0x1000))
        );
        assert_eq!(pt.translate(0), Some((top, f)));
        let last = 0xffff_ffff_ffff_f000;
        assert_eq!(pt.map_range_4k(last, 0, 0x2000, f), Err(MapError::NonCanonical(last)));
    }

    #[test]
    fn nothing_is_mapped_through_the_recursive_slot() {
        let mut pt = tables(64);
        let f = leaf_flags(true, false);
        pt.map_recursive(1).unwrap();
        let root = pt.frames.table(pt.root)[1];
        // A mapping in slot 1 would treat the PML4 as its PDPT and write into it.
        assert_eq!(pt.map_4k(1 << 39, 0x5000, f), Err(MapError::AlreadyMapped(1 << 39)));
        assert_eq!(
            pt.map_2m((1 << 39) + PAGE_2M, 0, f),
            Err(MapError::AlreadyMapped((1 << 39) + PAGE_2M))
        );
        assert_eq!(pt.frames.table(pt.root)[1], root);
        assert_eq!(pt.frames.table(pt.root).iter().filter(|&&e| e != 0).count(), 1);
        pt.map_4k(2 << 39, 0x5000, f).unwrap();
    }

    proptest::proptest! {
        #[test]
        fn every_mapped_page_translates_back(pages in proptest::collection::btree_set(0u64..1 << 20, 1..40)) {
            let mut pt = tables(1000);
            for (i, page) in pages.iter().enumerate() {
                let virt = 0xffff_8000_0000_0000 + page * PAGE_4K * 7;
                pt.map_4k(virt, i as u64 * PAGE_4K, leaf_flags(i % 2 == 0, i % 3 == 0)).unwrap();
            }
            for (i, page) in pages.iter().enumerate() {
                let virt = 0xffff_8000_0000_0000 + page * PAGE_4K * 7;
                let (phys, flags) = pt.translate(virt + 5).unwrap();
                proptest::prop_assert_eq!(phys, i as u64 * PAGE_4K + 5);
                proptest::prop_assert_eq!(flags, leaf_flags(i % 2 == 0, i % 3 == 0));
            }
        }
    }
}
