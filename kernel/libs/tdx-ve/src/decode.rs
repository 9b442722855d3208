//! The #VE handler's instruction decoder: just enough x86-64 decoding to recognise the
//! instructions that raise #VE in a TD (port I/O, HLT, CPUID, RDMSR, WRMSR) and TDCALL, and to
//! build the VMX exit qualification the TDX module would report for them. The handler uses it
//! to check INS/OUTS bytes against the qualification and instruction information the module
//! reports. The softtdx model no longer uses it: it has its own decoder (iced-x86,
//! `kernel/src/softtdx/strict.rs`), so that those checks compare two independent decodings.
//!
//! Encoding facts used (Intel SDM Vol. 2, chapter 2 "Instruction Format", and the IN, OUT, INS,
//! OUTS, HLT, CPUID, RDMSR, WRMSR pages; TDX module ABI for TDCALL = 66 0F 01 CC):
//!
//! - Legacy prefixes come first, in any order: 0x66 operand size, 0x67 address size, 0xF2/0xF3
//!   repeat, 0xF0 LOCK, segment overrides 0x2E CS, 0x36 SS, 0x3E DS, 0x26 ES, 0x64 FS,
//!   0x65 GS. When a group repeats, the last prefix wins, with one exception: in 64-bit mode
//!   the CS, DS, ES and SS overrides are ignored (AMD APM Vol. 3 §1.2.4, "Segment-Override
//!   Prefix"; Intel SDM Vol. 1 §3.3.7), so they never displace an FS or GS override, whatever
//!   their order (`64 2E 6E` reads through FS, as on hardware and in iced-x86; QEMU TCG lets
//!   the last prefix win and would read through CS). Alone, such a prefix is still reported
//!   (`2E 6E` names CS), which matches iced-x86; its base is 0 either way. Found by the
//!   differential fuzz target `ve_decode_diff`.
//! - A REX prefix (0x40..=0x4F) counts only when it immediately precedes the opcode; one
//!   followed by a legacy prefix is ignored (SDM §2.2.1).
//! - An instruction is at most 15 bytes; a longer one raises #GP.
//! - IN/OUT/INS/OUTS with an odd opcode (E5, E7, ED, EF, 6D, 6F) move 2 bytes with 0x66 and 4
//!   bytes otherwise; 64-bit operands are not encodable. With both REX.W and 0x66 the general
//!   rule "REX.W takes precedence over 0x66" gives a 64-bit operand size, which these
//!   instructions treat as 32 bits; that is what QEMU TCG does (its decoder gives them the "z"
//!   operand size). SDM Vol. 1 §7.3.12 instead says REX prefixes are "silently ignored" for I/O
//!   instructions, which would make `66 48 ED` a 16-bit IN. No compiler emits this encoding and
//!   it was not checked on hardware; the decoder follows QEMU because softtdx runs under TCG.
//! - F2 (REPNE) on INS/OUTS: the SDM defines REPNE only for CMPS and SCAS and calls other uses
//!   reserved. Processors and QEMU TCG (which tests "REPZ or REPNZ" for INS/OUTS) repeat the
//!   instruction exactly as with F3, so the decoder reports `rep` for either prefix.
//! - A REP prefix on IN/OUT (non-string) has no effect, and the decoder reports `rep: false`
//!   for them so the model never sets the qualification's REP bit for a non-string access.
//! - LOCK on any recognised instruction raises #UD instead of a #VE, so such instructions decode
//!   as [`Instruction::Other`] and are left to execute (and fault) natively.
//! - TDCALL needs 0x66 as its mandatory prefix and no F2/F3 (which would take precedence as
//!   the mandatory prefix and name a different instruction).

use core::fmt;

use crate::io::{IoDirection, IoExitQualification, PortEncoding, PortWidth};
use crate::regs::SegmentRegister;
use crate::string_io::{AddressSize, StringIo, StringIoInformation};

/// The longest legal x86 instruction, in bytes.
pub const MAX_INSTRUCTION_LENGTH: usize = 15;

