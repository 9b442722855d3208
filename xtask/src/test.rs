//! `cargo xtask test`: host unit tests, then boots of the image in every mode, each judged
//! against what it is expected to do.
//!
//! Runs (all from the same image, booted through our loader, unless a variant is named):
//! - `native`: the self-test without softtdx; expect pass.
//! - `softtdx`: the self-test with the software TDX module; expect pass, with I/O #VEs.
//! - `native:upstream`, `softtdx:upstream`: the same through the `bootloader` crate's UEFI
//!   stage; both loaders honouring the bootloader_api contract is what these four prove.
//!   (`--loader` boots every run through one loader instead.)
//! - `harness:broken-loader`: our loader built with `broken-handoff`; expect each `boot.*`
//!   handoff check of kernel/src/selftest/bootinfo.rs to fail.
//! - `harness:la57-handoff`: our loader built with `test-enable-la57` on a CPU with LA57: it
//!   turns 5-level paging on after ExitBootServices and its trampoline must leave it; expect
//!   pass. `harness:la57-broken-trampoline`: the same with the switch left out; expect `crash`.
//! - `harness:old-bootloader-api`: the default kernel with its `.bootloader-config` claiming
//!   bootloader_api 0.11.16; expect our loader to refuse it on the console, stopped at once.
//! - `fatal:<scenario>`: softtdx injects a fault that must stop the kernel; expect the fatal
//!   report, ReportFatalError at the host and the failure exit, for the scenario's reason.
//! - `harness:page-fault`, `harness:panic`: the native kernel crashes on purpose; expect the
//!   unexpected-exception report or the panic message with its location, and the failure exit.
//! - `harness:triple-fault`: the kernel triple-faults on purpose; expect `crash`.
//! - `harness:hang`: the kernel spins forever; expect `timeout`.
//! - `harness:fail-check`: a kernel built with `serial.scratch` inverted; expect `fail` naming it.
//! - `harness:broken-in-merge`: a kernel built with a wrong IN merge; expect softtdx's
//!   differential checks to fail.
//! - `harness:broken-mmio-movzx`: a kernel whose MMIO emulation leaves bits 63:32 of a 32-bit
//!   MOVZX destination alone; expect the MMIO differential check `diff.mmio.movzx.r32.b` to fail.
//! - `attributes:no-sept-ve-disable`: softtdx reports TD attributes without SEPT_VE_DISABLE;
//!   expect the kernel to refuse to run (FATAL and ReportFatalError), as Linux does.
//! - `attributes:debug-td`: softtdx reports a debug TD; expect a pass whose first line says
//!   DEBUG TD.
//! - `attributes:debug-td-fatal`: a debug TD with a fatal fault; expect the fatal stop with the
//!   register dump, which every non-debug `fatal:*` run must not show.
//! - `td-machine:native` takes NMIs over QMP (boot mode `nmi-window=N`, [`NMI_WINDOW`]);
//!   `td-machine:softtdx` takes the model's NMIs after every VEINFO.GET and boots without
//!   isa-debug-exit ([`NO_DEBUG_EXIT_RUNS`]): the kernel parks its vCPU and the verdict is read
//!   from serial.
//! - `harness:rf-left-set`: the broken-ve-ordering kernel with `softtdx misorder=rf-left-set`
//!   leaves RFLAGS.RF set after an emulated instruction; expect softtdx to stop it.
//! - `td-image:hang-mode-ignored`: the kernel a TD boots, on the TD machine, with a hang
//!   requested in fw_cfg; expect the self-test to run and pass (that image reads no boot mode).
//! - `harness:broken-allowlist`: a kernel whose port allowlist lets every port through; expect
//!   the allowlist checks to fail.
//! - `harness:broken-ve-ordering`: a kernel whose #VE handler does port I/O before
//!   TDG.VP.VEINFO.GET; expect softtdx to stop it (a #DF on real hardware).
//! - `harness:wbinvd-before-veinfo`, `harness:cpuid-before-veinfo`: the same kernel booted with
//!   `softtdx misorder=wbinvd|cpuid`: WBINVD, or CPUID leaf 0xB, before VEINFO.GET; expect the
//!   same stop.
//! - `harness:nested-ve`: the same kernel with `softtdx misorder=nested`: its handler runs a
//!   hypervisor CPUID after VEINFO.GET; expect the probe's report that a nested #VE emulated it.
//! - `harness:secure-boot`: the image booted with Debian's Secure Boot firmware with Microsoft's
//!   keys enrolled ([`SECURE_BOOT_FIRMWARE`]); expect the firmware's refusal of our unsigned
//!   loader, recognised on serial, as the run's outcome. Skipped, with the reason, where that
//!   firmware is not installed.
//!
//! Counting: every check of an expect-pass run counts as passed or failed; a run whose verdict
//! is not what it expects adds one failure. A run that expects something else (fatal, fail,
//! timeout) counts once, as one passed or failed entry named after the run.

use crate::build::{self, KernelVariant, LoaderKind};
use crate::machine::Machine;
use crate::manifest::Manifest;
use crate::qemu;
use crate::report::{self, Check, CheckResult, SerialReport};
use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expect {
    Pass,
    /// The run fails, and the named check is among the failed ones.
    Fail {
        check: String,
    },
    /// The run fails, and every one of the named checks is among the failed ones.
    FailEach {
        checks: Vec<String>,
    },
    /// The kernel stops through its fatal path; one FATAL line contains every one of `reason`.
    /// In a TD or under softtdx the host must also have received ReportFatalError, unless the
    /// model itself stopped the machine (`host_report: false`).
    Fatal {
        reason: Vec<String>,
        host_report: bool,
    },
    /// The kernel printed `marker` and then never exited.
    Timeout {
        marker: String,
    },
    /// QEMU reports a guest reset or triple fault (exit 0 under -no-reboot) after the kernel
    /// printed `marker`.
    Crash {
        marker: String,
    },
    /// The firmware refuses to load our unsigned loader because it enforces Secure Boot.
    Refused,
    /// The kernel passes its own self-test, but the harness must refuse it as a pass, with an
    /// error containing `because` (e.g. a check the manifest demands is missing).
    Rejected {
        because: String,
    },
}

impl Expect {
    pub fn word(&self) -> &'static str {
        match self {
            Expect::Pass => "pass",
            Expect::Fail { .. } | Expect::FailEach { .. } => "fail",
            Expect::Fatal { .. } => "fatal",
            Expect::Timeout { .. } => "timeout",
            Expect::Crash { .. } => "crash",
            Expect::Refused => "refused",
            Expect::Rejected { .. } => "reject",
        }
    }
}

#[derive(Clone, Debug)]
pub struct RunSpec {
    pub id: String,
    /// "native" or "softtdx": what the kernel runs as.
    pub mode: &'static str,
    /// The QEMU machine: q35 with its defaults, or the machine a TD gets.
    pub machine: Machine,
    /// The fw_cfg mode flag, when not the default.
    pub mode_flag: Option<String>,
    pub variant: KernelVariant,
    pub loader: LoaderKind,
    pub expect: Expect,
    pub timeout: Duration,
    /// Firmware for this run instead of the one the run was started with (its VARS template,
    /// if any, is found and copied as for `--firmware`). The run is skipped when it is absent.
    pub firmware: Option<PathBuf>,
}

/// The softtdx fatal scenarios (kernel/src/bootflags.rs) and the words the kernel's FATAL line
/// must contain for each.
pub const FATAL_SCENARIOS: [(&str, &[&str]); 15] = [
    ("io-in-invalid-operand", &["IN from port", "TDG.VP.VMCALL<Io> returned InvalidOperand"]),
    ("io-out-invalid-operand", &["OUT to port", "TDG.VP.VMCALL<Io> returned InvalidOperand"]),
    ("io-in-retry", &["IN from port", "TDG.VP.VMCALL<Io> returned Retry"]),
    ("io-out-retry", &["OUT to port", "TDG.VP.VMCALL<Io> returned Retry"]),
    ("unknown-exit-reason", &["unsupported exit reason 65535"]),
    ("tdcall-failure", &["TDCALL VpVmcall failed with completion status 0xc000010000000000"]),
    ("veinfo-get-failure", &["TDG.VP.VEINFO.GET failed", "0xc000070400000000"]),
    ("string-io-unmapped", &["string I/O memory operand", "address 0x7fffdead0000 is not mapped"]),
    // Gate 20 not present: the first #VE is a #NP with error code 20*8+2+1 (IDT, EXT).
    ("broken-gate20", &["unexpected exception vector=11 (#NP) error_code=0xa3"]),
    // The model's REP bit disagrees with the bytes: the handler's check (independent decoders).
    ("mismatched-qualification", &["instruction bytes do not match the I/O exit qualification"]),
    // The kernel reads memory left unaccepted (RAM above 4 GiB on the td machine, 8 GiB): the
    // model stops the run as the module's TD exit would, naming the GPA.
    ("touch-pending", &["access to pending (unaccepted) private page GPA 0x100000000"]),
    // The frame allocator's first accept gets a status the policy does not know: fatal.
    (
        "accept-unknown-status",
        &["FATAL: mm: cannot accept", "GPA 0x100000000", "status 0xc0000b0d00000000"],
    ),
    // An EPT-violation #VE on a private GPA: a guest bug or a host attack (Linux panics).
    ("mmio-private-gpa", &["EPT violation on private GPA 0xfec00010"]),
    // A hostile host moves the virtio console's used index past the buffers in flight.
    ("virtio-used-index", &["PANIC", "virtio-console: used index 8 after 0 with 1 in flight"]),
    ("virtio-used-length", &["PANIC", "virtio-console: used length 65536 above 4096"]),
];

/// Deliberate crashes of the native kernel (`crash <kind>` boot mode) and what each must print.
pub const CRASHES: [(&str, &[&str]); 2] = [
    ("page-fault", &["unexpected exception vector=14 (#PF)", "CR2=0x7fffdead0000"]),
    ("panic", &["PANIC at ", "deliberate panic requested by the boot flags"]),
];

/// The Secure Boot firmware of the `harness:secure-boot` run: Debian bookworm's `ovmf` package,
/// Secure Boot and SMM build, with `OVMF_VARS_4M.ms.fd` beside it (Microsoft's keys enrolled,
/// Secure Boot on). Described by that package's `40-edk2-x86_64-secure-enrolled.json`.
pub const SECURE_BOOT_FIRMWARE: &str = "/usr/share/OVMF/OVMF_CODE_4M.ms.fd";

