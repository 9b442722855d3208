//! `cargo xtask td-audit`: boot the image under QEMU TCG with the td-audit plugin
//! (xtask/td-audit) and check, instruction by instruction, what a TD would do with the boot path
//! and with the softtdx run. The rules come from `td-rules`; see docs/td-audit.md.
//!
//! - [`log`]: the plugin's log; [`operands`]: decoding and constant operands; [`symbols`]: the
//!   images (entry, size, function names from the kernel ELF and the loader's PDB).
//! - [`boot_path`]: from the loader's entry to the kernel's own LIDT, nothing after
//!   ExitBootServices may raise #VE or #GP, and everything before must be handled by TDVF.
//! - [`softtdx`]: with the model on, no kernel instruction outside the model (and the native half
//!   of the differential checks) executes port I/O, HLT or a #VE-class MSR/CPUID access, and
//!   the model's host side makes as many port accesses as the kernel counted in `tdvmcall.io`.

pub mod boot_path;
pub mod harness;
pub mod log;
pub mod operands;
pub mod plugin_api;
pub mod symbols;

#[cfg(test)]
#[path = "../../td-audit/src/opcode.rs"]
mod plugin_opcode;

use crate::build::{self, LoaderKind};
use anyhow::{bail, Context, Result};
use operands::Decoded;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use symbols::Image;
use td_rules::{classify, Instruction as TdInstruction, Outcome, ALL_VERSIONS};

/// The result of one audit.
#[derive(Debug)]
pub struct Audit {
    pub passed: bool,
    /// The full report; its last line is the verdict.
    pub report: String,
    pub verdict: String,
    pub wall: Duration,
    pub log_bytes: u64,
    pub log_path: PathBuf,
}

/// One recorded instruction that executed, decoded and named.
#[derive(Clone, Debug)]
pub struct Entry {
    pub image: String,
    pub offset: u64,
    pub vaddr: u64,
    pub bytes: Vec<u8>,
    pub disassembly: String,
    pub function: Option<String>,
    pub decoded: Decoded,
    pub kind: String,
    pub executions: log::Executions,
}

impl Entry {
    fn describe(&self) -> String {
        let bytes: Vec<String> = self.bytes.iter().map(|b| format!("{b:02x}")).collect();
        format!(
            "{}+{:#x} ({:#x}) [{}] {} in {}",
            self.image,
            self.offset,
            self.vaddr,
            bytes.join(" "),
            self.disassembly,
            self.function.as_deref().unwrap_or("<no symbol>")
        )
    }
}

/// Decodes every recorded instruction that executed at least once.
pub fn entries(log: &log::PluginLog, images: &[Image]) -> Vec<Entry> {
    let mut entries = Vec::new();
    for translation in &log.translations {
        let Some(executions) = log.executions.get(&translation.id).copied() else { continue };
        let Some((image, base)) = images
            .iter()
            .filter_map(|image| log.images.get(&image.name).map(|&base| (image, base)))
            .find(|(image, base)| translation.vaddr.wrapping_sub(*base) < image.size)
        else {
            continue;
        };
        let offset = translation.vaddr - base;
        let (decoded, disassembly) =
            operands::decode(translation.block_start, &translation.bytes, translation.vaddr)
                .unwrap_or((Decoded::Other, "(undecodable)".into()));
        let length = iced_x86::Decoder::with_ip(
            64,
            &translation.bytes[(translation.vaddr - translation.block_start) as usize..],
            translation.vaddr,
            iced_x86::DecoderOptions::NONE,
        )
        .decode()
        .len();
        let start = (translation.vaddr - translation.block_start) as usize;
        entries.push(Entry {
            image: image.name.clone(),
            offset,
            vaddr: translation.vaddr,
            bytes: translation.bytes[start..(start + length).min(translation.bytes.len())].to_vec(),
            disassembly,
            function: image.function_at(offset).map(|f| f.name.clone()),
            decoded,
            kind: translation.kind.clone(),
            executions,
        });
    }
    entries.sort_by_key(|e| e.executions.first);
    entries
}

/// A function name cut to a length that fits a verdict line.
fn short(name: &str) -> String {
    const MAX: usize = 90;
    match name.char_indices().nth(MAX) {
        Some((at, _)) => format!("{}...", &name[..at]),
        None => name.to_owned(),
    }
}

