//! The kernel ELF: what to load where, with which permissions, and its relocation.
//!
//! Formats from the ELF-64 Object File Format 1.5 ("ELF Header", "Program Header", "Sections")
//! and the System V x86-64 psABI 1.0, 4.4 "Relocation" (`R_X86_64_RELATIVE` = 8: the word at
//! `r_offset` becomes `B + A`, base plus addend). x86_64-unknown-none links the kernel as a
//! static position-independent executable (ET_DYN) whose only dynamic relocations are
//! `R_X86_64_RELATIVE`; anything else is refused, and so is every dynamic tag this loader does
//! not handle (a loader that silently skips a tag it does not know may run a wrongly relocated
//! kernel). `DT_RELR` (packed relative relocations, tag 36, linked with
//! `-z pack-relative-relocs`) is one of them: named in the refusal, so that the fix is obvious.
//!
//! The loader copies the segments into one zeroed buffer that spans them all (the "image"),
//! relocates it there, and maps it page by page; so segments need not be page-aligned in the
//! file, but two segments that share a page share its permissions, and a page both writable and
//! executable is refused (W^X).

use core::fmt;

pub const PAGE_SIZE: u64 = 4096;

const PT_LOAD: u32 = 1;
const PT_DYNAMIC: u32 = 2;
const PT_TLS: u32 = 7;
const PT_GNU_RELRO: u32 = 0x6474_e552;
/// sh_type of a section that occupies no file space (.bss).
const SHT_NOBITS: u32 = 8;
/// e_shstrndx escape: the index is in section 0's sh_link.
const SHN_XINDEX: usize = 0xffff;
const PF_X: u32 = 1;
const PF_W: u32 = 2;

const DT_NULL: u64 = 0;
const DT_PLTRELSZ: u64 = 2;
const DT_HASH: u64 = 4;
const DT_STRTAB: u64 = 5;
const DT_SYMTAB: u64 = 6;
const DT_RELA: u64 = 7;
const DT_RELASZ: u64 = 8;
const DT_RELAENT: u64 = 9;
const DT_STRSZ: u64 = 10;
const DT_SYMENT: u64 = 11;
const DT_REL: u64 = 17;
const DT_DEBUG: u64 = 21;
const DT_TEXTREL: u64 = 22;
const DT_FLAGS: u64 = 30;
const DT_RELRSZ: u64 = 35;
const DT_RELR: u64 = 36;
const DT_RELRENT: u64 = 37;
const DT_GNU_HASH: u64 = 0x6fff_fef5;
const DT_RELACOUNT: u64 = 0x6fff_fff9;
const DT_FLAGS_1: u64 = 0x6fff_fffb;
/// DT_FLAGS bit: the text has relocations (gABI).
const DF_TEXTREL: u64 = 0x4;

const R_X86_64_NONE: u32 = 0;
const R_X86_64_RELATIVE: u32 = 8;

const ET_EXEC: u16 = 2;
const ET_DYN: u16 = 3;

/// The most program headers this loader keeps (the kernel has 9).
const MAX_PROGRAM_HEADERS: usize = 32;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ElfError {
    Truncated(&'static str),
    NotElf64LittleX86,
    NotExecutable,
    TooManyProgramHeaders(usize),
    BadSegment(usize),
    NoLoadableSegment,
    SectionNotFound,
    UnsupportedDynamic(&'static str),
    UnknownDynamicTag(u64),
    UnsupportedSectionTable(&'static str),
    UnsupportedRelocation(u32),
    RelocationOutOfImage(u64),
    WritableAndExecutable(u64),
    EntryOutsideText(u64),
}

impl fmt::Display for ElfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ElfError::Truncated(what) => write!(f, "the ELF file ends inside its {what}"),
            ElfError::NotElf64LittleX86 => write!(f, "not a 64-bit little-endian x86_64 ELF"),
            ElfError::NotExecutable => write!(f, "ELF is neither ET_EXEC nor ET_DYN"),
            ElfError::TooManyProgramHeaders(n) => {
                write!(f, "{n} program headers, at most {MAX_PROGRAM_HEADERS} supported")
            }
            ElfError::BadSegment(i) => write!(f, "program header {i} is inconsistent"),
            ElfError::NoLoadableSegment => write!(f, "no PT_LOAD segment"),
            ElfError::SectionNotFound => write!(f, "no .bootloader-config section"),
            ElfError::UnsupportedDynamic(what) => write!(f, "unsupported dynamic section: {what}"),
            ElfError::UnsupportedSectionTable(what) => {
                write!(f, "unsupported section header table: {what}")
            }
            ElfError::UnknownDynamicTag(tag) => {
                write!(f, "dynamic tag {tag:#x}, which this loader does not handle, is refused")
            }
            ElfError::UnsupportedRelocation(t) => {
                write!(f, "relocation type {t}, only R_X86_64_RELATIVE is supported")
            }
            ElfError::RelocationOutOfImage(at) => {
                write!(f, "relocation at {at:#x} lies outside the loaded image")
            }
            ElfError::WritableAndExecutable(page) => {
                write!(f, "page {page:#x} would be writable and executable")
            }
            ElfError::EntryOutsideText(entry) => {
                write!(f, "entry point {entry:#x} is not in an executable segment")
            }
        }
    }
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}
fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}
fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProgramHeader {
    pub kind: u32,
    pub flags: u32,
    pub offset: u64,
    pub vaddr: u64,
    pub file_size: u64,
    pub mem_size: u64,
}

