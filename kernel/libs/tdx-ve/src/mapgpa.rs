//! TDG.VP.VMCALL<MapGPA> (sub-function 0x10001): the guest's side of the RETRY protocol.
//!
//! MapGPA asks the host to map `[R12, R12 + R13)` as shared (R12 carries the shared bit) or as
//! private (it does not). The host may do part of the range and answer TDG.VP.VMCALL_RETRY
//! with R11 = the GPA to resume from, in R12's encoding (KVM `tdx_map_gpa` /
//! `tdx_complete_vmcall_map_gpa`: a pending event between 2 MiB chunks). R11 comes from an
//! untrusted host, so the guest trusts it only when `start <= R11 < end` in the same
//! encoding, resumes there, and gives up after three answers in a row that make no progress
//! (Linux `tdx_map_gpa` in `arch/x86/coco/tdx/tdx.c`; EDK2 `MemoryEncryption.c`; td-shim
//! `tdvmcall_mapgpa`). This module also requires R11 to be 4 KiB aligned: a host that
//! names the middle of a page has not converted whole pages, and MapGPA's own alignment rule
//! (KVM: ALIGN_ERROR for an unaligned GPA) would refuse the next call anyway. Any other status
//! is an error. A host that answers RETRY forever without progress is bounded by the retry
//! count; one that makes progress every time is bounded by the number of pages.

use crate::abi::TdVmCallStatus;

/// Answers without progress after which the guest gives up (Linux `max_retries_per_page`).
pub const MAX_RETRIES_WITHOUT_PROGRESS: u32 = 3;

const PAGE_SIZE: u64 = 4096;

/// Why a MapGPA did not complete.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum MapGpaError {
    /// The request itself is malformed: empty, unaligned, or overflowing.
    BadRequest {
        /// The start GPA asked for.
        gpa: u64,
        /// The size asked for.
        size: u64,
    },
    /// The host answered a status other than SUCCESS or RETRY.
    Status {
        /// The status.
        status: TdVmCallStatus,
        /// The GPA of the call that failed.
        gpa: u64,
        /// R11 as the host returned it (for the message only).
        r11: u64,
    },
    /// RETRY with an R11 outside `[start, end)`, in another encoding, or unaligned.
    RetryOutOfRange {
        /// R11.
        r11: u64,
        /// The start of the call.
        start: u64,
        /// The end of the range.
        end: u64,
    },
    /// Three RETRY answers in a row that did not move.
    NoProgress {
        /// Where the host kept saying to resume.
        gpa: u64,
    },
}

impl core::fmt::Display for MapGpaError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            MapGpaError::BadRequest { gpa, size } => {
                write!(f, "MapGPA request {gpa:#x}+{size:#x} is not whole 4 KiB pages")
            }
            MapGpaError::Status { status, gpa, r11 } => {
                write!(f, "MapGPA at {gpa:#x} returned {status:?} (R11={r11:#x})")
            }
            MapGpaError::RetryOutOfRange { r11, start, end } => write!(
                f,
                "MapGPA RETRY with R11={r11:#x} outside the range [{start:#x}, {end:#x}) or unaligned"
            ),
            MapGpaError::NoProgress { gpa } => write!(
                f,
                "MapGPA RETRY {MAX_RETRIES_WITHOUT_PROGRESS} times at {gpa:#x} without progress"
            ),
        }
    }
}

/// What to do after one MapGPA answer.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum MapGpaStep {
    /// The whole range is converted.
    Done,
    /// Call again with [`MapGpaLoop::call`].
    Again,
}

/// The state of one MapGPA conversion, from the first call to SUCCESS or an error.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct MapGpaLoop {
    start: u64,
    end: u64,
    retries_without_progress: u32,
    /// Calls answered so far.
    pub calls: u32,
}

impl MapGpaLoop {
    /// Starts converting `[gpa, gpa + size)` (`gpa` with the shared bit for shared, without it
    /// for private).
    pub const fn new(gpa: u64, size: u64) -> Result<Self, MapGpaError> {
        let end = match gpa.checked_add(size) {
            Some(end)
                if size != 0 && gpa.is_multiple_of(PAGE_SIZE) && size.is_multiple_of(PAGE_SIZE) =>
            {
                end
            }
            _ => return Err(MapGpaError::BadRequest { gpa, size }),
        };
        Ok(MapGpaLoop { start: gpa, end, retries_without_progress: 0, calls: 0 })
    }

    /// R12 and R13 for the next call.
    pub const fn call(&self) -> (u64, u64) {
        (self.start, self.end - self.start)
    }

