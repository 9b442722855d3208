//! `cargo xtask test`: host unit tests, then boots of the image in every mode, each judged
//! against what it is expected to do. The runs and what each expects: [`runs`].

mod execute;
mod fold;
mod judge;
mod order;
pub mod runs;
pub mod spec;

#[cfg(test)]
mod tests;

use execute::{execute, execute_folded, logs_dir};
use judge::judge;
pub use judge::verdict;
use runs::default_runs;
use spec::{Expect, Report, RunReport, RunSpec};
pub use spec::{Options, Verdict};

use crate::build::{self, KernelVariant, LoaderKind};
use crate::machine::Machine;
use crate::qemu;
use crate::report::{self, CheckResult};
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Runs the host unit tests of the whole workspace; true if they passed.
fn host_tests() -> Result<bool> {
    Ok(host_tests_report(host_tests_quietly()?))
}

/// Prints the host tests' output under their heading; true if they passed.
fn host_tests_report(output: std::process::Output) -> bool {
    println!("==> host unit tests: cargo test --workspace");
    print!("{}", String::from_utf8_lossy(&output.stdout));
    eprint!("{}", String::from_utf8_lossy(&output.stderr));
    output.status.success()
}

/// `cargo test --workspace --quiet`, its output kept: the suite runs it beside the image builds
/// and prints it afterwards.
fn host_tests_quietly() -> Result<std::process::Output> {
    let root = build::project_root();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    std::process::Command::new(cargo)
        .current_dir(&root)
        .args(["test", "--workspace", "--quiet"])
        .output()
        .context("cannot run cargo test")
}

const HOST_MERGE_RUN_ID: &str = "harness:host-broken-in-merge";

/// Proves that the host tests of the IN merge can fail: with tdx-ve's `broken-in-merge`
/// feature they must fail, naming a `merge_in` test.
fn host_tests_catch_broken_merge() -> Result<RunReport> {
    let root = build::project_root();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let started = std::time::Instant::now();
    let output = std::process::Command::new(cargo)
        .current_dir(&root)
        .args(["test", "-p", "tdx-ve", "--features", "broken-in-merge", "--lib", "--", "merge_in"])
        .output()
        .context("cannot run cargo test")?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let failing: Vec<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("test ").and_then(|l| l.strip_suffix(" ... FAILED")))
        .map(str::to_owned)
        .collect();
    let judged = !output.status.success() && failing.iter().any(|t| t.contains("merge_in"));
    let log = logs_dir().join("harness-host-broken-in-merge.log");
    std::fs::write(&log, &text)?;
    Ok(RunReport {
        id: HOST_MERGE_RUN_ID.into(),
        mode: "host".into(),
        machine: Machine::Legacy,
        loader: "none".into(),
        expect: "fail".into(),
        verdict: if output.status.success() { Verdict::Pass } else { Verdict::Fail },
        judged: if judged { "ok".into() } else { "wrong".into() },
        reason: if failing.is_empty() {
            "no failing test: the host tests do not catch a broken IN merge".into()
        } else {
            format!("failed: {}", failing.join(", "))
        },
        qemu_status: None,
        wall_ms: started.elapsed().as_millis(),
        tests: Vec::new(),
        counters: BTreeMap::new(),
        log: log.display().to_string(),
    })
}

