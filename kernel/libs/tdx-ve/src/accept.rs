//! TDG.MEM.PAGE.ACCEPT (TDCALL leaf 6): its operand, its statuses, and how a range is
//! accepted, as pure logic the kernel drives with a real TDCALL and the host tests drive with a
//! model of the TDX module.
//!
//! Sources (intel/tdx-module):
//! - `src/td_dispatcher/vm_exits/tdg_mem_page_accept.c`, `tdg_mem_page_accept`: RCX is a
//!   `page_info_api_input_t` (level in bits 2:0, reserved bits 11:3 and 63:52, GPA in 51:12),
//!   checked by `verify_page_info_input(gpa_mappings, LVL_PT, LVL_PD)` (level 0 = 4 KiB or 1 =
//!   2 MiB only; a 1 GiB accept is TDX_OPERAND_INVALID) and `check_gpa_validity(...,
//!   PRIVATE_ONLY, ...)` (no shared bit, nothing above GPAW); failures are
//!   `api_error_with_operand_id(TDX_OPERAND_INVALID, OPERAND_ID_RCX)`.
//! - the same function's failure types: `TDACCEPT_ALREADY_ACCEPTED` →
//!   `TDX_PAGE_ALREADY_ACCEPTED | ept_level`, `TDACCEPT_SIZE_MISMATCH` (the 2 MiB entry is a
//!   non-leaf: the VMM mapped the range at 4 KiB) → `TDX_PAGE_SIZE_MISMATCH | ept_level`,
//!   `TDACCEPT_AQCUIRE_LOCK_FAILURE` (the SEPT entry is locked by the host side) →
//!   `TDX_OPERAND_BUSY | OPERAND_ID_RCX`; a page that is neither pending nor mapped makes an
//!   asynchronous TD exit (EPT violation) instead of returning.
//! - `include/auto_gen/tdx_error_codes_defs.h`: TDX_SUCCESS 0, TDX_OPERAND_BUSY
//!   0x8000_0200_0000_0000, TDX_PAGE_ALREADY_ACCEPTED 0x0000_0B0A_0000_0000,
//!   TDX_PAGE_SIZE_MISMATCH 0xC000_0B0B_0000_0000, TDX_OPERAND_INVALID 0xC000_0100_0000_0000.
//!   Bits 31:0 carry the operand id or level, so statuses are compared on bits 63:32.
//!
//! Policy (as td-shim `td_accept_pages` and Linux `try_accept_one`, without the 1 GiB attempt,
//! which module 1.5.01 refuses): 2 MiB where the range allows it; SIZE_MISMATCH redoes that
//! 2 MiB as 512 accepts of 4 KiB (upstream KVM maps TD private memory at 4 KiB only,
//! `tdx_gmem_private_max_mapping_level`); ALREADY_ACCEPTED is counted and skipped (the page was
//! *not* zeroed by this call); OPERAND_BUSY is retried up to [`MAX_BUSY_RETRIES`] times; any
//! other status is an error carrying it, for the caller to treat as fatal.

/// The TDCALL leaf number of TDG.MEM.PAGE.ACCEPT.
pub const LEAF: u64 = 6;

/// 4 KiB.
pub const SIZE_4K: u64 = 4096;
/// 2 MiB.
pub const SIZE_2M: u64 = 2 * 1024 * 1024;
/// 4 KiB pages in a 2 MiB page.
pub const PAGES_4K_PER_2M: u64 = SIZE_2M / SIZE_4K;

/// How many times one accept is re-issued after TDX_OPERAND_BUSY before giving up.
pub const MAX_BUSY_RETRIES: u32 = 16;

/// The mapping level of an accept (RCX bits 2:0): 0 = 4 KiB, 1 = 2 MiB. 1 GiB (2) is never
/// used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PageLevel {
    /// 4 KiB (EPT level 0, `LVL_PT`).
    Size4K = 0,
    /// 2 MiB (EPT level 1, `LVL_PD`).
    Size2M = 1,
}

impl PageLevel {
    /// The page size in bytes.
    pub const fn size(self) -> u64 {
        match self {
            PageLevel::Size4K => SIZE_4K,
            PageLevel::Size2M => SIZE_2M,
        }
    }
}

/// RCX for one accept: the GPA with the level in bits 2:0. The GPA must be aligned to the
/// level's page size (the module refuses it otherwise).
pub const fn rcx(gpa: u64, level: PageLevel) -> u64 {
    gpa | level as u64
}

