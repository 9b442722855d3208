//! `cargo xtask build`: the kernel ELF (nested cargo for x86_64-unknown-none), our UEFI loader
//! (nested cargo for x86_64-unknown-uefi) and the disk image around them.
//!
//! The image is keyed on its inputs' content (kernel, loader, image-builder version), not on
//! file times: a changed loader or builder gives a new image even when the kernel is older.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The repository root: the parent of xtask's manifest directory.
///
/// `cargo run` (and so `cargo xtask`) names that directory in the process's environment; the
/// path compiled in is only the fallback for a binary started by hand. With a cargo target
/// directory shared between two clones, cargo reuses the xtask binary built in the other clone
/// (its fingerprint holds paths relative to the package), and the compiled-in path would be that
/// clone's, or a directory that no longer exists.
pub fn project_root() -> PathBuf {
    root_from_manifest_dir(std::env::var_os("CARGO_MANIFEST_DIR"))
}

fn root_from_manifest_dir(at_run_time: Option<std::ffi::OsString>) -> PathBuf {
    let manifest_dir =
        at_run_time.map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    manifest_dir.parent().expect("xtask lives one level below the root").to_owned()
}

/// Cargo's target directory for this workspace, as cargo reports it (`cargo metadata`'s
/// `target_directory`): `CARGO_TARGET_DIR`, `build.target-dir` of a cargo config, or `target/`
/// under the root. Every cargo artifact xtask builds or reads lies below it (the nested builds
/// get their own directories inside it); xtask's own outputs (logs, reports) stay under the root.
pub fn cargo_target_dir() -> Result<PathBuf> {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    DIR.get_or_init(|| query_target_dir().map_err(|error| format!("{error:#}")))
        .clone()
        .map_err(anyhow::Error::msg)
}

fn query_target_dir() -> Result<PathBuf> {
    // The user's environment as it is: CARGO_TARGET_DIR and cargo's configuration decide.
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(cargo)
        .current_dir(project_root())
        .args(["metadata", "--format-version", "1", "--no-deps", "--offline"])
        .output()
        .context("cannot run cargo metadata")?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        bail!("cargo metadata failed: {}", stderr.lines().next().unwrap_or("").trim());
    }
    target_directory_of(&output.stdout)
}

/// `target_directory` from `cargo metadata` output.
fn target_directory_of(metadata: &[u8]) -> Result<PathBuf> {
    let metadata: serde_json::Value =
        serde_json::from_slice(metadata).context("cargo metadata printed no JSON")?;
    metadata["target_directory"]
        .as_str()
        .map(PathBuf::from)
        .context("cargo metadata reports no target_directory")
}

/// A kernel variant. The default is the test image; [`KernelVariant::td_image`] is the kernel a
/// TD boots; the others exist so the harness can prove that it notices failures. The breakages
/// compose (`harness:broken-emulation` builds four in one kernel), and each combination builds
/// into its own target directory so that switching between them never invalidates the default
/// build.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelVariant {
    /// The kernel a TD boots: built without the kernel feature `test-modes` (no boot modes
    /// from fw_cfg, no crash/hang/fault scenarios, no bench, no softtdx). Every other variant is
    /// a test image and has it.
    pub td_image: bool,
    /// Build the named self-test check with its result inverted.
    pub fail_check: Option<String>,
    /// Build with the deliberately wrong IN merge (tdx-ve feature `broken-in-merge`).
    pub broken_in_merge: bool,
    /// Build with an MMIO MOVZX into a 32-bit register that keeps bits 63:32 (tdx-ve feature
    /// `broken-mmio-movzx`).
    pub broken_mmio_movzx: bool,
    /// Build with a port access before TDG.VP.VEINFO.GET (kernel feature `broken-ve-ordering`).
    pub broken_ve_ordering: bool,
    /// Build with a port allowlist that lets every port through (kernel feature
    /// `broken-allowlist`).
    pub broken_allowlist: bool,
    /// Build with the PIC probe inverted (kernel feature `broken-pic-probe`).
    pub broken_pic_probe: bool,
    /// Build without the device checks (kernel feature `no-device-checks`).
    pub no_device_checks: bool,
    /// Build with a port access that bypasses the #VE path (kernel feature `audit-bypass`).
    pub audit_bypass: bool,
    /// Build with `TDX_UNIKERNEL_ACCEPT=eager`: all unaccepted memory accepted at boot.
    pub accept_eager: bool,
}

