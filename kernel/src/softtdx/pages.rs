//! The model's private memory: the state of every 4 KiB page (private, shared, pending), its
//! TDG.MEM.PAGE.ACCEPT, and what an access to a pending page does.
//!
//! State: [`tdx_ve::page_state::PageStates`], sparse, everything private unless set. Other
//! parts of the model (MapGPA, shared pages) read and change it through [`state`] and [`set`].
//!
//! TDG.MEM.PAGE.ACCEPT ([`accept`]) follows `tdg_mem_page_accept` (intel/tdx-module,
//! `src/td_dispatcher/vm_exits/tdg_mem_page_accept.c`), statuses from
//! `include/auto_gen/tdx_error_codes_defs.h` (see `tdx_ve::accept`):
//! - RCX checked by `verify_page_info_input(.., LVL_PT, LVL_PD)` (reserved bits 11:3 and 63:52
//!   zero, level 0 or 1, GPA aligned to the level) and `check_gpa_validity(.., PRIVATE_ONLY,
//!   ..)` (shared bit clear, no bit at or above GPAW): otherwise TDX_OPERAND_INVALID | RCX's id.
//! - A 2 MiB accept where the VMM mapped at 4 KiB gets TDX_PAGE_SIZE_MISMATCH | level 1
//!   (`TDACCEPT_SIZE_MISMATCH`: the 2 MiB SEPT entry is a non-leaf). The model's VMM maps at
//!   4 KiB when [`Pages::map_4k_only`] is set, as upstream KVM does
//!   (`tdx_gmem_private_max_mapping_level` returns PG_LEVEL_4K), and also where part of a
//!   2 MiB range was already accepted at 4 KiB (so it was mapped at 4 KiB).
//! - An accept of a page that is mapped and accepted gets TDX_PAGE_ALREADY_ACCEPTED | level
//!   (`TDACCEPT_ALREADY_ACCEPTED`), nothing zeroed. (The module reports the level of the leaf
//!   it found, 1 for a 4 KiB accept inside a 2 MiB leaf; the model does not track leaf sizes of
//!   accepted memory and reports the requested level.)
//! - A pending page is zeroed (`init_sept_4k_page`, `zero_area_cacheline`) and becomes
//!   private (MAPPED); TDX_SUCCESS.
//! - A page the TD converted to shared is not in the Secure EPT: the module makes an
//!   asynchronous TD exit (EPT violation, extended qualification ACCEPT,
//!   `async_tdexit_ept_violation`) that no VMM resolves into a private page the TD expects; the
//!   model stops the run there.
//! - Faults a self-test arms ([`AcceptFault`]): TDX_OPERAND_BUSY (the host side holds the
//!   SEPT entry lock, `TDACCEPT_AQCUIRE_LOCK_FAILURE` → `TDX_OPERAND_BUSY | OPERAND_ID_RCX`),
//!   a page some earlier party accepted (ALREADY_ACCEPTED without zeroing), and a status
//!   outside the leaf's documented set.
//!
//! An access to a pending page: with SEPT_VE_DISABLE (TD_CTLS.PENDING_VE_DISABLE) the module
//! does not deliver #VE but exits to the VMM (`td_ept_violation_exit`,
//! `src/td_dispatcher/vm_exits/td_ept_violation.c`; ../shared/tdx-module/README.md §7), which
//! cannot make the page accepted: the TD is stopped. Under TCG nothing would notice such an
//! access, so the model keeps the kernel's physical-memory mapping of every 2 MiB that holds a
//! pending page non-present (the loader maps physical memory with 2 MiB leaves), and its #PF
//! handler ([`page_fault`]) stops the run naming the GPA. A 2 MiB leaf becomes present when
//! its last pending page is accepted. Consequence, and a difference from a TD: an access to an
//! accepted page inside a 2 MiB that still has pending pages faults too; the model stops with
//! a message saying so. The kernel's allocator accepts whole 2 MiB units, so it never does
//! that.

