//! The machine under the model: the host's own port accesses (native, in ring 0, never through
//! the guest's #VE path), its console, and stopping or halting the machine as QEMU does when a
//! TD cannot continue. The VMM (`super::vmm`) and every part of the model that must stop the
//! machine use it; it uses none of them.

use crate::port;
use core::fmt::Write;
use tdx_ve::io::PortWidth;

/// The host's own console: COM1 with native port I/O, for messages the model prints as the
/// host, which must not go back through the guest's #VE path.
pub use crate::console::NativeConsole as HostConsole;

pub fn host_in(port: u16, width: PortWidth) -> u64 {
    // SAFETY: the host performs the guest's requested port read; port 0xCF9 is refused before
    // this point and no port this kernel's devices use has memory side effects.
    unsafe {
        match width {
            PortWidth::Byte => port::inb(port) as u64,
            PortWidth::Word => port::inw(port) as u64,
            PortWidth::Dword => port::inl(port) as u64,
        }
    }
}

pub fn host_out(port: u16, width: PortWidth, value: u64) {
    // SAFETY: as for `host_in`.
    unsafe {
        match width {
            PortWidth::Byte => port::outb(port, value as u8),
            PortWidth::Word => port::outw(port, value as u16),
            PortWidth::Dword => port::outl(port, value as u32),
        }
    }
}

/// Stops the machine as QEMU does when a TD cannot continue: message, then the failure exit.
/// Without an isa-debug-exit device the VMM halts the machine instead ([`host_halt`]).
pub fn host_stop(message: &str) -> ! {
    let _ = writeln!(HostConsole, "\n{message}");
    // A folded boot goes on with its next segment (kernel/src/fold.rs).
    crate::fold::end_segment(crate::exit::ExitCode::Failure as u32);
    host_out(
        crate::exit::ISA_DEBUG_EXIT_PORT,
        PortWidth::Dword,
        crate::exit::ExitCode::Failure as u64,
    );
    host_halt("no isa-debug-exit device to stop it after a fatal error")
}

/// What the model prints when it halts the machine for good; the harness stops QEMU at this
/// line (xtask/src/qemu.rs) and judges the run from the serial output before it.
pub const HALTED: &str = "softtdx: host: machine halted: ";

/// The VMM keeps the vCPU halted for good: says why, then `cli; hlt` natively (QEMU idles).
pub fn host_halt(why: &str) -> ! {
    let _ = writeln!(HostConsole, "{HALTED}{why}");
    loop {
        // SAFETY: halting with interrupts off stops this vCPU, which is the point.
        unsafe { core::arch::asm!("cli", "hlt", options(nomem, nostack)) };
    }
}
