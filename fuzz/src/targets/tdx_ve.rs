//! tdx-ve: the #VE handler's decoders of host-supplied values and guest bytes.

use crate::input::Input;
use tdx_ve::abi::{vmcall_bitmap_is_allowed, ExitReason, TdAttributes, TdInfo, TdcallLeaf, VeInfo};
use tdx_ve::decode::{
    decode as decode_instruction, io_qualification as qualification_of, Instruction,
};
use tdx_ve::io::{IoDirection, IoExitQualification, PortWidth};
use tdx_ve::regs::{Gpr, GuestRegisters, RegisterState, RFLAGS_DF};
use tdx_ve::string_io::{
    emulate_at_most, AddressSize, StringIo, StringIoEnv, StringIoInformation, StringIoProgress,
};

/// The #VE instruction decoder on arbitrary bytes at RIP: lengths are consistent, an
/// instruction is determined by its own bytes, and what it builds for the model round-trips.
pub fn decode(data: &[u8]) {
    let mut input = Input::new(data);
    let dx = input.u16();
    let bytes = input.rest();
    let Ok(instruction) = decode_instruction(bytes) else { return };
    if let Some(length) = instruction.length() {
        let length = usize::from(length);
        assert!((1..=15).contains(&length), "length {length}");
        assert!(length <= bytes.len());
        assert_eq!(decode_instruction(&bytes[..length]), Ok(instruction));
    }
    if let Instruction::Io(io) = instruction {
        let qualification = qualification_of(&io, dx);
        assert_eq!(IoExitQualification::decode(qualification.encode()), Ok(qualification));
        assert_eq!(qualification.string, io.string);
        assert!(!qualification.rep || qualification.string);
        match io.string_io_information() {
            Some(info) => {
                assert!(io.string);
                assert_eq!(StringIoInformation::decode(info.encode(), io.direction), Ok(info));
                let op = io.string_io(dx).expect("INS/OUTS without a string operation");
                assert_eq!(
                    StringIo::from_qualification(&qualification, info.address_size),
                    Some(op)
                );
            }
            None => assert!(!io.string && io.string_io(dx).is_none()),
        }
    }
}

/// The I/O exit qualification and the INS/OUTS instruction information, as the host (through
/// the TDX module) hands them over: decode never panics, accepts exactly what encodes back, and
/// the fast path agrees with the full decoder.
pub fn io_qualification(data: &[u8]) {
    let mut input = Input::new(data);
    let raw = input.u64();
    let info = input.u32();
    let decoded = IoExitQualification::decode(raw);
    if let Ok(q) = decoded {
        assert_eq!(q.encode(), raw, "decode accepted {raw:#x} but encodes differently");
    }
    let fast = IoExitQualification::decode_port_io(raw);
    let expected = match decoded {
        Ok(q) if !q.string => Some((q.width, q.direction, q.port)),
        _ => None,
    };
    assert_eq!(fast, expected, "fast path disagrees on {raw:#x}");
    for direction in [IoDirection::In, IoDirection::Out] {
        if let Ok(decoded) = StringIoInformation::decode(info, direction) {
            let again = StringIoInformation::decode(decoded.encode(), direction);
            assert_eq!(again, Ok(decoded));
            assert_eq!(decoded.segment.is_some(), direction == IoDirection::Out);
        }
    }
}

/// Guest memory: one window of bytes at a base address; everything else faults.
struct Env<'a> {
    input: Input<'a>,
    base: u64,
    memory: Vec<u8>,
    /// Elements completed (port and memory halves both succeeded).
    completed: u64,
    in_progress: bool,
}

impl Env<'_> {
    fn window(&self, address: u64, len: usize) -> Option<usize> {
        let offset = address.checked_sub(self.base)?;
        let offset = usize::try_from(offset).ok()?;
        (offset.checked_add(len)? <= self.memory.len()).then_some(offset)
    }
}

