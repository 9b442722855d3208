//! Starting QEMU for the non-TD runs, with a hard timeout and no orphans.
//!
//! Every command line gets `-nic none`, `-display none` and `-no-reboot`. QEMU is killed when
//! the timeout expires, when the runner is dropped, and (through PR_SET_PDEATHSIG) when xtask
//! itself dies, e.g. on Ctrl-C. It is also stopped at once when the firmware refuses our loader
//! because of Secure Boot ([`crate::secure_boot`]): the firmware then waits in its boot menu
//! forever, and the run has its answer.

use crate::machine::{tcg_cpu, Disk, Machine};
use anyhow::{bail, Context, Result};
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The fw_cfg file the kernel reads its boot mode from (kernel/src/bootflags.rs).
pub const MODE_FW_CFG_NAME: &str = "opt/tdx-unikernel/mode";

/// QEMU's binary: `$QEMU`, else `qemu-system-x86_64` from PATH.
pub fn qemu_binary() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("QEMU") {
        let path = PathBuf::from(path);
        if path.components().count() > 1 && !path.is_file() {
            bail!("QEMU={} does not exist", path.display());
        }
        return find_in_path(&path)
            .with_context(|| format!("QEMU={} is not an executable", path.display()));
    }
    find_in_path(Path::new("qemu-system-x86_64")).context(
        "qemu-system-x86_64 not found: run scripts/setup.sh (apt-get install qemu-system-x86), or set QEMU=/path/to/qemu-system-x86_64",
    )
}

/// The QEMU binary's version (major, minor, micro), from `QEMU -version`.
pub fn version(qemu: &Path) -> Result<(u32, u32, u32)> {
    use crate::td::doctor::{parse_qemu_version, run_with_timeout, QEMU_PROBE_TIMEOUT};
    let output =
        run_with_timeout(qemu, &["-version"], QEMU_PROBE_TIMEOUT).map_err(anyhow::Error::msg)?;
    parse_qemu_version(&output).with_context(|| {
        format!(
            "cannot read a version from `{} -version`: {:?}",
            qemu.display(),
            output.lines().next().unwrap_or("")
        )
    })
}

