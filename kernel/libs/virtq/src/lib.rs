//! Pure logic of the kernel's polled virtio console, with no asm, no globals and no allocation,
//! so that `cargo test` checks it on the host. Everything a device or host gives is untrusted:
//! each function here checks a value before the driver may use it (MMIO-FACTS §4: shared memory
//! is host-controlled "like userspace").
//!
//! - [`PciCapability`]: a virtio-pci vendor capability (VIRTIO 1.2 §4.1.4), checked against the
//!   BAR it names.
//! - [`SplitQueueLayout`]: where the descriptor table, available and used rings of a split
//!   virtqueue of N entries lie in one page (VIRTIO §2.7).
//! - [`UsedRing::check`]: a used-ring entry the device returned, checked against what the driver
//!   made available.

#![cfg_attr(not(test), no_std)]
#![deny(unsafe_code)]
#![warn(missing_docs)]

/// VIRTIO_F_VERSION_1 (bit 32) and VIRTIO_F_ACCESS_PLATFORM (bit 33), as bits 0 and 1 of the
/// second feature word (VIRTIO §6).
pub const FEATURES_HIGH_REQUIRED: u32 = 0b11;

/// Device status bits (VIRTIO §2.1).
pub mod status {
    /// ACKNOWLEDGE.
    pub const ACKNOWLEDGE: u8 = 1;
    /// DRIVER.
    pub const DRIVER: u8 = 2;
    /// DRIVER_OK.
    pub const DRIVER_OK: u8 = 4;
    /// FEATURES_OK.
    pub const FEATURES_OK: u8 = 8;
    /// FAILED.
    pub const FAILED: u8 = 128;
}

/// Offsets in the common configuration structure (VIRTIO §4.1.4.3).
pub mod common {
    /// le32 device_feature_select.
    pub const DEVICE_FEATURE_SELECT: u64 = 0x00;
    /// le32 device_feature.
    pub const DEVICE_FEATURE: u64 = 0x04;
    /// le32 driver_feature_select.
    pub const DRIVER_FEATURE_SELECT: u64 = 0x08;
    /// le32 driver_feature.
    pub const DRIVER_FEATURE: u64 = 0x0C;
    /// le16 num_queues.
    pub const NUM_QUEUES: u64 = 0x12;
    /// u8 device_status.
    pub const DEVICE_STATUS: u64 = 0x14;
    /// le16 queue_select.
    pub const QUEUE_SELECT: u64 = 0x16;
    /// le16 queue_size.
    pub const QUEUE_SIZE: u64 = 0x18;
    /// le16 queue_enable.
    pub const QUEUE_ENABLE: u64 = 0x1C;
    /// le16 queue_notify_off.
    pub const QUEUE_NOTIFY_OFF: u64 = 0x1E;
    /// le64 queue_desc (two le32 halves).
    pub const QUEUE_DESC: u64 = 0x20;
    /// le64 queue_driver.
    pub const QUEUE_DRIVER: u64 = 0x28;
    /// le64 queue_device.
    pub const QUEUE_DEVICE: u64 = 0x30;
    /// The structure's length up to and including queue_device.
    pub const LEN: u64 = 0x38;
}

/// The kind of a virtio-pci capability (`cfg_type`, VIRTIO §4.1.4).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum CapabilityKind {
    /// 1: common configuration.
    Common,
    /// 2: notifications (with the notify_off_multiplier).
    Notify,
    /// 3: ISR status.
    Isr,
    /// 4: device-specific configuration.
    Device,
    /// Anything else (PCI configuration access, shared memory, vendor).
    Other(u8),
}

/// A virtio-pci vendor capability.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct PciCapability {
    /// cfg_type.
    pub kind: CapabilityKind,
    /// The BAR index (0-5).
    pub bar: u8,
    /// Offset of the structure in the BAR.
    pub offset: u32,
    /// Its length.
    pub length: u32,
    /// For Notify: notify_off_multiplier.
    pub notify_off_multiplier: u32,
}

/// Why a capability or a device value was refused.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum DeviceValueError {
    /// A capability shorter than its kind requires.
    CapabilityLength(u8),
    /// BAR index above 5.
    Bar(u8),
    /// The structure does not fit in the BAR, or is shorter than the driver needs.
    OutsideBar {
        /// Offset.
        offset: u32,
        /// Length.
        length: u32,
        /// The BAR's size.
        bar_size: u64,
    },
    /// A queue size of 0, above 32768, or not a power of two.
    QueueSize(u16),
    /// A notify offset beyond the notification structure.
    NotifyOffset(u64),
    /// The used index moved by more than the buffers in flight.
    UsedIndex {
        /// What the driver last saw.
        last: u16,
        /// What the device wrote.
        now: u16,
        /// Buffers in flight.
        in_flight: u16,
    },
    /// A used entry names a descriptor that was not made available.
    UsedId(u32),
    /// A used length larger than the buffer.
    UsedLength {
        /// The length written.
        len: u32,
        /// The buffer's size.
        max: u32,
    },
    /// The device does not offer VERSION_1 and ACCESS_PLATFORM.
    Features(u32),
    /// A memory BAR that is empty, unaligned, beyond the address limit or overlapping RAM.
    BarAddress {
        /// Its address.
        address: u64,
        /// Its size.
        size: u64,
    },
    /// A required capability is missing.
    MissingCapability(&'static str),
}

