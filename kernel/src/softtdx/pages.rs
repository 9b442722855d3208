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
//!   private (MAPPED); TDX_SUCCESS. (The model writes only the pages that do not read zero
//!   already, [`zero_for_accept`]: the same outcome, without making the host allocate RAM
//!   nothing has touched.)
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
use crate::arch::paging::{
    FRAME_MASK, FRAME_MASK_2M, HUGE_PAGE, NO_EXECUTE, PAT_4K, PAT_LARGE, PRESENT,
};
use crate::memory;
use core::fmt::Write;
use tdx_ve::accept::{
    PageLevel, OPERAND_ID_RCX, SIZE_2M, SIZE_4K, TDX_OPERAND_BUSY, TDX_OPERAND_INVALID,
    TDX_PAGE_ALREADY_ACCEPTED, TDX_PAGE_SIZE_MISMATCH, TDX_SUCCESS,
};
use tdx_ve::page_state::{PageStateError, PageStates};

pub use tdx_ve::page_state::PageState;

/// How many separate RAM ranges the model's VMM knows (q35 has two or three).
const RAM_RANGES: usize = 16;

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
    /// Tables of [`SPLIT`] in use.
    split_used: usize,
    /// The VMM's RAM (its memslots), from the boot memory map ([`record_ram`]).
    ram: [(u64, u64); RAM_RANGES],
    ram_len: usize,
}