/// TD attribute DEBUG (bit 0; TDX module ABI, TD ATTRIBUTES), what `attributes:debug-td` asks
/// softtdx to report.
const DEBUG_TD_ATTRIBUTES: u64 = 1;

/// Whether a run's boot mode asks softtdx for a debug TD (`... attributes=0x...` with bit 0).
pub fn requests_debug_td(mode_flag: Option<&str>) -> bool {
    mode_flag
        .and_then(|flag| flag.split_once(" attributes=0x"))
        .and_then(|(_, hex)| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|attributes| attributes & DEBUG_TD_ATTRIBUTES != 0)
}

/// How many NMIs a run with `nmi-window=N` in its boot mode injects over QMP while the kernel
/// waits for them (kernel/src/testmodes.rs), and at least how many its `nmi=` counter must show.
pub const NMI_WINDOW: u32 = 3;

/// The kernel's line that opens its NMI window: the harness injects after it (not before: an
/// NMI that lands in the firmware, before the kernel's IDT, is not the kernel's to survive).
const NMI_WINDOW_MARKER: &str = "tdx-unikernel: NMI window: waiting for";

/// Runs booted without the isa-debug-exit device, as a production TD is: the kernel's exit
/// write to 0xf4 is dropped and it parks its vCPU with TDG.VP.VMCALL<Instruction.HLT>
/// (interrupts blocked); softtdx's VMM halts the machine and the runner stops QEMU at that line.
/// The verdict comes from serial (SUMMARY and the kernel's park line), not from an exit status.
pub const NO_DEBUG_EXIT_RUNS: [&str; 1] = ["td-machine:softtdx"];

/// The NMI window a boot mode asks for (`... nmi-window=N`).
fn nmi_window(mode_flag: Option<&str>) -> Option<u32> {
    mode_flag?.split_once(" nmi-window=")?.1.split_whitespace().next()?.parse().ok()
}

/// How long a run that expects a hang watches the kernel after it announced the hang.
const HANG_GRACE: Duration = Duration::from_secs(2);

pub struct Options {
    pub timeout: Duration,
    pub json: Option<PathBuf>,
    pub qemu_args: Vec<String>,
    pub fail_check: Option<String>,
    pub kvm: bool,
    pub firmware: ovmf::Firmware,
    pub runs: Vec<String>,
    pub skip_host_tests: bool,
    /// Every run through this loader; `None`: the default, with the pass runs under both.
    pub loader: Option<LoaderKind>,
}

