//! The QEMU command line that starts the unikernel in a real TD.
//!
//! Every flag was checked against upstream QEMU as of 10.1, the first release with TDX (read
//! from qemu/qemu master: `docs/system/i386/tdx.rst`, `qapi/qom.json` `TdxGuestProperties`,
//! `target/i386/kvm/tdx.c` at commit 05caf2690e, `system/runstate.c`, `system/vl.c`). None of it
//! was run: no machine available to this project has TDX. The golden tests pin the result.
//!
//! - With `--quote-service`, the object is written in QEMU's JSON form so that it can carry
//!   `quote-generation-socket` (a socket address: `{"type":"vsock","cid":"2","port":"4050"}`
//!   or `{"type":"unix","path":...}`), the host's Quote Generation Service that QEMU forwards
//!   TDG.VP.VMCALL<GetQuote> to; without one QEMU answers QGS_UNAVAILABLE
//!   (`tdx_handle_get_quote`, ATTEST-FACTS §4). The other properties keep their meaning:
//!   `sept-ve-disable` a JSON bool, `attributes` a number.
//! - `-accel kvm -cpu host`: a TD only runs on KVM, and `tdx_cpu_instance_init` exits with
//!   "Named cpu model is not supported for TDX yet!" for any named model; `host` is the model
//!   `tdx.rst` uses. QEMU also turns the PMU off and forces `invtsc` on by itself.
//! - `-object tdx-guest,id=tdx0,...`: the confidential-guest object. Its TD attribute bits are
//!   set either one by one (`sept-ve-disable`, a bool for bit 28) or all at once
//!   (`attributes`, a `uint64`). `tdx_guest_init` sets SEPT_VE_DISABLE by default; we still
//!   spell the property out so the line means the same on every QEMU. There is no `debug`
//!   property (Intel's pre-upstream QEMU had one). The DEBUG bit (bit 0) can only be requested
//!   through `attributes`, and QEMU 10.1 refuses it: `TDX_SUPPORTED_TD_ATTRS` is
//!   SEPT_VE_DISABLE | PKS | PERFMON, and Linux's `KVM_SUPPORTED_TD_ATTRS` (since 6.16) is only
//!   SEPT_VE_DISABLE. See [`launch_warnings`]. The two forms are never mixed: QEMU applies
//!   `-object` properties from a dictionary, so the order between `attributes` and
//!   `sept-ve-disable` would be unspecified.
//! - `-machine q35,pic=off,smm=off,kernel-irqchip=split,confidential-guest-support=tdx0` and
//!   the devices after it come from the shared `td` machine (`crate::machine`), which the TCG
//!   runs boot too. `tdx_kvm_init` turns SMM and the PIC off when left at `auto` and refuses
//!   `on`, so spelling `off` out changes nothing for a TD. It also requires a split irqchip (it
//!   picks one itself when the option is left at `auto`, and fails with "TDX VM requires
//!   kernel_irqchip to be split" otherwise). `kernel-irqchip` on `-machine` is the legacy
//!   spelling of the KVM accelerator's property; `vl.c` (`qemu_apply_legacy_machine_options`)
//!   still forwards it.
//! - `-bios <TDVF>`: TDX has no read-only private memory, so no pflash: the firmware is loaded
//!   with `-bios` and copied into private memory (`tdx.rst`, "TDVF").
//! - `-nodefaults -serial stdio`: with `-nodefaults` there is no serial port unless one is asked
//!   for, and neither a NIC, VGA, floppy, CD-ROM nor monitor.
//! - `-device isa-debug-exit,iobase=0xf4,iosize=0x04`: the kernel's exit port; port I/O in a
//!   TD is a #VE that the guest turns into TDG.VP.VMCALL<Instruction.IO>, which KVM hands to
//!   QEMU like any other port access.
//! - `-chardev file,id=virtcon0,path=virtio-console.log -device virtio-serial-pci,... -device
//!   virtconsole,chardev=virtcon0`: the virtio console (`crate::machine::virtio_console_args`),
//!   writing to `virtio-console.log` in the current directory. In a TD QEMU makes virtio-pci
//!   modern-only with ACCESS_PLATFORM by itself (`machine_run_board_init`); the properties are
//!   spelled out so that the line means the same as the TCG runs'.
//! - `-nic none -display none -no-reboot`: no network (project rule), no window, and a triple
//!   fault ends QEMU instead of rebooting the TD.
//! - `-action panic=exit-failure`: a TD's TDG.VP.VMCALL<ReportFatalError> becomes a guest panic
//!   (`tdx_handle_report_fatal_error` -> `qemu_system_guest_panicked`); with the default
//!   `panic=shutdown` QEMU would then exit with status 0. QEMU prints the TD's message
//!   ("TDX guest reports fatal error. error code: 0x... error message:\"...\"") only through
//!   `qemu_log_mask(LOG_GUEST_ERROR, ...)`, i.e. only with `-d guest_errors`. That flag is not
//!   in the default line: OVMF probes absent MMIO devices (the TPM at 0xfed40000) in a loop, and
//!   with QEMU 7.2 and Debian's OVMF that logged 50,000 "Invalid read" lines in 8 seconds.
//!   When a TD dies, add `-d guest_errors -D FILE` as extra arguments and look in FILE.
//! - `-smp <n> -m <MiB>M`: see [`MIN_MEMORY_MIB`] and [`MAX_VCPUS`] for the bounds.
//! - `-drive if=none,id=disk0,format=raw,file=<image> -device virtio-blk-pci,drive=disk0`: the
//!   disk device is named explicitly so it exists whatever `-nodefaults` does. OVMF drives
//!   virtio-blk through its IOMMU protocol, which bounces DMA through shared memory in a TD.