impl StringIoEnv for Env<'_> {
    type Error = ();
    fn port_in(&mut self, _port: u16, _width: PortWidth) -> Result<u64, ()> {
        // The host may fail the call, and puts garbage above the access width.
        if self.input.u8() == 0xff {
            return Err(());
        }
        self.in_progress = true;
        Ok(self.input.u64())
    }
    fn port_out(&mut self, _port: u16, width: PortWidth, value: u64) -> Result<(), ()> {
        assert_eq!(value & !width.mask(), 0, "OUTS sent bits above the width");
        assert!(self.in_progress);
        self.in_progress = false;
        if self.input.u8() == 0xff {
            return Err(());
        }
        self.completed += 1;
        Ok(())
    }
    fn read_memory(&mut self, address: u64, buf: &mut [u8]) -> Result<(), ()> {
        let at = self.window(address, buf.len()).ok_or(())?;
        buf.copy_from_slice(&self.memory[at..at + buf.len()]);
        self.in_progress = true;
        Ok(())
    }
    fn write_memory(&mut self, address: u64, data: &[u8]) -> Result<(), ()> {
        assert!(self.in_progress);
        self.in_progress = false;
        let at = self.window(address, data.len()).ok_or(())?;
        self.memory[at..at + data.len()].copy_from_slice(data);
        self.completed += 1;
        Ok(())
    }
}

/// The string-I/O walk, element by element, against a host that fails calls and returns
/// garbage, and guest memory that ends: registers always hold the state after the last
/// completed element, and nothing else changes.
pub fn string_io(data: &[u8]) {
    let mut input = Input::new(data);
    let flags = input.u8();
    let width = PortWidth::ALL[usize::from(flags % 3)];
    let direction = if flags & 4 != 0 { IoDirection::In } else { IoDirection::Out };
    let rep = flags & 8 != 0;
    let address_size = if flags & 16 != 0 { AddressSize::Bits32 } else { AddressSize::Bits64 };
    let downwards = flags & 32 != 0;
    let op = StringIo { direction, width, port: input.u16(), rep, address_size };
    let budget = u64::from(input.u8() % 40);
    let mut regs = RegisterState {
        rip: input.u64(),
        rflags: if downwards { RFLAGS_DF } else { 0 },
        ..Default::default()
    };
    for gpr in Gpr::ALL {
        regs.set_gpr(gpr, input.u64());
    }
    // Keep the count small enough to run, but let its high bits through (a 32-bit address
    // size ignores them).
    let rcx = regs.gpr(Gpr::Rcx);
    regs.set_gpr(Gpr::Rcx, rcx & 0xffff_ffff_0000_0000 | rcx & 0x3f);
    let index = if direction == IoDirection::In { Gpr::Rdi } else { Gpr::Rsi };
    let base = regs.gpr(index).wrapping_sub(u64::from(input.u8())) & address_size.mask();
    let memory = input.bytes(usize::from(input_len_hint(flags))).to_vec();
    let before = regs;
    let mut env = Env { input, base, memory, completed: 0, in_progress: false };
    let result = emulate_at_most(&mut regs, &op, &mut env, budget);

    let mask = address_size.mask();
    let step = width.bytes() as u64 * env.completed;
    let start = before.gpr(index) & mask;
    let expected_index =
        if downwards { start.wrapping_sub(step) } else { start.wrapping_add(step) } & mask;
    if env.completed > 0 {
        assert_eq!(
            regs.gpr(index),
            expected_index,
            "index register after {} elements",
            env.completed
        );
    } else {
        assert_eq!(regs.gpr(index), before.gpr(index), "index register moved without an element");
    }
    let total = if rep { before.gpr(Gpr::Rcx) & mask } else { 1 };
    assert!(env.completed <= total && env.completed <= budget);
    if rep && env.completed > 0 {
        assert_eq!(regs.gpr(Gpr::Rcx), total - env.completed);
    } else {
        assert_eq!(regs.gpr(Gpr::Rcx), before.gpr(Gpr::Rcx));
    }
    for gpr in Gpr::ALL {
        if gpr != index && gpr != Gpr::Rcx {
            assert_eq!(regs.gpr(gpr), before.gpr(gpr), "{gpr:?} changed");
        }
    }
    assert_eq!((regs.rip(), regs.rflags()), (before.rip(), before.rflags()));
    match result {
        Ok(StringIoProgress::Complete) => assert_eq!(env.completed, total),
        Ok(StringIoProgress::Interrupted) => {
            assert!(env.completed == budget && env.completed < total)
        }
        Err(()) => assert!(env.completed < total),
    }
}