/// The runs; every one boots through `only_loader` when given, else through our loader, with
/// the native and softtdx self-tests repeated through the upstream one.
pub fn default_runs(
    timeout: Duration,
    fail_check: Option<&str>,
    only_loader: Option<LoaderKind>,
) -> Vec<RunSpec> {
    let variant =
        KernelVariant { fail_check: fail_check.map(str::to_owned), ..KernelVariant::default() };
    let loader = only_loader.unwrap_or_default();
    let loaders: &[LoaderKind] =
        if only_loader.is_some() { &[loader] } else { &[LoaderKind::Own, LoaderKind::Upstream] };
    let mut runs = Vec::new();
    for &this in loaders {
        let suffix = if this == loader { String::new() } else { format!(":{}", this.name()) };
        runs.push(RunSpec {
            id: format!("native{suffix}"),
            mode: "native",
            machine: Machine::Legacy,
            mode_flag: None,
            variant: variant.clone(),
            loader: this,
            expect: Expect::Pass,
            timeout,
            firmware: None,
        });
        runs.push(RunSpec {
            id: format!("softtdx{suffix}"),
            mode: "softtdx",
            machine: Machine::Legacy,
            mode_flag: Some("softtdx".into()),
            variant: variant.clone(),
            loader: this,
            expect: Expect::Pass,
            timeout,
            firmware: None,
        });
    }
    // The machine a TD gets (no PIC, no SMM, -nodefaults), through the default loader. The
    // native boot also takes NMIs over QMP (`nmi-window`, see `NMI_WINDOW`); the softtdx boot
    // gets an NMI from the model inside every #VE handler after its VEINFO.GET, and has no
    // isa-debug-exit device (`NO_DEBUG_EXIT_RUNS`): it ends with the kernel parking its vCPU.
    for mode in ["native", "softtdx"] {
        runs.push(RunSpec {
            id: format!("td-machine:{mode}"),
            mode,
            machine: Machine::Td,
            mode_flag: Some(match mode {
                "native" => format!("native nmi-window={NMI_WINDOW}"),
                _ => "softtdx nmi=after-veinfo".into(),
            }),
            variant: variant.clone(),
            loader,
            expect: Expect::Pass,
            timeout,
            firmware: None,
        });
    }
    if fail_check.is_some() {
        // The user asked for a broken kernel: run it as if it were the real one.
        return runs;
    }
    // The TD attributes policy (kernel/src/tdx/mod.rs), with the attributes softtdx reports
    // chosen here: without SEPT_VE_DISABLE a non-debug TD must stop; a debug TD (bit 0, here
    // without SEPT_VE_DISABLE too) runs and says so on its first line.
    runs.push(RunSpec {
        id: "attributes:no-sept-ve-disable".into(),
        mode: "softtdx",
        machine: Machine::Td,
        mode_flag: Some("softtdx attributes=0x0".into()),
        variant: KernelVariant::default(),
        loader,
        expect: Expect::Fatal {
            reason: vec!["lack SEPT_VE_DISABLE (bit 28) in a non-debug TD".into()],
            host_report: true,
        },
        timeout,
        firmware: None,
    });
    runs.push(RunSpec {
        id: "attributes:debug-td".into(),
        mode: "softtdx",
        machine: Machine::Td,
        mode_flag: Some(format!("softtdx attributes={DEBUG_TD_ATTRIBUTES:#x}")),
        variant: KernelVariant::default(),
        loader,
        expect: Expect::Pass,
        timeout,
        firmware: None,
    });
    // A debug TD keeps the full register dump on its fatal paths (the `fatal:*` runs, non-debug,
    // must show none): the host can read a debug TD's registers anyway.
    runs.push(RunSpec {
        id: "attributes:debug-td-fatal".into(),
        mode: "softtdx",
        machine: Machine::Td,
        mode_flag: Some(format!(
            "softtdx fault=io-in-invalid-operand attributes={DEBUG_TD_ATTRIBUTES:#x}"
        )),
        variant: KernelVariant::default(),
        loader,
        expect: Expect::Fatal {
            reason: vec!["IN from port".into(), "TDG.VP.VMCALL<Io> returned InvalidOperand".into()],
            host_report: true,
        },
        timeout,
        firmware: None,
    });
    // The kernel a TD boots (`--tdx`, `cargo xtask build`) takes no orders from fw_cfg, which
    // the host controls: with a hang requested there it still runs the self-test and passes.
    runs.push(RunSpec {
        id: "td-image:hang-mode-ignored".into(),
        mode: "native",
        machine: Machine::Td,
        mode_flag: Some("hang".into()),
        variant: KernelVariant::td_image(),
        loader,
        expect: Expect::Pass,
        timeout,
        firmware: None,
    });
    for (scenario, reason) in FATAL_SCENARIOS {
        runs.push(RunSpec {
            id: format!("fatal:{scenario}"),
            mode: "softtdx",
            // The fault scenarios stand for a TD, so they boot the machine a TD gets.
            machine: Machine::Td,
            mode_flag: Some(format!("softtdx fault={scenario}")),
            variant: KernelVariant::default(),
            loader,
            expect: Expect::Fatal {
                reason: reason.iter().map(|r| r.to_string()).collect(),
                // A pending-page access exits to the host (the model stops the run): the
                // guest never gets to send ReportFatalError.
                host_report: scenario != "touch-pending",
            },
            timeout,
            firmware: None,
        });
    }
    for (crash, reason) in CRASHES {
        runs.push(RunSpec {
            id: format!("harness:{crash}"),
            mode: "native",
            machine: Machine::Td,
            mode_flag: Some(format!("crash {crash}")),
            variant: KernelVariant::default(),
            loader,
            expect: Expect::Fatal {
                reason: reason.iter().map(|r| r.to_string()).collect(),
                host_report: true,
            },
            timeout,
            firmware: None,
        });
    }
    runs.push(RunSpec {
        id: "harness:triple-fault".into(),
        mode: "native",
        machine: Machine::Td,
        mode_flag: Some("crash triple-fault".into()),
        variant: KernelVariant::default(),
        loader,
        expect: Expect::Crash { marker: "loading an empty IDT and raising #BP".into() },
        timeout,
        firmware: None,
    });
    runs.push(RunSpec {
        id: "harness:hang".into(),
        mode: "native",
        machine: Machine::Td,
        mode_flag: Some("hang".into()),
        variant: KernelVariant::default(),
        loader,
        expect: Expect::Timeout { marker: "hang requested by the boot flags".into() },
        timeout,
        firmware: None,
    });
    runs.push(RunSpec {
        id: "harness:fail-check".into(),
        mode: "native",
        machine: Machine::Td,
        mode_flag: None,
        variant: KernelVariant {
            fail_check: Some("serial.scratch".into()),
            ..KernelVariant::default()
        },
        loader,
        expect: Expect::Fail { check: "serial.scratch".into() },
        timeout,
        firmware: None,
    });
    runs.push(RunSpec {
        id: "harness:broken-ve-ordering".into(),
        mode: "softtdx",
        machine: Machine::Td,
        mode_flag: Some("softtdx".into()),
        variant: KernelVariant { broken_ve_ordering: true, ..KernelVariant::default() },
        loader,
        expect: Expect::Fatal {
            reason: vec![
                "#VE (exit reason 30) while".into(),
                "VE info was unread (a #DF on real hardware)".into(),
            ],
            host_report: false,
        },
        timeout,
        firmware: None,
    });
    // The same kernel, with a #VE-class instruction other than port I/O before VEINFO.GET:
    // softtdx must stop each as the TDX module would (#DF), from its td-rules decisions.
    // Exit reasons: WBINVD 54, CPUID 10 (td-rules exit_reason).
    for (name, exit_reason) in [("wbinvd", 54), ("cpuid", 10)] {
        runs.push(RunSpec {
            id: format!("harness:{name}-before-veinfo"),
            mode: "softtdx",
            machine: Machine::Td,
            mode_flag: Some(format!("softtdx misorder={name}")),
            variant: KernelVariant { broken_ve_ordering: true, ..KernelVariant::default() },
            loader,
            expect: Expect::Fatal {
                reason: vec![
                    format!("#VE (exit reason {exit_reason}) while"),
                    "VE info was unread (a #DF on real hardware)".into(),
                ],
                host_report: false,
            },
            timeout,
            firmware: None,
        });
    }
    // The same kernel, whose handler runs a hypervisor CPUID after VEINFO.GET: the model keeps
    // watching the handler and delivers it as a nested #VE, which the handler emulates.
    runs.push(RunSpec {
        id: "harness:nested-ve".into(),
        mode: "softtdx",
        machine: Machine::Td,
        mode_flag: Some("softtdx misorder=nested".into()),
        variant: KernelVariant { broken_ve_ordering: true, ..KernelVariant::default() },
        loader,
        expect: Expect::Fatal {
            reason: vec!["after VEINFO.GET was emulated through a nested #VE".into()],
            host_report: true,
        },
        timeout,
        firmware: None,
    });
    // The same kernel, whose handler leaves RFLAGS.RF set when it advances RIP: softtdx checks
    // RF when the handler returns.
    runs.push(RunSpec {
        id: "harness:rf-left-set".into(),
        mode: "softtdx",
        machine: Machine::Td,
        mode_flag: Some("softtdx misorder=rf-left-set".into()),
        variant: KernelVariant { broken_ve_ordering: true, ..KernelVariant::default() },
        loader,
        expect: Expect::Fatal {
            reason: vec!["RF left set after an emulated instruction".into()],
            host_report: false,
        },
        timeout,
        firmware: None,
    });
    runs.push(RunSpec {
        id: "harness:broken-allowlist".into(),
        mode: "softtdx",
        machine: Machine::Td,
        mode_flag: Some("softtdx".into()),
        variant: KernelVariant { broken_allowlist: true, ..KernelVariant::default() },
        loader,
        expect: Expect::Fail { check: "allowlist.ve.denied_in".into() },
        timeout,
        firmware: None,
    });
    runs.push(RunSpec {
        id: "harness:broken-in-merge".into(),
        mode: "softtdx",
        machine: Machine::Td,
        mode_flag: Some("softtdx".into()),
        variant: KernelVariant { broken_in_merge: true, ..KernelVariant::default() },
        loader,
        expect: Expect::Fail { check: "diff.in.dx.l".into() },
        timeout,
        firmware: None,
    });
    runs.push(RunSpec {
        id: "harness:broken-mmio-movzx".into(),
        mode: "softtdx",
        machine: Machine::Td,
        mode_flag: Some("softtdx".into()),
        variant: KernelVariant { broken_mmio_movzx: true, ..KernelVariant::default() },
        loader,
        expect: Expect::Fail { check: "diff.mmio.movzx.r32.b".into() },
        timeout,
        firmware: None,
    });
    if loader == LoaderKind::Own {
        runs.push(RunSpec {
            id: "harness:old-bootloader-api".into(),
            mode: "native",
            machine: Machine::Td,
            mode_flag: None,
            variant: KernelVariant::default(),
            loader: LoaderKind::OwnOldApiKernel,
            expect: Expect::Fatal {
                reason: vec![
                    "tdx-loader: error:".into(),
                    "built against bootloader_api 0.11.16, this loader supports only 0.11.17"
                        .into(),
                ],
                host_report: false,
            },
            timeout,
            firmware: None,
        });
        // A TD whose firmware runs 5-level paging: the loader's trampoline leaves it. Our loader
        // turns LA57 on itself after ExitBootServices (Debian's OVMF runs 4-level).
        runs.push(RunSpec {
            id: "harness:la57-handoff".into(),
            mode: "native",
            machine: Machine::Td,
            mode_flag: None,
            variant: KernelVariant::default(),
            loader: LoaderKind::OwnLa57,
            expect: Expect::Pass,
            timeout,
            firmware: None,
        });
        // The same with the switch left out of the trampoline, as before it existed.
        runs.push(RunSpec {
            id: "harness:la57-broken-trampoline".into(),
            mode: "native",
            machine: Machine::Td,
            mode_flag: None,
            variant: KernelVariant::default(),
            loader: LoaderKind::OwnLa57BrokenTrampoline,
            expect: Expect::Crash { marker: "tdx-loader: entering the kernel".into() },
            timeout,
            firmware: None,
        });
        // Measured boot under a TPM (swtpm): PCR 9 read from the TPM after QEMU exits is the
        // replay of the loader's kernel.elf event, and the printed event log replays to the
        // PCRs; the twin's kernel.elf differs in one byte, and its PCR 9 must differ.
        for (id, loader) in [
            ("tpm:measured-boot", LoaderKind::Own),
            (crate::tpm::FLIPPED_RUN, LoaderKind::OwnFlippedKernel),
        ] {
            runs.push(RunSpec {
                id: id.into(),
                mode: "native",
                machine: Machine::Legacy,
                mode_flag: None,
                variant: KernelVariant::default(),
                loader,
                expect: Expect::Pass,
                timeout,
                firmware: None,
            });
        }
        runs.push(RunSpec {
            id: "harness:broken-loader".into(),
            mode: "native",
            machine: Machine::Td,
            mode_flag: None,
            variant: KernelVariant::default(),
            loader: LoaderKind::OwnBrokenHandoff,
            expect: Expect::FailEach { checks: HANDOFF_CHECKS.map(String::from).to_vec() },
            timeout,
            firmware: None,
        });
    }
    // A probe that claims a PIC on the TD machine sends the PIC checks to a device that is not
    // there: they must fail, not pass.
    runs.push(RunSpec {
        id: "harness:broken-pic-probe".into(),
        mode: "native",
        machine: Machine::Td,
        mode_flag: None,
        variant: KernelVariant { broken_pic_probe: true, ..KernelVariant::default() },
        loader,
        expect: Expect::Fail { check: "pic.mask_readback".into() },
        timeout,
        firmware: None,
    });
    // `accept=eager` (TDX_UNIKERNEL_ACCEPT=eager): the 6 GiB the model leaves unaccepted are
    // all accepted at boot, with progress lines; `mm.unaccepted_on_use` then requires that
    // nothing was left and that the self-test's 64 MiB took no accept call.
    runs.push(RunSpec {
        id: "accept:eager".into(),
        mode: "softtdx",
        machine: Machine::Td,
        mode_flag: Some("softtdx".into()),
        variant: KernelVariant { accept_eager: true, ..KernelVariant::default() },
        loader,
        expect: Expect::Pass,
        timeout,
        firmware: None,
    });
    // A kernel that leaves out the device checks passes its own self-test; the manifest must
    // refuse it. One boot shows it; the softtdx and `test --tdx` columns are judged by the same
    // code, and the manifest's host tests show a missing group failing each of them.
    runs.push(RunSpec {
        id: "harness:no-device-checks".into(),
        mode: "native",
        machine: Machine::Legacy,
        mode_flag: None,
        variant: KernelVariant { no_device_checks: true, ..KernelVariant::default() },
        loader,
        expect: Expect::Rejected { because: "missing check serial.scratch".into() },
        timeout,
        firmware: None,
    });
    runs.push(RunSpec {
        id: "harness:secure-boot".into(),
        mode: "native",
        machine: Machine::Legacy,
        mode_flag: None,
        variant: KernelVariant::default(),
        loader,
        expect: Expect::Refused,
        timeout,
        firmware: Some(PathBuf::from(SECURE_BOOT_FIRMWARE)),
    });
    // The audits boot a named loader each, so `--loader` (one loader only) leaves them out.
    if only_loader.is_none() {
        runs.extend(crate::audit::harness::runs(timeout));
    }
    runs
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Pass,
    Fail,
    Timeout,
    Crash,
    /// The firmware refused our loader (Secure Boot); the kernel never ran.
    Refused,
    /// The run could not be made on this host (the reason says why); neither passed nor failed.
    Skip,
}

/// What QEMU's ending says about the guest, before comparing with the expectation.
pub fn verdict(
    finished_status: Option<i32>,
    timed_out: bool,
    report: &SerialReport,
) -> (Verdict, String) {
    // The runner stops QEMU at the refusal; whatever else the ending says, this is why.
    if let Some(line) = &report.firmware_refusal {
        if !report.kernel_started {
            return (Verdict::Refused, crate::secure_boot::refusal_reason(line));
        }
    }
    // Likewise for our loader refusing the kernel: the kernel never ran.
    if let Some(line) = &report.loader_error {
        return (Verdict::Fail, format!("the loader refused the kernel: {line}"));
    }
    if timed_out {
        return (Verdict::Timeout, "no exit before the timeout".into());
    }
    // softtdx's VMM halted the machine (no isa-debug-exit device): the verdict is on serial.
    if let Some(halted) = &report.halted {
        let parked = halted.contains("parked its vCPU");
        let said = |code: &str| {
            report.kernel_lines.iter().any(|l| l.contains("parking the vCPU") && l.contains(code))
        };
        return match report.summary {
            _ if !parked => (Verdict::Fail, report.fatal.first().unwrap_or(halted).clone()),
            Some(s) if s.failed == 0 && said("(Success)") => (
                Verdict::Pass,
                format!("{} checks passed; the kernel parked its vCPU ({halted})", s.passed),
            ),
            Some(s) => (Verdict::Fail, format!("parked after {} failed checks", s.failed)),
            None => (Verdict::Fail, format!("parked without a SUMMARY line ({halted})")),
        };
    }
    match finished_status {
        Some(33) => match report.summary {
            Some(s) if s.failed == 0 => (Verdict::Pass, format!("{} checks passed", s.passed)),
            Some(s) => {
                (Verdict::Fail, format!("exit status says pass but {} checks failed", s.failed))
            }
            None => (Verdict::Fail, "exit status says pass but no SUMMARY line".into()),
        },
        Some(35) => {
            let failed: Vec<&str> = report
                .checks
                .iter()
                .filter(|c| c.result == CheckResult::Fail)
                .map(|c| c.name.as_str())
                .collect();
            if let Some(fatal) = report.fatal.first() {
                (Verdict::Fail, fatal.clone())
            } else if !failed.is_empty() {
                (Verdict::Fail, format!("failed: {}", failed.join(", ")))
            } else {
                (Verdict::Fail, "failure exit without a reason on serial".into())
            }
        }
        Some(0) => {
            (Verdict::Crash, "QEMU exited 0: the guest reset or triple-faulted (-no-reboot)".into())
        }
        Some(status) => (Verdict::Crash, format!("QEMU exited with status {status}")),
        None => (Verdict::Crash, "QEMU was killed by a signal".into()),
    }
}

