//! Golden tests: the QEMU command line, the libvirt domain and `scripts/run-td.sh --dry-run`
//! are pinned to files in `xtask/tests/golden/`, and the script is checked against the Rust
//! command line so the two cannot drift.
//!
//! After an intended change, regenerate the files with
//! `UPDATE_GOLDEN=1 cargo test -p xtask td::` and review the diff.

use super::firmware_report;
use super::libvirt::domain_xml;
use super::qemu::{
    td_command_line, td_qemu_args, TdLaunch, MAX_MEMORY_MIB, MAX_VCPUS, MIN_MEMORY_MIB,
};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn golden_dir() -> PathBuf {
    crate::build::project_root().join("xtask/tests/golden")
}

fn script() -> PathBuf {
    crate::build::project_root().join("scripts/run-td.sh")
}

/// Compares `actual` with the golden file `name`, or rewrites the file when `UPDATE_GOLDEN=1`.
fn check_golden(name: &str, actual: &str) {
    let path = golden_dir().join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1") {
        fs::create_dir_all(golden_dir()).unwrap();
        fs::write(&path, actual).unwrap();
        println!("updated {}", path.display());
        return;
    }
    let expected = fs::read_to_string(&path).unwrap_or_else(|error| {
        panic!(
            "cannot read golden file {}: {error}; create it with UPDATE_GOLDEN=1 cargo test -p xtask td::",
            path.display()
        )
    });
    assert!(
        expected == actual,
        "{} differs from the generated output; if the change is intended, run \
         UPDATE_GOLDEN=1 cargo test -p xtask td:: and review the diff\n--- golden\n{expected}\n--- generated\n{actual}",
        path.display()
    );
}

/// One argument per line, so that a change shows up as a one-line diff.
fn lines(args: &[String]) -> String {
    let mut text = args.join("\n");
    text.push('\n');
    text
}

