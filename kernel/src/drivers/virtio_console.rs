//! A polled virtio console (virtio-serial port 0 without MULTIPORT, VIRTIO 1.2 §5.3) over
//! virtio-pci modern (§4.1), transmit only. MMIO-FACTS §5-6 is the recipe; every value the
//! device or the host gives is checked by `virtq` before use.
//!
//! - Discovery: PCI 1AF4:1043 on bus 0 through CONFIG_ADDRESS/CONFIG_DATA (`super::pci`, port
//!   #VEs in a TD); the first common and notify capabilities, each checked to lie in its BAR;
//!   the 64-bit memory BAR sized and refused if it is empty, unaligned, at or above the shared
//!   bit or over RAM (`virtq::check_bar`), then mapped shared and uncached
//!   (`crate::mm::mmio::DeviceMemory`: every register access is one RequestMMIO in a TD).
//! - Features: VERSION_1 and ACCESS_PLATFORM required and accepted, nothing else (QEMU refuses
//!   FEATURES_OK without them in a confidential guest; Linux refuses such devices in a TD).
//! - One split virtqueue, the transmitq (queue 1), of at most 16 entries, in one page of the
//!   shared pool; one 4 KiB buffer, also shared. Queue addresses are plain GPAs (KVM and QEMU
//!   strip the shared bit). avail.flags = NO_INTERRUPT: the driver polls.
//! - Sending: the bytes are copied into the shared buffer, one descriptor is made available,
//!   the queue is notified (one 16-bit MMIO write: one host exit), and the used ring is polled
//!   until the device returns that descriptor. The used index and entry are copied into
//!   private memory and checked (`virtq::check_used_index`, `check_used_entry`) before use. A
//!   4 KiB batch therefore costs one exit.
//!
//! A device that misbehaves after the console is up stops the kernel with a FATAL line on the
//! serial port (the emergency path), never a write outside the buffer.

use super::pci::{self, Function};
use crate::mm::mmio::DeviceMemory;
use crate::mm::pagetable::PageTableError;
use crate::mm::shared::{self, SharedError, SharedPages};
use bootloader_api::info::{MemoryRegionKind, MemoryRegions};
use core::sync::atomic::{compiler_fence, AtomicU64, Ordering};
use tdx_ve::mmio::AccessSize;
use virtq::{common, status, CapabilityKind, DeviceValueError, PciCapability, SplitQueueLayout};

const VIRTIO_VENDOR: u16 = 0x1AF4;
/// 0x1040 + device type 3 (console), modern only (VIRTIO §4.1.2.1).
const CONSOLE_DEVICE: u16 = 0x1043;
const VENDOR_CAPABILITY: u8 = 0x09;
/// PCI COMMAND bits: memory space, bus master, INTx disable (PCI 3.0 §6.2.2).
const COMMAND_MEMORY: u32 = 1 << 1;
const COMMAND_BUS_MASTER: u32 = 1 << 2;
const COMMAND_INTX_DISABLE: u32 = 1 << 10;
const TRANSMITQ: u16 = 1;
const MAX_QUEUE_SIZE: u16 = 16;
/// Bytes per notification.
pub const BATCH: usize = 4096;
/// VIRTQ_AVAIL_F_NO_INTERRUPT (VIRTIO §2.7.6).
const AVAIL_F_NO_INTERRUPT: u16 = 1;
/// Polls of the used index before the device counts as hung. QEMU completes a transmit
/// synchronously inside the notify, so one poll normally suffices.
const POLL_LIMIT: u32 = 1_000_000;
/// Polls of device_status after a reset.
const RESET_POLL_LIMIT: u32 = 1000;

#[derive(Clone, Copy, Debug)]
pub enum VirtioError {
    Device(DeviceValueError),
    Shared(SharedError),
    Map(PageTableError),
    /// The BAR a capability names is not a 64-bit memory BAR.
    BarKind(u8, u32),
    /// Capabilities in different BARs (QEMU puts all in BAR4).
    SplitBars,
    /// The device does not read back 0 after a reset.
    ResetStuck(u8),
    /// The device cleared FEATURES_OK.
    FeaturesRefused(u8),
    /// The used index did not move within the poll limit.
    Timeout,
}

