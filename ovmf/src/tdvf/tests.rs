//! Tests for the TDVF parser: synthetic images assembled here, their corruptions, property
//! tests that feed it garbage, and the firmware installed on the host when there is one.

use super::*;
use proptest::prelude::*;

/// Other GUIDed-table entries EDK2 puts between the footer and the TDX entry; the synthetic
/// images carry them so that the backward walk has to skip entries.
const SEV_ES_RESET_BLOCK_GUID: Guid = Guid::from_fields(
    0x00f7_71de,
    0x1a7e,
    0x4fcb,
    [0x89, 0x0e, 0x68, 0xc7, 0x7e, 0x2f, 0xb4, 0x4e],
);
const SEV_SECRET_BLOCK_GUID: Guid = Guid::from_fields(
    0x4c2e_b361,
    0x7d9b,
    0x4cc3,
    [0x80, 0x81, 0x12, 0x7c, 0x90, 0xd3, 0xd2, 0x94],
);

const DEBIAN_OVMF: &str = "/usr/share/ovmf/OVMF.fd";

/// Positions of the structures written by [`SyntheticImage::build`].
#[derive(Debug, Clone, Copy)]
struct Layout {
    footer_guid: usize,
    table_length: usize,
    table_start: usize,
    /// Start of the TDX metadata offset entry's data (its `u32`).
    tdx_offset_value: usize,
    tdx_entry_length: usize,
    tdx_entry_guid: usize,
    metadata_guid: usize,
    descriptor: usize,
}

/// Recipe for a small TDVF image laid out like OVMF's: metadata somewhere in the image, the
/// GUIDed table right below the 0x30-byte top, and a fake reset vector above the footer.
#[derive(Debug, Clone)]
struct SyntheticImage {
    size: usize,
    descriptor_offset: usize,
    /// Overrides the value stored in the TDX offset entry (default: points at the descriptor).
    offset_value: Option<u32>,
    /// Data bytes of the TDX offset entry; `None` means the 4-byte offset.
    offset_entry_data: Option<Vec<u8>>,
    version: u32,
    sections: Vec<TdvfSection>,
}

fn section(
    section_type: SectionType,
    data_offset: u32,
    raw_data_size: u32,
    memory_address: u64,
    memory_data_size: u64,
    attributes: u32,
) -> TdvfSection {
    TdvfSection {
        data_offset,
        raw_data_size,
        memory_address,
        memory_data_size,
        section_type,
        attributes: SectionAttributes(attributes),
    }
}

impl SyntheticImage {
    /// A 16 KiB image mapped just below 4 GiB: CFV in the first page, BFV in the rest, plus a
    /// TD HOB and temporary memory, like a miniature OVMF.
    fn valid() -> Self {
        SyntheticImage {
            size: 0x4000,
            descriptor_offset: 0x3000,
            offset_value: None,
            offset_entry_data: None,
            version: TDVF_METADATA_VERSION,
            sections: vec![
                section(
                    SectionType::Bfv,
                    0x1000,
                    0x3000,
                    0xffff_d000,
                    0x3000,
                    SectionAttributes::MR_EXTEND,
                ),
                section(SectionType::Cfv, 0, 0x1000, 0xffff_c000, 0x1000, 0),
                section(SectionType::TdHob, 0, 0, 0x0080_9000, 0x2000, 0),
                section(
                    SectionType::TempMem,
                    0,
                    0,
                    0x0080_0000,
                    0x9000,
                    SectionAttributes::PAGE_AUG,
                ),
            ],
        }
    }