impl ProgramHeader {
    fn end(&self) -> u64 {
        self.vaddr + self.mem_size
    }
}

/// Page permissions of the loaded kernel; pages are always readable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Permissions {
    pub writable: bool,
    pub executable: bool,
}

/// The TLS template, in the kernel's link-time addresses (add the load bias).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tls {
    pub vaddr: u64,
    pub file_size: u64,
    pub mem_size: u64,
}

/// A parsed, checked kernel ELF.
pub struct Kernel<'a> {
    bytes: &'a [u8],
    position_independent: bool,
    entry: u64,
    headers: [ProgramHeader; MAX_PROGRAM_HEADERS],
    header_count: usize,
    /// Offset, entry size and count of the section header table.
    section_headers: Option<(usize, usize, usize)>,
    section_names: usize,
}

const fn align_down(x: u64) -> u64 {
    x & !(PAGE_SIZE - 1)
}

fn align_up(x: u64) -> Option<u64> {
    Some(x.checked_add(PAGE_SIZE - 1)? & !(PAGE_SIZE - 1))
}

impl<'a> Kernel<'a> {
    pub fn parse(bytes: &'a [u8]) -> Result<Self, ElfError> {
        let header = bytes.get(..64).ok_or(ElfError::Truncated("header"))?;
        // e_ident: magic, ELFCLASS64, ELFDATA2LSB, EV_CURRENT (the only version there is; the
        // `object` crate refuses others too, which the elf_diff fuzz target found ours did not);
        // e_machine: EM_X86_64.
        if header[..4] != *b"\x7fELF" || header[4] != 2 || header[5] != 1 || header[6] != 1 {
            return Err(ElfError::NotElf64LittleX86);
        }
        if u16_at(header, 18) != Some(62) {
            return Err(ElfError::NotElf64LittleX86);
        }
        let position_independent = match u16_at(header, 16) {
            Some(ET_DYN) => true,
            Some(ET_EXEC) => false,
            _ => return Err(ElfError::NotExecutable),
        };
        let entry = u64_at(header, 24).unwrap_or(0);
        let phoff = u64_at(header, 32).unwrap_or(0) as usize;
        let shoff = u64_at(header, 40).unwrap_or(0) as usize;
        let phentsize = u16_at(header, 54).unwrap_or(0) as usize;
        // gABI: "If the file has no program header table, [e_phoff] holds zero", whatever
        // e_phnum says (a table at offset 0 would overlap the ELF header).
        let phnum = if phoff == 0 { 0 } else { u16_at(header, 56).unwrap_or(0) as usize };
        let shentsize = u16_at(header, 58).unwrap_or(0) as usize;
        let shnum = u16_at(header, 60).unwrap_or(0) as usize;
        let shstrndx = u16_at(header, 62).unwrap_or(0) as usize;
        if phnum > MAX_PROGRAM_HEADERS {
            return Err(ElfError::TooManyProgramHeaders(phnum));
        }
        if phentsize < 56 && phnum > 0 {
            return Err(ElfError::Truncated("program headers"));
        }
        let mut headers = [ProgramHeader::default(); MAX_PROGRAM_HEADERS];
        for (i, slot) in headers.iter_mut().enumerate().take(phnum) {
            let at =
                phoff.checked_add(i * phentsize).ok_or(ElfError::Truncated("program headers"))?;
            let ph = at
                .checked_add(56)
                .and_then(|end| bytes.get(at..end))
                .ok_or(ElfError::Truncated("program headers"))?;
            *slot = ProgramHeader {
                kind: u32_at(ph, 0).unwrap_or(0),
                flags: u32_at(ph, 4).unwrap_or(0),
                offset: u64_at(ph, 8).unwrap_or(0),
                vaddr: u64_at(ph, 16).unwrap_or(0),
                file_size: u64_at(ph, 32).unwrap_or(0),
                mem_size: u64_at(ph, 40).unwrap_or(0),
            };
            let consistent = slot.file_size <= slot.mem_size
                && slot.offset.checked_add(slot.file_size).is_some_and(|e| e <= bytes.len() as u64)
                && slot.vaddr.checked_add(slot.mem_size).and_then(align_up).is_some();
            if slot.kind == PT_LOAD && !consistent {
                return Err(ElfError::BadSegment(i));
            }
        }
        // gABI: e_shoff 0 means no section header table. Its entries are 64-byte Elf64_Shdr.
        // e_shnum 0 (with a table) or e_shstrndx SHN_XINDEX mean the real values are in section
        // 0 (more than 0xff00 sections), which a kernel never needs.
        let section_headers = if shoff == 0 {
            None
        } else if shentsize != 64 {
            return Err(ElfError::UnsupportedSectionTable("e_shentsize is not 64"));
        } else if shnum == 0 || shstrndx == SHN_XINDEX {
            return Err(ElfError::UnsupportedSectionTable("extended section numbering"));
        } else {
            Some((shoff, shentsize, shnum))
        };
        let kernel = Kernel {
            bytes,
            position_independent,
            entry,
            headers,
            header_count: phnum,
            section_headers,
            section_names: shstrndx,
        };
        if kernel.loads().next().is_none() {
            return Err(ElfError::NoLoadableSegment);
        }
        // Loadable segments may share a page, never a byte: the image would depend on the
        // order they are copied in.
        let headers = kernel.program_headers();
        for (i, a) in
            headers.iter().enumerate().filter(|(_, h)| h.kind == PT_LOAD && h.mem_size > 0)
        {
            let overlaps = |b: &ProgramHeader| a.vaddr < b.end() && b.vaddr < a.end();
            if headers[..i].iter().any(|b| b.kind == PT_LOAD && b.mem_size > 0 && overlaps(b)) {
                return Err(ElfError::BadSegment(i));
            }
        }
        let in_text =
            kernel.loads().any(|s| s.flags & PF_X != 0 && s.vaddr <= entry && entry < s.end());
        if !in_text {
            return Err(ElfError::EntryOutsideText(entry));
        }
        Ok(kernel)
    }

