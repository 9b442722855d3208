//! The search through QEMU firmware descriptors, on the fixtures in
//! `ovmf/tests/fixtures/descriptors/` (see the README there for where each comes from),
//! installed under a temporary root with the user, system and vendor directories.

use super::fixture::{Fixture, IMAGE_SIZE};
use super::*;
use crate::varstore::tests::enrolled_store;

const VARS_SIZE: usize = 128 << 10;

#[derive(Clone, Copy)]
enum Dir {
    /// `$XDG_CONFIG_HOME/qemu/firmware`
    User,
    /// `/etc/qemu/firmware`
    Etc,
    /// `/usr/share/qemu/firmware`
    Vendor,
}

impl Fixture {
    fn dirs(&self) -> Vec<PathBuf> {
        crate::descriptor::search_dirs(
            Some(&self.path("home/u/.config")),
            Some(&self.path("home/u")),
            self.root.path(),
        )
    }

    fn dir(&self, dir: Dir) -> PathBuf {
        let dirs = self.dirs();
        let path = match dir {
            Dir::User => dirs[0].clone(),
            Dir::Etc => dirs[1].clone(),
            Dir::Vendor => dirs[2].clone(),
        };
        fs::create_dir_all(&path).unwrap();
        path
    }

    /// Writes a descriptor; every `"/usr/` path in it is moved under the fixture root.
    fn descriptor(&self, dir: Dir, name: &str, text: &str) -> PathBuf {
        let root = self.root.path().display().to_string();
        let path = self.dir(dir).join(name);
        fs::write(&path, text.replace("\"/usr/", &format!("\"{root}/usr/"))).unwrap();
        path
    }

    /// Installs a fixture (`debian-bookworm/60-edk2-x86_64.json`) under its own name.
    fn install(&self, dir: Dir, fixture: &str) -> PathBuf {
        let source = std::env::var_os("CARGO_MANIFEST_DIR")
            .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
            .join("tests/fixtures/descriptors")
            .join(fixture);
        let text = fs::read_to_string(&source).unwrap();
        let name = source.file_name().unwrap().to_str().unwrap();
        self.descriptor(dir, name, &text)
    }

    /// A combined image with TDVF metadata.
    fn tdvf(&self, relative: &str) -> PathBuf {
        let image = crate::tdvf::tests::tdvf_image(IMAGE_SIZE as usize);
        self.file_with(relative, Some(&image), IMAGE_SIZE)
    }

    fn vars(&self, relative: &str, enrolled: bool) -> PathBuf {
        let bytes = if enrolled { enrolled_store() } else { vec![0xff; 4096] };
        self.file_with(relative, Some(&bytes), VARS_SIZE as u64)
    }

    /// Debian bookworm's `ovmf` package: its three descriptors and their files, and the
    /// combined `OVMF.fd` (with TDVF metadata, as the real one has).
    fn bookworm(&self) {
        for name in [
            "40-edk2-x86_64-secure-enrolled.json",
            "50-edk2-x86_64-secure.json",
            "60-edk2-x86_64.json",
        ] {
            self.install(Dir::Vendor, &format!("debian-bookworm/{name}"));
        }
        self.image("usr/share/OVMF/OVMF_CODE_4M.fd");
        self.image("usr/share/OVMF/OVMF_CODE_4M.secboot.fd");
        #[cfg(unix)]
        std::os::unix::fs::symlink(
            "OVMF_CODE_4M.secboot.fd",
            self.path("usr/share/OVMF/OVMF_CODE_4M.ms.fd"),
        )
        .unwrap();
        self.vars("usr/share/OVMF/OVMF_VARS_4M.fd", false);
        self.vars("usr/share/OVMF/OVMF_VARS_4M.ms.fd", true);
        self.tdvf("usr/share/ovmf/OVMF.fd");
    }