impl From<DeviceValueError> for VirtioError {
    fn from(e: DeviceValueError) -> Self {
        Self::Device(e)
    }
}

impl core::fmt::Display for VirtioError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Device(e) => write!(f, "{e}"),
            Self::Shared(e) => write!(f, "{e}"),
            Self::Map(e) => write!(f, "mapping the BAR: {e}"),
            Self::BarKind(bar, low) => {
                write!(f, "BAR{bar} ({low:#x}) is not a 64-bit memory BAR")
            }
            Self::SplitBars => write!(f, "common and notify capabilities in different BARs"),
            Self::ResetStuck(s) => write!(f, "device_status {s:#x} after reset, not 0"),
            Self::FeaturesRefused(s) => write!(f, "FEATURES_OK not kept (device_status {s:#x})"),
            Self::Timeout => write!(f, "the device did not return the buffer"),
        }
    }
}

/// What the console found, for the self-test and the boot log.
#[derive(Clone, Copy, Debug)]
pub struct ConsoleInfo {
    pub device: u8,
    pub bar: u64,
    pub bar_size: u64,
    pub queue_size: u16,
    pub queue_gpa: u64,
    pub buffer_gpa: u64,
}

struct Console {
    info: ConsoleInfo,
    bar: DeviceMemory,
    /// Offset in the BAR of the transmitq's notification address.
    notify: u64,
    queue: SharedPages,
    layout: SplitQueueLayout,
    buffer: SharedPages,
    avail_idx: u16,
    used_idx: u16,
}

static CONSOLE: spin::Mutex<Option<Console>> = spin::Mutex::new(None);

/// What [`init`] found, for the self-test.
#[derive(Clone, Copy, Debug)]
pub enum Probe {
    NotProbed,
    Absent,
    Up(ConsoleInfo),
    Failed(VirtioError),
}

static PROBE: spin::Mutex<Probe> = spin::Mutex::new(Probe::NotProbed);

pub fn probe() -> Probe {
    *PROBE.lock()
}

/// Batches the console sent and bytes in them, for the checks and the bench.
pub static SENT_BATCHES: AtomicU64 = AtomicU64::new(0);
pub static SENT_BYTES: AtomicU64 = AtomicU64::new(0);

/// The console's PCI function, if the machine has one.
pub fn function() -> Option<Function> {
    pci::find(VIRTIO_VENDOR, CONSOLE_DEVICE)
}

/// Finds and starts the console.
pub fn init(regions: &MemoryRegions) -> Probe {
    let probe = match function() {
        None => Probe::Absent,
        Some(function) => match start(function, regions) {
            Ok(console) => {
                let info = console.info;
                *CONSOLE.lock() = Some(console);
                Probe::Up(info)
            }
            Err(e) => Probe::Failed(e),
        },
    };
    *PROBE.lock() = probe;
    probe
}

/// Runs the driver's start-up on `f` without making it the console, for the hostile-device
/// checks (`selftest::virtio_faults`), which expect a refusal. They run before [`init`], whose
/// start-up begins with a device reset.
#[cfg(feature = "test-modes")]
pub fn try_start(f: Function, regions: &MemoryRegions) -> Result<ConsoleInfo, VirtioError> {
    start(f, regions).map(|console| console.info)
}

/// The configuration-space offset and contents of `f`'s first common-configuration
/// capability, as [`init`] finds it.
#[cfg(feature = "test-modes")]
pub fn common_capability(f: Function) -> Option<(u8, PciCapability)> {
    vendor_capabilities(f).ok()?.common
}

/// A vendor capability and its offset in configuration space.
type Found = Option<(u8, PciCapability)>;

/// The first common and the first notify capability of `f`.
struct Capabilities {
    common: Found,
    notify: Found,
}

