//! The documentation, checked against the real binary: every TOML block of the README and of
//! `docs/` is a configuration that `wxhub check-config` accepts as printed.
//!
//! An operator copies these blocks; one that the hub refuses is a first hour lost. What an
//! operator must supply around a block is supplied here, and nothing else: each `${VAR}` it names
//! is set (a valid master key for `WXHUB_MASTER_KEY`, 43 characters for an AES key, any text
//! otherwise), and each file it names (`secret_file`, `ca_file`, …) is created (the hub reads a CA file only
//! when it connects), absolute paths
//! under a scratch directory. Keys, values and the blocks' own text are never changed otherwise.

use std::path::{Path, PathBuf};
use std::process::Command;

use wxhub::kinds::KINDS;

/// The repository's root, where the README and `docs/` live.
fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The Markdown files an operator reads.
fn documents() -> Vec<PathBuf> {
    let mut files = vec![repository().join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(repository().join("docs"))
        .expect("docs/ is readable")
        .map(|entry| entry.expect("a docs/ entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    files
}

/// One fenced ```toml block: where it starts (for the failure message) and its text.
struct Block {
    origin: String,
    text: String,
}

/// Every ```toml block of `file`, in order.
fn toml_blocks(file: &Path) -> Vec<Block> {
    let text = std::fs::read_to_string(file).expect("the document is readable");
    let name = file
        .strip_prefix(repository())
        .unwrap_or(file)
        .display()
        .to_string();
    let mut blocks = Vec::new();
    let mut current: Option<Block> = None;
    for (index, line) in text.lines().enumerate() {
        let fence = line.trim_start();
        match current.take() {
            None if fence.starts_with("```toml") => {
                current = Some(Block {
                    origin: format!("{name}:{}", index + 1),
                    text: String::new(),
                });
            }
            None => {}
            Some(block) if fence.starts_with("```") => blocks.push(block),
            Some(mut block) => {
                block.text.push_str(line);
                block.text.push('\n');
                current = Some(block);
            }
        }
    }
    assert!(current.is_none(), "{name}: a ```toml block is never closed");
    blocks
}

/// The names of the `${VAR}` references in `text`.
fn environment_references(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else { break };
        names.push(after[..end].to_string());
        rest = &after[end..];
    }
    names
}

/// A value that passes validation for the variable `name`, as an operator's would.
fn value_for(name: &str) -> String {
    if name == "WXHUB_MASTER_KEY" {
        // 32 bytes, base64: what `openssl rand -base64 32` prints.
        "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=".to_string()
    } else if name.contains("AES_KEY") {
        "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG".to_string()
    } else {
        format!("example-{}", name.to_lowercase())
    }
}

/// The paths named by `…_file = "…"` keys in `text`.
fn file_references(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|line| {
            let line = line.split('#').next().unwrap_or_default();
            let (key, value) = line.split_once('=')?;
            if !key.trim().ends_with("_file") {
                return None;
            }
            Some(value.trim().trim_matches('"').to_string())
        })
        .collect()
}

#[test]
fn every_toml_block_of_the_readme_and_docs_passes_check_config() {
    let mut failures = Vec::new();
    let mut checked = 0;
    for document in documents() {
        for block in toml_blocks(&document) {
            checked += 1;
            let dir = tempfile::tempdir().expect("a scratch directory");
            // Absolute paths land under the scratch directory; relative ones are relative to
            // the configuration file, as the hub takes them.
            let mut text = block.text.clone();
            for path in file_references(&block.text) {
                let on_disk = match path.strip_prefix('/') {
                    Some(relative) => {
                        let moved = dir.path().join(relative);
                        text = text
                            .replace(&format!("\"{path}\""), &format!("\"{}\"", moved.display()));
                        moved
                    }
                    None => dir.path().join(&path),
                };
                std::fs::create_dir_all(on_disk.parent().expect("a file has a parent"))
                    .expect("the secret's directory is made");
                std::fs::write(&on_disk, "example-file-secret\n")
                    .expect("the secret file is written");
            }
            let config = dir.path().join("wxhub.toml");
            std::fs::write(&config, &text).expect("the block is written");
            let mut command = Command::new(env!("CARGO_BIN_EXE_wxhub"));
            command
                .args(["check-config", "--config"])
                .arg(&config)
                .env_remove("WXHUB_LOG");
            for name in environment_references(&block.text) {
                command.env(&name, value_for(&name));
            }
            let output = command.output().expect("wxhub runs");
            if !output.status.success() {
                // The error's line counts from the block's first line, after the fence.
                failures.push(format!(
                    "{} (the block opening here): {}",
                    block.origin,
                    String::from_utf8_lossy(&output.stderr).trim()
                ));
            }
        }
    }
    assert!(checked >= 6, "only {checked} TOML blocks found");
    assert!(
        failures.is_empty(),
        "TOML blocks that check-config refuses:\n{}",
        failures.join("\n")
    );
}

#[test]
fn the_block_scanner_finds_blocks_references_and_files() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("doc.md");
    std::fs::write(
        &file,
        "text\n```toml\n[a]\nsecret = \"${ONE}\" # ${TWO}\nca_file = \"/etc/x.pem\"\n```\n```sh\nnot = 1\n```\n",
    )
    .unwrap();
    let blocks = toml_blocks(&file);
    assert_eq!(blocks.len(), 1);
    assert!(blocks[0].origin.ends_with(":2"), "{}", blocks[0].origin);
    assert_eq!(environment_references(&blocks[0].text), ["ONE", "TWO"]);
    assert_eq!(file_references(&blocks[0].text), ["/etc/x.pem"]);
}

