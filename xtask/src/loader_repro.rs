//! `cargo xtask loader-repro`: the loader built from a clean copy of the tree at another path
//! must be the same `loader.efi`, byte for byte, as the one built in the tree itself
//! (`loader/` in cargo's target directory, the one the tests boot; in CI a clean build too,
//! made by the bench before). The copy lies in `loader-repro/` there.
//! CI runs it (`.ci/run`); it is kept out of `cargo xtask test` because a clean build of the
//! loader takes longer than many boots.

use crate::build;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The tree's files as git sees them: tracked and untracked-but-not-ignored, so that a change
/// not yet committed is built too.
fn tree_files(root: &Path) -> Result<Vec<PathBuf>> {
    let output = Command::new("git")
        .current_dir(root)
        .args(["ls-files", "-z", "--cached", "--others", "--exclude-standard"])
        .output()
        .context("cannot run git ls-files")?;
    if !output.status.success() {
        bail!("git ls-files failed: {}", String::from_utf8_lossy(&output.stderr).trim());
    }
    Ok(output
        .stdout
        .split(|&b| b == 0)
        .filter(|name| !name.is_empty())
        .map(|name| PathBuf::from(String::from_utf8_lossy(name).into_owned()))
        .filter(|name| {
            // A symbolic link is kept as one (boot/loader/loader-core), a directory is not a file.
            std::fs::symlink_metadata(root.join(name))
                .is_ok_and(|m| m.file_type().is_symlink() || m.is_file())
        })
        .collect())
}

fn copy_tree(root: &Path, files: &[PathBuf], to: &Path) -> Result<()> {
    for file in files {
        let target = to.join(file);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        let source = root.join(file);
        let link = std::fs::symlink_metadata(&source)
            .with_context(|| format!("cannot read {}", source.display()))?
            .file_type()
            .is_symlink();
        if link {
            let points_to = std::fs::read_link(&source)
                .with_context(|| format!("cannot read the link {}", source.display()))?;
            std::os::unix::fs::symlink(&points_to, &target)
                .with_context(|| format!("cannot make the link {}", target.display()))?;
        } else {
            std::fs::copy(&source, &target).with_context(|| {
                format!("cannot copy {} to {}", file.display(), target.display())
            })?;
        }
    }
    Ok(())
}

/// Where two files first differ, in words.
fn first_difference(a: &[u8], b: &[u8]) -> String {
    match a.iter().zip(b).position(|(x, y)| x != y) {
        Some(at) => format!("first difference at byte {at:#x} ({:#04x} vs {:#04x})", a[at], b[at]),
        None => format!("lengths {} and {}", a.len(), b.len()),
    }
}

pub fn run() -> Result<bool> {
    let root = build::project_root();
    let base = build::cargo_target_dir()?.join("loader-repro");
    let _ = std::fs::remove_dir_all(&base);
    let files = tree_files(&root)?;
    // Another depth and other names than the tree's own path.
    let copy = base.join("elsewhere/a-copy-of-the-tree");
    copy_tree(&root, &files, &copy)?;
    println!("==> building the loader from a clean copy in {}", copy.display());
    let copied = build::build_loader_in(&copy, &copy.join("target"), None, true)?;
    let copied_bytes =
        std::fs::read(&copied).with_context(|| format!("cannot read {}", copied.display()))?;
    println!("==> building the loader in the tree");
    let tree = build::build_loader(None, true)?;
    let tree_bytes =
        std::fs::read(&tree).with_context(|| format!("cannot read {}", tree.display()))?;
    if copied_bytes != tree_bytes {
        println!(
            "loader-repro: FAIL: {} and {} differ: {}",
            tree.display(),
            copied.display(),
            first_difference(&tree_bytes, &copied_bytes)
        );
        return Ok(false);
    }
    let _ = std::fs::remove_dir_all(&base);
    println!(
        "loader-repro: PASS: loader.efi is the same {} bytes built in {} and in a copy at {}",
        tree_bytes.len(),
        root.display(),
        copy.display()
    );
    Ok(true)
}
