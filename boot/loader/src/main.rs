//! A UEFI loader that enters a bootloader_api 0.11.17 kernel and stays TDX-safe after
//! ExitBootServices.
//!
//! It reads `\kernel.elf` from its own volume, checks the kernel's `.bootloader-config`
//! (refusing any other bootloader_api version), loads and relocates the kernel, builds the
//! kernel's page tables, stack and boot info, and enters `_start(&BootInfo)` with the contract
//! of bootloader_api 0.11.17 (see ../shared/LOADER-FACTS.md and the README). The decisions are
//! made by `loader-core`, which the host tests; this crate only talks to the firmware.
//!
//! # After ExitBootServices
//!
//! Everything that can fail happens before ExitBootServices, and errors are printed on the UEFI
//! console. After it ([`handoff`]), the loader converts the final memory map and writes the
//! boot info (plain stores to memory it allocated), then calls `enter_kernel`: 141 bytes
//! (today) in a page-aligned PE section of its own (`.text.en`, PE cuts section names to 8
//! bytes), identity-mapped in the kernel's tables and reported to the kernel as
//! `Bootloader` memory; symbols are in `loader.pdb`. In a TD a
//! #VE after ExitBootServices kills the TD, and a #GP is a triple fault; the privileged
//! instructions executed after it are exactly these, each native in a TD in every module
//! version. `kernel/libs/td-rules` lists what the TDX module treats differently from bare metal,
//! with its sources; only the CR0 and CR4 writes below are in that list, and its rules make
//! changing WP, PG and LA57 (guest-owned bits) native:
//!
//! - `mov cr0` only when CR0.WP is clear, to set it (`handoff::set_write_protect_if_clear`), with
//!   every other bit as read: WP is guest-owned, so the write does not exit.
//! - Only when the firmware runs 5-level paging (CR4.LA57, read before ExitBootServices and
//!   again in `enter_kernel`): a far return into compatibility mode, `mov cr0` clearing PG,
//!   `mov cr4` clearing LA57, `mov cr3`, `mov cr0` setting PG, a far return into 64-bit mode
//!   (see `handoff`). Every other bit is written as read. No EFER write.
//! - `cli`: IF is under the TD's own control.
//! - `lgdt` of the loader's GDT, `lidt` of an empty IDT (any exception before the kernel's own
//!   `lidt` then shuts the machine down, rather than jumping through the firmware's IDT in
//!   memory that is now the kernel's), a far return and `mov ds/es/ss` to reload segments.
//! - `mov cr3` to the kernel's page tables (a full TLB flush; no `invlpg` needed).
//!
//! No WRMSR to IA32_EFER after exit: NXE is read before exit and set only if clear, which never
//! happens in a TD (the TDX module keeps EFER.NXE set). No port I/O, HLT, CPUID, RDMSR, WBINVD,
//! and no logging after exit; the panic handler then spins without any of them.

#![no_std]
#![no_main]
#![deny(unsafe_op_in_unsafe_fn)]

mod frames;
mod handoff;
mod kernel_file;
mod measure;
mod plan;
mod uefi_map;

use core::sync::atomic::{AtomicBool, Ordering};
use uefi::prelude::*;

/// Set once boot services are gone: from then on nothing may print.
static BOOT_SERVICES_EXITED: AtomicBool = AtomicBool::new(false);

#[entry]
fn main() -> Status {
    let handoff = match plan::prepare() {
        Ok(handoff) => handoff,
        Err(error) => {
            uefi::println!("tdx-loader: error: {error}");
            return Status::LOAD_ERROR;
        }
    };
    uefi::println!(
        "tdx-loader: entering the kernel at {:#x} after ExitBootServices",
        handoff.entry_virtual()
    );
    handoff::exit_and_enter(handoff)
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    static PANICKING: AtomicBool = AtomicBool::new(false);
    if !BOOT_SERVICES_EXITED.load(Ordering::SeqCst) && !PANICKING.swap(true, Ordering::SeqCst) {
        uefi::println!("tdx-loader: panic: {info}");
    }
    // No HLT and no port I/O: both are #VE in a TD, fatal once boot services are gone.
    loop {
        core::hint::spin_loop();
    }
}