/// The outcome in every module version, as text: "#VE(32)" when all agree, else per version.
pub fn outcomes_text(instruction: &TdInstruction) -> String {
    let text = |outcome: Outcome| match outcome {
        Outcome::Native => "native".to_string(),
        Outcome::Ve { exit_reason } => format!("#VE({exit_reason})"),
        Outcome::Gp => "#GP".into(),
        Outcome::Ud => "#UD".into(),
        Outcome::DependsOn { on, possible, .. } => {
            let mut parts = Vec::new();
            for (bit, name) in [
                (td_rules::N, "native"),
                (td_rules::V, "#VE"),
                (td_rules::G, "#GP"),
                (td_rules::U, "#UD"),
            ] {
                if possible.contains(bit) {
                    parts.push(name);
                }
            }
            let why = match on {
                td_rules::Condition::UnknownOperand => "unknown operand",
                td_rules::Condition::Value => "depends on the value",
                td_rules::Condition::TdConfiguration => "depends on the TD configuration",
            };
            format!("{} ({why})", parts.join(" or "))
        }
    };
    let all: Vec<String> =
        ALL_VERSIONS.iter().map(|&v| text(classify(instruction, v).outcome)).collect();
    if all.iter().all(|t| *t == all[0]) {
        format!("{} in every module version", all[0])
    } else {
        ALL_VERSIONS
            .iter()
            .zip(&all)
            .map(|(v, t)| format!("{}: {t}", v.name()))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// What an instruction is, in words: "WRMSR IA32_EFER", "CPUID 0x21/0", "port I/O".
pub fn instruction_name(instruction: &TdInstruction) -> String {
    let msr_name = |msr: Option<u32>| match msr {
        Some(msr) => match td_rules::msr_row(msr) {
            Some(row) => format!("{} ({msr:#x})", row.name),
            None => format!("{msr:#x}"),
        },
        None => "unknown MSR".into(),
    };
    match instruction {
        TdInstruction::Rdmsr { msr } => format!("RDMSR {}", msr_name(*msr)),
        TdInstruction::Wrmsr { msr, .. } => format!("WRMSR {}", msr_name(*msr)),
        TdInstruction::Cpuid { leaf, subleaf } => {
            let show = |v: Option<u32>| v.map(|v| format!("{v:#x}")).unwrap_or("unknown".into());
            format!("CPUID leaf {} subleaf {}", show(*leaf), show(*subleaf))
        }
        TdInstruction::MovToCr0(_) => "MOV to CR0".into(),
        TdInstruction::MovToCr4(_) => "MOV to CR4".into(),
        TdInstruction::PortIo => "port I/O".into(),
        other => format!("{other:?}"),
    }
}

/// Exit reasons TDVF's #VE handler emulates before ExitBootServices (EDK2
/// OvmfPkg/Library/CcExitLib/CcExitVeHandler.c, as summarised in ../shared/TDX-FACTS.md and
/// LOADER-FACTS.md): CPUID, HLT, I/O, RDMSR, WRMSR (forwarded to the host) and EPT violations.
const TDVF_HANDLED_EXIT_REASONS: [u16; 6] = [10, 12, 30, 31, 32, 48];

/// Whether TDVF handles this instruction in every module version: it never #GPs or #UDs, and
/// every #VE it may raise is one TDVF emulates. A WRMSR to IA32_EFER (or to an unknown MSR) is
/// not: TDVF forwards it and the host refuses EFER (LOADER-FACTS.md), and TDVF then halts.
pub fn tdvf_handles(instruction: &TdInstruction) -> bool {
    if let TdInstruction::Wrmsr { msr, .. } = instruction {
        if *msr == Some(td_rules::IA32_EFER) || msr.is_none() {
            return false;
        }
    }
    ALL_VERSIONS.iter().all(|&v| {
        let outcome = classify(instruction, v).outcome;
        let possible = outcome.possible();
        let reason = match outcome {
            Outcome::Ve { exit_reason } | Outcome::DependsOn { exit_reason, .. } => exit_reason,
            _ => 0,
        };
        !possible.contains(td_rules::G)
            && !possible.contains(td_rules::U)
            && (!possible.contains(td_rules::V) || TDVF_HANDLED_EXIT_REASONS.contains(&reason))
    })
}

/// The softtdx judgement.
pub mod softtdx {
    use super::*;

    /// Code allowed to execute #VE-class instructions natively with softtdx on, and why. Each
    /// is reported with its count; nothing else may.
    pub const EXEMPT: [(&str, &str); 5] = [
        ("kernel::softtdx::", "the model: it plays the TDX module and the host VMM"),
        ("kernel::selftest::diff::", "the differential checks' native half"),
        ("diff_", "the differential checks' instruction forms (global_asm! in selftest/diff.rs), run natively and through the model"),
        ("kernel::selftest::td::", "the TD checks' native reference readings (`natively`), compared with the #VE result"),
        ("kernel::selftest::allowlist::", "the allowlist checks' native look at the denied port (`natively`)"),
    ];

    /// Why `function` may run #VE-class instructions natively, if it may.
    pub fn exempt(function: &str) -> Option<&'static str> {
        // `<kernel::softtdx::X as Trait>::f` belongs to the module of X.
        let function = function.strip_prefix('<').unwrap_or(function);
        EXEMPT.iter().find(|(prefix, _)| function.starts_with(prefix)).map(|(_, why)| *why)
    }

    /// Whether `function` is the model's host side (its VMM, and the machine's own port
    /// accesses and console), whose port accesses are the host's.
    pub fn host_side(function: &str) -> bool {
        ["kernel::softtdx::vmm::", "kernel::softtdx::host::"]
            .iter()
            .any(|module| function.starts_with(module))
    }

    pub struct Judgement {
        pub lines: Vec<String>,
        pub problems: Vec<String>,
        pub host_port_accesses: u64,
    }

    /// Judges the entries after the model was enabled (`enabled`: the event number of the first
    /// execution of `softtdx::before_resume`).
    pub fn judge(entries: &[Entry], enabled: u64) -> Judgement {
        let mut lines = Vec::new();
        let mut problems = Vec::new();
        let mut host_port_accesses = 0;
        // Reason -> (functions, native executions), reported in the order of EXEMPT.
        let mut exempted: Vec<(&str, Vec<String>, u64)> = Vec::new();
        for entry in entries.iter().filter(|e| e.image == "kernel") {
            let Decoded::Rule(instruction) = entry.decoded else { continue };
            let function = entry.function.as_deref().unwrap_or("<no symbol>");
            if instruction == TdInstruction::PortIo && host_side(function) {
                host_port_accesses += entry.executions.at_snap;
            }
            if entry.executions.last <= enabled
                || td_rules::is_native_in_every_version(&instruction)
            {
                continue;
            }
            if let Some(why) = exempt(function) {
                let index = match exempted.iter().position(|(w, _, _)| *w == why) {
                    Some(index) => index,
                    None => {
                        exempted.push((why, Vec::new(), 0));
                        exempted.len() - 1
                    }
                };
                let (_, functions, executions) = &mut exempted[index];
                if !functions.iter().any(|f| f == function) {
                    functions.push(function.to_owned());
                }
                *executions += entry.executions.count;
                continue;
            }
            let text = format!("{} in {}", instruction_name(&instruction), short(function));
            if !problems.contains(&text) {
                problems.push(text);
            }
            lines.push(format!(
                "UNSAFE {}: {} executed natively x{} with softtdx on: {}",
                entry.describe(),
                instruction_name(&instruction),
                entry.executions.count,
                outcomes_text(&instruction)
            ));
        }
        let mut exempt_lines: Vec<String> = exempted
            .iter()
            .map(|(why, functions, executions)| {
                format!(
                    "exempt ({why}): {executions} native executions in {}",
                    functions.join(", ")
                )
            })
            .collect();
        exempt_lines.append(&mut lines);
        Judgement { lines: exempt_lines, problems, host_port_accesses }
    }
}

/// A cargo command without the outer cargo's CARGO*/RUST* variables (see build.rs).
fn nested_cargo() -> Command {
    build::nested_cargo(&build::project_root())
}

/// Builds the plugin (a cdylib) for plugin API `choice.api`, in a target directory of its own
/// per API (so switching between QEMUs rebuilds nothing); returns the .so.
pub fn build_plugin(choice: plugin_api::Choice) -> Result<PathBuf> {
    let target_dir =
        build::cargo_target_dir()?.join(format!("td-audit/plugin-api-v{}", choice.api));
    let status = nested_cargo()
        .args(["build", "--quiet", "--release", "--package", "td-audit"])
        .args(["--no-default-features", "--features", &choice.feature(), "--target-dir"])
        .arg(&target_dir)
        .status()
        .context("cannot run cargo to build the td-audit plugin")?;
    if !status.success() {
        bail!("td-audit plugin build failed ({status})");
    }
    Ok(target_dir.join("release/libtd_audit.so"))
}

/// Why an audit cannot be made with this QEMU (no plugin API both it and the plugin have): the
/// audit runs report `skip` with it.
#[derive(Debug)]
pub struct Unavailable(pub String);

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "td-audit cannot run with this QEMU: {}", self.0)
    }
}