pub fn run(options: Options) -> Result<bool> {
    let qemu = qemu::qemu_binary()?;
    let selected = |id: &str| {
        options.runs.is_empty()
            || options.runs.iter().any(|r| id == r || id.starts_with(&format!("{r}:")))
    };
    let mut specs = default_runs(options.timeout, options.fail_check.as_deref(), options.loader);
    specs.retain(|s| selected(&s.id));
    let host_merge_check = HOST_MERGE_RUN_ID;
    // It is a host test: `--skip-host-tests` skips it unless `--run` names it.
    let with_host_merge_check = options.fail_check.is_none()
        && if options.runs.is_empty() {
            !options.skip_host_tests
        } else {
            selected(host_merge_check)
        };
    if specs.is_empty() && !with_host_merge_check {
        bail!("--run matched no run; runs are: native, softtdx, fatal:<scenario>, harness:<name>");
    }
    // Fail on a bad --json path now, not after every boot.
    if let Some(path) = &options.json {
        std::fs::write(path, "{}").with_context(|| format!("cannot write {}", path.display()))?;
    }
    std::fs::create_dir_all(logs_dir())
        .with_context(|| format!("cannot create {}", logs_dir().display()))?;
    // From here on the run has started: an error still ends with the closing count line that
    // CI reads.
    match run_started(&options, &qemu, &specs, with_host_merge_check) {
        Ok(passed) => Ok(passed),
        Err(error) => {
            eprintln!("error: {error:#}");
            println!();
            println!("0 passed, 1 failed");
            Ok(false)
        }
    }
}

