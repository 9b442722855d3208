//! MMIO instruction decoding and emulation for the EPT-violation #VE (exit reason 48).
//!
//! An EPT-violation #VE gives the guest the GPA and GLA but no valid instruction length or
//! information (TDX module `tdvps_ve_info_t` marks them non-architectural; Linux `ve_instr_len`
//! warns and uses 0), so the handler decodes the instruction itself. The accepted set is Linux's
//! (`insn_decode_mmio` in `arch/x86/lib/insn-eval.c`, `handle_mmio` in
//! `arch/x86/coco/tdx/tdx.c`), the forms an `io.h`-style accessor or a compiler emits:
//!
//! | opcode      | instruction              | access                           |
//! |-------------|--------------------------|----------------------------------|
//! | 88 /r       | MOV r/m8, r8             | write 1                          |
//! | 89 /r       | MOV r/m, r               | write 2 (0x66), 4, 8 (REX.W)     |
//! | C6 /0 ib    | MOV r/m8, imm8           | write 1                          |
//! | C7 /0 iw/id | MOV r/m, imm             | write 2, 4, 8 (imm32 sign-extended) |
//! | 8A /r       | MOV r8, r/m8             | read 1                           |
//! | 8B /r       | MOV r, r/m               | read 2, 4, 8                     |
//! | 0F B6/B7 /r | MOVZX r, r/m8 / r/m16    | read 1 / 2                       |
//! | 0F BE/BF /r | MOVSX r, r/m8 / r/m16    | read 1 / 2                       |
//!
//! Everything else is refused with its bytes: moffs MOV (A0-A3), MOVS, MOVSXD, XCHG, LOCK forms,
//! ALU read-modify-write, string and SSE/AVX moves, a register (mod = 3) operand, a /r field
//! other than 0 on C6/C7, and F2/F3 prefixes (XACQUIRE/XRELEASE, which an accessor never emits).
//!
//! Encoding (Intel SDM Vol. 2, chapter 2 "Instruction Format"): legacy prefixes first; a REX
//! prefix counts only right before the opcode (SDM §2.2.1); REX.W wins over 0x66; ModRM/SIB with
//! REX.R/X/B; mod = 00 with r/m = 101 is RIP-relative (REX.B ignored); a SIB index of 100 without
//! REX.X means no index; a SIB base of 101 with mod = 00 means disp32 and no base (REX.B ignored);
//! 0x67 gives 32-bit addressing (EIP-relative for RIP-relative forms). Segment overrides: in
//! 64-bit mode only FS and GS have a base; CS/DS/ES/SS are accepted and ignored; more than one
//! segment override is refused, as Linux does (`get_seg_reg_override_idx`: "More than one
//! segment override prefix leads to undefined behavior").
//!
//! Register writes (SDM Vol. 1 §3.4.1.1 "General-Purpose Registers in 64-Bit Mode"): an 8- or
//! 16-bit destination keeps the rest of the register, a 32-bit one is zero-extended to 64 bits,
//! a 64-bit one replaced. MOVZX and MOVSX into a 32-bit register therefore clear bits 63:32 too
//! (Linux and EDK2 get this wrong, MMIO-FACTS §3). Byte-register numbers 4-7 are AH, CH, DH, BH
//! (bits 15:8 of RAX..RBX) when there is no REX prefix, and SPL, BPL, SIL, DIL with any REX prefix
//! (SDM Vol. 2 §2.2.1.2, "Register Encodings Associated with ... REX"). None of these
//! instructions changes a flag.
//!
//! The cargo feature `broken-mmio-movzx` deliberately makes a 32-bit MOVZX destination keep bits
//! 63:32 (the Linux/EDK2 bug), so that the kernel's differential checks can be shown to fail.

use core::fmt;

use crate::decode::MAX_INSTRUCTION_LENGTH;
use crate::regs::{Gpr, GuestRegisters, SegmentRegister};

/// The size of the memory access, in bytes.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
#[repr(u8)]
pub enum AccessSize {
    /// One byte.
    Byte = 1,
    /// Two bytes.
    Word = 2,
    /// Four bytes.
    Dword = 4,
    /// Eight bytes.
    Qword = 8,
}

