//! `cargo xtask setup`: what a fresh Debian/Ubuntu machine needs, installed only when
//! missing, so a second run does nothing and says so. What is installed depends on what it
//! is for ([`Needs`]): building and running mxscreen never installs the test suites' Debian
//! packages (among them an MTA that would replace the host's own), and nothing ever removes
//! an installed package (see apt.rs).

use std::{fs, os::unix::fs::symlink, path::PathBuf, process::Command};

use anyhow::{Context as _, Result, bail};

use crate::{
    apt::{self, Apt},
    util::{cargo, status, succeeds},
};

/// What the machine is being set up for; each level includes the ones before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Needs {
    /// Build and run mxscreen (`build`, `run`, `lint`): the nightly's components, bpf-linker
    /// and the Debian packages building needs ([`apt::BUILD`]).
    Build,
    /// Also package it (`deb`): cargo-deb.
    Package,
    /// Also run the test suites and benchmarks (`test`, `bench`, `setup --tests`): their
    /// Debian packages ([`apt::TESTS`]) and the privately unpacked Postfix.
    Tests,
}

/// cargo-deb builds the Debian package (`cargo xtask deb`); a version that builds with the
/// workspace's rust-version.
const CARGO_DEB: &str = "cargo-deb@3.8.0";
const CARGO_DEB_VERSION: &str = "3.8.0";

/// bpf-linker must be built against the very LLVM the nightly rustc uses.
const BPF_LINKER: &str = "bpf-linker@0.13.0";
const BPF_LINKER_VERSION: &str = "bpf-linker 0.13.0";
const LLVM_FEATURE: &str = "llvm-22";
const NIGHTLY: &str = "nightly";

impl Needs {
    /// What it is for, in words.
    fn purpose(self) -> &'static str {
        match self {
            Needs::Build => "building and running mxscreen",
            Needs::Package => "building, running and packaging mxscreen",
            Needs::Tests => "building, packaging and testing mxscreen",
        }
    }

    /// The Debian packages this needs.
    fn debian_packages(self) -> Vec<(&'static str, &'static str)> {
        match self {
            Needs::Build | Needs::Package => apt::BUILD.to_vec(),
            Needs::Tests => [apt::BUILD, apt::TESTS].concat(),
        }
    }
}

/// Sets this machine up for `needs`; says what it installed, or that nothing was missing.
pub fn setup(needs: Needs) -> Result<()> {
    let mut did = Vec::new();
    let mut step = |done: bool, what: &'static str| {
        if done {
            did.push(what);
        }
    };
    step(
        Apt::default().ensure(&needs.debian_packages())?,
        "Debian packages",
    );
    step(rust_src()?, "nightly components");
    step(bpf_linker()?, "bpf-linker");
    if needs >= Needs::Package {
        step(cargo_deb()?, "cargo-deb");
    }
    if needs >= Needs::Tests {
        step(crate::postfix::unpack()?, "Postfix (unpacked)");
    }
    if did.is_empty() {
        eprintln!(
            "setup: nothing to do (what {} needs is in place)",
            needs.purpose()
        );
    } else {
        eprintln!("setup: installed {}", did.join(", "));
    }
    Ok(())
}

/// What only the test suites need on this machine, with the rest already set up for
/// [`Needs::Build`]: their Debian packages and the unpacked Postfix. `cargo xtask test` runs
/// it beside the debug build, which needs neither. Says what it installed.
pub fn setup_suites() -> Result<()> {
    let mut did = Vec::new();
    if Apt::default().ensure(&Needs::Tests.debian_packages())? {
        did.push("the suites' Debian packages");
    }
    if crate::postfix::unpack()? {
        did.push("Postfix (unpacked)");
    }
    if !did.is_empty() {
        eprintln!("setup: installed {}", did.join(", "));
    }
    Ok(())
}

/// Installs the Debian packages `needs` into the Debian root `root` (a container's file
/// system), exactly as [`setup`] does on this machine; the toolchain belongs to whoever
/// runs cargo, not to the root, and is left out. The package suite runs this in a root
/// with Postfix installed.
pub fn setup_root(needs: Needs, root: PathBuf) -> Result<()> {
    let apt = Apt { root: Some(root) };
    if !apt.ensure(&needs.debian_packages())? {
        eprintln!(
            "setup: nothing to do (the Debian packages {} needs are in place)",
            needs.purpose()
        );
    }
    Ok(())
}

fn rustup() -> Command {
    Command::new("rustup")
}

