//! What only the test and bench image does (cargo feature `test-modes`): read the boot mode
//! from fw_cfg, switch softtdx on, crash, hang or run the benchmarks on request.
//!
//! The host controls fw_cfg, so none of this is in the kernel a TD boots: that one runs the
//! self-test and nothing else.

use crate::bootflags::{self, BootFlags, Mode};
use crate::{bench, exit, println, softtdx};

/// Reads the boot flags and, if they ask for it, switches softtdx on. Prints nothing (in a TD,
/// or under softtdx, the TD info must be the kernel's first line).
pub fn enter(boot_info: &mut bootloader_api::BootInfo) -> BootFlags {
    let flags = bootflags::read();
    if let Mode::Softtdx(_) | Mode::Bench | Mode::BenchBoot = flags.mode {
        let fault = match flags.mode {
            Mode::Softtdx(fault) => fault,
            _ => None,
        };
        if let Err(reason) = softtdx::enable(None, flags.td_attributes) {
            println!("tdx-unikernel: softtdx refused: {reason}");
            exit::exit(exit::ExitCode::Failure);
        }
        // The model plays TDVF's part too: RAM above 4 GiB stays pending (type 15 in the map).
        // Its cost is firmware's in a TD, so the boot figure leaves it out.
        // SAFETY: RDTSC has no side effects.
        let before = unsafe { core::arch::x86_64::_rdtsc() };
        softtdx::pages::record_ram(&boot_info.memory_regions);
        softtdx::pages::leave_above_4g_unaccepted(&mut boot_info.memory_regions);
        // SAFETY: as above.
        let spent = unsafe { core::arch::x86_64::_rdtsc() } - before;
        bench::TDVF_PLAY_TSC.store(spent, core::sync::atomic::Ordering::Relaxed);
        // From the first #VE on, so that every successful VEINFO.GET is followed by one (`nmi=`
        // equals the #VEs handled).
        softtdx::set_nmi_point(flags.softtdx_nmi);
        // In a TD the boot-mode read is the kernel's first #VE. Under softtdx it had to run
        // natively to learn that the model is wanted; read the file again (the item found
        // natively), now through #VE, and only then arm the fault scenario (which is about the
        // code after it).
        // With the model on, TD detection succeeds: mark the TD now, as `early_detect` does
        // before the first port access in a real TD.
        crate::tdx::early_detect();
        if bootflags::reread(&flags).mode != flags.mode {
            println!("tdx-unikernel: the boot mode read through #VE differs from the native read");
            exit::exit(exit::ExitCode::Failure);
        }
        softtdx::arm_scenario(fault);
    }
    flags
}

/// Announces the boot mode and runs the ones that replace the self-test.
pub fn run(flags: &BootFlags, regions: &bootloader_api::info::MemoryRegions) {
    if flags.unparsed {
        println!("tdx-unikernel: unknown boot mode in fw_cfg opt/tdx-unikernel/mode");
        exit::exit(exit::ExitCode::Failure);
    }
    println!("tdx-unikernel: boot mode: {}", flags.mode.name());
    match flags.mode {
        Mode::Crash(crash) => provoke(crash),
        Mode::Softtdx(Some(bootflags::FatalScenario::StringIoUnmapped)) => {
            provoke_unmapped_string_io()
        }
        Mode::Softtdx(Some(bootflags::FatalScenario::TouchPending)) => provoke_pending_access(),
        Mode::Softtdx(Some(bootflags::FatalScenario::PrivateAccessShared)) => {
            provoke_private_access_to_shared()
        }
        // The model's fault applies to the first INS/OUTS #VE, or the first MMIO #VE: made at
        // once, rather than after the self-test's port checks.
        Mode::Softtdx(Some(bootflags::FatalScenario::MismatchedQualification)) => {
            provoke_first_string_io()
        }
        Mode::Softtdx(Some(bootflags::FatalScenario::MmioPrivateGpa)) => provoke_first_mmio(),
        Mode::Softtdx(Some(bootflags::FatalScenario::AcceptUnknownStatus)) => {
            provoke_accept_failure()
        }
        Mode::Softtdx(Some(bootflags::FatalScenario::BrokenGate20)) => {
            crate::arch::idt::mark_not_present(crate::arch::idt::vector::VIRTUALIZATION)
        }
        Mode::Hang => {
            println!("tdx-unikernel: hang requested by the boot flags; spinning forever");
            loop {
                core::hint::spin_loop();
            }
        }
        Mode::Bench => exit::exit(bench::run(regions)),
        // The self-test follows (its verdict line carries `boot_to_verdict`), then [`finish`].
        Mode::BenchBoot => bench::boot_metric(),
        _ => {}
    }
    if let Some(count) = flags.nmi_window {
        nmi_window(count);
    }
}

/// How many times the NMI window looks at the counter before it gives up: each look takes the
/// console lock and reads the UART's scratch register (port I/O). On the development machine
/// about half a million looks passed while the harness injected three NMIs over QMP, so the
/// bound leaves some thirty times that. A bound, not a timer: the run goes on either way, and
/// the harness judges `nmi=`.
const NMI_WINDOW_LOOKS: u32 = 16_000_000;

