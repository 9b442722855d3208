//! TDG.VP.VMCALL sub-functions: requests to the untrusted host VMM (Intel GHCI 1.5,
//! "TDG.VP.VMCALL Interface").
//!
//! Each call exposes to the VMM only the registers it needs (RCX bitmap, bit n = GPR n); RSP
//! and RBP are never exposed. R10 = 0 selects a GHCI standard call, R11 the sub-function, and
//! R10 returns the sub-function status. Every value read back from the host is untrusted:
//! results are masked to what the request asked for.

use super::tdcall::{self, TdcallError, TdcallRegs};
use crate::counters;
use tdx_ve::abi::{TdVmCallStatus, TdVmCallSubFunction, TdcallLeaf, TdxStatus};
use tdx_ve::io::{IoDirection, PortWidth};

/// Why a hypercall did not succeed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmcallError {
    /// The TDCALL itself failed: fatal.
    Tdcall(TdcallError),
    /// The VMM returned a non-success status for the sub-function.
    Status { sub_function: TdVmCallSubFunction, status: TdVmCallStatus },
}

impl core::fmt::Display for VmcallError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Tdcall(e) => e.fmt(f),
            Self::Status { sub_function, status } => {
                write!(f, "TDG.VP.VMCALL<{sub_function:?}> returned {status:?}")
            }
        }
    }
}

/// Sends one GHCI standard hypercall and checks both statuses. The registers exposed are the
/// sub-function's minimal bitmap from tdx-ve (`TdVmCallSubFunction::register_bitmap`), where a
/// compile-time check keeps RSP, RBP, RAX and RCX out of every one of them.
pub(super) fn vmcall(
    sub_function: TdVmCallSubFunction,
    regs: &mut TdcallRegs,
) -> Result<(), VmcallError> {
    counters::TDCALL_VMCALL.increment();
    regs.rcx = sub_function.register_bitmap();
    regs.r10 = 0;
    regs.r11 = sub_function.code();
    // SAFETY: TDG.VP.VMCALL only passes the exposed registers to the host and back; the host
    // cannot touch private guest memory.
    let result = unsafe { tdcall::call(TdcallLeaf::VpVmcall, regs) }.map_err(VmcallError::Tdcall);
    let result = result.and_then(|()| match TdVmCallStatus::from(regs.r10) {
        TdVmCallStatus::Success => Ok(()),
        status => Err(VmcallError::Status { sub_function, status }),
    });
    if result.is_err() {
        counters::TDVMCALL_FAILED.increment();
    }
    result
}

/// TDG.VP.VMCALL<Instruction.IO> (GHCI 1.5, 3.9) with only the registers it uses: RAX (leaf,
/// then TDCALL status), RCX (bitmap), R10 (standard call, then status), R11 (sub-function,
/// then data read), R12 size, R13 direction, R14 port, R15 value written. R12-R15 are exposed
/// and may come back as the host left them: they are declared clobbered, so nothing reads
/// them, and as callee-saved registers they are restored before any caller sees them (as in
/// Linux's `__tdx_hypercall`). Returns (TDCALL status, GHCI status, R11).
#[inline(always)]
fn io_vmcall(width: PortWidth, direction: IoDirection, port: u16, value: u64) -> (u64, u64, u64) {
    let (status, vmcall_status, r11): (u64, u64, u64);
    // SAFETY: TDG.VP.VMCALL passes only the exposed registers (RCX bitmap) to the host and back;
    // the host cannot touch private guest memory, and the stack is not used.
    unsafe {
        core::arch::asm!(
            ".byte 0x66, 0x0f, 0x01, 0xcc",
            inlateout("rax") TdcallLeaf::VpVmcall as u64 => status,
            inlateout("rcx") TdVmCallSubFunction::Io.register_bitmap() => _,
            inlateout("r10") 0u64 => vmcall_status,
            inlateout("r11") TdVmCallSubFunction::Io.code() => r11,
            inlateout("r12") width as u64 => _,
            inlateout("r13") direction.ghci_code() => _,
            inlateout("r14") port as u64 => _,
            inlateout("r15") value => _,
            options(nostack),
        )
    };
    (status, vmcall_status, r11)
}

/// Turns the two statuses of a hypercall into a result, counting failures.
#[inline(always)]
fn check(
    sub_function: TdVmCallSubFunction,
    tdcall_status: u64,
    vmcall_status: u64,
) -> Result<(), VmcallError> {
    counters::TDCALL_VMCALL.increment();
    if tdcall_status == TdxStatus::SUCCESS && vmcall_status == 0 {
        return Ok(());
    }
    counters::TDVMCALL_FAILED.increment();
    if tdcall_status != TdxStatus::SUCCESS {
        let leaf = TdcallLeaf::VpVmcall;
        return Err(VmcallError::Tdcall(TdcallError { leaf, status: tdcall_status }));
    }
    Err(VmcallError::Status { sub_function, status: TdVmCallStatus::from(vmcall_status) })
}

