//! Measures `\kernel.elf` before the kernel runs, so that a quote (in a TD) or the TPM's PCRs
//! (outside one) say which kernel was started. TDVF measures only what it starts itself (our
//! loader, into RTMR[1] / PCR 4); the kernel file the loader reads from the host's disk is
//! measured by nobody else (ATTEST-FACTS §1).
//!
//! One event, before anything of the file is used: the SHA-384 (a TD) or the TPM's banks
//! (outside one) of the whole file, `.bootloader-config` included, as an EV_EVENT_TAG that
//! names it (`loader_core::kernel_event`), into PCR 9, as Linux's EFI stub measures the initrd
//! it loads (`efi_measure_tagged_event`, drivers/firmware/efi/libstub/efi-stub-helper.c):
//!
//! - in a TD through EFI_CC_MEASUREMENT_PROTOCOL, at the MR index `MapPcrToMrIndex(9)` gives
//!   (3 = RTMR[2] in TDVF, EDK2 MdePkg/Include/Protocol/CcMeasurement.h); a TD without that
//!   protocol gets no kernel: a kernel that nobody measured must not run in a TD;
//! - outside a TD through EFI_TCG2_PROTOCOL into PCR 9 when the firmware has a TPM; then the
//!   firmware's event log (taken with GetEventLog, as Linux's stub does: under QEMU the TPM2
//!   ACPI table's log area stays empty, ATTEST-FACTS §6) is printed as `# TCGLOG <offset>
//!   <hex>` lines for the harness to replay against the TPM's PCRs;
//! - outside a TD without a TPM, it says on the console that nothing was measured.

use core::fmt;
use loader_core::kernel_event;
use uefi::proto::unsafe_protocol;
use uefi::{boot, Status};

/// EFI_TCG2_EVENT_LOG_FORMAT_TCG_2 and EFI_CC_EVENT_LOG_FORMAT_TCG_2: the crypto-agile log.
const LOG_FORMAT_TCG_2: u32 = 2;
/// The event header's version (EFI_TCG2_EVENT_HEADER / EFI_CC_EVENT_HEADER).
const EVENT_HEADER_VERSION: u16 = 1;
/// Size of the event header: HeaderSize u32, HeaderVersion u16, PCRIndex/MrIndex u32,
/// EventType u32, packed.
const EVENT_HEADER_SIZE: u32 = 14;

type GetEventLog = unsafe extern "efiapi" fn(
    this: *mut core::ffi::c_void,
    format: u32,
    location: *mut u64,
    last_entry: *mut u64,
    truncated: *mut u8,
) -> Status;
type HashLogExtendEvent = unsafe extern "efiapi" fn(
    this: *mut core::ffi::c_void,
    flags: u64,
    data: u64,
    data_len: u64,
    event: *const u8,
) -> Status;

/// EFI_CC_MEASUREMENT_PROTOCOL (EDK2 MdePkg/Include/Protocol/CcMeasurement.h; the GUID is
/// `{0x96751a3d, 0x72f4, 0x41a6, {0xa7, 0x94, 0xed, 0x5d, 0x0e, 0x67, 0xae, 0x6b}}`).
#[repr(C)]
#[unsafe_protocol("96751a3d-72f4-41a6-a794-ed5d0e67ae6b")]
struct CcMeasurement {
    get_capability: usize,
    get_event_log: GetEventLog,
    hash_log_extend_event: HashLogExtendEvent,
    map_pcr_to_mr_index:
        unsafe extern "efiapi" fn(this: *mut CcMeasurement, pcr: u32, mr_index: *mut u32) -> Status,
}

/// The first three members of EFI_TCG2_PROTOCOL (TCG EFI Protocol Specification; EDK2
/// MdePkg/Include/Protocol/Tcg2Protocol.h); the loader calls no other, and only reads through a
/// pointer the firmware gives, so the members after them need not be declared.
#[repr(C)]
#[unsafe_protocol("607f766c-7455-42be-930b-e4d76db2720f")]
struct Tcg2 {
    get_capability: usize,
    get_event_log: GetEventLog,
    hash_log_extend_event: HashLogExtendEvent,
}