impl KernelVariant {
    /// The kernel a TD boots (`cargo xtask build`, `--tdx`).
    pub fn td_image() -> Self {
        Self { td_image: true, ..Self::default() }
    }

    /// The variant's own cargo target directory (inside [`cargo_target_dir`]).
    pub fn target_dir(&self) -> Result<PathBuf> {
        Ok(cargo_target_dir()?.join(self.target_dir_name()))
    }

    fn target_dir_name(&self) -> String {
        let mut name = String::from(if self.td_image { "kernel-td" } else { "kernel" });
        if let Some(check) = &self.fail_check {
            name.push_str("-fail-");
            name.extend(check.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }));
        }
        if self.broken_in_merge {
            name.push_str("-broken-in-merge");
        }
        if self.broken_mmio_movzx {
            name.push_str("-broken-mmio-movzx");
        }
        if self.broken_ve_ordering {
            name.push_str("-broken-ve-ordering");
        }
        if self.broken_allowlist {
            name.push_str("-broken-allowlist");
        }
        if self.broken_pic_probe {
            name.push_str("-broken-pic-probe");
        }
        if self.no_device_checks {
            name.push_str("-no-device-checks");
        }
        if self.audit_bypass {
            name.push_str("-audit-bypass");
        }
        if self.accept_eager {
            name.push_str("-accept-eager");
        }
        name
    }
}

/// Which UEFI loader the image boots through.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum LoaderKind {
    /// Ours (`boot/loader`): nothing after ExitBootServices raises #VE or #GP in a TD.
    #[default]
    Own,
    /// The rust-osdev `bootloader` crate's UEFI stage, for comparison.
    Upstream,
    /// Test-only: ours built with `broken-handoff` (`harness:broken-loader-and-pic-probe`).
    #[value(skip)]
    OwnBrokenHandoff,
    /// Test-only: ours, with a copy of the kernel whose `.bootloader-config` claims
    /// bootloader_api 0.11.16, which the loader must refuse (`harness:old-bootloader-api`).
    #[value(skip)]
    OwnOldApiKernel,
    /// Test-only: ours built with `test-enable-la57`: it turns 5-level paging on after
    /// ExitBootServices, so that the trampoline leaves it (`harness:la57-handoff`, `audit:own`).
    #[value(name = "own-la57")]
    OwnLa57,
    /// Test-only: the same with a trampoline that ignores LA57 (`harness:la57-broken-trampoline`).
    #[value(skip)]
    OwnLa57BrokenTrampoline,
    /// Test-only: ours, with a copy of the kernel one byte different (in `.comment`, which
    /// nothing loads): the TPM must show a different PCR 9 (`harness:tpm-flipped-kernel`).
    #[value(skip)]
    OwnFlippedKernel,
}

