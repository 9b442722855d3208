//! Locating an OVMF firmware image on the host.
//!
//! The search order is fixed and documented so that a developer can predict which file a run
//! will use:
//!
//! 1. the path given with `--firmware` ([`FindOptions::explicit`]),
//! 2. the path in `OVMF_PATH` ([`FindOptions::env`]),
//! 3. QEMU's firmware descriptors ([`descriptor`](crate::descriptor)), in QEMU's order, then the
//!    paths where distribution packages install OVMF, in the order of [`distro_candidates`]; of
//!    these the best fit for the [`Purpose`] wins (see [`find`]).
//!
//! A path the user named is never second-guessed: when it is missing or unreadable the search
//! stops with an error instead of silently booting some other firmware. It is still described:
//! the descriptor that names it, and whether it enforces Secure Boot.
//!
//! OVMF comes in two shapes. A combined image (`OVMF.fd`) holds code and the UEFI variable store
//! in one file and is what QEMU loads with `-bios`, the only way to load firmware into a TD
//! (QEMU `docs/system/i386/tdx.rst`: TDX has no read-only memslots, so no pflash, and no
//! SMM). A split image is a read-only `OVMF_CODE*.fd` plus an `OVMF_VARS*.fd` template; the
//! template belongs to the package, so a run gets its own writable copy in
//! [`FindOptions::scratch_dir`].
//!
//! Secure Boot builds with enrolled keys (`*.ms.fd`, `*.snakeoil.fd`, Fedora's `*.secboot.fd`
//! with enrolled VARS, the distributions' TDX builds `OVMF.inteltdx.ms.fd` and
//! `OVMF.inteltdx.secboot.fd`) refuse our unsigned loader. They are never chosen for a TCG run,
//! and for a TD only when nothing else carries TDVF metadata, with [`SecureBoot::Enforced`] so
//! the caller warns. Each result says whether it enforces Secure Boot, from its descriptor's
//! `enrolled-keys` feature or from a Platform Key in its variable store ([`crate::varstore`]).

use crate::descriptor::Found;
use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

mod rank;

pub use rank::rank_descriptor;
use rank::{rank_known, store_has_platform_key};

/// Smallest plausible firmware image. OVMF's smallest build (`FD_SIZE_1MB`) is 1 MiB; anything
/// smaller is a truncated download or the VARS file given by mistake.
pub const MIN_FIRMWARE_SIZE: u64 = 1 << 20;

/// Largest plausible firmware image. The flash window below 4 GiB that QEMU maps firmware into
/// is far smaller; 64 MiB leaves room for unusual builds while rejecting disk images.
pub const MAX_FIRMWARE_SIZE: u64 = 64 << 20;

/// Firmware volumes are built from 4 KiB flash blocks, so every real image is a multiple of it.
pub const FIRMWARE_BLOCK_SIZE: u64 = 4 << 10;

/// What the caller knows before the search starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FindOptions {
    /// Path given with `--firmware`. Taken as is (relative to the current directory), not
    /// under [`root`](Self::root).
    pub explicit: Option<PathBuf>,
    /// Path given in the `OVMF_PATH` environment variable. Taken as is, like `explicit`.
    pub env: Option<PathBuf>,
    /// Filesystem prefix under which the distribution paths are looked up: `/` in production,
    /// a temporary directory in tests.
    pub root: PathBuf,
    /// Directory that receives the writable copy of a split image's VARS template. Created if
    /// missing.
    pub scratch_dir: PathBuf,
    /// QEMU firmware descriptor directories, most specific first
    /// ([`crate::descriptor::search_dirs`]). Empty: no descriptors.
    pub descriptor_dirs: Vec<PathBuf>,
    /// What the firmware is for.
    pub purpose: Purpose,
}

/// What the firmware must be able to do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Purpose {
    /// A TCG (or KVM, non-TD) guest on q35: any x86_64 UEFI build for q35, loaded with pflash
    /// or `-bios`, without enrolled Secure Boot keys.
    #[default]
    Tcg,
    /// A TD: one image loaded with `-bios` (no pflash, no SMM in a TD) that carries TDVF
    /// metadata, preferably without enrolled keys.
    Td,
}

impl fmt::Display for Purpose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Purpose::Tcg => "a q35 guest",
            Purpose::Td => "a TD",
        })
    }
}

/// Whether the firmware will refuse an unsigned loader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecureBoot {
    /// Secure Boot keys are enrolled: unsigned loaders (ours) are refused. Says how we know.
    Enforced(String),
    /// No descriptor says `enrolled-keys` and no Platform Key is in the variable store.
    NotEnforced,
}

/// Firmware ready to hand to QEMU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Firmware {
    /// The combined image or the CODE half of a split image.
    pub code: PathBuf,
    /// `None` for a combined image; for a split image, the private writable copy of the
    /// matching VARS template (never the package's own file).
    pub vars: Option<PathBuf>,
    /// Where the firmware came from, for messages such as "using OVMF from OVMF_PATH".
    pub source: Source,
    /// The QEMU firmware descriptor that describes this image, if one does.
    pub descriptor: Option<Found>,
    /// Whether it refuses unsigned loaders.
    pub secure_boot: SecureBoot,
    /// Why this firmware was chosen, one line.
    pub reason: String,
    /// One-line warnings from the search (skipped malformed descriptors).
    pub warnings: Vec<String>,
}

impl Firmware {
    /// A firmware with nothing known about it beyond its files.
    pub fn new(code: PathBuf, vars: Option<PathBuf>, source: Source) -> Self {
        Firmware {
            code,
            vars,
            source,
            descriptor: None,
            secure_boot: SecureBoot::NotEnforced,
            reason: String::new(),
            warnings: Vec::new(),
        }
    }
}