use super::host::host_stop;
use crate::arch::frame::TrapFrame;
use crate::memory;
use core::fmt::Write;
use tdx_ve::accept::{
    PageLevel, OPERAND_ID_RCX, SIZE_2M, SIZE_4K, TDX_OPERAND_BUSY, TDX_OPERAND_INVALID,
    TDX_PAGE_ALREADY_ACCEPTED, TDX_PAGE_SIZE_MISMATCH, TDX_SUCCESS,
};
use tdx_ve::page_state::{PageStateError, PageStates};

pub use tdx_ve::page_state::PageState;

/// How many separate ranges of non-private pages the model can track.
const MAX_RANGES: usize = 256;

/// A status TDG.MEM.PAGE.ACCEPT never returns (TDX_EPT_ENTRY_STATE_INCORRECT, a host-side
/// SEAMCALL status), for the unknown-status fault.
pub const UNKNOWN_ACCEPT_STATUS: u64 = 0xC000_0B0D_0000_0000;

/// A misbehaviour the model's next accept(s) show, armed by a self-test or a fatal scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AcceptFault {
    /// The next `n` accepts find the SEPT entry locked: TDX_OPERAND_BUSY.
    OperandBusy(u32),
    /// The next accept finds its page(s) already accepted by someone else: they become
    /// private without being zeroed, TDX_PAGE_ALREADY_ACCEPTED.
    AlreadyAccepted,
    /// The next accept returns [`UNKNOWN_ACCEPT_STATUS`].
    UnknownStatus,
}

/// The model's view of the TD's private memory.
pub struct Pages {
    states: PageStates<MAX_RANGES>,
    /// The VMM maps private memory at 4 KiB only (upstream KVM), so 2 MiB accepts fail with
    /// TDX_PAGE_SIZE_MISMATCH.
    pub map_4k_only: bool,
    pub fault: Option<AcceptFault>,
    /// Accept calls the model answered (any status).
    pub calls: u64,
}

impl Pages {
    pub const fn new() -> Self {
        Self { states: PageStates::new(), map_4k_only: false, fault: None, calls: 0 }
    }
}

/// Leaves RAM above 4 GiB pending, as TDVF does in a TD, and says so in the boot memory map
/// exactly as our loader would have: `UnknownUefi(15)` (EfiUnacceptedMemoryType) instead of
/// usable.
///
/// TDVF accepts the memory below 4 GiB only and reports the rest as type 15 (EDK2
/// `OvmfPkg/IntelTdx/TdxHelperLib/SecTdxHelper.c`, `PlatformInitLib/IntelTdx.c`). Under TCG,
/// OVMF is not in a TD and reports all RAM as conventional, so the model plays TDVF here, at
/// the one point where its report reaches the kernel: every usable region at or above 4 GiB
/// becomes pending in the model and type 15 in the map. (A usable region across 4 GiB would
/// need a split the map has no room for; QEMU's q35 puts no RAM there, so the model stops if
/// it ever sees one.) Runs once, when the model is switched on, before the kernel reads the
/// memory map for its frame allocator.
pub fn leave_above_4g_unaccepted(regions: &mut [bootloader_api::info::MemoryRegion]) {
    use bootloader_api::info::MemoryRegionKind;
    const FOUR_GIB: u64 = 1 << 32;
    for region in regions.iter_mut().filter(|r| r.kind == MemoryRegionKind::Usable) {
        if region.end <= FOUR_GIB {
            continue;
        }
        if region.start < FOUR_GIB {
            host_stop("FATAL softtdx: a usable region crosses 4 GiB; the model cannot split it");
        }
        let start = region.start.next_multiple_of(SIZE_4K);
        let end = region.end / SIZE_4K * SIZE_4K;
        if start < end && set(start, end, PageState::Pending).is_err() {
            host_stop("FATAL softtdx: the page-state map is full");
        }
        region.kind = crate::mm::frames::UNACCEPTED;
    }
}

