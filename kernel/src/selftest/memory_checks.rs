//! Shared memory and MMIO checks (`shared.*`, `mmio.*`), in every mode: in a TD (and under
//! softtdx) they go through MapGPA, the shared bit, RequestMMIO and the EPT-violation #VE; outside
//! one the same code maps plainly and must take no #VE.

use super::{Context, Tally};
use crate::counters;
use crate::drivers::ioapic::{BASE as IOAPIC, IOREGSEL, IOWIN, VERSION as IOAPIC_VERSION};
use crate::mm::mmio::{read_mov, DeviceMemory};
use crate::mm::shared;
use crate::{fail, pass};
use tdx_ve::mmio::AccessSize;

pub fn run(_ctx: &Context, tally: &mut Tally) {
    tally.run("shared.pool", pool);
    let ioapic = DeviceMemory::map(IOAPIC, 4096);
    tally.run("mmio.ioapic_version", || {
        let Ok(ioapic) = ioapic else { return fail!("cannot map the IOAPIC") };
        let before = counters::TDVMCALL_MMIO.get();
        ioapic.write(IOREGSEL, AccessSize::Dword, IOAPIC_VERSION);
        let version = ioapic.read(IOWIN, AccessSize::Dword);
        let calls = counters::TDVMCALL_MMIO.get() - before;
        let expected_calls = if crate::tdx::is_td() { 2 } else { 0 };
        // QEMU's IOAPIC: version 0x11 or 0x20, 24 redirection entries (max index 23).
        let plausible = matches!(version & 0xFF, 0x11 | 0x20) && (version >> 16) & 0xFF == 23;
        if plausible && calls == expected_calls {
            pass!("IOAPIC version register {version:#x}, {calls} RequestMMIO calls")
        } else {
            fail!("IOAPIC version register {version:#x}, {calls} RequestMMIO calls (want {expected_calls})")
        }
    });
    tally.run("mmio.ve_read", || {
        let Ok(ioapic) = ioapic else { return fail!("cannot map the IOAPIC") };
        ioapic.write(IOREGSEL, AccessSize::Dword, IOAPIC_VERSION);
        let expected = ioapic.read(IOWIN, AccessSize::Dword);
        let before = counters::VE_MMIO.get();
        // SAFETY: the IOAPIC window is mapped (shared in a TD); reading the version register
        // has no side effects. In a TD this is an EPT-violation #VE.
        let value = unsafe { read_mov(ioapic.virt + IOWIN, AccessSize::Dword) };
        let ves = counters::VE_MMIO.get() - before;
        let expected_ves = if crate::tdx::is_td() { 1 } else { 0 };
        if value == expected && ves == expected_ves {
            pass!("mov through the mapping read {value:#x} with {ves} MMIO #VE")
        } else {
            fail!("mov read {value:#x}, RequestMMIO read {expected:#x}; {ves} MMIO #VEs (want {expected_ves})")
        }
    });
}

fn pool() -> super::Outcome {
    let mapgpa_before = counters::TDVMCALL_MAPGPA.get();
    let pages = match shared::allocate(1) {
        Ok(pages) => pages,
        Err(e) => return fail!("{e}"),
    };
    let mapgpa_calls = counters::TDVMCALL_MAPGPA.get() - mapgpa_before;
    let walked = crate::memory::translate(pages.virt).map(|t| t.physical);
    let shared_bit = crate::mm::shared_bit();
    // The pages are zero after conversion, and hold what is written.
    let base = pages.virt as *mut u64;
    let mut all_zero = true;
    let mut round_trip = true;
    for i in 0..(pages.len / 8) as usize {
        // SAFETY: the page was just allocated to this check, mapped writable.
        unsafe {
            all_zero &= core::ptr::read_volatile(base.add(i)) == 0;
            let pattern = 0xA5A5_0000_0000_0000 | i as u64;
            core::ptr::write_volatile(base.add(i), pattern);
            round_trip &= core::ptr::read_volatile(base.add(i)) == pattern;
        }
    }
    match (shared_bit, walked) {
        (Some(bit), Ok(physical)) => {
            if physical & bit == 0 || physical & !bit != pages.gpa {
                return fail!("pool page walks to {physical:#x}: no shared bit {bit:#x}");
            }
            if !all_zero || !round_trip {
                return fail!("zeroed {all_zero}, round trip {round_trip}");
            }
            pass!(
                "GPA {:#x} shared (bit {}), {mapgpa_calls} MapGPA call(s), zeroed, round trip",
                pages.gpa,
                bit.trailing_zeros()
            )
        }
        (None, Ok(_)) if all_zero && round_trip => pass!("not a TD: plain memory, round trip"),
        (_, walked) => fail!("walk {walked:?}, zeroed {all_zero}, round trip {round_trip}"),
    }
}