    /// Bookworm without its combined `OVMF.fd`: the descriptors are all that is left for TCG.
    fn bookworm_without_the_combined_image(&self) {
        self.bookworm();
        fs::remove_file(self.path("usr/share/ovmf/OVMF.fd")).unwrap();
    }

    /// The search for `purpose` through the fixture's descriptor directories.
    fn options_for(&self, purpose: Purpose) -> FindOptions {
        FindOptions { descriptor_dirs: self.dirs(), purpose, ..self.options() }
    }
}

/// A hand-made descriptor of a combined image for `-bios`.
fn memory_descriptor(file: &str, features: &[&str]) -> String {
    let features: Vec<String> = features.iter().map(|f| format!("\"{f}\"")).collect();
    format!(
        r#"{{"description": "custom {file}", "interface-types": ["uefi"],
            "mapping": {{"device": "memory", "filename": "{file}"}},
            "targets": [{{"architecture": "x86_64", "machines": ["pc-q35-*"]}}],
            "features": [{}], "tags": []}}"#,
        features.join(", ")
    )
}

#[test]
fn bookworm_tcg_takes_the_combined_image_a_td_boots_too_and_says_why() {
    let fx = Fixture::new();
    fx.bookworm();
    let opts = fx.options_for(Purpose::Tcg);
    let firmware = find(&opts).unwrap();
    // One image with TDVF metadata, as `--tdx` boots it, ahead of the split CODE/VARS pair of
    // 60-edk2-x86_64.json.
    assert_eq!(firmware.code, fx.path("usr/share/ovmf/OVMF.fd"));
    assert_eq!(firmware.vars, None);
    assert_eq!(firmware.secure_boot, SecureBoot::NotEnforced);
    let reason = &firmware.reason;
    assert!(reason.contains("usr/share/ovmf/OVMF.fd"), "{reason}");
    assert!(reason.contains("40-edk2-x86_64-secure-enrolled.json: enrolled-keys"), "{reason}");
    assert!(reason.contains("50-edk2-x86_64-secure.json: requires-smm"), "{reason}");
    assert!(!reason.contains('\n'));
}

#[test]
fn bookworm_tcg_without_ovmf_fd_takes_the_descriptor_without_keys_or_smm_and_says_why() {
    let fx = Fixture::new();
    fx.bookworm_without_the_combined_image();
    let opts = fx.options_for(Purpose::Tcg);
    let firmware = find(&opts).unwrap();
    assert_eq!(firmware.code, fx.path("usr/share/OVMF/OVMF_CODE_4M.fd"));
    assert_eq!(firmware.vars, Some(opts.scratch_dir.join("OVMF_VARS_4M.fd")));
    assert_eq!(firmware.source, Source::Descriptor);
    assert_eq!(firmware.secure_boot, SecureBoot::NotEnforced);
    let chosen = firmware.descriptor.as_ref().unwrap();
    assert_eq!(chosen.name(), "60-edk2-x86_64.json");
    let reason = &firmware.reason;
    assert!(reason.contains("60-edk2-x86_64.json"), "{reason}");
    assert!(reason.contains("without Secure Boot without SMM"), "{reason}");
    assert!(
        reason.contains("40-edk2-x86_64-secure-enrolled.json: enrolled-keys"),
        "the reason must say why the enrolled build was passed over: {reason}"
    );
    assert!(reason.contains("50-edk2-x86_64-secure.json: requires-smm"), "{reason}");
    assert!(!reason.contains('\n'));
    assert!(firmware.warnings.is_empty());
}

#[test]
fn bookworm_td_takes_the_combined_image_with_tdvf_metadata() {
    let fx = Fixture::new();
    fx.bookworm();
    let firmware = find(&fx.options_for(Purpose::Td)).unwrap();
    assert_eq!(firmware.code, fx.path("usr/share/ovmf/OVMF.fd"));
    assert_eq!(firmware.vars, None);
    assert_eq!(firmware.source, Source::Distro(Distro::Debian));
    assert_eq!(firmware.secure_boot, SecureBoot::NotEnforced);
    let reason = &firmware.reason;
    assert!(reason.contains("50-edk2-x86_64-secure.json: requires-smm"), "{reason}");
    assert!(reason.contains("60-edk2-x86_64.json: not one image"), "{reason}");
}

