//! The images the audit watches (the loader's PE and the kernel's ELF): where their entry point
//! is, how large they are, the bytes that identify the entry at run time, and function names.

use anyhow::{bail, Context, Result};
use object::{Object, ObjectSection, ObjectSymbol, SymbolKind};
use std::path::Path;

/// A function: image offset of its start, and its demangled name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Function {
    pub start: u64,
    /// 0 when unknown (labels, PDB publics).
    pub size: u64,
    pub name: String,
}

/// An image as the plugin and the report need it. Offsets are relative to the image's link
/// base (PE: RVAs; ELF: addresses, since the kernel is linked at 0 and relocated as a whole).
#[derive(Clone, Debug)]
pub struct Image {
    pub name: String,
    pub entry: u64,
    pub size: u64,
    /// The first bytes at the entry point (whole instructions), unique in the image's code.
    pub signature: Vec<u8>,
    /// Sorted by start.
    pub functions: Vec<Function>,
    /// Where the function names came from.
    pub symbol_source: String,
}

impl Image {
    /// The function containing `offset`, if any: the last one starting at or before it, unless
    /// its known size ends before `offset`.
    pub fn function_at(&self, offset: u64) -> Option<&Function> {
        let index = self.functions.partition_point(|f| f.start <= offset);
        let function = &self.functions[index.checked_sub(1)?];
        (function.size == 0 || offset < function.start + function.size).then_some(function)
    }

    /// The image offset of the function whose name (demangled, without hash) is `name`.
    pub fn function_named(&self, name: &str) -> Option<u64> {
        self.functions.iter().find(|f| f.name == name).map(|f| f.start)
    }

    /// The plugin option describing this image.
    pub fn plugin_option(&self) -> String {
        let signature: String = self.signature.iter().map(|b| format!("{b:02x}")).collect();
        format!("image={}:{:x}:{:x}:{signature}", self.name, self.entry, self.size)
    }
}

pub fn demangle(name: &str) -> String {
    format!("{:#}", rustc_demangle::demangle(name))
}

/// Bytes at `address` in an object's sections, up to `len`.
fn bytes_at<'a>(file: &'a object::File<'a>, address: u64, len: usize) -> Option<&'a [u8]> {
    file.sections().find_map(|section| {
        let start = section.address();
        let data = section.data().ok()?;
        if address >= start && address < start + data.len() as u64 {
            let from = (address - start) as usize;
            Some(&data[from..(from + len).min(data.len())])
        } else {
            None
        }
    })
}

/// The entry's first basic block (through its first branch, call or return, at most 48
/// bytes, and never past the end of the entry's page): the translation block QEMU makes when
/// the entry runs starts with exactly these bytes, so the plugin finds the image's load address
/// from it. QEMU ends a translation block at a page boundary, and images load page-aligned, so
/// an entry a few bytes before the end of its page gives a short signature: the plugin then
/// also relies on the block starting at the entry's page offset.
fn entry_signature(file: &object::File, entry: u64) -> Result<Vec<u8>> {
    let bytes = bytes_at(file, entry, 64).context("entry point outside the file's sections")?;
    Ok(bytes[..entry_block_len(bytes, entry)?].to_vec())
}

/// How many of `bytes` (at `entry`) the signature takes; see [`entry_signature`].
fn entry_block_len(bytes: &[u8], entry: u64) -> Result<usize> {
    let limit = 48.min(4096 - (entry % 4096) as usize);
    let mut decoder = iced_x86::Decoder::with_ip(64, bytes, 0, iced_x86::DecoderOptions::NONE);
    let mut len = 0;
    while decoder.can_decode() {
        let instruction = decoder.decode();
        if instruction.is_invalid() || instruction.next_ip() as usize > limit {
            break;
        }
        len = instruction.next_ip() as usize;
        if instruction.flow_control() != iced_x86::FlowControl::Next {
            break;
        }
    }
    if len == 0 {
        bail!("cannot decode the instructions at the entry point");
    }
    Ok(len)
}

/// The kernel ELF (a static PIE linked at 0, or an executable): entry, extent and symbols.
pub fn kernel_image(path: &Path) -> Result<Image> {
    let data = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let file = object::File::parse(&*data)
        .with_context(|| format!("{} is not an object file", path.display()))?;
    let entry = file.entry();
    let size = file
        .sections()
        .filter(|s| s.address() != 0 || s.size() != 0)
        .map(|s| s.address() + s.size())
        .max()
        .context("kernel has no sections")?;
    let mut functions: Vec<Function> = file
        .symbols()
        // Functions, and labels in code (global_asm! entry points such as diff.rs's forms).
        .filter(|s| !matches!(s.kind(), SymbolKind::Section | SymbolKind::File) && s.address() != 0)
        .filter(|s| {
            s.section_index()
                .and_then(|i| file.section_by_index(i).ok())
                .is_some_and(|section| section.kind() == object::SectionKind::Text)
        })
        .filter_map(|s| {
            Some(Function { start: s.address(), size: s.size(), name: demangle(s.name().ok()?) })
        })
        .collect();
    functions.sort_by_key(|f| f.start);
    if functions.is_empty() {
        bail!("{} has no function symbols", path.display());
    }
    Ok(Image {
        name: "kernel".into(),
        entry,
        size,
        signature: entry_signature(&file, entry)?,
        functions,
        symbol_source: format!("ELF symbols of {}", path.display()),
    })
}