/// Walks `f`'s vendor capabilities; the first one that does not parse is an error.
fn vendor_capabilities(f: Function) -> Result<Capabilities, DeviceValueError> {
    let mut found = Capabilities { common: None, notify: None };
    let mut error = None;
    pci::capabilities(f, |offset, id| {
        if id != VENDOR_CAPABILITY || error.is_some() {
            return;
        }
        match read_capability(f, offset) {
            Ok(c) if c.kind == CapabilityKind::Common && found.common.is_none() => {
                found.common = Some((offset, c))
            }
            Ok(c) if c.kind == CapabilityKind::Notify && found.notify.is_none() => {
                found.notify = Some((offset, c))
            }
            Ok(_) => {}
            Err(e) => error = Some(e),
        }
    });
    error.map_or(Ok(found), Err)
}

/// Reads the 20 bytes of a vendor capability at `offset`.
fn read_capability(f: Function, offset: u8) -> Result<PciCapability, DeviceValueError> {
    // The 20 bytes must lie in the 256-byte configuration space.
    if offset > 0xFF - 19 {
        return Err(DeviceValueError::CapabilityLength(0));
    }
    let mut bytes = [0u8; 20];
    for (i, chunk) in bytes.as_chunks_mut::<4>().0.iter_mut().enumerate() {
        chunk.copy_from_slice(&f.read32(offset + 4 * i as u8).to_le_bytes());
    }
    PciCapability::parse(&bytes)
}

/// The address and size of 64-bit memory BAR `index`; sizing turns memory decoding off for the
/// duration (PCI 3.0 §6.2.5.1).
fn read_bar(f: Function, index: u8) -> Result<(u64, u64), VirtioError> {
    let offset = 0x10 + 4 * index;
    let low = f.read32(offset);
    if index > 4 || low & 1 != 0 || (low >> 1) & 3 != 2 {
        return Err(VirtioError::BarKind(index, low));
    }
    let high = f.read32(offset + 4);
    let command = f.read32(0x04) & 0xFFFF;
    // SAFETY: memory decoding is off while the BAR holds all ones, so the device claims no
    // addresses meanwhile; the original values are written back.
    let readback = unsafe {
        f.write32(0x04, command & !(COMMAND_MEMORY | COMMAND_BUS_MASTER));
        f.write32(offset, 0xFFFF_FFFF);
        f.write32(offset + 4, 0xFFFF_FFFF);
        let readback = (f.read32(offset + 4) as u64) << 32 | f.read32(offset) as u64;
        f.write32(offset, low);
        f.write32(offset + 4, high);
        f.write32(0x04, command);
        readback
    };
    let address = (high as u64) << 32 | (low & !0xF) as u64;
    Ok((address, virtq::bar_size(readback).unwrap_or(0)))
}

