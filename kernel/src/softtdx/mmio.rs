//! The model's shared memory and MMIO: the reserved-bit #PF that stands in for the EPT, and the
//! VMM's MapGPA and RequestMMIO.
//!
//! **The hook.** QEMU TCG gives the guest 40 physical-address bits (`TCG_PHYS_ADDR_BITS`,
//! target/i386/tcg/helper-tcg.h) and raises #PF with RSVD (error code bit 3) for a leaf whose
//! address has a bit at or above that (`mmu_translate` `rsvd_mask`, excp_helper.c). The model
//! plays GPAW 48, so every access through a leaf with the shared bit (47) faults before it
//! happens, whatever the instruction: the CPU's own error code and CR2 give the access type
//! and the linear address. [`page_fault`] then classifies the GPA as KVM would
//! (MMIO-FACTS §1, §7):
//!
//! - a range the model's MapGPA made shared is RAM: KVM maps it and it never #VEs. The model
//!   clears the bit in that one leaf, lets the instruction run (the kernel is single-stepped),
//!   and restores the bit at the next trap ([`restore_swapped`]);
//! - anything else is MMIO: KVM's MMIO SPTE (value 0, suppress-#VE clear) makes the CPU raise an
//!   EPT-violation #VE. The model delivers one through gate 20: exit reason 48, qualification
//!   bit 0/1/2 by access type plus bit 7 (GLA valid) and bit 8 (final translation), GLA = CR2,
//!   GPA = the leaf's frame (shared bit included) plus the page offset, instruction length and
//!   information poisoned (the CPU does not define them for this exit; R10 of VEINFO.GET is
//!   garbage), RIP on the instruction. A #VE while VE info is unread is a #DF on hardware
//!   (stopped in `deliver_ve`).
//!
//! If CPUID 0x80000008 reported 48 or more physical-address bits (KVM with `phys-bits`), nothing
//! would fault: [`check_phys_bits`] refuses to run the model then.
//!
//! **The VMM.** RequestMMIO ([`request_mmio`]) rejects what KVM's `tdx_emulate_mmio` rejects
//! (size not 1/2/4/8, R13 not 0/1, a private GPA or one whose last byte is private: INVALID_
//! OPERAND), strips the shared bit and makes exactly one access of `size` bytes through a
//! private alias of the device (the physical-memory mapping below 4 GiB, else a mapping of its
//! own), never through the TD's shared leaf. MapGPA ([`map_gpa`]) checks like KVM's
//! `tdx_map_gpa`/`__tdx_map_gpa` (overflow, a GPA beyond GPAW or a range straddling the shared
//! bit: INVALID_OPERAND; not 4 KiB aligned: ALIGN_ERROR; R11 = R12 on these errors), records
//! the conversion, and scribbles over converted pages, because QEMU discards the backing a page
//! leaves (`kvm_convert_memory`): contents never survive. Faults a self-test arms
//! ([`HostMmioFault`]) make the VMM answer RETRY with or without progress, an error status, or
//! fail a RequestMMIO.

use super::pages::{PageState, Pages};
use crate::arch::frame::TrapFrame;
use crate::arch::paging::{FRAME_MASK, HUGE_PAGE, PRESENT};
use core::sync::atomic::{AtomicU64, Ordering};
use tdx_ve::abi::{ExitReason, TdVmCallStatus, VeInfo};
use tdx_ve::mmio::AccessSize;
use tdx_ve::regs::{Gpr, GuestRegisters, RegisterState};

