//! Decoding a recorded instruction and finding its operands from the instructions before it in
//! the same translation block (TCG plugin API v1 cannot read registers).
//!
//! Only constants are followed: `mov reg, imm`, `xor reg, reg`, register copies, `or`/`and`/
//! `bts`/`btr` with an immediate, and read-modify-write chains that start at RDMSR (of a known
//! MSR) or at MOV from CR0/CR4. Anything else that writes a register makes it unknown.

use iced_x86::{
    Code, Decoder, DecoderOptions, Formatter, Instruction, InstructionInfoFactory, IntelFormatter,
    Mnemonic, OpAccess, OpKind, Register,
};
use td_rules::iced::Kind;
use td_rules::{Instruction as TdInstruction, WrittenValue};

/// What a recorded instruction is, for the audit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decoded {
    /// One the TDX module may intercept, with what is known of its operands.
    Rule(TdInstruction),
    /// LIDT: the kernel's own IDT marks the end of the boot path.
    Lidt,
    /// CALL through EFI_BOOT_SERVICES.ExitBootServices (offset 0xE8).
    ExitBootServicesCall,
    /// Anything else (native in a TD; or an entry/mark the audit placed).
    Other,
}

/// Where a value came from, for read-modify-write chains.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    /// RDMSR of this MSR; `high` for EDX.
    Msr { msr: u32, high: bool },
    /// MOV from this control register.
    Cr(u8),
}

/// What is known of a 64-bit register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Value {
    Unknown,
    Const(u64),
    /// The value read from `source`, with `set` bits set and `clear` bits cleared.
    Read {
        source: Source,
        set: u64,
        clear: u64,
    },
}

impl Value {
    fn or(self, imm: u64) -> Value {
        match self {
            Value::Const(v) => Value::Const(v | imm),
            Value::Read { source, set, clear } => {
                Value::Read { source, set: set | imm, clear: clear & !imm }
            }
            Value::Unknown => Value::Unknown,
        }
    }

    fn and(self, imm: u64) -> Value {
        match self {
            Value::Const(v) => Value::Const(v & imm),
            Value::Read { source, set, clear } => {
                Value::Read { source, set: set & imm, clear: clear | !imm }
            }
            Value::Unknown => Value::Unknown,
        }
    }

    /// Bits that may be 1.
    fn support(self) -> Option<u64> {
        match self {
            Value::Const(v) => Some(v),
            Value::Read { set, clear, .. } => Some(!clear | set),
            Value::Unknown => None,
        }
    }

    /// `self + other`, known only when no bit can be 1 in both (then it is `self | other`).
    fn add(self, other: Value) -> Value {
        let (Some(a), Some(b)) = (self.support(), other.support()) else { return Value::Unknown };
        if a & b != 0 {
            return Value::Unknown;
        }
        match (self, other) {
            (Value::Const(x), Value::Const(y)) => Value::Const(x | y),
            (v @ Value::Read { .. }, Value::Const(c))
            | (Value::Const(c), v @ Value::Read { .. }) => v.or(c),
            (
                Value::Read { source, set: s1, clear: c1 },
                Value::Read { source: other_source, set: s2, clear: c2 },
            ) if source == other_source => {
                // (src & !c1 | s1) | (src & !c2 | s2) = src & !(c1 & c2) | (s1 | s2).
                Value::Read { source, set: s1 | s2, clear: (c1 & c2) & !(s1 | s2) }
            }
            _ => Value::Unknown,
        }
    }

    fn written(self, expected: Source) -> WrittenValue {
        match self {
            Value::Const(v) => WrittenValue::constant(v),
            Value::Read { source, set, clear } if source == expected => {
                WrittenValue::read_modify(set, clear)
            }
            _ => WrittenValue::UNKNOWN,
        }
    }

    fn constant(self) -> Option<u64> {
        match self {
            Value::Const(v) => Some(v),
            _ => None,
        }
    }
}

/// The 16 GPRs, by their 64-bit register.
struct Registers([Value; 16]);

