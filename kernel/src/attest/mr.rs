//! TDG.MR.REPORT (leaf 4) and TDG.MR.RTMR.EXTEND (leaf 2): the TD's own measurement leaves
//! (Intel TDX Module ABI, "TDG.MR.REPORT Leaf" and "TDG.MR.RTMR.EXTEND Leaf"; module 1.5
//! `src/td_dispatcher/vm_exits/tdg_mr_report.c`, `tdg_mr_rtmr_extend.c`).
//!
//! Both take guest-physical addresses. The kernel runs on the loader's page tables, in which a
//! private page's physical address is its GPA (the shared bit is clear), so the address comes
//! from a walk of the live tables ([`crate::memory::translate`]). Statuses are compared on
//! their upper 32 bits; the lower half carries the operand id (`api_error_with_operand_id`;
//! Linux `TDCALL_RETURN_CODE`).

use crate::tdx::tdcall::{tdcall, TdcallRegs};
use tdx_attest::report::{REPORTDATA_SIZE, TDREPORT_SIZE};
use tdx_ve::abi::TdcallLeaf;

/// TDX_OPERAND_INVALID (module `auto_gen/tdx_error_codes_defs.h`).
pub const TDX_OPERAND_INVALID: u64 = 0xC000_0100_0000_0000;
/// TDX_OPERAND_BUSY: the RTMR lock was contended; the caller may retry.
pub const TDX_OPERAND_BUSY: u64 = 0x8000_0200_0000_0000;
/// Operand ids in the low half of a status (`OPERAND_ID_RCX`, `_RDX`, `_R8`, `_RTMR`).
pub const OPERAND_ID_RCX: u64 = 1;
pub const OPERAND_ID_RDX: u64 = 2;
pub const OPERAND_ID_R8: u64 = 8;
pub const OPERAND_ID_RTMR: u64 = 168;

const CLASS_MASK: u64 = 0xFFFF_FFFF_0000_0000;

/// A failed TDG.MR.* call: the completion status as the module returned it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MrError {
    pub leaf: TdcallLeaf,
    pub status: u64,
}

impl MrError {
    /// The status class (upper 32 bits, operand id cleared).
    pub fn class(&self) -> u64 {
        self.status & CLASS_MASK
    }

    /// The operand id the module named (lower 32 bits).
    pub fn operand(&self) -> u64 {
        self.status & !CLASS_MASK
    }
}

impl core::fmt::Display for MrError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let class = match self.class() {
            TDX_OPERAND_INVALID => "TDX_OPERAND_INVALID",
            TDX_OPERAND_BUSY => "TDX_OPERAND_BUSY",
            _ => "unexpected status",
        };
        let operand = match self.operand() {
            OPERAND_ID_RCX => "RCX",
            OPERAND_ID_RDX => "RDX",
            OPERAND_ID_R8 => "R8",
            OPERAND_ID_RTMR => "RTMR",
            _ => "?",
        };
        write!(f, "{:?}: {class} ({:#x}, operand {operand})", self.leaf, self.status)
    }
}

/// The guest-physical address of the kernel object at `address`.
pub fn gpa_of(address: u64) -> Option<u64> {
    crate::memory::translate(address).ok().map(|t| t.physical)
}

fn call(leaf: TdcallLeaf, regs: &mut TdcallRegs) -> Result<(), MrError> {
    regs.rax = leaf as u64;
    loop {
        // SAFETY: TDG.MR.REPORT writes only the 1024 bytes at RCX (a buffer the caller owns
        // for the call) and TDG.MR.RTMR.EXTEND only reads 48 bytes at RCX and changes an RTMR;
        // the callers below pass addresses of buffers they hold exclusively.
        let status = unsafe { tdcall(regs) };
        // Interrupts stay disabled in this kernel, so the module's early return for a pending
        // interrupt (tdg_mr_report.c "Interruption Point") cannot happen; were it to, the
        // leaf is simply executed again, as the module asks.
        match status {
            0 => return Ok(()),
            s if s & CLASS_MASK == TDX_OPERAND_BUSY => {
                regs.rax = leaf as u64;
                core::hint::spin_loop();
            }
            status => return Err(MrError { leaf, status }),
        }
    }
}

/// TDG.MR.REPORT with raw GPAs and subtype: the operand checks of the module are what the
/// self-test probes with this.
pub fn report_raw(report_gpa: u64, report_data_gpa: u64, subtype: u64) -> Result<(), MrError> {
    let mut regs =
        TdcallRegs { rcx: report_gpa, rdx: report_data_gpa, r8: subtype, ..Default::default() };
    call(TdcallLeaf::MrReport, &mut regs)
}

/// TDG.MR.RTMR.EXTEND with a raw GPA and index.
pub fn rtmr_extend_raw(data_gpa: u64, index: u64) -> Result<(), MrError> {
    let mut regs = TdcallRegs { rcx: data_gpa, rdx: index, ..Default::default() };
    call(TdcallLeaf::MrRtmrExtend, &mut regs)
}

/// A TDREPORT_STRUCT buffer with the alignment TDG.MR.REPORT demands (and room behind it for
/// the self-test's misaligned probe, which points 64 bytes in).
#[repr(C, align(1024))]
pub struct ReportBuffer(pub [u8; 2 * TDREPORT_SIZE]);

/// REPORTDATA with the alignment TDG.MR.REPORT demands.
#[repr(C, align(64))]
pub struct ReportData(pub [u8; REPORTDATA_SIZE]);

/// A 48-byte RTMR extension value, 64-byte aligned as TDG.MR.RTMR.EXTEND demands, with room
/// for the self-test's misaligned probe.
#[repr(C, align(64))]
pub struct ExtendData(pub [u8; 64]);

/// TDG.MR.REPORT of subtype 0 with `data` as REPORTDATA; returns the 1024-byte report.
pub fn report(
    buffer: &mut ReportBuffer,
    data: &ReportData,
) -> Result<[u8; TDREPORT_SIZE], MrError> {
    let report_gpa = gpa_of(buffer.0.as_ptr() as u64).unwrap_or(u64::MAX);
    let data_gpa = gpa_of(data.0.as_ptr() as u64).unwrap_or(u64::MAX);
    report_raw(report_gpa, data_gpa, 0)?;
    let mut out = [0u8; TDREPORT_SIZE];
    out.copy_from_slice(&buffer.0[..TDREPORT_SIZE]);
    Ok(out)
}

/// TDG.MR.RTMR.EXTEND of RTMR[`index`] with `value`.
pub fn rtmr_extend(index: u64, value: &[u8; 48]) -> Result<(), MrError> {
    let mut data = ExtendData([0; 64]);
    data.0[..48].copy_from_slice(value);
    let gpa = gpa_of(data.0.as_ptr() as u64).unwrap_or(u64::MAX);
    rtmr_extend_raw(gpa, index)
}
