//! Physical memory for the loader's allocations, all of the OS type
//! `LOADER_ALLOCATION_TYPE` so that the final memory map reports them as `Bootloader`.

use loader_core::memory_map::LOADER_ALLOCATION_TYPE;
use loader_core::paging::{Frames, PAGE_4K};
use uefi::boot::{self, AllocateType, MemoryType};

pub fn memory_type() -> MemoryType {
    MemoryType::custom(LOADER_ALLOCATION_TYPE)
}

/// `pages` zeroed pages; their physical address (UEFI identity-maps memory).
pub fn allocate_zeroed(pages: usize) -> uefi::Result<u64> {
    allocate(AllocateType::AnyPages, pages)
}

/// `pages` zeroed pages below 4 GiB: what the switch out of 5-level paging reaches from 32-bit
/// code (the GDT page and its stack) or loads into CR3 with a 32-bit write (the PML4).
pub fn allocate_zeroed_below_4g(pages: usize) -> uefi::Result<u64> {
    allocate(AllocateType::MaxAddress(0xFFFF_FFFF), pages)
}

fn allocate(kind: AllocateType, pages: usize) -> uefi::Result<u64> {
    let start = boot::allocate_pages(kind, memory_type(), pages)?;
    // SAFETY: allocate_pages returned `pages` pages starting at `start`, ours alone.
    unsafe { core::ptr::write_bytes(start.as_ptr(), 0, pages * PAGE_4K as usize) };
    Ok(start.as_ptr() as u64)
}

/// The bytes of pages this loader allocated.
///
/// # Safety
/// `[phys, phys + len)` must be memory from [`allocate_zeroed`] that nothing else references.
pub unsafe fn bytes_mut(phys: u64, len: usize) -> &'static mut [u8] {
    // SAFETY: the caller guarantees an exclusive, identity-mapped allocation of `len` bytes.
    unsafe { core::slice::from_raw_parts_mut(phys as *mut u8, len) }
}

/// Page-table frames, taken from chunks of pages below 4 GiB (the PML4 must be; the rest come
/// from the same chunks) so that the memory map stays short.
pub struct ChunkFrames {
    next: u64,
    end: u64,
}

const CHUNK_PAGES: usize = 64;

impl ChunkFrames {
    pub fn new() -> Self {
        ChunkFrames { next: 0, end: 0 }
    }
}

impl Frames for ChunkFrames {
    fn allocate_zeroed(&mut self) -> Option<u64> {
        if self.next == self.end {
            let start = allocate_zeroed_below_4g(CHUNK_PAGES).ok()?;
            self.next = start;
            self.end = start + CHUNK_PAGES as u64 * PAGE_4K;
        }
        let frame = self.next;
        self.next += PAGE_4K;
        Some(frame)
    }

    fn table(&mut self, frame: u64) -> &mut [u64; 512] {
        // SAFETY: `frame` came from allocate_zeroed above (the page-table builder only passes
        // frames it got from here or read from entries it wrote), is 4 KiB aligned, and is
        // identity-mapped while boot services run, which is when tables are built.
        unsafe { &mut *(frame as *mut [u64; 512]) }
    }
}
