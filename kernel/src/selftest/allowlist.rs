//! The port allowlist in a TD (`crate::tdx::io`), on both paths that reach the host: IN/OUT
//! through #VE, and the direct hypercall that the console backend uses.
//!
//! The allowed port is the COM1 scratch register. The denied port is 0x87, a DMA page register
//! (channel 3) in QEMU's i8257: plain storage that the kernel has no business touching, so under
//! softtdx the checks can also look at it natively and see that a denied write never arrived.
//! `allowlist.only_denied_checks` then compares `io.denied` with the denials these checks asked
//! for: nothing else in the run may have been denied.

use super::{natively, Outcome, Tally};
use crate::counters::{IO_DENIED, VE_IO};
use crate::port::{inb, outb};
use crate::{fail, pass, skip};
use core::sync::atomic::{AtomicU64, Ordering};
use tdx_ve::io::PortWidth;

const ALLOWED: u16 = crate::console::COM1 + 7;
const DENIED: u16 = 0x87;
/// What the denied port holds (set natively under softtdx) before each denied access.
const DENIED_HELD: u8 = 0x5A;

/// Denials the checks below expect to cause.
static EXPECTED_DENIALS: AtomicU64 = AtomicU64::new(0);

#[derive(Clone, Copy)]
enum Path {
    /// IN/OUT instructions: a #VE each in a TD.
    Ve,
    /// `crate::tdx::io` directly: a hypercall, no #VE.
    Direct,
}

impl Path {
    fn read(self, port: u16) -> u8 {
        match self {
            // SAFETY: the allowed port is the scratch register; the denied one never reaches
            // the device (or, if the allowlist were broken, is a DMA page register: storage).
            Path::Ve => unsafe { inb(port) },
            Path::Direct => crate::tdx::io::read(port, PortWidth::Byte).unwrap_or(0) as u8,
        }
    }

    fn write(self, port: u16, value: u8) {
        match self {
            // SAFETY: as for `read`.
            Path::Ve => unsafe { outb(port, value) },
            Path::Direct => {
                let _ = crate::tdx::io::write(port, PortWidth::Byte, value as u64);
            }
        }
    }
}

// Kept out of line: td-audit attributes native instructions to this module by symbol.
#[inline(never)]
pub fn run(tally: &mut Tally) {
    for (path, prefix) in [(Path::Ve, "allowlist.ve"), (Path::Direct, "allowlist.direct")] {
        tally.run(crate::fixed_format!(40, "{prefix}.allowed").as_str(), || allowed(path));
        tally.run(crate::fixed_format!(40, "{prefix}.denied_in").as_str(), || denied_in(path));
        tally.run(crate::fixed_format!(40, "{prefix}.denied_out").as_str(), || denied_out(path));
    }
}

/// Run last: `io.denied` counts exactly the denials the checks above caused.
// Kept out of line: td-audit attributes native instructions to this module by symbol.
#[inline(never)]
pub fn run_final(tally: &mut Tally) {
    tally.run("allowlist.only_denied_checks", || {
        if !crate::tdx::is_td() {
            return skip!("not a TD: no allowlist");
        }
        let (denied, expected) = (IO_DENIED.get(), EXPECTED_DENIALS.load(Ordering::Relaxed));
        if denied != expected {
            return fail!("io.denied={denied}, but the denied-port checks caused {expected}");
        }
        pass!("io.denied={denied}, all from the denied-port checks")
    });
}

fn softtdx_active() -> bool {
    #[cfg(feature = "test-modes")]
    return crate::softtdx::is_active();
    #[cfg(not(feature = "test-modes"))]
    return false;
}

/// Counts what `f` did: (io.denied, I/O #VEs).
fn counting(f: impl FnOnce()) -> (u64, u64) {
    let before = (IO_DENIED.get(), VE_IO.get());
    f();
    (IO_DENIED.get() - before.0, VE_IO.get() - before.1)
}

fn ves_expected(path: Path, accesses: u64) -> u64 {
    match path {
        Path::Ve => accesses,
        Path::Direct => 0,
    }
}

fn allowed(path: Path) -> Outcome {
    if !crate::tdx::is_td() {
        return skip!("not a TD: no allowlist");
    }
    let mut read = [0u8; 2];
    let (denied, ves) = counting(|| {
        let saved = path.read(ALLOWED);
        for (slot, pattern) in read.iter_mut().zip([0xA5u8, 0x3C]) {
            path.write(ALLOWED, pattern);
            *slot = path.read(ALLOWED);
        }
        path.write(ALLOWED, saved);
    });
    if read != [0xA5, 0x3C] || denied != 0 || ves != ves_expected(path, 6) {
        return fail!(
            "port {ALLOWED:#x}: read back {read:02x?}, want [a5, 3c]; io.denied +{denied}, \
             {ves} I/O #VEs"
        );
    }
    pass!("port {ALLOWED:#x} written and read back, io.denied +0, {ves} I/O #VEs")
}

/// The start of both denied-port checks: outside a TD there is no allowlist; under softtdx the
/// denied port's device is first given a known value natively, so that what the denied access
/// would have read or written can be told apart. Counts the one denial the check will cause.
/// Returns whether softtdx is active, or the skip.
// The error is the check's outcome, a fixed buffer by design (no heap on report paths), as for
// `ve_path_ok`.
#[allow(clippy::result_large_err)]
fn prepare_denied_port() -> Result<bool, Outcome> {
    if !crate::tdx::is_td() {
        return Err(skip!("not a TD: no allowlist"));
    }
    let softtdx = softtdx_active();
    if softtdx {
        // SAFETY: a DMA page register only stores a byte (nothing programs DMA here).
        natively(|| unsafe { outb(DENIED, DENIED_HELD) });
    }
    EXPECTED_DENIALS.fetch_add(1, Ordering::Relaxed);
    Ok(softtdx)
}

fn denied_in(path: Path) -> Outcome {
    let softtdx = match prepare_denied_port() {
        Ok(softtdx) => softtdx,
        Err(skip) => return skip,
    };
    let mut value = 0;
    let (denied, ves) = counting(|| value = path.read(DENIED));
    if value != 0xFF || denied != 1 || ves != ves_expected(path, 1) {
        return fail!(
            "IN from {DENIED:#x} read {value:#04x} (want 0xff), io.denied +{denied} (want 1), \
             {ves} I/O #VEs"
        );
    }
    match softtdx {
        true => pass!("read 0xff, not the device's {DENIED_HELD:#04x}; io.denied +1"),
        false => pass!("read 0xff; io.denied +1"),
    }
}

fn denied_out(path: Path) -> Outcome {
    let softtdx = match prepare_denied_port() {
        Ok(softtdx) => softtdx,
        Err(skip) => return skip,
    };
    let (denied, ves) = counting(|| path.write(DENIED, !DENIED_HELD));
    // SAFETY: a DMA page register only stores a byte (nothing programs DMA here).
    let held = if softtdx { natively(|| unsafe { inb(DENIED) }) } else { DENIED_HELD };
    if held != DENIED_HELD || denied != 1 || ves != ves_expected(path, 1) {
        return fail!(
            "OUT to {DENIED:#x}: the device holds {held:#04x} (want {DENIED_HELD:#04x}), \
             io.denied +{denied} (want 1), {ves} I/O #VEs"
        );
    }
    match softtdx {
        true => pass!("write dropped: the device still holds {DENIED_HELD:#04x}; io.denied +1"),
        false => pass!("write dropped; io.denied +1"),
    }
}
