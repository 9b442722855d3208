//! Element-by-element emulation of INS and OUTS, with and without REP.
//!
//! Semantics, from the Intel SDM (Vol. 2, "INS/INSB/INSW/INSD", "OUTS/OUTSB/OUTSW/OUTSD",
//! "REP/REPE/REPZ/REPNE/REPNZ"; Vol. 1, "String Operations in 64-Bit Mode", "I/O Instructions
//! in 64-Bit Mode"), for a guest in 64-bit mode:
//!
//! - INS stores the element read from port DX at ES:\[RDI\]; ES cannot be overridden and its base
//!   is 0 in 64-bit mode. OUTS sends the element at \[RSI\] (DS by default) to port DX.
//! - After each element the index register moves by the element size, up when RFLAGS.DF = 0,
//!   down when DF = 1.
//! - With REP, the count register is checked before each element: a count of 0 performs no
//!   element and writes no register; otherwise the element is done, the index updated and the
//!   count decremented, until the count reaches 0. Without REP exactly one element is done and
//!   the count register is not touched.
//! - The address size picks the registers: RCX/RSI/RDI by default, ECX/ESI/EDI with a 0x67
//!   prefix (16-bit addressing does not exist in 64-bit mode). The REP pseudo-code selects
//!   "CountReg" by AddressSize only, and Vol. 1 §7.3.10.1 says the repeat count is "RCX or ECX
//!   (depending on the address size attribute of the operation)". (The REP page also has the
//!   sentence "The default count register is RCX for REP INS and REP OUTS; it is ECX for other
//!   instructions", which contradicts its own pseudo-code for the default 64-bit address size;
//!   the pseudo-code is followed here.)
//! - 32-bit address size: the index arithmetic wraps modulo 2^32 and the updated ESI/EDI/ECX are
//!   written as 32-bit registers, which in 64-bit mode zero-extends them (Vol. 1,
//!   "General-Purpose Registers in 64-Bit Mode": "32-bit operands generate a 32-bit result,
//!   zero-extended to a 64-bit result in the destination general-purpose register"). The SDM
//!   string pages do not restate this for the implicit registers, so it is the general rule
//!   applied, not a sentence quoted from the INS/OUTS pages. QEMU TCG does the same: its REP
//!   loop tests only ECX and writes the decremented ECX zero-extended, and its index update
//!   writes ESI/EDI with 32-bit size; a zero count writes nothing, so RCX\[63:32\] survives a
//!   `rep` with ECX = 0. Behaviour of real hardware for the untouched upper halves was not
//!   verified on a CPU.
//!
//! Registers are written after every element, so an error from the environment midway leaves
//! exactly the state of a REP string instruction interrupted after its last completed element
//! (SDM: "the source and destination registers point to the next string elements to be
//! operated on ... and the ECX register has the value it held following the last successful
//! iteration"). A failing element leaves no register change.
//!
//! [`emulate`] never touches RIP: on success the caller advances RIP by the instruction length.

use core::fmt;

use crate::io::{IoDirection, IoExitQualification, PortWidth};
use crate::regs::{Gpr, GuestRegisters, SegmentRegister, RFLAGS_DF};

/// The address size of a string instruction in 64-bit mode.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum AddressSize {
    /// 0x67 prefix: ECX/ESI/EDI, arithmetic modulo 2^32.
    Bits32,
    /// Default: RCX/RSI/RDI.
    Bits64,
}

impl AddressSize {
    /// The mask of the register bits this address size uses.
    pub const fn mask(self) -> u64 {
        match self {
            AddressSize::Bits32 => 0xffff_ffff,
            AddressSize::Bits64 => u64::MAX,
        }
    }
}

/// One INS or OUTS instruction to emulate.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub struct StringIo {
    /// INS (`In`) or OUTS (`Out`).
    pub direction: IoDirection,
    /// The element size.
    pub width: PortWidth,
    /// The port (DX at the time of the instruction).
    pub port: u16,
    /// The instruction carried a REP (F3) or REPNE (F2) prefix.
    pub rep: bool,
    /// The address size.
    pub address_size: AddressSize,
}

