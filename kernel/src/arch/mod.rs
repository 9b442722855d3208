//! x86_64 plumbing: descriptor tables, the trap entry path and the NMI handler.

pub mod frame;
pub mod gdt;
pub mod idt;
pub mod nmi;
pub mod paging;
pub mod trap;

/// RFLAGS bits used by the trap and emulation code (Intel SDM Vol. 1, 3.4.3).
pub mod rflags {
    /// Trap flag: single-step.
    pub const TF: u64 = 1 << 8;
    /// Interrupt enable flag.
    pub const IF: u64 = 1 << 9;
    /// Direction flag: string instructions step downwards when set.
    #[cfg_attr(not(feature = "test-modes"), allow(dead_code))] // Only the test image uses it.
    pub const DF: u64 = 1 << 10;
    /// Resume flag: suppresses instruction breakpoints for one instruction.
    #[cfg_attr(not(feature = "test-modes"), allow(dead_code))] // Only the test image uses it.
    pub const RF: u64 = 1 << 16;
}

/// Installs the kernel's GDT, TSS and IDT. Must run before any exception can occur.
pub fn init() {
    gdt::init();
    idt::init();
    nmi::register();
}

/// Runs `f` with RFLAGS.TF clear and restores the caller's TF afterwards. softtdx single-steps
/// the kernel; code that must not be intercepted, or that takes the model's lock from outside an
/// exception handler, runs inside this.
pub fn without_single_step<R>(f: impl FnOnce() -> R) -> R {
    let saved: u64;
    // SAFETY: only RFLAGS.TF changes; the stack slot is pushed and popped in the block.
    unsafe {
        core::arch::asm!(
            "pushfq",
            "mov {saved}, [rsp]",
            "and qword ptr [rsp], {not_tf}",
            "popfq",
            saved = out(reg) saved,
            not_tf = const !rflags::TF,
        )
    };
    let result = f();
    if saved & rflags::TF != 0 {
        set_single_step();
    }
    result
}

/// Sets RFLAGS.TF: from the instruction after next on, the CPU raises #DB after every
/// instruction (softtdx's single-stepping).
pub fn set_single_step() {
    // SAFETY: only RFLAGS.TF changes; the stack slot is pushed and popped within the block.
    // The instruction right after a POPF that sets TF runs before the first trap, hence the
    // NOP: the caller's next instruction is the first one trapped after.
    unsafe {
        core::arch::asm!(
            "pushfq",
            "or qword ptr [rsp], {tf}",
            "popfq",
            "nop",
            tf = const rflags::TF,
        )
    };
}
