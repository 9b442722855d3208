//! Import circles between source files: a file that names an item of another file (through
//! `use` or a `crate::`/`super::`/`self::` path) depends on it, and two or more files that
//! depend on each other, directly or around a ring, form a circle. No file of a circle can be
//! read or changed alone, so the host test at the bottom refuses any circle in the kernel, the
//! loader, xtask and every library crate.
//!
//! What counts as a dependency, exactly:
//! - paths that start with `crate::`, `super::` or `self::` in code, `use` trees included
//!   (`use crate::tdx::{io, vmcall::Status}`), resolved to the file of the longest module prefix
//!   (an item of `tdx/mod.rs` resolves to that file, `crate::tdx::io::read` to `tdx/io.rs`);
//! - not `mod` declarations, nor a module's use of its own descendants (a parent owns its
//!   children: that is the module tree, not a dependency), so a crate root is never in a circle;
//! - not comments, string literals, macro invocations at the crate root (`crate::println!`),
//!   or test code (`#[cfg(test)]` modules inline, and files declared as such).
//!
//! This reads text, not a resolved syntax tree: `#[path]` attributes are honoured, glob imports
//! count as a dependency on the module named, and re-exports are not followed (a dependency
//! ends at the file that re-exports). That is enough to find circles; it is not a compiler.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// One crate's files: module path (`["tdx", "io"]`) to file, and which files are test-only.
#[derive(Debug, Default)]
pub struct CrateFiles {
    pub modules: BTreeMap<Vec<String>, PathBuf>,
    pub sources: BTreeMap<PathBuf, String>,
}

/// Reads the crate whose root file (`src/main.rs` or `src/lib.rs`) is `root`, following `mod`
/// declarations (with `#[path]`), leaving out test-only modules.
pub fn read_crate(root: &Path) -> std::io::Result<CrateFiles> {
    let mut files = CrateFiles::default();
    let mut pending = vec![(Vec::<String>::new(), root.to_path_buf(), true)];
    while let Some((module, file, owns_dir)) = pending.pop() {
        let text = std::fs::read_to_string(&file)?;
        let code = strip_tests(&strip_comments_and_strings(&text));
        let dir = if owns_dir {
            file.parent().unwrap_or(Path::new(".")).to_path_buf()
        } else {
            file.with_extension("")
        };
        for declared in mod_declarations(&text) {
            let mut child = module.clone();
            child.push(declared.name.clone());
            let path = match &declared.path {
                Some(p) => (file.parent().unwrap_or(Path::new("."))).join(p),
                None => {
                    let flat = dir.join(format!("{}.rs", declared.name));
                    if flat.exists() {
                        flat
                    } else {
                        dir.join(&declared.name).join("mod.rs")
                    }
                }
            };
            if declared.test_only || !path.exists() {
                continue;
            }
            let owns = declared.path.is_none() && path.ends_with("mod.rs");
            pending.push((child, path, owns));
        }
        files.modules.insert(module, file.clone());
        files.sources.insert(file, code);
    }
    Ok(files)
}

/// The file-to-file dependencies of one crate.
pub fn dependencies(files: &CrateFiles) -> BTreeMap<PathBuf, BTreeSet<PathBuf>> {
    let module_of: BTreeMap<&PathBuf, &Vec<String>> =
        files.modules.iter().map(|(m, f)| (f, m)).collect();
    let mut edges: BTreeMap<PathBuf, BTreeSet<PathBuf>> = BTreeMap::new();
    for (file, code) in &files.sources {
        let here = module_of[file];
        let is_dir_module =
            file.ends_with("mod.rs") || file.ends_with("main.rs") || file.ends_with("lib.rs");
        let targets = edges.entry(file.clone()).or_default();
        for path in crate_paths(code) {
            let Some(absolute) = absolute(here, is_dir_module, &path) else { continue };
            // The longest prefix that is a module: its file holds the item.
            let (module, target) = (0..=absolute.len())
                .rev()
                .find_map(|n| files.modules.get_key_value(&absolute[..n]))
                .expect("the crate root is a module");
            // A module's use of its own descendants is the module tree, not a dependency.
            if !module.starts_with(here) {
                targets.insert(target.clone());
            }
        }
    }
    edges
}

