//! The kernel's own device drivers: PCI configuration space and the virtio console; the
//! IOAPIC's register window.

pub mod ioapic;
pub mod pci;
pub mod virtio_console;
