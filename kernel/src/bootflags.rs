//! Boot-time flags from QEMU's fw_cfg device, file `opt/tdx-unikernel/mode`.
//!
//! The harness boots one image in several modes (native, softtdx, fatal-fault scenarios) by
//! passing `-fw_cfg name=opt/tdx-unikernel/mode,string=...`. Without the file (a real TD, or
//! any other launch) the mode is native. fw_cfg interface: QEMU docs/specs/fw_cfg.rst: selector
//! port 0x510 (16-bit write), data port 0x511 (byte reads), signature "QEMU" under selector 0,
//! file directory under selector 0x19 (big-endian count, then 64-byte entries: size, select,
//! reserved, 56-byte name).

use crate::port::{inb, outw};

const FW_CFG_SELECTOR: u16 = 0x510;
const FW_CFG_DATA: u16 = 0x511;
const FW_CFG_SIGNATURE: u16 = 0x0000;
const FW_CFG_FILE_DIR: u16 = 0x0019;
const MODE_FILE: &[u8] = b"opt/tdx-unikernel/mode";
const MAX_MODE_LEN: usize = 64;

/// A fault that the softtdx model injects and that must stop the kernel: each one is a boot of
/// its own, judged by the harness as `"expect": "fatal"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FatalScenario {
    IoInInvalidOperand,
    IoOutInvalidOperand,
    IoInRetry,
    IoOutRetry,
    UnknownExitReason,
    TdcallFailure,
    VeinfoGetFailure,
    /// Not a model fault: the kernel itself runs `rep insb` into an unmapped buffer, and the
    /// #VE handler must refuse it cleanly instead of faulting.
    StringIoUnmapped,
}

impl FatalScenario {
    pub const ALL: [FatalScenario; 8] = [
        Self::IoInInvalidOperand,
        Self::IoOutInvalidOperand,
        Self::IoInRetry,
        Self::IoOutRetry,
        Self::UnknownExitReason,
        Self::TdcallFailure,
        Self::VeinfoGetFailure,
        Self::StringIoUnmapped,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::IoInInvalidOperand => "io-in-invalid-operand",
            Self::IoOutInvalidOperand => "io-out-invalid-operand",
            Self::IoInRetry => "io-in-retry",
            Self::IoOutRetry => "io-out-retry",
            Self::UnknownExitReason => "unknown-exit-reason",
            Self::TdcallFailure => "tdcall-failure",
            Self::VeinfoGetFailure => "veinfo-get-failure",
            Self::StringIoUnmapped => "string-io-unmapped",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Crash {
    /// Read an unmapped address: the unexpected-exception path.
    PageFault,
    /// `panic!`: the panic handler.
    Panic,
    /// An empty IDT and an exception: a triple fault, which QEMU (-no-reboot) turns into exit 0.
    TripleFault,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Native,
    Softtdx(Option<FatalScenario>),
    /// Spin forever after boot: lets the harness prove that it reports a hang as a timeout.
    Hang,
    /// softtdx on, and the benchmarks (`cargo xtask bench`) instead of the self-test.
    Bench,
    /// Crash on purpose, so that the harness can prove the crash paths report and fail.
    Crash(Crash),
}

impl Mode {
    pub fn name(&self) -> &'static str {
        match self {
            Mode::Native => "native",
            Mode::Softtdx(None) => "softtdx",
            Mode::Softtdx(Some(s)) => s.name(),
            Mode::Hang => "hang",
            Mode::Bench => "bench",
            Mode::Crash(Crash::PageFault) => "crash page-fault",
            Mode::Crash(Crash::Panic) => "crash panic",
            Mode::Crash(Crash::TripleFault) => "crash triple-fault",
        }
    }

    fn parse(text: &[u8]) -> Option<Mode> {
        let text = core::str::from_utf8(text).ok()?.trim();
        match text {
            "native" => return Some(Mode::Native),
            "softtdx" => return Some(Mode::Softtdx(None)),
            "hang" => return Some(Mode::Hang),
            "bench" => return Some(Mode::Bench),
            "crash page-fault" => return Some(Mode::Crash(Crash::PageFault)),
            "crash panic" => return Some(Mode::Crash(Crash::Panic)),
            "crash triple-fault" => return Some(Mode::Crash(Crash::TripleFault)),
            _ => {}
        }
        let fault = text.strip_prefix("softtdx fault=")?;
        FatalScenario::ALL.into_iter().find(|s| s.name() == fault).map(|s| Mode::Softtdx(Some(s)))
    }
}

pub struct BootFlags {
    pub mode: Mode,
    /// The raw flag text when it could not be parsed, for the report.
    pub unparsed: bool,
}

fn select(key: u16) {
    // SAFETY: fw_cfg's selector port only chooses which item the data port returns.
    unsafe { outw(FW_CFG_SELECTOR, key) };
}

fn read_bytes(buffer: &mut [u8]) {
    for byte in buffer.iter_mut() {
        // SAFETY: reading the fw_cfg data port only advances the item's read offset.
        *byte = unsafe { inb(FW_CFG_DATA) };
    }
}

/// Reads fw_cfg file `name` into `buffer`; returns its full size (which may exceed the buffer,
/// whose first bytes are then filled), or `None` without fw_cfg or without that file.
pub fn fw_cfg_file(name: &[u8], buffer: &mut [u8]) -> Option<usize> {
    select(FW_CFG_SIGNATURE);
    let mut signature = [0u8; 4];
    read_bytes(&mut signature);
    if &signature != b"QEMU" {
        return None;
    }
    select(FW_CFG_FILE_DIR);
    let mut count = [0u8; 4];
    read_bytes(&mut count);
    let count = u32::from_be_bytes(count).min(4096);
    for _ in 0..count {
        let mut entry = [0u8; 64];
        read_bytes(&mut entry);
        let size = u32::from_be_bytes([entry[0], entry[1], entry[2], entry[3]]) as usize;
        let key = u16::from_be_bytes([entry[4], entry[5]]);
        let entry_name = &entry[8..];
        let name_len = entry_name.iter().position(|&b| b == 0).unwrap_or(entry_name.len());
        if &entry_name[..name_len] != name {
            continue;
        }
        let len = size.min(buffer.len());
        select(key);
        read_bytes(&mut buffer[..len]);
        return Some(size);
    }
    None
}

/// Reads the boot flags. Runs before softtdx is enabled, so the accesses execute natively
/// (in a real TD they go through #VE like any other port access).
pub fn read() -> BootFlags {
    let mut text = [0u8; MAX_MODE_LEN];
    match fw_cfg_file(MODE_FILE, &mut text) {
        None => BootFlags { mode: Mode::Native, unparsed: false },
        Some(size) => match Mode::parse(&text[..size.min(MAX_MODE_LEN)]) {
            Some(mode) => BootFlags { mode, unparsed: false },
            None => BootFlags { mode: Mode::Native, unparsed: true },
        },
    }
}
