//! TDG.MEM.PAGE.ACCEPT through the kernel's wrapper (`crate::tdx::accept`) against the model's
//! module (softtdx only): 4 MiB of accepted memory below 4 GiB is handed back to the model as
//! pending and accepted again, at 2 MiB, with the 4 KiB fallback, and with each status the
//! policy handles (ALREADY_ACCEPTED, OPERAND_BUSY) or refuses (an unknown status).
//!
//! Outside softtdx these skip: natively there is no TDX module, and in a real TD the kernel
//! cannot make memory pending again (the checks of memory above 4 GiB cover a TD).

#[cfg(feature = "test-modes")]
use super::natively;
use super::{Context, Tally};
use crate::skip;
#[cfg(feature = "test-modes")]
use crate::{fail, pass};

const MODEL_ONLY: &str = "softtdx only: the model makes memory pending again";

#[cfg(feature = "test-modes")]
const CHUNK: u64 = 4 * 1024 * 1024;

pub fn run(ctx: &Context, tally: &mut Tally) {
    #[cfg(feature = "test-modes")]
    if crate::softtdx::is_active() {
        return model_checks(ctx, tally);
    }
    let _ = ctx;
    for name in ACCEPT_CHECKS {
        tally.record(name, skip!("{MODEL_ONLY}"));
    }
}

const ACCEPT_CHECKS: [&str; 5] = [
    "accept.model_2m",
    "accept.size_mismatch_4k",
    "accept.already_accepted",
    "accept.operand_busy",
    "accept.unknown_status",
];

/// 4 MiB, 2 MiB-aligned, from the frame allocator (below 4 GiB: the first regions it has).
/// Also MapGPA's fault checks (`mmio_diff`): a range converted back to private is pending until
/// accepted, and the model unmaps its whole 2 MiB meanwhile.
#[cfg(feature = "test-modes")]
pub(super) fn scratch_chunk(_ctx: &Context) -> Option<u64> {
    crate::mm::frames::allocate(CHUNK, 2 * 1024 * 1024, 16 * 1024 * 1024)
        .filter(|gpa| gpa + CHUNK <= 1 << 32)
}