impl LoaderKind {
    pub fn name(self) -> &'static str {
        match self {
            LoaderKind::Own => "own",
            LoaderKind::Upstream => "upstream",
            LoaderKind::OwnBrokenHandoff => "own-broken-handoff",
            LoaderKind::OwnOldApiKernel => "own-old-api-kernel",
            LoaderKind::OwnLa57 => "own-la57",
            LoaderKind::OwnLa57BrokenTrampoline => "own-la57-broken-trampoline",
            LoaderKind::OwnFlippedKernel => "own-flipped-kernel",
        }
    }

    /// The test-only cargo feature of our loader this kind is built with, if any.
    pub fn loader_feature(self) -> Option<&'static str> {
        match self {
            LoaderKind::OwnBrokenHandoff => Some("broken-handoff"),
            LoaderKind::OwnLa57 => Some("test-enable-la57"),
            LoaderKind::OwnLa57BrokenTrampoline => Some("test-broken-la57-trampoline"),
            LoaderKind::Own
            | LoaderKind::OwnOldApiKernel
            | LoaderKind::OwnFlippedKernel
            | LoaderKind::Upstream => None,
        }
    }

    /// Whether the guest must be offered 5-level paging (the loader turns it on itself).
    pub fn needs_la57(self) -> bool {
        matches!(self, LoaderKind::OwnLa57 | LoaderKind::OwnLa57BrokenTrampoline)
    }

    /// Our loader's `.efi`, built as this kind needs it; None for upstream.
    pub fn build_own(self, quiet: bool) -> Result<Option<PathBuf>> {
        match self {
            LoaderKind::Upstream => Ok(None),
            _ => build_loader(self.loader_feature(), quiet).map(Some),
        }
    }
}

pub struct Artifacts {
    pub kernel: PathBuf,
    pub image: PathBuf,
}

/// A cargo for a nested build (kernel or loader): it must not inherit what the outer `cargo
/// xtask` set for the host build (target, features, rustflags), but keeps what the user set up
/// for cargo itself (home, registries, network, proxies).
pub fn nested_cargo(root: &Path) -> Command {
    let mut cargo = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
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
    cargo.current_dir(root);
    cargo
}

/// Builds our UEFI loader (with one of its test-only features, if named) into
/// `target/loader` or `target/loader-FEATURE`; returns the path of its reproducible `.efi`
/// ([`build_loader_in`]).
pub fn build_loader(feature: Option<&str>, quiet: bool) -> Result<PathBuf> {
    let root = project_root();
    let target_dir = match feature {
        None => cargo_target_dir()?.join("loader"),
        Some(feature) => cargo_target_dir()?.join(format!("loader-{feature}")),
    };
    build_loader_in(&root, &target_dir, feature, quiet)
}

/// Builds the loader of the tree at `root` into `target_dir`, so that `loader.efi` is the same
/// byte for byte wherever the tree and the target directory lie: lld-link with `/Brepro`
/// (a time stamp from a hash instead of the clock), source paths remapped (the tree to
/// `/tdx-unikernel`, cargo's home to `/cargo`: panic locations carry them), the PDB named
/// without its directory (rustc's default `/PDBALTPATH:%_PDB%`), and the CodeView GUID, which
/// lld takes from the PDB and the PDB from the build directories, rewritten
/// ([`boot::pe::reproducible`]). Returns `loader-reproducible.efi`, the file the image carries;
/// the linker's `loader.efi` and its `loader.pdb` lie beside it.
pub fn build_loader_in(
    root: &Path,
    target_dir: &Path,
    feature: Option<&str>,
    quiet: bool,
) -> Result<PathBuf> {
    let mut cargo = nested_cargo(root);
    cargo
        .args(["build", "--release", "--target", "x86_64-unknown-uefi"])
        .arg("--manifest-path")
        .arg(root.join("boot/loader/Cargo.toml"))
        .arg("--target-dir")
        .arg(target_dir);
    if quiet {
        cargo.arg("--quiet");
    }
    if let Some(feature) = feature {
        cargo.args(["--features", feature]);
    }
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo")));
    let mut flags = vec![format!("--remap-path-prefix={}=/tdx-unikernel", root.display())];
    if let Some(home) = cargo_home {
        flags.push(format!("--remap-path-prefix={}=/cargo", home.display()));
    }
    flags.push("-Clink-arg=/Brepro".into());
    cargo.env("CARGO_ENCODED_RUSTFLAGS", flags.join("\x1f"));
    let status = cargo.status().context("cannot run cargo to build the loader")?;
    if !status.success() {
        bail!("loader build failed ({status})");
    }
    let release = target_dir.join("x86_64-unknown-uefi/release");
    let linked = release.join("loader.efi");
    let bytes =
        std::fs::read(&linked).with_context(|| format!("cannot read {}", linked.display()))?;
    let reproducible = boot::pe::reproducible(&bytes)
        .with_context(|| format!("cannot make {} reproducible", linked.display()))?;
    let out = release.join("loader-reproducible.efi");
    if std::fs::read(&out).ok().as_deref() != Some(reproducible.as_slice()) {
        std::fs::write(&out, &reproducible)
            .with_context(|| format!("cannot write {}", out.display()))?;
    }
    Ok(out)
}