impl AccessSize {
    /// Every size, narrowest first.
    pub const ALL: [AccessSize; 4] =
        [AccessSize::Byte, AccessSize::Word, AccessSize::Dword, AccessSize::Qword];

    /// The size in bytes (GHCI #VE.RequestMMIO R12).
    pub const fn bytes(self) -> u64 {
        self as u64
    }

    /// A mask of the low `bytes() * 8` bits.
    #[inline(always)]
    pub const fn mask(self) -> u64 {
        match self {
            AccessSize::Byte => 0xff,
            AccessSize::Word => 0xffff,
            AccessSize::Dword => 0xffff_ffff,
            AccessSize::Qword => u64::MAX,
        }
    }

    /// The size for `bytes`, if it is 1, 2, 4 or 8.
    pub const fn from_bytes(bytes: u64) -> Option<AccessSize> {
        match bytes {
            1 => Some(AccessSize::Byte),
            2 => Some(AccessSize::Word),
            4 => Some(AccessSize::Dword),
            8 => Some(AccessSize::Qword),
            _ => None,
        }
    }

    /// `value` truncated to this size and sign-extended to 64 bits.
    pub const fn sign_extend(self, value: u64) -> u64 {
        match self {
            AccessSize::Byte => value as u8 as i8 as i64 as u64,
            AccessSize::Word => value as u16 as i16 as i64 as u64,
            AccessSize::Dword => value as u32 as i32 as i64 as u64,
            AccessSize::Qword => value,
        }
    }
}

/// A general-purpose register operand of a given size. `high_byte` names AH, CH, DH or BH
/// (bits 15:8 of RAX, RCX, RDX or RBX); it is only ever set with [`AccessSize::Byte`].
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub struct RegisterOperand {
    /// The 64-bit register that holds the operand.
    pub gpr: Gpr,
    /// The operand size.
    pub size: AccessSize,
    /// AH..BH: bits 15:8 instead of 7:0.
    pub high_byte: bool,
}

impl RegisterOperand {
    /// The operand's value, zero-extended.
    #[inline(always)]
    pub fn read<R: GuestRegisters + ?Sized>(&self, regs: &R) -> u64 {
        let full = regs.gpr(self.gpr);
        if self.high_byte {
            (full >> 8) & 0xff
        } else {
            full & self.size.mask()
        }
    }

    /// Writes `value` (already of the operand's size; higher bits are ignored) as the processor
    /// does: 8/16-bit merge, 32-bit zero-extends, 64-bit replaces.
    #[inline(always)]
    pub fn write<R: GuestRegisters + ?Sized>(&self, regs: &mut R, value: u64) {
        let full = regs.gpr(self.gpr);
        let new = if self.high_byte {
            (full & !0xff00) | ((value & 0xff) << 8)
        } else {
            match self.size {
                AccessSize::Byte | AccessSize::Word => {
                    (full & !self.size.mask()) | (value & self.size.mask())
                }
                AccessSize::Dword => value & 0xffff_ffff,
                AccessSize::Qword => value,
            }
        };
        regs.set_gpr(self.gpr, new);
    }
}

/// How a read is extended into its destination register.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum Extension {
    /// MOV: the destination has the access size.
    None,
    /// MOVZX.
    Zero,
    /// MOVSX.
    Sign,
}

/// What the instruction does with the MMIO location.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum MmioOperation {
    /// 88/89: write the low bytes of a register.
    StoreRegister(RegisterOperand),
    /// C6/C7: write an immediate, already sign-extended to the access size where the encoding
    /// says so (C7 with REX.W) and truncated to the access size.
    StoreImmediate(u64),
    /// 8A/8B, MOVZX, MOVSX: read into a register.
    Load {
        /// The destination register (its size is the destination size).
        destination: RegisterOperand,
        /// How the read value is extended to the destination size.
        extension: Extension,
    },
}