/// An empty file `name` in this test process's own scratch directory, so that parallel or
/// earlier runs (possibly by another user) never collide. Golden files spell the directory as
/// `/tmp`; [`as_in_golden`] maps it back.
fn scratch_file(name: &str) -> String {
    let dir = std::env::temp_dir().join(format!("xtask-golden-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    fs::write(&path, b"").unwrap();
    path.to_str().expect("UTF-8 temp dir").to_owned()
}

/// `text` with this process's scratch directory written as `/tmp`, as in the golden files.
fn as_in_golden(text: &str) -> String {
    let dir = std::env::temp_dir().join(format!("xtask-golden-{}", std::process::id()));
    text.replace(dir.to_str().expect("UTF-8 temp dir"), "/tmp")
}

fn run_script(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new("bash");
    command.arg(script()).args(args);
    for var in ["QEMU", "VCPUS", "MEMORY_MIB"] {
        command.env_remove(var);
    }
    command.envs(env.iter().copied());
    command.output().expect("bash must be installed to run scripts/run-td.sh")
}

fn stdout_of(output: &Output) -> String {
    assert!(
        output.status.success(),
        "run-td.sh failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

#[test]
fn golden_td_qemu_default() {
    let launch =
        TdLaunch::new("qemu-system-x86_64", "/usr/share/ovmf/OVMF.fd", "/images/unikernel.img");
    check_golden("td-qemu-default.txt", &lines(&td_qemu_args(&launch).unwrap()));
}

#[test]
fn golden_td_qemu_options() {
    let mut launch = TdLaunch::new(
        "/opt/qemu-10.1/bin/qemu-system-x86_64",
        "/opt/tdvf/OVMF.fd",
        "/images/my disk,v2.img",
    );
    launch.vcpus = 4;
    launch.memory_mib = 8192;
    launch.sept_ve_disable = false;
    launch.extra_args =
        vec!["-fw_cfg".to_string(), "name=opt/tdx-unikernel/mode,string=native".to_string()];
    check_golden("td-qemu-options.txt", &lines(&td_qemu_args(&launch).unwrap()));
}

#[test]
fn golden_td_qemu_debug() {
    let mut launch =
        TdLaunch::new("qemu-system-x86_64", "/usr/share/ovmf/OVMF.fd", "/images/unikernel.img");
    launch.debug = true;
    check_golden("td-qemu-debug.txt", &lines(&td_qemu_args(&launch).unwrap()));
}

#[test]
fn golden_libvirt_domain() {
    let xml = domain_xml(
        "tdx-unikernel",
        Path::new("/images/unikernel.img"),
        Path::new("/usr/share/ovmf/OVMF.fd"),
        1,
        2048,
        true,
        false,
    )
    .unwrap();
    check_golden("libvirt-domain.xml", &xml);
}

#[test]
fn script_dry_run_matches_golden_and_rust() {
    let (image, firmware) = (scratch_file("x.img"), scratch_file("fw.fd"));
    let printed = stdout_of(&run_script(&["--dry-run", &image, &firmware], &[]));
    check_golden("run-td-dry-run.txt", &as_in_golden(&printed));
    let rust = td_command_line(&TdLaunch::new("qemu-system-x86_64", &firmware, &image)).unwrap();
    assert_eq!(printed, format!("{rust}\n"), "scripts/run-td.sh and xtask disagree");
}

#[test]
fn script_dry_run_with_overrides_extra_args_and_awkward_path_matches_rust() {
    let image = scratch_file("td golden,it's.img");
    let firmware = scratch_file("fw.fd");
    let printed = stdout_of(&run_script(
        &["--dry-run", &image, &firmware, "--", "-d", "guest_errors", "-D", "/tmp/qemu log"],
        &[("QEMU", "/opt/qemu 10.1/qemu-system-x86_64"), ("VCPUS", "4"), ("MEMORY_MIB", "4096")],
    ));
    let mut launch = TdLaunch::new("/opt/qemu 10.1/qemu-system-x86_64", &firmware, &image);
    launch.vcpus = 4;
    launch.memory_mib = 4096;
    launch.extra_args = ["-d", "guest_errors", "-D", "/tmp/qemu log"].map(String::from).to_vec();
    let rust = td_command_line(&launch).unwrap();
    assert_eq!(printed, format!("{rust}\n"), "scripts/run-td.sh and xtask disagree");
}

#[test]
fn script_enforces_the_same_bounds_as_rust() {
    let (image, firmware) = (scratch_file("x.img"), scratch_file("fw.fd"));
    let dry = ["--dry-run", image.as_str(), firmware.as_str()];
    let max_vcpus = MAX_VCPUS.to_string();
    let min_memory = MIN_MEMORY_MIB.to_string();
    let max_memory = MAX_MEMORY_MIB.to_string();
    for (var, value) in
        [("VCPUS", max_vcpus.as_str()), ("MEMORY_MIB", &min_memory), ("MEMORY_MIB", &max_memory)]
    {
        stdout_of(&run_script(&dry, &[(var, value)]));
    }
    let too_many_vcpus = (MAX_VCPUS + 1).to_string();
    let too_little_memory = (MIN_MEMORY_MIB - 1).to_string();
    let too_much_memory = (MAX_MEMORY_MIB + 1).to_string();
    for (var, value) in [
        ("VCPUS", "0"),
        ("VCPUS", too_many_vcpus.as_str()),
        ("MEMORY_MIB", &too_little_memory),
        ("MEMORY_MIB", &too_much_memory),
        ("MEMORY_MIB", "2G"),
    ] {
        let output = run_script(&dry, &[(var, value)]);
        assert_eq!(output.status.code(), Some(2), "{var}={value} was accepted");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains(var), "{stderr}");
    }
}

#[test]
fn script_reports_missing_files_in_one_line() {
    let image = scratch_file("x.img");
    for (args, needle) in [
        (["/nonexistent/disk.img", image.as_str()], "image /nonexistent/disk.img does not exist"),
        ([image.as_str(), "/nonexistent/OVMF.fd"], "firmware /nonexistent/OVMF.fd does not exist"),
    ] {
        let output = run_script(&args, &[]);
        assert_eq!(output.status.code(), Some(2));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains(needle), "{stderr}");
    }
    let output = run_script(&[], &[]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).starts_with("usage: run-td.sh"));
}

#[test]
fn firmware_report_on_installed_ovmf() {
    let path = Path::new("/usr/share/ovmf/OVMF.fd");
    if !path.is_file() {
        println!("skipped: {} is not installed (apt-get install ovmf)", path.display());
        return;
    }
    let report = firmware_report(path).unwrap();
    println!("{report}");
    assert!(report.starts_with("/usr/share/ovmf/OVMF.fd: "), "{report}");
    assert!(report.contains("TDVF metadata version 1"), "{report}");
    assert!(report.contains("BFV"), "{report}");
    assert!(report.contains("loadable as TDVF"), "{report}");
}

#[test]
fn firmware_report_errors_are_one_line() {
    let dir = std::env::temp_dir().join(format!("xtask-td-firmware-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();

    let missing = dir.join("missing.fd");
    let error = firmware_report(&missing).unwrap_err().to_string();
    assert!(error.starts_with("cannot read firmware ") && !error.contains('\n'), "{error}");

    // Not firmware at all.
    let garbage = dir.join("garbage.fd");
    fs::write(&garbage, vec![0x5a; 1 << 20]).unwrap();
    let error = firmware_report(&garbage).unwrap_err().to_string();
    assert!(error.contains("has no usable TDVF metadata: "), "{error}");
    assert!(!error.contains('\n'), "{error}");

    // The installed image with its TDVF descriptor damaged.
    let ovmf = Path::new("/usr/share/ovmf/OVMF.fd");
    if ovmf.is_file() {
        let mut image = fs::read(ovmf).unwrap();
        let descriptor = ovmf::tdvf::parse(&image).unwrap().descriptor_offset;
        image[descriptor..descriptor + 4].copy_from_slice(b"XXXX");
        let corrupt = dir.join("corrupt.fd");
        fs::write(&corrupt, &image).unwrap();
        let error = firmware_report(&corrupt).unwrap_err().to_string();
        assert!(error.contains("bad TDVF signature"), "{error}");
        assert!(!error.contains('\n'), "{error}");
    } else {
        println!("skipped the corrupt-OVMF case: {} is not installed", ovmf.display());
    }
    fs::remove_dir_all(&dir).unwrap();
}