/// Where a firmware path came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The `--firmware PATH` command-line flag.
    Explicit,
    /// The `OVMF_PATH` environment variable.
    Env,
    /// A QEMU firmware descriptor ([`Firmware::descriptor`]).
    Descriptor,
    /// A path where a distribution's package installs OVMF.
    Distro(Distro),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Explicit => f.write_str("--firmware"),
            Source::Env => f.write_str("OVMF_PATH"),
            Source::Descriptor => f.write_str("a QEMU firmware descriptor"),
            Source::Distro(distro) => write!(f, "{} package `{}`", distro, distro.package()),
        }
    }
}

/// Distribution family whose package layout a search path comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Distro {
    /// Debian and Ubuntu, package `ovmf`.
    Debian,
    /// Fedora (and RHEL-like distributions), package `edk2-ovmf`.
    Fedora,
    /// Arch Linux, package `edk2-ovmf`.
    Arch,
}

impl Distro {
    /// Name of the package that installs OVMF on this distribution.
    pub fn package(self) -> &'static str {
        match self {
            Distro::Debian => "ovmf",
            Distro::Fedora | Distro::Arch => "edk2-ovmf",
        }
    }

    /// The command that installs [`package`](Self::package).
    pub fn install_command(self) -> &'static str {
        match self {
            Distro::Debian => "apt-get install ovmf",
            Distro::Fedora => "dnf install edk2-ovmf",
            Distro::Arch => "pacman -S edk2-ovmf",
        }
    }
}

impl fmt::Display for Distro {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Distro::Debian => "Debian/Ubuntu",
            Distro::Fedora => "Fedora",
            Distro::Arch => "Arch",
        })
    }
}

/// One place the search looks at: a combined image, or a CODE image with its VARS template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Combined image, or the CODE half of a split image.
    pub code: PathBuf,
    /// VARS template that must sit next to a split CODE image; `None` for a combined image.
    pub vars: Option<PathBuf>,
    /// Package layout this path comes from.
    pub distro: Distro,
    /// The package enrols Secure Boot keys in this build: it refuses unsigned loaders.
    pub enrolled_keys: bool,
    /// A dedicated TDX build (`OvmfPkg/IntelTdx`); other combined images may carry TDVF
    /// metadata too (Debian's `OVMF.fd` does), which the search checks in the file.
    pub tdx_build: bool,
}

impl fmt::Display for Candidate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.vars {
            None => write!(f, "{}", self.code.display()),
            Some(vars) => write!(f, "{} with {}", self.code.display(), vars.display()),
        }
    }
}

/// Secure Boot status of a known path: whether the package enrols keys in it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Keys {
    None,
    Enrolled,
}

/// What a known path is: a generic build, or a dedicated TDX build.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Build {
    Generic,
    Tdx,
}

/// Distribution paths relative to the filesystem root, in search order (after the
/// descriptors; among equally good fits the earlier entry wins).
///
/// Debian's combined `OVMF.fd` comes first because a TD can only be started from a combined
/// image and Debian's carries TDVF metadata (the `tdvf` tests parse the installed file). Within
/// Debian's split images the 4 MiB layout, with its larger variable store, precedes the older
/// 2 MiB one. Paths are relative so that `Path::join` keeps them under the chosen root.
///
/// The TDX builds, with their Secure Boot status:
/// - Debian and Ubuntu (edk2 2025.11 and later, package `ovmf-inteltdx`):
///   `/usr/share/ovmf/OVMF.inteltdx.ms.fd`, Secure Boot on with Microsoft's keys enrolled
///   (its descriptor `60-edk2-x86_64-inteltdx.json` lists `intel-tdx`, `secure-boot`,
///   `enrolled-keys`). Ubuntu's 26.04 release notes: "`OVMF.inteltdx.fd` has been removed",
///   "`OVMF.inteltdx.secboot.fd` has been renamed to `OVMF.inteltdx.ms.fd`".
/// - Ubuntu before that: `/usr/share/ovmf/OVMF.inteltdx.fd` (no keys) and
///   `/usr/share/ovmf/OVMF.inteltdx.secboot.fd` (keys enrolled).
/// - Fedora (`edk2-ovmf`): `/usr/share/edk2/ovmf/OVMF.inteltdx.fd` (`OvmfPkg/IntelTdx` without
///   Secure Boot options, `edk2-build.fedora` section `build.ovmf.inteltdx`) and
///   `/usr/share/edk2/ovmf/OVMF.inteltdx.secboot.fd` (its descriptor
///   `60-edk2-ovmf-x64-inteltdx.json` lists `enrolled-keys`, `intel-tdx`, `secure-boot`).
const DISTRO_PATHS: &[(&str, Option<&str>, Distro, Keys, Build)] = &[
    ("usr/share/ovmf/OVMF.fd", None, Distro::Debian, Keys::None, Build::Generic),
    (
        "usr/share/OVMF/OVMF_CODE_4M.fd",
        Some("usr/share/OVMF/OVMF_VARS_4M.fd"),
        Distro::Debian,
        Keys::None,
        Build::Generic,
    ),
    (
        "usr/share/OVMF/OVMF_CODE.fd",
        Some("usr/share/OVMF/OVMF_VARS.fd"),
        Distro::Debian,
        Keys::None,
        Build::Generic,
    ),
    (
        "usr/share/edk2/ovmf/OVMF_CODE.fd",
        Some("usr/share/edk2/ovmf/OVMF_VARS.fd"),
        Distro::Fedora,
        Keys::None,
        Build::Generic,
    ),
    ("usr/share/edk2/ovmf/OVMF.fd", None, Distro::Fedora, Keys::None, Build::Generic),
    ("usr/share/edk2/x64/OVMF.fd", None, Distro::Arch, Keys::None, Build::Generic),
    (
        "usr/share/edk2/x64/OVMF_CODE.fd",
        Some("usr/share/edk2/x64/OVMF_VARS.fd"),
        Distro::Arch,
        Keys::None,
        Build::Generic,
    ),
    ("usr/share/ovmf/OVMF.inteltdx.fd", None, Distro::Debian, Keys::None, Build::Tdx),
    ("usr/share/edk2/ovmf/OVMF.inteltdx.fd", None, Distro::Fedora, Keys::None, Build::Tdx),
    ("usr/share/ovmf/OVMF.inteltdx.ms.fd", None, Distro::Debian, Keys::Enrolled, Build::Tdx),
    ("usr/share/ovmf/OVMF.inteltdx.secboot.fd", None, Distro::Debian, Keys::Enrolled, Build::Tdx),
    (
        "usr/share/edk2/ovmf/OVMF.inteltdx.secboot.fd",
        None,
        Distro::Fedora,
        Keys::Enrolled,
        Build::Tdx,
    ),
];

