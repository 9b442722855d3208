//! softtdx: a software model of the TDX module, so the whole #VE path runs under plain QEMU.
//!
//! Two facts of QEMU TCG make the model possible: the TDCALL opcode (66 0F 01 CC) raises #UD,
//! and RFLAGS.TF single-steps. With the model on, the kernel single-steps itself:
//!
//! - The model's *CPU* runs before each instruction resumes ([`before_resume`], reached from the
//!   single-step #DB and after every other handled exception). It decodes the instruction at
//!   RIP. Instructions that a TD does not execute natively get VE info recorded in VMX format
//!   and a #VE delivered through IDT vector 20 exactly as the CPU would: port I/O, and every
//!   instruction the classification table (`td-rules`) sends to #VE for the module version and
//!   TD the model plays ([`strict`]: HLT, WBINVD, INVD, VMCALL, MWAIT/MONITOR, CPUID leaves and
//!   subleaves, RDMSR/WRMSR per MSR, MOV to CR0/CR4 by value); those the table sends to #GP or
//!   #UD get that exception through its gate instead ([`gate::deliver_fault`]). RSP
//!   aligned down to 16, SS, RSP, RFLAGS, CS, RIP pushed, no error code, IF cleared, and a jump
//!   to the handler address held by the IDT gate ([`deliver_ve`]). One deliberate difference:
//!   TF stays set until the handler's TDG.VP.VEINFO.GET, so the model sees every instruction
//!   the handler runs before it (one that raises #VE there is a #DF on hardware). CPUID leaves 0
//!   and 0x21 are answered the way the TDX module answers them, so the kernel detects a TD
//!   through its ordinary path.
//! - The model's *TDX module* is the #UD handler for TDCALL ([`handle_invalid_opcode`]): it
//!   answers TDG.VP.INFO, TDG.VP.VEINFO.GET (once per #VE, like the real one) and
//!   TDG.VP.VMCALL, for which [`vmm`] plays the host VMM.
//!
//! Everything from IDT vector 20 onwards (handler, TDCALL wrappers, register updates, RIP
//! advance) is the code that runs in a real TD. The model is active only when the boot flags ask
//! for it and CPUID says the CPU is *not* a real TD.

mod attest;
pub mod device;
mod gate;
mod host;
pub mod mmio;
pub mod pages;
pub mod quote;
mod strict;
mod vmm;

use crate::arch::frame::TrapFrame;
use crate::arch::rflags;
use crate::bootflags::{FatalScenario, NmiPoint};
use crate::memory;
use core::arch::x86_64::__cpuid_count;
use core::sync::atomic::{AtomicBool, Ordering};
use spin::Mutex;
use tdx_ve::abi::{ExitReason, TdxStatus, VeInfo};

pub use vmm::HostFault;

/// TDX module completion statuses the model returns.
const TDX_SUCCESS: u64 = TdxStatus::SUCCESS;
const TDX_OPERAND_INVALID: u64 = TdxStatus::OPERAND_INVALID;
const TDX_NO_VALID_VE_INFO: u64 = TdxStatus::NO_VALID_VE_INFO;

const TDCALL_BYTES: [u8; 4] = [0x66, 0x0F, 0x01, 0xCC];
const MAX_INSTRUCTION_LENGTH: usize = 15;

/// The values the model's TDG.VP.INFO reports: a 1-vCPU TD with a 48-bit GPA width and, unless
/// the boot mode chooses other attributes (`softtdx attributes=0x...`), SEPT_VE_DISABLE set, as
/// QEMU sets it by default.
const MODEL_GPAW: u64 = 48;
const MODEL_ATTRIBUTES: u64 = tdx_ve::abi::TdAttributes::SEPT_VE_DISABLE;

/// An exit reason no handler knows, for the `unknown-exit-reason` scenario.
const UNKNOWN_EXIT_REASON: u32 = 0xFFFF;

static ACTIVE: AtomicBool = AtomicBool::new(false);

