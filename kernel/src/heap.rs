//! The kernel heap: one usable region of the boot memory map, on linked_list_allocator.

use bootloader_api::info::MemoryRegionKind;
use bootloader_api::BootInfo;
use linked_list_allocator::LockedHeap;

#[global_allocator]
static ALLOCATOR: LockedHeap = LockedHeap::empty();
/// The heap's physical range, `[start, end)`.
static RANGE: spin::Once<(u64, u64)> = spin::Once::new();

pub const HEAP_SIZE: u64 = 1024 * 1024;

pub fn init(boot_info: &BootInfo) {
    let offset = boot_info
        .physical_memory_offset
        .into_option()
        .expect("the bootloader config asks for a physical-memory mapping");
    let region = boot_info
        .memory_regions
        .iter()
        .filter(|r| r.kind == MemoryRegionKind::Usable)
        // Stay clear of the first MiB, where firmware leftovers live.
        .map(|r| (r.start.max(0x10_0000), r.end))
        .find(|(start, end)| end.saturating_sub(*start) >= HEAP_SIZE)
        .expect("a usable region of at least 1 MiB for the heap");
    RANGE.call_once(|| (region.0, region.0 + HEAP_SIZE));
    // SAFETY: the region is marked usable by the loader, so nothing else owns it; it is mapped
    // at `offset` with the rest of physical memory, and it is handed to the allocator once.
    unsafe {
        ALLOCATOR.lock().init((offset + region.0) as *mut u8, HEAP_SIZE as usize);
    }
}

/// Free bytes in the heap, for the heap self-test.
pub fn free_bytes() -> usize {
    ALLOCATOR.lock().free()
}

/// The heap's physical range, `[start, end)`; empty before [`init`].
pub fn range() -> (u64, u64) {
    RANGE.get().copied().unwrap_or((0, 0))
}
