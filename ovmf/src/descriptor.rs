//! QEMU firmware descriptors: the JSON files in which distributions describe each firmware build
//! they install, as libvirt reads them to pick firmware.
//!
//! The format is QEMU's `docs/interop/firmware.json` (the `Firmware` struct): a description,
//! interface types (`uefi`, `bios`, ...), a mapping (how QEMU loads the file: `flash` with an
//! executable and, for a split build, an NVRAM template; `memory` for `-bios`; `kernel`;
//! `igvm`), targets (architecture and machine-type globs) and features (`secure-boot`,
//! `enrolled-keys`, `requires-smm`, `intel-tdx`, `amd-sev`, ...). Unknown members and features
//! are kept or ignored, never an error, so newer descriptors still load.
//!
//! Where they are, in QEMU's order (the same `firmware.json`, "Firmware"): per-user
//! `$XDG_CONFIG_HOME/qemu/firmware` (default `$HOME/.config/qemu/firmware`), then the
//! administrator's `/etc/qemu/firmware`, then the distribution's `/usr/share/qemu/firmware`. All
//! files are listed together and sorted by file name; a file in an earlier (more specific)
//! directory hides one of the same name in a later directory, and an empty file hides without
//! describing anything.
//!
//! A descriptor that cannot be read or parsed is skipped with a one-line warning naming it, as
//! a broken file someone else installed should not stop a run that other firmware can serve;
//! the file that a name resolves to is still the malformed one, so it does hide a same-named
//! file in a later directory.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// Feature names from `firmware.json`'s `FirmwareFeature` that the selection looks at.
pub mod feature {
    /// The firmware supports running in an Intel TDX trust domain.
    pub const INTEL_TDX: &str = "intel-tdx";
    /// The NVRAM template (or combined image) has Secure Boot on with certificates enrolled: an
    /// unsigned loader is refused.
    pub const ENROLLED_KEYS: &str = "enrolled-keys";
    /// The firmware implements Secure Boot (not necessarily enforcing it).
    pub const SECURE_BOOT: &str = "secure-boot";
    /// The firmware needs SMM emulation (`-machine smm=on`), which a TD does not have.
    pub const REQUIRES_SMM: &str = "requires-smm";
}

/// One descriptor file, parsed by the schema.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Descriptor {
    pub description: String,
    pub interface_types: Vec<String>,
    pub mapping: Mapping,
    pub targets: Vec<Target>,
    pub features: Vec<String>,
    #[serde(default)]
    pub tags: Vec<String>,
}

/// `FirmwareMapping`, discriminated by `device`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "device", rename_all = "kebab-case")]
pub enum Mapping {
    /// pflash: `executable` read-only, plus a private copy of `nvram-template` when `mode` is
    /// `split` (the default when `mode` is absent).
    Flash {
        #[serde(default)]
        mode: FlashMode,
        executable: FlashFile,
        #[serde(rename = "nvram-template", default)]
        nvram_template: Option<FlashFile>,
    },
    /// `-bios FILENAME`: a combined image in memory (how a TD must load TDVF).
    Memory { filename: PathBuf },
    /// `-kernel FILENAME`.
    Kernel { filename: PathBuf },
    /// An IGVM file (`-object igvm-cfg,file=...`), QEMU 10.1 and later.
    Igvm { filename: PathBuf },
}

/// `FirmwareFlashMode` (QEMU 7.0): how code and variables are laid out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FlashMode {
    /// Code in `executable`, variables in a copy of `nvram-template`.
    #[default]
    Split,
    /// One image with code and variables, cloned per guest.
    Combined,
    /// One image with code; variables are not kept.
    Stateless,
}

/// `FirmwareFlashFile`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct FlashFile {
    pub filename: PathBuf,
    pub format: String,
}

/// `FirmwareTarget`: an emulator and the machine types (globs) the firmware runs on.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Target {
    pub architecture: String,
    pub machines: Vec<String>,
}

impl Descriptor {
    pub fn has_feature(&self, name: &str) -> bool {
        self.features.iter().any(|f| f == name)
    }

    /// The firmware image itself: the flash executable, or the file for `-bios`.
    pub fn executable(&self) -> &Path {
        match &self.mapping {
            Mapping::Flash { executable, .. } => &executable.filename,
            Mapping::Memory { filename }
            | Mapping::Kernel { filename }
            | Mapping::Igvm { filename } => filename,
        }
    }

