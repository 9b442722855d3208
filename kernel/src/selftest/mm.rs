//! The frame allocator over usable and unaccepted memory (`crate::mm::frames`): 64 MiB
//! allocated, filled and read back, above 4 GiB where the machine has RAM there (in a TD and
//! under softtdx that is memory TDVF left unaccepted, accepted on this first use).

use super::{natively, Context, Tally};
use crate::mm::frames;
use crate::{counters, fail, pass, skip};

const TEST_BYTES: u64 = 64 * 1024 * 1024;
const FOUR_GIB: u64 = 1 << 32;
const SIZE_2M: u64 = 2 * 1024 * 1024;

pub fn run(_ctx: &Context, tally: &mut Tally) {
    let at_boot = frames::summary();
    let calls_before = counters::TDCALL_ACCEPT.get();
    let start = frames::allocate(TEST_BYTES, SIZE_2M, FOUR_GIB)
        .or_else(|| frames::allocate(TEST_BYTES, SIZE_2M, 0));
    let calls = counters::TDCALL_ACCEPT.get() - calls_before;
    let after = frames::summary();
    let Some(start) = start else {
        tally.record("mm.alloc_64m", fail!("no 64 MiB of memory left in the frame allocator"));
        tally.record("mm.unaccepted_on_use", fail!("nothing allocated"));
        return;
    };
    tally.run("mm.alloc_64m", || match fill_and_read_back(start) {
        Ok(()) => pass!(
            "64 MiB at GPA {start:#x} ({} 4 GiB), {calls} accept calls, written and read back",
            if start >= FOUR_GIB { "above" } else { "below: no RAM above" }
        ),
        Err(at) => fail!("GPA {at:#x} read back wrong"),
    });
    tally.run("mm.unaccepted_on_use", || {
        if at_boot.unaccepted_bytes == 0 {
            return skip!("no unaccepted memory: not a TD, or no RAM above 4 GiB");
        }
        let units = at_boot.unaccepted_units_left - after.unaccepted_units_left;
        let accepted_at_boot = at_boot.accepted.calls;
        if frames::ACCEPT_EAGER {
            return if at_boot.unaccepted_units_left == 0 && calls == 0 {
                pass!("accept=eager: all {} MiB accepted at boot in {accepted_at_boot} calls", at_boot.unaccepted_bytes >> 20)
            } else {
                fail!("accept=eager left {} units; the test took {calls} calls", at_boot.unaccepted_units_left)
            };
        }
        // Lazy: nothing accepted before first use, then exactly the 32 units of the 64 MiB;
        // 32 calls at 2 MiB, 16384 (+1 SIZE_MISMATCH) where the VMM maps at 4 KiB.
        let units_ok = units == TEST_BYTES / SIZE_2M;
        let calls_ok = calls == TEST_BYTES / SIZE_2M || calls >= TEST_BYTES / 4096;
        if accepted_at_boot == 0 && start >= FOUR_GIB && units_ok && calls_ok {
            pass!(
                "{} MiB unaccepted at boot, none accepted then; 64 MiB at {start:#x} took {units} \
                 units of 2 MiB, {calls} accept calls; {} units left",
                at_boot.unaccepted_bytes >> 20,
                after.unaccepted_units_left
            )
        } else {
            fail!("accepted at boot: {accepted_at_boot} calls; units {units}, calls {calls}, at {start:#x}")
        }
    });
}

/// Writes each 8-byte word of the 64 MiB with a value derived from its address and reads them
/// all back; the first address that differs, if any. Runs natively under softtdx (64 MiB
/// single-stepped would take minutes); a pending page still stops it there.
fn fill_and_read_back(start: u64) -> Result<(), u64> {
    let offset = crate::memory::physical_memory_offset().unwrap_or(0);
    let pattern = |gpa: u64| gpa.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x5A5A_5A5A_5A5A_5A5A;
    natively(|| {
        let words = (TEST_BYTES / 8) as usize;
        let base = (offset + start) as *mut u64;
        for index in 0..words {
            // SAFETY: the 64 MiB came from the frame allocator, accepted, and belongs to this
            // check alone; it is mapped at `offset` with all physical memory.
            unsafe { base.add(index).write_volatile(pattern(start + index as u64 * 8)) };
        }
        for index in 0..words {
            // SAFETY: as above.
            let value = unsafe { base.add(index).read_volatile() };
            if value != pattern(start + index as u64 * 8) {
                return Err(start + index as u64 * 8);
            }
        }
        Ok(())
    })
}
