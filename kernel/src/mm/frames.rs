//! The physical frame allocator: usable memory and the memory TDVF left unaccepted, accepted
//! on first use in 2 MiB units.
//!
//! TDVF accepts the memory below 4 GiB and reports the rest as EfiUnacceptedMemoryType (UEFI
//! type 15, EDK2 `OvmfPkg/IntelTdx/TdxHelperLib/SecTdxHelper.c`, `PlatformInitLib/IntelTdx.c`);
//! our loader passes it on as `UnknownUefi(15)` (boot/loader-core `memory_map.rs`). Accepting
//! it all at boot would make boot time grow with the TD's size (about 0.67 s per GiB on one
//! vCPU as Linux measured it, 4 KiB at a time on upstream KVM), so by default nothing is
//! accepted at boot: each unaccepted region gets a bitmap with one bit per 2 MiB
//! ([`tdx_ve::accept::UnacceptedBitmap`], as Linux's EFI unaccepted-memory table), and an
//! allocation accepts the 2 MiB units it touches the first time (`crate::tdx::accept`).
//! With `accept=eager` (the build setting `TDX_UNIKERNEL_ACCEPT=eager`, which the kernel a TD
//! boots can carry) everything is accepted at boot instead, with progress on the console.
//!
//! Frames are handed out by a bump pointer per region and never freed: the unikernel runs one
//! self-test. Memory from this allocator is *not* zeroed: an accept the module answered
//! TDX_PAGE_ALREADY_ACCEPTED did not zero it, and usable memory holds whatever TDVF left.
//! A failing accept is fatal (diagnostics, ReportFatalError, failure exit): the memory map
//! promised RAM the TD cannot use.

use crate::{println, tdx};
use alloc::vec::Vec;
use bootloader_api::info::MemoryRegionKind;
use bootloader_api::BootInfo;
use spin::Mutex;
use tdx_ve::accept::{AcceptStats, UnacceptedBitmap, SIZE_2M, SIZE_4K};

/// UEFI memory type 15, EfiUnacceptedMemoryType, as our loader reports it.
pub const UNACCEPTED: MemoryRegionKind = MemoryRegionKind::UnknownUefi(15);

/// Whether this build accepts everything at boot (`TDX_UNIKERNEL_ACCEPT=eager`).
pub const ACCEPT_EAGER: bool = match option_env!("TDX_UNIKERNEL_ACCEPT") {
    Some(value) => matches!(value.as_bytes(), b"eager"),
    None => false,
};

/// Eager acceptance prints progress every this many bytes.
const PROGRESS_STEP: u64 = 1 << 30;

struct Region {
    start: u64,
    end: u64,
    /// The next free byte.
    next: u64,
    /// For unaccepted memory: which 2 MiB units are still unaccepted.
    unaccepted: Option<UnacceptedBitmap<'static>>,
}

struct Frames {
    regions: Vec<Region>,
    /// Everything the allocator's accepts took.
    accepted: AcceptStats,
}

static FRAMES: Mutex<Option<Frames>> = Mutex::new(None);

/// What the allocator manages, for the report.
#[derive(Clone, Copy, Debug, Default)]
pub struct Summary {
    pub usable_bytes: u64,
    pub unaccepted_bytes: u64,
    /// 2 MiB units of unaccepted memory not accepted yet.
    pub unaccepted_units_left: u64,
    pub accepted: AcceptStats,
}

/// Builds the allocator from the boot memory map (usable and unaccepted regions, minus the
/// heap) and, with `accept=eager`, accepts all unaccepted memory now.
pub fn init(boot_info: &BootInfo) {
    let (heap_start, heap_end) = crate::heap::range();
    let mut regions = Vec::new();
    for region in boot_info.memory_regions.iter() {
        let unaccepted = region.kind == UNACCEPTED;
        if region.kind != MemoryRegionKind::Usable && !unaccepted {
            continue;
        }
        // Unaccepted memory outside a TD cannot be accepted (no TDX module): leave it alone.
        if unaccepted && !tdx::is_td() {
            continue;
        }
        let start = region.start.next_multiple_of(SIZE_4K);
        let end = region.end / SIZE_4K * SIZE_4K;
        let pieces = [(start, end.min(heap_start)), (start.max(heap_end), end)];
        for (start, end) in pieces.into_iter().filter(|(s, e)| s < e) {
            let unaccepted = unaccepted.then(|| {
                let bits = Vec::leak(alloc::vec![0u64; UnacceptedBitmap::words(start, end)]);
                UnacceptedBitmap::new(start, end, bits)
            });
            regions.push(Region { start, end, next: start, unaccepted });
        }
    }
    let mut frames = Frames { regions, accepted: AcceptStats::default() };
    let summary = frames.summary();
    // One shape whatever the sizes, so that boot does not print more for a bigger TD.
    println!(
        "mm: {} MiB usable, {} MiB unaccepted, accept={}",
        summary.usable_bytes >> 20,
        summary.unaccepted_bytes >> 20,
        if ACCEPT_EAGER { "eager: all of it now" } else { "lazy: on first use, 2 MiB at a time" }
    );
    if ACCEPT_EAGER {
        frames.accept_everything();
    }
    *FRAMES.lock() = Some(frames);
}

