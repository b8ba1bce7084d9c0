//! How a build script builds an eBPF crate: with aya-build (the nightly toolchain,
//! bpf-linker, `-Z build-std=core`), once per change for every cargo profile.
//!
//! aya-build gives each build-script run its own cargo target directory under `OUT_DIR`,
//! and cargo gives every profile (dev, test, release, clippy's check) its own `OUT_DIR`: the
//! same no_std object, `core` and all, was compiled again for each, about a minute apiece.
//! Here every profile's build script hands aya-build one shared directory,
//! `<target>/ebpf/`, so the inner cargo build runs there and cargo's own fingerprints say
//! whether anything needs compiling; the object is then copied into this run's `OUT_DIR`.
//! A source change is therefore never answered with a stale object: cargo decides, exactly
//! as it does for the host crates. A lock file serializes build scripts of concurrent cargo
//! invocations (say `cargo build` and `cargo build --release` at once) around the build
//! and the copy.
//!
//! Included with `#[path]` by filter-user/build.rs and tests/build.rs (one copy of the
//! logic for both objects), and by xtask's test of it (xtask/tests/ebpf_build.rs).

use std::{
    env,
    ffi::OsString,
    fs::{self, File},
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result};
use aya_build::{Package, Toolchain};

/// aya-build's switch to skip the eBPF build (for `cargo check` without bpf-linker).
const SKIP: &str = "AYA_BUILD_SKIP";

/// Builds the eBPF crate `name` at `crate_dir` and leaves its object at `$OUT_DIR/<name>`.
/// `inputs` are further files or directories the object depends on (shared crates,
/// Cargo.lock, the workspace manifest with its profiles): a change to any of them runs this
/// build script again, and the inner cargo build then recompiles what changed.
pub fn build(name: &str, crate_dir: &Path, inputs: &[PathBuf]) -> Result<()> {
    let crate_dir = crate_dir
        .canonicalize()
        .with_context(|| format!("{}", crate_dir.display()))?;
    let root_dir = crate_dir
        .to_str()
        .context("the crate's path is not UTF-8")?;
    let package = || Package {
        name,
        root_dir,
        ..Default::default()
    };
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").context("OUT_DIR is not set")?);
    let shared = match target_dir(&out_dir) {
        Some(target) if env::var_os(SKIP).is_none() => target.join("ebpf"),
        // Skipped (aya-build says so and builds nothing), or a layout we do not know: as
        // aya-build does on its own, in this run's OUT_DIR.
        _ => return aya_build::build_ebpf([package()], Toolchain::default()),
    };
    for input in inputs {
        println!("cargo:rerun-if-changed={}", input.display());
    }
    // A new nightly (a new rustc, so a new `core`) must build the object again.
    if let Some(rustc) = nightly_rustc() {
        println!("cargo:rerun-if-changed={}", rustc.display());
    }
    println!("cargo:rerun-if-env-changed=RUSTC_BOOTSTRAP");

    fs::create_dir_all(&shared).with_context(|| format!("creating {}", shared.display()))?;
    let lock = File::create(shared.join(format!("{name}.lock")))?;
    lock.lock()
        .context("locking the shared eBPF build directory")?;
    // aya-build builds in `$OUT_DIR/aya-build/target/<name>` and copies the object to
    // `$OUT_DIR/<name>`: pointed at the shared directory for the call.
    set_out_dir(shared.as_os_str().to_owned());
    let built = aya_build::build_ebpf([package()], Toolchain::default());
    set_out_dir(out_dir.clone().into_os_string());
    built?;
    let object = shared.join(name);
    fs::copy(&object, out_dir.join(name))
        .with_context(|| format!("copying {} into {}", object.display(), out_dir.display()))?;
    Ok(())
}

fn set_out_dir(dir: OsString) {
    // SAFETY: a build script is one thread here (aya-build joins the threads it starts
    // before it returns), so nothing reads the environment while it changes.
    unsafe { env::set_var("OUT_DIR", dir) };
}

/// The cargo target directory `out_dir` lies in: the nearest ancestor holding the
/// `CACHEDIR.TAG` cargo writes at its root.
fn target_dir(out_dir: &Path) -> Option<PathBuf> {
    out_dir
        .ancestors()
        .find(|dir| dir.join("CACHEDIR.TAG").is_file())
        .map(Path::to_path_buf)
}

/// The nightly toolchain's rustc binary (the one aya-build runs), when rustup knows it.
fn nightly_rustc() -> Option<PathBuf> {
    let out = Command::new("rustup")
        .args(["which", "--toolchain", "nightly", "rustc"])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}
