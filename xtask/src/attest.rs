//! The harness's own check of a TDREPORT the kernel printed: extracted from the serial log to a
//! file, decoded with the same `tdx-attest` library, and judged on the host, so that the verdict
//! does not rest on what the guest says about its own report.
//!
//! The kernel prints (kernel/src/attest): `# ATTEST EVENT rtmr=3 digest=<hex> <name>: <data>`
//! per RTMR event, `# ATTEST REPORTDATA nonce=<hex|none> summary=<text>`, and the report as
//! 16 lines `# TDREPORT <offset> <64 bytes hex>`. The harness passes the nonce (fw_cfg
//! `opt/tdx-unikernel/nonce`, 64 ASCII hex characters of 32 random bytes) and checks:
//! REPORTTYPE 0x81/0, REPORTDATA = SHA-512(label || nonce || summary) with its own nonce,
//! TEE_INFO_HASH = SHA-384(TDINFO), and RTMR[3] = the replay of SHA-384 of each event's data as
//! printed (the digests the kernel printed are recomputed, not trusted).
//!
//! A quote the kernel got from GetQuote comes as lines `# QUOTE <offset> <hex>` (64 bytes a
//! line, the last shorter) and goes to `<run>.quote` beside the report. softtdx's simulated
//! quote (`tdx_attest::quote::SIMULATED_QUOTE_MARKER`, then the TDREPORT the kernel sent) must
//! carry the printed report; a real one is written out for the relying party's verifier
//! (Intel's DCAP Quote Verification Library), which the harness does not have.

use std::path::{Path, PathBuf};
use tdx_attest::quote::SIMULATED_QUOTE_MARKER;
use tdx_attest::report::{TdReport, TDREPORT_SIZE};

/// The fw_cfg file the kernel reads the nonce from (kernel/src/attest/mod.rs `NONCE_FILE`).
pub const NONCE_FW_CFG_NAME: &str = "opt/tdx-unikernel/nonce";

/// A fresh nonce: 32 bytes from the OS, as 64 hex characters.
pub fn fresh_nonce() -> String {
    let mut bytes = [0u8; 32];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = std::io::Read::read_exact(&mut f, &mut bytes);
    }
    hex(&bytes)
}

/// The QEMU arguments that pass `nonce`.
pub fn nonce_args(nonce: &str) -> [String; 2] {
    ["-fw_cfg".into(), format!("name={NONCE_FW_CFG_NAME},string={nonce}")]
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok()).collect()
}

/// What the serial log says about attestation.
#[derive(Debug, Default)]
pub struct Printed {
    pub report: Option<[u8; TDREPORT_SIZE]>,
    pub events: Vec<(usize, String)>,
    pub nonce: Option<String>,
    pub summary: Option<String>,
    /// The last quote printed (a line at offset 0 starts a new one).
    pub quote: Option<Vec<u8>>,
}

pub fn extract(output: &str) -> Result<Printed, String> {
    let mut printed = Printed::default();
    let mut report = Vec::new();
    for line in output.lines().map(|l| l.trim_end_matches('\r')) {
        let Some(at) = line.find("# ") else { continue };
        let line = &line[at + 2..];
        if let Some(rest) = line.strip_prefix("TDREPORT ") {
            let (offset, bytes) = rest.split_once(' ').ok_or("malformed TDREPORT line")?;
            if usize::from_str_radix(offset, 16).ok() != Some(report.len()) {
                return Err(format!("TDREPORT line at offset {offset} out of order"));
            }
            report.extend(unhex(bytes.trim()).ok_or("TDREPORT line is not hex")?);
        } else if let Some(rest) = line.strip_prefix("QUOTE ") {
            let (offset, bytes) = rest.split_once(' ').ok_or("malformed QUOTE line")?;
            let offset = usize::from_str_radix(offset, 16).map_err(|_| "bad QUOTE offset")?;
            let quote = printed.quote.get_or_insert_with(Vec::new);
            if offset == 0 {
                quote.clear();
            }
            if offset != quote.len() {
                return Err(format!("QUOTE line at offset {offset:x} out of order"));
            }
            quote.extend(unhex(bytes.trim()).ok_or("QUOTE line is not hex")?);
        } else if let Some(rest) = line.strip_prefix("ATTEST EVENT rtmr=") {
            let (index, rest) = rest.split_once(' ').ok_or("malformed ATTEST EVENT")?;
            let (_digest, rest) = rest.split_once(' ').ok_or("malformed ATTEST EVENT")?;
            let (_name, data) = rest.split_once(": ").ok_or("malformed ATTEST EVENT")?;
            printed.events.push((index.parse().map_err(|_| "bad RTMR index")?, data.to_string()));
        } else if let Some(rest) = line.strip_prefix("ATTEST REPORTDATA nonce=") {
            let (nonce, summary) = rest.split_once(" summary=").ok_or("malformed REPORTDATA")?;
            printed.nonce = Some(nonce.to_string());
            printed.summary = Some(summary.to_string());
        }
    }
    if !report.is_empty() {
        printed.report =
            Some(report.try_into().map_err(|r: Vec<u8>| format!("TDREPORT of {} bytes", r.len()))?);
    }
    Ok(printed)
}

