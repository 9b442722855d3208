//! `cargo xtask doctor`: can this host launch a TD, and if not, what is missing?
//!
//! [`probe_host`] gathers [`HostFacts`] from `/proc`, `/sys`, `/dev/kvm`, the QEMU binary and
//! the firmware file; [`assess`] turns facts into a [`DoctorReport`] without touching the host,
//! so every verdict is unit-tested with synthetic hosts. [`preflight`] is the same judgement as
//! one error, for `run --tdx` to fail before starting QEMU.
//!
//! What a TD needs, and where each requirement comes from:
//!
//! - A CPU and firmware setup with TDX: Linux sets the CPU flag `tdx_host_platform`
//!   (`X86_FEATURE_TDX_HOST_PLATFORM`) when the BIOS has reserved TDX private KeyIDs; KVM
//!   refuses TDX without it ("TDX not supported by the host platform").
//! - KVM with TDX enabled: `kvm_intel`'s read-only parameter `tdx`
//!   (`/sys/module/kvm_intel/parameters/tdx`, Linux >= 6.16 built with
//!   `CONFIG_KVM_INTEL_TDX`), off unless loaded with `tdx=1`.
//! - Access to `/dev/kvm`.
//! - QEMU >= 10.1, the first release with the `tdx-guest` object (`docs/system/i386/tdx.rst`),
//!   built with KVM so that `-object help` lists it.
//! - Firmware with TDVF metadata that QEMU accepts ([`ovmf::tdvf`]), whose TD_HOB and TempMem
//!   sections fit in the guest RAM below 4 GiB.
//! - Enough host memory: a TD's private memory comes from guest_memfd and cannot be swapped.

use super::qemu::DEFAULT_MEMORY_MIB;
use anyhow::{bail, Result};
use ovmf::tdvf::{SectionType, TdvfMetadata};
use std::fmt;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// The first QEMU release that can launch a TD.
pub const MIN_QEMU_VERSION: (u32, u32, u32) = (10, 1, 0);

/// Host memory kept free for the host itself and QEMU, on top of the TD's memory.
pub const HOST_MEMORY_HEADROOM_MIB: u64 = 512;

/// How long a `qemu ...` probe may run before it is killed.
pub const QEMU_PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// Below 4 GiB, q35 maps at most this much RAM once the guest has 2.75 GiB or more; with less,
/// all of it sits below 4 GiB (QEMU `hw/i386/pc_q35.c`).
const Q35_LOWMEM_SPLIT_MIB: u64 = 2816;
const Q35_LOWMEM_MIB: u64 = 2048;

/// What `/dev/kvm` looks like to this user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvmAccess {
    /// No such device (KVM not loaded, or no virtualization support).
    Missing,
    /// The device exists but cannot be opened read-write.
    NoPermission,
    /// The device opens read-write.
    Ok,
}

/// What the QEMU binary reports about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QemuFacts {
    /// The binary, resolved through `PATH` when given as a bare name.
    pub path: PathBuf,
    /// From `qemu -version`.
    pub version: (u32, u32, u32),
    /// Whether `qemu -object help` lists `tdx-guest`.
    pub has_tdx_guest_object: bool,
}

/// The parts of the TDVF metadata the doctor cares about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TdvfSummary {
    /// Number of metadata sections.
    pub sections: usize,
    /// End (exclusive) of the highest TD_HOB or TempMem section: QEMU accepts these pages into
    /// guest RAM before boot, so RAM must reach this far.
    pub private_ram_end: u64,
}

impl TdvfSummary {
    /// Summarizes parsed metadata.
    pub fn of(metadata: &TdvfMetadata) -> Self {
        let private_ram_end = metadata
            .sections
            .iter()
            .filter(|s| matches!(s.section_type, SectionType::TdHob | SectionType::TempMem))
            .map(|s| s.memory_address.saturating_add(s.memory_data_size))
            .max()
            .unwrap_or(0);
        TdvfSummary { sections: metadata.sections.len(), private_ram_end }
    }
}

/// The firmware file and what its TDVF metadata says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirmwareFacts {
    /// The file that was read.
    pub path: PathBuf,
    /// The summary, or why the file has no metadata QEMU would load (one line).
    pub tdvf: std::result::Result<TdvfSummary, String>,
    /// Whether it refuses unsigned loaders (ours): from its QEMU firmware descriptor or a
    /// Platform Key in its variable store ([`ovmf::describe`]).
    pub secure_boot: ovmf::SecureBoot,
}

