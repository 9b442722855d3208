//! The model's #VE decisions: what the TDX module does with the instruction at RIP, taken from
//! the classification table (`td-rules`), for every instruction the table covers.
//!
//! The instruction is recognised with the model's own decoder (iced-x86, compiled only into
//! images with softtdx), not with the #VE handler's (`tdx_ve::decode`): the instruction length,
//! the I/O exit qualification and the INS/OUTS instruction information a #VE reports are
//! derived here from iced-x86's decoding, with this module's own encoders, so that the
//! handler's checks of them against the bytes can fail.
//!
//! The model plays TDX module 1.0 ([`MODULE_VERSION`]) in a TD with every optional feature off
//! ([`td_rules::classify_minimal_td`]): with it every MSR row has one outcome, and EFER writes
//! raise #VE as the `tdx.wrmsr_ve` self-test check expects. Values (MSR, CPUID leaf and subleaf,
//! CR0/CR4 values) are read from the interrupted registers, so each decision is exact.

use crate::arch::frame::TrapFrame;
use iced_x86::{Decoder, DecoderOptions, Mnemonic, Register};
use td_rules::{ModuleVersion, Outcome, WrittenValue};

/// The TDX module version the model plays.
pub const MODULE_VERSION: ModuleVersion = ModuleVersion::V1_0;

/// What the model does with the instruction at RIP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Not for this module: TDCALL, or something the decoder could not read.
    NotHere,
    /// Runs natively.
    Native,
    /// CPUID that the module answers itself (no #VE).
    ModuleCpuid { length: u8 },
    /// #VE with this exit reason, exit qualification and (INS/OUTS) instruction information.
    Ve { exit_reason: u16, qualification: u64, instruction_info: u32, length: u8 },
    /// #GP(0).
    Gp,
    /// #UD.
    Ud,
}

/// Decides what the TDX module does with the instruction in `bytes` (fetched at `frame.rip`).
pub fn decide(bytes: &[u8], frame: &TrapFrame) -> Decision {
    if !may_concern_the_module(bytes) {
        return Decision::NotHere;
    }
    let mut decoder = Decoder::with_ip(64, bytes, frame.rip, DecoderOptions::NONE);
    let instruction = decoder.decode();
    if instruction.is_invalid() || instruction.has_lock_prefix() {
        // The CPU raises #UD itself, before any VM exit.
        return Decision::NotHere;
    }
    let length = instruction.len() as u8;
    let Some(what) = table_instruction(&instruction, frame) else {
        return Decision::NotHere;
    };
    let mut instruction_info = 0;
    let (rule, qualification) = match what {
        Classified::Table(i) => (td_rules::classify_minimal_td(&i, MODULE_VERSION), 0),
        Classified::Io { qualification, info } => {
            instruction_info = info;
            (
                td_rules::classify_minimal_td(&td_rules::Instruction::PortIo, MODULE_VERSION),
                qualification,
            )
        }
        Classified::Cr { number, gpr, value } => {
            let rule = if number == 0 {
                td_rules::cr0_write(value, read_cr4())
            } else {
                td_rules::cr4_write(value, read_cr0(), MODULE_VERSION)
            };
            // VMX exit qualification for control-register accesses (SDM Vol. 3C Table 28-3):
            // bits 3:0 the CR, 5:4 access type 0 (MOV to CR), 11:8 the source GPR.
            (rule, u64::from(number) | (u64::from(gpr) << 8))
        }
    };
    match rule.outcome {
        Outcome::Native if instruction.mnemonic() == Mnemonic::Cpuid => {
            Decision::ModuleCpuid { length }
        }
        Outcome::Native => Decision::Native,
        Outcome::Ve { exit_reason } => {
            Decision::Ve { exit_reason, qualification, instruction_info, length }
        }
        Outcome::Gp => Decision::Gp,
        Outcome::Ud => Decision::Ud,
        // Nothing the model meets stays undecided in 1.0's minimal TD (every MSR row there has
        // one outcome, CR values are exact); if it ever did, #VE is what a REDUCE_VE=0 TD gets.
        Outcome::DependsOn { exit_reason, .. } => {
            Decision::Ve { exit_reason, qualification, instruction_info, length }
        }
    }
}

