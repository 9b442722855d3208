//! Memory management: physical frames, including the memory TDVF left unaccepted; and for a
//! TD, the shared bit, edits of the kernel's own page tables, the pool of shared pages for
//! buffers the host must see, and mappings of device MMIO.
//!
//! In a TD, private memory is encrypted and integrity-protected; the host can read or write only
//! pages the TD converts to shared (TDG.VP.VMCALL<MapGPA>) and maps with the shared bit, GPA
//! bit GPAW-1 (47 or 51), taken from TDG.VP.INFO (MMIO-FACTS §4). MMIO is a shared GPA that has
//! no memory behind it. Outside a TD there is no shared bit: the same code maps everything
//! plainly.

pub mod frames;
pub mod mmio;
pub mod pagetable;
pub mod shared;

/// The TD's shared bit (BIT(GPAW-1) from TDG.VP.INFO), or `None` outside a TD.
pub fn shared_bit() -> Option<u64> {
    crate::tdx::td_info().and_then(|info| info.shared_bit().ok())
}
