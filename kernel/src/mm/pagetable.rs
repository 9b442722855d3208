//! Edits of the live page tables (4-level paging, Intel SDM Vol. 3A §4.5): the shared bit in
//! 4 KiB leaves, and new 4 KiB mappings for device MMIO.
//!
//! Page-table pages themselves never carry the shared bit: the CPU walks them as private memory.
//! Every changed leaf is followed by INVLPG of its page, so no stale translation survives
//! (Linux flushes the TLB on a private-to-shared change too, `tdx_tlb_flush_required`).

use crate::arch::paging::{
    CACHE_DISABLE, FRAME_MASK, HUGE_PAGE, NO_EXECUTE, PRESENT, WRITABLE, WRITE_THROUGH,
};
use crate::memory::{self, AccessError};
use alloc::alloc::{alloc_zeroed, Layout};

pub const PAGE_SIZE: u64 = 4096;

#[derive(Clone, Copy, Debug)]
pub enum PageTableError {
    Walk(AccessError),
    /// The address is mapped by a 2 MiB or 1 GiB leaf: the edit needs a 4 KiB one.
    HugePage(u64),
    /// No free top-level slot for device mappings, or the window is full.
    NoVirtualSpace,
    OutOfMemory,
}

impl core::fmt::Display for PageTableError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Walk(e) => write!(f, "{e}"),
            Self::HugePage(a) => write!(f, "{a:#x} is mapped by a huge page"),
            Self::NoVirtualSpace => write!(f, "no virtual space left for device mappings"),
            Self::OutOfMemory => write!(f, "no memory for a page table"),
        }
    }
}

fn physical_offset() -> Result<u64, PageTableError> {
    memory::physical_memory_offset().ok_or(PageTableError::Walk(AccessError::NoPhysicalMapping))
}

fn cr3_table() -> u64 {
    x86_64::registers::control::Cr3::read_raw().0.start_address().as_u64()
}

/// The 4 KiB leaf entry that maps `address`.
fn leaf_4k(address: u64) -> Result<*mut u64, PageTableError> {
    let offset = physical_offset()?;
    let mut table = cr3_table();
    for level in (1..4).rev() {
        let index = (address >> (12 + 9 * level)) & 0x1FF;
        // SAFETY: `table` is a live page table reached from CR3 through present entries; all
        // physical memory is mapped at `offset`; entries are aligned u64s.
        let entry = unsafe { core::ptr::read_volatile((offset + table + index * 8) as *const u64) };
        if entry & PRESENT == 0 {
            return Err(PageTableError::Walk(AccessError::NotMapped(address)));
        }
        if entry & HUGE_PAGE != 0 {
            return Err(PageTableError::HugePage(address));
        }
        table = entry & FRAME_MASK;
    }
    let index = (address >> 12) & 0x1FF;
    Ok((offset + table + index * 8) as *mut u64)
}

fn invlpg(address: u64) {
    // SAFETY: INVLPG only drops a TLB entry.
    unsafe { core::arch::asm!("invlpg [{}]", in(reg) address, options(nostack, preserves_flags)) };
}

/// Writes back and invalidates the cache lines of `[address, address + len)` (Linux flushes
/// caches around every conversion, `tdx_cache_flush_required`). CLFLUSH is native in a TD.
pub fn flush_cache_range(address: u64, len: u64) {
    let mut line = address & !63;
    while line < address + len {
        // SAFETY: CLFLUSH of a mapped address has no architectural effect on memory contents.
        unsafe {
            core::arch::asm!("clflush [{}]", in(reg) line, options(nostack, preserves_flags))
        };
        line += 64;
    }
    // SAFETY: MFENCE orders the flushes before what follows; no other effect.
    unsafe { core::arch::asm!("mfence", options(nostack, preserves_flags)) };
}