fn start(f: Function, regions: &MemoryRegions) -> Result<Console, VirtioError> {
    let found = vendor_capabilities(f)?;
    let (_, common_cap) = found.common.ok_or(DeviceValueError::MissingCapability("common"))?;
    let (_, notify_cap) = found.notify.ok_or(DeviceValueError::MissingCapability("notify"))?;
    if common_cap.bar != notify_cap.bar {
        return Err(VirtioError::SplitBars);
    }
    let (address, size) = read_bar(f, common_cap.bar)?;
    let limit = crate::mm::shared_bit().unwrap_or(1 << 52);
    let ram = regions
        .iter()
        .filter(|r| !matches!(r.kind, MemoryRegionKind::UnknownUefi(11 | 12)))
        .map(|r| (r.start, r.end));
    virtq::check_bar(address, size, limit, ram)?;
    common_cap.check_in_bar(size, common::LEN as u32)?;
    notify_cap.check_in_bar(size, 2)?;
    let bar = DeviceMemory::map(address, size).map_err(VirtioError::Map)?;

    let common = |offset: u64| common_cap.offset as u64 + offset;
    let read8 = |offset| bar.read(common(offset), AccessSize::Byte) as u8;
    let read16 = |offset| bar.read(common(offset), AccessSize::Word) as u16;
    let read32 = |offset| bar.read(common(offset), AccessSize::Dword) as u32;
    let write8 = |offset, v: u8| bar.write(common(offset), AccessSize::Byte, v as u64);
    let write16 = |offset, v: u16| bar.write(common(offset), AccessSize::Word, v as u64);
    let write32 = |offset, v: u32| bar.write(common(offset), AccessSize::Dword, v as u64);

    // Memory decoding on, bus master off until the queue is set up, INTx off (we poll).
    let command = f.read32(0x04) & 0xFFFF;
    // SAFETY: the device can reach no memory yet (bus master off).
    unsafe {
        f.write32(0x04, (command | COMMAND_MEMORY | COMMAND_INTX_DISABLE) & !COMMAND_BUS_MASTER)
    };

    // Reset, then ACKNOWLEDGE and DRIVER (VIRTIO §3.1.1).
    write8(common::DEVICE_STATUS, 0);
    let mut reset = read8(common::DEVICE_STATUS);
    for _ in 0..RESET_POLL_LIMIT {
        if reset == 0 {
            break;
        }
        core::hint::spin_loop();
        reset = read8(common::DEVICE_STATUS);
    }
    if reset != 0 {
        return Err(VirtioError::ResetStuck(reset));
    }
    let fail = |e: VirtioError| {
        write8(common::DEVICE_STATUS, status::FAILED);
        e
    };
    write8(common::DEVICE_STATUS, status::ACKNOWLEDGE);
    write8(common::DEVICE_STATUS, status::ACKNOWLEDGE | status::DRIVER);
    write32(common::DEVICE_FEATURE_SELECT, 1);
    let high = read32(common::DEVICE_FEATURE);
    virtq::check_features(high).map_err(|e| fail(e.into()))?;
    write32(common::DRIVER_FEATURE_SELECT, 0);
    write32(common::DRIVER_FEATURE, 0);
    write32(common::DRIVER_FEATURE_SELECT, 1);
    write32(common::DRIVER_FEATURE, virtq::FEATURES_HIGH_REQUIRED);
    let with_features = status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK;
    write8(common::DEVICE_STATUS, with_features);
    let now = read8(common::DEVICE_STATUS);
    if now & status::FEATURES_OK == 0 {
        return Err(fail(VirtioError::FeaturesRefused(now)));
    }

    // The transmitq.
    write16(common::QUEUE_SELECT, TRANSMITQ);
    let queue_size = virtq::check_queue_size(read16(common::QUEUE_SIZE), MAX_QUEUE_SIZE)
        .map_err(|e| fail(e.into()))?;
    write16(common::QUEUE_SIZE, queue_size);
    let notify_off = read16(common::QUEUE_NOTIFY_OFF);
    let notify = notify_cap.offset as u64
        + notify_cap.notify_offset(notify_off).map_err(|e| fail(e.into()))?;
    let layout = SplitQueueLayout::new(queue_size);
    let queue = shared::allocate(1).map_err(|e| fail(VirtioError::Shared(e)))?;
    let buffer = shared::allocate(1).map_err(|e| fail(VirtioError::Shared(e)))?;
    // SAFETY: the queue page is ours (just allocated, zeroed, shared); the layout fits a page
    // (at most 16 entries).
    unsafe { write_u16(queue.virt + layout.avail, AVAIL_F_NO_INTERRUPT) };
    for (offset, gpa) in [
        (common::QUEUE_DESC, queue.gpa + layout.desc),
        (common::QUEUE_DRIVER, queue.gpa + layout.avail),
        (common::QUEUE_DEVICE, queue.gpa + layout.used),
    ] {
        write32(offset, gpa as u32);
        write32(offset + 4, (gpa >> 32) as u32);
    }
    write16(common::QUEUE_ENABLE, 1);
    // Bus master on only now: the device may read the rings from here on (QEMU clears
    // DRIVER_OK on a COMMAND write without it, so it comes before DRIVER_OK).
    // SAFETY: the queue points at shared pages this driver owns.
    unsafe {
        f.write32(0x04, command | COMMAND_MEMORY | COMMAND_BUS_MASTER | COMMAND_INTX_DISABLE)
    };
    write8(common::DEVICE_STATUS, with_features | status::DRIVER_OK);

    Ok(Console {
        info: ConsoleInfo {
            device: f.device,
            bar: address,
            bar_size: size,
            queue_size,
            queue_gpa: queue.gpa,
            buffer_gpa: buffer.gpa,
        },
        bar,
        notify,
        queue,
        layout,
        buffer,
        avail_idx: 0,
        used_idx: 0,
    })
}

