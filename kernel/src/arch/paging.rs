//! Page-table entry bits of 4-level paging (Intel SDM Vol. 3A §4.5, "4-Level Paging and
//! 5-Level Paging", Tables 4-15 to 4-20): one list for every walker and editor of the kernel's
//! tables (the address checks, the page-table edits, softtdx's EPT and physical-map models).

pub const PRESENT: u64 = 1 << 0;
pub const WRITABLE: u64 = 1 << 1;
pub const WRITE_THROUGH: u64 = 1 << 3;
pub const CACHE_DISABLE: u64 = 1 << 4;
/// PS in a PDPTE or PDE: the entry maps a 1 GiB or 2 MiB page.
pub const HUGE_PAGE: u64 = 1 << 7;
/// PAT in a 4 KiB leaf: bit 7, where a larger leaf has PS. (This and the other softtdx-only
/// bits exist in the test image only.)
#[cfg(feature = "test-modes")]
pub const PAT_4K: u64 = 1 << 7;
/// PAT in a 2 MiB or 1 GiB leaf.
#[cfg(feature = "test-modes")]
pub const PAT_LARGE: u64 = 1 << 12;
pub const NO_EXECUTE: u64 = 1 << 63;
/// Bits 51:12 of an entry: the frame of a 4 KiB leaf or the next table (in a TD, including a
/// shared bit at 47 or 51).
pub const FRAME_MASK: u64 = 0x000F_FFFF_FFFF_F000;
/// Bits 51:21 of a 2 MiB leaf: its frame.
#[cfg(feature = "test-modes")]
pub const FRAME_MASK_2M: u64 = 0x000F_FFFF_FFE0_0000;
