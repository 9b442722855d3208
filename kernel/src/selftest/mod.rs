//! The in-guest self-test: named checks, one report line each, a summary, and the verdict.
//!
//! Report grammar (parsed by `xtask/src/report.rs`; keep them in step):
//! ```text
//! SELFTEST BEGIN mode=<mode>
//! CHECK <pass|fail|skip> <name> [detail]
//! COUNTERS <key>=<value> ...
//! SUMMARY passed=<n> failed=<n> skipped=<n>
//! ```
//! Lines starting with `#` carry extra diagnostics (e.g. both states of a failed differential
//! check) and are ignored by the parser.

mod accept;
mod allowlist;
mod attest;
mod basic;
mod bootinfo;
#[cfg_attr(feature = "no-device-checks", allow(dead_code))]
mod devices;
#[cfg(feature = "test-modes")]
mod diff;
mod memory_checks;
mod mm;
#[cfg(feature = "test-modes")]
mod mmio_diff;
mod td;
mod virtio;
#[cfg(feature = "test-modes")]
pub mod virtio_faults;

use crate::exit::ExitCode;
use crate::fmtbuf::FixedString;
use crate::{counters, println};
use bootloader_api::BootInfo;

pub type Detail = FixedString<160>;

pub enum Outcome {
    Pass(Detail),
    Fail(Detail),
    Skip(Detail),
}

#[macro_export]
macro_rules! pass {
    ($($arg:tt)*) => { $crate::selftest::Outcome::Pass($crate::fixed_format!(160, $($arg)*)) };
}
#[macro_export]
macro_rules! fail {
    ($($arg:tt)*) => { $crate::selftest::Outcome::Fail($crate::fixed_format!(160, $($arg)*)) };
}
#[macro_export]
macro_rules! skip {
    ($($arg:tt)*) => { $crate::selftest::Outcome::Skip($crate::fixed_format!(160, $($arg)*)) };
}

/// What a check may look at.
pub struct Context<'a> {
    pub boot_info: &'a BootInfo,
}

/// The name of a check built with its result inverted (`cargo xtask test --fail-check NAME`),
/// so that the harness can prove it notices a failing check.
const INVERTED_CHECK: Option<&str> = option_env!("TDX_UNIKERNEL_FAIL_CHECK");

#[derive(Default)]
pub struct Tally {
    passed: u32,
    failed: u32,
    skipped: u32,
}

impl Tally {
    /// Prints one report line for `name` and counts it.
    pub fn record(&mut self, name: &str, outcome: Outcome) {
        let outcome = match (INVERTED_CHECK, outcome) {
            (Some(inverted), Outcome::Pass(_)) if inverted == name => {
                Outcome::Fail(crate::fixed_format!(160, "inverted by --fail-check"))
            }
            (Some(inverted), Outcome::Fail(_)) if inverted == name => {
                Outcome::Pass(crate::fixed_format!(160, "inverted by --fail-check"))
            }
            (_, outcome) => outcome,
        };
        let (word, detail) = match &outcome {
            Outcome::Pass(d) => {
                self.passed += 1;
                ("pass", d)
            }
            Outcome::Fail(d) => {
                self.failed += 1;
                ("fail", d)
            }
            Outcome::Skip(d) => {
                self.skipped += 1;
                ("skip", d)
            }
        };
        if detail.as_str().is_empty() {
            println!("CHECK {word} {name}");
        } else {
            println!("CHECK {word} {name} {}", detail.as_str());
        }
    }

    /// Checks recorded so far: (passed, failed, skipped).
    pub fn counts(&self) -> (u32, u32, u32) {
        (self.passed, self.failed, self.skipped)
    }

    pub fn run(&mut self, name: &str, check: impl FnOnce() -> Outcome) {
        let outcome = check();
        self.record(name, outcome);
    }
}