/// Exact instruction counts for `cargo xtask bench`: single-step traps counted in a window.
///
/// A window opens at the single-step trap whose RIP is `start` (the first instruction of a
/// function, or of the vector-20 stub) and closes at the first trap whose RSP lies above the
/// RSP it opened with (the function's `ret`, or the stub's `iretq`, has run). Every trap in
/// between is one instruction executed; a TDCALL, which faults (#UD) instead of completing and
/// trapping, is counted once when the model answers it. Nothing of the model's own handlers is
/// counted: they run with TF clear. Windows reopen at the next arrival at `start`.
mod counting {
    use core::sync::atomic::{AtomicU64, Ordering::Relaxed};

    static START: AtomicU64 = AtomicU64::new(0);
    static OPEN_RSP: AtomicU64 = AtomicU64::new(0);
    static PAUSED_RSP: AtomicU64 = AtomicU64::new(0);
    static INSTRUCTIONS: AtomicU64 = AtomicU64::new(0);
    static WINDOWS: AtomicU64 = AtomicU64::new(0);

    pub fn armed() -> bool {
        START.load(Relaxed) != 0
    }

    /// A single-step trap: the instruction before `rip` has completed.
    ///
    /// The model's resume hook, which the trap path calls before every return (so also inside
    /// a counted #VE handler), is not what a TD runs: from the trap at its entry (after the
    /// `call`) to the trap after its `ret`, nothing is counted. In a TD the trap path loads the
    /// empty hook slot, tests it and branches past the `call`; those three instructions are
    /// counted here too, the `call` itself is not.
    pub fn step(rip: u64, rsp: u64) {
        let start = START.load(Relaxed);
        if start == 0 {
            return;
        }
        let open_rsp = OPEN_RSP.load(Relaxed);
        let paused_rsp = PAUSED_RSP.load(Relaxed);
        if open_rsp != 0 && paused_rsp != 0 {
            if rsp > paused_rsp {
                PAUSED_RSP.store(0, Relaxed);
            }
            return;
        }
        if open_rsp != 0 && rip == super::before_resume as *const () as u64 {
            PAUSED_RSP.store(rsp, Relaxed);
            return;
        }
        if open_rsp != 0 {
            INSTRUCTIONS.fetch_add(1, Relaxed);
            if rsp > open_rsp {
                OPEN_RSP.store(0, Relaxed);
                WINDOWS.fetch_add(1, Relaxed);
            }
        }
        if OPEN_RSP.load(Relaxed) == 0 && rip == start {
            OPEN_RSP.store(rsp, Relaxed);
        }
    }

    /// The model answered a TDCALL: one instruction, if a window is open.
    pub fn tdcall() {
        if START.load(Relaxed) != 0 && OPEN_RSP.load(Relaxed) != 0 {
            INSTRUCTIONS.fetch_add(1, Relaxed);
        }
    }

    pub fn arm(start: u64) {
        INSTRUCTIONS.store(0, Relaxed);
        WINDOWS.store(0, Relaxed);
        OPEN_RSP.store(0, Relaxed);
        PAUSED_RSP.store(0, Relaxed);
        START.store(start, Relaxed);
    }

    /// Disarms; returns the instructions of every closed window and how many closed.
    pub fn disarm() -> (u64, u64) {
        START.store(0, Relaxed);
        OPEN_RSP.store(0, Relaxed);
        (INSTRUCTIONS.load(Relaxed), WINDOWS.load(Relaxed))
    }
}

/// Runs `f` single-stepped and counts, exactly, the instructions executed from each arrival at
/// `start` until the code there returns (see [`counting`]): returns (instructions, windows).
/// Bench only; while armed, delivered #VE handlers are single-stepped to their `iretq`.
pub fn count_instructions<R>(start: u64, f: impl FnOnce() -> R) -> (R, u64, u64) {
    counting::arm(start);
    let result = f();
    let (instructions, windows) = counting::disarm();
    (result, instructions, windows)
}