impl core::fmt::Display for DeviceValueError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            Self::CapabilityLength(len) => write!(f, "capability length {len} too short"),
            Self::Bar(bar) => write!(f, "capability names BAR {bar}"),
            Self::OutsideBar { offset, length, bar_size } => write!(
                f,
                "structure at {offset:#x}+{length:#x} does not fit its BAR of {bar_size:#x} bytes"
            ),
            Self::QueueSize(size) => write!(f, "queue size {size}"),
            Self::NotifyOffset(offset) => write!(f, "notify offset {offset:#x} out of range"),
            Self::UsedIndex { last, now, in_flight } => {
                write!(f, "used index {now} after {last} with {in_flight} in flight")
            }
            Self::UsedId(id) => write!(f, "used id {id} was not made available"),
            Self::UsedLength { len, max } => write!(f, "used length {len} above {max}"),
            Self::Features(high) => {
                write!(f, "device features[63:32]={high:#x} lack VERSION_1/ACCESS_PLATFORM")
            }
            Self::BarAddress { address, size } => write!(
                f,
                "BAR at {address:#x} of {size:#x} bytes is empty, unaligned, too high or overlaps RAM"
            ),
            Self::MissingCapability(kind) => write!(f, "no {kind} capability"),
        }
    }
}

impl PciCapability {
    /// Parses the 16 (or 20, for Notify) bytes of a vendor capability (cap_vndr 0x09) as read
    /// from configuration space: {cap_vndr, cap_next, cap_len, cfg_type, bar, id, pad[2], le32
    /// offset, le32 length[, le32 notify_off_multiplier]}.
    pub fn parse(bytes: &[u8; 20]) -> Result<Self, DeviceValueError> {
        let cap_len = bytes[2];
        let kind = match bytes[3] {
            1 => CapabilityKind::Common,
            2 => CapabilityKind::Notify,
            3 => CapabilityKind::Isr,
            4 => CapabilityKind::Device,
            other => CapabilityKind::Other(other),
        };
        let needed = if kind == CapabilityKind::Notify { 20 } else { 16 };
        if cap_len < needed {
            return Err(DeviceValueError::CapabilityLength(cap_len));
        }
        let bar = bytes[4];
        if bar > 5 {
            return Err(DeviceValueError::Bar(bar));
        }
        let word =
            |i: usize| u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
        Ok(PciCapability {
            kind,
            bar,
            offset: word(8),
            length: word(12),
            notify_off_multiplier: if kind == CapabilityKind::Notify { word(16) } else { 0 },
        })
    }

    /// Checks that the structure lies inside a BAR of `bar_size` bytes and is at least
    /// `min_length` long.
    pub fn check_in_bar(&self, bar_size: u64, min_length: u32) -> Result<(), DeviceValueError> {
        let end = self.offset as u64 + self.length as u64;
        if self.length < min_length || end > bar_size {
            return Err(DeviceValueError::OutsideBar {
                offset: self.offset,
                length: self.length,
                bar_size,
            });
        }
        Ok(())
    }

    /// The offset in the notification structure where queue `queue_notify_off` is notified
    /// (VIRTIO §4.1.4.4), checked to leave room for the 16-bit write.
    pub fn notify_offset(&self, queue_notify_off: u16) -> Result<u64, DeviceValueError> {
        let offset = queue_notify_off as u64 * self.notify_off_multiplier as u64;
        if offset + 2 > self.length as u64 {
            return Err(DeviceValueError::NotifyOffset(offset));
        }
        Ok(offset)
    }
}

/// Checks a queue size the device offers; returns the size the driver uses, at most `max`
/// (a power of two).
pub fn check_queue_size(offered: u16, max: u16) -> Result<u16, DeviceValueError> {
    if offered == 0 || !offered.is_power_of_two() {
        return Err(DeviceValueError::QueueSize(offered));
    }
    Ok(offered.min(max))
}