/// TDX_SUCCESS.
pub const TDX_SUCCESS: u64 = 0;
/// TDX_OPERAND_INVALID (`tdx_error_codes_defs.h`).
pub const TDX_OPERAND_INVALID: u64 = 0xC000_0100_0000_0000;
/// TDX_OPERAND_BUSY (`tdx_error_codes_defs.h`).
pub const TDX_OPERAND_BUSY: u64 = 0x8000_0200_0000_0000;
/// TDX_PAGE_ALREADY_ACCEPTED (`tdx_error_codes_defs.h`): bit 63 clear, not an error class.
pub const TDX_PAGE_ALREADY_ACCEPTED: u64 = 0x0000_0B0A_0000_0000;
/// TDX_PAGE_SIZE_MISMATCH (`tdx_error_codes_defs.h`).
pub const TDX_PAGE_SIZE_MISMATCH: u64 = 0xC000_0B0B_0000_0000;
/// OPERAND_ID_RCX (`tdx_error_codes_defs.h`), in the details of OPERAND_INVALID and BUSY.
pub const OPERAND_ID_RCX: u64 = 1;

const CLASS_MASK: u64 = 0xFFFF_FFFF_0000_0000;

/// What one TDG.MEM.PAGE.ACCEPT returned, classified on RAX bits 63:32.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AcceptStatus {
    /// The page is accepted and zeroed.
    Success,
    /// The page was already accepted (mapped and guest-accessible); nothing was zeroed.
    AlreadyAccepted,
    /// A 2 MiB accept of a range the VMM mapped at 4 KiB.
    SizeMismatch,
    /// The SEPT entry was locked by a host-side operation; the call may be repeated.
    OperandBusy,
    /// Any other status, whole.
    Other(u64),
}

impl From<u64> for AcceptStatus {
    fn from(rax: u64) -> Self {
        match rax & CLASS_MASK {
            TDX_SUCCESS => AcceptStatus::Success,
            TDX_PAGE_ALREADY_ACCEPTED => AcceptStatus::AlreadyAccepted,
            TDX_PAGE_SIZE_MISMATCH => AcceptStatus::SizeMismatch,
            TDX_OPERAND_BUSY => AcceptStatus::OperandBusy,
            _ => AcceptStatus::Other(rax),
        }
    }
}

/// A range that cannot be accepted as given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AcceptError {
    /// The start or length is not a multiple of 4 KiB, or the range wraps.
    Unaligned {
        /// The range's first byte.
        gpa: u64,
        /// Its length.
        len: u64,
    },
    /// The module returned a status this policy does not handle (including SIZE_MISMATCH on a
    /// 4 KiB accept, and OPERAND_BUSY after [`MAX_BUSY_RETRIES`] retries).
    Status {
        /// The page the call was for.
        gpa: u64,
        /// Its level.
        level: PageLevel,
        /// RAX as the module returned it.
        status: u64,
    },
}

impl core::fmt::Display for AcceptError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            AcceptError::Unaligned { gpa, len } => {
                write!(f, "range {gpa:#x}+{len:#x} is not 4 KiB-aligned")
            }
            AcceptError::Status { gpa, level, status } => write!(
                f,
                "TDG.MEM.PAGE.ACCEPT of GPA {gpa:#x} ({}) returned status {status:#018x}",
                match level {
                    PageLevel::Size4K => "4 KiB",
                    PageLevel::Size2M => "2 MiB",
                }
            ),
        }
    }
}

/// What accepting a range took.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AcceptStats {
    /// TDCALLs made, retries included.
    pub calls: u64,
    /// 2 MiB pages accepted by this call sequence (zeroed by the module).
    pub accepted_2m: u64,
    /// 4 KiB pages accepted by this call sequence (zeroed by the module).
    pub accepted_4k: u64,
    /// Accepts answered TDX_PAGE_ALREADY_ACCEPTED, in bytes: memory *not* zeroed by this call.
    pub already_accepted_bytes: u64,
    /// The first GPA answered TDX_PAGE_ALREADY_ACCEPTED, for the log.
    pub first_already_accepted: Option<u64>,
    /// 2 MiB accepts redone as 512 accepts of 4 KiB after TDX_PAGE_SIZE_MISMATCH.
    pub size_mismatches: u64,
    /// Accepts repeated after TDX_OPERAND_BUSY.
    pub busy_retries: u64,
}

