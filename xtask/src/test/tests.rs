use super::execute::*;
use super::judge::*;
use super::runs::*;
use super::spec::*;
use super::*;
use crate::manifest::Manifest;
use crate::report::Summary;
use crate::report::{Check, SerialReport};

fn spec(expect: Expect, mode: &'static str) -> RunSpec {
    RunSpec {
        id: "t".into(),
        mode,
        machine: Machine::Legacy,
        mode_flag: None,
        variant: KernelVariant::default(),
        loader: LoaderKind::Own,
        expect,
        timeout: Duration::from_secs(1),
        firmware: None,
    }
}

fn check(name: &str, result: CheckResult) -> Check {
    Check { name: name.into(), result, detail: String::new() }
}

/// A report whose CHECK lines agree with its SUMMARY and with the manifest's column for
/// `mode` on the legacy machine (for another mode: the softtdx column, to be refused).
fn passing_report(mode: &str, ve_io: u64) -> SerialReport {
    use crate::manifest::Want;
    let first = if mode == "native" { "tdx: not a TD" } else { "tdx: TD detected: GPAW=48" };
    let column = if mode == "native" { "native" } else { "softtdx" };
    let checks: Vec<Check> = Manifest::builtin()
        .expected(column, Machine::Legacy)
        .unwrap()
        .iter()
        .map(|(name, want)| match want {
            Want::Pass => check(name, CheckResult::Pass),
            Want::Skip(reason) => {
                Check { name: name.clone(), result: CheckResult::Skip, detail: reason.clone() }
            }
        })
        .collect();
    let count = |r| checks.iter().filter(|c| c.result == r).count() as u32;
    let summary = Summary {
        passed: count(CheckResult::Pass),
        failed: count(CheckResult::Fail),
        skipped: count(CheckResult::Skip),
    };
    SerialReport {
        first_kernel_line: Some(first.into()),
        mode: Some(mode.into()),
        summary: Some(summary),
        checks,
        counters: [("ve.io".to_owned(), ve_io)].into_iter().collect(),
        kernel_started: true,
        ..Default::default()
    }
}

fn judge_pass(mode: &'static str, report: &SerialReport) -> Result<(), String> {
    judge(&spec(Expect::Pass, mode), Verdict::Pass, Some(33), report).map(|_| ())
}

#[test]
fn verdicts_follow_the_exit_status() {
    let ok = passing_report("native", 0);
    assert_eq!(verdict(Some(33), false, &ok).0, Verdict::Pass);
    assert_eq!(verdict(Some(33), false, &SerialReport::default()).0, Verdict::Fail);
    assert_eq!(verdict(Some(35), false, &ok).0, Verdict::Fail);
    assert_eq!(verdict(Some(0), false, &ok).0, Verdict::Crash);
    assert_eq!(verdict(Some(1), false, &ok).0, Verdict::Crash);
    assert_eq!(verdict(None, false, &ok).0, Verdict::Crash);
    assert_eq!(verdict(Some(33), true, &ok).0, Verdict::Timeout);
}

#[test]
fn a_pass_needs_the_right_mode_and_counters() {
    assert!(judge_pass("native", &passing_report("native", 0)).is_ok());
    assert!(judge_pass("native", &passing_report("native", 3)).is_err());
    assert!(judge_pass("softtdx", &passing_report("softtdx", 0)).is_err());
    assert!(judge_pass("softtdx", &passing_report("softtdx", 9)).is_ok());
    assert!(judge_pass("softtdx", &passing_report("native", 9)).is_err());
}

#[test]
fn a_pass_needs_check_lines_that_match_the_summary() {
    let mut lost_line = passing_report("native", 0);
    lost_line.checks.pop();
    assert!(judge_pass("native", &lost_line).is_err());
    let mut empty = passing_report("native", 0);
    empty.checks.clear();
    empty.summary = Some(Summary { passed: 0, failed: 0, skipped: 0 });
    assert!(judge_pass("native", &empty).is_err());
}

/// The summary a report's CHECK lines add up to, after a test changed them.
fn resum(report: &mut SerialReport) {
    let count = |r| report.checks.iter().filter(|c| c.result == r).count() as u32;
    report.summary = Some(Summary {
        passed: count(CheckResult::Pass),
        failed: count(CheckResult::Fail),
        skipped: count(CheckResult::Skip),
    });
}