#[test]
fn debian_2026_td_prefers_ovmf_fd_over_the_tdx_build_with_enrolled_keys() {
    let fx = Fixture::new();
    fx.install(Dir::Vendor, "debian-2026/60-edk2-x86_64.json");
    fx.install(Dir::Vendor, "debian-2026/60-edk2-x86_64-inteltdx.json");
    fx.image("usr/share/OVMF/OVMF_CODE_4M.fd");
    fx.vars("usr/share/OVMF/OVMF_VARS_4M.fd", false);
    let tdx_ms = fx.tdvf("usr/share/ovmf/OVMF.inteltdx.ms.fd");
    let generic = fx.tdvf("usr/share/ovmf/OVMF.fd");

    let firmware = find(&fx.options_for(Purpose::Td)).unwrap();
    assert_eq!(firmware.code, generic);
    assert_eq!(firmware.secure_boot, SecureBoot::NotEnforced);

    // Without ovmf-generic the TDX build is all there is: chosen, and flagged.
    fs::remove_file(&generic).unwrap();
    let firmware = find(&fx.options_for(Purpose::Td)).unwrap();
    assert_eq!(firmware.code, tdx_ms);
    assert_eq!(firmware.source, Source::Descriptor);
    match &firmware.secure_boot {
        SecureBoot::Enforced(why) => {
            assert!(why.contains("60-edk2-x86_64-inteltdx.json lists enrolled-keys"), "{why}")
        }
        other => panic!("expected Enforced, got {other:?}"),
    }

    // For TCG the enrolled TDX build is never a choice.
    let firmware = find(&fx.options_for(Purpose::Tcg)).unwrap();
    assert_eq!(firmware.code, fx.path("usr/share/OVMF/OVMF_CODE_4M.fd"));
    assert!(firmware.reason.contains("60-edk2-x86_64-inteltdx.json: enrolled-keys"));
}

#[test]
fn fedora_td_takes_the_tdx_build_without_keys_over_the_secboot_descriptor() {
    let fx = Fixture::new();
    fx.install(Dir::Vendor, "fedora/60-edk2-ovmf-x64-inteltdx.json");
    fx.tdvf("usr/share/edk2/ovmf/OVMF.inteltdx.secboot.fd");
    let plain = fx.tdvf("usr/share/edk2/ovmf/OVMF.inteltdx.fd");
    let firmware = find(&fx.options_for(Purpose::Td)).unwrap();
    assert_eq!(firmware.code, plain);
    assert_eq!(firmware.source, Source::Distro(Distro::Fedora));
    assert_eq!(firmware.secure_boot, SecureBoot::NotEnforced);

    fs::remove_file(&plain).unwrap();
    let firmware = find(&fx.options_for(Purpose::Td)).unwrap();
    assert!(firmware.code.ends_with("OVMF.inteltdx.secboot.fd"));
    assert!(matches!(firmware.secure_boot, SecureBoot::Enforced(_)));
}

#[test]
fn a_tdx_descriptor_without_keys_beats_a_combined_image_and_needs_no_metadata_check() {
    let fx = Fixture::new();
    fx.bookworm();
    let custom = fx.image("opt/tdvf/TDVF.fd");
    fx.descriptor(
        Dir::Etc,
        "70-tdvf.json",
        &memory_descriptor(custom.to_str().unwrap(), &["intel-tdx"]),
    );
    let firmware = find(&fx.options_for(Purpose::Td)).unwrap();
    assert_eq!(firmware.code, custom);
    assert!(firmware.reason.contains("70-tdvf.json"), "{}", firmware.reason);
}

