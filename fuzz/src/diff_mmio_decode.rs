//! The MMIO decoder of the EPT-violation #VE (tdx-ve `mmio::decode_mmio`) against iced-x86, on
//! arbitrary bytes at RIP and arbitrary registers.
//!
//! Where ours accepts, iced decodes one of the MOV/MOVZX/MOVSX forms ours emulates, with the
//! same length, access size, direction, linear address (base, index, scale, displacement,
//! RIP-relative, 32-bit addressing, FS/GS base), the same data for a write, and the same
//! register result for a read by the SDM's rule on iced's register name (8/16-bit merge, AH..BH,
//! 32-bit zero-extension). Where iced decodes one of those forms with a memory operand, ours
//! refuses it only for the documented reasons: a LOCK/F2/F3 prefix, or more than one segment
//! override (as Linux). The input is the instruction bytes (first byte: how many, up to 16),
//! then the bytes the registers, the FS/GS bases and the read data are drawn from.

use crate::input::Input;
use iced_x86::{Code, Decoder, DecoderOptions, Instruction as Iced, Mnemonic, OpKind, Register};
use tdx_ve::decode::MAX_INSTRUCTION_LENGTH;
use tdx_ve::mmio::{decode_mmio, AccessSize, MmioDecodeErrorKind, RegisterOperand, SegmentBases};
use tdx_ve::regs::{Gpr, GuestRegisters, RegisterState};

/// The iced-x86 codes of the forms ours emulates.
fn is_ours(code: Code) -> bool {
    use Code::*;
    matches!(
        code,
        Mov_rm8_r8
            | Mov_rm16_r16
            | Mov_rm32_r32
            | Mov_rm64_r64
            | Mov_r8_rm8
            | Mov_r16_rm16
            | Mov_r32_rm32
            | Mov_r64_rm64
            | Mov_rm8_imm8
            | Mov_rm16_imm16
            | Mov_rm32_imm32
            | Mov_rm64_imm32
            | Movzx_r16_rm8
            | Movzx_r32_rm8
            | Movzx_r64_rm8
            | Movzx_r16_rm16
            | Movzx_r32_rm16
            | Movzx_r64_rm16
            | Movsx_r16_rm8
            | Movsx_r32_rm8
            | Movsx_r64_rm8
            | Movsx_r16_rm16
            | Movsx_r32_rm16
            | Movsx_r64_rm16
    )
}

/// An iced general-purpose register as ours names it.
fn operand(register: Register) -> Option<RegisterOperand> {
    let number = (register.full_register() as u32).checked_sub(Register::RAX as u32)?;
    let gpr = *Gpr::ALL.get(number as usize)?;
    let high_byte = matches!(register, Register::AH | Register::CH | Register::DH | Register::BH);
    Some(RegisterOperand { gpr, size: AccessSize::from_bytes(register.size() as u64)?, high_byte })
}

fn value_of(regs: &RegisterState, bases: SegmentBases, register: Register) -> Option<u64> {
    Some(match register {
        Register::ES | Register::CS | Register::SS | Register::DS => 0,
        Register::FS => bases.fs,
        Register::GS => bases.gs,
        Register::RIP | Register::EIP => regs.rip,
        other => operand(other)?.read(regs),
    })
}

/// What writing `value` to the iced-named `register` leaves in its 64-bit register (SDM Vol. 1
/// §3.4.1.1).
fn written(old: u64, register: Register, value: u64) -> u64 {
    match register.size() {
        1 if matches!(register, Register::AH | Register::CH | Register::DH | Register::BH) => {
            (old & !0xff00) | ((value & 0xff) << 8)
        }
        1 => (old & !0xff) | (value & 0xff),
        2 => (old & !0xffff) | (value & 0xffff),
        4 => value & 0xffff_ffff,
        _ => value,
    }
}

fn segment_overrides(bytes: &[u8]) -> usize {
    bytes
        .iter()
        .take_while(|b| {
            matches!(
                b,
                0x26 | 0x2e | 0x36 | 0x3e | 0x64 | 0x65 | 0x66 | 0x67 | 0xf0 | 0xf2 | 0xf3 | 0x40
                    ..=0x4f
            )
        })
        .filter(|b| matches!(b, 0x26 | 0x2e | 0x36 | 0x3e | 0x64 | 0x65))
        .count()
}