/// The state of the page holding `gpa` (shared bit clear).
pub fn state(gpa: u64) -> PageState {
    super::with_model(|m| m.pages.states.state(gpa))
}

/// [`state`] with the model already locked.
pub(super) fn state_locked(pages: &Pages, gpa: u64) -> PageState {
    pages.states.state(gpa)
}

/// Puts `[start, end)` (4 KiB-aligned, shared bit clear) into `state`, keeping the physical
/// map's present bits in step (non-present wherever a 2 MiB holds a pending page).
pub fn set(start: u64, end: u64, state: PageState) -> Result<(), PageStateError> {
    super::with_model(|m| set_locked(&mut m.pages, start, end, state))
}

/// Makes the VMM map private memory at 4 KiB only (on) or at 2 MiB where it can (off).
pub fn set_map_4k_only(on: bool) {
    super::with_model(|m| m.pages.map_4k_only = on);
}

/// Arms a fault for the next accept(s).
pub fn arm_fault(fault: Option<AcceptFault>) {
    super::with_model(|m| m.pages.fault = fault);
}

/// [`set`] with the model already locked (the VMM's MapGPA, `super::mmio`).
pub(super) fn set_locked(
    pages: &mut Pages,
    start: u64,
    end: u64,
    state: PageState,
) -> Result<(), PageStateError> {
    pages.states.set(start, end, state)?;
    let mut chunk = start & !(SIZE_2M - 1);
    while chunk < end {
        let present = pages.states.first(chunk, chunk + SIZE_2M, PageState::Pending).is_none();
        set_physical_map_present(chunk, present);
        chunk += SIZE_2M;
    }
    Ok(())
}

/// Sets or clears the present bit of the physical-memory mapping's 2 MiB leaf for `gpa`, if
/// the mapping reaches it with a 2 MiB leaf (the loader maps all RAM that way).
fn set_physical_map_present(gpa: u64, present: bool) {
    let Some(offset) = memory::physical_memory_offset() else { return };
    let address = offset + gpa;
    if let Ok(entry) = memory::leaf_entry_2m(address) {
        // SAFETY: `entry` is the live 2 MiB leaf that maps `address`; only its present bit
        // changes, and the TLB entry is invalidated right after. Nothing of the kernel lives in
        // memory that is pending.
        unsafe {
            let value = core::ptr::read_volatile(entry);
            let next = if present { value | 1 } else { value & !1 };
            core::ptr::write_volatile(entry, next);
            core::arch::asm!("invlpg [{}]", in(reg) address, options(nostack, preserves_flags));
        }
    }
}

/// Fills one 4 KiB page with `byte` through the physical map, making its 2 MiB leaf present
/// for the duration when it is not (a pending page about to be accepted, or a page MapGPA just
/// converted whose backing the host discards).
pub(super) fn fill_page(gpa: u64, byte: u8) {
    let Some(offset) = memory::physical_memory_offset() else {
        host_stop("FATAL softtdx: no physical-memory mapping to write a page as the host")
    };
    let address = offset + (gpa & !(SIZE_4K - 1));
    let was_present = memory::translate(address).is_ok();
    if !was_present {
        set_physical_map_present(gpa, true);
    }
    // SAFETY: `address` maps the 4 KiB page at `gpa` through the physical-memory mapping (now
    // present); the page is pending or just converted, so nothing in the kernel may rely on
    // its contents.
    unsafe { core::ptr::write_bytes(address as *mut u8, byte, SIZE_4K as usize) };
    if !was_present {
        set_physical_map_present(gpa, false);
    }
}