/// The address size of the memory operand.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum AddressWidth {
    /// The default in 64-bit mode.
    Bits64,
    /// With a 0x67 prefix.
    Bits32,
}

/// The memory operand: `segment_base + (base + index * scale + displacement)`, or for a
/// RIP-relative operand `segment_base + (next RIP + displacement)`, truncated to the address
/// size before the segment base is added.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub struct MemoryOperand {
    /// The base register, if any.
    pub base: Option<Gpr>,
    /// The index register and its scale (1, 2, 4 or 8), if any.
    pub index: Option<(Gpr, u8)>,
    /// The sign-extended displacement.
    pub displacement: i64,
    /// Relative to the next instruction's RIP.
    pub rip_relative: bool,
    /// FS or GS when overridden; `None` for the default segment or a CS/DS/ES/SS override
    /// (whose base is 0 in 64-bit mode).
    pub segment: Option<SegmentRegister>,
    /// The address size.
    pub address_width: AddressWidth,
}

/// The bases of FS and GS, which the decoder cannot know.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct SegmentBases {
    /// IA32_FS_BASE.
    pub fs: u64,
    /// IA32_GS_BASE.
    pub gs: u64,
}

/// A decoded MMIO instruction.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub struct MmioInstruction {
    /// What the instruction does.
    pub operation: MmioOperation,
    /// The size of the memory access.
    pub access_size: AccessSize,
    /// The memory operand.
    pub memory: MemoryOperand,
    /// The total length, prefixes and immediate included.
    pub length: u8,
}

/// Why bytes were refused.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum MmioDecodeErrorKind {
    /// No bytes at all.
    Empty,
    /// The bytes end before the instruction does.
    Truncated,
    /// Longer than 15 bytes: #GP.
    TooLong,
    /// Not one of the MMIO forms this decoder emulates.
    Unsupported,
    /// A register operand (mod = 3): this instruction cannot touch memory.
    RegisterOperand,
    /// A LOCK, F2 or F3 prefix.
    Prefix,
    /// More than one segment-override prefix.
    SegmentOverrides,
}

/// A refusal, with the bytes it was given (up to 15) so that the message can name them.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct MmioDecodeError {
    /// Why.
    pub kind: MmioDecodeErrorKind,
    bytes: [u8; MAX_INSTRUCTION_LENGTH],
    count: u8,
}

impl MmioDecodeError {
    fn new(kind: MmioDecodeErrorKind, bytes: &[u8]) -> Self {
        let count = bytes.len().min(MAX_INSTRUCTION_LENGTH);
        let mut copy = [0; MAX_INSTRUCTION_LENGTH];
        copy[..count].copy_from_slice(&bytes[..count]);
        MmioDecodeError { kind, bytes: copy, count: count as u8 }
    }

    /// The instruction bytes that were looked at (at most 15).
    pub fn bytes(&self) -> &[u8] {
        &self.bytes[..self.count as usize]
    }
}

impl fmt::Display for MmioDecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let why = match self.kind {
            MmioDecodeErrorKind::Empty => "no instruction bytes",
            MmioDecodeErrorKind::Truncated => "instruction bytes end before the instruction",
            MmioDecodeErrorKind::TooLong => "instruction longer than 15 bytes",
            MmioDecodeErrorKind::Unsupported => "not an emulated MMIO instruction",
            MmioDecodeErrorKind::RegisterOperand => "no memory operand",
            MmioDecodeErrorKind::Prefix => "LOCK/REP prefix on an MMIO access",
            MmioDecodeErrorKind::SegmentOverrides => "more than one segment override",
        };
        write!(f, "{why}: bytes")?;
        for byte in self.bytes() {
            write!(f, " {byte:02x}")?;
        }
        Ok(())
    }
}

