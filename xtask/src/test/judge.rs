//! Judging a finished run: its verdict from the exit status and serial output, then whether
//! that is what the run expected.

use super::runs::{requests_debug_td, NO_DEBUG_EXIT_RUNS};
use super::spec::{Expect, RunSpec, Verdict};
use crate::manifest::Manifest;
use crate::qemu;
use crate::report::{CheckResult, SerialReport};
use anyhow::Result;

/// What QEMU's ending says about the guest, before comparing with the expectation.
pub fn verdict(
    finished_status: Option<i32>,
    timed_out: bool,
    report: &SerialReport,
) -> (Verdict, String) {
    // The runner stops QEMU at the refusal; whatever else the ending says, this is why.
    if let Some(line) = &report.firmware_refusal {
        if !report.kernel_started {
            return (Verdict::Refused, crate::secure_boot::refusal_reason(line));
        }
    }
    // Likewise for our loader refusing the kernel: the kernel never ran.
    if let Some(line) = &report.loader_error {
        return (Verdict::Fail, format!("the loader refused the kernel: {line}"));
    }
    if timed_out {
        // The timeout is wall-clock time: on a machine busy with other work a slow run (the
        // 8 GiB `accept:eager` takes about 25 s alone and 60 s beside two builds) can hit it.
        return (
            Verdict::Timeout,
            "no exit before the timeout (wall-clock; on a busy machine give more with \
             `--timeout SECONDS`)"
                .into(),
        );
    }
    // softtdx's VMM halted the machine (no isa-debug-exit device): the verdict is on serial.
    if let Some(halted) = &report.halted {
        let parked = halted.contains("parked its vCPU");
        let said = |code: &str| {
            report.kernel_lines.iter().any(|l| l.contains("parking the vCPU") && l.contains(code))
        };
        return match report.summary {
            _ if !parked => (Verdict::Fail, report.fatal.first().unwrap_or(halted).clone()),
            Some(s) if s.failed == 0 && said("(Success)") => (
                Verdict::Pass,
                format!("{} checks passed; the kernel parked its vCPU ({halted})", s.passed),
            ),
            Some(s) => (Verdict::Fail, format!("parked after {} failed checks", s.failed)),
            None => (Verdict::Fail, format!("parked without a SUMMARY line ({halted})")),
        };
    }
    match finished_status {
        Some(33) => match report.summary {
            Some(s) if s.failed == 0 => (Verdict::Pass, format!("{} checks passed", s.passed)),
            Some(s) => {
                (Verdict::Fail, format!("exit status says pass but {} checks failed", s.failed))
            }
            None => (Verdict::Fail, "exit status says pass but no SUMMARY line".into()),
        },
        Some(35) => {
            let failed: Vec<&str> = report
                .checks
                .iter()
                .filter(|c| c.result == CheckResult::Fail)
                .map(|c| c.name.as_str())
                .collect();
            if let Some(fatal) = report.fatal.first() {
                (Verdict::Fail, fatal.clone())
            } else if !failed.is_empty() {
                (Verdict::Fail, format!("failed: {}", failed.join(", ")))
            } else {
                (Verdict::Fail, "failure exit without a reason on serial".into())
            }
        }
        Some(0) => {
            (Verdict::Crash, "QEMU exited 0: the guest reset or triple-faulted (-no-reboot)".into())
        }
        Some(status) => (Verdict::Crash, format!("QEMU exited with status {status}")),
        None => (Verdict::Crash, "QEMU was killed by a signal".into()),
    }
}