/// The distribution paths under `root`, in the order [`find`] tries them.
pub fn distro_candidates(root: &Path) -> Vec<Candidate> {
    DISTRO_PATHS
        .iter()
        .map(|&(code, vars, distro, keys, build)| Candidate {
            code: root.join(code),
            vars: vars.map(|vars| root.join(vars)),
            distro,
            enrolled_keys: keys == Keys::Enrolled,
            tdx_build: build == Build::Tdx,
        })
        .collect()
}

/// Why no usable firmware was found. Every message is one line and names the path involved.
#[derive(Debug, thiserror::Error)]
pub enum FindError {
    /// A path the user named does not exist.
    #[error("firmware {} (from {origin}) does not exist", path.display())]
    Missing { path: PathBuf, origin: Source },

    /// A path the user named is a directory or some other non-file.
    #[error("firmware {} (from {origin}) is not a regular file", path.display())]
    NotAFile { path: PathBuf, origin: Source },

    /// A firmware file exists but cannot be opened or inspected.
    #[error("cannot read firmware {} (from {origin}): {error}", path.display())]
    Unreadable { path: PathBuf, origin: Source, error: io::Error },

    /// A firmware file is too small, too large, or not made of whole flash blocks.
    #[error(
        "firmware {} (from {origin}) is {size} bytes, not a plausible UEFI image \
         (expected a multiple of 4 KiB between 1 MiB and 64 MiB)",
        path.display()
    )]
    ImplausibleSize { path: PathBuf, origin: Source, size: u64 },

    /// A VARS template is empty, huge, or not made of whole flash blocks.
    #[error(
        "UEFI variable store template {} is {size} bytes, not a plausible VARS image \
         (expected a multiple of 4 KiB up to 64 MiB)",
        path.display()
    )]
    ImplausibleVarsSize { path: PathBuf, size: u64 },

    /// The writable copy of a VARS template could not be made.
    #[error(
        "cannot copy UEFI variable store template {} to {}: {error}",
        template.display(),
        copy.display()
    )]
    VarsCopy { template: PathBuf, copy: PathBuf, error: io::Error },

    /// Neither the user nor any distribution path provided firmware.
    #[error(
        "no UEFI firmware found (searched: {}); install it with {}, or pass --firmware PATH / set OVMF_PATH",
        list_candidates(searched),
        install_hint()
    )]
    NotFound { searched: Vec<Candidate> },

    /// Firmware is installed, but none of it fits the purpose.
    #[error(
        "no installed UEFI firmware fits {purpose}: {}; pass --firmware PATH / set OVMF_PATH, or \
         install {}",
        passed_over.join("; "),
        match purpose {
            Purpose::Tcg => "OVMF without enrolled Secure Boot keys (`apt-get install ovmf`, \
                             `dnf install edk2-ovmf`, `pacman -S edk2-ovmf`)",
            Purpose::Td => "a combined OVMF image with TDVF metadata (Debian/Ubuntu \
                            /usr/share/ovmf/OVMF.fd from `ovmf`/`ovmf-generic`)",
        }
    )]
    NoneSuitable { purpose: Purpose, passed_over: Vec<String> },
}

fn list_candidates(searched: &[Candidate]) -> String {
    searched.iter().map(Candidate::to_string).collect::<Vec<_>>().join(", ")
}

/// "`apt-get install ovmf` (Debian/Ubuntu), `dnf install edk2-ovmf` (Fedora) or ...".
fn install_hint() -> String {
    let distros = [Distro::Debian, Distro::Fedora, Distro::Arch];
    let commands: Vec<String> = distros
        .iter()
        .map(|distro| format!("`{}` ({})", distro.install_command(), distro))
        .collect();
    match commands.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {}", rest.join(", "), last),
        _ => commands.concat(),
    }
}