fn gpr_index(register: Register) -> Option<usize> {
    let full = register.full_register();
    (Register::RAX as u32..=Register::R15 as u32)
        .contains(&(full as u32))
        .then(|| (full as u32 - Register::RAX as u32) as usize)
}

impl Registers {
    fn get(&self, register: Register) -> Value {
        let Some(index) = gpr_index(register) else { return Value::Unknown };
        let value = self.0[index];
        match register.size() {
            8 => value,
            4 => value.and(0xFFFF_FFFF),
            _ => Value::Unknown,
        }
    }

    /// Writes `value` to `register`: 32-bit writes zero-extend, 8/16-bit writes are untracked.
    fn set(&mut self, register: Register, value: Value) {
        let Some(index) = gpr_index(register) else { return };
        self.0[index] = match register.size() {
            8 => value,
            4 => value.and(0xFFFF_FFFF),
            _ => Value::Unknown,
        };
    }
}

fn immediate(instruction: &Instruction) -> Option<u64> {
    (1..instruction.op_count())
        .find(|&i| {
            matches!(
                instruction.op_kind(i),
                OpKind::Immediate8
                    | OpKind::Immediate16
                    | OpKind::Immediate32
                    | OpKind::Immediate64
                    | OpKind::Immediate8to32
                    | OpKind::Immediate8to64
                    | OpKind::Immediate32to64
            )
        })
        .map(|i| instruction.immediate(i))
}

/// Applies one instruction's effect on the tracked registers.
fn step(registers: &mut Registers, instruction: &Instruction, info: &mut InstructionInfoFactory) {
    let dest = || instruction.op0_register();
    let reg_op1 = instruction.op_count() > 1 && instruction.op1_kind() == OpKind::Register;
    match instruction.mnemonic() {
        Mnemonic::Mov if instruction.op0_kind() == OpKind::Register => {
            if matches!(instruction.code(), Code::Mov_r64_cr) {
                let cr = (instruction.op1_register() as u32 - Register::CR0 as u32) as u8;
                registers.set(dest(), Value::Read { source: Source::Cr(cr), set: 0, clear: 0 });
            } else if let Some(imm) = immediate(instruction) {
                registers.set(dest(), Value::Const(imm));
            } else if reg_op1 {
                let value = registers.get(instruction.op1_register());
                registers.set(dest(), value);
            } else {
                registers.set(dest(), Value::Unknown);
            }
            return;
        }
        Mnemonic::Xor if reg_op1 && instruction.op0_register() == instruction.op1_register() => {
            registers.set(dest(), Value::Const(0));
            return;
        }
        Mnemonic::Add | Mnemonic::Or | Mnemonic::And
            if instruction.op0_kind() == OpKind::Register && reg_op1 =>
        {
            let a = registers.get(dest());
            let b = registers.get(instruction.op1_register());
            let new = match (instruction.mnemonic(), a, b) {
                (Mnemonic::Add, a, b) => a.add(b),
                (Mnemonic::Or, a, Value::Const(c)) | (Mnemonic::Or, Value::Const(c), a) => a.or(c),
                (Mnemonic::And, a, Value::Const(c)) | (Mnemonic::And, Value::Const(c), a) => {
                    a.and(c)
                }
                _ => Value::Unknown,
            };
            registers.set(dest(), new);
            return;
        }
        Mnemonic::Add if instruction.op0_kind() == OpKind::Register => {
            if let Some(imm) = immediate(instruction) {
                let value = registers.get(dest()).add(Value::Const(imm));
                registers.set(dest(), value);
                return;
            }
        }
        Mnemonic::Or | Mnemonic::And | Mnemonic::Bts | Mnemonic::Btr
            if instruction.op0_kind() == OpKind::Register =>
        {
            if let Some(imm) = immediate(instruction) {
                let value = registers.get(dest());
                let bit = |imm: u64| 1u64 << (imm & 63);
                let new = match instruction.mnemonic() {
                    Mnemonic::Or => value.or(imm),
                    Mnemonic::And => value.and(imm),
                    Mnemonic::Bts => value.or(bit(imm)),
                    _ => value.and(!bit(imm)),
                };
                registers.set(dest(), new);
                return;
            }
        }
        Mnemonic::Rdmsr => {
            match registers.get(Register::ECX).constant() {
                Some(msr) => {
                    let msr = msr as u32;
                    let read =
                        |high| Value::Read { source: Source::Msr { msr, high }, set: 0, clear: 0 };
                    registers.set(Register::RAX, read(false));
                    registers.set(Register::RDX, read(true));
                }
                None => {
                    registers.set(Register::RAX, Value::Unknown);
                    registers.set(Register::RDX, Value::Unknown);
                }
            }
            return;
        }
        _ => {}
    }
    for used in info.info(instruction).used_registers() {
        if matches!(
            used.access(),
            OpAccess::Write | OpAccess::CondWrite | OpAccess::ReadWrite | OpAccess::ReadCondWrite
        ) {
            if let Some(index) = gpr_index(used.register()) {
                registers.0[index] = Value::Unknown;
            }
        }
    }
}

