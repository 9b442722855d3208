//! Confidential-computing platform attributes, the counterpart of Linux's `cc_platform_has`.
//!
//! Set once by [`crate::tdx::init`] and read everywhere else.

use core::sync::atomic::{AtomicU32, Ordering};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum CcAttr {
    /// Running as an Intel TDX guest.
    GuestTdx = 1 << 0,
    /// String port I/O (INS/OUTS) must be unrolled into single accesses: Linux's
    /// `CC_ATTR_GUEST_UNROLL_STRING_IO`. Set in a TD, where every element costs a #VE anyway
    /// and single accesses keep the emulation simple.
    GuestUnrollStringIo = 1 << 1,
}

static ATTRIBUTES: AtomicU32 = AtomicU32::new(0);

pub fn cc_platform_has(attr: CcAttr) -> bool {
    ATTRIBUTES.load(Ordering::Relaxed) & attr as u32 != 0
}

pub(crate) fn set(attr: CcAttr) {
    ATTRIBUTES.fetch_or(attr as u32, Ordering::Relaxed);
}