/// Judges a printed report against the nonce the harness passed; writes it to `file`.
/// `Ok(None)` when the log has no report.
pub fn verify(output: &str, nonce: &str, file: &Path) -> Result<Option<String>, String> {
    let printed = extract(output)?;
    let Some(bytes) = printed.report else { return Ok(None) };
    std::fs::write(file, bytes).map_err(|e| format!("cannot write {}: {e}", file.display()))?;
    let quote = match &printed.quote {
        None => String::new(),
        Some(quote) => {
            let quote_file = file.with_extension("quote");
            std::fs::write(&quote_file, quote)
                .map_err(|e| format!("cannot write {}: {e}", quote_file.display()))?;
            match quote.strip_prefix(SIMULATED_QUOTE_MARKER.as_slice()) {
                Some(rest) if rest != bytes.as_slice() => {
                    return Err("the simulated quote does not carry the printed TDREPORT".into())
                }
                Some(_) => format!(
                    "; {}: a simulated quote (softtdx's marker, then this TDREPORT)",
                    quote_file.display()
                ),
                None => format!(
                    "; {}: a quote of {} bytes, for a verifier (not checked here)",
                    quote_file.display(),
                    quote.len()
                ),
            }
        }
    };
    let report = TdReport::new(&bytes);
    let ty = report.report_type();
    if (ty.tee_type, ty.subtype) != (0x81, 0) {
        return Err(format!("REPORTTYPE {:#x}/{}", ty.tee_type, ty.subtype));
    }
    if !report.tee_info_hash_matches() {
        return Err("TEE_INFO_HASH is not SHA-384 of TDINFO".into());
    }
    // The kernel prints the 64 bytes it read from fw_cfg in hex.
    let mut padded = [0u8; 64];
    padded[..nonce.len().min(64)].copy_from_slice(&nonce.as_bytes()[..nonce.len().min(64)]);
    if printed.nonce.as_deref() != Some(hex(&padded).as_str()) {
        return Err(format!(
            "the kernel used nonce {:?}, the harness passed {nonce}",
            printed.nonce
        ));
    }
    let summary = printed.summary.unwrap_or_default();
    let expected =
        tdx_attest::sha512(&[b"tdx-unikernel REPORTDATA v1\0", &padded, summary.as_bytes()]);
    if report.report_data() != &expected {
        return Err("REPORTDATA is not SHA-512(label || nonce || summary)".into());
    }
    let extensions: Vec<_> = printed
        .events
        .iter()
        .map(|(index, data)| tdx_attest::rtmr::Extension {
            index: *index,
            value: tdx_attest::sha384(&[data.as_bytes()]),
        })
        .collect();
    let replayed = tdx_attest::rtmr::replay(&extensions);
    if report.td_info().rtmr[3] != replayed[3] {
        return Err(format!(
            "RTMR[3] is not the replay of the {} printed events",
            extensions.len()
        ));
    }
    Ok(Some(format!(
        "{}: REPORTTYPE 0x81, REPORTDATA = SHA-512 of the harness's nonce and `{summary}`, \
         TEE_INFO_HASH = SHA-384(TDINFO), RTMR[3] = replay of {} events{quote}",
        file.display(),
        extensions.len()
    )))
}