/// Finds firmware in the documented order (see the module documentation).
///
/// The explicit path wins over `OVMF_PATH`, which wins over the search; a path the user named
/// must be usable or the search fails.
///
/// The search ranks every QEMU firmware descriptor (in QEMU's order) and every installed
/// distribution path (in table order) for the [`Purpose`] and takes the best rank; among equal
/// ranks descriptors come first, then the earlier one:
///
/// - for [`Purpose::Tcg`]: a UEFI build for x86_64 q35 that QEMU can load with pflash or
///   `-bios`, without enrolled keys and without `requires-smm` (those are never chosen); builds
///   made for a confidential guest (`intel-tdx`) rank after generic ones;
/// - for [`Purpose::Td`]: one image loadable with `-bios` and without `requires-smm`; a
///   dedicated TDX build (`intel-tdx` feature, or a known TDX path) first, then any other
///   combined image whose file carries TDVF metadata, then those with enrolled keys last.
///
/// A distribution path that exists but fails the size check is an error, rather than being
/// skipped, so a broken package install is reported instead of masked. A split CODE image counts
/// only when its VARS template is also installed. Malformed descriptors are skipped with a
/// warning in [`Firmware::warnings`].
pub fn find(opts: &FindOptions) -> Result<Firmware, FindError> {
    let loaded = crate::descriptor::load(&opts.descriptor_dirs);
    if let Some(path) = &opts.explicit {
        return user_firmware(path, Source::Explicit, opts, loaded);
    }
    if let Some(path) = &opts.env {
        return user_firmware(path, Source::Env, opts, loaded);
    }

    let searched = distro_candidates(&opts.root);
    let mut passed_over = Vec::new();
    // (rank, order, choice); order keeps descriptors before distribution paths.
    let mut best: Option<(u8, usize, Choice)> = None;
    let mut consider = |rank: u8, order: usize, choice: Choice| {
        if best.as_ref().is_none_or(|(r, o, _)| (rank, order) < (*r, *o)) {
            best = Some((rank, order, choice));
        }
    };
    for (order, found) in loaded.descriptors.iter().enumerate() {
        match rank_descriptor(found, opts.purpose) {
            Ok((rank, secure_boot)) => {
                consider(rank, order, Choice::Descriptor { found: found.clone(), secure_boot })
            }
            Err(why) => passed_over.push(format!("{}: {why}", found.name())),
        }
    }
    let any_installed =
        searched.iter().any(|c| c.code.is_file() && c.vars.as_deref().is_none_or(Path::is_file));
    for (index, candidate) in searched.iter().enumerate() {
        let complete =
            candidate.code.is_file() && candidate.vars.as_deref().is_none_or(Path::is_file);
        if !complete {
            continue;
        }
        check_firmware_file(&candidate.code, Source::Distro(candidate.distro))?;
        match rank_known(candidate, opts.purpose) {
            Ok((rank, secure_boot)) => consider(
                rank,
                loaded.descriptors.len() + index,
                Choice::Known { candidate: candidate.clone(), secure_boot },
            ),
            Err(why) => passed_over.push(format!("{}: {why}", candidate.code.display())),
        }
    }
    let Some((_, _, choice)) = best else {
        if loaded.descriptors.is_empty() && !any_installed {
            return Err(FindError::NotFound { searched });
        }
        return Err(FindError::NoneSuitable { purpose: opts.purpose, passed_over });
    };
    let passed = if passed_over.is_empty() {
        String::new()
    } else {
        format!("; passed over: {}", passed_over.join("; "))
    };
    let mut firmware = match choice {
        Choice::Descriptor { found, secure_boot } => {
            check_firmware_file(found.descriptor.executable(), Source::Descriptor)?;
            let vars = match found.descriptor.nvram_template() {
                Some(template) => Some(copy_vars_template(template, &opts.scratch_dir)?),
                None => None,
            };
            let mut firmware = Firmware::new(
                found.descriptor.executable().to_path_buf(),
                vars,
                Source::Descriptor,
            );
            firmware.reason = format!(
                "QEMU firmware descriptor {found}, the best fit for {}{passed}",
                opts.purpose
            );
            firmware.descriptor = Some(found);
            firmware.secure_boot = secure_boot;
            firmware
        }
        Choice::Known { candidate, secure_boot } => {
            let source = Source::Distro(candidate.distro);
            let vars = match &candidate.vars {
                Some(template) => Some(copy_vars_template(template, &opts.scratch_dir)?),
                None => None,
            };
            let mut firmware = Firmware::new(candidate.code.clone(), vars, source);
            firmware.reason = format!(
                "{source} path {}, the best fit for {} (no QEMU firmware descriptor fits \
                 better){passed}",
                candidate.code.display(),
                opts.purpose
            );
            firmware.descriptor = crate::descriptor::naming(&loaded.descriptors, &candidate.code)
                .first()
                .map(|f| (*f).clone());
            firmware.secure_boot = secure_boot;
            firmware
        }
    };
    firmware.warnings = loaded.warnings;
    Ok(firmware)
}

/// A search result before its VARS template is copied.
enum Choice {
    Descriptor { found: Found, secure_boot: SecureBoot },
    Known { candidate: Candidate, secure_boot: SecureBoot },
}

/// Accepts a path the user named, or explains why it cannot be used.
///
/// If it is a split CODE image (`…OVMF_CODE….fd`) with the matching `…OVMF_VARS….fd` next to
/// it, the VARS template is copied as for a distribution path; otherwise, when a QEMU firmware
/// descriptor names the file as a split build, its NVRAM template is copied; otherwise the file
/// is treated as a combined image.
fn user_firmware(
    path: &Path,
    source: Source,
    opts: &FindOptions,
    loaded: crate::descriptor::Loaded,
) -> Result<Firmware, FindError> {
    check_firmware_file(path, source)?;
    let described = describe(path, &loaded.descriptors);
    let vars = match &described.vars_template {
        Some(template) => Some(copy_vars_template(template, &opts.scratch_dir)?),
        None => None,
    };
    let mut firmware = Firmware::new(path.to_path_buf(), vars, source);
    firmware.secure_boot = described.secure_boot;
    firmware.reason = format!("given with {source}");
    firmware.descriptor = described.descriptor;
    firmware.warnings = loaded.warnings;
    Ok(firmware)
}