impl AcceptStats {
    /// Adds `other` to `self` (the first already-accepted GPA stays the earliest one seen).
    pub fn add(&mut self, other: &AcceptStats) {
        self.calls += other.calls;
        self.accepted_2m += other.accepted_2m;
        self.accepted_4k += other.accepted_4k;
        self.already_accepted_bytes += other.already_accepted_bytes;
        self.first_already_accepted = self.first_already_accepted.or(other.first_already_accepted);
        self.size_mismatches += other.size_mismatches;
        self.busy_retries += other.busy_retries;
    }
}

/// Checks that `[gpa, gpa + len)` is 4 KiB-aligned and does not wrap; returns its end.
fn range_end(gpa: u64, len: u64) -> Result<u64, AcceptError> {
    let end = gpa.checked_add(len).ok_or(AcceptError::Unaligned { gpa, len })?;
    if !gpa.is_multiple_of(SIZE_4K) || !len.is_multiple_of(SIZE_4K) {
        return Err(AcceptError::Unaligned { gpa, len });
    }
    Ok(end)
}

/// The level of the next accept at `gpa` below `end`: 2 MiB when allowed, aligned and whole.
fn next_level(gpa: u64, end: u64, use_2m: bool) -> PageLevel {
    if use_2m && gpa.is_multiple_of(SIZE_2M) && end - gpa >= SIZE_2M {
        PageLevel::Size2M
    } else {
        PageLevel::Size4K
    }
}

/// One page at one level, with OPERAND_BUSY retried: the status that ended it.
fn accept_one(
    gpa: u64,
    level: PageLevel,
    tdcall: &mut impl FnMut(u64) -> u64,
    stats: &mut AcceptStats,
) -> Result<AcceptStatus, AcceptError> {
    let mut retries = 0;
    loop {
        stats.calls += 1;
        let status = tdcall(rcx(gpa, level));
        match AcceptStatus::from(status) {
            AcceptStatus::OperandBusy if retries < MAX_BUSY_RETRIES => {
                retries += 1;
                stats.busy_retries += 1;
            }
            AcceptStatus::Success => return Ok(AcceptStatus::Success),
            AcceptStatus::AlreadyAccepted => {
                stats.already_accepted_bytes += level.size();
                stats.first_already_accepted.get_or_insert(gpa);
                return Ok(AcceptStatus::AlreadyAccepted);
            }
            AcceptStatus::SizeMismatch if level == PageLevel::Size2M => {
                return Ok(AcceptStatus::SizeMismatch)
            }
            _ => return Err(AcceptError::Status { gpa, level, status }),
        }
    }
}

/// Accepts `[gpa, gpa + len)` through `tdcall`, which makes one TDG.MEM.PAGE.ACCEPT with the
/// given RCX and returns RAX. Stops at the first status the policy does not handle.
///
/// `use_2m` is the caller's memory of how the VMM maps private memory: while it is true, 2 MiB
/// accepts are tried where the range allows; the first TDX_PAGE_SIZE_MISMATCH clears it (the
/// VMM maps at 4 KiB, as upstream KVM always does), so later chunks go straight to 4 KiB
/// instead of paying a failed 2 MiB accept, which on KVM is a TD exit, per 2 MiB.
pub fn accept_range(
    gpa: u64,
    len: u64,
    use_2m: &mut bool,
    mut tdcall: impl FnMut(u64) -> u64,
) -> Result<AcceptStats, AcceptError> {
    let end = range_end(gpa, len)?;
    let mut stats = AcceptStats::default();
    let mut page = gpa;
    while page < end {
        let level = next_level(page, end, *use_2m);
        match accept_one(page, level, &mut tdcall, &mut stats)? {
            AcceptStatus::Success => match level {
                PageLevel::Size2M => stats.accepted_2m += 1,
                PageLevel::Size4K => stats.accepted_4k += 1,
            },
            AcceptStatus::SizeMismatch => {
                stats.size_mismatches += 1;
                *use_2m = false;
                // Redone below as 4 KiB accepts, from the same page.
                continue;
            }
            _ => {}
        }
        page += level.size();
    }
    Ok(stats)
}

/// The still-unaccepted part of one unaccepted region, at 2 MiB granularity (as Linux's EFI
/// unaccepted-memory table): bit `i` of `bits` set means the 2 MiB unit at
/// `base + i * 2 MiB`, clipped to the region, has not been accepted yet.
#[derive(Debug)]
pub struct UnacceptedBitmap<'a> {
    start: u64,
    end: u64,
    base: u64,
    bits: &'a mut [u64],
}