fn run_started(
    options: &Options,
    qemu: &Path,
    specs: &[RunSpec],
    with_host_merge_check: bool,
) -> Result<bool> {
    let suite_started = Instant::now();
    // The host tests run beside the image builds and the boots (nothing waits for their result
    // but the verdict); their output follows the boots'.
    let host_tests = (!options.skip_host_tests).then(|| std::thread::spawn(host_tests_quietly));

    // Build each variant and loader once, before any boot.
    let image_key = |spec: &RunSpec| format!("{:?} {:?}", spec.variant, spec.loader);
    let mut images: BTreeMap<String, PathBuf> = BTreeMap::new();
    for spec in specs {
        if let std::collections::btree_map::Entry::Vacant(slot) = images.entry(image_key(spec)) {
            println!(
                "==> building kernel {}, {} loader",
                describe_variant(&spec.variant),
                spec.loader.name()
            );
            slot.insert(build::build(&spec.variant, spec.loader, true)?.image);
        }
    }

    println!("==> booting {} runs under QEMU ({})", specs.len(), qemu.display());
    let first_args = qemu::boot_args(&qemu::BootSpec {
        firmware: &options.firmware,
        image: &images[&image_key(&specs[0])],
        kvm: options.kvm,
        machine: specs[0].machine,
        mode: specs[0].mode_flag.as_deref(),
        extra_args: &options.qemu_args,
        la57: specs[0].loader.needs_la57(),
        virtio_console: (specs[0].machine == Machine::Td).then_some(Path::new("RUN.virtio.log")),
        memory: None,
    });
    println!("    {}", qemu::command_line(qemu, &first_args));
    for line in crate::firmware::announce(&options.firmware) {
        println!("    {line}");
    }

    let durations_file = logs_dir().join("durations");
    let mut durations = order::parse(&std::fs::read_to_string(&durations_file).unwrap_or_default());
    // Runs that end the kernel early share boots (see `fold`).
    let boots = fold::boots(specs);
    let boot_ids: Vec<String> = boots
        .iter()
        .map(|runs| match runs.as_slice() {
            [one] => specs[*one].id.clone(),
            _ => fold::boot_id(&runs.iter().map(|&i| &specs[i]).collect::<Vec<_>>()),
        })
        .collect();
    let ids: Vec<&str> = boot_ids.iter().map(String::as_str).collect();
    let queue = Mutex::new(order::queue(&ids, &durations));
    let results = Mutex::new(Vec::new());
    let walls = Mutex::new(Vec::new());
    let workers = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).clamp(1, 2);
    let boots_started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| loop {
                let Some(boot) = queue.lock().unwrap().pop() else { break };
                let runs: Vec<&RunSpec> = boots[boot].iter().map(|&i| &specs[i]).collect();
                let image = &images[&image_key(runs[0])];
                let started = Instant::now();
                let reports = match runs.as_slice() {
                    [one] => execute(one, image, options, qemu).map(|report| vec![report]),
                    _ => execute_folded(&runs, image, options, qemu),
                };
                // A boot is what the suite's time is made of (a skipped run makes none).
                let booted = match &reports {
                    Ok(reports) => reports.iter().any(|r| r.verdict != Verdict::Skip),
                    Err(_) => true,
                };
                if booted {
                    walls.lock().unwrap().push((boot, started.elapsed().as_millis()));
                }
                let mut results = results.lock().unwrap();
                match reports {
                    Ok(reports) => {
                        results.extend(boots[boot].iter().copied().zip(reports.into_iter().map(Ok)))
                    }
                    Err(error) => results.push((boots[boot][0], Err(error))),
                }
            });
        }
    });
    let boots_wall = boots_started.elapsed();
    let host_ok = match host_tests {
        None => true,
        Some(tests) => host_tests_report(
            tests.join().map_err(|_| anyhow::anyhow!("the host tests' thread panicked"))??,
        ),
    };

    let mut results = results.into_inner().unwrap();
    results.sort_by_key(|(index, _)| *index);

    let mut runs = Vec::new();
    for (_, result) in results {
        runs.push(result?);
    }
    let walls = walls.into_inner().unwrap();
    for (boot, wall) in &walls {
        durations.insert(boot_ids[*boot].clone(), *wall);
    }
    // Only an ordering hint for the next suite: a failure to keep it changes nothing else.
    let _ = std::fs::write(&durations_file, order::render(&durations));
    if with_host_merge_check {
        println!("==> harness: host tests with the broken IN merge must fail");
        runs.push(host_tests_catch_broken_merge()?);
    }
    let (mut passed, mut failed) = (0u32, 0u32);
    let mut skipped = Vec::new();
    for run in &runs {
        if run.judged == "skip" {
            println!();
            println!("run {:<34} expect {:<7} skip: {}", run.id, run.expect, run.reason);
            skipped.push(run.id.as_str());
            continue;
        }
        let ok = run.judged == "ok";
        println!();
        println!(
            "run {:<34} expect {:<7} verdict {:<7} {:>6.1} s  {}",
            run.id,
            run.expect,
            format!("{:?}", run.verdict).to_lowercase(),
            run.wall_ms as f64 / 1000.0,
            if ok { "ok" } else { "WRONG" }
        );
        println!("    {}", run.reason);
        if run.expect == "pass" {
            for check in &run.tests {
                let word = match check.result {
                    CheckResult::Pass => {
                        passed += 1;
                        "pass"
                    }
                    CheckResult::Fail => {
                        failed += 1;
                        "FAIL"
                    }
                    CheckResult::Skip => "skip",
                };
                println!("    {word:<4}  {:<40} {}", check.name, check.detail);
            }
            if !ok {
                failed += 1;
                println!("    log: {}", run.log);
            }
        } else {
            let synthetic = run.id.strip_prefix("fatal:").map(|s| format!("fault.{s}"));
            for check in run.tests.iter().filter(|c| Some(&c.name) == synthetic.as_ref()) {
                println!(
                    "    {:<4}  {:<40} {}",
                    if ok { "pass" } else { "FAIL" },
                    check.name,
                    check.detail
                );
            }
            if ok {
                passed += 1;
            } else {
                failed += 1;
                println!("    log: {}", run.log);
            }
        }
    }
    if !host_ok {
        failed += 1;
        println!("\nhost unit tests failed (see above)");
    }
    if let Some(name) = &options.fail_check {
        if !runs.iter().any(|run| run.tests.iter().any(|c| &c.name == name)) {
            failed += 1;
            println!("\n--fail-check {name}: no check of that name ran, so nothing was inverted");
        }
    }
    if !skipped.is_empty() {
        println!("\nskipped (neither passed nor failed): {}", skipped.join(", "));
    }
    let boots = walls.len();
    let report = Report { passed, failed, runs };
    if let Some(path) = &options.json {
        let text = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
        println!("\nreport written to {}", path.display());
    }
    println!();
    println!(
        "{boots} boots in {:.1} s, {workers} at a time; the whole suite took {:.1} s",
        boots_wall.as_secs_f64(),
        suite_started.elapsed().as_secs_f64()
    );
    println!("{passed} passed, {failed} failed");
    Ok(failed == 0)
}

