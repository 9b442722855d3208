//! The loader's `.efi` made independent of the directory it was built in.
//!
//! xtask links the loader with `/Brepro` and remaps source paths, so the code and data do not
//! depend on where the tree lies. What still does: lld-link takes the PDB's GUID from a hash of
//! the PDB's contents (lld/COFF/PDB.cpp: `InfoStreamBuilder::setHashPDBContentsToGUID(true)`),
//! and
//! the PDB records the build directories (the linker's command line, working directory and
//! object paths); the `.efi` carries that GUID in its CodeView debug entry, and the time stamps
//! `/Brepro` derives from it in the COFF header and in every debug directory entry. So
//! [`reproducible`] rewrites exactly those: the GUID becomes a hash of the file with the GUID and
//! the time stamps zeroed, and every time stamp the first four bytes of that hash. The rest of
//! the file is lld's output byte for byte. The linker's own `.efi` stays beside it, matching
//! `loader.pdb` (td-audit reads function names through it).
//!
//! Layout: PE Format (Microsoft), "MS-DOS Stub" (`e_lfanew` at 0x3C), "COFF File Header",
//! "Optional Header Data Directories" (Debug is entry 6; PE32+ directories start at offset
//! 112), "Section Table", ".debug Section" (28-byte `IMAGE_DEBUG_DIRECTORY` entries; type 2 is
//! CodeView, whose `RSDS` record holds the GUID at offset 4).

use std::fmt;

#[derive(Debug, PartialEq, Eq)]
pub struct PeError(&'static str);

impl fmt::Display for PeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "not a PE32+ file this build can make reproducible: {}", self.0)
    }
}

impl std::error::Error for PeError {}

const IMAGE_DEBUG_TYPE_CODEVIEW: u32 = 2;
const DEBUG_ENTRY_LEN: usize = 28;

fn u16_at(b: &[u8], at: usize) -> Result<u16, PeError> {
    Ok(u16::from_le_bytes(b.get(at..at + 2).ok_or(PeError("truncated"))?.try_into().unwrap()))
}

fn u32_at(b: &[u8], at: usize) -> Result<u32, PeError> {
    Ok(u32::from_le_bytes(b.get(at..at + 4).ok_or(PeError("truncated"))?.try_into().unwrap()))
}

/// Where the build-dependent bytes are: time stamps (4 bytes each) and the CodeView GUID.
struct Places {
    time_stamps: Vec<usize>,
    guids: Vec<usize>,
}

fn places(b: &[u8]) -> Result<Places, PeError> {
    if b.get(..2) != Some(b"MZ") {
        return Err(PeError("no MZ header"));
    }
    let pe = u32_at(b, 0x3C)? as usize;
    if b.get(pe..pe + 4) != Some(b"PE\0\0") {
        return Err(PeError("no PE signature"));
    }
    let coff = pe + 4;
    let sections = u16_at(b, coff + 2)? as usize;
    let optional = coff + 20;
    let optional_len = u16_at(b, coff + 16)? as usize;
    if u16_at(b, optional)? != 0x20B {
        return Err(PeError("not PE32+"));
    }
    let mut time_stamps = vec![coff + 4];
    let mut guids = Vec::new();
    let directories = u32_at(b, optional + 108)? as usize;
    if directories > 6 {
        let debug_rva = u32_at(b, optional + 112 + 6 * 8)? as usize;
        let debug_len = u32_at(b, optional + 112 + 6 * 8 + 4)? as usize;
        if debug_len > 0 {
            // The file offset of the debug directory, through the section that holds its RVA.
            let table = optional + optional_len;
            let offset = (0..sections)
                .map(|i| table + i * 40)
                .find_map(|s| {
                    let size = u32_at(b, s + 8).ok()? as usize;
                    let rva = u32_at(b, s + 12).ok()? as usize;
                    let raw = u32_at(b, s + 20).ok()? as usize;
                    (rva <= debug_rva && debug_rva < rva + size).then(|| raw + (debug_rva - rva))
                })
                .ok_or(PeError("debug directory outside every section"))?;
            for entry in (0..debug_len / DEBUG_ENTRY_LEN).map(|i| offset + i * DEBUG_ENTRY_LEN) {
                time_stamps.push(entry + 4);
                if u32_at(b, entry + 12)? == IMAGE_DEBUG_TYPE_CODEVIEW {
                    let record = u32_at(b, entry + 24)? as usize;
                    if b.get(record..record + 4) != Some(b"RSDS") {
                        return Err(PeError("CodeView entry without an RSDS record"));
                    }
                    guids.push(record + 4);
                }
            }
        }
    }
    if time_stamps.iter().chain(&guids).any(|&at| at + 16 > b.len()) {
        return Err(PeError("truncated"));
    }
    Ok(Places { time_stamps, guids })
}

fn fnv1a(hash: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(hash, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3))
}

