//! TDG.VP.VMCALL<MapGPA> (GHCI "TDG.VP.VMCALL<MapGPA>", sub-function 0x10001): asks the host to
//! map a GPA range shared (the GPA carries the shared bit) or private (it does not), following
//! the host's RETRY answers under the rules of [`tdx_ve::mapgpa`] (R11 trusted only inside the
//! range, in the same encoding; at most three answers in a row without progress).
//!
//! Ordering (Linux `tdx_early_init` comment, MMIO-FACTS §4): a page goes shared after its
//! mappings carry the shared bit, and private (MapGPA, then TDG.MEM.PAGE.ACCEPT) before they
//! lose it; a private mapping of a shared page must never be used. `crate::mm::shared` keeps
//! that order; this module only makes the call.

use super::tdcall::TdcallRegs;
use super::vmcall::{self, VmcallError};
use crate::counters;
use tdx_ve::abi::{TdVmCallStatus, TdVmCallSubFunction};
use tdx_ve::mapgpa::{MapGpaError, MapGpaLoop, MapGpaStep};

/// Why a conversion failed.
#[derive(Clone, Copy, Debug)]
pub enum ConvertError {
    /// The TDCALL itself failed.
    Vmcall(VmcallError),
    /// The host's answers broke the protocol or refused.
    MapGpa(MapGpaError),
}

impl core::fmt::Display for ConvertError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Vmcall(e) => write!(f, "{e}"),
            Self::MapGpa(e) => write!(f, "{e}"),
        }
    }
}

/// Converts `[gpa, gpa + size)` (4 KiB aligned, without the shared bit) to shared or to
/// private, given the TD's shared bit.
pub fn map_gpa(gpa: u64, size: u64, shared: bool, shared_bit: u64) -> Result<(), ConvertError> {
    let start = if shared { gpa | shared_bit } else { gpa & !shared_bit };
    let mut conversion = MapGpaLoop::new(start, size).map_err(ConvertError::MapGpa)?;
    loop {
        let (r12, r13) = conversion.call();
        counters::TDVMCALL_MAPGPA.increment();
        let mut regs = TdcallRegs { r12, r13, ..TdcallRegs::default() };
        let status = match vmcall::vmcall(TdVmCallSubFunction::MapGpa, &mut regs) {
            Ok(()) => TdVmCallStatus::Success,
            Err(VmcallError::Status { status, .. }) => status,
            Err(error) => return Err(ConvertError::Vmcall(error)),
        };
        match conversion.answer(status, regs.r11) {
            Ok(MapGpaStep::Done) => return Ok(()),
            Ok(MapGpaStep::Again) => {}
            Err(error) => return Err(ConvertError::MapGpa(error)),
        }
    }
}
