//! NMIs (vector 2): counted, and returned from.
//!
//! A host can inject an NMI into a TD at any time (KVM `tdx_inject_nmi`; `virsh inject-nmi`
//! and QMP `inject-nmi` are routine host actions), and natively the platform can raise one. The
//! kernel has nothing to do on an NMI but survive it, so the handler counts it (`nmi=` in the
//! COUNTERS line) and returns.
//!
//! An NMI can arrive between any two instructions the CPU does not keep it from, so the handler
//! must be safe wherever it lands:
//! - inside the #VE handler once TDG.VP.VEINFO.GET has run (the TDX module defers NMI injection
//!   while the VE info is valid, i.e. until then: tdx-module dispatcher and `td_nmi_exit`, as
//!   read in ../shared/tdx-module/README.md): it runs on its own IST
//!   stack (`gdt::IST_NMI`), so it never writes below the #VE handler's frame, and it changes no
//!   state the #VE handler uses;
//! - while the console lock, or any other lock, is held: it takes no lock;
//! - in a TD, anywhere: it does no port I/O, CPUID, MSR access or anything else that could raise
//!   #VE, and prints nothing (printing would need the console or port I/O).
//!
//! The only state it touches is one atomic counter. A second NMI stays blocked by the CPU until
//! this handler's IRETQ, and nothing in the handler can fault (which would unblock NMIs early
//! and let a nested NMI reuse the IST stack).

use super::frame::TrapFrame;
use super::idt::vector;
use super::trap;
use crate::counters;

/// Registers the NMI handler; runs once at boot, right after the IDT is loaded.
pub fn register() {
    trap::register(vector::NMI, handle);
}

fn handle(_frame: &mut TrapFrame) -> bool {
    counters::NMI.increment();
    true
}
