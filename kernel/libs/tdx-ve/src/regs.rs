//! General-purpose registers in the numbering the TDX ABI uses, and the small register view
//! that the #VE emulation code works on.
//!
//! The numbering (RAX = 0, RCX = 1, RDX = 2, RBX = 3, RSP = 4, RBP = 5, RSI = 6, RDI = 7,
//! R8..R15 = 8..15) is the one used by the GPR-select bitmap in RCX of TDG.VP.VMCALL (TDX module
//! ABI, TDG.VP.VMCALL leaf; Intel GHCI, "TDG.VP.VMCALL Interface") and by the register fields of
//! the VMX instruction-information field (Intel SDM Vol. 3C, "VM-Exit Instruction-Information
//! Field"). Emulation code reads and writes a trapped context only through [`GuestRegisters`],
//! so the same code runs on the kernel's trap frame and, in host tests, on a [`RegisterState`].

/// A 64-bit general-purpose register, numbered as in the TDG.VP.VMCALL GPR bitmap.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
#[repr(u8)]
pub enum Gpr {
    /// RAX, GPR 0.
    Rax = 0,
    /// RCX, GPR 1.
    Rcx = 1,
    /// RDX, GPR 2.
    Rdx = 2,
    /// RBX, GPR 3.
    Rbx = 3,
    /// RSP, GPR 4.
    Rsp = 4,
    /// RBP, GPR 5.
    Rbp = 5,
    /// RSI, GPR 6.
    Rsi = 6,
    /// RDI, GPR 7.
    Rdi = 7,
    /// R8, GPR 8.
    R8 = 8,
    /// R9, GPR 9.
    R9 = 9,
    /// R10, GPR 10.
    R10 = 10,
    /// R11, GPR 11.
    R11 = 11,
    /// R12, GPR 12.
    R12 = 12,
    /// R13, GPR 13.
    R13 = 13,
    /// R14, GPR 14.
    R14 = 14,
    /// R15, GPR 15.
    R15 = 15,
}

impl Gpr {
    /// Every register, in GPR-number order (so `Gpr::ALL[n].number() == n`).
    pub const ALL: [Gpr; 16] = [
        Gpr::Rax,
        Gpr::Rcx,
        Gpr::Rdx,
        Gpr::Rbx,
        Gpr::Rsp,
        Gpr::Rbp,
        Gpr::Rsi,
        Gpr::Rdi,
        Gpr::R8,
        Gpr::R9,
        Gpr::R10,
        Gpr::R11,
        Gpr::R12,
        Gpr::R13,
        Gpr::R14,
        Gpr::R15,
    ];

    /// The GPR number (the bit index in the TDG.VP.VMCALL bitmap).
    pub const fn number(self) -> u8 {
        self as u8
    }

    /// The register with GPR number `number`, if there is one (0..=15).
    pub const fn from_number(number: u8) -> Option<Gpr> {
        if number < 16 {
            Some(Gpr::ALL[number as usize])
        } else {
            None
        }
    }
}

/// The direction flag in RFLAGS (bit 10): string instructions step downwards when it is set
/// (Intel SDM Vol. 1, "EFLAGS Register").
pub const RFLAGS_DF: u64 = 1 << 10;

/// A segment register, numbered as in the VMX instruction-information field (Intel SDM Vol. 3C,
/// "Format of the VM-Exit Instruction-Information Field as Used for INS and OUTS", bits 17:15).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
#[repr(u8)]
pub enum SegmentRegister {
    /// ES, number 0.
    Es = 0,
    /// CS, number 1.
    Cs = 1,
    /// SS, number 2.
    Ss = 2,
    /// DS, number 3.
    Ds = 3,
    /// FS, number 4.
    Fs = 4,
    /// GS, number 5.
    Gs = 5,
}

impl SegmentRegister {
    /// The register with VMX number `number`, if there is one (0..=5).
    pub const fn from_number(number: u8) -> Option<SegmentRegister> {
        match number {
            0 => Some(SegmentRegister::Es),
            1 => Some(SegmentRegister::Cs),
            2 => Some(SegmentRegister::Ss),
            3 => Some(SegmentRegister::Ds),
            4 => Some(SegmentRegister::Fs),
            5 => Some(SegmentRegister::Gs),
            _ => None,
        }
    }

