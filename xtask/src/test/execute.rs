//! Executing one run: its firmware, its QEMU command line, the boot, the log, the judgement.

use super::fold;
use super::judge::{judge, judge_nmis, verdict, virtio_agrees};
use super::runs::{nmi_window, NO_DEBUG_EXIT_RUNS};
use super::spec::{Expect, Options, RunReport, RunSpec};
use crate::build;
use crate::machine::Machine;
use crate::qemu;
use crate::report::{self, Check, CheckResult, SerialReport};
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The kernel's line that opens its NMI window: the harness injects after it (not before: an
/// NMI that lands in the firmware, before the kernel's IDT, is not the kernel's to survive).
pub(super) const NMI_WINDOW_MARKER: &str = "tdx-unikernel: NMI window: waiting for";

/// How long a run that expects a hang watches the kernel after it announced the hang.
pub(super) const HANG_GRACE: Duration = Duration::from_secs(2);

/// Guest memory of the eager-accept boot (`accept:eager`): q35 puts 2 GiB below 4 GiB from
/// 2.75 GiB of RAM on, so 5 GiB leaves 3 GiB above 4 GiB for the model to leave unaccepted.
/// That shows all of it accepted at boot as well as the td machine's 8 GiB does. (Chosen when
/// the model wrote every page it accepted; since it writes only pages that do not read zero,
/// 8 GiB would cost little more.)
const ACCEPT_EAGER_MEMORY: &str = "5G";

pub(super) fn logs_dir() -> PathBuf {
    build::project_root().join("target/xtask-logs")
}

/// The firmware a run boots with: its own when it names one, else the one given to the test.
/// `Err` carries the reason to skip the run.
pub(super) fn run_firmware(spec: &RunSpec, options: &Options) -> Result<ovmf::Firmware, String> {
    let Some(path) = &spec.firmware else { return Ok(options.firmware.clone()) };
    if !path.exists() {
        return Err(format!("{} is not installed on this host", path.display()));
    }
    // The run gets its own copy of the VARS template (it may be written), as for --firmware.
    let scratch =
        build::project_root().join("target/xtask-firmware").join(spec.id.replace(':', "-"));
    // The explicit path wins over OVMF_PATH.
    ovmf::find(&crate::firmware::options(Some(path.clone()), ovmf::Purpose::Tcg, scratch))
        .map_err(|error| error.to_string())
}

pub(super) fn execute(
    spec: &RunSpec,
    image: &Path,
    options: &Options,
    qemu: &Path,
) -> Result<RunReport> {
    let log = run_log(spec);
    if spec.mode == "audit" {
        return crate::audit::harness::execute(spec, &options.firmware, log);
    }
    let firmware = match run_firmware(spec, options) {
        Ok(firmware) => firmware,
        Err(reason) => return skipped(spec, &log, reason),
    };
    // The TPM runs boot with swtpm and are judged on its PCRs too (xtask/src/tpm.rs).
    let tpm = match crate::tpm::wanted(&spec.id).then(crate::tpm::tools_present) {
        Some(Err(reason)) => return skipped(spec, &log, reason),
        Some(Ok(())) => Some(crate::tpm::Swtpm::start(&log.with_extension("swtpm"))?),
        None => None,
    };
    let booted = boot(spec, image, options, qemu, firmware, tpm)?;
    judged(spec, booted, &log, image)
}

/// The runs of one folded boot ([`super::fold`]): one boot with every run's mode, then each run
/// judged on its own segment of the output, as if booted alone.
pub(super) fn execute_folded(
    specs: &[&RunSpec],
    image: &Path,
    options: &Options,
    qemu: &Path,
) -> Result<Vec<RunReport>> {
    // The machine ends in the last segment: its expectation sets the boot's limits (a hang's
    // watch after its marker).
    let last = specs[specs.len() - 1];
    let boot_spec = RunSpec {
        id: fold::boot_id(specs),
        mode_flag: Some(fold::mode_file(specs)),
        expect: last.expect.clone(),
        ..specs[0].clone()
    };
    let booted = boot(&boot_spec, image, options, qemu, options.firmware.clone(), None)?;
    let whole = run_log(&boot_spec);
    std::fs::write(&whole, &booted.finished.output)
        .with_context(|| format!("cannot write {}", whole.display()))?;
    let segments = fold::split(&booted.finished.output, specs.len());
    let mut reports = Vec::with_capacity(specs.len());
    for (index, (spec, segment)) in specs.iter().zip(segments).enumerate() {
        let log = run_log(spec);
        let note = format!(
            "segment {} of {} of one boot of {:.1} s, whole log {}",
            index + 1,
            specs.len(),
            booted.finished.wall.as_secs_f64(),
            whole.display()
        );
        let (status, timed_out, output) = match segment {
            fold::Segment::Restarted { output, status } => (Some(status), false, output),
            fold::Segment::Last { output } => {
                (booted.finished.status, booted.finished.timed_out, output)
            }
            fold::Segment::NotReached => {
                std::fs::write(&log, format!("not reached: {note}\n"))
                    .with_context(|| format!("cannot write {}", log.display()))?;
                reports.push(RunReport::not_reached(spec, note, &log));
                continue;
            }
        };
        let finished =
            qemu::Finished { status, timed_out, output, wall: booted.finished.wall, nmis: None };
        let segment = Booted {
            finished,
            nonce: booted.nonce.clone(),
            tpm: None,
            virtio_log: None,
            window: None,
            firmware: booted.firmware.clone(),
        };
        let mut report = judged(spec, segment, &log, image)?;
        report.reason = format!("{} [{note}]", report.reason);
        reports.push(report);
    }
    Ok(reports)
}

