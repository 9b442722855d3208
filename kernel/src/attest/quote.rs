//! TDG.VP.VMCALL<GetQuote> (GHCI 1.5, sub-function 0x10002): the TDREPORT goes to the host in
//! a shared buffer, and the host's quote service (QGS) answers in the same buffer.
//!
//! - The buffer: [`BUFFER_PAGES`] pages from the shared pool (`crate::mm::shared`), 8 KiB as
//!   in Linux's tdx-guest driver (`GET_QUOTE_BUF_SIZE`). R12 is its GPA with the shared bit
//!   (KVM `tdx_get_quote` refuses a private GPA with INVALID_OPERAND), R13 its size, a 4 KiB
//!   multiple (QEMU `tdx_handle_get_quote`: ALIGN_ERROR otherwise) and below QEMU's cap of
//!   128 KiB (`TDX_GET_QUOTE_MAX_BUF_LEN`). ATTEST-FACTS §4.
//! - The request: header version 1, status 0, in_len 1024, out_len 0, then the TDREPORT, built
//!   in private memory and copied out. Only those 1048 bytes are written: the rest of the
//!   buffer never held anything but what the host itself wrote, so there is nothing private
//!   to clear (QEMU asks the guest to zero what lies beyond in_len to avoid leaks).
//! - The answer: the header is copied into private memory once per look and judged there
//!   (`tdx_attest::quote::check_header`); a quote is copied out only for the length that
//!   judgement allowed, and the caller gets the private copy. Nothing from the shared buffer
//!   is read twice or parsed in place (docs/shared-memory-and-mmio.md).
//! - Polling: no completion interrupt (SetupEventNotifyInterrupt is optional for a VMM and the
//!   kernel runs with interrupts off), so the status is read at most [`PollBound::polls`]
//!   times with [`PollBound::pauses_between`] PAUSEs between two looks. The bound is a count of
//!   polls, not a time: under TCG time means nothing (a model answers at once or never) and a
//!   count keeps every run the same. [`HOST_BOUND`] is 30 looks with 2^23 PAUSEs between: on
//!   hardware roughly 10 to 35 G cycles (PAUSE takes 40 to 140 cycles), about 4 to 15 s, an
//!   estimate, not measured on a TD; Linux polls once a second for 30 s and QEMU gives up on
//!   its quote service after 30 s, so a slower service is reported as a stuck IN_FLIGHT. Under
//!   TCG every PAUSE leaves the translated code (QEMU `helper_pause`, `cpu_loop_exit`): a
//!   bound of 30 x 2^21 PAUSEs cost 55 G host TSC ticks (about 21 s) in one softtdx boot, so
//!   the self-test's stuck check passes the same number of polls with a short wait.
//! - After a stuck IN_FLIGHT the host may still write into the buffer at any time, so it is
//!   abandoned (never reused); the next request takes fresh pages from the pool.
//!
//! Every failure is one line ([`GetQuoteError`]'s Display) and returned to the caller: a TD
//! without a quote service is an ordinary TD, and the kernel goes on.

use crate::mm::shared::{self, SharedError, SharedPages};
use crate::tdx::vmcall::{self, VmcallError};
use tdx_attest::quote::{self as layout, QuoteError, HEADER_LEN};
use tdx_attest::report::TDREPORT_SIZE;

/// The shared buffer's pages.
pub const BUFFER_PAGES: usize = 2;
/// The shared buffer's size in bytes (R13).
pub const BUFFER_LEN: usize = BUFFER_PAGES * 4096;
/// The longest quote the buffer holds.
pub const MAX_QUOTE_LEN: usize = BUFFER_LEN - HEADER_LEN;
/// How long to poll the status before a request counts as stuck.
#[derive(Clone, Copy, Debug)]
pub struct PollBound {
    /// Looks at the status, the first one right after the request.
    pub polls: u32,
    /// PAUSEs between two looks.
    pub pauses_between: u32,
}

/// The bound for a real host's quote service.
pub const HOST_BOUND: PollBound = PollBound { polls: 30, pauses_between: 1 << 23 };

/// Why no quote came back.
#[derive(Clone, Copy, Debug)]
pub enum GetQuoteError {
    /// Not a TD: there is no shared bit and no host to ask.
    NotATd,
    /// No shared buffer.
    Shared(SharedError),
    /// The VMM refused the request (R10).
    Vmcall(VmcallError),
    /// The VMM took the request; its answer in the buffer is not a quote.
    Answer(QuoteError),
}

impl core::fmt::Display for GetQuoteError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::NotATd => write!(f, "GetQuote: not a TD"),
            Self::Shared(e) => write!(f, "GetQuote: no shared buffer: {e}"),
            Self::Vmcall(e) => write!(f, "GetQuote: the VMM refused the request: {e}"),
            // The library's messages already start with "GetQuote:".
            Self::Answer(e) => write!(f, "{e}"),
        }
    }
}