impl Frames {
    fn summary(&self) -> Summary {
        let mut summary = Summary { accepted: self.accepted, ..Summary::default() };
        for region in &self.regions {
            match &region.unaccepted {
                Some(bitmap) => {
                    summary.unaccepted_bytes += region.end - region.start;
                    summary.unaccepted_units_left += bitmap.remaining();
                }
                None => summary.usable_bytes += region.end - region.start,
            }
        }
        summary
    }

    /// Accepts the units of `region` that `[from, to)` touches and that are still
    /// unaccepted; stops the kernel if the module refuses.
    fn accept(region: &mut Region, from: u64, to: u64, stats: &mut AcceptStats) {
        let Some(bitmap) = region.unaccepted.as_mut() else { return };
        // Each search starts after the unit just taken (every unit before it in the range is
        // accepted), not at `from` again: a range of n units costs n steps, not n²/2.
        let mut from = from;
        while let Some((start, end)) = bitmap.take(from, to) {
            from = end;
            // SAFETY: the unit was unaccepted until now, so nothing in the kernel uses it.
            match unsafe { tdx::accept::accept_range(start, end - start) } {
                Ok(done) => stats.add(&done),
                Err(error) => {
                    println!("FATAL: mm: cannot accept unaccepted memory: {error}");
                    tdx::report_fatal_error("mm: TDG.MEM.PAGE.ACCEPT failed");
                    crate::exit::exit(crate::exit::ExitCode::Failure);
                }
            }
        }
    }

    fn accept_everything(&mut self) {
        let total = self.summary().unaccepted_bytes;
        let mut done = 0;
        let mut next_report = PROGRESS_STEP;
        for region in &mut self.regions {
            let (start, end) = (region.start, region.end);
            if region.unaccepted.is_none() {
                continue;
            }
            let mut at = start;
            while at < end {
                let to = (at + SIZE_2M).min(end);
                Self::accept(region, at, to, &mut self.accepted);
                done += to - at;
                at = to;
                if done >= next_report || done == total {
                    println!(
                        "mm: accept=eager: {} of {} MiB accepted ({} calls)",
                        done >> 20,
                        total >> 20,
                        self.accepted.calls
                    );
                    next_report = done + PROGRESS_STEP;
                }
            }
        }
    }

    /// `len` bytes (a multiple of 4 KiB), aligned to `align` (a power of two, at least
    /// 4 KiB), at or above `at_least`: the start address, accepted and not zeroed.
    fn allocate(&mut self, len: u64, align: u64, at_least: u64) -> Option<u64> {
        let stats = &mut self.accepted;
        for region in &mut self.regions {
            let start = region.next.max(at_least).checked_next_multiple_of(align)?;
            let Some(end) = start.checked_add(len).filter(|end| *end <= region.end) else {
                continue;
            };
            Self::accept(region, start, end, stats);
            region.next = end;
            return Some(start);
        }
        None
    }
}

/// Allocates `len` bytes of physical memory (rounded up to 4 KiB) aligned to `align`, at or
/// above physical address `at_least`; accepts what it hands out first if TDVF left it
/// unaccepted. The memory is not zeroed. None when no region has room.
pub fn allocate(len: u64, align: u64, at_least: u64) -> Option<u64> {
    let len = len.checked_next_multiple_of(SIZE_4K)?;
    let align = align.max(SIZE_4K).checked_next_power_of_two()?;
    FRAMES.lock().as_mut()?.allocate(len, align, at_least)
}

/// What the allocator manages and what its accepts took so far.
pub fn summary() -> Summary {
    FRAMES.lock().as_ref().map(Frames::summary).unwrap_or_default()
}

/// The first unaccepted byte the allocator has not accepted yet, if any (for the test scenario
/// that touches a pending page).
#[cfg(feature = "test-modes")]
pub fn first_unaccepted() -> Option<u64> {
    let frames = FRAMES.lock();
    frames
        .as_ref()?
        .regions
        .iter()
        .find(|r| r.unaccepted.as_ref().is_some_and(|b| b.remaining() > 0))
        .map(|r| r.next)
}
