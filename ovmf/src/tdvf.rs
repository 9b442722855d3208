//! TDVF metadata: how a TDX-capable OVMF image tells the VMM what to put into a new TD.
//!
//! Before a TD runs, the VMM adds its initial private pages (TDH.MEM.PAGE.ADD) and measures some
//! of them into MRTD (TDH.MR.EXTEND). The firmware image describes those pages in its TDVF
//! metadata: a `TDVF` descriptor followed by one 32-byte section per region (Intel TDVF Design
//! Guide, "TDVF Metadata"). This module finds and decodes that metadata exactly the way QEMU
//! does, so a bad image is rejected with a precise message before QEMU is even started.
//!
//! # Where the metadata is, and what was verified
//!
//! Verified against QEMU `hw/i386/pc_sysfw_ovmf.c` (`pc_system_parse_ovmf_flash`,
//! `pc_system_ovmf_table_find`), QEMU `hw/i386/tdvf.c` (`tdvf_get_metadata`,
//! `tdvf_parse_metadata`, `tdvf_parse_and_check_section_entry`), QEMU
//! `include/hw/i386/tdvf.h`, EDK2 `OvmfPkg/ResetVector/Ia16/ResetVectorVtf0.nasm.inc` and
//! `OvmfPkg/ResetVector/X64/IntelTdxMetadata.nasm.inc`, and by dumping Debian 12's
//! `/usr/share/ovmf/OVMF.fd` (edk2 2022.11-6+deb12u2):
//!
//! 1. **OVMF GUIDed table.** The footer GUID [`OVMF_TABLE_FOOTER_GUID`] sits 0x30 bytes before
//!    the end of the image (0xffffffd0 once mapped below 4 GiB; the 0x20 bytes after it hold the
//!    VTF signature and the reset vector). The `u16` just before the footer GUID is the length of
//!    the *whole* table, including that `u16` and the footer GUID themselves: EDK2 emits
//!    `DW guidedStructureEnd - guidedStructureStart` with the end label after the footer GUID,
//!    and QEMU subtracts `sizeof(guid) + sizeof(u16)` to get the length of the entries.
//! 2. **Entries** are walked backwards from the footer. Each is `data, u16 length, GUID`, the
//!    length covering data, length field and GUID. QEMU stops when fewer than 18 bytes remain,
//!    and gives up on an entry whose length is below 18 or beyond the remaining table; so do we
//!    (reporting [`TdvfError::CorruptTableEntry`] rather than "not found").
//! 3. **Metadata offset entry** [`TDX_METADATA_OFFSET_GUID`]: its first four data bytes are a
//!    little-endian `u32`, the distance from the end of the image back to the metadata. EDK2
//!    writes `DD fourGigabytes - TdxMetadataGuid - 16`, so the offset points 16 bytes *past*
//!    the metadata GUID, i.e. straight at the `TDVF` signature, which is where QEMU reads the
//!    descriptor. QEMU does not check the entry's data length; we require at least 4 bytes.
//! 4. **Metadata GUID** [`TDX_METADATA_GUID`] (e9eaf9f3-168e-44d5-a8eb-7f4d8738f6ae) is not an
//!    entry of the GUIDed table and is not how the VMM finds anything: EDK2 places it
//!    (`TdxMetadataGuid:`) in the 16 bytes immediately before `_Descriptor`. QEMU ignores it; we
//!    require it, as a second check that the offset landed on real metadata. Debian's image has
//!    it at 0x1ff7b0, descriptor at 0x1ff7c0 = 0x200000 - 0x840, offset entry value 0x840.
//! 5. **Descriptor** (all little-endian `u32`): signature `TDVF` (0x46564454), length
//!    (descriptor plus all sections, so `16 + 32 * count`), version (only 1 is defined), number
//!    of sections.
//! 6. **Section**: data offset `u32`, raw data size `u32`, memory address `u64`, memory data size
//!    `u64`, type `u32`, attributes `u32`. Types 0..=3 (BFV, CFV, TD_HOB, TempMem) come from
//!    QEMU and EDK2; 4 PermMem, 5 Payload and 6 PayloadParam from td-shim's
//!    `td-shim-interface` metadata module (newer td-shim also defines 7 TdInfo, which we keep as
//!    [`SectionType::Unknown`]). Attribute bit 0 MR.EXTEND and bit 1 PAGE.AUG are from QEMU
//!    `tdvf.h`.
//!
//! [`parse`] enforces the structural rules above plus the per-section invariants QEMU enforces
//! for every section (raw size within memory size, 4 KiB aligned memory). QEMU's type-specific
//! rules, which reject section types that other TDVF producers use, are in
//! [`TdvfMetadata::check_qemu_loadable`].
//!
//! The parser reads untrusted bytes: it never panics, never indexes without a bounds check and
//! does all offset arithmetic with checked operations.