    fn build(&self) -> (Vec<u8>, Layout) {
        let size = self.size;
        // Non-zero filler, so nothing passes by accident because unused bytes are zero.
        let mut image: Vec<u8> = (0..size).map(|i| (i as u8).wrapping_mul(151) | 1).collect();

        // Fake top of the image: VTF signature and reset vector bytes.
        image[size - 0x20..].fill(0x90);
        let footer_guid = size - OVMF_TABLE_FOOTER_OFFSET_FROM_END;
        image[footer_guid..footer_guid + 16].copy_from_slice(OVMF_TABLE_FOOTER_GUID.as_bytes());
        let table_length = footer_guid - 2;

        let offset_value = self.offset_value.unwrap_or((size - self.descriptor_offset) as u32);
        let tdx_data =
            self.offset_entry_data.clone().unwrap_or_else(|| offset_value.to_le_bytes().to_vec());
        // Walk order (nearest the footer first), as in EDK2: SEV-ES reset block, the TDX entry,
        // then another entry the walk never needs to reach.
        let entries: [(Guid, Vec<u8>); 3] = [
            (SEV_ES_RESET_BLOCK_GUID, vec![0x04, 0xb0, 0x80, 0x00]),
            (TDX_METADATA_OFFSET_GUID, tdx_data),
            (SEV_SECRET_BLOCK_GUID, vec![0; 8]),
        ];
        let mut cursor = table_length;
        let mut tdx_positions = (0, 0, 0);
        for (guid, data) in &entries {
            let length = data.len() + 18;
            let start = cursor - length;
            image[start..start + data.len()].copy_from_slice(data);
            image[cursor - 18..cursor - 16].copy_from_slice(&(length as u16).to_le_bytes());
            image[cursor - 16..cursor].copy_from_slice(guid.as_bytes());
            if *guid == TDX_METADATA_OFFSET_GUID {
                tdx_positions = (start, cursor - 18, cursor - 16);
            }
            cursor = start;
        }
        let total = table_length - cursor + 18;
        image[table_length..table_length + 2].copy_from_slice(&(total as u16).to_le_bytes());

        let descriptor = self.descriptor_offset;
        let metadata_guid = descriptor - 16;
        image[metadata_guid..descriptor].copy_from_slice(TDX_METADATA_GUID.as_bytes());
        let length = TDVF_DESCRIPTOR_SIZE + TDVF_SECTION_SIZE * self.sections.len();
        let mut metadata = Vec::with_capacity(length);
        metadata.extend_from_slice(&TDVF_SIGNATURE);
        metadata.extend_from_slice(&(length as u32).to_le_bytes());
        metadata.extend_from_slice(&self.version.to_le_bytes());
        metadata.extend_from_slice(&(self.sections.len() as u32).to_le_bytes());
        for section in &self.sections {
            metadata.extend_from_slice(&section.data_offset.to_le_bytes());
            metadata.extend_from_slice(&section.raw_data_size.to_le_bytes());
            metadata.extend_from_slice(&section.memory_address.to_le_bytes());
            metadata.extend_from_slice(&section.memory_data_size.to_le_bytes());
            metadata.extend_from_slice(&section.section_type.raw().to_le_bytes());
            metadata.extend_from_slice(&section.attributes.bits().to_le_bytes());
        }
        assert!(descriptor + length <= cursor, "metadata overlaps the GUIDed table");
        image[descriptor..descriptor + length].copy_from_slice(&metadata);

        let layout = Layout {
            footer_guid,
            table_length,
            table_start: cursor,
            tdx_offset_value: tdx_positions.0,
            tdx_entry_length: tdx_positions.1,
            tdx_entry_guid: tdx_positions.2,
            metadata_guid,
            descriptor,
        };
        (image, layout)
    }
}

/// A firmware-sized image (`size` bytes, at least 16 KiB) with valid TDVF metadata near its
/// end, for the tests of other modules (the firmware search).
pub(crate) fn tdvf_image(size: usize) -> Vec<u8> {
    let mut recipe = SyntheticImage::valid();
    recipe.size = size;
    recipe.descriptor_offset = size - 0x1000;
    recipe.sections[0].data_offset = (size - 0x3000) as u32;
    let image = recipe.build().0;
    assert!(parse(&image).unwrap().check_qemu_loadable().is_ok());
    image
}

fn valid_image() -> (Vec<u8>, Layout) {
    SyntheticImage::valid().build()
}

fn with_sections(sections: Vec<TdvfSection>) -> Vec<u8> {
    SyntheticImage { sections, ..SyntheticImage::valid() }.build().0
}

