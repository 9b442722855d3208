//! The pure logic of the UEFI loader in `boot/loader`: everything it decides, with no firmware
//! call, no asm and no global state, so that the host can test it.
//!
//! - [`memory_map`]: the UEFI memory map as bootloader_api `MemoryRegion`s;
//! - [`config`]: the kernel's `.bootloader-config`, refused unless its version is ours;
//! - [`elf`]: the kernel ELF's segments, permissions and `R_X86_64_RELATIVE` relocations;
//! - [`layout`]: where dynamic mappings go in the kernel's address space;
//! - [`paging`]: the 4-level page tables that map it all;
//! - [`td`]: whether the loader runs in a TD (CPUID leaf 0x21);
//! - [`checks`]: how the kernel judges what it was handed (its `boot.*` self-test checks).

#![cfg_attr(not(test), no_std)]
#![deny(unsafe_op_in_unsafe_fn)]
#![forbid(unsafe_code)]

pub mod checks;
pub mod config;
pub mod elf;
pub mod kernel_event;
pub mod layout;
pub mod memory_map;
pub mod paging;
pub mod td;
