//! `cargo xtask measure`: what a TD booted from a firmware file and our image will measure, as
//! far as it can be known without the host's run-time inputs.
//!
//! - MRTD, from the TDVF metadata (`ovmf::mrtd`: QEMU's TDH.MEM.PAGE.ADD and TDH.MR.EXTEND
//!   records, in its order).
//! - Our loader's entry in RTMR[1] (PCR 4 under a TPM): TDVF measures a boot application it
//!   starts with LoadImage as EV_EFI_BOOT_SERVICES_APPLICATION whose digest is the PE/COFF
//!   Authenticode image hash (EDK2 `DxeTpm2MeasureBootLib` `Tcg2MeasurePeImage`), SHA-384 in a
//!   TD's log, SHA-256 (and others) in a TPM's.
//! - Our loader's `kernel.elf` event in RTMR[2] (PCR 9): the digest of the whole file
//!   (`loader_core::kernel_event`), and PCR 9 itself under a TPM where nothing else extends it.
//! - What cannot be predicted: RTMR[0] (TD HOB, ACPI tables, CFV variables: host inputs), the
//!   rest of RTMR[1] (GPT, boot variables, ExitBootServices events), RTMR[3] (the kernel's own
//!   events, replayed from its log).

use anyhow::{anyhow, Context, Result};
use serde::Serialize;
use sha2::Digest;
use std::path::{Path, PathBuf};

/// One predicted event.
#[derive(Serialize)]
pub struct EventPrediction {
    pub file: String,
    pub event_type: String,
    pub rtmr: u32,
    pub pcr: u32,
    pub sha384: String,
    pub sha256: String,
}

#[derive(Serialize)]
pub struct Prediction {
    pub firmware: String,
    pub image: String,
    pub mrtd: String,
    pub mrtd_pages_added: u64,
    pub mrtd_chunks_extended: u64,
    pub mrtd_sections: Vec<serde_json::Value>,
    pub loader: EventPrediction,
    pub kernel: EventPrediction,
    /// PCR 9 (SHA-256 bank) after the kernel event, if nothing else extends PCR 9.
    pub pcr9_sha256: String,
    pub unpredictable: Vec<&'static str>,
}

/// The Authenticode image hash of a PE file with `D`.
pub fn authenticode<D: Digest + Default + sha2::digest::Update>(pe: &[u8]) -> Result<Vec<u8>> {
    use object_pe::read::pe::PeFile64;
    let file = PeFile64::parse(pe).map_err(|e| anyhow!("not a PE32+ image: {e}"))?;
    let mut hasher = D::default();
    authenticode::authenticode_digest(&file, &mut hasher)
        .map_err(|_| anyhow!("the PE image's offsets are inconsistent"))?;
    Ok(hasher.finalize().to_vec())
}

/// The SHA-256 and SHA-384 Authenticode hashes of the loader.
pub fn loader_event(loader: &[u8]) -> Result<EventPrediction> {
    Ok(EventPrediction {
        file: "EFI/BOOT/BOOTX64.EFI".into(),
        event_type: "EV_EFI_BOOT_SERVICES_APPLICATION".into(),
        rtmr: 1,
        pcr: 4,
        sha384: crate::attest::hex(&authenticode::<sha2::Sha384>(loader)?),
        sha256: crate::attest::hex(&authenticode::<sha2::Sha256>(loader)?),
    })
}

/// The digests of the loader's `kernel.elf` event.
pub fn kernel_event(kernel: &[u8]) -> EventPrediction {
    EventPrediction {
        file: boot::esp::KERNEL_FILE.into(),
        event_type: "EV_EVENT_TAG".into(),
        rtmr: 2,
        pcr: loader_core::kernel_event::PCR,
        sha384: crate::attest::hex(&tdx_attest::sha384(&[kernel])),
        sha256: crate::attest::hex(&tdx_attest::sha256(&[kernel])),
    }
}

/// PCR 9 (SHA-256) after only the kernel event, from a zero PCR.
pub fn pcr9_after(kernel: &[u8]) -> [u8; 32] {
    tdx_attest::sha256(&[&[0u8; 32], &tdx_attest::sha256(&[kernel])])
}

pub const UNPREDICTABLE: [&str; 4] = [
    "RTMR[0] / PCR 1, 7: the TD HOB (the host's memory map), the ACPI tables and the CFV \
     variables the host passes (TDVF measures them at run time)",
    "the rest of RTMR[1] / PCR 4-5: the GPT, boot variables, EV_EFI_ACTION and ExitBootServices \
     events (the loader's entry above is predicted; replay the log for the rest)",
    "RTMR[2] / PCR 9 as a register, when anything besides our loader extends it",
    "RTMR[3]: the kernel's own events (replay its printed log)",
];