    /// Whether the segment can have a non-zero base in 64-bit mode. Only FS and GS can: the
    /// processor treats the bases of CS, DS, ES and SS as zero (Intel SDM Vol. 1, "Segment
    /// Registers in 64-Bit Mode"), so for them an effective address is already the linear one.
    pub const fn has_base_in_64bit_mode(self) -> bool {
        matches!(self, SegmentRegister::Fs | SegmentRegister::Gs)
    }
}

/// The view of an interrupted context that emulation code needs: the 16 GPRs, RIP and RFLAGS.
///
/// Implementations must store exactly what is written: no masking, no sign or zero extension.
/// Architectural width rules (for example that writing a 32-bit register zero-extends it) are
/// applied by the callers in this crate, which is what the host tests check.
pub trait GuestRegisters {
    /// Returns the full 64-bit value of `r`.
    fn gpr(&self, r: Gpr) -> u64;
    /// Sets the full 64-bit value of `r`.
    fn set_gpr(&mut self, r: Gpr, v: u64);
    /// Returns RIP.
    fn rip(&self) -> u64;
    /// Sets RIP.
    fn set_rip(&mut self, v: u64);
    /// Returns RFLAGS. Emulation never writes RFLAGS: none of the emulated instructions
    /// (IN, OUT, INS, OUTS, with or without REP) changes a flag.
    fn rflags(&self) -> u64;
}

/// A plain register file, indexed by [`Gpr::number`]. Used by host tests and by the kernel's
/// differential checks, which run the same emulation on a copy and compare.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct RegisterState {
    /// The GPRs, `gprs[n]` holding GPR number `n`.
    pub gprs: [u64; 16],
    /// RIP.
    pub rip: u64,
    /// RFLAGS.
    pub rflags: u64,
}

impl GuestRegisters for RegisterState {
    fn gpr(&self, r: Gpr) -> u64 {
        self.gprs[r.number() as usize]
    }

    fn set_gpr(&mut self, r: Gpr, v: u64) {
        self.gprs[r.number() as usize] = v;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpr_numbers_match_the_vmcall_bitmap_numbering() {
        // Spelled out rather than derived, so a reordered enum cannot pass by construction.
        let expected = [
            (Gpr::Rax, 0),
            (Gpr::Rcx, 1),
            (Gpr::Rdx, 2),
            (Gpr::Rbx, 3),
            (Gpr::Rsp, 4),
            (Gpr::Rbp, 5),
            (Gpr::Rsi, 6),
            (Gpr::Rdi, 7),
            (Gpr::R8, 8),
            (Gpr::R9, 9),
            (Gpr::R10, 10),
            (Gpr::R11, 11),
            (Gpr::R12, 12),
            (Gpr::R13, 13),
            (Gpr::R14, 14),
            (Gpr::R15, 15),
        ];
        for (gpr, n) in expected {
            assert_eq!(gpr.number(), n);
            assert_eq!(Gpr::from_number(n), Some(gpr));
            assert_eq!(Gpr::ALL[n as usize], gpr);
        }
        assert_eq!(Gpr::from_number(16), None);
        assert_eq!(Gpr::from_number(255), None);
    }

    #[test]
    fn register_state_keeps_registers_apart() {
        // A distinct value per register, with bits set at both ends.
        let value = |gpr: Gpr| (gpr.number() as u64 + 1) << 56 | 0xa5 << 8 | gpr.number() as u64;
        let mut regs = RegisterState::default();
        for gpr in Gpr::ALL {
            regs.set_gpr(gpr, value(gpr));
        }
        for gpr in Gpr::ALL {
            assert_eq!(regs.gpr(gpr), value(gpr));
            assert_eq!(regs.gprs[gpr.number() as usize], value(gpr));
        }
        regs.set_rip(0xdead_beef);
        assert_eq!(regs.rip(), 0xdead_beef);
        assert_eq!(regs.rip, 0xdead_beef);
    }

    #[test]
    fn segment_numbers_match_the_vmx_layout() {
        let expected = [
            (SegmentRegister::Es, 0),
            (SegmentRegister::Cs, 1),
            (SegmentRegister::Ss, 2),
            (SegmentRegister::Ds, 3),
            (SegmentRegister::Fs, 4),
            (SegmentRegister::Gs, 5),
        ];
        for (segment, n) in expected {
            assert_eq!(segment as u8, n);
            assert_eq!(SegmentRegister::from_number(n), Some(segment));
        }
        assert_eq!(SegmentRegister::from_number(6), None);
        assert_eq!(SegmentRegister::from_number(7), None);
    }
}
