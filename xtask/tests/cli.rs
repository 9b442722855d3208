//! The CLI's contract for bad input: one line on stderr, a non-zero exit, no panic.

use std::process::{Command, Output};

fn xtask(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_xtask"));
    command.args(args).env_remove("OVMF_PATH").env_remove("QEMU");
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().expect("xtask runs")
}

/// A path in this test process's own scratch directory (no collisions between runs or users).
fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("xtask-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn assert_one_line_error(output: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "stderr: {stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "not one line: {stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(stderr.contains(needle), "{needle:?} missing from {stderr}");
    assert!(!stderr.contains("panicked") && !stderr.contains("backtrace"), "{stderr}");
}

#[test]
fn missing_firmware_is_a_one_line_error() {
    let output = xtask(&["test", "--skip-host-tests"], &[("OVMF_PATH", "/nonexistent")]);
    assert_one_line_error(&output, "/nonexistent");
}

#[test]
fn missing_firmware_flag_is_a_one_line_error() {
    let output = xtask(&["run", "--firmware", "/nonexistent/OVMF.fd"], &[]);
    assert_one_line_error(&output, "/nonexistent/OVMF.fd");
}

#[test]
fn missing_qemu_is_a_one_line_error() {
    let firmware = scratch("fake-ovmf.fd");
    std::fs::write(&firmware, vec![0u8; 2 * 1024 * 1024]).unwrap();
    let output = xtask(
        &["run", "--firmware", firmware.to_str().unwrap()],
        &[("QEMU", "/nonexistent/qemu-system-x86_64")],
    );
    assert_one_line_error(&output, "QEMU=/nonexistent/qemu-system-x86_64");
}

#[test]
fn corrupt_kernel_elf_is_a_one_line_error() {
    let corrupt = scratch("corrupt.elf");
    std::fs::write(&corrupt, b"\x7fELF\x02\x01\x01garbage that is far too short").unwrap();
    let output = xtask(
        &["image", corrupt.to_str().unwrap(), "--out", scratch("x.img").to_str().unwrap()],
        &[],
    );
    assert_one_line_error(&output, "is not a usable kernel");
}

#[test]
fn missing_kernel_elf_is_a_one_line_error() {
    let output = xtask(&["image", "/nonexistent/kernel"], &[]);
    assert_one_line_error(&output, "cannot read kernel ELF /nonexistent/kernel");
}

/// A QEMU wrapper that logs every invocation, to prove which ones happened.
fn logging_qemu(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let log = dir.join("qemu-invocations.log");
    let wrapper = dir.join("qemu-system-x86_64");
    let real = std::env::var("QEMU").unwrap_or_else(|_| "qemu-system-x86_64".into());
    std::fs::write(
        &wrapper,
        format!("#!/bin/sh\necho \"$@\" >> '{}'\nexec {real} \"$@\"\n", log.display()),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    (wrapper, log)
}

#[test]
fn doctor_exits_zero_and_run_tdx_fails_fast_with_the_same_reasons() {
    let dir = std::env::temp_dir().join(format!("xtask-cli-doctor-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (wrapper, log) = logging_qemu(&dir);
    let qemu = wrapper.to_str().unwrap();

    let doctor = xtask(&["doctor"], &[("QEMU", qemu)]);
    let report = String::from_utf8_lossy(&doctor.stdout).into_owned();
    assert_eq!(doctor.status.code(), Some(0), "{report}");
    let verdict = report.lines().find(|l| l.starts_with("verdict: ")).expect("a verdict line");
    let Some(reasons) = verdict.strip_prefix("verdict: a TD cannot be launched on this host: ")
    else {
        // A TDX host: nothing to compare, run --tdx would really launch.
        assert_eq!(verdict, "verdict: this host can launch a TD");
        return;
    };

    let _ = std::fs::remove_file(&log);
    let run = xtask(&["run", "--tdx"], &[("QEMU", qemu)]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(stderr.contains(reasons), "run --tdx gave {stderr:?}, doctor said {reasons:?}");
    let invocations = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        !invocations.contains("confidential-guest-support"),
        "run --tdx started a TD on a host that cannot run one: {invocations}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn firmware_command_reads_tdvf_and_rejects_other_files() {
    let garbage = scratch("not-firmware.bin");
    std::fs::write(&garbage, vec![0x5Au8; 4096]).unwrap();
    let not_firmware = xtask(&["firmware", garbage.to_str().unwrap()], &[]);
    assert_one_line_error(&not_firmware, "has no usable TDVF metadata");
    let missing = xtask(&["firmware", "/nonexistent.fd"], &[]);
    assert_one_line_error(&missing, "/nonexistent.fd");
    let debian = std::path::Path::new("/usr/share/ovmf/OVMF.fd");
    if !debian.exists() {
        println!("skip: {} not present", debian.display());
        return;
    }
    let output = xtask(&["firmware", debian.to_str().unwrap()], &[]);
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{table}");
    for section in ["BFV", "CFV", "TD_HOB", "TempMem"] {
        assert!(table.contains(section), "{section} missing from {table}");
    }
}

/// `cargo xtask run` (the quick start's second command) boots, shows the self-test, and exits 0.
#[test]
fn run_boots_shows_the_self_test_and_exits_zero() {
    // Needs QEMU and OVMF (scripts/setup.sh): without them this fails, as `run` would. Unlike
    // the other tests it keeps the caller's QEMU and OVMF_PATH overrides.
    let output = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["run", "--timeout", "120"])
        .output()
        .expect("xtask runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("SELFTEST BEGIN mode=native"), "{stdout}");
    assert!(stdout.contains("CHECK pass serial.scratch"), "{stdout}");
    assert!(stdout.contains("verdict: Pass"), "{stdout}");
}

/// Booting with a firmware that enforces Secure Boot with enrolled keys (Debian's
/// `OVMF_CODE_4M.ms.fd`, with `OVMF_VARS_4M.ms.fd` beside it) ends at the firmware's refusal of
/// our unsigned loader, with the Secure Boot line, long before the timeout.
///
/// That firmware's refusal itself is the suite's `harness:secure-boot` run, a real boot. Here
/// QEMU is a script that prints what the firmware printed there and then waits, so this test
/// checks `run` (the refusal recognised, QEMU stopped at it, the advice) without a second boot.
#[test]
fn run_with_secure_boot_firmware_stops_at_the_refusal() {
    use std::os::unix::fs::PermissionsExt;
    let firmware = "/usr/share/OVMF/OVMF_CODE_4M.ms.fd";
    if !std::path::Path::new(firmware).exists() {
        println!("skip: {firmware} not present (Debian's ovmf package)");
        return;
    }
    let dir = std::env::temp_dir().join(format!("xtask-cli-secure-boot-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let fake_qemu = dir.join("qemu-system-x86_64");
    // Debian bookworm's OVMF_CODE_4M.ms.fd on the legacy machine, from a real boot's serial log.
    let refusal = [
        r#"BdsDxe: failed to load Boot0001 "UEFI QEMU DVD-ROM QM00005 " from PciRoot(0x0)/Pci(0x1F,0x2)/Sata(0x2,0xFFFF,0x0): Not Found"#,
        r#"BdsDxe: loading Boot0002 "UEFI QEMU HARDDISK QM00001 " from PciRoot(0x0)/Pci(0x1F,0x2)/Sata(0x0,0xFFFF,0x0)"#,
        r#"BdsDxe: failed to load Boot0002 "UEFI QEMU HARDDISK QM00001 " from PciRoot(0x0)/Pci(0x1F,0x2)/Sata(0x0,0xFFFF,0x0): Access Denied"#,
    ];
    let script: String =
        refusal.iter().map(|line| format!("printf '%s\\r\\n' '{line}'\n")).collect();
    std::fs::write(&fake_qemu, format!("#!/bin/sh\n{script}exec sleep 60\n")).unwrap();
    std::fs::set_permissions(&fake_qemu, std::fs::Permissions::from_mode(0o755)).unwrap();
    let timeout = 120;
    let output = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["run", "--firmware", firmware, "--timeout", &timeout.to_string()])
        .env_remove("OVMF_PATH")
        .env("QEMU", &fake_qemu)
        .output()
        .expect("xtask runs");
    let _ = std::fs::remove_dir_all(&dir);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    let verdict = stdout.lines().find(|l| l.starts_with("verdict: ")).expect("a verdict line");
    assert!(verdict.starts_with("verdict: Refused after "), "{verdict}");
    assert!(verdict.contains("enforces Secure Boot") && verdict.contains("Access Denied"));
    // What to use instead: the firmware this host offers, which must not be the refusing one.
    let instead = verdict.split("use a firmware without enrolled keys instead: ").nth(1);
    let instead = instead.expect("advice on what to use instead");
    assert!(!instead.contains(".ms.fd"), "{verdict}");
    // QEMU's wall time, from the verdict line: the refusal comes a few seconds into the boot.
    let seconds: f64 = verdict["verdict: Refused after ".len()..]
        .split_once(' ')
        .and_then(|(secs, _)| secs.parse().ok())
        .expect("a wall time");
    assert!(seconds < (timeout / 4) as f64, "stopped only after {seconds} s: {verdict}");
    assert!(!stdout.contains("SELFTEST BEGIN"), "the kernel ran: {stdout}");
    // Before booting, the firmware was described and flagged.
    let stderr = String::from_utf8_lossy(&output.stderr);
    let described = stderr.lines().find(|l| l.starts_with("firmware: ")).expect("a firmware line");
    assert!(described.contains("given with --firmware"), "{described}");
    let descriptor = "/usr/share/qemu/firmware/40-edk2-x86_64-secure-enrolled.json";
    if std::path::Path::new(descriptor).exists() {
        assert!(described.contains(&format!("described by {descriptor}")), "{described}");
    }
    assert!(
        stderr.lines().any(|l| l.starts_with("warning: ")
            && l.contains("OVMF_CODE_4M.ms.fd enforces Secure Boot")
            && l.contains("OVMF_VARS_4M.ms.fd")),
        "no Secure Boot warning before the boot: {stderr}"
    );
}

/// Killing xtask (as Ctrl-C does) takes QEMU with it: no orphans.
#[test]
fn qemu_dies_with_xtask() {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("xtask-cli-orphan-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pid_file = dir.join("qemu.pid");
    let fake_qemu = dir.join("qemu-system-x86_64");
    std::fs::write(
        &fake_qemu,
        format!("#!/bin/sh\necho $$ > '{}'\nexec sleep 60\n", pid_file.display()),
    )
    .unwrap();
    std::fs::set_permissions(&fake_qemu, std::fs::Permissions::from_mode(0o755)).unwrap();
    let firmware = dir.join("OVMF.fd");
    std::fs::write(&firmware, vec![0u8; 2 * 1024 * 1024]).unwrap();

    let mut xtask = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["run", "--firmware", firmware.to_str().unwrap()])
        .env("QEMU", &fake_qemu)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // The kernel build comes first; wait for the fake QEMU to start.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(600);
    let qemu_pid = loop {
        if let Ok(text) = std::fs::read_to_string(&pid_file) {
            if let Ok(pid) = text.trim().parse::<i32>() {
                break pid;
            }
        }
        assert!(std::time::Instant::now() < deadline, "fake QEMU never started");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    // SAFETY: sending SIGINT to the child we spawned.
    unsafe { libc::kill(xtask.id() as i32, libc::SIGINT) };
    let _ = xtask.wait();
    let alive = |pid: i32| {
        std::path::Path::new(&format!("/proc/{pid}")).exists()
            && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .unwrap_or_default()
                .contains(") Z ")
    };
    let gone_by = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while alive(qemu_pid) && std::time::Instant::now() < gone_by {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(!alive(qemu_pid), "QEMU (pid {qemu_pid}) outlived xtask");
    let _ = std::fs::remove_dir_all(&dir);
}
