//! Builds the eBPF object (crate filter-ebpf, for bpfel-unknown-none, with the nightly
//! toolchain and bpf-linker) and leaves it in OUT_DIR for `include_bytes_aligned!`. The
//! build itself runs once per change for all profiles, in `target/ebpf/`: see
//! xtask/ebpf_build.rs.
//!
//! Set `AYA_BUILD_SKIP=1` to skip it (read by aya-build) for `cargo check` or clippy on a
//! machine without bpf-linker; the resulting binary then cannot load the datapath.
use std::path::PathBuf;

#[path = "../xtask/ebpf_build.rs"]
mod ebpf_build;

fn main() -> anyhow::Result<()> {
    let workspace = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("..");
    ebpf_build::build(
        "filter-ebpf",
        &workspace.join("filter-ebpf"),
        &[
            // The map types the datapath is made of; Cargo.lock for aya-ebpf's version,
            // the workspace manifest for the eBPF crates' profiles.
            workspace.join("filter-common"),
            workspace.join("Cargo.lock"),
            workspace.join("Cargo.toml"),
        ],
    )
}