/// Compares a run's outcome with its expectation: `Ok` with what the judgement adds to the
/// run's reason (why the harness refused a run that expects that, else nothing), or why not.
pub fn judge(
    spec: &RunSpec,
    verdict: Verdict,
    status: Option<i32>,
    report: &SerialReport,
) -> Result<String, String> {
    let printed = |marker: &str| {
        report.kernel_lines.iter().chain(&report.loader_lines).any(|l| l.contains(marker))
    };
    let count = |result: CheckResult| report.checks.iter().filter(|c| c.result == result).count();
    match &spec.expect {
        Expect::Pass => {
            if verdict != Verdict::Pass {
                return Err(format!("expected pass, got {verdict:?}"));
            }
            let summary = report.summary.ok_or("no SUMMARY line")?;
            let lines =
                (count(CheckResult::Pass), count(CheckResult::Fail), count(CheckResult::Skip));
            if lines != (summary.passed as usize, summary.failed as usize, summary.skipped as usize)
                || lines.0 == 0
            {
                return Err(format!(
                    "SUMMARY says {}/{}/{} passed/failed/skipped but {}/{}/{} CHECK lines arrived",
                    summary.passed, summary.failed, summary.skipped, lines.0, lines.1, lines.2
                ));
            }
            // Every check the manifest lists for this mode and machine, with its result; no
            // other check.
            Manifest::builtin().judge(spec.mode, spec.machine, &report.checks)?;
            if spec.mode == "softtdx" {
                // Issue minimums: the differential and fault checks must really have run.
                let passed = |prefix: &str| {
                    report
                        .checks
                        .iter()
                        .filter(|c| c.name.starts_with(prefix) && c.result == CheckResult::Pass)
                        .count()
                };
                if passed("diff.") < 40 || passed("fault.") < 6 {
                    return Err(format!(
                        "softtdx run passed only {} diff.* and {} fault.* checks",
                        passed("diff."),
                        passed("fault.")
                    ));
                }
            }
            if report.mode.as_deref() != Some(spec.mode) {
                return Err(format!(
                    "kernel ran in mode {:?}, expected {}",
                    report.mode, spec.mode
                ));
            }
            let ve_io = report.counters.get("ve.io").copied().unwrap_or(0);
            if (spec.mode == "softtdx" || spec.mode == "td") && ve_io == 0 {
                return Err(format!("{} run made no I/O #VE", spec.mode));
            }
            let first = report.first_kernel_line.as_deref().unwrap_or("");
            if (spec.mode == "softtdx" || spec.mode == "td")
                && !first.starts_with("tdx: TD detected")
            {
                return Err(format!(
                    "in a TD the first kernel line must be the TD info, not {first:?}"
                ));
            }
            // A debug TD says so on its first line; no other run may.
            let debug_td = requests_debug_td(spec.mode_flag.as_deref());
            if debug_td != first.contains("DEBUG TD") {
                return Err(format!(
                    "the first kernel line {} say DEBUG TD: {first:?}",
                    if debug_td { "must" } else { "must not" }
                ));
            }
            if spec.mode == "native" {
                // NMIs are counted wherever they come from (the QMP-injected ones natively).
                let nonzero = report.counters.iter().find(|(k, v)| **v != 0 && *k != "nmi");
                if let Some((key, value)) = nonzero {
                    return Err(format!("native run has counter {key}={value}, expected all 0"));
                }
            }
            let counter = |name: &str| report.counters.get(name).copied().unwrap_or(0);
            if spec.mode_flag.as_deref().is_some_and(|f| f.contains(" nmi=after-veinfo")) {
                // One model NMI after every successful VEINFO.GET, each survived and counted:
                // as many as #VEs handled (`ve.*`; `tdcall.veinfo_get` also counts the
                // self-test's deliberate call with no #VE pending).
                let nmis = counter("nmi");
                let ves: u64 = report
                    .counters
                    .iter()
                    .filter(|(k, _)| k.starts_with("ve."))
                    .map(|(_, v)| v)
                    .sum();
                if nmis == 0 || nmis != ves {
                    return Err(format!(
                        "softtdx injected an NMI after each VEINFO.GET, but nmi={nmis} for {ves} \
                         #VEs"
                    ));
                }
            }
            if NO_DEBUG_EXIT_RUNS.contains(&spec.id.as_str()) && report.halted.is_none() {
                return Err("without isa-debug-exit the kernel must park its vCPU".into());
            }
            Ok(String::new())
        }
        Expect::Fail { check } => {
            judge_failed(verdict, report, std::slice::from_ref(check)).map(|()| String::new())
        }
        Expect::FailEach { checks } => {
            judge_failed(verdict, report, checks).map(|()| String::new())
        }
        Expect::Fatal { reason, host_report } => {
            if verdict != Verdict::Fail {
                return Err(format!(
                    "expected the fatal stop with the failure exit, got {verdict:?}"
                ));
            }
            if report.summary.is_some() {
                return Err("the self-test finished: the fault did not stop the kernel".into());
            }
            if !report.fatal.iter().any(|line| reason.iter().all(|r| line.contains(r.as_str()))) {
                return Err(format!(
                    "no FATAL line containing {reason:?} (got {:?})",
                    report.fatal
                ));
            }
            // Only a TD (or the model) has a host to tell.
            if *host_report && spec.mode != "native" && report.host_fatal.is_none() {
                return Err("the host never received ReportFatalError".into());
            }
            // In a TD the serial port is the host's: register contents only in a debug TD.
            // (Native runs keep the full dump, which `harness:page-fault` checks for CR2.)
            if spec.mode != "native" {
                let debug_td = requests_debug_td(spec.mode_flag.as_deref());
                if report.register_dump != debug_td {
                    return Err(format!(
                        "a {} TD's fatal output {} register contents",
                        if debug_td { "debug" } else { "non-debug" },
                        if debug_td { "must show" } else { "shows" }
                    ));
                }
            }
            Ok(String::new())
        }
        Expect::Crash { marker } => {
            if status != Some(0) {
                return Err(format!("expected QEMU to exit 0 on the reset, got {status:?}"));
            }
            if !printed(marker) || !report.fatal.is_empty() {
                return Err(format!("expected {marker:?} and then a silent reset"));
            }
            Ok(String::new())
        }
        Expect::Timeout { marker } => {
            if verdict != Verdict::Timeout {
                return Err(format!("expected timeout, got {verdict:?}"));
            }
            if !printed(marker) || !report.fatal.is_empty() {
                return Err(format!("expected {marker:?} and then silence"));
            }
            Ok(String::new())
        }
        Expect::Rejected { because } => {
            if verdict != Verdict::Pass {
                return Err(format!(
                    "expected the kernel to pass its own self-test, got {verdict:?}"
                ));
            }
            let as_pass = RunSpec { expect: Expect::Pass, ..spec.clone() };
            match judge(&as_pass, verdict, status, report) {
                Ok(_) => {
                    Err(format!("the harness accepted the run; it must refuse it ({because})"))
                }
                // What the harness refused the kernel's pass for goes into the run's reason.
                Err(why) if why.contains(because.as_str()) => Ok(format!("refused: {why}")),
                Err(why) => Err(format!("refused for another reason: {why}; want {because:?}")),
            }
        }
        Expect::Refused => {
            if verdict != Verdict::Refused || report.kernel_started {
                return Err(format!(
                    "expected the firmware to refuse the loader (Secure Boot), got {verdict:?}"
                ));
            }
            Ok(String::new())
        }
    }
}

