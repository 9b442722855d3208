//! The runs of `cargo xtask test`.
//!
//!
//! Runs (all from the same image, booted through our loader, unless a variant is named):
//! - `native`: the self-test without softtdx; expect pass.
//! - `softtdx`: the self-test with the software TDX module; expect pass, with I/O #VEs.
//! - `native:upstream`, `softtdx:upstream`: the same through the `bootloader` crate's UEFI
//!   stage; both loaders honouring the bootloader_api contract is what these four prove.
//!   `softtdx:upstream` plays a debug TD (`softtdx attributes=0x1`): it is also the proof that a
//!   debug TD passes the whole self-test and says DEBUG TD on its first line.
//!   (`--loader` boots every run through one loader instead.)
//! - `harness:broken-loader-and-pic-probe`: our loader built with `broken-handoff` boots a
//!   kernel whose PIC probe is inverted, on the TD machine (no PIC); expect each `boot.*`
//!   handoff check of kernel/src/selftest/bootinfo.rs to fail, and `pic.mask_readback`. The two
//!   breakages touch disjoint paths: booted alone, each failed exactly the checks it fails here,
//!   with the same details. With `--loader` other than ours: `harness:broken-pic-probe` alone.
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
//! - `harness:hang`: the kernel spins forever; expect `timeout`. (Booted from the
//!   broken-ve-ordering image, whose folded boot it ends: see the run list below.)
//! - `harness:broken-emulation`: one softtdx boot of one kernel built with four breakages
//!   ([`broken_emulation_variant`]): `serial.scratch` inverted (`--fail-check`), an IN merge
//!   that keeps RAX[63:32] on `in eax`, an MMIO MOVZX into a 32-bit register that keeps bits
//!   63:32, and a port allowlist that lets every port through. Expect `fail` with each of
//!   [`BROKEN_EMULATION_CHECKS`] failed, one per breakage; the run's line names any that did
//!   not. The breakages do not mask each other: with all four on, the failed checks were (when
//!   the four runs were folded into this one)
//!   exactly the union of those of the four kernels with one breakage each (18: `serial.scratch`;
//!   the 32-bit IN forms of `diff.in.*` and `diff.random.in.*` with the two `fault.*` checks of
//!   an IN's upper half; the six `diff.mmio.movzx.*` and `diff.random.mmio.movzx.*` into 32-bit
//!   registers; the five `allowlist.*` denial checks), each with the same detail as alone, and
//!   every other check gave the result it gives alone. They touch disjoint paths (the report,
//!   the IN merge, the MMIO decoder's MOVZX, the allowlist), so one boot proves what four did.
//! - `attributes:no-sept-ve-disable`: softtdx reports TD attributes without SEPT_VE_DISABLE;
//!   expect the kernel to refuse to run (FATAL and ReportFatalError), as Linux does.
//! - `attributes:debug-td` (only with `--loader`, when there is no `softtdx:upstream`): softtdx
//!   reports a debug TD; expect a pass whose first line says
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

use super::spec::{Expect, RunSpec};
use crate::build::{KernelVariant, LoaderKind};
use crate::machine::Machine;
use std::path::PathBuf;
use std::time::Duration;

/// The softtdx fatal scenarios (kernel/src/bootflags.rs) and the words the kernel's FATAL line
/// must contain for each.
pub const FATAL_SCENARIOS: [(&str, &[&str]); 16] = [
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
    // The kernel reads a page of its shared pool through the private physical-memory map: the
    // host converts it back, and the retried access ends the TD (the model stops the run).
    (
        "private-access-shared",
        &["private access to GPA", "which the TD made shared", "the retried access ends the TD"],
    ),
];

/// The fatal scenarios that end at the host, before the guest can send ReportFatalError.
const ENDED_BY_THE_HOST: [&str; 2] = ["touch-pending", "private-access-shared"];

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
pub(super) const DEBUG_TD_ATTRIBUTES: u64 = 1;

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

/// Runs booted without the isa-debug-exit device, as a production TD is: the kernel's exit
/// write to 0xf4 is dropped and it parks its vCPU with TDG.VP.VMCALL<Instruction.HLT>
/// (interrupts blocked); softtdx's VMM halts the machine and the runner stops QEMU at that line.
/// The verdict comes from serial (SUMMARY and the kernel's park line), not from an exit status.
pub const NO_DEBUG_EXIT_RUNS: [&str; 1] = ["td-machine:softtdx"];

