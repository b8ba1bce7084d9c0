//! `cargo xtask lint`: what CI enforces on the code itself, run first by `cargo xtask test`.
//!
//! - rustfmt (nightly, for the import grouping in rustfmt.toml) in check mode;
//! - clippy with warnings denied, on the host crates (all targets) and on the eBPF crates
//!   (the datapath and the benchmarks' reference programs) for the bpf target;
//! - no source file of the shipped crates over [`MAX_CODE_LINES`] lines of code, so none
//!   grows back into a file that does four jobs.

use std::{fs, path::Path};

use anyhow::{Result, bail};

use crate::{
    setup::nightly_cargo,
    util::{cargo, status, workspace_root},
};

/// Lines of code a source file may hold (blank lines, comments and `#[cfg(test)]` modules
/// aside).
const MAX_CODE_LINES: usize = 400;
/// The crates the size rule covers (xtask and the test suites are tools, not the product).
const SIZED: &[&str] = &["filter-user/src", "filter-common/src", "filter-ebpf/src"];

pub fn run() -> Result<()> {
    eprintln!("=== lint: rustfmt ===");
    status(nightly_cargo().args(["fmt", "--all", "--", "--check"]))?;
    eprintln!("=== lint: clippy (host crates) ===");
    status(cargo().args(["clippy", "--all-targets", "--", "-D", "warnings"]))?;
    eprintln!("=== lint: clippy (eBPF crates, bpf target) ===");
    status(nightly_cargo().args([
        "clippy",
        "-p",
        "filter-ebpf",
        "-p",
        "bench-ebpf",
        "--bins",
        "--target",
        "bpfel-unknown-none",
        "-Z",
        "build-std=core",
        "--",
        "-D",
        "warnings",
    ]))?;
    eprintln!("=== lint: file sizes ===");
    let mut over = Vec::new();
    for dir in SIZED {
        for file in rust_files(&workspace_root().join(dir))? {
            let n = code_lines(&fs::read_to_string(&file)?);
            if n > MAX_CODE_LINES {
                over.push(format!("{} ({n} lines of code)", file.display()));
            }
        }
    }
    if !over.is_empty() {
        bail!(
            "over {MAX_CODE_LINES} lines of code; split by concern: {}",
            over.join(", ")
        );
    }
    Ok(())
}

fn rust_files(dir: &Path) -> Result<Vec<std::path::PathBuf>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            out.extend(rust_files(&path)?);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    Ok(out)
}

/// Lines that are neither blank nor comments, outside `#[cfg(test)]` modules.
fn code_lines(text: &str) -> usize {
    let mut count = 0;
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let t = line.trim();
        if t == "#[cfg(test)]" {
            // Skip the item it guards: up to the brace that closes it (or one line, for
            // `mod tests;`).
            let mut depth = 0i64;
            for l in lines.by_ref() {
                depth += braces(l);
                if depth <= 0 && (l.contains('}') || l.trim_end().ends_with(';')) {
                    break;
                }
            }
            continue;
        }
        if t.is_empty() || t.starts_with("//") {
            continue;
        }
        count += 1;
    }
    count
}

/// `{` minus `}` on a line, not counting those inside string or char literals.
fn braces(line: &str) -> i64 {
    let mut n = 0;
    let mut in_str = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if in_str => {
                chars.next();
            }
            '"' => in_str = !in_str,
            '\'' if !in_str => {
                // A char literal such as '{' (lifetimes have no closing quote nearby).
                let rest: String = chars.clone().take(3).collect();
                if rest.len() >= 2 && rest.chars().nth(1) == Some('\'') {
                    chars.next();
                    chars.next();
                }
            }
            '{' if !in_str => n += 1,
            '}' if !in_str => n -= 1,
            '/' if !in_str && chars.peek() == Some(&'/') => break,
            _ => {}
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_code_not_comments_or_tests() {
        let text = "//! doc\nuse x;\n\n/// f\nfn f() {\n    let c = '{';\n}\n#[cfg(test)]\nmod tests {\n    fn g() {\n        \"}\";\n    }\n}\nfn after() {}\n";
        assert_eq!(code_lines(text), 5);
        assert_eq!(code_lines("#[cfg(test)]\nmod tests;\nfn a() {}\n"), 1);
    }
}