/// A copy of the PE32+ file `linked` with its CodeView GUID and time stamps derived from the
/// rest of its bytes (see the module doc).
pub fn reproducible(linked: &[u8]) -> Result<Vec<u8>, PeError> {
    let places = places(linked)?;
    let mut out = linked.to_vec();
    for &at in &places.time_stamps {
        out[at..at + 4].fill(0);
    }
    for &at in &places.guids {
        out[at..at + 16].fill(0);
    }
    // Two FNV-1a-64 hashes with different offset bases make the 16-byte identifier.
    let low = fnv1a(0xcbf2_9ce4_8422_2325, &out);
    let high = fnv1a(0x6c62_272e_07bb_0142, &out);
    let mut guid = [0u8; 16];
    guid[..8].copy_from_slice(&low.to_le_bytes());
    guid[8..].copy_from_slice(&high.to_le_bytes());
    for &at in &places.time_stamps {
        out[at..at + 4].copy_from_slice(&guid[..4]);
    }
    for &at in &places.guids {
        out[at..at + 16].copy_from_slice(&guid);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal PE32+ file: one section at RVA 0x1000 (file 0x200) with a debug directory of a
    /// CodeView and a REPRO entry, the CodeView record after them.
    fn pe(guid: [u8; 16], stamp: u32, code: u8) -> Vec<u8> {
        let mut b = vec![0u8; 0x400];
        b[..2].copy_from_slice(b"MZ");
        b[0x3C..0x40].copy_from_slice(&0x80u32.to_le_bytes());
        b[0x80..0x84].copy_from_slice(b"PE\0\0");
        let coff = 0x84;
        b[coff + 2..coff + 4].copy_from_slice(&1u16.to_le_bytes());
        b[coff + 4..coff + 8].copy_from_slice(&stamp.to_le_bytes());
        b[coff + 16..coff + 18].copy_from_slice(&240u16.to_le_bytes());
        let opt = coff + 20;
        b[opt..opt + 2].copy_from_slice(&0x20Bu16.to_le_bytes());
        b[opt + 108..opt + 112].copy_from_slice(&16u32.to_le_bytes());
        b[opt + 112 + 48..opt + 112 + 52].copy_from_slice(&0x1000u32.to_le_bytes());
        b[opt + 112 + 52..opt + 112 + 56].copy_from_slice(&56u32.to_le_bytes());
        let section = opt + 240;
        b[section + 8..section + 12].copy_from_slice(&0x200u32.to_le_bytes());
        b[section + 12..section + 16].copy_from_slice(&0x1000u32.to_le_bytes());
        b[section + 16..section + 20].copy_from_slice(&0x200u32.to_le_bytes());
        b[section + 20..section + 24].copy_from_slice(&0x200u32.to_le_bytes());
        for (i, kind) in [2u32, 16].iter().enumerate() {
            let e = 0x200 + i * 28;
            b[e + 4..e + 8].copy_from_slice(&stamp.to_le_bytes());
            b[e + 12..e + 16].copy_from_slice(&kind.to_le_bytes());
            if *kind == 2 {
                b[e + 16..e + 20].copy_from_slice(&35u32.to_le_bytes());
                b[e + 24..e + 28].copy_from_slice(&0x240u32.to_le_bytes());
            }
        }
        b[0x240..0x244].copy_from_slice(b"RSDS");
        b[0x244..0x254].copy_from_slice(&guid);
        b[0x258..0x262].copy_from_slice(b"loader.pdb");
        b[0x300] = code;
        b
    }

    #[test]
    fn builds_that_differ_only_in_guid_and_stamps_become_identical() {
        let a = reproducible(&pe([1; 16], 0x1111_1111, 0x90)).unwrap();
        let b = reproducible(&pe([2; 16], 0x2222_2222, 0x90)).unwrap();
        assert_eq!(a, b);
        // The GUID and the stamps now come from the contents, the same value everywhere.
        assert_eq!(a[0x88..0x8C], a[0x244..0x248]);
        assert_eq!(a[0x204..0x208], a[0x88..0x8C]);
        assert_eq!(a[0x220..0x224], a[0x88..0x8C]);
        assert_ne!(a[0x244..0x254], [0; 16]);
        // Everything else is untouched.
        let linked = pe([1; 16], 0x1111_1111, 0x90);
        let differing: Vec<usize> = (0..a.len()).filter(|&i| a[i] != linked[i]).collect();
        assert!(differing.iter().all(|&i| (0x88..0x8C).contains(&i)
            || (0x204..0x208).contains(&i)
            || (0x220..0x224).contains(&i)
            || (0x244..0x254).contains(&i)));
    }

    #[test]
    fn different_code_gives_a_different_guid() {
        let a = reproducible(&pe([1; 16], 1, 0x90)).unwrap();
        let b = reproducible(&pe([1; 16], 1, 0xCC)).unwrap();
        assert_ne!(a[0x244..0x254], b[0x244..0x254]);
    }

    #[test]
    fn garbage_is_an_error() {
        assert_eq!(reproducible(b"ELF").unwrap_err(), PeError("no MZ header"));
        let mut no_rsds = pe([1; 16], 1, 0);
        no_rsds[0x240] = b'X';
        assert!(reproducible(&no_rsds).is_err());
        let full = pe([1; 16], 1, 0);
        for len in [0x40, 0x90, 0x210] {
            assert!(reproducible(&full[..len]).is_err(), "{len}");
        }
    }
}
