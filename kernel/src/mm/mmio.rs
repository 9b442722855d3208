//! Device MMIO for the kernel's own drivers: a mapped register window whose accessors use
//! TDG.VP.VMCALL<#VE.RequestMMIO> in a TD (no #VE, one hypercall per access) and an inline-asm
//! `mov` elsewhere. Never a plain dereference: the compiler may turn one into a CMP, a memcpy
//! or a read-modify-write that no MMIO emulation accepts (Asterinas #1052, #1438; MMIO-FACTS §3).

use super::pagetable::{self, PageTableError, PAGE_SIZE};
use tdx_ve::mmio::AccessSize;

/// A device register window: `len` bytes at `gpa`, mapped at `virt` (with the shared bit in a
/// TD).
#[derive(Clone, Copy, Debug)]
pub struct DeviceMemory {
    pub virt: u64,
    pub gpa: u64,
    pub len: u64,
    /// The shared bit ORed into the GPA for RequestMMIO; 0 outside a TD.
    shared_bit: u64,
}

impl DeviceMemory {
    /// Maps `len` bytes at `gpa` (page aligned, without the shared bit).
    pub fn map(gpa: u64, len: u64) -> Result<Self, PageTableError> {
        let shared_bit = super::shared_bit().unwrap_or(0);
        let pages = len.div_ceil(PAGE_SIZE);
        let virt = pagetable::map_device(gpa, pages, shared_bit)?;
        Ok(Self { virt, gpa, len: pages * PAGE_SIZE, shared_bit })
    }

    /// Reads `size` bytes at `offset`. A failed RequestMMIO is fatal: the host refused a
    /// register the driver was given.
    pub fn read(&self, offset: u64, size: AccessSize) -> u64 {
        assert!(offset + size.bytes() <= self.len, "MMIO read outside the window");
        if crate::tdx::is_td() {
            return crate::tdx::mmio::read((self.gpa + offset) | self.shared_bit, size)
                .unwrap_or_else(|e| fatal(self.gpa + offset, e));
        }
        // SAFETY: inside the mapped window (asserted above), an uncached device mapping.
        unsafe { read_mov(self.virt + offset, size) }
    }

    /// Writes the low `size` bytes of `value` at `offset`.
    pub fn write(&self, offset: u64, size: AccessSize, value: u64) {
        assert!(offset + size.bytes() <= self.len, "MMIO write outside the window");
        if crate::tdx::is_td() {
            return crate::tdx::mmio::write((self.gpa + offset) | self.shared_bit, size, value)
                .unwrap_or_else(|e| fatal(self.gpa + offset, e));
        }
        // SAFETY: as for `read`.
        unsafe { write_mov(self.virt + offset, size, value) }
    }
}

/// A failed RequestMMIO stops the kernel. Device memory sits below the console and the exit
/// path (the virtio console uses it), so it panics: the crate root's panic handler prints the
/// message, sends ReportFatalError and exits.
#[cold]
fn fatal(gpa: u64, error: crate::tdx::vmcall::VmcallError) -> ! {
    panic!("RequestMMIO at {gpa:#x}: {error}")
}

/// One `mov` load of `size` bytes at `address`, zero-extended.
///
/// # Safety
/// `address` must be mapped and readable with side effects the caller accepts.
pub unsafe fn read_mov(address: u64, size: AccessSize) -> u64 {
    let value: u64;
    // SAFETY: the caller vouches for the address; each is one load instruction.
    unsafe {
        match size {
            AccessSize::Byte => {
                core::arch::asm!("movzx {0:e}, byte ptr [{1}]", out(reg) value, in(reg) address, options(nostack, preserves_flags))
            }
            AccessSize::Word => {
                core::arch::asm!("movzx {0:e}, word ptr [{1}]", out(reg) value, in(reg) address, options(nostack, preserves_flags))
            }
            AccessSize::Dword => {
                core::arch::asm!("mov {0:e}, dword ptr [{1}]", out(reg) value, in(reg) address, options(nostack, preserves_flags))
            }
            AccessSize::Qword => {
                core::arch::asm!("mov {0}, qword ptr [{1}]", out(reg) value, in(reg) address, options(nostack, preserves_flags))
            }
        }
    }
    value
}

/// One `mov` store of the low `size` bytes of `value` at `address`.
///
/// # Safety
/// `address` must be mapped and writable with side effects the caller accepts.
pub unsafe fn write_mov(address: u64, size: AccessSize, value: u64) {
    // SAFETY: the caller vouches for the address; each is one store instruction.
    unsafe {
        match size {
            AccessSize::Byte => {
                core::arch::asm!("mov byte ptr [{0}], {1:l}", in(reg) address, in(reg) value, options(nostack, preserves_flags))
            }
            AccessSize::Word => {
                core::arch::asm!("mov word ptr [{0}], {1:x}", in(reg) address, in(reg) value, options(nostack, preserves_flags))
            }
            AccessSize::Dword => {
                core::arch::asm!("mov dword ptr [{0}], {1:e}", in(reg) address, in(reg) value, options(nostack, preserves_flags))
            }
            AccessSize::Qword => {
                core::arch::asm!("mov qword ptr [{0}], {1}", in(reg) address, in(reg) value, options(nostack, preserves_flags))
            }
        }
    }
}