use std::fmt;
use std::fmt::Write as _;

/// A UEFI GUID, held in its on-disk byte order (first three fields little-endian).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Guid([u8; 16]);

impl Guid {
    /// Builds a GUID from the fields of its textual form `d1-d2-d3-d4[0..2]-d4[2..8]`.
    pub const fn from_fields(d1: u32, d2: u16, d3: u16, d4: [u8; 8]) -> Self {
        let a = d1.to_le_bytes();
        let b = d2.to_le_bytes();
        let c = d3.to_le_bytes();
        Guid([
            a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d4[0], d4[1], d4[2], d4[3], d4[4],
            d4[5], d4[6], d4[7],
        ])
    }

    /// Takes 16 bytes as they appear in a firmware image.
    pub const fn from_bytes(bytes: [u8; 16]) -> Self {
        Guid(bytes)
    }

    /// The 16 bytes as they appear in a firmware image.
    pub const fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = &self.0;
        write!(
            f,
            "{:08x}-{:04x}-{:04x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
            u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            u16::from_le_bytes([b[4], b[5]]),
            u16::from_le_bytes([b[6], b[7]]),
            b[8],
            b[9],
            b[10],
            b[11],
            b[12],
            b[13],
            b[14],
            b[15]
        )
    }
}

impl fmt::Debug for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Guid({self})")
    }
}

/// Footer of OVMF's GUIDed table, 96b582de-1fb2-45f7-baea-a366c55a082d (QEMU
/// `OVMF_TABLE_FOOTER_GUID`, EDK2 "table footer").
pub const OVMF_TABLE_FOOTER_GUID: Guid = Guid::from_fields(
    0x96b5_82de,
    0x1fb2,
    0x45f7,
    [0xba, 0xea, 0xa3, 0x66, 0xc5, 0x5a, 0x08, 0x2d],
);

/// GUIDed-table entry holding the metadata offset, e47a6535-984a-4798-865e-4685a7bf8ec2 (QEMU
/// `TDX_METADATA_OFFSET_GUID`, EDK2 `tdxMetadataOffsetStart`).
pub const TDX_METADATA_OFFSET_GUID: Guid = Guid::from_fields(
    0xe47a_6535,
    0x984a,
    0x4798,
    [0x86, 0x5e, 0x46, 0x85, 0xa7, 0xbf, 0x8e, 0xc2],
);

/// GUID immediately preceding the `TDVF` descriptor, e9eaf9f3-168e-44d5-a8eb-7f4d8738f6ae (EDK2
/// `TdxMetadataGuid`).
pub const TDX_METADATA_GUID: Guid = Guid::from_fields(
    0xe9ea_f9f3,
    0x168e,
    0x44d5,
    [0xa8, 0xeb, 0x7f, 0x4d, 0x87, 0x38, 0xf6, 0xae],
);

/// Distance of the footer GUID from the end of the image.
pub const OVMF_TABLE_FOOTER_OFFSET_FROM_END: usize = 0x30;

/// Descriptor signature, `TDVF` (0x46564454 as a little-endian `u32`).
pub const TDVF_SIGNATURE: [u8; 4] = *b"TDVF";