/// The model's shared bit: GPAW 48 (`super::MODEL_GPAW`).
pub const SHARED_BIT: u64 = 1 << (super::MODEL_GPAW - 1);
const GPA_LIMIT: u64 = 1 << super::MODEL_GPAW;
const PAGE_SIZE: u64 = 4096;
/// #PF error code bits (Intel SDM Vol. 3A, "Page-Fault Error Code").
const PF_WRITE: u64 = 1 << 1;
const PF_RSVD: u64 = 1 << 3;
const PF_FETCH: u64 = 1 << 4;
/// EPT-violation exit qualification bits (Intel SDM Vol. 3C).
const QUALIFICATION_READ: u64 = 1 << 0;
const QUALIFICATION_WRITE: u64 = 1 << 1;
const QUALIFICATION_FETCH: u64 = 1 << 2;
const QUALIFICATION_GLA_VALID: u64 = 1 << 7;
const QUALIFICATION_FINAL_TRANSLATION: u64 = 1 << 8;
/// What the CPU leaves in the undefined length and information fields.
const POISON_LENGTH: u32 = 0xBAD0_F00D;
const POISON_INFO: u32 = 0xDEAD_BEEF;
/// What the host leaves in a page it discarded.
pub const SCRIBBLE: u8 = 0x5C;

/// A misbehaviour the model's VMM shows, armed by a self-test for the next call(s).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostMmioFault {
    /// The next MapGPA converts only its first page and answers RETRY with R11 = the next
    /// page, in R12's encoding (a pending event between chunks, KVM `__tdx_map_gpa`).
    MapGpaRetryWithProgress,
    /// Every MapGPA answers RETRY with R11 = R12 and converts nothing, until disarmed.
    MapGpaRetryNoProgress,
    /// The next MapGPA answers RETRY with R11 outside the range (the right page without the
    /// shared bit).
    MapGpaRetryOutOfRange,
    /// The next MapGPA answers GPA_INUSE with R11 = R12.
    MapGpaInUse,
    /// The next RequestMMIO answers INVALID_OPERAND.
    RequestMmioFailure,
    /// At the first virtio notify (a 16-bit write outside the page the queue addresses were
    /// written to), the host answers instead of the device and advances the used index of the
    /// last queue set up by 8: more buffers than the driver has in flight. QEMU's layout puts the common configuration at
    /// the start of the BAR, so queue_device is the dword pair at page offset 0x30.
    VirtioUsedIndex,
    /// As [`Self::VirtioUsedIndex`], but the host returns the buffer with a used length of
    /// 64 KiB, more than the buffer holds.
    VirtioUsedLength,
}

/// The MMIO side of the model. Which pages are shared is the model's page-state table
/// ([`super::pages`]), which MapGPA changes.
struct State {
    fault: Option<HostMmioFault>,
    /// A leaf whose shared bit is cleared for one instruction, and the linear address.
    swapped: Option<(*mut u64, u64)>,
    /// Aliases of device pages above the physical-memory mapping: (GPA page, virtual page).
    aliases: [(u64, u64); 8],
    /// For [`HostMmioFault::VirtioUsedIndex`]: the GPA page of the common configuration and
    /// the used ring's GPA, as the driver wrote them.
    virtio_common: u64,
    virtio_used: u64,
}

// SAFETY: one CPU; the raw pointer is a page-table entry only the model touches.
unsafe impl Send for State {}

static STATE: spin::Mutex<State> = spin::Mutex::new(State {
    fault: None,
    swapped: None,
    aliases: [(0, 0); 8],
    virtio_common: 0,
    virtio_used: 0,
});

/// Accesses RequestMMIO performed and RAM instructions let through; for the checks.
pub static REQUESTS: AtomicU64 = AtomicU64::new(0);
pub static RAM_STEPS: AtomicU64 = AtomicU64::new(0);
/// Private pages of RAM a shared access converted ([`shared_ram`]).
pub static IMPLICIT_CONVERSIONS: AtomicU64 = AtomicU64::new(0);

fn state() -> spin::MutexGuard<'static, State> {
    match STATE.try_lock() {
        Some(guard) => guard,
        None => super::host::host_stop("FATAL softtdx: the MMIO model was re-entered"),
    }
}