/// Why the loader will not start the kernel.
pub enum Refusal {
    /// In a TD, and the firmware offers no EFI_CC_MEASUREMENT_PROTOCOL.
    NoCcProtocol(Status),
    /// A measurement protocol refused the event.
    Failed(&'static str, Status),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::NoCcProtocol(status) => write!(
                f,
                "running in a TD, but the firmware has no EFI_CC_MEASUREMENT_PROTOCOL \
                 ({status:?}): \\kernel.elf cannot be measured into RTMR[2], so it is not started"
            ),
            Refusal::Failed(what, status) => {
                write!(f, "cannot measure \\kernel.elf: {what}: {status:?}")
            }
        }
    }
}

/// The EFI_TCG2_EVENT / EFI_CC_EVENT for `kernel.elf`: Size, the header, the tagged event.
fn event(index: u32) -> [u8; 4 + EVENT_HEADER_SIZE as usize + kernel_event::EVENT_DATA_LEN] {
    let mut event = [0u8; 4 + EVENT_HEADER_SIZE as usize + kernel_event::EVENT_DATA_LEN];
    let size = event.len() as u32;
    event[0..4].copy_from_slice(&size.to_le_bytes());
    event[4..8].copy_from_slice(&EVENT_HEADER_SIZE.to_le_bytes());
    event[8..10].copy_from_slice(&EVENT_HEADER_VERSION.to_le_bytes());
    event[10..14].copy_from_slice(&index.to_le_bytes());
    event[14..18].copy_from_slice(&kernel_event::EVENT_TYPE.to_le_bytes());
    event[18..].copy_from_slice(&kernel_event::event_data());
    event
}

/// Measures `file` (the whole `kernel.elf`) as described in the module's documentation.
pub fn kernel(file: &[u8], in_td: bool) -> Result<(), Refusal> {
    if in_td {
        return measure_in_td(file);
    }
    let Ok(handle) = boot::get_handle_for_protocol::<Tcg2>() else {
        uefi::println!("tdx-loader: no TPM (no EFI_TCG2_PROTOCOL): \\kernel.elf was not measured");
        return Ok(());
    };
    let mut tcg2 = boot::open_protocol_exclusive::<Tcg2>(handle)
        .map_err(|e| Refusal::Failed("open EFI_TCG2_PROTOCOL", e.status()))?;
    let tcg2: *mut Tcg2 = &mut *tcg2;
    let event = event(kernel_event::PCR);
    // SAFETY: the firmware's protocol, open; `file` and `event` are live buffers of ours, read
    // only, for the length given (the firmware's memory is identity-mapped).
    let status = unsafe {
        ((*tcg2).hash_log_extend_event)(
            tcg2.cast(),
            0,
            file.as_ptr() as u64,
            file.len() as u64,
            event.as_ptr(),
        )
    };
    if status.is_error() {
        return Err(Refusal::Failed("EFI_TCG2_PROTOCOL.HashLogExtendEvent", status));
    }
    uefi::println!(
        "tdx-loader: measured \\kernel.elf ({} bytes) into PCR {} through EFI_TCG2_PROTOCOL",
        file.len(),
        kernel_event::PCR
    );
    // SAFETY: as above.
    unsafe { print_event_log((*tcg2).get_event_log, tcg2.cast()) };
    Ok(())
}