/// The only metadata version defined by the TDVF design guide and accepted by QEMU.
pub const TDVF_METADATA_VERSION: u32 = 1;

/// Size of the descriptor header (signature, length, version, number of sections).
pub const TDVF_DESCRIPTOR_SIZE: usize = 16;

/// Size of one section entry.
pub const TDVF_SECTION_SIZE: usize = 32;

/// TD private memory is added and accepted in 4 KiB pages, so QEMU requires section memory to
/// be page aligned.
pub const TDVF_PAGE_SIZE: u64 = 4096;

/// Size of a GUIDed-table entry without data: `u16` length plus GUID.
const TABLE_ENTRY_OVERHEAD: usize = 2 + 16;

/// What a section describes, and therefore how the VMM populates it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SectionType {
    /// Boot Firmware Volume: firmware code, copied from the image and normally measured.
    Bfv,
    /// Configuration Firmware Volume: the UEFI variable store, copied from the image.
    Cfv,
    /// Memory where the VMM writes the TD HOB list describing the guest's memory.
    TdHob,
    /// Zeroed memory for early stacks, heap, page tables and the like, added before boot.
    TempMem,
    /// Permanent memory the VMM must back (td-shim).
    PermMem,
    /// Payload such as a kernel image (td-shim).
    Payload,
    /// Parameters for the payload, e.g. a command line (td-shim).
    PayloadParam,
    /// A type this parser does not know, kept so it can be reported.
    Unknown(u32),
}

impl SectionType {
    /// Decodes the on-disk type value.
    pub fn from_raw(raw: u32) -> Self {
        match raw {
            0 => SectionType::Bfv,
            1 => SectionType::Cfv,
            2 => SectionType::TdHob,
            3 => SectionType::TempMem,
            4 => SectionType::PermMem,
            5 => SectionType::Payload,
            6 => SectionType::PayloadParam,
            other => SectionType::Unknown(other),
        }
    }

    /// The on-disk type value.
    pub fn raw(self) -> u32 {
        match self {
            SectionType::Bfv => 0,
            SectionType::Cfv => 1,
            SectionType::TdHob => 2,
            SectionType::TempMem => 3,
            SectionType::PermMem => 4,
            SectionType::Payload => 5,
            SectionType::PayloadParam => 6,
            SectionType::Unknown(raw) => raw,
        }
    }
}

impl fmt::Display for SectionType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            SectionType::Bfv => "BFV",
            SectionType::Cfv => "CFV",
            SectionType::TdHob => "TD_HOB",
            SectionType::TempMem => "TempMem",
            SectionType::PermMem => "PermMem",
            SectionType::Payload => "Payload",
            SectionType::PayloadParam => "PayloadParam",
            SectionType::Unknown(raw) => return write!(f, "Unknown({raw})"),
        };
        // `pad` rather than `write_str` so that table columns can set a width.
        f.pad(name)
    }
}

/// Section attribute bits (QEMU `TDVF_SECTION_ATTRIBUTES_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SectionAttributes(pub u32);

impl SectionAttributes {
    /// The VMM extends MRTD with the section's pages (TDH.MR.EXTEND).
    pub const MR_EXTEND: u32 = 1 << 0;
    /// The pages are added after boot with TDH.MEM.PAGE.AUG instead of before it with
    /// TDH.MEM.PAGE.ADD.
    pub const PAGE_AUG: u32 = 1 << 1;

    /// Whether the section is measured into MRTD.
    pub fn mr_extend(self) -> bool {
        self.0 & Self::MR_EXTEND != 0
    }

    /// Whether the section is added with PAGE.AUG.
    pub fn page_aug(self) -> bool {
        self.0 & Self::PAGE_AUG != 0
    }

    /// The raw attribute word.
    pub fn bits(self) -> u32 {
        self.0
    }
}

