//! Intel TDX guest support: TD detection, TDCALL and hypercall wrappers, and the #VE handler.
//!
//! Detection follows the TDX guest convention (Linux `arch/x86/coco/tdx/tdx.c`): CPUID leaf 0
//! reports a maximum basic leaf of at least 0x21, and leaf 0x21 subleaf 0 returns the vendor
//! string "IntelTDX    " in EBX, EDX, ECX.

pub mod accept;
pub mod io;
pub mod mapgpa;
pub mod mmio;
mod setup;
pub mod tdcall;
pub mod ve;
pub mod vmcall;

pub use setup::{early_detect, init};

use crate::cc::{self, CcAttr};
use core::arch::x86_64::__cpuid_count;
use spin::Once;
use tdx_ve::abi::TdInfo;

const TDX_CPUID_LEAF: u32 = 0x21;
const TDX_VENDOR: &[u8; 12] = b"IntelTDX    ";

static TD_INFO: Once<TdInfo> = Once::new();

/// Whether CPUID says this is a TD.
pub fn detect() -> bool {
    // In a TD, leaves 0 and 0x21 are answered by the TDX module without a #VE.
    let max_leaf = __cpuid_count(0, 0).eax;
    if max_leaf < TDX_CPUID_LEAF {
        return false;
    }
    let leaf = __cpuid_count(TDX_CPUID_LEAF, 0);
    let mut vendor = [0u8; 12];
    vendor[0..4].copy_from_slice(&leaf.ebx.to_le_bytes());
    vendor[4..8].copy_from_slice(&leaf.edx.to_le_bytes());
    vendor[8..12].copy_from_slice(&leaf.ecx.to_le_bytes());
    &vendor == TDX_VENDOR
}

/// Whether the kernel runs as a TD guest (set by [`early_detect`] and [`init`]).
pub fn is_td() -> bool {
    cc::cc_platform_has(CcAttr::GuestTdx)
}

pub fn td_info() -> Option<&'static TdInfo> {
    TD_INFO.get()
}

/// In a TD, sends ReportFatalError with `message`; elsewhere does nothing. The caller stops
/// the kernel afterwards either way.
pub fn report_fatal_error(message: &str) {
    if is_td() {
        let _ = vmcall::report_fatal_error(message);
    }
}