/// Every circle (strongly connected component of two or more files), each sorted.
pub fn circles(edges: &BTreeMap<PathBuf, BTreeSet<PathBuf>>) -> Vec<Vec<PathBuf>> {
    // Tarjan's algorithm, recursive: module graphs are small.
    struct State<'a> {
        edges: &'a BTreeMap<PathBuf, BTreeSet<PathBuf>>,
        index: BTreeMap<&'a PathBuf, usize>,
        low: BTreeMap<&'a PathBuf, usize>,
        stack: Vec<&'a PathBuf>,
        on_stack: BTreeSet<&'a PathBuf>,
        found: Vec<Vec<PathBuf>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a PathBuf) {
        let n = s.index.len();
        s.index.insert(v, n);
        s.low.insert(v, n);
        s.stack.push(v);
        s.on_stack.insert(v);
        // Successors as keys of `edges`, so that they borrow from it and not from `v`.
        let next: Vec<&'a PathBuf> =
            s.edges[v].iter().filter_map(|w| s.edges.get_key_value(w).map(|(k, _)| k)).collect();
        for w in next {
            if !s.index.contains_key(w) {
                visit(s, w);
                let low = s.low[w].min(s.low[v]);
                s.low.insert(v, low);
            } else if s.on_stack.contains(w) {
                let low = s.index[w].min(s.low[v]);
                s.low.insert(v, low);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                component.push(w.clone());
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                s.found.push(component);
            }
        }
    }
    let mut state = State {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for v in edges.keys() {
        if !state.index.contains_key(v) {
            visit(&mut state, v);
        }
    }
    state.found.sort();
    state.found
}

struct ModDeclaration {
    name: String,
    path: Option<String>,
    test_only: bool,
}

/// `mod name;` declarations (not inline `mod name { ... }`), with a `#[path = "..."]` and a
/// `#[cfg(test)]` seen among the attributes just before.
fn mod_declarations(text: &str) -> Vec<ModDeclaration> {
    let mut found = Vec::new();
    let mut attributes: Vec<&str> = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with("#[") {
            attributes.push(line);
            continue;
        }
        let rest = line.strip_prefix("pub(crate) ").or(line.strip_prefix("pub ")).unwrap_or(line);
        if let Some(name) = rest.strip_prefix("mod ").and_then(|r| r.strip_suffix(';')) {
            let path = attributes.iter().find_map(|a| {
                let inner = a.strip_prefix("#[path")?.trim_start().strip_prefix('=')?;
                Some(inner.trim().trim_end_matches(']').trim().trim_matches('"').to_owned())
            });
            let test_only = attributes.iter().any(|a| a.replace(' ', "") == "#[cfg(test)]");
            found.push(ModDeclaration { name: name.trim().to_owned(), path, test_only });
        }
        if !line.is_empty() && !line.starts_with("//") {
            attributes.clear();
        }
    }
    found
}

