//! The model's TDG.MR.REPORT (leaf 4) and TDG.MR.RTMR.EXTEND (leaf 2), with the operand checks,
//! their order and the statuses of the TDX 1.5 module (`src/td_dispatcher/vm_exits/
//! tdg_mr_report.c`, `tdg_mr_rtmr_extend.c`; statuses `TDX_OPERAND_INVALID` plus the operand id,
//! `api_error_with_operand_id`).
//!
//! State: the four RTMRs, zero at start as in a new TD. TDINFO comes from the model: the
//! attributes TDG.VP.INFO reports, XFAM [`MODEL_XFAM`], and zero MRTD, MRCONFIGID, MROWNER,
//! MROWNERCONFIG and SERVTD_HASH (the model measured no initial pages and has no host-set
//! values). TEE_INFO_HASH is SHA-384 of that TDINFO, as the module computes it. What the CPU
//! adds (SEAMOPS SEAMDB_REPORT: CPUSVN, TEE_TCB_INFO and its hash, the MAC) is simulated:
//! CPUSVN and TEE_TCB_INFO are zero, and the MAC is the fixed ASCII marker [`SIMULATED_MAC`],
//! which no verifier can mistake for a real one.
//!
//! Not modelled: the pending-interrupt early return (the kernel runs with interrupts off), the
//! RTMR lock (one vCPU: never TDX_OPERAND_BUSY), and the EPT walk of a GPA that is not mapped
//! (the module would exit to the host or raise #VE; the model answers TDX_OPERAND_INVALID).

use crate::arch::frame::TrapFrame;
use spin::Mutex;
use tdx_attest::report::{self, ReportType, TdInfo, REPORTDATA_SIZE, TDREPORT_SIZE};
use tdx_attest::rtmr::RTMR_COUNT;

/// The model's XFAM: x87 and SSE state only.
pub const MODEL_XFAM: u64 = 0x3;
/// The MAC softtdx writes into every report: says what it is.
pub const SIMULATED_MAC: &[u8; 32] = b"softtdx SIMULATED MAC - NOT REAL";

const TDX_SUCCESS: u64 = 0;
const TDX_OPERAND_INVALID: u64 = 0xC000_0100_0000_0000;
const OPERAND_ID_RCX: u64 = 1;
const OPERAND_ID_RDX: u64 = 2;
const OPERAND_ID_R8: u64 = 8;
/// The model's GPA width is 48 (TDG.VP.INFO), so the shared bit is bit 47.
const SHARED_BIT: u64 = 1 << 47;

static RTMR: Mutex<[[u8; 48]; RTMR_COUNT]> = Mutex::new([[0; 48]; RTMR_COUNT]);

/// A guest-physical range as the model sees it (through the kernel's physical-memory map), or
/// `None` where the module's walk would not find a mapped page.
fn guest_physical(gpa: u64, len: u64) -> Option<*mut u8> {
    let gpa = gpa & !SHARED_BIT;
    let virt = crate::memory::physical_memory_offset()?.checked_add(gpa)?;
    crate::memory::check_access(virt, len, true).ok()?;
    Some(virt as *mut u8)
}

/// TDG.MR.RTMR.EXTEND: RCX = GPA of 48 bytes (64-byte aligned, private), RDX = index.
pub fn rtmr_extend(frame: &mut TrapFrame) {
    let (gpa, index) = (frame.rcx, frame.rdx);
    // Checks in the module's order: alignment, then the private-only walk, then the index.
    if !gpa.is_multiple_of(64) {
        frame.rax = TDX_OPERAND_INVALID + OPERAND_ID_RCX;
        return;
    }
    let source = match (gpa & SHARED_BIT == 0).then(|| guest_physical(gpa, 48)).flatten() {
        Some(source) => source,
        None => {
            frame.rax = TDX_OPERAND_INVALID + OPERAND_ID_RCX;
            return;
        }
    };
    if index >= RTMR_COUNT as u64 {
        frame.rax = TDX_OPERAND_INVALID + OPERAND_ID_RDX;
        return;
    }
    let mut value = [0u8; 48];
    // SAFETY: 48 bytes at `source` are mapped (checked by `guest_physical`); the guest is
    // stopped in the model's #UD handler, so nothing writes them meanwhile.
    unsafe { core::ptr::copy_nonoverlapping(source, value.as_mut_ptr(), 48) };
    let mut rtmr = RTMR.lock();
    let slot = &mut rtmr[index as usize];
    *slot = tdx_attest::rtmr::extend(slot, &value);
    frame.rax = TDX_SUCCESS;
}

/// TDG.MR.REPORT: RCX = TDREPORT_STRUCT GPA (1024-aligned), RDX = REPORTDATA GPA (64-aligned),
/// R8 = subtype (0). `attributes` are the TD attributes the model reports.
pub fn mr_report(frame: &mut TrapFrame, attributes: u64) {
    let (report_gpa, data_gpa, subtype) = (frame.rcx, frame.rdx, frame.r8);
    // tdg_mr_report.c, in order: TDREPORT alignment (RCX), REPORTDATA alignment (RDX), the
    // REPORTDATA walk (RDX; private or shared), the subtype (R8), then the TDREPORT walk (RCX).
    if !report_gpa.is_multiple_of(TDREPORT_SIZE as u64) {
        frame.rax = TDX_OPERAND_INVALID + OPERAND_ID_RCX;
        return;
    }
    if !data_gpa.is_multiple_of(REPORTDATA_SIZE as u64) {
        frame.rax = TDX_OPERAND_INVALID + OPERAND_ID_RDX;
        return;
    }
    let Some(data_source) = guest_physical(data_gpa, REPORTDATA_SIZE as u64) else {
        frame.rax = TDX_OPERAND_INVALID + OPERAND_ID_RDX;
        return;
    };
    if subtype != u64::from(report::REPORT_SUBTYPE_TD) {
        frame.rax = TDX_OPERAND_INVALID + OPERAND_ID_R8;
        return;
    }
    let mut report_data = [0u8; REPORTDATA_SIZE];
    // SAFETY: mapped (checked above); the guest is stopped in the model's #UD handler.
    unsafe { core::ptr::copy_nonoverlapping(data_source, report_data.as_mut_ptr(), 64) };
    let td_info = TdInfo {
        attributes,
        xfam: MODEL_XFAM,
        mrtd: [0; 48],
        mrconfigid: [0; 48],
        mrowner: [0; 48],
        mrownerconfig: [0; 48],
        rtmr: *RTMR.lock(),
        servtd_hash: [0; 48],
    };
    let report_type = ReportType {
        tee_type: report::REPORT_TYPE_TDX,
        subtype: report::REPORT_SUBTYPE_TD,
        // TDX_REPORT_VERSION_NO_SERVTDS: the model binds no service TDs.
        version: 0,
    };
    let bytes = report::build(
        report_type,
        &[0; 16],
        &[0; report::TEE_TCB_INFO_SIZE],
        &td_info,
        &report_data,
        SIMULATED_MAC,
    );
    let Some(target) = guest_physical(report_gpa, TDREPORT_SIZE as u64) else {
        frame.rax = TDX_OPERAND_INVALID + OPERAND_ID_RCX;
        return;
    };
    // SAFETY: 1024 writable bytes at `target` (checked above); the guest is stopped.
    unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), target, TDREPORT_SIZE) };
    frame.rax = TDX_SUCCESS;
}
