//! x86_64 plumbing: descriptor tables and the trap entry path.

pub mod gdt;
pub mod idt;
pub mod trap;

/// RFLAGS bits used by the trap and emulation code (Intel SDM Vol. 1, 3.4.3).
pub mod rflags {
    /// Trap flag: single-step.
    pub const TF: u64 = 1 << 8;
    /// Interrupt enable flag.
    pub const IF: u64 = 1 << 9;
    /// Direction flag: string instructions step downwards when set.
    pub const DF: u64 = 1 << 10;
    /// Resume flag: suppresses instruction breakpoints for one instruction.
    pub const RF: u64 = 1 << 16;
}

/// Installs the kernel's GDT, TSS and IDT. Must run before any exception can occur.
pub fn init() {
    gdt::init();
    idt::init();
}