/// Compares a run's outcome with its expectation: `Ok` with what the judgement adds to the
/// run's reason (why the harness refused a run that expects that, else nothing), or why not.
pub fn judge(
    spec: &RunSpec,
    verdict: Verdict,
    status: Option<i32>,
    report: &SerialReport,
) -> Result<String, String> {
    let printed = |marker: &str| {
        report.kernel_lines.iter().chain(&report.loader_lines).any(|l| l.contains(marker))
    };
    let count = |result: CheckResult| report.checks.iter().filter(|c| c.result == result).count();
    match &spec.expect {
        Expect::Pass => {
            if verdict != Verdict::Pass {
                return Err(format!("expected pass, got {verdict:?}"));
            }
            let summary = report.summary.ok_or("no SUMMARY line")?;
            let lines =
                (count(CheckResult::Pass), count(CheckResult::Fail), count(CheckResult::Skip));
            if lines != (summary.passed as usize, summary.failed as usize, summary.skipped as usize)
                || lines.0 == 0
            {
                return Err(format!(
                    "SUMMARY says {}/{}/{} passed/failed/skipped but {}/{}/{} CHECK lines arrived",
                    summary.passed, summary.failed, summary.skipped, lines.0, lines.1, lines.2
                ));
            }
            // Every check the manifest lists for this mode and machine, with its result; no
            // other check.
            Manifest::builtin().judge(spec.mode, spec.machine, &report.checks)?;
            if spec.mode == "softtdx" {
                // Issue minimums: the differential and fault checks must really have run.
                let passed = |prefix: &str| {
                    report
                        .checks
                        .iter()
                        .filter(|c| c.name.starts_with(prefix) && c.result == CheckResult::Pass)
                        .count()
                };
                if passed("diff.") < 40 || passed("fault.") < 6 {
                    return Err(format!(
                        "softtdx run passed only {} diff.* and {} fault.* checks",
                        passed("diff."),
                        passed("fault.")
                    ));
                }
            }
            if report.mode.as_deref() != Some(spec.mode) {
                return Err(format!(
                    "kernel ran in mode {:?}, expected {}",
                    report.mode, spec.mode
                ));
            }
            let ve_io = report.counters.get("ve.io").copied().unwrap_or(0);
            if (spec.mode == "softtdx" || spec.mode == "td") && ve_io == 0 {
                return Err(format!("{} run made no I/O #VE", spec.mode));
            }
            let first = report.first_kernel_line.as_deref().unwrap_or("");
            if (spec.mode == "softtdx" || spec.mode == "td")
                && !first.starts_with("tdx: TD detected")
            {
                return Err(format!(
                    "in a TD the first kernel line must be the TD info, not {first:?}"
                ));
            }
            // A debug TD says so on its first line; no other run may.
            let debug_td = requests_debug_td(spec.mode_flag.as_deref());
            if debug_td != first.contains("DEBUG TD") {
                return Err(format!(
                    "the first kernel line {} say DEBUG TD: {first:?}",
                    if debug_td { "must" } else { "must not" }
                ));
            }
            if spec.mode == "native" {
                // NMIs are counted wherever they come from (the QMP-injected ones natively).
                let nonzero = report.counters.iter().find(|(k, v)| **v != 0 && *k != "nmi");
                if let Some((key, value)) = nonzero {
                    return Err(format!("native run has counter {key}={value}, expected all 0"));
                }
            }
            let counter = |name: &str| report.counters.get(name).copied().unwrap_or(0);
            if spec.mode_flag.as_deref().is_some_and(|f| f.contains(" nmi=after-veinfo")) {
                // One model NMI after every successful VEINFO.GET, each survived and counted:
                // as many as #VEs handled (`ve.*`; `tdcall.veinfo_get` also counts the
                // self-test's deliberate call with no #VE pending).
                let nmis = counter("nmi");
                let ves: u64 = report
                    .counters
                    .iter()
                    .filter(|(k, _)| k.starts_with("ve."))
                    .map(|(_, v)| v)
                    .sum();
                if nmis == 0 || nmis != ves {
                    return Err(format!(
                        "softtdx injected an NMI after each VEINFO.GET, but nmi={nmis} for {ves} \
                         #VEs"
                    ));
                }
            }
            if NO_DEBUG_EXIT_RUNS.contains(&spec.id.as_str()) && report.halted.is_none() {
                return Err("without isa-debug-exit the kernel must park its vCPU".into());
            }
            Ok(String::new())
        }
        Expect::Fail { check } => {
            judge_failed(verdict, report, std::slice::from_ref(check)).map(|()| String::new())
        }
        Expect::FailEach { checks } => {
            judge_failed(verdict, report, checks).map(|()| String::new())
        }
        Expect::Fatal { reason, host_report } => {
            if verdict != Verdict::Fail {
                return Err(format!(
                    "expected the fatal stop with the failure exit, got {verdict:?}"
                ));
            }
            if report.summary.is_some() {
                return Err("the self-test finished: the fault did not stop the kernel".into());
            }
            if !report.fatal.iter().any(|line| reason.iter().all(|r| line.contains(r.as_str()))) {
                return Err(format!(
                    "no FATAL line containing {reason:?} (got {:?})",
                    report.fatal
                ));
            }
            // Only a TD (or the model) has a host to tell.
            if *host_report && spec.mode != "native" && report.host_fatal.is_none() {
                return Err("the host never received ReportFatalError".into());
            }
            // In a TD the serial port is the host's: register contents only in a debug TD.
            // (Native runs keep the full dump, which `harness:page-fault` checks for CR2.)
            if spec.mode != "native" {
                let debug_td = requests_debug_td(spec.mode_flag.as_deref());
                if report.register_dump != debug_td {
                    return Err(format!(
                        "a {} TD's fatal output {} register contents",
                        if debug_td { "debug" } else { "non-debug" },
                        if debug_td { "must show" } else { "shows" }
                    ));
                }
            }
            Ok(String::new())
        }
        Expect::Crash { marker } => {
            if status != Some(0) {
                return Err(format!("expected QEMU to exit 0 on the reset, got {status:?}"));
            }
            if !printed(marker) || !report.fatal.is_empty() {
                return Err(format!("expected {marker:?} and then a silent reset"));
            }
            Ok(String::new())
        }
        Expect::Timeout { marker } => {
            if verdict != Verdict::Timeout {
                return Err(format!("expected timeout, got {verdict:?}"));
            }
            if !printed(marker) || !report.fatal.is_empty() {
                return Err(format!("expected {marker:?} and then silence"));
            }
            Ok(String::new())
        }
        Expect::Rejected { because } => {
            if verdict != Verdict::Pass {
                return Err(format!(
                    "expected the kernel to pass its own self-test, got {verdict:?}"
                ));
            }
            let as_pass = RunSpec { expect: Expect::Pass, ..spec.clone() };
            match judge(&as_pass, verdict, status, report) {
                Ok(_) => {
                    Err(format!("the harness accepted the run; it must refuse it ({because})"))
                }
                // What the harness refused the kernel's pass for goes into the run's reason.
                Err(why) if why.contains(because.as_str()) => Ok(format!("refused: {why}")),
                Err(why) => Err(format!("refused for another reason: {why}; want {because:?}")),
            }
        }
        Expect::Refused => {
            if verdict != Verdict::Refused || report.kernel_started {
                return Err(format!(
                    "expected the firmware to refuse the loader (Secure Boot), got {verdict:?}"
                ));
            }
            Ok(String::new())
        }
    }
}

/// A run that injected NMIs over QMP: all `count` of the kernel's window were acknowledged by
/// QEMU, and the kernel counted at least those (the ones sent later, during the self-test, may
/// land after its COUNTERS snapshot).
fn judge_nmis(count: u32, sent: &qemu::NmisSent, nmis: u64) -> Result<(), String> {
    if let Some(error) = &sent.error {
        return Err(format!("NMI injection over QMP failed: {error}"));
    }
    if sent.counted < count {
        return Err(format!("only {} of the {count} NMIs were injected", sent.counted));
    }
    if nmis < u64::from(sent.counted) {
        return Err(format!(
            "{} NMIs injected while the kernel waited, but nmi={nmis}",
            sent.counted
        ));
    }
    Ok(())
}

/// A finished self-test with the failure exit, in which each of `checks` failed.
fn judge_failed(verdict: Verdict, report: &SerialReport, checks: &[String]) -> Result<(), String> {
    if verdict != Verdict::Fail {
        return Err(format!("expected fail, got {verdict:?}"));
    }
    if report.summary.is_none() || !report.fatal.is_empty() {
        return Err("expected a finished self-test with failed checks, not a crash".into());
    }
    for check in checks {
        if !report.checks.iter().any(|c| &c.name == check && c.result == CheckResult::Fail) {
            return Err(format!("expected check {check} to fail"));
        }
    }
    Ok(())
}

/// The handoff checks (kernel/src/selftest/bootinfo.rs) that `harness:broken-loader` breaks.
pub const HANDOFF_CHECKS: [&str; 5] = [
    "boot.usable_in_ram",
    "boot.usable_avoids_loaded",
    "boot.physical_map_readback",
    "boot.stack_guard",
    "boot.kernel_permissions",
];

#[derive(Serialize)]
pub struct RunReport {
    pub id: String,
    pub mode: String,
    pub machine: Machine,
    pub loader: String,
    pub expect: String,
    pub verdict: Verdict,
    pub judged: String,
    pub reason: String,
    pub qemu_status: Option<i32>,
    pub wall_ms: u128,
    pub tests: Vec<Check>,
    pub counters: BTreeMap<String, u64>,
    pub log: String,
}