    pub fn is_position_independent(&self) -> bool {
        self.position_independent
    }

    pub fn file(&self) -> &'a [u8] {
        self.bytes
    }

    pub fn program_headers(&self) -> &[ProgramHeader] {
        &self.headers[..self.header_count]
    }

    fn loads(&self) -> impl Iterator<Item = &ProgramHeader> + '_ {
        self.program_headers().iter().filter(|h| h.kind == PT_LOAD && h.mem_size > 0)
    }

    /// The page-aligned link-time range `[start, end)` that covers every PT_LOAD segment.
    pub fn span(&self) -> (u64, u64) {
        let start = self.loads().map(|s| align_down(s.vaddr)).min().unwrap_or(0);
        let end = self.loads().filter_map(|s| align_up(s.end())).max().unwrap_or(0);
        (start, end)
    }

    /// How many bytes the image buffer needs.
    pub fn image_len(&self) -> u64 {
        let (start, end) = self.span();
        end - start
    }

    pub fn entry(&self) -> u64 {
        self.entry
    }

    pub fn tls(&self) -> Option<Tls> {
        self.program_headers().iter().find(|h| h.kind == PT_TLS).map(|h| Tls {
            vaddr: h.vaddr,
            file_size: h.file_size,
            mem_size: h.mem_size,
        })
    }

    /// The contents of the section called `name`, found through the section headers.
    pub fn section(&self, name: &[u8]) -> Result<&'a [u8], ElfError> {
        let (shoff, shentsize, shnum) = self.section_headers.ok_or(ElfError::SectionNotFound)?;
        // The name table is one of the sections, and not the null section 0.
        if self.section_names == 0 || self.section_names >= shnum {
            return Err(ElfError::SectionNotFound);
        }
        // The whole table lies inside the file, as every ELF reader requires.
        let end = shnum.checked_mul(shentsize).and_then(|n| n.checked_add(shoff));
        if end.is_none_or(|end| end > self.bytes.len()) {
            return Err(ElfError::Truncated("section headers"));
        }
        let header = |i: usize| -> Option<(u32, u32, u64, u64)> {
            let at = shoff.checked_add(i.checked_mul(shentsize)?)?;
            let sh = self.bytes.get(at..at.checked_add(64)?)?;
            Some((u32_at(sh, 0)?, u32_at(sh, 4)?, u64_at(sh, 24)?, u64_at(sh, 32)?))
        };
        // A section's bytes in the file; SHT_NOBITS occupies none, whatever its offset says.
        let contents = |kind: u32, offset: u64, size: u64| -> Option<&'a [u8]> {
            if kind == SHT_NOBITS {
                return Some(&[]);
            }
            self.bytes.get(offset as usize..offset.saturating_add(size) as usize)
        };
        let (_, strtab_kind, strtab_offset, strtab_size) =
            header(self.section_names).ok_or(ElfError::SectionNotFound)?;
        let strtab =
            contents(strtab_kind, strtab_offset, strtab_size).ok_or(ElfError::SectionNotFound)?;
        for i in 0..shnum {
            let Some((name_offset, kind, offset, size)) = header(i) else { continue };
            let Some(tail) = strtab.get(name_offset as usize..) else { continue };
            let this = tail.split(|&b| b == 0).next().unwrap_or(&[]);
            if this == name {
                return contents(kind, offset, size).ok_or(ElfError::Truncated("section"));
            }
        }
        Err(ElfError::SectionNotFound)
    }

    /// Copies every PT_LOAD segment into `image` (of `image_len()` bytes, the span's first byte
    /// at index 0) and zeroes the rest, including `.bss`.
    pub fn load_into(&self, image: &mut [u8]) {
        let (start, _) = self.span();
        image.fill(0);
        for s in self.loads() {
            let at = (s.vaddr - start) as usize;
            let file = &self.bytes[s.offset as usize..(s.offset + s.file_size) as usize];
            image[at..at + file.len()].copy_from_slice(file);
        }
    }

    /// Applies the dynamic relocations to a loaded image that will run with link-time address
    /// `v` at virtual address `v + bias`.
    pub fn relocate(&self, image: &mut [u8], bias: u64) -> Result<usize, ElfError> {
        let Some(dynamic) = self.program_headers().iter().find(|h| h.kind == PT_DYNAMIC) else {
            return Ok(0);
        };
        let (start, end) = self.span();
        let in_image = |vaddr: u64, len: u64| -> Option<usize> {
            (vaddr >= start && vaddr.checked_add(len)? <= end).then(|| (vaddr - start) as usize)
        };
        let table = in_image(dynamic.vaddr, dynamic.mem_size)
            .ok_or(ElfError::UnsupportedDynamic("PT_DYNAMIC outside the loaded segments"))?;
        let (mut rela, mut rela_size, mut rela_entry) = (None, 0u64, 24u64);
        for i in 0..(dynamic.mem_size / 16) as usize {
            let at = table + i * 16;
            let tag = u64_at(image, at).unwrap_or(DT_NULL);
            let value = u64_at(image, at + 8).unwrap_or(0);
            match tag {
                DT_NULL => break,
                DT_RELA => rela = Some(value),
                DT_RELASZ => rela_size = value,
                DT_RELAENT => rela_entry = value,
                DT_REL => return Err(ElfError::UnsupportedDynamic("DT_REL relocations")),
                DT_RELR | DT_RELRSZ | DT_RELRENT => {
                    return Err(ElfError::UnsupportedDynamic(
                        "DT_RELR packed relocations (link without -z pack-relative-relocs)",
                    ))
                }
                DT_PLTRELSZ if value != 0 => {
                    return Err(ElfError::UnsupportedDynamic("PLT relocations"))
                }
                DT_TEXTREL => return Err(ElfError::UnsupportedDynamic("text relocations")),
                DT_FLAGS if value & DF_TEXTREL != 0 => {
                    return Err(ElfError::UnsupportedDynamic("text relocations (DF_TEXTREL)"))
                }
                // Handled by doing nothing: an empty PLT, the RELA count (a hint), flags that
                // only say "bind now" and "PIE", the debugger's slot, and the symbol and hash
                // tables, which no R_X86_64_RELATIVE relocation reads.
                DT_PLTRELSZ | DT_RELACOUNT | DT_FLAGS | DT_FLAGS_1 | DT_DEBUG | DT_SYMTAB
                | DT_SYMENT | DT_STRTAB | DT_STRSZ | DT_HASH | DT_GNU_HASH => {}
                other => return Err(ElfError::UnknownDynamicTag(other)),
            }
        }
        let Some(rela) = rela else { return Ok(0) };
        if rela_entry != 24 {
            return Err(ElfError::UnsupportedDynamic("DT_RELAENT is not 24"));
        }
        let table = in_image(rela, rela_size)
            .ok_or(ElfError::UnsupportedDynamic("DT_RELA outside the loaded segments"))?;
        let count = (rela_size / 24) as usize;
        for i in 0..count {
            let at = table + i * 24;
            let offset = u64_at(image, at).unwrap_or(0);
            let info = u64_at(image, at + 8).unwrap_or(0);
            let addend = u64_at(image, at + 16).unwrap_or(0);
            match info as u32 {
                R_X86_64_NONE => {}
                R_X86_64_RELATIVE => {
                    let target =
                        in_image(offset, 8).ok_or(ElfError::RelocationOutOfImage(offset))?;
                    image[target..target + 8]
                        .copy_from_slice(&bias.wrapping_add(addend).to_le_bytes());
                }
                other => return Err(ElfError::UnsupportedRelocation(other)),
            }
        }
        Ok(count)
    }

    /// The permissions of the image page at link-time address `page` (page-aligned), or `None`
    /// when no segment touches it. Pages inside PT_GNU_RELRO (rounded as ld.so rounds it: both
    /// ends down to a page) lose write access once relocated.
    pub fn page_permissions(&self, page: u64) -> Result<Option<Permissions>, ElfError> {
        let mut found: Option<Permissions> = None;
        for s in self.loads() {
            if align_down(s.vaddr) <= page && page < s.end() {
                let p = found.get_or_insert(Permissions { writable: false, executable: false });
                p.writable |= s.flags & PF_W != 0;
                p.executable |= s.flags & PF_X != 0;
            }
        }
        if let Some(p) = &mut found {
            let relro = self.program_headers().iter().find(|h| h.kind == PT_GNU_RELRO);
            if let Some(r) = relro {
                // saturating: a RELRO that runs past the top of the address space (the
                // header is not checked at parse time) covers everything above its start.
                let end = align_down(r.vaddr.saturating_add(r.mem_size));
                if align_down(r.vaddr) <= page && page < end {
                    p.writable = false;
                }
            }
            if p.writable && p.executable {
                return Err(ElfError::WritableAndExecutable(page));
            }
        }
        Ok(found)
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// Builds a small ET_DYN ELF: a text page, a RELRO data page with one relative relocation
    /// target, a .dynamic, and a .bss; plus a section table with `.bootloader-config`.
    pub struct TestElf {
        pub bytes: Vec<u8>,
    }

    fn put(b: &mut Vec<u8>, at: usize, v: &[u8]) {
        if b.len() < at + v.len() {
            b.resize(at + v.len(), 0);
        }
        b[at..at + v.len()].copy_from_slice(v);
    }

    fn phdr(kind: u32, flags: u32, offset: u64, vaddr: u64, file: u64, mem: u64) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend(kind.to_le_bytes());
        v.extend(flags.to_le_bytes());
        v.extend(offset.to_le_bytes());
        v.extend(vaddr.to_le_bytes());
        v.extend(vaddr.to_le_bytes());
        v.extend(file.to_le_bytes());
        v.extend(mem.to_le_bytes());
        v.extend(0x1000u64.to_le_bytes());
        v
    }

    /// `text_flags` lets a test make the text writable (to see W^X refused).
    pub fn test_elf(text_flags: u32, reloc_type: u32) -> TestElf {
        let mut b = vec![0u8; 0x3000];
        put(&mut b, 0, b"\x7fELF\x02\x01\x01");
        put(&mut b, 16, &ET_DYN.to_le_bytes());
        put(&mut b, 18, &62u16.to_le_bytes());
        put(&mut b, 24, &0x1010u64.to_le_bytes()); // entry
        put(&mut b, 32, &64u64.to_le_bytes()); // phoff
        put(&mut b, 54, &56u16.to_le_bytes());
        let phdrs = [
            phdr(PT_LOAD, 4, 0, 0, 0x400, 0x400),
            phdr(PT_LOAD, text_flags, 0x1000, 0x1000, 0x100, 0x100),
            phdr(PT_LOAD, 6, 0x2000, 0x2000, 0x100, 0x100),
            phdr(PT_LOAD, 6, 0x2100, 0x3100, 0x10, 0x2000), // .data + .bss
            phdr(PT_DYNAMIC, 6, 0x2040, 0x2040, 0x40, 0x40),
            phdr(PT_GNU_RELRO, 4, 0x2000, 0x2000, 0x100, 0x1000),
        ];
        put(&mut b, 56, &(phdrs.len() as u16).to_le_bytes());
        for (i, p) in phdrs.iter().enumerate() {
            put(&mut b, 64 + i * 56, p);
        }
        // .text: a recognisable byte.
        put(&mut b, 0x1000, &[0xcc; 16]);
        // Relocation target at 0x2000, addend 0x1234; RELA table at 0x300 (in the R segment).
        put(&mut b, 0x300, &0x2000u64.to_le_bytes());
        put(&mut b, 0x308, &(reloc_type as u64).to_le_bytes());
        put(&mut b, 0x310, &0x1234u64.to_le_bytes());
        // .dynamic at 0x2040.
        let dynamic = [(DT_RELA, 0x300u64), (DT_RELASZ, 24), (DT_RELAENT, 24), (DT_NULL, 0)];
        for (i, (tag, value)) in dynamic.iter().enumerate() {
            put(&mut b, 0x2040 + i * 16, &tag.to_le_bytes());
            put(&mut b, 0x2048 + i * 16, &value.to_le_bytes());
        }
        put(&mut b, 0x2100, &[0xdd; 16]); // .data
                                          // Sections: null, .shstrtab, .bootloader-config (3 bytes at 0x200).
        let strtab = b"\0.shstrtab\0.bootloader-config\0";
        put(&mut b, 0x1a0, strtab);
        put(&mut b, 0x200, b"cfg");
        let shoff = b.len();
        let section = |name: u32, offset: u64, size: u64| {
            let mut v = vec![0u8; 64];
            v[0..4].copy_from_slice(&name.to_le_bytes());
            v[24..32].copy_from_slice(&offset.to_le_bytes());
            v[32..40].copy_from_slice(&size.to_le_bytes());
            v
        };
        let sections =
            [section(0, 0, 0), section(1, 0x1a0, strtab.len() as u64), section(11, 0x200, 3)];
        for (i, s) in sections.iter().enumerate() {
            put(&mut b, shoff + i * 64, s);
        }
        put(&mut b, 40, &(shoff as u64).to_le_bytes());
        put(&mut b, 58, &64u16.to_le_bytes());
        put(&mut b, 60, &3u16.to_le_bytes());
        put(&mut b, 62, &1u16.to_le_bytes());
        TestElf { bytes: b }
    }

    #[test]
    fn parses_span_entry_and_sections() {
        let elf = test_elf(5, R_X86_64_RELATIVE);
        let k = Kernel::parse(&elf.bytes).unwrap();
        assert!(k.is_position_independent());
        assert_eq!(k.span(), (0, 0x6000));
        assert_eq!(k.entry(), 0x1010);
        assert_eq!(k.section(b".bootloader-config").unwrap(), b"cfg");
        assert_eq!(k.section(b".nope"), Err(ElfError::SectionNotFound));
    }

    #[test]
    fn loads_zeroes_bss_and_relocates() {
        let elf = test_elf(5, R_X86_64_RELATIVE);
        let k = Kernel::parse(&elf.bytes).unwrap();
        let mut image = vec![0xffu8; k.image_len() as usize];
        k.load_into(&mut image);
        assert_eq!(image[0x1000], 0xcc);
        assert_eq!(image[0x3100], 0xdd);
        assert!(image[0x3110..0x5100].iter().all(|&b| b == 0), ".bss must be zero");
        assert_eq!(k.relocate(&mut image, 0xffff_8000_0000_0000).unwrap(), 1);
        assert_eq!(image[0x2000..0x2008], (0xffff_8000_0000_1234u64).to_le_bytes());
    }

    #[test]
    fn other_relocation_types_are_refused() {
        let elf = test_elf(5, 1); // R_X86_64_64
        let k = Kernel::parse(&elf.bytes).unwrap();
        let mut image = vec![0u8; k.image_len() as usize];
        k.load_into(&mut image);
        assert_eq!(k.relocate(&mut image, 0), Err(ElfError::UnsupportedRelocation(1)));
    }

    /// The test ELF with its third dynamic entry (DT_RELAENT) replaced by `tag`.
    fn with_dynamic_tag(tag: u64, value: u64) -> Vec<u8> {
        let mut b = test_elf(5, R_X86_64_RELATIVE).bytes;
        put(&mut b, 0x2040 + 2 * 16, &tag.to_le_bytes());
        put(&mut b, 0x2048 + 2 * 16, &value.to_le_bytes());
        b
    }

    fn relocate(bytes: &[u8]) -> Result<usize, ElfError> {
        let k = Kernel::parse(bytes).unwrap();
        let mut image = vec![0u8; k.image_len() as usize];
        k.load_into(&mut image);
        k.relocate(&mut image, 0x1000)
    }

    #[test]
    fn dt_relr_is_refused_by_name() {
        for tag in [DT_RELR, DT_RELRSZ, DT_RELRENT] {
            let error = relocate(&with_dynamic_tag(tag, 8)).unwrap_err();
            assert!(
                matches!(error, ElfError::UnsupportedDynamic(what) if what.contains("DT_RELR"))
            );
            assert!(error.to_string().contains("DT_RELR packed relocations"), "{error}");
        }
    }

    #[test]
    fn unknown_dynamic_tags_are_refused_known_harmless_ones_pass() {
        // DT_NEEDED, DT_INIT, DT_PLTGOT, DT_JMPREL: a loader that ignored them would run a
        // kernel that expects them handled.
        for tag in [1, 12, 3, 23, 0x6fff_fff0] {
            assert_eq!(relocate(&with_dynamic_tag(tag, 0)), Err(ElfError::UnknownDynamicTag(tag)));
        }
        assert_eq!(
            relocate(&with_dynamic_tag(DT_FLAGS, DF_TEXTREL)),
            Err(ElfError::UnsupportedDynamic("text relocations (DF_TEXTREL)"))
        );
        // What x86_64-unknown-none's linker writes for the kernel (readelf -d): all handled.
        for tag in [DT_FLAGS, DT_FLAGS_1, DT_DEBUG, DT_RELACOUNT, DT_SYMTAB, DT_GNU_HASH, DT_HASH] {
            assert_eq!(relocate(&with_dynamic_tag(tag, 8)), Ok(1), "tag {tag:#x}");
        }
    }

    #[test]
    fn permissions_follow_segments_and_relro() {
        let elf = test_elf(5, R_X86_64_RELATIVE);
        let k = Kernel::parse(&elf.bytes).unwrap();
        let p = |page| k.page_permissions(page).unwrap();
        let ro = Permissions { writable: false, executable: false };
        assert_eq!(p(0), Some(ro));
        assert_eq!(p(0x1000), Some(Permissions { writable: false, executable: true }));
        assert_eq!(p(0x2000), Some(ro), "RELRO is read-only after relocation");
        assert_eq!(p(0x3000), Some(Permissions { writable: true, executable: false }));
        assert_eq!(p(0x5000), Some(Permissions { writable: true, executable: false }));
        assert_eq!(p(0x6000), None);
    }

    #[test]
    fn a_relro_past_the_top_of_the_address_space_does_not_overflow() {
        // Found by fuzzing (fuzz/regressions/elf): vaddr + mem_size of PT_GNU_RELRO wrapped.
        let mut elf = test_elf(5, R_X86_64_RELATIVE);
        let relro_mem_size = 64 + 5 * 56 + 40;
        put(&mut elf.bytes, relro_mem_size, &u64::MAX.to_le_bytes());
        let k = Kernel::parse(&elf.bytes).unwrap();
        let ro = Permissions { writable: false, executable: false };
        assert_eq!(k.page_permissions(0x2000), Ok(Some(ro)));
        assert_eq!(k.page_permissions(0x5000), Ok(Some(ro)));
    }

    #[test]
    fn program_headers_at_the_top_of_the_address_space_are_truncated_not_overflowed() {
        // Found by fuzzing (fuzz/regressions/elf): e_phoff near 2^64 overflowed `at + 56`.
        let mut elf = test_elf(5, R_X86_64_RELATIVE);
        put(&mut elf.bytes, 32, &(u64::MAX - 8).to_le_bytes());
        put(&mut elf.bytes, 56, &1u16.to_le_bytes());
        assert_eq!(Kernel::parse(&elf.bytes).err(), Some(ElfError::Truncated("program headers")));
    }

    #[test]
    fn overlapping_loadable_segments_are_refused() {
        // Found by fuzzing against `object` (fuzz/regressions/elf_diff): a later PT_LOAD over
        // the bytes of PT_DYNAMIC's segment changed the dynamic table the loader read.
        let mut elf = test_elf(5, R_X86_64_RELATIVE);
        put(&mut elf.bytes, 64 + 3 * 56 + 16, &0x20f8u64.to_le_bytes());
        assert_eq!(Kernel::parse(&elf.bytes).err(), Some(ElfError::BadSegment(3)));
        // Right after the third segment's last byte is fine, in the same page.
        put(&mut elf.bytes, 64 + 3 * 56 + 16, &0x2100u64.to_le_bytes());
        assert!(Kernel::parse(&elf.bytes).is_ok());
    }

    #[test]
    fn a_nobits_section_has_no_file_contents() {
        // Found by fuzzing against `object` (fuzz/regressions/elf_diff): ours read the bytes at
        // a SHT_NOBITS section's offset.
        let mut elf = test_elf(5, R_X86_64_RELATIVE);
        let shoff = u64::from_le_bytes(elf.bytes[40..48].try_into().unwrap()) as usize;
        put(&mut elf.bytes, shoff + 2 * 64 + 4, &SHT_NOBITS.to_le_bytes());
        let k = Kernel::parse(&elf.bytes).unwrap();
        assert_eq!(k.section(b".bootloader-config"), Ok(&[][..]));
        // A NOBITS name table has no names.
        put(&mut elf.bytes, shoff + 64 + 4, &SHT_NOBITS.to_le_bytes());
        let k = Kernel::parse(&elf.bytes).unwrap();
        assert_eq!(k.section(b".bootloader-config"), Err(ElfError::SectionNotFound));
    }

    #[test]
    fn the_section_table_is_read_as_the_gabi_defines_it() {
        // Found by fuzzing against `object` (fuzz/regressions/elf_diff): ours read a name
        // table at e_shstrndx past e_shnum; the rest are the same family of differences.
        let elf = test_elf(5, R_X86_64_RELATIVE);
        let with = |at: usize, value: &[u8]| {
            let mut bytes = elf.bytes.clone();
            put(&mut bytes, at, value);
            bytes
        };
        fn config(bytes: &[u8]) -> Result<Vec<u8>, ElfError> {
            Kernel::parse(bytes).and_then(|k| k.section(b".bootloader-config")).map(<[u8]>::to_vec)
        }
        assert_eq!(config(&elf.bytes), Ok(b"cfg".to_vec()));
        // e_shstrndx 3 of 3 sections, and 0 (the null section).
        assert_eq!(config(&with(62, &3u16.to_le_bytes())), Err(ElfError::SectionNotFound));
        assert_eq!(config(&with(62, &0u16.to_le_bytes())), Err(ElfError::SectionNotFound));
        // e_shoff 0: no table.
        assert_eq!(config(&with(40, &0u64.to_le_bytes())), Err(ElfError::SectionNotFound));
        let unsupported = |what| Err(ElfError::UnsupportedSectionTable(what));
        assert_eq!(config(&with(58, &72u16.to_le_bytes())), unsupported("e_shentsize is not 64"));
        assert_eq!(
            config(&with(60, &0u16.to_le_bytes())),
            unsupported("extended section numbering")
        );
        assert_eq!(
            config(&with(62, &0xffffu16.to_le_bytes())),
            unsupported("extended section numbering")
        );
    }

    #[test]
    fn e_phoff_zero_means_no_program_header_table() {
        // Found by fuzzing against `object` (fuzz/regressions/elf_diff): ours read the table
        // over the ELF header itself.
        let mut elf = test_elf(5, R_X86_64_RELATIVE);
        put(&mut elf.bytes, 32, &0u64.to_le_bytes());
        assert_eq!(Kernel::parse(&elf.bytes).err(), Some(ElfError::NoLoadableSegment));
    }

    #[test]
    fn a_section_table_past_the_end_of_the_file_is_refused() {
        // Found by fuzzing against `object` (fuzz/regressions/elf_diff): ours read the entries
        // that fitted and found the section; every other reader refuses the table.
        let mut elf = test_elf(5, R_X86_64_RELATIVE);
        put(&mut elf.bytes, 60, &4u16.to_le_bytes());
        let k = Kernel::parse(&elf.bytes).unwrap();
        assert_eq!(k.section(b".bootloader-config"), Err(ElfError::Truncated("section headers")));
    }

    #[test]
    fn a_writable_text_is_refused() {
        let elf = test_elf(7, R_X86_64_RELATIVE);
        let k = Kernel::parse(&elf.bytes).unwrap();
        assert_eq!(k.page_permissions(0x1000), Err(ElfError::WritableAndExecutable(0x1000)));
    }

    #[test]
    fn garbage_is_refused_not_panicked_on() {
        assert_eq!(Kernel::parse(b"").err(), Some(ElfError::Truncated("header")));
        let elf = test_elf(5, 8);
        for len in [64, 100, 0x200, 0x1000] {
            assert!(Kernel::parse(&elf.bytes[..len]).is_err(), "len {len}");
        }
        let mut bad_entry = test_elf(5, 8).bytes;
        bad_entry[24..32].copy_from_slice(&0x2000u64.to_le_bytes());
        assert_eq!(Kernel::parse(&bad_entry).err(), Some(ElfError::EntryOutsideText(0x2000)));
        // EI_VERSION other than EV_CURRENT (elf_diff fuzz target: `object` refused it, ours did
        // not).
        let mut bad_version = test_elf(5, 8).bytes;
        bad_version[6] = 0;
        assert_eq!(Kernel::parse(&bad_version).err(), Some(ElfError::NotElf64LittleX86));
    }

    proptest::proptest! {
        #[test]
        fn parsing_random_bytes_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..400)) {
            let mut elf = test_elf(5, 8).bytes;
            let n = bytes.len().min(elf.len());
            elf[..n].copy_from_slice(&bytes[..n]);
            if let Ok(k) = Kernel::parse(&elf) {
                let _ = k.section(b".bootloader-config");
                if k.image_len() < 1 << 20 {
                    let mut image = vec![0u8; k.image_len() as usize];
                    k.load_into(&mut image);
                    let _ = k.relocate(&mut image, 0);
                }
            }
        }
    }
}