/// One comparison; `Err` says how the decoders disagree.
pub fn compare(data: &[u8]) -> Result<(), String> {
    let mut input = Input::new(data);
    let count = usize::from(input.u8()) % (MAX_INSTRUCTION_LENGTH + 2);
    let bytes = input.bytes(count);
    let mut regs =
        RegisterState { rip: input.u64() & 0x0000_7fff_ffff_ffff, rflags: 2, ..Default::default() };
    let seed = input.u64();
    for (i, gpr) in Gpr::ALL.into_iter().enumerate() {
        // Spread the seed over the registers; small values keep addresses interesting.
        let v = seed.rotate_left(i as u32 * 4).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        regs.set_gpr(gpr, if seed & (1 << i) != 0 { v } else { v & 0xffff });
    }
    let bases = SegmentBases { fs: input.u64(), gs: input.u64() };
    let read_data = input.u64();

    let mut decoder = Decoder::with_ip(64, bytes, regs.rip, DecoderOptions::NONE);
    let iced: Iced = decoder.decode();
    let iced_ok = !iced.is_invalid();
    let memory = (0..iced.op_count()).find(|&i| iced.op_kind(i) == OpKind::Memory);
    let shown = |ours: &dyn core::fmt::Debug| {
        format!("bytes {bytes:02x?}: ours {ours:?}, iced {iced} ({:?})", iced.code())
    };
    match decode_mmio(bytes) {
        Ok(decoded) => {
            if !iced_ok || !is_ours(iced.code()) {
                return Err(format!(
                    "{}: ours accepts a form iced does not see as ours",
                    shown(&decoded)
                ));
            }
            let memory = memory.ok_or_else(|| shown(&decoded))?;
            let address = iced.virtual_address(memory, 0, |r, _, _| value_of(&regs, bases, r));
            let facts = (
                usize::from(decoded.length),
                decoded.access_size.bytes() as usize,
                decoded.memory.rip_relative,
                decoded.is_write(),
                Some(decoded.linear_address(&regs, bases)),
            );
            let theirs = (
                iced.len(),
                iced.memory_size().size(),
                iced.is_ip_rel_memory_operand(),
                memory == 0,
                address,
            );
            if facts != theirs {
                return Err(format!("{}: {facts:x?} vs {theirs:x?}", shown(&decoded)));
            }
            let other = 1 - memory;
            if iced.op_kind(other) == OpKind::Register {
                let register = iced.op_register(other);
                if decoded.is_write() {
                    let expected = value_of(&regs, bases, register);
                    if decoded.write_data(&regs) != expected {
                        return Err(format!(
                            "{}: store data {:x?} vs {expected:x?}",
                            shown(&decoded),
                            decoded.write_data(&regs)
                        ));
                    }
                } else {
                    let masked = read_data & decoded.access_size.mask();
                    let extended = if iced.mnemonic() == Mnemonic::Movsx {
                        decoded.access_size.sign_extend(masked)
                    } else {
                        masked
                    };
                    let gpr = operand(register).ok_or_else(|| shown(&decoded))?.gpr;
                    let mut reference = regs;
                    reference.set_gpr(gpr, written(regs.gpr(gpr), register, extended));
                    let mut after = regs;
                    decoded.complete_read(&mut after, read_data);
                    if after != reference {
                        return Err(format!(
                            "{}: read into {register:?} gives {:#x}, SDM {:#x}",
                            shown(&decoded),
                            after.gpr(gpr),
                            reference.gpr(gpr)
                        ));
                    }
                }
            } else {
                let immediate = iced.immediate(other) & decoded.access_size.mask();
                if decoded.write_data(&regs) != Some(immediate) {
                    return Err(format!("{}: immediate {immediate:#x}", shown(&decoded)));
                }
            }
        }
        Err(error) => {
            if error.bytes().len() > MAX_INSTRUCTION_LENGTH {
                return Err(format!("{}: error names too many bytes", shown(&error)));
            }
            if iced_ok && is_ours(iced.code()) && memory.is_some() {
                let prefix = iced.has_lock_prefix()
                    || bytes[..iced.len()]
                        .iter()
                        .take_while(|b| !matches!(b, 0x88..=0x8b | 0xc6 | 0xc7 | 0x0f))
                        .any(|b| matches!(b, 0xf0 | 0xf2 | 0xf3));
                let documented = (error.kind == MmioDecodeErrorKind::Prefix && prefix)
                    || (error.kind == MmioDecodeErrorKind::SegmentOverrides
                        && segment_overrides(bytes) > 1);
                if !documented {
                    return Err(format!(
                        "{}: refused ({:?}) a form iced decodes",
                        shown(&error),
                        error.kind
                    ));
                }
            }
        }
    }
    Ok(())
}

/// The fuzz body.
pub fn run(data: &[u8]) {
    if let Err(disagreement) = compare(data) {
        panic!("MMIO decoders disagree: {disagreement}");
    }
}
