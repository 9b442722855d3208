//! The ports a TD lets through to the host: one table, one lookup.
//!
//! In a TD every port access is a request to the untrusted host, and every port the host
//! answers is a device the host chose to emulate. The kernel therefore talks only to the devices
//! it uses; anything else is refused in the guest (a read returns all ones, as an absent device
//! does; a write is dropped). Both the #VE handler and the direct console backend go through
//! [`read`] and [`write`], so the rule is the same whether a driver executes IN/OUT or makes the
//! hypercall itself.
//!
//! An access is judged by every port it touches, `port ..= port + width - 1`, not by its first
//! one: a VMM such as QEMU splits an access that crosses the end of a device's region and sends
//! the tail to whatever lies behind it (QEMU `flatview_read_continue`/`flatview_write_continue`
//! clamp each piece to one MemoryRegion section), so a dword at 0x3FE would reach 0x400-0x401
//! and a word at 0x511 would reach 0x512. One register is wider than its row of single ports:
//! CONFIG_ADDRESS is the dword at 0xCF8 (PCI Local Bus Specification 3.0, 3.2.2.3.2: only a
//! full dword access at 0xCF8 is CONFIG_ADDRESS; 0xCF9 is the chipset's reset control), so
//! that row allows exactly one access, the dword at 0xCF8.
//!
//! Rows marked `test_only` are devices that only the test and bench images drive (the softtdx
//! differential checks); the kernel built for a TD passes `include_test_only = false`.

use crate::io::PortWidth;

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
    /// The range is one dword register: the only access allowed is a 4-byte one at `first`.
    pub dword_register: bool,
}

const fn range(device: &'static str, first: u16, last: u16, test_only: bool) -> PortRange {
    PortRange { device, first, last, test_only, dword_register: false }
}

const fn dword_register(device: &'static str, port: u16) -> PortRange {
    PortRange { device, first: port, last: port + 3, test_only: false, dword_register: true }
}