pub fn run(boot_info: &BootInfo) -> ExitCode {
    let ctx = Context { boot_info };
    println!("SELFTEST BEGIN mode={}", mode_name());
    let mut tally = Tally::default();
    // The audit-bypass image exists for `audit:softtdx-bypass` alone, which audits its bypass
    // and compares the counters, and needs none of the checks (`audit:own` audits the whole
    // self-test under softtdx): it goes straight to the bypass.
    if cfg!(feature = "audit-bypass") {
        #[cfg(feature = "audit-bypass")]
        audit_bypass();
    } else {
        checks(&ctx, &mut tally);
    }

    // Snapshot first: printing itself raises I/O #VEs in a TD.
    let snapshot = counters::snapshot();
    let mut line = alloc::string::String::from("COUNTERS");
    for (name, value) in snapshot {
        let _ = core::fmt::Write::write_fmt(&mut line, format_args!(" {name}={value}"));
    }
    println!("{line}");
    #[cfg(feature = "test-modes")]
    {
        use core::sync::atomic::Ordering::Relaxed;
        let entry = crate::KERNEL_ENTRY_TSC.load(Relaxed);
        // What softtdx spent playing TDVF (leaving RAM above 4 GiB pending) is firmware's work
        // in a TD, not the kernel's: left out (0 natively).
        let tdvf = crate::bench::TDVF_PLAY_TSC.load(Relaxed);
        // SAFETY: RDTSC has no side effects.
        let now = unsafe { core::arch::x86_64::_rdtsc() };
        // A comment line for the report parser; an instruction count under `-icount shift=0`
        // (`cargo xtask bench`), TSC ticks otherwise.
        println!("# METRIC instructions.boot_to_verdict {}", now - entry - tdvf);
    }
    println!("SUMMARY passed={} failed={} skipped={}", tally.passed, tally.failed, tally.skipped);
    if tally.failed == 0 {
        ExitCode::Success
    } else {
        ExitCode::Failure
    }
}

/// Every check of the self-test, in report order.
fn checks(ctx: &Context, tally: &mut Tally) {
    basic::run(ctx, tally);
    bootinfo::run(ctx, tally);
    #[cfg(not(feature = "no-device-checks"))]
    devices::run(ctx, tally);
    td::run(ctx, tally);
    accept::run(ctx, tally);
    mm::run(ctx, tally);
    memory_checks::run(ctx, tally);
    virtio::run(tally);
    allowlist::run(tally);
    #[cfg(feature = "test-modes")]
    if diff::run(tally) {
        // MMIO through the EPT-violation #VE, then the MapGPA/RequestMMIO host faults.
        mmio_diff::run(ctx, tally);
        diff::faults(tally);
        virtio_faults::report(tally);
    }
    #[cfg(not(feature = "test-modes"))]
    {
        // The kernel a TD boots has no model (cargo feature `test-modes`).
        tally.record("diff.*", skip!("softtdx is not active: differential checks need the model, which this image does not contain"));
        tally.record("fault.*", skip!("softtdx is not active: host faults are injected by the model, which this image does not contain"));
    }
    allowlist::run_final(tally);
    attest::run(ctx, tally);
}

/// Test-only (feature `audit-bypass`): a port write that bypasses the #VE path under softtdx,
/// for the harness run that proves `cargo xtask td-audit --softtdx` catches it. The model would
/// not see it: single-stepping is off. Not inlined, so the audit names this function.
#[cfg(feature = "audit-bypass")]
#[inline(never)]
fn audit_bypass() {
    // SAFETY: port 0x80 is the POST diagnostic port; writing it has no memory side effects.
    natively(|| unsafe { crate::port::outb(0x80, 0) });
}

/// Runs `f` with single-stepping off, so that softtdx does not intercept it: for resetting
/// and observing devices around a differential check. Outside softtdx it just runs `f`.
pub fn natively<R>(f: impl FnOnce() -> R) -> R {
    crate::arch::without_single_step(f)
}

/// Whether port accesses go through #VE right now (a TD, or softtdx).
pub fn io_through_ve() -> bool {
    crate::tdx::is_td()
}

/// Checks that a device check's port accesses took the path this mode demands: at least
/// `accesses` #VEs for I/O in a TD, none natively.
// The error is the check's detail text, a fixed buffer by design (no heap on report paths).
#[allow(clippy::result_large_err)]
pub fn ve_path_ok(before: u64, accesses: u64) -> Result<u64, Detail> {
    let delta = counters::VE_IO.get() - before;
    if io_through_ve() && delta < accesses {
        return Err(crate::fixed_format!(
            160,
            "only {delta} I/O #VEs for {accesses} port accesses: not all went through #VE"
        ));
    }
    if !io_through_ve() && delta != 0 {
        return Err(crate::fixed_format!(160, "{delta} I/O #VEs outside a TD"));
    }
    Ok(delta)
}

/// What the self-test runs on: `softtdx` (the model stands in for the TDX module), `td` (a real
/// TD) or `native`.
pub(crate) fn mode_name() -> &'static str {
    #[cfg(feature = "test-modes")]
    if crate::softtdx::is_active() {
        return "softtdx";
    }
    if crate::tdx::is_td() {
        "td"
    } else {
        "native"
    }
}
