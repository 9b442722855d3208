//! The kernel's own device drivers: PCI configuration space and the virtio console.

pub mod pci;
pub mod virtio_console;
