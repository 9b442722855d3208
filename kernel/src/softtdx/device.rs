//! A hostile host's device values: the model's VMM lies about a value of a device it emulates.
//!
//! In a TD every device is the host's: what the guest reads from configuration space (through
//! TDG.VP.VMCALL<Instruction.IO> on CONFIG_ADDRESS/CONFIG_DATA, data in R11) and from MMIO
//! registers (through TDG.VP.VMCALL<#VE.RequestMMIO>, data in R11; MMIO-FACTS §2) is whatever
//! the VMM returns. So the virtio console checks capability lengths and offsets, BAR addresses,
//! features, the queue size and the notify offset (MMIO-FACTS §5 has QEMU's real layout). A
//! self-test arms up to two lies; the VMM tells them on the next accesses, consistently, as a
//! host that owns the device model can:
//! - configuration space: a dword read of the named register that would give `real` gives
//!   `fake`, and a write of `fake` there writes `real`, so a driver that sizes a BAR and writes
//!   back what it read leaves the device as it was (a sizing read-back is not `real`, and is
//!   told the truth);
//! - MMIO: every read of the named register, at that size, gives `fake`.

use tdx_ve::io::PortWidth;
use tdx_ve::mmio::AccessSize;

/// PCI configuration mechanism #1 (PCI Local Bus 3.0 §3.2.2.3.2).
const CONFIG_ADDRESS: u16 = 0xCF8;
const CONFIG_DATA: u16 = 0xCFC;

/// One value the host misreports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceLie {
    /// The configuration dword selected by `address` (a CONFIG_ADDRESS value: enable bit, bus,
    /// device, function, register).
    Config { address: u32, real: u32, fake: u32 },
    /// The MMIO register at device GPA `gpa` (shared bit clear), read `size` bytes wide.
    Mmio { gpa: u64, size: AccessSize, fake: u64 },
}

struct State {
    lies: [Option<DeviceLie>; 2],
    /// The last dword the guest wrote to CONFIG_ADDRESS.
    config_address: u32,
    /// Reads answered with a lie since the last [`arm`].
    told: u32,
}

impl State {
    /// The fake value of the first armed lie `about` picks, counted as told; else the device's
    /// own `data`.
    fn answer(&mut self, data: u64, about: impl Fn(&DeviceLie) -> Option<u64>) -> u64 {
        match self.lies.iter().flatten().find_map(about) {
            Some(fake) => {
                self.told += 1;
                fake
            }
            None => data,
        }
    }
}

static STATE: spin::Mutex<State> =
    spin::Mutex::new(State { lies: [None, None], config_address: 0, told: 0 });

fn state() -> spin::MutexGuard<'static, State> {
    match STATE.try_lock() {
        Some(guard) => guard,
        None => super::host::host_stop("FATAL softtdx: the device model was re-entered"),
    }
}

/// Arms these lies (replacing any armed before), or with `[None, None]` disarms; returns how
/// many reads the lies armed before answered.
pub fn arm(lies: [Option<DeviceLie>; 2]) -> u32 {
    crate::arch::without_single_step(|| {
        let mut state = state();
        state.lies = lies;
        core::mem::take(&mut state.told)
    })
}

/// The value the VMM writes for a guest port write of `value`: CONFIG_ADDRESS is recorded,
/// and a CONFIG_DATA write of a lie's fake value writes its real one.
pub(super) fn port_write(port: u16, width: PortWidth, value: u64) -> u64 {
    let mut state = state();
    match (port, width) {
        (CONFIG_ADDRESS, PortWidth::Dword) => state.config_address = value as u32,
        (CONFIG_DATA, PortWidth::Dword) => {
            let selected = state.config_address;
            for lie in state.lies.iter().flatten() {
                if let DeviceLie::Config { address, real, fake } = *lie {
                    if address == selected && value == fake as u64 {
                        return real as u64;
                    }
                }
            }
        }
        _ => {}
    }
    value
}

/// The data the VMM returns for a guest port read that gave `data`.
pub(super) fn port_read(port: u16, width: PortWidth, data: u64) -> u64 {
    if (port, width) != (CONFIG_DATA, PortWidth::Dword) {
        return data;
    }
    let mut state = state();
    let selected = state.config_address;
    state.answer(data, |lie| match *lie {
        DeviceLie::Config { address, real, fake } if address == selected && data == real as u64 => {
            Some(fake as u64)
        }
        _ => None,
    })
}

/// The data the VMM returns for a RequestMMIO read of `size` bytes at device GPA `gpa` that
/// gave `data`.
pub(super) fn mmio_read(gpa: u64, size: AccessSize, data: u64) -> u64 {
    state().answer(data, |lie| match *lie {
        DeviceLie::Mmio { gpa: at, size: width, fake } if at == gpa && width == size => Some(fake),
        _ => None,
    })
}
