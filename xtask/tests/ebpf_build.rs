//! The eBPF build of xtask/ebpf_build.rs, run for real: a scratch workspace whose build
//! script builds a tiny eBPF crate exactly as filter-user/build.rs builds the datapath, in
//! two profiles. The object is compiled once per change, never once per profile, and a
//! change — to the eBPF crate or to a crate it depends on — always reaches both profiles'
//! binaries: never a stale object.
//!
//! Needs the nightly toolchain with rust-src and bpf-linker (`cargo xtask setup`); works
//! offline. The scratch crates are built in the workspace's target directory, so a second
//! run compiles only what changed.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

/// The workspace root (xtask is one level below it).
fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn write(path: &Path, text: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
}

/// The scratch workspace: `host` (a binary embedding the object, printing the marker it
/// holds), `probe` (the eBPF crate) and `common` (a crate probe depends on, as filter-ebpf
/// depends on filter-common).
fn scratch(dir: &Path) {
    write(
        &dir.join("Cargo.toml"),
        "[workspace]\nresolver = \"3\"\nmembers = [\"host\", \"probe\", \"common\"]\n\
         default-members = [\"host\"]\n\n[profile.release.package.probe]\ncodegen-units = 1\n",
    );
    // The workspace's lock file pins aya-build and its dependencies to what is downloaded.
    fs::copy(workspace().join("Cargo.lock"), dir.join("Cargo.lock")).unwrap();
    write(
        &dir.join("host/Cargo.toml"),
        "[package]\nname = \"host\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n\
         [build-dependencies]\nanyhow = \"1\"\naya-build = { version = \"0.2.0\", default-features = false }\n",
    );
    write(
        &dir.join("host/build.rs"),
        &format!(
            "#[path = {:?}]\nmod ebpf_build;\n\n\
             fn main() -> anyhow::Result<()> {{\n\
             \x20   let dir = std::path::PathBuf::from(std::env::var(\"CARGO_MANIFEST_DIR\")?).join(\"..\");\n\
             \x20   ebpf_build::build(\"probe\", &dir.join(\"probe\"), &[dir.join(\"common\")])\n}}\n",
            workspace()
                .join("xtask/ebpf_build.rs")
                .display()
                .to_string()
        ),
    );
    write(
        &dir.join("host/src/main.rs"),
        "static OBJECT: &[u8] = include_bytes!(concat!(env!(\"OUT_DIR\"), \"/probe\"));\n\n\
         fn main() {\n\
         \x20   let found: Vec<&str> = [\"MARKER_A\", \"MARKER_B\", \"MARKER_C\"]\n\
         \x20       .into_iter()\n\
         \x20       .filter(|m| OBJECT.windows(8).any(|w| w == m.as_bytes()))\n\
         \x20       .collect();\n\
         \x20   println!(\"{}\", found.join(\",\"));\n}\n",
    );
    write(
        &dir.join("common/Cargo.toml"),
        "[package]\nname = \"common\"\nversion = \"0.1.0\"\nedition = \"2024\"\n",
    );
    write(&dir.join("common/src/lib.rs"), &common("MARKER_A"));
    write(
        &dir.join("probe/Cargo.toml"),
        "[package]\nname = \"probe\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n\
         [dependencies]\ncommon = { path = \"../common\" }\n\n\
         [[bin]]\nname = \"probe\"\npath = \"src/main.rs\"\n",
    );
    write(&dir.join("probe/src/main.rs"), &probe("common::MARKER"));
}

fn common(marker: &str) -> String {
    format!("#![no_std]\npub static MARKER: [u8; 8] = *b\"{marker}\";\n")
}

/// An XDP program returning a byte of `marker` (so the marker's bytes are in the object).
fn probe(marker: &str) -> String {
    format!(
        "#![no_std]\n#![no_main]\n\n\
         #[unsafe(no_mangle)]\n#[unsafe(link_section = \"xdp\")]\n\
         pub extern \"C\" fn probe(_ctx: *mut core::ffi::c_void) -> u32 {{\n\
         \x20   let m: &[u8; 8] = &{marker};\n\
         \x20   u32::from(unsafe {{ core::ptr::read_volatile(&m[7]) }})\n}}\n\n\
         #[allow(dead_code)]\nstatic OWN: [u8; 8] = *b\"MARKER_C\";\n\n\
         #[panic_handler]\nfn panic(_: &core::panic::PanicInfo) -> ! {{\n    loop {{}}\n}}\n"
    )
}

struct Build {
    /// The markers the host binary found in its object.
    marker: String,
    /// Whether the inner (eBPF) build compiled the probe crate in this run.
    compiled_probe: bool,
}

/// `cargo build [--release]` of the scratch workspace, then its host binary run.
fn build(dir: &Path, target: &Path, release: bool) -> Build {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.arg("build")
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", target)
        .env("CARGO_NET_OFFLINE", "true")
        // aya-build's switch, in case the caller set it: this test is about building.
        .env_remove("AYA_BUILD_SKIP");
    if release {
        cmd.arg("--release");
    }
    let out = cmd.output().expect("cargo");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{cmd:?}:\n{stderr}");
    let bin = target
        .join(if release { "release" } else { "debug" })
        .join("host");
    let run = Command::new(&bin).output().expect("host binary");
    Build {
        marker: String::from_utf8_lossy(&run.stdout).trim().to_owned(),
        // aya-build passes the inner cargo's output on as warnings; a build script that
        // did not run replays its last warnings, so only the first lines of this run count.
        compiled_probe: stderr.contains("Compiling probe v0.1.0"),
    }
}

#[test]
fn the_ebpf_object_is_built_once_per_change_and_never_stale() {
    let dir = tempfile::tempdir().unwrap();
    scratch(dir.path());
    // The workspace's own target directory: the build scripts' dependencies (aya-build and
    // what it needs) are the ones the workspace's build already compiled, so only the scratch
    // crates are built here.
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| workspace().join("target"), PathBuf::from);

    // First build: the object is compiled (in the shared directory), then the other profile
    // takes it from there.
    let dev = build(dir.path(), &target, false);
    assert_eq!(dev.marker, "MARKER_A");
    assert!(
        dev.compiled_probe,
        "the first build compiles the eBPF crate"
    );
    let release = build(dir.path(), &target, true);
    assert_eq!(release.marker, "MARKER_A");
    assert!(
        !release.compiled_probe,
        "the second profile compiled the unchanged eBPF crate again"
    );

    // A crate the eBPF crate depends on changes: both profiles get the new object.
    write(&dir.path().join("common/src/lib.rs"), &common("MARKER_B"));
    let dev = build(dir.path(), &target, false);
    assert_eq!(
        dev.marker, "MARKER_B",
        "a stale object after a dependency changed"
    );
    let release = build(dir.path(), &target, true);
    assert_eq!(
        release.marker, "MARKER_B",
        "a stale object in the other profile"
    );
    assert!(!release.compiled_probe);

    // The eBPF crate itself changes.
    write(&dir.path().join("probe/src/main.rs"), &probe("OWN"));
    let release = build(dir.path(), &target, true);
    assert_eq!(
        release.marker, "MARKER_C",
        "a stale object after the crate changed"
    );
    assert!(release.compiled_probe);
    let dev = build(dir.path(), &target, false);
    assert_eq!(dev.marker, "MARKER_C");
    assert!(!dev.compiled_probe);

    // Nothing changed: nothing is compiled, the object stays.
    let again = build(dir.path(), &target, false);
    assert_eq!(again.marker, "MARKER_C");
    assert!(!again.compiled_probe);
}
