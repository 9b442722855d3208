//! Pure logic of attestation in a TD, with no asm, no globals and no allocation, so that
//! `cargo test` checks it on the host and the kernel, softtdx and xtask share one definition.
//!
//! - [`report`]: the TDREPORT_STRUCT layout (TDX module ABI, "TDREPORT_STRUCT"; the TDX 1.5
//!   module's `td_report_t`), decoded and, for softtdx, built.
//! - [`rtmr`]: RTMR extension (RTMR = SHA-384(RTMR || 48-byte value), TDX module
//!   `tdg_mr_rtmr_extend.c`) and replay of a list of extensions.
//! - [`quote`]: TDG.VP.VMCALL<GetQuote>'s shared buffer and the guest's judgement of the answer.
//! - [`event_log`]: TCG crypto-agile event logs (TCG PC Client Platform Firmware Profile,
//!   `TCG_PCR_EVENT2` after a `Spec ID Event03` header): the CCEL table's log in a TD and
//!   EFI_TCG2_PROTOCOL.GetEventLog under a TPM, parsed and replayed.
//! - [`mrtd`]: the records TDH.MEM.PAGE.ADD and TDH.MR.EXTEND add to MRTD, for predicting it
//!   from a firmware file.
//!
//! Blanket assumptions: every input (a report, a log, a firmware file) may be malformed or
//! hostile; nothing here panics on any input, and lengths are checked before every read.

#![cfg_attr(not(test), no_std)]
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod event_log;
pub mod mrtd;
pub mod quote;
pub mod report;
pub mod rtmr;

use sha2::Digest;

/// A SHA-384 digest: the size of MRTD, every RTMR and TEE_INFO_HASH.
pub type Sha384Digest = [u8; 48];

/// SHA-384 of the concatenation of `parts`.
pub fn sha384(parts: &[&[u8]]) -> Sha384Digest {
    let mut hasher = sha2::Sha384::new();
    for part in parts {
        hasher.update(part);
    }
    hasher.finalize().into()
}

/// SHA-512 of the concatenation of `parts`: exactly the 64 bytes of REPORTDATA.
pub fn sha512(parts: &[&[u8]]) -> [u8; 64] {
    let mut hasher = sha2::Sha512::new();
    for part in parts {
        hasher.update(part);
    }
    hasher.finalize().into()
}

/// SHA-256 of the concatenation of `parts` (the TPM PCR bank the harness reads).
pub fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut hasher = sha2::Sha256::new();
    for part in parts {
        hasher.update(part);
    }
    hasher.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn known_answers() {
        // FIPS 180-4 examples ("abc").
        assert_eq!(
            hex(&sha384(&[b"a", b"bc"])),
            "cb00753f45a35e8bb5a03d699ac65007272c32ab0eded1631a8b605a43ff5bed\
             8086072ba1e7cc2358baeca134c825a7"
        );
        assert_eq!(
            hex(&sha256(&[b"abc"])),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(hex(&sha512(&[b"abc"]))[..32], *"ddaf35a193617abacc417349ae204131");
    }
}
