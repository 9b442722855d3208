//! The rules' name for an instruction that iced-x86 decoded (feature `iced`).
//!
//! One mapping from iced-x86's mnemonics to [`Instruction`] for every user of the rules that
//! decodes with iced-x86: softtdx's strict model (which then reads the operands from the
//! interrupted registers) and td-audit (which reads them from what its register tracking
//! knows). Operands are the caller's: this says only which rule an instruction falls under.

use crate::Instruction;
use iced_x86::{Code, Mnemonic, Register};

/// Which rule a decoded instruction falls under, before its operands are read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// IN, OUT, INS, OUTS: [`Instruction::PortIo`]; port, width and direction are the caller's.
    PortIo,
    /// An instruction whose rule reads no operand: HLT, INVD, WBINVD/WBNOINVD, VMCALL, MWAIT,
    /// MONITOR, PCONFIG, RDPMC, the VMX group, GETSEC, RSM, ENCLS, ENCLV, SEAMCALL, TDCALL,
    /// XSETBV.
    Fixed(Instruction),
    /// CPUID: the leaf in EAX, the subleaf in ECX.
    Cpuid,
    /// RDMSR: the MSR in ECX.
    Rdmsr,
    /// WRMSR: the MSR in ECX, the value in EDX:EAX.
    Wrmsr,
    /// MOV to control register `cr` from the general register `source`.
    MovToCr {
        /// The control register's number (0, 2, 3, 4, 8).
        cr: u8,
        /// The general register written to it.
        source: Register,
    },
    /// LMSW: writes CR0 bits 3:0 (PE can be set, not cleared) and keeps the rest.
    Lmsw,
    /// Not named by the rules: runs in a TD as it runs outside one.
    Other,
}

/// Which rule `instruction` falls under.
pub fn kind(instruction: &iced_x86::Instruction) -> Kind {
    use Instruction as I;
    use Mnemonic as M;
    let fixed = Kind::Fixed;
    match instruction.mnemonic() {
        M::In | M::Out | M::Insb | M::Insw | M::Insd | M::Outsb | M::Outsw | M::Outsd => {
            Kind::PortIo
        }
        M::Hlt => fixed(I::Hlt),
        M::Invd => fixed(I::Invd),
        M::Wbinvd | M::Wbnoinvd => fixed(I::Wbinvd),
        M::Vmcall => fixed(I::Vmcall),
        M::Mwait => fixed(I::Mwait),
        M::Monitor => fixed(I::Monitor),
        M::Pconfig => fixed(I::Pconfig),
        M::Rdpmc => fixed(I::Rdpmc),
        M::Vmclear
        | M::Vmlaunch
        | M::Vmptrld
        | M::Vmptrst
        | M::Vmread
        | M::Vmresume
        | M::Vmwrite
        | M::Vmxoff
        | M::Vmxon
        | M::Invept
        | M::Invvpid
        | M::Vmfunc => fixed(I::Vmx),
        M::Getsec => fixed(I::Getsec),
        M::Rsm => fixed(I::Rsm),
        M::Encls => fixed(I::Encls),
        M::Enclv => fixed(I::Enclv),
        M::Seamcall => fixed(I::Seamcall),
        M::Tdcall => fixed(I::Tdcall),
        M::Xsetbv => fixed(I::Xsetbv),
        M::Cpuid => Kind::Cpuid,
        M::Rdmsr => Kind::Rdmsr,
        M::Wrmsr => Kind::Wrmsr,
        M::Lmsw => Kind::Lmsw,
        M::Mov if instruction.code() == Code::Mov_cr_r64 => Kind::MovToCr {
            cr: (instruction.op0_register() as u32 - Register::CR0 as u32) as u8,
            source: instruction.op1_register(),
        },
        _ => Kind::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use iced_x86::{Decoder, DecoderOptions};

    fn kind_of(bytes: &[u8]) -> Kind {
        kind(&Decoder::new(64, bytes, DecoderOptions::NONE).decode())
    }

    #[test]
    fn port_io_forms_are_port_io() {
        // in al,dx; out 0x80,al; rep insw; outsd.
        for bytes in [&[0xEC][..], &[0xE6, 0x80], &[0xF3, 0x66, 0x6D], &[0x6F]] {
            assert_eq!(kind_of(bytes), Kind::PortIo, "{bytes:02x?}");
        }
    }

    #[test]
    fn fixed_rules_need_no_operands() {
        assert_eq!(kind_of(&[0xF4]), Kind::Fixed(Instruction::Hlt));
        assert_eq!(kind_of(&[0x0F, 0x01, 0xC1]), Kind::Fixed(Instruction::Vmcall));
        assert_eq!(kind_of(&[0x66, 0x0F, 0x01, 0xCC]), Kind::Fixed(Instruction::Tdcall));
        assert_eq!(kind_of(&[0x0F, 0x01, 0xD1]), Kind::Fixed(Instruction::Xsetbv));
        assert_eq!(kind_of(&[0xF3, 0x0F, 0x09]), Kind::Fixed(Instruction::Wbinvd));
    }

    #[test]
    fn operand_rules_name_what_the_caller_reads() {
        assert_eq!(kind_of(&[0x0F, 0xA2]), Kind::Cpuid);
        assert_eq!(kind_of(&[0x0F, 0x32]), Kind::Rdmsr);
        assert_eq!(kind_of(&[0x0F, 0x30]), Kind::Wrmsr);
        assert_eq!(kind_of(&[0x0F, 0x01, 0xF0]), Kind::Lmsw);
        // mov cr4, rbx; mov cr0, r9.
        assert_eq!(kind_of(&[0x0F, 0x22, 0xE3]), Kind::MovToCr { cr: 4, source: Register::RBX });
        assert_eq!(
            kind_of(&[0x41, 0x0F, 0x22, 0xC1]),
            Kind::MovToCr { cr: 0, source: Register::R9 }
        );
    }

    #[test]
    fn reads_of_control_registers_and_plain_moves_are_other() {
        // mov rax, cr0; mov rax, rbx; lidt [rax].
        assert_eq!(kind_of(&[0x0F, 0x20, 0xC0]), Kind::Other);
        assert_eq!(kind_of(&[0x48, 0x89, 0xD8]), Kind::Other);
        assert_eq!(kind_of(&[0x0F, 0x01, 0x18]), Kind::Other);
    }
}
