//! `cargo xtask`: build the kernel image, boot it under QEMU, and judge its self-test.
//!
//! Errors end the process with one line on stderr and a non-zero status, never a backtrace.

mod ansi;
mod attest;
mod audit;
mod bench;
mod build;
#[cfg(test)]
mod doc_links;
#[cfg(test)]
mod file_sizes;
mod firmware;
mod fuzz;
#[cfg(test)]
mod imports;
mod loader_repro;
mod machine;
mod manifest;
mod measure;
mod qemu;
mod report;
mod secure_boot;
mod td;
mod test;
mod tpm;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Build, boot and test the TDX guest unikernel")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
struct FirmwareArgs {
    /// UEFI firmware to boot (default: $OVMF_PATH, then the distro's OVMF).
    #[arg(long, value_name = "PATH")]
    firmware: Option<PathBuf>,
}

/// How to launch a TD (`--tdx`); see docs/running-in-a-td.md.
#[derive(Args, Clone)]
struct TdArgs {
    /// Launch a real TD (QEMU >= 10.1 on a TDX-enabled KVM host) instead of a TCG guest.
    #[arg(long)]
    tdx: bool,
    /// With --tdx: print the QEMU command line and exit without starting anything.
    #[arg(long, requires = "tdx")]
    dry_run: bool,
    /// With --tdx: number of vCPUs.
    #[arg(long, default_value_t = td::qemu::DEFAULT_VCPUS, requires = "tdx")]
    vcpus: u32,
    /// With --tdx: guest memory in MiB (TDVF must accept all of it).
    #[arg(long, value_name = "MiB", default_value_t = td::qemu::DEFAULT_MEMORY_MIB, requires = "tdx")]
    memory: u64,
    /// With --tdx: the SEPT_VE_DISABLE attribute (bit 28); `--sept-ve-disable=false` clears it,
    /// and then the kernel refuses to run (FATAL, ReportFatalError) unless the TD is a debug TD.
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set, requires = "tdx")]
    sept_ve_disable: bool,
    /// With --tdx: ask for the DEBUG attribute (bit 0); upstream QEMU 10.1 and KVM refuse it.
    #[arg(long, requires = "tdx")]
    debug: bool,
    /// With --tdx: the host's Quote Generation Service for GetQuote, `vsock:CID:PORT` (Intel's
    /// QGS: vsock:2:4050) or `unix:PATH`; without it QEMU answers QGS_UNAVAILABLE.
    #[arg(long, value_name = "ADDRESS", requires = "tdx")]
    quote_service: Option<td::qemu::QuoteService>,
}

#[derive(Args, Clone, Copy)]
struct LoaderArgs {
    /// The UEFI loader in the image: `own` (boot/loader, TDX-safe) or `upstream` (the
    /// bootloader crate's UEFI stage).
    #[arg(long, value_enum, default_value_t = build::LoaderKind::Own)]
    loader: build::LoaderKind,
}

