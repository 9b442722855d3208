//! Intel TDX guest support: TD detection, TDCALL and hypercall wrappers, and the #VE handler.
//!
//! Detection follows the TDX guest convention (Linux `arch/x86/coco/tdx/tdx.c`): CPUID leaf 0
//! reports a maximum basic leaf of at least 0x21, and leaf 0x21 subleaf 0 returns the vendor
//! string "IntelTDX    " in EBX, EDX, ECX.

pub mod accept;
pub mod io;
pub mod tdcall;
pub mod ve;
pub mod vmcall;

use crate::cc::{self, CcAttr};
use crate::println;
use core::arch::x86_64::__cpuid_count;
use spin::Once;
use tdx_ve::abi::{AttributesVerdict, TdInfo};

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

/// Sets the TD attributes as early as possible, silently: from then on the emergency writer
/// and fatal paths use hypercalls instead of port I/O, which in a TD would raise #VE.
pub fn early_detect() {
    if detect() {
        mark_td();
    }
}

fn mark_td() {
    cc::set(CcAttr::GuestTdx);
    cc::set(CcAttr::GuestUnrollStringIo);
    // The serial port is the host's: no register contents in fatal output until TDG.VP.INFO
    // says this is a debug TD (`init`).
    crate::arch::trap::set_register_dump(false);
}

/// Detects a TD and, in one, reads and prints TDG.VP.INFO and sets the CC attributes; applies
/// the attributes policy ([`tdx_ve::abi::TdAttributes::verdict`]): a debug TD says so on this,
/// the kernel's first line, and a non-debug TD without SEPT_VE_DISABLE stops here with
/// ReportFatalError.
pub fn init() {
    if !detect() {
        println!("tdx: not a TD (CPUID leaf 0x21 has no \"IntelTDX    \" vendor string)");
        return;
    }
    // Before anything prints: from here on, fatal paths must use hypercalls.
    mark_td();
    let info = match tdcall::vp_info() {
        Ok(info) => info,
        Err(error) => {
            println!("tdx: FATAL: TDG.VP.INFO failed: {error}");
            crate::exit::exit(crate::exit::ExitCode::Failure);
        }
    };
    TD_INFO.call_once(|| info);
    let verdict = info.attributes.verdict();
    let debug = match verdict {
        AttributesVerdict::RunDebug { .. } => {
            // The host can read and write a debug TD's registers anyway: fatal paths keep the
            // full register dump, as natively.
            crate::arch::trap::set_register_dump(true);
            "DEBUG TD (the host can read and write this TD's memory and registers), "
        }
        _ => "",
    };
    println!(
        "tdx: TD detected: {debug}GPAW={} shared bit={} attributes={:#x} vcpus={}/{} vcpu_index={}",
        info.gpaw,
        info.shared_bit().map_or(-1, |b| b.trailing_zeros() as i64),
        info.attributes.0,
        info.num_vcpus,
        info.max_vcpus,
        info.vcpu_index
    );
    match verdict {
        AttributesVerdict::Run => {}
        AttributesVerdict::RunDebug { sept_ve_disable: true } => {}
        AttributesVerdict::RunDebug { sept_ve_disable: false } => println!(
            "tdx: warning: SEPT_VE_DISABLE (attribute bit 28) is clear; running only because \
             this is a debug TD"
        ),
        AttributesVerdict::Refuse => {
            println!(
                "FATAL: TD attributes {:#x} lack SEPT_VE_DISABLE (bit 28) in a non-debug TD: the \
                 host could make any private page pending and raise #VE wherever it likes. \
                 Refusing to run (as Linux does).",
                info.attributes.0
            );
            report_fatal_error("TD misconfiguration: SEPT_VE_DISABLE attribute must be set");
            crate::exit::exit(crate::exit::ExitCode::Failure);
        }
    }
}

/// Whether the kernel runs as a TD guest (set by [`init`]).
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