#[test]
fn a_softtdx_pass_needs_its_manifest_checks_and_no_other_skips() {
    let mut skipped = passing_report("softtdx", 9);
    let diff = skipped.checks.iter_mut().find(|c| c.name.starts_with("diff.")).unwrap();
    diff.result = CheckResult::Skip;
    resum(&mut skipped);
    assert!(judge_pass("softtdx", &skipped).unwrap_err().contains("expected pass, got skip"));
    let mut few = passing_report("softtdx", 9);
    few.checks.retain(|c| !c.name.starts_with("diff.random."));
    resum(&mut few);
    assert!(judge_pass("softtdx", &few).unwrap_err().contains("missing check diff.random."));
}

#[test]
fn a_run_the_manifest_refuses_is_a_rejected_run() {
    let because = "missing check serial.scratch";
    let s = spec(Expect::Rejected { because: because.into() }, "native");
    let mut without_serial = passing_report("native", 0);
    without_serial.checks.retain(|c| !c.name.starts_with("serial."));
    resum(&mut without_serial);
    assert!(judge(&s, Verdict::Pass, Some(33), &without_serial).is_ok());
    // A run the manifest accepts, or one that fails on its own, is not what was expected.
    assert!(judge(&s, Verdict::Pass, Some(33), &passing_report("native", 0)).is_err());
    assert!(judge(&s, Verdict::Fail, Some(35), &without_serial).is_err());
    // Refused, but for another reason.
    let other =
        spec(Expect::Rejected { because: "missing check port.insb_fw_cfg".into() }, "native");
    assert!(judge(&other, Verdict::Pass, Some(33), &without_serial).is_err());
}

#[test]
fn in_a_td_the_td_info_comes_first() {
    let mut report = passing_report("softtdx", 9);
    report.first_kernel_line = Some("tdx-unikernel: kernel entered".into());
    assert!(judge_pass("softtdx", &report).is_err());
}

#[test]
fn a_fatal_expectation_needs_reason_and_host_report() {
    let expect = Expect::Fatal {
        reason: vec!["unsupported exit reason".into(), "65535".into()],
        host_report: true,
    };
    let mut report = SerialReport {
        fatal: vec!["FATAL #VE: unsupported exit reason 65535".into()],
        host_fatal: Some("softtdx: host: TD reported ReportFatalError".into()),
        kernel_started: true,
        ..Default::default()
    };
    let s = spec(expect.clone(), "softtdx");
    assert!(judge(&s, Verdict::Fail, Some(35), &report).is_ok());
    assert!(judge(&s, Verdict::Crash, Some(1), &report).is_err());
    report.host_fatal = None;
    assert!(judge(&s, Verdict::Fail, Some(35), &report).is_err());
    report.host_fatal = Some("x".into());
    report.fatal = vec!["FATAL #VE: something else".into()];
    assert!(judge(&s, Verdict::Fail, Some(35), &report).is_err());
}

#[test]
fn a_fail_expectation_names_the_check_and_needs_a_finished_self_test() {
    let s = spec(Expect::Fail { check: "serial.scratch".into() }, "native");
    let mut report = SerialReport {
        checks: vec![check("serial.scratch", CheckResult::Fail)],
        summary: Some(Summary { passed: 0, failed: 1, skipped: 0 }),
        ..Default::default()
    };
    assert!(judge(&s, Verdict::Fail, Some(35), &report).is_ok());
    assert!(judge(&s, Verdict::Pass, Some(33), &report).is_err());
    assert!(judge(&s, Verdict::Fail, Some(35), &SerialReport::default()).is_err());
    report.fatal = vec!["PANIC at src/x.rs:1:1: boom".into()];
    assert!(judge(&s, Verdict::Fail, Some(35), &report).is_err());
}