impl std::error::Error for Unavailable {}

/// The QEMU to run and the plugin API to build for it; [`Unavailable`] when none fits.
fn qemu_and_plugin_api() -> Result<(PathBuf, plugin_api::Choice)> {
    let qemu = crate::qemu::qemu_binary()?;
    let version = crate::qemu::version(&qemu)?;
    let choice = plugin_api::choose(version).map_err(Unavailable)?;
    Ok((qemu, choice))
}

/// The upstream loader's .efi as the `bootloader` crate's build script left it (in the build
/// directory of whichever profile built xtask, below cargo's target directory), checked to be
/// the one inside `image`.
fn upstream_loader_efi(image: &Path) -> Result<PathBuf> {
    let target = build::cargo_target_dir()?;
    let mut candidates = Vec::new();
    for profile in std::fs::read_dir(&target).into_iter().flatten().flatten() {
        let Ok(dirs) = std::fs::read_dir(profile.path().join("build")) else { continue };
        for dir in dirs.flatten() {
            if !dir.file_name().to_string_lossy().starts_with("bootloader") {
                continue;
            }
            // Cargo's layouts: build/bootloader-HASH/out and build/bootloader/HASH/out.
            let mut outs = vec![dir.path().join("out/bin/bootloader-x86_64-uefi.efi")];
            if let Ok(hashes) = std::fs::read_dir(dir.path()) {
                outs.extend(
                    hashes.flatten().map(|h| h.path().join("out/bin/bootloader-x86_64-uefi.efi")),
                );
            }
            candidates.extend(outs.into_iter().filter(|p| p.is_file()));
        }
    }
    let image_bytes =
        std::fs::read(image).with_context(|| format!("cannot read {}", image.display()))?;
    for candidate in candidates {
        let efi = std::fs::read(&candidate)?;
        if efi.len() > 64 && image_bytes.windows(efi.len()).any(|w| w == efi) {
            return Ok(candidate);
        }
    }
    bail!(
        "cannot find the upstream loader's .efi in {}/*/build/bootloader*/ that is inside {}",
        target.display(),
        image.display()
    )
}

