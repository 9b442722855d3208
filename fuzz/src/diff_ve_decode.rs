//! The #VE handler's decoder (tdx-ve `decode`) against iced-x86, the decoder softtdx and
//! td-audit use, on arbitrary bytes at RIP.
//!
//! Where ours recognises an instruction (port I/O, HLT, CPUID, RDMSR, WRMSR, TDCALL), iced must
//! decode the same instruction with the same length, direction, access width, port operand,
//! REP, address size and (for OUTS) segment. Where iced decodes one of those instructions
//! without LOCK, ours must recognise it. Where ours refuses (LOCK: #UD; more than 15 bytes:
//! #GP; bytes that end early), iced must find the bytes invalid too.

use iced_x86::{
    Decoder, DecoderError, DecoderOptions, Instruction as Iced, Mnemonic, OpKind, Register,
};
use tdx_ve::decode::{decode, DecodeError, Instruction, MAX_INSTRUCTION_LENGTH};
use tdx_ve::io::{IoDirection, PortWidth};
use tdx_ve::regs::SegmentRegister;
use tdx_ve::string_io::AddressSize;

/// What both decoders must agree on, in one comparable shape.
#[derive(Debug, PartialEq, Eq)]
pub enum Facts {
    Io {
        direction: IoDirection,
        width: PortWidth,
        string: bool,
        rep: bool,
        immediate_port: Option<u8>,
        /// INS/OUTS only.
        address_size: Option<AddressSize>,
        /// OUTS only: the segment its source is read through.
        segment: Option<SegmentRegister>,
        length: usize,
    },
    Other {
        mnemonic: &'static str,
        length: usize,
    },
}

/// Our decoder's facts, for the instructions it recognises.
pub fn ours(instruction: &Instruction) -> Option<Facts> {
    let other = |mnemonic, length: u8| Some(Facts::Other { mnemonic, length: length.into() });
    match *instruction {
        Instruction::Io(io) => {
            let info = io.string_io_information();
            Some(Facts::Io {
                direction: io.direction,
                width: io.width,
                string: io.string,
                rep: io.rep,
                immediate_port: io.immediate_port,
                address_size: info.map(|i| i.address_size),
                segment: info.and_then(|i| i.segment),
                length: io.length.into(),
            })
        }
        Instruction::Hlt { length } => other("hlt", length),
        Instruction::Cpuid { length } => other("cpuid", length),
        Instruction::Rdmsr { length } => other("rdmsr", length),
        Instruction::Wrmsr { length } => other("wrmsr", length),
        Instruction::Tdcall { length } => other("tdcall", length),
        Instruction::Other { .. } => None,
    }
}

fn width_of(register: Register) -> Option<PortWidth> {
    match register {
        Register::AL => Some(PortWidth::Byte),
        Register::AX => Some(PortWidth::Word),
        Register::EAX => Some(PortWidth::Dword),
        _ => None,
    }
}

fn segment_of(register: Register) -> Option<SegmentRegister> {
    Some(match register {
        Register::ES => SegmentRegister::Es,
        Register::CS => SegmentRegister::Cs,
        Register::SS => SegmentRegister::Ss,
        Register::DS => SegmentRegister::Ds,
        Register::FS => SegmentRegister::Fs,
        Register::GS => SegmentRegister::Gs,
        _ => return None,
    })
}

