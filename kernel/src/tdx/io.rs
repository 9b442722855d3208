//! Port I/O in a TD: TDG.VP.VMCALL<Instruction.IO> behind the port allowlist.
//!
//! Every port access a TD makes reaches the host through here, whether a driver executed IN/OUT
//! (the #VE handler) or made the hypercall itself (the direct console backend, the emergency
//! writer, the exit path). Ports outside [`tdx_ve::allowlist`] never reach the host: a denied
//! read returns all ones (what an absent device reads as) and a denied write is dropped. Each
//! denial is counted (`io.denied`) and the first one per port is logged, through the lock-free
//! emergency writer because this runs inside the #VE handler.

use super::vmcall::{self, VmcallError};
use crate::counters;
use core::sync::atomic::{AtomicU64, Ordering};
use tdx_ve::io::{IoDirection, PortWidth};

/// The test images also drive the devices of the softtdx differential checks.
const INCLUDE_TEST_ONLY: bool = cfg!(feature = "test-modes") && !cfg!(feature = "broken-allowlist");

/// One bit per port: whether its first denial has been logged.
static LOGGED: [AtomicU64; 1024] = [const { AtomicU64::new(0) }; 1024];

#[cold]
fn deny(port: u16, width: PortWidth, direction: IoDirection) {
    counters::IO_DENIED.increment();
    let bit = 1u64 << (port % 64);
    if LOGGED[port as usize / 64].fetch_or(bit, Ordering::Relaxed) & bit == 0 {
        use core::fmt::Write;
        let verb = match direction {
            IoDirection::In => "IN from",
            IoDirection::Out => "OUT to",
        };
        let _ = writeln!(
            crate::console::EmergencyWriter::new(),
            "tdx: denied {}-byte {verb} port {port:#x}: not in the port allowlist (logged once)",
            width.bytes()
        );
    }
}

/// Reads `port` through Instruction.IO, or all ones if the access is not allowed (every port it
/// touches is judged: [`tdx_ve::allowlist::allowed`]).
#[inline]
pub fn read(port: u16, width: PortWidth) -> Result<u64, VmcallError> {
    // Test-only (feature `broken-allowlist`): every port goes through, which the allowlist
    // checks must notice.
    if cfg!(feature = "broken-allowlist") {
        return vmcall::io_read(port, width);
    }
    tdx_ve::allowlist::read(
        port,
        width,
        INCLUDE_TEST_ONLY,
        || deny(port, width, IoDirection::In),
        || vmcall::io_read(port, width),
    )
}

/// Writes the low `width` bytes of `value` to `port` through Instruction.IO, or drops the write
/// if the access is not allowed.
#[inline]
pub fn write(port: u16, width: PortWidth, value: u64) -> Result<(), VmcallError> {
    if cfg!(feature = "broken-allowlist") {
        return vmcall::io_write(port, width, value);
    }
    tdx_ve::allowlist::write(
        port,
        width,
        INCLUDE_TEST_ONLY,
        || deny(port, width, IoDirection::Out),
        || vmcall::io_write(port, width, value),
    )
}

/// A failed Instruction.IO hypercall outside the #VE handler (the direct console backend):
/// as fatal as inside it. Prints through the lock-free writer, reports, stops.
#[cold]
pub fn fatal(direction: IoDirection, port: u16, width: PortWidth, error: VmcallError) -> ! {
    use core::fmt::Write;
    let (verb, preposition) = match direction {
        IoDirection::In => ("IN", "from"),
        IoDirection::Out => ("OUT", "to"),
    };
    let _ = writeln!(
        crate::console::EmergencyWriter::new(),
        "\nFATAL direct I/O: {verb} {preposition} port {port:#x} ({}-byte): {error}",
        width.bytes()
    );
    super::report_fatal_error("direct I/O hypercall failed");
    crate::exit::exit(crate::exit::ExitCode::Failure)
}
