//! RTMR extension and replay.
//!
//! TDG.MR.RTMR.EXTEND (leaf 2) sets RTMR[index] = SHA-384(RTMR[index] || value) for a 48-byte
//! value (TDX module `tdg_mr_rtmr_extend.c`, which hashes the two 48-byte halves of
//! `cat_extended_mr`). RTMRs start at zero when the TD is built.

use crate::Sha384Digest;

/// Number of RTMRs (TDX module `NUM_RTMRS`); TDG.MR.RTMR.EXTEND refuses a higher index.
pub const RTMR_COUNT: usize = 4;

/// The value of an RTMR after extending `old` with `value`.
pub fn extend(old: &Sha384Digest, value: &Sha384Digest) -> Sha384Digest {
    crate::sha384(&[old, value])
}

/// One extension: which RTMR and the 48-byte value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Extension {
    /// RTMR index, 0..=3.
    pub index: usize,
    /// The value passed to TDG.MR.RTMR.EXTEND (the event's SHA-384 digest).
    pub value: Sha384Digest,
}

/// Replays `extensions` over all-zero RTMRs; extensions with an index of 4 or more are skipped
/// (the module refuses them, so they never changed an RTMR).
pub fn replay(extensions: &[Extension]) -> [Sha384Digest; RTMR_COUNT] {
    let mut rtmr = [[0u8; 48]; RTMR_COUNT];
    for e in extensions {
        if let Some(r) = rtmr.get_mut(e.index) {
            *r = extend(r, &e.value);
        }
    }
    rtmr
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extend_is_sha384_of_the_concatenation() {
        let old = [0u8; 48];
        let value = [0xAB; 48];
        let mut cat = [0u8; 96];
        cat[48..].copy_from_slice(&value);
        assert_eq!(extend(&old, &value), crate::sha384(&[&cat]));
    }

    #[test]
    fn replay_orders_and_separates_registers() {
        let a = Extension { index: 3, value: [1; 48] };
        let b = Extension { index: 3, value: [2; 48] };
        let forward = replay(&[a, b]);
        let backward = replay(&[b, a]);
        assert_ne!(forward[3], backward[3], "order matters");
        assert_eq!(forward[0], [0; 48]);
        assert_eq!(forward[3], extend(&extend(&[0; 48], &[1; 48]), &[2; 48]));
        assert_eq!(replay(&[Extension { index: 4, value: [1; 48] }]), [[0; 48]; 4]);
    }
}
