//! The state of each 4 KiB private-memory page as the TDX module and the VMM see it, kept
//! sparse (as ranges) for softtdx's model.
//!
//! - `Private`: mapped in the Secure EPT and accepted (SEPT state MAPPED); the default for
//!   every GPA the map does not list.
//! - `Pending`: added by the VMM (TDH.MEM.PAGE.AUG, or left so by TDVF) but not yet accepted;
//!   an access exits to the VMM when SEPT_VE_DISABLE is set (`td_ept_violation.c`).
//! - `Shared`: converted to shared by TDG.VP.VMCALL<MapGPA>; not in the Secure EPT.
//!
//! Only the states are kept here; what an access or a TDCALL does with them is the model's.

/// The state of one 4 KiB page.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PageState {
    /// Mapped private and accepted.
    Private,
    /// Shared with the host (MapGPA to shared).
    Shared,
    /// Private, added but not accepted.
    Pending,
}

/// A half-open GPA range `[start, end)` in one state other than `Private`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StateRange {
    /// First byte (4 KiB-aligned).
    pub start: u64,
    /// One past the last byte (4 KiB-aligned).
    pub end: u64,
    /// The state of every page in the range.
    pub state: PageState,
}

/// Why a change was refused; the map is unchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageStateError {
    /// The range is empty, wraps, or is not 4 KiB-aligned.
    BadRange,
    /// More than `N` separate ranges would be needed.
    Full,
}

const PAGE: u64 = 4096;

/// Page states over the whole GPA space in at most `N` ranges: sorted, non-overlapping,
/// adjacent ranges of one state merged, every GPA not covered `Private`.
#[derive(Clone, Debug)]
pub struct PageStates<const N: usize> {
    ranges: [StateRange; N],
    len: usize,
}

const EMPTY: StateRange = StateRange { start: 0, end: 0, state: PageState::Private };

impl<const N: usize> Default for PageStates<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> PageStates<N> {
    /// Everything private.
    pub const fn new() -> Self {
        Self { ranges: [EMPTY; N], len: 0 }
    }

    /// The ranges that are not private, in order.
    pub fn ranges(&self) -> &[StateRange] {
        &self.ranges[..self.len]
    }

    /// The state of the page holding `gpa`.
    pub fn state(&self, gpa: u64) -> PageState {
        self.ranges()
            .iter()
            .find(|r| r.start <= gpa && gpa < r.end)
            .map_or(PageState::Private, |r| r.state)
    }

    /// The first page in `[start, end)` that is in `state`, if any.
    pub fn first(&self, start: u64, end: u64, state: PageState) -> Option<u64> {
        if state != PageState::Private {
            return self
                .ranges()
                .iter()
                .find(|r| r.state == state && r.start < end && start < r.end)
                .map(|r| r.start.max(start) & !(PAGE - 1));
        }
        // The first gap not covered by a listed range.
        let mut at = start & !(PAGE - 1);
        for r in self.ranges() {
            if r.end <= at {
                continue;
            }
            if r.start > at || at >= end {
                break;
            }
            at = r.end;
        }
        (at < end).then_some(at)
    }

    /// Whether every page of `[start, end)` is in `state`.
    pub fn all(&self, start: u64, end: u64, state: PageState) -> bool {
        let others = [PageState::Private, PageState::Shared, PageState::Pending];
        others.iter().filter(|s| **s != state).all(|s| self.first(start, end, *s).is_none())
    }

