//! Turns a kernel ELF into a bootable UEFI disk image.
//!
//! Two loaders can boot it:
//! - [`Loader::Own`], the default: `boot/loader`, our UEFI application, on a GPT/FAT disk that
//!   [`esp`] writes reproducibly. It does nothing after ExitBootServices that raises #VE or #GP
//!   in a TD (see its crate doc).
//! - [`Loader::Upstream`]: the rust-osdev `bootloader` crate's UEFI stage, kept for comparison.
//!   It writes IA32_EFER after ExitBootServices, which in a TD on TDX module 1.0 raises a #VE
//!   that TDVF cannot complete (docs/running-in-a-td.md). Its types do not appear in this
//!   crate's API.

pub mod esp;
pub mod pe;

use std::path::{Path, PathBuf};

/// Which loader the image boots through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Loader<'a> {
    /// Our loader; the path of its `.efi` file.
    Own(&'a Path),
    /// The `bootloader` crate's UEFI stage.
    Upstream,
}

impl Loader<'_> {
    pub fn name(&self) -> &'static str {
        match self {
            Loader::Own(_) => "own",
            Loader::Upstream => "upstream",
        }
    }
}

/// The version of the upstream stage this crate builds with (Cargo.lock pins it).
const UPSTREAM_VERSION: &str = "bootloader 0.11.17";

/// Why an image could not be made. Each message is one line.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("cannot read kernel ELF {path}: {error}")]
    Read { path: PathBuf, error: std::io::Error },
    #[error("{path} is not a usable kernel: {reason}")]
    BadElf { path: PathBuf, reason: &'static str },
    #[error("cannot read loader {path}: {error}")]
    ReadLoader { path: PathBuf, error: std::io::Error },
    #[error("{path} is not a UEFI application (no MZ header)")]
    BadLoader { path: PathBuf },
    #[error("cannot create disk image {path}: {reason}")]
    Image { path: PathBuf, reason: String },
}

/// The ELF header fields the loader relies on (ELF-64 specification, "ELF Header").
const ELF_MAGIC: &[u8; 4] = b"\x7fELF";
const ELFCLASS64: u8 = 2;
const ELFDATA2LSB: u8 = 1;
const ET_EXEC: u16 = 2;
const ET_DYN: u16 = 3;
const EM_X86_64: u16 = 62;
const ELF64_HEADER_LEN: usize = 64;

/// Checks that `bytes` starts like a 64-bit little-endian x86_64 executable ELF.
///
/// The loader panics or fails with an unclear message on other input, so the harness checks
/// first and reports one clear line.
pub fn check_kernel_elf(bytes: &[u8]) -> Result<(), &'static str> {
    if bytes.len() < ELF64_HEADER_LEN {
        return Err("file is shorter than an ELF-64 header");
    }
    if &bytes[0..4] != ELF_MAGIC {
        return Err("missing ELF magic");
    }
    if bytes[4] != ELFCLASS64 {
        return Err("not a 64-bit ELF");
    }
    if bytes[5] != ELFDATA2LSB {
        return Err("not a little-endian ELF");
    }
    let e_type = u16::from_le_bytes([bytes[16], bytes[17]]);
    if e_type != ET_EXEC && e_type != ET_DYN {
        return Err("ELF is neither an executable nor a position-independent executable");
    }
    let e_machine = u16::from_le_bytes([bytes[18], bytes[19]]);
    if e_machine != EM_X86_64 {
        return Err("ELF is not for x86_64");
    }
    let e_phoff = u64::from_le_bytes(bytes[32..40].try_into().expect("8 bytes"));
    let e_phentsize = u16::from_le_bytes([bytes[54], bytes[55]]) as u64;
    let e_phnum = u16::from_le_bytes([bytes[56], bytes[57]]) as u64;
    if e_phnum == 0 {
        return Err("ELF has no program headers");
    }
    let table_end = e_phentsize.checked_mul(e_phnum).and_then(|len| len.checked_add(e_phoff));
    match table_end {
        Some(end) if end <= bytes.len() as u64 => Ok(()),
        _ => Err("ELF program header table lies outside the file"),
    }
}

/// Kernels larger than this are refused rather than read (a device or FIFO path, a mistake).
const MAX_KERNEL_SIZE: u64 = 512 * 1024 * 1024;

/// Reads a regular file of plausible size; refuses directories, FIFOs and devices.
fn read_regular_file(path: &Path) -> std::io::Result<Vec<u8>> {
    let metadata = std::fs::metadata(path)?;
    if !metadata.is_file() {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a regular file"));
    }
    if metadata.len() > MAX_KERNEL_SIZE {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "larger than 512 MiB"));
    }
    std::fs::read(path)
}

fn read_kernel(kernel: &Path) -> Result<Vec<u8>, BootError> {
    let bytes = read_regular_file(kernel)
        .map_err(|error| BootError::Read { path: kernel.to_owned(), error })?;
    check_kernel_elf(&bytes)
        .map_err(|reason| BootError::BadElf { path: kernel.to_owned(), reason })?;
    Ok(bytes)
}

/// Checks that `kernel` is a readable, plausible kernel ELF, before anything is built for it.
pub fn check_kernel(kernel: &Path) -> Result<(), BootError> {
    read_kernel(kernel).map(drop)
}

