//! The dependency rules of `docs/architecture.md`, checked on the source text of `src/`:
//! - the pure core (`domain`: report, geo, incidents, series, buckets, counting; and `detect`) does no I/O, reads no clock and
//!   imports only the pure core;
//! - `api` and `web` do not import each other (what both need is in `http`, which imports
//!   neither), and all three reach the store only through the read layer;
//! - the store reads no clock and spawns no task;
//! - no source file is longer than 600 lines before its test module, and `main.rs` is a table of
//!   contents (≤ 120 lines).
//!
//! A rule the tree does not keep yet is listed in [`PENDING`] with the issue that removes it;
//! the test fails on any other violation, and on a listed one that no longer occurs (so the
//! list only shrinks).
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The pure core: time is an argument, nothing is read or written.
const PURE: &[&str] = &["domain", "detect"];

/// What the pure core may not name: runtimes, databases, HTTP, files, sockets and the clock.
const IMPURE: &[&str] = &[
    "tokio::",
    "sqlx::",
    "axum::",
    "hyper::",
    "reqwest::",
    "std::fs",
    "std::net",
    "crate::runtime::clock",
    "Utc::now",
    "SystemTime::now",
];

/// What the store may not do: read the clock or spawn a task `app` does not own.
const STORE_MAY_NOT: &[&str] = &[
    "crate::runtime::clock",
    "Utc::now",
    "SystemTime::now",
    "tokio::spawn",
];

/// Violations the tree still has, each as (file, what it names), with the work that ends it.
/// Empty: the tree keeps every rule. A rule broken on purpose is listed here with its reason.
const PENDING: &[(&str, &str)] = &[];

/// The HTTP face: the JSON API, the pages, and what both share (`http`). None of them names
/// the store; only the read layer does.
const FACE: &[&str] = &["api", "web", "http"];

/// Every `.rs` file under `dir`.
fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(sources(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files.sort();
    files
}

/// The crate's top-level module a file belongs to (`src/api/counts.rs` → `api`).
fn top_module(relative: &Path) -> String {
    let first = relative.components().next().unwrap().as_os_str();
    Path::new(first)
        .file_stem()
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

/// The file's code without comments: `//` to the end of a line (doc comments included).
fn code(text: &str) -> String {
    text.lines()
        .map(|line| match line.find("//") {
            // A `//` inside a string (a URL) is rare in these files; none of the names checked
            // here are written in a string, so cutting it is safe.
            Some(at) => &line[..at],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The crate modules a file names (`crate::store::…` → `store`).
fn crate_modules(code: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() {
            found.insert(name);
        }
    }
    found
}

/// Every violation in the tree, as (file relative to src/, what it names, the rule).
fn violations() -> Vec<(String, String, &'static str)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut found = Vec::new();
    for path in sources(&src) {
        let relative = path.strip_prefix(&src).unwrap();
        let file = relative.to_string_lossy().into_owned();
        let module = top_module(relative);
        let code = code(&std::fs::read_to_string(&path).unwrap());
        let modules = crate_modules(&code);
        let mut flag = |named: &str, rule: &'static str| {
            found.push((file.clone(), named.to_owned(), rule));
        };
        if PURE.contains(&module.as_str()) {
            for name in IMPURE.iter().filter(|name| code.contains(*name)) {
                flag(name, "the pure core does no I/O and reads no clock");
            }
            for name in modules.iter().filter(|m| !PURE.contains(&m.as_str())) {
                flag(name, "the pure core imports only the pure core");
            }
        }
        if module == "api" && modules.contains("web") {
            flag("web", "api does not import web (app composes both)");
        }
        if module == "web" && modules.contains("api") {
            flag("api", "web does not import api (app composes both)");
        }
        if module == "http" {
            for name in modules.iter().filter(|m| *m == "api" || *m == "web") {
                flag(name, "http is what api and web share: it imports neither");
            }
        }
        if FACE.contains(&module.as_str()) && modules.contains("store") {
            flag(
                "store",
                "api, web and http reach the store only through the read layer",
            );
        }
        if module == "store" {
            for name in STORE_MAY_NOT.iter().filter(|name| code.contains(*name)) {
                flag(name, "the store reads no clock and spawns no task");
            }
        }
    }
    found
}

#[test]
fn the_tree_keeps_the_dependency_rules() {
    let found = violations();
    let pending: BTreeSet<(&str, &str)> = PENDING.iter().copied().collect();
    let new: Vec<String> = found
        .iter()
        .filter(|(file, named, _)| !pending.contains(&(file.as_str(), named.as_str())))
        .map(|(file, named, rule)| format!("src/{file} names {named}: {rule}"))
        .collect();
    assert!(
        new.is_empty(),
        "dependency rules broken:\n{}",
        new.join("\n")
    );
    let kept: BTreeSet<(&str, &str)> = found
        .iter()
        .map(|(file, named, _)| (file.as_str(), named.as_str()))
        .collect();
    let gone: Vec<String> = pending
        .iter()
        .filter(|p| !kept.contains(p))
        .map(|(file, named)| format!("src/{file} no longer names {named}: take it off PENDING"))
        .collect();
    assert!(gone.is_empty(), "{}", gone.join("\n"));
}

#[test]
fn a_crate_path_names_its_top_module_and_comments_do_not_count() {
    let text = "use crate::store::{Store, StoreError};\n// crate::web is mentioned\nlet t = crate::runtime::clock::now(); /// crate::api\n";
    let modules: Vec<String> = crate_modules(&code(text)).into_iter().collect();
    assert_eq!(modules, ["runtime", "store"]);
    assert_eq!(top_module(Path::new("api/counts.rs")), "api");
    assert_eq!(top_module(Path::new("report.rs")), "report");
}

/// Most lines a source file may hold before its test module (issue 15: split a longer one by job).
const MAX_LINES: usize = 600;

/// The lines of `text` before its `#[cfg(test)]` module.
fn lines_before_tests(text: &str) -> usize {
    text.lines()
        .take_while(|line| !line.starts_with("#[cfg(test)]"))
        .count()
}

#[test]
fn no_source_file_is_longer_than_600_lines_test_modules_aside() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut dirs = vec![root.join("src")];
    for entry in std::fs::read_dir(root.join("crates")).unwrap() {
        dirs.push(entry.unwrap().path().join("src"));
    }
    let long: Vec<String> = dirs
        .iter()
        .flat_map(|dir| sources(dir))
        .filter_map(|path| {
            let lines = lines_before_tests(&std::fs::read_to_string(&path).unwrap());
            (lines > MAX_LINES).then(|| {
                format!(
                    "{}: {lines} lines",
                    path.strip_prefix(root).unwrap().display()
                )
            })
        })
        .collect();
    assert!(
        long.is_empty(),
        "over {MAX_LINES} lines:\n{}",
        long.join("\n")
    );
}

#[test]
fn a_test_module_does_not_count_towards_a_files_length() {
    let text = "fn a() {}\nfn b() {}\n#[cfg(test)]\nmod tests {\n    fn c() {}\n}\n";
    assert_eq!(lines_before_tests(text), 2);
    assert_eq!(lines_before_tests("fn a() {}\n"), 1);
}

#[test]
fn main_rs_is_a_table_of_contents() {
    let main =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/main.rs")).unwrap();
    let lines = main.lines().count();
    assert!(
        lines <= 120,
        "src/main.rs has {lines} lines; command bodies belong in src/cli/"
    );
    assert!(
        main.contains("enum Command"),
        "src/main.rs keeps the Command enum"
    );
}
