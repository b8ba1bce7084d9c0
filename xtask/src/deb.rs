//! `cargo xtask deb`: the Debian package, `target/debian/mxscreen_<version>-<rev>_amd64.deb`.
//!
//! cargo-deb builds it from `[package.metadata.deb]` in filter-user/Cargo.toml. What the
//! package ships beside the binary that is generated from the code — man pages and shell
//! completions from the clap definitions, the packaged config — is written first by the
//! `mxscreen-assets` program (packaging/src/main.rs) into target/release/package-assets/,
//! where that metadata picks it up.

use std::{path::PathBuf, process::Command};

use anyhow::{Context as _, Result, bail};

use crate::util::{cargo, status, workspace_root};

/// Where `mxscreen-assets` writes; the `target/release/...` asset paths of the metadata.
const ASSETS: &str = "target/release/package-assets";

/// Builds the package and returns its path.
pub fn build() -> Result<PathBuf> {
    let root = workspace_root();
    // The release binary and the assets' generator in one cargo invocation: the same
    // features as `cargo xtask build --release`, so nothing is compiled twice. Built here,
    // not by cargo-deb: for assets it cannot attribute to a crate it builds the whole
    // workspace, eBPF crate included, for the host.
    status(cargo().args([
        "build",
        "--release",
        "-p",
        "filter-user",
        "-p",
        "mxscreen-packaging",
        "--bins",
    ]))?;
    status(Command::new(root.join("target/release/mxscreen-assets")).arg(root.join(ASSETS)))?;
    // Debian policy: man pages compressed with `gzip -9n` (no name or time stamp inside).
    let man = root.join(ASSETS).join("man");
    let mut gzip = Command::new("gzip");
    gzip.args(["-9nf"]);
    for page in std::fs::read_dir(&man)? {
        gzip.arg(page?.path());
    }
    status(&mut gzip)?;
    let out = cargo()
        .args(["deb", "-p", "filter-user", "--no-build"])
        .output()
        .context("running cargo deb (`cargo xtask setup` installs cargo-deb)")?;
    if !out.status.success() {
        bail!(
            "cargo deb failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // cargo-deb prints the path of what it built as its last line.
    let stdout = String::from_utf8_lossy(&out.stdout);
    let path = stdout
        .lines()
        .rev()
        .find(|l| l.trim_end().ends_with(".deb"))
        .map(|l| PathBuf::from(l.trim()))
        .context("cargo deb did not say where the package is")?;
    let path = if path.is_absolute() {
        path
    } else {
        root.join(path)
    };
    if !path.is_file() {
        bail!("cargo deb reported {} but it is not there", path.display());
    }
    Ok(path)
}
