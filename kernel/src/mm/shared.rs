//! A pool of shared pages: the only memory the host may read or write (virtqueues, bounce
//! buffers). Converted once, at first use, in Linux's order for private to shared
//! (`tdx_enc_status_change_finish`, MMIO-FACTS §4): the leaves get the shared bit first (TLB
//! and caches flushed), then MapGPA tells the host. The host discards a page's contents on
//! conversion, so the pool is zeroed afterwards through its shared mapping; nothing here ever
//! assumes contents survive a conversion. Data from the pool is untrusted: callers copy it
//! into private memory before they parse it.
//!
//! The pool stays shared for the kernel's lifetime. The physical-memory mapping still maps the
//! same frames privately; nothing may access the pool through it (in a TD such an access would
//! make the host convert the page back implicitly, losing its contents).

use super::pagetable::{self, PAGE_SIZE};
use crate::tdx::mapgpa::{self, ConvertError};
use core::cell::UnsafeCell;

/// Pages in the pool: two virtqueues' rings and buffers, and room for checks.
pub const POOL_PAGES: usize = 16;

#[repr(C, align(4096))]
struct Pool(UnsafeCell<[[u8; PAGE_SIZE as usize]; POOL_PAGES]>);

// SAFETY: access to the pages is handed out by `STATE`, one owner per page.
unsafe impl Sync for Pool {}

static POOL: Pool = Pool(UnsafeCell::new([[0; PAGE_SIZE as usize]; POOL_PAGES]));

struct State {
    converted: bool,
    used: u32,
}

static STATE: spin::Mutex<State> = spin::Mutex::new(State { converted: false, used: 0 });

#[derive(Clone, Copy, Debug)]
pub enum SharedError {
    PageTable(pagetable::PageTableError),
    Convert(ConvertError),
    Exhausted,
}

impl core::fmt::Display for SharedError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::PageTable(e) => write!(f, "shared pool page tables: {e}"),
            Self::Convert(e) => write!(f, "shared pool conversion: {e}"),
            Self::Exhausted => write!(f, "shared pool exhausted"),
        }
    }
}

/// Shared pages handed out by [`allocate`]: `virt` maps them with the shared bit; `gpa` is
/// their guest-physical address without it, which is what a device's DMA addresses hold
/// (MMIO-FACTS §4: KVM and QEMU strip the bit).
#[derive(Clone, Copy, Debug)]
pub struct SharedPages {
    pub virt: u64,
    pub gpa: u64,
    pub len: u64,
}

fn pool_base() -> u64 {
    POOL.0.get() as u64
}

/// Converts the pool to shared, once. Outside a TD the pool is ordinary memory.
pub fn init() -> Result<(), SharedError> {
    let mut state = STATE.lock();
    if state.converted {
        return Ok(());
    }
    let base = pool_base();
    let len = POOL_PAGES as u64 * PAGE_SIZE;
    if let Some(shared_bit) = super::shared_bit() {
        let gpa = crate::memory::translate(base)
            .map_err(|e| SharedError::PageTable(pagetable::PageTableError::Walk(e)))?
            .physical;
        // Private to shared: the mapping first, then MapGPA (Linux tdx_enc_status_change_finish).
        pagetable::flush_cache_range(base, len);
        pagetable::set_shared(base, POOL_PAGES as u64, shared_bit, true)
            .map_err(SharedError::PageTable)?;
        mapgpa::map_gpa(gpa & !shared_bit, len, true, shared_bit).map_err(SharedError::Convert)?;
    }
    // Whatever the host left there: start from zeroes.
    for offset in (0..len).step_by(8) {
        // SAFETY: the pool is mapped (shared in a TD) and nobody owns a page yet.
        unsafe { core::ptr::write_volatile((base + offset) as *mut u64, 0) };
    }
    state.converted = true;
    Ok(())
}

/// Hands out `pages` contiguous shared pages, zeroed, for the rest of the kernel's life.
pub fn allocate(pages: usize) -> Result<SharedPages, SharedError> {
    init()?;
    let mut state = STATE.lock();
    let used = state.used as usize;
    if pages == 0 || used + pages > POOL_PAGES {
        return Err(SharedError::Exhausted);
    }
    state.used += pages as u32;
    let virt = pool_base() + used as u64 * PAGE_SIZE;
    let physical = crate::memory::translate(virt)
        .map_err(|e| SharedError::PageTable(pagetable::PageTableError::Walk(e)))?
        .physical;
    let gpa = physical & !super::shared_bit().unwrap_or(0);
    Ok(SharedPages { virt, gpa, len: pages as u64 * PAGE_SIZE })
}