fn measure_in_td(file: &[u8]) -> Result<(), Refusal> {
    let handle = boot::get_handle_for_protocol::<CcMeasurement>()
        .map_err(|e| Refusal::NoCcProtocol(e.status()))?;
    let mut cc = boot::open_protocol_exclusive::<CcMeasurement>(handle)
        .map_err(|e| Refusal::Failed("open EFI_CC_MEASUREMENT_PROTOCOL", e.status()))?;
    let cc: *mut CcMeasurement = &mut *cc;
    let mut mr_index = 0u32;
    // SAFETY: the firmware's protocol, open; `mr_index` is ours to write.
    let status = unsafe { ((*cc).map_pcr_to_mr_index)(cc, kernel_event::PCR, &mut mr_index) };
    if status.is_error() {
        return Err(Refusal::Failed("EFI_CC_MEASUREMENT_PROTOCOL.MapPcrToMrIndex(9)", status));
    }
    let event = event(mr_index);
    // SAFETY: as in `kernel`.
    let status = unsafe {
        ((*cc).hash_log_extend_event)(
            cc.cast(),
            0,
            file.as_ptr() as u64,
            file.len() as u64,
            event.as_ptr(),
        )
    };
    if status.is_error() {
        return Err(Refusal::Failed("EFI_CC_MEASUREMENT_PROTOCOL.HashLogExtendEvent", status));
    }
    // MR index 1..=4 is RTMR[0..3] (CcMeasurement.h TDX_MR_INDEX_RTMR0..3).
    uefi::println!(
        "tdx-loader: measured \\kernel.elf ({} bytes) into MR index {mr_index} (RTMR[{}]) through \
         EFI_CC_MEASUREMENT_PROTOCOL; the firmware's CCEL table holds the event",
        file.len(),
        mr_index.wrapping_sub(1)
    );
    Ok(())
}

/// Bytes per `# TCGLOG` line.
const LINE: usize = 64;

/// Prints the crypto-agile event log up to and including its last entry, or one line saying why
/// not. Events logged after this (ExitBootServices' own) are in the final-events table only.
///
/// # Safety
/// `get_event_log` and `this` are an open TCG2 protocol's.
unsafe fn print_event_log(get_event_log: GetEventLog, this: *mut core::ffi::c_void) {
    let (mut location, mut last, mut truncated) = (0u64, 0u64, 0u8);
    // SAFETY: the caller's protocol; the three outputs are ours.
    let status =
        unsafe { get_event_log(this, LOG_FORMAT_TCG_2, &mut location, &mut last, &mut truncated) };
    if status.is_error() || location == 0 || last < location {
        uefi::println!("tdx-loader: no TCG2 event log ({status:?})");
        return;
    }
    // The firmware's log, in boot-services memory that stays until ExitBootServices: the
    // entries up to `last`, then the last entry, whose length `log_len` reads piece by piece.
    let mut read = |at: u64, buf: &mut [u8]| {
        // SAFETY: inside the firmware's log: the header, or the last entry's fields, each read
        // only where the pieces before it announced it.
        buf.copy_from_slice(unsafe { core::slice::from_raw_parts(at as *const u8, buf.len()) });
        true
    };
    let Some(len) =
        kernel_event::log_len(location, last, &mut read).and_then(|l| usize::try_from(l).ok())
    else {
        uefi::println!("tdx-loader: the TCG2 event log's last entry cannot be read");
        return;
    };
    // SAFETY: `len` bytes from `location` are the log, as `log_len` read it.
    let log = unsafe { core::slice::from_raw_parts(location as *const u8, len) };
    uefi::println!("# TCGLOG BEGIN len={len} truncated={truncated}");
    for (i, chunk) in log.chunks(LINE).enumerate() {
        let mut hex = [0u8; 2 * LINE];
        for (j, b) in chunk.iter().enumerate() {
            hex[2 * j] = b"0123456789abcdef"[usize::from(b >> 4)];
            hex[2 * j + 1] = b"0123456789abcdef"[usize::from(b & 15)];
        }
        let hex = core::str::from_utf8(&hex[..2 * chunk.len()]).unwrap_or("");
        uefi::println!("# TCGLOG {:06x} {hex}", i * LINE);
    }
    uefi::println!("# TCGLOG END");
}