    /// The NVRAM template of a split flash build.
    pub fn nvram_template(&self) -> Option<&Path> {
        match &self.mapping {
            Mapping::Flash { mode: FlashMode::Split, nvram_template: Some(t), .. } => {
                Some(&t.filename)
            }
            _ => None,
        }
    }

    /// True for a UEFI build for x86_64 that runs on the q35 machine types.
    pub fn is_uefi_for_x86_64_q35(&self) -> bool {
        self.interface_types.iter().any(|t| t == "uefi")
            && self.targets.iter().any(|target| {
                target.architecture == "x86_64"
                    && target.machines.iter().any(|m| glob_matches(m, Q35_MACHINE))
            })
    }
}

/// A concrete q35 machine type to match `machines` globs against (`-machine q35` is an alias
/// for the newest `pc-q35-X.Y`; the globs distributions ship are `pc-q35-*`).
const Q35_MACHINE: &str = "pc-q35-10.1";

/// Shell-style glob with `*` and `?`, as `firmware.json` says the machine lists use.
pub fn glob_matches(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    // Classic backtracking over the last `*`.
    let (mut pi, mut ni, mut star, mut mark) = (0, 0, None, 0);
    while ni < n.len() {
        // A `*` is a wildcard even where the name has a literal `*` (the fuzz target
        // firmware_descriptor found `*` failing to match `*x`).
        if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// A descriptor and the file it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub path: PathBuf,
    pub descriptor: Descriptor,
}

impl Found {
    /// The file name, which is what orders and shadows descriptors.
    pub fn name(&self) -> String {
        self.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
    }
}

impl fmt::Display for Found {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (\"{}\"", self.path.display(), self.descriptor.description)?;
        if !self.descriptor.features.is_empty() {
            write!(f, "; features: {}", self.descriptor.features.join(", "))?;
        }
        f.write_str(")")
    }
}

/// What [`load`] found: the descriptors in QEMU's order, and a warning per file it skipped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Loaded {
    pub descriptors: Vec<Found>,
    pub warnings: Vec<String>,
}

/// QEMU's search directories, most specific first: `$XDG_CONFIG_HOME/qemu/firmware` (or
/// `$HOME/.config/qemu/firmware`), `/etc/qemu/firmware`, `/usr/share/qemu/firmware`, the last two
/// under `root`.
pub fn search_dirs(
    xdg_config_home: Option<&Path>,
    home: Option<&Path>,
    root: &Path,
) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    // XDG: an empty or relative XDG_CONFIG_HOME is invalid and ignored.
    match (xdg_config_home.filter(|p| p.is_absolute()), home) {
        (Some(config), _) => dirs.push(config.join("qemu/firmware")),
        (None, Some(home)) => dirs.push(home.join(".config/qemu/firmware")),
        (None, None) => {}
    }
    dirs.push(root.join("etc/qemu/firmware"));
    dirs.push(root.join("usr/share/qemu/firmware"));
    dirs
}

/// The descriptors in `dirs` (most specific first), shadowed and sorted as QEMU specifies.
/// Missing directories are normal; unreadable or malformed files become warnings.
pub fn load(dirs: &[PathBuf]) -> Loaded {
    // File name -> the path that name resolves to (the first directory that has it).
    let mut by_name: BTreeMap<String, PathBuf> = BTreeMap::new();
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(dir) else { continue };
        let mut names: Vec<(String, PathBuf)> = entries
            .filter_map(Result::ok)
            .map(|entry| (entry.file_name().to_string_lossy().into_owned(), entry.path()))
            .filter(|(name, _)| name.ends_with(".json"))
            .collect();
        names.sort();
        for (name, path) in names {
            by_name.entry(name).or_insert(path);
        }
    }
    let mut loaded = Loaded::default();
    for path in by_name.into_values() {
        match std::fs::read(&path) {
            // An empty file hides the same name in later directories and describes nothing.
            Ok(bytes) if bytes.is_empty() => {}
            Ok(bytes) => match parse(&bytes) {
                Ok(descriptor) => loaded.descriptors.push(Found { path, descriptor }),
                Err(error) => loaded.warnings.push(format!(
                    "skipping malformed QEMU firmware descriptor {}: {error}",
                    path.display()
                )),
            },
            Err(error) => loaded.warnings.push(format!(
                "skipping unreadable QEMU firmware descriptor {}: {error}",
                path.display()
            )),
        }
    }
    loaded
}

