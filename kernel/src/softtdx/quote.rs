//! The model's VMM answers TDG.VP.VMCALL<GetQuote> (sub-function 0x10002) as KVM and QEMU do
//! for a TD started without a quote service, and, in fault scenarios a self-test arms, as a
//! failing, stuck, hostile or working one.
//!
//! Operands, in the order a request meets them:
//! - KVM `tdx_get_quote` (arch/x86/kvm/vmx/tdx.c): a GPA without the shared bit is refused with
//!   INVALID_OPERAND; otherwise the shared bit is stripped and the request goes to QEMU.
//! - QEMU `tdx_handle_get_quote` (target/i386/kvm/tdx.c): size 0 is INVALID_OPERAND; a GPA or
//!   size that is not a 4 KiB multiple is ALIGN_ERROR; a header QEMU cannot read (not guest
//!   memory), a version other than 1, a size above 128 KiB (`TDX_GET_QUOTE_MAX_BUF_LEN`) or an
//!   in_len beyond the buffer are INVALID_OPERAND. The model reads guest memory only where the
//!   TD converted it with MapGPA (Shared in the page-state table, `super::pages`): a page the
//!   TD never made shared has no contents the host could read (QEMU would read the discarded
//!   shared side and find no version 1 there), so it too is INVALID_OPERAND.
//! - Without `quote-generation-socket` QEMU writes the header back with the status
//!   QGS_UNAVAILABLE (version, in_len and out_len as the guest left them) and answers SUCCESS:
//!   the model's default.
//!
//! Fault scenarios ([`QuoteFault`], one request each):
//! - `Error`: the status ERROR, as QEMU's completion writes it when the quote service fails or
//!   times out (`tdx_get_quote_completion`, tdx-quote-generator.c `getquote_expired`);
//! - `InFlight`: the status IN_FLIGHT, as QEMU marks a request it passed on, and nothing more;
//! - `TooLong`: SUCCESS with out_len one page beyond the buffer and no quote written: a
//!   hostile host (QEMU bounds what it writes by the payload);
//! - `Success`: a quote, as QEMU's completion writes one (the quote at the payload, out_len,
//!   then the status), made of the fixed marker `tdx_attest::quote::SIMULATED_QUOTE_MARKER`
//!   and the in_len bytes the TD sent (its TDREPORT): clearly simulated, never signed.
//!
//! Not modelled: TDG.VP.VMCALL_RETRY beyond 16 requests in flight (one vCPU, one request at a
//! time) and the completion interrupt (SetupEventNotifyInterrupt is not served).

use super::mmio::SHARED_BIT;
use super::pages::{PageState, Pages};
use core::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use tdx_attest::quote::{self as layout, HEADER_LEN, SIMULATED_QUOTE_MARKER};
use tdx_attest::report::TDREPORT_SIZE;
use tdx_ve::abi::TdVmCallStatus;
use tdx_ve::regs::{Gpr, GuestRegisters, RegisterState};

const PAGE_SIZE: u64 = 4096;
/// QEMU's cap on the buffer (`TDX_GET_QUOTE_MAX_BUF_LEN`, tdx-quote-generator.h).
const MAX_BUFFER_LEN: u64 = 128 * 1024;

/// How the VMM answers the next GetQuote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum QuoteFault {
    /// The quote service failed: status ERROR.
    Error = 1,
    /// Status IN_FLIGHT, never completed.
    InFlight = 2,
    /// SUCCESS with an out_len longer than the buffer.
    TooLong = 3,
    /// A simulated quote.
    Success = 4,
}

static ARMED: AtomicU8 = AtomicU8::new(0);
/// GetQuote requests the VMM took (answered SUCCESS), for the checks.
pub static TAKEN: AtomicU64 = AtomicU64::new(0);

/// Arms (or with `None` disarms) the answer to the next GetQuote.
pub fn arm(fault: Option<QuoteFault>) {
    ARMED.store(fault.map_or(0, |f| f as u8), Ordering::SeqCst);
}