struct Model {
    /// VE info recorded at #VE delivery and not yet read by TDG.VP.VEINFO.GET.
    pending_ve: Option<VeInfo>,
    /// The fatal fault this boot injects, consumed when it fires.
    scenario: Option<FatalScenario>,
    /// The TD attributes TDG.VP.INFO reports.
    attributes: u64,
    /// A non-fatal host fault armed by a self-test check for the next hypercall.
    host_fault: Option<HostFault>,
    /// Single-step the #VE handler until its TDG.VP.VEINFO.GET, so that anything it does
    /// before that which would raise #VE (a #DF on real hardware) is caught. Off for benches.
    check_ve_ordering: bool,
    /// Let every instruction run natively while still single-stepping (differential checks).
    passthrough: bool,
    /// The last RIP the model looked at, and a RIP whose successor the caller wants to know.
    last_inspected: u64,
    watch: Option<u64>,
    resumed_at: Option<u64>,
    /// The RIP of the instruction whose #VE has been delivered and whose handler has not
    /// returned yet.
    ve_in_flight: Option<u64>,
    /// RFLAGS.IF of the context whose HLT raised the #VE in flight, for the VMM's check of
    /// Instruction.HLT's interrupt-blocked flag.
    halted_if: Option<bool>,
    /// #VEs delivered inside the handler of the #VE in flight and not yet returned from.
    nested_ves: u32,
    /// Private memory: page states, TDG.MEM.PAGE.ACCEPT ([`pages`]).
    pages: pages::Pages,
    /// Where the model injects NMIs (boot mode `softtdx nmi=...`).
    nmi_point: Option<NmiPoint>,
    /// An NMI is to be delivered at the next instruction boundary the model sees.
    nmi_due: bool,
}

static MODEL: Mutex<Model> = Mutex::new(Model {
    pending_ve: None,
    scenario: None,
    attributes: MODEL_ATTRIBUTES,
    host_fault: None,
    check_ve_ordering: true,
    passthrough: false,
    last_inspected: 0,
    watch: None,
    resumed_at: None,
    ve_in_flight: None,
    halted_if: None,
    nested_ves: 0,
    pages: pages::Pages::new(),
    nmi_point: None,
    nmi_due: false,
});

/// An NMI the model delivered has not returned yet (its handler's resume hook clears it). An
/// atomic, not model state: NMIs from outside the model may land while the model's lock is
/// held.
static NMI_IN_FLIGHT: AtomicBool = AtomicBool::new(false);

/// The model's state. The lock is only ever held inside the model's own handlers; finding it
/// held means an exception hit the model itself, which cannot recover, so it stops the machine
/// with a message instead of spinning silently.
fn model() -> spin::MutexGuard<'static, Model> {
    match MODEL.try_lock() {
        Some(guard) => guard,
        None => host::host_stop(
            "FATAL softtdx: the model was re-entered (an exception inside the model)",
        ),
    }
}

pub fn is_active() -> bool {
    ACTIVE.load(Ordering::Relaxed)
}

/// Switches the model on and starts single-stepping the caller.
pub fn enable(
    scenario: Option<FatalScenario>,
    attributes: Option<u64>,
) -> Result<(), &'static str> {
    if crate::tdx::detect() {
        return Err("this is a real TD: the model must not stand in for the TDX module");
    }
    mmio::check_phys_bits()?;
    model().scenario = scenario;
    model().attributes = attributes.unwrap_or(MODEL_ATTRIBUTES);
    use crate::arch::{idt::vector, trap};
    trap::register(vector::DEBUG, handle_debug);
    trap::register(vector::INVALID_OPCODE, handle_invalid_opcode);
    trap::register(vector::PAGE_FAULT, handle_page_fault);
    trap::set_resume_hook(before_resume);
    ACTIVE.store(true, Ordering::SeqCst);
    // Every #DB from here on is acknowledged by `handle_debug`.
    crate::arch::set_single_step();
    Ok(())
}