impl RunReport {
    /// The report of a run that was not made, and why (neither passed nor failed).
    pub fn skipped(spec: &RunSpec, reason: String, log: &Path) -> RunReport {
        RunReport {
            id: spec.id.clone(),
            mode: spec.mode.into(),
            machine: spec.machine,
            loader: spec.loader.name().into(),
            expect: spec.expect.word().into(),
            verdict: Verdict::Skip,
            judged: "skip".into(),
            reason,
            qemu_status: None,
            wall_ms: 0,
            tests: Vec::new(),
            counters: BTreeMap::new(),
            log: log.display().to_string(),
        }
    }
}

#[derive(Serialize)]
pub struct Report {
    pub passed: u32,
    pub failed: u32,
    pub runs: Vec<RunReport>,
}

fn logs_dir() -> PathBuf {
    build::project_root().join("target/xtask-logs")
}

/// The firmware a run boots with: its own when it names one, else the one given to the test.
/// `Err` carries the reason to skip the run.
fn run_firmware(spec: &RunSpec, options: &Options) -> Result<ovmf::Firmware, String> {
    let Some(path) = &spec.firmware else { return Ok(options.firmware.clone()) };
    if !path.exists() {
        return Err(format!("{} is not installed on this host", path.display()));
    }
    // The run gets its own copy of the VARS template (it may be written), as for --firmware.
    let scratch =
        build::project_root().join("target/xtask-firmware").join(spec.id.replace(':', "-"));
    // The explicit path wins over OVMF_PATH.
    ovmf::find(&crate::firmware::options(Some(path.clone()), ovmf::Purpose::Tcg, scratch))
        .map_err(|error| error.to_string())
}

/// The virtio console's copy of a report must equal the serial one: the same checks with the
/// same results and details, the same summary.
fn virtio_agrees(serial: &SerialReport, virtio: &SerialReport) -> Result<(), String> {
    if virtio.checks.is_empty() {
        return Err("no self-test report on the virtio console".into());
    }
    if let Some((s, v)) = serial.checks.iter().zip(&virtio.checks).find(|(s, v)| s != v) {
        return Err(format!(
            "virtio console and serial disagree: {} {:?} {:?} vs {} {:?} {:?}",
            s.name, s.result, s.detail, v.name, v.result, v.detail
        ));
    }
    if serial.checks.len() != virtio.checks.len() || serial.summary != virtio.summary {
        return Err(format!(
            "virtio console has {} checks and summary {:?}, serial {} and {:?}",
            virtio.checks.len(),
            virtio.summary,
            serial.checks.len(),
            serial.summary
        ));
    }
    Ok(())
}

fn execute(spec: &RunSpec, image: &Path, options: &Options, qemu: &Path) -> Result<RunReport> {
    let log = logs_dir().join(format!("{}.log", spec.id.replace(':', "-")));
    if spec.mode == "audit" {
        return crate::audit::harness::execute(spec, &options.firmware, log);
    }
    let firmware = match run_firmware(spec, options) {
        Ok(firmware) => firmware,
        Err(reason) => return skipped(spec, &log, reason),
    };
    // The TPM runs boot with swtpm and are judged on its PCRs too (xtask/src/tpm.rs).
    let tpm = match crate::tpm::wanted(&spec.id).then(crate::tpm::tools_present) {
        Some(Err(reason)) => return skipped(spec, &log, reason),
        Some(Ok(())) => Some(crate::tpm::Swtpm::start(&log.with_extension("swtpm"))?),
        None => None,
    };
    let nonce = crate::attest::fresh_nonce();
    let mut extra_args = options.qemu_args.clone();
    extra_args.extend(crate::attest::nonce_args(&nonce));
    // The td machine has a virtio console; its output is judged too (`virtio_agrees`).
    let virtio_log = (spec.machine == Machine::Td)
        .then(|| logs_dir().join(format!("{}.virtio.log", spec.id.replace(':', "-"))));
    if let Some(path) = &virtio_log {
        let _ = std::fs::remove_file(path);
    }
    extra_args.extend(tpm.iter().flat_map(crate::tpm::Swtpm::qemu_args));
    let mut args = qemu::boot_args(&qemu::BootSpec {
        firmware: &firmware,
        image,
        kvm: options.kvm,
        machine: spec.machine,
        mode: spec.mode_flag.as_deref(),
        extra_args: &extra_args,
        la57: spec.loader.needs_la57(),
        virtio_console: virtio_log.as_deref(),
    });
    if NO_DEBUG_EXIT_RUNS.contains(&spec.id.as_str()) {
        args = qemu::without_debug_exit(&args);
    }
    // NMIs over QMP: a unix socket in the run's own temporary directory.
    let window = nmi_window(spec.mode_flag.as_deref());
    let scratch = std::env::temp_dir().join(format!(
        "xtask-{}-{}",
        std::process::id(),
        spec.id.replace(':', "-")
    ));
    let nmis = match window {
        Some(count) => {
            std::fs::create_dir_all(&scratch)
                .with_context(|| format!("cannot create {}", scratch.display()))?;
            let socket = scratch.join("qmp.sock");
            args.extend(["-qmp".into(), format!("unix:{},server=on,wait=off", socket.display())]);
            Some(qemu::NmiInjection { socket, after: NMI_WINDOW_MARKER.into(), count })
        }
        None => None,
    };
    // A run that expects a hang stops a few seconds after the kernel says it will hang, so
    // that a slow boot on a loaded machine cannot eat into its limit.
    let limits = qemu::Limits {
        timeout: spec.timeout,
        stop_after_marker: match &spec.expect {
            Expect::Timeout { marker } => Some((marker.clone(), HANG_GRACE)),
            _ => None,
        },
        nmis,
    };
    let finished = qemu::run(qemu, &args, &limits, false);
    if window.is_some() {
        let _ = std::fs::remove_dir_all(&scratch);
    }
    let finished = finished?;
    std::fs::write(&log, &finished.output)
        .with_context(|| format!("cannot write {}", log.display()))?;
    let parsed = report::parse(&finished.output);
    let (verdict, mut why) = verdict(finished.status, finished.timed_out, &parsed);
    // `note`: what the harness refused an expected refusal for, for the reason below.
    let (mut judged, note) = match judge(spec, verdict, finished.status, &parsed) {
        Ok(note) => (Ok(()), note),
        Err(e) => (Err(e), String::new()),
    };
    if let (Some(count), Ok(())) = (window, &judged) {
        let sent = finished.nmis.clone().unwrap_or_default();
        let nmis = parsed.counters.get("nmi").copied().unwrap_or(0);
        judged = judge_nmis(count, &sent, nmis);
        why = format!(
            "{why}; NMIs over QMP: {} while the kernel waited, {} more during the self-test, \
             nmi={nmis}",
            sent.counted, sent.more
        );
    }
    let virtio =
        virtio_log.as_deref().map(|path| std::fs::read_to_string(path).unwrap_or_default());
    if let (Ok(()), Some(text), Expect::Pass) = (&judged, &virtio, &spec.expect) {
        // The report as the virtio console carried it: judged on its own, and equal to the
        // serial copy.
        // The boot before the console came up (the first kernel line, the loader's lines), the
        // emergency path (FATAL lines, register dumps) and the model host's own lines are on
        // serial only.
        let carried = SerialReport {
            fatal: parsed.fatal.clone(),
            host_fatal: parsed.host_fatal.clone(),
            halted: parsed.halted.clone(),
            register_dump: parsed.register_dump,
            first_kernel_line: parsed.first_kernel_line.clone(),
            kernel_started: parsed.kernel_started,
            kernel_lines: parsed.kernel_lines.clone(),
            loader_lines: parsed.loader_lines.clone(),
            loader_error: parsed.loader_error.clone(),
            firmware_refusal: parsed.firmware_refusal.clone(),
            ..report::parse(text)
        };
        judged = judge(spec, verdict, finished.status, &carried)
            .map_err(|e| format!("virtio console report: {e}"))
            .and_then(|_| virtio_agrees(&parsed, &carried));
    }
    let mut tests = parsed.checks.clone();
    // A TDREPORT the kernel printed is judged on the host too (xtask/src/attest.rs); a run
    // expected to pass in which the kernel's report check passed must bring one that holds.
    let report_checked =
        parsed.checks.iter().any(|c| c.name == "attest.report" && c.result == CheckResult::Pass);
    if matches!(spec.expect, Expect::Pass) && report_checked {
        let outcome =
            crate::attest::verify(&finished.output, &nonce, &crate::attest::report_file(&log))
                .and_then(|detail| {
                    detail.ok_or_else(|| "no TDREPORT lines in the log".to_string())
                });
        tests.push(Check {
            name: "host.tdreport".into(),
            result: if outcome.is_ok() { CheckResult::Pass } else { CheckResult::Fail },
            detail: outcome.clone().unwrap_or_else(|e| e.clone()),
        });
        if let (Ok(()), Err(e)) = (&judged, outcome) {
            judged = Err(format!("host check of the TDREPORT: {e}"));
        }
    }
    if let Some(tpm) = tpm {
        crate::tpm::judge(spec.loader, tpm, image, &finished.output, &mut tests, &mut judged);
    }
    if let Some(scenario) = spec.id.strip_prefix("fatal:") {
        tests.push(Check {
            name: format!("fault.{scenario}"),
            result: if judged.is_ok() { CheckResult::Pass } else { CheckResult::Fail },
            detail: parsed.fatal.first().cloned().unwrap_or_default(),
        });
    }
    Ok(RunReport {
        id: spec.id.clone(),
        mode: spec.mode.into(),
        machine: spec.machine,
        loader: spec.loader.name().into(),
        expect: spec.expect.word().into(),
        verdict,
        judged: if judged.is_ok() { "ok".into() } else { "wrong".into() },
        reason: match &judged {
            Ok(()) if !note.is_empty() => format!("{note} ({why})"),
            // A run with its own firmware names it.
            Ok(()) if spec.firmware.is_some() => {
                format!("with {}: {why}", firmware.code.display())
            }
            Ok(()) => why,
            Err(e) => format!("{e} ({why})"),
        },
        qemu_status: finished.status,
        wall_ms: finished.wall.as_millis(),
        tests,
        counters: parsed.counters,
        log: log.display().to_string(),
    })
}