use crate::machine::{Disk, Machine};
use anyhow::{bail, Context as _, Result};
use std::path::{Path, PathBuf};

/// The confidential-guest object's id, referenced by `confidential-guest-support`.
pub const TDX_OBJECT_ID: &str = "tdx0";

/// TD attribute bit 0: the TD runs in off-TD debug mode (Intel TDX module ABI, TD_PARAMS
/// ATTRIBUTES; QEMU `TDX_TD_ATTRIBUTES_DEBUG`).
pub const TD_ATTRIBUTE_DEBUG: u64 = 1 << 0;

/// TD attribute bit 28: EPT violations on PENDING pages are not turned into #VE (QEMU
/// `TDX_TD_ATTRIBUTES_SEPT_VE_DISABLE`).
pub const TD_ATTRIBUTE_SEPT_VE_DISABLE: u64 = 1 << 28;

pub use crate::machine::DEBUG_EXIT_IOBASE;

/// Default guest memory. Far more than the unikernel needs; TDVF and the bootloader are happy
/// with it and it stays below the 2.75 GiB point where q35 splits RAM around the PCI hole.
pub const DEFAULT_MEMORY_MIB: u64 = 2048;

/// Smallest accepted guest memory. TDVF's TD_HOB and TempMem sections must lie inside guest
/// RAM (QEMU's `tdx_accept_ram_range` fails "Failed to accept memory for TDVF section"
/// otherwise; Debian's OVMF puts them below 16 MiB), and OVMF's PEI and DXE phases, the
/// bootloader and the kernel's heap need room on top. 256 MiB leaves a wide margin.
pub const MIN_MEMORY_MIB: u64 = 256;

/// Largest accepted guest memory: 64 GiB. Nothing here needs more; the bound catches unit
/// mistakes such as `--memory 2048000`, which would otherwise make the host pin that much
/// private memory.
pub const MAX_MEMORY_MIB: u64 = 64 * 1024;

/// Default number of vCPUs. The kernel runs its self-test on the boot vCPU.
pub const DEFAULT_VCPUS: u32 = 1;

/// Largest accepted vCPU count. More than 255 needs x2APIC with interrupt remapping (an
/// `intel-iommu` device), which this command line does not set up.
pub const MAX_VCPUS: u32 = 255;

/// Everything needed to start one TD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TdLaunch {
    /// The QEMU binary (>= 10.1).
    pub qemu: PathBuf,
    /// A combined TDVF/OVMF image, loaded with `-bios`.
    pub firmware: PathBuf,
    /// The raw UEFI disk image that holds the bootloader and the kernel.
    pub image: PathBuf,
    /// Number of vCPUs, 1..=[`MAX_VCPUS`].
    pub vcpus: u32,
    /// Guest memory in MiB, [`MIN_MEMORY_MIB`]..=[`MAX_MEMORY_MIB`].
    pub memory_mib: u64,
    /// TD attribute SEPT_VE_DISABLE (bit 28). QEMU's default is on.
    pub sept_ve_disable: bool,
    /// TD attribute DEBUG (bit 0); see [`launch_warnings`].
    pub debug: bool,
    /// The host's quote service for GetQuote, if any.
    pub quote_service: Option<QuoteService>,
    /// Appended verbatim after the generated arguments (e.g. `-fw_cfg ...`, `-d int`).
    pub extra_args: Vec<String>,
}

