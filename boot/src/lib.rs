//! Turns a kernel ELF into a bootable UEFI disk image.
//!
//! Today the image is made by the rust-osdev `bootloader` crate (UEFI stage only). Its types do
//! not appear in this crate's API on purpose: a later change replaces the loader (it writes
//! IA32_EFER unconditionally, which in a TD raises a #VE that TDVF cannot complete; see the
//! README, "Running in a real TD"), and callers must not notice.

use std::path::{Path, PathBuf};

/// Why an image could not be made. Each message is one line.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("cannot read kernel ELF {path}: {error}")]
    Read { path: PathBuf, error: std::io::Error },
    #[error("{path} is not a usable kernel: {reason}")]
    BadElf { path: PathBuf, reason: &'static str },
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

/// Makes a GPT disk image at `image` that boots `kernel` on UEFI firmware.
///
/// The loader's own serial and frame-buffer logging are off, so that it does no port I/O after
/// ExitBootServices: in a TD such I/O would raise #VE before the kernel has an IDT.
pub fn build_uefi_image(kernel: &Path, image: &Path) -> Result<(), BootError> {
    let bytes = read_regular_file(kernel)
        .map_err(|error| BootError::Read { path: kernel.to_owned(), error })?;
    check_kernel_elf(&bytes)
        .map_err(|reason| BootError::BadElf { path: kernel.to_owned(), reason })?;

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
        let err = build_uefi_image(Path::new("/nonexistent/kernel"), Path::new("/tmp/x.img"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("cannot read kernel ELF /nonexistent/kernel"), "{err}");
        assert!(!err.contains('\n'));
    }
}