#[test]
fn the_broken_emulation_run_names_each_breakage_that_was_not_caught() {
    let runs = default_runs(Duration::from_secs(1), None, None);
    let run = runs.iter().find(|r| r.id == "harness:broken-emulation").expect("the run");
    assert_eq!(run.variant, broken_emulation_variant());
    let expected = BROKEN_EMULATION_CHECKS.map(String::from).to_vec();
    assert_eq!(run.expect, Expect::FailEach { checks: expected });
    // One boot and one kernel for the four breakages: no other run builds any of them.
    let broken = |v: &KernelVariant| {
        v.fail_check.is_some() || v.broken_in_merge || v.broken_mmio_movzx || v.broken_allowlist
    };
    assert_eq!(runs.iter().filter(|r| broken(&r.variant)).count(), 1);
    // Every expected check failed, among others that passed or failed: what the run expects.
    let caught = |missed: Option<(&str, CheckResult)>| {
        let mut checks: Vec<Check> =
            BROKEN_EMULATION_CHECKS.iter().map(|name| check(name, CheckResult::Fail)).collect();
        checks.push(check("diff.in.imm8.l", CheckResult::Fail));
        checks.push(check("diff.in.dx.b", CheckResult::Pass));
        if let Some((name, result)) = missed {
            checks.retain(|c| c.name != name);
            checks.push(Check { name: name.into(), result, detail: "8 patterns".into() });
        }
        let mut report = SerialReport { checks, kernel_started: true, ..Default::default() };
        resum(&mut report);
        report
    };
    assert_eq!(judge(run, Verdict::Fail, Some(35), &caught(None)), Ok(String::new()));
    // One breakage the self-test did not catch fails the run, and the run's line names it.
    for name in BROKEN_EMULATION_CHECKS {
        let why = judge(run, Verdict::Fail, Some(35), &caught(Some((name, CheckResult::Pass))))
            .unwrap_err();
        assert!(why.contains(&format!("but {name} passed (8 patterns)")), "{why}");
        for other in BROKEN_EMULATION_CHECKS.iter().filter(|&&other| other != name) {
            assert!(!why.contains(&format!("{other} passed")), "{why}");
        }
    }
    let lost = caught(Some(("allowlist.ve.denied_in", CheckResult::Skip)));
    let why = judge(run, Verdict::Fail, Some(35), &lost).unwrap_err();
    assert!(why.contains("allowlist.ve.denied_in skipped (8 patterns)"), "{why}");
    let mut unreported = caught(None);
    unreported.checks.retain(|c| c.name != "diff.in.dx.l");
    resum(&mut unreported);
    let why = judge(run, Verdict::Fail, Some(35), &unreported).unwrap_err();
    assert!(why.contains("diff.in.dx.l was not reported"), "{why}");
}

#[test]
fn a_timeout_or_crash_must_follow_the_kernels_marker() {
    let timeout = spec(Expect::Timeout { marker: "hang requested".into() }, "native");
    let crash = spec(Expect::Crash { marker: "empty IDT".into() }, "native");
    let marked = |line: &str| SerialReport {
        kernel_started: true,
        kernel_lines: vec![format!("tdx-unikernel: {line}")],
        ..Default::default()
    };
    assert!(judge(&timeout, Verdict::Timeout, None, &marked("hang requested")).is_ok());
    assert!(judge(&timeout, Verdict::Timeout, None, &marked("kernel entered")).is_err());
    assert!(judge(&timeout, Verdict::Pass, Some(33), &marked("hang requested")).is_err());
    let mut fatal_then_hang = marked("hang requested");
    fatal_then_hang.fatal = vec!["FATAL: x".into()];
    assert!(judge(&timeout, Verdict::Timeout, None, &fatal_then_hang).is_err());
    assert!(judge(&crash, Verdict::Crash, Some(0), &marked("empty IDT")).is_ok());
    assert!(judge(&crash, Verdict::Crash, Some(1), &marked("empty IDT")).is_err());
    assert!(judge(&crash, Verdict::Crash, None, &marked("empty IDT")).is_err());
    assert!(judge(&crash, Verdict::Crash, Some(0), &marked("kernel entered")).is_err());
}

#[test]
fn the_loaders_refusal_is_a_failure_with_its_message_not_a_timeout() {
    let refused = report::parse(
        "BdsDxe: starting Boot0002\r\ntdx-loader: error: kernel config: the kernel was built against bootloader_api 0.11.16, this loader supports only 0.11.17\r\nBdsDxe: failed to start Boot0002: Load Error\r\n",
    );
    for (status, timed_out) in [(None, false), (None, true)] {
        let (verdict, why) = verdict(status, timed_out, &refused);
        assert_eq!(verdict, Verdict::Fail);
        assert!(why.contains("the loader refused the kernel") && why.contains("0.11.16"), "{why}");
    }
    let runs = default_runs(Duration::from_secs(1), None, None);
    let old_api = runs.iter().find(|r| r.id == "harness:old-bootloader-api").unwrap();
    assert!(judge(old_api, Verdict::Fail, None, &refused).is_ok());
    assert!(judge_pass("native", &refused).is_err());
}

