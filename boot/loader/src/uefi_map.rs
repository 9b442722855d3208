//! The firmware's memory map in loader-core's terms: read before ExitBootServices to size the
//! address space and the region array, and after it to build the kernel's memory regions.

use loader_core::memory_map::UefiDescriptor;
use uefi::mem::memory_map::MemoryDescriptor;

pub fn descriptor(d: &MemoryDescriptor) -> UefiDescriptor {
    UefiDescriptor { memory_type: d.ty.0, physical_start: d.phys_start, page_count: d.page_count }
}