/// The buffer in use, if one was taken from the pool and not abandoned.
static BUFFER: spin::Mutex<Option<SharedPages>> = spin::Mutex::new(None);

/// The GPA (shared bit clear) of the buffer the next request will use, if one is held: for the
/// softtdx check that a buffer given up on is not reused.
#[cfg(feature = "test-modes")]
pub fn buffer_gpa() -> Option<u64> {
    BUFFER.lock().map(|pages| pages.gpa)
}

/// Asks the host for a quote of `tdreport`, polling within `bound`; on success the quote is in
/// `out[..len]`.
pub fn get_quote(
    tdreport: &[u8; TDREPORT_SIZE],
    out: &mut [u8; MAX_QUOTE_LEN],
    bound: PollBound,
) -> Result<usize, GetQuoteError> {
    let shared_bit = crate::mm::shared_bit().ok_or(GetQuoteError::NotATd)?;
    let mut slot = BUFFER.lock();
    let pages = match *slot {
        Some(pages) => pages,
        None => shared::allocate(BUFFER_PAGES).map_err(GetQuoteError::Shared)?,
    };
    *slot = Some(pages);

    let mut request = [0u8; HEADER_LEN + TDREPORT_SIZE];
    // Always `Some`: the array is exactly the header and the TDREPORT.
    let _ = layout::write_request(&mut request, tdreport);
    // SAFETY: `pages` is BUFFER_LEN bytes of shared pool memory this module owns for good.
    unsafe { copy_to_shared(pages.virt, &request) };
    vmcall::get_quote(pages.gpa | shared_bit, BUFFER_LEN as u64).map_err(GetQuoteError::Vmcall)?;

    let answer = layout::poll(bound.polls, BUFFER_LEN, |n| {
        if n > 0 {
            wait(bound.pauses_between);
        }
        let mut header = [0u8; HEADER_LEN];
        // SAFETY: as above; the header is the buffer's first 24 bytes.
        unsafe { copy_from_shared(pages.virt, &mut header) };
        header
    });
    let len = match answer {
        Ok(len) => len,
        Err(e) => {
            if matches!(e, QuoteError::StillInFlight { .. }) {
                // The host may still write here whenever it finishes.
                *slot = None;
            }
            return Err(GetQuoteError::Answer(e));
        }
    };
    // `poll` bounds `len` by the buffer after the header, so the copy stays inside both.
    // SAFETY: as above; [HEADER_LEN, HEADER_LEN + len) lies inside the buffer.
    unsafe { copy_from_shared(pages.virt + HEADER_LEN as u64, &mut out[..len]) };
    Ok(len)
}

/// Waits between two looks at the status, outside softtdx's single-stepping: the loop touches
/// nothing the model needs to see, and stepping it would only cost time.
fn wait(pauses: u32) {
    crate::arch::without_single_step(|| {
        for _ in 0..pauses {
            core::hint::spin_loop();
        }
    });
}

/// Copies `bytes` to shared memory at `address`, 8 bytes per store.
///
/// # Safety
/// `address .. address + bytes.len()` must be mapped, writable and owned by the caller.
unsafe fn copy_to_shared(address: u64, bytes: &[u8]) {
    for (i, chunk) in bytes.chunks(8).enumerate() {
        let mut word = [0u8; 8];
        word[..chunk.len()].copy_from_slice(chunk);
        let at = address + 8 * i as u64;
        if chunk.len() == 8 {
            // SAFETY: inside the caller's range (the caller's contract); unaligned is fine on x86.
            unsafe { core::ptr::write_volatile(at as *mut [u8; 8], word) };
        } else {
            for (j, &b) in chunk.iter().enumerate() {
                // SAFETY: as above.
                unsafe { core::ptr::write_volatile((at + j as u64) as *mut u8, b) };
            }
        }
    }
}

/// Copies `out.len()` bytes of shared memory at `address` into private memory, each byte read
/// exactly once.
///
/// # Safety
/// `address .. address + out.len()` must be mapped and readable.
unsafe fn copy_from_shared(address: u64, out: &mut [u8]) {
    for (i, chunk) in out.chunks_mut(8).enumerate() {
        let at = address + 8 * i as u64;
        if chunk.len() == 8 {
            // SAFETY: inside the caller's range (the caller's contract).
            let word = unsafe { core::ptr::read_volatile(at as *const [u8; 8]) };
            chunk.copy_from_slice(&word);
        } else {
            for (j, b) in chunk.iter_mut().enumerate() {
                // SAFETY: as above.
                *b = unsafe { core::ptr::read_volatile((at + j as u64) as *const u8) };
            }
        }
    }
}

/// Prints a quote as lines `# QUOTE <offset> <64 bytes hex>` (the last one shorter), which the
/// harness extracts to a file, as it does the TDREPORT.
pub fn print_quote(quote: &[u8]) {
    for (i, line) in quote.chunks(64).enumerate() {
        crate::println!("# QUOTE {:04x} {}", i * 64, super::Hex(line));
    }
}