/// The MSR write value EDX:EAX.
fn msr_value(registers: &Registers, msr: Option<u32>) -> WrittenValue {
    let Some(msr) = msr else { return WrittenValue::UNKNOWN };
    let low = registers.get(Register::EAX).written(Source::Msr { msr, high: false });
    let high = registers.get(Register::EDX).written(Source::Msr { msr, high: true });
    const LOW: u64 = 0xFFFF_FFFF;
    WrittenValue {
        ones: (low.ones & LOW) | (high.ones << 32),
        zeros: (low.zeros & LOW) | ((high.zeros & LOW) << 32),
        kept: (low.kept & LOW) | ((high.kept & LOW) << 32),
    }
}

/// What the instruction needs from the rules, given the registers before it.
fn classify(registers: &Registers, instruction: &Instruction) -> Decoded {
    use TdInstruction as T;
    let ecx = || registers.get(Register::ECX).constant().map(|v| v as u32);
    let rule = |t| Decoded::Rule(t);
    match td_rules::iced::kind(instruction) {
        Kind::PortIo => rule(T::PortIo),
        Kind::Fixed(t) => rule(t),
        Kind::Cpuid => rule(T::Cpuid {
            leaf: registers.get(Register::EAX).constant().map(|v| v as u32),
            subleaf: ecx(),
        }),
        Kind::Rdmsr => rule(T::Rdmsr { msr: ecx() }),
        Kind::Wrmsr => rule(T::Wrmsr { msr: ecx(), value: msr_value(registers, ecx()) }),
        Kind::Lmsw => {
            // LMSW writes CR0 bits 3:0 (PE can be set, not cleared) and keeps the rest.
            rule(T::MovToCr0(WrittenValue { ones: 0, zeros: 0, kept: !0xF }))
        }
        Kind::MovToCr { cr, source } => {
            let value = registers.get(source).written(Source::Cr(cr));
            match cr {
                0 => rule(T::MovToCr0(value)),
                4 => rule(T::MovToCr4(value)),
                // CR2, CR3 and CR8 writes do not exit (README 3.1).
                _ => Decoded::Other,
            }
        }
        Kind::Other => other(instruction),
    }
}

/// What the audit looks for besides the rules: LIDT, and the call to ExitBootServices.
fn other(instruction: &Instruction) -> Decoded {
    match instruction.mnemonic() {
        Mnemonic::Lidt => Decoded::Lidt,
        Mnemonic::Call
            if instruction.op0_kind() == OpKind::Memory
                && instruction.memory_displacement64() == 0xE8
                && instruction.memory_index() == Register::None =>
        {
            Decoded::ExitBootServicesCall
        }
        _ => Decoded::Other,
    }
}