impl StringIo {
    /// The string operation described by an I/O exit qualification, or `None` if the
    /// qualification is not for INS/OUTS. The address size is not part of the qualification;
    /// take it from the instruction information ([`StringIoInformation`]) or by decoding.
    pub const fn from_qualification(
        qualification: &IoExitQualification,
        address_size: AddressSize,
    ) -> Option<StringIo> {
        if !qualification.string {
            return None;
        }
        Some(StringIo {
            direction: qualification.direction,
            width: qualification.width,
            port: qualification.port,
            rep: qualification.rep,
            address_size,
        })
    }
}

/// What the emulation needs from its surroundings: port access (a hypercall in a TD) and guest
/// memory access by linear address.
///
/// The addresses passed are effective addresses (RSI or RDI, truncated to the address size),
/// which equal linear addresses for every segment whose base is 0 in 64-bit mode. For OUTS with
/// an FS or GS override prefix the caller must either add the segment base in
/// `read_memory` or refuse the instruction; INS always uses ES, whose base is 0.
pub trait StringIoEnv {
    /// The error that aborts the emulation.
    type Error;
    /// Reads `width` bytes from `port`. The result may have garbage above the width (it comes
    /// from the host); the emulation masks it.
    fn port_in(&mut self, port: u16, width: PortWidth) -> Result<u64, Self::Error>;
    /// Writes the low `width` bytes of `value` (zero above) to `port`.
    fn port_out(&mut self, port: u16, width: PortWidth, value: u64) -> Result<(), Self::Error>;
    /// Reads `buf.len()` bytes of guest memory at `linear_address`.
    fn read_memory(&mut self, linear_address: u64, buf: &mut [u8]) -> Result<(), Self::Error>;
    /// Writes `data` to guest memory at `linear_address`.
    fn write_memory(&mut self, linear_address: u64, data: &[u8]) -> Result<(), Self::Error>;
}

/// How far a bounded emulation got.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum StringIoProgress {
    /// The instruction is complete: the caller advances RIP.
    Complete,
    /// The element budget ran out with count remaining; registers hold the state of an
    /// interrupted REP, and leaving RIP unchanged makes the instruction resume.
    Interrupted,
}

/// Emulates one INS or OUTS (with REP: all `count` elements) against `env`.
///
/// On error the registers hold the state after the last completed element; see the module
/// documentation. For INS the element is read from the port before it is written to memory;
/// for OUTS it is read from memory before it is written to the port. (QEMU TCG instead probes
/// the INS destination before reading the port, so a fault there does not consume port data;
/// with this order a memory error loses the one element already read from the port.)
pub fn emulate<R: GuestRegisters, E: StringIoEnv>(
    regs: &mut R,
    op: &StringIo,
    env: &mut E,
) -> Result<(), E::Error> {
    emulate_at_most(regs, op, env, u64::MAX).map(|_| ())
}

