//! The links between the project's documents: README.md, ARCHITECTURE.md and docs/*.md. A host
//! test checks that every relative link names a file that exists and, with a `#fragment`, a
//! heading of that file, so that moving a section cannot leave a dead link behind.

use std::path::{Path, PathBuf};

/// The documents whose links are checked.
pub fn documents(project: &Path) -> Vec<PathBuf> {
    let mut found = vec![project.join("README.md"), project.join("ARCHITECTURE.md")];
    if let Ok(entries) = std::fs::read_dir(project.join("docs")) {
        let mut docs: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "md"))
            .collect();
        docs.sort();
        found.extend(docs);
    }
    found
}

/// The targets of the inline links `[text](target)` in Markdown text, outside code blocks and
/// code spans.
pub fn links(markdown: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut in_fence = false;
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            in_fence = !in_fence;
            continue;
        }
        if in_fence {
            continue;
        }
        // Code spans hold text like `a[i](x)` that is not a link.
        let text: String = line.split('`').step_by(2).collect::<Vec<_>>().join(" ");
        let mut rest = text.as_str();
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let Some(end) = after.find(')') else { break };
            found.push(after[..end].trim().to_owned());
            rest = &after[end..];
        }
    }
    found
}

/// The anchors GitHub gives a file's headings: lower case, spaces to hyphens, punctuation other
/// than hyphens and underscores dropped.
pub fn anchors(markdown: &str) -> Vec<String> {
    let mut in_fence = false;
    let mut found = Vec::new();
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            in_fence = !in_fence;
            continue;
        }
        if in_fence || !line.starts_with('#') {
            continue;
        }
        let title = line.trim_start_matches('#');
        if !title.starts_with(' ') {
            continue;
        }
        let slug: String = title
            .trim()
            .to_lowercase()
            .chars()
            .filter_map(|c| match c {
                ' ' => Some('-'),
                c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
                _ => None,
            })
            .collect();
        found.push(slug);
    }
    found
}

/// Every broken link of `document`, as `document: target (why)`.
pub fn broken_links(project: &Path, document: &Path) -> Vec<String> {
    let Ok(text) = std::fs::read_to_string(document) else {
        return vec![format!("{}: cannot be read", document.display())];
    };
    let name = document.strip_prefix(project).unwrap_or(document).display().to_string();
    let mut broken = Vec::new();
    for target in links(&text) {
        if target.contains("://") || target.starts_with("mailto:") {
            continue;
        }
        let (path, fragment) = match target.split_once('#') {
            Some((path, fragment)) => (path, Some(fragment)),
            None => (target.as_str(), None),
        };
        let file = if path.is_empty() {
            document.to_path_buf()
        } else {
            document.parent().unwrap_or(project).join(path)
        };
        if !file.exists() {
            broken.push(format!("{name}: {target} (no such file)"));
            continue;
        }
        if let Some(fragment) = fragment {
            let headings = std::fs::read_to_string(&file).map(|t| anchors(&t)).unwrap_or_default();
            if !headings.iter().any(|h| h == fragment) {
                broken.push(format!("{name}: {target} (no such heading)"));
            }
        }
    }
    broken
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_outside_code_are_found() {
        let text =
            "See [a](docs/a.md) and [b](#b-c).\n```\n[x](nope.md)\n```\n`[y](nope.md)` [z](z.md)\n";
        assert_eq!(links(text), vec!["docs/a.md", "#b-c", "z.md"]);
    }

    #[test]
    fn anchors_follow_githubs_rules() {
        let text = "# Testing\n## What \"exact\" means here\n### td-audit: what a TD would do\n```\n# not a heading\n```\n#hashtag\n";
        assert_eq!(
            anchors(text),
            vec!["testing", "what-exact-means-here", "td-audit-what-a-td-would-do"]
        );
    }

    #[test]
    fn a_dead_link_and_a_missing_heading_are_reported() {
        let dir = std::env::temp_dir().join(format!("xtask-doc-links-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("docs")).unwrap();
        std::fs::write(dir.join("docs/a.md"), "# A\n## Here\n").unwrap();
        let readme = dir.join("README.md");
        std::fs::write(&readme, "[ok](docs/a.md#here) [gone](docs/b.md) [no](docs/a.md#there)\n")
            .unwrap();
        let broken = broken_links(&dir, &readme);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            broken,
            vec![
                "README.md: docs/b.md (no such file)",
                "README.md: docs/a.md#there (no such heading)"
            ]
        );
    }

    /// The project's own documents.
    #[test]
    fn the_documents_have_no_dead_links() {
        let project = crate::build::project_root();
        let documents = documents(&project);
        assert!(documents.len() > 2, "no docs/ found under {}", project.display());
        let broken: Vec<String> =
            documents.iter().flat_map(|d| broken_links(&project, d)).collect();
        assert!(broken.is_empty(), "dead links:\n{}", broken.join("\n"));
    }

    /// README.md stays a front page: the rest lives in docs/.
    #[test]
    fn the_readme_is_under_200_lines() {
        let text = std::fs::read_to_string(crate::build::project_root().join("README.md")).unwrap();
        let lines = text.lines().count();
        assert!(lines < 200, "README.md has {lines} lines; move detail into docs/");
    }
}