/// Runs `f` on the model's state from ordinary (single-stepped) code. Stepping is off while
/// the lock is held: otherwise the next single-step trap would find the model locked.
fn with_model<R>(f: impl FnOnce(&mut Model) -> R) -> R {
    crate::arch::without_single_step(|| f(&mut model()))
}

/// Arms the fatal fault this boot injects (see [`FatalScenario`]).
pub fn arm_scenario(scenario: Option<FatalScenario>) {
    // VMM misbehaviours, not #VE-handler faults: armed in the MMIO model for the boot.
    match scenario {
        Some(FatalScenario::VirtioUsedIndex) => {
            return mmio::arm(Some(mmio::HostMmioFault::VirtioUsedIndex))
        }
        Some(FatalScenario::VirtioUsedLength) => {
            return mmio::arm(Some(mmio::HostMmioFault::VirtioUsedLength))
        }
        _ => {}
    }
    with_model(|m| m.scenario = scenario);
}

/// Arms NMI injection (boot mode `softtdx nmi=<point>`, see [`NmiPoint`]).
pub fn set_nmi_point(point: Option<NmiPoint>) {
    with_model(|m| m.nmi_point = point);
}

/// Switches the #VE-ordering check (see `Model::check_ve_ordering`) on or off.
pub fn set_ve_ordering_check(on: bool) {
    with_model(|m| m.check_ve_ordering = on);
}

/// Runs `f` single-stepped but with every instruction executing natively, and returns the
/// RIP execution resumed at after the instruction at `watch` (if it ran), as the single-step
/// trap reported it.
pub fn run_passthrough<R>(watch: u64, f: impl FnOnce() -> R) -> (R, Option<u64>) {
    arm_watch(watch);
    with_model(|m| m.passthrough = true);
    let result = f();
    with_model(|m| m.passthrough = false);
    (result, take_resumed_at())
}

/// Asks the model to note where execution resumes after the instruction at `rip`.
pub fn arm_watch(rip: u64) {
    with_model(|m| {
        m.watch = Some(rip);
        m.resumed_at = None;
    });
}

/// Where execution resumed after the watched instruction, once it has run.
pub fn take_resumed_at() -> Option<u64> {
    with_model(|m| {
        m.watch = None;
        m.resumed_at.take()
    })
}

/// Arms a non-fatal host misbehaviour for the next hypercall of the kind it targets.
pub fn inject(fault: HostFault) {
    with_model(|m| m.host_fault = Some(fault));
}

/// Disarms an injected fault; true if it had fired.
pub fn clear_injection() -> bool {
    with_model(|m| m.host_fault.take().is_none())
}

/// #DB: acknowledges a single-step trap. The instruction at RIP is looked at by
/// [`before_resume`], which the dispatcher calls next.
fn handle_debug(frame: &mut TrapFrame) -> bool {
    if !is_active() {
        return false;
    }
    const DR6_SINGLE_STEP: u64 = 1 << 14;
    const DR6_CLEAR: u64 = 0xFFFF_0FF0;
    let dr6: u64;
    // SAFETY: reading and resetting DR6 in ring 0 has no effect beyond the debug status.
    unsafe {
        core::arch::asm!("mov {}, dr6", out(reg) dr6, options(nomem, nostack));
        core::arch::asm!("mov dr6, {}", in(reg) DR6_CLEAR, options(nomem, nostack));
    }
    let single_step = dr6 & DR6_SINGLE_STEP != 0;
    if single_step {
        // The instruction a shared-RAM leaf was unshared for has run.
        mmio::restore_swapped();
        counting::step(frame.rip, frame.rsp);
    }
    single_step
}

/// #PF: the model's hooks on memory accesses (its EPT for shared mappings, [`mmio`]:
/// reserved-bit faults; then an access to a pending page, [`pages`]); any other page fault is
/// not the model's.
fn handle_page_fault(frame: &mut TrapFrame) -> bool {
    is_active() && (mmio::page_fault(frame) || pages::page_fault(frame))
}