/// Like [`emulate`], but stops after `max_elements` elements, so a #VE handler can bound the
/// time it spends on a huge REP count and let the instruction re-execute (and fault again) for
/// the rest, as the processor does when it takes an interrupt between iterations. With
/// `max_elements == 0` nothing happens and the result is `Interrupted` unless there was nothing
/// to do.
pub fn emulate_at_most<R: GuestRegisters, E: StringIoEnv>(
    regs: &mut R,
    op: &StringIo,
    env: &mut E,
    max_elements: u64,
) -> Result<StringIoProgress, E::Error> {
    let mask = op.address_size.mask();
    let step = op.width.bytes() as u64;
    let downwards = regs.rflags() & RFLAGS_DF != 0;
    let index_register = match op.direction {
        IoDirection::In => Gpr::Rdi,
        IoDirection::Out => Gpr::Rsi,
    };
    let mut remaining = if op.rep { regs.gpr(Gpr::Rcx) & mask } else { 1 };
    let mut done = 0u64;

    while remaining != 0 {
        if done == max_elements {
            return Ok(StringIoProgress::Interrupted);
        }
        let address = regs.gpr(index_register) & mask;
        let mut element = [0u8; 8];
        let element = &mut element[..op.width.bytes()];
        match op.direction {
            IoDirection::In => {
                let value = env.port_in(op.port, op.width)? & op.width.mask();
                element.copy_from_slice(&value.to_le_bytes()[..op.width.bytes()]);
                env.write_memory(address, element)?;
            }
            IoDirection::Out => {
                env.read_memory(address, element)?;
                let mut value = [0u8; 8];
                value[..op.width.bytes()].copy_from_slice(element);
                env.port_out(op.port, op.width, u64::from_le_bytes(value))?;
            }
        }

        // The element is complete: commit it to the registers before anything else can fail.
        let next = if downwards { address.wrapping_sub(step) } else { address.wrapping_add(step) };
        regs.set_gpr(index_register, next & mask);
        remaining -= 1;
        if op.rep {
            regs.set_gpr(Gpr::Rcx, remaining);
        }
        done += 1;
    }
    Ok(StringIoProgress::Complete)
}

/// The VMX instruction-information field of an INS/OUTS exit (Intel SDM Vol. 3C, "Format of the
/// VM-Exit Instruction-Information Field as Used for INS and OUTS"): bits 9:7 address size
/// (0 = 16-bit, 1 = 32-bit, 2 = 64-bit), bits 17:15 segment register (undefined for INS), all
/// other bits undefined. The processor fills it only if IA32_VMX_BASIC bit 54 is set; the TDX
/// module passes the VMCS field through in TDG.VP.VEINFO.GET R10\[63:32\].
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub struct StringIoInformation {
    /// The address size.
    pub address_size: AddressSize,
    /// The source segment of OUTS; `None` for INS, whose segment is always ES.
    pub segment: Option<SegmentRegister>,
}

/// Why an instruction-information value does not describe a 64-bit-mode INS/OUTS.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum InstructionInformationError {
    /// The address-size field is 0 (16-bit, impossible in 64-bit mode) or an unused value.
    UnsupportedAddressSize {
        /// Bits 9:7.
        field: u8,
    },
    /// The segment field of an OUTS is 6 or 7.
    InvalidSegment {
        /// Bits 17:15.
        field: u8,
    },
}

impl StringIoInformation {
    /// Decodes the field for an instruction of the given direction; only the defined bits are
    /// read, the undefined ones are ignored.
    pub const fn decode(
        info: u32,
        direction: IoDirection,
    ) -> Result<StringIoInformation, InstructionInformationError> {
        let size_field = ((info >> 7) & 0b111) as u8;
        let address_size = match size_field {
            1 => AddressSize::Bits32,
            2 => AddressSize::Bits64,
            field => return Err(InstructionInformationError::UnsupportedAddressSize { field }),
        };
        let segment = match direction {
            IoDirection::In => None,
            IoDirection::Out => {
                let field = ((info >> 15) & 0b111) as u8;
                match SegmentRegister::from_number(field) {
                    Some(segment) => Some(segment),
                    None => return Err(InstructionInformationError::InvalidSegment { field }),
                }
            }
        };
        Ok(StringIoInformation { address_size, segment })
    }

    /// Encodes the field (undefined bits 0; ES in the segment field for INS).
    #[must_use]
    pub const fn encode(&self) -> u32 {
        let size_field = match self.address_size {
            AddressSize::Bits32 => 1,
            AddressSize::Bits64 => 2,
        };
        let segment_field = match self.segment {
            Some(segment) => segment as u32,
            None => SegmentRegister::Es as u32,
        };
        size_field << 7 | segment_field << 15
    }
}

