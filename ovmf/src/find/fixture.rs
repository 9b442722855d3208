//! The temporary firmware tree that the search's tests build on: a root standing in for `/`
//! and a scratch directory for VARS copies. The descriptor tests add their own methods in
//! `selection_tests.rs`.

use super::{FindOptions, Purpose};
use std::fs::{self, OpenOptions};
use std::path::PathBuf;
use tempfile::TempDir;

/// A 2 MiB image, the size of Debian's `OVMF.fd`. Sparse, so tests stay fast.
pub(super) const IMAGE_SIZE: u64 = 2 << 20;

pub(super) struct Fixture {
    pub root: TempDir,
    pub scratch: TempDir,
}

impl Fixture {
    pub fn new() -> Self {
        Fixture { root: TempDir::new().unwrap(), scratch: TempDir::new().unwrap() }
    }

    pub fn path(&self, relative: &str) -> PathBuf {
        self.root.path().join(relative)
    }

    /// Creates `relative` under the root: `bytes` first, if any, then extended (sparse) to
    /// `size`. Returns its full path.
    pub fn file_with(&self, relative: &str, bytes: Option<&[u8]>, size: u64) -> PathBuf {
        let path = self.path(relative);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        let mut file =
            OpenOptions::new().create(true).truncate(true).write(true).open(&path).unwrap();
        if let Some(bytes) = bytes {
            std::io::Write::write_all(&mut file, bytes).unwrap();
        }
        file.set_len(size).unwrap();
        path
    }

    /// An empty (all zero) file of `size` bytes.
    pub fn file(&self, relative: &str, size: u64) -> PathBuf {
        self.file_with(relative, None, size)
    }

    /// A firmware image without TDVF metadata.
    pub fn image(&self, relative: &str) -> PathBuf {
        self.file(relative, IMAGE_SIZE)
    }

    /// The search for TCG with no descriptor directories: only the explicit, environment and
    /// distribution paths.
    pub fn options(&self) -> FindOptions {
        FindOptions {
            explicit: None,
            env: None,
            root: self.root.path().to_path_buf(),
            scratch_dir: self.scratch.path().join("vars"),
            descriptor_dirs: Vec::new(),
            purpose: Purpose::Tcg,
        }
    }
}
