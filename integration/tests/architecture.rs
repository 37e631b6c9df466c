//! Architecture invariants, phrased as absences, checked on the source.
//!
//! The core of Strata is pure state machines and data: they never touch
//! the async runtime, the actor framework or the network. This test reads
//! every core module and fails if one names tokio, actix or quinn.

use std::path::{Path, PathBuf};

/// Files and folders (relative to the workspace root) that form the core.
const CORE: &[&str] = &[
    "protocol/src",
    "runtime/src/upid.rs",
    "runtime/src/codec.rs",
    "runtime/src/supervision.rs",
    "runtime/src/metrics.rs",
    "runtime/src/random.rs",
    "master/src/allocator",
    "master/src/books",
    "master/src/authorization.rs",
    "agent/src/status_updates.rs",
];

/// Crates the core must not use.
const FORBIDDEN: &[&str] = &["tokio", "actix", "actix_rt", "quinn"];

fn rust_files(path: &Path, found: &mut Vec<PathBuf>) {
    if path.is_dir() {
        let mut entries: Vec<_> = std::fs::read_dir(path)
            .expect("core folder is readable")
            .map(|entry| entry.expect("folder entry").path())
            .collect();
        entries.sort();
        for entry in entries {
            rust_files(&entry, found);
        }
    } else if path.extension().is_some_and(|extension| extension == "rs") {
        found.push(path.to_owned());
    }
}

/// Whether `line` uses `name` as a crate path (`name::` or `use name`).
fn names_crate(line: &str, name: &str) -> bool {
    let code = line.split("//").next().unwrap_or("");
    code.match_indices(name).any(|(at, _)| {
        let before = code[..at].chars().next_back();
        let after = &code[at + name.len()..];
        let starts_word = before.is_none_or(|c| !(c.is_alphanumeric() || c == '_'));
        starts_word
            && (after.starts_with("::")
                || (code.trim_start().starts_with("use ") && after.starts_with(';')))
    })
}

#[test]
fn the_core_never_touches_the_runtime_or_the_network() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = Vec::new();
    for entry in CORE {
        let path = root.join(entry);
        assert!(
            path.exists(),
            "core path {entry} is missing; update this test"
        );
        rust_files(&path, &mut files);
    }
    assert!(!files.is_empty());
    let mut violations = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("core file is readable");
        for (number, line) in text.lines().enumerate() {
            for name in FORBIDDEN {
                if names_crate(line, name) {
                    violations.push(format!(
                        "{}:{}: uses {name}: {}",
                        file.display(),
                        number + 1,
                        line.trim()
                    ));
                }
            }
        }
    }
    assert!(
        violations.is_empty(),
        "core modules must stay pure:\n{}",
        violations.join("\n")
    );
}

#[test]
fn the_checker_sees_what_it_looks_for() {
    assert!(names_crate("use tokio::sync::mpsc;", "tokio"));
    assert!(names_crate(
        "    let now = tokio::time::Instant::now();",
        "tokio"
    ));
    assert!(names_crate("use quinn;", "quinn"));
    assert!(!names_crate("// tokio::time is not used here", "tokio"));
    assert!(!names_crate("let my_tokio = 1;", "tokio"));
    assert!(!names_crate("use actix_rt::System;", "actix"));
    assert!(names_crate("use actix_rt::System;", "actix_rt"));
}