/// The report of a run that cannot be made on this host, with the reason.
fn skipped(spec: &RunSpec, log: &Path, reason: String) -> Result<RunReport> {
    std::fs::write(log, format!("skipped: {reason}\n"))
        .with_context(|| format!("cannot write {}", log.display()))?;
    Ok(RunReport::skipped(spec, reason, log))
}

/// Runs the host unit tests of the whole workspace; true if they passed.
fn host_tests() -> Result<bool> {
    let root = build::project_root();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    println!("==> host unit tests: cargo test --workspace");
    let status = std::process::Command::new(cargo)
        .current_dir(&root)
        .args(["test", "--workspace", "--quiet"])
        .status()
        .context("cannot run cargo test")?;
    Ok(status.success())
}

const HOST_MERGE_RUN_ID: &str = "harness:host-broken-in-merge";

/// Proves that the host tests of the IN merge can fail: with tdx-ve's `broken-in-merge`
/// feature they must fail, naming a `merge_in` test.
fn host_tests_catch_broken_merge() -> Result<RunReport> {
    let root = build::project_root();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let started = std::time::Instant::now();
    let output = std::process::Command::new(cargo)
        .current_dir(&root)
        .args(["test", "-p", "tdx-ve", "--features", "broken-in-merge", "--lib", "--", "merge_in"])
        .output()
        .context("cannot run cargo test")?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let failing: Vec<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("test ").and_then(|l| l.strip_suffix(" ... FAILED")))
        .map(str::to_owned)
        .collect();
    let judged = !output.status.success() && failing.iter().any(|t| t.contains("merge_in"));
    let log = logs_dir().join("harness-host-broken-in-merge.log");
    std::fs::write(&log, &text)?;
    Ok(RunReport {
        id: HOST_MERGE_RUN_ID.into(),
        mode: "host".into(),
        machine: Machine::Legacy,
        loader: "none".into(),
        expect: "fail".into(),
        verdict: if output.status.success() { Verdict::Pass } else { Verdict::Fail },
        judged: if judged { "ok".into() } else { "wrong".into() },
        reason: if failing.is_empty() {
            "no failing test: the host tests do not catch a broken IN merge".into()
        } else {
            format!("failed: {}", failing.join(", "))
        },
        qemu_status: None,
        wall_ms: started.elapsed().as_millis(),
        tests: Vec::new(),
        counters: BTreeMap::new(),
        log: log.display().to_string(),
    })
}

pub fn run(options: Options) -> Result<bool> {
    let qemu = qemu::qemu_binary()?;
    let selected = |id: &str| {
        options.runs.is_empty()
            || options.runs.iter().any(|r| id == r || id.starts_with(&format!("{r}:")))
    };
    let mut specs = default_runs(options.timeout, options.fail_check.as_deref(), options.loader);
    specs.retain(|s| selected(&s.id));
    let host_merge_check = HOST_MERGE_RUN_ID;
    // It is a host test: `--skip-host-tests` skips it unless `--run` names it.
    let with_host_merge_check = options.fail_check.is_none()
        && if options.runs.is_empty() {
            !options.skip_host_tests
        } else {
            selected(host_merge_check)
        };
    if specs.is_empty() && !with_host_merge_check {
        bail!("--run matched no run; runs are: native, softtdx, fatal:<scenario>, harness:<name>");
    }
    // Fail on a bad --json path now, not after every boot.
    if let Some(path) = &options.json {
        std::fs::write(path, "{}").with_context(|| format!("cannot write {}", path.display()))?;
    }
    std::fs::create_dir_all(logs_dir())
        .with_context(|| format!("cannot create {}", logs_dir().display()))?;
    // From here on the run has started: an error still ends with the closing count line that
    // CI reads.
    match run_started(&options, &qemu, &specs, with_host_merge_check) {
        Ok(passed) => Ok(passed),
        Err(error) => {
            eprintln!("error: {error:#}");
            println!();
            println!("0 passed, 1 failed");
            Ok(false)
        }
    }
}

fn run_started(
    options: &Options,
    qemu: &Path,
    specs: &[RunSpec],
    with_host_merge_check: bool,
) -> Result<bool> {
    let suite_started = Instant::now();
    let host_ok = if options.skip_host_tests { true } else { host_tests()? };

    // Build each variant and loader once, before any boot.
    let image_key = |spec: &RunSpec| format!("{:?} {:?}", spec.variant, spec.loader);
    let mut images: BTreeMap<String, PathBuf> = BTreeMap::new();
    for spec in specs {
        if let std::collections::btree_map::Entry::Vacant(slot) = images.entry(image_key(spec)) {
            println!(
                "==> building kernel {}, {} loader",
                describe_variant(&spec.variant),
                spec.loader.name()
            );
            slot.insert(build::build(&spec.variant, spec.loader, true)?.image);
        }
    }

    println!("==> booting {} runs under QEMU ({})", specs.len(), qemu.display());
    let first_args = qemu::boot_args(&qemu::BootSpec {
        firmware: &options.firmware,
        image: &images[&image_key(&specs[0])],
        kvm: options.kvm,
        machine: specs[0].machine,
        mode: specs[0].mode_flag.as_deref(),
        extra_args: &options.qemu_args,
        la57: specs[0].loader.needs_la57(),
        virtio_console: (specs[0].machine == Machine::Td).then_some(Path::new("RUN.virtio.log")),
    });
    println!("    {}", qemu::command_line(qemu, &first_args));
    for line in crate::firmware::announce(&options.firmware) {
        println!("    {line}");
    }

    let queue = Mutex::new(specs.iter().enumerate().collect::<Vec<_>>());
    let results = Mutex::new(Vec::new());
    let workers = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).clamp(1, 2);
    let boots_started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| loop {
                let Some((index, spec)) = queue.lock().unwrap().pop() else { break };
                let image = &images[&image_key(spec)];
                let result = execute(spec, image, options, qemu);
                results.lock().unwrap().push((index, result));
            });
        }
    });
    let boots_wall = boots_started.elapsed();
    let mut results = results.into_inner().unwrap();
    results.sort_by_key(|(index, _)| *index);

    let mut runs = Vec::new();
    for (_, result) in results {
        runs.push(result?);
    }
    if with_host_merge_check {
        println!("==> harness: host tests with the broken IN merge must fail");
        runs.push(host_tests_catch_broken_merge()?);
    }
    let (mut passed, mut failed) = (0u32, 0u32);
    let mut skipped = Vec::new();
    for run in &runs {
        if run.judged == "skip" {
            println!();
            println!("run {:<34} expect {:<7} skip: {}", run.id, run.expect, run.reason);
            skipped.push(run.id.as_str());
            continue;
        }
        let ok = run.judged == "ok";
        println!();
        println!(
            "run {:<34} expect {:<7} verdict {:<7} {:>6.1} s  {}",
            run.id,
            run.expect,
            format!("{:?}", run.verdict).to_lowercase(),
            run.wall_ms as f64 / 1000.0,
            if ok { "ok" } else { "WRONG" }
        );
        println!("    {}", run.reason);
        if run.expect == "pass" {
            for check in &run.tests {
                let word = match check.result {
                    CheckResult::Pass => {
                        passed += 1;
                        "pass"
                    }
                    CheckResult::Fail => {
                        failed += 1;
                        "FAIL"
                    }
                    CheckResult::Skip => "skip",
                };
                println!("    {word:<4}  {:<40} {}", check.name, check.detail);
            }
            if !ok {
                failed += 1;
                println!("    log: {}", run.log);
            }
        } else {
            let synthetic = run.id.strip_prefix("fatal:").map(|s| format!("fault.{s}"));
            for check in run.tests.iter().filter(|c| Some(&c.name) == synthetic.as_ref()) {
                println!(
                    "    {:<4}  {:<40} {}",
                    if ok { "pass" } else { "FAIL" },
                    check.name,
                    check.detail
                );
            }
            if ok {
                passed += 1;
            } else {
                failed += 1;
                println!("    log: {}", run.log);
            }
        }
    }
    if !host_ok {
        failed += 1;
        println!("\nhost unit tests failed (see above)");
    }
    if let Some(name) = &options.fail_check {
        if !runs.iter().any(|run| run.tests.iter().any(|c| &c.name == name)) {
            failed += 1;
            println!("\n--fail-check {name}: no check of that name ran, so nothing was inverted");
        }
    }
    if !skipped.is_empty() {
        println!("\nskipped (neither passed nor failed): {}", skipped.join(", "));
    }
    // What the suite's time is made of: the boots (a skipped run makes none).
    let boots = runs.iter().filter(|run| run.verdict != Verdict::Skip).count()
        - usize::from(with_host_merge_check);
    let report = Report { passed, failed, runs };
    if let Some(path) = &options.json {
        let text = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
        println!("\nreport written to {}", path.display());
    }
    println!();
    println!(
        "{boots} boots in {:.1} s, {workers} at a time; the whole suite took {:.1} s",
        boots_wall.as_secs_f64(),
        suite_started.elapsed().as_secs_f64()
    );
    println!("{passed} passed, {failed} failed");
    Ok(failed == 0)
}

fn describe_variant(variant: &KernelVariant) -> String {
    let mut parts = Vec::new();
    if let Some(check) = &variant.fail_check {
        parts.push(format!("check {check} inverted"));
    }
    if variant.broken_in_merge {
        parts.push("the deliberately broken IN merge".to_owned());
    }
    if variant.broken_mmio_movzx {
        parts.push("an MMIO MOVZX r32 that does not zero-extend".to_owned());
    }
    if variant.broken_ve_ordering {
        parts.push("port I/O before TDG.VP.VEINFO.GET".to_owned());
    }
    if variant.broken_allowlist {
        parts.push("a port allowlist that lets every port through".to_owned());
    }
    if variant.broken_pic_probe {
        parts.push("the PIC probe inverted".to_owned());
    }
    if variant.no_device_checks {
        parts.push("the device checks left out".to_owned());
    }
    if variant.accept_eager {
        parts.push("accept=eager".to_owned());
    }
    if variant.td_image {
        return "(the kernel a TD boots, without test-modes)".to_owned();
    }
    if parts.is_empty() {
        "(test image)".to_owned()
    } else {
        format!("with {}", parts.join(" and "))
    }
}