#[test]
fn a_secure_boot_refusal_is_its_own_verdict_not_a_timeout() {
    let refused = report::parse(
        "BdsDxe: loading Boot0002 \"UEFI QEMU HARDDISK QM00001 \"\r\nBdsDxe: failed to load Boot0002 \"UEFI QEMU HARDDISK QM00001 \" from PciRoot(0x0): Access Denied\r\n",
    );
    // Stopped by the runner (killed: no status), or at the timeout: the refusal is the reason.
    for (status, timed_out) in [(None, false), (None, true)] {
        let (verdict, why) = verdict(status, timed_out, &refused);
        assert_eq!(verdict, Verdict::Refused);
        assert!(why.contains("Secure Boot") && why.contains("Access Denied"), "{why}");
    }
    let s = spec(Expect::Refused, "native");
    assert!(judge(&s, Verdict::Refused, None, &refused).is_ok());
    assert!(judge(&s, Verdict::Timeout, None, &refused).is_err());
    let booted = passing_report("native", 0);
    assert!(judge(&s, verdict(Some(33), false, &booted).0, Some(33), &booted).is_err());
    // A pass run that meets the refusal is wrong, not a timeout.
    assert!(judge_pass("native", &refused).is_err());
}

#[test]
fn a_run_whose_firmware_is_not_installed_is_skipped_with_the_reason() {
    let options = Options {
        timeout: Duration::from_secs(1),
        json: None,
        qemu_args: Vec::new(),
        fail_check: None,
        kvm: false,
        firmware: ovmf::Firmware::new("/fw/OVMF.fd".into(), None, ovmf::Source::Explicit),
        runs: Vec::new(),
        skip_host_tests: true,
        loader: None,
    };
    let mut s = spec(Expect::Refused, "native");
    assert_eq!(run_firmware(&s, &options).unwrap().code, Path::new("/fw/OVMF.fd"));
    s.firmware = Some("/nonexistent/OVMF_CODE_4M.ms.fd".into());
    let reason = run_firmware(&s, &options).unwrap_err();
    assert!(reason.contains("/nonexistent/OVMF_CODE_4M.ms.fd is not installed"), "{reason}");
}

#[test]
fn the_virtio_copy_of_a_report_must_equal_the_serial_one() {
    let serial =
        report::parse("CHECK pass a x\nCHECK skip b y\nSUMMARY passed=1 failed=0 skipped=1\n");
    assert_eq!(virtio_agrees(&serial, &serial.clone()), Ok(()));
    assert!(virtio_agrees(&serial, &report::parse("")).unwrap_err().contains("no self-test"));
    let other =
        report::parse("CHECK pass a x\nCHECK pass b y\nSUMMARY passed=2 failed=0 skipped=0\n");
    assert!(virtio_agrees(&serial, &other).unwrap_err().contains("disagree: b"));
    let short = report::parse("CHECK pass a x\nSUMMARY passed=1 failed=0 skipped=1\n");
    assert!(virtio_agrees(&serial, &short).is_err());
}

#[test]
fn default_runs_cover_every_fatal_scenario_and_the_harness() {
    let runs = default_runs(Duration::from_secs(120), None, None);
    assert_eq!(runs.iter().filter(|r| r.id.starts_with("fatal:")).count(), FATAL_SCENARIOS.len());
    assert!(runs.iter().any(|r| matches!(r.expect, Expect::Timeout { .. })));
    let secure_boot = runs.iter().find(|r| r.expect == Expect::Refused).unwrap();
    assert_eq!(secure_boot.firmware.as_deref(), Some(Path::new(SECURE_BOOT_FIRMWARE)));
    assert_eq!(default_runs(Duration::from_secs(1), Some("x"), None).len(), 6);
    assert_eq!(
        default_runs(Duration::from_secs(1), Some("x"), Some(LoaderKind::Upstream)).len(),
        4
    );
    for (mode, machine) in [
        ("native", Machine::Legacy),
        ("softtdx", Machine::Legacy),
        ("native", Machine::Td),
        ("softtdx", Machine::Td),
    ] {
        assert!(
            runs.iter().any(|r| r.expect == Expect::Pass
                && r.mode == mode
                && r.machine == machine
                && r.variant == KernelVariant::default()),
            "no passing {mode} run on the {machine:?} machine"
        );
    }
}

