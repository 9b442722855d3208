//! The ports a TD lets through to the host: one table, one lookup.
//!
//! In a TD every port access is a request to the untrusted host, and every port the host
//! answers is a device the host chose to emulate. The kernel therefore talks only to the devices
//! it uses; anything else is refused in the guest (a read returns all ones, as an absent device
//! does; a write is dropped). Both the #VE handler and the direct console backend go through
//! [`allowed`], so the rule is the same whether a driver executes IN/OUT or makes the hypercall
//! itself.
//!
//! Rows marked `test_only` are devices that only the test and bench images drive (the softtdx
//! differential checks); the kernel built for a TD passes `include_test_only = false`.

/// One device's port range, inclusive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRange {
    /// What the ports are, for diagnostics and the README.
    pub device: &'static str,
    /// First port of the range.
    pub first: u16,
    /// Last port of the range (inclusive).
    pub last: u16,
    /// Only the test images (softtdx's differential checks) use this device.
    pub test_only: bool,
}

const fn range(device: &'static str, first: u16, last: u16, test_only: bool) -> PortRange {
    PortRange { device, first, last, test_only }
}

/// The devices the kernel uses. Sources: 8259A datasheet (0x20-0x21, 0xA0-0xA1); PCI Local Bus
/// Specification 3.0, 3.2.2.3.2, configuration mechanism #1 (CONFIG_ADDRESS is the dword at
/// 0xCF8, CONFIG_DATA 0xCFC-0xCFF; 0xCF9 is the chipset's reset control and stays out); QEMU
/// docs/specs/fw_cfg.rst (selector 0x510, data 0x511); QEMU hw/misc/debugexit.c as xtask
/// configures it (`iobase=0xf4,iosize=0x04`); the 16550 at COM1 (0x3F8-0x3FF); the MC146818
/// RTC/NVRAM index and data ports (0x70-0x71), which the self-test's string-form check uses.
pub const PORTS: [PortRange; 9] = [
    range("8259 PIC master", 0x20, 0x21, false),
    range("CMOS/RTC index and data", 0x70, 0x71, false),
    range("POST port and DMA page registers", 0x80, 0x83, true),
    range("8259 PIC slave", 0xA0, 0xA1, false),
    range("isa-debug-exit", 0xF4, 0xF4, false),
    range("COM1 16550 UART", 0x3F8, 0x3FF, false),
    range("fw_cfg selector and data", 0x510, 0x511, false),
    range("PCI CONFIG_ADDRESS", 0xCF8, 0xCF8, false),
    range("PCI CONFIG_DATA", 0xCFC, 0xCFF, false),
];

/// Every listed port is below this bound, so a bitmap of it answers [`allowed`].
pub const BITMAP_PORTS: usize = 0x1000;

/// The table as a bitmap of the first [`BITMAP_PORTS`] ports, built at compile time: the #VE
/// handler asks once per access, so the lookup is a shift, a load and a bit test.
pub const fn bitmap(include_test_only: bool) -> [u64; BITMAP_PORTS / 64] {
    let mut map = [0u64; BITMAP_PORTS / 64];
    let mut row = 0;
    while row < PORTS.len() {
        let r = PORTS[row];
        assert!((r.last as usize) < BITMAP_PORTS, "a listed port lies above the bitmap");
        if include_test_only || !r.test_only {
            let mut port = r.first as usize;
            while port <= r.last as usize {
                map[port / 64] |= 1 << (port % 64);
                port += 1;
            }
        }
        row += 1;
    }
    map
}

const BITMAP: [u64; BITMAP_PORTS / 64] = bitmap(false);
const BITMAP_WITH_TEST_ONLY: [u64; BITMAP_PORTS / 64] = bitmap(true);

/// Whether an access at `port` is let through: the port an access starts at selects the device
/// (a VMM dispatches it by that port), so that port must belong to an allowed row.
#[inline]
pub fn allowed(port: u16, include_test_only: bool) -> bool {
    let map = if include_test_only { &BITMAP_WITH_TEST_ONLY } else { &BITMAP };
    let port = port as usize;
    port < BITMAP_PORTS && map[port / 64] >> (port % 64) & 1 != 0
}

/// The device a port belongs to, for diagnostics.
pub fn device(port: u16) -> Option<&'static str> {
    PORTS.iter().find(|r| (r.first..=r.last).contains(&port)).map(|r| r.device)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_kernels_devices_are_allowed() {
        for port in [
            0x3F8, 0x3FD, 0x3FF, 0x20, 0x21, 0xA0, 0xA1, 0xCF8, 0xCFC, 0xCFF, 0x510, 0x511, 0xF4,
            0x70, 0x71,
        ] {
            assert!(allowed(port, false), "{port:#x}");
        }
    }

    #[test]
    fn other_ports_are_denied() {
        for port in [
            0x87, 0x80, 0xCF9, 0xCFA, 0xCFB, 0x3F7, 0x400, 0x512, 0x514, 0xF5, 0x60, 0x64, 0xFFFF,
            0,
        ] {
            assert!(!allowed(port, false), "{port:#x}");
        }
    }

    #[test]
    fn test_only_rows_need_the_test_images() {
        assert!(!allowed(0x80, false));
        assert!(allowed(0x80, true));
        assert!(allowed(0x83, true));
        assert!(!allowed(0x87, true));
    }

    #[test]
    fn rows_are_sorted_and_disjoint() {
        for pair in PORTS.windows(2) {
            assert!(pair[0].first <= pair[0].last && pair[0].last < pair[1].first);
        }
        assert_eq!(device(0x3FD), Some("COM1 16550 UART"));
        assert_eq!(device(0x87), None);
    }

    proptest! {
        /// Against a reference model: the set of ports the rows list.
        #[test]
        fn matches_the_listed_ports(port in any::<u16>(), test in any::<bool>()) {
            let listed = PORTS.iter().any(|r| {
                (test || !r.test_only) && (r.first..=r.last).any(|p| p == port)
            });
            prop_assert_eq!(allowed(port, test), listed);
        }
    }
}
