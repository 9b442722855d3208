//! Checks on linear addresses, for emulation code that touches the interrupted context's
//! memory (INS/OUTS).
//!
//! The #VE handler must not fault on a bad RSI/RDI: it walks the live page tables first (CR3,
//! through the bootloader's physical-memory mapping) and reports a clean error instead. The walk
//! follows Intel SDM Vol. 3A, 4.5 "4-Level Paging": present bit at every level, PS for 1 GiB and
//! 2 MiB pages, and the R/W bit of every level for writes (CR0.WP is set, so ring 0 honours it).

use bootloader_api::BootInfo;
use core::sync::atomic::{AtomicU64, Ordering};

static PHYSICAL_MEMORY_OFFSET: AtomicU64 = AtomicU64::new(u64::MAX);

use crate::arch::paging::{FRAME_MASK, HUGE_PAGE, NO_EXECUTE, PRESENT, WRITABLE};

const PAGE_SIZE: u64 = 4096;
/// CR4.LA57: 5-level paging, which this walk does not implement.
const CR4_LA57: u64 = 1 << 12;

pub fn init(boot_info: &BootInfo) {
    if let Some(offset) = boot_info.physical_memory_offset.into_option() {
        PHYSICAL_MEMORY_OFFSET.store(offset, Ordering::Relaxed);
    }
}

pub fn physical_memory_offset() -> Option<u64> {
    match PHYSICAL_MEMORY_OFFSET.load(Ordering::Relaxed) {
        u64::MAX => None,
        offset => Some(offset),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessError {
    NonCanonical(u64),
    NotMapped(u64),
    ReadOnly(u64),
    NoPhysicalMapping,
    FiveLevelPaging,
}

impl core::fmt::Display for AccessError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::NonCanonical(a) => write!(f, "non-canonical address {a:#x}"),
            Self::NotMapped(a) => write!(f, "address {a:#x} is not mapped"),
            Self::ReadOnly(a) => write!(f, "address {a:#x} is mapped read-only"),
            Self::NoPhysicalMapping => write!(f, "no physical-memory mapping to walk page tables"),
            Self::FiveLevelPaging => {
                write!(f, "5-level paging is on; the page walk knows 4 levels")
            }
        }
    }
}

fn is_canonical(address: u64) -> bool {
    let upper = (address as i64) >> 47;
    upper == 0 || upper == -1
}

/// Where a linear address leads in the live page tables, with the access rights of the whole
/// walk (writable only if every level allows it; executable only if no level sets NX).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Translation {
    pub physical: u64,
    pub writable: bool,
    pub executable: bool,
}

/// Walks the live page tables for `address`.
pub fn translate(address: u64) -> Result<Translation, AccessError> {
    if !is_canonical(address) {
        return Err(AccessError::NonCanonical(address));
    }
    let offset = physical_memory_offset().ok_or(AccessError::NoPhysicalMapping)?;
    if x86_64::registers::control::Cr4::read_raw() & CR4_LA57 != 0 {
        return Err(AccessError::FiveLevelPaging);
    }
    let (level4, _) = x86_64::registers::control::Cr3::read_raw();
    let mut table = level4.start_address().as_u64();
    let mut writable = true;
    let mut executable = true;
    for level in (0..4).rev() {
        let index = (address >> (12 + 9 * level)) & 0x1FF;
        // SAFETY: `table` is the physical address of a live page table (from CR3 or a present
        // entry); the bootloader maps all physical memory at `offset`, and entries are 8-byte
        // aligned u64s. The read is volatile because the tables are live hardware structures.
        let entry = unsafe { core::ptr::read_volatile((offset + table + index * 8) as *const u64) };
        if entry & PRESENT == 0 {
            return Err(AccessError::NotMapped(address));
        }
        writable &= entry & WRITABLE != 0;
        executable &= entry & NO_EXECUTE == 0;
        if level == 0 || (level <= 2 && entry & HUGE_PAGE != 0) {
            let page_mask = (1u64 << (12 + 9 * level)) - 1;
            let physical = (entry & FRAME_MASK & !page_mask) | (address & page_mask);
            return Ok(Translation { physical, writable, executable });
        }
        table = entry & FRAME_MASK;
    }
    unreachable!("level 0 always returns")
}

/// The live page-directory entry that maps `address`: a 2 MiB leaf (PS set, present or not) or
/// a pointer to a table of 4 KiB leaves; for softtdx, which keeps the physical map of pending
/// and shared memory non-present.
#[cfg(feature = "test-modes")]
pub fn pd_entry(address: u64) -> Result<*mut u64, AccessError> {
    if !is_canonical(address) {
        return Err(AccessError::NonCanonical(address));
    }
    let offset = physical_memory_offset().ok_or(AccessError::NoPhysicalMapping)?;
    if x86_64::registers::control::Cr4::read_raw() & CR4_LA57 != 0 {
        return Err(AccessError::FiveLevelPaging);
    }
    let (level4, _) = x86_64::registers::control::Cr3::read_raw();
    let mut table = level4.start_address().as_u64();
    for level in (2..4).rev() {
        let index = (address >> (12 + 9 * level)) & 0x1FF;
        let entry = (offset + table + index * 8) as *mut u64;
        // SAFETY: as in `translate`: a live page table, mapped at `offset`, 8-byte entries.
        let value = unsafe { core::ptr::read_volatile(entry) };
        if value & PRESENT == 0 || (level == 2 && value & HUGE_PAGE != 0) {
            return Err(AccessError::NotMapped(address));
        }
        table = value & FRAME_MASK;
    }
    Ok((offset + table + ((address >> 21) & 0x1FF) * 8) as *mut u64)
}

/// Checks one address: canonical, mapped, and writable when `write` is set.
fn check_page(address: u64, write: bool) -> Result<(), AccessError> {
    let translation = translate(address)?;
    if write && !translation.writable {
        return Err(AccessError::ReadOnly(address));
    }
    Ok(())
}

/// Checks that `[address, address + len)` can be accessed (written, if `write`) without a fault.
pub fn check_access(address: u64, len: u64, write: bool) -> Result<(), AccessError> {
    if len == 0 {
        return Ok(());
    }
    let last = address.checked_add(len - 1).ok_or(AccessError::NonCanonical(address))?;
    let mut page = address & !(PAGE_SIZE - 1);
    loop {
        check_page(page.max(address), write)?;
        if page >= (last & !(PAGE_SIZE - 1)) {
            return Ok(());
        }
        page += PAGE_SIZE;
    }
}