/// The PDB of bootloader-x86_64-uefi 0.11.17, built the way the `bootloader` crate's build
/// script builds it (cargo install --locked, x86_64-unknown-uefi, build-std=core), but into a
/// target directory that is kept, so the PDB survives. Reuses an earlier build.
/// Returns (PDB, the .efi linked with it).
fn upstream_loader_pdb() -> Result<(PathBuf, PathBuf)> {
    let dir = build::cargo_target_dir()?.join("td-audit/upstream-loader");
    let release = dir.join("target/x86_64-unknown-uefi/release");
    let pdb = release.join("bootloader_x86_64_uefi.pdb");
    // cargo install copies the linked .efi into the root's bin/ and keeps the PDB in release/.
    let efi = dir.join("bin/bootloader-x86_64-uefi.efi");
    if pdb.is_file() && efi.is_file() {
        return Ok((pdb, efi));
    }
    eprintln!("==> building bootloader-x86_64-uefi 0.11.17 once for its PDB (function names)");
    let status = nested_cargo()
        .args(["install", "bootloader-x86_64-uefi", "--version", "0.11.17", "--locked"])
        .args(["--target", "x86_64-unknown-uefi", "-Zbuild-std=core"])
        .args(["-Zbuild-std-features=compiler-builtins-mem", "--quiet", "--root"])
        .arg(&dir)
        .arg("--target-dir")
        .arg(dir.join("target"))
        .current_dir(build::project_root())
        .status()
        .context("cannot run cargo install")?;
    if !status.success() || !pdb.is_file() || !efi.is_file() {
        bail!("building bootloader-x86_64-uefi 0.11.17 for its PDB failed ({status})");
    }
    Ok((pdb, efi))
}

