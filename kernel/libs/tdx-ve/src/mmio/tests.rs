//! Host tests of the MMIO decoder: hand-checked encodings, and property tests against iced-x86
//! (length, operands, linear address, immediate) and against the register rules of the SDM
//! applied to iced-x86's register names.

use super::*;
use crate::regs::RegisterState;
use iced_x86::{Code, Decoder, DecoderOptions, OpKind, Register};
use proptest::prelude::*;

fn reg(gpr: Gpr, size: AccessSize) -> RegisterOperand {
    RegisterOperand { gpr, size, high_byte: false }
}

fn high(gpr: Gpr) -> RegisterOperand {
    RegisterOperand { gpr, size: AccessSize::Byte, high_byte: true }
}

fn mem(base: Option<Gpr>, index: Option<(Gpr, u8)>, displacement: i64) -> MemoryOperand {
    MemoryOperand {
        base,
        index,
        displacement,
        rip_relative: false,
        segment: None,
        address_width: AddressWidth::Bits64,
    }
}

#[test]
fn hand_checked_forms() {
    use AccessSize::*;
    use Gpr::*;
    let load = |destination, extension| MmioOperation::Load { destination, extension };
    let table: &[(&[u8], MmioOperation, AccessSize, MemoryOperand, u8)] = &[
        // mov [rdi], al
        (
            &[0x88, 0x07],
            MmioOperation::StoreRegister(reg(Rax, Byte)),
            Byte,
            mem(Some(Rdi), None, 0),
            2,
        ),
        // mov [rdi], ah (no REX) and mov [rdi], spl (REX 0x40)
        (&[0x88, 0x27], MmioOperation::StoreRegister(high(Rax)), Byte, mem(Some(Rdi), None, 0), 2),
        (
            &[0x40, 0x88, 0x27],
            MmioOperation::StoreRegister(reg(Rsp, Byte)),
            Byte,
            mem(Some(Rdi), None, 0),
            3,
        ),
        // mov [rbx+8], bh ; mov [r9], r12b
        (
            &[0x88, 0x7b, 0x08],
            MmioOperation::StoreRegister(high(Rbx)),
            Byte,
            mem(Some(Rbx), None, 8),
            3,
        ),
        (
            &[0x45, 0x88, 0x21],
            MmioOperation::StoreRegister(reg(R12, Byte)),
            Byte,
            mem(Some(R9), None, 0),
            3,
        ),
        // mov [rax], ecx / cx / rcx
        (
            &[0x89, 0x08],
            MmioOperation::StoreRegister(reg(Rcx, Dword)),
            Dword,
            mem(Some(Rax), None, 0),
            2,
        ),
        (
            &[0x66, 0x89, 0x08],
            MmioOperation::StoreRegister(reg(Rcx, Word)),
            Word,
            mem(Some(Rax), None, 0),
            3,
        ),
        (
            &[0x48, 0x89, 0x08],
            MmioOperation::StoreRegister(reg(Rcx, Qword)),
            Qword,
            mem(Some(Rax), None, 0),
            3,
        ),
        // REX.W wins over 0x66.
        (
            &[0x66, 0x48, 0x89, 0x08],
            MmioOperation::StoreRegister(reg(Rcx, Qword)),
            Qword,
            mem(Some(Rax), None, 0),
            4,
        ),
        // A REX before a legacy prefix is ignored: 0x66 decides, and ch is AH..BH again.
        (
            &[0x48, 0x66, 0x89, 0x08],
            MmioOperation::StoreRegister(reg(Rcx, Word)),
            Word,
            mem(Some(Rax), None, 0),
            4,
        ),
        (
            &[0x40, 0x3e, 0x88, 0x28],
            MmioOperation::StoreRegister(high(Rcx)),
            Byte,
            mem(Some(Rax), None, 0),
            4,
        ),
        // mov byte [rax], 0x80 ; mov word [rax], 0x8001 ; mov dword [rax+rcx*4-4], 0xfffffff0
        (
            &[0xc6, 0x00, 0x80],
            MmioOperation::StoreImmediate(0x80),
            Byte,
            mem(Some(Rax), None, 0),
            3,
        ),
        (
            &[0x66, 0xc7, 0x00, 0x01, 0x80],
            MmioOperation::StoreImmediate(0x8001),
            Word,
            mem(Some(Rax), None, 0),
            5,
        ),
        (
            &[0xc7, 0x44, 0x88, 0xfc, 0xf0, 0xff, 0xff, 0xff],
            MmioOperation::StoreImmediate(0xffff_fff0),
            Dword,
            mem(Some(Rax), Some((Rcx, 4)), -4),
            8,
        ),
        // mov qword [rax], -16: imm32 sign-extended to 64.
        (
            &[0x48, 0xc7, 0x00, 0xf0, 0xff, 0xff, 0xff],
            MmioOperation::StoreImmediate(0xffff_ffff_ffff_fff0),
            Qword,
            mem(Some(Rax), None, 0),
            7,
        ),
        // mov dh, [rsi] ; mov r8d, [r13+0] ; mov rax, [rsp]
        (&[0x8a, 0x36], load(high(Rdx), Extension::None), Byte, mem(Some(Rsi), None, 0), 2),
        (
            &[0x45, 0x8b, 0x45, 0x00],
            load(reg(R8, Dword), Extension::None),
            Dword,
            mem(Some(R13), None, 0),
            4,
        ),
        (
            &[0x48, 0x8b, 0x04, 0x24],
            load(reg(Rax, Qword), Extension::None),
            Qword,
            mem(Some(Rsp), None, 0),
            4,
        ),
        // movzx eax, byte [rdx] ; movzx r10, word [rbx] ; movsx cx, byte [rdi] ; movsx esi, word [rcx]
        (
            &[0x0f, 0xb6, 0x02],
            load(reg(Rax, Dword), Extension::Zero),
            Byte,
            mem(Some(Rdx), None, 0),
            3,
        ),
        (
            &[0x4c, 0x0f, 0xb7, 0x13],
            load(reg(R10, Qword), Extension::Zero),
            Word,
            mem(Some(Rbx), None, 0),
            4,
        ),
        (
            &[0x66, 0x0f, 0xbe, 0x0f],
            load(reg(Rcx, Word), Extension::Sign),
            Byte,
            mem(Some(Rdi), None, 0),
            4,
        ),
        (
            &[0x0f, 0xbf, 0x31],
            load(reg(Rsi, Dword), Extension::Sign),
            Word,
            mem(Some(Rcx), None, 0),
            3,
        ),
        // SIB without base (mod 00, base 101): disp32; index 100 without REX.X is none, with it R12.
        (
            &[0x8b, 0x04, 0x25, 0x00, 0x00, 0xc0, 0xfe],
            load(reg(Rax, Dword), Extension::None),
            Dword,
            mem(None, None, -0x0140_0000),
            7,
        ),
        (
            &[0x42, 0x8b, 0x04, 0x25, 0x10, 0, 0, 0],
            load(reg(Rax, Dword), Extension::None),
            Dword,
            mem(None, Some((R12, 1)), 0x10),
            8,
        ),
        // REX.B with SIB base 101 and mod 00 is still "no base".
        (
            &[0x41, 0x8b, 0x04, 0x25, 0x10, 0, 0, 0],
            load(reg(Rax, Dword), Extension::None),
            Dword,
            mem(None, None, 0x10),
            8,
        ),
    ];
    for (bytes, operation, size, memory, length) in table {
        let decoded = decode_mmio(bytes).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(decoded.operation, *operation, "bytes {bytes:02x?}");
        assert_eq!(decoded.access_size, *size, "bytes {bytes:02x?}");
        assert_eq!(decoded.memory, *memory, "bytes {bytes:02x?}");
        assert_eq!(decoded.length, *length, "bytes {bytes:02x?}");
        let mut longer = bytes.to_vec();
        longer.extend_from_slice(&[0x0f, 0xb6, 0x90]);
        assert_eq!(decode_mmio(&longer), Ok(decoded));
    }
}