#[cfg(feature = "test-modes")]
fn model_checks(ctx: &Context, tally: &mut Tally) {
    use crate::softtdx::pages::{self, AcceptFault, PageState};
    use crate::tdx::accept::accept_range;
    use tdx_ve::accept::{AcceptError, TDX_OPERAND_BUSY};

    let Some(gpa) = scratch_chunk(ctx) else {
        for name in ACCEPT_CHECKS {
            tally.record(name, crate::fail!("no 4 MiB of usable memory below 4 GiB to test with"));
        }
        return;
    };
    let offset = crate::memory::physical_memory_offset().unwrap_or(0);
    // Filling the chunk and reading it back are plain stores and loads to private RAM, which the
    // model has nothing to decide about: they run with single-stepping off (`natively`), which
    // spares a million single-step traps per 4 MiB and loses nothing. The model's memory rules
    // are page-fault based (a pending or shared page is non-present in the physical map,
    // `softtdx::pages`) and hold with TF clear: a load or store that reached a page still
    // pending would stop the run as it does stepped. The TDCALLs (`accept_range`) stay stepped.
    let fill = |value: u8| {
        natively(|| {
            // SAFETY: the chunk is usable memory nothing else uses (see `scratch_chunk`), mapped
            // at `offset`; it is accepted (private) whenever this runs.
            unsafe { core::ptr::write_bytes((offset + gpa) as *mut u8, value, CHUNK as usize) }
        })
    };
    let all_zero = || {
        // SAFETY: as in `fill`; read only after the accept, which made the chunk present again.
        let bytes = unsafe {
            core::slice::from_raw_parts((offset + gpa) as *const u64, (CHUNK / 8) as usize)
        };
        natively(|| bytes.iter().all(|b| *b == 0))
    };
    let make_pending = || pages::set(gpa, gpa + CHUNK, PageState::Pending).is_ok();

    tally.run("accept.model_2m", || {
        fill(0xA5);
        if !make_pending() {
            return fail!("the model could not mark {gpa:#x}+4 MiB pending");
        }
        // SAFETY: the chunk holds nothing the kernel needs (see `scratch_chunk`).
        match unsafe { accept_range(gpa, CHUNK) } {
            Ok(s) if s.calls == 2 && s.accepted_2m == 2 && all_zero() => {
                pass!("{gpa:#x}+4 MiB: 2 calls at 2 MiB, zeroed, state {:?}", pages::state(gpa))
            }
            Ok(s) => fail!("{s:?}, zeroed: {}", all_zero()),
            Err(e) => fail!("{e}"),
        }
    });
    tally.run("accept.size_mismatch_4k", || {
        fill(0x5A);
        pages::set_map_4k_only(true);
        let ok = make_pending();
        // SAFETY: as above.
        let result = unsafe { accept_range(gpa, CHUNK) };
        pages::set_map_4k_only(false);
        crate::tdx::accept::try_2m_again();
        match result {
            Ok(s) if ok && s.size_mismatches == 1 && s.accepted_4k == 1024 && s.calls == 1025 && all_zero() => {
                pass!("4 KiB-only mapping: one SIZE_MISMATCH, then only 4 KiB accepts (1024; 1025 calls), zeroed")
            }
            Ok(s) => fail!("{s:?}"),
            Err(e) => fail!("{e}"),
        }
    });
    tally.run("accept.already_accepted", || {
        fill(0x77);
        let ok = make_pending();
        pages::arm_fault(Some(AcceptFault::AlreadyAccepted));
        // SAFETY: as above.
        let first = unsafe { accept_range(gpa, CHUNK) };
        // The whole chunk again: every page is private now.
        // SAFETY: as above.
        let again = unsafe { accept_range(gpa, CHUNK) };
        // SAFETY: as in `fill`.
        let kept = unsafe { core::ptr::read_volatile((offset + gpa) as *const u8) };
        match (first, again) {
            (Ok(a), Ok(b))
                if ok
                    && a.already_accepted_bytes == 2 * 1024 * 1024
                    && a.first_already_accepted == Some(gpa)
                    && a.accepted_2m == 1
                    && b.already_accepted_bytes == CHUNK
                    && kept == 0x77 =>
            {
                pass!("counted, not fatal, not zeroed (byte {kept:#x} kept); a second accept of 4 MiB: {:#x} bytes already accepted", b.already_accepted_bytes)
            }
            (a, b) => fail!("{a:?} then {b:?}, first byte {kept:#x}"),
        }
    });
    tally.run("accept.operand_busy", || {
        let ok = make_pending();
        pages::arm_fault(Some(AcceptFault::OperandBusy(3)));
        // SAFETY: as above.
        let retried = unsafe { accept_range(gpa, CHUNK) };
        let ok = ok && make_pending();
        let busy = tdx_ve::accept::MAX_BUSY_RETRIES + 1;
        pages::arm_fault(Some(AcceptFault::OperandBusy(busy)));
        // SAFETY: as above.
        let exhausted = unsafe { accept_range(gpa, CHUNK) };
        pages::arm_fault(None);
        // Leave the chunk accepted.
        // SAFETY: as above.
        let cleanup = unsafe { accept_range(gpa, CHUNK) };
        match (retried, exhausted) {
            (Ok(s), Err(AcceptError::Status { status, .. }))
                if ok
                    && s.busy_retries == 3
                    && s.accepted_2m == 2
                    && status >> 32 == TDX_OPERAND_BUSY >> 32
                    && cleanup.is_ok() =>
            {
                pass!("3 BUSY answers retried; {busy} in a row end with status {status:#x}")
            }
            (a, b) => fail!("{a:?}; {b:?}"),
        }
    });
    tally.run("accept.unknown_status", || {
        let ok = make_pending();
        pages::arm_fault(Some(AcceptFault::UnknownStatus));
        // SAFETY: as above.
        let result = unsafe { accept_range(gpa, CHUNK) };
        // SAFETY: as above.
        let cleanup = unsafe { accept_range(gpa, CHUNK) };
        match result {
            Err(AcceptError::Status { status, .. })
                if ok && status == pages::UNKNOWN_ACCEPT_STATUS && cleanup.is_ok() =>
            {
                pass!("an error carrying status {status:#x} (the frame allocator makes it fatal)")
            }
            other => fail!("{other:?}"),
        }
    });
}