/// Everything [`assess`] looks at. Built by [`probe_host`], or by hand in tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostFacts {
    /// `vendor_id` from `/proc/cpuinfo`, e.g. `GenuineIntel`.
    pub cpu_vendor: Option<String>,
    /// Whether `/proc/cpuinfo` lists the flag `tdx_host_platform`.
    pub cpu_has_tdx_flag: bool,
    /// Whether `/sys/module/kvm_intel` exists.
    pub kvm_intel_loaded: bool,
    /// Contents of `/sys/module/kvm_intel/parameters/tdx`, trimmed (`Y` or `N`).
    pub kvm_intel_tdx_param: Option<String>,
    /// Whether `/dev/kvm` opens read-write.
    pub dev_kvm: KvmAccess,
    /// The QEMU binary, or why it could not be probed (one line).
    pub qemu: std::result::Result<QemuFacts, String>,
    /// The firmware, or why none was found (one line).
    pub firmware: std::result::Result<FirmwareFacts, String>,
    /// Every installed firmware that can boot a TD ([`ovmf::td_capable`]), listed for the user.
    pub tdx_firmware: Vec<ovmf::TdCapable>,
    /// `MemTotal` from `/proc/meminfo`.
    pub mem_total_mib: Option<u64>,
}

/// How one requirement stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Met.
    Ok,
    /// Not met: a TD cannot be launched.
    Missing,
    /// Could not be checked, or met with a caveat; does not block a launch.
    Warn,
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// What was checked, e.g. `qemu`.
    pub name: String,
    pub status: Status,
    /// What was found.
    pub detail: String,
    /// What to install or do, for anything not [`Status::Ok`].
    pub fix: Option<String>,
}

/// The doctor's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DoctorReport {
    pub lines: Vec<Item>,
    /// True when no item is [`Status::Missing`].
    pub can_launch_td: bool,
    /// One short phrase per missing item.
    pub reasons: Vec<String>,
}

impl fmt::Display for DoctorReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for item in &self.lines {
            let tag = match item.status {
                Status::Ok => "[ ok ]",
                Status::Missing => "[FAIL]",
                Status::Warn => "[warn]",
            };
            write!(f, "{tag} {}: {}", item.name, item.detail)?;
            if let Some(fix) = &item.fix {
                write!(f, " -> fix: {fix}")?;
            }
            writeln!(f)?;
        }
        if self.can_launch_td {
            writeln!(f, "verdict: this host can launch a TD")
        } else {
            writeln!(
                f,
                "verdict: a TD cannot be launched on this host: {}",
                self.reasons.join("; ")
            )
        }
    }
}

/// Collects items and reasons.
struct Builder {
    lines: Vec<Item>,
    reasons: Vec<String>,
}

impl Builder {
    fn ok(&mut self, name: &str, detail: String) {
        self.lines.push(Item { name: name.to_string(), status: Status::Ok, detail, fix: None });
    }

    fn warn(&mut self, name: &str, detail: String, fix: &str) {
        self.lines.push(Item {
            name: name.to_string(),
            status: Status::Warn,
            detail,
            fix: Some(fix.to_string()),
        });
    }

    fn missing(&mut self, name: &str, detail: String, fix: &str, reason: String) {
        self.lines.push(Item {
            name: name.to_string(),
            status: Status::Missing,
            detail,
            fix: Some(fix.to_string()),
        });
        self.reasons.push(reason);
    }
}

fn version_string((major, minor, micro): (u32, u32, u32)) -> String {
    format!("{major}.{minor}.{micro}")
}

/// Guest RAM below 4 GiB for `memory_mib` on q35.
fn q35_low_ram_bytes(memory_mib: u64) -> u64 {
    let low_mib = if memory_mib >= Q35_LOWMEM_SPLIT_MIB { Q35_LOWMEM_MIB } else { memory_mib };
    low_mib.saturating_mul(1 << 20)
}