/// Decodes the MMIO instruction at `bytes[0]`. Only the first 15 bytes are looked at; never
/// panics.
///
/// The forms an accessor emits take a short path ([`decode_plain_mov`], which the #VE handler
/// inlines: its cost is measured) when 7 bytes are given; everything else goes through the
/// general decoder ([`decode_general`]). Both give the same answer for the plain forms
/// (host-tested).
#[inline]
pub fn decode_mmio(bytes: &[u8]) -> Result<MmioInstruction, MmioDecodeError> {
    let plain = bytes.first_chunk::<PLAIN_MOV_MAX_LENGTH>().and_then(decode_plain_mov);
    match plain {
        Some(instruction) => Ok(instruction),
        None => decode_general(bytes),
    }
}

/// The longest plain form: REX, opcode, ModRM, disp32.
pub const PLAIN_MOV_MAX_LENGTH: usize = 7;

/// The plain forms, decoded without the general decoder's prefix loop: no legacy prefix, an
/// optional REX prefix, MOV 89 or 8B (4 bytes, 8 with REX.W: what an `io.h`-style 32- or
/// 64-bit accessor emits), and a ModRM memory operand with a base register and no SIB (mod
/// 00/01/10, r/m not 100, mod 00 r/m 101 excluded: that is RIP-relative), from the first
/// [`PLAIN_MOV_MAX_LENGTH`] bytes at the instruction (the bytes after a shorter instruction are
/// not looked at). `None` for anything else, which is not a refusal: [`decode_general`] then
/// decides (the byte forms 88/8A too, for their AH..BH rule). The rules are the general
/// decoder's (register numbers with REX.R/REX.B, displacements sign-extended).
#[inline(always)]
pub fn decode_plain_mov(bytes: &[u8; PLAIN_MOV_MAX_LENGTH]) -> Option<MmioInstruction> {
    let has_rex = bytes[0] & 0xf0 == 0x40;
    let (rex, at) = if has_rex { (bytes[0], 1) } else { (0, 0) };
    let opcode = bytes[at];
    if opcode & 0xfd != 0x89 {
        return None;
    }
    let modrm = bytes[at + 1];
    let displacement_size = PLAIN_MODRM_DISPLACEMENT[modrm as usize];
    if displacement_size == NOT_PLAIN {
        return None;
    }
    let displacement = match displacement_size {
        0 => 0,
        1 => bytes[at + 2] as i8 as i64,
        _ => {
            i32::from_le_bytes([bytes[at + 2], bytes[at + 3], bytes[at + 4], bytes[at + 5]]) as i64
        }
    };
    let length = at + 2 + displacement_size as usize;
    let size = if rex & 8 != 0 { AccessSize::Qword } else { AccessSize::Dword };
    let register =
        RegisterOperand { gpr: gpr(((modrm >> 3) & 7) | ((rex & 4) << 1)), size, high_byte: false };
    let operation = if opcode & 2 == 0 {
        MmioOperation::StoreRegister(register)
    } else {
        MmioOperation::Load { destination: register, extension: Extension::None }
    };
    Some(MmioInstruction {
        operation,
        access_size: size,
        memory: MemoryOperand {
            base: Some(gpr((modrm & 7) | ((rex & 1) << 3))),
            index: None,
            displacement,
            rip_relative: false,
            segment: None,
            address_width: AddressWidth::Bits64,
        },
        length: length as u8,
    })
}

/// Per ModRM byte, the displacement size (0, 1 or 4 bytes) of a plain memory operand: a base
/// register and no SIB (mod 00/01/10, r/m not 100, and not mod 00 r/m 101, which is
/// RIP-relative); [`NOT_PLAIN`] for every other ModRM.
const PLAIN_MODRM_DISPLACEMENT: [u8; 256] = {
    let mut table = [NOT_PLAIN; 256];
    let mut modrm = 0;
    while modrm < 256 {
        let (mode, rm) = (modrm >> 6, modrm & 7);
        if mode != 3 && rm != 4 && !(mode == 0 && rm == 5) {
            table[modrm] = [0, 1, 4][mode];
        }
        modrm += 1;
    }
    table
};
const NOT_PLAIN: u8 = 0xff;

