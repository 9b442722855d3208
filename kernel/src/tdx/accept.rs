//! TDG.MEM.PAGE.ACCEPT (TDCALL leaf 6): turning pending private memory into usable memory.
//!
//! TDVF accepts the memory below 4 GiB and hands the rest over unaccepted (UEFI memory type 15,
//! EfiUnacceptedMemoryType); the VMM may also add pages later (TDH.MEM.PAGE.AUG). Such a page
//! must be accepted before its first access: with SEPT_VE_DISABLE an access to a pending page
//! exits to the host, which cannot fix it, and the TD is stopped. Accepting zeroes the page.
//!
//! [`accept_page`] is the one TDCALL; [`accept_range`] applies the policy of
//! [`tdx_ve::accept`] (2 MiB where possible, 512 x 4 KiB after TDX_PAGE_SIZE_MISMATCH,
//! TDX_OPERAND_BUSY retried, TDX_PAGE_ALREADY_ACCEPTED counted and logged) and returns any
//! other status as an error: the caller decides whether it is fatal (the frame allocator
//! makes it so). Statuses and operand checks are cited in `tdx_ve::accept`.

use super::tdcall::{tdcall, TdcallRegs};
use crate::{counters, println};
use core::sync::atomic::{AtomicBool, Ordering};
use tdx_ve::accept::{self as policy, PageLevel};

pub use tdx_ve::accept::{AcceptError, AcceptStats};

/// Whether 2 MiB accepts are still worth trying: cleared by the first TDX_PAGE_SIZE_MISMATCH
/// (the VMM maps private memory at 4 KiB, as upstream KVM always does), after which every
/// accept is 4 KiB and no 2 MiB attempt costs a TD exit again.
static USE_2M: AtomicBool = AtomicBool::new(true);

/// Tries 2 MiB accepts again (for tests that change how the model's VMM maps memory).
#[cfg(feature = "test-modes")]
pub fn try_2m_again() {
    USE_2M.store(true, Ordering::Relaxed);
}

/// One TDG.MEM.PAGE.ACCEPT of the page at `gpa` (aligned to `level`); returns RAX, the
/// completion status, unclassified.
///
/// # Safety
/// The page must not hold anything the kernel still needs: on success the module zeroes it.
pub unsafe fn accept_page(gpa: u64, level: PageLevel) -> u64 {
    counters::TDCALL_ACCEPT.increment();
    let mut regs =
        TdcallRegs { rax: policy::LEAF, rcx: policy::rcx(gpa, level), ..Default::default() };
    // SAFETY: TDG.MEM.PAGE.ACCEPT reads RCX and returns RAX; the only memory it changes is the
    // accepted page, which the caller vouches for.
    unsafe { tdcall(&mut regs) }
}

/// Accepts `[gpa, gpa + len)` (4 KiB-aligned). Pages answered TDX_PAGE_ALREADY_ACCEPTED are
/// logged and counted in the result: they were *not* zeroed by this call.
///
/// # Safety
/// As [`accept_page`], for every page of the range.
pub unsafe fn accept_range(gpa: u64, len: u64) -> Result<AcceptStats, AcceptError> {
    let mut use_2m = USE_2M.load(Ordering::Relaxed);
    // SAFETY: each call is for a page of the range, which the caller vouches for.
    let result = policy::accept_range(gpa, len, &mut use_2m, |rcx| unsafe {
        accept_page(rcx & !0xFFF, if rcx & 7 == 1 { PageLevel::Size2M } else { PageLevel::Size4K })
    });
    USE_2M.store(use_2m, Ordering::Relaxed);
    let stats = result?;
    if let Some(first) = stats.first_already_accepted {
        println!(
            "tdx: accept: {:#x} bytes of {gpa:#x}+{len:#x} were already accepted (first at GPA \
             {first:#x}); not zeroed by this call",
            stats.already_accepted_bytes
        );
    }
    Ok(stats)
}