fn put_u32(image: &mut [u8], at: usize, value: u32) {
    image[at..at + 4].copy_from_slice(&value.to_le_bytes());
}

#[test]
fn guid_constants_match_edk2_byte_order() {
    // Byte sequences as EDK2 writes them (`DB ...` in ResetVectorVtf0.nasm.inc and
    // IntelTdxMetadata.nasm.inc).
    assert_eq!(
        OVMF_TABLE_FOOTER_GUID.as_bytes(),
        &[
            0xde, 0x82, 0xb5, 0x96, 0xb2, 0x1f, 0xf7, 0x45, 0xba, 0xea, 0xa3, 0x66, 0xc5, 0x5a,
            0x08, 0x2d
        ]
    );
    assert_eq!(
        TDX_METADATA_OFFSET_GUID.as_bytes(),
        &[
            0x35, 0x65, 0x7a, 0xe4, 0x4a, 0x98, 0x98, 0x47, 0x86, 0x5e, 0x46, 0x85, 0xa7, 0xbf,
            0x8e, 0xc2
        ]
    );
    assert_eq!(
        TDX_METADATA_GUID.as_bytes(),
        &[
            0xf3, 0xf9, 0xea, 0xe9, 0x8e, 0x16, 0xd5, 0x44, 0xa8, 0xeb, 0x7f, 0x4d, 0x87, 0x38,
            0xf6, 0xae
        ]
    );
    assert_eq!(OVMF_TABLE_FOOTER_GUID.to_string(), "96b582de-1fb2-45f7-baea-a366c55a082d");
    assert_eq!(TDX_METADATA_OFFSET_GUID.to_string(), "e47a6535-984a-4798-865e-4685a7bf8ec2");
    assert_eq!(TDX_METADATA_GUID.to_string(), "e9eaf9f3-168e-44d5-a8eb-7f4d8738f6ae");
}

#[test]
fn parses_synthetic_image() {
    let recipe = SyntheticImage::valid();
    let (image, layout) = recipe.build();
    let metadata = parse(&image).unwrap();
    assert_eq!(metadata.descriptor_offset, layout.descriptor);
    assert_eq!(metadata.version, 1);
    assert_eq!(metadata.length, 16 + 32 * 4);
    assert_eq!(metadata.sections, recipe.sections);
    assert!(is_tdvf(&image));
    metadata.check_qemu_loadable().unwrap();

    let bfv = metadata.sections_of_type(SectionType::Bfv).next().unwrap();
    assert!(bfv.attributes.mr_extend());
    assert!(!bfv.attributes.page_aug());
    assert_eq!(bfv.data(&image), Some(&image[0x1000..0x4000]));
    let temp = metadata.sections_of_type(SectionType::TempMem).next().unwrap();
    assert!(temp.attributes.page_aug());
    assert_eq!(temp.data(&image), None);
}

#[test]
fn table_walk_visits_entries_backwards_from_the_footer() {
    let (image, layout) = valid_image();
    let entries: Vec<_> = ovmf_table(&image).unwrap().collect::<Result<_, _>>().unwrap();
    let guids: Vec<Guid> = entries.iter().map(|entry| entry.guid).collect();
    assert_eq!(guids, [SEV_ES_RESET_BLOCK_GUID, TDX_METADATA_OFFSET_GUID, SEV_SECRET_BLOCK_GUID]);
    assert_eq!(entries[1].data_offset, layout.tdx_offset_value);
    assert_eq!(entries[2].data_offset, layout.table_start);
    assert_eq!(entries[1].data, &0x1000u32.to_le_bytes());
}

