//! A bootable Intel TDX guest unikernel.
//!
//! In a trust domain (TD) the CPU does not execute port I/O: it raises a virtualization
//! exception (#VE, vector 20) and the guest emulates the instruction with a TDG.VP.VMCALL to the
//! host. This kernel installs its own GDT, TSS and IDT at entry, handles #VE exactly
//! ([`tdx::ve`]), and then runs a self-test ([`selftest`]) that drives real devices through that
//! path and reports over COM1.
//!
//! Blanket assumptions, relied on by the `SAFETY` comments throughout:
//! - One CPU. Nothing here starts application processors.
//! - External interrupts stay disabled (RFLAGS.IF = 0) for the whole run; only exceptions are
//!   delivered. A handler therefore never races with the code it interrupted, except through
//!   locks that code may hold, which handlers never take.
//! - Ring 0 only, one address space: the one the bootloader built, with all physical memory
//!   mapped at the offset it reports.
//! - The red zone is disabled by the target (x86_64-unknown-none), so exception frames may be
//!   written directly below an interrupted RSP.

#![no_std]
#![no_main]
#![deny(unsafe_op_in_unsafe_fn)]

extern crate alloc;

mod arch;
#[cfg(feature = "softtdx")]
mod bench;
mod bootflags;
mod cc;
mod console;
mod counters;
mod exit;
mod fmtbuf;
mod heap;
mod memory;
mod port;
mod selftest;
#[cfg(feature = "softtdx")]
mod softtdx;
mod tdx;

use bootloader_api::config::{BootloaderConfig, Mapping};
use bootloader_api::{entry_point, BootInfo};

/// The loader's configuration, embedded in the kernel ELF.
///
/// Physical memory is mapped so that the #VE handler can walk page tables, and the stack is
/// 128 KiB: the self-test and the softtdx model's nested traps (#DB, then #VE, then #UD for each
/// TDCALL) all run on it.
pub static BOOTLOADER_CONFIG: BootloaderConfig = {
    let mut config = BootloaderConfig::new_default();
    config.mappings.physical_memory = Some(Mapping::Dynamic);
    config.kernel_stack_size = 128 * 1024;
    config
};

entry_point!(kernel_main, config = &BOOTLOADER_CONFIG);

/// RDTSC at kernel entry: under the bench's `-icount shift=0` it counts instructions, which
/// gives `instructions.boot_to_verdict` (see `selftest::run`).
#[cfg(feature = "softtdx")]
pub static KERNEL_ENTRY_TSC: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

fn kernel_main(boot_info: &'static mut BootInfo) -> ! {
    #[cfg(feature = "softtdx")]
    // SAFETY: RDTSC has no side effects.
    KERNEL_ENTRY_TSC
        .store(unsafe { core::arch::x86_64::_rdtsc() }, core::sync::atomic::Ordering::Relaxed);
    // The firmware's IDT is still loaded but no longer mapped: any exception before this line
    // would triple-fault. Nothing above touches I/O, CPUID or MSRs.
    arch::init();
    tdx::ve::register();
    // In a TD, every port access from here on raises #VE; the fatal paths must know that
    // before the first one.
    tdx::early_detect();
    memory::init(boot_info);
    heap::init(boot_info);

    // Nothing prints before TD detection, so that in a TD the TD info comes first. The boot
    // flags are read before it because they may switch the softtdx model on, which is what
    // makes TD detection succeed under plain QEMU.
    let flags = bootflags::read();

    #[cfg(feature = "softtdx")]
    if let bootflags::Mode::Softtdx(_) | bootflags::Mode::Bench = flags.mode {
        let fault = match flags.mode {
            bootflags::Mode::Softtdx(fault) => fault,
            _ => None,
        };
        if let Err(reason) = softtdx::enable(fault) {
            println!("tdx-unikernel: softtdx refused: {reason}");
            exit::exit(exit::ExitCode::Failure);
        }
    }
    #[cfg(not(feature = "softtdx"))]
    if let bootflags::Mode::Softtdx(_) | bootflags::Mode::Bench = flags.mode {
        println!("tdx-unikernel: softtdx requested but this kernel was built without it");
        exit::exit(exit::ExitCode::Failure);
    }

    // After the model is on: under softtdx, too, the console must use the direct backend.
    console::init();
    tdx::init();
    println!("tdx-unikernel: kernel entered, GDT/TSS/IDT installed");
    if flags.unparsed {
        println!("tdx-unikernel: unknown boot mode in fw_cfg opt/tdx-unikernel/mode");
        exit::exit(exit::ExitCode::Failure);
    }
    println!("tdx-unikernel: boot mode: {}", flags.mode.name());

    match flags.mode {
        bootflags::Mode::Crash(crash) => provoke(crash),
        bootflags::Mode::Softtdx(Some(bootflags::FatalScenario::StringIoUnmapped)) => {
            provoke_unmapped_string_io()
        }
        _ => {}
    }
    if let bootflags::Mode::Hang = flags.mode {
        println!("tdx-unikernel: hang requested by the boot flags; spinning forever");
        loop {
            core::hint::spin_loop();
        }
    }

    #[cfg(feature = "softtdx")]
    if let bootflags::Mode::Bench = flags.mode {
        exit::exit(bench::run());
    }

    let verdict = selftest::run(boot_info);
    exit::exit(verdict)
}

