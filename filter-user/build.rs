//! Builds the eBPF object (crate filter-ebpf, for bpfel-unknown-none, with the nightly
//! toolchain and bpf-linker) and leaves it in OUT_DIR for `include_bytes_aligned!`.
//!
//! Set `AYA_BUILD_SKIP=1` to skip it (read by aya-build) for `cargo check` or clippy on a
//! machine without bpf-linker; the resulting binary then cannot load the datapath.
use std::path::PathBuf;

use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let root_dir = manifest_dir.join("../filter-ebpf");
    let root_dir = root_dir.to_str().expect("workspace path is UTF-8");
    let package = Package {
        name: "filter-ebpf",
        root_dir,
        ..Default::default()
    };
    aya_build::build_ebpf([package], Toolchain::default())
}