#[test]
fn unknown_types_and_attribute_bits_are_kept() {
    let image = with_sections(vec![
        section(SectionType::Bfv, 0x1000, 0x3000, 0xffff_d000, 0x3000, 1),
        section(SectionType::Unknown(7), 0, 0, 0x1000, 0x1000, 0x8000_0003),
        section(SectionType::PermMem, 0, 0, 0x2000, 0x1000, 0),
        section(SectionType::Payload, 0, 0x1000, 0x10_0000, 0x1000, 0),
        section(SectionType::PayloadParam, 0, 0, 0x20_0000, 0x1000, 0),
    ]);
    let metadata = parse(&image).unwrap();
    let types: Vec<SectionType> = metadata.sections.iter().map(|s| s.section_type).collect();
    assert_eq!(
        types,
        [
            SectionType::Bfv,
            SectionType::Unknown(7),
            SectionType::PermMem,
            SectionType::Payload,
            SectionType::PayloadParam
        ]
    );
    assert_eq!(metadata.sections[1].attributes.to_string(), "MR.EXTEND|PAGE.AUG|0x80000000");
    assert_eq!(
        metadata.check_qemu_loadable(),
        Err(TdvfError::QemuUnsupportedSectionType {
            index: 1,
            section_type: SectionType::Unknown(7)
        })
    );
    for raw in 0..16 {
        assert_eq!(SectionType::from_raw(raw).raw(), raw);
    }
}

#[test]
fn qemu_rules() {
    let bfv = section(SectionType::Bfv, 0x1000, 0x3000, 0xffff_d000, 0x3000, 1);
    let one = parse(&with_sections(vec![bfv])).unwrap();
    assert_eq!(one.check_qemu_loadable(), Err(TdvfError::QemuTooFewSections { count: 1 }));
    let empty_cfv = section(SectionType::Cfv, 0, 0, 0xffff_c000, 0x1000, 0);
    let metadata = parse(&with_sections(vec![bfv, empty_cfv])).unwrap();
    assert!(matches!(
        metadata.check_qemu_loadable(),
        Err(TdvfError::QemuSectionDataSize { index: 1, .. })
    ));
    let hob_with_data = section(SectionType::TdHob, 0, 0x1000, 0x80_0000, 0x1000, 0);
    let metadata = parse(&with_sections(vec![bfv, hob_with_data])).unwrap();
    assert!(matches!(
        metadata.check_qemu_loadable(),
        Err(TdvfError::QemuSectionDataSize { index: 1, .. })
    ));
}

#[test]
fn render_table_has_header_and_one_row_per_section() {
    let (image, _) = valid_image();
    let table = render_table(&parse(&image).unwrap());
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 2 + 4, "{table}");
    assert!(lines[0].contains("version 1"), "{table}");
    assert!(lines[0].contains("4 sections"), "{table}");
    assert!(lines[0].contains("0x3000"), "{table}");
    assert!(lines[1].contains("memory base"), "{table}");
    assert!(lines[2].contains("BFV"), "{table}");
    assert!(lines[2].contains("0x00001000"), "{table}");
    assert!(lines[2].contains("0x00000000ffffd000"), "{table}");
    assert!(lines[2].ends_with("MR.EXTEND"), "{table}");
    assert!(lines[3].contains("CFV"), "{table}");
    assert!(lines[3].ends_with(" -"), "{table}");
    assert!(lines[4].contains("TD_HOB"), "{table}");
    assert!(lines[5].contains("TempMem"), "{table}");
    assert!(lines[5].ends_with("PAGE.AUG"), "{table}");
    // Columns line up: every row is as wide as the header up to the attributes column.
    let attributes_column = lines[1].find("attributes").unwrap();
    for row in &lines[2..] {
        assert_eq!(row.as_bytes()[attributes_column - 1], b' ', "{table}");
        assert_ne!(row.as_bytes()[attributes_column], b' ', "{table}");
    }
}

/// Applies `corrupt` to a fresh valid image and returns the parse error.
fn error_after(corrupt: impl FnOnce(&mut Vec<u8>, &Layout)) -> TdvfError {
    let (mut image, layout) = valid_image();
    corrupt(&mut image, &layout);
    let error = parse(&image).expect_err("corrupted image must not parse");
    assert!(!error.to_string().contains('\n'), "multi-line message: {error}");
    assert!(!is_tdvf(&image));
    error
}

