//! The project's rule on file size (issue 22): no source file over 800 lines, tests aside.
//!
//! A file's size is its line count with its `#[cfg(test)]` modules taken out; test files
//! (`tests.rs`, `*_tests.rs`, anything under a `tests/` directory) do not count. The host test
//! below fails naming every file over the limit.

use std::path::{Path, PathBuf};

/// The most lines a source file may have outside its tests.
pub const MAX_LINES: usize = 800;

/// Every `.rs` file under `project` outside `target/`, hidden directories and test files.
pub fn source_files(project: &Path) -> Vec<PathBuf> {
    crate::imports::files_under(project, &|dir| dir == "tests")
        .into_iter()
        .filter(|path| {
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            name.ends_with(".rs") && name != "tests.rs" && !name.ends_with("_tests.rs")
        })
        .collect()
}

/// Lines of `code` outside its `#[cfg(test)]` modules.
pub fn lines_outside_tests(code: &str) -> usize {
    crate::imports::strip_tests(code).lines().count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_modules_do_not_count() {
        let code = "fn a() {}\n#[cfg(test)]\nmod tests {\n    #[test]\n    fn t() {}\n}\n";
        assert_eq!(lines_outside_tests(code), 2);
        let long = "fn f() {}\n".repeat(MAX_LINES + 1);
        assert_eq!(lines_outside_tests(&long), MAX_LINES + 1);
    }

    #[test]
    fn no_source_file_is_over_the_limit() {
        let project = crate::build::project_root();
        let files = source_files(&project);
        assert!(files.len() > 100, "too few source files under {}", project.display());
        let over: Vec<String> = files
            .iter()
            .filter_map(|path| {
                let lines = lines_outside_tests(&std::fs::read_to_string(path).ok()?);
                (lines > MAX_LINES).then(|| {
                    let name = path.strip_prefix(&project).unwrap_or(path).display();
                    format!("{name}: {lines} lines")
                })
            })
            .collect();
        assert!(over.is_empty(), "over {MAX_LINES} lines outside tests:\n{}", over.join("\n"));
    }
}