/// Where the parts of a split virtqueue of `size` entries lie, from the start of one page.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct SplitQueueLayout {
    /// Entries.
    pub size: u16,
    /// Descriptor table: 16 bytes per entry, align 16.
    pub desc: u64,
    /// Available ring: flags, idx, ring[size], used_event; align 2.
    pub avail: u64,
    /// Used ring: flags, idx, {id, len}[size], avail_event; align 4.
    pub used: u64,
    /// Total bytes.
    pub len: u64,
}

impl SplitQueueLayout {
    /// The layout for `size` entries (VIRTIO §2.7).
    pub const fn new(size: u16) -> Self {
        let n = size as u64;
        let desc = 0;
        let avail = desc + 16 * n;
        let used = (avail + 6 + 2 * n).next_multiple_of(4);
        let len = used + 6 + 8 * n;
        SplitQueueLayout { size, desc, avail, used, len }
    }

    /// The byte offset of available-ring slot `index` (taken modulo the size).
    pub const fn avail_slot(&self, index: u16) -> u64 {
        self.avail + 4 + 2 * (index % self.size) as u64
    }

    /// The byte offset of used-ring entry `index` (modulo the size).
    pub const fn used_slot(&self, index: u16) -> u64 {
        self.used + 4 + 8 * (index % self.size) as u64
    }
}

/// Checks a used index the device wrote against the last one the driver saw and the number of
/// buffers in flight (indices wrap at 2^16, VIRTIO §2.7.8): returns how many new entries there
/// are.
pub fn check_used_index(last: u16, now: u16, in_flight: u16) -> Result<u16, DeviceValueError> {
    let new = now.wrapping_sub(last);
    if new > in_flight {
        return Err(DeviceValueError::UsedIndex { last, now, in_flight });
    }
    Ok(new)
}

/// Checks a used entry {id, len}: `id` must be the head the driver made available, and `len`
/// at most `max_len`.
pub fn check_used_entry(
    id: u32,
    len: u32,
    expected_id: u16,
    max_len: u32,
) -> Result<(), DeviceValueError> {
    if id != expected_id as u32 {
        return Err(DeviceValueError::UsedId(id));
    }
    if len > max_len {
        return Err(DeviceValueError::UsedLength { len, max: max_len });
    }
    Ok(())
}

/// Checks the device's feature bits 63:32 for VERSION_1 and ACCESS_PLATFORM.
pub fn check_features(high: u32) -> Result<(), DeviceValueError> {
    if high & FEATURES_HIGH_REQUIRED != FEATURES_HIGH_REQUIRED {
        return Err(DeviceValueError::Features(high));
    }
    Ok(())
}

/// The size of a memory BAR from the value read back after writing all ones (64-bit: both
/// halves combined), or None for an unimplemented BAR (PCI Local Bus 3.0 §6.2.5.1).
pub const fn bar_size(readback: u64) -> Option<u64> {
    let mask = readback & !0xF;
    if mask == 0 {
        return None;
    }
    Some(mask.isolate_lowest_one())
}