#[test]
fn structural_corruptions_give_specific_errors() {
    assert!(matches!(
        error_after(|image, l| image[l.footer_guid] ^= 1),
        TdvfError::NoTableFooter { .. }
    ));
    assert!(matches!(parse(&[]), Err(TdvfError::NoTableFooter { image_len: 0 })));
    assert_eq!(
        error_after(|image, l| image[l.table_length..l.table_length + 2]
            .copy_from_slice(&17u16.to_le_bytes())),
        TdvfError::TableLengthInvalid { table_length: 17 }
    );
    assert!(matches!(
        error_after(|image, l| image[l.table_length..l.table_length + 2]
            .copy_from_slice(&u16::MAX.to_le_bytes())),
        TdvfError::TableTruncated { .. }
    ));
    assert!(matches!(
        error_after(|image, l| image[l.tdx_entry_length..l.tdx_entry_length + 2]
            .copy_from_slice(&3u16.to_le_bytes())),
        TdvfError::CorruptTableEntry { length: 3, .. }
    ));
    assert_eq!(
        error_after(|image, l| image[l.tdx_entry_guid] ^= 0x80),
        TdvfError::NoTdxMetadataOffset
    );
    assert!(matches!(
        error_after(|image, l| put_u32(image, l.tdx_offset_value, 0)),
        TdvfError::OffsetOutOfRange { offset: 0, .. }
    ));
    assert!(matches!(
        error_after(|image, l| put_u32(image, l.tdx_offset_value, 0x4001)),
        TdvfError::OffsetOutOfRange { offset: 0x4001, .. }
    ));
    assert!(matches!(
        error_after(|image, l| put_u32(image, l.tdx_offset_value, 8)),
        TdvfError::TruncatedDescriptor { needed: 16, available: 8, .. }
    ));
    assert!(matches!(
        error_after(|image, l| image[l.descriptor + 3] = b'X'),
        TdvfError::BadSignature { found: [b'T', b'D', b'V', b'X'], .. }
    ));
    assert!(matches!(
        error_after(|image, l| image[l.metadata_guid + 15] ^= 1),
        TdvfError::MetadataGuidMismatch { found: Some(_), .. }
    ));
    assert_eq!(
        error_after(|image, l| put_u32(image, l.descriptor + 8, 2)),
        TdvfError::UnsupportedVersion { version: 2 }
    );
    assert!(matches!(
        error_after(|image, l| put_u32(image, l.descriptor + 4, 16 + 32 * 5)),
        TdvfError::LengthMismatch { count: 4, expected: 144, .. }
    ));
    assert!(matches!(
        error_after(|image, l| put_u32(image, l.descriptor + 12, 3)),
        TdvfError::LengthMismatch { count: 3, .. }
    ));
    assert_eq!(
        error_after(|image, l| {
            put_u32(image, l.descriptor + 4, 16);
            put_u32(image, l.descriptor + 12, 0);
        }),
        TdvfError::NoSections
    );
    assert!(matches!(
        error_after(|image, l| {
            // 200 sections would run past the end of the 16 KiB image.
            put_u32(image, l.descriptor + 4, 16 + 32 * 200);
            put_u32(image, l.descriptor + 12, 200);
        }),
        TdvfError::TruncatedDescriptor { needed: 6416, .. }
    ));
    // The largest consistent descriptor (16 + 32 * (2^27 - 1) = 2^32 - 16 bytes) must be caught
    // by the bounds check without overflowing anything.
    assert!(matches!(
        error_after(|image, l| {
            put_u32(image, l.descriptor + 4, u32::MAX - 15);
            put_u32(image, l.descriptor + 12, u32::MAX / 32);
        }),
        TdvfError::TruncatedDescriptor { needed: 0xffff_fff0, .. }
    ));
    assert!(matches!(
        error_after(|image, l| put_u32(image, l.descriptor + 12, u32::MAX)),
        TdvfError::LengthMismatch { count: u32::MAX, expected: 0x1f_ffff_fff0, .. }
    ));
}

