//! The model's host VMM: what answers TDG.VP.VMCALL under softtdx.
//!
//! It sees only the registers the guest exposed in the RCX bitmap, as a real VMM does; the
//! model's TDX module copies exactly those back, so registers that were not exposed are
//! preserved whatever the VMM does. Port accesses are performed for real, in ring 0, so device
//! behaviour is the machine's own. Faults a hostile or broken host could produce are injected
//! here: bad statuses (fatal scenarios), garbage above the access width in R11, and garbage in
//! every exposed register that is not an output.

use super::host::{host_halt, host_in, host_out, host_stop};
use crate::arch::frame::TrapFrame;
use crate::bootflags::FatalScenario;
use tdx_ve::abi::{TdVmCallStatus, TdVmCallSubFunction};
use tdx_ve::io::PortWidth;
use tdx_ve::regs::{Gpr, GuestRegisters, RegisterState};

/// Port 0xCF9 resets the machine: the model never touches it.
const RESET_CONTROL_PORT: u16 = 0xCF9;
/// What a misbehaving host writes into registers it should leave alone.
const GARBAGE: u64 = 0xDEAD_BEEF_BAD0_F00D;

/// Non-fatal host misbehaviour, armed by a self-test check for the next hypercall it targets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostFault {
    /// The next Instruction.IO read returns its data with bits set above the access width.
    InDataUpperGarbage,
    /// The next Instruction.IO writes garbage into every exposed register it does not return
    /// a result in (R12-R15, and R11 for a write).
    ClobberExposedInputs,
}

/// Handles one TDG.VP.VMCALL from `frame` with `bitmap` exposed.
// Kept out of line: td-audit attributes native instructions to this module by symbol.
#[inline(never)]
pub fn vmcall(
    frame: &mut TrapFrame,
    bitmap: u64,
    scenario: &mut Option<FatalScenario>,
    host_fault: &mut Option<HostFault>,
    halted_if: Option<bool>,
    from_ve_handler: bool,
    pages: &mut super::pages::Pages,
) {
    let exposed = |r: Gpr| bitmap & (1 << r as u64) != 0;
    let mut view = RegisterState::default();
    for r in Gpr::ALL.into_iter().filter(|&r| exposed(r)) {
        view.set_gpr(r, frame.gpr(r));
    }
    serve(&mut view, scenario, host_fault, halted_if, from_ve_handler, pages);
    for r in Gpr::ALL.into_iter().filter(|&r| exposed(r)) {
        frame.set_gpr(r, view.gpr(r));
    }
}

fn set_status(view: &mut RegisterState, status: TdVmCallStatus) {
    view.set_gpr(Gpr::R10, status.code());
}

fn serve(
    view: &mut RegisterState,
    scenario: &mut Option<FatalScenario>,
    host_fault: &mut Option<HostFault>,
    halted_if: Option<bool>,
    from_ve_handler: bool,
    pages: &mut super::pages::Pages,
) {
    if view.gpr(Gpr::R10) != 0 {
        // Only GHCI standard calls are modelled.
        return set_status(view, TdVmCallStatus::InvalidOperand);
    }
    let Ok(sub_function) = TdVmCallSubFunction::try_from(view.gpr(Gpr::R11)) else {
        return set_status(view, TdVmCallStatus::InvalidOperand);
    };
    match sub_function {
        TdVmCallSubFunction::Io => serve_io(view, scenario, host_fault),
        TdVmCallSubFunction::Hlt => {
            // R12 is the interrupt-blocked flag (GHCI 1.5, 3.8): a VMM decides from it whether
            // an interrupt may wake the vCPU. For a HLT that raised #VE it must say what the
            // halted context's RFLAGS.IF said; a wrong one hangs or wakes the TD wrongly.
            if let Some(interrupts_enabled) = halted_if {
                let blocked = view.gpr(Gpr::R12) != 0;
                if blocked == interrupts_enabled {
                    host_stop(if blocked {
                        "FATAL softtdx: Instruction.HLT says interrupts blocked (R12=1), but the \
                         halted context had IF=1"
                    } else {
                        "FATAL softtdx: Instruction.HLT says interrupts enabled (R12=0), but the \
                         halted context had IF=0"
                    });
                }
            }
            // A direct Instruction.HLT with interrupts blocked is the kernel parking its vCPU
            // at the end of a run without an exit device (kernel/src/exit.rs): only an NMI could
            // wake it (GHCI 1.5, 3.8), so the VMM keeps it halted, as KVM would.
            if !from_ve_handler && view.gpr(Gpr::R12) != 0 {
                host_halt(
                    "the TD parked its vCPU (TDG.VP.VMCALL<Instruction.HLT>, R12=1: interrupts \
                     blocked)",
                );
            }
            // A HLT that raised #VE (the self-test's tdx.hlt_ve): nothing can wake a halted
            // vCPU here (no interrupt sources are enabled), so the model returns at once, as if
            // an interrupt had arrived.
            set_status(view, TdVmCallStatus::Success)
        }
        TdVmCallSubFunction::Cpuid => {
            let r = core::arch::x86_64::__cpuid_count(
                view.gpr(Gpr::R12) as u32,
                view.gpr(Gpr::R13) as u32,
            );
            view.set_gpr(Gpr::R12, r.eax as u64);
            view.set_gpr(Gpr::R13, r.ebx as u64);
            view.set_gpr(Gpr::R14, r.ecx as u64);
            view.set_gpr(Gpr::R15, r.edx as u64);
            set_status(view, TdVmCallStatus::Success)
        }
        TdVmCallSubFunction::Rdmsr => {
            let msr = view.gpr(Gpr::R12) as u32;
            // The host serves only the MSRs the self-test sends it; on hardware an arbitrary
            // index could #GP inside the model. Others fail as a VMM may refuse them.
            if !host_serves_msr(msr, false) {
                return set_status(view, TdVmCallStatus::InvalidOperand);
            }
            // SAFETY: only the MSRs `host_serves_msr` lists reach here (IA32_APIC_BASE),
            // and reading them has no side effects.
            let value = unsafe { x86_64::registers::model_specific::Msr::new(msr).read() };
            view.set_gpr(Gpr::R11, value);
            set_status(view, TdVmCallStatus::Success)
        }
        TdVmCallSubFunction::Wrmsr => {
            let msr = view.gpr(Gpr::R12) as u32;
            let value = view.gpr(Gpr::R13);
            if !host_serves_msr(msr, true) {
                return set_status(view, TdVmCallStatus::InvalidOperand);
            }
            let mut register = x86_64::registers::model_specific::Msr::new(msr);
            // SAFETY: the self-test writes back the value it read (IA32_APIC_BASE, IA32_EFER),
            // so the write changes nothing.
            unsafe { register.write(value) };
            set_status(view, TdVmCallStatus::Success)
        }
        TdVmCallSubFunction::RequestMmio => super::mmio::request_mmio(view, pages),
        TdVmCallSubFunction::MapGpa => super::mmio::map_gpa(view, pages),
        TdVmCallSubFunction::GetQuote => super::quote::get_quote(view, pages),
        TdVmCallSubFunction::ReportFatalError if view.gpr(Gpr::R12) & 0xFFFF != 0 => {
            // QEMU (target/i386/kvm/tdx.c, tdx_handle_report_fatal_error) refuses codes with
            // any of bits 15:0 set; so does the model, so that such a guest is caught here.
            set_status(view, TdVmCallStatus::InvalidOperand)
        }
        TdVmCallSubFunction::ReportFatalError => {
            let mut message = [0u8; 64];
            let words =
                [Gpr::R14, Gpr::R15, Gpr::Rbx, Gpr::Rdi, Gpr::Rsi, Gpr::R8, Gpr::R9, Gpr::Rdx];
            for (i, r) in words.into_iter().enumerate() {
                message[i * 8..i * 8 + 8].copy_from_slice(&view.gpr(r).to_le_bytes());
            }
            let len = message.iter().position(|&b| b == 0).unwrap_or(message.len());
            let text = core::str::from_utf8(&message[..len]).unwrap_or("<not UTF-8>");
            let line = crate::fixed_format!(
                160,
                "softtdx: host: TD reported ReportFatalError code={:#x} message=\"{}\"",
                view.gpr(Gpr::R12),
                text
            );
            host_stop(line.as_str())
        }
        _ => set_status(view, TdVmCallStatus::InvalidOperand),
    }
}