/// Arms (or with `None` disarms) a VMM misbehaviour.
pub fn arm(fault: Option<HostMmioFault>) {
    crate::arch::without_single_step(|| state().fault = fault);
}

/// Whether the model's MapGPA has made the page of `gpa` (shared bit clear) shared.
pub fn is_shared(gpa: u64) -> bool {
    super::pages::state(gpa) == PageState::Shared
}

/// Refuses the model when the CPU has enough physical-address bits that a leaf with bit 47
/// would not fault (a KVM host or `-cpu ...,phys-bits=48`): then no access through a shared
/// mapping would ever reach the model.
pub fn check_phys_bits() -> Result<(), &'static str> {
    let max_extended = core::arch::x86_64::__cpuid_count(0x8000_0000, 0).eax;
    if max_extended >= 0x8000_0008 {
        let bits = core::arch::x86_64::__cpuid_count(0x8000_0008, 0).eax & 0xFF;
        if bits as u64 >= super::MODEL_GPAW {
            return Err("the CPU has 48 or more physical-address bits: shared-bit accesses \
                        would not fault, so softtdx cannot see MMIO");
        }
    }
    Ok(())
}

/// The leaf entry that maps `address` and its page-offset mask, if the walk reaches one.
fn leaf(address: u64) -> Option<(*mut u64, u64)> {
    let offset = crate::memory::physical_memory_offset()?;
    let mut table = x86_64::registers::control::Cr3::read_raw().0.start_address().as_u64();
    for level in (0..4).rev() {
        let index = (address >> (12 + 9 * level)) & 0x1FF;
        let entry = (offset + (table & !SHARED_BIT) + index * 8) as *mut u64;
        // SAFETY: a live page table reached from CR3 through present entries, mapped at
        // `offset`; entries are aligned u64s.
        let value = unsafe { core::ptr::read_volatile(entry) };
        if value & PRESENT == 0 {
            return None;
        }
        if level == 0 || (level <= 2 && value & HUGE_PAGE != 0) {
            return Some((entry, (1u64 << (12 + 9 * level)) - 1));
        }
        table = value & FRAME_MASK;
    }
    None
}

fn invlpg(address: u64) {
    // SAFETY: INVLPG only drops a TLB entry.
    unsafe { core::arch::asm!("invlpg [{}]", in(reg) address, options(nostack, preserves_flags)) };
}

/// Puts back a shared bit the model cleared for one instruction. Called at every single-step
/// trap and before the next reserved-bit #PF.
pub fn restore_swapped() {
    let Some(mut state) = STATE.try_lock() else { return };
    restore_locked(&mut state);
}

fn restore_locked(state: &mut State) {
    if let Some((entry, address)) = state.swapped.take() {
        // SAFETY: `entry` is the live leaf whose shared bit `page_fault` cleared.
        unsafe { core::ptr::write_volatile(entry, core::ptr::read_volatile(entry) | SHARED_BIT) };
        invlpg(address);
    }
}

/// Whether a shared access to `gpa` (shared bit clear) reaches RAM: a page MapGPA made shared,
/// or a private (or pending) page of RAM, which the access converts. In a TD the latter raises
/// no #VE: the shared EPT has no entry and KVM handles the violation; it finds a shared fault
/// on a GFN whose attribute is private and exits to QEMU (`kvm_mmu_prepare_memory_fault_exit`),
/// which converts the page to shared, discarding it (`kvm_convert_memory`); the access is
/// retried and reaches the new shared page. Anything else is MMIO.
fn shared_ram(gpa: u64) -> bool {
    let page = gpa & !(PAGE_SIZE - 1);
    let converted = super::with_model(|m| {
        if super::pages::state_locked(&m.pages, page) == PageState::Shared {
            return Some(false);
        }
        if !super::pages::is_ram(&m.pages, page) {
            return None;
        }
        if super::pages::set_locked(&mut m.pages, page, page + PAGE_SIZE, PageState::Shared)
            .is_err()
        {
            super::host::host_stop("FATAL softtdx: the page-state map is full");
        }
        Some(true)
    });
    if converted == Some(true) {
        scribble(page, page + PAGE_SIZE);
        IMPLICIT_CONVERSIONS.fetch_add(1, Ordering::Relaxed);
    }
    converted.is_some()
}