/// Judges `facts` for a TD with `wanted_memory_mib` of memory. Pure: reads nothing.
pub fn assess(facts: &HostFacts, wanted_memory_mib: u64) -> DoctorReport {
    let mut b = Builder { lines: Vec::new(), reasons: Vec::new() };
    let vendor = facts.cpu_vendor.as_deref().unwrap_or("unknown vendor");

    // CPU and BIOS.
    if facts.cpu_has_tdx_flag {
        b.ok("cpu", format!("{vendor}, flag tdx_host_platform"));
    } else if facts.cpu_vendor.as_deref().is_some_and(|v| v != "GenuineIntel") {
        b.missing(
            "cpu",
            format!("{vendor} CPU: TDX is an Intel technology"),
            "use an Intel Xeon with TDX (4th generation Xeon Scalable or later)",
            format!("the CPU is {vendor}, not Intel"),
        );
    } else {
        b.missing(
            "cpu",
            format!("{vendor}, /proc/cpuinfo has no tdx_host_platform flag"),
            "enable TDX in the BIOS (TME/TME-MT, TDX and the SEAM loader, TDX KeyIDs > 0) on a \
             CPU that has it, and boot a kernel built with CONFIG_INTEL_TDX_HOST",
            "the CPU does not report tdx_host_platform".to_string(),
        );
    }

    // KVM with TDX.
    const KVM_TDX: &str = "kvm_intel tdx";
    match facts.kvm_intel_tdx_param.as_deref() {
        Some("Y") | Some("y") | Some("1") => b.ok(KVM_TDX, "Y".to_string()),
        Some(value) => b.missing(
            KVM_TDX,
            format!("parameter is {value}: KVM runs without TDX"),
            "reload with TDX: `modprobe -r kvm_intel && modprobe kvm_intel tdx=1`, or boot with \
             kvm_intel.tdx=1; if it stays N, `dmesg | grep -i tdx` says why",
            "kvm_intel tdx is not enabled".to_string(),
        ),
        None if !facts.kvm_intel_loaded => b.missing(
            KVM_TDX,
            "kvm_intel is not loaded".to_string(),
            "on an Intel TDX host: `modprobe kvm_intel tdx=1` (or boot with kvm_intel.tdx=1)",
            "kvm_intel is not loaded, so there is no KVM TDX".to_string(),
        ),
        None => b.missing(
            KVM_TDX,
            "kvm_intel has no tdx parameter: this kernel has no KVM TDX support".to_string(),
            "boot a host kernel >= 6.16 built with CONFIG_KVM_INTEL_TDX=y",
            "the kernel's kvm_intel has no TDX support".to_string(),
        ),
    }

    // /dev/kvm.
    match facts.dev_kvm {
        KvmAccess::Ok => b.ok("/dev/kvm", "read-write".to_string()),
        KvmAccess::Missing => b.missing(
            "/dev/kvm",
            "does not exist".to_string(),
            "load kvm_intel (and enable VT-x in the BIOS)",
            "/dev/kvm does not exist".to_string(),
        ),
        KvmAccess::NoPermission => b.missing(
            "/dev/kvm",
            "exists but cannot be opened read-write".to_string(),
            "add yourself to the kvm group (`sudo usermod -aG kvm $USER`, then log in again)",
            "no permission to open /dev/kvm".to_string(),
        ),
    }

    // QEMU.
    let wanted = version_string(MIN_QEMU_VERSION);
    match &facts.qemu {
        Err(error) => {
            b.missing(
                "qemu",
                error.clone(),
                &format!("install QEMU >= {wanted} and set QEMU=/path/to/qemu-system-x86_64"),
                format!("no usable QEMU ({error})"),
            );
        }
        Ok(qemu) => {
            let found = format!("{} {}", qemu.path.display(), version_string(qemu.version));
            if qemu.version >= MIN_QEMU_VERSION {
                b.ok("qemu", found);
            } else {
                b.missing(
                    "qemu",
                    format!("{found} is older than {wanted}, the first release that launches TDs"),
                    &format!(
                        "install QEMU >= {wanted} (build it from source if your distribution's \
                         is older) and set QEMU=/path/to/qemu-system-x86_64"
                    ),
                    format!("QEMU {} is older than {wanted}", version_string(qemu.version)),
                );
            }
            if qemu.has_tdx_guest_object {
                b.ok("qemu tdx-guest", "listed by -object help".to_string());
            } else {
                b.missing(
                    "qemu tdx-guest",
                    "`-object help` does not list tdx-guest".to_string(),
                    &format!(
                        "use a QEMU >= {wanted} built for x86_64 with KVM, which compiles TDX in"
                    ),
                    "QEMU has no tdx-guest object".to_string(),
                );
            }
        }
    }

    // Firmware.
    match &facts.firmware {
        Err(error) => b.missing(
            "firmware",
            error.clone(),
            "install OVMF (`apt-get install ovmf`) or pass --firmware PATH / set OVMF_PATH",
            "no firmware".to_string(),
        ),
        Ok(firmware) => match (&firmware.tdvf, &firmware.secure_boot) {
            (Err(error), _) => b.missing(
                "firmware",
                format!("{}: {error}", firmware.path.display()),
                "use an OVMF build with TDX support (edk2 OvmfPkgX64.dsc or \
                 OvmfPkg/IntelTdx/IntelTdxX64.dsc, combined OVMF.fd image)",
                format!("{} is not usable TDVF", firmware.path.display()),
            ),
            (Ok(summary), _) if summary.private_ram_end > q35_low_ram_bytes(wanted_memory_mib) => b
                .missing(
                    "firmware",
                    format!(
                        "{}: TDVF needs guest RAM up to {:#x}, but {wanted_memory_mib} MiB puts \
                         only {:#x} below 4 GiB",
                        firmware.path.display(),
                        summary.private_ram_end,
                        q35_low_ram_bytes(wanted_memory_mib)
                    ),
                    "raise --memory",
                    "the firmware's TDVF sections do not fit in guest RAM".to_string(),
                ),
            (Ok(_), ovmf::SecureBoot::Enforced(why)) => b.missing(
                "firmware",
                format!(
                    "{} enforces Secure Boot ({why}) and would refuse our unsigned loader",
                    firmware.path.display()
                ),
                "use a TDVF image without enrolled keys, e.g. Debian/Ubuntu's \
                     /usr/share/ovmf/OVMF.fd (`ovmf`, `ovmf-generic`) or Fedora's \
                     /usr/share/edk2/ovmf/OVMF.inteltdx.fd, with --firmware",
                "the firmware enforces Secure Boot".to_string(),
            ),
            (Ok(summary), ovmf::SecureBoot::NotEnforced) => b.ok(
                "firmware",
                format!(
                    "{} (TDVF, {} sections, accepted by QEMU's TDVF checks, no enrolled Secure \
                     Boot keys)",
                    firmware.path.display(),
                    summary.sections
                ),
            ),
        },
    }

    // Every TDX-capable firmware installed, flagging those that refuse an unsigned loader.
    for found in &facts.tdx_firmware {
        match &found.secure_boot {
            ovmf::SecureBoot::NotEnforced => b.ok(
                "tdx firmware",
                format!("{} ({}; no enrolled keys)", found.path.display(), found.origin),
            ),
            ovmf::SecureBoot::Enforced(why) => b.warn(
                "tdx firmware",
                format!(
                    "{} ({}) enforces Secure Boot ({why}): refuses our unsigned loader",
                    found.path.display(),
                    found.origin
                ),
                "do not use it for this image; pick one without enrolled keys with --firmware",
            ),
        }
    }

    // Host memory.
    let needed = wanted_memory_mib.saturating_add(HOST_MEMORY_HEADROOM_MIB);
    match facts.mem_total_mib {
        None => b.warn(
            "memory",
            "could not read MemTotal from /proc/meminfo".to_string(),
            &format!("make sure the host has at least {needed} MiB"),
        ),
        Some(total) if total < needed => b.missing(
            "memory",
            format!(
                "{wanted_memory_mib} MiB for the TD plus {HOST_MEMORY_HEADROOM_MIB} MiB headroom, \
                 host has {total} MiB"
            ),
            &format!("lower --memory (default {DEFAULT_MEMORY_MIB}) or use a bigger host"),
            format!("the host has {total} MiB, less than {needed} MiB"),
        ),
        Some(total) => {
            b.ok("memory", format!("{wanted_memory_mib} MiB for the TD, host has {total} MiB"))
        }
    }

    DoctorReport { can_launch_td: b.reasons.is_empty(), lines: b.lines, reasons: b.reasons }
}

