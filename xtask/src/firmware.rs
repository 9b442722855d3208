//! Which firmware a boot uses, and what xtask says about it before booting.
//!
//! The search itself is [`ovmf::find`]: `--firmware`, then `OVMF_PATH`, then QEMU's firmware
//! descriptors and the distribution paths, best fit for the purpose. This module gives it this
//! host's directories and turns its answer into the lines printed before a boot: which firmware
//! and why, skipped malformed descriptors, and a Secure Boot warning when the firmware will refuse
//! our unsigned loader.

use crate::build;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// QEMU's descriptor directories on this host (`$XDG_CONFIG_HOME` or `$HOME/.config`, `/etc`,
/// `/usr/share`).
pub fn descriptor_dirs() -> Vec<PathBuf> {
    ovmf::descriptor::search_dirs(
        std::env::var_os("XDG_CONFIG_HOME").as_deref().map(Path::new),
        std::env::var_os("HOME").as_deref().map(Path::new),
        Path::new("/"),
    )
}

/// The search options for this host; a split image's VARS template is copied to `scratch`.
pub fn options(
    explicit: Option<PathBuf>,
    purpose: ovmf::Purpose,
    scratch: PathBuf,
) -> ovmf::FindOptions {
    ovmf::FindOptions {
        explicit,
        env: std::env::var_os("OVMF_PATH").map(PathBuf::from),
        root: PathBuf::from("/"),
        scratch_dir: scratch,
        descriptor_dirs: descriptor_dirs(),
        purpose,
    }
}

/// Finds the firmware for `purpose` (`--firmware` wins, then `OVMF_PATH`).
pub fn find(explicit: Option<PathBuf>, purpose: ovmf::Purpose) -> Result<ovmf::Firmware> {
    let scratch = build::project_root().join("target/xtask-firmware");
    std::fs::create_dir_all(&scratch)
        .with_context(|| format!("cannot create {}", scratch.display()))?;
    Ok(ovmf::find(&options(explicit, purpose, scratch))?)
}

/// The firmware this host offers for `purpose` when neither `--firmware` nor `OVMF_PATH` is
/// given, if any (for the advice after a Secure Boot refusal).
pub fn alternative(purpose: ovmf::Purpose) -> Option<PathBuf> {
    let scratch = std::env::temp_dir().join(format!("xtask-alternative-{}", std::process::id()));
    let options = ovmf::FindOptions { env: None, ..options(None, purpose, scratch.clone()) };
    let found = ovmf::find(&options).ok().map(|firmware| firmware.code);
    let _ = std::fs::remove_dir_all(&scratch);
    found
}

/// The lines to show before booting: `firmware: ...` with the reason, then one `warning: ...`
/// per skipped descriptor and for a firmware that enforces Secure Boot.
pub fn announce(firmware: &ovmf::Firmware) -> Vec<String> {
    let mut lines = Vec::new();
    let files = match &firmware.vars {
        Some(vars) => format!("{} with VARS {}", firmware.code.display(), vars.display()),
        None => firmware.code.display().to_string(),
    };
    let mut line = format!("firmware: {files}: {}", firmware.reason);
    if let (ovmf::Source::Explicit | ovmf::Source::Env, Some(found)) =
        (firmware.source, &firmware.descriptor)
    {
        line.push_str(&format!("; described by {found}"));
    }
    lines.push(line);
    for warning in &firmware.warnings {
        lines.push(format!("warning: {warning}"));
    }
    if let ovmf::SecureBoot::Enforced(why) = &firmware.secure_boot {
        lines.push(format!(
            "warning: {} enforces Secure Boot ({why}): it will refuse our unsigned loader; use a \
             firmware without enrolled keys (drop --firmware/OVMF_PATH to let xtask choose one)",
            firmware.code.display()
        ));
    }
    lines
}

