//! Builds the reference XDP programs of the benchmarks (crate bench-ebpf) the way
//! filter-user's build.rs builds the datapath (once per change, in `target/ebpf/`; see
//! xtask/ebpf_build.rs), and leaves the object in OUT_DIR.
//! `AYA_BUILD_SKIP=1` skips it (read by aya-build), as for filter-user.
use std::path::PathBuf;

#[path = "../xtask/ebpf_build.rs"]
mod ebpf_build;

fn main() -> anyhow::Result<()> {
    let workspace = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("..");
    ebpf_build::build(
        "bench-ebpf",
        &workspace.join("bench-ebpf"),
        &[workspace.join("Cargo.lock"), workspace.join("Cargo.toml")],
    )
}