fn take_armed() -> Option<QuoteFault> {
    match ARMED.swap(0, Ordering::SeqCst) {
        1 => Some(QuoteFault::Error),
        2 => Some(QuoteFault::InFlight),
        3 => Some(QuoteFault::TooLong),
        4 => Some(QuoteFault::Success),
        _ => None,
    }
}

fn set_status(view: &mut RegisterState, status: TdVmCallStatus) {
    view.set_gpr(Gpr::R10, status.code());
}

/// TDG.VP.VMCALL<GetQuote>: R12 = shared GPA of the buffer, R13 = its size.
pub fn get_quote(view: &mut RegisterState, pages: &Pages) {
    let (r12, size) = (view.gpr(Gpr::R12), view.gpr(Gpr::R13));
    if r12 & SHARED_BIT == 0 {
        return set_status(view, TdVmCallStatus::InvalidOperand);
    }
    let gpa = r12 & !SHARED_BIT;
    if size == 0 {
        return set_status(view, TdVmCallStatus::InvalidOperand);
    }
    if !gpa.is_multiple_of(PAGE_SIZE) || !size.is_multiple_of(PAGE_SIZE) {
        return set_status(view, TdVmCallStatus::AlignError);
    }
    let Some(end) = gpa.checked_add(size) else {
        return set_status(view, TdVmCallStatus::InvalidOperand);
    };
    let shared = (gpa..end)
        .step_by(PAGE_SIZE as usize)
        .all(|page| super::pages::state_locked(pages, page) == PageState::Shared);
    if size > MAX_BUFFER_LEN || !shared {
        return set_status(view, TdVmCallStatus::InvalidOperand);
    }
    // The host reads and writes the buffer as QEMU's `address_space_write` does, not through
    // the TD's shared mapping.
    let status = super::pages::host_access(gpa, size, |buffer| answer(buffer, size));
    set_status(view, status.unwrap_or(TdVmCallStatus::InvalidOperand));
}

/// Fills in the GetQuote buffer (`size` bytes, the TD's request in it) as the armed fault or
/// QEMU without a quote service would.
fn answer(buffer: &mut [u8], size: u64) -> TdVmCallStatus {
    let version = u64::from_le_bytes(buffer[0..8].try_into().unwrap_or([0; 8]));
    let in_len = u32::from_le_bytes(buffer[16..20].try_into().unwrap_or([0; 4])) as u64;
    if version != layout::VERSION || in_len > size - HEADER_LEN as u64 {
        return TdVmCallStatus::InvalidOperand;
    }
    let out_len = u32::from_le_bytes(buffer[20..24].try_into().unwrap_or([0; 4]));
    let room = buffer.len() - HEADER_LEN;
    let _ = match take_armed() {
        None => layout::write_answer(buffer, layout::STATUS_QGS_UNAVAILABLE, out_len, None),
        Some(QuoteFault::Error) => {
            layout::write_answer(buffer, layout::STATUS_ERROR, out_len, None)
        }
        Some(QuoteFault::InFlight) => {
            layout::write_answer(buffer, layout::STATUS_IN_FLIGHT, out_len, None)
        }
        Some(QuoteFault::TooLong) => {
            let beyond = (room + PAGE_SIZE as usize) as u32;
            layout::write_answer(buffer, layout::STATUS_SUCCESS, beyond, None)
        }
        Some(QuoteFault::Success) => {
            let mut quote = [0u8; SIMULATED_QUOTE_MARKER.len() + TDREPORT_SIZE];
            let sent = (in_len as usize).min(TDREPORT_SIZE);
            quote[..SIMULATED_QUOTE_MARKER.len()].copy_from_slice(SIMULATED_QUOTE_MARKER);
            quote[SIMULATED_QUOTE_MARKER.len()..][..sent]
                .copy_from_slice(&buffer[HEADER_LEN..HEADER_LEN + sent]);
            let len = SIMULATED_QUOTE_MARKER.len() + sent;
            layout::write_answer(buffer, layout::STATUS_SUCCESS, len as u32, Some(&quote[..len]))
        }
    };
    TAKEN.fetch_add(1, Ordering::Relaxed);
    TdVmCallStatus::Success
}
