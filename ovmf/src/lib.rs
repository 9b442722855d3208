//! Finding and checking UEFI firmware for booting the unikernel in a TDX guest.
//!
//! The parts:
//!
//! - [`find`](mod@find) locates an OVMF image on the host: an explicit `--firmware` path, then
//!   `OVMF_PATH`, then the paths where Debian/Ubuntu, Fedora and Arch install their packages.
//!   A split `OVMF_CODE` image comes with a private, writable copy of its `OVMF_VARS` template.
//! - [`tdvf`] parses the TDVF metadata that a TDX-capable OVMF build ("TDVF") carries, the way
//!   QEMU reads it before it creates a TD (`hw/i386/tdvf.c`, `hw/i386/pc_sysfw_ovmf.c`), so the
//!   developer tools can say "this firmware cannot boot a TD" before QEMU does.
//! - [`descriptor`] reads QEMU's firmware descriptors (`/usr/share/qemu/firmware/*.json` and
//!   the directories that override it), which [`find`](mod@find) consults before its own list.
//! - [`mrtd`] computes the MRTD a TD built from a TDVF image reports (the host's
//!   TDH.MEM.PAGE.ADD and TDH.MR.EXTEND records, in QEMU's order).
//! - [`varstore`] tells whether a variable store has a Secure Boot Platform Key enrolled, i.e.
//!   whether the firmware will refuse an unsigned loader.
//!
//! Both run on the host only. The parser takes untrusted bytes and must never panic: every
//! offset and length read from the image goes through checked arithmetic and bounds-checked
//! slicing.

#![forbid(unsafe_code)]

pub mod descriptor;
pub mod find;
pub mod mrtd;
pub mod tdvf;
pub mod varstore;

pub use find::{
    describe, find, td_capable, Described, Distro, FindError, FindOptions, Firmware, Purpose,
    SecureBoot, Source, TdCapable,
};

/// Reads a firmware image, refusing anything that is not a regular file of plausible size
/// (a directory, a FIFO, `/dev/zero`), so that a bad path fails at once instead of hanging or
/// filling memory. The error text is one line.
pub fn read_firmware(path: &std::path::Path) -> std::io::Result<Vec<u8>> {
    use std::io::{Error, ErrorKind};
    let metadata = std::fs::metadata(path)?;
    if !metadata.is_file() {
        return Err(Error::new(ErrorKind::InvalidInput, "not a regular file"));
    }
    if metadata.len() > find::MAX_FIRMWARE_SIZE {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!("{} bytes is larger than any UEFI firmware", metadata.len()),
        ));
    }
    std::fs::read(path)
}