#[test]
fn a_debug_td_must_say_so_on_its_first_line_and_only_then() {
    assert!(requests_debug_td(Some("softtdx attributes=0x1")));
    assert!(requests_debug_td(Some("softtdx attributes=0x10000001")));
    assert!(!requests_debug_td(Some("softtdx attributes=0x0")));
    assert!(!requests_debug_td(Some("softtdx")));
    assert!(!requests_debug_td(None));
    let mut debug = spec(Expect::Pass, "softtdx");
    debug.mode_flag = Some("softtdx attributes=0x1".into());
    let mut report = passing_report("softtdx", 9);
    assert!(judge(&debug, Verdict::Pass, Some(33), &report).is_err());
    report.first_kernel_line = Some("tdx: TD detected: DEBUG TD (...), GPAW=48".into());
    assert!(judge(&debug, Verdict::Pass, Some(33), &report).is_ok());
    assert!(judge_pass("softtdx", &report).is_err());
}

#[test]
fn the_td_image_is_booted_with_a_hang_mode_and_must_pass() {
    let runs = default_runs(Duration::from_secs(120), None, None);
    let run = runs.iter().find(|r| r.id == "td-image:hang-mode-ignored").expect("the run");
    assert_eq!(run.variant, KernelVariant::td_image());
    assert_eq!(run.mode_flag.as_deref(), Some("hang"));
    assert_eq!((run.expect.clone(), run.machine), (Expect::Pass, Machine::Td));
    // Only that run boots the TD image; every other run needs the test modes.
    assert!(runs.iter().filter(|r| r.variant.td_image).count() == 1);
}

#[test]
fn the_pass_runs_boot_under_both_loaders_and_the_rest_under_ours() {
    let runs = default_runs(Duration::from_secs(120), None, None);
    let pass: Vec<(&str, LoaderKind)> = runs
        .iter()
        .filter(|r| r.expect == Expect::Pass && r.mode != "audit")
        .map(|r| (r.id.as_str(), r.loader))
        .collect();
    assert_eq!(
        pass,
        [
            ("native", LoaderKind::Own),
            ("softtdx", LoaderKind::Own),
            ("native:upstream", LoaderKind::Upstream),
            ("softtdx:upstream", LoaderKind::Upstream),
            ("td-machine:native", LoaderKind::Own),
            ("td-machine:softtdx", LoaderKind::Own),
            ("td-image:hang-mode-ignored", LoaderKind::Own),
            ("harness:la57-handoff", LoaderKind::OwnLa57),
            ("tpm:measured-boot", LoaderKind::Own),
            ("harness:tpm-flipped-kernel", LoaderKind::OwnFlippedKernel),
            ("accept:eager", LoaderKind::Own),
        ]
    );
    assert!(runs
        .iter()
        .filter(|r| r.expect != Expect::Pass && r.mode != "audit")
        .all(|r| r.loader != LoaderKind::Upstream));
    let upstream = default_runs(Duration::from_secs(120), None, Some(LoaderKind::Upstream));
    assert!(upstream
        .iter()
        .all(|r| r.loader == LoaderKind::Upstream && !r.id.ends_with(":upstream")));
}

#[test]
fn every_run_list_has_one_debug_td_that_must_pass() {
    for only in [None, Some(LoaderKind::Own), Some(LoaderKind::Upstream)] {
        let runs = default_runs(Duration::from_secs(120), None, only);
        let debug: Vec<&str> = runs
            .iter()
            .filter(|r| r.expect == Expect::Pass && requests_debug_td(r.mode_flag.as_deref()))
            .map(|r| r.id.as_str())
            .collect();
        let want = if only.is_none() { "softtdx:upstream" } else { "attributes:debug-td" };
        assert_eq!(debug, [want], "loader {only:?}");
    }
}
