//! Where things go in the kernel's virtual address space.
//!
//! bootloader_api lets the kernel fix an address for each mapping or leave it `Dynamic`. Like
//! the upstream loader, this one gives each dynamic mapping its own free level-4 slots (512 GiB
//! each) inside `[dynamic_range_start, dynamic_range_end)`, after the fixed mappings and the
//! loader's identity-mapped pages have claimed theirs. Slots are handed out lowest first.

use crate::paging::{is_canonical, slot_address};
use core::fmt;

pub const SLOT_SIZE: u64 = 1 << 39;
const SLOTS: usize = 512;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayoutError {
    NoFreeSlot(u64),
    Overlap(u64),
    NonCanonical(u64),
    /// A fixed recursive page-table index names a level-4 slot another mapping uses.
    SlotInUse(usize),
}

impl fmt::Display for LayoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LayoutError::NoFreeSlot(len) => {
                write!(f, "no free virtual range of {len:#x} bytes in the dynamic range")
            }
            LayoutError::Overlap(at) => write!(f, "fixed mapping at {at:#x} overlaps another one"),
            LayoutError::NonCanonical(at) => write!(f, "fixed mapping at {at:#x} is not canonical"),
            LayoutError::SlotInUse(slot) => write!(
                f,
                "the recursive page-table index {slot} names a level-4 slot another mapping uses"
            ),
        }
    }
}

fn slot_of(virt: u64) -> usize {
    ((virt >> 39) & 0x1FF) as usize
}

pub struct Layout {
    used: [bool; SLOTS],
    range_start: u64,
    range_end: u64,
}

impl Layout {
    /// `range_end` is exclusive; bootloader_api's defaults are 0 and 0xffff_ffff_ffff_f000.
    pub fn new(range_start: Option<u64>, range_end: Option<u64>) -> Self {
        Layout {
            used: [false; SLOTS],
            range_start: range_start.unwrap_or(0),
            range_end: range_end.unwrap_or(0xffff_ffff_ffff_f000),
        }
    }

    /// Claims the slots that `[virt, virt + len)` touches. Fixed mappings may share slots with
    /// each other (they cannot share pages: the page-table builder refuses that).
    pub fn claim(&mut self, virt: u64, len: u64) -> Result<(), LayoutError> {
        let last = virt.checked_add(len.max(1) - 1).ok_or(LayoutError::NonCanonical(virt))?;
        if !is_canonical(virt) || !is_canonical(last) {
            return Err(LayoutError::NonCanonical(virt));
        }
        if slot_of(virt) > slot_of(last) {
            return Err(LayoutError::NonCanonical(virt));
        }
        self.used[slot_of(virt)..=slot_of(last)].fill(true);
        Ok(())
    }

    /// Finds `len` bytes in consecutive free slots inside the dynamic range, claims them, and
    /// returns the start.
    pub fn allocate(&mut self, len: u64) -> Result<u64, LayoutError> {
        let needed = len.div_ceil(SLOT_SIZE).max(1) as usize;
        let mut start = 0;
        while start + needed <= SLOTS {
            let window = start..start + needed;
            let begin = slot_address(start);
            let end = slot_address(start + needed - 1).wrapping_add(SLOT_SIZE);
            let inside = begin >= self.range_start && end.wrapping_sub(1) < self.range_end;
            // A window may not straddle the canonical hole between slots 255 and 256.
            let contiguous = start >= 256 || start + needed <= 256;
            if inside && contiguous && window.clone().all(|s| !self.used[s]) {
                for s in window {
                    self.used[s] = true;
                }
                return Ok(begin);
            }
            start += 1;
        }
        Err(LayoutError::NoFreeSlot(len))
    }

    /// A free slot for the recursive page-table entry; returns its index.
    pub fn allocate_slot(&mut self) -> Result<usize, LayoutError> {
        self.allocate(SLOT_SIZE).map(slot_of)
    }

    /// Claims level-4 slot `slot` for the recursive page-table entry, which must have it alone:
    /// a mapping in the same slot would be walked through the PML4 itself and write into it.
    /// Call it after every other fixed claim (the identity pages included) and before the
    /// dynamic ones, which then keep out of it.
    pub fn claim_slot(&mut self, slot: usize) -> Result<(), LayoutError> {
        let used = self.used.get_mut(slot).ok_or(LayoutError::SlotInUse(slot))?;
        if *used {
            return Err(LayoutError::SlotInUse(slot));
        }
        *used = true;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dynamic_mappings_take_free_slots_in_order() {
        let mut layout = Layout::new(None, None);
        layout.claim(0x10_0000, 0x1000).unwrap(); // identity pages, slot 0
        assert_eq!(layout.allocate(0x1000), Ok(1 << 39));
        assert_eq!(layout.allocate(4 << 30), Ok(2 << 39));
        // 600 GiB needs two slots.
        assert_eq!(layout.allocate(600 << 30), Ok(3 << 39));
        assert_eq!(layout.allocate(1), Ok(5 << 39));
    }

    #[test]
    fn the_dynamic_range_is_honoured_and_the_hole_skipped() {
        let mut layout = Layout::new(Some(0xffff_8000_0000_0000), None);
        assert_eq!(layout.allocate(1), Ok(0xffff_8000_0000_0000));
        let mut high = Layout::new(Some(255 << 39), None);
        assert_eq!(high.allocate(2 * SLOT_SIZE), Ok(0xffff_8000_0000_0000));
        let mut narrow = Layout::new(Some(0), Some(1 << 39));
        assert_eq!(narrow.allocate(1), Ok(0));
        assert_eq!(narrow.allocate(1), Err(LayoutError::NoFreeSlot(1)));
    }

    #[test]
    fn fixed_claims_block_dynamic_slots_and_must_be_canonical() {
        let mut layout = Layout::new(None, None);
        layout.claim(0, 1).unwrap();
        layout.claim(1 << 39, 1).unwrap();
        assert_eq!(layout.allocate(1), Ok(2 << 39));
        assert_eq!(
            layout.claim(0x0000_8000_0000_0000, 1),
            Err(LayoutError::NonCanonical(0x0000_8000_0000_0000))
        );
        assert_eq!(layout.allocate_slot(), Ok(3));
    }

    #[test]
    fn a_fixed_recursive_index_in_a_used_slot_is_refused() {
        let mut layout = Layout::new(None, None);
        // The loader's identity-mapped trampoline in slot 0, the kernel at a fixed address in
        // slot 511.
        layout.claim(0x7e0_0000, 0x1000).unwrap();
        layout.claim(0xffff_ff80_0000_0000, 0x10_0000).unwrap();
        assert_eq!(layout.claim_slot(0), Err(LayoutError::SlotInUse(0)));
        assert_eq!(layout.claim_slot(511), Err(LayoutError::SlotInUse(511)));
        assert!(layout.claim_slot(0).unwrap_err().to_string().contains("index 0"));
        // A free slot is taken once, and dynamic mappings keep out of it.
        layout.claim_slot(1).unwrap();
        assert_eq!(layout.claim_slot(1), Err(LayoutError::SlotInUse(1)));
        assert_eq!(layout.allocate(1), Ok(2 << 39));
        assert_eq!(layout.claim_slot(512), Err(LayoutError::SlotInUse(512)));
    }
}