pub fn find_in_path(program: &Path) -> Option<PathBuf> {
    if program.components().count() > 1 {
        return is_executable(program).then(|| program.to_owned());
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// What a non-TD boot needs.
pub struct BootSpec<'a> {
    pub firmware: &'a ovmf::Firmware,
    pub image: &'a Path,
    pub kvm: bool,
    /// The QEMU machine: q35 with its defaults, or the machine a TD gets.
    pub machine: Machine,
    /// The kernel's boot mode (fw_cfg), or None for the default (native).
    pub mode: Option<&'a str>,
    pub extra_args: &'a [String],
    /// Offer 5-level paging (CPUID LA57) to the guest: [`crate::machine::tcg_cpu`].
    pub la57: bool,
    /// A virtio console writing to this file ([`crate::machine::virtio_console_args_tcg`]).
    pub virtio_console: Option<&'a Path>,
    /// Guest memory other than the machine's ([`Machine::tcg_memory`]).
    pub memory: Option<&'a str>,
}

/// Guest memory of the 5-level-paging boots (`harness:la57-*`), all below 4 GiB.
const LA57_MEMORY: &str = "512M";

/// The QEMU arguments for a TCG (or `--kvm`) boot of the image with the UEFI firmware.
pub fn boot_args(spec: &BootSpec) -> Vec<String> {
    let image = crate::td::qemu::qemu_opt_escape(&spec.image.display().to_string());
    let mut args = spec.machine.args(&[], &Disk { file: &image, snapshot: true });
    if spec.kvm {
        args.extend(["-accel".into(), "kvm".into(), "-cpu".into(), "host".into()]);
    } else {
        args.extend(["-accel".into(), "tcg".into(), "-cpu".into(), tcg_cpu(spec.la57).into()]);
    }
    // A 5-level-paging boot keeps all RAM below 4 GiB: plain OVMF (not in a TD) may load our
    // loader above 4 GiB when there is conventional RAM there, and the loader refuses to leave
    // LA57 from a trampoline out of reach of its 32-bit switch. In a TD, TDVF leaves the RAM
    // above 4 GiB unaccepted, so firmware allocations stay below it.
    let memory = match spec.memory {
        Some(memory) => memory,
        None if spec.la57 => LA57_MEMORY,
        None => spec.machine.tcg_memory(),
    };
    args.extend(["-m".into(), memory.into()]);
    match &spec.firmware.vars {
        None => args.extend(["-bios".into(), spec.firmware.code.display().to_string()]),
        Some(vars) => args.extend([
            "-drive".into(),
            format!("if=pflash,format=raw,readonly=on,file={}", spec.firmware.code.display()),
            "-drive".into(),
            // snapshot=on: the guest's variable writes go to a temporary overlay, so parallel
            // boots can share the run's VARS copy (QEMU would refuse a second writer's lock).
            format!("if=pflash,format=raw,snapshot=on,file={}", vars.display()),
        ]),
    }
    args.extend([
        "-nic".into(),
        "none".into(),
        "-display".into(),
        "none".into(),
        "-no-reboot".into(),
    ]);
    if let Some(mode) = spec.mode {
        args.extend(["-fw_cfg".into(), format!("name={MODE_FW_CFG_NAME},string={mode}")]);
    }
    if let Some(path) = spec.virtio_console {
        let path = crate::td::qemu::qemu_opt_escape(&path.display().to_string());
        args.extend(crate::machine::virtio_console_args_tcg(&path));
    }
    args.extend(spec.extra_args.iter().cloned());
    args
}

/// `args` without the isa-debug-exit device: the machine a production TD gets, where the
/// kernel's exit write to 0xf4 is dropped and it must park its vCPU (kernel/src/exit.rs).
pub fn without_debug_exit(args: &[String]) -> Vec<String> {
    let mut out = Vec::with_capacity(args.len());
    let mut i = 0;
    while i < args.len() {
        if args[i] == "-device" && args.get(i + 1).is_some_and(|d| d.starts_with("isa-debug-exit"))
        {
            i += 2;
            continue;
        }
        out.push(args[i].clone());
        i += 1;
    }
    out
}

/// How a QEMU process ended.
#[derive(Debug)]
pub struct Finished {
    /// QEMU's exit status; None when it was killed (timeout) or died by a signal.
    pub status: Option<i32>,
    pub timed_out: bool,
    pub output: String,
    pub wall: Duration,
    /// The NMIs injected over QMP, when the limits asked for them.
    pub nmis: Option<NmisSent>,
}

/// When to stop waiting for QEMU.
#[derive(Clone, Debug)]
pub struct Limits {
    /// The hard limit from the start.
    pub timeout: Duration,
    /// Stop this long after the guest printed this text (for a guest that is meant to hang).
    pub stop_after_marker: Option<(String, Duration)>,
    /// Inject NMIs over QMP (the QEMU command line must carry `-qmp unix:<socket>,...`).
    pub nmis: Option<NmiInjection>,
}

impl Limits {
    pub fn timeout(timeout: Duration) -> Self {
        Self { timeout, stop_after_marker: None, nmis: None }
    }
}

/// NMIs injected into the running guest through QEMU's QMP `inject-nmi`, as a host
/// administrator does (`virsh inject-nmi`): `count` of them once the guest printed `after`,
/// each after the previous one was acknowledged and 20 ms apart (so that two never merge into
/// one pending NMI), then one every 10 ms while QEMU runs.
#[derive(Clone, Debug)]
pub struct NmiInjection {
    /// The QMP unix socket, in the run's temporary directory.
    pub socket: PathBuf,
    /// The guest's line that says it waits for them (after its IDT is live: an NMI that lands in
    /// the firmware, before the kernel's handler, is not the kernel's to survive).
    pub after: String,
    pub count: u32,
}

/// What the injector did.
#[derive(Clone, Debug, Default)]
pub struct NmisSent {
    /// Acknowledged by QEMU after the guest's marker, among the first `count`.
    pub counted: u32,
    /// Acknowledged after those, while the guest went on.
    pub more: u32,
    /// Why the injector stopped early, if it did (not "QEMU exited").
    pub error: Option<String>,
}

/// The QMP conversation: greeting, `qmp_capabilities`, then `inject-nmi` on demand. Each
/// command waits for its `return` (events in between are skipped), so an acknowledged NMI has
/// been raised in the vCPU (QEMU `qmp_inject_nmi` -> `nmi_monitor_handle`).
struct Qmp {
    reader: std::io::BufReader<std::os::unix::net::UnixStream>,
    writer: std::os::unix::net::UnixStream,
}

impl Qmp {
    fn connect(socket: &Path, deadline: Instant) -> Result<Qmp> {
        let stream = loop {
            match std::os::unix::net::UnixStream::connect(socket) {
                Ok(stream) => break stream,
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Err(error) => bail!("cannot connect to QMP at {}: {error}", socket.display()),
            }
        };
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        let writer = stream.try_clone()?;
        let mut qmp = Qmp { reader: std::io::BufReader::new(stream), writer };
        let greeting = qmp.line()?;
        if !greeting.contains("\"QMP\"") {
            bail!("QMP greeting expected, got {greeting:?}");
        }
        qmp.execute("qmp_capabilities")?;
        Ok(qmp)
    }

    fn line(&mut self) -> Result<String> {
        use std::io::BufRead;
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            bail!("QMP closed the connection");
        }
        Ok(line)
    }

    fn execute(&mut self, command: &str) -> Result<()> {
        writeln!(self.writer, "{{\"execute\": \"{command}\"}}")?;
        loop {
            let line = self.line()?;
            let reply: serde_json::Value = serde_json::from_str(&line)
                .with_context(|| format!("QMP sent something that is not JSON: {line:?}"))?;
            if reply.get("return").is_some() {
                return Ok(());
            }
            if let Some(error) = reply.get("error") {
                bail!("QMP {command} failed: {error}");
            }
        }
    }
}