/// Where a run's report goes.
pub fn report_file(log: &Path) -> PathBuf {
    log.with_extension("tdreport")
}

#[cfg(test)]
mod tests {
    use super::*;
    use tdx_attest::report::{build, ReportType, TdInfo};

    fn log_for(nonce: &str, tamper: impl Fn(&mut [u8; 1024])) -> String {
        let summary = "passed=3 failed=0 skipped=1";
        let events = ["tdx-unikernel 0.1.0 mode=softtdx", summary];
        let mut padded = [0u8; 64];
        padded.copy_from_slice(nonce.as_bytes());
        let data =
            tdx_attest::sha512(&[b"tdx-unikernel REPORTDATA v1\0", &padded, summary.as_bytes()]);
        let ext: Vec<_> = events
            .iter()
            .map(|e| tdx_attest::rtmr::Extension {
                index: 3,
                value: tdx_attest::sha384(&[e.as_bytes()]),
            })
            .collect();
        let info = TdInfo {
            attributes: 0,
            xfam: 3,
            mrtd: [0; 48],
            mrconfigid: [0; 48],
            mrowner: [0; 48],
            mrownerconfig: [0; 48],
            rtmr: tdx_attest::rtmr::replay(&ext),
            servtd_hash: [0; 48],
        };
        let ty = ReportType { tee_type: 0x81, subtype: 0, version: 0 };
        let mut bytes = build(ty, &[0; 16], &[0; 239], &info, &data, &[0; 32]);
        tamper(&mut bytes);
        let mut out = String::new();
        for e in events {
            out += &format!("# ATTEST EVENT rtmr=3 digest=00 kernel.x: {e}\r\n");
        }
        out += &format!("# ATTEST REPORTDATA nonce={} summary={summary}\n", hex(nonce.as_bytes()));
        for (i, chunk) in bytes.chunks(64).enumerate() {
            out += &format!("\x1b[0m# TDREPORT {:04x} {}\n", i * 64, hex(chunk));
        }
        out
    }

    #[test]
    fn a_good_report_passes_and_each_tampering_fails() {
        let dir = std::env::temp_dir().join(format!("xtask-attest-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("r.tdreport");
        let nonce = "ab".repeat(32);
        assert!(verify(&log_for(&nonce, |_| {}), &nonce, &file).unwrap().is_some());
        assert_eq!(std::fs::read(&file).unwrap().len(), 1024);
        assert!(verify(&log_for(&nonce, |_| {}), &"cd".repeat(32), &file).is_err());
        for at in [0usize, 80, 130, 512 + 208 + 48 * 3] {
            let log = log_for(&nonce, |b| b[at] ^= 1);
            assert!(verify(&log, &nonce, &file).is_err(), "byte {at} tampered");
        }
        assert_eq!(verify("no report here", &nonce, &file).unwrap(), None);
        // A simulated quote must carry the printed report; it lands beside it.
        assert!(verify(&log_for(&nonce, |_| {}), &nonce, &file).unwrap().is_some());
        let report = std::fs::read(&file).unwrap();
        let quote = |tail: &[u8]| {
            let bytes = [SIMULATED_QUOTE_MARKER.as_slice(), tail].concat();
            let lines: String = bytes
                .chunks(64)
                .enumerate()
                .map(|(i, c)| format!("# QUOTE {:04x} {}\n", i * 64, hex(c)))
                .collect();
            format!("{}{lines}", log_for(&nonce, |_| {}))
        };
        let detail = verify(&quote(&report), &nonce, &file).unwrap().unwrap();
        assert!(detail.contains("a simulated quote"), "{detail}");
        assert_eq!(std::fs::read(file.with_extension("quote")).unwrap().len(), 64 + 1024);
        let mut other = report.clone();
        other[100] ^= 1;
        assert!(verify(&quote(&other), &nonce, &file).is_err());
        let shuffled = quote(&report).replace("# QUOTE 0040", "# QUOTE 0080");
        assert!(verify(&shuffled, &nonce, &file).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