    /// Puts every page of `[start, end)` into `state`.
    pub fn set(&mut self, start: u64, end: u64, state: PageState) -> Result<(), PageStateError> {
        if start >= end || !start.is_multiple_of(PAGE) || !end.is_multiple_of(PAGE) {
            return Err(PageStateError::BadRange);
        }
        let mut next = [EMPTY; N];
        let mut len = 0;
        let mut push = |range: StateRange| -> Result<(), PageStateError> {
            if range.start >= range.end {
                return Ok(());
            }
            // Merge with the previous range when adjacent and alike.
            if len > 0 {
                let last: &mut StateRange = &mut next[len - 1];
                if last.end == range.start && last.state == range.state {
                    last.end = range.end;
                    return Ok(());
                }
            }
            *next.get_mut(len).ok_or(PageStateError::Full)? = range;
            len += 1;
            Ok(())
        };
        let mut inserted = state == PageState::Private;
        for r in self.ranges() {
            if r.end <= start {
                push(*r)?;
                continue;
            }
            // The part before the new range, the new range itself, the part after.
            push(StateRange { start: r.start, end: r.end.min(start), state: r.state })?;
            if !inserted {
                push(StateRange { start, end, state })?;
                inserted = true;
            }
            push(StateRange { start: r.start.max(end), end: r.end, state: r.state })?;
        }
        if !inserted {
            push(StateRange { start, end, state })?;
        }
        self.ranges = next;
        self.len = len;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const G: u64 = 1 << 30;

    #[test]
    fn everything_is_private_until_set() {
        let map = PageStates::<8>::new();
        assert_eq!(map.state(5 * G), PageState::Private);
        assert!(map.all(0, 8 * G, PageState::Private));
        assert_eq!(map.first(0, 8 * G, PageState::Pending), None);
    }

    #[test]
    fn setting_splits_and_merges() {
        let mut map = PageStates::<8>::new();
        map.set(4 * G, 8 * G, PageState::Pending).unwrap();
        assert_eq!(map.state(4 * G), PageState::Pending);
        assert_eq!(map.state(4 * G - 1), PageState::Private);
        map.set(4 * G + 0x1000, 4 * G + 0x3000, PageState::Private).unwrap();
        assert_eq!(map.ranges().len(), 2);
        assert_eq!(map.first(4 * G, 8 * G, PageState::Private), Some(4 * G + 0x1000));
        assert!(!map.all(4 * G, 4 * G + 0x200000, PageState::Pending));
        map.set(4 * G + 0x1000, 4 * G + 0x3000, PageState::Pending).unwrap();
        assert_eq!(
            map.ranges(),
            &[StateRange { start: 4 * G, end: 8 * G, state: PageState::Pending }]
        );
        map.set(4 * G, 8 * G, PageState::Private).unwrap();
        assert!(map.ranges().is_empty());
        assert_eq!(map.set(0x800, 0x1000, PageState::Shared), Err(PageStateError::BadRange));
    }

    #[test]
    fn a_full_map_refuses_and_stays_unchanged() {
        let mut map = PageStates::<2>::new();
        map.set(0, 0x1000, PageState::Shared).unwrap();
        map.set(0x2000, 0x3000, PageState::Shared).unwrap();
        let before = map.ranges().to_vec();
        assert_eq!(map.set(0x4000, 0x5000, PageState::Pending), Err(PageStateError::Full));
        assert_eq!(map.ranges(), &before[..]);
    }

    fn reference_state(ops: &[(u64, u64, u8)], page: u64) -> PageState {
        let mut state = PageState::Private;
        for &(start, end, s) in ops {
            if start <= page && page < end {
                state = [PageState::Private, PageState::Shared, PageState::Pending][s as usize];
            }
        }
        state
    }

    proptest! {
        /// Against a page-by-page reference over 64 pages.
        #[test]
        fn matches_a_page_by_page_reference(
            ops in proptest::collection::vec((0u64..64, 1u64..16, 0u8..3), 0..24)
        ) {
            let mut map = PageStates::<64>::new();
            let mut done = Vec::new();
            for (first, count, s) in ops {
                let (start, end) = (first * PAGE, (first + count) * PAGE);
                let state = [PageState::Private, PageState::Shared, PageState::Pending][s as usize];
                map.set(start, end, state).unwrap();
                done.push((start, end, s));
            }
            for page in 0..80u64 {
                prop_assert_eq!(map.state(page * PAGE), reference_state(&done, page * PAGE));
            }
            for w in map.ranges().windows(2) {
                prop_assert!(w[0].end <= w[1].start);
                prop_assert!(!(w[0].end == w[1].start && w[0].state == w[1].state));
            }
            for state in [PageState::Private, PageState::Shared, PageState::Pending] {
                let expected = (0..80u64).map(|p| p * PAGE).find(|gpa| reference_state(&done, *gpa) == state);
                prop_assert_eq!(map.first(0, 80 * PAGE, state), expected);
            }
        }
    }
}
