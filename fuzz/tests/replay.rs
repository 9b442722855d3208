//! Every saved crash (`fuzz/regressions/<target>/`) and every committed seed
//! (`fuzz/seeds/<target>/`) runs through its target's body, as in the fuzzer: a crash that was
//! fixed stays fixed, in every `cargo xtask test`.

use std::fs;
use std::path::PathBuf;

fn root() -> PathBuf {
    // The run-time variable: a test binary reused from another clone (a shared cargo target
    // directory) must read this clone's files.
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
}

fn inputs(dir: &str) -> Vec<(String, PathBuf)> {
    let mut found = Vec::new();
    let Ok(targets) = fs::read_dir(root().join(dir)) else { return found };
    for target in targets.flatten() {
        let name = target.file_name().to_string_lossy().into_owned();
        for file in fs::read_dir(target.path()).unwrap().flatten() {
            if file.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            found.push((name.clone(), file.path()));
        }
    }
    found.sort();
    found
}

fn replay(dir: &str) -> usize {
    let all = inputs(dir);
    for (name, path) in &all {
        let target = fuzz_targets::target(name)
            .unwrap_or_else(|| panic!("{}: no fuzz target {name}", path.display()));
        let data = fs::read(path).unwrap();
        let result = std::panic::catch_unwind(|| (target.run)(&data));
        assert!(result.is_ok(), "{}: target {name} still fails on it", path.display());
    }
    all.len()
}

#[test]
fn saved_crashes_no_longer_crash() {
    let count = replay("regressions");
    println!("{count} saved crash inputs replayed");
}

#[test]
fn committed_seeds_pass() {
    let count = replay("seeds");
    assert!(count > 0, "no seeds under fuzz/seeds");
}

#[test]
fn every_target_has_a_libfuzzer_binary_and_back() {
    let dir = root().join("libfuzzer/fuzz_targets");
    let mut binaries: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .filter_map(|f| f.file_name().to_string_lossy().strip_suffix(".rs").map(str::to_owned))
        .collect();
    binaries.sort();
    let mut names: Vec<String> = fuzz_targets::TARGETS.iter().map(|t| t.name.to_owned()).collect();
    names.sort();
    assert_eq!(binaries, names);
    let manifest = fs::read_to_string(root().join("libfuzzer/Cargo.toml")).unwrap();
    for target in fuzz_targets::TARGETS {
        let name = target.name;
        assert!(
            manifest.contains(&format!("name = \"{name}\"")),
            "{name} not in libfuzzer/Cargo.toml"
        );
        // `cargo xtask fuzz` reads the length from the binary's source.
        let source = fs::read_to_string(dir.join(format!("{name}.rs"))).unwrap();
        assert!(source.contains(&format!("// max_len: {}\n", target.max_len)), "{name}: max_len");
    }
}