impl fmt::Display for InstructionInformationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InstructionInformationError::UnsupportedAddressSize { field } => {
                write!(f, "INS/OUTS address-size field {field} is not 32- or 64-bit")
            }
            InstructionInformationError::InvalidSegment { field } => {
                write!(f, "OUTS segment field {field} names no segment register")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::regs::RegisterState;
    use proptest::prelude::*;
    use std::collections::{BTreeMap, VecDeque};

    /// One interaction of the emulation with its environment.
    #[derive(Clone, PartialEq, Eq, Debug)]
    enum Event {
        PortIn { port: u16, width: PortWidth, value: u64 },
        PortOut { port: u16, width: PortWidth, value: u64 },
        MemoryRead { address: u64, data: Vec<u8> },
        MemoryWrite { address: u64, data: Vec<u8> },
    }

    #[derive(Clone, Copy, PartialEq, Eq, Debug)]
    enum Failure {
        PortIn,
        PortOut,
        MemoryRead,
        MemoryWrite,
        Budget,
    }

    /// Which operation fails, counted from 0 over all operations of its kind.
    #[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
    struct FailurePlan {
        port_op: Option<usize>,
        memory_op: Option<usize>,
    }

    /// A hard cap so that a huge REP count always terminates in tests.
    const OPERATION_BUDGET: usize = 300;

    /// Unwritten memory reads as a fixed function of its address.
    fn background_byte(address: u64) -> u8 {
        (address.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 56) as u8
    }

    /// The fake environment: a FIFO of hostile 64-bit port values, sparse memory, a trace.
    struct FakeEnv {
        port_fifo: VecDeque<u64>,
        memory: BTreeMap<u64, u8>,
        trace: Vec<Event>,
        plan: FailurePlan,
        port_ops: usize,
        memory_ops: usize,
    }

    impl FakeEnv {
        fn new(port_fifo: Vec<u64>, plan: FailurePlan) -> Self {
            FakeEnv {
                port_fifo: port_fifo.into(),
                memory: BTreeMap::new(),
                trace: Vec::new(),
                plan,
                port_ops: 0,
                memory_ops: 0,
            }
        }

        fn next_port_op(&mut self, failure: Failure) -> Result<(), Failure> {
            let index = self.port_ops;
            self.port_ops += 1;
            if self.port_ops + self.memory_ops > OPERATION_BUDGET {
                return Err(Failure::Budget);
            }
            if self.plan.port_op == Some(index) {
                return Err(failure);
            }
            Ok(())
        }

        fn next_memory_op(&mut self, failure: Failure) -> Result<(), Failure> {
            let index = self.memory_ops;
            self.memory_ops += 1;
            if self.port_ops + self.memory_ops > OPERATION_BUDGET {
                return Err(Failure::Budget);
            }
            if self.plan.memory_op == Some(index) {
                return Err(failure);
            }
            Ok(())
        }
    }

    impl StringIoEnv for FakeEnv {
        type Error = Failure;

        fn port_in(&mut self, port: u16, width: PortWidth) -> Result<u64, Failure> {
            self.next_port_op(Failure::PortIn)?;
            // Cycle through the hostile values; none of them is masked to the width.
            let value = self.port_fifo.pop_front().unwrap_or(u64::MAX);
            self.port_fifo.push_back(value);
            self.trace.push(Event::PortIn { port, width, value });
            Ok(value)
        }

        fn port_out(&mut self, port: u16, width: PortWidth, value: u64) -> Result<(), Failure> {
            self.next_port_op(Failure::PortOut)?;
            self.trace.push(Event::PortOut { port, width, value });
            Ok(())
        }

        fn read_memory(&mut self, address: u64, buf: &mut [u8]) -> Result<(), Failure> {
            self.next_memory_op(Failure::MemoryRead)?;
            for (i, byte) in buf.iter_mut().enumerate() {
                let a = address.wrapping_add(i as u64);
                *byte = self.memory.get(&a).copied().unwrap_or_else(|| background_byte(a));
            }
            self.trace.push(Event::MemoryRead { address, data: buf.to_vec() });
            Ok(())
        }

        fn write_memory(&mut self, address: u64, data: &[u8]) -> Result<(), Failure> {
            self.next_memory_op(Failure::MemoryWrite)?;
            for (i, byte) in data.iter().enumerate() {
                self.memory.insert(address.wrapping_add(i as u64), *byte);
            }
            self.trace.push(Event::MemoryWrite { address, data: data.to_vec() });
            Ok(())
        }
    }

    /// The expected outcome, computed by the reference model.
    struct Expected {
        regs: RegisterState,
        trace: Vec<Event>,
        memory: BTreeMap<u64, u8>,
        result: Result<(), Failure>,
    }

    /// Reference model written from the SDM description in closed form: element `k` uses
    /// address `start ± k * size` (mod 2^address-size); the number of completed elements is
    /// decided first, then the final registers are computed from it in one step.
    fn reference(
        initial: &RegisterState,
        op: &StringIo,
        port_fifo: &[u64],
        plan: FailurePlan,
    ) -> Expected {
        let size = op.width.bytes();
        let modulus_mask = match op.address_size {
            AddressSize::Bits32 => u32::MAX as u64,
            AddressSize::Bits64 => u64::MAX,
        };
        let index_number = if op.direction == IoDirection::In { 7 } else { 6 };
        let start = initial.gprs[index_number] & modulus_mask;
        let count = if op.rep { initial.gprs[1] & modulus_mask } else { 1 };
        let down = initial.rflags >> 10 & 1 == 1;
        let address_of = |k: u64| -> u64 {
            let offset = k.wrapping_mul(size as u64);
            let address =
                if down { start.wrapping_sub(offset) } else { start.wrapping_add(offset) };
            address & modulus_mask
        };

        let mut trace = Vec::new();
        let mut memory = BTreeMap::new();
        let mut completed = 0u64;
        let mut result = Ok(());
        // Each element does one port op and one memory op; which of the two comes first
        // depends on the direction.
        let mut port_ops = 0usize;
        let mut memory_ops = 0usize;
        let mut fifo_position = 0usize;
        let check = |kind_index: usize, other: usize, planned: Option<usize>, failure: Failure| {
            if kind_index + 1 + other > OPERATION_BUDGET {
                Err(Failure::Budget)
            } else if planned == Some(kind_index) {
                Err(failure)
            } else {
                Ok(())
            }
        };
        while completed < count {
            let address = address_of(completed);
            let step: Result<(), Failure> = (|| {
                if op.direction == IoDirection::In {
                    let r = check(port_ops, memory_ops, plan.port_op, Failure::PortIn);
                    port_ops += 1;
                    r?;
                    let value = if port_fifo.is_empty() {
                        u64::MAX
                    } else {
                        port_fifo[fifo_position % port_fifo.len()]
                    };
                    fifo_position += 1;
                    trace.push(Event::PortIn { port: op.port, width: op.width, value });
                    let data: Vec<u8> = value.to_le_bytes()[..size].to_vec();
                    let r = check(memory_ops, port_ops, plan.memory_op, Failure::MemoryWrite);
                    memory_ops += 1;
                    r?;
                    for (i, byte) in data.iter().enumerate() {
                        memory.insert(address.wrapping_add(i as u64), *byte);
                    }
                    trace.push(Event::MemoryWrite { address, data });
                } else {
                    let r = check(memory_ops, port_ops, plan.memory_op, Failure::MemoryRead);
                    memory_ops += 1;
                    r?;
                    // OUTS never writes memory, so every read sees the background.
                    let data: Vec<u8> = (0..size as u64)
                        .map(|i| background_byte(address.wrapping_add(i)))
                        .collect();
                    trace.push(Event::MemoryRead { address, data: data.clone() });
                    let r = check(port_ops, memory_ops, plan.port_op, Failure::PortOut);
                    port_ops += 1;
                    r?;
                    let mut value = 0u64;
                    for (i, byte) in data.iter().enumerate() {
                        value |= (*byte as u64) << (8 * i);
                    }
                    trace.push(Event::PortOut { port: op.port, width: op.width, value });
                }
                Ok(())
            })();
            if let Err(failure) = step {
                result = Err(failure);
                break;
            }
            completed += 1;
        }

        let mut regs = *initial;
        // A register is written only by a completed element; a write of a 32-bit register
        // replaces the whole 64-bit register with the zero-extended value.
        if completed > 0 {
            regs.gprs[index_number] = address_of(completed);
            if op.rep {
                regs.gprs[1] = (count - completed) & modulus_mask;
            }
        }
        Expected { regs, trace, memory, result }
    }

    fn any_width() -> impl Strategy<Value = PortWidth> {
        prop::sample::select(PortWidth::ALL.to_vec())
    }

    /// Index values that cluster around the 2^32 and 2^64 wrap points, plus arbitrary ones.
    fn index_value() -> impl Strategy<Value = u64> {
        prop_oneof![
            any::<u64>(),
            0u64..0x100,
            0xffff_ff00u64..0x1_0000_0100,
            (u64::MAX - 0x100)..=u64::MAX,
            // Upper half set, lower half near the 32-bit wrap.
            (any::<u32>(), 0xffff_ff00u32..=u32::MAX)
                .prop_map(|(hi, lo)| (hi as u64) << 32 | lo as u64),
        ]
    }

    /// Counts: mostly small, sometimes huge (stopped by the env), sometimes with upper garbage.
    fn count_value() -> impl Strategy<Value = u64> {
        prop_oneof![
            4 => 0u64..=64,
            1 => any::<u64>(),
            1 => (any::<u32>(), 0u32..=64).prop_map(|(hi, lo)| (hi as u64) << 32 | lo as u64),
        ]
    }

    fn failure_plan() -> impl Strategy<Value = FailurePlan> {
        (prop::option::of(0usize..80), prop::option::of(0usize..80))
            .prop_map(|(port_op, memory_op)| FailurePlan { port_op, memory_op })
    }

    fn string_io() -> impl Strategy<Value = StringIo> {
        (
            prop::sample::select(vec![IoDirection::In, IoDirection::Out]),
            any_width(),
            any::<u16>(),
            any::<bool>(),
            prop::sample::select(vec![AddressSize::Bits32, AddressSize::Bits64]),
        )
            .prop_map(|(direction, width, port, rep, address_size)| StringIo {
                direction,
                width,
                port,
                rep,
                address_size,
            })
    }

    fn initial_registers() -> impl Strategy<Value = RegisterState> {
        (
            prop::array::uniform16(any::<u64>()),
            any::<u64>(),
            any::<u64>(),
            any::<bool>(),
            index_value(),
            index_value(),
            count_value(),
        )
            .prop_map(|(gprs, rip, rflags, df, rsi, rdi, rcx)| {
                let mut regs = RegisterState { gprs, rip, rflags: rflags & !RFLAGS_DF };
                if df {
                    regs.rflags |= RFLAGS_DF;
                }
                regs.gprs[6] = rsi;
                regs.gprs[7] = rdi;
                regs.gprs[1] = rcx;
                regs
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        #[test]
        fn emulate_matches_the_reference_model(
            initial in initial_registers(),
            op in string_io(),
            port_fifo in prop::collection::vec(any::<u64>(), 1..8),
            plan in failure_plan(),
        ) {
            let expected = reference(&initial, &op, &port_fifo, plan);
            let mut regs = initial;
            let mut env = FakeEnv::new(port_fifo, plan);
            let result = emulate(&mut regs, &op, &mut env);
            prop_assert_eq!(result, expected.result);
            prop_assert_eq!(env.trace, expected.trace);
            prop_assert_eq!(env.memory, expected.memory);
            prop_assert_eq!(regs, expected.regs);
        }

        #[test]
        fn bounded_emulation_resumes_to_the_same_state(
            initial in initial_registers(),
            op in string_io(),
            port_fifo in prop::collection::vec(any::<u64>(), 1..8),
            chunk in 1u64..8,
        ) {
            // No planned failure: only the budget can stop a huge count, in both runs alike.
            let plan = FailurePlan::default();
            let mut whole_regs = initial;
            let mut whole_env = FakeEnv::new(port_fifo.clone(), plan);
            let whole = emulate(&mut whole_regs, &op, &mut whole_env);

            let mut regs = initial;
            let mut env = FakeEnv::new(port_fifo, plan);
            let chunked = loop {
                match emulate_at_most(&mut regs, &op, &mut env, chunk) {
                    Ok(StringIoProgress::Complete) => break Ok(()),
                    Ok(StringIoProgress::Interrupted) => {}
                    Err(e) => break Err(e),
                }
            };
            prop_assert_eq!(chunked, whole);
            prop_assert_eq!(env.trace, whole_env.trace);
            prop_assert_eq!(regs, whole_regs);
        }
    }

    fn regs_with(rcx: u64, rsi: u64, rdi: u64, df: bool) -> RegisterState {
        let mut regs = RegisterState::default();
        regs.gprs[1] = rcx;
        regs.gprs[6] = rsi;
        regs.gprs[7] = rdi;
        regs.rflags = 0x2 | if df { RFLAGS_DF } else { 0 };
        regs
    }

    #[test]
    fn rep_insw_hand_computed() {
        let op = StringIo {
            direction: IoDirection::In,
            width: PortWidth::Word,
            port: 0x1f0,
            rep: true,
            address_size: AddressSize::Bits64,
        };
        let mut regs = regs_with(3, 0x5555, 0x1000, false);
        let mut env = FakeEnv::new(
            vec![0xffff_ffff_ffff_1234, 0xabcd, 0x0001_0000_0000_5678],
            FailurePlan::default(),
        );
        emulate(&mut regs, &op, &mut env).unwrap();
        assert_eq!(regs.gprs[1], 0);
        assert_eq!(regs.gprs[7], 0x1006);
        assert_eq!(regs.gprs[6], 0x5555, "INS must not touch RSI");
        let bytes: Vec<u8> = (0x1000..0x1006).map(|a| env.memory[&a]).collect();
        assert_eq!(bytes, [0x34, 0x12, 0xcd, 0xab, 0x78, 0x56]);
        assert_eq!(env.memory.len(), 6, "only width bytes per element may be written");
    }

    #[test]
    fn rep_with_zero_count_does_nothing() {
        for address_size in [AddressSize::Bits32, AddressSize::Bits64] {
            let op = StringIo {
                direction: IoDirection::Out,
                width: PortWidth::Byte,
                port: 0x80,
                rep: true,
                address_size,
            };
            // ECX = 0 with garbage above: with 32-bit addressing the count is 0 and RCX stays.
            let rcx = if address_size == AddressSize::Bits32 { 0xdead_beef_0000_0000 } else { 0 };
            let initial = regs_with(rcx, 0xffff_ffff_ffff_fff0, 0x1234, true);
            let mut regs = initial;
            let mut env = FakeEnv::new(vec![1], FailurePlan::default());
            emulate(&mut regs, &op, &mut env).unwrap();
            assert_eq!(regs, initial);
            assert!(env.trace.is_empty());
        }
    }

    #[test]
    fn non_rep_leaves_rcx_alone() {
        let op = StringIo {
            direction: IoDirection::Out,
            width: PortWidth::Dword,
            port: 0x3f8,
            rep: false,
            address_size: AddressSize::Bits64,
        };
        let mut regs = regs_with(0, 0x2000, 0, true);
        let mut env = FakeEnv::new(vec![], FailurePlan::default());
        emulate(&mut regs, &op, &mut env).unwrap();
        assert_eq!(regs.gprs[1], 0, "RCX = 0 must not stop a non-REP OUTS");
        assert_eq!(regs.gprs[6], 0x1ffc, "DF = 1 steps down");
        assert_eq!(env.trace.len(), 2);
    }

    #[test]
    fn thirty_two_bit_addressing_wraps_and_zero_extends() {
        let op = StringIo {
            direction: IoDirection::In,
            width: PortWidth::Dword,
            port: 0x60,
            rep: true,
            address_size: AddressSize::Bits32,
        };
        let mut regs =
            regs_with(0xffff_ffff_0000_0002, 0x7777_7777_7777_7777, 0xaaaa_aaaa_ffff_fffc, false);
        let mut env = FakeEnv::new(vec![0x1122_3344], FailurePlan::default());
        emulate(&mut regs, &op, &mut env).unwrap();
        // EDI: 0xffff_fffc -> 0 -> 4, upper half cleared by the first 32-bit write.
        assert_eq!(regs.gprs[7], 4);
        assert_eq!(regs.gprs[1], 0);
        assert_eq!(regs.gprs[6], 0x7777_7777_7777_7777);
        assert_eq!(
            env.trace
                .iter()
                .filter_map(|e| match e {
                    Event::MemoryWrite { address, .. } => Some(*address),
                    _ => None,
                })
                .collect::<Vec<_>>(),
            [0xffff_fffc, 0]
        );
    }

    #[test]
    fn failure_midway_leaves_interrupted_state() {
        let op = StringIo {
            direction: IoDirection::In,
            width: PortWidth::Byte,
            port: 0x71,
            rep: true,
            address_size: AddressSize::Bits64,
        };
        let mut regs = regs_with(10, 0, 0x500, false);
        // The fourth port read fails: three elements are complete.
        let mut env = FakeEnv::new(vec![0xaa], FailurePlan { port_op: Some(3), memory_op: None });
        assert_eq!(emulate(&mut regs, &op, &mut env), Err(Failure::PortIn));
        assert_eq!(regs.gprs[1], 7);
        assert_eq!(regs.gprs[7], 0x503);
    }

    #[test]
    fn instruction_information_round_trips() {
        for address_size in [AddressSize::Bits32, AddressSize::Bits64] {
            let ins = StringIoInformation { address_size, segment: None };
            assert_eq!(StringIoInformation::decode(ins.encode(), IoDirection::In), Ok(ins));
            for n in 0..6 {
                let outs =
                    StringIoInformation { address_size, segment: SegmentRegister::from_number(n) };
                assert_eq!(StringIoInformation::decode(outs.encode(), IoDirection::Out), Ok(outs));
            }
        }
        // 32-bit address size (1 << 7), DS (3 << 15), undefined bits set everywhere else.
        let info = 1 << 7 | 3 << 15 | 0xfffc_007f | 0x7c00;
        assert_eq!(
            StringIoInformation::decode(info, IoDirection::Out),
            Ok(StringIoInformation {
                address_size: AddressSize::Bits32,
                segment: Some(SegmentRegister::Ds)
            })
        );
        assert_eq!(
            StringIoInformation::decode(0, IoDirection::In),
            Err(InstructionInformationError::UnsupportedAddressSize { field: 0 })
        );
        assert_eq!(
            StringIoInformation::decode(2 << 7 | 6 << 15, IoDirection::Out),
            Err(InstructionInformationError::InvalidSegment { field: 6 })
        );
        // The segment field is undefined for INS, so garbage there is ignored.
        assert!(StringIoInformation::decode(2 << 7 | 7 << 15, IoDirection::In).is_ok());
    }

    #[test]
    fn from_qualification_only_takes_string_instructions() {
        let q = IoExitQualification::decode(0x01f0_0039).unwrap();
        assert_eq!(
            StringIo::from_qualification(&q, AddressSize::Bits64),
            Some(StringIo {
                direction: IoDirection::In,
                width: PortWidth::Word,
                port: 0x1f0,
                rep: true,
                address_size: AddressSize::Bits64
            })
        );
        let q = IoExitQualification::decode(0x03f8_0003).unwrap();
        assert_eq!(StringIo::from_qualification(&q, AddressSize::Bits64), None);
    }
}
