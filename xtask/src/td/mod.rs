//! Running in a real TD: the QEMU command line, host preflight, libvirt domain XML.
//!
//! - [`qemu`]: [`qemu::TdLaunch`] and [`qemu::td_qemu_args`], the command line for `run --tdx`,
//!   `test --tdx` and `--dry-run`, checked flag by flag against QEMU 10.1.
//! - [`doctor`]: `cargo xtask doctor`, host facts in, a verdict out, and the same check as one
//!   error for `run --tdx` ([`doctor::preflight`]).
//! - [`libvirt`]: `cargo xtask libvirt-xml`.
//! - [`firmware_report`]: `cargo xtask firmware FILE`.
//!
//! `scripts/run-td.sh` builds the same QEMU command line for hosts without Rust; a golden test
//! keeps the two identical.
//!
//! Nothing here has run on TDX hardware: the machines this project is developed on have none.
//! The command line is right by construction (each flag traced to QEMU's source) and pinned by
//! golden tests.

pub mod doctor;
pub mod libvirt;
pub mod qemu;

use anyhow::{anyhow, Result};
use std::fmt::Write as _;
use std::path::Path;

/// The report of `cargo xtask firmware FILE`: the file's size, its TDVF metadata as a table,
/// and whether QEMU 10.1 would load it into a TD. Fails with one line when the file cannot be
/// read or carries no valid TDVF metadata (not OVMF, an OVMF without TDX, or corrupt).
pub fn firmware_report(path: &Path) -> Result<String> {
    // The cause goes into the message itself, so that the error reads the same whether it is
    // printed with `{}` or `{:#}`.
    let image = ovmf::read_firmware(path)
        .map_err(|error| anyhow!("cannot read firmware {}: {error}", path.display()))?;
    let metadata = ovmf::tdvf::parse(&image).map_err(|error| {
        anyhow!("firmware {} has no usable TDVF metadata: {error}", path.display())
    })?;
    let mut report = format!("{}: {} bytes\n", path.display(), image.len());
    report.push_str(&ovmf::tdvf::render_table(&metadata));
    // Writing to a String cannot fail.
    let _ = match metadata.check_qemu_loadable() {
        Ok(()) => writeln!(report, "QEMU 10.1 (hw/i386/tdvf.c): loadable as TDVF"),
        Err(error) => writeln!(report, "QEMU 10.1 (hw/i386/tdvf.c): NOT loadable: {error}"),
    };
    Ok(report)
}

#[cfg(test)]
mod golden_tests;
