//! ovmf: what the host's firmware files say (TDVF metadata, QEMU firmware descriptors, the
//! variable store).

use crate::input::Input;
use ovmf::descriptor::{self, Found};
use ovmf::find::{rank_descriptor, Purpose};
use ovmf::tdvf;
use std::path::{Path, PathBuf};

/// TDVF metadata in a firmware image (the fuzzer's bytes are the image's tail, where OVMF keeps
/// its GUIDed table and, at an offset from the end, the TDVF descriptor).
pub fn tdvf(image: &[u8]) {
    if let Ok(entries) = tdvf::ovmf_table(image) {
        let mut errors = 0;
        for entry in entries {
            match entry {
                Ok(entry) => {
                    assert!(entry.data_offset + entry.data.len() <= image.len());
                    assert_eq!(errors, 0, "an entry after an error");
                }
                Err(_) => errors += 1,
            }
        }
    }
    let parsed = tdvf::parse(image);
    assert_eq!(tdvf::is_tdvf(image), parsed.is_ok());
    match parsed {
        Ok(metadata) => {
            assert_eq!(metadata.version, tdvf::TDVF_METADATA_VERSION);
            assert!(metadata.descriptor_offset < image.len());
            for section in &metadata.sections {
                if let Some(data) = section.data(image) {
                    assert_eq!(data.len(), section.raw_data_size as usize);
                }
                if section.memory_data_size != 0 {
                    assert!(section
                        .memory_address
                        .checked_add(section.memory_data_size - 1)
                        .is_some());
                }
                let _ = metadata.sections_of_type(section.section_type).count();
            }
            let _ = metadata.check_qemu_loadable().map_err(|e| e.to_string());
            let table = tdvf::render_table(&metadata);
            assert_eq!(table.lines().count(), metadata.sections.len() + 2);
        }
        Err(error) => {
            let message = error.to_string();
            assert!(!message.contains('\n'), "a two-line error: {message}");
        }
    }
}

/// A QEMU firmware descriptor (JSON from `/usr/share/qemu/firmware` or the user's directory),
/// its reading, and its ranking for a TCG guest and for a TD. The first input byte chooses the
/// file name; the rest is the file. Glob matching of machine names is checked against a plain
/// recursive reference.
pub fn descriptor(data: &[u8]) {
    let mut input = Input::new(data);
    let name_byte = input.u8();
    let split = usize::from(input.u8());
    let json = input.rest();
    // The glob matcher on two strings of the input.
    let text = String::from_utf8_lossy(json);
    let chars: Vec<char> = text.chars().take(64).collect();
    let (pattern, name) = chars.split_at(split.min(chars.len()));
    let (pattern, name): (String, String) = (pattern.iter().collect(), name.iter().collect());
    assert_eq!(
        descriptor::glob_matches(&pattern, &name),
        glob_reference(&pattern.chars().collect::<Vec<_>>(), &name.chars().collect::<Vec<_>>()),
        "glob {pattern:?} on {name:?}"
    );

    let Ok(parsed) = descriptor::parse(json) else { return };
    let found = Found {
        path: PathBuf::from(format!("/nonexistent/{:02}-fuzz.json", name_byte % 100)),
        descriptor: parsed,
    };
    let shown = found.to_string();
    assert!(!shown.is_empty());
    let _ = found.descriptor.is_uefi_for_x86_64_q35();
    let _ = found.descriptor.nvram_template();
    let executable = found.descriptor.executable().to_path_buf();
    for purpose in [Purpose::Tcg, Purpose::Td] {
        if let Ok((rank, _)) = rank_descriptor(&found, purpose) {
            assert!(rank <= 3, "rank {rank}");
            assert!(executable.is_file(), "ranked a firmware that is not installed");
        }
    }
    let list = [found];
    let named = descriptor::naming(&list, &executable);
    assert!(named.len() <= 1);
    let _ = descriptor::naming(&list, Path::new("/usr/share/ovmf/OVMF.fd"));
}

/// `*` and `?` globbing by dynamic programming: `matches[i][j]` says whether the first `i`
/// pattern characters match the first `j` name characters.
fn glob_reference(pattern: &[char], name: &[char]) -> bool {
    let mut matches = vec![vec![false; name.len() + 1]; pattern.len() + 1];
    matches[0][0] = true;
    for i in 1..=pattern.len() {
        for j in 0..=name.len() {
            matches[i][j] = match pattern[i - 1] {
                '*' => matches[i - 1][j] || (j > 0 && matches[i][j - 1]),
                c => j > 0 && (c == '?' || c == name[j - 1]) && matches[i - 1][j - 1],
            };
        }
    }
    matches[pattern.len()][name.len()]
}

/// A variable store (a VARS template, or the store inside a combined image): whether a Platform
/// Key is enrolled. Never panics; the answer does not depend on bytes after the store.
pub fn varstore(bytes: &[u8]) {
    let _ = ovmf::varstore::platform_key_enrolled(bytes);
}