/// The model's TDG.MEM.PAGE.ACCEPT: RCX in, RAX out (see the module docs for each rule).
pub fn accept(pages: &mut Pages, rcx: u64, gpaw: u64) -> u64 {
    pages.calls += 1;
    let invalid = TDX_OPERAND_INVALID | OPERAND_ID_RCX;
    const RESERVED: u64 = 0xFFF0_0000_0000_0FF8;
    let level = match rcx & 7 {
        0 => PageLevel::Size4K,
        1 => PageLevel::Size2M,
        _ => return invalid,
    };
    let gpa = rcx & !0xFFF & !RESERVED;
    if rcx & RESERVED != 0 || !gpa.is_multiple_of(level.size()) || gpa >> (gpaw - 1) != 0 {
        return invalid;
    }
    match pages.fault.take() {
        Some(AcceptFault::OperandBusy(n)) => {
            if n > 1 {
                pages.fault = Some(AcceptFault::OperandBusy(n - 1));
            }
            return TDX_OPERAND_BUSY | OPERAND_ID_RCX;
        }
        Some(AcceptFault::UnknownStatus) => return UNKNOWN_ACCEPT_STATUS,
        Some(AcceptFault::AlreadyAccepted) => {
            if pages.states.first(gpa, gpa + level.size(), PageState::Shared).is_none() {
                let _ = set_locked(pages, gpa, gpa + level.size(), PageState::Private);
            }
            return TDX_PAGE_ALREADY_ACCEPTED | level as u64;
        }
        None => {}
    }
    let end = gpa + level.size();
    if let Some(shared) = pages.states.first(gpa, end, PageState::Shared) {
        let message = crate::fixed_format!(
            160,
            "FATAL softtdx: TDG.MEM.PAGE.ACCEPT of GPA {shared:#x}, which the TD made shared: \
             TD exit (EPT violation, ACCEPT)"
        );
        host_stop(message.as_str());
    }
    let any_pending = pages.states.first(gpa, end, PageState::Pending).is_some();
    let any_private = pages.states.first(gpa, end, PageState::Private).is_some();
    if level == PageLevel::Size2M && (pages.map_4k_only || (any_pending && any_private)) {
        return TDX_PAGE_SIZE_MISMATCH | PageLevel::Size2M as u64;
    }
    if !any_pending {
        return TDX_PAGE_ALREADY_ACCEPTED | level as u64;
    }
    let mut page = gpa;
    while page < end {
        fill_page(page, 0);
        page += SIZE_4K;
    }
    if set_locked(pages, gpa, end, PageState::Private).is_err() {
        host_stop("FATAL softtdx: the page-state map is full");
    }
    TDX_SUCCESS
}

/// #PF: an access to a GPA whose 2 MiB the model keeps non-present because it holds pending
/// pages. Stops the run as the TD would be stopped (see the module docs); other page faults
/// are not the model's.
pub fn page_fault(frame: &mut TrapFrame) -> bool {
    const PRESENT: u64 = 1;
    let cr2 = x86_64::registers::control::Cr2::read_raw();
    let Some(offset) = memory::physical_memory_offset() else { return false };
    if frame.error_code & PRESENT != 0 || cr2 < offset {
        return false;
    }
    let gpa = cr2 - offset;
    let (state, pending_in_2m) = {
        let model = super::model();
        let chunk = gpa & !(SIZE_2M - 1);
        (
            model.pages.states.state(gpa),
            model.pages.states.first(chunk, chunk + SIZE_2M, PageState::Pending).is_some(),
        )
    };
    if !pending_in_2m {
        return false;
    }
    let mut message = crate::fmtbuf::FixedString::<240>::new();
    let _ = match state {
        PageState::Pending => write!(
            message,
            "FATAL softtdx: access to pending (unaccepted) private page GPA {:#x} at RIP {:#x}: \
             with SEPT_VE_DISABLE the TDX module exits to the VMM (EPT violation), which cannot \
             accept it for the TD; the TD is stopped",
            gpa & !(SIZE_4K - 1),
            frame.rip
        ),
        _ => write!(
            message,
            "FATAL softtdx: access to GPA {gpa:#x} (accepted) inside a 2 MiB range that still \
             has pending pages, at RIP {:#x}: the model can only watch 2 MiB at a time",
            frame.rip
        ),
    };
    host_stop(message.as_str())
}