/// What is known about a firmware file without choosing it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Described {
    /// The first descriptor that names the file ([`crate::descriptor::naming`]).
    pub descriptor: Option<Found>,
    /// The VARS template that goes with a split CODE image: `OVMF_VARS…` beside an
    /// `OVMF_CODE…` file, else the NVRAM template its descriptor names.
    pub vars_template: Option<PathBuf>,
    /// From its descriptor's `enrolled-keys`, or a Platform Key in its variable store (the VARS
    /// template, or the image itself).
    pub secure_boot: SecureBoot,
}

/// Describes `image` using the loaded `descriptors`.
pub fn describe(image: &Path, descriptors: &[Found]) -> Described {
    let descriptor =
        crate::descriptor::naming(descriptors, image).first().map(|found| (*found).clone());
    let vars_template = sibling_vars_template(image).or_else(|| {
        descriptor
            .as_ref()
            .and_then(|found| found.descriptor.nvram_template())
            .filter(|template| template.is_file())
            .map(Path::to_path_buf)
    });
    let by_descriptor = descriptor
        .as_ref()
        .filter(|found| found.descriptor.has_feature(crate::descriptor::feature::ENROLLED_KEYS));
    let secure_boot =
        match (by_descriptor, store_has_platform_key(vars_template.as_deref().unwrap_or(image))) {
            (_, Some(evidence)) => SecureBoot::Enforced(evidence),
            (Some(found), None) => SecureBoot::Enforced(format!(
                "its QEMU firmware descriptor {} lists enrolled-keys",
                found.name()
            )),
            (None, None) => SecureBoot::NotEnforced,
        };
    Described { descriptor, vars_template, secure_boot }
}

/// One installed firmware that can boot a TD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TdCapable {
    /// The image (loaded with `-bios`).
    pub path: PathBuf,
    /// Where it was found: "QEMU firmware descriptor NAME" or "PACKAGE package path".
    pub origin: String,
    /// Whether it refuses our unsigned loader.
    pub secure_boot: SecureBoot,
}

/// Every installed firmware that can boot a TD: descriptors with `intel-tdx` or a `-bios`
/// image carrying TDVF metadata (without `requires-smm`), then the distribution's combined
/// images that carry TDVF metadata; each file once, in the order [`find`] ranks ties.
pub fn td_capable(opts: &FindOptions) -> (Vec<TdCapable>, Vec<String>) {
    let loaded = crate::descriptor::load(&opts.descriptor_dirs);
    let mut found: Vec<TdCapable> = Vec::new();
    let mut seen: Vec<PathBuf> = Vec::new();
    let mut add = |path: &Path, origin: String, secure_boot: SecureBoot| {
        let key = fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        if !seen.contains(&key) {
            seen.push(key);
            found.push(TdCapable { path: path.to_path_buf(), origin, secure_boot });
        }
    };
    for descriptor in &loaded.descriptors {
        if let Ok((_, secure_boot)) = rank_descriptor(descriptor, Purpose::Td) {
            add(
                descriptor.descriptor.executable(),
                format!("QEMU firmware descriptor {}", descriptor.name()),
                secure_boot,
            );
        }
    }
    for candidate in distro_candidates(&opts.root) {
        if candidate.code.is_file() && candidate.vars.is_none() {
            if let Ok((_, secure_boot)) = rank_known(&candidate, Purpose::Td) {
                add(
                    &candidate.code,
                    format!("{} package `{}`", candidate.distro, candidate.distro.package()),
                    secure_boot,
                );
            }
        }
    }
    (found, loaded.warnings)
}

/// Checks that `path` is a readable regular file of plausible firmware size.
fn check_firmware_file(path: &Path, origin: Source) -> Result<(), FindError> {
    let metadata = fs::metadata(path).map_err(|error| {
        if error.kind() == io::ErrorKind::NotFound {
            FindError::Missing { path: path.to_path_buf(), origin }
        } else {
            FindError::Unreadable { path: path.to_path_buf(), origin, error }
        }
    })?;
    if !metadata.is_file() {
        return Err(FindError::NotAFile { path: path.to_path_buf(), origin });
    }
    // Metadata can be read without read permission on the file itself; QEMU needs to open it.
    fs::File::open(path).map_err(|error| FindError::Unreadable {
        path: path.to_path_buf(),
        origin,
        error,
    })?;
    let size = metadata.len();
    if !is_plausible_firmware_size(size) {
        return Err(FindError::ImplausibleSize { path: path.to_path_buf(), origin, size });
    }
    Ok(())
}

/// True when `size` could be an OVMF image: whole 4 KiB blocks, between 1 MiB and 64 MiB.
pub fn is_plausible_firmware_size(size: u64) -> bool {
    (MIN_FIRMWARE_SIZE..=MAX_FIRMWARE_SIZE).contains(&size)
        && size.is_multiple_of(FIRMWARE_BLOCK_SIZE)
}

/// VARS templates are much smaller than code (Debian's is 128 KiB or 528 KiB), so they get their
/// own bound: at least one block, at most the firmware maximum.
fn is_plausible_vars_size(size: u64) -> bool {
    (FIRMWARE_BLOCK_SIZE..=MAX_FIRMWARE_SIZE).contains(&size)
        && size.is_multiple_of(FIRMWARE_BLOCK_SIZE)
}

