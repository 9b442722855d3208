//! The kernel's IDT: vectors 0-31, each pointing at a stub of [`super::trap`].
//!
//! Gate format: Intel SDM Vol. 3A, 6.14.1 "64-Bit Mode IDT". Every gate is an interrupt gate
//! (type 0xE), so RFLAGS.IF is clear in every handler.

use super::gdt;
use super::trap::{self, EXCEPTION_VECTORS};
use x86_64::instructions::tables::lidt;
use x86_64::structures::DescriptorTablePointer;
use x86_64::VirtAddr;

/// Exception vectors the kernel refers to by name (Intel SDM Vol. 3A, Table 6-1).
pub mod vector {
    #[cfg_attr(not(feature = "test-modes"), allow(dead_code))] // Only the test image uses it.
    pub const DEBUG: u64 = 1;
    pub const NMI: u64 = 2;
    pub const BREAKPOINT: u64 = 3;
    pub const INVALID_OPCODE: u64 = 6;
    pub const DOUBLE_FAULT: u64 = 8;
    #[cfg_attr(not(feature = "test-modes"), allow(dead_code))] // Only the test image uses it.
    pub const PAGE_FAULT: u64 = 14;
    pub const MACHINE_CHECK: u64 = 18;
    pub const VIRTUALIZATION: u64 = 20;
}

#[derive(Clone, Copy)]
#[repr(C)]
struct GateDescriptor {
    offset_low: u16,
    selector: u16,
    ist: u8,
    type_attributes: u8,
    offset_middle: u16,
    offset_high: u32,
    reserved: u32,
}

const _: () = assert!(core::mem::size_of::<GateDescriptor>() == 16);

/// Present, DPL 0, 64-bit interrupt gate.
const INTERRUPT_GATE: u8 = 0x8E;

impl GateDescriptor {
    const MISSING: Self = Self {
        offset_low: 0,
        selector: 0,
        ist: 0,
        type_attributes: 0,
        offset_middle: 0,
        offset_high: 0,
        reserved: 0,
    };

    fn new(handler: u64, selector: u16, ist: u8) -> Self {
        Self {
            offset_low: handler as u16,
            selector,
            ist,
            type_attributes: INTERRUPT_GATE,
            offset_middle: (handler >> 16) as u16,
            offset_high: (handler >> 32) as u32,
            reserved: 0,
        }
    }

    #[cfg_attr(not(feature = "test-modes"), allow(dead_code))] // Only the test image uses it.
    fn handler(&self) -> u64 {
        self.offset_low as u64 | (self.offset_middle as u64) << 16 | (self.offset_high as u64) << 32
    }
}

#[repr(C, align(16))]
struct Idt([GateDescriptor; EXCEPTION_VECTORS]);

static mut IDT: Idt = Idt([GateDescriptor::MISSING; EXCEPTION_VECTORS]);

pub fn init() {
    let selector = gdt::kernel_code_selector();
    // SAFETY: runs once at boot on the only CPU, before the IDT is loaded, so nothing reads the
    // table while it is written.
    let idt = unsafe { &mut *core::ptr::addr_of_mut!(IDT) };
    for (vector, gate) in idt.0.iter_mut().enumerate() {
        let ist = match vector as u64 {
            vector::DOUBLE_FAULT => gdt::IST_DOUBLE_FAULT,
            vector::NMI => gdt::IST_NMI,
            vector::MACHINE_CHECK => gdt::IST_MACHINE_CHECK,
            _ => 0,
        };
        *gate = GateDescriptor::new(trap::stub_address(vector), selector, ist);
    }
    let pointer = DescriptorTablePointer {
        limit: (core::mem::size_of::<Idt>() - 1) as u16,
        base: VirtAddr::from_ptr(idt as *const Idt),
    };
    // SAFETY: the table is a static that lives for the rest of the run, and every gate points
    // at a stub from `trap`, which saves the full register frame before running Rust code.
    unsafe { lidt(&pointer) };
}

/// The handler address the IDT holds for `vector`: what the CPU would jump to when it delivers
/// that exception. softtdx uses it to deliver #VE through the real gate.
#[cfg_attr(not(feature = "test-modes"), allow(dead_code))] // Only the test image uses it.
pub fn gate_handler(vector: u64) -> u64 {
    // SAFETY: the IDT is only written by `init`, before any reader runs.
    let idt = unsafe { &*core::ptr::addr_of!(IDT) };
    idt.0[vector as usize].handler()
}

/// Test-only (boot mode `softtdx fault=broken-gate20`): marks the gate of `vector` not present,
/// the guest bug the softtdx model's gate checks must turn into #NP as the CPU would.
#[cfg(feature = "test-modes")]
pub fn mark_not_present(vector: u64) {
    // SAFETY: single CPU; the CPU reads the gate only when it delivers that vector, and the
    // write of one byte leaves the gate either intact or not present.
    let idt = unsafe { &mut *core::ptr::addr_of_mut!(IDT) };
    idt.0[vector as usize].type_attributes &= !0x80;
}