/// An address in the canonical lower half that the loader leaves unmapped.
const UNMAPPED: u64 = 0x0000_7FFF_DEAD_0000;

fn provoke(crash: bootflags::Crash) -> ! {
    match crash {
        bootflags::Crash::PageFault => {
            println!("tdx-unikernel: reading unmapped address {UNMAPPED:#x} on request");
            // SAFETY: not safe at all, on purpose: the read faults and the unexpected-exception
            // path must report it and stop the kernel.
            let value = unsafe { core::ptr::read_volatile(UNMAPPED as *const u64) };
            panic!("read of an unmapped address returned {value:#x}")
        }
        bootflags::Crash::Panic => panic!("deliberate panic requested by the boot flags"),
        bootflags::Crash::TripleFault => {
            println!("tdx-unikernel: loading an empty IDT and raising #BP on request");
            let empty = x86_64::structures::DescriptorTablePointer {
                limit: 0,
                base: x86_64::VirtAddr::new(0),
            };
            // SAFETY: not safe, on purpose: with no IDT the #BP cannot be delivered, nor the
            // #DF after it, and the CPU shuts down (a triple fault).
            unsafe {
                x86_64::instructions::tables::lidt(&empty);
                core::arch::asm!("int3");
            }
            panic!("an exception was delivered without an IDT")
        }
    }
}

/// `rep insb` into an unmapped buffer. Natively that is a page fault; in a TD (softtdx here)
/// the #VE handler must find the bad operand before touching it and stop cleanly.
fn provoke_unmapped_string_io() -> ! {
    println!("tdx-unikernel: rep insb into unmapped address {UNMAPPED:#x} on request");
    // SAFETY: not safe, on purpose (see above); the handler refuses the access.
    unsafe {
        core::arch::asm!("rep insb", in("dx") 0x511u16, inout("rdi") UNMAPPED => _,
                         inout("rcx") 4usize => _, options(nostack, preserves_flags));
    }
    panic!("rep insb into an unmapped buffer completed")
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    // The console lock may be held by the code that panicked: use the lock-free writer.
    use core::fmt::Write;
    let mut out = console::EmergencyWriter;
    match info.location() {
        Some(at) => {
            let _ = writeln!(
                out,
                "\nPANIC at {}:{}:{}: {}",
                at.file(),
                at.line(),
                at.column(),
                info.message()
            );
        }
        None => {
            let _ = writeln!(out, "\nPANIC: {}", info.message());
        }
    }
    tdx::report_fatal_error("kernel panic");
    exit::exit(exit::ExitCode::Failure)
}
