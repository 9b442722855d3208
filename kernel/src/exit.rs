//! Leaving the kernel: through QEMU's isa-debug-exit device (port 0xf4, 4 bytes wide) where
//! there is one, else by parking the vCPU.
//!
//! QEMU exits with status `(value << 1) | 1`: 0x10 gives 33 (pass), 0x11 gives 35 (fail). The
//! harness treats every other status as a failure.
//!
//! A production TD has no isa-debug-exit device: the write to 0xf4 is dropped (the hypercall
//! succeeds, or the port reads as absent) and execution continues past it, which is how the
//! device's absence is detected. The vCPU is then parked: in a TD with
//! TDG.VP.VMCALL<Instruction.HLT> and interrupts blocked (R12 = 1, GHCI 1.5, 3.8: the VMM keeps
//! the vCPU halted instead of waking it for an interrupt), in a loop, because an NMI still wakes
//! it; outside a TD with `cli; hlt`, likewise in a loop. Neither burns a host core, as a `pause`
//! loop would.

use tdx_ve::io::PortWidth;

pub const ISA_DEBUG_EXIT_PORT: u16 = 0xf4;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum ExitCode {
    Success = 0x10,
    Failure = 0x11,
}

/// Stops the machine with `code`. Never returns; if the exit device is missing it says so and
/// parks the vCPU.
pub fn exit(code: ExitCode) -> ! {
    x86_64::instructions::interrupts::disable();
    // A folded boot goes on with its next segment (kernel/src/fold.rs).
    #[cfg(feature = "test-modes")]
    crate::fold::end_segment(code as u32);
    // SAFETY: the exit device stops the machine, which is the point; it touches no memory.
    unsafe { crate::port::raw_out(ISA_DEBUG_EXIT_PORT, PortWidth::Dword, code as u32) };
    use core::fmt::Write;
    let how = if crate::tdx::is_td() {
        "TDG.VP.VMCALL<Instruction.HLT> with interrupts blocked"
    } else {
        "cli; hlt"
    };
    let _ = writeln!(
        crate::console::EmergencyWriter::new(),
        "tdx-unikernel: no isa-debug-exit device at {ISA_DEBUG_EXIT_PORT:#x}; parking the vCPU \
         ({how}) ({code:?})"
    );
    park()
}

/// Halts the vCPU for good with interrupts blocked (see the module documentation).
fn park() -> ! {
    loop {
        x86_64::instructions::interrupts::disable();
        if crate::tdx::is_td() {
            // Nothing is left to report if the host refuses: halt again.
            let _ = crate::tdx::vmcall::hlt(true);
        } else {
            x86_64::instructions::hlt();
        }
    }
}