/// Where QEMU reaches the host's Quote Generation Service (`--quote-service vsock:CID:PORT` or
/// `unix:PATH`; Intel's QGS listens on vsock port 4050 of the host, CID 2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuoteService {
    Vsock { cid: u32, port: u32 },
    Unix(String),
}

impl std::str::FromStr for QuoteService {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let usage = "expected vsock:CID:PORT (e.g. vsock:2:4050) or unix:PATH";
        if let Some(rest) = text.strip_prefix("vsock:") {
            let (cid, port) = rest.split_once(':').ok_or(usage)?;
            let number = |s: &str| s.parse::<u32>().map_err(|_| format!("{s:?}: {usage}"));
            return Ok(QuoteService::Vsock { cid: number(cid)?, port: number(port)? });
        }
        match text.strip_prefix("unix:") {
            Some(path) if path.starts_with('/') => Ok(QuoteService::Unix(path.to_owned())),
            Some(_) => Err(format!("{text:?}: the unix socket path must be absolute")),
            None => Err(format!("{text:?}: {usage}")),
        }
    }
}

impl QuoteService {
    /// QEMU's SocketAddress in JSON (VsockSocketAddress takes its cid and port as strings).
    fn json(&self) -> serde_json::Value {
        match self {
            QuoteService::Vsock { cid, port } => serde_json::json!({
                "type": "vsock", "cid": cid.to_string(), "port": port.to_string()
            }),
            QuoteService::Unix(path) => serde_json::json!({"type": "unix", "path": path}),
        }
    }
}

impl TdLaunch {
    /// A launch with the defaults: one vCPU, [`DEFAULT_MEMORY_MIB`], SEPT_VE_DISABLE on, no
    /// DEBUG, no extra arguments.
    pub fn new(
        qemu: impl Into<PathBuf>,
        firmware: impl Into<PathBuf>,
        image: impl Into<PathBuf>,
    ) -> Self {
        TdLaunch {
            qemu: qemu.into(),
            firmware: firmware.into(),
            image: image.into(),
            vcpus: DEFAULT_VCPUS,
            memory_mib: DEFAULT_MEMORY_MIB,
            sept_ve_disable: true,
            debug: false,
            quote_service: None,
            extra_args: Vec::new(),
        }
    }

    /// The TD ATTRIBUTES value this launch asks for.
    pub fn attributes(&self) -> u64 {
        td_attributes(self.sept_ve_disable, self.debug)
    }
}

/// The TD ATTRIBUTES word for the two bits this project sets. The same value is libvirt's
/// `<launchSecurity type='tdx'><policy>`.
pub fn td_attributes(sept_ve_disable: bool, debug: bool) -> u64 {
    let mut attributes = 0;
    if sept_ve_disable {
        attributes |= TD_ATTRIBUTE_SEPT_VE_DISABLE;
    }
    if debug {
        attributes |= TD_ATTRIBUTE_DEBUG;
    }
    attributes
}

/// Checks the vCPU count against 1..=[`MAX_VCPUS`].
pub fn validate_vcpus(vcpus: u32) -> Result<()> {
    if vcpus == 0 || vcpus > MAX_VCPUS {
        bail!("--vcpus {vcpus} is out of range: a TD here gets 1 to {MAX_VCPUS} vCPUs");
    }
    Ok(())
}

/// Checks guest memory against [`MIN_MEMORY_MIB`]..=[`MAX_MEMORY_MIB`].
pub fn validate_memory(memory_mib: u64) -> Result<()> {
    if !(MIN_MEMORY_MIB..=MAX_MEMORY_MIB).contains(&memory_mib) {
        bail!(
            "--memory {memory_mib} MiB is out of range: a TD here gets {MIN_MEMORY_MIB} to \
             {MAX_MEMORY_MIB} MiB (TDVF needs its TD_HOB and TempMem sections inside guest RAM)"
        );
    }
    Ok(())
}