/// A cheap filter run before iced-x86 on every single-stepped instruction (decoding each one
/// in full made the softtdx self-test several times slower): false only when the first opcode
/// byte after the legacy and REX prefixes is neither F4 (HLT), a port I/O opcode, nor 0F followed by a byte that
/// starts one of the instructions [`table_instruction`] names (0F 01 group 7: VMCALL, MONITOR,
/// MWAIT, PCONFIG, VMFUNC, ENCLS, ENCLV, SEAMCALL, VMX; 08 INVD; 09 WBINVD; 22 MOV to CR;
/// 30 WRMSR; 32 RDMSR; 33 RDPMC; 37 GETSEC; 78/79 VMREAD/VMWRITE; A2 CPUID; AA RSM; C7 group 9
/// VMPTRLD/VMPTRST/VMCLEAR/VMXON; 38 INVEPT/INVVPID). It derives nothing: length and operands
/// come from iced-x86.
fn may_concern_the_module(bytes: &[u8]) -> bool {
    let mut rest = bytes;
    while let [first, tail @ ..] = rest {
        match first {
            0x66 | 0x67 | 0xF2 | 0xF3 | 0xF0 | 0x2E | 0x36 | 0x3E | 0x26 | 0x64 | 0x65 => {
                rest = tail
            }
            0x40..=0x4F => rest = tail,
            _ => break,
        }
    }
    match rest {
        // HLT; IN/OUT imm8 (E4-E7) and DX (EC-EF); INS/OUTS (6C-6F).
        [0xF4 | 0xE4..=0xE7 | 0xEC..=0xEF | 0x6C..=0x6F, ..] => true,
        [0x0F, second, ..] => matches!(
            second,
            0x01 | 0x08
                | 0x09
                | 0x22
                | 0x30
                | 0x32
                | 0x33
                | 0x37
                | 0x38
                | 0x78
                | 0x79
                | 0xA2
                | 0xAA
                | 0xC7
        ),
        _ => false,
    }
}

enum Classified {
    Table(td_rules::Instruction),
    Io { qualification: u64, info: u32 },
    Cr { number: u8, gpr: u8, value: u64 },
}

/// The table's name for `instruction`, with its operands from the interrupted registers.
fn table_instruction(instruction: &iced_x86::Instruction, frame: &TrapFrame) -> Option<Classified> {
    use td_rules::iced::Kind;
    use td_rules::Instruction as I;
    let eax = frame.rax as u32;
    let ecx = frame.rcx as u32;
    let table = |i| Some(Classified::Table(i));
    match td_rules::iced::kind(instruction) {
        Kind::PortIo => {
            let (qualification, info) = port_io(instruction, frame)?;
            Some(Classified::Io { qualification, info })
        }
        // TDCALL is the model's own #UD path.
        Kind::Fixed(I::Tdcall) => None,
        // XSETBV is not modelled: the module emulates it or raises #GP(0) against the TD's XFAM
        // (td_xsetbv.c); the CPU's own XCR0 check stands in for it.
        Kind::Fixed(I::Xsetbv) => None,
        Kind::Fixed(i) => table(i),
        Kind::Cpuid => table(I::Cpuid { leaf: Some(eax), subleaf: Some(ecx) }),
        Kind::Rdmsr => table(I::Rdmsr { msr: Some(ecx) }),
        Kind::Wrmsr => {
            let value = (frame.rdx << 32) | (frame.rax & 0xFFFF_FFFF);
            table(I::Wrmsr { msr: Some(ecx), value: WrittenValue::constant(value) })
        }
        Kind::MovToCr { cr: number @ (0 | 4), source } => {
            let gpr = gpr_index(source)?;
            Some(Classified::Cr { number, gpr, value: gpr_value(frame, gpr) })
        }
        // CR3 and CR8 do not exit (README 3.1); CR2 never does. LMSW changes only CR0[3:1]
        // (CR0_L1_LMSW_MASK), all guest-owned: it never needs the module.
        Kind::MovToCr { .. } | Kind::Lmsw | Kind::Other => None,
    }
}

