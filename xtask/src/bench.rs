//! `cargo xtask bench`: instruction counts of the #VE path, measured in the guest.
//!
//! The image boots in the kernel's bench mode under `-icount shift=0`, where RDTSC advances once
//! per guest instruction: the figures are exact instruction counts, the same on every run and
//! on any host, so they can be compared across commits. See kernel/src/bench.rs.

use crate::{build, qemu};
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

#[path = "bench_parse.rs"]
mod parsers;
pub use parsers::{loadable_bytes, parse, parse_metrics, step_cost, Metric};

/// The keys `--json` must carry (issue 9), in the order they are printed.
pub const KEYS: [&str; 20] = [
    "exits_per_byte.ve_bytewise",
    "exits_per_byte.ve_buffered",
    "exits_per_byte.direct_buffered",
    "exits_per_byte.virtio_console",
    "instructions.ve_in",
    "instructions.ve_out",
    "instructions.direct_io",
    "instructions.mmio_ve",
    "instructions.mmio_direct",
    "instructions.boot_to_verdict",
    "bytes.kernel_elf",
    "bytes.image",
    "bytes.kernel_elf_test_image",
    "accept.calls_per_gib_2m",
    "accept.calls_per_gib_4k",
    "instructions.accept_4k",
    "instructions.boot_to_frames_ready_2g",
    "instructions.boot_to_frames_ready_8g",
    "instructions.boot_to_verdict_2g",
    "instructions.boot_to_verdict_8g",
];

/// Guest memory of the two `bench boot` boots (td machine, softtdx): 8 GiB has 6 GiB above
/// 4 GiB, left unaccepted by the model as TDVF leaves it, for the `accept.*` figures; 2 GiB has
/// none. Their boot figures must agree within 1% (issue 20, acceptance 4).
const LARGE_MEMORY: &str = "8G";
const SMALL_MEMORY: &str = "2G";
/// The gibibytes between the two.
const EXTRA_GIB: f64 = 6.0;
const FRAMES_READY: &str = "instructions.boot_to_frames_ready";
const VERDICT: &str = "instructions.boot_to_verdict";

/// What the 8 GiB boot may spend before its frame allocator is ready beyond the 2 GiB boot, per
/// extra GiB: bookkeeping of the unaccepted memory (one bit per 2 MiB unit, built, counted and
/// printed), never an accept. That bookkeeping measured 0.17 M instructions per GiB (1.0 M for the
/// 6 GiB, 6.6% of the 15 M the figure is since the boot-mode read no longer walks fw_cfg's
/// directory through #VE, so a relative 1% no longer fits it); accepting a GiB costs the model
/// over 134 M (512 calls, each scanning 2 MiB). The bound sits between the two.
const FRAMES_READY_MAX_PER_GIB: f64 = 1_000_000.0;

/// Whether the boot to a ready frame allocator does not depend on memory size: the 8 GiB boot's
/// figure `large` is at most [`FRAMES_READY_MAX_PER_GIB`] per extra GiB above the 2 GiB one,
/// `small`.
fn frames_ready_independent_of_memory(small: f64, large: f64) -> Result<(), String> {
    let per_gib = (large - small) / EXTRA_GIB;
    if per_gib > FRAMES_READY_MAX_PER_GIB {
        return Err(format!(
            "the 8 GiB boot ({large}) spends {per_gib:.0} instructions per extra GiB above the \
             2 GiB boot ({small}), over {FRAMES_READY_MAX_PER_GIB} (an accept at boot?)"
        ));
    }
    Ok(())
}

fn boot(
    qemu: &std::path::Path,
    firmware: &ovmf::Firmware,
    image: &std::path::Path,
    mode: Option<&str>,
    (machine, memory): (crate::machine::Machine, Option<&str>),
    timeout: Duration,
    log_name: &str,
) -> Result<String> {
    let extra = ["-icount".to_owned(), "shift=0".to_owned()];
    let logs = build::project_root().join("target/xtask-logs");
    std::fs::create_dir_all(&logs)?;
    let virtio_log = logs.join(format!("{log_name}.virtio-console"));
    let args = qemu::boot_args(&qemu::BootSpec {
        firmware,
        image,
        kvm: false,
        machine,
        mode,
        extra_args: &extra,
        la57: false,
        // For `exits_per_byte.virtio_console`; the console starts only when the bench asks.
        virtio_console: Some(&virtio_log),
        memory,
    });
    println!("{}", qemu::command_line(qemu, &args));
    let finished = qemu::run(qemu, &args, &qemu::Limits::timeout(timeout), false)?;
    let log = build::project_root().join("target/xtask-logs").join(log_name);
    std::fs::create_dir_all(log.parent().expect("has a parent"))?;
    std::fs::write(&log, &finished.output)?;
    if finished.status != Some(33) {
        bail!(
            "the bench boot did not finish (status {:?}); serial log in {}",
            finished.status,
            log.display()
        );
    }
    Ok(finished.output)
}