// What the code defines, checked to be in the docs. The lists are read from the sources, so a
// route, metric, error code or scope added without a line of documentation fails here.

/// Every `.rs` file under `dir`, recursively.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("a readable directory") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// The wxhub crate's production sources, each with its text.
fn sources() -> Vec<(PathBuf, String)> {
    rust_files(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"))
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).expect("a readable source");
            (path, text)
        })
        .collect()
}

/// The README and every document under `docs/`, as one text.
fn all_docs() -> String {
    documents()
        .iter()
        .map(|path| std::fs::read_to_string(path).expect("a readable document"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The string literal that starts at the beginning of `text`, if one does.
fn leading_literal(text: &str) -> Option<&str> {
    let rest = text.strip_prefix('"')?;
    rest.find('"').map(|end| &rest[..end])
}

/// The literal arguments that follow each `marker` in `text`: `skip_status` passes over a first
/// `StatusCode::…,` argument (as `ApiError::new` takes).
fn literals_after<'a>(text: &'a str, marker: &str, skip_status: bool) -> Vec<&'a str> {
    text.match_indices(marker)
        .filter_map(|(at, _)| {
            let mut rest = text[at + marker.len()..].trim_start();
            if skip_status {
                let after = rest.strip_prefix("StatusCode::")?;
                rest = after[after.find(',')? + 1..].trim_start();
            }
            leading_literal(rest)
        })
        .collect()
}

/// A path with every `{placeholder}` written `{}`: the docs name placeholders their own way.
fn without_placeholder_names(path: &str) -> String {
    let mut out = String::new();
    let mut inside = false;
    for c in path.chars() {
        match c {
            '{' => {
                inside = true;
                out.push_str("{}");
            }
            '}' => inside = false,
            _ if inside => {}
            _ => out.push(c),
        }
    }
    out
}

/// Whether the docs describe `route`: written out, as `X` (+ `/invalidate`) for its report
/// route, or under a documented `prefix/…` ("the same routes for …").
fn documented_route(docs: &str, route: &str) -> bool {
    let docs = without_placeholder_names(docs);
    let route = without_placeholder_names(route);
    let ends_path = |c: char| !(c.is_ascii_alphanumeric() || matches!(c, '/' | '_' | '{' | '}'));
    let written_out = docs.match_indices(route.as_str()).any(|(at, _)| {
        docs[at + route.len()..]
            .chars()
            .next()
            .is_some_and(ends_path)
    });
    if written_out {
        return true;
    }
    if let Some(reported) = route.strip_suffix("/invalidate") {
        if docs.contains(&format!("`{reported}` (+ `/invalidate`")) {
            return true;
        }
    }
    docs.match_indices("/…`").any(|(end, _)| {
        let start = docs[..end].rfind('`').map_or(0, |at| at + 1);
        let prefix = &docs[start..end];
        prefix.starts_with("/v1/") && route.starts_with(&format!("{prefix}/"))
    })
}

#[test]
fn every_v1_route_metric_error_code_and_scope_is_documented() {
    let docs = all_docs();
    let mut missing = Vec::new();
    let mut counts = [0usize; 4];
    // Every kind's account routes, mounted from its descriptor.
    for kind in KINDS {
        let descriptor = kind.descriptor();
        for route in descriptor.routes.iter().flat_map(|r| r.paths()) {
            let route = format!("{}{route}", descriptor.v1_path);
            counts[0] += 1;
            if !documented_route(&docs, &route) {
                missing.push(format!("route {route} (the {} kind)", descriptor.name));
            }
        }
    }
    for (path, text) in sources() {
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        for route in literals_after(&text, ".route(", false) {
            if route.starts_with("/v1/") {
                counts[0] += 1;
                if !documented_route(&docs, route) {
                    missing.push(format!("route {route} ({name})"));
                }
            }
        }
        // Every metric the exposition declares: `# TYPE wxhub_… counter`.
        for (at, _) in text.match_indices("# TYPE wxhub_") {
            let metric = text[at + "# TYPE ".len()..]
                .split(' ')
                .next()
                .unwrap_or_default();
            counts[1] += 1;
            if !docs.contains(metric) {
                missing.push(format!("metric {metric} ({name})"));
            }
        }
        let codes = [
            literals_after(&text, "ApiError::new(", true),
            literals_after(&text, "ApiError::bad_request(", false),
            literals_after(&text, "ApiError::unavailable(", false),
        ];
        for code in codes.into_iter().flatten() {
            counts[2] += 1;
            if !docs.contains(&format!("`{code}`")) {
                missing.push(format!("error code {code} ({name})"));
            }
        }
        // The scopes, as `Scope::as_str` spells them: `Scope::Read => "read",`.
        for line in text.lines().map(str::trim) {
            let Some(rest) = line.strip_prefix("Scope::") else {
                continue;
            };
            if let Some((_, spelled)) = rest.split_once("=> ") {
                if let Some(scope) = leading_literal(spelled) {
                    counts[3] += 1;
                    if !docs.contains(&format!("`{scope}`")) {
                        missing.push(format!("scope {scope} ({name})"));
                    }
                }
            }
        }
    }
    assert!(
        counts[0] >= 30 && counts[1] >= 10 && counts[2] >= 20 && counts[3] >= 5,
        "the scan found too little ({counts:?}): has the code's shape changed?"
    );
    assert!(missing.is_empty(), "undocumented:\n{}", missing.join("\n"));
}

/// The anchors of `document`'s headings, as GitHub makes them: lower case, punctuation dropped,
/// spaces as hyphens.
fn anchors(document: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(document).unwrap_or_default();
    text.lines()
        .filter(|line| line.starts_with('#'))
        .map(|line| {
            line.trim_start_matches('#')
                .trim()
                .to_lowercase()
                .chars()
                .filter_map(|c| match c {
                    ' ' => Some('-'),
                    '-' | '_' => Some(c),
                    c if c.is_alphanumeric() => Some(c),
                    _ => None,
                })
                .collect()
        })
        .collect()
}

/// Each `file.md#anchor` (or `#anchor` within `document`) that `text` links to, with the
/// document it names.
fn anchor_links(text: &str, document: Option<&Path>) -> Vec<(PathBuf, String)> {
    let docs = repository().join("docs");
    let mut links = Vec::new();
    for (at, _) in text.match_indices('#') {
        let before = &text[..at];
        let start = before
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '/' | '.' | '_' | '-')))
            .map_or(0, |i| i + 1);
        let file = &before[start..];
        let anchor: String = text[at + 1..]
            .chars()
            .take_while(|c| c.is_alphanumeric() || matches!(c, '-' | '_'))
            .collect();
        if anchor.is_empty() {
            continue;
        }
        let target = if let Some(name) = file.strip_prefix("docs/") {
            docs.join(name)
        } else if file.ends_with(".md") && document.is_some() {
            match document.and_then(Path::parent) {
                Some(dir) => dir.join(file),
                None => continue,
            }
        } else if file.is_empty() && before.ends_with("](") {
            match document {
                Some(document) => document.to_path_buf(),
                None => continue,
            }
        } else {
            continue;
        };
        if target.extension().is_some_and(|ext| ext == "md") {
            links.push((target, anchor));
        }
    }
    links
}