/// # Safety
/// `address` must be a writable, aligned u16 in memory this driver owns.
unsafe fn write_u16(address: u64, value: u16) {
    // SAFETY: delegated to the caller.
    unsafe { core::ptr::write_volatile(address as *mut u16, value) }
}

impl Console {
    /// Sends up to [`BATCH`] bytes and waits until the device has taken them.
    fn send(&mut self, bytes: &[u8]) -> Result<(), VirtioError> {
        let len = bytes.len().min(BATCH);
        let q = self.queue.virt;
        // SAFETY: the buffer and the queue page are this driver's shared pages, mapped
        // writable; `len` is at most the buffer's size; every offset is inside the page
        // (`SplitQueueLayout`, at most 16 entries); descriptor 0 is the only one used.
        unsafe {
            core::ptr::copy_nonoverlapping(bytes.as_ptr(), self.buffer.virt as *mut u8, len);
            core::ptr::write_volatile((q + self.layout.desc) as *mut u64, self.buffer.gpa);
            core::ptr::write_volatile((q + self.layout.desc + 8) as *mut u32, len as u32);
            core::ptr::write_volatile((q + self.layout.desc + 12) as *mut u32, 0);
            write_u16(q + self.layout.avail_slot(self.avail_idx), 0);
            // Descriptor and ring entry before the index (VIRTIO §2.7.13.3; x86 keeps stores
            // in order, the fence keeps the compiler from reordering them).
            compiler_fence(Ordering::Release);
            self.avail_idx = self.avail_idx.wrapping_add(1);
            write_u16(q + self.layout.avail + 2, self.avail_idx);
        }
        compiler_fence(Ordering::SeqCst);
        self.bar.write(self.notify, AccessSize::Word, TRANSMITQ as u64);
        let mut polls = 0;
        let new = loop {
            // SAFETY: the used index in this driver's queue page; the device writes it. The
            // value is copied into a local (private) before it is checked.
            let now = unsafe { core::ptr::read_volatile((q + self.layout.used + 2) as *const u16) };
            let new = virtq::check_used_index(self.used_idx, now, 1)?;
            if new == 1 {
                break now;
            }
            polls += 1;
            if polls == POLL_LIMIT {
                return Err(VirtioError::Timeout);
            }
            core::hint::spin_loop();
        };
        compiler_fence(Ordering::Acquire);
        let slot = q + self.layout.used_slot(self.used_idx);
        // SAFETY: the used entry in this driver's queue page, copied before it is checked.
        let (id, used_len) = unsafe {
            (
                core::ptr::read_volatile(slot as *const u32),
                core::ptr::read_volatile((slot + 4) as *const u32),
            )
        };
        virtq::check_used_entry(id, used_len, 0, BATCH as u32)?;
        self.used_idx = new;
        SENT_BATCHES.fetch_add(1, Ordering::Relaxed);
        SENT_BYTES.fetch_add(len as u64, Ordering::Relaxed);
        Ok(())
    }
}

/// Sends `bytes` on the console if it is up. A device error stops the kernel.
pub fn write(bytes: &[u8]) {
    let mut console = CONSOLE.lock();
    let Some(c) = console.as_mut() else { return };
    for chunk in bytes.chunks(BATCH) {
        if let Err(e) = c.send(chunk) {
            *console = None;
            drop(console);
            fatal(e);
        }
    }
}

/// A device that breaks the virtio contract stops the kernel. The console sits below the exit
/// path (ARCHITECTURE.md: dependencies point down), so it panics: the crate root's panic handler
/// prints the message, sends ReportFatalError and exits.
#[cold]
fn fatal(e: VirtioError) -> ! {
    panic!("virtio-console: {e}")
}
