//! The QEMU machines the kernel boots on, defined once for the TCG runs and for `--tdx`.
//!
//! - `legacy`: QEMU's q35 with its defaults: an 8259 PIC pair, SMM, VGA and the rest.
//! - `td`: the machine a TD gets. QEMU's `tdx_kvm_init` (target/i386/kvm/tdx.c, QEMU 10.1)
//!   turns `pic` and `smm` off when they are left at `auto`, and fails with "TDX VM doesn't
//!   support PIC" / "... SMM" when they are `on`; `docs/system/i386/tdx.rst` launches TDs with
//!   `-nodefaults`, so there is no VGA (and no GOP), no NIC and no serial port unless one is
//!   added. This machine spells `pic=off,smm=off` out and adds exactly the devices the kernel
//!   uses: COM1 on stdio, the isa-debug-exit port and a virtio-blk disk. `--tdx` takes this
//!   definition and adds only the confidential-guest properties, so the TCG runs on the `td`
//!   machine and a real TD launch cannot drift apart.

use serde::Serialize;

/// I/O port of the `isa-debug-exit` device; the kernel writes its exit code here.
pub const DEBUG_EXIT_IOBASE: u16 = 0xf4;

#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Machine {
    /// q35 with QEMU's defaults (PIC, SMM, default devices).
    #[default]
    Legacy,
    /// q35 as a TD gets it: no PIC, no SMM, `-nodefaults`.
    Td,
}

/// The CPU of a TCG boot: QEMU's `max`, and with `la57` 5-level paging asked for by name
/// (CPUID.7.0:ECX.LA57). QEMU 7.2's TCG `max` already offers it (the `test-enable-la57` loader
/// refuses `-cpu max,la57=off` and runs on `-cpu max`); the name keeps the run's requirement
/// visible on its command line whatever a QEMU's `max` holds. TDX hosts with a 52-bit
/// GPAW offer LA57 to TDs under `-cpu host`, and a TDVF built with `PcdUse5LevelPageTable` then
/// hands over in 5-level paging: the loader's `harness:la57-handoff` run boots this CPU.
pub fn tcg_cpu(la57: bool) -> &'static str {
    if la57 {
        "max,la57=on"
    } else {
        "max"
    }
}

/// How the boot disk is attached.
pub struct Disk<'a> {
    /// The raw image, already escaped for a QEMU option string where needed.
    pub file: &'a str,
    /// Writes go to a temporary overlay, so that parallel boots can share the image.
    pub snapshot: bool,
}

impl Machine {
    /// The name used in run ids, reports and the check manifest.
    pub fn name(self) -> &'static str {
        match self {
            Machine::Legacy => "legacy",
            Machine::Td => "td",
        }
    }

    /// Guest memory for a TCG boot. The `td` machine has RAM above 4 GiB (q35 puts 2 GiB below
    /// and the rest from 4 GiB up), where TDVF leaves memory unaccepted: under softtdx the
    /// kernel must accept it before use (kernel/src/mm/frames.rs). `--tdx` takes its own
    /// `--memory`.
    pub fn tcg_memory(self) -> &'static str {
        match self {
            Machine::Legacy => "512M",
            Machine::Td => "8G",
        }
    }

    /// `-machine` and the devices: everything but the accelerator, CPU, memory, firmware,
    /// the project-wide `-nic none -display none -no-reboot` and the boot mode. `properties`
    /// are appended to the machine's own (for `--tdx`: the split irqchip and the
    /// confidential-guest object).
    pub fn args(self, properties: &[&str], disk: &Disk) -> Vec<String> {
        let mut machine = String::from("q35");
        let own: &[&str] = match self {
            Machine::Legacy => &[],
            Machine::Td => &["pic=off", "smm=off"],
        };
        for property in own.iter().chain(properties) {
            machine.push(',');
            machine.push_str(property);
        }
        let snapshot = if disk.snapshot { ",snapshot=on" } else { "" };
        let mut args = vec!["-machine".to_string(), machine];
        match self {
            Machine::Legacy => args.extend([
                "-drive".into(),
                format!("format=raw{snapshot},file={}", disk.file),
                "-serial".into(),
                "stdio".into(),
                "-monitor".into(),
                "none".into(),
            ]),
            Machine::Td => args.extend([
                "-nodefaults".into(),
                "-serial".into(),
                "stdio".into(),
                // The disk device is named explicitly so that it exists whatever -nodefaults
                // leaves out. OVMF drives virtio-blk through its IOMMU protocol, which bounces
                // DMA through shared memory in a TD.
                "-drive".into(),
                format!("if=none,id=disk0,format=raw{snapshot},file={}", disk.file),
                "-device".into(),
                "virtio-blk-pci,drive=disk0".into(),
            ]),
        }
        args.extend([
            "-device".into(),
            format!("isa-debug-exit,iobase={DEBUG_EXIT_IOBASE:#x},iosize=0x04"),
        ]);
        args
    }
}

