//! `cargo xtask fuzz [TARGET] [--seconds N]`: coverage-guided fuzzing (libFuzzer through
//! cargo-fuzz) of every parser of untrusted input, and differential fuzzing of our decoders.
//!
//! - The targets' bodies live in `fuzz/src` (crate `fuzz-targets`, in the workspace); the
//!   libFuzzer binaries in `fuzz/libfuzzer` (its own workspace, built here with `cargo fuzz
//!   build` into `fuzz-build` in cargo's target directory, never by the normal build).
//! - Each run starts from the committed seeds (`fuzz/seeds/<target>/`), seeds made here from
//!   this machine's real inputs (`target/xtask-fuzz/seeds/<target>/`: Debian's firmware files and
//!   QEMU firmware descriptors, the harness's serial logs, td-audit's plugin logs, the kernel
//!   ELFs' program headers and `.bootloader-config`), and the corpus earlier runs grew
//!   (`target/xtask-fuzz/corpus/<target>/`).
//! - A crash is copied to `fuzz/regressions/<target>/`, where `fuzz/tests/replay.rs` runs it
//!   in every host test run (`cargo xtask test`) until it is fixed; the run then fails.
//! - Every fuzzer process runs under `nice -n 19` and one at a time: the machines this is
//!   developed on are shared.

use crate::build::project_root;
use anyhow::{bail, Context, Result};
use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

/// Where the libFuzzer crate lives, relative to the root.
const FUZZ_DIR: &str = "fuzz/libfuzzer";
/// Where its binaries are built, inside cargo's target directory.
const BUILD_DIR: &str = "fuzz-build";

/// One target, as its libFuzzer binary declares it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub name: String,
    /// The longest input worth trying (`// max_len: N` in the binary's source).
    pub max_len: usize,
}

/// What one fuzzing run did, from libFuzzer's final statistics.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Stats {
    pub executions: u64,
    pub per_second: u64,
    /// Coverage: edges (`cov`) and features (`ft`) of the last status line.
    pub coverage: u64,
    pub features: u64,
    pub corpus: u64,
    pub peak_rss_mb: u64,
}

/// Every target, from `fuzz/libfuzzer/fuzz_targets/*.rs`, sorted by name.
pub fn targets(root: &Path) -> Result<Vec<Target>> {
    let dir = root.join(FUZZ_DIR).join("fuzz_targets");
    let mut found = Vec::new();
    for entry in fs::read_dir(&dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let path = entry?.path();
        let Some(name) =
            path.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(".rs"))
        else {
            continue;
        };
        let source = fs::read_to_string(&path)?;
        let max_len = source
            .lines()
            .find_map(|l| l.trim().strip_prefix("// max_len: "))
            .and_then(|n| n.trim().parse().ok())
            .with_context(|| format!("{} has no `// max_len: N` line", path.display()))?;
        found.push(Target { name: name.to_owned(), max_len });
    }
    found.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(found)
}

/// Parses libFuzzer's output: the `stat::` lines of `-print_final_stats=1` and the last status
/// line (`#N ... cov: C ft: F corp: K/...`).
pub fn parse_stats(output: &str) -> Stats {
    let mut stats = Stats::default();
    for line in output.lines() {
        let line = line.trim();
        if let Some((key, value)) = line.strip_prefix("stat::").and_then(|l| l.split_once(':')) {
            let value = value.trim().parse().unwrap_or(0);
            match key {
                "number_of_executed_units" => stats.executions = value,
                "average_exec_per_sec" => stats.per_second = value,
                "peak_rss_mb" => stats.peak_rss_mb = value,
                _ => {}
            }
        } else if line.starts_with('#') {
            let mut words = line.split_whitespace();
            while let Some(word) = words.next() {
                let number = |w: Option<&str>| -> Option<u64> {
                    w?.split('/')
                        .next()?
                        .trim_end_matches(|c: char| !c.is_ascii_digit())
                        .parse()
                        .ok()
                };
                match word {
                    "cov:" => stats.coverage = number(words.next()).unwrap_or(stats.coverage),
                    "ft:" => stats.features = number(words.next()).unwrap_or(stats.features),
                    "corp:" => stats.corpus = number(words.next()).unwrap_or(stats.corpus),
                    _ => {}
                }
            }
        }
    }
    stats
}