/// #UD: if the faulting instruction is TDCALL, answers it as the TDX module would.
fn handle_invalid_opcode(frame: &mut TrapFrame) -> bool {
    if !is_active() || !fetch(frame.rip).0.starts_with(&TDCALL_BYTES) {
        return false;
    }
    counting::tdcall();
    tdx_module(frame);
    frame.rip += TDCALL_BYTES.len() as u64;
    true
}

/// Reads up to 15 bytes at `rip`, stopping at an unmapped page: one page-table walk for the
/// page of `rip`, and one more only when the 15 bytes reach into the next page.
fn fetch(rip: u64) -> ([u8; MAX_INSTRUCTION_LENGTH], usize) {
    const PAGE_SIZE: u64 = 4096;
    let mut bytes = [0u8; MAX_INSTRUCTION_LENGTH];
    let in_first_page = (PAGE_SIZE - rip % PAGE_SIZE).min(MAX_INSTRUCTION_LENGTH as u64);
    let mut len = 0;
    if memory::check_access(rip, in_first_page, false).is_ok() {
        len = in_first_page as usize;
        if len < MAX_INSTRUCTION_LENGTH
            && memory::check_access(rip + in_first_page, 1, false).is_ok()
        {
            len = MAX_INSTRUCTION_LENGTH;
        }
    }
    // SAFETY: `len` bytes from `rip` are mapped (checked above) and code is not modified while
    // it runs.
    unsafe { core::ptr::copy_nonoverlapping(rip as *const u8, bytes.as_mut_ptr(), len) };
    (bytes, len)
}

/// The model's CPU: looks at the instruction about to run and either lets it run natively,
/// answers it as the TDX module would (CPUID 0 and 0x21), or delivers #VE for it.
extern "sysv64" fn before_resume(frame: &mut TrapFrame) {
    // Inside a #VE handler whose instructions the bench is counting, this hook itself runs
    // single-stepped: it must not hold the model's lock when the next step trap arrives.
    crate::arch::without_single_step(|| resume(frame));
}

