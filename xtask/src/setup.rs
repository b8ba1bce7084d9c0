//! `cargo xtask setup`: everything a fresh Debian/Ubuntu machine needs, installed only when
//! missing, so a second run does nothing and says so.

use std::{fs, os::unix::fs::symlink, path::PathBuf, process::Command};

use anyhow::{Context as _, Result, bail};

use crate::util::{cargo, is_root, status, succeeds};

/// Debian packages the build and the test suites use, each for a reason:
const DEBIAN_PACKAGES: &[(&str, &str)] = &[
    ("iproute2", "ip netns / veth for the namespace tests"),
    ("bpftool", "map memory figures in the datapath benchmark"),
    ("rbldnsd", "DNSBL/DNSWL zones for the reputation tests"),
    (
        "nsd",
        "authoritative reverse/forward zones for the rDNS tests",
    ),
    (
        "unbound",
        "a real recursive resolver between mxscreen and the zones",
    ),
    ("exim4-daemon-light", "the MTA of the end-to-end testbed"),
    ("swaks", "real SMTP clients in the end-to-end testbed"),
    (
        "libio-socket-inet6-perl",
        "swaks needs it to send over IPv6 (the end-to-end testbed)",
    ),
    ("dnsutils", "dig, to wait for DNS servers to answer"),
    (
        "sasl2-bin",
        "saslpasswd2: the e2e Postfix's submission user (AUTH on its 587)",
    ),
    (
        "redis-server",
        "the shared bus of the fleet tests (redis-server and redis-cli)",
    ),
    (
        "nftables",
        "`bench drop`: the nftables netdev-ingress set mxscreen is measured against",
    ),
    (
        "iptables",
        "`bench drop`: the ip6tables raw-table rule (legacy backend) in front of ipset",
    ),
    (
        "ipset",
        "`bench drop`: the ipset hash:ip set mxscreen is measured against",
    ),
    ("zlib1g-dev", "bpf-linker links against zlib"),
    (
        "prometheus",
        "promtool, to check the metrics endpoint's output (the package suite)",
    ),
    (
        "systemd-container",
        "systemd-nspawn, to boot a Debian container and install the .deb in it",
    ),
    (
        "mmdebstrap",
        "builds that container's root from Debian's packages",
    ),
    (
        "libcap2-bin",
        "capsh, to run the daemon with exactly the unit's capabilities",
    ),
    ("gcc", "building bpf-linker and C-backed crates"),
];

/// cargo-deb builds the Debian package (`cargo xtask deb`); a version that builds with the
/// workspace's rust-version.
const CARGO_DEB: &str = "cargo-deb@3.8.0";
const CARGO_DEB_VERSION: &str = "3.8.0";

/// bpf-linker must be built against the very LLVM the nightly rustc uses.
const BPF_LINKER: &str = "bpf-linker@0.13.0";
const BPF_LINKER_VERSION: &str = "bpf-linker 0.13.0";
const LLVM_FEATURE: &str = "llvm-22";
const NIGHTLY: &str = "nightly";

/// Runs every step; returns whether anything was installed.
pub fn setup() -> Result<bool> {
    let mut did = Vec::new();
    if debian_packages()? {
        did.push("Debian packages");
    }
    if rust_src()? {
        did.push("nightly components");
    }
    if bpf_linker()? {
        did.push("bpf-linker");
    }
    if crate::postfix::unpack()? {
        did.push("Postfix (unpacked)");
    }
    if cargo_deb()? {
        did.push("cargo-deb");
    }
    if did.is_empty() {
        eprintln!(
            "setup: nothing to do (Debian packages, nightly components, bpf-linker, the unpacked Postfix and cargo-deb are in place)"
        );
    } else {
        eprintln!("setup: installed {}", did.join(", "));
    }
    Ok(!did.is_empty())
}

fn debian_packages() -> Result<bool> {
    let wanted: Vec<&str> = DEBIAN_PACKAGES.iter().map(|(p, _)| *p).collect();
    let missing = missing_packages(&wanted);
    if missing.is_empty() {
        return Ok(false);
    }
    for (p, why) in DEBIAN_PACKAGES.iter().filter(|(p, _)| missing.contains(p)) {
        eprintln!("setup: installing {p} ({why})");
    }
    apt_install(&missing)?;
    Ok(true)
}

/// Those of `packages` that dpkg does not have installed.
pub fn missing_packages<'a>(packages: &[&'a str]) -> Vec<&'a str> {
    packages
        .iter()
        .copied()
        .filter(|p| {
            !Command::new("dpkg-query")
                .args(["-W", "-f=${Status}", p])
                .output()
                .is_ok_and(|o| o.status.success() && o.stdout.starts_with(b"install ok installed"))
        })
        .collect()
}

/// `apt-get install` of `missing`, as root, without starting any packaged daemon.
pub fn apt_install(missing: &[&str]) -> Result<()> {
    if !is_root() {
        bail!(
            "missing Debian packages: {} — run `sudo cargo xtask setup` or `sudo apt-get install {}`",
            missing.join(" "),
            missing.join(" ")
        );
    }
    // Installing a daemon package must not start the daemon: the tests run their own copies
    // on addresses they choose. policy-rc.d answering 101 is Debian's way to say so.
    let policy = PathBuf::from("/usr/sbin/policy-rc.d");
    let own_policy = !policy.exists();
    if own_policy {
        fs::write(
            &policy,
            "#!/bin/sh\n# written by cargo xtask setup for the duration of apt-get\nexit 101\n",
        )?;
        fs::set_permissions(&policy, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    }
    let result = (|| {
        status(Command::new("apt-get").args(["update", "-q"]))?;
        status(
            Command::new("apt-get")
                .args(["install", "-y", "-q", "--no-install-recommends"])
                .args(missing)
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )
    })();
    if own_policy {
        let _ = fs::remove_file(&policy);
    }
    result
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
