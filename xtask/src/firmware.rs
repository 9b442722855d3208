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
