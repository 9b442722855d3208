//! `cargo xtask`: build the kernel image, boot it under QEMU, and judge its self-test.
//!
//! Errors end the process with one line on stderr and a non-zero status, never a backtrace.

mod build;
mod qemu;
mod report;
mod test;

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

#[derive(Subcommand)]
enum Command {
    /// Build the kernel and its UEFI disk image; print their paths.
    Build,
    /// Build, then boot under QEMU with the serial console on this terminal.
    Run {
        #[command(flatten)]
        firmware: FirmwareArgs,
        /// Ask QEMU for KVM instead of TCG (not a TD; see --tdx).
        #[arg(long)]
        kvm: bool,
        /// Boot with the softtdx model on: every port access goes through #VE.
        #[arg(long)]
        softtdx: bool,
        /// Stop QEMU after this many seconds.
        #[arg(long, default_value_t = 300)]
        timeout: u64,
        /// Extra QEMU argument (repeatable).
        #[arg(long = "qemu-arg", value_name = "ARG", allow_hyphen_values = true)]
        qemu_args: Vec<String>,
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
        #[arg(long, value_name = "CHECK")]
        fail_check: Option<String>,
        /// Ask QEMU for KVM instead of TCG.
        #[arg(long)]
        kvm: bool,
        /// Only these runs (repeatable): native, softtdx, fatal, fatal:<scenario>, harness, ...
        #[arg(long = "run", value_name = "RUN")]
        runs: Vec<String>,
        /// Skip the host unit tests.
        #[arg(long)]
        skip_host_tests: bool,
    },
}

fn find_firmware(args: &FirmwareArgs) -> Result<ovmf::Firmware> {
    let scratch = build::project_root().join("target/xtask-firmware");
    std::fs::create_dir_all(&scratch)
        .with_context(|| format!("cannot create {}", scratch.display()))?;
    let firmware = ovmf::find(&ovmf::FindOptions {
        explicit: args.firmware.clone(),
        env: std::env::var_os("OVMF_PATH").map(PathBuf::from),
        root: PathBuf::from("/"),
        scratch_dir: scratch,
    })?;
    Ok(firmware)
}

fn run_command(cli: Cli) -> Result<bool> {
    match cli.command {
        Command::Build => {
            let artifacts = build::build(&build::KernelVariant::default(), false)?;
            println!("kernel: {}", artifacts.kernel.display());
            println!("image:  {}", artifacts.image.display());
            Ok(true)
        }
        Command::Run { firmware, kvm, softtdx, timeout, qemu_args } => {
            let firmware = find_firmware(&firmware)?;
            let qemu = qemu::qemu_binary()?;
            let artifacts = build::build(&build::KernelVariant::default(), false)?;
            let args = qemu::boot_args(&qemu::BootSpec {
                firmware: &firmware,
                image: &artifacts.image,
                kvm,
                mode: softtdx.then_some("softtdx"),
                extra_args: &qemu_args,
            });
            println!("{}", qemu::command_line(&qemu, &args));
            let finished = qemu::run(&qemu, &args, Duration::from_secs(timeout), true)?;
            let parsed = report::parse(&finished.output);
            let (verdict, why) = test::verdict(finished.status, finished.timed_out, &parsed);
            println!();
            println!("verdict: {verdict:?} ({why})");
            Ok(verdict == test::Verdict::Pass)
        }
        Command::Test { firmware, timeout, json, qemu_args, fail_check, kvm, runs, skip_host_tests } => {
            let firmware = find_firmware(&firmware)?;
            test::run(test::Options {
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
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run_command(cli) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}
