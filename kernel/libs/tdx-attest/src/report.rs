//! TDREPORT_STRUCT: what TDG.MR.REPORT writes (1024 bytes).
//!
//! Layout of the TDX 1.5 module (`td_report_t` in `include/tdx_api_defs.h`; Linux uapi
//! `tdx-guest.h`; td-shim `tdx-tdcall/src/tdreport.rs`); module 1.0 has reserved bytes where
//! 1.5 adds fields (TEE_TCB_SVN2, SERVTD_HASH):
//!
//! | offset | size | field |
//! | --- | --- | --- |
//! | 0 | 256 | REPORTMACSTRUCT: REPORTTYPE (4) @0, CPUSVN (16) @16, TEE_TCB_INFO_HASH (48) @32, TEE_INFO_HASH (48) @80, REPORTDATA (64) @128, MAC (32) @224 |
//! | 256 | 239 | TEE_TCB_INFO |
//! | 495 | 17 | reserved |
//! | 512 | 512 | TDINFO: ATTRIBUTES (8), XFAM (8), MRTD, MRCONFIGID, MROWNER, MROWNERCONFIG, RTMR[0..3], SERVTD_HASH (48 each), reserved (64) |
//!
//! TEE_INFO_HASH is SHA-384 of the 512 TDINFO bytes (TDX module `helpers.c`
//! `get_tdinfo_and_teeinfohash`, which hashes `sizeof(td_info_t)`, reserved bytes included).

use crate::Sha384Digest;

/// Size of TDREPORT_STRUCT; TDG.MR.REPORT also requires this alignment of its GPA.
pub const TDREPORT_SIZE: usize = 1024;
/// Size of REPORTDATA; TDG.MR.REPORT requires this alignment of its GPA.
pub const REPORTDATA_SIZE: usize = 64;
/// REPORTTYPE.TYPE of a TDX report (TDX module `TDX_REPORT_TYPE`).
pub const REPORT_TYPE_TDX: u8 = 0x81;
/// The only REPORTTYPE.SUBTYPE TDG.MR.REPORT accepts (TDX module `TDX_REPORT_SUBTYPE`).
pub const REPORT_SUBTYPE_TD: u8 = 0;

/// Offsets in TDREPORT_STRUCT.
pub mod offset {
    /// REPORTTYPE: type, subtype, version, reserved.
    pub const REPORT_TYPE: usize = 0;
    /// CPUSVN (16 bytes).
    pub const CPUSVN: usize = 16;
    /// TEE_TCB_INFO_HASH (48 bytes).
    pub const TEE_TCB_INFO_HASH: usize = 32;
    /// TEE_INFO_HASH (48 bytes).
    pub const TEE_INFO_HASH: usize = 80;
    /// REPORTDATA (64 bytes).
    pub const REPORT_DATA: usize = 128;
    /// MAC (32 bytes).
    pub const MAC: usize = 224;
    /// TEE_TCB_INFO (239 bytes).
    pub const TEE_TCB_INFO: usize = 256;
    /// TDINFO (512 bytes).
    pub const TD_INFO: usize = 512;
    /// In TDINFO: ATTRIBUTES.
    pub const TD_INFO_ATTRIBUTES: usize = 0;
    /// In TDINFO: XFAM.
    pub const TD_INFO_XFAM: usize = 8;
    /// In TDINFO: MRTD.
    pub const TD_INFO_MRTD: usize = 16;
    /// In TDINFO: MRCONFIGID.
    pub const TD_INFO_MRCONFIGID: usize = 64;
    /// In TDINFO: MROWNER.
    pub const TD_INFO_MROWNER: usize = 112;
    /// In TDINFO: MROWNERCONFIG.
    pub const TD_INFO_MROWNERCONFIG: usize = 160;
    /// In TDINFO: RTMR[0]; RTMR[i] at `+ 48 * i`.
    pub const TD_INFO_RTMR0: usize = 208;
    /// In TDINFO: SERVTD_HASH.
    pub const TD_INFO_SERVTD_HASH: usize = 400;
}

/// Size of TEE_TCB_INFO.
pub const TEE_TCB_INFO_SIZE: usize = 239;
/// Size of TDINFO.
pub const TD_INFO_SIZE: usize = 512;

/// REPORTTYPE.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReportType {
    /// 0x81 for TDX.
    pub tee_type: u8,
    /// 0 for a TD report.
    pub subtype: u8,
    /// 0 without service TDs, 1 with (TDX 1.5).
    pub version: u8,
}