/// Checks a memory BAR the firmware (that is, the host) assigned: not empty, naturally aligned,
/// below `limit` (the shared bit in a TD: a BAR there would alias another GPA) and outside
/// every RAM range `[start, end)`: a BAR over private memory would let the host's device
/// model shadow it, and the driver's MMIO would reach RAM.
pub fn check_bar(
    address: u64,
    size: u64,
    limit: u64,
    mut ram: impl Iterator<Item = (u64, u64)>,
) -> Result<(), DeviceValueError> {
    let bad = DeviceValueError::BarAddress { address, size };
    let Some(end) = address.checked_add(size) else { return Err(bad) };
    if size == 0
        || !size.is_power_of_two()
        || !address.is_multiple_of(size)
        || address == 0
        || end > limit
    {
        return Err(bad);
    }
    if ram.any(|(start, stop)| start < end && address < stop) {
        return Err(bad);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn layout_for_16_fits_a_page() {
        let l = SplitQueueLayout::new(16);
        assert_eq!((l.desc, l.avail, l.used), (0, 256, 296));
        assert_eq!(l.len, 296 + 6 + 128);
        assert!(l.len <= 4096);
        assert_eq!(l.avail_slot(17), 256 + 4 + 2);
        assert_eq!(l.used_slot(16), 296 + 4);
        // Odd sizes still align the used ring to 4.
        assert_eq!(SplitQueueLayout::new(1).used, 24);
    }

    #[test]
    fn capabilities() {
        let mut raw = [0u8; 20];
        raw[..16].copy_from_slice(&[0x09, 0x50, 20, 2, 4, 0, 0, 0, 0, 0x30, 0, 0, 0, 0x10, 0, 0]);
        raw[16..].copy_from_slice(&4u32.to_le_bytes());
        let notify = PciCapability::parse(&raw).unwrap();
        assert_eq!(notify.kind, CapabilityKind::Notify);
        assert_eq!((notify.bar, notify.offset, notify.length), (4, 0x3000, 0x1000));
        assert_eq!(notify.notify_offset(1), Ok(4));
        assert_eq!(notify.notify_offset(1024), Err(DeviceValueError::NotifyOffset(4096)));
        assert_eq!(notify.check_in_bar(0x4000, 2), Ok(()));
        assert!(notify.check_in_bar(0x3fff, 2).is_err());
        raw[2] = 16;
        assert_eq!(PciCapability::parse(&raw), Err(DeviceValueError::CapabilityLength(16)));
        raw[2] = 20;
        raw[4] = 6;
        assert_eq!(PciCapability::parse(&raw), Err(DeviceValueError::Bar(6)));
        let huge = PciCapability { offset: u32::MAX, length: u32::MAX, ..notify };
        assert!(huge.check_in_bar(1 << 33, 0).is_ok());
        assert!(huge.check_in_bar((1 << 33) - 3, 0).is_err());
    }

    #[test]
    fn device_values() {
        assert_eq!(check_queue_size(256, 16), Ok(16));
        assert_eq!(check_queue_size(8, 16), Ok(8));
        for bad in [0, 3, 100, 0xffff] {
            assert_eq!(check_queue_size(bad, 16), Err(DeviceValueError::QueueSize(bad)));
        }
        assert_eq!(check_used_index(0xffff, 0, 1), Ok(1));
        assert_eq!(check_used_index(5, 5, 1), Ok(0));
        assert!(check_used_index(5, 7, 1).is_err());
        assert!(check_used_index(5, 4, 1).is_err());
        assert_eq!(check_used_entry(3, 0, 3, 4096), Ok(()));
        assert_eq!(check_used_entry(4, 0, 3, 4096), Err(DeviceValueError::UsedId(4)));
        assert!(check_used_entry(3, 4097, 3, 4096).is_err());
        assert_eq!(check_features(0b11), Ok(()));
        assert!(check_features(0b01).is_err());
    }

    #[test]
    fn bars() {
        assert_eq!(bar_size(0xFFFF_FFFF_FFFF_C00C), Some(0x4000));
        assert_eq!(bar_size(0), None);
        let ram = [(0, 0x8000_0000), (0x1_0000_0000, 0x1_2000_0000)];
        let limit = 1 << 47;
        assert_eq!(check_bar(0xC000_0000, 0x4000, limit, ram.into_iter()), Ok(()));
        assert_eq!(check_bar(0x38_0000_0000, 0x4000, limit, ram.into_iter()), Ok(()));
        for (address, size) in [
            (0x7FFF_C000, 0x4000),      // the last RAM page
            (0x1_1000_0000, 0x4000),    // high RAM
            (0xC000_2000, 0x4000),      // unaligned
            (0xC000_0000, 0),           // empty
            (0xC000_0000, 0x3000),      // not a power of two
            (0, 0x4000),                // unassigned
            (limit - 0x2000, 0x4000),   // crosses the limit (unaligned too)
            (limit, 0x4000),            // at the shared bit
            (u64::MAX - 0xFFF, 0x1000), // wraps
        ] {
            assert!(check_bar(address, size, limit, ram.into_iter()).is_err(), "{address:#x}");
        }
    }

    proptest! {
        #[test]
        fn a_bar_is_refused_exactly_when_it_touches_ram(page in 0u64..64, pages in 1u64..8) {
            let ram = [(0x10_000u64, 0x20_000u64)];
            let size = 0x1000u64 << pages.trailing_zeros();
            let address = (page * 0x1000 / size) * size;
            let overlaps = address < 0x20_000 && 0x10_000 < address + size;
            let ok = check_bar(address, size, 1 << 47, ram.into_iter()).is_ok();
            prop_assert_eq!(ok, !overlaps && address != 0);
        }

        #[test]
        fn used_index_accepts_exactly_up_to_in_flight(last: u16, delta: u16, in_flight: u16) {
            let now = last.wrapping_add(delta);
            prop_assert_eq!(check_used_index(last, now, in_flight).is_ok(), delta <= in_flight);
        }

        #[test]
        fn layouts_do_not_overlap(size in 1u16..=256) {
            let l = SplitQueueLayout::new(size);
            prop_assert!(l.avail >= l.desc + 16 * size as u64);
            prop_assert!(l.used >= l.avail + 6 + 2 * size as u64);
            prop_assert_eq!(l.used % 4, 0);
            prop_assert!(l.used_slot(size - 1) + 8 <= l.len - 2);
        }
    }
}
