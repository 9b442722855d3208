//! Event counters for the report: how many #VEs, TDCALLs and hypercalls the guest made.
//!
//! They are plain atomics so that the #VE handler can count without a lock. The guest counts
//! its own side of the ABI, so the numbers mean the same in a real TD and under softtdx; in
//! native mode they all stay 0, except `nmi`, which counts NMIs wherever they come from.

use core::sync::atomic::{AtomicU64, Ordering};

pub struct Counter {
    pub name: &'static str,
    value: AtomicU64,
}

impl Counter {
    const fn new(name: &'static str) -> Self {
        Self { name, value: AtomicU64::new(0) }
    }

    pub fn increment(&self) {
        self.value.fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.value.load(Ordering::Relaxed)
    }
}

pub static VE_IO: Counter = Counter::new("ve.io");
pub static VE_HLT: Counter = Counter::new("ve.hlt");
pub static VE_CPUID: Counter = Counter::new("ve.cpuid");
pub static VE_MSR: Counter = Counter::new("ve.msr");
pub static VE_OTHER: Counter = Counter::new("ve.other");
pub static TDCALL_VP_INFO: Counter = Counter::new("tdcall.vp_info");
pub static TDCALL_VEINFO_GET: Counter = Counter::new("tdcall.veinfo_get");
pub static TDCALL_VMCALL: Counter = Counter::new("tdcall.vmcall");
/// TDG.MEM.PAGE.ACCEPT calls, retries included (`crate::tdx::accept`).
pub static TDCALL_ACCEPT: Counter = Counter::new("tdcall.accept");
pub static TDVMCALL_IO: Counter = Counter::new("tdvmcall.io");
pub static TDVMCALL_HLT: Counter = Counter::new("tdvmcall.hlt");
pub static TDVMCALL_CPUID: Counter = Counter::new("tdvmcall.cpuid");
pub static TDVMCALL_MSR: Counter = Counter::new("tdvmcall.msr");
pub static VE_MMIO: Counter = Counter::new("ve.mmio");
pub static TDVMCALL_MMIO: Counter = Counter::new("tdvmcall.mmio");
pub static TDVMCALL_MAPGPA: Counter = Counter::new("tdvmcall.mapgpa");
pub static TDVMCALL_FAILED: Counter = Counter::new("tdvmcall.failed");
/// Port accesses the allowlist refused (`crate::tdx::io`).
pub static IO_DENIED: Counter = Counter::new("io.denied");
/// NMIs taken (`crate::arch::nmi`): counted, then returned from.
pub static NMI: Counter = Counter::new("nmi");

pub static ALL: [&Counter; 19] = [
    &VE_IO,
    &VE_HLT,
    &VE_CPUID,
    &VE_MSR,
    &VE_OTHER,
    &TDCALL_VP_INFO,
    &TDCALL_VEINFO_GET,
    &TDCALL_VMCALL,
    &TDCALL_ACCEPT,
    &TDVMCALL_IO,
    &TDVMCALL_HLT,
    &TDVMCALL_CPUID,
    &TDVMCALL_MSR,
    &VE_MMIO,
    &TDVMCALL_MMIO,
    &TDVMCALL_MAPGPA,
    &TDVMCALL_FAILED,
    &IO_DENIED,
    &NMI,
];

/// Every counter's name and value, read at once. Not inlined: `cargo xtask td-audit --softtdx`
/// marks this function's entry to compare the port accesses of the model's host side with
/// `tdvmcall.io` at the moment of the snapshot.
#[inline(never)]
pub fn snapshot() -> [(&'static str, u64); ALL.len()] {
    ALL.map(|c| (c.name, c.get()))
}