#[test]
fn every_docs_anchor_cited_in_code_or_docs_exists() {
    let mut cited = Vec::new();
    for dir in ["crates", "bench", "scripts"] {
        for file in rust_files(&repository().join(dir)) {
            let text = std::fs::read_to_string(&file).expect("a readable source");
            for link in anchor_links(&text, None) {
                cited.push((file.clone(), link));
            }
        }
    }
    for document in documents() {
        let text = std::fs::read_to_string(&document).expect("a readable document");
        for link in anchor_links(&text, Some(&document)) {
            cited.push((document.clone(), link));
        }
    }
    assert!(cited.len() >= 40, "only {} anchor links found", cited.len());
    let dangling: Vec<String> = cited
        .iter()
        .filter(|(_, (target, anchor))| !anchors(target).contains(anchor))
        .map(|(from, (target, anchor))| {
            let from = from.strip_prefix(repository()).unwrap_or(from);
            let target = target.file_name().unwrap_or_default().to_string_lossy();
            format!("{}: {target}#{anchor}", from.display())
        })
        .collect();
    assert!(
        dangling.is_empty(),
        "links to headings that do not exist:\n{}",
        dangling.join("\n")
    );
}

#[test]
fn anchors_are_made_as_github_makes_them() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a.md");
    std::fs::write(
        &file,
        "# Title\n## Health, readiness and metrics\n### `stable_token`\n",
    )
    .unwrap();
    assert_eq!(
        anchors(&file),
        ["title", "health-readiness-and-metrics", "stable_token"]
    );
    let links = anchor_links(concat!("see docs/", "a.md#title and x#y"), None);
    assert_eq!(links.len(), 1);
    assert_eq!(links[0].1, "title");
}