/// The VARS template that pairs with a split CODE image named by the user, if one is installed
/// next to it. Debian, Fedora and Arch all name the pair `OVMF_CODE<suffix>` / `OVMF_VARS<suffix>`.
fn sibling_vars_template(code: &Path) -> Option<PathBuf> {
    let name = code.file_name()?.to_str()?;
    if !name.contains("OVMF_CODE") {
        return None;
    }
    let template = code.with_file_name(name.replacen("OVMF_CODE", "OVMF_VARS", 1));
    template.is_file().then_some(template)
}

/// Copies a VARS template into `scratch_dir` and makes the copy writable by its owner.
///
/// Any copy left by an earlier run is replaced, so every run starts from the package's pristine
/// variable store (no stale boot entries from a previous kernel).
fn copy_vars_template(template: &Path, scratch_dir: &Path) -> Result<PathBuf, FindError> {
    let file_name = template.file_name().unwrap_or(template.as_os_str());
    let copy = scratch_dir.join(file_name);
    let copy_error =
        |error| FindError::VarsCopy { template: template.to_path_buf(), copy: copy.clone(), error };

    let size = fs::metadata(template).map_err(copy_error)?.len();
    if !is_plausible_vars_size(size) {
        return Err(FindError::ImplausibleVarsSize { path: template.to_path_buf(), size });
    }
    fs::create_dir_all(scratch_dir).map_err(copy_error)?;
    // `fs::copy` onto the template itself would truncate it (as root it would even succeed in
    // opening the package's file for writing), so refuse a scratch dir that is the package dir.
    if let (Ok(from), Ok(to)) = (fs::canonicalize(template), fs::canonicalize(&copy)) {
        if from == to {
            return Err(copy_error(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the scratch directory holds the template itself",
            )));
        }
    }
    fs::copy(template, &copy).map_err(copy_error)?;
    make_owner_writable(&copy).map_err(copy_error)?;
    Ok(copy)
}

/// Package files are often mode 0444 and `fs::copy` keeps the mode, but QEMU opens the variable
/// store read-write.
fn make_owner_writable(path: &Path) -> io::Result<()> {
    let mut permissions = fs::metadata(path)?.permissions();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        permissions.set_mode(permissions.mode() | 0o200);
    }
    #[cfg(not(unix))]
    {
        #[allow(clippy::permissions_set_readonly_false)]
        permissions.set_readonly(false);
    }
    fs::set_permissions(path, permissions)
}

#[cfg(test)]
#[path = "find/fixture.rs"]
mod fixture;

#[cfg(test)]
#[path = "find/selection_tests.rs"]
mod selection_tests;

#[cfg(test)]
mod tests {
    use super::fixture::{Fixture, IMAGE_SIZE};
    use super::*;

    const VARS_SIZE: u64 = 128 << 10;

    #[test]
    fn explicit_path_wins_over_env_and_distro() {
        let fx = Fixture::new();
        let explicit = fx.image("custom/explicit.fd");
        let env = fx.image("custom/env.fd");
        fx.image("usr/share/ovmf/OVMF.fd");
        let opts = FindOptions { explicit: Some(explicit.clone()), env: Some(env), ..fx.options() };
        let firmware = find(&opts).unwrap();
        assert_eq!(firmware.code, explicit);
        assert_eq!(firmware.vars, None);
        assert_eq!(firmware.source, Source::Explicit);
    }

    #[test]
    fn env_path_wins_over_distro() {
        let fx = Fixture::new();
        let env = fx.image("custom/env.fd");
        fx.image("usr/share/ovmf/OVMF.fd");
        let opts = FindOptions { env: Some(env.clone()), ..fx.options() };
        let firmware = find(&opts).unwrap();
        assert_eq!(firmware.code, env);
        assert_eq!(firmware.source, Source::Env);
    }

    #[test]
    fn missing_explicit_path_is_an_error_without_fallback() {
        let fx = Fixture::new();
        fx.image("usr/share/ovmf/OVMF.fd");
        let env = fx.image("custom/env.fd");
        let missing = fx.root.path().join("nope/OVMF.fd");
        let opts = FindOptions { explicit: Some(missing.clone()), env: Some(env), ..fx.options() };
        let error = find(&opts).unwrap_err();
        assert!(matches!(error, FindError::Missing { origin: Source::Explicit, .. }));
        let message = error.to_string();
        assert!(message.contains(&missing.display().to_string()), "{message}");
        assert!(message.contains("--firmware"), "{message}");
        assert!(!message.contains('\n'));
    }

    #[test]
    fn missing_env_path_is_an_error_without_fallback() {
        let fx = Fixture::new();
        fx.image("usr/share/ovmf/OVMF.fd");
        let missing = fx.root.path().join("nope/OVMF.fd");
        let opts = FindOptions { env: Some(missing.clone()), ..fx.options() };
        let error = find(&opts).unwrap_err();
        assert!(matches!(error, FindError::Missing { origin: Source::Env, .. }));
        let message = error.to_string();
        assert!(message.contains(&missing.display().to_string()), "{message}");
        assert!(message.contains("OVMF_PATH"), "{message}");
    }

    #[cfg(unix)]
    #[test]
    fn dangling_symlink_counts_as_missing() {
        let fx = Fixture::new();
        let link = fx.root.path().join("OVMF.fd");
        std::os::unix::fs::symlink(fx.root.path().join("gone.fd"), &link).unwrap();
        let opts = FindOptions { explicit: Some(link), ..fx.options() };
        assert!(matches!(find(&opts), Err(FindError::Missing { .. })));
    }