#[test]
fn metadata_guid_must_have_room_before_the_descriptor() {
    let (mut image, layout) = valid_image();
    // Point the offset at a "TDVF" planted at the very start of the image.
    image[..4].copy_from_slice(b"TDVF");
    put_u32(&mut image, layout.tdx_offset_value, 0x4000);
    assert!(matches!(
        parse(&image),
        Err(TdvfError::MetadataGuidMismatch { descriptor_offset: 0, found: None })
    ));
}

#[test]
fn short_tdx_offset_entry_is_an_error() {
    let recipe =
        SyntheticImage { offset_entry_data: Some(vec![0x00, 0x30]), ..SyntheticImage::valid() };
    assert_eq!(
        parse(&recipe.build().0),
        Err(TdvfError::TdxMetadataOffsetEntryTooShort { data_len: 2 })
    );
}

#[test]
fn unsupported_version_from_the_builder() {
    let recipe = SyntheticImage { version: 0, ..SyntheticImage::valid() };
    assert_eq!(parse(&recipe.build().0), Err(TdvfError::UnsupportedVersion { version: 0 }));
}

#[test]
fn section_checks() {
    let bfv = section(SectionType::Bfv, 0x1000, 0x3000, 0xffff_d000, 0x3000, 1);
    let cases = [
        (section(SectionType::Cfv, 0x3001, 0x1000, 0xffff_c000, 0x1000, 0), "out of bounds"),
        (section(SectionType::Cfv, u32::MAX, u32::MAX, 0xffff_c000, 0x1000, 0), "out of bounds"),
        (section(SectionType::Cfv, 0, 0x1000, 0xffff_c000, 0x800, 0), "exceeds memory"),
        (section(SectionType::TempMem, 0, 0, 0x80_0800, 0x1000, 0), "not aligned"),
        (section(SectionType::TempMem, 0, 0, 0x80_0000, 0x1800, 0), "not aligned"),
        (section(SectionType::TempMem, 0, 0, 0xffff_ffff_ffff_f000, 0x2000, 0), "overflow"),
    ];
    for (bad, what) in cases {
        let error = parse(&with_sections(vec![bfv, bad])).expect_err(what);
        let matched = match what {
            "out of bounds" => matches!(error, TdvfError::SectionOutOfBounds { index: 1, .. }),
            "exceeds memory" => {
                matches!(error, TdvfError::SectionDataExceedsMemory { index: 1, .. })
            }
            "not aligned" => matches!(error, TdvfError::SectionNotPageAligned { index: 1, .. }),
            _ => matches!(error, TdvfError::SectionMemoryOverflow { index: 1, .. }),
        };
        assert!(matched, "{what}: {error}");
    }

    // A region that ends exactly at the top of the address space is fine, and so is the data
    // of a section that ends exactly at the end of the image.
    let top = section(SectionType::TempMem, 0, 0, 0xffff_ffff_ffff_f000, 0x1000, 0);
    let last_byte = section(SectionType::Cfv, 0x3000, 0x1000, 0xffff_c000, 0x1000, 0);
    parse(&with_sections(vec![bfv, top, last_byte])).unwrap();
}

#[test]
fn every_truncation_is_an_error() {
    let (image, _) = valid_image();
    for len in 0..image.len() {
        let truncated = &image[..len];
        assert!(parse(truncated).is_err(), "truncated to {len} bytes parsed");
    }
}

#[test]
fn dropping_leading_bytes_never_panics() {
    // Offsets count from the end, so some of these still parse; they must just not panic.
    let (image, _) = valid_image();
    for start in 0..=image.len() {
        let _ = parse(&image[start..]);
    }
}

#[test]
fn every_bit_flip_in_the_locating_structures_is_an_error() {
    let (image, layout) = valid_image();
    let regions = [
        ("footer GUID", layout.footer_guid, 16),
        ("TDX entry GUID", layout.tdx_entry_guid, 16),
        ("metadata offset", layout.tdx_offset_value, 4),
        ("metadata GUID", layout.metadata_guid, 16),
        ("descriptor header", layout.descriptor, TDVF_DESCRIPTOR_SIZE),
    ];
    for (name, start, len) in regions {
        for at in start..start + len {
            for bit in 0..8 {
                let mut corrupted = image.clone();
                corrupted[at] ^= 1 << bit;
                assert!(
                    parse(&corrupted).is_err(),
                    "flipping bit {bit} of byte {at:#x} ({name}) still parses"
                );
            }
        }
    }
}