fn resume(frame: &mut TrapFrame) {
    if !is_active() {
        return;
    }
    if frame.vector == crate::arch::idt::vector::NMI && !NMI_IN_FLIGHT.swap(false, Ordering::SeqCst)
    {
        // An NMI the model did not deliver (from outside). The CPU takes an NMI at an
        // instruction boundary after the single-step trap of the instruction before (SDM Vol.
        // 3A 6.9, priority 4 before 5), so the model has already decided about the instruction
        // at RIP: deciding again would deliver its #VE twice.
        return;
    }
    // An NMI the model delivered (`deliver_nmi`) returns to the instruction it was delivered
    // before, which the model has not decided about yet: it does so below, as after a step.
    if frame.vector == crate::arch::idt::vector::VIRTUALIZATION {
        // The #VE handler is returning to the interrupted context.
        let mut model = model();
        // The TDX module set RF in the #VE frame (tdx_inject_ve); a handler that completed the
        // instruction and advanced RIP must clear it, or the instruction after it runs with
        // its instruction breakpoints suppressed (SDM Vol. 3B 18.3.1.1). Every #VE this kernel
        // handles advances RIP, nested ones included; only a fatal path does not return.
        let advanced = model.nested_ves > 0 || model.ve_in_flight.is_some_and(|f| f != frame.rip);
        if advanced && frame.rflags & rflags::RF != 0 {
            drop(model);
            let message = crate::fixed_format!(
                160,
                "FATAL softtdx: the #VE handler advanced RIP to {:#x} and returned with RFLAGS.RF \
                 still set (RF left set after an emulated instruction)",
                frame.rip
            );
            host::host_stop(message.as_str());
        }
        if model.nested_ves > 0 {
            // A nested #VE's handler returns into the outer handler.
            model.nested_ves -= 1;
        } else if let Some(from) = model.ve_in_flight.take() {
            model.halted_if = None;
            if model.watch == Some(from) {
                model.resumed_at = Some(frame.rip);
                model.watch = None;
            }
        }
    }
    if frame.vector == gate::UD_VECTOR && take_nmi_due() {
        return deliver_nmi(frame);
    }
    if frame.rflags & rflags::TF == 0 {
        return;
    }
    loop {
        {
            let mut model = model();
            // While the handler of a delivered #VE runs single-stepped (up to its VEINFO.GET),
            // its instructions are checked but are not the interrupted program's.
            if model.ve_in_flight.is_none() {
                // A REP string instruction traps after each iteration with RIP unchanged:
                // execution has moved on only when RIP differs.
                if model.watch.is_some()
                    && model.watch == Some(model.last_inspected)
                    && frame.rip != model.last_inspected
                {
                    model.resumed_at = Some(frame.rip);
                    model.watch = None;
                }
                model.last_inspected = frame.rip;
                if model.passthrough {
                    return;
                }
            }
        }
        let (bytes, len) = fetch(frame.rip);
        match strict::decide(&bytes[..len], frame) {
            strict::Decision::NotHere | strict::Decision::Native => return,
            strict::Decision::ModuleCpuid { length } => {
                let leaf = frame.rax as u32;
                let subleaf = frame.rcx as u32;
                if leaf == 0 || leaf == 0x21 {
                    // Answered as the module answers them (td-rules: SRC_CPUID_0, SRC_CPUID_21),
                    // so TD detection takes its ordinary path; other leaves run natively.
                    let [a, b, c, d] = tdx_module_cpuid(leaf, subleaf);
                    frame.rax = a as u64;
                    frame.rbx = b as u64;
                    frame.rcx = c as u64;
                    frame.rdx = d as u64;
                    frame.rip += length as u64;
                    continue;
                }
                return;
            }
            strict::Decision::Ve { exit_reason, qualification, instruction_info, length } => {
                let info = VeInfo {
                    exit_reason: u32::from(exit_reason),
                    exit_qualification: qualification,
                    guest_linear_address: 0,
                    guest_physical_address: 0,
                    instruction_length: u32::from(length),
                    instruction_info,
                };
                return deliver_ve(frame, info);
            }
            strict::Decision::Gp => return gate::deliver_fault(frame, gate::GP_VECTOR, Some(0)),
            strict::Decision::Ud => return gate::deliver_fault(frame, gate::UD_VECTOR, None),
        }
    }
}

/// Whether an injected NMI is due at this boundary (set by a successful TDG.VP.VEINFO.GET,
/// whose TDCALL's #UD is returning); consumes it.
fn take_nmi_due() -> bool {
    let mut model = model();
    core::mem::take(&mut model.nmi_due)
}

/// Redirects `frame` so that its `iretq` delivers an NMI through IDT gate 2 as the CPU does
/// (SDM Vol. 3A 6.14; the same gate checks as for #VE, `tdx_ve::delivery`): the handler's
/// address and IST stack from the gate, RSP aligned, SS/RSP/RFLAGS/CS/RIP pushed with the
/// interrupted RFLAGS, then TF, NT, RF and (interrupt gate) IF clear in the handler. The NMI's
/// `iretq` returns to the instruction at RIP, which the model decides about then (see `resume`).
fn deliver_nmi(frame: &mut TrapFrame) {
    let Some(clears_if) =
        gate::deliver_through_gate(frame, crate::arch::idt::vector::NMI as u8, frame.rflags)
    else {
        return;
    };
    NMI_IN_FLIGHT.store(true, Ordering::SeqCst);
    const NT: u64 = 1 << 14;
    frame.rflags &= !(NT | rflags::RF | rflags::TF);
    if clears_if {
        frame.rflags &= !rflags::IF;
    }
}

