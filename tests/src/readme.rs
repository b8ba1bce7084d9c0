//! The README's configuration snippets, read from README.md at test time so the tests run
//! exactly what operators are told to paste (there is no second copy to drift). A snippet is
//! the fenced code block after `<!-- snippet:NAME -->`, dedented to its fence.

use std::path::Path;

/// The snippet called `name`, or a panic naming what is missing.
pub fn snippet(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    extract(&text, name).unwrap_or_else(|| panic!("README.md has no snippet {name:?}"))
}

fn extract(text: &str, name: &str) -> Option<String> {
    let marker = format!("<!-- snippet:{name} -->");
    let after = &text[text.find(&marker)? + marker.len()..];
    let mut lines = after.lines().skip_while(|l| l.trim().is_empty());
    let fence = lines.next()?;
    let indent = fence.len() - fence.trim_start().len();
    if !fence.trim_start().starts_with("```") {
        return None;
    }
    let mut out = String::new();
    for line in lines {
        if line.trim_start().starts_with("```") {
            return Some(out);
        }
        out.push_str(line.get(indent..).unwrap_or(line.trim_start()));
        out.push('\n');
    }
    None
}
