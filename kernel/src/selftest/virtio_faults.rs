//! A hostile host's virtio console (`fault.virtio.*`), under softtdx: the model's VMM lies
//! about one device value at a time (`softtdx::device`), the driver's start-up must refuse it
//! with its own error, and the kernel carries on.
//!
//! The start-ups run before the console is brought up ([`before_console`], called from
//! `kernel_main`): a refused start-up leaves the device FAILED or reset, and the real start-up
//! that follows begins with a reset of its own. Their results are reported later with the other
//! host faults ([`report`]). A used index or used length the device gets wrong after the
//! console is up stops the kernel instead (the `fatal:virtio-used-*` runs).

use super::Tally;
use crate::drivers::virtio_console::{self, VirtioError};
use crate::softtdx::device::{self, DeviceLie};
use crate::{fail, pass, skip};
use bootloader_api::info::MemoryRegions;
use tdx_ve::mmio::AccessSize;
use virtq::{common, DeviceValueError as D};
use VirtioError::Device;

/// Where a lie about a BAR puts it: 1 MiB, RAM on every machine we boot.
const BAR_IN_RAM: u32 = 0x0010_0000;
/// A BAR high dword with GPA bit 47 set: at or above the shared bit under softtdx (GPAW 48).
const BAR_HIGH_SHARED_BIT: u32 = 1 << 15;
/// A capability offset no BAR of the device holds.
const OFFSET_OUTSIDE: u32 = 0xFFFF_F000;

/// Whether a start-up's error is the refusal a scenario expects.
type Expected = fn(&VirtioError) -> bool;

/// Each scenario's check, and the refusal it expects.
const SCENARIOS: [(&str, Expected); 7] = [
    ("fault.virtio.capability_length", |e| matches!(e, Device(D::CapabilityLength(4)))),
    ("fault.virtio.capability_offset", |e| {
        matches!(e, Device(D::OutsideBar { offset: OFFSET_OUTSIDE, .. }))
    }),
    (
        "fault.virtio.bar_over_ram",
        |e| matches!(e, Device(D::BarAddress { address, .. }) if *address == BAR_IN_RAM as u64),
    ),
    (
        "fault.virtio.bar_above_shared_bit",
        |e| matches!(e, Device(D::BarAddress { address, .. }) if address & 1 << 47 != 0),
    ),
    ("fault.virtio.features", |e| matches!(e, Device(D::Features(1)))),
    ("fault.virtio.queue_size", |e| matches!(e, Device(D::QueueSize(3)))),
    ("fault.virtio.notify_offset", |e| matches!(e, Device(D::NotifyOffset(_)))),
];

/// Per scenario: what the start-up returned, and how many reads the lie answered.
type Outcome = (Result<(), VirtioError>, u32);

// One static instance: its size costs nothing, and boxing would need the heap.
#[allow(clippy::large_enum_variant)]
enum Results {
    NotRun,
    NoConsole,
    NoCommonCapability,
    Ran([Outcome; SCENARIOS.len()]),
}

static RESULTS: spin::Mutex<Results> = spin::Mutex::new(Results::NotRun);

/// Runs every scenario's start-up with its lie armed, when the model is on and the machine has
/// a virtio console.
pub fn before_console(regions: &MemoryRegions) {
    if !crate::softtdx::is_active() {
        return;
    }
    let Some(f) = virtio_console::function() else {
        *RESULTS.lock() = Results::NoConsole;
        return;
    };
    let Some((at, cap)) = virtio_console::common_capability(f) else {
        *RESULTS.lock() = Results::NoCommonCapability;
        return;
    };
    let bar = 0x10 + 4 * cap.bar;
    let (bar_low, bar_high) = (f.read32(bar), f.read32(bar + 4));
    let header = f.read32(at);
    let offset = f.read32(at + 8);
    let common_gpa = ((bar_high as u64) << 32 | (bar_low & !0xF) as u64) + cap.offset as u64;
    let config = |register: u8, real: u32, fake: u32| {
        Some(DeviceLie::Config { address: f.config_address(register), real, fake })
    };
    let mmio = |register: u64, size: AccessSize, fake: u64| {
        Some(DeviceLie::Mmio { gpa: common_gpa + register, size, fake })
    };
    let lies: [[Option<DeviceLie>; 2]; SCENARIOS.len()] = [
        // cap_len (byte 2 of the header dword) 4: shorter than the 16 bytes a common
        // capability has.
        [config(at, header, header & !0x00FF_0000 | 4 << 16), None],
        [config(at + 8, offset, OFFSET_OUTSIDE), None],
        [config(bar, bar_low, BAR_IN_RAM | bar_low & 0xF), config(bar + 4, bar_high, 0)],
        [config(bar + 4, bar_high, bar_high | BAR_HIGH_SHARED_BIT), None],
        // Features 63:32 with VERSION_1 but without ACCESS_PLATFORM.
        [mmio(common::DEVICE_FEATURE, AccessSize::Dword, 1), None],
        [mmio(common::QUEUE_SIZE, AccessSize::Word, 3), None],
        [mmio(common::QUEUE_NOTIFY_OFF, AccessSize::Word, 0xFFFF), None],
    ];
    let outcomes = lies.map(|lie| {
        device::arm(lie);
        let result = virtio_console::try_start(f, regions).map(|_| ());
        (result, device::arm([None, None]))
    });
    *RESULTS.lock() = Results::Ran(outcomes);
}

/// Reports the scenarios' checks.
pub fn report(tally: &mut Tally) {
    let outcomes = match &*RESULTS.lock() {
        Results::Ran(outcomes) => *outcomes,
        Results::NoConsole => {
            for (name, _) in SCENARIOS {
                tally.record(name, skip!("no virtio console on this machine"));
            }
            return;
        }
        Results::NotRun => {
            for (name, _) in SCENARIOS {
                tally.record(name, fail!("the hostile-device start-ups did not run"));
            }
            return;
        }
        Results::NoCommonCapability => {
            for (name, _) in SCENARIOS {
                tally.record(name, fail!("the console has no common capability to lie about"));
            }
            return;
        }
    };
    for ((name, expected), (result, told)) in SCENARIOS.into_iter().zip(outcomes) {
        tally.run(name, || match result {
            Err(e) if expected(&e) && told > 0 => pass!("refused: {e} ({told} lying read(s))"),
            Err(e) => fail!("wrong refusal: {e} ({told} lying read(s))"),
            Ok(()) => fail!("the start-up accepted the device ({told} lying read(s))"),
        });
    }
}