fn serve_io(
    view: &mut RegisterState,
    scenario: &mut Option<FatalScenario>,
    host_fault: &mut Option<HostFault>,
) {
    let width = match view.gpr(Gpr::R12) {
        1 => PortWidth::Byte,
        2 => PortWidth::Word,
        4 => PortWidth::Dword,
        _ => return set_status(view, TdVmCallStatus::InvalidOperand),
    };
    let write = match view.gpr(Gpr::R13) {
        0 => false,
        1 => true,
        _ => return set_status(view, TdVmCallStatus::InvalidOperand),
    };
    let Ok(port) = u16::try_from(view.gpr(Gpr::R14)) else {
        return set_status(view, TdVmCallStatus::InvalidOperand);
    };
    if port == RESET_CONTROL_PORT {
        return set_status(view, TdVmCallStatus::InvalidOperand);
    }
    let injected = match (*scenario, write) {
        (Some(FatalScenario::IoInInvalidOperand), false)
        | (Some(FatalScenario::IoOutInvalidOperand), true) => Some(TdVmCallStatus::InvalidOperand),
        (Some(FatalScenario::IoInRetry), false) | (Some(FatalScenario::IoOutRetry), true) => {
            Some(TdVmCallStatus::Retry)
        }
        _ => None,
    };
    if let Some(status) = injected {
        *scenario = None;
        return set_status(view, status);
    }
    if write {
        let value = view.gpr(Gpr::R15);
        if value & !width.mask() != 0 {
            // A correct guest sends only the low `width` bytes; the model is strict so that a
            // guest that leaks upper bits is caught.
            return set_status(view, TdVmCallStatus::InvalidOperand);
        }
        host_out(port, width, super::device::port_write(port, width, value));
    } else {
        let mut data = super::device::port_read(port, width, host_in(port, width));
        if *host_fault == Some(HostFault::InDataUpperGarbage) {
            *host_fault = None;
            data |= GARBAGE & !width.mask();
        }
        view.set_gpr(Gpr::R11, data);
    }
    if *host_fault == Some(HostFault::ClobberExposedInputs) {
        *host_fault = None;
        for r in [Gpr::R12, Gpr::R13, Gpr::R14, Gpr::R15] {
            view.set_gpr(r, GARBAGE);
        }
        if write {
            view.set_gpr(Gpr::R11, GARBAGE);
        }
    }
    set_status(view, TdVmCallStatus::Success)
}

/// The MSR accesses this VMM performs for the guest: reads and writes of IA32_APIC_BASE, and
/// writes of IA32_EFER (the self-test writes back the value it read). Which MSR accesses reach
/// the VMM at all is the model's decision (`strict`, from td-rules); this is only the host's
/// own policy, as a real VMM has one.
fn host_serves_msr(msr: u32, write: bool) -> bool {
    const IA32_APIC_BASE: u32 = 0x1B;
    const IA32_EFER: u32 = 0xC000_0080;
    msr == IA32_APIC_BASE || (write && msr == IA32_EFER)
}
