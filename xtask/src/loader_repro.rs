//! `cargo xtask loader-repro`: two clean builds of the loader, from two copies of the tree that
//! lie at different paths, must give the same `loader.efi` byte for byte, and so must the
//! loader the tests boot (`target/loader`). CI runs it (`.ci/run`); it is kept out of
//! `cargo xtask test` because two clean builds take longer than the whole boot suite.

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
        .filter(|name| root.join(name).is_file())
        .collect())
}

fn copy_tree(root: &Path, files: &[PathBuf], to: &Path) -> Result<()> {
    for file in files {
        let target = to.join(file);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::copy(root.join(file), &target)
            .with_context(|| format!("cannot copy {} to {}", file.display(), target.display()))?;
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
    let base = root.join("target/loader-repro");
    let _ = std::fs::remove_dir_all(&base);
    let files = tree_files(&root)?;
    // Different depths and names, so that no path is a prefix-length accident.
    let copies = [base.join("a/tree"), base.join("second-copy/of/the/tree-b")];
    let mut built = Vec::new();
    for copy in &copies {
        copy_tree(&root, &files, copy)?;
        println!("==> building the loader from a clean copy in {}", copy.display());
        let efi = build::build_loader_in(copy, &copy.join("target"), None, true)?;
        let bytes =
            std::fs::read(&efi).with_context(|| format!("cannot read {}", efi.display()))?;
        built.push((efi, bytes));
    }
    let tested = build::build_loader(None, true)?;
    let tested_bytes = std::fs::read(&tested)?;
    built.push((tested, tested_bytes));
    let (first, reference) = &built[0];
    let mut same = true;
    for (efi, bytes) in &built[1..] {
        if bytes != reference {
            println!(
                "loader-repro: FAIL: {} and {} differ: {}",
                first.display(),
                efi.display(),
                first_difference(reference, bytes)
            );
            same = false;
        }
    }
    if same {
        let _ = std::fs::remove_dir_all(&base);
        println!(
            "loader-repro: PASS: loader.efi is the same {} bytes from two clean builds in different directories and in target/loader",
            reference.len()
        );
    }
    Ok(same)
}