    #[test]
    fn directory_given_as_firmware_is_an_error() {
        let fx = Fixture::new();
        let opts = FindOptions { env: Some(fx.root.path().to_path_buf()), ..fx.options() };
        let error = find(&opts).unwrap_err();
        assert!(matches!(error, FindError::NotAFile { origin: Source::Env, .. }));
    }

    #[cfg(unix)]
    #[test]
    fn unreadable_explicit_path_is_an_error() {
        use std::os::unix::fs::PermissionsExt;
        let fx = Fixture::new();
        let path = fx.image("custom/locked.fd");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o000)).unwrap();
        if fs::File::open(&path).is_ok() {
            // Running as root: permission bits do not stop reads, so there is nothing to test.
            println!("skip: running with privileges that ignore file modes");
            return;
        }
        let opts = FindOptions { explicit: Some(path), ..fx.options() };
        assert!(matches!(find(&opts), Err(FindError::Unreadable { .. })));
    }

    #[test]
    fn distro_order_prefers_debian_combined_image() {
        let fx = Fixture::new();
        // Install everything; the first entry of the documented order must win.
        for candidate in distro_candidates(Path::new("")) {
            fx.image(candidate.code.to_str().unwrap());
            if let Some(vars) = &candidate.vars {
                fx.file(vars.to_str().unwrap(), VARS_SIZE);
            }
        }
        let firmware = find(&fx.options()).unwrap();
        assert_eq!(firmware.code, fx.root.path().join("usr/share/ovmf/OVMF.fd"));
        assert_eq!(firmware.vars, None);
        assert_eq!(firmware.source, Source::Distro(Distro::Debian));
    }

    #[test]
    fn each_distro_path_is_found_when_it_is_the_only_one() {
        for candidate in distro_candidates(Path::new("")) {
            let fx = Fixture::new();
            let code = fx.image(candidate.code.to_str().unwrap());
            if let Some(vars) = &candidate.vars {
                fx.file(vars.to_str().unwrap(), VARS_SIZE);
            }
            if candidate.enrolled_keys {
                // Never a TCG choice (see tdx_builds_with_enrolled_keys_are_never_chosen_for_tcg).
                assert!(find(&fx.options()).is_err());
                continue;
            }
            let firmware = find(&fx.options()).unwrap();
            assert_eq!(firmware.code, code);
            assert_eq!(firmware.vars.is_some(), candidate.vars.is_some());
            assert_eq!(firmware.source, Source::Distro(candidate.distro));
        }
    }

    #[test]
    fn earlier_distro_path_wins_over_later_one() {
        let fx = Fixture::new();
        let code_4m = fx.image("usr/share/OVMF/OVMF_CODE_4M.fd");
        fx.file("usr/share/OVMF/OVMF_VARS_4M.fd", VARS_SIZE);
        fx.image("usr/share/OVMF/OVMF_CODE.fd");
        fx.file("usr/share/OVMF/OVMF_VARS.fd", VARS_SIZE);
        fx.image("usr/share/edk2/x64/OVMF.fd");
        assert_eq!(find(&fx.options()).unwrap().code, code_4m);
    }

    #[test]
    fn split_image_gets_a_writable_copy_of_its_vars() {
        let fx = Fixture::new();
        let code = fx.image("usr/share/OVMF/OVMF_CODE_4M.fd");
        let template = fx.file("usr/share/OVMF/OVMF_VARS_4M.fd", VARS_SIZE);
        fs::write(&template, vec![0x5a; VARS_SIZE as usize]).unwrap();
        let mut permissions = fs::metadata(&template).unwrap().permissions();
        permissions.set_readonly(true);
        fs::set_permissions(&template, permissions).unwrap();

        let opts = fx.options();
        let firmware = find(&opts).unwrap();
        assert_eq!(firmware.code, code);
        let copy = firmware.vars.expect("split image must come with VARS");
        assert_eq!(copy, opts.scratch_dir.join("OVMF_VARS_4M.fd"));
        assert_ne!(copy, template);
        assert_eq!(fs::read(&copy).unwrap(), fs::read(&template).unwrap());
        assert!(!fs::metadata(&copy).unwrap().permissions().readonly());
        // Writing the copy must leave the package's template untouched.
        fs::OpenOptions::new().write(true).open(&copy).unwrap();
        fs::write(&copy, b"dirty").unwrap();
        assert_eq!(fs::read(&template).unwrap(), vec![0x5a; VARS_SIZE as usize]);

        // A second run starts again from the pristine template.
        let again = find(&opts).unwrap();
        assert_eq!(fs::read(again.vars.unwrap()).unwrap().len(), VARS_SIZE as usize);
    }

    #[test]
    fn split_code_without_vars_is_skipped() {
        let fx = Fixture::new();
        fx.image("usr/share/OVMF/OVMF_CODE_4M.fd");
        let arch = fx.image("usr/share/edk2/x64/OVMF.fd");
        assert_eq!(find(&fx.options()).unwrap().code, arch);
    }

    #[test]
    fn explicit_split_code_image_takes_its_sibling_vars() {
        let fx = Fixture::new();
        let code = fx.image("custom/OVMF_CODE_4M.fd");
        fx.file("custom/OVMF_VARS_4M.fd", VARS_SIZE);
        let opts = FindOptions { explicit: Some(code.clone()), ..fx.options() };
        let firmware = find(&opts).unwrap();
        assert_eq!(firmware.code, code);
        assert_eq!(firmware.vars, Some(opts.scratch_dir.join("OVMF_VARS_4M.fd")));
    }

    #[test]
    fn scratch_dir_equal_to_package_dir_is_refused() {
        let fx = Fixture::new();
        fx.image("usr/share/OVMF/OVMF_CODE.fd");
        let template = fx.file("usr/share/OVMF/OVMF_VARS.fd", VARS_SIZE);
        let opts =
            FindOptions { scratch_dir: template.parent().unwrap().to_path_buf(), ..fx.options() };
        assert!(matches!(find(&opts), Err(FindError::VarsCopy { .. })));
        assert_eq!(fs::metadata(&template).unwrap().len(), VARS_SIZE);
    }

    #[test]
    fn nothing_found_names_every_place_and_the_packages() {
        let fx = Fixture::new();
        let error = find(&fx.options()).unwrap_err();
        let message = error.to_string();
        assert!(!message.contains('\n'), "{message}");
        assert!(message.starts_with("no UEFI firmware found"), "{message}");
        for candidate in distro_candidates(fx.root.path()) {
            assert!(message.contains(&candidate.code.display().to_string()), "{message}");
            if let Some(vars) = &candidate.vars {
                assert!(message.contains(&vars.display().to_string()), "{message}");
            }
        }
        for hint in [
            "apt-get install ovmf",
            "dnf install edk2-ovmf",
            "pacman -S edk2-ovmf",
            "--firmware",
            "OVMF_PATH",
        ] {
            assert!(message.contains(hint), "missing {hint:?} in {message}");
        }
    }

    #[test]
    fn production_message_lists_absolute_distro_paths() {
        let message =
            FindError::NotFound { searched: distro_candidates(Path::new("/")) }.to_string();
        assert!(message.contains("/usr/share/ovmf/OVMF.fd, "), "{message}");
        assert!(message
            .contains("/usr/share/OVMF/OVMF_CODE_4M.fd with /usr/share/OVMF/OVMF_VARS_4M.fd"));
        assert!(message.contains(
            "`apt-get install ovmf` (Debian/Ubuntu), `dnf install edk2-ovmf` (Fedora) or \
             `pacman -S edk2-ovmf` (Arch)"
        ));
    }

    #[test]
    fn secure_boot_variants_in_the_list_are_the_tdx_builds_marked_enrolled() {
        for candidate in distro_candidates(Path::new("/")) {
            let text = candidate.to_string();
            let secure_boot_variant =
                [".secboot", ".ms.", "snakeoil"].iter().any(|variant| text.contains(variant));
            assert_eq!(secure_boot_variant, candidate.enrolled_keys, "{text}");
            if candidate.enrolled_keys {
                assert!(candidate.tdx_build && candidate.vars.is_none(), "{text}");
            }
        }
    }

    #[test]
    fn tdx_builds_with_enrolled_keys_are_never_chosen_for_tcg() {
        let fx = Fixture::new();
        fx.image("usr/share/ovmf/OVMF.inteltdx.ms.fd");
        fx.image("usr/share/edk2/ovmf/OVMF.inteltdx.secboot.fd");
        let error = find(&fx.options()).unwrap_err();
        assert!(matches!(error, FindError::NoneSuitable { purpose: Purpose::Tcg, .. }), "{error}");
        let message = error.to_string();
        assert!(message.contains("OVMF.inteltdx.ms.fd: Secure Boot keys enrolled"), "{message}");
        assert!(!message.contains('\n'));
    }

    #[test]
    fn size_sanity_bounds() {
        assert!(is_plausible_firmware_size(1 << 20));
        assert!(is_plausible_firmware_size(2 << 20));
        assert!(is_plausible_firmware_size(3_653_632)); // Debian's OVMF_CODE_4M.fd
        assert!(is_plausible_firmware_size(64 << 20));
        assert!(!is_plausible_firmware_size(0));
        assert!(!is_plausible_firmware_size((1 << 20) - 4096));
        assert!(!is_plausible_firmware_size((2 << 20) + 1));
        assert!(!is_plausible_firmware_size((64 << 20) + 4096));
    }

    #[test]
    fn implausible_size_is_a_one_line_error_naming_the_path() {
        let fx = Fixture::new();
        for size in [0, 4096, IMAGE_SIZE + 512, 128 << 20] {
            let path = fx.file("custom/OVMF.fd", size);
            let opts = FindOptions { explicit: Some(path.clone()), ..fx.options() };
            let error = find(&opts).unwrap_err();
            assert!(
                matches!(error, FindError::ImplausibleSize { size: s, .. } if s == size),
                "{error}"
            );
            let message = error.to_string();
            assert!(message.contains(&path.display().to_string()), "{message}");
            assert!(message.contains(&size.to_string()), "{message}");
            assert!(!message.contains('\n'));
        }
    }

    #[test]
    fn broken_distro_image_is_reported_not_skipped() {
        let fx = Fixture::new();
        let truncated = fx.file("usr/share/ovmf/OVMF.fd", 12345);
        fx.image("usr/share/edk2/x64/OVMF.fd");
        let error = find(&fx.options()).unwrap_err();
        assert!(
            matches!(&error, FindError::ImplausibleSize { path, origin: Source::Distro(Distro::Debian), .. } if *path == truncated),
            "{error}"
        );
    }

    #[test]
    fn implausible_vars_template_is_an_error() {
        let fx = Fixture::new();
        fx.image("usr/share/OVMF/OVMF_CODE.fd");
        let template = fx.file("usr/share/OVMF/OVMF_VARS.fd", 100);
        let error = find(&fx.options()).unwrap_err();
        assert!(
            matches!(&error, FindError::ImplausibleVarsSize { path, size: 100 } if *path == template)
        );
    }
}