impl fmt::Display for SectionAttributes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names = Vec::new();
        if self.mr_extend() {
            names.push("MR.EXTEND".to_string());
        }
        if self.page_aug() {
            names.push("PAGE.AUG".to_string());
        }
        let unknown = self.0 & !(Self::MR_EXTEND | Self::PAGE_AUG);
        if unknown != 0 {
            names.push(format!("{unknown:#x}"));
        }
        if names.is_empty() {
            f.pad("-")
        } else {
            f.pad(&names.join("|"))
        }
    }
}

/// One TDVF section: a region of TD memory and, optionally, the image bytes that fill it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TdvfSection {
    /// Offset in the image of the bytes copied into the section (meaningful when
    /// `raw_data_size` is non-zero).
    pub data_offset: u32,
    /// Number of bytes copied from the image; 0 for sections that start zeroed.
    pub raw_data_size: u32,
    /// Guest physical address of the region.
    pub memory_address: u64,
    /// Size of the region in TD memory; at least `raw_data_size`.
    pub memory_data_size: u64,
    /// What the region is for.
    pub section_type: SectionType,
    /// How the VMM adds and measures the region.
    pub attributes: SectionAttributes,
}

impl TdvfSection {
    /// The image bytes that fill this section, or `None` when it has none or `image` is not the
    /// image it was parsed from.
    pub fn data<'a>(&self, image: &'a [u8]) -> Option<&'a [u8]> {
        if self.raw_data_size == 0 {
            return None;
        }
        let start = usize::try_from(self.data_offset).ok()?;
        let end = start.checked_add(usize::try_from(self.raw_data_size).ok()?)?;
        image.get(start..end)
    }
}

/// Decoded TDVF metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TdvfMetadata {
    /// Offset in the image of the `TDVF` signature.
    pub descriptor_offset: usize,
    /// Descriptor length field: descriptor plus all sections, in bytes.
    pub length: u32,
    /// Descriptor version field (always [`TDVF_METADATA_VERSION`] after a successful parse).
    pub version: u32,
    /// Sections in image order.
    pub sections: Vec<TdvfSection>,
}

impl TdvfMetadata {
    /// Sections of one type, in image order.
    pub fn sections_of_type(
        &self,
        section_type: SectionType,
    ) -> impl Iterator<Item = &TdvfSection> {
        self.sections.iter().filter(move |section| section.section_type == section_type)
    }

    /// Applies the extra rules QEMU's `tdvf_parse_metadata` enforces (QEMU 10.1,
    /// `hw/i386/tdvf.c`), which are stricter than the format: at least two sections; only
    /// BFV, CFV, TD_HOB and TempMem; BFV and CFV carry image data; TD_HOB and TempMem carry
    /// none. An image that fails this check makes QEMU refuse to create the TD.
    pub fn check_qemu_loadable(&self) -> Result<(), TdvfError> {
        if self.sections.len() < 2 {
            return Err(TdvfError::QemuTooFewSections { count: self.sections.len() });
        }
        for (index, section) in self.sections.iter().enumerate() {
            let needs_data = match section.section_type {
                SectionType::Bfv | SectionType::Cfv => true,
                SectionType::TdHob | SectionType::TempMem => false,
                other => {
                    return Err(TdvfError::QemuUnsupportedSectionType {
                        index,
                        section_type: other,
                    })
                }
            };
            if needs_data != (section.raw_data_size != 0) {
                return Err(TdvfError::QemuSectionDataSize {
                    index,
                    section_type: section.section_type,
                    raw_data_size: section.raw_data_size,
                });
            }
        }
        Ok(())
    }
}