/// A path as UTF-8, for a command line that is also printed and compared with a golden file.
pub(crate) fn utf8_path<'a>(what: &str, path: &'a Path) -> Result<&'a str> {
    path.to_str().with_context(|| format!("{what} path {} is not valid UTF-8", path.display()))
}

/// Escapes a value for a QEMU `key=value,...` option string, where a literal comma is written
/// as two (QEMU `docs/system/invocation.rst`, "-drive file=my,,file").
pub fn qemu_opt_escape(value: &str) -> String {
    value.replace(',', ",,")
}

/// Where a TD's virtio console writes (relative to QEMU's working directory).
pub const TD_VIRTIO_CONSOLE: &str = "virtio-console.log";

/// The QEMU arguments (without the binary) that start `l` as a TD. See the module docs for why
/// each one is there. Fails with one line when a value is out of range or a path is not UTF-8.
pub fn td_qemu_args(l: &TdLaunch) -> Result<Vec<String>> {
    validate_vcpus(l.vcpus)?;
    validate_memory(l.memory_mib)?;
    let firmware = utf8_path("firmware", &l.firmware)?;
    let image = utf8_path("image", &l.image)?;
    if firmware.is_empty() || image.is_empty() {
        bail!("firmware and image paths must not be empty");
    }

    let tdx_object = if let Some(service) = &l.quote_service {
        let mut object = serde_json::json!({"qom-type": "tdx-guest", "id": TDX_OBJECT_ID});
        if l.debug {
            object["attributes"] = l.attributes().into();
        } else {
            object["sept-ve-disable"] = l.sept_ve_disable.into();
        }
        object["quote-generation-socket"] = service.json();
        object.to_string()
    } else if l.debug {
        format!("tdx-guest,id={TDX_OBJECT_ID},attributes={:#x}", l.attributes())
    } else {
        let on_off = if l.sept_ve_disable { "on" } else { "off" };
        format!("tdx-guest,id={TDX_OBJECT_ID},sept-ve-disable={on_off}")
    };

    let mut args: Vec<String> =
        ["-accel", "kvm", "-cpu", "host", "-object", &tdx_object].map(String::from).to_vec();
    // The machine the TCG runs on `--machine td` use, plus the confidential-guest properties.
    let confidential = format!("confidential-guest-support={TDX_OBJECT_ID}");
    args.extend(Machine::Td.args(
        &["kernel-irqchip=split", &confidential],
        &Disk { file: &qemu_opt_escape(image), snapshot: false },
    ));
    args.extend(crate::machine::virtio_console_args(TD_VIRTIO_CONSOLE));
    args.extend(
        [
            "-bios",
            firmware,
            "-nic",
            "none",
            "-display",
            "none",
            "-no-reboot",
            "-action",
            "panic=exit-failure",
            "-smp",
            &l.vcpus.to_string(),
            "-m",
            &format!("{}M", l.memory_mib),
        ]
        .map(String::from),
    );
    args.extend(l.extra_args.iter().cloned());
    Ok(args)
}

/// The whole command (binary and arguments), shell-quoted on one line, as `--dry-run` prints
/// it and as `scripts/run-td.sh --dry-run` must print it too.
pub fn td_command_line(l: &TdLaunch) -> Result<String> {
    let qemu = utf8_path("QEMU", &l.qemu)?;
    let args = td_qemu_args(l)?;
    Ok(shell_quote(std::iter::once(qemu).chain(args.iter().map(String::as_str))))
}

/// Things worth telling the user before this launch; empty for the defaults.
pub fn launch_warnings(l: &TdLaunch) -> Vec<String> {
    let mut warnings = Vec::new();
    if l.debug {
        warnings.push(format!(
            "--debug asks for TD attribute DEBUG (bit 0) with attributes={:#x}: upstream QEMU \
             10.1 rejects it (\"Some QEMU unsupported TD attribute bits being requested\") and \
             so does Linux KVM; it only works on a stack patched for off-TD debug",
            l.attributes()
        ));
    }
    if !l.sept_ve_disable {
        let outcome = if l.debug {
            "the kernel runs anyway because this is a debug TD, and says so"
        } else {
            "the kernel will refuse to run: it prints FATAL, sends ReportFatalError and stops \
             (as Linux does in a non-debug TD)"
        };
        warnings.push(format!(
            "SEPT_VE_DISABLE is off: the host can make any private page pending and raise \
             #VE anywhere in the guest; {outcome}"
        ));
    }
    warnings
}