impl Pages {
    pub const fn new() -> Self {
        Self {
            states: PageStates::new(),
            map_4k_only: false,
            fault: None,
            calls: 0,
            split_used: 0,
            ram: [(0, 0); RAM_RANGES],
            ram_len: 0,
        }
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

/// Records where the VMM has RAM, as QEMU's memslots, from the boot memory map: every region
/// of memory the firmware handed out or keeps (usable, loader, boot and runtime services,
/// ACPI, persistent, unaccepted). Reserved (type 0), unusable, MMIO and PAL regions are not
/// counted: OVMF reports PCIe ECAM as reserved, and the model cannot tell reserved RAM from a
/// device there, so it leaves them to MMIO as before. Adjacent regions are merged.
pub fn record_ram(regions: &[bootloader_api::info::MemoryRegion]) {
    use bootloader_api::info::MemoryRegionKind as Kind;
    super::with_model(|m| {
        let pages = &mut m.pages;
        for region in regions {
            let ram = match region.kind {
                Kind::Usable | Kind::Bootloader => true,
                Kind::UnknownUefi(kind) => matches!(kind, 1..=7 | 9 | 10 | 14 | 15),
                _ => false,
            };
            if !ram || region.start >= region.end {
                continue;
            }
            match pages.ram[..pages.ram_len].last_mut() {
                Some(last) if last.1 == region.start => last.1 = region.end,
                _ if pages.ram_len == RAM_RANGES => host_stop(
                    "FATAL softtdx: more RAM ranges in the memory map than the model keeps",
                ),
                _ => {
                    pages.ram[pages.ram_len] = (region.start, region.end);
                    pages.ram_len += 1;
                }
            }
        }
    });
}

/// Whether the page of `gpa` (shared bit clear) is RAM the VMM has ([`record_ram`]).
pub(super) fn is_ram(pages: &Pages, gpa: u64) -> bool {
    pages.ram[..pages.ram_len].iter().any(|&(start, end)| start <= gpa && gpa < end)
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
/// map's present bits in step ([`refresh_physical_map`]).
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
        refresh_physical_map(pages, chunk);
        chunk += SIZE_2M;
    }
    Ok(())
}

/// Tables of 4 KiB leaves for the 2 MiB leaves the model splits: one per 2 MiB that holds a
/// shared page (the shared pool's, the MapGPA checks' scratch memory). Static, so that a split
/// never allocates inside the model.
const SPLIT_TABLES: usize = 4;

#[repr(C, align(4096))]
struct SplitTables(core::cell::UnsafeCell<[[u64; 512]; SPLIT_TABLES]>);

// SAFETY: only the model touches the tables, under its lock (`Pages::split_used`).
unsafe impl Sync for SplitTables {}

static SPLIT: SplitTables = SplitTables(core::cell::UnsafeCell::new([[0; 512]; SPLIT_TABLES]));

/// Makes the physical map of the 2 MiB at `chunk` agree with the page states. The kernel's
/// private mapping of a page must fault where the TD's access would not reach a private page:
/// - a 2 MiB with no shared page keeps its 2 MiB leaf, non-present while it holds a pending
///   page (the loader maps all RAM with 2 MiB leaves);
/// - a 2 MiB that holds a shared page is split into 4 KiB leaves, each present exactly when its
///   page is private: the pages around a shared page (the kernel's own data, beside the shared
///   pool) stay reachable, and a private access to the shared page faults ([`page_fault`]).
fn refresh_physical_map(pages: &mut Pages, chunk: u64) {
    let Some(offset) = memory::physical_memory_offset() else { return };
    let Ok(pde) = memory::pd_entry(offset + chunk) else { return };
    let end = chunk + SIZE_2M;
    // SAFETY: the live page-directory entry for the chunk, read as an aligned u64.
    let value = unsafe { core::ptr::read_volatile(pde) };
    if value & HUGE_PAGE != 0 {
        if pages.states.first(chunk, end, PageState::Shared).is_none() {
            let present = pages.states.first(chunk, end, PageState::Pending).is_none();
            set_present(pde, present, offset + chunk);
            return;
        }
        split(pages, pde, value, offset + chunk);
    }
    // SAFETY: the PDE now points at a table of 4 KiB leaves (split here or earlier).
    let table = offset + (unsafe { core::ptr::read_volatile(pde) } & FRAME_MASK);
    for i in 0..512 {
        let page = chunk + i * SIZE_4K;
        let present = pages.states.state(page) == PageState::Private;
        set_present((table + i * 8) as *mut u64, present, offset + page);
    }
}

/// Sets or clears the present bit of a live leaf that maps `virt`, invalidating its TLB
/// entry when it changes.
fn set_present(entry: *mut u64, present: bool, virt: u64) {
    // SAFETY: `entry` is a live leaf of the physical map; only its present bit changes, and
    // the TLB entry is invalidated right after. What it maps is pending, shared or the page
    // being made present again, none of which the interrupted code relies on reaching.
    unsafe {
        let value = core::ptr::read_volatile(entry);
        let next = if present { value | PRESENT } else { value & !PRESENT };
        if next != value {
            core::ptr::write_volatile(entry, next);
            core::arch::asm!("invlpg [{}]", in(reg) virt, options(nostack, preserves_flags));
        }
    }
}

/// Replaces the 2 MiB leaf `pde` (value `leaf`, mapping `virt`) by a table of 512 4 KiB leaves
/// with the same frames and attributes, from [`SPLIT`].
fn split(pages: &mut Pages, pde: *mut u64, leaf: u64, virt: u64) {
    if pages.split_used == SPLIT_TABLES {
        host_stop(
            "FATAL softtdx: no 4 KiB table left to split the physical map around a shared page",
        );
    }
    // SAFETY: table `split_used` is unused (the count only grows, under the model's lock).
    let table = unsafe { &mut (*SPLIT.0.get())[pages.split_used] };
    pages.split_used += 1;
    let pat = if leaf & PAT_LARGE != 0 { PAT_4K } else { 0 };
    let attributes = (leaf & 0xFFF & !HUGE_PAGE) | pat | (leaf & NO_EXECUTE);
    for (i, entry) in table.iter_mut().enumerate() {
        *entry = ((leaf & FRAME_MASK_2M) + i as u64 * SIZE_4K) | attributes;
    }
    let Ok(physical) = memory::translate(table.as_ptr() as u64) else {
        host_stop("FATAL softtdx: the model's split table is not mapped")
    };
    // A table entry grants what its leaves grant: present, writable, and the leaf's user bit.
    let directory = physical.physical | PRESENT | (leaf & 0b110);
    // SAFETY: the live PDE; the new table maps the same frames with the same attributes, so
    // nothing changes for any address until `refresh_physical_map` clears present bits; every
    // page's TLB entry is invalidated.
    unsafe {
        core::ptr::write_volatile(pde, directory);
        for i in 0..512 {
            core::arch::asm!("invlpg [{}]", in(reg) virt + i * SIZE_4K, options(nostack, preserves_flags));
        }
    }
}

/// The physical map's leaf for the page at `gpa`: the 4 KiB leaf in a split 2 MiB, else the
/// 2 MiB leaf.
fn physical_map_leaf(gpa: u64) -> Option<*mut u64> {
    let offset = memory::physical_memory_offset()?;
    let pde = memory::pd_entry(offset + gpa).ok()?;
    // SAFETY: the live page-directory entry, read as an aligned u64.
    let value = unsafe { core::ptr::read_volatile(pde) };
    if value & HUGE_PAGE != 0 {
        return Some(pde);
    }
    Some((offset + (value & FRAME_MASK) + ((gpa >> 12) & 0x1FF) * 8) as *mut u64)
}

/// Pages [`host_access`] reaches at once: the largest GetQuote buffer the model serves (128 KiB).
const HOST_ACCESS_PAGES: usize = 32;

/// Runs `f` on the bytes `[gpa, gpa + len)` as the host sees them: through the physical map,
/// with the leaves the model keeps non-present (pending or shared pages) present for the
/// duration. The host reaches guest memory as QEMU's `address_space_write` does, whatever the
/// TD's mappings say. `None` where the physical map does not reach or the range is longer than
/// [`HOST_ACCESS_PAGES`] pages.
pub(super) fn host_access<R>(gpa: u64, len: u64, f: impl FnOnce(&mut [u8]) -> R) -> Option<R> {
    let offset = memory::physical_memory_offset()?;
    let first = gpa & !(SIZE_4K - 1);
    let end = gpa.checked_add(len)?;
    if len == 0 || (end - first).div_ceil(SIZE_4K) > HOST_ACCESS_PAGES as u64 {
        return None;
    }
    let mut opened: [Option<*mut u64>; HOST_ACCESS_PAGES] = [None; HOST_ACCESS_PAGES];
    let mut unmapped = false;
    let mut page = first;
    for slot in opened.iter_mut() {
        if page >= end {
            break;
        }
        let Some(leaf) = physical_map_leaf(page) else {
            unmapped = true;
            break;
        };
        // SAFETY: a live leaf of the physical map, read as an aligned u64.
        if unsafe { core::ptr::read_volatile(leaf) } & PRESENT == 0 {
            set_present(leaf, true, offset + page);
            *slot = Some(leaf);
        }
        page += SIZE_4K;
    }
    let virt = offset + gpa;
    let reachable = !unmapped && memory::check_access(virt, len, true).is_ok();
    let result = reachable.then(|| {
        // SAFETY: `check_access` found `len` writable bytes mapped at `virt`: guest memory the
        // host is asked to read or write (a buffer the TD gave it, a page it discards).
        f(unsafe { core::slice::from_raw_parts_mut(virt as *mut u8, len as usize) })
    });
    let mut page = first;
    for leaf in opened {
        if let Some(leaf) = leaf {
            set_present(leaf, false, offset + page);
        }
        page += SIZE_4K;
    }
    result
}

/// Fills one 4 KiB page with `byte` as the host (a page MapGPA just converted whose backing the
/// host discards).
pub(super) fn fill_page(gpa: u64, byte: u8) {
    if host_access(gpa & !(SIZE_4K - 1), SIZE_4K, |page| page.fill(byte)).is_none() {
        host_stop("FATAL softtdx: no physical-memory mapping to write a page as the host")
    }
}

/// Zeroes `[start, end)` (4 KiB-aligned) as the module's accept does, reaching it as the host
/// ([`host_access`]), [`HOST_ACCESS_PAGES`] pages at a time: the non-present 2 MiB leaf is
/// opened and closed (a PTE write and an INVLPG each) once per 32 pages, not once per page.
///
/// A page that reads zero already is left as it is ([`zero_pages`]): the outcome is the same
/// (every accepted page reads zero), and RAM nothing has written since QEMU started, which is
/// most of what the model's TD accepts, stays unallocated on the host. Writing zeros there made
/// the host allocate and clear every page: 3 GiB of `accept=eager` took about 10 s that way,
/// about 1.4 s now.
fn zero_for_accept(start: u64, end: u64) {
    let mut at = start;
    while at < end {
        let len = (end - at).min(HOST_ACCESS_PAGES as u64 * SIZE_4K);
        if host_access(at, len, zero_pages).is_none() {
            host_stop("FATAL softtdx: no physical-memory mapping to zero a page as the host")
        }
        at += len;
    }
}

/// Zeroes each 4 KiB page of `bytes` (page-aligned) that does not read zero already. One scan
/// of the whole range first: memory nothing has touched reads zero throughout.
fn zero_pages(bytes: &mut [u8]) {
    if reads_zero(bytes) {
        return;
    }
    let (pages, _) = bytes.as_chunks_mut::<{ SIZE_4K as usize }>();
    for page in pages {
        if !reads_zero(page) {
            page.fill(0);
        }
    }
}

/// Whether every byte of `bytes` (8-byte aligned, a whole number of quadwords, at least one) is
/// zero: one REPE SCASQ, which stops at the first nonzero quadword. One instruction per
/// quadword (each iteration counts as one under `-icount`): the model's work is in the bench's
/// softtdx figures, whose 8 GiB boot accepts 64 MiB more than the 2 GiB one and must stay
/// within 1% of it (`instructions.boot_to_verdict_8g`), and a loop in Rust costs two to four
/// per quadword.
fn reads_zero(bytes: &[u8]) -> bool {
    let zero: u8;
    // SAFETY: REPE SCASQ reads the slice's quadwords at most, forward (DF is clear at an asm
    // block's entry, as Rust requires), and writes only RCX, RDI and the flags.
    unsafe {
        core::arch::asm!(
            "repe scasq",
            "sete {zero}",
            zero = out(reg_byte) zero,
            inout("rcx") bytes.len() / 8 => _,
            inout("rdi") bytes.as_ptr() => _,
            in("rax") 0u64,
            options(nostack, readonly),
        )
    };
    zero != 0
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
    zero_for_accept(gpa, end);
    if set_locked(pages, gpa, end, PageState::Private).is_err() {
        host_stop("FATAL softtdx: the page-state map is full");
    }
    TDX_SUCCESS
}

/// #PF: a private access (through the physical map) to a page the model keeps non-present
/// because it is shared or pending, or lies in a 2 MiB that holds a pending page. Stops the run
/// as the TD would be stopped (see the module docs and [`refresh_physical_map`]); other page
/// faults are not the model's.
pub fn page_fault(frame: &mut TrapFrame) -> bool {
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
    let mut message = crate::fmtbuf::FixedString::<320>::new();
    let _ = match state {
        // The outcome by the sources (docs/shared-memory-and-mmio.md): the Secure EPT has no
        // entry for the page, so a TD exit (`td_ept_violation_exit`); KVM sees a private fault
        // on a shared GFN and exits to QEMU, which converts the page back to private
        // (`kvm_convert_memory`, discarding it); KVM adds a pending page (TDH.MEM.PAGE.AUG),
        // and the retried access to it under SEPT_VE_DISABLE ends the TD
        // (`tdx_is_sept_violation_unexpected_pending`, `kvm_vm_dead`).
        PageState::Shared => write!(
            message,
            "FATAL softtdx: private access to GPA {:#x}, which the TD made shared, at RIP {:#x}: \
             TD exit (EPT violation); the host converts the page back to private, discarding \
             it, and adds it pending; the retried access ends the TD (SEPT_VE_DISABLE)",
            gpa & !(SIZE_4K - 1),
            frame.rip
        ),
        PageState::Pending => write!(
            message,
            "FATAL softtdx: access to pending (unaccepted) private page GPA {:#x} at RIP {:#x}: \
             with SEPT_VE_DISABLE the TDX module exits to the VMM (EPT violation), which cannot \
             accept it for the TD; the TD is stopped",
            gpa & !(SIZE_4K - 1),
            frame.rip
        ),
        PageState::Private if pending_in_2m => write!(
            message,
            "FATAL softtdx: access to GPA {gpa:#x} (accepted) inside a 2 MiB range that still \
             has pending pages, at RIP {:#x}: the model can only watch 2 MiB at a time",
            frame.rip
        ),
        PageState::Private => return false,
    };
    host_stop(message.as_str())
}
