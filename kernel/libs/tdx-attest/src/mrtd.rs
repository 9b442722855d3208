//! MRTD: what the host's TDH.MEM.PAGE.ADD and TDH.MR.EXTEND calls hash while it builds a TD.
//!
//! MRTD is one SHA-384 over a stream of 128-byte blocks (`sha384_128B_block_t`, TDX module
//! `src/common/crypto/sha384.h`), finalised by TDH.MR.FINALIZE:
//! - TDH.MEM.PAGE.ADD of the 4 KiB page at GPA adds one block: the ASCII name "MEM.PAGE.ADD"
//!   zero-padded to 16 bytes, the GPA as a little-endian u64 at offset 16, zeros after
//!   (`tdh_mem_page_add.c`);
//! - TDH.MR.EXTEND of the 256-byte chunk at GPA adds one block "MR.EXTEND" + GPA in the same
//!   shape, then the chunk's 256 bytes as two blocks (`tdh_mr_extend.c`).
//!
//! Which pages the host adds and extends, and in what order, is the VMM's choice (for QEMU:
//! `hw/i386/tdx.c` `tdx_finalize_vm`); [`Mrtd`] only hashes what it is told.

use sha2::Digest;

/// The size of one record block.
pub const BLOCK_SIZE: usize = 128;
/// The chunk TDH.MR.EXTEND measures.
pub const EXTEND_CHUNK: usize = 256;
/// The page TDH.MEM.PAGE.ADD adds.
pub const PAGE_SIZE: usize = 4096;

fn record(name: &[u8], gpa: u64) -> [u8; BLOCK_SIZE] {
    let mut block = [0u8; BLOCK_SIZE];
    block[..name.len()].copy_from_slice(name);
    block[16..24].copy_from_slice(&gpa.to_le_bytes());
    block
}

/// The block TDH.MEM.PAGE.ADD of the page at `gpa` adds.
pub fn page_add_record(gpa: u64) -> [u8; BLOCK_SIZE] {
    record(b"MEM.PAGE.ADD", gpa)
}

/// The block that precedes the 256 data bytes TDH.MR.EXTEND of the chunk at `gpa` adds.
pub fn mr_extend_record(gpa: u64) -> [u8; BLOCK_SIZE] {
    record(b"MR.EXTEND", gpa)
}

/// MRTD being built.
#[derive(Clone, Default)]
pub struct Mrtd {
    hasher: sha2::Sha384,
    pages_added: u64,
    chunks_extended: u64,
}

impl Mrtd {
    /// An empty measurement (TDH.MNG.INIT starts it).
    pub fn new() -> Self {
        Self::default()
    }

    /// TDH.MEM.PAGE.ADD of the page at `gpa`.
    pub fn page_add(&mut self, gpa: u64) {
        self.hasher.update(page_add_record(gpa));
        self.pages_added += 1;
    }

    /// TDH.MR.EXTEND of the 256 bytes `chunk` at `gpa`.
    pub fn mr_extend(&mut self, gpa: u64, chunk: &[u8; EXTEND_CHUNK]) {
        self.hasher.update(mr_extend_record(gpa));
        self.hasher.update(chunk);
        self.chunks_extended += 1;
    }

    /// Adds the pages of `data` (a whole number of pages; a short tail is padded with zeros as
    /// the page the host copies from would be) at `gpa`, and with `extend` also measures their
    /// contents, page by page: TDH.MEM.PAGE.ADD, then TDH.MR.EXTEND of its 16 chunks (QEMU
    /// `tdx_finalize_vm` extends each page right after adding it).
    pub fn add_region(&mut self, gpa: u64, data: &[u8], extend: bool) {
        let pages = data.len().div_ceil(PAGE_SIZE);
        for page in 0..pages {
            let page_gpa = gpa + (page * PAGE_SIZE) as u64;
            self.page_add(page_gpa);
            if !extend {
                continue;
            }
            for chunk in 0..PAGE_SIZE / EXTEND_CHUNK {
                let start = page * PAGE_SIZE + chunk * EXTEND_CHUNK;
                let mut bytes = [0u8; EXTEND_CHUNK];
                if start < data.len() {
                    let end = (start + EXTEND_CHUNK).min(data.len());
                    bytes[..end - start].copy_from_slice(&data[start..end]);
                }
                self.mr_extend(page_gpa + (chunk * EXTEND_CHUNK) as u64, &bytes);
            }
        }
    }

    /// Pages added and chunks extended so far.
    pub fn counts(&self) -> (u64, u64) {
        (self.pages_added, self.chunks_extended)
    }

    /// TDH.MR.FINALIZE: the final MRTD.
    pub fn finalize(self) -> crate::Sha384Digest {
        self.hasher.finalize().into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_layout_matches_the_module() {
        // sha384_128B_block_t: api_name (uint128_t, ASCII zero-padded) @0, gpa (u64) @16, zero.
        let r = page_add_record(0xFFC8_4000);
        assert_eq!(&r[..12], b"MEM.PAGE.ADD");
        assert_eq!(&r[12..16], &[0; 4]);
        assert_eq!(&r[16..24], &[0x00, 0x40, 0xC8, 0xFF, 0, 0, 0, 0]);
        assert!(r[24..].iter().all(|&b| b == 0));
        let e = mr_extend_record(0x1_0000_0100);
        assert_eq!(&e[..9], b"MR.EXTEND");
        assert_eq!(&e[9..16], &[0; 7]);
        assert_eq!(&e[16..24], &0x1_0000_0100u64.to_le_bytes());
        assert!(e[24..].iter().all(|&b| b == 0));
    }

    #[test]
    fn stream_is_one_sha384_over_the_blocks() {
        let data: Vec<u8> = (0..PAGE_SIZE).map(|i| i as u8).collect();
        let mut m = Mrtd::new();
        m.add_region(0x80_0000, &data, true);
        m.page_add(0x81_0000);
        assert_eq!(m.counts(), (2, 16));
        let mut stream = Vec::new();
        stream.extend_from_slice(&page_add_record(0x80_0000));
        for c in 0..16 {
            stream.extend_from_slice(&mr_extend_record(0x80_0000 + c * 256));
            stream.extend_from_slice(&data[c as usize * 256..][..256]);
        }
        stream.extend_from_slice(&page_add_record(0x81_0000));
        assert_eq!(stream.len(), 128 * (1 + 16 * 3 + 1));
        assert_eq!(m.finalize(), crate::sha384(&[&stream]));
    }

    #[test]
    fn a_short_tail_is_zero_padded() {
        let mut a = Mrtd::new();
        a.add_region(0, &[7u8; 100], true);
        let mut padded = [0u8; PAGE_SIZE];
        padded[..100].fill(7);
        let mut b = Mrtd::new();
        b.add_region(0, &padded, true);
        assert_eq!(a.finalize(), b.finalize());
    }
}
