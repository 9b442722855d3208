//! How well an installed firmware fits a [`Purpose`]: a rank (lower is better) for a QEMU
//! firmware descriptor or a known distribution path, or the reason it does not fit; and whether
//! it enforces Secure Boot.

use super::{Candidate, Purpose, SecureBoot};
use crate::descriptor::Found;
use std::path::Path;

/// Ranks a descriptor for `purpose` (lower is better), or says why it does not fit. Public for
/// the fuzz targets, which rank descriptors the fuzzer writes.
pub fn rank_descriptor(found: &Found, purpose: Purpose) -> Result<(u8, SecureBoot), String> {
    use crate::descriptor::{feature, FlashMode, Mapping};
    let descriptor = &found.descriptor;
    if !descriptor.is_uefi_for_x86_64_q35() {
        return Err("not UEFI firmware for x86_64 q35".into());
    }
    let executable = descriptor.executable();
    if !executable.is_file() {
        return Err(format!("{} is not installed", executable.display()));
    }
    let secure_boot = if descriptor.has_feature(feature::ENROLLED_KEYS) {
        SecureBoot::Enforced(format!(
            "its QEMU firmware descriptor {} lists enrolled-keys",
            found.name()
        ))
    } else {
        SecureBoot::NotEnforced
    };
    let enrolled = secure_boot != SecureBoot::NotEnforced;
    let smm = descriptor.has_feature(feature::REQUIRES_SMM);
    let tdx = descriptor.has_feature(feature::INTEL_TDX);
    match purpose {
        Purpose::Tcg => {
            match &descriptor.mapping {
                Mapping::Flash { mode: FlashMode::Split, nvram_template, .. } => {
                    match nvram_template {
                        None => return Err("split flash mapping without an NVRAM template".into()),
                        Some(t) if !t.filename.is_file() => {
                            return Err(format!("{} is not installed", t.filename.display()))
                        }
                        Some(_) => {}
                    }
                }
                Mapping::Flash { .. } | Mapping::Memory { .. } => {}
                Mapping::Kernel { .. } | Mapping::Igvm { .. } => {
                    return Err("loaded as a kernel or IGVM file, not as UEFI flash or -bios".into())
                }
            }
            if enrolled {
                return Err("enrolled-keys: Secure Boot would refuse our unsigned loader".into());
            }
            if smm {
                // firmware.json: such a build needs `-machine smm=on` and, with Secure Boot,
                // `-global driver=cfi.pflash01,property=secure,value=on`; our command lines set
                // neither, and the TD-shaped machine of the softtdx runs has `smm=off`.
                return Err("requires-smm: our q35 command lines do not set up SMM".into());
            }
            let single_image = matches!(
                descriptor.mapping,
                Mapping::Memory { .. }
                    | Mapping::Flash { mode: FlashMode::Combined | FlashMode::Stateless, .. }
            );
            let td_capable = single_image && carries_tdvf_metadata(executable);
            Ok((tcg_rank(tdx, td_capable), secure_boot))
        }
        Purpose::Td => {
            if smm {
                return Err("requires-smm: a TD has no SMM".into());
            }
            match &descriptor.mapping {
                Mapping::Memory { .. }
                | Mapping::Flash { mode: FlashMode::Combined | FlashMode::Stateless, .. } => {}
                _ => return Err("not one image that -bios can load (a TD has no pflash)".into()),
            }
            let rank = if tdx {
                0
            } else if carries_tdvf_metadata(executable) {
                1
            } else {
                return Err("no intel-tdx feature and no TDVF metadata in the image".into());
            };
            Ok((if enrolled { 3 } else { rank }, secure_boot))
        }
    }
}

/// Ranks an installed distribution path for `purpose`, or says why it does not fit.
pub(super) fn rank_known(
    candidate: &Candidate,
    purpose: Purpose,
) -> Result<(u8, SecureBoot), String> {
    let secure_boot = known_secure_boot(candidate);
    let enrolled = secure_boot != SecureBoot::NotEnforced;
    match purpose {
        Purpose::Tcg => {
            if enrolled {
                return Err("Secure Boot keys enrolled: it would refuse our unsigned loader".into());
            }
            let td_capable = candidate.vars.is_none() && carries_tdvf_metadata(&candidate.code);
            Ok((tcg_rank(candidate.tdx_build, td_capable), secure_boot))
        }
        Purpose::Td => {
            if candidate.vars.is_some() {
                return Err("a split CODE/VARS image (a TD loads one image with -bios)".into());
            }
            if !carries_tdvf_metadata(&candidate.code) {
                return Err("no TDVF metadata".into());
            }
            let rank = if candidate.tdx_build { 0 } else { 1 };
            Ok((if enrolled { 3 } else { rank }, secure_boot))
        }
    }
}

/// The TCG rank (lower is better) of a build that fits a q35 guest. First the firmware a TD
/// boots too: one image with TDVF metadata (Debian's and Ubuntu's `OVMF.fd`), so that the TCG
/// runs, on the `td` machine above all, start from the same firmware as `--tdx`; it also boots
/// about a second faster under TCG than a split CODE/VARS pair (measured: 2.8 s against 3.9 s
/// to the kernel's verdict). Then other builds. Last the dedicated TDX builds, which are made
/// for a TD, not for an ordinary guest.
fn tcg_rank(tdx_build: bool, td_capable: bool) -> u8 {
    match (tdx_build, td_capable) {
        (true, _) => 2,
        (false, true) => 0,
        (false, false) => 1,
    }
}

/// A known path's Secure Boot status: the table's, confirmed or overridden by a Platform Key
/// found in its variable store (VARS template, or the combined image itself).
pub(super) fn known_secure_boot(candidate: &Candidate) -> SecureBoot {
    let store = candidate.vars.as_deref().unwrap_or(&candidate.code);
    match store_has_platform_key(store) {
        Some(evidence) => SecureBoot::Enforced(evidence),
        None if candidate.enrolled_keys => SecureBoot::Enforced(format!(
            "the {} package enrols Secure Boot keys in {}",
            candidate.distro,
            candidate.code.display()
        )),
        None => SecureBoot::NotEnforced,
    }
}

/// "a Platform Key is enrolled in FILE" when the variable store in `store` has one.
pub(super) fn store_has_platform_key(store: &Path) -> Option<String> {
    let bytes = crate::read_firmware(store).ok()?;
    crate::varstore::platform_key_enrolled(&bytes)
        .then(|| format!("a Secure Boot Platform Key is enrolled in {}", store.display()))
}

/// Whether `image` carries TDVF metadata that QEMU can load into a TD.
pub(super) fn carries_tdvf_metadata(image: &Path) -> bool {
    crate::read_firmware(image)
        .ok()
        .and_then(|bytes| crate::tdvf::parse(&bytes).ok().map(|m| m.check_qemu_loadable().is_ok()))
        .unwrap_or(false)
}