/// Quotes arguments for a POSIX shell and joins them with spaces. Arguments made only of
/// characters no shell treats specially stay as they are; everything else is single-quoted,
/// with `'` written as `'\''`. `scripts/run-td.sh` implements the same rule.
pub fn shell_quote<I, S>(args: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    args.into_iter().map(|arg| quote_one(arg.as_ref())).collect::<Vec<_>>().join(" ")
}

fn is_shell_safe(c: char) -> bool {
    c.is_ascii_alphanumeric() || "_@%+=:,./-".contains(c)
}

fn quote_one(arg: &str) -> String {
    if !arg.is_empty() && arg.chars().all(is_shell_safe) {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn sept_ve_disable_off_says_the_kernel_will_refuse_to_run_unless_debug() {
        let mut l = launch();
        l.sept_ve_disable = false;
        let warnings = launch_warnings(&l).join("\n");
        assert!(warnings.contains("will refuse to run"), "{warnings}");
        l.debug = true;
        let warnings = launch_warnings(&l).join("\n");
        assert!(warnings.contains("debug TD") && !warnings.contains("refuse"), "{warnings}");
    }

    use super::*;

    fn launch() -> TdLaunch {
        TdLaunch::new("qemu-system-x86_64", "/fw/OVMF.fd", "/img/disk.img")
    }

    fn value_after<'a>(args: &'a [String], flag: &str) -> Vec<&'a str> {
        args.windows(2).filter(|pair| pair[0] == flag).map(|pair| pair[1].as_str()).collect()
    }

    #[test]
    fn default_object_spells_out_sept_ve_disable() {
        let args = td_qemu_args(&launch()).unwrap();
        assert_eq!(value_after(&args, "-object"), ["tdx-guest,id=tdx0,sept-ve-disable=on"]);
    }

    #[test]
    fn sept_ve_disable_off() {
        let mut l = launch();
        l.sept_ve_disable = false;
        let args = td_qemu_args(&l).unwrap();
        assert_eq!(value_after(&args, "-object"), ["tdx-guest,id=tdx0,sept-ve-disable=off"]);
    }

    #[test]
    fn debug_uses_attributes_and_never_mixes_forms() {
        let mut l = launch();
        l.debug = true;
        let args = td_qemu_args(&l).unwrap();
        assert_eq!(value_after(&args, "-object"), ["tdx-guest,id=tdx0,attributes=0x10000001"]);
        l.sept_ve_disable = false;
        let args = td_qemu_args(&l).unwrap();
        assert_eq!(value_after(&args, "-object"), ["tdx-guest,id=tdx0,attributes=0x1"]);
        assert!(!launch_warnings(&l).is_empty());
    }

    #[test]
    fn attributes_match_libvirt_policy_values() {
        assert_eq!(td_attributes(true, false), 0x1000_0000);
        assert_eq!(td_attributes(true, true), 0x1000_0001);
        assert_eq!(td_attributes(false, true), 0x1);
        assert_eq!(td_attributes(false, false), 0);
    }

    #[test]
    fn always_no_network_and_explicit_serial_and_disk_device() {
        let args = td_qemu_args(&launch()).unwrap();
        assert_eq!(value_after(&args, "-nic"), ["none"]);
        assert!(args.iter().any(|a| a == "-nodefaults"));
        assert_eq!(value_after(&args, "-serial"), ["stdio"]);
        assert_eq!(
            value_after(&args, "-device"),
            [
                "virtio-blk-pci,drive=disk0",
                "isa-debug-exit,iobase=0xf4,iosize=0x04",
                "virtio-serial-pci,max_ports=1,disable-legacy=on,iommu_platform=on",
                "virtconsole,chardev=virtcon0"
            ]
        );
        assert!(!args.iter().any(|a| a.contains("pflash")));
        // The machine a TD gets, as the TCG runs on the `td` machine boot it.
        assert_eq!(
            value_after(&args, "-machine"),
            ["q35,pic=off,smm=off,kernel-irqchip=split,confidential-guest-support=tdx0"]
        );
    }

    #[test]
    fn extra_args_come_last() {
        let mut l = launch();
        l.extra_args = vec!["-fw_cfg".into(), "name=opt/x,string=y".into()];
        let args = td_qemu_args(&l).unwrap();
        assert_eq!(&args[args.len() - 2..], ["-fw_cfg", "name=opt/x,string=y"]);
    }

    #[test]
    fn commas_in_the_image_path_are_doubled() {
        let mut l = launch();
        l.image = "/img/a,b.img".into();
        let args = td_qemu_args(&l).unwrap();
        assert_eq!(
            value_after(&args, "-drive"),
            ["if=none,id=disk0,format=raw,file=/img/a,,b.img"]
        );
        // -bios takes a plain path: no escaping there.
        l.firmware = "/fw/a,b.fd".into();
        let args = td_qemu_args(&l).unwrap();
        assert_eq!(value_after(&args, "-bios"), ["/fw/a,b.fd"]);
    }

    #[test]
    fn out_of_range_values_are_one_line_errors() {
        for (vcpus, memory) in [(0, 2048), (256, 2048), (1, 255), (1, MAX_MEMORY_MIB + 1)] {
            let mut l = launch();
            l.vcpus = vcpus;
            l.memory_mib = memory;
            let error = td_qemu_args(&l).unwrap_err().to_string();
            assert!(!error.contains('\n'), "{error}");
            assert!(error.contains("out of range"), "{error}");
        }
        for (vcpus, memory) in [(1, MIN_MEMORY_MIB), (MAX_VCPUS, MAX_MEMORY_MIB)] {
            let mut l = launch();
            l.vcpus = vcpus;
            l.memory_mib = memory;
            td_qemu_args(&l).unwrap();
        }
    }

    #[cfg(unix)]
    #[test]
    fn non_utf8_paths_are_rejected() {
        use std::ffi::OsString;
        use std::os::unix::ffi::OsStringExt;
        let mut l = launch();
        l.image = PathBuf::from(OsString::from_vec(vec![b'/', 0xff]));
        let error = td_qemu_args(&l).unwrap_err().to_string();
        assert!(error.contains("not valid UTF-8"), "{error}");
    }

    #[test]
    fn shell_quoting() {
        assert_eq!(shell_quote(["-m", "2048M"]), "-m 2048M");
        assert_eq!(shell_quote(["a b"]), "'a b'");
        assert_eq!(shell_quote([""]), "''");
        assert_eq!(shell_quote(["it's"]), r"'it'\''s'");
        assert_eq!(shell_quote(["$HOME", "*", "a;b"]), "'$HOME' '*' 'a;b'");
        assert_eq!(shell_quote(["file=/x,,y"]), "file=/x,,y");
    }

    #[test]
    fn command_line_starts_with_the_binary() {
        let line = td_command_line(&launch()).unwrap();
        assert!(line.starts_with("qemu-system-x86_64 -accel kvm -cpu host "), "{line}");
        assert!(!line.contains('\n'));
    }

    #[test]
    fn quote_service_uses_the_json_object() {
        let mut l = launch();
        l.quote_service = Some("vsock:2:4050".parse().unwrap());
        let args = td_qemu_args(&l).unwrap();
        let object: serde_json::Value =
            serde_json::from_str(value_after(&args, "-object")[0]).unwrap();
        assert_eq!(
            object,
            serde_json::json!({"qom-type": "tdx-guest", "id": "tdx0", "sept-ve-disable": true,
                "quote-generation-socket": {"type": "vsock", "cid": "2", "port": "4050"}})
        );
        l.debug = true;
        l.quote_service = Some("unix:/run/qgs,1.sock".parse().unwrap());
        let args = td_qemu_args(&l).unwrap();
        let object: serde_json::Value =
            serde_json::from_str(value_after(&args, "-object")[0]).unwrap();
        assert_eq!(object["attributes"], 0x1000_0001u64);
        assert_eq!(object.get("sept-ve-disable"), None, "the two forms are never mixed");
        assert_eq!(object["quote-generation-socket"]["path"], "/run/qgs,1.sock");
    }

    #[test]
    fn quote_service_spellings() {
        for bad in ["vsock:2", "vsock:x:4050", "unix:relative.sock", "tcp:1.2.3.4:1", ""] {
            assert!(bad.parse::<QuoteService>().is_err(), "{bad}");
        }
    }
}