/// Why an image has no usable TDVF metadata. Every message is one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TdvfError {
    /// The image does not end with OVMF's GUIDed table footer: not OVMF, or truncated.
    #[error(
        "no OVMF GUIDed table footer ({OVMF_TABLE_FOOTER_GUID}) 0x30 bytes before the end of \
         the {image_len}-byte image"
    )]
    NoTableFooter { image_len: usize },

    /// The table length cannot even cover the footer itself.
    #[error("OVMF GUIDed table length {table_length} is smaller than its own 18-byte footer")]
    TableLengthInvalid { table_length: u16 },

    /// The table length reaches past the start of the image.
    #[error(
        "OVMF GUIDed table length {table_length} reaches before the start of the image (footer \
         at {footer_offset:#x})"
    )]
    TableTruncated { table_length: u16, footer_offset: usize },

    /// An entry length is too small to hold its own header or runs past the table.
    #[error(
        "corrupt OVMF GUIDed table entry ending at {entry_end:#x}: length {length} (must be 18 to \
         {remaining}, the bytes left in the table)"
    )]
    CorruptTableEntry { entry_end: usize, length: u16, remaining: usize },

    /// The GUIDed table has no TDX metadata offset entry: OVMF built without TDX support.
    #[error("no TDX metadata offset entry ({TDX_METADATA_OFFSET_GUID}) in the OVMF GUIDed table")]
    NoTdxMetadataOffset,

    /// The TDX metadata offset entry is too short to hold its `u32`.
    #[error("TDX metadata offset entry has {data_len} data bytes, expected at least 4")]
    TdxMetadataOffsetEntryTooShort { data_len: usize },

    /// The metadata offset points before the start of the image or is zero.
    #[error(
        "TDVF metadata offset {offset:#x} (from the end of the image) is outside the \
         {image_len}-byte image"
    )]
    OffsetOutOfRange { offset: u32, image_len: usize },

    /// The descriptor or its sections run past the end of the image.
    #[error(
        "TDVF descriptor at {descriptor_offset:#x} needs {needed} bytes but the image ends \
         {available} bytes later"
    )]
    TruncatedDescriptor { descriptor_offset: usize, needed: u64, available: usize },

    /// The descriptor does not start with `TDVF`.
    #[error(
        "bad TDVF signature \"{}\" at {descriptor_offset:#x} (expected \"TDVF\")",
        found.escape_ascii()
    )]
    BadSignature { descriptor_offset: usize, found: [u8; 4] },

    /// The 16 bytes before the descriptor are not [`TDX_METADATA_GUID`].
    #[error(
        "TDVF descriptor at {descriptor_offset:#x} is not preceded by the TDX metadata GUID \
         {TDX_METADATA_GUID} (found {})",
        describe_found_guid(found)
    )]
    MetadataGuidMismatch { descriptor_offset: usize, found: Option<Guid> },

    /// A metadata version other than 1.
    #[error("unsupported TDVF metadata version {version} (only version 1 is defined)")]
    UnsupportedVersion { version: u32 },

    /// The descriptor declares no sections.
    #[error("TDVF descriptor declares no sections")]
    NoSections,

    /// The descriptor length disagrees with its section count.
    #[error(
        "TDVF descriptor length {length} does not match its {count} sections (expected {expected})"
    )]
    LengthMismatch { length: u32, count: u32, expected: u64 },

    /// A section's image data lies (partly) outside the image.
    #[error(
        "TDVF section {index} data {data_offset:#x}+{raw_data_size:#x} lies outside the \
         {image_len}-byte image"
    )]
    SectionOutOfBounds { index: usize, data_offset: u32, raw_data_size: u32, image_len: usize },

    /// A section carries more image data than its memory region holds.
    #[error(
        "TDVF section {index} raw data size {raw_data_size:#x} exceeds its memory size \
         {memory_data_size:#x}"
    )]
    SectionDataExceedsMemory { index: usize, raw_data_size: u32, memory_data_size: u64 },

    /// A section's memory address or size is not a multiple of 4 KiB.
    #[error(
        "TDVF section {index} memory {memory_address:#x}+{memory_data_size:#x} is not 4 KiB \
         aligned"
    )]
    SectionNotPageAligned { index: usize, memory_address: u64, memory_data_size: u64 },

    /// A section's memory region wraps around the 64-bit address space.
    #[error(
        "TDVF section {index} memory {memory_address:#x}+{memory_data_size:#x} wraps past the \
         end of the address space"
    )]
    SectionMemoryOverflow { index: usize, memory_address: u64, memory_data_size: u64 },

    /// QEMU needs at least a BFV and one more section.
    #[error("QEMU needs at least 2 TDVF sections, the image has {count}")]
    QemuTooFewSections { count: usize },

    /// QEMU only loads BFV, CFV, TD_HOB and TempMem sections.
    #[error("QEMU does not support TDVF section {index} of type {section_type}")]
    QemuUnsupportedSectionType { index: usize, section_type: SectionType },

    /// BFV/CFV without data, or TD_HOB/TempMem with data.
    #[error(
        "QEMU rejects TDVF section {index} ({section_type}) with raw data size {raw_data_size:#x} \
         (BFV/CFV need data, TD_HOB/TempMem must have none)"
    )]
    QemuSectionDataSize { index: usize, section_type: SectionType, raw_data_size: u32 },
}

