//! The end-to-end testbed's Postfix: Debian's postfix package unpacked privately (it
//! conflicts with exim4 as a package, so it is never installed), plus the shared libraries it
//! links against, which do install beside Exim. The tests run it from here with their own
//! main.cf/master.cf (tests/src/postfix.rs).

use std::{fs, path::Path, process::Command};

use anyhow::{Context as _, Result, bail};

use crate::{
    apt::Apt,
    util::{is_root, status},
};

/// Where the package is unpacked (tests/src/postfix.rs `POSTFIX_DIR`, the same path).
const POSTFIX_DIR: &str = "/var/cache/mxscreen-tests/postfix";

/// Downloads and unpacks postfix if it is not there, and installs the libraries its
/// binaries need; returns whether anything was done.
pub fn unpack() -> Result<bool> {
    let dir = Path::new(POSTFIX_DIR);
    let root = dir.join("root");
    let deb = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"));
    if let Some(deb) = &deb
        && root.join("usr/lib/postfix/sbin/master").is_file()
        && missing_libraries(deb)?.is_empty()
    {
        return Ok(false);
    }
    if !is_root() {
        bail!(
            "unpacking Postfix for the end-to-end tests needs root: run `sudo -E cargo xtask setup --tests`"
        );
    }
    fs::create_dir_all(dir).with_context(|| format!("creating {POSTFIX_DIR}"))?;
    let deb = match deb {
        Some(d) => d,
        None => {
            eprintln!(
                "setup: downloading Debian's postfix package into {POSTFIX_DIR} (the e2e testbed's second MTA)"
            );
            status(Command::new("apt-get").args(["update", "-q"]))?;
            status(
                Command::new("apt-get")
                    .args(["download", "-q", "postfix"])
                    .current_dir(dir),
            )?;
            fs::read_dir(dir)?
                .flatten()
                .map(|e| e.path())
                .find(|p| p.extension().is_some_and(|e| e == "deb"))
                .context("apt-get download postfix left no .deb")?
        }
    };
    let missing = missing_libraries(&deb)?;
    if !missing.is_empty() {
        eprintln!(
            "setup: installing Postfix's libraries: {}",
            missing.join(" ")
        );
        let missing: Vec<&str> = missing.iter().map(String::as_str).collect();
        Apt::default().install(&missing)?;
    }
    let _ = fs::remove_dir_all(&root);
    status(Command::new("dpkg").arg("-x").arg(&deb).arg(&root))?;
    Ok(true)
}

/// The shared-library packages (`lib*`) among the package's dependencies that are not
/// installed.
fn missing_libraries(deb: &Path) -> Result<Vec<String>> {
    let out = Command::new("dpkg-deb")
        .args(["-f"])
        .arg(deb)
        .arg("Depends")
        .output()
        .context("dpkg-deb -f")?;
    if !out.status.success() {
        bail!("dpkg-deb -f {} Depends failed", deb.display());
    }
    let depends = String::from_utf8_lossy(&out.stdout).into_owned();
    let libs: Vec<&str> = depends
        .split(',')
        .filter_map(|alt| alt.split('|').next())
        .filter_map(|d| d.split_whitespace().next())
        .filter(|name| name.starts_with("lib"))
        .collect();
    Ok(Apt::default()
        .missing(&libs)?
        .into_iter()
        .map(str::to_owned)
        .collect())
}
