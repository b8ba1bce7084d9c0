use which::which;

/// Building this crate for the bpf target links with bpf-linker, so a new bpf-linker (for
/// example one rebuilt by `cargo xtask setup` against a new LLVM) must trigger a rebuild.
fn main() {
    match which("bpf-linker") {
        Ok(path) => println!("cargo:rerun-if-changed={}", path.display()),
        Err(_) => println!("cargo:warning=bpf-linker not found on PATH; run `cargo xtask setup`"),
    }
}
