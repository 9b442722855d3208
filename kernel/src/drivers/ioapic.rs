//! The IOAPIC's register window (Intel 82093AA datasheet §3.0), at QEMU's base: IOREGSEL
//! selects a register and IOWIN reads or writes it. The kernel drives no interrupts; the MMIO
//! checks, the bench and a fault scenario use the window as device registers that reading has
//! no side effect on.

/// The window's GPA (QEMU's `IO_APIC_DEFAULT_ADDRESS`).
pub const BASE: u64 = 0xFEC0_0000;
/// IOREGSEL: the index of the register IOWIN reaches (8 bits of storage).
pub const IOREGSEL: u64 = 0x00;
/// IOWIN: the selected register.
pub const IOWIN: u64 = 0x10;
/// The version register's index.
pub const VERSION: u64 = 0x01;