fn describe_variant(variant: &KernelVariant) -> String {
    let mut parts = Vec::new();
    if let Some(check) = &variant.fail_check {
        parts.push(format!("check {check} inverted"));
    }
    if variant.broken_in_merge {
        parts.push("the deliberately broken IN merge".to_owned());
    }
    if variant.broken_mmio_movzx {
        parts.push("an MMIO MOVZX r32 that does not zero-extend".to_owned());
    }
    if variant.broken_ve_ordering {
        parts.push("port I/O before TDG.VP.VEINFO.GET".to_owned());
    }
    if variant.broken_allowlist {
        parts.push("a port allowlist that lets every port through".to_owned());
    }
    if variant.broken_pic_probe {
        parts.push("the PIC probe inverted".to_owned());
    }
    if variant.no_device_checks {
        parts.push("the device checks left out".to_owned());
    }
    if variant.accept_eager {
        parts.push("accept=eager".to_owned());
    }
    if variant.td_image {
        return "(the kernel a TD boots, without test-modes)".to_owned();
    }
    if parts.is_empty() {
        "(test image)".to_owned()
    } else {
        format!("with {}", parts.join(" and "))
    }
}

/// `cargo xtask test --tdx`: the self-test in a real TD, judged like the softtdx run (pass, with
/// I/O #VEs). The host has passed `doctor`'s preflight before this runs.
pub fn run_td(
    mut launch: crate::td::qemu::TdLaunch,
    loader: LoaderKind,
    timeout: Duration,
    json: Option<PathBuf>,
    skip_host_tests: bool,
) -> Result<bool> {
    let host_ok = if skip_host_tests { true } else { host_tests()? };
    println!("==> building the kernel a TD boots, {} loader", loader.name());
    launch.image = build::build(&KernelVariant::td_image(), loader, true)?.image;
    let args = crate::td::qemu::td_qemu_args(&launch)?;
    println!("==> booting in a TD: {}", qemu::command_line(&launch.qemu, &args));
    std::fs::create_dir_all(logs_dir())?;
    let finished = qemu::run(&launch.qemu, &args, &qemu::Limits::timeout(timeout), false)?;
    let log = logs_dir().join("td.log");
    std::fs::write(&log, &finished.output)?;
    let parsed = report::parse(&finished.output);
    let (verdict, why) = verdict(finished.status, finished.timed_out, &parsed);
    let spec = RunSpec {
        id: "td".into(),
        mode: "td",
        machine: Machine::Td,
        mode_flag: None,
        variant: KernelVariant::default(),
        loader,
        expect: Expect::Pass,
        timeout,
        firmware: None,
    };
    let judged = judge(&spec, verdict, finished.status, &parsed);
    let (mut passed, mut failed) = (0u32, 0u32);
    for check in &parsed.checks {
        match check.result {
            CheckResult::Pass => passed += 1,
            CheckResult::Fail => failed += 1,
            CheckResult::Skip => {}
        }
        println!(
            "    {:<4}  {:<40} {}",
            format!("{:?}", check.result).to_lowercase(),
            check.name,
            check.detail
        );
    }
    if let Err(e) = &judged {
        failed += 1;
        println!("run td: WRONG: {e} ({why}); log: {}", log.display());
    }
    if !host_ok {
        failed += 1;
    }
    if let Some(path) = json {
        let run = RunReport {
            id: "td".into(),
            mode: "td".into(),
            machine: Machine::Td,
            loader: loader.name().into(),
            expect: "pass".into(),
            verdict,
            judged: if judged.is_ok() { "ok".into() } else { "wrong".into() },
            reason: why,
            qemu_status: finished.status,
            wall_ms: finished.wall.as_millis(),
            tests: parsed.checks,
            counters: parsed.counters,
            log: log.display().to_string(),
        };
        let report = Report { passed, failed, runs: vec![run] };
        std::fs::write(&path, serde_json::to_string_pretty(&report)?)?;
    }
    println!();
    println!("{passed} passed, {failed} failed");
    Ok(failed == 0)
}
