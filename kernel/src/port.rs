//! The kernel's port-I/O API.
//!
//! `inb/inw/inl/outb/outw/outl` execute the IN/OUT instruction. In a TD that instruction raises
//! #VE and [`crate::tdx::ve`] emulates it, so drivers need no TD-specific code. The string forms
//! `insb/.../outsl` emit `rep ins`/`rep outs` natively and unroll into single accesses when
//! [`CcAttr::GuestUnrollStringIo`] is set, as Linux does in a TD.
//!
//! [`raw_in`]/[`raw_out`] are for the few places that must not raise #VE in a TD (the emergency
//! writer and the exit path): there they make the hypercall directly.

use crate::cc::{cc_platform_has, CcAttr};
use core::arch::asm;
use core::marker::PhantomData;
use tdx_ve::io::PortWidth;

/// A value that can be moved through an I/O port.
pub trait PortValue: Copy {
    /// # Safety
    /// Reading `port` must have no side effects the caller has not accounted for.
    unsafe fn port_in(port: u16) -> Self;
    /// # Safety
    /// Writing `port` must not break memory safety (e.g. reset the machine or start DMA).
    unsafe fn port_out(port: u16, value: Self);
}

impl PortValue for u8 {
    unsafe fn port_in(port: u16) -> u8 {
        // SAFETY: delegated to the caller.
        unsafe { inb(port) }
    }
    unsafe fn port_out(port: u16, value: u8) {
        // SAFETY: delegated to the caller.
        unsafe { outb(port, value) }
    }
}

impl PortValue for u16 {
    unsafe fn port_in(port: u16) -> u16 {
        // SAFETY: delegated to the caller.
        unsafe { inw(port) }
    }
    unsafe fn port_out(port: u16, value: u16) {
        // SAFETY: delegated to the caller.
        unsafe { outw(port, value) }
    }
}

impl PortValue for u32 {
    unsafe fn port_in(port: u16) -> u32 {
        // SAFETY: delegated to the caller.
        unsafe { inl(port) }
    }
    unsafe fn port_out(port: u16, value: u32) {
        // SAFETY: delegated to the caller.
        unsafe { outl(port, value) }
    }
}

/// One I/O port: unsafe to construct, safe to use.
pub struct IoPort<T: PortValue> {
    port: u16,
    _value: PhantomData<T>,
}

impl<T: PortValue> IoPort<T> {
    /// # Safety
    /// Reads and writes of `port` with width `T` must be free of memory-safety side effects
    /// for as long as the returned value lives.
    pub const unsafe fn new(port: u16) -> Self {
        Self { port, _value: PhantomData }
    }

    pub fn read(&self) -> T {
        // SAFETY: guaranteed by the contract of `new`.
        unsafe { T::port_in(self.port) }
    }

    pub fn write(&self, value: T) {
        // SAFETY: guaranteed by the contract of `new`.
        unsafe { T::port_out(self.port, value) }
    }
}

macro_rules! port_in_out {
    ($in_name:ident, $out_name:ident, $ty:ty, $reg:tt) => {
        /// # Safety
        /// The port access must have no memory-safety side effects.
        #[inline]
        pub unsafe fn $in_name(port: u16) -> $ty {
            let value: $ty;
            // SAFETY: the caller vouches for the port; IN touches no memory.
            unsafe {
                asm!(concat!("in ", $reg, ", dx"), out($reg) value, in("dx") port,
                     options(nomem, nostack, preserves_flags))
            };
            value
        }

        /// # Safety
        /// The port access must have no memory-safety side effects.
        #[inline]
        pub unsafe fn $out_name(port: u16, value: $ty) {
            // SAFETY: the caller vouches for the port; OUT touches no memory.
            unsafe {
                asm!(concat!("out dx, ", $reg), in("dx") port, in($reg) value,
                     options(nomem, nostack, preserves_flags))
            };
        }
    };
}

port_in_out!(inb, outb, u8, "al");
port_in_out!(inw, outw, u16, "ax");
port_in_out!(inl, outl, u32, "eax");

macro_rules! port_string {
    ($ins:ident, $outs:ident, $ty:ty, $ins_asm:literal, $outs_asm:literal, $in:ident, $out:ident) => {
        /// Reads `buffer.len()` elements from `port`.
        ///
        /// # Safety
        /// The port accesses must have no memory-safety side effects.
        pub unsafe fn $ins(port: u16, buffer: &mut [$ty]) {
            if cc_platform_has(CcAttr::GuestUnrollStringIo) {
                for element in buffer.iter_mut() {
                    // SAFETY: delegated to the caller.
                    *element = unsafe { $in(port) };
                }
                return;
            }
            // SAFETY: RDI/RCX describe exactly `buffer`, which is writable; DF is clear per the
            // ABI, so the CPU walks upwards.
            unsafe {
                asm!(concat!("rep ", $ins_asm), in("dx") port,
                     inout("rdi") buffer.as_mut_ptr() => _, inout("rcx") buffer.len() => _,
                     options(nostack, preserves_flags))
            };
        }

        /// Writes every element of `buffer` to `port`.
        ///
        /// # Safety
        /// The port accesses must have no memory-safety side effects.
        pub unsafe fn $outs(port: u16, buffer: &[$ty]) {
            if cc_platform_has(CcAttr::GuestUnrollStringIo) {
                for element in buffer {
                    // SAFETY: delegated to the caller.
                    unsafe { $out(port, *element) };
                }
                return;
            }
            // SAFETY: RSI/RCX describe exactly `buffer`; DF is clear per the ABI.
            unsafe {
                asm!(concat!("rep ", $outs_asm), in("dx") port,
                     inout("rsi") buffer.as_ptr() => _, inout("rcx") buffer.len() => _,
                     options(nostack, preserves_flags, readonly))
            };
        }
    };
}

port_string!(insb, outsb, u8, "insb", "outsb", inb, outb);
port_string!(insw, outsw, u16, "insw", "outsw", inw, outw);
port_string!(insl, outsl, u32, "insd", "outsd", inl, outl);

/// Reads a port without raising #VE in a TD. For the emergency writer only.
///
/// # Safety
/// Reading `port` must have no memory-safety side effects.
pub unsafe fn raw_in(port: u16, width: PortWidth) -> u32 {
    if crate::tdx::is_td() {
        return crate::tdx::io::read(port, width).unwrap_or(0xFFFF_FFFF) as u32;
    }
    // SAFETY: delegated to the caller.
    unsafe {
        match width {
            PortWidth::Byte => inb(port) as u32,
            PortWidth::Word => inw(port) as u32,
            PortWidth::Dword => inl(port),
        }
    }
}

/// Writes a port without raising #VE in a TD. For the emergency writer and the exit path.
///
/// # Safety
/// Writing `port` must have no memory-safety side effects.
pub unsafe fn raw_out(port: u16, width: PortWidth, value: u32) {
    if crate::tdx::is_td() {
        let _ = crate::tdx::io::write(port, width, value as u64);
        return;
    }
    // SAFETY: delegated to the caller.
    unsafe {
        match width {
            PortWidth::Byte => outb(port, value as u8),
            PortWidth::Word => outw(port, value as u16),
            PortWidth::Dword => outl(port, value),
        }
    }
}