/// Fails with one line naming every missing requirement, so that `run --tdx` stops before it
/// starts QEMU.
pub fn preflight(facts: &HostFacts, wanted_memory_mib: u64) -> Result<()> {
    let report = assess(facts, wanted_memory_mib);
    if !report.can_launch_td {
        bail!(
            "a TD cannot be launched on this host: {} (run `cargo xtask doctor` for fixes)",
            report.reasons.join("; ")
        );
    }
    Ok(())
}

/// Parses `x.y.z` from `qemu -version`'s first line ("QEMU emulator version 7.2.22 (Debian
/// ...)"). A missing micro version counts as 0.
pub fn parse_qemu_version(output: &str) -> Option<(u32, u32, u32)> {
    let rest = output.lines().next()?.split("version").nth(1)?;
    let word = rest.split_whitespace().next()?;
    let mut parts = word.split('.').map(|part| {
        let digits: String = part.chars().take_while(char::is_ascii_digit).collect();
        digits.parse::<u32>().ok()
    });
    let major = parts.next()??;
    let minor = parts.next()??;
    let micro = parts.next().flatten().unwrap_or(0);
    Some((major, minor, micro))
}

/// Whether `qemu -object help` output lists the `tdx-guest` type (one type per line).
pub fn object_help_lists_tdx_guest(output: &str) -> bool {
    output.lines().any(|line| line.trim() == "tdx-guest")
}

/// `vendor_id` and whether the first `flags` line has `tdx_host_platform`.
pub fn parse_cpuinfo(cpuinfo: &str) -> (Option<String>, bool) {
    let field = |name: &str| {
        cpuinfo.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            (key.trim() == name).then(|| value.trim().to_string())
        })
    };
    let vendor = field("vendor_id");
    let has_flag = field("flags")
        .is_some_and(|flags| flags.split_whitespace().any(|f| f == "tdx_host_platform"));
    (vendor, has_flag)
}

/// `MemTotal` in MiB from `/proc/meminfo`.
pub fn parse_mem_total_mib(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

/// Resolves a bare program name through `PATH`; a path with a slash is returned as is.
fn resolve_program(program: &Path) -> Option<PathBuf> {
    if program.components().count() > 1 || program.is_absolute() {
        return program.is_file().then(|| program.to_path_buf());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(program)).find(|candidate| candidate.is_file())
}

/// Reads a child's pipe to the end on a thread.
fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut bytes);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// Runs `program args` with no stdin and returns its stdout, killing it after `timeout`.
pub(crate) fn run_with_timeout(
    program: &Path,
    args: &[&str],
    timeout: Duration,
) -> std::result::Result<String, String> {
    let shown = format!("{} {}", program.display(), args.join(" "));
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|error| format!("cannot run `{shown}`: {error}"))?;
    // Drain both pipes on threads so a chatty child cannot block on a full pipe.
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("`{shown}` did not finish within {}s", timeout.as_secs()));
            }
            Ok(None) => thread::sleep(Duration::from_millis(20)),
            Err(error) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("waiting for `{shown}`: {error}"));
            }
        }
    };
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    if !status.success() {
        let first = stderr.lines().next().unwrap_or("").trim();
        return Err(format!("`{shown}` failed ({status}): {first}"));
    }
    Ok(stdout)
}