/// CPUID as the TDX module answers it without a #VE: leaf 0 reports at least 0x21, and leaf
/// 0x21 subleaf 0 carries the "IntelTDX    " vendor string in EBX, EDX, ECX.
fn tdx_module_cpuid(leaf: u32, subleaf: u32) -> [u32; 4] {
    match (leaf, subleaf) {
        (0x21, 0) => [
            0,
            u32::from_le_bytes(*b"Inte"),
            u32::from_le_bytes(*b"    "),
            u32::from_le_bytes(*b"lTDX"),
        ],
        (0x21, _) => [0; 4],
        _ => {
            let r = __cpuid_count(leaf, subleaf);
            let eax = if leaf == 0 { r.eax.max(0x21) } else { r.eax };
            [eax, r.ebx, r.ecx, r.edx]
        }
    }
}

/// Records `info` and redirects `frame` so that its `iretq` delivers #VE through gate 20.
fn deliver_ve(frame: &mut TrapFrame, mut info: VeInfo) {
    let mut model = model();
    if model.scenario == Some(FatalScenario::UnknownExitReason) {
        model.scenario = None;
        info.exit_reason = UNKNOWN_EXIT_REASON;
    }
    const QUALIFICATION_STRING: u64 = 1 << 4;
    const QUALIFICATION_REP: u64 = 1 << 5;
    if model.scenario == Some(FatalScenario::MismatchedQualification)
        && info.exit_reason == ExitReason::Io as u32
        && info.exit_qualification & QUALIFICATION_STRING != 0
    {
        model.scenario = None;
        info.exit_qualification ^= QUALIFICATION_REP;
    }
    if model.pending_ve.is_some() {
        // A #VE while VE info is still valid is a #DF on real hardware: the guest handler
        // touched something that raises #VE before it called TDG.VP.VEINFO.GET.
        drop(model);
        let message = crate::fixed_format!(
            128,
            "FATAL softtdx: #VE (exit reason {}) while the previous VE info was unread \
             (a #DF on real hardware)",
            info.exit_reason
        );
        host::host_stop(message.as_str());
    }
    model.pending_ve = Some(info);
    if model.ve_in_flight.is_some() {
        // A #VE inside the #VE handler after its VEINFO.GET: delivered like any other (the
        // module allows it once VE info was read, README 6), and handled by a nested handler.
        model.nested_ves += 1;
    } else {
        model.halted_if =
            (info.exit_reason == ExitReason::Hlt as u32).then_some(frame.rflags & rflags::IF != 0);
        model.ve_in_flight = Some(frame.rip);
    }
    let keep_stepping = model.check_ve_ordering || counting::armed();
    drop(model);
    // The TDX module sets RFLAGS.RF in the guest when it injects #VE (td_other_exits.c
    // tdx_inject_ve, README 6), so the frame the CPU pushes has RF set.
    let pushed_rflags = frame.rflags | rflags::RF;
    // A gate the CPU cannot use gets #GP or #NP instead (VE info stays valid).
    let vector = crate::arch::idt::vector::VIRTUALIZATION as u8;
    let Some(clears_if) = gate::deliver_through_gate(frame, vector, pushed_rflags) else {
        return;
    };
    // The CPU clears TF, NT and RF when it delivers an exception, and IF through an interrupt
    // gate (not a trap gate). The model keeps TF on until the handler's TDG.VP.VEINFO.GET (see
    // `tdx_module`), so that it sees every instruction the handler runs before it: one that
    // raises #VE there is a #DF on real hardware. The CS the gate names is not loaded (the
    // trampoline jumps within the current one); the gate check requires a 64-bit ring-0 code
    // segment, so only a second such selector would differ.
    const NT: u64 = 1 << 14;
    frame.rflags &= !(NT | rflags::RF);
    if clears_if {
        frame.rflags &= !rflags::IF;
    }
    if !keep_stepping {
        frame.rflags &= !rflags::TF;
    }
}

