//! loader-core's ELF reader against the `object` crate, on the facts the loader relies on: the
//! file type, the entry point, every program header, the `.bootloader-config` section, and the
//! dynamic tags that steer relocation.
//!
//! Where ours accepts a file and `object` reads the same structure, both must agree. Deliberate
//! differences (not disagreements): `object` insists on `e_phentsize == 56` where the ELF
//! specification only says all entries have the same size (ours reads entries of at least 56
//! bytes at the stride given); ours refuses much that `object` reads (no executable PT_LOAD
//! holding the entry, segments past the end of the file or overlapping another, more than 32
//! program headers, extended section numbering, unknown dynamic tags).

use loader_core::elf::{ElfError, Kernel};
use object::elf::{
    FileHeader64, DT_NULL, DT_REL, DT_RELA, DT_RELAENT, DT_RELASZ, DT_TEXTREL, ET_DYN, PT_DYNAMIC,
    PT_LOAD,
};
use object::read::elf::{Dyn, FileHeader, ProgramHeader, SectionHeader};
use object::LittleEndian;

const MAX_IMAGE: u64 = 1 << 20;

/// One comparison; `Err` says how the readers disagree.
pub fn compare(data: &[u8]) -> Result<(), String> {
    let Ok(kernel) = Kernel::parse(data) else { return Ok(()) };
    let endian = LittleEndian;
    let header = FileHeader64::<LittleEndian>::parse(data)
        .map_err(|e| format!("ours accepts, object refuses the file header: {e}"))?;
    if kernel.entry() != header.e_entry(endian) {
        return Err(format!("entry {:#x} vs {:#x}", kernel.entry(), header.e_entry(endian)));
    }
    if kernel.is_position_independent() != (header.e_type(endian) == ET_DYN) {
        return Err(format!("ET_DYN: ours {}", kernel.is_position_independent()));
    }
    // object reads program headers only at their natural size (see the module docs).
    let Ok(theirs) = header.program_headers(endian, data) else { return Ok(()) };
    let mine = kernel.program_headers();
    if mine.len() != theirs.len() {
        return Err(format!("{} program headers vs {}", mine.len(), theirs.len()));
    }
    for (i, (m, t)) in mine.iter().zip(theirs).enumerate() {
        let t_fields = (
            t.p_type(endian),
            t.p_flags(endian),
            t.p_offset(endian),
            t.p_vaddr(endian),
            t.p_filesz(endian),
            t.p_memsz(endian),
        );
        if (m.kind, m.flags, m.offset, m.vaddr, m.file_size, m.mem_size) != t_fields {
            return Err(format!("program header {i}: {m:?} vs {t_fields:?}"));
        }
    }

    // The section the loader reads its configuration from.
    let my_section = kernel.section(b".bootloader-config");
    match header.sections(endian, data) {
        Ok(table) => {
            let their_section = table
                .section_by_name(endian, b".bootloader-config")
                .map(|(_, s)| s.data(endian, data).map_err(|e| e.to_string()));
            match (&my_section, their_section) {
                (Ok(mine), Some(Ok(theirs))) if *mine != theirs => {
                    return Err(".bootloader-config contents differ".into())
                }
                (Ok(_), None) => {
                    return Err("ours finds .bootloader-config, object does not".into())
                }
                (Err(ElfError::SectionNotFound), Some(Ok(_))) => {
                    return Err("object finds .bootloader-config, ours does not".into())
                }
                _ => {}
            }
        }
        Err(e) => {
            if my_section.is_ok() {
                return Err(format!(
                    "ours reads .bootloader-config from a section table object refuses: {e}"
                ));
            }
        }
    }

    // The dynamic tags, as object reads them from the file and ours from the loaded image.
    if kernel.image_len() > MAX_IMAGE {
        return Ok(());
    }
    let Some(dynamic) = theirs.iter().find(|p| p.p_type(endian) == PT_DYNAMIC) else {
        return Ok(());
    };
    let Ok(Some(entries)) = dynamic.dynamic(endian, data) else { return Ok(()) };
    let mut image = vec![0u8; kernel.image_len() as usize];
    kernel.load_into(&mut image);
    let (start, _) = kernel.span();
    // Only where the loaded image holds the file's bytes for the table (a PT_LOAD maps its file
    // range to its address) do both readers see the same tags.
    let vaddr = dynamic.p_vaddr(endian);
    let file = dynamic.p_offset(endian);
    let size = dynamic.p_filesz(endian);
    let mapped = theirs.iter().any(|p| {
        p.p_type(endian) == PT_LOAD
            && p.p_offset(endian) <= file
            && file
                .checked_add(size)
                .is_some_and(|end| end <= p.p_offset(endian) + p.p_filesz(endian))
            && vaddr.checked_sub(p.p_vaddr(endian)) == Some(file - p.p_offset(endian))
    });
    if !mapped || dynamic.p_memsz(endian) != size || vaddr < start {
        return Ok(());
    }
    let mut rela = None;
    let mut refused = None;
    let (mut rela_size, mut rela_entry) = (0, 24);
    for entry in entries {
        match u32::try_from(entry.d_tag(endian)) {
            Ok(DT_NULL) => break,
            Ok(DT_RELA) => rela = Some(entry.d_val(endian)),
            Ok(DT_RELASZ) => rela_size = entry.d_val(endian),
            Ok(DT_RELAENT) => rela_entry = entry.d_val(endian),
            Ok(DT_REL) | Ok(DT_TEXTREL) => refused = refused.or(Some(entry.d_tag(endian))),
            _ => {}
        }
    }
    let result = kernel.relocate(&mut image.clone(), 0);
    match (refused, rela, result) {
        (Some(tag), _, Ok(n)) => {
            Err(format!("dynamic tag {tag} should be refused, ours relocated {n}"))
        }
        (None, None, Ok(n)) if n != 0 => Err(format!("no DT_RELA, yet {n} relocations")),
        (None, Some(_), Ok(n)) if rela_entry == 24 && n as u64 != rela_size / 24 => {
            Err(format!("DT_RELASZ {rela_size} but {n} relocations"))
        }
        (None, Some(_), Ok(_)) if rela_entry != 24 => {
            Err("DT_RELAENT is not 24, yet relocated".into())
        }
        _ => Ok(()),
    }
}

/// The fuzz body.
pub fn run(data: &[u8]) {
    if let Err(disagreement) = compare(data) {
        panic!("ELF readers disagree: {disagreement}");
    }
}