/// Asks the QEMU binary for its version and whether it has `tdx-guest`.
pub fn probe_qemu(qemu: &Path) -> std::result::Result<QemuFacts, String> {
    let path = resolve_program(qemu).ok_or_else(|| format!("{} not found", qemu.display()))?;
    let version_output = run_with_timeout(&path, &["-version"], QEMU_PROBE_TIMEOUT)?;
    let version = parse_qemu_version(&version_output).ok_or_else(|| {
        format!(
            "cannot read a version from `{} -version`: {:?}",
            path.display(),
            version_output.lines().next().unwrap_or("")
        )
    })?;
    // `-object help` prints the list and exits before any machine exists; the other options
    // only make sure that nothing else could be started even if it did not.
    let help = run_with_timeout(
        &path,
        &["-machine", "none", "-object", "help", "-nic", "none", "-display", "none"],
        QEMU_PROBE_TIMEOUT,
    )?;
    Ok(QemuFacts { path, version, has_tdx_guest_object: object_help_lists_tdx_guest(&help) })
}

/// Reads and summarizes a firmware file.
pub fn probe_firmware(path: &Path) -> FirmwareFacts {
    let tdvf = ovmf::read_firmware(path).map_err(|error| format!("cannot read: {error}")).and_then(
        |bytes| {
            let metadata = ovmf::tdvf::parse(&bytes).map_err(|error| error.to_string())?;
            metadata.check_qemu_loadable().map_err(|error| error.to_string())?;
            Ok(TdvfSummary::of(&metadata))
        },
    );
    let descriptors = ovmf::descriptor::load(&crate::firmware::descriptor_dirs()).descriptors;
    let secure_boot = ovmf::describe(path, &descriptors).secure_boot;
    FirmwareFacts { path: path.to_path_buf(), tdvf, secure_boot }
}

fn probe_dev_kvm() -> KvmAccess {
    match fs::OpenOptions::new().read(true).write(true).open("/dev/kvm") {
        Ok(_) => KvmAccess::Ok,
        Err(error) if error.kind() == io::ErrorKind::PermissionDenied => KvmAccess::NoPermission,
        Err(_) => KvmAccess::Missing,
    }
}