/// The model's answer to one TDCALL, by leaf in RAX.
fn tdx_module(frame: &mut TrapFrame) {
    let mut model = model();
    match frame.rax {
        // TDG.VP.INFO
        1 => {
            frame.rax = TDX_SUCCESS;
            frame.rcx = MODEL_GPAW;
            frame.rdx = model.attributes;
            frame.r8 = (1 << 32) | 1;
            frame.r9 = 0;
            frame.r10 = 0;
            frame.r11 = 0;
        }
        // TDG.MR.RTMR.EXTEND, TDG.MR.REPORT
        2 => attest::rtmr_extend(frame),
        4 => attest::mr_report(frame, model.attributes),
        // TDG.VP.VEINFO.GET
        3 => {
            // The module clears the outputs first, so a failing call returns them as 0
            // (tdg_vp_veinfo_get.c L36-75, README 5).
            frame.rcx = 0;
            frame.rdx = 0;
            frame.r8 = 0;
            frame.r9 = 0;
            frame.r10 = 0;
            if model.scenario == Some(FatalScenario::VeinfoGetFailure) && model.pending_ve.is_some()
            {
                model.scenario = None;
                frame.rax = TDX_NO_VALID_VE_INFO;
                return;
            }
            match model.pending_ve.take() {
                Some(ve) => {
                    let out = ve.to_outputs();
                    // The model keeps watching the handler after it (as it watched it before),
                    // so that a #VE-class instruction there gets its nested #VE instead of
                    // running natively; without the ordering check (benches) the handler runs
                    // as the CPU delivered it, unstepped, unless the bench counts it.
                    if !model.check_ve_ordering && !counting::armed() {
                        frame.rflags &= !rflags::TF;
                    }
                    // NMIs are no longer blocked once the VE info is read (the module defers
                    // them only while it is valid): inject one at the next boundary, inside
                    // the handler, if the boot mode asks for it.
                    if model.nmi_point == Some(NmiPoint::AfterVeinfo) {
                        model.nmi_due = true;
                    }
                    frame.rax = TDX_SUCCESS;
                    frame.rcx = out.rcx;
                    frame.rdx = out.rdx;
                    frame.r8 = out.r8;
                    frame.r9 = out.r9;
                    frame.r10 = out.r10;
                }
                None => frame.rax = TDX_NO_VALID_VE_INFO,
            }
        }
        // TDG.VP.VMCALL
        0 => {
            // The fatal scenarios are about the #VE handler: they fire on its hypercalls, not on
            // those the console makes directly.
            let in_ve_handler = model.ve_in_flight.is_some();
            if in_ve_handler && model.scenario == Some(FatalScenario::TdcallFailure) {
                model.scenario = None;
                frame.rax = TDX_OPERAND_INVALID;
                return;
            }
            let bitmap = frame.rcx;
            if !tdx_ve::abi::vmcall_bitmap_is_allowed(bitmap) {
                frame.rax = TDX_OPERAND_INVALID;
                return;
            }
            let model = &mut *model;
            let mut no_scenario = None;
            let scenario = if in_ve_handler { &mut model.scenario } else { &mut no_scenario };
            // Instruction.HLT's interrupt-blocked flag (R12) must say what IF said where the
            // vCPU halts: the HLT that raised the #VE in flight, or the caller of a direct
            // Instruction.HLT (the exit path's park).
            let halted_if =
                if in_ve_handler { model.halted_if } else { Some(frame.rflags & rflags::IF != 0) };
            vmm::vmcall(
                frame,
                bitmap,
                scenario,
                &mut model.host_fault,
                halted_if,
                in_ve_handler,
                &mut model.pages,
            );
            frame.rax = TDX_SUCCESS;
        }
        // TDG.MEM.PAGE.ACCEPT
        6 => frame.rax = pages::accept(&mut model.pages, frame.rcx, MODEL_GPAW),
        _ => frame.rax = TDX_OPERAND_INVALID,
    }
}