#[test]
fn a_user_descriptor_shadows_the_vendor_file_of_the_same_name() {
    let fx = Fixture::new();
    fx.bookworm_without_the_combined_image();
    let mine = fx.image("home/u/fw/MY_CODE.fd");
    fx.vars("home/u/fw/MY_VARS.fd", false);
    let text = fs::read_to_string(fx.dir(Dir::Vendor).join("60-edk2-x86_64.json"))
        .unwrap()
        .replace(
            fx.path("usr/share/OVMF/OVMF_CODE_4M.fd").to_str().unwrap(),
            mine.to_str().unwrap(),
        )
        .replace(
            fx.path("usr/share/OVMF/OVMF_VARS_4M.fd").to_str().unwrap(),
            fx.path("home/u/fw/MY_VARS.fd").to_str().unwrap(),
        );
    let user = fx.descriptor(Dir::User, "60-edk2-x86_64.json", &text);
    let firmware = find(&fx.options_for(Purpose::Tcg)).unwrap();
    assert_eq!(firmware.code, mine);
    assert_eq!(firmware.descriptor.unwrap().path, user);
}

#[test]
fn an_empty_file_in_etc_hides_the_vendor_descriptor() {
    let fx = Fixture::new();
    fx.bookworm();
    fx.descriptor(Dir::Etc, "60-edk2-x86_64.json", "");
    // With 60 hidden, 40 enrolled and 50 needing SMM, the known paths remain: the generic
    // OVMF.fd comes first in their order.
    let firmware = find(&fx.options_for(Purpose::Tcg)).unwrap();
    assert_eq!(firmware.code, fx.path("usr/share/ovmf/OVMF.fd"));
    assert!(firmware.reason.contains("50-edk2-x86_64-secure.json: requires-smm"));
    assert!(firmware.warnings.is_empty());
}

#[test]
fn files_from_all_directories_are_sorted_by_name() {
    let fx = Fixture::new();
    fx.bookworm();
    // A system-wide addition whose name sorts before the vendor's 60: chosen first. Both
    // carry TDVF metadata, so they rank with the combined OVMF.fd and their order decides.
    let early = fx.tdvf("opt/ovmf/EARLY.fd");
    fx.descriptor(Dir::Etc, "10-early.json", &memory_descriptor(early.to_str().unwrap(), &[]));
    // One that sorts after it: not chosen.
    let late = fx.tdvf("opt/ovmf/LATE.fd");
    fx.descriptor(Dir::User, "99-late.json", &memory_descriptor(late.to_str().unwrap(), &[]));
    assert_eq!(find(&fx.options_for(Purpose::Tcg)).unwrap().code, early);
}