/// VMX exit qualification for I/O instructions (SDM Vol. 3C Table 28-5): bits 2:0 size - 1,
/// bit 3 IN, bit 4 string, bit 5 REP, bit 6 immediate port, bits 31:16 the port. And the
/// VM-exit instruction information for INS/OUTS (SDM Vol. 3C 28.2.5): bits 9:7 address size
/// (1 = 32-bit, 2 = 64-bit), bits 17:15 the segment register (ES=0, CS, SS, DS, FS, GS; OUTS
/// only, reported as ES for INS). From iced-x86's operands; None for forms it names but the
/// model does not expect (none in 64-bit mode).
fn port_io(instruction: &iced_x86::Instruction, frame: &TrapFrame) -> Option<(u64, u32)> {
    use Mnemonic::*;
    let (input, string, width) = match instruction.mnemonic() {
        In => (true, false, register_width(instruction.op0_register())?),
        Out => (false, false, register_width(instruction.op1_register())?),
        Insb => (true, true, 1),
        Insw => (true, true, 2),
        Insd => (true, true, 4),
        Outsb => (false, true, 1),
        Outsw => (false, true, 2),
        Outsd => (false, true, 4),
        _ => return None,
    };
    let port_operand = if input { 1 } else { 0 };
    let (port, immediate) = if string {
        (frame.rdx as u16, false)
    } else if instruction.op_kind(port_operand) == iced_x86::OpKind::Immediate8 {
        (u16::from(instruction.immediate8()), true)
    } else {
        (frame.rdx as u16, false)
    };
    let rep = string && (instruction.has_rep_prefix() || instruction.has_repne_prefix());
    let mut qualification = (width - 1) | u64::from(port) << 16;
    qualification |= u64::from(input) << 3 | u64::from(string) << 4;
    qualification |= u64::from(rep) << 5 | u64::from(immediate) << 6;
    if !string {
        return Some((qualification, 0));
    }
    // The string operand (INS: op0 ES:[RDI/EDI], OUTS: op1 seg:[RSI/ESI]) names the size.
    let memory_operand = if input { 0 } else { 1 };
    let address_32 = matches!(
        instruction.op_kind(memory_operand),
        iced_x86::OpKind::MemoryESEDI | iced_x86::OpKind::MemorySegESI
    );
    let size_field: u32 = if address_32 { 1 } else { 2 };
    let segment_field: u32 = if input {
        0
    } else {
        match instruction.memory_segment() {
            Register::ES => 0,
            Register::CS => 1,
            Register::SS => 2,
            Register::DS => 3,
            Register::FS => 4,
            Register::GS => 5,
            _ => return None,
        }
    };
    Some((qualification, size_field << 7 | segment_field << 15))
}

fn register_width(register: Register) -> Option<u64> {
    match register {
        Register::AL => Some(1),
        Register::AX => Some(2),
        Register::EAX => Some(4),
        _ => None,
    }
}

/// The VMX encoding of a 64-bit general-purpose register (RAX=0 ... R15=15).
fn gpr_index(register: Register) -> Option<u8> {
    use Register::*;
    const ORDER: [Register; 16] =
        [RAX, RCX, RDX, RBX, RSP, RBP, RSI, RDI, R8, R9, R10, R11, R12, R13, R14, R15];
    ORDER.iter().position(|&r| r == register).map(|i| i as u8)
}

fn gpr_value(frame: &TrapFrame, index: u8) -> u64 {
    match index {
        0 => frame.rax,
        1 => frame.rcx,
        2 => frame.rdx,
        3 => frame.rbx,
        4 => frame.rsp,
        5 => frame.rbp,
        6 => frame.rsi,
        7 => frame.rdi,
        8 => frame.r8,
        9 => frame.r9,
        10 => frame.r10,
        11 => frame.r11,
        12 => frame.r12,
        13 => frame.r13,
        14 => frame.r14,
        _ => frame.r15,
    }
}

fn read_cr0() -> u64 {
    let value: u64;
    // SAFETY: reading CR0 in ring 0 has no side effects.
    unsafe { core::arch::asm!("mov {}, cr0", out(reg) value, options(nomem, nostack)) };
    value
}

fn read_cr4() -> u64 {
    let value: u64;
    // SAFETY: reading CR4 in ring 0 has no side effects.
    unsafe { core::arch::asm!("mov {}, cr4", out(reg) value, options(nomem, nostack)) };
    value
}
