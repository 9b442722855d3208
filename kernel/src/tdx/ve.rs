//! The #VE handler (IDT vector 20): emulation of the instructions a TD cannot execute.
//!
//! Order matters. TDG.VP.VEINFO.GET runs first, before any lock, log, port access, CPUID or MSR
//! access: until it runs, a second #VE would be a #DF and NMIs stay blocked. Then the exit
//! reason selects the emulation. RIP advances by the instruction length the TDX module reported,
//! and only when the emulation succeeded. Anything unexpected is fatal: diagnostics go out
//! through the lock-free emergency writer (which, in a TD, uses hypercalls and so never raises
//! another #VE), the host gets ReportFatalError, and the kernel stops with the failure exit.
//!
//! Results are architecturally exact, unlike every public implementation this project looked
//! at (see TDX-FACTS.md): IN AL/AX merge into RAX, IN EAX zero-extends, host data is masked to
//! the access width, OUT sends only the low bytes, and INS/OUTS (with or without REP, either
//! direction flag) are emulated element by element with RCX/RSI/RDI updated as the CPU would.

use super::tdcall::{self, TdcallError};
use super::vmcall::{self, VmcallError};
use crate::arch::frame::TrapFrame;
use crate::arch::rflags;
use crate::console::EmergencyWriter;
use crate::counters;
use crate::memory::{self, AccessError};
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicU64, Ordering};
use tdx_ve::abi::{ExitReason, VeInfo};
use tdx_ve::decode::{self, Instruction};
use tdx_ve::io::{self, IoDirection, IoExitQualification, PortWidth, QualificationError};
use tdx_ve::regs::SegmentRegister;
use tdx_ve::string_io::{self, StringIo, StringIoEnv, StringIoInformation};

/// The longest x86 instruction.
const MAX_INSTRUCTION_LENGTH: u32 = 15;
/// CPUID leaves reserved for hypervisor communication (Intel SDM Vol. 2A, CPUID).
const HYPERVISOR_CPUID_FIRST: u32 = 0x4000_0000;
const HYPERVISOR_CPUID_LAST: u32 = 0x4FFF_FFFF;

/// Why a #VE could not be handled.
#[derive(Debug)]
pub enum VeError {
    VeinfoGet(TdcallError),
    UnsupportedExitReason(u32),
    BadInstructionLength(u32),
    BadQualification(QualificationError),
    Hypercall(VmcallError),
    /// An Instruction.IO hypercall failed for this access.
    Io {
        direction: IoDirection,
        port: u16,
        width: PortWidth,
        error: VmcallError,
    },
    /// The bytes at RIP are not the string instruction the qualification describes.
    InstructionMismatch,
    UnsupportedSegmentOverride(SegmentRegister),
    Memory(AccessError),
    /// An EPT-violation #VE (MMIO) that could not be emulated (`super::mmio`).
    Mmio(super::mmio::MmioError),
}

impl From<VmcallError> for VeError {
    fn from(e: VmcallError) -> Self {
        VeError::Hypercall(e)
    }
}

impl fmt::Display for VeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::VeinfoGet(e) => write!(f, "TDG.VP.VEINFO.GET failed: {e}"),
            Self::UnsupportedExitReason(r) => write!(f, "unsupported exit reason {r}"),
            Self::BadInstructionLength(l) => write!(f, "implausible instruction length {l}"),
            Self::BadQualification(e) => write!(f, "invalid I/O exit qualification: {e:?}"),
            Self::Hypercall(e) => write!(f, "{e}"),
            Self::Io { direction, port, width, error } => {
                let (verb, preposition) = match direction {
                    IoDirection::In => ("IN", "from"),
                    IoDirection::Out => ("OUT", "to"),
                };
                write!(f, "{verb} {preposition} port {port:#x} ({}-byte): {error}", width.bytes())
            }
            Self::InstructionMismatch => {
                write!(f, "instruction bytes do not match the I/O exit qualification")
            }
            Self::UnsupportedSegmentOverride(s) => {
                write!(f, "string I/O with a {s:?} segment override is not supported")
            }
            Self::Memory(e) => write!(f, "string I/O memory operand: {e}"),
            Self::Mmio(e) => write!(f, "{e}"),
        }
    }
}

