//! Files the daemon writes whole and must never leave half-written: a temp file beside the
//! target, fsync, rename over it, fsync of the directory (the rename is durable only then).
//! A crash at any point leaves the old file or the new one, never a mix. One that cannot be
//! read is moved aside, never written over.

use std::{
    fs::{self, File},
    io::Write as _,
    path::{Path, PathBuf},
};

/// Writes `body` as the whole of `path` (its directory created if missing). On error the
/// temp file is removed and `path` is as it was.
pub fn write(path: &Path, body: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    fs::create_dir_all(dir)?;
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp-{}", std::process::id()));
    let tmp = dir.join(name);
    let write = || -> std::io::Result<()> {
        let mut f = File::create(&tmp)?;
        f.write_all(body)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    };
    write().inspect_err(|_| {
        let _ = fs::remove_file(&tmp);
    })
}

/// Moves `path` aside, to `<path>.corrupt-<at_unix>`, and returns where: a file the daemon
/// cannot read is kept for the operator, never written over.
pub fn move_aside(path: &Path, at_unix: u64) -> std::io::Result<PathBuf> {
    let mut aside = path.as_os_str().to_owned();
    aside.push(format!(".corrupt-{at_unix}"));
    let aside = PathBuf::from(aside);
    fs::rename(path, &aside)?;
    Ok(aside)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_whole_file_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/f.json");
        write(&path, b"first, longer\n").unwrap();
        write(&path, b"second\n").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"second\n");
        let names: Vec<_> = fs::read_dir(path.parent().unwrap()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }
}
