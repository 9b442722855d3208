//! QEMU's fw_cfg device: named files read through its I/O ports (QEMU docs/specs/fw_cfg.rst:
//! selector port 0x510 (16-bit write), data port 0x511 (byte reads), signature "QEMU" under
//! selector 0, file directory under selector 0x19 (big-endian count, then 64-byte entries:
//! size, select, reserved, 56-byte name)).
//!
//! What the host puts there is the host's: the kernel reads it only to check the boot handoff
//! (`etc/e820`) and, in the test image, for its boot mode.

use crate::port::{inb, outw};

const FW_CFG_SELECTOR: u16 = 0x510;
const FW_CFG_DATA: u16 = 0x511;
const FW_CFG_SIGNATURE: u16 = 0x0000;
const FW_CFG_FILE_DIR: u16 = 0x0019;
/// The most directory entries the walk reads. QEMU offers about 30 files on the machines here
/// and holds at most `x-file-slots` of them, 0x20 by default (FW_CFG_FILE_SLOTS_DFLT,
/// hw/nvram/fw_cfg.c); the kernel's own files (`etc/e820`, the boot mode under `opt/`) are among
/// them. The count comes from the host, up to 4096 in QEMU's format: every entry is 64 port
/// reads, each a host exit in a TD (a #VE each), so an untrusted count is capped at twice the
/// default number of slots (64 entries, 4096 reads) instead of trusted.
pub const MAX_DIRECTORY_ENTRIES: u32 = 64;

fn select(key: u16) {
    // SAFETY: fw_cfg's selector port only chooses which item the data port returns.
    unsafe { outw(FW_CFG_SELECTOR, key) };
}

fn read_bytes(buffer: &mut [u8]) {
    for byte in buffer.iter_mut() {
        // SAFETY: reading the fw_cfg data port only advances the item's read offset.
        *byte = unsafe { inb(FW_CFG_DATA) };
    }
}

/// Reads fw_cfg file `name` into `buffer`; returns its full size (which may exceed the buffer,
/// whose first bytes are then filled), or `None` without fw_cfg or without that file.
pub fn file(name: &[u8], buffer: &mut [u8]) -> Option<usize> {
    let item = find(name)?;
    Some(read_item(item, buffer))
}

/// A file's item in the directory: its select key and size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Item {
    key: u16,
    size: usize,
}

/// Finds file `name` in the directory: `None` without fw_cfg or without that file.
pub fn find(name: &[u8]) -> Option<Item> {
    select(FW_CFG_SIGNATURE);
    let mut signature = [0u8; 4];
    read_bytes(&mut signature);
    if &signature != b"QEMU" {
        return None;
    }
    select(FW_CFG_FILE_DIR);
    let mut count = [0u8; 4];
    read_bytes(&mut count);
    let count = u32::from_be_bytes(count).min(MAX_DIRECTORY_ENTRIES);
    for _ in 0..count {
        let mut entry = [0u8; 64];
        read_bytes(&mut entry);
        let size = u32::from_be_bytes([entry[0], entry[1], entry[2], entry[3]]) as usize;
        let key = u16::from_be_bytes([entry[4], entry[5]]);
        let entry_name = &entry[8..];
        let name_len = entry_name.iter().position(|&b| b == 0).unwrap_or(entry_name.len());
        if &entry_name[..name_len] == name {
            return Some(Item { key, size });
        }
    }
    None
}

/// Reads a file found with [`find`] into `buffer`; returns its full size (which may exceed the
/// buffer, whose first bytes are then filled).
pub fn read_item(item: Item, buffer: &mut [u8]) -> usize {
    let len = item.size.min(buffer.len());
    select(item.key);
    read_bytes(&mut buffer[..len]);
    item.size
}