/// #PF: a reserved-bit fault through a leaf with the shared bit is the model's EPT. Any other
/// #PF is not the model's and is left to the next handler.
pub fn page_fault(frame: &mut TrapFrame) -> bool {
    // The SDM sets P with RSVD; QEMU 7.2's TCG reports RSVD without P (excp_helper.c
    // `do_fault_rsvd`). RSVD alone decides.
    if !super::is_active() || frame.error_code & PF_RSVD == 0 {
        return false;
    }
    let gla = x86_64::registers::control::Cr2::read_raw();
    restore_swapped();
    let Some((entry, page_mask)) = leaf(gla) else { return false };
    // SAFETY: `entry` is the live leaf for `gla`.
    let value = unsafe { core::ptr::read_volatile(entry) };
    if value & SHARED_BIT == 0 {
        return false;
    }
    let gpa = (value & FRAME_MASK & !page_mask) | (gla & page_mask);
    let ram = shared_ram(gpa & !SHARED_BIT);
    let mut state = state();
    if ram {
        // RAM on the shared side: the access happens, as memory.
        // SAFETY: only the shared bit of this live leaf changes, for one instruction.
        unsafe { core::ptr::write_volatile(entry, value & !SHARED_BIT) };
        invlpg(gla);
        state.swapped = Some((entry, gla));
        RAM_STEPS.fetch_add(1, Ordering::Relaxed);
        return true;
    }
    drop(state);
    // MMIO: an EPT-violation #VE.
    let access = if frame.error_code & PF_FETCH != 0 {
        QUALIFICATION_FETCH
    } else if frame.error_code & PF_WRITE != 0 {
        QUALIFICATION_WRITE
    } else {
        QUALIFICATION_READ
    };
    let mut reported_gpa = gpa;
    {
        let mut model = super::model();
        if model.scenario == Some(crate::bootflags::FatalScenario::MmioPrivateGpa) {
            model.scenario = None;
            reported_gpa &= !SHARED_BIT;
        }
    }
    let info = VeInfo {
        exit_reason: ExitReason::EptViolation as u32,
        exit_qualification: access | QUALIFICATION_GLA_VALID | QUALIFICATION_FINAL_TRANSLATION,
        guest_linear_address: gla,
        guest_physical_address: reported_gpa,
        instruction_length: POISON_LENGTH,
        instruction_info: POISON_INFO,
    };
    super::deliver_ve(frame, info);
    true
}

fn set_status(view: &mut RegisterState, status: TdVmCallStatus) {
    view.set_gpr(Gpr::R10, status.code());
}

/// A private alias of the device page at `gpa` (shared bit clear), for the host's access.
fn alias(state: &mut State, gpa: u64) -> Option<u64> {
    let offset = crate::memory::physical_memory_offset()?;
    if gpa < 4 << 30 {
        return Some(offset + gpa);
    }
    let page = gpa & !(PAGE_SIZE - 1);
    if let Some(&(_, virt)) = state.aliases.iter().find(|&&(p, v)| p == page && v != 0) {
        return Some(virt + (gpa & (PAGE_SIZE - 1)));
    }
    let slot = state.aliases.iter().position(|&(_, v)| v == 0)?;
    let virt = crate::mm::pagetable::map_device(page, 1, 0).ok()?;
    state.aliases[slot] = (page, virt);
    Some(virt + (gpa & (PAGE_SIZE - 1)))
}

