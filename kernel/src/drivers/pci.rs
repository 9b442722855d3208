//! PCI configuration space through CONFIG_ADDRESS (0xCF8) and CONFIG_DATA (0xCFC), the
//! "configuration mechanism #1" of the PCI Local Bus Specification 3.0 §3.2.2.3.2. Both are
//! ordinary port accesses: in a TD each one is an I/O #VE handled by `crate::tdx::ve`, through
//! the port allowlist. Only dword accesses are made; registers narrower than a dword are
//! read-modify-written by the caller.

use crate::port::{inl, outl};

const CONFIG_ADDRESS: u16 = 0xCF8;
const CONFIG_DATA: u16 = 0xCFC;

/// A function on bus 0 (the only bus QEMU's q35 puts our devices on).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Function {
    pub device: u8,
    pub function: u8,
}

impl Function {
    /// The CONFIG_ADDRESS value that selects the dword at `offset`.
    pub fn config_address(self, offset: u8) -> u32 {
        0x8000_0000
            | (self.device as u32) << 11
            | (self.function as u32) << 8
            | (offset & 0xFC) as u32
    }

    /// Reads the dword at `offset` (rounded down to a dword).
    pub fn read32(self, offset: u8) -> u32 {
        // SAFETY: selecting and reading a configuration dword has no side effects on memory;
        // nothing else in the kernel uses CONFIG_ADDRESS concurrently (one CPU, no interrupts).
        unsafe {
            outl(CONFIG_ADDRESS, self.config_address(offset));
            inl(CONFIG_DATA)
        }
    }

    /// Writes the dword at `offset`.
    ///
    /// # Safety
    /// The write must not make the device touch memory the caller has not given it (for
    /// example, setting bus master before the device's queues point at shared memory).
    pub unsafe fn write32(self, offset: u8, value: u32) {
        // SAFETY: the caller vouches for the effect of the write.
        unsafe {
            outl(CONFIG_ADDRESS, self.config_address(offset));
            outl(CONFIG_DATA, value);
        }
    }

    /// Vendor and device ID, or None when no function answers (vendor 0xFFFF).
    pub fn ids(self) -> Option<(u16, u16)> {
        let id = self.read32(0);
        (id & 0xFFFF != 0xFFFF).then_some((id as u16, (id >> 16) as u16))
    }
}

/// The first function 0 on bus 0 with these IDs.
pub fn find(vendor: u16, device: u16) -> Option<Function> {
    (0..32).map(|d| Function { device: d, function: 0 }).find(|f| f.ids() == Some((vendor, device)))
}

/// Status register bit 4: the function has a capability list (PCI 3.0 §6.2.3).
const STATUS_CAPABILITIES: u32 = 1 << (16 + 4);
const CAPABILITIES_POINTER: u8 = 0x34;

/// Walks the capability list: calls `each(offset, id)` for every capability, at most 48 (the
/// number of dwords a 256-byte space has after its header), so a looping list ends.
pub fn capabilities(f: Function, mut each: impl FnMut(u8, u8)) {
    if f.read32(0x04) & STATUS_CAPABILITIES == 0 {
        return;
    }
    let mut offset = (f.read32(CAPABILITIES_POINTER) & 0xFC) as u8;
    for _ in 0..48 {
        if offset < 0x40 {
            return;
        }
        let header = f.read32(offset);
        each(offset, header as u8);
        offset = ((header >> 8) & 0xFC) as u8;
    }
}