/// Sets (`shared`) or clears the shared bit in the 4 KiB leaves of `pages` pages from
/// `address`, flushing each page's TLB entry.
pub fn set_shared(
    address: u64,
    pages: u64,
    shared_bit: u64,
    shared: bool,
) -> Result<(), PageTableError> {
    for page in 0..pages {
        let virt = address + page * PAGE_SIZE;
        let entry = leaf_4k(virt)?;
        // SAFETY: `entry` is the live leaf for `virt`, which the caller owns; only the shared
        // bit changes, and the TLB entry is flushed right after.
        unsafe {
            let value = core::ptr::read_volatile(entry);
            let next = if shared { value | shared_bit } else { value & !shared_bit };
            core::ptr::write_volatile(entry, next);
        }
        invlpg(virt);
    }
    Ok(())
}

/// The window for device mappings: one top-level slot found empty at first use.
static NEXT_DEVICE_PAGE: spin::Mutex<Option<(u64, u64)>> = spin::Mutex::new(None);

fn allocate_table() -> Result<u64, PageTableError> {
    let layout = Layout::from_size_align(PAGE_SIZE as usize, PAGE_SIZE as usize)
        .map_err(|_| PageTableError::OutOfMemory)?;
    // SAFETY: a non-zero-sized layout; the page is never freed (it becomes a page table).
    let page = unsafe { alloc_zeroed(layout) } as u64;
    if page == 0 {
        return Err(PageTableError::OutOfMemory);
    }
    // The heap lives in the physical-memory mapping.
    Ok(page - physical_offset()?)
}

/// Maps `pages` pages of device memory at `gpa` (without the shared bit) uncached and not
/// executable, with `shared_bit` ORed into each leaf (0 outside a TD). Returns the virtual
/// address of the first page.
pub fn map_device(gpa: u64, pages: u64, shared_bit: u64) -> Result<u64, PageTableError> {
    let offset = physical_offset()?;
    let mut window = NEXT_DEVICE_PAGE.lock();
    if window.is_none() {
        // The highest empty slot of the upper half (the loader puts nothing at the very top
        // except what it was asked to map, and the kernel maps nothing else).
        let pml4 = cr3_table();
        let slot = (256..511u64).rev().find(|&i| {
            // SAFETY: reading the live top-level table through the physical map.
            let entry = unsafe { core::ptr::read_volatile((offset + pml4 + i * 8) as *const u64) };
            entry & PRESENT == 0
        });
        let slot = slot.ok_or(PageTableError::NoVirtualSpace)?;
        let base = 0xFFFF_0000_0000_0000 | (slot << 39);
        *window = Some((base, base + (1 << 39)));
    }
    let (next, end) = window.as_mut().ok_or(PageTableError::NoVirtualSpace)?;
    let start = *next;
    if end.saturating_sub(start) < pages * PAGE_SIZE {
        return Err(PageTableError::NoVirtualSpace);
    }
    for page in 0..pages {
        let virt = start + page * PAGE_SIZE;
        let mut table = cr3_table();
        for level in (1..4).rev() {
            let index = (virt >> (12 + 9 * level)) & 0x1FF;
            let entry = (offset + table + index * 8) as *mut u64;
            // SAFETY: a live page table in the window this function owns; all physical memory
            // is mapped at `offset`.
            let mut value = unsafe { core::ptr::read_volatile(entry) };
            if value & PRESENT == 0 {
                value = allocate_table()? | PRESENT | WRITABLE;
                // SAFETY: the slot was empty and lies in the device window.
                unsafe { core::ptr::write_volatile(entry, value) };
            }
            table = value & FRAME_MASK;
        }
        let index = (virt >> 12) & 0x1FF;
        let leaf = (gpa + page * PAGE_SIZE)
            | shared_bit
            | PRESENT
            | WRITABLE
            | WRITE_THROUGH
            | CACHE_DISABLE
            | NO_EXECUTE;
        // SAFETY: an empty leaf in the device window.
        unsafe { core::ptr::write_volatile((offset + table + index * 8) as *mut u64, leaf) };
        invlpg(virt);
    }
    *next = start + pages * PAGE_SIZE;
    Ok(start)
}