/// Boots `image` under TCG with the plugin; returns the parsed log and the serial output.
fn boot_with_plugin(
    firmware: &ovmf::Firmware,
    image: &Path,
    request: &Request,
    images: &[&Image],
    marks: &[String],
    log_path: &Path,
    timeout: Duration,
) -> Result<(log::PluginLog, String, u64, String)> {
    let (qemu, api) = qemu_and_plugin_api()?;
    let plugin = build_plugin(api)?;
    let _ = std::fs::remove_file(log_path);
    let mut option = format!("{},out={}", plugin.display(), log_path.display());
    for image in images {
        option.push(',');
        option.push_str(&image.plugin_option());
    }
    for mark in marks {
        option.push(',');
        option.push_str(mark);
    }
    let extra = vec!["-plugin".to_string(), option];
    let args = crate::qemu::boot_args(&crate::qemu::BootSpec {
        // The q35 machine the other TCG runs use (the audit judges instructions, not devices).
        machine: crate::machine::Machine::Legacy,
        firmware,
        image,
        kvm: false,
        mode: request.softtdx.then_some("softtdx"),
        extra_args: &extra,
        la57: request.loader.needs_la57(),
        // The virtio console is present, so that its MMIO path is audited too.
        virtio_console: Some(&log_path.with_extension("virtio-console.log")),
        memory: None,
    });
    let command = crate::qemu::command_line(&qemu, &args);
    let finished = crate::qemu::run(&qemu, &args, &crate::qemu::Limits::timeout(timeout), false)?;
    if finished.timed_out {
        bail!("QEMU did not finish within {} s", timeout.as_secs());
    }
    let qemu_said = crate::qemu::stderr_part(&finished.output).unwrap_or("");
    if let Some(refusal) = plugin_api::refusal(qemu_said) {
        // A QEMU newer than the table refused the API assumed for it: no API fits that we know.
        // For a release in the table the table is wrong: a failure, not a skip.
        let refusal = format!("{refusal} (plugin built for API {})", api.api);
        if api.assumed {
            return Err(Unavailable(refusal).into());
        }
        bail!("{refusal}; plugin_api::RELEASES is wrong for this QEMU");
    }
    let text = std::fs::read_to_string(log_path).map_err(|e| {
        anyhow::anyhow!("no plugin log {} ({e}); QEMU said: {qemu_said}", log_path.display())
    })?;
    let bytes = text.len() as u64;
    let log = log::parse(&text).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok((log, finished.output, bytes, command))
}

fn logs_dir() -> Result<PathBuf> {
    let dir = build::project_root().join("target/xtask-logs");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir)
}

/// The loader's functions named `...::exit_boot_services` (the `uefi` crate's wrapper).
fn exit_boot_services_functions(image: &Image) -> Vec<symbols::Function> {
    image.functions.iter().filter(|f| f.name.ends_with("::exit_boot_services")).cloned().collect()
}

/// What to audit.
#[derive(Clone, Copy, Debug)]
pub struct Request {
    pub loader: LoaderKind,
    /// Boot with softtdx on and also judge the softtdx run.
    pub softtdx: bool,
    /// Build the kernel with the test-only `audit-bypass` feature.
    pub bypass: bool,
}

impl Request {
    fn name(&self) -> String {
        let mut name = format!("td-audit --loader {}", self.loader.name());
        if self.softtdx {
            name.push_str(" --softtdx");
        }
        if self.bypass {
            name.push_str(" (kernel with audit-bypass)");
        }
        name
    }
}

/// The loader in `image`, with function names: ours from its PDB beside the .efi, upstream from
/// the PDB of a rebuild of the same crate.
fn loader_image(loader: LoaderKind, image: &Path) -> Result<(Image, PathBuf)> {
    match loader {
        LoaderKind::Own
        | LoaderKind::OwnBrokenHandoff
        | LoaderKind::OwnOldApiKernel
        | LoaderKind::OwnFlippedKernel
        | LoaderKind::OwnLa57
        | LoaderKind::OwnLa57BrokenTrampoline => {
            let efi = build::build_loader(loader.loader_feature(), true)?;
            let pdb = efi.with_file_name("loader.pdb");
            let image_bytes =
                std::fs::read(image).with_context(|| format!("cannot read {}", image.display()))?;
            let efi_bytes = std::fs::read(&efi)?;
            if !image_bytes.windows(efi_bytes.len()).any(|w| w == efi_bytes) {
                bail!("{} is not inside {}", efi.display(), image.display());
            }
            let pdb = pdb.is_file().then_some(pdb);
            // The PDB matches the linker's output, beside the reproducible copy (build.rs).
            let linked = efi.with_file_name("loader.efi");
            let loaded =
                symbols::loader_image(&efi, pdb.as_deref().map(|p| (p, linked.as_path())))?;
            Ok((loaded, efi))
        }
        LoaderKind::Upstream => {
            let efi = upstream_loader_efi(image)?;
            let (pdb, linked) = upstream_loader_pdb()?;
            Ok((symbols::loader_image(&efi, Some((&pdb, &linked)))?, efi))
        }
    }
}

