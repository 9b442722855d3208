//! Memory management: physical frames, including the memory TDVF left unaccepted; and for a
//! TD, the shared bit, edits of the kernel's own page tables, the pool of shared pages for
//! buffers the host must see, and mappings of device MMIO.
//!
//! In a TD, private memory is encrypted and integrity-protected; the host can read or write only
//! pages the TD converts to shared (TDG.VP.VMCALL<MapGPA>) and maps with the shared bit, GPA
//! bit GPAW-1 (47 or 51), taken from TDG.VP.INFO (MMIO-FACTS §4). MMIO is a shared GPA that has
//! no memory behind it. Outside a TD there is no shared bit: the same code maps everything
//! plainly.

use core::sync::atomic::{AtomicU64, Ordering};

pub mod frames;
pub mod mmio;
pub mod pagetable;
pub mod shared;

/// The TD's shared bit (BIT(GPAW-1) from TDG.VP.INFO), or `None` outside a TD.
///
/// Kept once known: the MMIO #VE handler asks on every EPT violation (one load instead of the
/// GPAW checks).
#[inline]
pub fn shared_bit() -> Option<u64> {
    match SHARED_BIT.load(Ordering::Relaxed) {
        0 => learn_shared_bit(),
        bit => Some(bit),
    }
}

/// The shared bit once [`shared_bit`] has found it; 0 before (and always outside a TD).
static SHARED_BIT: AtomicU64 = AtomicU64::new(0);

#[cold]
fn learn_shared_bit() -> Option<u64> {
    let bit = crate::tdx::td_info().and_then(|info| info.shared_bit().ok())?;
    SHARED_BIT.store(bit, Ordering::Relaxed);
    Some(bit)
}
