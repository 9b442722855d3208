//! The firmware's event log in a TD: the ACPI "CCEL" table (Confidential Computing Event Log,
//! ACPI 6.5 §5.2.34): header (36), CC type u8 @36 (2 = TDX), subtype u8 @37, reserved u16,
//! LAML u64 @40 (log area length), LASA u64 @48 (log area start). TDVF installs it (td-shim
//! `td-shim-interface/src/acpi.rs` has the same layout). The log is a TCG crypto-agile log
//! whose index field is the CC MR index: 1..=4 = RTMR[0..3].
//!
//! Found from the RSDP the loader passes: RSDP (revision 2+) → XSDT → the table whose signature
//! is "CCEL". Every table is read through the physical-memory map, checked to be mapped first,
//! and every length is bounded.

use tdx_attest::event_log::{EventLog, ALG_SHA384};
use tdx_attest::Sha384Digest;

/// Largest log area read (TDVF reserves 64 KiB; a larger LAML is cut, not trusted).
const MAX_LOG: u64 = 1 << 20;
const MAX_TABLE: u64 = 64 * 1024;

/// Why there is no replay.
pub enum Missing {
    /// The loader passed no RSDP.
    NoRsdp,
    /// No CCEL in the XSDT (outside a TD's firmware, or the firmware installs none).
    NoCcel,
    /// A table or the log area is not mapped, or malformed.
    Unreadable(&'static str),
}

fn physical(address: u64, len: u64) -> Result<&'static [u8], Missing> {
    let offset = crate::memory::physical_memory_offset()
        .ok_or(Missing::Unreadable("no physical-memory map"))?;
    let virt = offset.checked_add(address).ok_or(Missing::Unreadable("address overflows"))?;
    crate::memory::check_access(virt, len, false).map_err(|_| Missing::Unreadable("not mapped"))?;
    // SAFETY: `len` bytes at `virt` are mapped (checked above); firmware tables and the log
    // area are not written while the kernel runs (one CPU, no firmware after ExitBootServices).
    Ok(unsafe { core::slice::from_raw_parts(virt as *const u8, len as usize) })
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4).and_then(|s| s.try_into().ok()).map_or(0, u32::from_le_bytes)
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 8).and_then(|s| s.try_into().ok()).map_or(0, u64::from_le_bytes)
}

/// An ACPI table at `address`, whole (its header's length, bounded).
fn table(address: u64) -> Result<&'static [u8], Missing> {
    let header = physical(address, 36)?;
    let length = u64::from(u32_at(header, 4));
    if !(36..=MAX_TABLE).contains(&length) {
        return Err(Missing::Unreadable("table length"));
    }
    physical(address, length)
}

/// The CCEL log area, found from the RSDP at `rsdp`.
pub fn log_area(rsdp: Option<u64>) -> Result<&'static [u8], Missing> {
    let rsdp = physical(rsdp.ok_or(Missing::NoRsdp)?, 36)?;
    if &rsdp[..8] != b"RSD PTR " || rsdp[15] < 2 {
        return Err(Missing::Unreadable("RSDP without an XSDT"));
    }
    let xsdt = table(u64_at(rsdp, 24))?;
    if &xsdt[..4] != b"XSDT" {
        return Err(Missing::Unreadable("XSDT signature"));
    }
    for entry in xsdt[36..].as_chunks::<8>().0 {
        let address = u64::from_le_bytes(*entry);
        let Ok(t) = table(address) else { continue };
        if &t[..4] != b"CCEL" || t.len() < 56 {
            continue;
        }
        let (laml, lasa) = (u64_at(t, 40).min(MAX_LOG), u64_at(t, 48));
        return physical(lasa, laml);
    }
    Err(Missing::NoCcel)
}

/// Replays the log into the five CC MRs (index 0 = MRTD, never extended by a log entry) and
/// returns RTMR[0..2] and how many entries were extended.
pub fn replay(log: &[u8]) -> Result<([Sha384Digest; 3], usize), tdx_attest::event_log::LogError> {
    let log = EventLog::parse(log)?;
    let mut mrs = [[0u8; 48]; 5];
    let extended = log.replay(ALG_SHA384, &mut mrs, tdx_attest::rtmr::extend);
    Ok(([mrs[1], mrs[2], mrs[3]], extended))
}