/// A decoded port I/O instruction.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub struct IoInstruction {
    /// IN/INS or OUT/OUTS.
    pub direction: IoDirection,
    /// The access (element) width.
    pub width: PortWidth,
    /// INS or OUTS.
    pub string: bool,
    /// A string instruction with an F3 or F2 prefix; always false for IN and OUT.
    pub rep: bool,
    /// DX or an immediate port.
    pub encoding: PortEncoding,
    /// The immediate port, for E4..E7.
    pub immediate_port: Option<u8>,
    /// 32-bit with a 0x67 prefix, else 64-bit. Only INS/OUTS use it.
    pub address_size: AddressSize,
    /// The last segment-override prefix. Only OUTS honours it; INS always writes through ES.
    pub segment_override: Option<SegmentRegister>,
    /// The total instruction length, prefixes included.
    pub length: u8,
}

/// What the decoder recognised at RIP.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum Instruction {
    /// IN, OUT, INS or OUTS.
    Io(IoInstruction),
    /// HLT (F4).
    Hlt {
        /// The total length.
        length: u8,
    },
    /// CPUID (0F A2).
    Cpuid {
        /// The total length.
        length: u8,
    },
    /// RDMSR (0F 32).
    Rdmsr {
        /// The total length.
        length: u8,
    },
    /// WRMSR (0F 30).
    Wrmsr {
        /// The total length.
        length: u8,
    },
    /// TDCALL (66 0F 01 CC).
    Tdcall {
        /// The total length.
        length: u8,
    },
    /// Anything else, including LOCK-prefixed forms of the above. The length is given only
    /// where the decoder knows it.
    Other {
        /// The total length, if known.
        length: Option<u8>,
    },
}

impl Instruction {
    /// The total length, if known.
    pub const fn length(&self) -> Option<u8> {
        match self {
            Instruction::Io(io) => Some(io.length),
            Instruction::Hlt { length }
            | Instruction::Cpuid { length }
            | Instruction::Rdmsr { length }
            | Instruction::Wrmsr { length }
            | Instruction::Tdcall { length } => Some(*length),
            Instruction::Other { length } => *length,
        }
    }
}

/// Why the bytes at RIP could not be decoded.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum DecodeError {
    /// No bytes at all.
    Empty,
    /// The bytes end before the instruction does; supply more (up to 15).
    Truncated,
    /// Prefixes push the instruction past 15 bytes: the processor raises #GP.
    TooLong,
}

#[derive(Default)]
struct Prefixes {
    operand_size: bool,
    address_size: bool,
    rep: Option<u8>,
    lock: bool,
    segment: Option<SegmentRegister>,
    rex: Option<u8>,
}

impl Prefixes {
    fn rex_w(&self) -> bool {
        matches!(self.rex, Some(rex) if rex & 0x08 != 0)
    }

    /// The width of the word/doubleword forms of the I/O instructions.
    fn io_width(&self) -> PortWidth {
        if self.rex_w() || !self.operand_size {
            PortWidth::Dword
        } else {
            PortWidth::Word
        }
    }
}