/// The text with comments blanked and string/char literals emptied, lines kept.
fn strip_comments_and_strings(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < bytes.len() {
        let rest = &text[i..];
        if rest.starts_with("//") {
            let end = rest.find('\n').unwrap_or(rest.len());
            i += end;
        } else if rest.starts_with("/*") {
            let mut depth = 0;
            let mut j = 0;
            while j < rest.len() {
                if rest[j..].starts_with("/*") {
                    depth += 1;
                    j += 2;
                } else if rest[j..].starts_with("*/") {
                    depth -= 1;
                    j += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    if rest.as_bytes()[j] == b'\n' {
                        out.push('\n');
                    }
                    j += 1;
                }
            }
            i += j;
        } else if let Some(len) = raw_string_len(rest) {
            out.push_str("\"\"");
            out.extend(rest[..len].chars().filter(|&c| c == '\n'));
            i += len;
        } else if bytes[i] == b'"' {
            let mut j = 1;
            while j < rest.len() && rest.as_bytes()[j] != b'"' {
                j += if rest.as_bytes()[j] == b'\\' { 2 } else { 1 };
            }
            out.push_str("\"\"");
            out.extend(rest[..(j + 1).min(rest.len())].chars().filter(|&c| c == '\n'));
            i += (j + 1).min(rest.len());
        } else if bytes[i] == b'\'' && char_literal_len(rest).is_some() {
            out.push_str("' '");
            i += char_literal_len(rest).unwrap_or(1);
        } else {
            let c = rest.chars().next().unwrap_or(' ');
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

/// The length of a raw string literal (`r"..."`, `r#"..."#`, `br"..."`) at the start of `s`.
fn raw_string_len(s: &str) -> Option<usize> {
    let after_b = s.strip_prefix('b').unwrap_or(s);
    let after_r = after_b.strip_prefix('r')?;
    let hashes = after_r.len() - after_r.trim_start_matches('#').len();
    let body = after_r[hashes..].strip_prefix('"')?;
    let close = format!("\"{}", "#".repeat(hashes));
    let end = body.find(&close)?;
    Some(s.len() - body.len() + end + close.len())
}

/// The length of a char literal (`'a'`, `'\n'`, `'\''`) at the start of `s`; `None` for a
/// lifetime.
fn char_literal_len(s: &str) -> Option<usize> {
    let body = &s[1..];
    if body.starts_with('\\') {
        let end = body[2..].find('\'')?;
        return Some(1 + 2 + end + 1);
    }
    let c = body.chars().next()?;
    body[c.len_utf8()..].starts_with('\'').then_some(1 + c.len_utf8() + 1)
}

/// The code with `#[cfg(test)]`-gated inline modules removed.
pub(crate) fn strip_tests(code: &str) -> String {
    let mut out = String::with_capacity(code.len());
    let mut rest = code;
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let after = &rest[at + "#[cfg(test)]".len()..];
        let trimmed = after.trim_start();
        let inline_module = trimmed
            .strip_prefix("pub ")
            .unwrap_or(trimmed)
            .strip_prefix("mod ")
            .is_some_and(|r| r.find('{').is_some_and(|b| r.find(';').is_none_or(|s| b < s)));
        if !inline_module {
            rest = after;
            continue;
        }
        let open = after.find('{').expect("checked above");
        let mut depth = 0usize;
        let mut end = after.len();
        for (k, c) in after[open..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = open + k + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// A path as written: its first keyword (`crate`, `super`, `self`) and the identifiers after.
#[derive(Debug, PartialEq, Eq)]
struct WrittenPath {
    segments: Vec<String>,
}

/// Every `crate::`/`super::`/`self::` path in the code, `use` groups expanded, macro calls left
/// out.
fn crate_paths(code: &str) -> Vec<WrittenPath> {
    let chars: Vec<char> = code.chars().collect();
    let mut found = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let starts_word = i == 0 || !(chars[i - 1].is_alphanumeric() || chars[i - 1] == '_');
        let keyword = ["crate", "super", "self"].into_iter().find(|k| {
            let k: Vec<char> = k.chars().collect();
            chars[i..].starts_with(&k) && chars[i + k.len()..].starts_with(&[':', ':'])
        });
        // `$crate::` in macros names the crate root too.
        let preceded_by_dollar = i > 0 && chars[i - 1] == '$';
        if let (true, Some(keyword)) = (starts_word || preceded_by_dollar, keyword) {
            let mut prefix = vec![keyword.to_owned()];
            i = parse_tree(&chars, i + keyword.len(), &mut prefix, &mut found);
        } else {
            i += 1;
        }
    }
    found
}

/// Parses `::a::b`, `::{x, y::z}`, `::*` after `prefix` from `chars[i..]`, pushing each full path.
fn parse_tree(
    chars: &[char],
    mut i: usize,
    prefix: &mut Vec<String>,
    out: &mut Vec<WrittenPath>,
) -> usize {
    let depth = prefix.len();
    loop {
        if !chars[i..].starts_with(&[':', ':']) {
            break;
        }
        i += 2;
        while i < chars.len() && chars[i].is_whitespace() {
            i += 1;
        }
        if i < chars.len() && chars[i] == '{' {
            i += 1;
            loop {
                while i < chars.len() && (chars[i].is_whitespace() || chars[i] == ',') {
                    i += 1;
                }
                if i >= chars.len() || chars[i] == '}' {
                    i += 1;
                    break;
                }
                let start = i;
                while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
                if i == start {
                    // `*` or something this reader does not follow: the group's module itself.
                    out.push(WrittenPath { segments: prefix.clone() });
                    i += 1;
                    continue;
                }
                let word: String = chars[start..i].iter().collect();
                let mut inner = prefix.clone();
                if word != "self" {
                    inner.push(word);
                }
                i = parse_tree(chars, i, &mut inner, out);
            }
            prefix.truncate(depth);
            return i;
        }
        let start = i;
        while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
            i += 1;
        }
        if i == start {
            break;
        }
        prefix.push(chars[start..i].iter().collect());
    }
    let macro_call = i < chars.len() && chars[i] == '!';
    if !macro_call {
        out.push(WrittenPath { segments: prefix.clone() });
    }
    prefix.truncate(depth);
    i
}

/// The absolute module path of a written path, seen from module `here` (a directory module's
/// `super` is its parent; a file module's `self` is itself).
fn absolute(here: &[String], _is_dir_module: bool, path: &WrittenPath) -> Option<Vec<String>> {
    let mut segments = path.segments.iter();
    let mut base: Vec<String> = match segments.next()?.as_str() {
        "crate" => Vec::new(),
        "self" => here.to_vec(),
        "super" => here[..here.len().checked_sub(1)?].to_vec(),
        _ => return None,
    };
    for s in segments {
        match s.as_str() {
            "super" => {
                base.pop()?;
            }
            "self" => {}
            _ => base.push(s.clone()),
        }
    }
    Some(base)
}

/// The crate roots this project keeps free of circles: every `src/main.rs` and `src/lib.rs`
/// under the project, outside `target/` and hidden directories.
pub fn crate_roots(project: &Path) -> Vec<PathBuf> {
    files_under(project, &|dir| dir == "fuzz")
        .into_iter()
        .filter(|path| {
            path.file_name().is_some_and(|name| name == "main.rs" || name == "lib.rs")
                && path.parent().is_some_and(|p| p.ends_with("src"))
        })
        .collect()
}

/// Every file under `project`, sorted, outside `target/`, hidden directories and the
/// directories `skip` names.
pub(crate) fn files_under(project: &Path, skip: &dyn Fn(&str) -> bool) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut dirs = vec![project.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if !path.is_dir() {
                files.push(path);
            } else if !(name.starts_with('.') || name == "target" || skip(&name)) {
                dirs.push(path);
            }
        }
    }
    files.sort();
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, files: &[(&str, &str)]) {
        for (name, text) in files {
            let path = dir.join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
    }

    fn circles_of(files: &[(&str, &str)]) -> Vec<Vec<String>> {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("xtask-imports-{}-{n}", std::process::id()));
        write(&dir, files);
        let krate = read_crate(&dir.join("src/main.rs")).unwrap();
        let found = circles(&dependencies(&krate))
            .into_iter()
            .map(|c| {
                c.iter().map(|p| p.strip_prefix(&dir).unwrap().display().to_string()).collect()
            })
            .collect();
        std::fs::remove_dir_all(&dir).unwrap();
        found
    }

    #[test]
    fn a_two_file_circle_through_use_is_found() {
        let found = circles_of(&[
            ("src/main.rs", "mod a;\nmod b;\nfn main() {}\n"),
            ("src/a.rs", "use crate::b::B;\npub struct A;\n"),
            ("src/b.rs", "pub struct B;\npub fn f() { let _ = crate::a::A; }\n"),
        ]);
        assert_eq!(found, vec![vec!["src/a.rs".to_owned(), "src/b.rs".to_owned()]]);
    }

    #[test]
    fn a_ring_through_groups_super_and_mod_rs_is_found() {
        let found = circles_of(&[
            ("src/main.rs", "mod tdx;\nmod console;\nmod exit;\nfn main() {}\n"),
            ("src/tdx/mod.rs", "pub mod io;\npub fn detect() { crate::exit::exit(); }\n"),
            ("src/tdx/io.rs", "use super::super::console::{self, Writer};\npub fn read() {}\n"),
            ("src/console.rs", "pub struct Writer;\nfn g() { crate::{tdx::{detect}}(); }\n"),
            ("src/exit.rs", "pub fn exit() {}\nfn h() { self::super::tdx::io::read(); }\n"),
        ]);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(
            found[0],
            vec!["src/console.rs", "src/exit.rs", "src/tdx/io.rs", "src/tdx/mod.rs"]
        );
    }

    #[test]
    fn a_parent_using_its_children_is_the_tree_not_a_circle() {
        let found = circles_of(&[
            ("src/main.rs", "mod a;\npub static X: u8 = 0;\nfn main() { a::f(); self::a::f(); }\n"),
            ("src/a.rs", "pub fn f() { let _ = crate::X; let _ = super::X; }\n"),
        ]);
        assert!(found.is_empty(), "{found:?}");
    }

    #[test]
    fn comments_strings_tests_macros_and_mod_declarations_are_not_dependencies() {
        let found = circles_of(&[
            ("src/main.rs", "mod a;\nmod b;\n#[macro_export]\nmacro_rules! p { () => {} }\nfn main() { a::f(); }\n"),
            (
                "src/a.rs",
                "// crate::b::x\n/* crate::b::y */\npub fn f() { let _ = \"crate::b::z\"; crate::p!(); }\n\
                 #[cfg(test)]\nmod tests { use crate::b::B; }\n",
            ),
            ("src/b.rs", "pub struct B;\nfn g() { crate::a::f(); }\n"),
        ]);
        assert!(found.is_empty(), "{found:?}");
    }

    #[test]
    fn a_tree_without_circles_passes() {
        let found = circles_of(&[
            ("src/main.rs", "mod a;\nmod b;\nfn main() { a::f(); b::g(); }\n"),
            ("src/a.rs", "pub fn f() { crate::b::g(); }\n"),
            ("src/b.rs", "pub fn g() {}\n"),
        ]);
        assert!(found.is_empty(), "{found:?}");
    }

    /// The project itself: the kernel, the loader, xtask and every library crate.
    #[test]
    fn the_project_has_no_import_circles() {
        let project = crate::build::project_root();
        let mut report = Vec::new();
        let roots = crate_roots(&project);
        assert!(roots.len() >= 6, "too few crates found under {}: {roots:?}", project.display());
        for root in roots {
            let krate = read_crate(&root).unwrap();
            let edges = dependencies(&krate);
            let name = |p: &PathBuf| p.strip_prefix(&project).unwrap_or(p).display().to_string();
            for circle in circles(&edges) {
                let names: Vec<String> = circle.iter().map(name).collect();
                report.push(names.join(" <-> "));
                // The imports that close it, so that the reader knows which to cut.
                for from in &circle {
                    for to in edges[from].iter().filter(|to| circle.contains(to)) {
                        report.push(format!("    {} uses {}", name(from), name(to)));
                    }
                }
            }
        }
        assert!(report.is_empty(), "import circles between files:\n{}", report.join("\n"));
    }
}