/// The general decoder: every accepted form (see the module documentation), and every refusal.
#[inline(never)]
pub fn decode_general(bytes: &[u8]) -> Result<MmioInstruction, MmioDecodeError> {
    let error = |kind| MmioDecodeError::new(kind, bytes);
    if bytes.is_empty() {
        return Err(error(MmioDecodeErrorKind::Empty));
    }
    // Cheap on the way through (the #VE handler's cost is measured): the error is built out
    // of line.
    #[cold]
    #[inline(never)]
    fn past_the_end(index: usize, bytes: &[u8]) -> MmioDecodeError {
        let kind = if index >= MAX_INSTRUCTION_LENGTH {
            MmioDecodeErrorKind::TooLong
        } else {
            MmioDecodeErrorKind::Truncated
        };
        MmioDecodeError::new(kind, bytes)
    }
    let byte_at = |index: usize| -> Result<u8, MmioDecodeError> {
        match bytes.get(index) {
            Some(&byte) if index < MAX_INSTRUCTION_LENGTH => Ok(byte),
            _ => Err(past_the_end(index, bytes)),
        }
    };

    let mut operand_size_prefix = false;
    let mut address_size_prefix = false;
    let mut refused_prefix = false;
    let mut segment_overrides = 0;
    let mut segment = None;
    let mut rex: Option<u8> = None;
    let mut index = 0;
    let opcode = loop {
        let byte = byte_at(index)?;
        match byte {
            0x66 => operand_size_prefix = true,
            0x67 => address_size_prefix = true,
            0xf0 | 0xf2 | 0xf3 => refused_prefix = true,
            0x26 | 0x2e | 0x36 | 0x3e => {
                segment_overrides += 1;
                segment = None;
            }
            0x64 => {
                segment_overrides += 1;
                segment = Some(SegmentRegister::Fs);
            }
            0x65 => {
                segment_overrides += 1;
                segment = Some(SegmentRegister::Gs);
            }
            0x40..=0x4f => {
                rex = Some(byte);
                index += 1;
                continue;
            }
            _ => break byte,
        }
        // A REX prefix only counts right before the opcode.
        rex = None;
        index += 1;
    };
    let rex_bit = |bit: u8| matches!(rex, Some(r) if r & bit != 0);
    let (rex_w, rex_r, rex_x, rex_b) = (rex_bit(8), rex_bit(4), rex_bit(2), rex_bit(1));

    // The operand size of the word/doubleword/quadword forms.
    let operand_size = if rex_w {
        AccessSize::Qword
    } else if operand_size_prefix {
        AccessSize::Word
    } else {
        AccessSize::Dword
    };

    enum Form {
        Store { size: AccessSize },
        StoreImmediate { size: AccessSize },
        Load { size: AccessSize, destination: AccessSize, extension: Extension },
    }
    let (form, modrm_index) = match opcode {
        0x88 => (Form::Store { size: AccessSize::Byte }, index + 1),
        0x89 => (Form::Store { size: operand_size }, index + 1),
        0xc6 => (Form::StoreImmediate { size: AccessSize::Byte }, index + 1),
        0xc7 => (Form::StoreImmediate { size: operand_size }, index + 1),
        0x8a => (
            Form::Load {
                size: AccessSize::Byte,
                destination: AccessSize::Byte,
                extension: Extension::None,
            },
            index + 1,
        ),
        0x8b => (
            Form::Load {
                size: operand_size,
                destination: operand_size,
                extension: Extension::None,
            },
            index + 1,
        ),
        0x0f => {
            let (size, extension) = match byte_at(index + 1)? {
                0xb6 => (AccessSize::Byte, Extension::Zero),
                0xb7 => (AccessSize::Word, Extension::Zero),
                0xbe => (AccessSize::Byte, Extension::Sign),
                0xbf => (AccessSize::Word, Extension::Sign),
                _ => return Err(error(MmioDecodeErrorKind::Unsupported)),
            };
            (Form::Load { size, destination: operand_size, extension }, index + 2)
        }
        _ => return Err(error(MmioDecodeErrorKind::Unsupported)),
    };

    let modrm = byte_at(modrm_index)?;
    let mode = modrm >> 6;
    let reg_field = ((modrm >> 3) & 7) | if rex_r { 8 } else { 0 };
    let rm = modrm & 7;
    if mode == 3 {
        return Err(error(MmioDecodeErrorKind::RegisterOperand));
    }
    if matches!(form, Form::StoreImmediate { .. }) && reg_field & 7 != 0 {
        // C6/C7 with /1../7 are #UD (or XABORT/XBEGIN with mod = 3).
        return Err(error(MmioDecodeErrorKind::Unsupported));
    }

    // ModRM, SIB and displacement.
    let mut next = modrm_index + 1;
    let mut base = None;
    let mut index_register = None;
    let mut rip_relative = false;
    let mut displacement_size = match mode {
        1 => 1,
        2 => 4,
        _ => 0,
    };
    if rm == 4 {
        let sib = byte_at(next)?;
        next += 1;
        let scale = 1u8 << (sib >> 6);
        let sib_index = ((sib >> 3) & 7) | if rex_x { 8 } else { 0 };
        if sib_index != 4 {
            index_register = Some((gpr(sib_index), scale));
        }
        let sib_base = sib & 7;
        if sib_base == 5 && mode == 0 {
            displacement_size = 4;
        } else {
            base = Some(gpr(sib_base | if rex_b { 8 } else { 0 }));
        }
    } else if rm == 5 && mode == 0 {
        rip_relative = true;
        displacement_size = 4;
    } else {
        base = Some(gpr(rm | if rex_b { 8 } else { 0 }));
    }
    let displacement = match displacement_size {
        1 => byte_at(next)? as i8 as i64,
        4 => i32::from_le_bytes([
            byte_at(next)?,
            byte_at(next + 1)?,
            byte_at(next + 2)?,
            byte_at(next + 3)?,
        ]) as i64,
        _ => 0,
    };
    next += displacement_size;

    // The register operand; for the byte forms, 4-7 are AH..BH only without any REX prefix.
    let register = |size: AccessSize| {
        if size == AccessSize::Byte && rex.is_none() && (4..8).contains(&reg_field) {
            RegisterOperand { gpr: gpr(reg_field - 4), size, high_byte: true }
        } else {
            RegisterOperand { gpr: gpr(reg_field), size, high_byte: false }
        }
    };

    let (operation, access_size) = match form {
        Form::Store { size } => (MmioOperation::StoreRegister(register(size)), size),
        Form::Load { size, destination, extension } => {
            (MmioOperation::Load { destination: register(destination), extension }, size)
        }
        Form::StoreImmediate { size } => {
            let immediate = match size {
                AccessSize::Byte => {
                    let value = byte_at(next)? as u64;
                    next += 1;
                    value
                }
                AccessSize::Word => {
                    let value = u16::from_le_bytes([byte_at(next)?, byte_at(next + 1)?]) as u64;
                    next += 2;
                    value
                }
                AccessSize::Dword | AccessSize::Qword => {
                    let value = u32::from_le_bytes([
                        byte_at(next)?,
                        byte_at(next + 1)?,
                        byte_at(next + 2)?,
                        byte_at(next + 3)?,
                    ]) as i32 as i64 as u64;
                    next += 4;
                    value & size.mask()
                }
            };
            (MmioOperation::StoreImmediate(immediate), size)
        }
    };
    // `byte_at` has checked every index below `next` against the 15-byte limit.
    let length = next as u8;

    // Refusals that depend only on prefixes come after the length is known, so that a
    // truncated or over-long instruction is reported as such.
    if refused_prefix {
        return Err(MmioDecodeError::new(MmioDecodeErrorKind::Prefix, &bytes[..next]));
    }
    if segment_overrides > 1 {
        return Err(MmioDecodeError::new(MmioDecodeErrorKind::SegmentOverrides, &bytes[..next]));
    }

    Ok(MmioInstruction {
        operation,
        access_size,
        memory: MemoryOperand {
            base,
            index: index_register,
            displacement,
            rip_relative,
            segment,
            address_width: if address_size_prefix {
                AddressWidth::Bits32
            } else {
                AddressWidth::Bits64
            },
        },
        length,
    })
}