/// `cargo xtask test --tdx`: the self-test in a real TD, judged like the softtdx run (pass, with
/// I/O #VEs). The host has passed `doctor`'s preflight before this runs.
pub fn run_td(
    mut launch: crate::td::qemu::TdLaunch,
    loader: LoaderKind,
    timeout: Duration,
    json: Option<PathBuf>,
    skip_host_tests: bool,
) -> Result<bool> {
    let host_ok = if skip_host_tests { true } else { host_tests()? };
    println!("==> building the kernel a TD boots, {} loader", loader.name());
    launch.image = build::build(&KernelVariant::td_image(), loader, true)?.image;
    let args = crate::td::qemu::td_qemu_args(&launch)?;
    println!("==> booting in a TD: {}", qemu::command_line(&launch.qemu, &args));
    std::fs::create_dir_all(logs_dir())?;
    let finished = qemu::run(&launch.qemu, &args, &qemu::Limits::timeout(timeout), false)?;
    let log = logs_dir().join("td.log");
    std::fs::write(&log, &finished.output)?;
    let parsed = report::parse(&finished.output);
    let (verdict, why) = verdict(finished.status, finished.timed_out, &parsed);
    let spec = RunSpec {
        id: "td".into(),
        mode: "td",
        machine: Machine::Td,
        mode_flag: None,
        variant: KernelVariant::default(),
        loader,
        expect: Expect::Pass,
        timeout,
        firmware: None,
    };
    let judged = judge(&spec, verdict, finished.status, &parsed);
    let (mut passed, mut failed) = (0u32, 0u32);
    for check in &parsed.checks {
        match check.result {
            CheckResult::Pass => passed += 1,
            CheckResult::Fail => failed += 1,
            CheckResult::Skip => {}
        }
        println!(
            "    {:<4}  {:<40} {}",
            format!("{:?}", check.result).to_lowercase(),
            check.name,
            check.detail
        );
    }
    if let Err(e) = &judged {
        failed += 1;
        println!("run td: WRONG: {e} ({why}); log: {}", log.display());
    }
    if !host_ok {
        failed += 1;
    }
    if let Some(path) = json {
        let run = RunReport {
            id: "td".into(),
            mode: "td".into(),
            machine: Machine::Td,
            loader: loader.name().into(),
            expect: "pass".into(),
            verdict,
            judged: if judged.is_ok() { "ok".into() } else { "wrong".into() },
            reason: why,
            qemu_status: finished.status,
            wall_ms: finished.wall.as_millis(),
            tests: parsed.checks,
            counters: parsed.counters,
            log: log.display().to_string(),
        };
        let report = Report { passed, failed, runs: vec![run] };
        std::fs::write(&path, serde_json::to_string_pretty(&report)?)?;
    }
    println!();
    println!("{passed} passed, {failed} failed");
    Ok(failed == 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Summary;

    fn spec(expect: Expect, mode: &'static str) -> RunSpec {
        RunSpec {
            id: "t".into(),
            mode,
            machine: Machine::Legacy,
            mode_flag: None,
            variant: KernelVariant::default(),
            loader: LoaderKind::Own,
            expect,
            timeout: Duration::from_secs(1),
            firmware: None,
        }
    }

    fn check(name: &str, result: CheckResult) -> Check {
        Check { name: name.into(), result, detail: String::new() }
    }

    /// A report whose CHECK lines agree with its SUMMARY and with the manifest's column for
    /// `mode` on the legacy machine (for another mode: the softtdx column, to be refused).
    fn passing_report(mode: &str, ve_io: u64) -> SerialReport {
        use crate::manifest::Want;
        let first = if mode == "native" { "tdx: not a TD" } else { "tdx: TD detected: GPAW=48" };
        let column = if mode == "native" { "native" } else { "softtdx" };
        let checks: Vec<Check> = Manifest::builtin()
            .expected(column, Machine::Legacy)
            .unwrap()
            .iter()
            .map(|(name, want)| match want {
                Want::Pass => check(name, CheckResult::Pass),
                Want::Skip(reason) => {
                    Check { name: name.clone(), result: CheckResult::Skip, detail: reason.clone() }
                }
            })
            .collect();
        let count = |r| checks.iter().filter(|c| c.result == r).count() as u32;
        let summary = Summary {
            passed: count(CheckResult::Pass),
            failed: count(CheckResult::Fail),
            skipped: count(CheckResult::Skip),
        };
        SerialReport {
            first_kernel_line: Some(first.into()),
            mode: Some(mode.into()),
            summary: Some(summary),
            checks,
            counters: [("ve.io".to_owned(), ve_io)].into_iter().collect(),
            kernel_started: true,
            ..Default::default()
        }
    }

    fn judge_pass(mode: &'static str, report: &SerialReport) -> Result<(), String> {
        judge(&spec(Expect::Pass, mode), Verdict::Pass, Some(33), report).map(|_| ())
    }

    #[test]
    fn verdicts_follow_the_exit_status() {
        let ok = passing_report("native", 0);
        assert_eq!(verdict(Some(33), false, &ok).0, Verdict::Pass);
        assert_eq!(verdict(Some(33), false, &SerialReport::default()).0, Verdict::Fail);
        assert_eq!(verdict(Some(35), false, &ok).0, Verdict::Fail);
        assert_eq!(verdict(Some(0), false, &ok).0, Verdict::Crash);
        assert_eq!(verdict(Some(1), false, &ok).0, Verdict::Crash);
        assert_eq!(verdict(None, false, &ok).0, Verdict::Crash);
        assert_eq!(verdict(Some(33), true, &ok).0, Verdict::Timeout);
    }

    #[test]
    fn a_pass_needs_the_right_mode_and_counters() {
        assert!(judge_pass("native", &passing_report("native", 0)).is_ok());
        assert!(judge_pass("native", &passing_report("native", 3)).is_err());
        assert!(judge_pass("softtdx", &passing_report("softtdx", 0)).is_err());
        assert!(judge_pass("softtdx", &passing_report("softtdx", 9)).is_ok());
        assert!(judge_pass("softtdx", &passing_report("native", 9)).is_err());
    }

    #[test]
    fn a_pass_needs_check_lines_that_match_the_summary() {
        let mut lost_line = passing_report("native", 0);
        lost_line.checks.pop();
        assert!(judge_pass("native", &lost_line).is_err());
        let mut empty = passing_report("native", 0);
        empty.checks.clear();
        empty.summary = Some(Summary { passed: 0, failed: 0, skipped: 0 });
        assert!(judge_pass("native", &empty).is_err());
    }

    /// The summary a report's CHECK lines add up to, after a test changed them.
    fn resum(report: &mut SerialReport) {
        let count = |r| report.checks.iter().filter(|c| c.result == r).count() as u32;
        report.summary = Some(Summary {
            passed: count(CheckResult::Pass),
            failed: count(CheckResult::Fail),
            skipped: count(CheckResult::Skip),
        });
    }

    #[test]
    fn a_softtdx_pass_needs_its_manifest_checks_and_no_other_skips() {
        let mut skipped = passing_report("softtdx", 9);
        let diff = skipped.checks.iter_mut().find(|c| c.name.starts_with("diff.")).unwrap();
        diff.result = CheckResult::Skip;
        resum(&mut skipped);
        assert!(judge_pass("softtdx", &skipped).unwrap_err().contains("expected pass, got skip"));
        let mut few = passing_report("softtdx", 9);
        few.checks.retain(|c| !c.name.starts_with("diff.random."));
        resum(&mut few);
        assert!(judge_pass("softtdx", &few).unwrap_err().contains("missing check diff.random."));
    }

    #[test]
    fn a_run_the_manifest_refuses_is_a_rejected_run() {
        let because = "missing check serial.scratch";
        let s = spec(Expect::Rejected { because: because.into() }, "native");
        let mut without_serial = passing_report("native", 0);
        without_serial.checks.retain(|c| !c.name.starts_with("serial."));
        resum(&mut without_serial);
        assert!(judge(&s, Verdict::Pass, Some(33), &without_serial).is_ok());
        // A run the manifest accepts, or one that fails on its own, is not what was expected.
        assert!(judge(&s, Verdict::Pass, Some(33), &passing_report("native", 0)).is_err());
        assert!(judge(&s, Verdict::Fail, Some(35), &without_serial).is_err());
        // Refused, but for another reason.
        let other =
            spec(Expect::Rejected { because: "missing check port.insb_fw_cfg".into() }, "native");
        assert!(judge(&other, Verdict::Pass, Some(33), &without_serial).is_err());
    }

    #[test]
    fn in_a_td_the_td_info_comes_first() {
        let mut report = passing_report("softtdx", 9);
        report.first_kernel_line = Some("tdx-unikernel: kernel entered".into());
        assert!(judge_pass("softtdx", &report).is_err());
    }

    #[test]
    fn a_fatal_expectation_needs_reason_and_host_report() {
        let expect = Expect::Fatal {
            reason: vec!["unsupported exit reason".into(), "65535".into()],
            host_report: true,
        };
        let mut report = SerialReport {
            fatal: vec!["FATAL #VE: unsupported exit reason 65535".into()],
            host_fatal: Some("softtdx: host: TD reported ReportFatalError".into()),
            kernel_started: true,
            ..Default::default()
        };
        let s = spec(expect.clone(), "softtdx");
        assert!(judge(&s, Verdict::Fail, Some(35), &report).is_ok());
        assert!(judge(&s, Verdict::Crash, Some(1), &report).is_err());
        report.host_fatal = None;
        assert!(judge(&s, Verdict::Fail, Some(35), &report).is_err());
        report.host_fatal = Some("x".into());
        report.fatal = vec!["FATAL #VE: something else".into()];
        assert!(judge(&s, Verdict::Fail, Some(35), &report).is_err());
    }

    #[test]
    fn a_fail_expectation_names_the_check_and_needs_a_finished_self_test() {
        let s = spec(Expect::Fail { check: "serial.scratch".into() }, "native");
        let mut report = SerialReport {
            checks: vec![check("serial.scratch", CheckResult::Fail)],
            summary: Some(Summary { passed: 0, failed: 1, skipped: 0 }),
            ..Default::default()
        };
        assert!(judge(&s, Verdict::Fail, Some(35), &report).is_ok());
        assert!(judge(&s, Verdict::Pass, Some(33), &report).is_err());
        assert!(judge(&s, Verdict::Fail, Some(35), &SerialReport::default()).is_err());
        report.fatal = vec!["PANIC at src/x.rs:1:1: boom".into()];
        assert!(judge(&s, Verdict::Fail, Some(35), &report).is_err());
    }

    #[test]
    fn a_timeout_or_crash_must_follow_the_kernels_marker() {
        let timeout = spec(Expect::Timeout { marker: "hang requested".into() }, "native");
        let crash = spec(Expect::Crash { marker: "empty IDT".into() }, "native");
        let marked = |line: &str| SerialReport {
            kernel_started: true,
            kernel_lines: vec![format!("tdx-unikernel: {line}")],
            ..Default::default()
        };
        assert!(judge(&timeout, Verdict::Timeout, None, &marked("hang requested")).is_ok());
        assert!(judge(&timeout, Verdict::Timeout, None, &marked("kernel entered")).is_err());
        assert!(judge(&timeout, Verdict::Pass, Some(33), &marked("hang requested")).is_err());
        let mut fatal_then_hang = marked("hang requested");
        fatal_then_hang.fatal = vec!["FATAL: x".into()];
        assert!(judge(&timeout, Verdict::Timeout, None, &fatal_then_hang).is_err());
        assert!(judge(&crash, Verdict::Crash, Some(0), &marked("empty IDT")).is_ok());
        assert!(judge(&crash, Verdict::Crash, Some(1), &marked("empty IDT")).is_err());
        assert!(judge(&crash, Verdict::Crash, None, &marked("empty IDT")).is_err());
        assert!(judge(&crash, Verdict::Crash, Some(0), &marked("kernel entered")).is_err());
    }

    #[test]
    fn the_loaders_refusal_is_a_failure_with_its_message_not_a_timeout() {
        let refused = report::parse(
            "BdsDxe: starting Boot0002\r\ntdx-loader: error: kernel config: the kernel was built against bootloader_api 0.11.16, this loader supports only 0.11.17\r\nBdsDxe: failed to start Boot0002: Load Error\r\n",
        );
        for (status, timed_out) in [(None, false), (None, true)] {
            let (verdict, why) = verdict(status, timed_out, &refused);
            assert_eq!(verdict, Verdict::Fail);
            assert!(
                why.contains("the loader refused the kernel") && why.contains("0.11.16"),
                "{why}"
            );
        }
        let runs = default_runs(Duration::from_secs(1), None, None);
        let old_api = runs.iter().find(|r| r.id == "harness:old-bootloader-api").unwrap();
        assert!(judge(old_api, Verdict::Fail, None, &refused).is_ok());
        assert!(judge_pass("native", &refused).is_err());
    }

    #[test]
    fn a_secure_boot_refusal_is_its_own_verdict_not_a_timeout() {
        let refused = report::parse(
            "BdsDxe: loading Boot0002 \"UEFI QEMU HARDDISK QM00001 \"\r\nBdsDxe: failed to load Boot0002 \"UEFI QEMU HARDDISK QM00001 \" from PciRoot(0x0): Access Denied\r\n",
        );
        // Stopped by the runner (killed: no status), or at the timeout: the refusal is the reason.
        for (status, timed_out) in [(None, false), (None, true)] {
            let (verdict, why) = verdict(status, timed_out, &refused);
            assert_eq!(verdict, Verdict::Refused);
            assert!(why.contains("Secure Boot") && why.contains("Access Denied"), "{why}");
        }
        let s = spec(Expect::Refused, "native");
        assert!(judge(&s, Verdict::Refused, None, &refused).is_ok());
        assert!(judge(&s, Verdict::Timeout, None, &refused).is_err());
        let booted = passing_report("native", 0);
        assert!(judge(&s, verdict(Some(33), false, &booted).0, Some(33), &booted).is_err());
        // A pass run that meets the refusal is wrong, not a timeout.
        assert!(judge_pass("native", &refused).is_err());
    }

    #[test]
    fn a_run_whose_firmware_is_not_installed_is_skipped_with_the_reason() {
        let options = Options {
            timeout: Duration::from_secs(1),
            json: None,
            qemu_args: Vec::new(),
            fail_check: None,
            kvm: false,
            firmware: ovmf::Firmware::new("/fw/OVMF.fd".into(), None, ovmf::Source::Explicit),
            runs: Vec::new(),
            skip_host_tests: true,
            loader: None,
        };
        let mut s = spec(Expect::Refused, "native");
        assert_eq!(run_firmware(&s, &options).unwrap().code, Path::new("/fw/OVMF.fd"));
        s.firmware = Some("/nonexistent/OVMF_CODE_4M.ms.fd".into());
        let reason = run_firmware(&s, &options).unwrap_err();
        assert!(reason.contains("/nonexistent/OVMF_CODE_4M.ms.fd is not installed"), "{reason}");
    }

    #[test]
    fn the_virtio_copy_of_a_report_must_equal_the_serial_one() {
        let serial =
            report::parse("CHECK pass a x\nCHECK skip b y\nSUMMARY passed=1 failed=0 skipped=1\n");
        assert_eq!(virtio_agrees(&serial, &serial.clone()), Ok(()));
        assert!(virtio_agrees(&serial, &report::parse("")).unwrap_err().contains("no self-test"));
        let other =
            report::parse("CHECK pass a x\nCHECK pass b y\nSUMMARY passed=2 failed=0 skipped=0\n");
        assert!(virtio_agrees(&serial, &other).unwrap_err().contains("disagree: b"));
        let short = report::parse("CHECK pass a x\nSUMMARY passed=1 failed=0 skipped=1\n");
        assert!(virtio_agrees(&serial, &short).is_err());
    }

    #[test]
    fn default_runs_cover_every_fatal_scenario_and_the_harness() {
        let runs = default_runs(Duration::from_secs(120), None, None);
        assert_eq!(
            runs.iter().filter(|r| r.id.starts_with("fatal:")).count(),
            FATAL_SCENARIOS.len()
        );
        assert!(runs.iter().any(|r| matches!(r.expect, Expect::Timeout { .. })));
        let secure_boot = runs.iter().find(|r| r.expect == Expect::Refused).unwrap();
        assert_eq!(secure_boot.firmware.as_deref(), Some(Path::new(SECURE_BOOT_FIRMWARE)));
        assert_eq!(default_runs(Duration::from_secs(1), Some("x"), None).len(), 6);
        assert_eq!(
            default_runs(Duration::from_secs(1), Some("x"), Some(LoaderKind::Upstream)).len(),
            4
        );
        for (mode, machine) in [
            ("native", Machine::Legacy),
            ("softtdx", Machine::Legacy),
            ("native", Machine::Td),
            ("softtdx", Machine::Td),
        ] {
            assert!(
                runs.iter().any(|r| r.expect == Expect::Pass
                    && r.mode == mode
                    && r.machine == machine
                    && r.variant == KernelVariant::default()),
                "no passing {mode} run on the {machine:?} machine"
            );
        }
    }

    #[test]
    fn a_debug_td_must_say_so_on_its_first_line_and_only_then() {
        assert!(requests_debug_td(Some("softtdx attributes=0x1")));
        assert!(requests_debug_td(Some("softtdx attributes=0x10000001")));
        assert!(!requests_debug_td(Some("softtdx attributes=0x0")));
        assert!(!requests_debug_td(Some("softtdx")));
        assert!(!requests_debug_td(None));
        let mut debug = spec(Expect::Pass, "softtdx");
        debug.mode_flag = Some("softtdx attributes=0x1".into());
        let mut report = passing_report("softtdx", 9);
        assert!(judge(&debug, Verdict::Pass, Some(33), &report).is_err());
        report.first_kernel_line = Some("tdx: TD detected: DEBUG TD (...), GPAW=48".into());
        assert!(judge(&debug, Verdict::Pass, Some(33), &report).is_ok());
        assert!(judge_pass("softtdx", &report).is_err());
    }

    #[test]
    fn the_td_image_is_booted_with_a_hang_mode_and_must_pass() {
        let runs = default_runs(Duration::from_secs(120), None, None);
        let run = runs.iter().find(|r| r.id == "td-image:hang-mode-ignored").expect("the run");
        assert_eq!(run.variant, KernelVariant::td_image());
        assert_eq!(run.mode_flag.as_deref(), Some("hang"));
        assert_eq!((run.expect.clone(), run.machine), (Expect::Pass, Machine::Td));
        // Only that run boots the TD image; every other run needs the test modes.
        assert!(runs.iter().filter(|r| r.variant.td_image).count() == 1);
    }

    #[test]
    fn the_pass_runs_boot_under_both_loaders_and_the_rest_under_ours() {
        let runs = default_runs(Duration::from_secs(120), None, None);
        let pass: Vec<(&str, LoaderKind)> = runs
            .iter()
            .filter(|r| r.expect == Expect::Pass && r.mode != "audit")
            .map(|r| (r.id.as_str(), r.loader))
            .collect();
        assert_eq!(
            pass,
            [
                ("native", LoaderKind::Own),
                ("softtdx", LoaderKind::Own),
                ("native:upstream", LoaderKind::Upstream),
                ("softtdx:upstream", LoaderKind::Upstream),
                ("td-machine:native", LoaderKind::Own),
                ("td-machine:softtdx", LoaderKind::Own),
                ("attributes:debug-td", LoaderKind::Own),
                ("td-image:hang-mode-ignored", LoaderKind::Own),
                ("harness:la57-handoff", LoaderKind::OwnLa57),
                ("tpm:measured-boot", LoaderKind::Own),
                ("harness:tpm-flipped-kernel", LoaderKind::OwnFlippedKernel),
                ("accept:eager", LoaderKind::Own),
            ]
        );
        assert!(runs
            .iter()
            .filter(|r| r.expect != Expect::Pass && r.mode != "audit")
            .all(|r| r.loader != LoaderKind::Upstream));
        let upstream = default_runs(Duration::from_secs(120), None, Some(LoaderKind::Upstream));
        assert!(upstream
            .iter()
            .all(|r| r.loader == LoaderKind::Upstream && !r.id.ends_with(":upstream")));
    }
}