/// Registers the #VE handler for vector 20, and ReportFatalError as the trap path's host
/// report. Outside a TD no #VE is ever delivered, so registering it always is harmless.
pub fn register() {
    use crate::arch::{idt::vector, trap};
    trap::register(vector::VIRTUALIZATION, |frame| {
        handle_virtualization_exception(frame);
        true
    });
    trap::set_fatal_reporter(super::report_fatal_error);
}

/// The #VE handler (vector 20).
pub fn handle_virtualization_exception(frame: &mut TrapFrame) {
    // Test-only (feature `broken-ve-ordering`): the mistake the softtdx ordering check exists
    // to catch.
    #[cfg(feature = "broken-ve-ordering")]
    misordered(crate::bootflags::misorder());
    let ve = match tdcall::vp_veinfo_get() {
        Ok(ve) => ve,
        Err(error) => fatal(frame, None, VeError::VeinfoGet(error)),
    };
    #[cfg(feature = "broken-ve-ordering")]
    if crate::bootflags::misorder() == crate::bootflags::Misorder::Nested {
        nested_probe();
    }
    // The common case first, with the same checks as the general path below: IN or OUT of a
    // register, which is nearly every #VE this kernel takes.
    if ve.exit_reason == ExitReason::Io as u32
        && (1..=MAX_INSTRUCTION_LENGTH).contains(&ve.instruction_length)
    {
        if let Some((width, direction, port)) =
            IoExitQualification::decode_port_io(ve.exit_qualification)
        {
            counters::VE_IO.increment();
            match emulate_port_io(frame, width, direction, port) {
                Ok(()) => advance(frame, &ve),
                Err(error) => fatal(frame, Some(ve), error),
            }
            return;
        }
    }
    // MMIO: no instruction length in the VE info; the emulation decodes and advances RIP.
    if ve.exit_reason == ExitReason::EptViolation as u32 {
        counters::VE_MMIO.increment();
        if let Err(error) = super::mmio::emulate_ept_violation(frame, &ve).map_err(VeError::Mmio) {
            fatal(frame, Some(ve), error);
        }
        return;
    }
    match emulate(frame, &ve) {
        Ok(()) => advance(frame, &ve),
        Err(error) => fatal(frame, Some(ve), error),
    }
}

/// Past the emulated instruction, by the length the TDX module reported. The module set RF
/// when it injected the #VE (td_other_exits.c tdx_inject_ve); the instruction has now completed,
/// so RF is cleared as the CPU clears it after an instruction completes (an instruction
/// breakpoint on the next one must fire).
#[inline(always)]
fn advance(frame: &mut TrapFrame, ve: &VeInfo) {
    frame.rip = frame.rip.wrapping_add(ve.instruction_length as u64);
    frame.rflags &= !rflags::RF;
    // Test-only (`softtdx misorder=rf-left-set`): the RF clear above left out, which softtdx
    // must catch when the handler returns.
    #[cfg(feature = "broken-ve-ordering")]
    if crate::bootflags::misorder() == crate::bootflags::Misorder::RfLeftSet {
        frame.rflags |= rflags::RF;
    }
}

/// Test-only: an instruction that raises #VE in a TD, run before TDG.VP.VEINFO.GET.
#[cfg(feature = "broken-ve-ordering")]
fn misordered(what: crate::bootflags::Misorder) {
    use crate::bootflags::Misorder;
    match what {
        // SAFETY: port 0x80 is the POST diagnostic port; writing it has no effect.
        Misorder::PortIo => unsafe { crate::port::outb(0x80, 0) },
        // SAFETY: WBINVD writes back and invalidates caches; no architectural state changes.
        Misorder::Wbinvd => unsafe { core::arch::asm!("wbinvd", options(nostack)) },
        Misorder::Cpuid => {
            // Leaf 0xB (x2APIC topology): #VE in a TD (td-rules, cpuid_configurations.c).
            let _ = core::arch::x86_64::__cpuid_count(0xB, 0);
        }
        Misorder::Nested | Misorder::RfLeftSet => {}
    }
}