/// Decodes the instruction starting at `bytes[0]`. Only the first 15 bytes are looked at;
/// never panics.
pub fn decode(bytes: &[u8]) -> Result<Instruction, DecodeError> {
    if bytes.is_empty() {
        return Err(DecodeError::Empty);
    }
    // Running into the 15-byte limit is #GP whatever follows; running out of input first only
    // means the caller has to fetch more.
    let byte_at = |index: usize| -> Result<u8, DecodeError> {
        if index >= MAX_INSTRUCTION_LENGTH {
            Err(DecodeError::TooLong)
        } else {
            bytes.get(index).copied().ok_or(DecodeError::Truncated)
        }
    };

    let mut prefixes = Prefixes::default();
    let mut index = 0;
    let opcode = loop {
        let byte = byte_at(index)?;
        let legacy = match byte {
            0x66 => {
                prefixes.operand_size = true;
                true
            }
            0x67 => {
                prefixes.address_size = true;
                true
            }
            0xf2 | 0xf3 => {
                prefixes.rep = Some(byte);
                true
            }
            0xf0 => {
                prefixes.lock = true;
                true
            }
            0x64 => {
                prefixes.segment = Some(SegmentRegister::Fs);
                true
            }
            0x65 => {
                prefixes.segment = Some(SegmentRegister::Gs);
                true
            }
            0x26 | 0x2e | 0x36 | 0x3e => {
                // Null prefixes in 64-bit mode: they never displace an FS or GS override.
                if !matches!(prefixes.segment, Some(SegmentRegister::Fs | SegmentRegister::Gs)) {
                    prefixes.segment = Some(match byte {
                        0x26 => SegmentRegister::Es,
                        0x2e => SegmentRegister::Cs,
                        0x36 => SegmentRegister::Ss,
                        _ => SegmentRegister::Ds,
                    });
                }
                true
            }
            0x40..=0x4f => {
                prefixes.rex = Some(byte);
                false
            }
            _ => break byte,
        };
        if legacy {
            // A REX prefix only counts right before the opcode.
            prefixes.rex = None;
        }
        index += 1;
    };

    // Lengths are at most 15, checked by `byte_at` for every byte included.
    let length = |last_index: usize| (last_index + 1) as u8;
    let io = |direction, width, string, encoding, immediate_port, last_index| {
        Instruction::Io(IoInstruction {
            direction,
            width,
            string,
            rep: string && prefixes.rep.is_some(),
            encoding,
            immediate_port,
            address_size: if prefixes.address_size {
                AddressSize::Bits32
            } else {
                AddressSize::Bits64
            },
            segment_override: prefixes.segment,
            length: length(last_index),
        })
    };

    // In all three I/O opcode groups (E4..E7, EC..EF, 6C..6F) bit 0 selects byte or
    // word/doubleword and bit 1 selects IN or OUT.
    let io_direction = if opcode & 0x02 == 0 { IoDirection::In } else { IoDirection::Out };
    let io_width = if opcode & 0x01 == 0 { PortWidth::Byte } else { prefixes.io_width() };

    let instruction = match opcode {
        0xe4..=0xe7 => {
            let port = byte_at(index + 1)?;
            io(io_direction, io_width, false, PortEncoding::Immediate, Some(port), index + 1)
        }
        0xec..=0xef => io(io_direction, io_width, false, PortEncoding::Dx, None, index),
        0x6c..=0x6f => io(io_direction, io_width, true, PortEncoding::Dx, None, index),
        0xf4 => Instruction::Hlt { length: length(index) },
        0x0f => match byte_at(index + 1)? {
            0xa2 => Instruction::Cpuid { length: length(index + 1) },
            0x32 => Instruction::Rdmsr { length: length(index + 1) },
            0x30 => Instruction::Wrmsr { length: length(index + 1) },
            0x01 => {
                let modrm = byte_at(index + 2)?;
                if modrm == 0xcc && prefixes.operand_size && prefixes.rep.is_none() {
                    Instruction::Tdcall { length: length(index + 2) }
                } else {
                    Instruction::Other { length: None }
                }
            }
            _ => Instruction::Other { length: None },
        },
        _ => Instruction::Other { length: None },
    };

    if prefixes.lock && !matches!(instruction, Instruction::Other { .. }) {
        // #UD, not #VE: the model must let the processor deliver it.
        return Ok(Instruction::Other { length: instruction.length() });
    }
    Ok(instruction)
}

/// The VMX exit qualification the TDX module reports for `instr`, given DX at the time.
#[must_use]
pub const fn io_qualification(instr: &IoInstruction, port_from_dx: u16) -> IoExitQualification {
    let port = match instr.immediate_port {
        Some(port) => port as u16,
        None => port_from_dx,
    };
    IoExitQualification {
        width: instr.width,
        direction: instr.direction,
        string: instr.string,
        rep: instr.string && instr.rep,
        encoding: instr.encoding,
        port,
    }
}

impl IoInstruction {
    /// The string operation to emulate, for INS/OUTS.
    pub const fn string_io(&self, port_from_dx: u16) -> Option<StringIo> {
        if !self.string {
            return None;
        }
        Some(StringIo {
            direction: self.direction,
            width: self.width,
            port: port_from_dx,
            rep: self.rep,
            address_size: self.address_size,
        })
    }

