//! `cargo xtask bench`: instruction counts of the #VE path, measured in the guest.
//!
//! The image boots in the kernel's bench mode under `-icount shift=0`, where RDTSC advances once
//! per guest instruction: the figures are exact instruction counts, the same on every run and
//! on any host, so they can be compared across commits. See kernel/src/bench.rs.

use crate::{build, qemu};
use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BenchLine {
    pub name: String,
    pub iterations: u64,
    /// Instructions per operation, executed natively.
    pub native: u64,
    /// Instructions per operation under softtdx (including the model's own work).
    pub softtdx: u64,
    /// #VEs per operation under softtdx.
    pub ves: u64,
    /// Instructions the guest itself executes per #VE: trap entry, handler, hypercall
    /// wrappers, return; the model's answers to its TDCALLs excluded.
    pub handler: u64,
}

/// Parses `BENCH <name> iterations=N native=X softtdx=Y ves=Z handler=H` lines.
pub fn parse(serial: &str) -> Vec<BenchLine> {
    let clean = crate::report::strip_ansi(serial);
    clean
        .lines()
        .filter_map(|line| {
            let rest = line.trim().strip_prefix("BENCH ")?;
            let mut words = rest.split_whitespace();
            let name = words.next()?.to_owned();
            let mut field = |key: &str| -> Option<u64> {
                words.next()?.strip_prefix(key)?.strip_prefix('=')?.parse().ok()
            };
            Some(BenchLine {
                name,
                iterations: field("iterations")?,
                native: field("native")?,
                softtdx: field("softtdx")?,
                ves: field("ves")?,
                handler: field("handler")?,
            })
        })
        .collect()
}

/// The model's cost of single-stepping one instruction, from the `nop` workload: extra
/// instructions per native instruction.
pub fn step_cost(lines: &[BenchLine]) -> Option<f64> {
    let nop = lines.iter().find(|l| l.name == "nop")?;
    (nop.native > 0).then(|| (nop.softtdx as f64 - nop.native as f64) / nop.native as f64)
}

pub fn run(firmware: &ovmf::Firmware, timeout: Duration, json: Option<PathBuf>) -> Result<bool> {
    let qemu = qemu::qemu_binary()?;
    let artifacts = build::build(&build::KernelVariant::default(), build::LoaderKind::Own, true)?;
    let extra = ["-icount".to_owned(), "shift=0".to_owned()];
    let args = qemu::boot_args(&qemu::BootSpec {
        firmware,
        image: &artifacts.image,
        kvm: false,
        machine: crate::machine::Machine::Legacy,
        mode: Some("bench"),
        extra_args: &extra,
    });
    println!("{}", qemu::command_line(&qemu, &args));
    let finished = qemu::run(&qemu, &args, &qemu::Limits::timeout(timeout), false)?;
    let lines = parse(&finished.output);
    if finished.status != Some(33) || !finished.output.contains("BENCH END") {
        let log = build::project_root().join("target/xtask-logs/bench.log");
        std::fs::create_dir_all(log.parent().expect("has a parent"))?;
        std::fs::write(&log, &finished.output)?;
        bail!(
            "the bench boot did not finish (status {:?}); serial log in {}",
            finished.status,
            log.display()
        );
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
    println!("guest per #VE: what the guest executes from #VE delivery to the handler's return,");
    println!("trap entry/exit included, the model's answers to its TDCALLs excluded.");
    println!("(QEMU wall time {:.1} s, for information only.)", finished.wall.as_secs_f64());
    if let Some(path) = json {
        std::fs::write(&path, serde_json::to_string_pretty(&lines)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

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