#[test]
fn rip_relative_segments_and_address_size() {
    // mov eax, [rip+0x100]
    let i = decode_mmio(&[0x8b, 0x05, 0x00, 0x01, 0x00, 0x00]).unwrap();
    assert!(i.memory.rip_relative);
    let mut regs = RegisterState { rip: 0x1000, ..Default::default() };
    assert_eq!(i.linear_address(&regs, SegmentBases::default()), 0x1106);
    // REX.B does not turn it into [r13].
    let i = decode_mmio(&[0x41, 0x8b, 0x05, 0x00, 0x01, 0x00, 0x00]).unwrap();
    assert!(i.memory.rip_relative && i.memory.base.is_none());
    // mov fs:[rax], ecx uses FS's base; ds: is ignored; two overrides are refused.
    let i = decode_mmio(&[0x64, 0x89, 0x08]).unwrap();
    regs.gprs[0] = 0x10;
    let bases = SegmentBases { fs: 0x7000, gs: 0x9000 };
    assert_eq!(i.linear_address(&regs, bases), 0x7010);
    let i = decode_mmio(&[0x3e, 0x89, 0x08]).unwrap();
    assert_eq!(i.linear_address(&regs, bases), 0x10);
    let e = decode_mmio(&[0x3e, 0x65, 0x89, 0x08]).unwrap_err();
    assert_eq!(e.kind, MmioDecodeErrorKind::SegmentOverrides);
    // 32-bit addressing wraps and zero-extends: mov [eax+0x20], cl
    let i = decode_mmio(&[0x67, 0x88, 0x48, 0x20]).unwrap();
    regs.gprs[0] = 0x1_ffff_fff0;
    assert_eq!(i.linear_address(&regs, SegmentBases::default()), 0x10);
}