/// Parses one descriptor. The error is one line (serde_json's, with line and column).
pub fn parse(bytes: &[u8]) -> Result<Descriptor, serde_json::Error> {
    serde_json::from_slice(bytes)
}

/// The descriptors that name `image` as their executable: an exact path match, or the same file
/// after resolving symlinks (Debian's `OVMF_CODE_4M.ms.fd` is a link to
/// `OVMF_CODE_4M.secboot.fd`). Exact matches come first.
pub fn naming<'a>(descriptors: &'a [Found], image: &Path) -> Vec<&'a Found> {
    let exact = descriptors.iter().filter(|found| found.descriptor.executable() == image);
    let canonical = std::fs::canonicalize(image).ok();
    let same_file = descriptors.iter().filter(|found| {
        found.descriptor.executable() != image
            && canonical.is_some()
            && std::fs::canonicalize(found.descriptor.executable()).ok() == canonical
    });
    exact.chain(same_file).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_matches("pc-q35-*", "pc-q35-10.1"));
        assert!(glob_matches("pc-q35-10.?", "pc-q35-10.1"));
        assert!(glob_matches("*", "pc-q35-10.1"));
        assert!(!glob_matches("pc-i440fx-*", "pc-q35-10.1"));
        assert!(!glob_matches("pc-q35-9.*", "pc-q35-10.1"));
        assert!(!glob_matches("pc-q35", "pc-q35-10.1"));
        assert!(glob_matches("pc-*-10.1", "pc-q35-10.1"));
        // A `*` in the pattern stays a wildcard where the name has a `*` (firmware_descriptor).
        assert!(glob_matches("*", "*x"));
        assert!(glob_matches("a*", "a*bc"));
        assert!(!glob_matches("*b", "*x"));
    }

    #[test]
    fn search_dirs_follow_xdg_and_qemus_order() {
        let dirs = search_dirs(Some(Path::new("/x")), Some(Path::new("/home/u")), Path::new("/"));
        let dirs: Vec<_> = dirs.iter().map(|d| d.display().to_string()).collect();
        assert_eq!(dirs, ["/x/qemu/firmware", "/etc/qemu/firmware", "/usr/share/qemu/firmware"]);
        let dirs = search_dirs(Some(Path::new("rel")), Some(Path::new("/home/u")), Path::new("/"));
        assert_eq!(dirs[0], Path::new("/home/u/.config/qemu/firmware"));
        assert_eq!(search_dirs(None, None, Path::new("/r")).len(), 2);
    }

    #[test]
    fn flash_mode_defaults_to_split_and_unknown_members_are_ignored() {
        let json = br#"{"description": "d", "interface-types": ["uefi"],
            "mapping": {"device": "flash", "executable": {"filename": "/c.fd", "format": "raw"},
                        "nvram-template": {"filename": "/v.fd", "format": "raw"}},
            "targets": [{"architecture": "x86_64", "machines": ["pc-q35-*"]}],
            "features": ["some-future-feature"], "future-member": 1}"#;
        let descriptor = parse(json).unwrap();
        assert_eq!(descriptor.executable(), Path::new("/c.fd"));
        assert_eq!(descriptor.nvram_template(), Some(Path::new("/v.fd")));
        assert!(descriptor.is_uefi_for_x86_64_q35());
        assert!(descriptor.tags.is_empty());
    }

    #[test]
    fn schema_violations_are_one_line_errors() {
        for json in [
            &b"{"[..],
            br#"{"description": "d"}"#,
            br#"{"description": "d", "interface-types": ["uefi"], "mapping": {"device": "floppy"},
                "targets": [], "features": []}"#,
            br#"{"description": "d", "interface-types": ["uefi"],
                "mapping": {"device": "memory"}, "targets": [], "features": []}"#,
        ] {
            let error = parse(json).unwrap_err().to_string();
            assert!(!error.contains('\n'), "{error}");
        }
    }
}
