//! Pinned maps live on a BPF filesystem. Systems without systemd (containers, minimal
//! hosts) may not mount one at /sys/fs/bpf; like Cilium, we mount it ourselves and say so.

use std::path::Path;

use anyhow::{Context as _, Result};
use nix::{
    mount::{MsFlags, mount},
    sys::statfs::{BPF_FS_MAGIC, statfs},
};

/// Where the kernel's BPF filesystem is conventionally mounted.
pub const BPFFS_ROOT: &str = "/sys/fs/bpf";

/// Makes sure `root` is a mounted bpffs; returns `true` if this call mounted it.
pub fn ensure_mounted(root: &Path) -> Result<bool> {
    if is_bpffs(root) {
        return Ok(false);
    }
    std::fs::create_dir_all(root).with_context(|| format!("creating {}", root.display()))?;
    mount(
        Some("bpffs"),
        root,
        Some("bpf"),
        MsFlags::empty(),
        None::<&str>,
    )
    .with_context(|| {
        format!(
            "mounting the BPF filesystem at {} (needs CAP_SYS_ADMIN)",
            root.display()
        )
    })?;
    tracing::info!(path = %root.display(), "mounted the BPF filesystem (it was not mounted)");
    Ok(true)
}

/// Whether `path` lies on a BPF filesystem (pins can only live there).
pub fn is_bpffs(path: &Path) -> bool {
    statfs(path).is_ok_and(|s| s.filesystem_type() == BPF_FS_MAGIC)
}