/// TDG.VP.VMCALL<Instruction.IO>, read (GHCI 1.5, 3.9): the value of `port`, masked to `width`.
#[inline(always)]
pub fn io_read(port: u16, width: PortWidth) -> Result<u64, VmcallError> {
    counters::TDVMCALL_IO.increment();
    let (status, vmcall_status, data) = io_vmcall(width, IoDirection::In, port, 0);
    check(TdVmCallSubFunction::Io, status, vmcall_status)?;
    Ok(data & width.mask())
}

/// TDG.VP.VMCALL<Instruction.IO>, write (GHCI 1.5, 3.9): writes the low `width` bytes of
/// `value` to `port`.
#[inline(always)]
pub fn io_write(port: u16, width: PortWidth, value: u64) -> Result<(), VmcallError> {
    counters::TDVMCALL_IO.increment();
    let (status, vmcall_status, _) = io_vmcall(width, IoDirection::Out, port, value & width.mask());
    check(TdVmCallSubFunction::Io, status, vmcall_status)
}

/// TDG.VP.VMCALL<Instruction.HLT> (GHCI 1.5, 3.8): halt until the next interrupt, or for
/// good when `interrupts_blocked` (RFLAGS.IF was 0 at the HLT).
pub fn hlt(interrupts_blocked: bool) -> Result<(), VmcallError> {
    counters::TDVMCALL_HLT.increment();
    let mut regs = TdcallRegs { r12: interrupts_blocked as u64, ..TdcallRegs::default() };
    vmcall(TdVmCallSubFunction::Hlt, &mut regs)
}

/// TDG.VP.VMCALL<Instruction.CPUID> (GHCI 1.5, 3.7): the host's EAX, EBX, ECX, EDX for `leaf`
/// and `subleaf`, each truncated to 32 bits.
pub fn cpuid(leaf: u32, subleaf: u32) -> Result<[u32; 4], VmcallError> {
    counters::TDVMCALL_CPUID.increment();
    let mut regs = TdcallRegs { r12: leaf as u64, r13: subleaf as u64, ..TdcallRegs::default() };
    vmcall(TdVmCallSubFunction::Cpuid, &mut regs)?;
    Ok([regs.r12 as u32, regs.r13 as u32, regs.r14 as u32, regs.r15 as u32])
}

/// TDG.VP.VMCALL<Instruction.RDMSR> (GHCI 1.5, 3.10).
pub fn rdmsr(msr: u32) -> Result<u64, VmcallError> {
    counters::TDVMCALL_MSR.increment();
    let mut regs = TdcallRegs { r12: msr as u64, ..TdcallRegs::default() };
    vmcall(TdVmCallSubFunction::Rdmsr, &mut regs)?;
    Ok(regs.r11)
}

/// TDG.VP.VMCALL<Instruction.WRMSR> (GHCI 1.5, 3.11).
pub fn wrmsr(msr: u32, value: u64) -> Result<(), VmcallError> {
    counters::TDVMCALL_MSR.increment();
    let mut regs = TdcallRegs { r12: msr as u64, r13: value, ..TdcallRegs::default() };
    vmcall(TdVmCallSubFunction::Wrmsr, &mut regs)
}

/// TDG.VP.VMCALL<GetQuote> (GHCI 1.5, "TDG.VP.VMCALL<GetQuote>", sub-function 0x10002): R12 =
/// the buffer's GPA with the shared bit, R13 = its size (a 4 KiB multiple). Success means only
/// that the VMM took the request: the answer is the status in the buffer's header, which the
/// caller polls (`crate::attest::quote`).
pub fn get_quote(shared_gpa: u64, size: u64) -> Result<(), VmcallError> {
    let mut regs = TdcallRegs { r12: shared_gpa, r13: size, ..TdcallRegs::default() };
    vmcall(TdVmCallSubFunction::GetQuote, &mut regs)
}

/// Longest message ReportFatalError carries: eight registers of eight bytes.
pub const FATAL_MESSAGE_LEN: usize = 64;

/// TDG.VP.VMCALL<ReportFatalError> (GHCI 1.5, 3.4): tells the host the TD cannot continue.
///
/// Error code 0 (bits 15:0 must be 0: QEMU rejects other values; bit 63 clear: no shared-GPA
/// buffer). The message is NUL-padded ASCII, truncated to 64 bytes. A VMM normally stops the
/// TD here, so this returns only if it did not.
pub fn report_fatal_error(message: &str) -> Result<(), VmcallError> {
    let mut bytes = [0u8; FATAL_MESSAGE_LEN];
    let len = message.len().min(FATAL_MESSAGE_LEN);
    bytes[..len].copy_from_slice(&message.as_bytes()[..len]);
    let word = |i: usize| u64::from_le_bytes(bytes[i * 8..i * 8 + 8].try_into().unwrap());
    let mut regs = TdcallRegs {
        r12: 0,
        r13: 0,
        r14: word(0),
        r15: word(1),
        rbx: word(2),
        rdi: word(3),
        rsi: word(4),
        r8: word(5),
        r9: word(6),
        rdx: word(7),
        ..TdcallRegs::default()
    };
    vmcall(TdVmCallSubFunction::ReportFatalError, &mut regs)
}
