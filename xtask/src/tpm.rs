//! The TPM runs: a boot with swtpm as the machine's TPM, judged on what the TPM itself holds
//! after QEMU exits, not on what the guest says (issue 19, acceptance 1).
//!
//! swtpm runs in the run's own directory under `target/xtask-logs/`, on a unix control socket
//! (ATTEST-FACTS §6: `swtpm socket --tpm2 --ctrl type=unixio`, QEMU `-tpmdev emulator -device
//! tpm-tis`; no `startup-clear`, the firmware starts the TPM). After QEMU exits the harness
//! stores the TPM's volatile state (`swtpm_ioctl -v`), shuts it down (`-s`), starts swtpm again
//! from the same state on 127.0.0.1 (`--server type=tcp`), resumes it (`swtpm_ioctl -i`) and
//! reads the SHA-256 PCRs with `tpm2_pcrread`. Then:
//!
//! - `host.tpm.pcr9`: PCR 9 equals the replay of our loader's one event over the `kernel.elf`
//!   the build produced (`measure::pcr9_after`): SHA-256(zeros || SHA-256(file)). The
//!   expected-failure twin boots a `kernel.elf` that differs in one byte (`LoaderKind::
//!   OwnFlippedKernel`) and must get a different PCR 9.
//! - `host.tpm.log_replay`: the firmware's event log the loader printed (`# TCGLOG` lines,
//!   taken with EFI_TCG2_PROTOCOL.GetEventLog before ExitBootServices) replays to the PCRs read
//!   from the TPM, for PCRs 0-9. PCR 5 also gets the two EV_EFI_ACTION events the firmware logs
//!   at ExitBootServices, after the loader took the log (EDK2 Tcg2Dxe `OnExitBootServices`:
//!   "Exit Boot Services Invocation", "Exit Boot Services Returned with Success"), which only
//!   the final-events table would show.
//! - `host.tpm.loader_event`: the log's EV_EFI_BOOT_SERVICES_APPLICATION entry in PCR 4 for our
//!   loader carries the Authenticode SHA-256 `cargo xtask measure` predicts, and its PCR 9 entry
//!   the SHA-256 of the `kernel.elf` on the disk.

use crate::build::LoaderKind;
use crate::report::{Check, CheckResult};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use tdx_attest::event_log::{EventLog, ALG_SHA256, EV_EFI_BOOT_SERVICES_APPLICATION};

/// The tools a TPM run needs (Debian packages swtpm, swtpm-tools, tpm2-tools).
const TOOLS: [&str; 3] = ["swtpm", "swtpm_ioctl", "tpm2_pcrread"];

/// The PCRs read back and replayed.
const PCRS: std::ops::RangeInclusive<usize> = 0..=9;

/// Whether a run boots with a TPM: the `tpm:` runs and their expected-failure twin.
pub fn wanted(id: &str) -> bool {
    id.starts_with("tpm:") || id == FLIPPED_RUN
}

/// The expected-failure twin: its `kernel.elf` differs in one byte.
pub const FLIPPED_RUN: &str = "harness:tpm-flipped-kernel";

/// `Err` names the missing tool: the run is skipped with that reason.
pub fn tools_present() -> Result<(), String> {
    for tool in TOOLS {
        if crate::qemu::find_in_path(Path::new(tool)).is_none() {
            return Err(format!(
                "{tool} is not installed (Debian packages swtpm, swtpm-tools, tpm2-tools; \
                 scripts/setup.sh installs them)"
            ));
        }
    }
    Ok(())
}

/// A swtpm daemon serving one run, stopped when dropped.
pub struct Swtpm {
    dir: PathBuf,
    ctrl: PathBuf,
}