/// The devices the kernel uses. Sources: 8259A datasheet (0x20-0x21, 0xA0-0xA1); PCI Local Bus
/// Specification 3.0, 3.2.2.3.2, configuration mechanism #1 (CONFIG_ADDRESS is the dword at
/// 0xCF8, CONFIG_DATA 0xCFC-0xCFF; 0xCF9 is the chipset's reset control and stays out); QEMU
/// docs/specs/fw_cfg.rst (selector 0x510, 16-bit write; data 0x511, byte reads); QEMU
/// hw/misc/debugexit.c as xtask configures it (`iobase=0xf4,iosize=0x04`: 0xF4-0xF7, written
/// as one dword at 0xF4); the 16550 at COM1 (0x3F8-0x3FF); the MC146818
/// RTC/NVRAM index and data ports (0x70-0x71), which the self-test's string-form check uses.
pub const PORTS: [PortRange; 9] = [
    range("8259 PIC master", 0x20, 0x21, false),
    range("CMOS/RTC index and data", 0x70, 0x71, false),
    range("POST port and DMA page registers", 0x80, 0x83, true),
    range("8259 PIC slave", 0xA0, 0xA1, false),
    range("isa-debug-exit", 0xF4, 0xF7, false),
    range("COM1 16550 UART", 0x3F8, 0x3FF, false),
    range("fw_cfg selector and data", 0x510, 0x511, false),
    dword_register("PCI CONFIG_ADDRESS", 0xCF8),
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
        if (include_test_only || !r.test_only) && !r.dword_register {
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

/// Whether one port is in a row of single ports (not a dword register).
#[inline]
fn port_allowed(port: usize, map: &[u64; BITMAP_PORTS / 64]) -> bool {
    port < BITMAP_PORTS && map[port / 64] >> (port % 64) & 1 != 0
}

/// Whether an access of `width` at `port` is let through: every port it touches
/// (`port ..= port + width - 1`) must belong to an allowed row, or the access must be exactly a
/// dword register's (CONFIG_ADDRESS: a dword at 0xCF8).
#[inline]
pub fn allowed(port: u16, width: PortWidth, include_test_only: bool) -> bool {
    let map = if include_test_only { &BITMAP_WITH_TEST_ONLY } else { &BITMAP };
    let first = port as usize;
    let last = first + width.bytes() - 1;
    if width == PortWidth::Dword && DWORD_REGISTERS.contains(&port) {
        return true;
    }
    (first..=last).all(|p| port_allowed(p, map))
}

/// The dword registers of [`PORTS`], by their port.
const DWORD_REGISTERS: [u16; 1] = {
    let mut found = [0u16; 1];
    let mut count = 0;
    let mut row = 0;
    while row < PORTS.len() {
        if PORTS[row].dword_register {
            found[count] = PORTS[row].first;
            count += 1;
        }
        row += 1;
    }
    assert!(count == found.len(), "DWORD_REGISTERS must list every dword register row");
    found
};

/// A port read through the allowlist: `host` performs it (TDG.VP.VMCALL<Instruction.IO>) when
/// [`allowed`]; otherwise `denied` runs (the kernel counts `io.denied` and logs) and the read
/// returns all ones of the width, what an absent device reads as. The one path of the #VE
/// handler, the direct console backend and the emergency writer.
#[inline]
pub fn read<E>(
    port: u16,
    width: PortWidth,
    include_test_only: bool,
    denied: impl FnOnce(),
    host: impl FnOnce() -> Result<u64, E>,
) -> Result<u64, E> {
    if !allowed(port, width, include_test_only) {
        denied();
        return Ok(width.mask());
    }
    host()
}

/// A port write through the allowlist: `host` performs it when [`allowed`]; otherwise `denied`
/// runs and the write is dropped.
#[inline]
pub fn write<E>(
    port: u16,
    width: PortWidth,
    include_test_only: bool,
    denied: impl FnOnce(),
    host: impl FnOnce() -> Result<(), E>,
) -> Result<(), E> {
    if !allowed(port, width, include_test_only) {
        denied();
        return Ok(());
    }
    host()
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
            0x3F8, 0x3FD, 0x3FF, 0x20, 0x21, 0xA0, 0xA1, 0xCFC, 0xCFF, 0x510, 0x511, 0xF4, 0x70,
            0x71,
        ] {
            assert!(allowed(port, PortWidth::Byte, false), "{port:#x}");
        }
        // The accesses the kernel makes wider than a byte.
        assert!(allowed(0xCF8, PortWidth::Dword, false));
        assert!(allowed(0xCFC, PortWidth::Dword, false));
        assert!(allowed(0xCFE, PortWidth::Word, false));
        assert!(allowed(0x510, PortWidth::Word, false));
        assert!(allowed(0xF4, PortWidth::Dword, false));
        assert!(allowed(0x70, PortWidth::Word, false));
    }

    #[test]
    fn other_ports_are_denied() {
        for port in [
            0x87, 0x80, 0xCF8, 0xCF9, 0xCFA, 0xCFB, 0x3F7, 0x400, 0x512, 0x514, 0xF8, 0x60, 0x64,
            0xFFFF, 0,
        ] {
            assert!(!allowed(port, PortWidth::Byte, false), "{port:#x}");
        }
    }

    /// Issue 16: an access is judged by every port it touches.
    #[test]
    fn accesses_that_run_past_an_allowed_row_are_denied() {
        assert!(!allowed(0x3FE, PortWidth::Dword, false)); // 0x3FE-0x401: past COM1
        assert!(!allowed(0x3FF, PortWidth::Word, false)); // 0x3FF-0x400
        assert!(allowed(0x3FC, PortWidth::Dword, false)); // 0x3FC-0x3FF: inside COM1
        assert!(!allowed(0x511, PortWidth::Word, false)); // 0x511-0x512: past fw_cfg
        assert!(!allowed(0x511, PortWidth::Dword, false));
        assert!(!allowed(0xCFD, PortWidth::Dword, false)); // 0xCFD-0xD00
        assert!(!allowed(0xFFFF, PortWidth::Word, false)); // past the port space
        assert!(!allowed(0xA1, PortWidth::Word, false)); // 0xA1-0xA2
        assert!(!allowed(0x21, PortWidth::Word, false)); // 0x21-0x22
    }

    /// CONFIG_ADDRESS is one dword register: only the dword at 0xCF8 reaches it; bytes and
    /// words there, and anything that touches 0xCF9 (reset control), do not.
    #[test]
    fn config_address_is_the_dword_at_0xcf8_only() {
        assert!(allowed(0xCF8, PortWidth::Dword, false));
        assert!(!allowed(0xCF8, PortWidth::Byte, false));
        assert!(!allowed(0xCF8, PortWidth::Word, false));
        for port in [0xCF9, 0xCFA, 0xCFB] {
            for width in PortWidth::ALL {
                assert!(!allowed(port, width, false), "{port:#x} {width:?}");
            }
        }
        assert!(!allowed(0xCF7, PortWidth::Word, false));
        assert_eq!(device(0xCF9), Some("PCI CONFIG_ADDRESS"));
    }

    /// The path the kernel's port I/O takes (`kernel/src/tdx/io.rs`): a denied access never
    /// reaches the host, reads all ones, and is counted once (`io.denied`); an allowed one goes
    /// to the host and is not counted.
    #[test]
    fn denied_accesses_are_counted_and_never_reach_the_host() {
        let mut io_denied = 0u64;
        let mut host_calls = 0u64;
        let mut inl = |port: u16| {
            read::<()>(
                port,
                PortWidth::Dword,
                false,
                || io_denied += 1,
                || {
                    host_calls += 1;
                    Ok(0x1234_5678)
                },
            )
        };
        assert_eq!(inl(0x3FE), Ok(0xFFFF_FFFF));
        assert_eq!(inl(0xCF8), Ok(0x1234_5678));
        let mut inw = |port: u16| {
            read::<()>(
                port,
                PortWidth::Word,
                false,
                || io_denied += 1,
                || {
                    host_calls += 1;
                    Ok(0x4142)
                },
            )
        };
        assert_eq!(inw(0x511), Ok(0xFFFF));
        assert_eq!(inw(0x510), Ok(0x4142));
        assert_eq!((io_denied, host_calls), (2, 2));
        let mut outl = |port: u16| {
            write::<()>(
                port,
                PortWidth::Dword,
                false,
                || io_denied += 1,
                || {
                    host_calls += 1;
                    Ok(())
                },
            )
        };
        assert_eq!(outl(0x3FE), Ok(()));
        assert_eq!(outl(0xCF8), Ok(()));
        assert_eq!((io_denied, host_calls), (3, 3));
    }

    #[test]
    fn test_only_rows_need_the_test_images() {
        assert!(!allowed(0x80, PortWidth::Byte, false));
        assert!(allowed(0x80, PortWidth::Byte, true));
        assert!(allowed(0x80, PortWidth::Dword, true));
        assert!(allowed(0x83, PortWidth::Byte, true));
        assert!(!allowed(0x83, PortWidth::Word, true));
        assert!(!allowed(0x87, PortWidth::Byte, true));
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
        /// Against a reference model: every port the access touches is listed in a row of
        /// single ports, or the access is exactly a dword register.
        #[test]
        fn matches_the_listed_ports(port in any::<u16>(), width in 0usize..3, test in any::<bool>()) {
            let width = PortWidth::ALL[width];
            let listed = |p: u32| PORTS.iter().any(|r| {
                (test || !r.test_only) && !r.dword_register
                    && (u32::from(r.first)..=u32::from(r.last)).contains(&p)
            });
            let register = PORTS.iter().any(|r| {
                r.dword_register && r.first == port && width == PortWidth::Dword
            });
            let first = u32::from(port);
            let every_port = (first..first + width.bytes() as u32).all(listed);
            prop_assert_eq!(allowed(port, width, test), register || every_port);
        }
    }
}