pub fn predict(firmware: &Path, image: &Path) -> Result<Prediction> {
    let fw = ovmf::read_firmware(firmware)
        .with_context(|| format!("cannot read firmware {}", firmware.display()))?;
    let metadata = ovmf::tdvf::parse(&fw).map_err(|e| {
        anyhow!("{}: no TDVF metadata ({e}): this firmware cannot boot a TD", firmware.display())
    })?;
    let mrtd =
        ovmf::mrtd::predict(&fw, &metadata).map_err(|e| anyhow!("{}: {e}", firmware.display()))?;
    let disk = std::fs::read(image).with_context(|| format!("cannot read {}", image.display()))?;
    let (loader, kernel) = boot::esp::read_files(&disk)
        .map_err(|e| anyhow!("{}: {e} (an image built with our loader?)", image.display()))?;
    Ok(Prediction {
        firmware: firmware.display().to_string(),
        image: image.display().to_string(),
        mrtd: crate::attest::hex(&mrtd.mrtd),
        mrtd_pages_added: mrtd.pages_added,
        mrtd_chunks_extended: mrtd.chunks_extended,
        mrtd_sections: mrtd
            .sections
            .iter()
            .map(|s| {
                serde_json::json!({
                    "type": s.section_type.to_string(),
                    "gpa": format!("{:#x}", s.memory_address),
                    "pages": s.pages,
                    "mr_extend": s.extended,
                })
            })
            .collect(),
        loader: loader_event(&loader)?,
        kernel: kernel_event(&kernel),
        pcr9_sha256: crate::attest::hex(&pcr9_after(&kernel)),
        unpredictable: UNPREDICTABLE.to_vec(),
    })
}

pub fn render(p: &Prediction) -> String {
    let mut out = format!("firmware: {}\nimage:    {}\n\n", p.firmware, p.image);
    out += &format!(
        "MRTD     {}\n         ({} pages added, {} 256-byte chunks extended)\n",
        p.mrtd, p.mrtd_pages_added, p.mrtd_chunks_extended
    );
    for s in &p.mrtd_sections {
        out += &format!(
            "         {:<8} at {:<12} {:>5} pages  {}\n",
            s["type"].as_str().unwrap_or(""),
            s["gpa"].as_str().unwrap_or(""),
            s["pages"],
            if s["mr_extend"].as_bool() == Some(true) {
                "PAGE.ADD + MR.EXTEND"
            } else {
                "PAGE.ADD"
            }
        );
    }
    out += "\n| register | event | file | SHA-384 (TD) | SHA-256 (TPM) |\n| --- | --- | --- | --- | --- |\n";
    for e in [&p.loader, &p.kernel] {
        out += &format!(
            "| RTMR[{}] / PCR {} | {} | {} | {} | {} |\n",
            e.rtmr, e.pcr, e.event_type, e.file, e.sha384, e.sha256
        );
    }
    out += &format!("\nPCR 9 (SHA-256) if only our loader extends it: {}\n", p.pcr9_sha256);
    out += "\nNot predictable from these files:\n";
    for u in &p.unpredictable {
        out += &format!("- {u}\n");
    }
    out
}

/// `cargo xtask measure`.
pub fn run(firmware: Option<PathBuf>, image: Option<PathBuf>, json: Option<PathBuf>) -> Result<()> {
    let firmware = firmware
        .or_else(|| std::env::var_os("OVMF_PATH").map(PathBuf::from))
        .ok_or_else(|| anyhow!("give the firmware a TD boots: --firmware FILE (or OVMF_PATH)"))?;
    let image = match image {
        Some(image) => image,
        None => {
            let variant = crate::build::KernelVariant::td_image();
            crate::build::build(&variant, crate::build::LoaderKind::Own, true)?.image
        }
    };
    let prediction = predict(&firmware, &image)?;
    print!("{}", render(&prediction));
    let text = serde_json::to_string_pretty(&prediction)?;
    match json {
        Some(path) => std::fs::write(&path, text + "\n")
            .with_context(|| format!("cannot write {}", path.display()))?,
        None => println!("\n{text}"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pcr9_is_one_extend_of_the_files_sha256() {
        let kernel = b"\x7fELF not really";
        let mut cat = [0u8; 64];
        cat[32..].copy_from_slice(&tdx_attest::sha256(&[kernel]));
        assert_eq!(pcr9_after(kernel), tdx_attest::sha256(&[&cat]));
        let mut other = kernel.to_vec();
        other[5] ^= 1;
        assert_ne!(pcr9_after(&other), pcr9_after(kernel));
    }

    /// The firmware a TD boots here (scripts/setup.sh installs it): its MRTD comes out of
    /// the records of its measured BFV and the GPAs of every other section.
    #[test]
    fn the_installed_tdvf_gives_an_mrtd() {
        let path = Path::new("/usr/share/ovmf/OVMF.fd");
        let Ok(fw) = ovmf::read_firmware(path) else {
            eprintln!("skip: {} is not installed", path.display());
            return;
        };
        let metadata = ovmf::tdvf::parse(&fw).unwrap();
        let p = ovmf::mrtd::predict(&fw, &metadata).unwrap();
        let extended: u64 = p.sections.iter().filter(|s| s.extended).map(|s| s.pages).sum();
        assert!(extended > 0, "the BFV is measured");
        assert_eq!(p.chunks_extended, extended * 16);
        assert_eq!(p.pages_added, p.sections.iter().map(|s| s.pages).sum::<u64>());
        assert_eq!(ovmf::mrtd::predict(&fw, &metadata).unwrap().mrtd, p.mrtd, "deterministic");
    }

    #[test]
    fn a_file_that_is_not_pe_is_refused_in_one_line() {
        let e = authenticode::<sha2::Sha256>(b"MZ but nothing else").unwrap_err().to_string();
        assert!(e.starts_with("not a PE32+ image"), "{e}");
        assert!(!e.contains('\n'));
    }
}
