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
mod attest;
#[cfg(feature = "test-modes")]
mod bench;
#[cfg(feature = "test-modes")]
mod bootflags;
mod cc;
mod console;
mod counters;
mod drivers;
mod exit;
mod fmtbuf;
#[cfg(feature = "test-modes")]
mod fold;
mod fw_cfg;
mod heap;
mod memory;
mod mm;
mod port;
mod selftest;
#[cfg(feature = "test-modes")]
mod softtdx;
mod tdx;
#[cfg(feature = "test-modes")]
mod testmodes;

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
#[cfg(feature = "test-modes")]
pub static KERNEL_ENTRY_TSC: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

fn kernel_main(boot_info: &'static mut BootInfo) -> ! {
    // First, before anything changes what a folded boot's restart restores.
    #[cfg(feature = "test-modes")]
    fold::enter(boot_info, kernel_main);
    #[cfg(feature = "test-modes")]
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

    // Nothing prints before TD detection, so that in a TD the TD info comes first. In the test
    // image the boot flags are read before it, because they may switch the softtdx model on,
    // which is what makes TD detection succeed under plain QEMU.
    #[cfg(feature = "test-modes")]
    let flags = testmodes::enter(boot_info);

    // After the model is on: under softtdx, too, the console must use the direct backend.
    console::init();
    tdx::init();
    println!("tdx-unikernel: kernel entered, GDT/TSS/IDT installed");
    mm::frames::init(boot_info);
    #[cfg(feature = "test-modes")]
    // SAFETY: RDTSC has no side effects.
    bench::FRAMES_READY_TSC
        .store(unsafe { core::arch::x86_64::_rdtsc() }, core::sync::atomic::Ordering::Relaxed);
    #[cfg(feature = "test-modes")]
    testmodes::run(&flags, &boot_info.memory_regions);
    #[cfg(not(feature = "test-modes"))]
    println!(
        "tdx-unikernel: boot mode: none (this image reads no boot mode; it runs the self-test)"
    );

    // Under softtdx, a hostile host's values first: each start-up must refuse its lie (the
    // `fault.virtio.*` checks), and the real start-up below resets the device.
    #[cfg(feature = "test-modes")]
    selftest::virtio_faults::before_console(&boot_info.memory_regions);

    // The virtio console, if the machine has one: console output goes there too from here on.
    use drivers::virtio_console::{init as virtio_console_init, Probe};
    match virtio_console_init(&boot_info.memory_regions) {
        Probe::Up(c) => println!(
            "virtio-console: up (device {}, BAR {:#x}+{:#x}, transmitq of {} in shared GPA {:#x}); \
             output goes there and to serial",
            c.device, c.bar, c.bar_size, c.queue_size, c.queue_gpa
        ),
        Probe::Absent | Probe::NotProbed => {
            println!("virtio-console: none on this machine; output stays on serial")
        }
        Probe::Failed(e) => println!("virtio-console: not started: {e}; output stays on serial"),
    }

    let verdict = selftest::run(boot_info);
    #[cfg(feature = "test-modes")]
    testmodes::finish(&flags);
    exit::exit(verdict)
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    // The console lock may be held by the code that panicked: use the lock-free writer.
    use core::fmt::Write;
    let mut out = console::EmergencyWriter::new();
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