/// What `cargo xtask firmware FILE` says before the TDVF table: the QEMU firmware descriptor
/// that names the file (description, features, mapping), and whether it enforces Secure Boot.
pub fn describe_file(path: &Path, loaded: &ovmf::descriptor::Loaded) -> String {
    use ovmf::descriptor::{FlashMode, Mapping};
    let described = ovmf::describe(path, &loaded.descriptors);
    let mut text = String::new();
    match &described.descriptor {
        Some(found) => {
            let d = &found.descriptor;
            text.push_str(&format!(
                "QEMU firmware descriptor: {}
",
                found.path.display()
            ));
            text.push_str(&format!(
                "  description: {}
",
                d.description
            ));
            text.push_str(&format!(
                "  features: {}
",
                d.features.join(", ")
            ));
            let mapping = match &d.mapping {
                Mapping::Flash { mode: FlashMode::Split, nvram_template, .. } => format!(
                    "flash (split), NVRAM template {}",
                    nvram_template
                        .as_ref()
                        .map_or("none".to_owned(), |t| t.filename.display().to_string())
                ),
                Mapping::Flash { mode: FlashMode::Combined, .. } => "flash (combined)".into(),
                Mapping::Flash { mode: FlashMode::Stateless, .. } => "flash (stateless)".into(),
                Mapping::Memory { .. } => "memory (-bios)".into(),
                Mapping::Kernel { .. } => "kernel (-kernel)".into(),
                Mapping::Igvm { .. } => "igvm".into(),
            };
            text.push_str(&format!(
                "  mapping: {mapping}
"
            ));
        }
        None => text.push_str(
            "QEMU firmware descriptor: none names this file
",
        ),
    }
    if let Some(template) = &described.vars_template {
        text.push_str(&format!(
            "VARS template: {}
",
            template.display()
        ));
    }
    match &described.secure_boot {
        ovmf::SecureBoot::Enforced(why) => text.push_str(&format!(
            "Secure Boot: ENFORCED ({why}): refuses unsigned loaders, ours included\n"
        )),
        ovmf::SecureBoot::NotEnforced => text.push_str(
            "Secure Boot: not enforced (no descriptor lists enrolled-keys, no Platform Key in its \
             variable store)\n",
        ),
    }
    for warning in &loaded.warnings {
        text.push_str(&format!("note: {warning}\n"));
    }
    text
}

/// Prints [`announce`] on stderr (stdout may carry a command's output, e.g. libvirt XML).
pub fn print_announcement(firmware: &ovmf::Firmware) {
    for line in announce(firmware) {
        eprintln!("{line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describe_file_shows_the_descriptor_and_secure_boot() {
        let dir = std::env::temp_dir().join(format!("xtask-describe-{}", std::process::id()));
        let firmware_dir = dir.join("qemu/firmware");
        std::fs::create_dir_all(&firmware_dir).unwrap();
        let image = dir.join("OVMF.inteltdx.ms.fd");
        std::fs::write(&image, vec![0u8; 4096]).unwrap();
        let descriptor = format!(
            r#"{{"description": "TDX with MS keys", "interface-types": ["uefi"],
                "mapping": {{"device": "memory", "filename": "{}"}},
                "targets": [{{"architecture": "x86_64", "machines": ["pc-q35-*"]}}],
                "features": ["enrolled-keys", "intel-tdx", "secure-boot"]}}"#,
            image.display()
        );
        std::fs::write(firmware_dir.join("60-tdx.json"), descriptor).unwrap();
        std::fs::write(firmware_dir.join("70-broken.json"), "{").unwrap();
        let loaded = ovmf::descriptor::load(std::slice::from_ref(&firmware_dir));
        let text = describe_file(&image, &loaded);
        assert!(text.contains("60-tdx.json\n  description: TDX with MS keys\n"), "{text}");
        assert!(text.contains("  features: enrolled-keys, intel-tdx, secure-boot\n"), "{text}");
        assert!(text.contains("  mapping: memory (-bios)\n"), "{text}");
        assert!(text.contains("Secure Boot: ENFORCED (its QEMU firmware descriptor 60-tdx.json"));
        assert!(text.contains("note: skipping malformed QEMU firmware descriptor"), "{text}");
        let other = dir.join("other.fd");
        std::fs::write(&other, vec![0u8; 4096]).unwrap();
        let text = describe_file(&other, &loaded);
        assert!(text.starts_with("QEMU firmware descriptor: none names this file\n"), "{text}");
        assert!(text.contains("Secure Boot: not enforced"), "{text}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_enforcing_firmware_gets_a_secure_boot_warning_and_others_do_not() {
        let mut firmware =
            ovmf::Firmware::new("/fw/OVMF_CODE_4M.ms.fd".into(), None, ovmf::Source::Explicit);
        firmware.reason = "given with --firmware".into();
        let lines = announce(&firmware);
        assert_eq!(lines, ["firmware: /fw/OVMF_CODE_4M.ms.fd: given with --firmware"]);
        firmware.secure_boot =
            ovmf::SecureBoot::Enforced("a Secure Boot Platform Key is enrolled in /fw/V".into());
        firmware.warnings = vec!["skipping malformed QEMU firmware descriptor /x.json: EOF".into()];
        let lines = announce(&firmware);
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[1], "warning: skipping malformed QEMU firmware descriptor /x.json: EOF");
        assert!(lines[2].starts_with("warning: /fw/OVMF_CODE_4M.ms.fd enforces Secure Boot"));
        assert!(lines[2].contains("refuse our unsigned loader"), "{}", lines[2]);
        assert!(lines.iter().all(|l| !l.contains('\n')));
    }
}