impl<'a> UnacceptedBitmap<'a> {
    /// The 64-bit words a bitmap for `[start, end)` needs.
    pub const fn words(start: u64, end: u64) -> usize {
        let units = (end.next_multiple_of(SIZE_2M) - start / SIZE_2M * SIZE_2M) / SIZE_2M;
        units.div_ceil(64) as usize
    }

    /// Every 2 MiB unit of `[start, end)` unaccepted; `bits` must have [`Self::words`] words.
    pub fn new(start: u64, end: u64, bits: &'a mut [u64]) -> Self {
        let base = start / SIZE_2M * SIZE_2M;
        let units = ((end.next_multiple_of(SIZE_2M) - base) / SIZE_2M) as usize;
        for (index, word) in bits.iter_mut().enumerate() {
            let first = index * 64;
            *word = match units.saturating_sub(first) {
                0 => 0,
                n if n >= 64 => u64::MAX,
                n => (1u64 << n) - 1,
            };
        }
        Self { start, end, base, bits }
    }

    /// The region, `[start, end)`.
    pub fn region(&self) -> (u64, u64) {
        (self.start, self.end)
    }

    /// The first still-unaccepted unit that `[from, to)` touches, as the range to accept
    /// (clipped to the region); its bit is cleared, so the caller must accept it now.
    pub fn take(&mut self, from: u64, to: u64) -> Option<(u64, u64)> {
        let from = from.max(self.start);
        let to = to.min(self.end);
        if from >= to {
            return None;
        }
        let first = (from - self.base) / SIZE_2M;
        let last = (to - 1 - self.base) / SIZE_2M;
        for unit in first..=last {
            let (word, bit) = ((unit / 64) as usize, unit % 64);
            if self.bits[word] & (1 << bit) != 0 {
                self.bits[word] &= !(1 << bit);
                let unit_start = self.base + unit * SIZE_2M;
                return Some((unit_start.max(self.start), (unit_start + SIZE_2M).min(self.end)));
            }
        }
        None
    }