fn run_tool(command: &mut Command) -> Result<String> {
    let output = command.output().with_context(|| format!("cannot run {command:?}"))?;
    if !output.status.success() {
        bail!(
            "{command:?} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn wait_for(what: &str, mut ready: impl FnMut() -> bool) -> Result<()> {
    let start = Instant::now();
    while !ready() {
        if start.elapsed() > Duration::from_secs(10) {
            bail!("{what} did not appear within 10 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// Two consecutive TCP ports on 127.0.0.1 that were free a moment ago: the TPM's and its
/// control channel's (tpm2-tss' swtpm TCTI takes the control port as the TPM's port + 1).
fn free_ports() -> Result<(u16, u16)> {
    for _ in 0..32 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").context("no free local port")?;
        let port = listener.local_addr()?.port();
        let Some(next) = port.checked_add(1) else { continue };
        if std::net::TcpListener::bind(("127.0.0.1", next)).is_ok() {
            return Ok((port, next));
        }
    }
    bail!("no two consecutive free local ports")
}

impl Swtpm {
    /// Starts swtpm with a fresh state in `dir` (absolute paths: the daemon changes directory).
    pub fn start(dir: &Path) -> Result<Self> {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let dir = dir.canonicalize()?;
        let ctrl = dir.join("ctrl.sock");
        run_tool(
            Command::new("swtpm")
                .args(["socket", "--tpm2", "--daemon", "--tpmstate"])
                .arg(format!("dir={}", dir.display()))
                .arg("--ctrl")
                .arg(format!("type=unixio,path={}", ctrl.display()))
                .arg("--pid")
                .arg(format!("file={}", dir.join("swtpm.pid").display()))
                .arg("--log")
                .arg(format!("file={},level=1", dir.join("swtpm.log").display())),
        )?;
        let tpm = Swtpm { dir, ctrl };
        wait_for("swtpm's control socket", || tpm.ctrl.exists())?;
        Ok(tpm)
    }

    pub fn qemu_args(&self) -> Vec<String> {
        [
            "-chardev",
            &format!("socket,id=chrtpm,path={}", self.ctrl.display()),
            "-tpmdev",
            "emulator,id=tpm0,chardev=chrtpm",
            "-device",
            "tpm-tis,tpmdev=tpm0",
        ]
        .map(String::from)
        .to_vec()
    }

    fn pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.dir.join("swtpm.pid")).ok()?.trim().parse().ok()
    }

    fn running(&self) -> bool {
        // SAFETY: signal 0 only asks whether the process exists.
        self.pid().is_some_and(|pid| unsafe { libc::kill(pid, 0) } == 0)
    }

    /// After QEMU exited: the SHA-256 PCRs `PCRS`, read from the TPM itself.
    pub fn read_pcrs(self) -> Result<Vec<[u8; 32]>> {
        let unix = ["--unix", &self.ctrl.display().to_string()].map(String::from);
        run_tool(Command::new("swtpm_ioctl").args(&unix).arg("-v"))?;
        run_tool(Command::new("swtpm_ioctl").args(&unix).arg("-s"))?;
        wait_for("the first swtpm's exit", || !self.running())?;
        let (port, ctrl_port) = free_ports()?;
        run_tool(
            Command::new("swtpm")
                .args(["socket", "--tpm2", "--daemon", "--tpmstate"])
                .arg(format!("dir={}", self.dir.display()))
                .arg("--server")
                .arg(format!("type=tcp,port={port},bindaddr=127.0.0.1"))
                .arg("--ctrl")
                .arg(format!("type=tcp,port={ctrl_port},bindaddr=127.0.0.1"))
                .arg("--pid")
                .arg(format!("file={}", self.dir.join("swtpm.pid").display()))
                .arg("--log")
                .arg(format!("file={},level=1", self.dir.join("swtpm-read.log").display())),
        )?;
        let tcp = ["--tcp", &format!("127.0.0.1:{ctrl_port}")].map(String::from);
        let read = (|| {
            run_tool(Command::new("swtpm_ioctl").args(&tcp).arg("-i"))?;
            let list: Vec<String> = PCRS.map(|i| i.to_string()).collect();
            run_tool(Command::new("tpm2_pcrread").args([
                "-T",
                &format!("swtpm:host=127.0.0.1,port={port}"),
                &format!("sha256:{}", list.join(",")),
            ]))
        })();
        let _ = run_tool(Command::new("swtpm_ioctl").args(&tcp).arg("-s"));
        let text = read?;
        std::fs::write(self.dir.join("pcrs.txt"), &text)?;
        parse_pcrread(&text)
    }
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        // Whatever happened, no daemon outlives the run.
        if self.running() {
            if let Some(pid) = self.pid() {
                // SAFETY: our own daemon's pid, read from the pid file it wrote.
                unsafe { libc::kill(pid, libc::SIGTERM) };
            }
        }
    }
}

/// `tpm2_pcrread` output: `  sha256:` then `    N : 0xHEX` lines.
pub fn parse_pcrread(text: &str) -> Result<Vec<[u8; 32]>> {
    let mut pcrs = vec![None; *PCRS.end() + 1];
    for line in text.lines() {
        let Some((index, value)) = line.trim().split_once(" : 0x") else { continue };
        let index: usize = index.trim().parse().context("tpm2_pcrread: bad PCR index")?;
        let bytes = hex_bytes(value.trim()).context("tpm2_pcrread: bad PCR value")?;
        let value: [u8; 32] =
            bytes.try_into().map_err(|_| anyhow::anyhow!("tpm2_pcrread: not a SHA-256 value"))?;
        if let Some(slot) = pcrs.get_mut(index) {
            *slot = Some(value);
        }
    }
    pcrs.into_iter()
        .enumerate()
        .map(|(i, v)| v.with_context(|| format!("tpm2_pcrread printed no sha256 PCR {i}")))
        .collect()
}

fn hex_bytes(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok()).collect()
}

/// The firmware's event log from the loader's `# TCGLOG` lines.
pub fn extract_log(output: &str) -> Result<Vec<u8>, String> {
    let mut log = Vec::new();
    let mut expected_len = None;
    for line in output.lines() {
        let Some(rest) = line.trim_end_matches('\r').strip_prefix("# TCGLOG ") else { continue };
        if let Some(header) = rest.strip_prefix("BEGIN len=") {
            let len = header.split_whitespace().next().unwrap_or("");
            expected_len = Some(len.parse::<usize>().map_err(|_| "bad TCGLOG BEGIN line")?);
            continue;
        }
        if rest == "END" {
            break;
        }
        let (offset, hex) = rest.split_once(' ').ok_or("bad TCGLOG line")?;
        let offset = usize::from_str_radix(offset, 16).map_err(|_| "bad TCGLOG offset")?;
        if offset != log.len() {
            return Err(format!("TCGLOG line at {offset:#x}, expected {:#x}", log.len()));
        }
        log.extend(hex_bytes(hex).ok_or("bad TCGLOG hex")?);
    }
    match expected_len {
        None => Err("the loader printed no event log (# TCGLOG lines)".into()),
        Some(len) if len != log.len() => {
            Err(format!("TCGLOG says {len} bytes, {} arrived", log.len()))
        }
        Some(_) => Ok(log),
    }
}

fn sha256_extend(old: &[u8; 32], value: &[u8; 32]) -> [u8; 32] {
    tdx_attest::sha256(&[old, value])
}

/// The EV_EFI_ACTION strings EDK2's Tcg2Dxe logs into PCR 5 at ExitBootServices
/// (`OnExitBootServices`, EFI_EXIT_BOOT_SERVICES_INVOCATION / _SUCCEEDED), after the loader
/// took the log.
const EXIT_BOOT_SERVICES_ACTIONS: [&str; 2] =
    ["Exit Boot Services Invocation", "Exit Boot Services Returned with Success"];

/// Checks the printed log against the PCRs read from the TPM; returns what it replayed.
pub fn check_log(log: &[u8], pcrs: &[[u8; 32]]) -> Result<String, String> {
    let parsed = EventLog::parse(log).map_err(|e| format!("event log: {e:?}"))?;
    let mut replayed = [[0u8; 32]; 24];
    let extended = parsed.replay(ALG_SHA256, &mut replayed, sha256_extend);
    for action in EXIT_BOOT_SERVICES_ACTIONS {
        replayed[5] = sha256_extend(&replayed[5], &tdx_attest::sha256(&[action.as_bytes()]));
    }
    let wrong: Vec<String> = PCRS
        .filter(|&i| replayed[i] != pcrs[i])
        .map(|i| {
            format!(
                "PCR {i}: TPM {} log {}",
                crate::attest::hex(&pcrs[i]),
                crate::attest::hex(&replayed[i])
            )
        })
        .collect();
    if !wrong.is_empty() {
        return Err(format!(
            "the event log does not replay to the TPM's PCRs: {}",
            wrong.join("; ")
        ));
    }
    Ok(format!(
        "{extended} events ({} bytes) replay to PCRs 0-9 (PCR 5 with the 2 ExitBootServices actions)",
        log.len()
    ))
}

/// The log's PCR 4 boot-application entry for our loader, and its PCR 9 entry for the kernel.
pub fn check_entries(log: &[u8], loader: &[u8], kernel_on_disk: &[u8]) -> Result<String, String> {
    let parsed = EventLog::parse(log).map_err(|e| format!("event log: {e:?}"))?;
    let predicted = crate::measure::loader_event(loader).map_err(|e| e.to_string())?;
    let apps: Vec<String> = parsed
        .events()
        .filter(|e| e.index == 4 && e.event_type == EV_EFI_BOOT_SERVICES_APPLICATION)
        .filter_map(|e| e.digest(ALG_SHA256).map(crate::attest::hex))
        .collect();
    if !apps.contains(&predicted.sha256) {
        return Err(format!(
            "no PCR 4 boot-application entry with the predicted loader hash {} (entries: {})",
            predicted.sha256,
            apps.join(", ")
        ));
    }
    let kernel = crate::attest::hex(&tdx_attest::sha256(&[kernel_on_disk]));
    let ours: Vec<_> =
        parsed.events().filter(|e| e.index == loader_core::kernel_event::PCR).collect();
    let [event] = ours.as_slice() else {
        return Err(format!("{} PCR 9 entries in the log, expected our loader's one", ours.len()));
    };
    if event.event_type != loader_core::kernel_event::EVENT_TYPE
        || event.data != loader_core::kernel_event::event_data()
        || event.digest(ALG_SHA256).map(crate::attest::hex) != Some(kernel.clone())
    {
        return Err("the PCR 9 entry is not the tagged kernel.elf event of the file on disk".into());
    }
    Ok(format!(
        "loader Authenticode SHA-256 {} as predicted; kernel.elf {kernel}",
        predicted.sha256
    ))
}

/// The built `kernel.elf` for an image in a variant's target directory.
fn built_kernel(image: &Path) -> PathBuf {
    image.with_file_name("x86_64-unknown-none/release/kernel")
}

/// The host's TPM checks for a finished run; `judged` turns into an error when one fails (or,
/// for the flipped twin, when PCR 9 matches).
pub fn judge(
    loader: LoaderKind,
    tpm: Swtpm,
    image: &Path,
    output: &str,
    tests: &mut Vec<Check>,
    judged: &mut Result<(), String>,
) {
    let mut check = |name: &str, outcome: Result<String, String>| {
        tests.push(Check {
            name: name.into(),
            result: if outcome.is_ok() { CheckResult::Pass } else { CheckResult::Fail },
            detail: outcome.clone().unwrap_or_else(|e| e),
        });
        outcome
    };
    let pcrs = tpm.read_pcrs().map_err(|e| format!("reading the PCRs from swtpm: {e:#}"));
    let expected = std::fs::read(built_kernel(image))
        .map_err(|e| format!("cannot read the built kernel: {e}"))
        .map(|k| crate::measure::pcr9_after(&k));
    let pcr9 = match (&pcrs, &expected) {
        (Ok(pcrs), Ok(expected)) if pcrs[9] == *expected => Ok(format!(
            "PCR 9 = {} = the replay over the built kernel.elf",
            crate::attest::hex(expected)
        )),
        (Ok(pcrs), Ok(expected)) => Err(format!(
            "PCR 9 from swtpm {} differs from the replay over the built kernel.elf {}",
            crate::attest::hex(&pcrs[9]),
            crate::attest::hex(expected)
        )),
        (Err(e), _) | (_, Err(e)) => Err(e.clone()),
    };
    if loader == LoaderKind::OwnFlippedKernel {
        // The twin: PCR 9 must differ, and the harness must say so.
        let outcome = match pcr9 {
            Err(e) if e.contains("differs") => Ok(e),
            Err(e) => Err(e),
            Ok(_) => Err("PCR 9 matched although the disk's kernel.elf differs by one byte".into()),
        };
        if let Err(e) = check("host.tpm.pcr9_differs", outcome) {
            if judged.is_ok() {
                *judged = Err(e);
            }
        }
        return;
    }
    let disk = std::fs::read(image)
        .map_err(|e| e.to_string())
        .and_then(|disk| boot::esp::read_files(&disk));
    let log = extract_log(output);
    let replay = match (&log, &pcrs) {
        (Ok(log), Ok(pcrs)) => check_log(log, pcrs),
        (Err(e), _) | (_, Err(e)) => Err(e.clone()),
    };
    let entries = match (&log, &disk) {
        (Ok(log), Ok((loader, kernel))) => check_entries(log, loader, kernel),
        (Err(e), _) | (_, Err(e)) => Err(e.clone()),
    };
    for (name, outcome) in [
        ("host.tpm.pcr9", pcr9),
        ("host.tpm.log_replay", replay),
        ("host.tpm.loader_event", entries),
    ] {
        if let (Err(e), true) = (check(name, outcome), judged.is_ok()) {
            *judged = Err(format!("{name}: {e}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pcrread_output_parses() {
        let mut text = String::from("  sha256:\n");
        for i in 0..=9 {
            text += &format!("    {i} : 0x{}\n", format!("{i:02X}").repeat(32));
        }
        let pcrs = parse_pcrread(&text).unwrap();
        assert_eq!(pcrs[9], [9u8; 32]);
        assert!(parse_pcrread("  sha256:\n    0 : 0x00\n").is_err());
    }

    #[test]
    fn printed_log_round_trips_and_gaps_fail() {
        let out =
            "x\r\n# TCGLOG BEGIN len=3 truncated=0\r\n# TCGLOG 000000 0a0b0c\r\n# TCGLOG END\r\n";
        assert_eq!(extract_log(out).unwrap(), vec![10, 11, 12]);
        let gap = "# TCGLOG BEGIN len=3 truncated=0\n# TCGLOG 000001 0a0b0c\n# TCGLOG END\n";
        assert!(extract_log(gap).is_err());
        assert!(extract_log("nothing").is_err());
    }

    /// A log with one kernel event replays to PCR 9 = `pcr9_after`, and a PCR 9 that differs is
    /// named.
    #[test]
    fn log_replay_names_the_wrong_pcr() {
        use tdx_attest::event_log::{write_event2, write_spec_id_header};
        let mut log = vec![0u8; 4096];
        let mut at = write_spec_id_header(&mut log, &[(ALG_SHA256, 32)]).unwrap();
        let kernel = b"kernel bytes";
        let digest = tdx_attest::sha256(&[kernel]);
        at += write_event2(
            &mut log[at..],
            9,
            loader_core::kernel_event::EVENT_TYPE,
            ALG_SHA256,
            &digest,
            &loader_core::kernel_event::event_data(),
        )
        .unwrap();
        log.truncate(at);
        let mut pcrs = vec![[0u8; 32]; 10];
        for action in EXIT_BOOT_SERVICES_ACTIONS {
            pcrs[5] = sha256_extend(&pcrs[5], &tdx_attest::sha256(&[action.as_bytes()]));
        }
        pcrs[9] = crate::measure::pcr9_after(kernel);
        assert!(check_log(&log, &pcrs).is_ok());
        pcrs[9][0] ^= 1;
        assert!(check_log(&log, &pcrs).unwrap_err().contains("PCR 9"));
    }
}