/// `cargo xtask td-audit`: one boot under TCG with the plugin; the boot path from the loader's
/// entry to the kernel's LIDT is always judged, the softtdx run too with `softtdx`.
pub fn audit(request: Request, firmware: &ovmf::Firmware, timeout: Duration) -> Result<Audit> {
    let start = Instant::now();
    // Before any build: a QEMU no plugin API fits is a skip, whatever the images.
    qemu_and_plugin_api()?;
    let variant = build::KernelVariant { audit_bypass: request.bypass, ..Default::default() };
    let artifacts = build::build(&variant, request.loader, true)?;
    let kernel = symbols::kernel_image(&artifacts.kernel)?;
    let (loader, efi) = loader_image(request.loader, &artifacts.image)?;
    let mut marks: Vec<String> = exit_boot_services_functions(&loader)
        .iter()
        .map(|f| format!("mark=loader:{:x}", f.start))
        .collect();
    if request.softtdx {
        // The model's CPU first runs at the first single-step #DB, right after
        // `softtdx::enable`: from then on the model sees every instruction before it runs.
        let enabled = kernel
            .function_named("kernel::softtdx::before_resume")
            .context("the kernel has no kernel::softtdx::before_resume symbol")?;
        let snapshot = kernel
            .function_named("kernel::counters::snapshot")
            .context("the kernel has no kernel::counters::snapshot symbol")?;
        marks.push(format!("mark=kernel:{enabled:x}"));
        marks.push(format!("snap=kernel:{snapshot:x}"));
    }
    let mut log_name = format!("td-audit-{}", request.loader.name());
    if request.softtdx {
        log_name.push_str("-softtdx");
    }
    if request.bypass {
        log_name.push_str("-bypass");
    }
    let log_path = logs_dir()?.join(format!("{log_name}.plugin.log"));
    let (log, serial, log_bytes, command) = boot_with_plugin(
        firmware,
        &artifacts.image,
        &request,
        &[&loader, &kernel],
        &marks,
        &log_path,
        timeout,
    )?;
    let images = [loader, kernel];
    let entries = entries(&log, &images);

    let mut report = format!(
        "{command}\nloader: {} (functions: {})\nkernel: {} (functions: {})\n",
        efi.display(),
        images[0].symbol_source,
        artifacts.kernel.display(),
        images[1].symbol_source
    );
    let boot = boot_path::judge(&entries)?;
    report.push_str("== boot path\n");
    for line in &boot.lines {
        report.push_str(line);
        report.push('\n');
    }
    report.push_str(&boot.summary);
    report.push('\n');
    let mut problems = boot.problems.clone();
    let mut good = vec![format!(
        "boot path: nothing after ExitBootServices raises #VE or #GP, TDVF handles everything before ({})",
        boot.summary
    )];
    if request.loader.needs_la57() {
        match boot_path::la57_switch_judged(&entries) {
            Ok(line) => {
                report.push_str(&line);
                report.push('\n');
                good.push(line);
            }
            Err(problem) => problems.push(problem),
        }
    }
    if request.softtdx {
        let enabled = entries
            .iter()
            .find(|e| e.image == "kernel" && e.kind == "mark")
            .map(|e| e.executions.first)
            .context("kernel::softtdx::before_resume never executed: the model never ran")?;
        if !entries.iter().any(|e| e.kind == "snap") {
            bail!("kernel::counters::snapshot never executed: the self-test did not finish");
        }
        let judgement = softtdx::judge(&entries, enabled);
        let counted = counted_io(&serial)
            .context("the serial output has no COUNTERS line with tdvmcall.io")?;
        report.push_str("== softtdx run\n");
        for line in &judgement.lines {
            report.push_str(line);
            report.push('\n');
        }
        report.push_str(&format!(
            "port accesses by the model's host side (kernel::softtdx::vmm and ::host, counted by the plugin up to the counter snapshot): {}; kernel's tdvmcall.io: {counted}\n",
            judgement.host_port_accesses
        ));
        problems.extend(judgement.problems.iter().cloned());
        if counted != judgement.host_port_accesses || counted == 0 {
            problems.push(format!(
                "host-side port accesses {} != tdvmcall.io {counted}",
                judgement.host_port_accesses
            ));
        }
        good.push(format!(
            "softtdx: no #VE-class instruction ran natively outside the model, {counted} port accesses through the #VE path as counted"
        ));
    }
    let passed = problems.is_empty();
    let verdict = if passed {
        format!("{}: PASS: {}", request.name(), good.join("; "))
    } else {
        format!("{}: FAIL: {}", request.name(), problems.join("; "))
    };
    report.push_str(&verdict);
    Ok(Audit { passed, report, verdict, wall: start.elapsed(), log_bytes, log_path })
}

