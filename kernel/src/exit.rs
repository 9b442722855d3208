//! Leaving the kernel through QEMU's isa-debug-exit device (port 0xf4, 4 bytes wide).
//!
//! QEMU exits with status `(value << 1) | 1`: 0x10 gives 33 (pass), 0x11 gives 35 (fail). The
//! harness treats every other status as a failure.

use tdx_ve::io::PortWidth;

pub const ISA_DEBUG_EXIT_PORT: u16 = 0xf4;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum ExitCode {
    Success = 0x10,
    Failure = 0x11,
}

/// Stops the machine with `code`. Never returns; if the exit device is missing it says so and
/// spins with interrupts off.
pub fn exit(code: ExitCode) -> ! {
    // SAFETY: the exit device stops the machine, which is the point; it touches no memory.
    unsafe { crate::port::raw_out(ISA_DEBUG_EXIT_PORT, PortWidth::Dword, code as u32) };
    use core::fmt::Write;
    let _ = writeln!(
        crate::console::EmergencyWriter,
        "tdx-unikernel: no isa-debug-exit device at {ISA_DEBUG_EXIT_PORT:#x}; stopping here ({code:?})"
    );
    loop {
        x86_64::instructions::interrupts::disable();
        core::hint::spin_loop();
    }
}