/// Fails with one line when cargo-fuzz is missing.
fn require_cargo_fuzz() -> Result<()> {
    let found = Command::new("cargo")
        .args(["fuzz", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !found {
        bail!("cargo-fuzz is not installed: run `cargo install cargo-fuzz` (or `scripts/setup.sh --fuzz`)");
    }
    Ok(())
}

/// Builds every libFuzzer binary: release, debug assertions and overflow checks on, no
/// sanitizer. Every fuzzed crate forbids `unsafe` code, so a memory error cannot come from the
/// code under test; AddressSanitizer would find none and costs five times the CPU per execution
/// (ve_decode_diff: 21 k exec/s with it, 100 k without) and half again the build.
fn build(root: &Path) -> Result<PathBuf> {
    let into = crate::build::cargo_target_dir()?.join(BUILD_DIR);
    println!(
        "==> cargo fuzz build --sanitizer none --fuzz-dir {FUZZ_DIR} (into {})",
        into.display()
    );
    let status = Command::new("nice")
        .args([
            "-n",
            "19",
            "cargo",
            "fuzz",
            "build",
            "--sanitizer",
            "none",
            "--fuzz-dir",
            FUZZ_DIR,
            "--target-dir",
        ])
        .arg(&into)
        .current_dir(root)
        .status()
        .context("cannot run cargo fuzz build")?;
    if !status.success() {
        bail!("cargo fuzz build failed");
    }
    Ok(into.join("x86_64-unknown-linux-gnu/release"))
}

/// Writes `data` as seed `name` of `target` under `dir`, cut to the target's length.
fn put(dir: &Path, target: &Target, name: &str, data: &[u8]) -> Result<()> {
    let data = &data[..data.len().min(target.max_len)];
    fs::write(dir.join(name), data).with_context(|| format!("cannot write seed {name}"))
}

fn files_in(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> =
        fs::read_dir(dir).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default();
    files.retain(|p| p.is_file() && p.to_string_lossy().ends_with(ext));
    files.sort();
    files
}

/// A small ELF with the kernel's program headers (types, flags, addresses, sizes; file sizes cut
/// to 256 bytes of real contents each, memory sizes kept), its entry point, a dynamic table
/// with one `R_X86_64_RELATIVE` relocation, and a section table naming `.bootloader-config`:
/// everything the loader reads, in a few KiB the fuzzer can mutate.
pub fn mini_elf(kernel: &[u8]) -> Option<Vec<u8>> {
    let parsed = loader_core::elf::Kernel::parse(kernel).ok()?;
    let config = parsed.section(b".bootloader-config").ok()?.to_vec();
    let headers: Vec<_> = parsed
        .program_headers()
        .iter()
        .filter(|h| h.kind == 1 || h.kind == 7 || h.kind == 0x6474_e552)
        .copied()
        .collect();
    // Layout: ELF header, program headers (kept ones + PT_DYNAMIC), segment bytes, dynamic
    // table, relocation, section names, section headers.
    let phnum = headers.len() + 1;
    let mut out = vec![0u8; 64 + 56 * phnum];
    let mut phdrs = Vec::new();
    let (start, _) = parsed.span();
    for h in &headers {
        let offset = out.len() as u64;
        let take = h.file_size.min(256);
        let from = h.offset as usize;
        out.extend_from_slice(kernel.get(from..from + take as usize)?);
        phdrs.push((h.kind, h.flags, offset, h.vaddr, take, h.mem_size));
    }
    // The dynamic table and the relocation go in the first writable PT_LOAD's memory, at its
    // start, overwriting the copied bytes.
    let writable = phdrs.iter().position(|p| p.0 == 1 && p.1 & 2 != 0 && p.4 >= 96)?;
    let (_, _, data_offset, data_vaddr, _, _) = phdrs[writable];
    let rela_vaddr = data_vaddr + 64;
    let dynamic: [(u64, u64); 4] = [(7, rela_vaddr), (8, 24), (9, 24), (0, 0)];
    for (i, (tag, value)) in dynamic.iter().enumerate() {
        let at = data_offset as usize + 16 * i;
        out[at..at + 8].copy_from_slice(&tag.to_le_bytes());
        out[at + 8..at + 16].copy_from_slice(&value.to_le_bytes());
    }
    let rela_at = data_offset as usize + 64;
    out[rela_at..rela_at + 8].copy_from_slice(&(data_vaddr + 88).to_le_bytes());
    out[rela_at + 8..rela_at + 16].copy_from_slice(&8u64.to_le_bytes());
    out[rela_at + 16..rela_at + 24].copy_from_slice(&start.to_le_bytes());
    phdrs.push((2, 6, data_offset, data_vaddr, 64, 64));
    let config_offset = out.len() as u64;
    out.extend_from_slice(&config);
    let names_offset = out.len() as u64;
    let names = b"\0.bootloader-config\0.shstrtab\0";
    out.extend_from_slice(names);
    while !out.len().is_multiple_of(8) {
        out.push(0);
    }
    let shoff = out.len() as u64;
    let section = |name: u32, kind: u32, offset: u64, size: u64| {
        let mut s = [0u8; 64];
        s[0..4].copy_from_slice(&name.to_le_bytes());
        s[4..8].copy_from_slice(&kind.to_le_bytes());
        s[24..32].copy_from_slice(&offset.to_le_bytes());
        s[32..40].copy_from_slice(&size.to_le_bytes());
        s
    };
    out.extend_from_slice(&[0u8; 64]);
    out.extend_from_slice(&section(1, 1, config_offset, config.len() as u64));
    out.extend_from_slice(&section(20, 3, names_offset, names.len() as u64));
    // The ELF header: the kernel's own first 64 bytes with the tables moved.
    out[..64].copy_from_slice(&kernel[..64]);
    out[32..40].copy_from_slice(&64u64.to_le_bytes());
    out[40..48].copy_from_slice(&shoff.to_le_bytes());
    out[54..56].copy_from_slice(&56u16.to_le_bytes());
    out[56..58].copy_from_slice(&(phnum as u16).to_le_bytes());
    out[58..60].copy_from_slice(&64u16.to_le_bytes());
    out[60..62].copy_from_slice(&3u16.to_le_bytes());
    out[62..64].copy_from_slice(&2u16.to_le_bytes());
    for (i, (kind, flags, offset, vaddr, file_size, mem_size)) in phdrs.iter().enumerate() {
        let at = 64 + 56 * i;
        out[at..at + 4].copy_from_slice(&kind.to_le_bytes());
        out[at + 4..at + 8].copy_from_slice(&flags.to_le_bytes());
        out[at + 8..at + 16].copy_from_slice(&offset.to_le_bytes());
        out[at + 16..at + 24].copy_from_slice(&vaddr.to_le_bytes());
        out[at + 24..at + 32].copy_from_slice(&vaddr.to_le_bytes());
        out[at + 32..at + 40].copy_from_slice(&file_size.to_le_bytes());
        out[at + 40..at + 48].copy_from_slice(&mem_size.to_le_bytes());
        out[at + 48..at + 56].copy_from_slice(&4096u64.to_le_bytes());
    }
    Some(out)
}

/// Makes the seeds that come from this machine's files into `target/xtask-fuzz/seeds/<target>/`;
/// returns how many each target got. Missing files only mean fewer seeds.
pub fn generate_seeds(root: &Path, targets: &[Target]) -> Result<Vec<(String, usize)>> {
    let firmware: Vec<PathBuf> = ["/usr/share/ovmf", "/usr/share/OVMF", "/usr/share/edk2/ovmf"]
        .iter()
        .flat_map(|d| files_in(Path::new(d), ".fd"))
        .collect();
    let descriptors: Vec<PathBuf> = ["/usr/share/qemu/firmware", "/etc/qemu/firmware"]
        .iter()
        .flat_map(|d| files_in(Path::new(d), ".json"))
        .collect();
    let logs = root.join("target/xtask-logs");
    let serial_logs: Vec<PathBuf> = files_in(&logs, ".log")
        .into_iter()
        .filter(|p| !p.to_string_lossy().ends_with(".plugin.log"))
        .collect();
    let plugin_logs = files_in(&logs, ".plugin.log");
    let kernels: Vec<PathBuf> =
        [crate::build::KernelVariant::default(), crate::build::KernelVariant::td_image()]
            .iter()
            .filter_map(|v| v.target_dir().ok())
            .map(|d| d.join("x86_64-unknown-none/release/kernel"))
            .filter(|p| p.is_file())
            .collect();
    let mut counts = Vec::new();
    for target in targets {
        let dir = root.join("target/xtask-fuzz/seeds").join(&target.name);
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir)?;
        let stem = |p: &Path| p.file_name().unwrap().to_string_lossy().into_owned();
        match target.name.as_str() {
            "tdvf" => {
                for path in &firmware {
                    let bytes = fs::read(path)?;
                    // OVMF keeps its GUIDed table and the TDVF descriptor near the end.
                    let tail = &bytes[bytes.len().saturating_sub(target.max_len)..];
                    put(&dir, target, &stem(path), tail)?;
                }
            }
            "varstore" => {
                for path in &firmware {
                    let bytes = fs::read(path)?;
                    // The variable store heads a VARS file and a combined image.
                    put(&dir, target, &stem(path), &bytes)?;
                }
            }
            "firmware_descriptor" => {
                for (i, path) in descriptors.iter().enumerate() {
                    let mut data = vec![40 + i as u8, 0];
                    data.extend(fs::read(path)?);
                    put(&dir, target, &stem(path), &data)?;
                }
            }
            "serial_report" | "bench" => {
                for path in &serial_logs {
                    put(&dir, target, &stem(path), &fs::read(path)?)?;
                }
            }
            "tdreport" => {
                // The attestation lines of a boot that printed a TDREPORT, read as serial text.
                for path in &serial_logs {
                    let text = fs::read_to_string(path).unwrap_or_default();
                    let lines: Vec<&str> = text
                        .lines()
                        .filter(|l| l.contains("# TDREPORT ") || l.contains("# ATTEST "))
                        .collect();
                    if lines.iter().any(|l| l.contains("# TDREPORT ")) {
                        let seed = format!("\u{1}{}\n", lines.join("\n"));
                        put(&dir, target, &stem(path), seed.as_bytes())?;
                    }
                }
            }
            "manifest" => {
                put(
                    &dir,
                    target,
                    "checks.manifest",
                    &fs::read(root.join("xtask/src/checks.manifest"))?,
                )?;
            }
            "plugin_log" => {
                for path in &plugin_logs {
                    let text = fs::read(path)?;
                    // Cut to the length, then close the log as the plugin does.
                    let mut head = text[..text.len().min(target.max_len - 4)].to_vec();
                    while head.last().is_some_and(|&b| b != b'\n') {
                        head.pop();
                    }
                    head.extend_from_slice(b"END\n");
                    put(&dir, target, &stem(path), &head)?;
                }
            }
            "elf" | "elf_diff" | "bootloader_config" => {
                for (i, path) in kernels.iter().enumerate() {
                    let bytes = fs::read(path)?;
                    let Some(mini) = mini_elf(&bytes) else { continue };
                    if target.name == "bootloader_config" {
                        let kernel = loader_core::elf::Kernel::parse(&bytes).ok();
                        if let Some(config) =
                            kernel.and_then(|k| k.section(b".bootloader-config").ok())
                        {
                            let mut data = vec![0u8];
                            data.extend_from_slice(config);
                            put(&dir, target, &format!("kernel-{i}"), &data)?;
                        }
                    } else {
                        put(&dir, target, &format!("kernel-{i}"), &mini)?;
                    }
                }
            }
            _ => {}
        }
        counts.push((target.name.clone(), fs::read_dir(&dir)?.count()));
    }
    Ok(counts)
}

/// Makes `command`'s process background work. `nice -n 19` alone is not enough where the
/// kernel groups processes by session (CONFIG_SCHED_AUTOGROUP, on in Debian's and Ubuntu's
/// kernels): niceness then only orders processes of one session, and a fuzzer shared the CPU
/// evenly with builds and boots started from another terminal (a `cargo xtask test` took
/// 584 s beside the fuzzers instead of 153 s). So the child gets a session, and with it an
/// autogroup, of its own, and sets that group's nice to 19 (`/proc/self/autogroup`, sched(7));
/// it gets SIGTERM if xtask dies, since a terminal's Ctrl-C no longer reaches it.
pub fn run_in_background(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: between fork and exec the closure makes only async-signal-safe calls (setsid,
    // prctl, open, write, close) on a static path and a static buffer, and allocates nothing.
    unsafe {
        command.pre_exec(|| {
            libc::setsid();
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            let fd = libc::open(c"/proc/self/autogroup".as_ptr(), libc::O_WRONLY);
            if fd >= 0 {
                // Best effort: a kernel without autogroups has no such file.
                libc::write(fd, b"19".as_ptr().cast(), 2);
                libc::close(fd);
            }
            Ok(())
        });
    }
}

/// CPU time of the waited-for children so far, in seconds.
fn children_cpu_seconds() -> f64 {
    // SAFETY: getrusage writes one rusage struct, which lives on this stack frame.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above; RUSAGE_CHILDREN is a valid `who`.
    if unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) } != 0 {
        return 0.0;
    }
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

/// The outcome of fuzzing one target.
struct Outcome {
    stats: Stats,
    cpu_seconds: f64,
    crashes: Vec<PathBuf>,
}

fn fuzz_one(root: &Path, binaries: &Path, target: &Target, seconds: u64) -> Result<Outcome> {
    let corpus = root.join("target/xtask-fuzz/corpus").join(&target.name);
    let artifacts = root.join("target/xtask-fuzz/artifacts").join(&target.name);
    let logs = root.join("target/xtask-fuzz/logs");
    for dir in [&corpus, &artifacts, &logs] {
        fs::create_dir_all(dir)?;
    }
    let before: BTreeSet<PathBuf> = files_in(&artifacts, "").into_iter().collect();
    let mut command = Command::new("nice");
    command
        .args(["-n", "19"])
        .arg(binaries.join(&target.name))
        .arg(&corpus)
        .args(
            [
                root.join("fuzz/seeds").join(&target.name),
                root.join("target/xtask-fuzz/seeds").join(&target.name),
            ]
            .into_iter()
            .filter(|d| d.is_dir()),
        )
        .arg(format!("-max_total_time={seconds}"))
        .arg(format!("-max_len={}", target.max_len))
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .args(["-print_final_stats=1", "-timeout=10", "-rss_limit_mb=2048", "-close_fd_mask=1"])
        .current_dir(root)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    run_in_background(&mut command);
    let cpu_before = children_cpu_seconds();
    let output =
        command.output().with_context(|| format!("cannot start the fuzzer {}", target.name))?;
    let cpu_seconds = children_cpu_seconds() - cpu_before;
    let text = String::from_utf8_lossy(&output.stderr);
    let log = logs.join(format!("{}.log", target.name));
    fs::write(&log, text.as_bytes())?;
    let stats = parse_stats(&text);
    let mut crashes = Vec::new();
    for artifact in files_in(&artifacts, "") {
        if before.contains(&artifact) {
            continue;
        }
        let saved_dir = root.join("fuzz/regressions").join(&target.name);
        fs::create_dir_all(&saved_dir)?;
        let saved = saved_dir.join(artifact.file_name().unwrap());
        fs::copy(&artifact, &saved)?;
        crashes.push(saved);
    }
    if !output.status.success() && crashes.is_empty() {
        bail!("the fuzzer {} failed without a crash file; see {}", target.name, log.display());
    }
    Ok(Outcome { stats, cpu_seconds, crashes })
}

/// `cargo xtask fuzz`: all targets, or one, for `seconds` each.
pub fn run(only: Option<&str>, seconds: u64, seeds_only: bool) -> Result<bool> {
    let root = project_root();
    let all = targets(&root)?;
    let selected: Vec<Target> = match only {
        Some(name) => {
            let Some(target) = all.iter().find(|t| t.name == name) else {
                let names: Vec<&str> = all.iter().map(|t| t.name.as_str()).collect();
                bail!("no fuzz target {name}; the targets are {}", names.join(", "));
            };
            vec![target.clone()]
        }
        None => all,
    };
    let seeded = generate_seeds(&root, &selected)?;
    if seeds_only {
        for (name, count) in seeded {
            let committed = files_in(&root.join("fuzz/seeds").join(&name), "").len();
            println!("{name}: {count} seeds made in target/xtask-fuzz/seeds/{name}, {committed} committed in fuzz/seeds/{name}");
        }
        return Ok(true);
    }
    if seconds == 0 {
        bail!("--seconds must be at least 1");
    }
    require_cargo_fuzz()?;
    let binaries = build(&root)?;
    println!(
        "{:<20} {:>7} {:>11} {:>8} {:>6} {:>7} {:>6}  result",
        "target", "cpu s", "executions", "exec/s", "cov", "ft", "corpus"
    );
    let started = Instant::now();
    let mut crashed = Vec::new();
    for target in &selected {
        let outcome = fuzz_one(&root, &binaries, target, seconds)?;
        let s = &outcome.stats;
        let result = if outcome.crashes.is_empty() {
            "ok".to_owned()
        } else {
            let names: Vec<String> =
                outcome.crashes.iter().map(|p| p.display().to_string()).collect();
            format!("CRASH saved to {}", names.join(", "))
        };
        println!(
            "{:<20} {:>7.1} {:>11} {:>8} {:>6} {:>7} {:>6}  {result}",
            target.name,
            outcome.cpu_seconds,
            s.executions,
            s.per_second,
            s.coverage,
            s.features,
            s.corpus
        );
        if !outcome.crashes.is_empty() {
            crashed.push(target.name.clone());
        }
    }
    println!(
        "{} targets in {:.0} s; logs in target/xtask-fuzz/logs, corpora in target/xtask-fuzz/corpus",
        selected.len(),
        started.elapsed().as_secs_f64()
    );
    if !crashed.is_empty() {
        eprintln!(
            "crash in {}: the inputs are in fuzz/regressions/<target>/, which the host tests replay \
             (fuzz/tests/replay.rs); fix the parser, keep the input",
            crashed.join(", ")
        );
    }
    Ok(crashed.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fuzzer_runs_in_a_session_and_autogroup_of_its_own_at_nice_19() {
        let mut command = Command::new("sh");
        // Field 6 of /proc/PID/stat is the session id (proc(5)); `sh` has no space in its name.
        command.args([
            "-c",
            "cut -d' ' -f6 /proc/$$/stat; cat /proc/$$/autogroup 2>/dev/null || true",
        ]);
        run_in_background(&mut command);
        let output = command.output().expect("sh runs");
        let text = String::from_utf8_lossy(&output.stdout);
        let mut lines = text.lines();
        let child_sid: i32 =
            lines.next().and_then(|l| l.trim().parse().ok()).expect("a session id");
        // SAFETY: getsid(0) only reads this process's session id.
        assert_ne!(child_sid, unsafe { libc::getsid(0) }, "the child kept xtask's session");
        // Where the kernel has autogroups, the child's group runs at nice 19.
        if std::path::Path::new("/proc/self/autogroup").exists() {
            let group = lines.next().unwrap_or_default();
            assert!(group.ends_with("nice 19"), "autogroup line {group:?}");
        }
    }

    #[test]
    fn reads_libfuzzer_final_statistics() {
        let output = "INFO: Seed: 1\n#2\tINITED cov: 10 ft: 12 corp: 1/1b exec/s: 0 rss: 30Mb\n\
                      #4096\tpulse  cov: 57 ft: 80 corp: 9/90b lim: 43 exec/s: 2048 rss: 31Mb\n\
                      #9000\tDONE   cov: 61 ft: 95 corp: 12/130b lim: 43 exec/s: 3000 rss: 31Mb\n\
                      Done 9000 runs in 3 second(s)\nstat::number_of_executed_units: 9000\n\
                      stat::average_exec_per_sec:     3000\nstat::new_units_added:          11\n\
                      stat::slowest_unit_time_sec:    0\nstat::peak_rss_mb:              31\n";
        let stats = parse_stats(output);
        assert_eq!(
            stats,
            Stats {
                executions: 9000,
                per_second: 3000,
                coverage: 61,
                features: 95,
                corpus: 12,
                peak_rss_mb: 31
            }
        );
        assert_eq!(parse_stats("garbage\n#x cov: y\n"), Stats::default());
    }

    #[test]
    fn every_target_declares_its_length() {
        let targets = targets(&project_root()).unwrap();
        assert!(targets.len() >= 19, "{targets:?}");
        assert!(targets.iter().all(|t| t.max_len > 0));
        assert!(targets.iter().any(|t| t.name == "ve_decode_diff"));
    }

    #[test]
    fn the_kernel_shaped_elf_seed_parses_and_relocates() {
        // A tiny kernel: one RX and one RW segment, entry in the first; mini_elf keeps them and
        // adds the dynamic table and config section the loader reads.
        let config = [0xabu8; 124];
        let mut kernel = vec![0u8; 0x3000];
        kernel[..4].copy_from_slice(b"\x7fELF");
        kernel[4] = 2;
        kernel[5] = 1;
        kernel[6] = 1;
        kernel[16..18].copy_from_slice(&3u16.to_le_bytes());
        kernel[18..20].copy_from_slice(&62u16.to_le_bytes());
        kernel[24..32].copy_from_slice(&0x1000u64.to_le_bytes());
        kernel[32..40].copy_from_slice(&64u64.to_le_bytes());
        kernel[54..56].copy_from_slice(&56u16.to_le_bytes());
        kernel[56..58].copy_from_slice(&2u16.to_le_bytes());
        for (i, (flags, at)) in [(5u32, 0x1000u64), (6, 0x2000)].iter().enumerate() {
            let h = 64 + 56 * i;
            kernel[h..h + 4].copy_from_slice(&1u32.to_le_bytes());
            kernel[h + 4..h + 8].copy_from_slice(&flags.to_le_bytes());
            kernel[h + 8..h + 16].copy_from_slice(&at.to_le_bytes());
            kernel[h + 16..h + 24].copy_from_slice(&at.to_le_bytes());
            kernel[h + 32..h + 40].copy_from_slice(&0x1000u64.to_le_bytes());
            kernel[h + 40..h + 48].copy_from_slice(&0x1000u64.to_le_bytes());
        }
        // Section headers: null, .bootloader-config, .shstrtab.
        let names = b"\0.bootloader-config\0.shstrtab\0";
        let (config_at, names_at, shoff) = (0x2100usize, 0x2300usize, 0x2400usize);
        kernel[config_at..config_at + config.len()].copy_from_slice(&config);
        kernel[names_at..names_at + names.len()].copy_from_slice(names);
        for (i, (name, at, size)) in
            [(1u32, config_at, config.len()), (20, names_at, names.len())].iter().enumerate()
        {
            let s = shoff + 64 * (i + 1);
            kernel[s..s + 4].copy_from_slice(&name.to_le_bytes());
            kernel[s + 24..s + 32].copy_from_slice(&(*at as u64).to_le_bytes());
            kernel[s + 32..s + 40].copy_from_slice(&(*size as u64).to_le_bytes());
        }
        kernel[40..48].copy_from_slice(&(shoff as u64).to_le_bytes());
        kernel[58..60].copy_from_slice(&64u16.to_le_bytes());
        kernel[60..62].copy_from_slice(&3u16.to_le_bytes());
        kernel[62..64].copy_from_slice(&2u16.to_le_bytes());

        let mini = mini_elf(&kernel).expect("a seed");
        assert!(mini.len() < 4096, "{} bytes", mini.len());
        let parsed = loader_core::elf::Kernel::parse(&mini).unwrap();
        assert_eq!(parsed.entry(), 0x1000);
        assert_eq!(parsed.section(b".bootloader-config").unwrap(), &config[..]);
        let mut image = vec![0u8; parsed.image_len() as usize];
        parsed.load_into(&mut image);
        assert_eq!(parsed.relocate(&mut image, 0x10_0000), Ok(1));
    }
}
