//! The MRTD a TD built from a TDVF image will report, computed from the image alone.
//!
//! What the host does, in order (QEMU `target/i386/kvm/tdx.c` `tdx_finalize_vm` →
//! `tdx_init_fw_mem_region`, QEMU 10.1): for every TDVF metadata section, in metadata order,
//! one KVM_TDX_INIT_MEM_REGION of `MemoryDataSize / 4096` pages at `MemoryAddress`, with
//! KVM_TDX_MEASURE_MEMORY_REGION when the section has the MR.EXTEND attribute. QEMU adds every
//! section this way, PAGE.AUG attribute or not (`hw/i386/tdvf.c` keeps the bit but nothing
//! reads it). The source of BFV and CFV is the image from `DataOffset` on, `MemoryDataSize`
//! bytes (`entry->mem_ptr = tdvf->mem_ptr + entry->data_offset`); TD_HOB and TempMem come from
//! fresh host memory, and since OVMF does not give them MR.EXTEND only their GPAs count. KVM
//! turns each page into TDH.MEM.PAGE.ADD and, when measuring, TDH.MR.EXTEND of its 16 256-byte
//! chunks right after (Linux `arch/x86/kvm/vmx/tdx.c` `tdx_gmem_post_populate`). The records
//! those leaves hash are `tdx_attest::mrtd`.
//!
//! MRTD does not cover the TD HOB's contents, the ACPI tables or the variables the host passes
//! at run time: TDVF measures those into RTMR[0], and they depend on the host's configuration.

use crate::tdvf::{SectionType, TdvfMetadata};
use std::fmt;
use tdx_attest::mrtd::Mrtd;

/// One section's share of the MRTD computation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SectionMeasurement {
    pub section_type: SectionType,
    pub memory_address: u64,
    pub pages: u64,
    pub extended: bool,
}

/// The expected MRTD and how it was made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MrtdPrediction {
    pub mrtd: [u8; 48],
    pub sections: Vec<SectionMeasurement>,
    pub pages_added: u64,
    pub chunks_extended: u64,
}

/// Why no MRTD can be computed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MrtdError {
    /// A measured section's bytes run past the end of the image.
    SectionOutsideImage { index: usize },
    /// A section size or address is not page-aligned (QEMU refuses such an image).
    Unaligned { index: usize },
}

impl fmt::Display for MrtdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MrtdError::SectionOutsideImage { index } => {
                write!(f, "TDVF section {index}'s data runs past the end of the image")
            }
            MrtdError::Unaligned { index } => {
                write!(f, "TDVF section {index} is not page-aligned (QEMU refuses it)")
            }
        }
    }
}

impl std::error::Error for MrtdError {}

/// Computes the MRTD QEMU and KVM produce for `image` with its parsed `metadata`.
pub fn predict(image: &[u8], metadata: &TdvfMetadata) -> Result<MrtdPrediction, MrtdError> {
    const PAGE: u64 = 4096;
    let mut mrtd = Mrtd::new();
    let mut sections = Vec::new();
    for (index, section) in metadata.sections.iter().enumerate() {
        if section.memory_address % PAGE != 0 || section.memory_data_size % PAGE != 0 {
            return Err(MrtdError::Unaligned { index });
        }
        let copied = matches!(section.section_type, SectionType::Bfv | SectionType::Cfv);
        let data: Vec<u8> = if copied {
            let start = section.data_offset as usize;
            let len = usize::try_from(section.memory_data_size)
                .map_err(|_| MrtdError::SectionOutsideImage { index })?;
            start
                .checked_add(len)
                .and_then(|end| image.get(start..end))
                .ok_or(MrtdError::SectionOutsideImage { index })?
                .to_vec()
        } else {
            // Host memory QEMU just mapped: its contents are not measured (no MR.EXTEND), and a
            // section that asked for it would be measured as the zeros of a fresh mapping.
            vec![0; section.memory_data_size as usize]
        };
        let extended = section.attributes.mr_extend();
        mrtd.add_region(section.memory_address, &data, extended);
        sections.push(SectionMeasurement {
            section_type: section.section_type,
            memory_address: section.memory_address,
            pages: section.memory_data_size / PAGE,
            extended,
        });
    }
    let (pages_added, chunks_extended) = mrtd.counts();
    Ok(MrtdPrediction { mrtd: mrtd.finalize(), sections, pages_added, chunks_extended })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tdvf::{SectionAttributes, TdvfSection};
    use tdx_attest::mrtd::{mr_extend_record, page_add_record};

    fn section(
        section_type: SectionType,
        data_offset: u32,
        address: u64,
        size: u64,
        attributes: u32,
    ) -> TdvfSection {
        TdvfSection {
            data_offset,
            raw_data_size: if matches!(section_type, SectionType::Bfv | SectionType::Cfv) {
                size as u32
            } else {
                0
            },
            memory_address: address,
            memory_data_size: size,
            section_type,
            attributes: SectionAttributes(attributes),
        }
    }

    #[test]
    fn the_stream_follows_the_metadata_order_and_attributes() {
        let image: Vec<u8> = (0..3 * 4096u32).map(|i| (i % 253) as u8).collect();
        let metadata = TdvfMetadata {
            descriptor_offset: 0,
            length: 0,
            version: 1,
            sections: vec![
                section(SectionType::Bfv, 4096, 0xFFFF_E000, 4096, 1),
                section(SectionType::Cfv, 0, 0xFFFF_C000, 4096, 0),
                section(SectionType::TdHob, 0, 0x80_9000, 8192, 0),
            ],
        };
        let p = predict(&image, &metadata).unwrap();
        assert_eq!((p.pages_added, p.chunks_extended), (4, 16));
        // The same stream by hand: PAGE.ADD then 16 MR.EXTENDs for the BFV page, then PAGE.ADD
        // only for the CFV page and the two TD HOB pages.
        let mut stream = page_add_record(0xFFFF_E000).to_vec();
        for c in 0..16u64 {
            stream.extend_from_slice(&mr_extend_record(0xFFFF_E000 + 256 * c));
            let at = 4096 + 256 * c as usize;
            stream.extend_from_slice(&image[at..at + 256]);
        }
        for gpa in [0xFFFF_C000, 0x80_9000, 0x80_A000] {
            stream.extend_from_slice(&page_add_record(gpa));
        }
        assert_eq!(p.mrtd, tdx_attest::sha384(&[&stream]));
        let mut flipped = image.clone();
        flipped[4096 + 5] ^= 1;
        assert_ne!(predict(&flipped, &metadata).unwrap().mrtd, p.mrtd, "measured bytes count");
        let mut unmeasured = image.clone();
        unmeasured[5] ^= 1;
        assert_eq!(predict(&unmeasured, &metadata).unwrap().mrtd, p.mrtd, "CFV is not extended");
    }

    #[test]
    fn a_section_past_the_image_end_is_an_error() {
        let metadata = TdvfMetadata {
            descriptor_offset: 0,
            length: 0,
            version: 1,
            sections: vec![section(SectionType::Bfv, 4096, 0, 8192, 1)],
        };
        assert_eq!(
            predict(&[0u8; 8192], &metadata).unwrap_err(),
            MrtdError::SectionOutsideImage { index: 0 }
        );
    }
}
