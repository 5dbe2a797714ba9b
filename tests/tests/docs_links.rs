//! The README stands alone in a clone: every link in it (and in the docs it links to) is a
//! path inside the repository that exists, never a web address, so what users need ships
//! with the code and cannot go stale elsewhere.

use std::path::{Path, PathBuf};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives in the repository")
        .to_path_buf()
}

/// The targets of `[text](target)` links in `markdown`, outside code spans and blocks.
fn link_targets(markdown: &str) -> Vec<String> {
    let mut targets = Vec::new();
    let mut in_block = false;
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            in_block = !in_block;
            continue;
        }
        if in_block {
            continue;
        }
        // Code spans hold examples, not links.
        let prose: String = line.split('`').step_by(2).collect::<Vec<_>>().join(" ");
        let mut rest = prose.as_str();
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let Some(end) = after.find(')') else { break };
            targets.push(after[..end].to_string());
            rest = &after[end..];
        }
    }
    targets
}

#[test]
fn the_readme_links_only_inside_the_repository() {
    let root = repo_root();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    assert!(
        !readme.contains("http://") && !readme.contains("https://"),
        "the README names a web address; move what users need into the repository's docs"
    );
    let mut documents = vec![(root.join("README.md"), readme)];
    let mut seen = vec![root.join("README.md").canonicalize().unwrap()];
    let mut checked = 0;
    while let Some((document, text)) = documents.pop() {
        let dir = document.parent().unwrap().to_path_buf();
        for target in link_targets(&text) {
            let path = target.split('#').next().unwrap_or_default();
            assert!(
                !target.contains("://"),
                "{}: link `{target}` leaves the repository",
                document.display()
            );
            if path.is_empty() {
                continue;
            }
            let resolved = dir.join(path).canonicalize().unwrap_or_else(|e| {
                panic!(
                    "{}: link `{target}` is not in the repository: {e}",
                    document.display()
                )
            });
            assert!(
                resolved.starts_with(root.canonicalize().unwrap()),
                "{}: link `{target}` points outside the repository",
                document.display()
            );
            checked += 1;
            if resolved.extension().is_some_and(|e| e == "md") && !seen.contains(&resolved) {
                seen.push(resolved.clone());
                let text = std::fs::read_to_string(&resolved).unwrap();
                documents.push((resolved, text));
            }
        }
    }
    assert!(checked > 0, "the README links to its docs");
}

#[test]
fn link_targets_skip_code() {
    let text = "see [a](docs/a.md) and `[b](x)`\n```\n[c](y)\n```\n[d](e#f)";
    assert_eq!(link_targets(text), ["docs/a.md", "e#f"]);
}