/// Test-only (`softtdx misorder=nested`): on the first #VE, after VEINFO.GET, a hypervisor
/// CPUID (a #VE in a TD, td-rules SRC_CPUID_HV). In a TD that is a nested #VE, which this
/// handler emulates; the probe then stops the kernel and says whether it saw one.
#[cfg(feature = "broken-ve-ordering")]
fn nested_probe() {
    use core::sync::atomic::AtomicBool;
    static DONE: AtomicBool = AtomicBool::new(false);
    if DONE.swap(true, Ordering::Relaxed) {
        return;
    }
    let before = counters::VE_CPUID.get();
    let _ = core::arch::x86_64::__cpuid_count(HYPERVISOR_CPUID_FIRST, 0);
    let nested = counters::VE_CPUID.get() - before;
    let verdict = if nested == 1 {
        "CPUID 0x40000000 after VEINFO.GET was emulated through a nested #VE"
    } else {
        "CPUID 0x40000000 after VEINFO.GET ran natively: no nested #VE"
    };
    let _ = writeln!(EmergencyWriter::new(), "\nFATAL nested #VE probe: {verdict}");
    super::report_fatal_error("nested #VE probe");
    crate::exit::exit(crate::exit::ExitCode::Failure)
}

fn emulate(frame: &mut TrapFrame, ve: &VeInfo) -> Result<(), VeError> {
    let reason = match ExitReason::try_from(ve.exit_reason) {
        Ok(
            reason @ (ExitReason::Io
            | ExitReason::Hlt
            | ExitReason::Cpuid
            | ExitReason::Rdmsr
            | ExitReason::Wrmsr),
        ) => reason,
        _ => {
            counters::VE_OTHER.increment();
            return Err(VeError::UnsupportedExitReason(ve.exit_reason));
        }
    };
    // Every reason handled here is an instruction exit, whose length the TDX module reports.
    if !(1..=MAX_INSTRUCTION_LENGTH).contains(&ve.instruction_length) {
        counters::VE_OTHER.increment();
        return Err(VeError::BadInstructionLength(ve.instruction_length));
    }
    match reason {
        ExitReason::Io => {
            counters::VE_IO.increment();
            emulate_io(frame, ve)
        }
        ExitReason::Hlt => {
            counters::VE_HLT.increment();
            vmcall::hlt(frame.rflags & rflags::IF == 0)?;
            Ok(())
        }
        ExitReason::Cpuid => {
            counters::VE_CPUID.increment();
            let leaf = frame.rax as u32;
            // As Linux does (arch/x86/coco/tdx/tdx.c, handle_cpuid): only the range reserved for
            // hypervisor communication is the host's to answer. Any other leaf that reaches the
            // handler reads as all zeros rather than as values an untrusted host chose.
            let [eax, ebx, ecx, edx] =
                if (HYPERVISOR_CPUID_FIRST..=HYPERVISOR_CPUID_LAST).contains(&leaf) {
                    vmcall::cpuid(leaf, frame.rcx as u32)?
                } else {
                    [0; 4]
                };
            // CPUID writes the 32-bit registers, which zero-extends into the 64-bit ones.
            frame.rax = eax as u64;
            frame.rbx = ebx as u64;
            frame.rcx = ecx as u64;
            frame.rdx = edx as u64;
            Ok(())
        }
        ExitReason::Rdmsr => {
            counters::VE_MSR.increment();
            let value = vmcall::rdmsr(frame.rcx as u32)?;
            frame.rax = value & 0xFFFF_FFFF;
            frame.rdx = value >> 32;
            Ok(())
        }
        ExitReason::Wrmsr => {
            counters::VE_MSR.increment();
            let value = (frame.rdx << 32) | (frame.rax & 0xFFFF_FFFF);
            vmcall::wrmsr(frame.rcx as u32, value)?;
            Ok(())
        }
        // Filtered out above; an error, not a panic, if that ever changes.
        _ => Err(VeError::UnsupportedExitReason(ve.exit_reason)),
    }
}