/// TDG.VP.VMCALL<#VE.RequestMMIO>, as KVM's `tdx_emulate_mmio` serves it.
pub fn request_mmio(view: &mut RegisterState, pages: &Pages) {
    let mut state = state();
    if state.fault == Some(HostMmioFault::RequestMmioFailure) {
        state.fault = None;
        return set_status(view, TdVmCallStatus::InvalidOperand);
    }
    let Some(size) = AccessSize::from_bytes(view.gpr(Gpr::R12)) else {
        return set_status(view, TdVmCallStatus::InvalidOperand);
    };
    let write = match view.gpr(Gpr::R13) {
        0 => false,
        1 => true,
        _ => return set_status(view, TdVmCallStatus::InvalidOperand),
    };
    let gpa = view.gpr(Gpr::R14);
    let last = gpa.wrapping_add(size.bytes() - 1);
    // "allows only shared GPA": both ends must carry the bit and lie below GPAW. KVM also
    // refuses an access that crosses a page ("Disallow MMIO crossing page boundary for
    // simplicity", `tdx_emulate_mmio`).
    if gpa & SHARED_BIT == 0
        || last & SHARED_BIT == 0
        || last >= GPA_LIMIT
        || last < gpa
        || (gpa ^ last) & !(PAGE_SIZE - 1) != 0
    {
        return set_status(view, TdVmCallStatus::InvalidOperand);
    }
    let device = gpa & !SHARED_BIT;
    if super::pages::state_locked(pages, device) != PageState::Private
        || super::pages::is_ram(pages, device)
    {
        // RAM, not a device: KVM finds the memslot and refuses the emulation
        // (`tdx_emulate_mmio`: a GFN with a valid memslot is an error, INVALID_OPERAND).
        return set_status(view, TdVmCallStatus::InvalidOperand);
    }
    let Some(address) = alias(&mut state, device) else {
        return set_status(view, TdVmCallStatus::InvalidOperand);
    };
    REQUESTS.fetch_add(1, Ordering::Relaxed);
    if write {
        let value = view.gpr(Gpr::R15);
        let answered = match state.fault {
            Some(fault @ (HostMmioFault::VirtioUsedIndex | HostMmioFault::VirtioUsedLength)) => {
                hostile_used_ring(&mut state, fault, device, size, value)
            }
            _ => false,
        };
        if !answered {
            // SAFETY: the host's own access to the device register the guest named, exactly
            // `size` bytes through a private alias.
            unsafe { crate::mm::mmio::write_mov(address, size, value) };
        }
    } else {
        // SAFETY: as above.
        let data = unsafe { crate::mm::mmio::read_mov(address, size) };
        view.set_gpr(Gpr::R11, super::device::mmio_read(device, size, data));
    }
    set_status(view, TdVmCallStatus::Success)
}

/// [`HostMmioFault::VirtioUsedIndex`] and [`HostMmioFault::VirtioUsedLength`]: learns the used
/// ring from the driver's queue_device writes and answers a notify itself, instead of the
/// device (so that no device update races with it): the used index moved by 8, or the entry
/// returned with a 64 KiB length. Returns whether it answered the write.
fn hostile_used_ring(
    state: &mut State,
    fault: HostMmioFault,
    device: u64,
    size: AccessSize,
    value: u64,
) -> bool {
    let page = device & !(PAGE_SIZE - 1);
    match (device & (PAGE_SIZE - 1), size) {
        (0x30, AccessSize::Dword) => {
            state.virtio_common = page;
            state.virtio_used = (state.virtio_used & !0xFFFF_FFFF) | value;
        }
        (0x34, AccessSize::Dword) if page == state.virtio_common => {
            state.virtio_used = (state.virtio_used & 0xFFFF_FFFF) | value << 32;
        }
        (_, AccessSize::Word) if state.virtio_used != 0 && page != state.virtio_common => {
            // The host writing the used ring the guest gave it (flags, idx, then {id, len}
            // entries), as QEMU writes guest memory. The first notify: the descriptor is 0 and
            // the entry is slot 0.
            let written = super::pages::host_access(state.virtio_used, 12, |used| {
                let now = u16::from_le_bytes([used[2], used[3]]);
                let index = if fault == HostMmioFault::VirtioUsedIndex {
                    now.wrapping_add(8)
                } else {
                    used[4..8].copy_from_slice(&0u32.to_le_bytes());
                    used[8..12].copy_from_slice(&0x1_0000u32.to_le_bytes());
                    now.wrapping_add(1)
                };
                used[2..4].copy_from_slice(&index.to_le_bytes());
            });
            return written.is_some();
        }
        _ => {}
    }
    false
}

