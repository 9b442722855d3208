//! The virtio console (`virtio.*`), on machines that have one (the `td` machine): it came up,
//! with the values the device gave checked, and a 4 KiB batch costs one host exit in a TD.

use super::Tally;
use crate::drivers::virtio_console::{self, Probe, BATCH};
use crate::{fail, pass, skip};
use core::sync::atomic::Ordering;

pub fn run(tally: &mut Tally) {
    let info = match virtio_console::probe() {
        Probe::Up(info) => info,
        Probe::Absent | Probe::NotProbed => {
            for name in ["virtio.console", "virtio.batch"] {
                tally.record(name, skip!("no virtio console on this machine"));
            }
            return;
        }
        Probe::Failed(e) => {
            for name in ["virtio.console", "virtio.batch"] {
                tally.record(name, fail!("the virtio console did not start: {e}"));
            }
            return;
        }
    };
    tally.run("virtio.console", || {
        let batches = virtio_console::SENT_BATCHES.load(Ordering::Relaxed);
        let bytes = virtio_console::SENT_BYTES.load(Ordering::Relaxed);
        if batches == 0 || bytes == 0 {
            return fail!("up, but nothing was sent");
        }
        pass!(
            "1af4:1043 at 00:{:02x}.0, BAR {:#x}+{:#x}, transmitq of {} at GPA {:#x}, buffer at {:#x}; {bytes} bytes in {batches} batches so far",
            info.device,
            info.bar,
            info.bar_size,
            info.queue_size,
            info.queue_gpa,
            info.buffer_gpa
        )
    });
    tally.run("virtio.batch", || {
        // 4 KiB straight to the virtio console (not to serial): lines the harness ignores.
        let mut batch = [b'.'; BATCH];
        for line in batch.chunks_mut(64) {
            line[..13].copy_from_slice(b"VIRTIO-BATCH ");
            line[63] = b'\n';
        }
        let exits = || crate::counters::TDCALL_VMCALL.get();
        let (before, sent_before) = (exits(), virtio_console::SENT_BATCHES.load(Ordering::Relaxed));
        virtio_console::write(&batch);
        let calls = exits() - before;
        let batches = virtio_console::SENT_BATCHES.load(Ordering::Relaxed) - sent_before;
        let expected = if crate::tdx::is_td() { 1 } else { 0 };
        if calls == expected && batches == 1 {
            pass!("{BATCH} bytes in 1 batch with {calls} host exit(s)")
        } else {
            fail!("{BATCH} bytes in {batches} batches with {calls} host exits (want 1 and {expected})")
        }
    });
}