/// TDINFO: the TD's measurements and configuration as the module reports them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TdInfo {
    /// TD attributes.
    pub attributes: u64,
    /// XFAM (extended features allowed).
    pub xfam: u64,
    /// MRTD: the measurement of the initial TD contents.
    pub mrtd: Sha384Digest,
    /// MRCONFIGID: set by the host at TD creation.
    pub mrconfigid: Sha384Digest,
    /// MROWNER: set by the host at TD creation.
    pub mrowner: Sha384Digest,
    /// MROWNERCONFIG: set by the host at TD creation.
    pub mrownerconfig: Sha384Digest,
    /// RTMR[0..3].
    pub rtmr: [Sha384Digest; 4],
    /// SERVTD_HASH (TDX 1.5; zero without service TDs).
    pub servtd_hash: Sha384Digest,
}

impl TdInfo {
    /// The 512 bytes of TDINFO, reserved bytes zero (as the module zeroes them).
    pub fn to_bytes(&self) -> [u8; TD_INFO_SIZE] {
        use offset::*;
        let mut b = [0u8; TD_INFO_SIZE];
        b[TD_INFO_ATTRIBUTES..][..8].copy_from_slice(&self.attributes.to_le_bytes());
        b[TD_INFO_XFAM..][..8].copy_from_slice(&self.xfam.to_le_bytes());
        b[TD_INFO_MRTD..][..48].copy_from_slice(&self.mrtd);
        b[TD_INFO_MRCONFIGID..][..48].copy_from_slice(&self.mrconfigid);
        b[TD_INFO_MROWNER..][..48].copy_from_slice(&self.mrowner);
        b[TD_INFO_MROWNERCONFIG..][..48].copy_from_slice(&self.mrownerconfig);
        for (i, rtmr) in self.rtmr.iter().enumerate() {
            b[TD_INFO_RTMR0 + 48 * i..][..48].copy_from_slice(rtmr);
        }
        b[TD_INFO_SERVTD_HASH..][..48].copy_from_slice(&self.servtd_hash);
        b
    }

    /// Decodes TDINFO.
    pub fn from_bytes(b: &[u8; TD_INFO_SIZE]) -> Self {
        use offset::*;
        let digest = |at: usize| -> Sha384Digest { b[at..at + 48].try_into().unwrap_or([0; 48]) };
        let u64_at = |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap_or([0; 8]));
        TdInfo {
            attributes: u64_at(TD_INFO_ATTRIBUTES),
            xfam: u64_at(TD_INFO_XFAM),
            mrtd: digest(TD_INFO_MRTD),
            mrconfigid: digest(TD_INFO_MRCONFIGID),
            mrowner: digest(TD_INFO_MROWNER),
            mrownerconfig: digest(TD_INFO_MROWNERCONFIG),
            rtmr: [0, 1, 2, 3].map(|i| digest(TD_INFO_RTMR0 + 48 * i)),
            servtd_hash: digest(TD_INFO_SERVTD_HASH),
        }
    }
}

/// A TDREPORT_STRUCT, decoded field by field from its 1024 bytes.
#[derive(Clone, Copy)]
pub struct TdReport<'a> {
    bytes: &'a [u8; TDREPORT_SIZE],
}

impl<'a> TdReport<'a> {
    /// Views `bytes` as a TDREPORT_STRUCT.
    pub fn new(bytes: &'a [u8; TDREPORT_SIZE]) -> Self {
        TdReport { bytes }
    }

    fn field<const N: usize>(&self, at: usize) -> &'a [u8; N] {
        // In range by construction: every caller passes a constant offset from `offset`.
        self.bytes[at..at + N].try_into().unwrap_or(&[0; N])
    }

    /// REPORTTYPE.
    pub fn report_type(&self) -> ReportType {
        let t = self.field::<4>(offset::REPORT_TYPE);
        ReportType { tee_type: t[0], subtype: t[1], version: t[2] }
    }
    /// CPUSVN.
    pub fn cpusvn(&self) -> &'a [u8; 16] {
        self.field(offset::CPUSVN)
    }
    /// TEE_TCB_INFO_HASH.
    pub fn tee_tcb_info_hash(&self) -> &'a Sha384Digest {
        self.field(offset::TEE_TCB_INFO_HASH)
    }
    /// TEE_INFO_HASH.
    pub fn tee_info_hash(&self) -> &'a Sha384Digest {
        self.field(offset::TEE_INFO_HASH)
    }
    /// REPORTDATA.
    pub fn report_data(&self) -> &'a [u8; REPORTDATA_SIZE] {
        self.field(offset::REPORT_DATA)
    }
    /// MAC.
    pub fn mac(&self) -> &'a [u8; 32] {
        self.field(offset::MAC)
    }
    /// TEE_TCB_INFO, raw.
    pub fn tee_tcb_info(&self) -> &'a [u8; TEE_TCB_INFO_SIZE] {
        self.field(offset::TEE_TCB_INFO)
    }
    /// TDINFO, raw (what TEE_INFO_HASH covers).
    pub fn td_info_bytes(&self) -> &'a [u8; TD_INFO_SIZE] {
        self.field(offset::TD_INFO)
    }
    /// TDINFO, decoded.
    pub fn td_info(&self) -> TdInfo {
        TdInfo::from_bytes(self.td_info_bytes())
    }
    /// Whether TEE_INFO_HASH is SHA-384 of the report's TDINFO.
    pub fn tee_info_hash_matches(&self) -> bool {
        crate::sha384(&[self.td_info_bytes()]) == *self.tee_info_hash()
    }
}