/// Runs the injection of `plan` until `done` (QEMU has exited); `output` is the guest's serial
/// output so far.
fn inject_nmis(
    plan: &NmiInjection,
    output: &std::sync::Mutex<Vec<u8>>,
    done: &std::sync::atomic::AtomicBool,
    deadline: Instant,
) -> NmisSent {
    use std::sync::atomic::Ordering::Relaxed;
    let mut sent = NmisSent::default();
    let mut qmp = match Qmp::connect(&plan.socket, deadline) {
        Ok(qmp) => qmp,
        Err(error) => {
            sent.error = Some(format!("{error:#}"));
            return sent;
        }
    };
    let marker = plan.after.as_bytes();
    while !output.lock().unwrap().windows(marker.len()).any(|w| w == marker) {
        if done.load(Relaxed) || Instant::now() >= deadline {
            return sent;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    while !done.load(Relaxed) {
        if let Err(error) = qmp.execute("inject-nmi") {
            // After the counted ones, QEMU exiting at the end of the run ends the conversation.
            if !done.load(Relaxed) && sent.counted < plan.count {
                sent.error = Some(format!("{error:#}"));
            }
            break;
        }
        if sent.counted < plan.count {
            sent.counted += 1;
            std::thread::sleep(Duration::from_millis(20));
        } else {
            sent.more += 1;
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    sent
}

/// Kills QEMU's whole process group when dropped, so no path leaves QEMU (or anything a
/// wrapper script started) running.
struct KillOnDrop(Child);

impl KillOnDrop {
    fn kill(&mut self) {
        // SAFETY: the child is the leader of its own process group (process_group(0) at spawn);
        // SIGKILL to that group ends it and anything it started.
        unsafe { libc::kill(-(self.0.id() as i32), libc::SIGKILL) };
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs QEMU with `args`, capturing stdout and stderr into `output`; `echo` also copies stdout
/// to this process's stdout as it arrives.
pub fn run(qemu: &Path, args: &[String], limits: &Limits, echo: bool) -> Result<Finished> {
    let mut command = Command::new(qemu);
    command.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    // Its own process group, so that a timeout can kill everything it started.
    command.process_group(0);
    // SAFETY: prctl is async-signal-safe; the closure only asks the kernel to send SIGKILL to
    // QEMU if this process dies (Ctrl-C included), so an interrupted xtask never leaves QEMU
    // behind.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let start = Instant::now();
    let child = command.spawn().with_context(|| format!("cannot start {}", qemu.display()))?;
    let mut child = KillOnDrop(child);
    let mut stdout = child.0.stdout.take().expect("piped");
    let mut stderr = child.0.stderr.take().expect("piped");
    let collected = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let marker_seen: std::sync::Arc<std::sync::Mutex<Option<Instant>>> = Default::default();
    let refused = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let collected = collected.clone();
        let marker_seen = marker_seen.clone();
        let refused = refused.clone();
        let marker = limits.stop_after_marker.as_ref().map(|(m, _)| m.clone().into_bytes());
        std::thread::spawn(move || {
            let mut buffer = [0u8; 4096];
            // Complete lines before this offset have been checked for the firmware's refusal.
            let mut checked = 0;
            loop {
                match stdout.read(&mut buffer) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let mut all = collected.lock().unwrap();
                        all.extend_from_slice(&buffer[..n]);
                        if let Some(end) = all[checked..].iter().rposition(|&b| b == b'\n') {
                            let lines = String::from_utf8_lossy(&all[checked..checked + end]);
                            // The firmware's Secure Boot refusal, or our loader's refusal of the
                            // kernel: either way the firmware goes on to its boot menu.
                            // Or softtdx's VMM has halted the machine for good.
                            if crate::secure_boot::find_refusal(&lines).is_some()
                                || lines.lines().any(crate::report::is_loader_error)
                                || lines.contains(crate::report::MACHINE_HALTED)
                            {
                                refused.store(true, std::sync::atomic::Ordering::Relaxed);
                            }
                            checked += end + 1;
                        }
                        if let Some(marker) = &marker {
                            let mut seen = marker_seen.lock().unwrap();
                            if seen.is_none() && all.windows(marker.len()).any(|w| w == marker) {
                                *seen = Some(Instant::now());
                            }
                        }
                        if echo {
                            let mut out = std::io::stdout().lock();
                            let _ = out.write_all(&buffer[..n]);
                            let _ = out.flush();
                        }
                    }
                }
            }
        })
    };
    let qemu_done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let injector = limits.nmis.clone().map(|plan| {
        let collected = collected.clone();
        let done = qemu_done.clone();
        let deadline = start + limits.timeout;
        std::thread::spawn(move || inject_nmis(&plan, &collected, &done, deadline))
    });
    let error_reader = std::thread::spawn(move || {
        let mut collected = Vec::new();
        let _ = stderr.read_to_end(&mut collected);
        collected
    });
    let mut timed_out = false;
    let status = loop {
        if let Some(status) = child.0.try_wait().context("waiting for QEMU")? {
            break status.code();
        }
        let grace_over = match (&limits.stop_after_marker, *marker_seen.lock().unwrap()) {
            (Some((_, grace)), Some(seen)) => seen.elapsed() >= *grace,
            _ => false,
        };
        if refused.load(std::sync::atomic::Ordering::Relaxed) {
            child.kill();
            break None;
        }
        if start.elapsed() >= limits.timeout || grace_over {
            timed_out = true;
            child.kill();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let wall = start.elapsed();
    qemu_done.store(true, std::sync::atomic::Ordering::Relaxed);
    drop(child);
    let nmis = injector.map(|thread| thread.join().unwrap_or_default());
    // The pipes close when the process group is gone; do not wait forever on a stray holder.
    let deadline = Instant::now() + Duration::from_secs(2);
    while !(reader.is_finished() && error_reader.is_finished()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut output = String::from_utf8_lossy(&collected.lock().unwrap()).into_owned();
    if error_reader.is_finished() {
        let errors = error_reader.join().unwrap_or_default();
        let errors = String::from_utf8_lossy(&errors);
        if !errors.trim().is_empty() {
            output.push_str("\n[qemu stderr]\n");
            output.push_str(&errors);
        }
    }
    Ok(Finished { status, timed_out, output, wall, nmis })
}

/// QEMU's own error output, from a [`Finished::output`].
pub fn stderr_part(output: &str) -> Option<&str> {
    output.split_once("\n[qemu stderr]\n").map(|(_, errors)| errors.trim_end())
}

/// The command line as a shell would take it, for echoing.
pub fn command_line(qemu: &Path, args: &[String]) -> String {
    crate::td::qemu::shell_quote(
        std::iter::once(qemu.display().to_string()).chain(args.iter().cloned()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn firmware() -> ovmf::Firmware {
        ovmf::Firmware::new("/fw/OVMF.fd".into(), None, ovmf::Source::Explicit)
    }

    #[test]
    fn boot_args_always_disable_network_display_and_reboot() {
        let fw = firmware();
        let args = boot_args(&BootSpec {
            firmware: &fw,
            image: Path::new("/i.img"),
            kvm: false,
            machine: Machine::Legacy,
            mode: Some("softtdx"),
            extra_args: &[],
            la57: false,
            virtio_console: None,
            memory: None,
        });
        let line = args.join(" ");
        for required in [
            "-nic none",
            "-display none",
            "-no-reboot",
            "-bios /fw/OVMF.fd",
            "isa-debug-exit,iobase=0xf4,iosize=0x04",
        ] {
            assert!(line.contains(required), "{required} missing from {line}");
        }
        assert!(line.contains("-fw_cfg name=opt/tdx-unikernel/mode,string=softtdx"));
    }

    #[test]
    fn guest_memory_is_the_machine_s_unless_given() {
        let fw = firmware();
        let memory_of = |machine, la57, memory| {
            let args = boot_args(&BootSpec {
                firmware: &fw,
                image: Path::new("/i.img"),
                kvm: false,
                machine,
                mode: None,
                extra_args: &[],
                la57,
                virtio_console: None,
                memory,
            });
            assert_eq!(args.iter().filter(|a| *a == "-m").count(), 1, "{args:?}");
            let at = args.iter().position(|a| a == "-m").unwrap();
            args[at + 1].clone()
        };
        assert_eq!(memory_of(Machine::Td, false, None), Machine::Td.tcg_memory());
        assert_eq!(memory_of(Machine::Td, true, None), LA57_MEMORY);
        assert_eq!(memory_of(Machine::Td, false, Some("5G")), "5G");
    }

    #[test]
    fn the_debug_exit_device_can_be_left_out() {
        let fw = firmware();
        let args = boot_args(&BootSpec {
            firmware: &fw,
            image: Path::new("/i.img"),
            kvm: false,
            machine: Machine::Td,
            mode: None,
            extra_args: &[],
            la57: false,
            virtio_console: None,
            memory: None,
        });
        let line = without_debug_exit(&args).join(" ");
        assert!(!line.contains("isa-debug-exit"), "{line}");
        assert!(line.contains("-device virtio-blk-pci,drive=disk0 -accel tcg"), "{line}");
    }

    #[test]
    fn split_firmware_uses_pflash() {
        let fw = ovmf::Firmware::new("/c.fd".into(), Some("/v.fd".into()), ovmf::Source::Explicit);
        let args = boot_args(&BootSpec {
            firmware: &fw,
            image: Path::new("/i.img"),
            kvm: true,
            machine: Machine::Td,
            mode: None,
            extra_args: &["-s".into()],
            la57: false,
            virtio_console: Some(Path::new("/t/v,c.log")),
            memory: None,
        });
        let line = args.join(" ");
        assert!(line.contains("if=pflash,format=raw,readonly=on,file=/c.fd"));
        assert!(line.contains("-accel kvm"));
        assert!(line.ends_with("-s"));
        assert!(!line.contains("fw_cfg"));
        assert!(line.contains("-chardev file,id=virtcon0,path=/t/v,,c.log"));
        assert!(line.contains(
            "virtio-serial-pci,max_ports=1,disable-legacy=on,iommu_platform=on,ioeventfd=off"
        ));
    }

    #[test]
    fn a_wrapper_and_its_children_are_killed_at_the_timeout() {
        // A wrapper that does not exec keeps the pipes open through its child.
        let limits = Limits::timeout(Duration::from_millis(300));
        let args = ["-c".to_owned(), "sleep 30; true".to_owned()];
        let finished = run(Path::new("/bin/sh"), &args, &limits, false).unwrap();
        assert!(finished.timed_out);
        assert!(finished.wall < Duration::from_secs(5), "{:?}", finished.wall);
    }

    #[test]
    fn a_guest_that_announces_a_hang_is_stopped_after_the_grace_period() {
        let limits = Limits {
            timeout: Duration::from_secs(30),
            stop_after_marker: Some(("spinning".into(), Duration::from_millis(200))),
            nmis: None,
        };
        let args = ["-c".to_owned(), "echo spinning; exec sleep 30".to_owned()];
        let finished = run(Path::new("/bin/sh"), &args, &limits, false).unwrap();
        assert!(finished.timed_out);
        assert!(finished.wall < Duration::from_secs(5), "{:?}", finished.wall);
        assert!(finished.output.contains("spinning"));
    }

    #[test]
    fn a_firmware_refusing_the_loader_is_stopped_at_once() {
        let limits = Limits::timeout(Duration::from_secs(30));
        let refusal = "BdsDxe: failed to load Boot0002 UEFI-DISK from PciRoot(0x0): Access Denied";
        let script =
            format!("printf 'BdsDxe: loading Boot0002\\r\\n{refusal}\\r\\n'; exec sleep 30");
        let finished = run(Path::new("/bin/sh"), &["-c".into(), script], &limits, false).unwrap();
        assert!(!finished.timed_out && finished.status.is_none());
        assert!(finished.wall < Duration::from_secs(5), "{:?}", finished.wall);
        assert!(finished.output.contains("Access Denied"));
    }

    #[test]
    fn other_boot_failures_do_not_stop_the_run() {
        let limits = Limits::timeout(Duration::from_millis(500));
        let script = "printf 'BdsDxe: failed to load Boot0001 DVD from P(0): Not Found\\r\\n'; exec sleep 30";
        let finished =
            run(Path::new("/bin/sh"), &["-c".into(), script.into()], &limits, false).unwrap();
        assert!(finished.timed_out);
    }

    #[test]
    fn a_hanging_process_is_killed_at_the_timeout() {
        let limits = Limits::timeout(Duration::from_millis(300));
        let finished = run(Path::new("/bin/sleep"), &["30".into()], &limits, false).unwrap();
        assert!(finished.timed_out);
        assert!(finished.wall < Duration::from_secs(5));
    }
}