/// The virtio console the TCG runs on the `td` machine get: virtio-serial with one port
/// (`max_ports=1`, so no MULTIPORT: port 0 is the console, MMIO-FACTS §5) whose output goes to
/// `path` (already escaped for a QEMU option string). Under TCG there is no confidential-guest
/// object, so the properties QEMU forces in a TD (`machine_run_board_init`: virtio-pci
/// `disable-legacy=on`, virtio `iommu_platform=on`) are spelled out: the guest sees the device
/// a TD gets, modern-only and offering ACCESS_PLATFORM.
pub fn virtio_console_args(path: &str) -> Vec<String> {
    virtio_console_with(path, VIRTIO_SERIAL)
}

/// The virtio-serial device a TD gets (see [`virtio_console_args`]).
const VIRTIO_SERIAL: &str = "virtio-serial-pci,max_ports=1,disable-legacy=on,iommu_platform=on";

/// [`virtio_console_args`] for a TCG run: with `ioeventfd=off` a notify runs the device in the
/// vCPU thread, at a fixed instruction, so that instruction counts under `-icount` (the bench)
/// do not depend on when QEMU's main loop serves the eventfd. With the eventfd the bench's
/// `boot_to_verdict` differed by about 2,000 instructions between two runs.
pub fn virtio_console_args_tcg(path: &str) -> Vec<String> {
    virtio_console_with(path, &format!("{VIRTIO_SERIAL},ioeventfd=off"))
}

fn virtio_console_with(path: &str, device: &str) -> Vec<String> {
    vec![
        "-chardev".into(),
        format!("file,id=virtcon0,path={path}"),
        "-device".into(),
        device.into(),
        "-device".into(),
        "virtconsole,chardev=virtcon0".into(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(machine: Machine, properties: &[&str]) -> String {
        machine.args(properties, &Disk { file: "/i.img", snapshot: true }).join(" ")
    }

    #[test]
    fn the_td_machine_has_no_pic_no_smm_and_no_default_devices() {
        let td = line(Machine::Td, &[]);
        assert!(td.starts_with("-machine q35,pic=off,smm=off -nodefaults "), "{td}");
        for device in ["-serial stdio", "isa-debug-exit,iobase=0xf4,iosize=0x04", "virtio-blk-pci"]
        {
            assert!(td.contains(device), "{device} missing from {td}");
        }
        assert!(td.contains("if=none,id=disk0,format=raw,snapshot=on,file=/i.img"));
    }

    #[test]
    fn properties_extend_the_machine_they_do_not_replace_it() {
        let td = line(Machine::Td, &["kernel-irqchip=split"]);
        assert!(td.starts_with("-machine q35,pic=off,smm=off,kernel-irqchip=split "), "{td}");
    }

    #[test]
    fn the_legacy_machine_keeps_qemus_defaults() {
        let legacy = line(Machine::Legacy, &[]);
        assert!(legacy.starts_with("-machine q35 "), "{legacy}");
        assert!(!legacy.contains("pic=off") && !legacy.contains("-nodefaults"), "{legacy}");
        assert!(legacy.contains("format=raw,snapshot=on,file=/i.img"));
    }
}