fn emulate_io(frame: &mut TrapFrame, ve: &VeInfo) -> Result<(), VeError> {
    let access =
        IoExitQualification::decode(ve.exit_qualification).map_err(VeError::BadQualification)?;
    if access.string {
        return emulate_string_io(frame, ve, &access);
    }
    emulate_port_io(frame, access.width, access.direction, access.port)
}

/// IN or OUT of AL, AX or EAX.
#[inline(always)]
fn emulate_port_io(
    frame: &mut TrapFrame,
    width: PortWidth,
    direction: IoDirection,
    port: u16,
) -> Result<(), VeError> {
    let io_error = |error| VeError::Io { direction, port, width, error };
    match direction {
        IoDirection::In => {
            let data = port_read(port, width).map_err(io_error)?;
            frame.rax = io::merge_in(frame.rax, width, data);
        }
        IoDirection::Out => {
            let value = io::out_value(frame.rax, width);
            port_write(port, width, value).map_err(io_error)?;
        }
    }
    Ok(())
}

/// One bit per port: whether its first denial has been logged.
static DENIAL_LOGGED: [AtomicU64; 1024] = [const { AtomicU64::new(0) }; 1024];

/// A driver's port read through the allowlist ([`super::io`]); the first denial of each port is
/// logged.
fn port_read(port: u16, width: PortWidth) -> Result<u64, VmcallError> {
    super::io::read_with(port, width, || log_denial(port, width, IoDirection::In))
}

/// A driver's port write through the allowlist; the first denial of each port is logged.
fn port_write(port: u16, width: PortWidth, value: u64) -> Result<(), VmcallError> {
    super::io::write_with(port, width, value, || log_denial(port, width, IoDirection::Out))
}

/// Says once per port that a driver's access was denied, through the lock-free writer (this
/// runs inside the #VE handler).
#[cold]
fn log_denial(port: u16, width: PortWidth, direction: IoDirection) {
    let bit = 1u64 << (port % 64);
    if DENIAL_LOGGED[port as usize / 64].fetch_or(bit, Ordering::Relaxed) & bit == 0 {
        let verb = match direction {
            IoDirection::In => "IN from",
            IoDirection::Out => "OUT to",
        };
        let _ = writeln!(
            EmergencyWriter::new(),
            "tdx: denied {}-byte {verb} port {port:#x}: not in the port allowlist (logged once)",
            width.bytes()
        );
    }
}

/// INS/OUTS: the qualification gives port, width, direction and REP; the address size (0x67)
/// and any segment override come from the instruction bytes, which are checked to agree.
fn emulate_string_io(
    frame: &mut TrapFrame,
    ve: &VeInfo,
    access: &IoExitQualification,
) -> Result<(), VeError> {
    let length = ve.instruction_length as usize;
    memory::check_access(frame.rip, length as u64, false).map_err(VeError::Memory)?;
    let mut bytes = [0u8; MAX_INSTRUCTION_LENGTH as usize];
    // SAFETY: the range was just checked to be mapped; code is not modified concurrently.
    unsafe { core::ptr::copy_nonoverlapping(frame.rip as *const u8, bytes.as_mut_ptr(), length) };
    let instruction = match decode::decode(&bytes[..length]) {
        Ok(Instruction::Io(io)) if io.string && io.length as usize == length => io,
        _ => return Err(VeError::InstructionMismatch),
    };
    if instruction.width != access.width
        || instruction.direction != access.direction
        || instruction.rep != access.rep
    {
        return Err(VeError::InstructionMismatch);
    }
    // The VMX instruction-information field carries the address size (bits 9:7) and, for OUTS,
    // the source segment (bits 17:15) the CPU used. When it holds a 32- or 64-bit size both must
    // agree with the prefixes (DS when there is no override); a 16-bit value cannot occur in
    // 64-bit code, so it is read as "not provided" and the prefixes are used.
    let mut segment = instruction.segment_override;
    if let Ok(info) = StringIoInformation::decode(ve.instruction_info, access.direction) {
        if info.address_size != instruction.address_size {
            return Err(VeError::InstructionMismatch);
        }
        if access.direction == IoDirection::Out {
            let from_prefix = instruction.segment_override.unwrap_or(SegmentRegister::Ds);
            if info.segment != Some(from_prefix) {
                return Err(VeError::InstructionMismatch);
            }
            segment = info.segment;
        }
    }
    // In 64-bit mode only FS and GS change the OUTS source address; INS always writes ES:RDI.
    // Supporting FS/GS would mean reading their bases; nothing here emits them.
    if let Some(segment) = segment {
        if segment.has_base_in_64bit_mode() && access.direction == IoDirection::Out {
            return Err(VeError::UnsupportedSegmentOverride(segment));
        }
    }
    let op = StringIo {
        direction: access.direction,
        width: access.width,
        port: access.port,
        rep: access.rep,
        address_size: instruction.address_size,
    };
    string_io::emulate(frame, &op, &mut HypercallStringIo)
}