fn read_loader(loader: &Path) -> Result<Vec<u8>, BootError> {
    let bytes = read_regular_file(loader)
        .map_err(|error| BootError::ReadLoader { path: loader.to_owned(), error })?;
    if !bytes.starts_with(b"MZ") {
        return Err(BootError::BadLoader { path: loader.to_owned() });
    }
    Ok(bytes)
}

/// 64-bit FNV-1a (Fowler/Noll/Vo), enough to notice changed inputs; not a defence against
/// anyone crafting collisions.
fn fnv1a(hash: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(hash, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3))
}

/// A key that changes whenever the image built from these inputs would: the kernel's and the
/// loader's bytes, which loader, and the version of the code that lays out the disk.
pub fn inputs_key(kernel: &Path, loader: &Loader) -> Result<String, BootError> {
    let mut hash = 0xcbf2_9ce4_8422_2325;
    let mut add = |bytes: &[u8]| {
        hash = fnv1a(hash, &(bytes.len() as u64).to_le_bytes());
        hash = fnv1a(hash, bytes);
    };
    add(&read_kernel(kernel)?);
    match loader {
        Loader::Own(efi) => {
            add(b"own");
            add(&esp::LAYOUT_VERSION.to_le_bytes());
            add(&read_loader(efi)?);
        }
        Loader::Upstream => {
            add(b"upstream");
            add(UPSTREAM_VERSION.as_bytes());
        }
    }
    Ok(format!("{}-{hash:016x}", loader.name()))
}

/// Makes a GPT disk image at `image` that boots `kernel` through `loader` on UEFI firmware.
pub fn build_uefi_image(kernel: &Path, loader: &Loader, image: &Path) -> Result<(), BootError> {
    match loader {
        Loader::Own(efi) => build_own_image(kernel, efi, image),
        Loader::Upstream => build_upstream_image(kernel, image),
    }
}

fn build_own_image(kernel: &Path, efi: &Path, image: &Path) -> Result<(), BootError> {
    let kernel = read_kernel(kernel)?;
    let loader = read_loader(efi)?;
    let bytes = esp::disk_image(&loader, &kernel)
        .map_err(|reason| BootError::Image { path: image.to_owned(), reason })?;
    std::fs::write(image, bytes)
        .map_err(|e| BootError::Image { path: image.to_owned(), reason: e.to_string() })
}

/// The upstream stage's own serial and frame-buffer logging are off, so that it does no port
/// I/O after ExitBootServices (its EFER write remains).
fn build_upstream_image(kernel: &Path, image: &Path) -> Result<(), BootError> {
    read_kernel(kernel)?;

    let mut config = bootloader::BootConfig::default();
    config.serial_logging = false;
    config.frame_buffer_logging = false;

    let mut builder = bootloader::UefiBoot::new(kernel);
    builder.set_boot_config(&config);
    builder
        .create_disk_image(image)
        .map_err(|err| BootError::Image { path: image.to_owned(), reason: format!("{err:#}") })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minimal_header() -> Vec<u8> {
        let mut h = vec![0u8; 64 + 56];
        h[0..4].copy_from_slice(ELF_MAGIC);
        h[4] = ELFCLASS64;
        h[5] = ELFDATA2LSB;
        h[16..18].copy_from_slice(&ET_DYN.to_le_bytes());
        h[18..20].copy_from_slice(&EM_X86_64.to_le_bytes());
        h[32..40].copy_from_slice(&64u64.to_le_bytes());
        h[54..56].copy_from_slice(&56u16.to_le_bytes());
        h[56..58].copy_from_slice(&1u16.to_le_bytes());
        h
    }

    #[test]
    fn accepts_a_minimal_x86_64_header() {
        assert_eq!(check_kernel_elf(&minimal_header()), Ok(()));
    }

    #[test]
    fn rejects_corrupt_headers() {
        assert!(check_kernel_elf(b"").is_err());
        assert!(check_kernel_elf(b"#!/bin/sh\necho not an elf\n").is_err());
        let mut wrong_machine = minimal_header();
        wrong_machine[18] = 3; // EM_386
        assert_eq!(check_kernel_elf(&wrong_machine), Err("ELF is not for x86_64"));
        let mut class32 = minimal_header();
        class32[4] = 1;
        assert_eq!(check_kernel_elf(&class32), Err("not a 64-bit ELF"));
        let mut truncated_table = minimal_header();
        truncated_table.truncate(80);
        assert_eq!(
            check_kernel_elf(&truncated_table),
            Err("ELF program header table lies outside the file")
        );
    }

    #[test]
    fn missing_kernel_is_a_one_line_error() {
        for loader in [Loader::Upstream, Loader::Own(Path::new("/nonexistent/loader.efi"))] {
            let err = build_uefi_image(
                Path::new("/nonexistent/kernel"),
                &loader,
                Path::new("/tmp/x.img"),
            )
            .unwrap_err()
            .to_string();
            assert!(err.starts_with("cannot read kernel ELF /nonexistent/kernel"), "{err}");
            assert!(!err.contains('\n'));
        }
    }
}
