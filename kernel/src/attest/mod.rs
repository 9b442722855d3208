//! Attestation: the kernel's TDREPORT, its own RTMR events, and the replay of what it can see.
//!
//! - [`mr`]: TDG.MR.REPORT and TDG.MR.RTMR.EXTEND.
//! - The kernel's events go into RTMR[3] ([`KERNEL_RTMR`]), one TDG.MR.RTMR.EXTEND each, and
//!   into an in-memory log ([`measure`]) printed as `# ATTEST EVENT` lines, so that anyone with
//!   the serial log can replay them.
//! - REPORTDATA ([`report_data`]) binds the report to a nonce the relying party chose and to
//!   the self-test's results at the time of the report.
//! - [`ccel`]: the firmware's event log in a TD (ACPI CCEL), replayed against RTMR[0..2].
//! - [`quote`]: TDG.VP.VMCALL<GetQuote>, the TDREPORT turned into a quote by the host.
//! - The self-test checks are in `selftest/attest.rs`.
//!
//! The pure logic (TDREPORT layout, RTMR extend and replay, event-log parsing) is the host-tested
//! `tdx-attest` library.

pub mod ccel;
pub mod mr;
pub mod quote;

use crate::println;
use spin::Mutex;
use tdx_attest::rtmr::Extension;
use tdx_attest::Sha384Digest;

/// The RTMR the kernel extends with its own events.
///
/// TDVF maps TPM PCRs onto the RTMRs: PCR 1 and 7 to RTMR[0], PCR 2-6 to RTMR[1], PCR 8-15 to
/// RTMR[2] (EDK2 `OvmfPkg/IntelTdx/TdxMeasurementLib/TdxMeasurementCommon.c`), so RTMR[0..2]
/// carry the firmware's configuration, the boot applications and what a loader measures (our
/// loader's `kernel.elf` event, PCR 9). RTMR[3] is left to the operating system and its
/// applications (Linux exposes it to user space through its TSM measurement interface; TDVF
/// never extends it), and starts at zero: the kernel's events are then the whole of its
/// history, which a verifier replays from this kernel's log alone.
pub const KERNEL_RTMR: usize = 3;

/// Room for the kernel's events.
const MAX_EVENTS: usize = 8;

struct KernelLog {
    events: [Extension; MAX_EVENTS],
    count: usize,
}

static LOG: Mutex<KernelLog> = Mutex::new(KernelLog {
    events: [Extension { index: 0, value: [0; 48] }; MAX_EVENTS],
    count: 0,
});

/// Measures `data` as a kernel event: RTMR[3] is extended with SHA-384(`data`), the event is
/// logged, and a `# ATTEST EVENT` line names it (digest, description, data as text).
pub fn measure(description: &str, data: &[u8]) -> Result<Sha384Digest, mr::MrError> {
    let digest = tdx_attest::sha384(&[data]);
    let mut log = LOG.lock();
    if log.count == MAX_EVENTS {
        // Not an ABI status: the kernel's own log is full, so it refuses to extend an RTMR it
        // could not account for.
        return Err(mr::MrError { leaf: tdx_ve::abi::TdcallLeaf::MrRtmrExtend, status: u64::MAX });
    }
    mr::rtmr_extend(KERNEL_RTMR as u64, &digest)?;
    let slot = log.count;
    log.events[slot] = Extension { index: KERNEL_RTMR, value: digest };
    log.count += 1;
    drop(log);
    println!(
        "# ATTEST EVENT rtmr={KERNEL_RTMR} digest={} {description}: {}",
        Hex(&digest),
        core::str::from_utf8(data).unwrap_or("(binary)")
    );
    Ok(digest)
}

/// The kernel's RTMRs as its own log replays them (RTMR[0..2] stay zero: not the kernel's).
pub fn replay_own_events() -> ([Sha384Digest; 4], usize) {
    let log = LOG.lock();
    (tdx_attest::rtmr::replay(&log.events[..log.count]), log.count)
}

/// The fw_cfg file a host passes the relying party's nonce in.
pub const NONCE_FILE: &[u8] = b"opt/tdx-unikernel/nonce";

/// The relying party's nonce, up to 64 bytes, zero-padded; `None` without one.
///
/// Both images read it: a kernel without a network gets a verifier's challenge only through
/// the host, and a nonce can only help a verifier (it proves freshness; a host that withholds
/// or changes it makes the report fail the verifier's check, nothing else). It is hashed into
/// REPORTDATA and never parsed or acted on.
pub fn read_nonce() -> Option<[u8; 64]> {
    let mut nonce = [0u8; 64];
    crate::fw_cfg::file(NONCE_FILE, &mut nonce)?;
    Some(nonce)
}

/// REPORTDATA: SHA-512 over a fixed label, the 64-byte nonce (zeros without one) and the
/// self-test's summary text at the time of the report (`passed=N failed=N skipped=N`).
pub fn report_data(nonce: &[u8; 64], summary: &str) -> [u8; 64] {
    tdx_attest::sha512(&[b"tdx-unikernel REPORTDATA v1\0", nonce, summary.as_bytes()])
}

/// Prints the TDREPORT as 16 lines `# TDREPORT <offset> <64 bytes hex>`, which the harness
/// extracts to a file.
pub fn print_report(report: &[u8; tdx_attest::report::TDREPORT_SIZE]) {
    for (i, line) in report.chunks(64).enumerate() {
        println!("# TDREPORT {:04x} {}", i * 64, Hex(line));
    }
}

/// Lower-case hex of a byte string, for report lines.
pub struct Hex<'a>(pub &'a [u8]);

impl core::fmt::Display for Hex<'_> {
    /// Digits go out 64 bytes at a time through one `write_str`, not one `write!` per byte:
    /// under softtdx every instruction here is single-stepped, and the TDREPORT and quote
    /// lines are 2 KiB of hex a boot.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut text = [0u8; 128];
        for chunk in self.0.chunks(64) {
            let (pairs, _) = text.as_chunks_mut::<2>();
            for (pair, byte) in pairs.iter_mut().zip(chunk) {
                *pair = [DIGITS[usize::from(byte >> 4)], DIGITS[usize::from(byte & 0xF)]];
            }
            let digits = &text[..2 * chunk.len()];
            // Only ASCII hex digits were written.
            f.write_str(core::str::from_utf8(digits).map_err(|_| core::fmt::Error)?)?;
        }
        Ok(())
    }
}