#[test]
fn refusals_name_the_bytes() {
    use MmioDecodeErrorKind::*;
    let cases: &[(&[u8], MmioDecodeErrorKind)] = &[
        (&[], Empty),
        (&[0xa1, 0, 0, 0, 0, 0, 0, 0, 0], Unsupported), // mov eax, moffs
        (&[0xa5], Unsupported),                         // movsd
        (&[0x48, 0x63, 0x07], Unsupported),             // movsxd
        (&[0x87, 0x07], Unsupported),                   // xchg
        (&[0x39, 0x07], Unsupported),                   // cmp
        (&[0x0f, 0xc3, 0x07], Unsupported),             // movnti
        (&[0x89, 0xc8], RegisterOperand),               // mov eax, ecx
        (&[0xc7, 0x08, 0, 0, 0, 0], Unsupported),       // c7 /1
        (&[0xf0, 0x89, 0x07], Prefix),
        (&[0xf3, 0x88, 0x07], Prefix), // xrelease
        (&[0x89], Truncated),
        (&[0x8b, 0x05, 0x00], Truncated),
        (&[0xc7, 0x00, 0x01, 0x02, 0x03], Truncated),
        (&[0x0f], Truncated),
    ];
    for (bytes, kind) in cases {
        let e = decode_mmio(bytes).unwrap_err();
        assert_eq!(e.kind, *kind, "bytes {bytes:02x?}");
        assert_eq!(e.bytes(), &bytes[..bytes.len().min(15)]);
    }
    let e = decode_mmio(&[0x87, 0x07]).unwrap_err();
    assert_eq!(format!("{e}"), "not an emulated MMIO instruction: bytes 87 07");
    // Nine prefixes make a 15-byte mov [rax+disp32], eax; one more is #GP.
    let mut fifteen = vec![0x66; 9];
    fifteen.extend_from_slice(&[0x89, 0x80, 1, 2, 3, 4]);
    assert_eq!(decode_mmio(&fifteen).unwrap().length, 15);
    let mut sixteen = vec![0x66; 10];
    sixteen.extend_from_slice(&[0x89, 0x80, 1, 2, 3, 4]);
    assert_eq!(decode_mmio(&sixteen).unwrap_err().kind, TooLong);
}

#[test]
fn register_writes_follow_the_sdm() {
    let start = 0x1122_3344_5566_7788u64;
    let run = |bytes: &[u8], data: u64| {
        let mut regs = RegisterState { gprs: [start; 16], ..Default::default() };
        decode_mmio(bytes).unwrap().complete_read(&mut regs, data);
        regs.gprs
    };
    // movzx eax, byte [rdx]: bits 63:32 cleared.
    assert_eq!(run(&[0x0f, 0xb6, 0x02], 0xffff_ff80)[0], 0x80);
    // movsx eax, byte [rdx]: sign-extended to 32 bits, zero above.
    assert_eq!(run(&[0x0f, 0xbe, 0x02], 0x80)[0], 0xffff_ff80);
    // movsx rax, word [rdx]
    assert_eq!(run(&[0x48, 0x0f, 0xbf, 0x02], 0x8000)[0], 0xffff_ffff_ffff_8000);
    // movzx ax, byte [rdx]: merge into 15:0.
    assert_eq!(run(&[0x66, 0x0f, 0xb6, 0x02], 0x1ff)[0], 0x1122_3344_5566_00ff);
    // mov al / mov ah, byte [rdx]
    assert_eq!(run(&[0x8a, 0x02], 0xab)[0], 0x1122_3344_5566_77ab);
    assert_eq!(run(&[0x8a, 0x22], 0xab)[0], 0x1122_3344_5566_ab88);
    // mov ah with REX is spl.
    let regs = run(&[0x40, 0x8a, 0x22], 0xab);
    assert_eq!((regs[0], regs[4]), (start, 0x1122_3344_5566_77ab));
    // mov eax, [rdx]: zero-extended; the host's bits above the width are ignored.
    assert_eq!(run(&[0x8b, 0x02], 0xdead_beef_0000_0001)[0], 1);
    // Stores leave registers alone.
    assert_eq!(run(&[0x89, 0x02], 5), [start; 16]);
}

