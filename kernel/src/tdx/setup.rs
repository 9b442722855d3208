//! Setting up as a TD at boot: detection sets the CC attributes (from then on port I/O on the
//! fatal paths goes through hypercalls and fatal output shows no registers), TDG.VP.INFO is read
//! and printed as the kernel's first line, and the attributes policy is applied.
//!
//! It prints, stops the kernel and sets the trap path's register-dump policy, so it sits above
//! the console and the exit path, as the #VE handler does; detection, the TD facts, the
//! hypercalls and the port gate (`tdx/mod.rs`, `tdcall`, `vmcall`, `io`) sit below them.

use super::{detect, report_fatal_error, tdcall, TD_INFO};
use crate::cc::{self, CcAttr};
use crate::println;
use tdx_ve::abi::AttributesVerdict;

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