    /// Takes the host's answer (R10 status, R11) to the call [`MapGpaLoop::call`] described.
    pub fn answer(&mut self, status: TdVmCallStatus, r11: u64) -> Result<MapGpaStep, MapGpaError> {
        self.calls = self.calls.saturating_add(1);
        match status {
            TdVmCallStatus::Success => Ok(MapGpaStep::Done),
            TdVmCallStatus::Retry => {
                if r11 < self.start || r11 >= self.end || !r11.is_multiple_of(PAGE_SIZE) {
                    return Err(MapGpaError::RetryOutOfRange {
                        r11,
                        start: self.start,
                        end: self.end,
                    });
                }
                if r11 == self.start {
                    self.retries_without_progress += 1;
                    if self.retries_without_progress >= MAX_RETRIES_WITHOUT_PROGRESS {
                        return Err(MapGpaError::NoProgress { gpa: r11 });
                    }
                } else {
                    self.start = r11;
                    self.retries_without_progress = 0;
                }
                Ok(MapGpaStep::Again)
            }
            status => Err(MapGpaError::Status { status, gpa: self.start, r11 }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SHARED: u64 = 1 << 47;

    #[test]
    fn success_at_once() {
        let mut map = MapGpaLoop::new(SHARED | 0x10_0000, 0x4000).unwrap();
        assert_eq!(map.call(), (SHARED | 0x10_0000, 0x4000));
        assert_eq!(map.answer(TdVmCallStatus::Success, 0), Ok(MapGpaStep::Done));
    }

    #[test]
    fn retry_resumes_where_the_host_says() {
        let start = SHARED | 0x10_0000;
        let mut map = MapGpaLoop::new(start, 0x4000).unwrap();
        assert_eq!(map.answer(TdVmCallStatus::Retry, start + 0x1000), Ok(MapGpaStep::Again));
        assert_eq!(map.call(), (start + 0x1000, 0x3000));
        // Twice without progress is fine, the third time is not...
        assert_eq!(map.answer(TdVmCallStatus::Retry, start + 0x1000), Ok(MapGpaStep::Again));
        assert_eq!(map.answer(TdVmCallStatus::Retry, start + 0x1000), Ok(MapGpaStep::Again));
        assert_eq!(
            map.answer(TdVmCallStatus::Retry, start + 0x1000),
            Err(MapGpaError::NoProgress { gpa: start + 0x1000 })
        );
        // ...unless progress in between resets the count.
        let mut map = MapGpaLoop::new(start, 0x4000).unwrap();
        for step in 1..4 {
            let r11 = start + step * 0x1000;
            assert_eq!(map.answer(TdVmCallStatus::Retry, r11), Ok(MapGpaStep::Again));
            assert_eq!(map.answer(TdVmCallStatus::Retry, r11), Ok(MapGpaStep::Again));
            assert_eq!(map.answer(TdVmCallStatus::Retry, r11), Ok(MapGpaStep::Again));
        }
        assert_eq!(map.answer(TdVmCallStatus::Success, 0), Ok(MapGpaStep::Done));
    }

    #[test]
    fn untrusted_r11_is_checked() {
        let start = SHARED | 0x10_0000;
        for r11 in [
            start - 0x1000,
            start + 0x4000,
            // The right page without the shared bit: another encoding.
            0x10_1000,
            start + 0x1800,
            u64::MAX,
        ] {
            let mut map = MapGpaLoop::new(start, 0x4000).unwrap();
            assert_eq!(
                map.answer(TdVmCallStatus::Retry, r11),
                Err(MapGpaError::RetryOutOfRange { r11, start, end: start + 0x4000 }),
                "{r11:#x}"
            );
        }
    }

    #[test]
    fn errors_and_bad_requests() {
        let mut map = MapGpaLoop::new(0x20_0000, 0x1000).unwrap();
        assert_eq!(
            map.answer(TdVmCallStatus::AlignError, 0x20_0000),
            Err(MapGpaError::Status {
                status: TdVmCallStatus::AlignError,
                gpa: 0x20_0000,
                r11: 0x20_0000
            })
        );
        for (gpa, size) in
            [(0x1000, 0), (0x1001, 0x1000), (0x1000, 0x800), (u64::MAX - 0xfff, 0x2000)]
        {
            assert_eq!(MapGpaLoop::new(gpa, size), Err(MapGpaError::BadRequest { gpa, size }));
        }
    }

    proptest! {
        /// Whatever a host answers, the loop ends, never resumes outside the range or
        /// backwards, and makes at most 3 calls per page plus 3.
        #[test]
        fn any_host_terminates(
            first_page in 0u64..1 << 20,
            pages in 1u64..64,
            answers in prop::collection::vec((0u8..4, any::<u64>(), 0u64..70), 0..400),
        ) {
            let start = SHARED | first_page << 12;
            let end = start + pages * 4096;
            let mut map = MapGpaLoop::new(start, pages * 4096).unwrap();
            let mut done = false;
            for (kind, raw, page) in answers {
                let (call_start, call_size) = map.call();
                prop_assert!(call_start >= start && call_start + call_size == end);
                let (status, r11) = match kind {
                    0 => (TdVmCallStatus::Success, raw),
                    1 => (TdVmCallStatus::Retry, start + page * 4096),
                    2 => (TdVmCallStatus::Retry, raw),
                    _ => (TdVmCallStatus::from(raw | 1 << 63), raw),
                };
                match map.answer(status, r11) {
                    Ok(MapGpaStep::Done) | Err(_) => { done = true; break; }
                    Ok(MapGpaStep::Again) => {
                        prop_assert!(map.call().0 >= call_start);
                        prop_assert!(map.calls as u64 <= 3 * pages + 3);
                    }
                }
            }
            let _ = done;
        }
    }
}