/// The kernel's `tdvmcall.io` from the COUNTERS line of the serial output.
pub fn counted_io(serial: &str) -> Option<u64> {
    let line = serial.lines().find(|l| l.starts_with("COUNTERS "))?;
    line.split(' ').find_map(|field| field.strip_prefix("tdvmcall.io=")?.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use td_rules::{Instruction as T, WrittenValue};

    fn entry(
        image: &str,
        function: &str,
        decoded: Decoded,
        kind: &str,
        first: u64,
        last: u64,
    ) -> Entry {
        Entry {
            image: image.into(),
            offset: 0,
            vaddr: 0,
            bytes: vec![],
            disassembly: String::new(),
            function: Some(function.into()),
            decoded,
            kind: kind.into(),
            executions: log::Executions { count: 1, first, last, at_snap: 1 },
        }
    }

    fn efer_write() -> Decoded {
        Decoded::Rule(T::Wrmsr {
            msr: Some(td_rules::IA32_EFER),
            value: WrittenValue::read_modify(1 << 11, 0),
        })
    }

    #[test]
    fn boot_path_fails_on_an_efer_write_after_exit_boot_services() {
        let entries = [
            entry("loader", "efi_main", Decoded::Other, "entry", 0, 0),
            entry("loader", "uefi::boot::exit_boot_services", Decoded::Other, "mark", 1, 1),
            entry("loader", "enable_nxe_bit", efer_write(), "priv", 2, 2),
            entry("kernel", "kernel::arch::init", Decoded::Lidt, "lidt", 3, 3),
            // After the kernel's LIDT: outside the window.
            entry("kernel", "kernel::console::init", Decoded::Rule(T::PortIo), "io", 4, 9),
        ];
        let judgement = boot_path::judge(&entries).unwrap();
        assert_eq!(judgement.problems, ["WRMSR IA32_EFER (0xc0000080) in enable_nxe_bit"]);
        assert!(judgement.lines.iter().any(|l| l.starts_with("UNSAFE after")));
    }

    #[test]
    fn the_la57_audit_requires_the_trampolines_switch_to_have_run() {
        let cr0 = Decoded::Rule(T::MovToCr0(WrittenValue::read_modify(0, 1 << 31)));
        let cr4 = Decoded::Rule(T::MovToCr4(WrittenValue::read_modify(0, 1 << 12)));
        let mut entries = vec![
            entry("loader", "efi_main", Decoded::Other, "entry", 0, 0),
            // The test build's switch into 5-level paging does not count.
            entry("loader", "test_enable_la57", cr0, "priv", 2, 2),
            entry("loader", "test_enable_la57", cr4, "priv", 3, 3),
            entry("loader", "test_enable_la57", cr0, "priv", 4, 4),
        ];
        assert!(boot_path::la57_switch_judged(&entries).is_err());
        entries.push(entry("loader", "enter_kernel", cr0, "priv", 5, 5));
        entries.push(entry("loader", "enter_kernel", cr4, "priv", 6, 6));
        assert!(boot_path::la57_switch_judged(&entries).is_err());
        entries.push(entry("loader", "enter_kernel", cr0, "priv", 7, 7));
        let line = boot_path::la57_switch_judged(&entries).unwrap();
        assert!(line.contains("2 MOV to CR0, 1 MOV to CR4 in enter_kernel"), "{line}");
    }

    #[test]
    fn before_exit_boot_services_only_what_tdvf_emulates_is_allowed() {
        let port_io = entry("loader", "efi_main", Decoded::Rule(T::PortIo), "io", 1, 1);
        let unknown_rdmsr =
            entry("loader", "probe", Decoded::Rule(T::Rdmsr { msr: None }), "priv", 2, 2);
        let cpuid_0 = entry(
            "loader",
            "efi_main",
            Decoded::Rule(T::Cpuid { leaf: Some(0), subleaf: None }),
            "priv",
            7,
            7,
        );
        let entries = [
            entry("loader", "efi_main", Decoded::Other, "entry", 0, 0),
            port_io,
            unknown_rdmsr,
            entry("loader", "efi_main", Decoded::ExitBootServicesCall, "ebs-call", 5, 5),
            cpuid_0,
        ];
        let judgement = boot_path::judge(&entries).unwrap();
        // Port I/O before the exit is TDVF's to emulate; an RDMSR of an unknown MSR may #GP.
        assert_eq!(judgement.problems, ["RDMSR unknown MSR in probe"]);
        // No LIDT seen: the window runs to the end, and CPUID 0 is native anyway.
        assert!(judgement.lines.iter().any(|l| l.contains("never executed LIDT")));
    }

    #[test]
    fn without_an_exit_boot_services_point_everything_counts_as_after() {
        let entries = [
            entry("loader", "efi_main", Decoded::Other, "entry", 0, 0),
            entry("loader", "efi_main", Decoded::Rule(T::PortIo), "io", 1, 1),
        ];
        let judgement = boot_path::judge(&entries).unwrap();
        assert_eq!(judgement.problems.len(), 1);
        assert!(boot_path::judge(&entries[1..]).is_err(), "no loader entry must be an error");
    }

    #[test]
    fn softtdx_exempts_the_model_and_counts_host_port_accesses_at_the_snapshot() {
        let mut host =
            entry("kernel", "kernel::softtdx::vmm::vmcall", Decoded::Rule(T::PortIo), "io", 5, 90);
        host.executions.count = 12;
        host.executions.at_snap = 10;
        let entries = [
            // Before the model ran: ignored.
            entry("kernel", "kernel::bootflags::read", Decoded::Rule(T::PortIo), "io", 1, 2),
            host,
            entry("kernel", "<kernel::softtdx::Model as X>::f", Decoded::Rule(T::Hlt), "hlt", 6, 6),
            entry("kernel", "diff_in_dx_b", Decoded::Rule(T::PortIo), "io", 7, 7),
            entry("kernel", "kernel::selftest::audit_bypass", Decoded::Rule(T::PortIo), "io", 8, 8),
            entry(
                "kernel",
                "kernel::tdx::detect",
                Decoded::Rule(T::Cpuid { leaf: Some(0), subleaf: Some(0) }),
                "priv",
                9,
                9,
            ),
        ];
        let judgement = softtdx::judge(&entries, 3);
        assert_eq!(judgement.host_port_accesses, 10);
        assert_eq!(judgement.problems, ["port I/O in kernel::selftest::audit_bypass"]);
        assert!(softtdx::exempt("kernel::selftest::audit_bypass").is_none());
        assert!(softtdx::exempt(
            "<kernel::softtdx::host::HostConsole as core::fmt::Write>::write_str"
        )
        .is_some());
    }

    #[test]
    fn counters_line_gives_tdvmcall_io() {
        let serial = "x\nCOUNTERS ve.io=3 tdvmcall.io=42 tdvmcall.hlt=0\nSUMMARY passed=1\n";
        assert_eq!(counted_io(serial), Some(42));
        assert_eq!(counted_io("no counters"), None);
    }

    #[test]
    fn tdvf_handles_port_io_and_cpuid_but_not_efer_writes_or_gp() {
        assert!(tdvf_handles(&T::PortIo));
        assert!(tdvf_handles(&T::Cpuid { leaf: Some(0x4000_0000), subleaf: Some(0) }));
        assert!(!tdvf_handles(&T::Wrmsr {
            msr: Some(td_rules::IA32_EFER),
            value: WrittenValue::UNKNOWN
        }));
        assert!(!tdvf_handles(&T::Vmx));
        assert!(!tdvf_handles(&T::MovToCr4(WrittenValue::read_modify(0, 1 << 6))));
    }
}