#[test]
fn a_malformed_descriptor_is_skipped_with_a_one_line_warning_naming_it() {
    let fx = Fixture::new();
    fx.bookworm_without_the_combined_image();
    let broken = fx.descriptor(Dir::Etc, "30-broken.json", "{\"description\": \"half a file\",");
    let wrong_type =
        fx.descriptor(Dir::User, "31-wrong.json", r#"{"description": 1, "interface-types": []}"#);
    let firmware = find(&fx.options_for(Purpose::Tcg)).unwrap();
    assert_eq!(firmware.code, fx.path("usr/share/OVMF/OVMF_CODE_4M.fd"));
    assert_eq!(firmware.warnings.len(), 2, "{:?}", firmware.warnings);
    for (warning, file) in firmware.warnings.iter().zip([&broken, &wrong_type]) {
        assert!(warning.contains(file.to_str().unwrap()), "{warning}");
        assert!(warning.starts_with("skipping malformed QEMU firmware descriptor"), "{warning}");
        assert!(!warning.contains('\n'), "{warning}");
    }
}

#[test]
fn a_descriptor_for_another_machine_or_interface_is_passed_over() {
    let fx = Fixture::new();
    let file = fx.image("opt/fw/PC.fd");
    let i440fx = memory_descriptor(file.to_str().unwrap(), &[]).replace("pc-q35-*", "pc-i440fx-*");
    fx.descriptor(Dir::Vendor, "10-i440fx.json", &i440fx);
    let bios = memory_descriptor(file.to_str().unwrap(), &[]).replace("\"uefi\"", "\"bios\"");
    fx.descriptor(Dir::Vendor, "11-bios.json", &bios);
    let error = find(&fx.options_for(Purpose::Tcg)).unwrap_err();
    let message = error.to_string();
    assert!(message.contains("10-i440fx.json: not UEFI firmware for x86_64 q35"), "{message}");
    assert!(message.contains("11-bios.json: not UEFI firmware for x86_64 q35"), "{message}");
    assert!(!message.contains('\n'));
}

#[test]
fn a_descriptor_whose_files_are_not_installed_is_passed_over() {
    let fx = Fixture::new();
    fx.install(Dir::Vendor, "debian-bookworm/60-edk2-x86_64.json");
    let generic = fx.tdvf("usr/share/ovmf/OVMF.fd");
    let firmware = find(&fx.options_for(Purpose::Tcg)).unwrap();
    assert_eq!(firmware.code, generic);
    assert!(firmware.reason.contains("OVMF_CODE_4M.fd is not installed"), "{}", firmware.reason);
}

#[test]
fn only_enrolled_firmware_installed_is_a_one_line_error_for_tcg() {
    let fx = Fixture::new();
    fx.install(Dir::Vendor, "debian-bookworm/40-edk2-x86_64-secure-enrolled.json");
    fx.image("usr/share/OVMF/OVMF_CODE_4M.ms.fd");
    fx.vars("usr/share/OVMF/OVMF_VARS_4M.ms.fd", true);
    let message = find(&fx.options_for(Purpose::Tcg)).unwrap_err().to_string();
    assert!(message.starts_with("no installed UEFI firmware fits a q35 guest"), "{message}");
    assert!(message.contains("40-edk2-x86_64-secure-enrolled.json: enrolled-keys"), "{message}");
    assert!(!message.contains('\n'));
}

#[test]
fn explicit_secboot_code_takes_the_nvram_template_its_descriptor_names() {
    let fx = Fixture::new();
    fx.bookworm();
    let code = fx.path("usr/share/OVMF/OVMF_CODE_4M.secboot.fd");
    let opts = FindOptions { explicit: Some(code.clone()), ..fx.options_for(Purpose::Tcg) };
    let firmware = find(&opts).unwrap();
    // No OVMF_VARS_4M.secboot.fd next to it: the descriptor says OVMF_VARS_4M.fd.
    assert_eq!(firmware.vars, Some(opts.scratch_dir.join("OVMF_VARS_4M.fd")));
    assert_eq!(firmware.descriptor.unwrap().name(), "50-edk2-x86_64-secure.json");
    assert_eq!(firmware.secure_boot, SecureBoot::NotEnforced);
    assert_eq!(firmware.source, Source::Explicit);
}

#[test]
fn explicit_ms_code_is_described_and_flagged_as_enforcing_secure_boot() {
    let fx = Fixture::new();
    fx.bookworm();
    let code = fx.path("usr/share/OVMF/OVMF_CODE_4M.ms.fd");
    let opts = FindOptions { explicit: Some(code.clone()), ..fx.options_for(Purpose::Tcg) };
    let firmware = find(&opts).unwrap();
    assert_eq!(firmware.code, code);
    assert_eq!(firmware.vars, Some(opts.scratch_dir.join("OVMF_VARS_4M.ms.fd")));
    // The exact path match wins over 50-, which names the file the symlink points to.
    assert_eq!(firmware.descriptor.unwrap().name(), "40-edk2-x86_64-secure-enrolled.json");
    match firmware.secure_boot {
        SecureBoot::Enforced(why) => {
            assert!(why.contains("Platform Key is enrolled in"), "{why}");
            assert!(why.contains("OVMF_VARS_4M.ms.fd"), "{why}");
        }
        other => panic!("expected Enforced, got {other:?}"),
    }
}

#[test]
fn explicit_path_wins_even_when_descriptors_offer_better() {
    let fx = Fixture::new();
    fx.bookworm();
    let mine = fx.image("opt/mine/OVMF.fd");
    let opts = FindOptions { explicit: Some(mine.clone()), ..fx.options_for(Purpose::Td) };
    let firmware = find(&opts).unwrap();
    assert_eq!(firmware.code, mine);
    assert!(firmware.descriptor.is_none());
}

/// The descriptors installed on this machine, where there are some: the search must find a
/// firmware for TCG and say which descriptor it took.
#[test]
fn this_hosts_descriptors() {
    let dirs = crate::descriptor::search_dirs(
        std::env::var_os("XDG_CONFIG_HOME").as_deref().map(Path::new),
        std::env::var_os("HOME").as_deref().map(Path::new),
        Path::new("/"),
    );
    let loaded = crate::descriptor::load(&dirs);
    if loaded.descriptors.is_empty() {
        println!("skip: no QEMU firmware descriptors installed");
        return;
    }
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let scratch = tempfile::TempDir::new().unwrap();
    let firmware = find(&FindOptions {
        explicit: None,
        env: None,
        root: PathBuf::from("/"),
        scratch_dir: scratch.path().to_path_buf(),
        descriptor_dirs: dirs,
        purpose: Purpose::Tcg,
    })
    .unwrap();
    assert_eq!(firmware.secure_boot, SecureBoot::NotEnforced, "{}", firmware.reason);
    println!("{}: {}", firmware.code.display(), firmware.reason);
}

#[test]
fn td_capable_lists_each_tdx_firmware_once_with_its_secure_boot_status() {
    let fx = Fixture::new();
    fx.bookworm();
    fx.install(Dir::Vendor, "debian-2026/60-edk2-x86_64-inteltdx.json");
    let tdx_ms = fx.tdvf("usr/share/ovmf/OVMF.inteltdx.ms.fd");
    let (found, warnings) = td_capable(&fx.options_for(Purpose::Td));
    assert!(warnings.is_empty());
    let listed: Vec<(&Path, bool)> = found
        .iter()
        .map(|f| (f.path.as_path(), matches!(f.secure_boot, SecureBoot::Enforced(_))))
        .collect();
    // The TDX build once (its descriptor, not again as a known path), then OVMF.fd; no split
    // image and no SMM build.
    assert_eq!(
        listed,
        [(tdx_ms.as_path(), true), (fx.path("usr/share/ovmf/OVMF.fd").as_path(), false)]
    );
    assert_eq!(found[0].origin, "QEMU firmware descriptor 60-edk2-x86_64-inteltdx.json");
    assert_eq!(found[1].origin, "Debian/Ubuntu package `ovmf`");
}

#[test]
fn describe_names_the_descriptor_template_and_secure_boot() {
    let fx = Fixture::new();
    fx.bookworm();
    let loaded = crate::descriptor::load(&fx.dirs());
    let ms = describe(&fx.path("usr/share/OVMF/OVMF_CODE_4M.ms.fd"), &loaded.descriptors);
    assert_eq!(ms.descriptor.unwrap().name(), "40-edk2-x86_64-secure-enrolled.json");
    assert_eq!(ms.vars_template, Some(fx.path("usr/share/OVMF/OVMF_VARS_4M.ms.fd")));
    assert!(matches!(ms.secure_boot, SecureBoot::Enforced(_)));
    let plain = describe(&fx.path("usr/share/OVMF/OVMF_CODE_4M.fd"), &loaded.descriptors);
    assert_eq!(plain.descriptor.unwrap().name(), "60-edk2-x86_64.json");
    assert_eq!(plain.secure_boot, SecureBoot::NotEnforced);
    let none = describe(&fx.path("usr/share/ovmf/OVMF.fd"), &loaded.descriptors);
    assert_eq!((none.descriptor, none.vars_template), (None, None));
}