/// Components the nightly toolchain needs, each for a reason.
const NIGHTLY_COMPONENTS: &[(&str, &str)] = &[
    ("rust-src", "build-std=core for the bpf target"),
    (
        "rustfmt",
        "`cargo xtask lint`: the import grouping is a nightly rustfmt option",
    ),
    ("clippy", "`cargo xtask lint` of the eBPF crate"),
];

fn rust_src() -> Result<bool> {
    if !succeeds(rustup().args(["run", NIGHTLY, "rustc", "--version"])) {
        bail!(
            "the `{NIGHTLY}` toolchain is missing (the eBPF object is built with it): `rustup toolchain install {NIGHTLY}`"
        );
    }
    let installed = rustup()
        .args(["component", "list", "--installed", "--toolchain", NIGHTLY])
        .output()
        .context("rustup component list")?;
    let installed = String::from_utf8_lossy(&installed.stdout);
    let mut added = false;
    for (component, why) in NIGHTLY_COMPONENTS {
        if installed.lines().any(|l| l.starts_with(component)) {
            continue;
        }
        eprintln!("setup: adding {component} to the {NIGHTLY} toolchain ({why})");
        status(rustup().args(["component", "add", component, "--toolchain", NIGHTLY]))?;
        added = true;
    }
    Ok(added)
}

/// `cargo` of the nightly toolchain, run from the workspace root.
pub fn nightly_cargo() -> Command {
    let mut cmd = rustup();
    cmd.args(["run", NIGHTLY, "cargo"])
        .current_dir(crate::util::workspace_root());
    cmd
}

/// The nightly toolchain's sysroot.
fn nightly_sysroot() -> Result<PathBuf> {
    let out = rustup()
        .args(["run", NIGHTLY, "rustc", "--print", "sysroot"])
        .output()?;
    if !out.status.success() {
        bail!("cannot ask the {NIGHTLY} rustc for its sysroot");
    }
    Ok(PathBuf::from(String::from_utf8(out.stdout)?.trim()))
}

/// A directory shaped like an LLVM install (`lib/libLLVM.so` and friends) made of links to
/// the libLLVM that ships inside the nightly toolchain. bpf-linker is built against it and
/// keeps it as its library search path (RUNPATH), so it lives beside cargo's own files.
fn llvm_prefix() -> Result<PathBuf> {
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .context("neither CARGO_HOME nor HOME is set")?;
    Ok(cargo_home.join("mxscreen-llvm-prefix"))
}

fn bpf_linker() -> Result<bool> {
    let works = Command::new("rustup")
        .args(["run", NIGHTLY, "bpf-linker", "--version"])
        .output()
        .is_ok_and(|o| {
            o.status.success() && String::from_utf8_lossy(&o.stdout).trim() == BPF_LINKER_VERSION
        });
    if works {
        return Ok(false);
    }
    let sysroot = nightly_sysroot()?;
    let prefix = llvm_prefix()?;
    let lib = prefix.join("lib");
    fs::create_dir_all(&lib).with_context(|| format!("creating {}", lib.display()))?;
    let mut versioned = None;
    for entry in fs::read_dir(sysroot.join("lib"))? {
        let path = entry?.path();
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        if name.starts_with("libLLVM") && name.contains(".so") {
            link(&path, &lib.join(&name))?;
            if name.starts_with("libLLVM.so.") {
                versioned = Some(name);
            }
        }
    }
    let versioned =
        versioned.with_context(|| format!("no libLLVM.so.* in {}/lib", sysroot.display()))?;
    link(&lib.join(&versioned), &lib.join("libLLVM.so"))?;
    eprintln!(
        "setup: building {BPF_LINKER} against the {NIGHTLY} toolchain's LLVM ({versioned}); about a minute"
    );
    status(
        cargo()
            .args([
                "install",
                BPF_LINKER,
                "--locked",
                "--no-default-features",
                "--features",
                LLVM_FEATURE,
            ])
            .env("LLVM_PREFIX", &prefix),
    )?;
    Ok(true)
}

fn cargo_deb() -> Result<bool> {
    let works = cargo().args(["deb", "--version"]).output().is_ok_and(|o| {
        o.status.success() && String::from_utf8_lossy(&o.stdout).contains(CARGO_DEB_VERSION)
    });
    if works {
        return Ok(false);
    }
    eprintln!("setup: building {CARGO_DEB} (packages mxscreen as a .deb); a few minutes");
    status(cargo().args(["install", CARGO_DEB, "--locked"]))?;
    Ok(true)
}

fn link(target: &std::path::Path, at: &std::path::Path) -> Result<()> {
    if at.symlink_metadata().is_ok() {
        fs::remove_file(at)?;
    }
    symlink(target, at).with_context(|| format!("linking {} -> {}", at.display(), target.display()))
}