/// Builds a TDREPORT_STRUCT as TDG.MR.REPORT assembles it (`tdg_mr_report.c`: REPORTTYPE,
/// TDINFO and TEE_INFO_HASH from the module; REPORTMACSTRUCT's CPUSVN, TEE_TCB_INFO_HASH and MAC
/// from the CPU's SEAMOPS(SEAMDB_REPORT)). Used by softtdx, which passes its own marker as MAC.
pub fn build(
    report_type: ReportType,
    cpusvn: &[u8; 16],
    tee_tcb_info: &[u8; TEE_TCB_INFO_SIZE],
    td_info: &TdInfo,
    report_data: &[u8; REPORTDATA_SIZE],
    mac: &[u8; 32],
) -> [u8; TDREPORT_SIZE] {
    let mut r = [0u8; TDREPORT_SIZE];
    r[offset::REPORT_TYPE] = report_type.tee_type;
    r[offset::REPORT_TYPE + 1] = report_type.subtype;
    r[offset::REPORT_TYPE + 2] = report_type.version;
    r[offset::CPUSVN..][..16].copy_from_slice(cpusvn);
    r[offset::TEE_TCB_INFO_HASH..][..48].copy_from_slice(&crate::sha384(&[tee_tcb_info]));
    let td_info = td_info.to_bytes();
    r[offset::TEE_INFO_HASH..][..48].copy_from_slice(&crate::sha384(&[&td_info]));
    r[offset::REPORT_DATA..][..64].copy_from_slice(report_data);
    r[offset::MAC..][..32].copy_from_slice(mac);
    r[offset::TEE_TCB_INFO..][..TEE_TCB_INFO_SIZE].copy_from_slice(tee_tcb_info);
    r[offset::TD_INFO..][..TD_INFO_SIZE].copy_from_slice(&td_info);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_info() -> TdInfo {
        TdInfo {
            attributes: 0x1000_0000,
            xfam: 0xe7,
            mrtd: [1; 48],
            mrconfigid: [2; 48],
            mrowner: [3; 48],
            mrownerconfig: [4; 48],
            rtmr: [[5; 48], [6; 48], [7; 48], [8; 48]],
            servtd_hash: [9; 48],
        }
    }

    #[test]
    fn td_info_layout_matches_the_module() {
        let b = sample_info().to_bytes();
        // Absolute offsets in TDREPORT_STRUCT (ATTEST-FACTS §3): 512 ATTRIBUTES, 528 MRTD,
        // 576 MRCONFIGID, 624 MROWNER, 672 MROWNERCONFIG, 720 RTMR0 .. 864 RTMR3, 912 SERVTD_HASH.
        let at = |absolute: usize| b[absolute - 512];
        assert_eq!(&b[0..8], &0x1000_0000u64.to_le_bytes());
        assert_eq!(at(520), 0xe7);
        assert_eq!(at(528), 1);
        assert_eq!(at(576), 2);
        assert_eq!(at(624), 3);
        assert_eq!(at(672), 4);
        assert_eq!((at(720), at(768), at(816), at(864), at(911)), (5, 6, 7, 8, 8));
        assert_eq!(at(912), 9);
        assert!(b[960 - 512..].iter().all(|&x| x == 0), "reserved bytes stay zero");
        assert_eq!(TdInfo::from_bytes(&b), sample_info());
    }

    #[test]
    fn built_report_decodes_and_hashes() {
        let tcb = [0x11; TEE_TCB_INFO_SIZE];
        let data = [0x42; 64];
        let ty = ReportType { tee_type: REPORT_TYPE_TDX, subtype: 0, version: 0 };
        let bytes =
            build(ty, &[0; 16], &tcb, &sample_info(), &data, b"0123456789abcdef0123456789abcdef");
        let report = TdReport::new(&bytes);
        assert_eq!(report.report_type(), ty);
        assert_eq!(bytes[0], 0x81);
        assert_eq!(report.report_data(), &data);
        assert_eq!(&bytes[128..192], &data);
        assert_eq!(&bytes[224..256], b"0123456789abcdef0123456789abcdef");
        assert_eq!(bytes[256], 0x11);
        assert_eq!(bytes[494], 0x11);
        assert_eq!(bytes[495], 0);
        assert!(report.tee_info_hash_matches());
        assert_eq!(report.td_info(), sample_info());
        assert_eq!(report.tee_tcb_info_hash(), &crate::sha384(&[&tcb]));
        let mut tampered = bytes;
        tampered[720] ^= 1;
        assert!(!TdReport::new(&tampered).tee_info_hash_matches());
    }
}