#[test]
fn every_single_byte_change_never_panics() {
    let (image, _) = valid_image();
    for at in 0..image.len() {
        for value in [0x00, 0x01, 0x7f, 0x80, 0xff, image[at] ^ 0x10] {
            let mut corrupted = image.clone();
            corrupted[at] = value;
            let _ = parse(&corrupted);
        }
    }
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..8192)) {
        let _ = parse(&bytes);
    }

    /// Random bytes almost never contain the footer GUID, so plant it (and sometimes the TDX
    /// entry GUID) to drive the table walk and the descriptor parser with garbage.
    #[test]
    fn arbitrary_bytes_behind_a_footer_never_panic(
        mut bytes in proptest::collection::vec(any::<u8>(), 0x30..4096),
        plant_tdx_entry in any::<bool>(),
    ) {
        let footer = bytes.len() - OVMF_TABLE_FOOTER_OFFSET_FROM_END;
        bytes[footer..footer + 16].copy_from_slice(OVMF_TABLE_FOOTER_GUID.as_bytes());
        if plant_tdx_entry && footer >= 2 + 18 {
            let guid_at = footer - 2 - 16;
            bytes[guid_at..guid_at + 16].copy_from_slice(TDX_METADATA_OFFSET_GUID.as_bytes());
        }
        let _ = parse(&bytes);
    }

    #[test]
    fn mutations_of_a_valid_image_never_panic(
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..32),
        new_len in proptest::option::of(0usize..0x5000),
    ) {
        let (mut image, _) = valid_image();
        for (at, value) in edits {
            let len = image.len();
            image[at % len] = value;
        }
        if let Some(len) = new_len {
            image.resize(len, 0);
        }
        let _ = parse(&image);
    }

    /// Random but well-formed sections: whatever the parser accepts must be what was written.
    #[test]
    fn accepted_sections_round_trip(
        raw in proptest::collection::vec(
            (any::<u32>(), any::<u32>(), any::<u64>(), any::<u64>(), 0u32..10, any::<u32>()),
            1..6,
        )
    ) {
        let sections: Vec<TdvfSection> = raw
            .iter()
            .map(|&(offset, size, address, memory, kind, attributes)| TdvfSection {
                data_offset: offset % 0x4000,
                raw_data_size: size % 0x2000,
                memory_address: address,
                memory_data_size: memory,
                section_type: SectionType::from_raw(kind),
                attributes: SectionAttributes(attributes),
            })
            .collect();
        let image = with_sections(sections.clone());
        if let Ok(metadata) = parse(&image) {
            prop_assert_eq!(metadata.sections, sections);
        }
    }
}

/// The firmware Debian/Ubuntu install with `apt-get install ovmf` is TDX-capable (Config-A);
/// check our parser agrees with QEMU about it.
#[test]
fn debian_ovmf_has_tdvf_metadata() {
    let image = match std::fs::read(DEBIAN_OVMF) {
        Ok(image) => image,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            println!("skip: {DEBIAN_OVMF} not present");
            return;
        }
        Err(error) => panic!("cannot read {DEBIAN_OVMF}: {error}"),
    };
    let metadata = parse(&image).unwrap_or_else(|error| panic!("{DEBIAN_OVMF}: {error}"));
    println!("{DEBIAN_OVMF}:\n{}", render_table(&metadata));
    for wanted in [SectionType::Bfv, SectionType::Cfv, SectionType::TdHob, SectionType::TempMem] {
        assert!(
            metadata.sections_of_type(wanted).next().is_some(),
            "{DEBIAN_OVMF} has no {wanted} section"
        );
    }
    let bfv = metadata.sections_of_type(SectionType::Bfv).next().unwrap();
    assert!(bfv.attributes.mr_extend(), "BFV must be measured into MRTD");
    assert!(bfv.data(&image).is_some());
    metadata.check_qemu_loadable().unwrap();
}