/// A UEFI loader (PE32+): entry RVA, image size, and function names.
///
/// `pdb` is (the PDB, the .efi it was linked with). That PDB must belong to that .efi (same
/// GUID and age in its CodeView record), and that .efi must be the same code as `path`: same
/// entry point and section layout, and byte-identical executable sections. A rebuild of the same
/// crate with the same toolchain differs only in link timestamps and the PDB GUID.
pub fn loader_image(path: &Path, pdb: Option<(&Path, &Path)>) -> Result<Image> {
    let data = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let file = object::File::parse(&*data)
        .with_context(|| format!("{} is not a PE file", path.display()))?;
    let base = file.relative_address_base();
    let entry = file.entry() - base;
    let size = file.sections().map(|s| s.address() + s.size()).max().context("no sections")? - base;
    let signature = entry_signature(&file, file.entry())?;
    let (functions, symbol_source) = match pdb {
        Some((pdb_path, linked_path)) => {
            let linked_data = std::fs::read(linked_path)
                .with_context(|| format!("cannot read {}", linked_path.display()))?;
            let linked = object::File::parse(&*linked_data)
                .with_context(|| format!("{} is not a PE file", linked_path.display()))?;
            same_code(&file, &linked).map_err(|why| {
                anyhow::anyhow!(
                    "{} is not the same code as {}: {why}",
                    linked_path.display(),
                    path.display()
                )
            })?;
            let codeview = linked
                .pdb_info()
                .ok()
                .flatten()
                .context("the rebuilt loader has no CodeView record")?;
            let functions = pdb_functions(pdb_path, codeview.guid(), codeview.age())?;
            (functions, format!("PDB {} (its .efi has the same code)", pdb_path.display()))
        }
        None => (Vec::new(), "no symbols".into()),
    };
    Ok(Image { name: "loader".into(), entry, size, signature, functions, symbol_source })
}

/// Whether two PE files have the same entry, section layout and executable code.
fn same_code(a: &object::File, b: &object::File) -> Result<(), String> {
    if a.entry() != b.entry() || a.relative_address_base() != b.relative_address_base() {
        return Err("entry point or image base differs".into());
    }
    let layout = |f: &object::File| -> Vec<(u64, u64)> {
        f.sections().map(|s| (s.address(), s.size())).collect()
    };
    if layout(a) != layout(b) {
        return Err("section layout differs".into());
    }
    for (x, y) in a.sections().zip(b.sections()) {
        if x.kind() == object::SectionKind::Text && x.data().ok() != y.data().ok() {
            return Err(format!("section {} differs", x.name().unwrap_or("?")));
        }
    }
    Ok(())
}

/// Public function symbols of a PDB, as RVAs, after checking it matches `guid` and `age`.
fn pdb_functions(path: &Path, guid: [u8; 16], age: u32) -> Result<Vec<Function>> {
    use pdb::FallibleIterator;
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut pdb =
        pdb::PDB::open(file).with_context(|| format!("{} is not a PDB", path.display()))?;
    let info = pdb.pdb_information()?;
    if info.guid.to_bytes_le() != guid {
        bail!("{} does not belong to the loader (GUID differs)", path.display());
    }
    // The PE records the PDB age at link time; the PDB info stream's age may be higher.
    if info.age < age {
        bail!("{} does not belong to the loader (age {} < {age})", path.display(), info.age);
    }
    let address_map = pdb.address_map()?;
    let symbols = pdb.global_symbols()?;
    let mut iter = symbols.iter();
    let mut functions = Vec::new();
    while let Some(symbol) = iter.next()? {
        if let Ok(pdb::SymbolData::Public(public)) = symbol.parse() {
            if let Some(rva) = public.offset.to_rva(&address_map) {
                if public.function || public.code {
                    functions.push(Function {
                        start: u64::from(rva.0),
                        size: 0,
                        name: demangle(&public.name.to_string()),
                    });
                }
            }
        }
    }
    functions.sort_by_key(|f| f.start);
    Ok(functions)
}

#[cfg(test)]
mod tests {
    use super::entry_block_len;

    #[test]
    fn the_entry_signature_stops_where_qemu_ends_the_block() {
        // push r15; push r14; mov rax, rdi; call rel32; nop.
        let code = [0x41, 0x57, 0x41, 0x56, 0x48, 0x89, 0xF8, 0xE8, 0, 0, 0, 0, 0x90];
        assert_eq!(entry_block_len(&code, 0x1000).unwrap(), 12, "through the call");
        // Three bytes before a page end: QEMU's block ends there, after one instruction.
        assert_eq!(entry_block_len(&code, 0x36ffd).unwrap(), 2);
        assert!(entry_block_len(&code, 0x36fff).is_err(), "no whole instruction in the page");
    }
    use super::*;

    #[test]
    fn function_lookup_picks_the_enclosing_start() {
        let image = Image {
            name: "k".into(),
            entry: 0,
            size: 0x100,
            signature: vec![],
            functions: vec![
                Function { start: 0x10, size: 0, name: "a".into() },
                Function { start: 0x40, size: 0x10, name: "b".into() },
            ],
            symbol_source: String::new(),
        };
        assert_eq!(image.function_at(0x0f), None);
        assert_eq!(image.function_at(0x10).unwrap().name, "a");
        assert_eq!(image.function_at(0x3f).unwrap().name, "a");
        assert_eq!(image.function_at(0x4f).unwrap().name, "b");
        assert_eq!(image.function_at(0x50), None);
        assert_eq!(image.function_named("b"), Some(0x40));
    }

    #[test]
    fn demangles_rust_names_without_hash() {
        assert_eq!(
            demangle("_ZN6x86_649registers7control4Efer6update17h0123456789abcdefE"),
            "x86_64::registers::control::Efer::update"
        );
    }
}
