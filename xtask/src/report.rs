//! Turns the kernel's serial output into a structured report.
//!
//! The grammar is defined by `kernel/src/selftest/mod.rs`. Firmware prints its own lines (with
//! ANSI escapes and carriage returns) before the kernel starts; they are ignored, as is any line
//! the grammar does not describe.

use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckResult {
    Pass,
    Fail,
    Skip,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Check {
    pub name: String,
    pub result: CheckResult,
    pub detail: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub passed: u32,
    pub failed: u32,
    pub skipped: u32,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SerialReport {
    /// The mode the kernel says it runs in (`SELFTEST BEGIN mode=...`).
    pub mode: Option<String>,
    pub checks: Vec<Check>,
    pub counters: BTreeMap<String, u64>,
    pub summary: Option<Summary>,
    /// Lines where the kernel reported a fatal error (`FATAL ...`, `PANIC ...`), or our loader
    /// refused to start it (`tdx-loader: error: ...`, also in `loader_error`).
    pub fatal: Vec<String>,
    /// Our loader's refusal (`tdx-loader: error: ...`, printed on the UEFI console before it
    /// returns to the firmware): the kernel never ran.
    pub loader_error: Option<String>,
    /// The line where the (model) host reported a guest's ReportFatalError.
    pub host_fatal: Option<String>,
    /// Whether the kernel printed its first line at all.
    pub kernel_started: bool,
    /// The kernel's first line (in a TD it must be the TD info).
    pub first_kernel_line: Option<String>,
    /// The kernel's own status lines (`tdx-unikernel: ...`), for harness markers.
    pub kernel_lines: Vec<String>,
    /// Our loader's lines (`tdx-loader: ...`) before the kernel started, for harness markers.
    pub loader_lines: Vec<String>,
    /// Whether the kernel printed register contents (the fatal paths' dump: `RIP=`, `RAX=`,
    /// `CR2=`, `GLA=`), which a non-debug TD must never do.
    pub register_dump: bool,
    /// softtdx's VMM halted the machine for good ([`MACHINE_HALTED`]): the line, which says why.
    pub halted: Option<String>,
    /// The firmware's line refusing our loader because of Secure Boot, printed before the
    /// kernel started ([`crate::secure_boot`]).
    pub firmware_refusal: Option<String>,
}

fn parse_summary(rest: &str) -> Option<Summary> {
    let mut fields = BTreeMap::new();
    for pair in rest.split_whitespace() {
        let (key, value) = pair.split_once('=')?;
        fields.insert(key, value.parse::<u32>().ok()?);
    }
    Some(Summary {
        passed: *fields.get("passed")?,
        failed: *fields.get("failed")?,
        skipped: *fields.get("skipped")?,
    })
}

fn parse_check(rest: &str) -> Option<Check> {
    let mut parts = rest.splitn(3, ' ');
    let result = match parts.next()? {
        "pass" => CheckResult::Pass,
        "fail" => CheckResult::Fail,
        "skip" => CheckResult::Skip,
        _ => return None,
    };
    let name = parts.next()?.trim();
    // A name is one word; a line garbled on the wire (a form feed, a NUL inside) is no check.
    if name.is_empty() || name.contains(|c: char| c.is_whitespace() || c.is_control()) {
        return None;
    }
    let detail = parts.next().unwrap_or("").trim().to_owned();
    Some(Check { name: name.to_owned(), result, detail })
}

/// What softtdx's VMM prints when it halts the machine for good (kernel/src/softtdx/vmm.rs
/// `HALTED`): the kernel parked its vCPU, or a fatal stop found no exit device. The runner
/// stops QEMU at this line.
pub const MACHINE_HALTED: &str = "softtdx: host: machine halted: ";

/// The markers of register contents in the kernel's fatal output (kernel/src/arch/trap.rs
/// `TrapFrame::dump` and the unexpected-exception line, kernel/src/tdx/ve.rs `fatal`).
const REGISTER_MARKERS: [&str; 4] = ["RIP=", "RAX=", "CR2=", "GLA="];

/// Whether `line` is our loader refusing the kernel (boot/loader/src/main.rs).
pub fn is_loader_error(line: &str) -> bool {
    line.trim_start().starts_with("tdx-loader: error: ")
}

pub fn parse(serial: &str) -> SerialReport {
    let clean = crate::ansi::strip_ansi(serial);
    let mut report = SerialReport::default();
    for raw in clean.lines() {
        if !report.kernel_started
            && report.firmware_refusal.is_none()
            && crate::secure_boot::is_refusal(raw)
        {
            report.firmware_refusal = Some(raw.trim().to_owned());
        }
        // Firmware output may run into the kernel's first line without a newline.
        // ("softtdx: ..." is the model speaking, not the kernel.)
        let glued = ["tdx-unikernel:", "tdx: "]
            .iter()
            .filter_map(|prefix| {
                raw.match_indices(prefix).map(|(at, _)| at).find(|&at| !raw[..at].ends_with("soft"))
            })
            .min();
        let line = match glued {
            Some(at) if at > 0 && !report.kernel_started => &raw[at..],
            _ => raw.trim_start(),
        };
        if line.starts_with("tdx-unikernel:") || line.starts_with("tdx: ") {
            report.kernel_started = true;
            if report.first_kernel_line.is_none() {
                report.first_kernel_line = Some(line.trim_end().to_owned());
            }
        }
        if line.starts_with("tdx-unikernel:") {
            report.kernel_lines.push(line.trim_end().to_owned());
        }
        if line.starts_with("tdx-loader:") && !report.kernel_started {
            report.loader_lines.push(line.trim_end().to_owned());
        }
        if report.kernel_started && REGISTER_MARKERS.iter().any(|m| line.contains(m)) {
            report.register_dump = true;
        }
        if let Some(at) = line.find(MACHINE_HALTED) {
            report.halted.get_or_insert_with(|| line[at..].trim_end().to_owned());
        }
        if let Some(rest) = line.strip_prefix("SELFTEST BEGIN ") {
            report.mode = rest.trim().strip_prefix("mode=").map(str::to_owned);
        } else if let Some(rest) = line.strip_prefix("CHECK ") {
            if let Some(check) = parse_check(rest) {
                report.checks.push(check);
            }
        } else if let Some(rest) = line.strip_prefix("COUNTERS") {
            for pair in rest.split_whitespace() {
                if let Some((key, value)) = pair.split_once('=') {
                    if let Ok(value) = value.parse() {
                        report.counters.insert(key.to_owned(), value);
                    }
                }
            }
        } else if let Some(rest) = line.strip_prefix("SUMMARY ") {
            report.summary = parse_summary(rest);
        } else if line.starts_with("FATAL") || line.starts_with("PANIC") {
            report.fatal.push(line.trim_end().to_owned());
        } else if is_loader_error(line) && !report.kernel_started {
            report.fatal.push(line.trim_end().to_owned());
            report.loader_error.get_or_insert_with(|| line.trim_end().to_owned());
        } else if line.starts_with("softtdx: host: TD reported ReportFatalError") {
            report.host_fatal = Some(line.trim_end().to_owned());
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    const OVMF_NOISE: &str = "\u{1b}[2J\u{1b}[01;01H\u{1b}[=3h\u{1b}[2J\u{1b}[01;01HBdsDxe: loading Boot0001 \"UEFI QEMU HARDDISK QM00001 \" from PciRoot(0x0)/Pci(0x1F,0x2)/Sata(0x0,0xFFFF,0x0)\r\nBdsDxe: starting Boot0001\r\n";

    fn kernel_output() -> String {
        [
            "tdx-unikernel: kernel entered, GDT/TSS/IDT installed",
            "SELFTEST BEGIN mode=softtdx",
            "CHECK pass boot.memory_map 12 regions, 200 MiB usable",
            "CHECK fail serial.scratch wrote 0x55, read back 0x00",
            "CHECK skip tdx.hlt_ve not a TD: CPUID leaf 0x21 has no IntelTDX vendor",
            "CHECK pass heap.alloc",
            "# native:   Rax=0x0000000000000000",
            "COUNTERS ve.io=42 tdcall.vmcall=40",
            "SUMMARY passed=2 failed=1 skipped=1",
        ]
        .join("\r\n")
    }

    #[test]
    fn parses_checks_counters_and_summary_after_firmware_noise() {
        let report = parse(&format!("{OVMF_NOISE}{}", kernel_output()));
        assert!(report.kernel_started);
        assert_eq!(report.mode.as_deref(), Some("softtdx"));
        assert_eq!(report.checks.len(), 4);
        assert_eq!(report.checks[1].name, "serial.scratch");
        assert_eq!(report.checks[1].result, CheckResult::Fail);
        assert_eq!(report.checks[1].detail, "wrote 0x55, read back 0x00");
        assert_eq!(report.checks[3].detail, "");
        assert_eq!(report.counters.get("ve.io"), Some(&42));
        assert_eq!(report.summary, Some(Summary { passed: 2, failed: 1, skipped: 1 }));
    }

    #[test]
    fn a_check_name_with_a_control_character_is_no_check() {
        // Found by fuzzing (fuzz/regressions/serial_report): a form feed inside the name.
        let report = parse("CHECK pass boot.usable_i\u{c}\0n_ram detail\nCHECK pass a.b\n");
        assert_eq!(report.checks.len(), 1);
        assert_eq!(report.checks[0].name, "a.b");
    }

    #[test]
    fn kernel_line_glued_to_firmware_output_is_found() {
        let report = parse("BdsDxe: starting Boot0001\u{1b}[0mtdx-unikernel: kernel entered\nSUMMARY passed=1 failed=0 skipped=0\n");
        assert!(report.kernel_started);
        assert!(report.summary.is_some());
    }

    #[test]
    fn td_info_glued_to_firmware_output_is_the_first_kernel_line() {
        let report = parse("BdsDxe: starting Boot0002\u{1b}[0mtdx: TD detected: GPAW=48\r\ntdx-unikernel: kernel entered\r\n");
        assert_eq!(report.first_kernel_line.as_deref(), Some("tdx: TD detected: GPAW=48"));
        assert_eq!(report.kernel_lines, vec!["tdx-unikernel: kernel entered".to_owned()]);
    }

    #[test]
    fn ansi_sequences_inside_report_lines_are_removed() {
        let report = parse("\u{1b}[1;32mCHECK pass heap.alloc\u{1b}[0m ok\r\n");
        assert_eq!(
            report.checks,
            vec![Check {
                name: "heap.alloc".into(),
                result: CheckResult::Pass,
                detail: "ok".into()
            }]
        );
    }

    #[test]
    fn malformed_lines_are_ignored() {
        let report = parse(
            "CHECK maybe x\nCHECK pass\nSUMMARY passed=x failed=0 skipped=0\nSUMMARY passed=1\n",
        );
        assert!(report.checks.is_empty());
        assert_eq!(report.summary, None);
    }

    #[test]
    fn the_models_fatal_line_is_not_mistaken_for_the_kernels() {
        let report = parse(
            "BdsDxe: starting\r\n\r\nFATAL softtdx: #VE while the previous VE info was unread\r\n",
        );
        assert!(!report.kernel_started);
        assert_eq!(report.fatal.len(), 1);
    }

    #[test]
    fn the_loaders_refusal_is_collected_as_fatal() {
        let serial = format!(
            "{OVMF_NOISE}tdx-loader: error: kernel config: the kernel was built against bootloader_api 0.11.16, this loader supports only 0.11.17\r\nBdsDxe: failed to start Boot0001: Load Error\r\n"
        );
        let report = parse(&serial);
        assert!(report.loader_error.as_deref().unwrap().contains("bootloader_api 0.11.16"));
        assert_eq!(report.fatal.len(), 1);
        assert!(!report.kernel_started);
        let entering = parse("tdx-loader: entering the kernel at 0x8000017690\n");
        assert_eq!(entering.loader_error, None);
        assert!(entering.fatal.is_empty());
    }

    #[test]
    fn a_register_dump_and_the_models_halt_are_recognised() {
        let report =
            parse("tdx-unikernel: kernel entered\r\nFATAL #VE: x\r\n  RIP=0x1 RSP=0x2\r\n");
        assert!(report.register_dump);
        let report = parse("tdx-unikernel: kernel entered\r\nFATAL #VE: x\r\n  (registers not shown: not a debug TD)\r\n# native:   Rax=0x0\r\n");
        assert!(!report.register_dump);
        let report = parse("SUMMARY passed=1 failed=0 skipped=0\r\nsofttdx: host: machine halted: the TD parked its vCPU\r\n");
        assert_eq!(
            report.halted.as_deref(),
            Some("softtdx: host: machine halted: the TD parked its vCPU")
        );
    }

    #[test]
    fn fatal_and_host_report_lines_are_collected() {
        let report = parse("FATAL #VE: unsupported exit reason 65535\r\n  RIP=0x1\r\nsofttdx: host: TD reported ReportFatalError code=0x0 message=\"#VE: unsupported exit reason 65535\"\r\n");
        assert_eq!(report.fatal, vec!["FATAL #VE: unsupported exit reason 65535".to_owned()]);
        assert!(report.host_fatal.unwrap().contains("unsupported exit reason"));
        assert!(report.summary.is_none());
    }
}