// Property tests against iced-x86.

/// The iced-x86 codes that are ours, with a memory operand.
fn is_our_code(code: Code) -> bool {
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

/// iced-x86's register as (GPR, size, high byte).
fn iced_register(register: Register) -> RegisterOperand {
    let high_byte = matches!(register, Register::AH | Register::CH | Register::DH | Register::BH);
    let full = register.full_register();
    let number = full as u32 - Register::RAX as u32;
    assert!(number < 16, "{register:?}");
    let size = AccessSize::from_bytes(register.size() as u64).unwrap();
    RegisterOperand { gpr: Gpr::ALL[number as usize], size, high_byte }
}

/// The value of an iced-x86 register (any size) in `regs`, or a segment base.
fn iced_value(regs: &RegisterState, bases: SegmentBases, register: Register) -> Option<u64> {
    Some(match register {
        Register::ES | Register::CS | Register::SS | Register::DS => 0,
        Register::FS => bases.fs,
        Register::GS => bases.gs,
        Register::RIP | Register::EIP => regs.rip,
        _ => iced_register(register).read(regs),
    })
}

/// The SDM rule, written from iced-x86's register name: what `value` written to `register`
/// leaves in the 64-bit register.
fn sdm_write(old: u64, register: Register, value: u64) -> u64 {
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

fn interesting_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        3 => any::<u8>(),
        2 => prop::sample::select(vec![
            0x66, 0x67, 0xf2, 0xf3, 0xf0, 0x2e, 0x36, 0x3e, 0x26, 0x64, 0x65, 0x40, 0x41, 0x44,
            0x45, 0x48, 0x4c, 0x4f, 0x42,
        ]),
    ]
}

fn opcode() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::sample::select(vec![
            0x88u8, 0x89, 0x8a, 0x8b, 0xc6, 0xc7, 0xa1, 0xa3, 0x63, 0x87, 0x8c, 0x8e, 0xa4
        ])
        .prop_map(|b| vec![b]),
        prop::sample::select(vec![0xb6u8, 0xb7, 0xbe, 0xbf, 0xb8, 0xc3, 0x10])
            .prop_map(|b| vec![0x0f, b]),
    ]
}

/// Prefixes, an opcode, and enough random bytes after it for any ModRM/SIB/disp/imm.
fn instruction_bytes() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::collection::vec(interesting_byte(), 0..4),
        opcode(),
        prop::collection::vec(any::<u8>(), 0..12),
        prop::sample::select(vec![0u8, 1, 2]),
    )
        .prop_map(|(prefixes, opcode, rest, memory_mode)| {
            let mut bytes = prefixes;
            bytes.extend_from_slice(&opcode);
            let mut rest = rest;
            // Mostly memory operands, so that the interesting paths are taken.
            if let Some(modrm) = rest.first_mut() {
                if *modrm >> 6 == 3 && memory_mode < 2 {
                    *modrm = (*modrm & 0x3f) | (memory_mode << 6);
                }
            }
            bytes.extend_from_slice(&rest);
            bytes
        })
}

fn registers() -> impl Strategy<Value = RegisterState> {
    (prop::array::uniform16(any::<u64>()), any::<u64>()).prop_map(|(gprs, rip)| RegisterState {
        gprs,
        rip: rip & 0x0000_7fff_ffff_ffff,
        rflags: 2,
    })
}