fn describe_found_guid(found: &Option<Guid>) -> String {
    match found {
        Some(guid) => guid.to_string(),
        None => "no room: the descriptor is at the start of the image".to_string(),
    }
}

fn read_array<const N: usize>(bytes: &[u8], at: usize) -> Option<[u8; N]> {
    let end = at.checked_add(N)?;
    bytes.get(at..end)?.try_into().ok()
}

fn read_u16(bytes: &[u8], at: usize) -> Option<u16> {
    read_array(bytes, at).map(u16::from_le_bytes)
}

fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    read_array(bytes, at).map(u32::from_le_bytes)
}

fn read_u64(bytes: &[u8], at: usize) -> Option<u64> {
    read_array(bytes, at).map(u64::from_le_bytes)
}

fn read_guid(bytes: &[u8], at: usize) -> Option<Guid> {
    read_array(bytes, at).map(Guid::from_bytes)
}

/// One entry of OVMF's GUIDed table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OvmfTableEntry<'a> {
    /// The entry's GUID.
    pub guid: Guid,
    /// The entry's data (everything before its length field).
    pub data: &'a [u8],
    /// Offset of `data` in the image.
    pub data_offset: usize,
}

/// Iterator over OVMF's GUIDed table, from the footer backwards (QEMU's order). Yields one error
/// and then stops if an entry is corrupt.
#[derive(Debug, Clone)]
pub struct OvmfTableEntries<'a> {
    image: &'a [u8],
    /// Offset just past the next entry's GUID.
    cursor: usize,
    /// Table bytes not yet walked; always at most `cursor`.
    remaining: usize,
    failed: bool,
}

impl<'a> Iterator for OvmfTableEntries<'a> {
    type Item = Result<OvmfTableEntry<'a>, TdvfError>;

    fn next(&mut self) -> Option<Self::Item> {
        // Like QEMU, ignore a tail too short to be an entry.
        if self.failed || self.remaining < TABLE_ENTRY_OVERHEAD {
            return None;
        }
        let guid_at = self.cursor.checked_sub(16)?;
        let length_at = guid_at.checked_sub(2)?;
        let guid = read_guid(self.image, guid_at)?;
        let length = read_u16(self.image, length_at)?;
        if usize::from(length) < TABLE_ENTRY_OVERHEAD || usize::from(length) > self.remaining {
            self.failed = true;
            return Some(Err(TdvfError::CorruptTableEntry {
                entry_end: self.cursor,
                length,
                remaining: self.remaining,
            }));
        }
        let data_offset = self.cursor.checked_sub(usize::from(length))?;
        let data = self.image.get(data_offset..length_at)?;
        self.cursor = data_offset;
        self.remaining -= usize::from(length);
        Some(Ok(OvmfTableEntry { guid, data, data_offset }))
    }
}