#[derive(Subcommand)]
enum Command {
    /// Build the kernel and its UEFI disk image; print their paths.
    Build {
        #[command(flatten)]
        loader: LoaderArgs,
    },
    /// Predict a TD's measurements: MRTD from the firmware's TDVF metadata, and the digests of
    /// our loader's and our kernel's events (table, then JSON).
    Measure {
        /// The TDVF firmware the TD boots (default: $OVMF_PATH).
        #[arg(long, value_name = "FILE")]
        firmware: Option<PathBuf>,
        /// The disk image (default: build the image a TD boots).
        #[arg(long, value_name = "FILE")]
        image: Option<PathBuf>,
        /// Write the JSON here instead of printing it after the table.
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
    },
    /// Wrap an existing kernel ELF into a bootable UEFI disk image.
    Image {
        /// The kernel ELF (x86_64, built against bootloader_api 0.11.17).
        kernel: PathBuf,
        /// Where to write the image (default: next to the ELF, with `.img` appended).
        #[arg(long, value_name = "PATH")]
        out: Option<PathBuf>,
        #[command(flatten)]
        loader: LoaderArgs,
    },
    /// Build, then boot under QEMU with the serial console on this terminal.
    Run {
        #[command(flatten)]
        firmware: FirmwareArgs,
        /// Ask QEMU for KVM instead of TCG (not a TD; see --tdx).
        #[arg(long, conflicts_with = "tdx")]
        kvm: bool,
        /// Boot with the softtdx model on: every port access goes through #VE.
        #[arg(long, conflicts_with = "tdx")]
        softtdx: bool,
        /// The QEMU machine: `legacy` (q35 with its defaults) or `td` (q35 as a TD gets it: no
        /// PIC, no SMM, -nodefaults).
        #[arg(long, value_enum, default_value = "legacy", conflicts_with = "tdx")]
        machine: machine::Machine,
        /// Stop QEMU after this many seconds.
        #[arg(long, default_value_t = 300)]
        timeout: u64,
        /// Extra QEMU argument (repeatable).
        #[arg(long = "qemu-arg", value_name = "ARG", allow_hyphen_values = true)]
        qemu_args: Vec<String>,
        #[command(flatten)]
        td: TdArgs,
        #[command(flatten)]
        loader: LoaderArgs,
    },
    /// Run the host unit tests, then boot the image in every mode and judge the results.
    Test {
        #[command(flatten)]
        firmware: FirmwareArgs,
        /// Per-boot timeout in seconds.
        #[arg(long, default_value_t = 120)]
        timeout: u64,
        /// Write the JSON report here.
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
        /// Extra QEMU argument (repeatable).
        #[arg(long = "qemu-arg", value_name = "ARG", allow_hyphen_values = true)]
        qemu_args: Vec<String>,
        /// Build the kernel with this self-test check inverted (proves failures are noticed).
        #[arg(long, value_name = "CHECK", conflicts_with = "tdx")]
        fail_check: Option<String>,
        /// Ask QEMU for KVM instead of TCG.
        #[arg(long, conflicts_with = "tdx")]
        kvm: bool,
        /// Only these runs (repeatable): native, softtdx, fatal, fatal:<scenario>, harness, ...
        #[arg(long = "run", value_name = "RUN", conflicts_with = "tdx")]
        runs: Vec<String>,
        /// Skip the host unit tests.
        #[arg(long)]
        skip_host_tests: bool,
        #[command(flatten)]
        td: TdArgs,
        /// Boot every run through this loader only (default: the native and softtdx runs under
        /// both loaders, every other run under `own`).
        #[arg(long, value_enum)]
        loader: Option<build::LoaderKind>,
    },
    /// Measure the #VE path in instructions per operation (QEMU -icount, deterministic).
    Bench {
        #[command(flatten)]
        firmware: FirmwareArgs,
        /// Stop QEMU after this many seconds.
        #[arg(long, default_value_t = 600)]
        timeout: u64,
        /// Write the figures as JSON here.
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
    },
    /// Audit, instruction by instruction under QEMU TCG, what a TD would do with the boot path
    /// (loader entry to the kernel's LIDT) or, with --softtdx, with the softtdx run.
    TdAudit {
        #[command(flatten)]
        firmware: FirmwareArgs,
        #[command(flatten)]
        loader: LoaderArgs,
        /// Boot with softtdx on and also audit the softtdx run: no #VE-class instruction runs
        /// natively outside the model, and the model's host side makes as many port accesses
        /// as the kernel counted.
        #[arg(long)]
        softtdx: bool,
        /// Stop QEMU after this many seconds.
        #[arg(long, default_value_t = 120)]
        timeout: u64,
    },
    /// Build the loader from a clean copy of the tree in another directory and check that its
    /// `.efi` is byte-identical to the one built in the tree (CI runs it).
    LoaderRepro,
    /// Check whether this host can launch a TD: one line per requirement and a verdict.
    Doctor {
        #[command(flatten)]
        firmware: FirmwareArgs,
        /// The TD memory to check for, in MiB.
        #[arg(long, value_name = "MiB", default_value_t = td::qemu::DEFAULT_MEMORY_MIB)]
        memory: u64,
    },
    /// Describe a firmware file: its QEMU firmware descriptor, Secure Boot, TDVF metadata.
    Firmware {
        /// The firmware image (e.g. /usr/share/ovmf/OVMF.fd).
        file: PathBuf,
    },
    /// Fuzz the parsers of untrusted input and the differential decoder targets (libFuzzer
    /// through cargo-fuzz; fuzz/): one target or all, each for --seconds; crashes are saved to
    /// fuzz/regressions/, which the host tests replay.
    Fuzz {
        /// Only this target (default: all; see fuzz/src/lib.rs).
        target: Option<String>,
        /// Seconds of fuzzing per target.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Only regenerate the seeds made from this machine's files (target/fuzz/seeds).
        #[arg(long)]
        seeds: bool,
    },
    /// Write a libvirt domain XML that runs the image as a TD.
    LibvirtXml {
        #[command(flatten)]
        firmware: FirmwareArgs,
        /// The disk image (default: build it).
        #[arg(long, value_name = "PATH")]
        image: Option<PathBuf>,
        /// The domain name.
        #[arg(long, default_value = "tdx-unikernel")]
        name: String,
        #[arg(long, default_value_t = td::qemu::DEFAULT_VCPUS)]
        vcpus: u32,
        #[arg(long, value_name = "MiB", default_value_t = td::qemu::DEFAULT_MEMORY_MIB)]
        memory: u64,
        #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
        sept_ve_disable: bool,
        #[arg(long)]
        debug: bool,
        /// Give the TD the host's Quote Generation Service (`<quoteGenerationService/>`).
        #[arg(long)]
        quote_service: bool,
        /// Write to this file instead of stdout.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
}

/// The firmware for a TD: a combined TDVF image (a TD has no pflash), with valid metadata.
fn find_td_firmware(args: &FirmwareArgs) -> Result<ovmf::Firmware> {
    let firmware = firmware::find(args.firmware.clone(), ovmf::Purpose::Td)?;
    if firmware.vars.is_some() {
        anyhow::bail!(
            "{} is a split CODE image; a TD needs a combined TDVF image loaded with -bios (e.g. /usr/share/ovmf/OVMF.fd)",
            firmware.code.display()
        );
    }
    let bytes = ovmf::read_firmware(&firmware.code)
        .with_context(|| format!("cannot read firmware {}", firmware.code.display()))?;
    let metadata = ovmf::tdvf::parse(&bytes).map_err(|e| {
        anyhow::anyhow!("firmware {} has no valid TDVF metadata: {e}", firmware.code.display())
    })?;
    metadata.check_qemu_loadable().map_err(|e| {
        anyhow::anyhow!("firmware {} cannot be loaded as TDVF: {e}", firmware.code.display())
    })?;
    Ok(firmware)
}

fn td_launch(
    td: &TdArgs,
    firmware: PathBuf,
    image: PathBuf,
    extra_args: Vec<String>,
) -> Result<td::qemu::TdLaunch> {
    let qemu = match qemu::qemu_binary() {
        Ok(path) => path,
        // A dry run only prints; it may name a QEMU that this host does not have.
        Err(_) if td.dry_run => PathBuf::from("qemu-system-x86_64"),
        Err(e) => return Err(e),
    };
    td::qemu::validate_vcpus(td.vcpus)?;
    td::qemu::validate_memory(td.memory)?;
    let mut launch = td::qemu::TdLaunch::new(qemu, firmware, image);
    launch.vcpus = td.vcpus;
    launch.memory_mib = td.memory;
    launch.sept_ve_disable = td.sept_ve_disable;
    launch.debug = td.debug;
    launch.quote_service = td.quote_service.clone();
    launch.extra_args = extra_args;
    Ok(launch)
}

/// Fails fast, without starting QEMU, when this host cannot launch a TD.
fn td_preflight(launch: &td::qemu::TdLaunch) -> Result<()> {
    let facts = td::doctor::probe_host(&launch.qemu, Some(&launch.firmware));
    td::doctor::preflight(&facts, launch.memory_mib)?;
    for warning in td::qemu::launch_warnings(launch) {
        eprintln!("warning: {warning}");
    }
    Ok(())
}

/// The firmware for a TCG (or `--kvm`) guest.
fn find_firmware(args: &FirmwareArgs) -> Result<ovmf::Firmware> {
    firmware::find(args.firmware.clone(), ovmf::Purpose::Tcg)
}

fn run_command(cli: Cli) -> Result<bool> {
    match cli.command {
        Command::Build { loader } => {
            let artifacts = build::build(&build::KernelVariant::td_image(), loader.loader, false)?;
            println!("kernel: {}", artifacts.kernel.display());
            println!("image:  {}", artifacts.image.display());
            Ok(true)
        }
        Command::Measure { firmware, image, json } => {
            measure::run(firmware, image, json)?;
            Ok(true)
        }
        Command::Image { kernel, out, loader } => {
            let out = out.unwrap_or_else(|| {
                let mut name = kernel.clone().into_os_string();
                name.push(".img");
                PathBuf::from(name)
            });
            boot::check_kernel(&kernel)?;
            let efi = loader.loader.build_own(true)?;
            let loader = match &efi {
                Some(efi) => boot::Loader::Own(efi),
                None => boot::Loader::Upstream,
            };
            boot::build_uefi_image(&kernel, &loader, &out)?;
            println!("image: {}", out.display());
            Ok(true)
        }
        Command::Run { firmware, td, qemu_args, timeout, loader, .. } if td.tdx => {
            let firmware = find_td_firmware(&firmware)?;
            let image = build::KernelVariant::td_image()
                .target_dir()?
                .join(build::image_name(loader.loader));
            let mut launch = td_launch(&td, firmware.code.clone(), image, qemu_args)?;
            if td.dry_run {
                println!("{}", td::qemu::td_command_line(&launch)?);
                return Ok(true);
            }
            // The host check comes first: on a host that cannot run a TD, fail before building.
            td_preflight(&launch)?;
            firmware::print_announcement(&firmware);
            launch.image =
                build::build(&build::KernelVariant::td_image(), loader.loader, false)?.image;
            let args = td::qemu::td_qemu_args(&launch)?;
            boot_on_terminal(&launch.qemu, &args, timeout, ovmf::Purpose::Td)
        }
        Command::Run { firmware, kvm, softtdx, machine, timeout, qemu_args, loader, .. } => {
            let firmware = find_firmware(&firmware)?;
            let qemu = qemu::qemu_binary()?;
            // softtdx lives in the test image only; without it, run the kernel a TD boots.
            let variant = match softtdx {
                true => build::KernelVariant::default(),
                false => build::KernelVariant::td_image(),
            };
            let artifacts = build::build(&variant, loader.loader, false)?;
            let args = qemu::boot_args(&qemu::BootSpec {
                firmware: &firmware,
                image: &artifacts.image,
                kvm,
                machine,
                mode: softtdx.then_some("softtdx"),
                extra_args: &qemu_args,
                la57: loader.loader.needs_la57(),
                virtio_console: None,
                memory: None,
            });
            firmware::print_announcement(&firmware);
            boot_on_terminal(&qemu, &args, timeout, ovmf::Purpose::Tcg)
        }
        Command::Test {
            firmware, timeout, json, qemu_args, td, skip_host_tests, loader, ..
        } if td.tdx => {
            let loader = loader.unwrap_or_default();
            let firmware = find_td_firmware(&firmware)?;
            let image =
                build::KernelVariant::td_image().target_dir()?.join(build::image_name(loader));
            let launch = td_launch(&td, firmware.code.clone(), image, qemu_args)?;
            if td.dry_run {
                println!("{}", td::qemu::td_command_line(&launch)?);
                return Ok(true);
            }
            td_preflight(&launch)?;
            firmware::print_announcement(&firmware);
            test::run_td(launch, loader, Duration::from_secs(timeout), json, skip_host_tests)
        }
        Command::Test {
            firmware,
            timeout,
            json,
            qemu_args,
            fail_check,
            kvm,
            runs,
            skip_host_tests,
            loader,
            ..
        } => {
            let firmware = find_firmware(&firmware)?;
            test::run(test::Options {
                loader,
                timeout: Duration::from_secs(timeout),
                json,
                qemu_args,
                fail_check,
                kvm,
                firmware,
                runs,
                skip_host_tests,
            })
        }
        Command::LoaderRepro => loader_repro::run(),
        Command::Bench { firmware, timeout, json } => {
            let firmware = find_firmware(&firmware)?;
            firmware::print_announcement(&firmware);
            bench::run(&firmware, Duration::from_secs(timeout), json)
        }
        Command::TdAudit { firmware, loader, softtdx, timeout } => {
            let firmware = find_firmware(&firmware)?;
            let timeout = Duration::from_secs(timeout);
            let request = audit::Request { loader: loader.loader, softtdx, bypass: false };
            let result = audit::audit(request, &firmware, timeout)?;
            println!("{}", result.report);
            eprintln!(
                "(audit wall time {:.1} s, plugin log {} bytes: {})",
                result.wall.as_secs_f64(),
                result.log_bytes,
                result.log_path.display()
            );
            Ok(result.passed)
        }
        Command::Doctor { firmware, memory } => {
            let qemu = qemu::qemu_binary().unwrap_or_else(|_| PathBuf::from("qemu-system-x86_64"));
            let facts = td::doctor::probe_host(&qemu, firmware.firmware.as_deref());
            print!("{}", td::doctor::assess(&facts, memory));
            // The doctor reports; whether a TD can run here is its answer, not an error.
            Ok(true)
        }
        Command::Firmware { file } => {
            // The descriptor and Secure Boot status first: they are known even for a file
            // without TDVF metadata, which the TDVF report then refuses with one error line.
            let loaded = ovmf::descriptor::load(&firmware::descriptor_dirs());
            if file.is_file() {
                print!("{}", firmware::describe_file(&file, &loaded));
            }
            print!("{}", td::firmware_report(&file)?);
            Ok(true)
        }
        Command::Fuzz { target, seconds, seeds } => fuzz::run(target.as_deref(), seconds, seeds),
        Command::LibvirtXml {
            firmware,
            image,
            name,
            vcpus,
            memory,
            sept_ve_disable,
            debug,
            quote_service,
            out,
        } => {
            let firmware = find_td_firmware(&firmware)?;
            firmware::print_announcement(&firmware);
            let firmware = firmware.code;
            let image = match image {
                Some(image) => image,
                None => {
                    build::build(&build::KernelVariant::td_image(), build::LoaderKind::Own, true)?
                        .image
                }
            };
            let xml = td::libvirt::domain_xml(
                &name,
                &image,
                &firmware,
                vcpus,
                memory,
                sept_ve_disable,
                debug,
            )?;
            let xml = if quote_service { td::libvirt::with_quote_service(&xml) } else { xml };
            match out {
                Some(path) => {
                    std::fs::write(&path, xml)
                        .with_context(|| format!("cannot write {}", path.display()))?;
                    println!("libvirt domain written to {}", path.display());
                }
                None => print!("{xml}"),
            }
            Ok(true)
        }
    }
}

/// `cargo xtask run`: echoes the command, boots with the serial console on this terminal, and
/// ends with the verdict (and QEMU's own complaint when there is one). When the firmware
/// refused the loader, the verdict names the firmware this host offers instead for `purpose`.
fn boot_on_terminal(
    qemu: &std::path::Path,
    args: &[String],
    timeout: u64,
    purpose: ovmf::Purpose,
) -> Result<bool> {
    println!("{}", qemu::command_line(qemu, args));
    let limits = qemu::Limits::timeout(Duration::from_secs(timeout));
    let finished = qemu::run(qemu, args, &limits, true)?;
    let parsed = report::parse(&finished.output);
    let (verdict, mut why) = test::verdict(finished.status, finished.timed_out, &parsed);
    if let (test::Verdict::Refused, Some(line)) = (verdict, &parsed.firmware_refusal) {
        why = secure_boot::refusal_reason_with(line, firmware::alternative(purpose).as_deref());
    }
    println!();
    if verdict != test::Verdict::Pass {
        if let Some(errors) = qemu::stderr_part(&finished.output) {
            eprintln!("QEMU said:\n{errors}");
        }
    }
    println!("verdict: {verdict:?} after {:.1} s ({why})", finished.wall.as_secs_f64());
    Ok(verdict == test::Verdict::Pass)
}

fn main() -> ExitCode {
    // Die quietly on a closed pipe (`cargo xtask run | head`) instead of panicking.
    // SAFETY: restoring the default disposition of SIGPIPE before any thread starts.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) if !error.use_stderr() => error.exit(),
        Err(error) => {
            // One line, as for every other error; `--help` has the rest.
            let text = error.to_string();
            let first = text.lines().next().unwrap_or("invalid arguments");
            eprintln!("{} (see `cargo xtask --help`)", first.trim_end());
            return ExitCode::from(2);
        }
    };
    match run_command(cli) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}