/// Ports through hypercalls, memory through the interrupted context's linear addresses after a
/// page-table check.
struct HypercallStringIo;

impl StringIoEnv for HypercallStringIo {
    type Error = VeError;

    fn port_in(&mut self, port: u16, width: PortWidth) -> Result<u64, VeError> {
        port_read(port, width).map_err(|error| VeError::Io {
            direction: IoDirection::In,
            port,
            width,
            error,
        })
    }

    fn port_out(&mut self, port: u16, width: PortWidth, value: u64) -> Result<(), VeError> {
        port_write(port, width, value).map_err(|error| VeError::Io {
            direction: IoDirection::Out,
            port,
            width,
            error,
        })
    }

    fn read_memory(&mut self, linear_address: u64, buf: &mut [u8]) -> Result<(), VeError> {
        memory::check_access(linear_address, buf.len() as u64, false).map_err(VeError::Memory)?;
        // SAFETY: the range is mapped and readable (checked above); the interrupted context
        // owns it and is suspended while the handler runs.
        unsafe {
            core::ptr::copy_nonoverlapping(linear_address as *const u8, buf.as_mut_ptr(), buf.len())
        };
        Ok(())
    }

    fn write_memory(&mut self, linear_address: u64, data: &[u8]) -> Result<(), VeError> {
        memory::check_access(linear_address, data.len() as u64, true).map_err(VeError::Memory)?;
        // SAFETY: the range is mapped and writable (checked above); INS writes exactly these
        // bytes on real hardware too.
        unsafe {
            core::ptr::copy_nonoverlapping(data.as_ptr(), linear_address as *mut u8, data.len())
        };
        Ok(())
    }
}

/// Prints what went wrong with the #VE, reports it to the host, and stops. The exit reason,
/// qualification (port, width, direction), instruction length and information, and the error
/// (status, port) are always printed; the register file and the guest linear address only
/// where the trap path allows register contents (outside a TD, or in a debug TD:
/// [`crate::arch::trap::set_register_dump`]).
#[cold]
#[inline(never)]
fn fatal(frame: &TrapFrame, ve: Option<VeInfo>, error: VeError) -> ! {
    let mut out = EmergencyWriter::new();
    let registers = crate::arch::trap::register_dump_allowed();
    let _ = writeln!(out, "\nFATAL #VE: {error}");
    if let Some(ve) = ve {
        let _ = write!(
            out,
            "  exit_reason={} exit_qualification={:#x} instruction_length={} \
             instruction_info={:#x} GPA={:#x}",
            ve.exit_reason,
            ve.exit_qualification,
            ve.instruction_length,
            ve.instruction_info,
            ve.guest_physical_address
        );
        if registers {
            let _ = write!(out, " GLA={:#x}", ve.guest_linear_address);
        }
        let _ = writeln!(out);
    }
    if registers {
        frame.dump(&mut out);
    } else {
        let _ = writeln!(out, "  (registers not shown: not a debug TD)");
    }
    let message = crate::fixed_format!(64, "#VE: {error}");
    super::report_fatal_error(message.as_str());
    crate::exit::exit(crate::exit::ExitCode::Failure)
}