/// Locates OVMF's GUIDed table at the end of `image` (see step 1 of the module docs).
pub fn ovmf_table(image: &[u8]) -> Result<OvmfTableEntries<'_>, TdvfError> {
    let no_footer = TdvfError::NoTableFooter { image_len: image.len() };
    let footer_offset =
        image.len().checked_sub(OVMF_TABLE_FOOTER_OFFSET_FROM_END).ok_or(no_footer.clone())?;
    let length_at = footer_offset.checked_sub(2).ok_or(no_footer.clone())?;
    if read_guid(image, footer_offset) != Some(OVMF_TABLE_FOOTER_GUID) {
        return Err(no_footer);
    }
    let table_length = read_u16(image, length_at).ok_or(no_footer)?;
    let entries_length = usize::from(table_length)
        .checked_sub(TABLE_ENTRY_OVERHEAD)
        .ok_or(TdvfError::TableLengthInvalid { table_length })?;
    if entries_length > length_at {
        return Err(TdvfError::TableTruncated { table_length, footer_offset });
    }
    Ok(OvmfTableEntries { image, cursor: length_at, remaining: entries_length, failed: false })
}

/// Finds the TDVF descriptor's offset in the image through the TDX metadata offset entry.
fn descriptor_offset(image: &[u8]) -> Result<usize, TdvfError> {
    for entry in ovmf_table(image)? {
        let entry = entry?;
        if entry.guid != TDX_METADATA_OFFSET_GUID {
            continue;
        }
        let offset = read_u32(entry.data, 0)
            .ok_or(TdvfError::TdxMetadataOffsetEntryTooShort { data_len: entry.data.len() })?;
        let out_of_range = TdvfError::OffsetOutOfRange { offset, image_len: image.len() };
        let from_end = usize::try_from(offset).map_err(|_| out_of_range.clone())?;
        if from_end == 0 {
            return Err(out_of_range);
        }
        return image.len().checked_sub(from_end).ok_or(out_of_range);
    }
    Err(TdvfError::NoTdxMetadataOffset)
}

/// Parses the TDVF metadata of a firmware image. Never panics, whatever the input.
pub fn parse(image: &[u8]) -> Result<TdvfMetadata, TdvfError> {
    let descriptor_offset = descriptor_offset(image)?;
    let available = image.len().saturating_sub(descriptor_offset);
    let truncated =
        |needed: u64| TdvfError::TruncatedDescriptor { descriptor_offset, needed, available };

    let header: [u8; TDVF_DESCRIPTOR_SIZE] =
        read_array(image, descriptor_offset).ok_or(truncated(TDVF_DESCRIPTOR_SIZE as u64))?;
    let field = |at: usize| {
        u32::from_le_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
    };
    let signature = [header[0], header[1], header[2], header[3]];
    let (length, version, count) = (field(4), field(8), field(12));

    if signature != TDVF_SIGNATURE {
        return Err(TdvfError::BadSignature { descriptor_offset, found: signature });
    }
    let guid = descriptor_offset.checked_sub(16).and_then(|at| read_guid(image, at));
    if guid != Some(TDX_METADATA_GUID) {
        return Err(TdvfError::MetadataGuidMismatch { descriptor_offset, found: guid });
    }
    if version != TDVF_METADATA_VERSION {
        return Err(TdvfError::UnsupportedVersion { version });
    }
    if count == 0 {
        return Err(TdvfError::NoSections);
    }
    // Computed in u64 so that no count can overflow it (at most 16 + 32 * (2^32 - 1)).
    let expected = (TDVF_SECTION_SIZE as u64)
        .checked_mul(u64::from(count))
        .and_then(|sections| sections.checked_add(TDVF_DESCRIPTOR_SIZE as u64))
        .ok_or(TdvfError::LengthMismatch { length, count, expected: u64::MAX })?;
    if u64::from(length) != expected {
        return Err(TdvfError::LengthMismatch { length, count, expected });
    }
    let metadata_end = usize::try_from(length)
        .ok()
        .and_then(|length| descriptor_offset.checked_add(length))
        .filter(|&end| end <= image.len())
        .ok_or(truncated(u64::from(length)))?;
    let section_bytes = descriptor_offset
        .checked_add(TDVF_DESCRIPTOR_SIZE)
        .and_then(|sections_start| image.get(sections_start..metadata_end))
        .ok_or(truncated(u64::from(length)))?;

    let sections = section_bytes
        .as_chunks::<TDVF_SECTION_SIZE>()
        .0
        .iter()
        .enumerate()
        .map(|(index, raw)| parse_section(index, raw, image.len()))
        .collect::<Result<Vec<_>, _>>()?;

    Ok(TdvfMetadata { descriptor_offset, length, version, sections })
}