proptest! {
    // No regression file: the `broken-mmio-movzx` feature makes these fail on purpose.
    #![proptest_config(ProptestConfig {
        cases: 20000,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn agrees_with_iced(
        bytes in instruction_bytes(),
        regs in registers(),
        fs: u64,
        gs: u64,
        data: u64,
    ) {
        let bases = SegmentBases { fs, gs };
        let mut decoder = Decoder::with_ip(64, &bytes, regs.rip, DecoderOptions::NONE);
        let iced = decoder.decode();
        let iced_ok = !iced.is_invalid() && iced.len() <= bytes.len();
        let memory_operand = (0..iced.op_count()).find(|&i| iced.op_kind(i) == OpKind::Memory);
        let ours = decode_mmio(&bytes);
        let refused_prefix = iced.has_lock_prefix()
            || iced.has_rep_prefix()
            || iced.has_repne_prefix()
            || iced.has_xacquire_prefix()
            || iced.has_xrelease_prefix()
            || bytes[..iced.len().min(bytes.len())].iter().any(|b| matches!(b, 0xf0 | 0xf2 | 0xf3));
        match ours {
            Ok(decoded) => {
                prop_assert!(iced_ok, "ours accepted {bytes:02x?}, iced did not");
                prop_assert!(is_our_code(iced.code()), "ours accepted {:?} {bytes:02x?}", iced.code());
                prop_assert_eq!(decoded.length as usize, iced.len());
                let memory = memory_operand.unwrap();
                prop_assert_eq!(decoded.access_size.bytes() as usize, iced.memory_size().size());
                prop_assert_eq!(decoded.memory.rip_relative, iced.is_ip_rel_memory_operand());
                let address = iced.virtual_address(memory, 0, |r, _, _| iced_value(&regs, bases, r));
                prop_assert_eq!(Some(decoded.linear_address(&regs, bases)), address, "{:02x?}", bytes);
                prop_assert_eq!(decoded.is_write(), memory == 0);
                let other = 1 - memory;
                match iced.op_kind(other) {
                    OpKind::Register => {
                        let register = iced.op_register(other);
                        if decoded.is_write() {
                            let value = iced_value(&regs, bases, register).unwrap();
                            prop_assert_eq!(decoded.write_data(&regs), Some(value));
                        } else {
                            // What the read leaves in the destination, by the SDM rule on
                            // iced-x86's register name.
                            let masked = data & decoded.access_size.mask();
                            let extended = match iced.mnemonic() {
                                iced_x86::Mnemonic::Movsx => decoded.access_size.sign_extend(masked),
                                _ => masked,
                            };
                            let full = iced_register(register).gpr;
                            let expected = sdm_write(regs.gpr(full), register, extended);
                            let mut after = regs;
                            decoded.complete_read(&mut after, data);
                            let mut reference = regs;
                            reference.set_gpr(full, expected);
                            prop_assert_eq!(after, reference, "{:02x?} {:?}", bytes, register);
                        }
                    }
                    _ => {
                        prop_assert!(decoded.is_write());
                        let immediate = iced.immediate(other) & decoded.access_size.mask();
                        prop_assert_eq!(decoded.write_data(&regs), Some(immediate));
                    }
                }
            }
            Err(error) => {
                prop_assert!(error.bytes().len() <= MAX_INSTRUCTION_LENGTH);
                if iced_ok && is_our_code(iced.code()) && memory_operand.is_some() {
                    // iced-x86 sees one of ours: only a refused prefix or several segment
                    // overrides may make us say no.
                    let segment_overrides = bytes[..iced.len()]
                        .iter()
                        .take_while(|b| !matches!(b, 0x88..=0x8b | 0xc6 | 0xc7 | 0x0f))
                        .filter(|b| matches!(b, 0x26 | 0x2e | 0x36 | 0x3e | 0x64 | 0x65))
                        .count();
                    prop_assert!(
                        (error.kind == MmioDecodeErrorKind::Prefix && refused_prefix)
                            || (error.kind == MmioDecodeErrorKind::SegmentOverrides
                                && segment_overrides > 1),
                        "refused {:?} for {:?} {:02x?}", error.kind, iced.code(), bytes
                    );
                }
            }
        }
    }

    /// The short path answers only for forms the general decoder accepts, and then exactly
    /// as it does; given 7 bytes, it answers for every plain form (optional REX, MOV 89/8B,
    /// base register, no SIB, not RIP-relative).
    #[test]
    fn plain_path_agrees_with_the_general_decoder(bytes in instruction_bytes()) {
        let general = decode_general(&bytes);
        let Some(first) = bytes.first_chunk::<PLAIN_MOV_MAX_LENGTH>() else {
            return Ok(());
        };
        let plain = decode_plain_mov(first);
        if let Some(plain) = plain {
            prop_assert_eq!(Ok(plain), general, "{:02x?}", bytes);
        }
        let at = usize::from(bytes[0] & 0xf0 == 0x40);
        let plain_form = matches!(bytes[at], 0x89 | 0x8b)
            && bytes[at + 1] >> 6 != 3
            && bytes[at + 1] & 7 != 4
            && bytes[at + 1] & 0xc7 != 5;
        if plain_form && general.is_ok() {
            prop_assert!(plain.is_some(), "{:02x?}", bytes);
        }
    }

    #[test]
    fn never_panics(bytes in prop::collection::vec(any::<u8>(), 0..=20), data: u64, regs in registers()) {
        if let Ok(decoded) = decode_mmio(&bytes) {
            let mut regs = regs;
            let _ = decoded.linear_address(&regs, SegmentBases::default());
            let _ = decoded.write_data(&regs);
            decoded.complete_read(&mut regs, data);
        }
    }
}
