//! Builds the reference XDP programs of the benchmarks (crate bench-ebpf) the way
//! filter-user's build.rs builds the datapath, and leaves the object in OUT_DIR.
//! `AYA_BUILD_SKIP=1` skips it (read by aya-build), as for filter-user.
use std::path::PathBuf;

use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let root_dir = manifest_dir.join("../bench-ebpf");
    let root_dir = root_dir.to_str().expect("workspace path is UTF-8");
    let package = Package {
        name: "bench-ebpf",
        root_dir,
        ..Default::default()
    };
    aya_build::build_ebpf([package], Toolchain::default())
}