fn input_len_hint(flags: u8) -> u8 {
    // 0..=255 bytes of guest memory, mostly small.
    if flags & 64 != 0 {
        255
    } else {
        40
    }
}

/// The TDCALL and VE-info values the TDX module (and, through it, the host) hands back.
pub fn abi(data: &[u8]) {
    let mut input = Input::new(data);
    let rax = input.u64();
    if let Ok((leaf, version)) = TdcallLeaf::from_rax(rax) {
        assert_eq!(leaf.code() | u64::from(version) << 16, rax, "leaf {leaf:?} from {rax:#x}");
    }
    let (rcx, rdx, r8, r9, r10) = (input.u64(), input.u64(), input.u64(), input.u64(), input.u64());
    let ve = VeInfo::from_veinfo_get_outputs(rcx, rdx, r8, r9, r10);
    let _ = VeInfo::from_veinfo_get_outputs(
        ve.to_outputs().rcx,
        ve.to_outputs().rdx,
        ve.to_outputs().r8,
        ve.to_outputs().r9,
        ve.to_outputs().r10,
    );
    if let Ok(reason) = ve.reason() {
        assert_eq!(ExitReason::try_from(reason.code()), Ok(reason));
    }
    let td = TdInfo::from_vp_info_outputs(input.u64(), input.u64(), input.u64(), input.u64());
    if let Ok(bit) = td.shared_bit() {
        assert!(bit.is_power_of_two() && bit < 1 << 52, "shared bit {bit:#x}");
    }
    let _ = TdAttributes(input.u64()).verdict();
    let _ = vmcall_bitmap_is_allowed(input.u64());
    let vector = input.u8();
    let gate: Option<[u8; 16]> =
        input.bool().then(|| input.bytes(16).try_into().unwrap_or([0; 16]));
    let descriptor = input.u64();
    let present = input.bool();
    let _ = tdx_ve::delivery::deliver(vector, gate, |_| present.then_some(descriptor));
}

/// The port allowlist: the bitmap lookup agrees with the table (every port an access touches is
/// in an enabled row of single ports, or the access is exactly a dword register), and the
/// read/write gates call the host only for allowed accesses.
pub fn allowlist(data: &[u8]) {
    use tdx_ve::allowlist::{self, PORTS};
    let mut input = Input::new(data);
    let port = input.u16();
    let flags = input.u8();
    let width = PortWidth::ALL[usize::from(flags % 3)];
    let test_only = flags & 4 != 0;
    let allowed = allowlist::allowed(port, width, test_only);
    let enabled = |r: &&tdx_ve::allowlist::PortRange| test_only || !r.test_only;
    let single = |p: u32| {
        PORTS
            .iter()
            .filter(enabled)
            .any(|r| !r.dword_register && (u32::from(r.first)..=u32::from(r.last)).contains(&p))
    };
    let first = u32::from(port);
    let last = first + width.bytes() as u32 - 1;
    let dword = width == PortWidth::Dword
        && PORTS.iter().filter(enabled).any(|r| r.dword_register && r.first == port);
    let expected = dword || (first..=last).all(single);
    assert_eq!(allowed, expected, "port {port:#x} width {width:?}");
    if allowed {
        assert!(allowlist::device(port).is_some());
    }
    let mut denied = false;
    let read =
        allowlist::read(port, width, test_only, || denied = true, || Ok::<_, ()>(input.u64()));
    assert_eq!(denied, !allowed);
    if denied {
        assert_eq!(read, Ok(width.mask()));
    }
    let mut denied = false;
    let mut wrote = false;
    let _ = allowlist::write(
        port,
        width,
        test_only,
        || denied = true,
        || {
            wrote = true;
            Ok::<_, ()>(())
        },
    );
    assert_eq!((denied, wrote), (!allowed, allowed));
}