/// The instruction at `target`, decoded from the block that starts at `block_start` with
/// `bytes` (through the end of the target instruction), with its disassembly.
pub fn decode(block_start: u64, bytes: &[u8], target: u64) -> Option<(Decoded, String)> {
    let mut decoder = Decoder::with_ip(64, bytes, block_start, DecoderOptions::NONE);
    let mut registers = Registers([Value::Unknown; 16]);
    let mut info = InstructionInfoFactory::new();
    let mut instruction = Instruction::default();
    while decoder.can_decode() {
        decoder.decode_out(&mut instruction);
        if instruction.is_invalid() {
            return None;
        }
        if instruction.ip() == target {
            let mut text = String::new();
            IntelFormatter::new().format(&instruction, &mut text);
            return Some((classify(&registers, &instruction), text));
        }
        step(&mut registers, &instruction, &mut info);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use td_rules::Instruction as T;

    fn last(bytes: &[u8]) -> Decoded {
        // Decode all, return the last instruction's classification.
        let mut decoder = Decoder::with_ip(64, bytes, 0x1000, DecoderOptions::NONE);
        let mut target = 0;
        while decoder.can_decode() {
            target = decoder.decode().ip();
        }
        decode(0x1000, bytes, target).unwrap().0
    }

    #[test]
    fn upstream_efer_update_is_a_read_modify_write_of_efer() {
        // As bootloader 0.11.17's `enable_nxe_bit` compiles (seen in the plugin log):
        // mov ecx, 0xc0000080; rdmsr; mov r8d, eax; and r8d, 0xf501; rdmsr;
        // and eax, 0xffff02fe; add eax, r8d; add eax, 0x800; wrmsr
        // The two ANDs select disjoint bits, so the first ADD is an OR; NXE (bit 11) is then
        // added to a value where it is known clear: the write is EFER with NXE set.
        let bytes = hex("b9800000c00f324189c04181e001f500000f3225fe02ffff4401c005000800000f30");
        match last(&bytes) {
            Decoded::Rule(T::Wrmsr { msr: Some(0xC000_0080), value }) => {
                assert_eq!(value.kept & 0xFFFF_FFFF, 0xFFFF_F7FF, "{value:x?}");
                assert_eq!(value.ones, 0x800);
                assert_eq!(value.zeros, 0);
                // EDX is from the second RDMSR of EFER: kept.
                assert_eq!(value.kept >> 32, 0xFFFF_FFFF);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn constants_reach_cpuid_and_msr_operands() {
        // mov eax, 0x21; xor ecx, ecx; cpuid
        assert_eq!(
            last(&hex("b82100000031c90fa2")),
            Decoded::Rule(T::Cpuid { leaf: Some(0x21), subleaf: Some(0) })
        );
        // mov ecx, 0x1b; rdmsr
        assert_eq!(last(&hex("b91b0000000f32")), Decoded::Rule(T::Rdmsr { msr: Some(0x1B) }));
        // mov ecx, 0x1b; mov ecx, [rax]; rdmsr -> unknown
        assert_eq!(last(&hex("b91b0000008b080f32")), Decoded::Rule(T::Rdmsr { msr: None }));
        // rdmsr with nothing before it
        assert_eq!(last(&hex("0f32")), Decoded::Rule(T::Rdmsr { msr: None }));
    }

    #[test]
    fn cr_read_modify_write() {
        // mov rax, cr0; or rax, 0x10000 (set WP); mov cr0, rax
        match last(&hex("0f20c0480d000001000f22c0")) {
            Decoded::Rule(T::MovToCr0(value)) => {
                assert_eq!(value, WrittenValue::read_modify(1 << 16, 0))
            }
            other => panic!("{other:?}"),
        }
        // mov rax, cr4; btr rax, 6 (clear MCE); mov cr4, rax
        match last(&hex("0f20e0480fbaf0060f22e0")) {
            Decoded::Rule(T::MovToCr4(value)) => {
                assert_eq!(value, WrittenValue::read_modify(0, 1 << 6))
            }
            other => panic!("{other:?}"),
        }
        // bootloader 0.11.17 `enable_write_protect_bit` (Cr0::update inserting WP), as logged:
        // mov rax,cr0; and eax,0xe004003f; mov rcx,cr0; mov rdx,0xffffffff1ffaffc0;
        // and rdx,rcx; add rax,rdx; add rax,0x10000; mov cr0,rax
        match last(&hex("0f20c0253f0004e00f20c148bac0fffa1fffffffff4821ca4801d04805000001000f22c0"))
        {
            Decoded::Rule(T::MovToCr0(value)) => {
                assert_eq!(value.may_change(), 1 << 16, "{value:x?}");
                assert_eq!(value.ones, 1 << 16);
            }
            other => panic!("{other:?}"),
        }
        // mov cr3, rdi: native
        assert_eq!(last(&hex("0f22df")), Decoded::Other);
    }

    /// The loader's switch out of 5-level paging runs in compatibility mode, and the audit
    /// decodes every block as 64-bit code: its 32-bit stretch (as `enter_kernel` assembles it:
    /// mov ecx,cr0; btr ecx,31; mov cr0,ecx; mov ecx,cr4; btr ecx,12; mov cr4,ecx;
    /// mov cr3,eax; mov ecx,cr0; bts ecx,31; mov cr0,ecx; push 8; push edx; retf) must decode
    /// to the same instructions, at the same lengths, in both modes, and its CR4 write must be
    /// read as "LA57 cleared, every other bit of the low half kept".
    #[test]
    fn the_la57_switch_decodes_the_same_as_32_and_64_bit_code() {
        let bytes =
            hex("0f20c10fbaf11f0f22c10f20e10fbaf10c0f22e10f22d80f20c10fbae91f0f22c16a0852cb");
        let mnemonics = |bitness| {
            let mut decoder = Decoder::with_ip(bitness, &bytes, 0x1000, DecoderOptions::NONE);
            let mut out = Vec::new();
            while decoder.can_decode() {
                let i = decoder.decode();
                assert!(!i.is_invalid());
                out.push((i.ip(), i.len(), i.mnemonic()));
            }
            out
        };
        assert_eq!(mnemonics(32), mnemonics(64));
        assert_eq!(mnemonics(64).len(), 13);
        // Up to and including the CR4 write (the sixth instruction, ending at byte 20).
        match last(&bytes[..20]) {
            Decoded::Rule(T::MovToCr4(value)) => {
                // As 64-bit code the 32-bit BTR also clears bits 63:32: reserved in CR4, 0 as
                // read, so the judgement is the same (a write of them would be #GP anyway).
                assert_eq!(value.ones, 0);
                assert_eq!(value.zeros, 0xFFFF_FFFF_0000_0000 | 1 << 12);
                assert_eq!(value.kept, 0xFFFF_EFFF);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn markers() {
        assert_eq!(last(&hex("0f0118")), Decoded::Lidt); // lidt [rax]
        assert_eq!(last(&hex("ff90e8000000")), Decoded::ExitBootServicesCall);
        assert_eq!(last(&hex("ec")), Decoded::Rule(T::PortIo));
    }

    /// The plugin's opcode prefilter (xtask/td-audit/src/opcode.rs) must select everything the
    /// audit classifies; its own tests run here because the plugin cannot link a test binary.
    #[test]
    fn plugin_prefilter_selects_every_classified_instruction() {
        for bytes in [
            "ec",
            "e6f4",
            "66ed",
            "f36e",
            "f4",
            "0f30",
            "0f32",
            "0fa2",
            "0f22e0",
            "0f22c0",
            "0f01d1",
            "0f09",
            "f30f09",
            "0f08",
            "0f01c1",
            "0f01c9",
            "0f01c8",
            "0f33",
            "0f01f0",
            "0f0118",
            "ff90e8000000",
            "660f01cc",
        ] {
            let bytes = hex(bytes);
            assert!(crate::audit::plugin_opcode::candidate(&bytes).is_some(), "{bytes:02x?}");
        }
        assert!(crate::audit::plugin_opcode::candidate(&hex("0f22df")).is_some()); // mov cr3
        assert!(crate::audit::plugin_opcode::candidate(&hex("0f0110")).is_none()); // lgdt
        assert!(crate::audit::plugin_opcode::candidate(&hex("0fc7f0")).is_none());
        // rdrand
    }

    fn hex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
            .collect()
    }
}