/// Boot flag `nmi-window=N`: says so, then waits until N NMIs have been counted, with the
/// console lock held and port I/O running, so that the NMIs a harness injects from outside
/// land where the handler must not take a lock or touch a port. Deterministic for the harness:
/// it injects after this line, and the self-test starts only once the kernel has counted them.
fn nmi_window(count: u32) {
    use crate::counters::NMI;
    println!("tdx-unikernel: NMI window: waiting for {count} NMIs");
    let mut looks = 0;
    while NMI.get() < u64::from(count) && looks < NMI_WINDOW_LOOKS {
        let _ = crate::console::with_pio_uart(|uart| {
            // SAFETY: the scratch register (offset 7) is plain storage in the 16550.
            let _ = unsafe { crate::port::inb(crate::console::COM1 + 7) };
            let _ = uart;
        });
        looks += 1;
    }
    println!("tdx-unikernel: NMI window closed: nmi={} after {looks} looks", NMI.get());
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
    unsafe { rep_insb_fw_cfg(UNMAPPED as *mut u8) };
    panic!("rep insb into an unmapped buffer completed")
}

/// `rep insb` of 4 bytes from fw_cfg's data port (0x511) to `destination`. Reading that port is
/// harmless: every fw_cfg read selects its item first.
///
/// # Safety
/// `destination` must be 4 writable bytes, unless the caller means the access to fail.
unsafe fn rep_insb_fw_cfg(destination: *mut u8) {
    // SAFETY: delegated to the caller.
    unsafe {
        core::arch::asm!("rep insb", in("dx") 0x511u16, inout("rdi") destination => _,
                         inout("rcx") 4usize => _, options(nostack, preserves_flags));
    }
}

/// One `rep insb` into a buffer of the kernel's: the first INS/OUTS #VE.
fn provoke_first_string_io() -> ! {
    let mut buffer = [0u8; 4];
    println!("tdx-unikernel: rep insb from port 0x511 on request");
    // SAFETY: the buffer holds the 4 bytes.
    unsafe { rep_insb_fw_cfg(buffer.as_mut_ptr()) };
    panic!("rep insb completed: {buffer:x?}")
}

/// One read of the IOAPIC's data window (IOWIN, 0xFEC00010) through a shared mapping: the first
/// MMIO #VE. Reading IOWIN only returns the selected register.
fn provoke_first_mmio() -> ! {
    use crate::drivers::ioapic::{BASE, IOWIN};
    let ioapic = match crate::mm::mmio::DeviceMemory::map(BASE, 4096) {
        Ok(ioapic) => ioapic,
        Err(e) => {
            println!("tdx-unikernel: cannot map the IOAPIC: {e}");
            exit::exit(exit::ExitCode::Failure);
        }
    };
    println!("tdx-unikernel: reading the IOAPIC's IOWIN through its shared mapping, on request");
    // SAFETY: a 4-byte read of a device register that has no side effect, through a mapping
    // of the device.
    let value =
        unsafe { crate::mm::mmio::read_mov(ioapic.virt + IOWIN, tdx_ve::mmio::AccessSize::Dword) };
    panic!("the MMIO read returned {value:#x}")
}

/// After the self-test's verdict, before the exit: the `bench boot` mode's accept figures
/// (they need the 8 GiB td machine's unaccepted memory, which the self-test barely touched).
pub fn finish(flags: &BootFlags) {
    if flags.mode == Mode::BenchBoot {
        bench::accept_metrics();
        println!("BENCH END");
    }
}

/// Reads the first byte of memory TDVF (here the model) left unaccepted, without accepting it:
/// in a TD with SEPT_VE_DISABLE the TD is stopped, and softtdx must stop it naming the GPA.
fn provoke_pending_access() -> ! {
    let Some(gpa) = crate::mm::frames::first_unaccepted() else {
        println!(
            "tdx-unikernel: no unaccepted memory to touch (the machine has no RAM above 4 GiB)"
        );
        exit::exit(exit::ExitCode::Failure);
    };
    let offset = crate::memory::physical_memory_offset().unwrap_or(0);
    println!("tdx-unikernel: reading GPA {gpa:#x} before accepting it, on request");
    // SAFETY: not safe, on purpose: the page is pending; the model must stop the run.
    let value = unsafe { core::ptr::read_volatile((offset + gpa) as *const u8) };
    panic!("a read of pending GPA {gpa:#x} returned {value:#x}")
}

/// Reads a page of the shared pool through the physical-memory map, which maps it private: in a
/// TD the host converts the page back and the retried access ends the TD; the model must stop
/// the run so.
fn provoke_private_access_to_shared() -> ! {
    let page = match crate::mm::shared::allocate(1) {
        Ok(page) => page,
        Err(e) => {
            println!("tdx-unikernel: no shared page to touch: {e}");
            exit::exit(exit::ExitCode::Failure);
        }
    };
    let offset = crate::memory::physical_memory_offset().unwrap_or(0);
    println!(
        "tdx-unikernel: reading shared GPA {:#x} through the private physical-memory map, on request",
        page.gpa
    );
    // SAFETY: not safe, on purpose: the page is shared; the model must stop the run.
    let value = unsafe { core::ptr::read_volatile((offset + page.gpa) as *const u8) };
    panic!("a private read of shared GPA {:#x} returned {value:#x}", page.gpa)
}

/// The model's next TDG.MEM.PAGE.ACCEPT returns a status the policy does not know; the frame
/// allocator's first accept must stop the kernel with it.
fn provoke_accept_failure() -> ! {
    softtdx::pages::arm_fault(Some(softtdx::pages::AcceptFault::UnknownStatus));
    println!("tdx-unikernel: allocating a frame above 4 GiB with an unknown accept status armed");
    let frame = crate::mm::frames::allocate(4096, 4096, 1 << 32);
    panic!("the allocation returned {frame:x?} despite the failing accept")
}