    /// The VMX instruction-information field for INS/OUTS (`None` for IN/OUT, where the SDM
    /// leaves it undefined): the address size and, for OUTS, the source segment (DS unless
    /// overridden).
    pub const fn string_io_information(&self) -> Option<StringIoInformation> {
        if !self.string {
            return None;
        }
        let segment = match self.direction {
            IoDirection::In => None,
            IoDirection::Out => match self.segment_override {
                Some(segment) => Some(segment),
                None => Some(SegmentRegister::Ds),
            },
        };
        Some(StringIoInformation { address_size: self.address_size, segment })
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Empty => write!(f, "no instruction bytes"),
            DecodeError::Truncated => write!(f, "instruction bytes end before the instruction"),
            DecodeError::TooLong => write!(f, "instruction longer than 15 bytes"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // One positional argument per field keeps each table row on one readable line.
    #[allow(clippy::too_many_arguments)]
    fn io(
        direction: IoDirection,
        width: PortWidth,
        string: bool,
        rep: bool,
        immediate_port: Option<u8>,
        address_size: AddressSize,
        segment_override: Option<SegmentRegister>,
        length: u8,
    ) -> Instruction {
        Instruction::Io(IoInstruction {
            direction,
            width,
            string,
            rep,
            encoding: if immediate_port.is_some() {
                PortEncoding::Immediate
            } else {
                PortEncoding::Dx
            },
            immediate_port,
            address_size,
            segment_override,
            length,
        })
    }

    #[test]
    fn recognised_forms() {
        use AddressSize::{Bits32 as A32, Bits64 as A64};
        use IoDirection::{In, Out};
        use PortWidth::{Byte, Dword, Word};
        let table: &[(&[u8], Instruction)] = &[
            (&[0xec], io(In, Byte, false, false, None, A64, None, 1)),
            (&[0xed], io(In, Dword, false, false, None, A64, None, 1)),
            (&[0x66, 0xed], io(In, Word, false, false, None, A64, None, 2)),
            (&[0xe4, 0x21], io(In, Byte, false, false, Some(0x21), A64, None, 2)),
            (&[0xe5, 0x71], io(In, Dword, false, false, Some(0x71), A64, None, 2)),
            (&[0x66, 0xe5, 0x71], io(In, Word, false, false, Some(0x71), A64, None, 3)),
            (&[0xee], io(Out, Byte, false, false, None, A64, None, 1)),
            (&[0xef], io(Out, Dword, false, false, None, A64, None, 1)),
            (&[0x66, 0xef], io(Out, Word, false, false, None, A64, None, 2)),
            (&[0xe6, 0x80], io(Out, Byte, false, false, Some(0x80), A64, None, 2)),
            (&[0xe7, 0x80], io(Out, Dword, false, false, Some(0x80), A64, None, 2)),
            (&[0x66, 0xe7, 0xff], io(Out, Word, false, false, Some(0xff), A64, None, 3)),
            (&[0x6c], io(In, Byte, true, false, None, A64, None, 1)),
            (&[0x6d], io(In, Dword, true, false, None, A64, None, 1)),
            (&[0x66, 0x6d], io(In, Word, true, false, None, A64, None, 2)),
            (&[0xf3, 0x66, 0x6d], io(In, Word, true, true, None, A64, None, 3)),
            (&[0x66, 0xf3, 0x6d], io(In, Word, true, true, None, A64, None, 3)),
            (&[0x67, 0xf3, 0x6c], io(In, Byte, true, true, None, A32, None, 3)),
            (&[0x6e], io(Out, Byte, true, false, None, A64, None, 1)),
            (&[0x6f], io(Out, Dword, true, false, None, A64, None, 1)),
            (&[0xf3, 0x6f], io(Out, Dword, true, true, None, A64, None, 2)),
            (&[0xf2, 0x6e], io(Out, Byte, true, true, None, A64, None, 2)),
            (&[0x64, 0x6e], io(Out, Byte, true, false, None, A64, Some(SegmentRegister::Fs), 2)),
            (
                &[0x2e, 0x65, 0x6e],
                io(Out, Byte, true, false, None, A64, Some(SegmentRegister::Gs), 3),
            ),
            // In 64-bit mode ES/CS/SS/DS overrides never displace FS or GS (ve_decode_diff).
            (
                &[0x64, 0x26, 0x6f],
                io(Out, Dword, true, false, None, A64, Some(SegmentRegister::Fs), 3),
            ),
            (
                &[0x65, 0x2e, 0x36, 0x3e, 0x6e],
                io(Out, Byte, true, false, None, A64, Some(SegmentRegister::Gs), 5),
            ),
            (
                &[0x3e, 0x26, 0x6e],
                io(Out, Byte, true, false, None, A64, Some(SegmentRegister::Es), 3),
            ),
            // REP on IN/OUT has no effect and is not reported.
            (&[0xf3, 0xec], io(In, Byte, false, false, None, A64, None, 2)),
            // REX.W does not make an I/O instruction 64-bit, and wins over 0x66.
            (&[0x48, 0xed], io(In, Dword, false, false, None, A64, None, 2)),
            (&[0x66, 0x48, 0xed], io(In, Dword, false, false, None, A64, None, 3)),
            // A REX followed by a legacy prefix is ignored, so 0x66 decides.
            (&[0x48, 0x66, 0xed], io(In, Word, false, false, None, A64, None, 3)),
            (&[0x41, 0x6d], io(In, Dword, true, false, None, A64, None, 2)),
            (&[0xf4], Instruction::Hlt { length: 1 }),
            (&[0x0f, 0xa2], Instruction::Cpuid { length: 2 }),
            (&[0x0f, 0x32], Instruction::Rdmsr { length: 2 }),
            (&[0x0f, 0x30], Instruction::Wrmsr { length: 2 }),
            (&[0x48, 0x0f, 0x30], Instruction::Wrmsr { length: 3 }),
            (&[0x66, 0x0f, 0x01, 0xcc], Instruction::Tdcall { length: 4 }),
            (&[0x66, 0x48, 0x0f, 0x01, 0xcc], Instruction::Tdcall { length: 5 }),
            // Not TDCALL: no mandatory 0x66, or F3 overriding it, or another ModRM.
            (&[0x0f, 0x01, 0xcc], Instruction::Other { length: None }),
            (&[0x66, 0xf3, 0x0f, 0x01, 0xcc], Instruction::Other { length: None }),
            (&[0x66, 0x0f, 0x01, 0xc1], Instruction::Other { length: None }),
            // LOCK makes every recognised form #UD.
            (&[0xf0, 0xec], Instruction::Other { length: Some(2) }),
            (&[0xf0, 0x0f, 0xa2], Instruction::Other { length: Some(3) }),
            (&[0xf0, 0x66, 0x0f, 0x01, 0xcc], Instruction::Other { length: Some(5) }),
            (&[0x90], Instruction::Other { length: None }),
            (&[0x0f, 0x0b], Instruction::Other { length: None }),
            (&[0x48, 0x89, 0xc8], Instruction::Other { length: None }),
        ];
        for (bytes, expected) in table {
            assert_eq!(decode(bytes), Ok(*expected), "bytes {bytes:02x?}");
            // Trailing bytes belong to the next instruction and change nothing.
            let mut longer = bytes.to_vec();
            longer.extend_from_slice(&[0xec, 0x0f, 0xa2, 0x90]);
            assert_eq!(decode(&longer), Ok(*expected), "bytes {longer:02x?}");
        }
    }

    #[test]
    fn errors() {
        assert_eq!(decode(&[]), Err(DecodeError::Empty));
        for truncated in [
            &[0x66][..],
            &[0xe4],
            &[0x66, 0xe7],
            &[0x0f],
            &[0x0f, 0x01],
            &[0x66, 0x0f, 0x01],
            &[0x48],
        ] {
            assert_eq!(decode(truncated), Err(DecodeError::Truncated), "bytes {truncated:02x?}");
        }
        // Fourteen prefixes and a one-byte opcode make exactly 15 bytes: legal.
        let mut fifteen = vec![0x66; 14];
        fifteen.push(0xec);
        assert_eq!(decode(&fifteen).unwrap().length(), Some(15));
        // One more prefix, or an immediate after fourteen prefixes, is #GP.
        let mut sixteen = vec![0x66; 15];
        sixteen.push(0xec);
        assert_eq!(decode(&sixteen), Err(DecodeError::TooLong));
        let mut with_immediate = vec![0x66; 14];
        with_immediate.extend_from_slice(&[0xe4, 0x21]);
        assert_eq!(decode(&with_immediate), Err(DecodeError::TooLong));
        assert_eq!(decode(&[0x66; 20]), Err(DecodeError::TooLong));
        // With fewer than 15 bytes of prefixes the input is merely short.
        assert_eq!(decode(&[0x66; 14]), Err(DecodeError::Truncated));
    }

    #[test]
    fn qualifications_for_the_model() {
        let Ok(Instruction::Io(in_al_imm)) = decode(&[0xe4, 0x71]) else { panic!() };
        // The immediate wins over whatever DX holds.
        assert_eq!(io_qualification(&in_al_imm, 0xbeef).encode(), 0x0071_0048);
        let Ok(Instruction::Io(out_dx_eax)) = decode(&[0xef]) else { panic!() };
        assert_eq!(io_qualification(&out_dx_eax, 0x3f8).encode(), 0x03f8_0003);
        let Ok(Instruction::Io(rep_insw)) = decode(&[0xf3, 0x66, 0x6d]) else { panic!() };
        assert_eq!(io_qualification(&rep_insw, 0x1f0).encode(), 0x01f0_0039);
        assert_eq!(
            rep_insw.string_io(0x1f0),
            Some(StringIo {
                direction: IoDirection::In,
                width: PortWidth::Word,
                port: 0x1f0,
                rep: true,
                address_size: AddressSize::Bits64,
            })
        );
        assert_eq!(
            rep_insw.string_io_information(),
            Some(StringIoInformation { address_size: AddressSize::Bits64, segment: None })
        );
        let Ok(Instruction::Io(outs)) = decode(&[0x67, 0x6e]) else { panic!() };
        assert_eq!(
            outs.string_io_information(),
            Some(StringIoInformation {
                address_size: AddressSize::Bits32,
                segment: Some(SegmentRegister::Ds)
            })
        );
        assert_eq!(in_al_imm.string_io(0), None);
        assert_eq!(in_al_imm.string_io_information(), None);
    }

    /// Bytes that exercise the decoder's branches far more often than uniform bytes do.
    fn interesting_byte() -> impl Strategy<Value = u8> {
        prop_oneof![
            any::<u8>(),
            prop::sample::select(vec![
                0x66, 0x67, 0xf2, 0xf3, 0xf0, 0x2e, 0x36, 0x3e, 0x26, 0x64, 0x65, 0x40, 0x48, 0x4f,
                0xe4, 0xe5, 0xe6, 0xe7, 0xec, 0xed, 0xee, 0xef, 0x6c, 0x6d, 0x6e, 0x6f, 0xf4, 0x0f,
                0x01, 0xcc, 0xa2, 0x30, 0x32,
            ]),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(20000))]

        #[test]
        fn decode_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..=20)) {
            let _ = decode(&bytes);
        }

        #[test]
        fn decoded_lengths_are_consistent(
            bytes in prop::collection::vec(interesting_byte(), 0..=20),
            dx: u16,
        ) {
            let Ok(instruction) = decode(&bytes) else { return Ok(()); };
            if let Some(length) = instruction.length() {
                let length = length as usize;
                prop_assert!((1..=MAX_INSTRUCTION_LENGTH).contains(&length));
                prop_assert!(length <= bytes.len());
                // The instruction is fully determined by its own bytes.
                prop_assert_eq!(decode(&bytes[..length]), Ok(instruction));
                if length > 1 {
                    prop_assert_eq!(decode(&bytes[..length - 1]), Err(DecodeError::Truncated));
                }
            }
            if let Instruction::Io(io) = instruction {
                let qualification = io_qualification(&io, dx);
                let raw = qualification.encode();
                prop_assert_eq!(IoExitQualification::decode(raw), Ok(qualification));
                prop_assert_eq!(qualification.string, io.string);
                prop_assert!(!qualification.rep || qualification.string);
                if let Some(info) = io.string_io_information() {
                    let raw = info.encode();
                    prop_assert_eq!(StringIoInformation::decode(raw, io.direction), Ok(info));
                }
            }
        }
    }
}
