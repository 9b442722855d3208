//! Port I/O in a TD: TDG.VP.VMCALL<Instruction.IO> behind the port allowlist.
//!
//! Every port access a TD makes reaches the host through here, whether a driver executed IN/OUT
//! (the #VE handler) or made the hypercall itself (the direct console backend, the emergency
//! writer, the exit path). Ports outside [`tdx_ve::allowlist`] never reach the host: a denied
//! read returns all ones (what an absent device reads as) and a denied write is dropped. Each
//! denial is counted (`io.denied`).
//!
//! This module judges and counts; it prints nothing and stops nothing. A caller that wants a
//! denial said (the #VE handler logs the first one per port) passes `on_denied`
//! ([`read_with`]); a failed hypercall is returned to the caller, which decides what it means.

use super::vmcall::{self, VmcallError};
use crate::counters;
use tdx_ve::io::PortWidth;

/// The test images also drive the devices of the softtdx differential checks.
const INCLUDE_TEST_ONLY: bool = cfg!(feature = "test-modes") && !cfg!(feature = "broken-allowlist");

/// Reads `port` through Instruction.IO, or all ones if the access is not allowed (every port it
/// touches is judged: [`tdx_ve::allowlist::allowed`]).
#[inline]
pub fn read(port: u16, width: PortWidth) -> Result<u64, VmcallError> {
    read_with(port, width, || {})
}

/// Writes the low `width` bytes of `value` to `port` through Instruction.IO, or drops the write
/// if the access is not allowed.
#[inline]
pub fn write(port: u16, width: PortWidth, value: u64) -> Result<(), VmcallError> {
    write_with(port, width, value, || {})
}

/// [`read`], running `on_denied` after a denial is counted.
#[inline]
pub fn read_with(
    port: u16,
    width: PortWidth,
    on_denied: impl FnOnce(),
) -> Result<u64, VmcallError> {
    // Test-only (feature `broken-allowlist`): every port goes through, which the allowlist
    // checks must notice.
    if cfg!(feature = "broken-allowlist") {
        return vmcall::io_read(port, width);
    }
    tdx_ve::allowlist::read(
        port,
        width,
        INCLUDE_TEST_ONLY,
        || deny(on_denied),
        || vmcall::io_read(port, width),
    )
}

/// [`write`], running `on_denied` after a denial is counted.
#[inline]
pub fn write_with(
    port: u16,
    width: PortWidth,
    value: u64,
    on_denied: impl FnOnce(),
) -> Result<(), VmcallError> {
    if cfg!(feature = "broken-allowlist") {
        return vmcall::io_write(port, width, value);
    }
    tdx_ve::allowlist::write(
        port,
        width,
        INCLUDE_TEST_ONLY,
        || deny(on_denied),
        || vmcall::io_write(port, width, value),
    )
}

#[cold]
fn deny(on_denied: impl FnOnce()) {
    counters::IO_DENIED.increment();
    on_denied();
}