/// The NMI window a boot mode asks for (`... nmi-window=N`).
pub(super) fn nmi_window(mode_flag: Option<&str>) -> Option<u32> {
    mode_flag?.split_once(" nmi-window=")?.1.split_whitespace().next()?.parse().ok()
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
        // Through the second loader, the model plays a debug TD: that boot is also the proof
        // that a debug TD runs the whole self-test and says so (no boot of its own for it).
        let softtdx_flag = if this == loader {
            "softtdx".to_owned()
        } else {
            format!("softtdx attributes={DEBUG_TD_ATTRIBUTES:#x}")
        };
        runs.push(RunSpec {
            id: format!("softtdx{suffix}"),
            mode: "softtdx",
            machine: Machine::Legacy,
            mode_flag: Some(softtdx_flag),
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
    // With one loader there is no second softtdx boot to play the debug TD: a boot of its own.
    if only_loader.is_some() {
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
    }
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
                // An access to a pending or shared page exits to the host (the model stops
                // the run): the guest never gets to send ReportFatalError.
                host_report: !ENDED_BY_THE_HOST.contains(&scenario),
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
    // The image of the misordering runs below: natively its #VE handler never runs, so it
    // hangs as the default image does, and the hang ends that image's folded boot (a hang, like
    // a reset, can only be a folded boot's last segment; the default image's ends in the triple
    // fault).
    runs.push(RunSpec {
        id: "harness:hang".into(),
        mode: "native",
        machine: Machine::Td,
        mode_flag: Some("hang".into()),
        variant: KernelVariant { broken_ve_ordering: true, ..KernelVariant::default() },
        loader,
        expect: Expect::Timeout { marker: "hang requested by the boot flags".into() },
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
    // Four breakages in one kernel and one boot (see `BROKEN_EMULATION_CHECKS`): each must
    // still be caught with the other three on.
    runs.push(RunSpec {
        id: "harness:broken-emulation".into(),
        mode: "softtdx",
        machine: Machine::Td,
        mode_flag: Some("softtdx".into()),
        variant: broken_emulation_variant(),
        loader,
        expect: Expect::FailEach { checks: BROKEN_EMULATION_CHECKS.map(String::from).to_vec() },
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
        // Our loader built with `broken-handoff`, and a kernel whose PIC probe claims a PIC
        // on the TD machine (the PIC checks then talk to a device that is not there): one boot
        // for both. They touch disjoint paths (the handoff, the 8259 probe): booted alone and
        // folded, the failed checks are the same (the five handoff checks and pic.mask_readback,
        // pic.reinit, pic.irr_isr), with the same details.
        let mut checks = HANDOFF_CHECKS.map(String::from).to_vec();
        checks.push(PIC_PROBE_CHECK.into());
        runs.push(RunSpec {
            id: "harness:broken-loader-and-pic-probe".into(),
            mode: "native",
            machine: Machine::Td,
            mode_flag: None,
            variant: KernelVariant { broken_pic_probe: true, ..KernelVariant::default() },
            loader: LoaderKind::OwnBrokenHandoff,
            expect: Expect::FailEach { checks },
            timeout,
            firmware: None,
        });
    } else {
        // Another loader only: the inverted PIC probe alone.
        runs.push(RunSpec {
            id: "harness:broken-pic-probe".into(),
            mode: "native",
            machine: Machine::Td,
            mode_flag: None,
            variant: KernelVariant { broken_pic_probe: true, ..KernelVariant::default() },
            loader,
            expect: Expect::Fail { check: PIC_PROBE_CHECK.into() },
            timeout,
            firmware: None,
        });
    }
    // `accept=eager` (TDX_UNIKERNEL_ACCEPT=eager), on a 5 GiB td machine
    // (`execute::ACCEPT_EAGER_MEMORY`): the 3 GiB the model leaves unaccepted are all accepted
    // at boot, with progress lines; `mm.unaccepted_on_use` then requires that
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

/// The check the inverted PIC probe (`broken-pic-probe`) must fail on the TD machine.
const PIC_PROBE_CHECK: &str = "pic.mask_readback";

/// The handoff checks (kernel/src/selftest/bootinfo.rs) that the `broken-handoff` loader breaks.
pub const HANDOFF_CHECKS: [&str; 5] = [
    "boot.usable_in_ram",
    "boot.usable_avoids_loaded",
    "boot.physical_map_readback",
    "boot.stack_guard",
    "boot.kernel_permissions",
];

/// The checks `harness:broken-emulation` expects among its failed ones, one per breakage of
/// [`broken_emulation_variant`]: the inverted check, the IN merge, the MMIO MOVZX, the allowlist.
pub const BROKEN_EMULATION_CHECKS: [&str; 4] =
    ["serial.scratch", "diff.in.dx.l", "diff.mmio.movzx.r32.b", "allowlist.ve.denied_in"];

/// The kernel of `harness:broken-emulation`: `serial.scratch` inverted, the IN merge that keeps
/// RAX[63:32] on `in eax`, the MMIO MOVZX into a 32-bit register that keeps bits 63:32, and the
/// port allowlist that lets every port through, all in one build.
pub fn broken_emulation_variant() -> KernelVariant {
    KernelVariant {
        fail_check: Some("serial.scratch".into()),
        broken_in_merge: true,
        broken_mmio_movzx: true,
        broken_allowlist: true,
        ..KernelVariant::default()
    }
}