/// Builds the kernel and its UEFI image for `loader`.
pub fn build(variant: &KernelVariant, loader: LoaderKind, quiet: bool) -> Result<Artifacts> {
    let root = project_root();
    let target_dir = variant.target_dir()?;
    let loader_efi = loader.build_own(quiet)?;
    let mut cargo = nested_cargo(&root);
    cargo
        .args(["build", "--release", "--target", "x86_64-unknown-none"])
        .arg("--manifest-path")
        .arg(root.join("kernel/Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir);
    if quiet {
        cargo.arg("--quiet");
    }
    if !variant.td_image {
        cargo.args(["--features", "test-modes"]);
    }
    if variant.broken_in_merge {
        cargo.args(["--features", "broken-in-merge"]);
    }
    if variant.broken_mmio_movzx {
        cargo.args(["--features", "broken-mmio-movzx"]);
    }
    if variant.broken_ve_ordering {
        cargo.args(["--features", "broken-ve-ordering"]);
    }
    if variant.broken_allowlist {
        cargo.args(["--features", "broken-allowlist"]);
    }
    if variant.broken_pic_probe {
        cargo.args(["--features", "broken-pic-probe"]);
    }
    if variant.no_device_checks {
        cargo.args(["--features", "no-device-checks"]);
    }
    if variant.audit_bypass {
        cargo.args(["--features", "audit-bypass"]);
    }
    match &variant.fail_check {
        Some(check) => cargo.env("TDX_UNIKERNEL_FAIL_CHECK", check),
        None => cargo.env_remove("TDX_UNIKERNEL_FAIL_CHECK"),
    };
    // Otherwise the user's own TDX_UNIKERNEL_ACCEPT reaches the build (`cargo xtask build`).
    if variant.accept_eager {
        cargo.env("TDX_UNIKERNEL_ACCEPT", "eager");
    }
    let status = cargo.status().context("cannot run cargo to build the kernel")?;
    if !status.success() {
        bail!("kernel build failed ({status})");
    }
    let kernel = target_dir.join("x86_64-unknown-none/release/kernel");
    let image = target_dir.join(image_name(loader));
    let image_kernel = match loader {
        LoaderKind::OwnOldApiKernel => with_older_api_version(&kernel)?,
        LoaderKind::OwnFlippedKernel => with_one_byte_flipped(&kernel)?,
        _ => kernel.clone(),
    };
    let loader = match &loader_efi {
        Some(efi) => boot::Loader::Own(efi),
        None => boot::Loader::Upstream,
    };
    build_image(&image_kernel, &loader, &image)?;
    Ok(Artifacts { kernel, image })
}

/// The image's file name in a variant's target directory.
pub fn image_name(loader: LoaderKind) -> &'static str {
    match loader {
        LoaderKind::Own => "tdx-unikernel-uefi.img",
        LoaderKind::Upstream => "tdx-unikernel-uefi-upstream.img",
        LoaderKind::OwnBrokenHandoff => "tdx-unikernel-uefi-broken-handoff.img",
        LoaderKind::OwnOldApiKernel => "tdx-unikernel-uefi-old-api-kernel.img",
        LoaderKind::OwnLa57 => "tdx-unikernel-uefi-la57.img",
        LoaderKind::OwnLa57BrokenTrampoline => "tdx-unikernel-uefi-la57-broken-trampoline.img",
        LoaderKind::OwnFlippedKernel => "tdx-unikernel-uefi-flipped-kernel.img",
    }
}

/// A copy of `kernel` whose `.bootloader-config` claims bootloader_api 0.11.16 instead of
/// 0.11.17 (the patch field, bytes 20..22 of the section), written beside it.
fn with_older_api_version(kernel: &Path) -> Result<PathBuf> {
    let mut bytes =
        std::fs::read(kernel).with_context(|| format!("cannot read {}", kernel.display()))?;
    let parsed = loader_core::elf::Kernel::parse(&bytes)
        .map_err(|e| anyhow::anyhow!("{}: {e}", kernel.display()))?;
    let section = parsed
        .section(b".bootloader-config")
        .map_err(|e| anyhow::anyhow!("{}: {e}", kernel.display()))?;
    let at = section.as_ptr() as usize - bytes.as_ptr() as usize;
    if section.get(16..23) != Some(&[0, 0, 11, 0, 17, 0, 0][..]) {
        bail!("{} does not carry bootloader_api 0.11.17", kernel.display());
    }
    bytes[at + 20..at + 22].copy_from_slice(&16u16.to_le_bytes());
    let copy = kernel.with_file_name("kernel-bootloader-api-0.11.16");
    std::fs::write(&copy, bytes).with_context(|| format!("cannot write {}", copy.display()))?;
    Ok(copy)
}

/// A copy of `kernel` with one bit of its `.comment` section (the toolchain's names, which no
/// loader maps) flipped, written beside it: the same kernel at run time, a different file.
fn with_one_byte_flipped(kernel: &Path) -> Result<PathBuf> {
    let mut bytes =
        std::fs::read(kernel).with_context(|| format!("cannot read {}", kernel.display()))?;
    let parsed = loader_core::elf::Kernel::parse(&bytes)
        .map_err(|e| anyhow::anyhow!("{}: {e}", kernel.display()))?;
    let section = parsed
        .section(b".comment")
        .map_err(|e| anyhow::anyhow!("{}: no .comment section: {e}", kernel.display()))?;
    if section.len() < 2 {
        bail!("{}: the .comment section is empty", kernel.display());
    }
    let at = section.as_ptr() as usize - bytes.as_ptr() as usize + 1;
    bytes[at] ^= 0x20;
    let copy = kernel.with_file_name("kernel-one-byte-flipped");
    std::fs::write(&copy, bytes).with_context(|| format!("cannot write {}", copy.display()))?;
    Ok(copy)
}

/// Whether `build_image` wrote a new image or found the current one.
#[derive(Debug, PartialEq, Eq)]
pub enum ImageBuild {
    Built,
    UpToDate,
}

/// Wraps `kernel` into a UEFI image at `image`, unless the image was last built from the same
/// inputs: their content key is kept beside it in `<image>.inputs`.
pub fn build_image(kernel: &Path, loader: &boot::Loader, image: &Path) -> Result<ImageBuild> {
    let key = boot::inputs_key(kernel, loader)?;
    let mut key_file = image.as_os_str().to_owned();
    key_file.push(".inputs");
    let key_file = PathBuf::from(key_file);
    let built_from = std::fs::read_to_string(&key_file).ok();
    if image.is_file() && built_from.as_deref() == Some(key.as_str()) {
        return Ok(ImageBuild::UpToDate);
    }
    // Build beside the image and rename into place, so that a concurrent build or boot never
    // sees a half-written image. The key is removed first and written last, so an interrupted
    // build is never mistaken for a current one.
    let _ = std::fs::remove_file(&key_file);
    let partial = image.with_extension(format!("img.partial-{}", std::process::id()));
    let result = boot::build_uefi_image(kernel, loader, &partial)
        .map_err(anyhow::Error::from)
        .and_then(|()| {
            std::fs::rename(&partial, image)
                .with_context(|| format!("cannot move the image into {}", image.display()))
        })
        .and_then(|()| {
            std::fs::write(&key_file, &key)
                .with_context(|| format!("cannot write {}", key_file.display()))
        });
    if result.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    result.map(|()| ImageBuild::Built)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_target_directory_is_cargo_metadata_s() {
        let json = br#"{"packages":[],"target_directory":"/srv/cargo-target","version":1}"#;
        assert_eq!(target_directory_of(json).unwrap(), Path::new("/srv/cargo-target"));
        assert!(target_directory_of(br#"{"version":1}"#).is_err());
        assert!(target_directory_of(b"warning: not JSON").is_err());
        // This workspace: whatever cargo says, and the nested builds inside it.
        let dir = cargo_target_dir().unwrap();
        assert!(dir.is_absolute(), "{}", dir.display());
        assert_eq!(KernelVariant::td_image().target_dir().unwrap(), dir.join("kernel-td"));
    }

    /// A file that passes `boot::check_kernel_elf`: an ELF-64 header with one program header.
    fn fake_kernel(dir: &Path) -> PathBuf {
        let mut h = vec![0u8; 64 + 56];
        h[0..4].copy_from_slice(b"\x7fELF");
        h[4] = 2;
        h[5] = 1;
        h[16] = 3;
        h[18] = 62;
        h[32] = 64;
        h[54] = 56;
        h[56] = 1;
        let path = dir.join("kernel");
        std::fs::write(&path, h).unwrap();
        path
    }

    #[test]
    fn the_image_follows_its_inputs_content_not_their_times() {
        let dir = std::env::temp_dir().join(format!("xtask-image-key-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let kernel = fake_kernel(&dir);
        let efi = dir.join("loader.efi");
        let image = dir.join("disk.img");
        std::fs::write(&efi, b"MZ loader one").unwrap();
        let own = boot::Loader::Own(&efi);
        assert_eq!(build_image(&kernel, &own, &image).unwrap(), ImageBuild::Built);
        let first = std::fs::read(&image).unwrap();
        assert_eq!(build_image(&kernel, &own, &image).unwrap(), ImageBuild::UpToDate);

        // A changed loader, older than the image: a new image all the same.
        std::fs::write(&efi, b"MZ loader two").unwrap();
        let old = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1);
        std::fs::File::options().write(true).open(&efi).unwrap().set_modified(old).unwrap();
        assert_eq!(build_image(&kernel, &own, &image).unwrap(), ImageBuild::Built);
        let second = std::fs::read(&image).unwrap();
        assert_ne!(first, second, "a changed loader must give a new image");

        // Back to the first loader: the first image again, byte for byte.
        std::fs::write(&efi, b"MZ loader one").unwrap();
        assert_eq!(build_image(&kernel, &own, &image).unwrap(), ImageBuild::Built);
        assert_eq!(std::fs::read(&image).unwrap(), first);

        // An image with no key beside it (an older xtask made it) is rebuilt.
        std::fs::remove_file(dir.join("disk.img.inputs")).unwrap();
        assert_eq!(build_image(&kernel, &own, &image).unwrap(), ImageBuild::Built);

        // A broken loader is an error, and leaves no image that looks current.
        std::fs::write(&efi, b"not a PE file").unwrap();
        let err = build_image(&kernel, &own, &image).unwrap_err().to_string();
        assert!(err.contains("not a UEFI application"), "{err}");
        std::fs::write(&efi, b"MZ loader one").unwrap();
        assert_eq!(build_image(&kernel, &own, &image).unwrap(), ImageBuild::UpToDate);
        assert_eq!(std::fs::read(&image).unwrap(), first);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_root_comes_from_the_run_time_manifest_dir() {
        let elsewhere = std::ffi::OsString::from("/clone/b/xtask");
        assert_eq!(root_from_manifest_dir(Some(elsewhere)), Path::new("/clone/b"));
        let compiled = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        assert_eq!(root_from_manifest_dir(None), compiled);
    }
}