/// A run's log file.
fn run_log(spec: &RunSpec) -> PathBuf {
    logs_dir().join(format!("{}.log", spec.id.replace(':', "-")))
}

/// How a boot ended, with what its judgement needs besides the output.
struct Booted {
    finished: qemu::Finished,
    nonce: String,
    tpm: Option<crate::tpm::Swtpm>,
    virtio_log: Option<PathBuf>,
    /// The NMI window of the boot mode, if it has one.
    window: Option<u32>,
    firmware: ovmf::Firmware,
}

/// Boots `spec`'s image in its mode and machine and waits for the end.
fn boot(
    spec: &RunSpec,
    image: &Path,
    options: &Options,
    qemu: &Path,
    firmware: ovmf::Firmware,
    tpm: Option<crate::tpm::Swtpm>,
) -> Result<Booted> {
    let nonce = crate::attest::fresh_nonce();
    let mut extra_args = options.qemu_args.clone();
    extra_args.extend(crate::attest::nonce_args(&nonce));
    // The td machine has a virtio console; its output is judged too (`virtio_agrees`).
    let virtio_log = (spec.machine == Machine::Td)
        .then(|| logs_dir().join(format!("{}.virtio.log", spec.id.replace(':', "-"))));
    if let Some(path) = &virtio_log {
        let _ = std::fs::remove_file(path);
    }
    extra_args.extend(tpm.iter().flat_map(crate::tpm::Swtpm::qemu_args));
    let mut args = qemu::boot_args(&qemu::BootSpec {
        firmware: &firmware,
        image,
        kvm: options.kvm,
        machine: spec.machine,
        mode: spec.mode_flag.as_deref(),
        extra_args: &extra_args,
        la57: spec.loader.needs_la57(),
        virtio_console: virtio_log.as_deref(),
        memory: spec.variant.accept_eager.then_some(ACCEPT_EAGER_MEMORY),
    });
    if NO_DEBUG_EXIT_RUNS.contains(&spec.id.as_str()) {
        args = qemu::without_debug_exit(&args);
    }
    // NMIs over QMP: a unix socket in the run's own temporary directory.
    let window = nmi_window(spec.mode_flag.as_deref());
    let scratch = std::env::temp_dir().join(format!(
        "xtask-{}-{}",
        std::process::id(),
        spec.id.replace(':', "-")
    ));
    let nmis = match window {
        Some(count) => {
            std::fs::create_dir_all(&scratch)
                .with_context(|| format!("cannot create {}", scratch.display()))?;
            let socket = scratch.join("qmp.sock");
            args.extend(["-qmp".into(), format!("unix:{},server=on,wait=off", socket.display())]);
            Some(qemu::NmiInjection { socket, after: NMI_WINDOW_MARKER.into(), count })
        }
        None => None,
    };
    // A run that expects a hang stops a few seconds after the kernel says it will hang, so
    // that a slow boot on a loaded machine cannot eat into its limit.
    let limits = qemu::Limits {
        timeout: spec.timeout,
        stop_after_marker: match &spec.expect {
            Expect::Timeout { marker } => Some((marker.clone(), HANG_GRACE)),
            _ => None,
        },
        nmis,
    };
    let finished = qemu::run(qemu, &args, &limits, false);
    if window.is_some() {
        let _ = std::fs::remove_dir_all(&scratch);
    }
    let finished = finished?;
    Ok(Booted { finished, nonce, tpm, virtio_log, window, firmware })
}