/// A run that injected NMIs over QMP: all `count` of the kernel's window were acknowledged by
/// QEMU, and the kernel counted at least those (the ones sent later, during the self-test, may
/// land after its COUNTERS snapshot).
pub(super) fn judge_nmis(count: u32, sent: &qemu::NmisSent, nmis: u64) -> Result<(), String> {
    if let Some(error) = &sent.error {
        return Err(format!("NMI injection over QMP failed: {error}"));
    }
    if sent.counted < count {
        return Err(format!("only {} of the {count} NMIs were injected", sent.counted));
    }
    if nmis < u64::from(sent.counted) {
        return Err(format!(
            "{} NMIs injected while the kernel waited, but nmi={nmis}",
            sent.counted
        ));
    }
    Ok(())
}

/// A finished self-test with the failure exit, in which each of `checks` failed. When some did
/// not, the error names every one of them and what it did instead (passed, skipped, or was not
/// reported): in a run that folds several breakages, the one the harness missed.
pub(super) fn judge_failed(
    verdict: Verdict,
    report: &SerialReport,
    checks: &[String],
) -> Result<(), String> {
    if verdict != Verdict::Fail {
        return Err(format!("expected fail, got {verdict:?}"));
    }
    if report.summary.is_none() || !report.fatal.is_empty() {
        return Err("expected a finished self-test with failed checks, not a crash".into());
    }
    let not_failed: Vec<String> = checks
        .iter()
        .filter_map(|name| match report.checks.iter().find(|c| &c.name == name) {
            Some(c) if c.result == CheckResult::Fail => None,
            Some(c) => {
                let word = if c.result == CheckResult::Pass { "passed" } else { "skipped" };
                Some(if c.detail.is_empty() {
                    format!("{name} {word}")
                } else {
                    format!("{name} {word} ({})", c.detail)
                })
            }
            None => Some(format!("{name} was not reported")),
        })
        .collect();
    if not_failed.is_empty() {
        return Ok(());
    }
    let expected = match checks {
        [one] => format!("expected check {one} to fail"),
        _ => format!("expected each of {} to fail", checks.join(", ")),
    };
    Err(format!("{expected}, but {}", not_failed.join("; ")))
}

/// The virtio console's copy of a report must equal the serial one: the same checks with the
/// same results and details, the same summary.
pub(super) fn virtio_agrees(serial: &SerialReport, virtio: &SerialReport) -> Result<(), String> {
    if virtio.checks.is_empty() {
        return Err("no self-test report on the virtio console".into());
    }
    if let Some((s, v)) = serial.checks.iter().zip(&virtio.checks).find(|(s, v)| s != v) {
        return Err(format!(
            "virtio console and serial disagree: {} {:?} {:?} vs {} {:?} {:?}",
            s.name, s.result, s.detail, v.name, v.result, v.detail
        ));
    }
    if serial.checks.len() != virtio.checks.len() || serial.summary != virtio.summary {
        return Err(format!(
            "virtio console has {} checks and summary {:?}, serial {} and {:?}",
            virtio.checks.len(),
            virtio.summary,
            serial.checks.len(),
            serial.summary
        ));
    }
    Ok(())
}