/// Decodes and checks one 32-byte section entry.
fn parse_section(index: usize, raw: &[u8], image_len: usize) -> Result<TdvfSection, TdvfError> {
    // `raw` is exactly TDVF_SECTION_SIZE bytes (from `chunks_exact`), so these reads succeed;
    // fall back to zero rather than panic if that ever changes.
    let section = TdvfSection {
        data_offset: read_u32(raw, 0).unwrap_or(0),
        raw_data_size: read_u32(raw, 4).unwrap_or(0),
        memory_address: read_u64(raw, 8).unwrap_or(0),
        memory_data_size: read_u64(raw, 16).unwrap_or(0),
        section_type: SectionType::from_raw(read_u32(raw, 24).unwrap_or(0)),
        attributes: SectionAttributes(read_u32(raw, 28).unwrap_or(0)),
    };

    if section.raw_data_size != 0 {
        let data_end = u64::from(section.data_offset) + u64::from(section.raw_data_size);
        if data_end > image_len as u64 {
            return Err(TdvfError::SectionOutOfBounds {
                index,
                data_offset: section.data_offset,
                raw_data_size: section.raw_data_size,
                image_len,
            });
        }
    }
    if u64::from(section.raw_data_size) > section.memory_data_size {
        return Err(TdvfError::SectionDataExceedsMemory {
            index,
            raw_data_size: section.raw_data_size,
            memory_data_size: section.memory_data_size,
        });
    }
    if !section.memory_address.is_multiple_of(TDVF_PAGE_SIZE)
        || !section.memory_data_size.is_multiple_of(TDVF_PAGE_SIZE)
    {
        return Err(TdvfError::SectionNotPageAligned {
            index,
            memory_address: section.memory_address,
            memory_data_size: section.memory_data_size,
        });
    }
    // A region may end exactly at 2^64, so check the last byte rather than the end.
    if section.memory_data_size != 0
        && section.memory_address.checked_add(section.memory_data_size - 1).is_none()
    {
        return Err(TdvfError::SectionMemoryOverflow {
            index,
            memory_address: section.memory_address,
            memory_data_size: section.memory_data_size,
        });
    }
    Ok(section)
}

/// True if `image` carries valid TDVF metadata, i.e. [`parse`] succeeds.
pub fn is_tdvf(image: &[u8]) -> bool {
    parse(image).is_ok()
}

/// Renders the metadata as a table for humans: a header line with version and section count,
/// then one row per section.
pub fn render_table(metadata: &TdvfMetadata) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail, so the results are ignored.
    let _ = writeln!(
        out,
        "TDVF metadata version {}, {} sections (descriptor at image offset {:#x})",
        metadata.version,
        metadata.sections.len(),
        metadata.descriptor_offset
    );
    let _ = writeln!(
        out,
        "{:>3}  {:<12}  {:<11}  {:<10}  {:<18}  {:<18}  attributes",
        "#", "type", "data offset", "raw size", "memory base", "memory size"
    );
    for (index, section) in metadata.sections.iter().enumerate() {
        let _ = writeln!(
            out,
            "{:>3}  {:<12}  {:<11}  {:<10}  {:#018x}  {:#018x}  {}",
            index,
            section.section_type.to_string(),
            format!("{:#010x}", section.data_offset),
            format!("{:#010x}", section.raw_data_size),
            section.memory_address,
            section.memory_data_size,
            section.attributes
        );
    }
    out
}

#[cfg(test)]
pub(crate) mod tests;