/// Judges a boot (or a folded boot's segment) of `spec`, and writes its log.
fn judged(spec: &RunSpec, booted: Booted, log: &Path, image: &Path) -> Result<RunReport> {
    let Booted { finished, nonce, tpm, virtio_log, window, firmware } = booted;
    std::fs::write(log, &finished.output)
        .with_context(|| format!("cannot write {}", log.display()))?;
    let parsed = report::parse(&finished.output);
    let (verdict, mut why) = verdict(finished.status, finished.timed_out, &parsed);
    // `note`: what the harness refused an expected refusal for, for the reason below.
    let (mut judged, note) = match judge(spec, verdict, finished.status, &parsed) {
        Ok(note) => (Ok(()), note),
        Err(e) => (Err(e), String::new()),
    };
    if let (Some(count), Ok(())) = (window, &judged) {
        let sent = finished.nmis.clone().unwrap_or_default();
        let nmis = parsed.counters.get("nmi").copied().unwrap_or(0);
        judged = judge_nmis(count, &sent, nmis);
        why = format!(
            "{why}; NMIs over QMP: {} while the kernel waited, {} more during the self-test, \
             nmi={nmis}",
            sent.counted, sent.more
        );
    }
    let virtio =
        virtio_log.as_deref().map(|path| std::fs::read_to_string(path).unwrap_or_default());
    if let (Ok(()), Some(text), Expect::Pass) = (&judged, &virtio, &spec.expect) {
        // The report as the virtio console carried it: judged on its own, and equal to the
        // serial copy.
        // The boot before the console came up (the first kernel line, the loader's lines), the
        // emergency path (FATAL lines, register dumps) and the model host's own lines are on
        // serial only.
        let carried = SerialReport {
            fatal: parsed.fatal.clone(),
            host_fatal: parsed.host_fatal.clone(),
            halted: parsed.halted.clone(),
            register_dump: parsed.register_dump,
            first_kernel_line: parsed.first_kernel_line.clone(),
            kernel_started: parsed.kernel_started,
            kernel_lines: parsed.kernel_lines.clone(),
            loader_lines: parsed.loader_lines.clone(),
            loader_error: parsed.loader_error.clone(),
            firmware_refusal: parsed.firmware_refusal.clone(),
            ..report::parse(text)
        };
        judged = judge(spec, verdict, finished.status, &carried)
            .map_err(|e| format!("virtio console report: {e}"))
            .and_then(|_| virtio_agrees(&parsed, &carried));
    }
    let mut tests = parsed.checks.clone();
    // A TDREPORT the kernel printed is judged on the host too (xtask/src/attest.rs); a run
    // expected to pass in which the kernel's report check passed must bring one that holds.
    let report_checked =
        parsed.checks.iter().any(|c| c.name == "attest.report" && c.result == CheckResult::Pass);
    if matches!(spec.expect, Expect::Pass) && report_checked {
        let outcome =
            crate::attest::verify(&finished.output, &nonce, &crate::attest::report_file(log))
                .and_then(|detail| {
                    detail.ok_or_else(|| "no TDREPORT lines in the log".to_string())
                });
        tests.push(Check {
            name: "host.tdreport".into(),
            result: if outcome.is_ok() { CheckResult::Pass } else { CheckResult::Fail },
            detail: outcome.clone().unwrap_or_else(|e| e.clone()),
        });
        if let (Ok(()), Err(e)) = (&judged, outcome) {
            judged = Err(format!("host check of the TDREPORT: {e}"));
        }
    }
    if let Some(tpm) = tpm {
        crate::tpm::judge(spec.loader, tpm, image, &finished.output, &mut tests, &mut judged);
    }
    if let Some(scenario) = spec.id.strip_prefix("fatal:") {
        tests.push(Check {
            name: format!("fault.{scenario}"),
            result: if judged.is_ok() { CheckResult::Pass } else { CheckResult::Fail },
            detail: parsed.fatal.first().cloned().unwrap_or_default(),
        });
    }
    Ok(RunReport {
        id: spec.id.clone(),
        mode: spec.mode.into(),
        machine: spec.machine,
        loader: spec.loader.name().into(),
        expect: spec.expect.word().into(),
        verdict,
        judged: if judged.is_ok() { "ok".into() } else { "wrong".into() },
        reason: match &judged {
            Ok(()) if !note.is_empty() => format!("{note} ({why})"),
            // A run with its own firmware names it.
            Ok(()) if spec.firmware.is_some() => {
                format!("with {}: {why}", firmware.code.display())
            }
            Ok(()) => why,
            Err(e) => format!("{e} ({why})"),
        },
        qemu_status: finished.status,
        wall_ms: finished.wall.as_millis(),
        tests,
        counters: parsed.counters,
        log: log.display().to_string(),
    })
}

/// The report of a run that cannot be made on this host, with the reason.
pub(super) fn skipped(spec: &RunSpec, log: &Path, reason: String) -> Result<RunReport> {
    std::fs::write(log, format!("skipped: {reason}\n"))
        .with_context(|| format!("cannot write {}", log.display()))?;
    Ok(RunReport::skipped(spec, reason, log))
}