pub fn run(firmware: &ovmf::Firmware, timeout: Duration, json: Option<PathBuf>) -> Result<bool> {
    let qemu = qemu::qemu_binary()?;
    let artifacts = build::build(&build::KernelVariant::default(), build::LoaderKind::Own, true)?;
    let td_artifacts =
        build::build(&build::KernelVariant::td_image(), build::LoaderKind::Own, true)?;
    let legacy = crate::machine::Machine::Legacy;
    let output = boot(
        &qemu,
        firmware,
        &artifacts.image,
        Some("bench"),
        (legacy, None),
        timeout,
        "bench.log",
    )?;
    if !output.contains("BENCH END") {
        bail!("the bench boot ended without BENCH END; serial log in target/xtask-logs/bench.log");
    }
    let lines = parse(&output);
    let mut metrics = parse_metrics(&output);
    // The self-test, natively, from kernel entry to its verdict.
    let native =
        boot(&qemu, firmware, &artifacts.image, None, (legacy, None), timeout, "bench-native.log")?;
    metrics.extend(parse_metrics(&native));
    // The machine a TD gets, under softtdx, with 8 GiB and with 2 GiB: boot to a ready frame
    // allocator and to the self-test's verdict, then (8 GiB) the accept figures.
    let mut sized = BTreeMap::new();
    for memory in [LARGE_MEMORY, SMALL_MEMORY] {
        let suffix = memory.to_lowercase();
        let log = format!("bench-boot-{suffix}.log");
        let output = boot(
            &qemu,
            firmware,
            &artifacts.image,
            Some("bench boot"),
            (crate::machine::Machine::Td, Some(memory)),
            timeout,
            &log,
        )?;
        // `boot` saw the success exit: the self-test passed.
        if !output.contains("SUMMARY passed=") {
            bail!("the {memory} bench boot printed no self-test verdict; serial log in target/xtask-logs/{log}");
        }
        let mut figures = parse_metrics(&output);
        for key in [FRAMES_READY, VERDICT] {
            let value = figures
                .remove(key)
                .with_context(|| format!("no {key} in the {memory} bench boot ({log})"))?;
            sized.insert((key, suffix.clone()), value);
            metrics.insert(format!("{key}_{suffix}"), value);
        }
        if memory == LARGE_MEMORY {
            metrics.extend(figures);
        }
    }
    // Lazy acceptance keeps boot independent of the TD's memory size (issue 20, acceptance 4).
    let figure = |key: &str, suffix: &str| sized[&(key, suffix.to_owned())].value();
    let (a, b) = (figure(VERDICT, "2g"), figure(VERDICT, "8g"));
    if (a - b).abs() > a * 0.01 {
        bail!("{VERDICT} differs by more than 1% between 2 GiB ({a}) and 8 GiB ({b})");
    }
    let (a, b) = (figure(FRAMES_READY, "2g"), figure(FRAMES_READY, "8g"));
    if let Err(why) = frames_ready_independent_of_memory(a, b) {
        bail!("{FRAMES_READY}: {why}");
    }
    let size = |path: &std::path::Path| -> Result<u64> {
        Ok(std::fs::metadata(path)
            .with_context(|| format!("cannot stat {}", path.display()))?
            .len())
    };
    let elf_bytes = |path: &std::path::Path| -> Result<u64> {
        let bytes =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        loadable_bytes(&bytes).with_context(|| format!("{} is not an ELF64 file", path.display()))
    };
    metrics.insert("bytes.kernel_elf".into(), Metric::Count(elf_bytes(&td_artifacts.kernel)?));
    metrics.insert("bytes.image".into(), Metric::Count(size(&td_artifacts.image)?));
    metrics
        .insert("bytes.kernel_elf_test_image".into(), Metric::Count(elf_bytes(&artifacts.kernel)?));
    // The counting method's own check: the `nop` workload is `nop; ret`.
    if metrics.get("instructions.calibration_nop") != Some(&Metric::Count(2)) {
        bail!(
            "the instruction counter is off: it counted {:?} for `nop; ret` (want 2)",
            metrics.get("instructions.calibration_nop")
        );
    }
    if let Some(missing) = KEYS.iter().find(|k| !metrics.contains_key(**k)) {
        bail!("the bench output has no figure for {missing}; serial logs in target/xtask-logs/");
    }

    // Exact by construction: 512 accepts of 2 MiB per GiB, or 262,144 of 4 KiB once the policy
    // has learnt that the VMM maps at 4 KiB (issue 20, acceptance 1).
    for (key, want) in [("accept.calls_per_gib_2m", 512), ("accept.calls_per_gib_4k", 262_144)] {
        if metrics[key] != Metric::Count(want) {
            bail!("{key} is {:?}, want {want}", metrics[key]);
        }
    }
    let step = step_cost(&lines).context("no nop workload in the bench output")?;
    println!();
    println!("instructions per operation (QEMU -icount shift=0: RDTSC counts instructions)");
    println!(
        "{:<20} {:>8} {:>10} {:>6} {:>16}",
        "workload", "native", "softtdx", "#VEs", "guest per #VE"
    );
    for line in &lines {
        let handler = if line.ves > 0 { line.handler.to_string() } else { "-".to_owned() };
        println!(
            "{:<20} {:>8} {:>10} {:>6} {:>16}",
            line.name, line.native, line.softtdx, line.ves, handler
        );
    }
    println!();
    println!("native/softtdx: per operation; softtdx includes the model's own work, which a TD");
    println!("does not pay (single-stepping alone costs {step:.0} instructions per instruction).");
    println!("guest per #VE: exactly what a TD executes per #VE, from the vector-20 stub's first");
    println!("instruction to its iretq, each TDCALL counted as one instruction (single-stepped).");
    println!();
    for key in KEYS {
        match metrics[key] {
            Metric::Count(n) => println!("{key:<32} {n}"),
            Metric::Ratio { exits, bytes } => {
                println!(
                    "{key:<32} {:.4}  ({exits} exits / {bytes} bytes)",
                    exits as f64 / bytes as f64
                )
            }
        }
    }
    if let Some(path) = json {
        let mut object = serde_json::Map::new();
        for key in KEYS {
            let value = match metrics[key] {
                Metric::Count(n) => serde_json::Value::from(n),
                Metric::Ratio { .. } => serde_json::Value::from(metrics[key].value()),
            };
            object.insert(key.to_owned(), value);
        }
        object.insert("workloads".to_owned(), serde_json::to_value(&lines)?);
        std::fs::write(&path, serde_json::to_string_pretty(&object)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::parsers::BenchLine;
    use super::*;

    #[test]
    fn the_frames_ready_gate_allows_bookkeeping_and_refuses_an_accept() {
        // Measured on main: 14,920,366 at 2 GiB, 15,904,108 at 8 GiB.
        assert!(frames_ready_independent_of_memory(14_920_366.0, 15_904_108.0).is_ok());
        // One accepted GiB (512 calls of 2 MiB, each scanned by the model) is far over.
        let one_gib_accepted = 15_904_108.0 + 134_000_000.0;
        let error = frames_ready_independent_of_memory(14_920_366.0, one_gib_accepted);
        assert!(error.unwrap_err().contains("an accept at boot?"));
    }

    #[test]
    fn parses_metric_lines() {
        let serial = "METRIC instructions.ve_in 120 windows=1\r\n\
                      METRIC instructions.ve_out 130 windows=2\r\n\
                      # METRIC instructions.boot_to_verdict 5000\r\n\
                      METRIC exits_per_byte.direct_buffered exits=1105 bytes=1040\r\n\
                      METRIC exits_per_byte.bad exits=3 bytes=0\r\nMETRIC broken\r\n";
        let metrics = parse_metrics(serial);
        assert_eq!(metrics.len(), 3);
        assert_eq!(metrics["instructions.ve_in"], Metric::Count(120));
        assert_eq!(metrics["instructions.boot_to_verdict"], Metric::Count(5000));
        let ratio = metrics["exits_per_byte.direct_buffered"];
        assert_eq!(ratio, Metric::Ratio { exits: 1105, bytes: 1040 });
        assert!((ratio.value() - 1.0625).abs() < 1e-9);
    }

    #[test]
    fn loadable_bytes_sums_pt_load_file_sizes() {
        let mut elf = vec![0u8; 64 + 3 * 56];
        elf[..6].copy_from_slice(b"\x7fELF\x02\x01");
        elf[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
        elf[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        elf[0x38..0x3a].copy_from_slice(&3u16.to_le_bytes());
        for (i, (kind, filesz)) in [(1u32, 100u64), (4, 7), (1, 23)].into_iter().enumerate() {
            let at = 64 + i * 56;
            elf[at..at + 4].copy_from_slice(&kind.to_le_bytes());
            elf[at + 0x20..at + 0x28].copy_from_slice(&filesz.to_le_bytes());
        }
        assert_eq!(loadable_bytes(&elf), Some(123));
        assert_eq!(loadable_bytes(&elf[..40]), None);
        elf[0x38..0x3a].copy_from_slice(&9u16.to_le_bytes());
        assert_eq!(loadable_bytes(&elf), None);
        // A program header table at the very top of the address space (found by fuzzing: the
        // end of a field overflowed).
        for phoff in [u64::MAX, u64::MAX - 3, u64::MAX - 0x20, u64::MAX - 0x27] {
            elf[0x20..0x28].copy_from_slice(&phoff.to_le_bytes());
            assert_eq!(loadable_bytes(&elf), None, "e_phoff {phoff:#x}");
        }
    }

    #[test]
    fn parses_bench_lines_and_derives_costs() {
        let serial = "noise\r\nBENCH BEGIN iterations=200\r\n\
                      BENCH nop iterations=200 native=10 softtdx=1010 ves=0 handler=0\r\n\
                      BENCH inb iterations=200 native=12 softtdx=3212 ves=1 handler=700\r\n\
                      BENCH bad iterations=x native=1 softtdx=2 ves=0 handler=0\r\nBENCH END\r\n";
        let lines = parse(serial);
        assert_eq!(lines.len(), 2);
        assert_eq!(
            lines[1],
            BenchLine {
                name: "inb".into(),
                iterations: 200,
                native: 12,
                softtdx: 3212,
                ves: 1,
                handler: 700
            }
        );
        assert_eq!(step_cost(&lines), Some(100.0));
    }
}