/// Gathers the facts about this host. `firmware` is the file to check; without one, the
/// search of [`ovmf::find`] (`OVMF_PATH`, then distribution paths) picks it. Never hangs: the
/// QEMU probes are killed after [`QEMU_PROBE_TIMEOUT`].
pub fn probe_host(qemu: &Path, firmware: Option<&Path>) -> HostFacts {
    let (cpu_vendor, cpu_has_tdx_flag) = fs::read_to_string("/proc/cpuinfo")
        .map(|text| parse_cpuinfo(&text))
        .unwrap_or((None, false));
    let firmware = match firmware {
        Some(path) => Ok(probe_firmware(path)),
        // Only a split CODE/VARS install gets its VARS template copied to the scratch dir.
        None => ovmf::find(&crate::firmware::options(
            None,
            ovmf::Purpose::Td,
            std::env::temp_dir().join("xtask-doctor"),
        ))
        .map(|found| probe_firmware(&found.code))
        .map_err(|error| error.to_string()),
    };
    let (tdx_firmware, _) = ovmf::td_capable(&crate::firmware::options(
        None,
        ovmf::Purpose::Td,
        std::env::temp_dir().join("xtask-doctor"),
    ));
    HostFacts {
        cpu_vendor,
        cpu_has_tdx_flag,
        kvm_intel_loaded: Path::new("/sys/module/kvm_intel").exists(),
        kvm_intel_tdx_param: fs::read_to_string("/sys/module/kvm_intel/parameters/tdx")
            .ok()
            .map(|value| value.trim().to_string()),
        dev_kvm: probe_dev_kvm(),
        qemu: probe_qemu(qemu),
        firmware,
        tdx_firmware,
        mem_total_mib: fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|text| parse_mem_total_mib(&text)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A host that has everything.
    fn capable() -> HostFacts {
        HostFacts {
            cpu_vendor: Some("GenuineIntel".to_string()),
            cpu_has_tdx_flag: true,
            kvm_intel_loaded: true,
            kvm_intel_tdx_param: Some("Y".to_string()),
            dev_kvm: KvmAccess::Ok,
            qemu: Ok(QemuFacts {
                path: PathBuf::from("/usr/bin/qemu-system-x86_64"),
                version: (10, 1, 0),
                has_tdx_guest_object: true,
            }),
            firmware: Ok(FirmwareFacts {
                path: PathBuf::from("/usr/share/ovmf/OVMF.fd"),
                tdvf: Ok(TdvfSummary { sections: 5, private_ram_end: 0x90_0000 }),
                secure_boot: ovmf::SecureBoot::NotEnforced,
            }),
            tdx_firmware: Vec::new(),
            mem_total_mib: Some(24_105),
        }
    }

    /// This development machine: AMD, QEMU 7.2, no kvm_intel, root with /dev/kvm.
    fn this_machine() -> HostFacts {
        HostFacts {
            cpu_vendor: Some("AuthenticAMD".to_string()),
            cpu_has_tdx_flag: false,
            kvm_intel_loaded: false,
            kvm_intel_tdx_param: None,
            qemu: Ok(QemuFacts {
                path: PathBuf::from("/usr/bin/qemu-system-x86_64"),
                version: (7, 2, 22),
                has_tdx_guest_object: false,
            }),
            ..capable()
        }
    }

    fn item<'a>(report: &'a DoctorReport, name: &str) -> &'a Item {
        report
            .lines
            .iter()
            .find(|item| item.name == name)
            .unwrap_or_else(|| panic!("no item {name} in\n{report}"))
    }

    /// Asserts that exactly `name` fails, with a fix, and the verdict says no.
    fn only_missing(facts: &HostFacts, name: &str, reason_contains: &str) {
        let report = assess(facts, DEFAULT_MEMORY_MIB);
        assert!(!report.can_launch_td, "{report}");
        let failing: Vec<&str> = report
            .lines
            .iter()
            .filter(|i| i.status == Status::Missing)
            .map(|i| i.name.as_str())
            .collect();
        assert_eq!(failing, [name], "{report}");
        assert!(item(&report, name).fix.is_some());
        assert_eq!(report.reasons.len(), 1, "{report}");
        assert!(report.reasons[0].contains(reason_contains), "{report}");
        let text = report.to_string();
        assert!(text.contains(&format!("[FAIL] {name}:")), "{text}");
        assert!(
            text.ends_with(&format!(
                "verdict: a TD cannot be launched on this host: {}\n",
                report.reasons[0]
            )),
            "{text}"
        );
        let error = preflight(facts, DEFAULT_MEMORY_MIB).unwrap_err().to_string();
        assert!(error.contains(&report.reasons[0]) && !error.contains('\n'), "{error}");
    }

    #[test]
    fn capable_host_can_launch() {
        let report = assess(&capable(), DEFAULT_MEMORY_MIB);
        assert!(report.can_launch_td, "{report}");
        assert!(report.reasons.is_empty());
        assert!(report.lines.iter().all(|i| i.status == Status::Ok && i.fix.is_none()));
        let text = report.to_string();
        assert!(text.contains("[ ok ] qemu: /usr/bin/qemu-system-x86_64 10.1.0\n"), "{text}");
        assert!(text.ends_with("verdict: this host can launch a TD\n"), "{text}");
        preflight(&capable(), DEFAULT_MEMORY_MIB).unwrap();
    }

    #[test]
    fn this_machine_cannot_launch() {
        let report = assess(&this_machine(), DEFAULT_MEMORY_MIB);
        assert!(!report.can_launch_td);
        let reasons = report.reasons.join("; ");
        assert!(reasons.contains("QEMU 7.2.22 is older than 10.1.0"), "{reasons}");
        assert!(reasons.contains("kvm_intel"), "{reasons}");
        assert!(reasons.contains("AuthenticAMD"), "{reasons}");
        let text = report.to_string();
        assert!(
            text.contains("[FAIL] qemu: /usr/bin/qemu-system-x86_64 7.2.22 is older than 10.1.0"),
            "{text}"
        );
        assert!(text.contains("[FAIL] kvm_intel tdx: kvm_intel is not loaded -> fix: "), "{text}");
        assert!(text.contains("[ ok ] firmware: /usr/share/ovmf/OVMF.fd"), "{text}");
        let error = preflight(&this_machine(), DEFAULT_MEMORY_MIB).unwrap_err().to_string();
        assert!(error.contains("QEMU 7.2.22") && error.contains("kvm_intel"), "{error}");
    }

    #[test]
    fn missing_cpu_flag_on_intel() {
        let facts = HostFacts { cpu_has_tdx_flag: false, ..capable() };
        only_missing(&facts, "cpu", "tdx_host_platform");
    }

    #[test]
    fn kvm_intel_tdx_off() {
        let facts = HostFacts { kvm_intel_tdx_param: Some("N".to_string()), ..capable() };
        only_missing(&facts, "kvm_intel tdx", "kvm_intel tdx is not enabled");
    }

    #[test]
    fn kvm_intel_without_tdx_parameter() {
        let facts = HostFacts { kvm_intel_tdx_param: None, ..capable() };
        only_missing(&facts, "kvm_intel tdx", "no TDX support");
        let report = assess(&facts, DEFAULT_MEMORY_MIB);
        assert!(item(&report, "kvm_intel tdx").fix.as_deref().unwrap().contains("6.16"));
    }

    #[test]
    fn dev_kvm_missing_or_forbidden() {
        let facts = HostFacts { dev_kvm: KvmAccess::Missing, ..capable() };
        only_missing(&facts, "/dev/kvm", "does not exist");
        let facts = HostFacts { dev_kvm: KvmAccess::NoPermission, ..capable() };
        only_missing(&facts, "/dev/kvm", "permission");
        let report = assess(&facts, DEFAULT_MEMORY_MIB);
        assert!(item(&report, "/dev/kvm").fix.as_deref().unwrap().contains("kvm group"));
    }

    #[test]
    fn qemu_not_found() {
        let facts =
            HostFacts { qemu: Err("qemu-system-x86_64 not found".to_string()), ..capable() };
        only_missing(&facts, "qemu", "not found");
    }

    #[test]
    fn qemu_too_old_but_with_tdx_object() {
        let facts = HostFacts {
            qemu: Ok(QemuFacts {
                path: PathBuf::from("/opt/qemu/bin/qemu-system-x86_64"),
                version: (10, 0, 3),
                has_tdx_guest_object: true,
            }),
            ..capable()
        };
        only_missing(&facts, "qemu", "QEMU 10.0.3 is older than 10.1.0");
    }

    #[test]
    fn qemu_new_enough_without_tdx_object() {
        let facts = HostFacts {
            qemu: Ok(QemuFacts {
                path: PathBuf::from("/usr/bin/qemu-system-x86_64"),
                version: (10, 2, 0),
                has_tdx_guest_object: false,
            }),
            ..capable()
        };
        only_missing(&facts, "qemu tdx-guest", "tdx-guest");
    }

    #[test]
    fn firmware_missing_or_not_tdvf() {
        let facts = HostFacts { firmware: Err("no UEFI firmware found".to_string()), ..capable() };
        only_missing(&facts, "firmware", "no firmware");
        let facts = HostFacts {
            firmware: Ok(FirmwareFacts {
                path: PathBuf::from("/x/OVMF_CODE.fd"),
                tdvf: Err("no OVMF GUIDed table footer".to_string()),
                secure_boot: ovmf::SecureBoot::NotEnforced,
            }),
            ..capable()
        };
        only_missing(&facts, "firmware", "/x/OVMF_CODE.fd is not usable TDVF");
    }

    #[test]
    fn firmware_sections_beyond_guest_ram() {
        let facts = HostFacts {
            firmware: Ok(FirmwareFacts {
                path: PathBuf::from("/fw.fd"),
                tdvf: Ok(TdvfSummary { sections: 4, private_ram_end: 300 << 20 }),
                secure_boot: ovmf::SecureBoot::NotEnforced,
            }),
            ..capable()
        };
        let report = assess(&facts, 256);
        assert!(!report.can_launch_td, "{report}");
        assert!(assess(&facts, 512).can_launch_td);
        // Above 2.75 GiB q35 keeps only 2 GiB below 4 GiB.
        let facts = HostFacts {
            firmware: Ok(FirmwareFacts {
                path: PathBuf::from("/fw.fd"),
                tdvf: Ok(TdvfSummary { sections: 4, private_ram_end: 0x9000_0000 }),
                secure_boot: ovmf::SecureBoot::NotEnforced,
            }),
            ..capable()
        };
        assert!(assess(&facts, 2700).can_launch_td);
        assert!(!assess(&facts, 4096).can_launch_td);
    }

    #[test]
    fn a_firmware_that_enforces_secure_boot_blocks_and_the_list_flags_refusers() {
        let enforced = ovmf::SecureBoot::Enforced(
            "its QEMU firmware descriptor 60-edk2-x86_64-inteltdx.json lists enrolled-keys".into(),
        );
        let mut facts = capable();
        if let Ok(firmware) = &mut facts.firmware {
            firmware.path = PathBuf::from("/usr/share/ovmf/OVMF.inteltdx.ms.fd");
            firmware.secure_boot = enforced.clone();
        }
        only_missing(&facts, "firmware", "the firmware enforces Secure Boot");

        let mut facts = capable();
        facts.tdx_firmware = vec![
            ovmf::TdCapable {
                path: PathBuf::from("/usr/share/ovmf/OVMF.inteltdx.ms.fd"),
                origin: "QEMU firmware descriptor 60-edk2-x86_64-inteltdx.json".into(),
                secure_boot: enforced,
            },
            ovmf::TdCapable {
                path: PathBuf::from("/usr/share/ovmf/OVMF.fd"),
                origin: "Debian/Ubuntu package `ovmf`".into(),
                secure_boot: ovmf::SecureBoot::NotEnforced,
            },
        ];
        let report = assess(&facts, DEFAULT_MEMORY_MIB);
        // Listing a refuser is a warning, not a reason the TD cannot launch.
        assert!(report.can_launch_td, "{report}");
        let text = report.to_string();
        assert!(
            text.contains(
                "[warn] tdx firmware: /usr/share/ovmf/OVMF.inteltdx.ms.fd (QEMU firmware \
                 descriptor 60-edk2-x86_64-inteltdx.json) enforces Secure Boot"
            ),
            "{text}"
        );
        assert!(text.contains("refuses our unsigned loader"), "{text}");
        assert!(
            text.contains(
                "[ ok ] tdx firmware: /usr/share/ovmf/OVMF.fd (Debian/Ubuntu package `ovmf`; no \
                 enrolled keys)"
            ),
            "{text}"
        );
    }

    #[test]
    fn not_enough_host_memory() {
        let facts = HostFacts { mem_total_mib: Some(2000), ..capable() };
        only_missing(&facts, "memory", "less than 2560 MiB");
    }

    #[test]
    fn unknown_host_memory_is_only_a_warning() {
        let facts = HostFacts { mem_total_mib: None, ..capable() };
        let report = assess(&facts, DEFAULT_MEMORY_MIB);
        assert!(report.can_launch_td, "{report}");
        assert_eq!(item(&report, "memory").status, Status::Warn);
        assert!(report.to_string().contains("[warn] memory: "));
    }

    #[test]
    fn every_line_is_one_line() {
        for facts in [capable(), this_machine()] {
            let report = assess(&facts, DEFAULT_MEMORY_MIB);
            assert_eq!(report.to_string().lines().count(), report.lines.len() + 1);
        }
    }

    #[test]
    fn parses_qemu_version() {
        assert_eq!(
            parse_qemu_version(
                "QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)\nCopyright"
            ),
            Some((7, 2, 22))
        );
        assert_eq!(parse_qemu_version("QEMU emulator version 10.1.0\n"), Some((10, 1, 0)));
        assert_eq!(
            parse_qemu_version("QEMU emulator version 10.1.50 (v10.1.0-123-gabc)"),
            Some((10, 1, 50))
        );
        assert_eq!(parse_qemu_version("QEMU emulator version 9.2"), Some((9, 2, 0)));
        assert_eq!(parse_qemu_version("garbage"), None);
        assert_eq!(parse_qemu_version(""), None);
    }

    #[test]
    fn parses_object_help() {
        let old = "List of user creatable objects:\n  sev-guest\n  thread-context\n";
        assert!(!object_help_lists_tdx_guest(old));
        let new = "List of user creatable objects:\n  sev-guest\n  tdx-guest\n";
        assert!(object_help_lists_tdx_guest(new));
        assert!(!object_help_lists_tdx_guest("  tdx-guest-foo\n"));
    }

    #[test]
    fn parses_cpuinfo_and_meminfo() {
        let cpuinfo =
            "processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: fpu vme tdx_host_platform sse\n";
        assert_eq!(parse_cpuinfo(cpuinfo), (Some("GenuineIntel".to_string()), true));
        let amd = "vendor_id\t: AuthenticAMD\nflags\t\t: fpu svm sev\n";
        assert_eq!(parse_cpuinfo(amd), (Some("AuthenticAMD".to_string()), false));
        assert_eq!(parse_cpuinfo(""), (None, false));
        assert_eq!(
            parse_mem_total_mib("MemTotal:       24684096 kB\nMemFree: 1 kB\n"),
            Some(24105)
        );
        assert_eq!(parse_mem_total_mib("MemFree: 1 kB\n"), None);
    }

    #[test]
    fn probe_of_a_missing_qemu_is_an_error_not_a_hang() {
        let error = probe_qemu(Path::new("/nonexistent/qemu-system-x86_64")).unwrap_err();
        assert!(error.contains("not found"), "{error}");
    }

    #[test]
    fn probe_kills_a_hanging_program() {
        let start = Instant::now();
        let error = run_with_timeout(Path::new("/bin/sleep"), &["30"], Duration::from_millis(300))
            .unwrap_err();
        assert!(error.contains("did not finish"), "{error}");
        assert!(start.elapsed() < Duration::from_secs(10));
    }

    /// Prints what the doctor says about the machine the tests run on (`--nocapture` shows it).
    /// It cannot assert a verdict, only that probing terminates and is self-consistent.
    #[test]
    fn probe_this_host() {
        let facts = probe_host(Path::new("qemu-system-x86_64"), None);
        let report = assess(&facts, DEFAULT_MEMORY_MIB);
        println!("{report}");
        assert_eq!(report.can_launch_td, preflight(&facts, DEFAULT_MEMORY_MIB).is_ok());
    }
}
