//! `cargo xtask build`: the kernel ELF (nested cargo for x86_64-unknown-none) and the UEFI disk
//! image around it.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The repository root, from this crate's manifest directory.
pub fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the root")
        .to_owned()
}

/// A kernel variant. The default is what users run; the others exist so the harness can prove
/// that it notices failures, and each builds into its own target directory so that switching
/// between them never invalidates the default build.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelVariant {
    /// Build the named self-test check with its result inverted.
    pub fail_check: Option<String>,
    /// Build with the deliberately wrong IN merge (tdx-ve feature `broken-in-merge`).
    pub broken_in_merge: bool,
    /// Build with a port access before TDG.VP.VEINFO.GET (kernel feature `broken-ve-ordering`).
    pub broken_ve_ordering: bool,
    /// Build with a port allowlist that lets every port through (kernel feature
    /// `broken-allowlist`).
    pub broken_allowlist: bool,
}

impl KernelVariant {
    fn target_dir_name(&self) -> String {
        let mut name = String::from("kernel");
        if let Some(check) = &self.fail_check {
            name.push_str("-fail-");
            name.extend(check.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }));
        }
        if self.broken_in_merge {
            name.push_str("-broken-in-merge");
        }
        if self.broken_ve_ordering {
            name.push_str("-broken-ve-ordering");
        }
        if self.broken_allowlist {
            name.push_str("-broken-allowlist");
        }
        name
    }
}

pub struct Artifacts {
    pub kernel: PathBuf,
    pub image: PathBuf,
}

/// Builds the kernel and its UEFI image.
pub fn build(variant: &KernelVariant, quiet: bool) -> Result<Artifacts> {
    let root = project_root();
    let target_dir = root.join("target").join(variant.target_dir_name());
    let mut cargo = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    // The outer `cargo xtask` sets variables (target, features, rustflags) meant for the host
    // build; the kernel build must not inherit them.
    // What the user set up for cargo itself (home, registries, network, proxies) stays.
    const KEEP: [&str; 6] = [
        "CARGO_HOME",
        "CARGO_NET_",
        "CARGO_HTTP_",
        "CARGO_REGISTRIES_",
        "CARGO_REGISTRY_",
        "RUSTUP_",
    ];
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy().into_owned();
        let kept = KEEP.iter().any(|prefix| key.starts_with(prefix));
        if (key.starts_with("CARGO") || key.starts_with("RUST")) && !kept {
            cargo.env_remove(&key);
        }
    }
    cargo
        .current_dir(&root)
        .args(["build", "--release", "--target", "x86_64-unknown-none"])
        .arg("--manifest-path")
        .arg(root.join("kernel/Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir);
    if quiet {
        cargo.arg("--quiet");
    }
    if variant.broken_in_merge {
        cargo.args(["--features", "broken-in-merge"]);
    }
    if variant.broken_ve_ordering {
        cargo.args(["--features", "broken-ve-ordering"]);
    }
    if variant.broken_allowlist {
        cargo.args(["--features", "broken-allowlist"]);
    }
    match &variant.fail_check {
        Some(check) => cargo.env("TDX_UNIKERNEL_FAIL_CHECK", check),
        None => cargo.env_remove("TDX_UNIKERNEL_FAIL_CHECK"),
    };
    let status = cargo.status().context("cannot run cargo to build the kernel")?;
    if !status.success() {
        bail!("kernel build failed ({status})");
    }
    let kernel = target_dir.join("x86_64-unknown-none/release/kernel");
    let image = target_dir.join("tdx-unikernel-uefi.img");
    build_image(&kernel, &image)?;
    Ok(Artifacts { kernel, image })
}

/// Wraps `kernel` into a UEFI image at `image`, skipping the work when the image is newer.
pub fn build_image(kernel: &Path, image: &Path) -> Result<()> {
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    if let (Some(k), Some(i)) = (modified(kernel), modified(image)) {
        if i >= k {
            return Ok(());
        }
    }
    // Build beside the image and rename into place, so that a concurrent build or boot never
    // sees a half-written image.
    let partial = image.with_extension(format!("img.partial-{}", std::process::id()));
    let result =
        boot::build_uefi_image(kernel, &partial).map_err(anyhow::Error::from).and_then(|()| {
            std::fs::rename(&partial, image)
                .with_context(|| format!("cannot move the image into {}", image.display()))
        });
    if result.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    result
}