    /// Units not accepted yet.
    pub fn remaining(&self) -> u64 {
        self.bits.iter().map(|w| u64::from(w.count_ones())).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    const MIB: u64 = 1024 * 1024;
    const GIB: u64 = 1024 * MIB;

    /// A module that maps everything at 4 KiB (upstream KVM) or 2 MiB, with a set of pages
    /// already accepted and a number of BUSY answers before each real one.
    struct FakeModule {
        map_4k_only: bool,
        accepted: BTreeSet<u64>,
        busy_each: u32,
        busy_left: u32,
        calls: Vec<u64>,
    }

    impl FakeModule {
        fn new(map_4k_only: bool) -> Self {
            Self {
                map_4k_only,
                accepted: BTreeSet::new(),
                busy_each: 0,
                busy_left: 0,
                calls: vec![],
            }
        }

        fn call(&mut self, rcx: u64) -> u64 {
            self.calls.push(rcx);
            if self.busy_left > 0 {
                self.busy_left -= 1;
                return TDX_OPERAND_BUSY | OPERAND_ID_RCX;
            }
            self.busy_left = self.busy_each;
            let (gpa, level) = (rcx & !0xFFF, rcx & 7);
            if level == 1 && self.map_4k_only {
                return TDX_PAGE_SIZE_MISMATCH | 1;
            }
            let pages = if level == 1 { PAGES_4K_PER_2M } else { 1 };
            if (0..pages).any(|i| self.accepted.contains(&(gpa + i * SIZE_4K))) {
                return TDX_PAGE_ALREADY_ACCEPTED | level;
            }
            for i in 0..pages {
                self.accepted.insert(gpa + i * SIZE_4K);
            }
            TDX_SUCCESS
        }
    }

    #[test]
    fn statuses_are_compared_on_their_high_32_bits() {
        assert_eq!(AcceptStatus::from(0), AcceptStatus::Success);
        assert_eq!(
            AcceptStatus::from(TDX_PAGE_ALREADY_ACCEPTED | 1),
            AcceptStatus::AlreadyAccepted
        );
        assert_eq!(AcceptStatus::from(TDX_PAGE_SIZE_MISMATCH | 1), AcceptStatus::SizeMismatch);
        assert_eq!(AcceptStatus::from(TDX_OPERAND_BUSY | 1), AcceptStatus::OperandBusy);
        assert_eq!(
            AcceptStatus::from(TDX_OPERAND_INVALID | 1),
            AcceptStatus::Other(TDX_OPERAND_INVALID | 1)
        );
        // Bits 31:0 are details: only bits 63:32 name the status.
        assert_eq!(AcceptStatus::from(5), AcceptStatus::Success);
        assert_eq!(AcceptStatus::from(1 << 32), AcceptStatus::Other(1 << 32));
    }

    #[test]
    fn rcx_carries_the_level_in_bits_2_0() {
        assert_eq!(rcx(0x1_0000_0000, PageLevel::Size2M), 0x1_0000_0001);
        assert_eq!(rcx(0x1_0000_3000, PageLevel::Size4K), 0x1_0000_3000);
    }

    fn plan(gpa: u64, len: u64) -> Result<Vec<(u64, PageLevel)>, AcceptError> {
        let mut pages = Vec::new();
        accept_range(gpa, len, &mut true, |rcx| {
            pages.push((
                rcx & !0xFFF,
                if rcx & 7 == 1 { PageLevel::Size2M } else { PageLevel::Size4K },
            ));
            0
        })?;
        Ok(pages)
    }

    #[test]
    fn the_plan_uses_2m_where_aligned_and_4k_at_the_edges() {
        let pages = plan(2 * MIB - 8192, 4 * MIB + 20480).unwrap();
        assert_eq!(pages[0], (2 * MIB - 8192, PageLevel::Size4K));
        assert_eq!(pages[1], (2 * MIB - 4096, PageLevel::Size4K));
        assert_eq!(pages[2], (2 * MIB, PageLevel::Size2M));
        assert_eq!(pages[3], (4 * MIB, PageLevel::Size2M));
        assert_eq!(
            &pages[4..],
            &[
                (6 * MIB, PageLevel::Size4K),
                (6 * MIB + 4096, PageLevel::Size4K),
                (6 * MIB + 8192, PageLevel::Size4K)
            ]
        );
        let covered: u64 = pages.iter().map(|(_, l)| l.size()).sum();
        assert_eq!(covered, 4 * MIB + 20480);
        assert!(plan(0x1000, 0x800).is_err());
        assert!(plan(0x800, 0x1000).is_err());
        assert!(plan(u64::MAX - 0xFFF, 0x2000).is_err());
        assert!(plan(0, 0).unwrap().is_empty());
    }

    #[test]
    fn one_gib_takes_512_calls_at_2m_and_262144_with_the_4k_fallback() {
        let mut module = FakeModule::new(false);
        let stats = accept_range(4 * GIB, GIB, &mut true, |rcx| module.call(rcx)).unwrap();
        assert_eq!(stats.calls, 512);
        assert_eq!(stats.accepted_2m, 512);
        assert_eq!(module.accepted.len() as u64, GIB / SIZE_4K);

        // A VMM that maps at 4 KiB: the first 2 MiB attempt fails, and the policy remembers.
        let mut module = FakeModule::new(true);
        let mut use_2m = true;
        let stats = accept_range(4 * GIB, GIB, &mut use_2m, |rcx| module.call(rcx)).unwrap();
        assert_eq!(stats.size_mismatches, 1);
        assert!(!use_2m);
        assert_eq!(stats.accepted_4k, 262_144);
        assert_eq!(stats.calls, 1 + 262_144);
        assert_eq!(module.accepted.len() as u64, GIB / SIZE_4K);
        // The next GiB goes straight to 4 KiB.
        let stats = accept_range(5 * GIB, GIB, &mut use_2m, |rcx| module.call(rcx)).unwrap();
        assert_eq!((stats.calls, stats.size_mismatches), (262_144, 0));
    }

    #[test]
    fn already_accepted_pages_are_counted_not_fatal() {
        let mut module = FakeModule::new(true);
        module.accepted.insert(4 * GIB + 0x5000);
        let stats = accept_range(4 * GIB, 2 * MIB, &mut true, |rcx| module.call(rcx)).unwrap();
        assert_eq!(stats.already_accepted_bytes, 4096);
        assert_eq!(stats.first_already_accepted, Some(4 * GIB + 0x5000));
        assert_eq!(stats.accepted_4k, 511);
        // At 2 MiB: the whole 2 MiB counts as already accepted, not zeroed.
        let mut module = FakeModule::new(false);
        module.accepted.insert(4 * GIB);
        let stats = accept_range(4 * GIB, 4 * MIB, &mut true, |rcx| module.call(rcx)).unwrap();
        assert_eq!(stats.already_accepted_bytes, 2 * MIB);
        assert_eq!(stats.accepted_2m, 1);
    }

    #[test]
    fn busy_is_retried_a_bounded_number_of_times() {
        let mut module = FakeModule::new(false);
        module.busy_each = 3;
        module.busy_left = 3;
        let stats = accept_range(4 * GIB, 4 * MIB, &mut true, |rcx| module.call(rcx)).unwrap();
        assert_eq!(stats.busy_retries, 6);
        assert_eq!(stats.calls, 8);
        assert_eq!(stats.accepted_2m, 2);

        let mut calls = 0;
        let error = accept_range(4 * GIB, 4096, &mut true, |_| {
            calls += 1;
            TDX_OPERAND_BUSY | OPERAND_ID_RCX
        })
        .unwrap_err();
        assert_eq!(calls, 1 + MAX_BUSY_RETRIES as u64);
        assert_eq!(
            error,
            AcceptError::Status {
                gpa: 4 * GIB,
                level: PageLevel::Size4K,
                status: TDX_OPERAND_BUSY | 1
            }
        );
    }

    #[test]
    fn unknown_statuses_and_4k_size_mismatch_are_errors_with_the_status() {
        let error =
            accept_range(4 * GIB, 2 * MIB, &mut true, |_| 0xC000_0B0D_0000_0000).unwrap_err();
        assert_eq!(
            error,
            AcceptError::Status {
                gpa: 4 * GIB,
                level: PageLevel::Size2M,
                status: 0xC000_0B0D_0000_0000
            }
        );
        let error = accept_range(4 * GIB, 4096, &mut true, |_| TDX_PAGE_SIZE_MISMATCH).unwrap_err();
        assert!(matches!(error, AcceptError::Status { level: PageLevel::Size4K, .. }));
        let mut calls = Vec::new();
        let error = accept_range(4 * GIB, 2 * MIB, &mut true, |rcx| {
            calls.push(rcx);
            if rcx & 7 == 1 {
                TDX_PAGE_SIZE_MISMATCH | 1
            } else if calls.len() == 3 {
                TDX_OPERAND_INVALID | 1
            } else {
                0
            }
        })
        .unwrap_err();
        assert_eq!(
            error,
            AcceptError::Status {
                gpa: 4 * GIB + 4096,
                level: PageLevel::Size4K,
                status: TDX_OPERAND_INVALID | 1
            }
        );
        assert!(error.to_string().contains("0xc000010000000001"));
    }

    #[test]
    fn the_bitmap_hands_out_each_2m_unit_once_clipped_to_the_region() {
        let (start, end) = (4 * GIB + 3 * MIB, 4 * GIB + 9 * MIB);
        let mut bits = vec![0u64; UnacceptedBitmap::words(start, end)];
        assert_eq!(bits.len(), 1);
        let mut map = UnacceptedBitmap::new(start, end, &mut bits);
        // Units: [2,4) clipped to [3,4), [4,6), [6,8), [8,10) clipped to [8,9).
        assert_eq!(map.remaining(), 4);
        assert_eq!(
            map.take(4 * GIB + 3 * MIB, 4 * GIB + 3 * MIB + 4096),
            Some((start, 4 * GIB + 4 * MIB))
        );
        assert_eq!(map.take(4 * GIB + 3 * MIB, 4 * GIB + 3 * MIB + 4096), None);
        assert_eq!(map.take(0, u64::MAX), Some((4 * GIB + 4 * MIB, 4 * GIB + 6 * MIB)));
        assert_eq!(map.take(4 * GIB + 8 * MIB, end), Some((4 * GIB + 8 * MIB, end)));
        assert_eq!(map.remaining(), 1);
        assert_eq!(map.take(end, end + GIB), None);
        assert_eq!(map.take(0, start), None);

        let (start, end) = (4 * GIB, 12 * GIB);
        let mut bits = vec![0u64; UnacceptedBitmap::words(start, end)];
        assert_eq!(bits.len(), 64);
        let map = UnacceptedBitmap::new(start, end, &mut bits);
        assert_eq!(map.remaining(), 4096);
        let (start, end) = (4 * GIB, 4 * GIB + 130 * MIB);
        let mut bits = vec![0u64; UnacceptedBitmap::words(start, end)];
        assert_eq!(UnacceptedBitmap::new(start, end, &mut bits).remaining(), 65);
    }
}