/// GPR `number` (its low 4 bits). A match rather than a table: the compiler reduces it to the
/// number itself, which the #VE handler then uses as an index without a load.
#[inline(always)]
fn gpr(number: u8) -> Gpr {
    match number & 15 {
        0 => Gpr::Rax,
        1 => Gpr::Rcx,
        2 => Gpr::Rdx,
        3 => Gpr::Rbx,
        4 => Gpr::Rsp,
        5 => Gpr::Rbp,
        6 => Gpr::Rsi,
        7 => Gpr::Rdi,
        8 => Gpr::R8,
        9 => Gpr::R9,
        10 => Gpr::R10,
        11 => Gpr::R11,
        12 => Gpr::R12,
        13 => Gpr::R13,
        14 => Gpr::R14,
        _ => Gpr::R15,
    }
}

impl MmioInstruction {
    /// Whether the instruction writes the MMIO location (else it reads it).
    pub const fn is_write(&self) -> bool {
        !matches!(self.operation, MmioOperation::Load { .. })
    }

    /// The linear address of the memory operand for the registers in `regs` (RIP on this
    /// instruction) and the given FS/GS bases.
    #[inline(always)]
    pub fn linear_address<R: GuestRegisters + ?Sized>(&self, regs: &R, bases: SegmentBases) -> u64 {
        let memory = &self.memory;
        let mut effective = memory.displacement as u64;
        if memory.rip_relative {
            effective = effective.wrapping_add(regs.rip().wrapping_add(self.length as u64));
        }
        if let Some(base) = memory.base {
            effective = effective.wrapping_add(regs.gpr(base));
        }
        if let Some((index, scale)) = memory.index {
            effective = effective.wrapping_add(regs.gpr(index).wrapping_mul(scale as u64));
        }
        if memory.address_width == AddressWidth::Bits32 {
            effective &= 0xffff_ffff;
        }
        let segment_base = match memory.segment {
            Some(SegmentRegister::Fs) => bases.fs,
            Some(SegmentRegister::Gs) => bases.gs,
            _ => 0,
        };
        segment_base.wrapping_add(effective)
    }

