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
                        text = text.replace(
                            &format!("\"{path}\""),
                            &format!("\"{}\"", moved.display()),
                        );
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