/// TDG.VP.VMCALL<MapGPA>, as KVM's `tdx_map_gpa` and QEMU's `kvm_convert_memory` serve it: a
/// page made shared is Shared in the model's table, a page made private is Pending until the TD
/// accepts it (TDG.MEM.PAGE.ACCEPT, [`super::pages`]).
pub fn map_gpa(view: &mut RegisterState, pages: &mut Pages) {
    let mut state = state();
    let r12 = view.gpr(Gpr::R12);
    let size = view.gpr(Gpr::R13);
    let fail = |view: &mut RegisterState, status| {
        view.set_gpr(Gpr::R11, r12);
        set_status(view, status)
    };
    let Some(end) = r12.checked_add(size) else {
        return fail(view, TdVmCallStatus::InvalidOperand);
    };
    let to_shared = r12 & SHARED_BIT != 0;
    if end > GPA_LIMIT || size == 0 || ((end - 1) & SHARED_BIT != 0) != to_shared {
        return fail(view, TdVmCallStatus::InvalidOperand);
    }
    if !r12.is_multiple_of(PAGE_SIZE) || !size.is_multiple_of(PAGE_SIZE) {
        return fail(view, TdVmCallStatus::AlignError);
    }
    let (start, end) = (r12 & !SHARED_BIT, (end - 1) & !SHARED_BIT);
    let end = end + 1;
    let mut converted_end = end;
    match state.fault {
        Some(HostMmioFault::MapGpaRetryNoProgress) => {
            view.set_gpr(Gpr::R11, r12);
            return set_status(view, TdVmCallStatus::Retry);
        }
        Some(HostMmioFault::MapGpaRetryOutOfRange) => {
            state.fault = None;
            view.set_gpr(Gpr::R11, (r12 ^ SHARED_BIT) + PAGE_SIZE);
            return set_status(view, TdVmCallStatus::Retry);
        }
        Some(HostMmioFault::MapGpaInUse) => {
            state.fault = None;
            return fail(view, TdVmCallStatus::GpaInUse);
        }
        Some(HostMmioFault::MapGpaRetryWithProgress) if size > PAGE_SIZE => {
            state.fault = None;
            converted_end = start + PAGE_SIZE;
        }
        _ => {}
    }
    let new_state = if to_shared { PageState::Shared } else { PageState::Pending };
    if super::pages::set_locked(pages, start, converted_end, new_state).is_err() {
        // The model's table is full: a VMM that cannot do it refuses.
        return fail(view, TdVmCallStatus::InvalidOperand);
    }
    scribble(start, converted_end);
    if converted_end < end {
        // R11 in R12's encoding: the shared bit stays on for a to-shared conversion.
        view.set_gpr(Gpr::R11, converted_end | (r12 & SHARED_BIT));
        return set_status(view, TdVmCallStatus::Retry);
    }
    set_status(view, TdVmCallStatus::Success)
}

/// The host discards a converted page's backing (QEMU `kvm_convert_memory`): the TD finds
/// something else there afterwards.
fn scribble(start: u64, end: u64) {
    if end > 4 << 30 {
        return;
    }
    let mut page = start;
    while page < end {
        super::pages::fill_page(page, SCRIBBLE);
        page += PAGE_SIZE;
    }
}
