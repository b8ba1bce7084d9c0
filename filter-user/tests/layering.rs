//! The README's layering line held against the code: every module of `filter-user/src` is
//! placed on the line, and each `crate::` path it uses (outside comments and its tests) names
//! a module further down — so imports only point down the line and modules form no cycle.
//! Read as text, like the README's snippets: a path spelled another way (`super::super`)
//! escapes it.

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
};

/// The line after "The layering:" up to its full stop, as layers of names, top first.
fn readme_layers() -> Vec<Vec<String>> {
    let readme = Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    let text = fs::read_to_string(&readme).expect("reading README.md");
    let start = text
        .find("The layering:")
        .expect("README.md has a line \"The layering: ...\"")
        + "The layering:".len();
    let line = &text[start..];
    let line = &line[..line
        .find(".\n")
        .expect("the layering line ends with a full stop")];
    line.split('→')
        .map(|layer| layer.split('/').map(|m| m.trim().to_owned()).collect())
        .collect()
}

/// The `crate::` modules a source file names, outside comments and `#[cfg(test)]` code.
fn crate_paths(source: &str) -> Vec<String> {
    let code = source.split("#[cfg(test)]").next().unwrap_or(source);
    let mut out = Vec::new();
    for line in code.lines().filter(|l| !l.trim_start().starts_with("//")) {
        let mut rest = line;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                out.push(name);
            }
        }
    }
    // `use crate::{a, b::c, d::{e, f}};`: the names at the top of each group.
    let mut rest = code;
    while let Some(at) = rest.find("crate::{") {
        rest = &rest[at + "crate::{".len()..];
        let (mut depth, mut name, mut first) = (0, String::new(), true);
        for c in rest.chars() {
            if c.is_alphanumeric() || c == '_' {
                if depth == 0 && first {
                    name.push(c);
                }
                continue;
            }
            if !name.is_empty() {
                out.push(std::mem::take(&mut name));
                first = false;
            }
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => break,
                '}' => depth -= 1,
                ',' if depth == 0 => first = true,
                _ => {}
            }
        }
    }
    out
}

/// Every source file under `dir`.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("reading the source tree") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn imports_only_point_down_the_readme_layering() {
    let layers = readme_layers();
    let rank: BTreeMap<&str, usize> = layers
        .iter()
        .enumerate()
        .flat_map(|(i, l)| l.iter().map(move |m| (m.as_str(), i)))
        .collect();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut wrong = Vec::new();
    for file in files {
        let rel = file.strip_prefix(&src).expect("under src");
        let first = rel.components().next().expect("a path");
        let module = first
            .as_os_str()
            .to_str()
            .expect("UTF-8")
            .trim_end_matches(".rs");
        if matches!(module, "lib" | "main") {
            continue;
        }
        let Some(&mine) = rank.get(module) else {
            wrong.push(format!("{module} is not on the layering line"));
            continue;
        };
        let source = fs::read_to_string(&file).expect("reading a source file");
        for used in crate_paths(&source) {
            match rank.get(used.as_str()) {
                Some(&r) if r > mine || used == module => {}
                Some(_) => wrong.push(format!(
                    "{} uses crate::{used}, which is not below it",
                    rel.display()
                )),
                None => wrong.push(format!(
                    "{} uses crate::{used}, not on the layering line",
                    rel.display()
                )),
            }
        }
    }
    wrong.sort();
    wrong.dedup();
    assert!(
        wrong.is_empty(),
        "README.md's layering line ({layers:?}) does not match the code:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn grouped_imports_are_read() {
    let source = "use crate::{\n    a,\n    b::{self, C},\n    d::e::F,\n};\n// crate::g\nfn f() { crate::h::i(); }\n#[cfg(test)]\nuse crate::j;\n";
    let mut got = crate_paths(source);
    got.sort();
    assert_eq!(got, ["a", "b", "d", "h"]);
}
