//! The interrupted context as the trap path saves it (`super::trap`'s stubs push it): a plain
//! record that the #VE handler, the MMIO emulation and softtdx read and write, kept apart from
//! the trap path itself so that those need not depend on the code that prints and stops.

/// The interrupted context as the trap path saved it, lowest address first.
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
pub struct TrapFrame {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rbp: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rbx: u64,
    pub rax: u64,
    /// Pushed by the stub.
    pub vector: u64,
    /// Pushed by the CPU for vectors 8, 10-14, 17, 21, 29, 30; a dummy 0 otherwise.
    pub error_code: u64,
    // The frame the CPU pushes on every exception in 64-bit mode.
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

// The assembly below hard-codes this layout.
const _: () = assert!(core::mem::size_of::<TrapFrame>() == 22 * 8);
const _: () = assert!(core::mem::offset_of!(TrapFrame, rax) == 14 * 8);
const _: () = assert!(core::mem::offset_of!(TrapFrame, vector) == 15 * 8);
const _: () = assert!(core::mem::offset_of!(TrapFrame, rip) == 17 * 8);
const _: () = assert!(core::mem::offset_of!(TrapFrame, ss) == 21 * 8);
// The CPU aligns RSP to 16 before it pushes its frame; the whole TrapFrame is a multiple of 16
// bytes, so RSP is 16-byte aligned again at the `call`, as the System V ABI requires.
const _: () = assert!(core::mem::size_of::<TrapFrame>().is_multiple_of(16));

impl tdx_ve::regs::GuestRegisters for TrapFrame {
    fn gpr(&self, r: tdx_ve::regs::Gpr) -> u64 {
        use tdx_ve::regs::Gpr::*;
        match r {
            Rax => self.rax,
            Rcx => self.rcx,
            Rdx => self.rdx,
            Rbx => self.rbx,
            Rsp => self.rsp,
            Rbp => self.rbp,
            Rsi => self.rsi,
            Rdi => self.rdi,
            R8 => self.r8,
            R9 => self.r9,
            R10 => self.r10,
            R11 => self.r11,
            R12 => self.r12,
            R13 => self.r13,
            R14 => self.r14,
            R15 => self.r15,
        }
    }

    fn set_gpr(&mut self, r: tdx_ve::regs::Gpr, v: u64) {
        use tdx_ve::regs::Gpr::*;
        let slot = match r {
            Rax => &mut self.rax,
            Rcx => &mut self.rcx,
            Rdx => &mut self.rdx,
            Rbx => &mut self.rbx,
            Rsp => &mut self.rsp,
            Rbp => &mut self.rbp,
            Rsi => &mut self.rsi,
            Rdi => &mut self.rdi,
            R8 => &mut self.r8,
            R9 => &mut self.r9,
            R10 => &mut self.r10,
            R11 => &mut self.r11,
            R12 => &mut self.r12,
            R13 => &mut self.r13,
            R14 => &mut self.r14,
            R15 => &mut self.r15,
        };
        *slot = v;
    }

    fn rip(&self) -> u64 {
        self.rip
    }

    fn set_rip(&mut self, v: u64) {
        self.rip = v;
    }

    fn rflags(&self) -> u64 {
        self.rflags
    }
}