    /// For a write: the data to write, `access_size` bytes in the low bits. `None` for a read.
    #[inline(always)]
    pub fn write_data<R: GuestRegisters + ?Sized>(&self, regs: &R) -> Option<u64> {
        match self.operation {
            MmioOperation::StoreRegister(source) => Some(source.read(regs)),
            MmioOperation::StoreImmediate(value) => Some(value & self.access_size.mask()),
            MmioOperation::Load { .. } => None,
        }
    }

    /// For a read: puts `data` (from the host: only the low `access_size` bytes are used) into
    /// the destination register as the instruction would. Does nothing for a write. RIP is left
    /// to the caller, which advances it by [`MmioInstruction::length`] only on success.
    #[inline(always)]
    pub fn complete_read<R: GuestRegisters + ?Sized>(&self, regs: &mut R, data: u64) {
        let MmioOperation::Load { destination, extension } = self.operation else {
            return;
        };
        let data = data & self.access_size.mask();
        let value = match extension {
            Extension::None | Extension::Zero => data,
            Extension::Sign => self.access_size.sign_extend(data),
        };
        if cfg!(feature = "broken-mmio-movzx")
            && extension == Extension::Zero
            && destination.size == AccessSize::Dword
        {
            // The Linux/EDK2 bug (MMIO-FACTS §3): only the destination's low 32 bits change.
            let full = regs.gpr(destination.gpr);
            regs.set_gpr(destination.gpr, (full & !0xffff_ffff) | (value & 0xffff_ffff));
            return;
        }
        destination.write(regs, value & destination.size.mask());
    }
}

/// Whether an access of `size` bytes at `address` crosses a 4 KiB page boundary (Linux refuses
/// those in `handle_mmio`: the two halves could be different devices or memory).
pub const fn crosses_page(address: u64, size: AccessSize) -> bool {
    (address & 0xfff) + size.bytes() > 0x1000
}

#[cfg(test)]
mod tests;