/// iced's facts, for the instructions ours should recognise; `None` for anything else.
pub fn iced(instruction: &Iced) -> Option<Facts> {
    use Mnemonic as M;
    let length = instruction.len();
    let string_width = |w| Some((w, true));
    let (direction, (width, string)) = match instruction.mnemonic() {
        M::In => (IoDirection::In, (width_of(instruction.op0_register())?, false)),
        M::Out => (IoDirection::Out, (width_of(instruction.op1_register())?, false)),
        M::Insb => (IoDirection::In, string_width(PortWidth::Byte)?),
        M::Insw => (IoDirection::In, string_width(PortWidth::Word)?),
        M::Insd => (IoDirection::In, string_width(PortWidth::Dword)?),
        M::Outsb => (IoDirection::Out, string_width(PortWidth::Byte)?),
        M::Outsw => (IoDirection::Out, string_width(PortWidth::Word)?),
        M::Outsd => (IoDirection::Out, string_width(PortWidth::Dword)?),
        M::Hlt => return Some(Facts::Other { mnemonic: "hlt", length }),
        M::Cpuid => return Some(Facts::Other { mnemonic: "cpuid", length }),
        M::Rdmsr => return Some(Facts::Other { mnemonic: "rdmsr", length }),
        M::Wrmsr => return Some(Facts::Other { mnemonic: "wrmsr", length }),
        M::Tdcall => return Some(Facts::Other { mnemonic: "tdcall", length }),
        _ => return None,
    };
    let port_operand = if direction == IoDirection::In { 1 } else { 0 };
    let immediate_port = match instruction.op_kind(port_operand) {
        OpKind::Immediate8 => Some(instruction.immediate8()),
        _ => None,
    };
    let (address_size, segment) = if string {
        let memory_operand = 1 - port_operand;
        let address_size = match instruction.op_kind(memory_operand) {
            OpKind::MemoryESEDI | OpKind::MemorySegESI => AddressSize::Bits32,
            OpKind::MemoryESRDI | OpKind::MemorySegRSI => AddressSize::Bits64,
            _ => return None,
        };
        let segment = match direction {
            IoDirection::In => None,
            IoDirection::Out => Some(segment_of(instruction.memory_segment())?),
        };
        (Some(address_size), segment)
    } else {
        (None, None)
    };
    Some(Facts::Io {
        direction,
        width,
        string,
        rep: string && (instruction.has_rep_prefix() || instruction.has_repne_prefix()),
        immediate_port,
        address_size,
        segment,
        length,
    })
}

/// One comparison; `Err` says how the decoders disagree.
pub fn compare(bytes: &[u8]) -> Result<(), String> {
    // iced sees every byte, so that it, too, can tell "longer than 15" from "ends early".
    let window = &bytes[..bytes.len().min(MAX_INSTRUCTION_LENGTH + 1)];
    let mut decoder = Decoder::with_ip(64, window, 0, DecoderOptions::NONE);
    let theirs = decoder.decode();
    let their_error = decoder.last_error();
    let their_facts = if theirs.is_invalid() { None } else { iced(&theirs) };
    let mine = decode(bytes);
    let shown = || format!("bytes {:02x?}: ours {mine:?}, iced {theirs} ({their_error:?})", window);
    match mine {
        Ok(instruction) => match ours(&instruction) {
            Some(my_facts) => {
                if their_facts.as_ref() != Some(&my_facts) {
                    return Err(format!("{}: {my_facts:?} vs {their_facts:?}", shown()));
                }
            }
            None => {
                if let Some(their_facts) = their_facts {
                    if !theirs.has_lock_prefix() {
                        return Err(format!("{}: ours misses {their_facts:?}", shown()));
                    }
                }
                if instruction.length().is_some() && !theirs.is_invalid() {
                    // Ours knows the length only of the LOCK forms, which are #UD.
                    return Err(format!("{}: a LOCK form iced finds valid", shown()));
                }
            }
        },
        Err(DecodeError::Empty) => assert!(bytes.is_empty()),
        Err(DecodeError::Truncated) | Err(DecodeError::TooLong) => {
            if their_facts.is_some() {
                return Err(format!("{}: ours refuses what iced decodes", shown()));
            }
            if mine == Err(DecodeError::TooLong) && their_error == DecoderError::NoMoreBytes {
                return Err(format!("{}: ours #GP, iced wants more bytes", shown()));
            }
        }
    }
    Ok(())
}

/// The fuzz body.
pub fn run(data: &[u8]) {
    if let Err(disagreement) = compare(data) {
        panic!("decoders disagree: {disagreement}");
    }
}
