//! The embedded eBPF object, how big its maps are, and where they are pinned.

use std::{
    borrow::Cow,
    mem::size_of,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result};
use aya::{
    Ebpf, EbpfLoader,
    maps::MapInfo,
    programs::{SchedClassifier, Xdp},
};
use filter_common::{
    Counter, DatapathConfig, ListEntry, Seen, Verdict, map_names as m, program_names,
};

use super::{bpffs, sizes::MapSizes};

/// The datapath object, built by build.rs from the filter-ebpf crate.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/filter-ebpf"));

/// Default pin directory: maps here survive daemon restarts and are readable by tools.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/mxscreen";

/// Expected shape of one map, to detect a pin left by an incompatible build or size.
struct Shape {
    name: &'static str,
    key_size: usize,
    value_size: usize,
    max_entries: u32,
}

/// The shape of every map, from the shared types. A unit test checks these against what
/// the kernel reports for a freshly loaded object, so this table cannot drift silently.
fn shapes(sizes: &MapSizes) -> [Shape; 12] {
    const LPM4: usize = 4 + 4;
    const LPM16: usize = 4 + 16;
    let s = |name, key_size, value_size, max_entries| Shape {
        name,
        key_size,
        value_size,
        max_entries,
    };
    [
        s(m::CONFIG, 4, size_of::<DatapathConfig>(), 1),
        s(m::COUNTERS, 4, size_of::<u64>(), Counter::COUNT),
        s(m::ALLOW_V4, LPM4, size_of::<ListEntry>(), sizes.allow),
        s(m::ALLOW_V6, LPM16, size_of::<ListEntry>(), sizes.allow),
        s(m::DENY_V4, LPM4, size_of::<ListEntry>(), sizes.deny),
        s(m::DENY_V6, LPM16, size_of::<ListEntry>(), sizes.deny),
        s(m::VERDICTS_V4, 4, size_of::<Verdict>(), sizes.verdicts),
        s(m::VERDICTS_V6, 16, size_of::<Verdict>(), sizes.verdicts),
        s(m::SEEN_V4, 4, size_of::<Seen>(), sizes.seen),
        s(m::SEEN_V6, 16, size_of::<Seen>(), sizes.seen),
        s(m::BUCKETS_V4, 4, size_of::<u64>(), sizes.buckets),
        s(m::BUCKETS_V6, 16, size_of::<u64>(), sizes.buckets),
    ]
}

/// How to load the datapath.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    pub sizes: MapSizes,
    /// Pin (and reuse) every map but the event ring under this directory. `None` keeps all
    /// maps private to the process, as tests and benchmarks want.
    pub pin_dir: Option<PathBuf>,
}

/// Loads the object, sizes and pins its maps, and loads both programs into the kernel
/// (running the verifier), ready for [`super::attach`].
pub fn load(opts: &LoadOptions) -> Result<Ebpf> {
    let mut loader = EbpfLoader::new();
    let shapes = shapes(&opts.sizes);
    for shape in &shapes {
        loader.map_max_entries(shape.name, shape.max_entries);
    }
    if let Some(dir) = &opts.pin_dir {
        if dir.starts_with(bpffs::BPFFS_ROOT) {
            bpffs::ensure_mounted(Path::new(bpffs::BPFFS_ROOT))?;
        }
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating pin directory {}", dir.display()))?;
        for shape in &shapes {
            let path = dir.join(shape.name);
            remove_incompatible_pin(&path, shape)?;
            loader.map_pin_path(shape.name, Cow::Owned(path));
        }
    }
    let mut ebpf = loader.load(OBJECT).context(
        "loading the eBPF object (needs root or CAP_BPF+CAP_NET_ADMIN; a pinned map from \
         another version may also clash: remove /sys/fs/bpf/mxscreen)",
    )?;
    let xdp: &mut Xdp = program(&mut ebpf, program_names::XDP)?.try_into()?;
    xdp.load().context("verifier rejected the XDP program")?;
    let tc: &mut SchedClassifier = program(&mut ebpf, program_names::TC)?.try_into()?;
    tc.load().context("verifier rejected the tc program")?;
    Ok(ebpf)
}

fn program<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut aya::programs::Program> {
    ebpf.program_mut(name)
        .with_context(|| format!("program {name} missing from the eBPF object"))
}

/// A pinned map whose shape differs (another mxscreen version, or changed sizes) cannot be
/// reused. Pins are only a cache — verdicts are re-resolved, lists are rebuilt from the
/// config and the state file — so an incompatible pin is removed, and the fact logged.
fn remove_incompatible_pin(path: &Path, want: &Shape) -> Result<()> {
    if !path.exists() {
        return Ok(());
    }
    let stale = match MapInfo::from_pin(path) {
        Ok(info) => {
            info.key_size() as usize != want.key_size
                || info.value_size() as usize != want.value_size
                || info.max_entries() != want.max_entries
        }
        Err(_) => true,
    };
    if stale {
        tracing::warn!(pin = %path.display(), "pinned map has another shape (new version or sizes); starting it afresh");
        std::fs::remove_file(path)
            .with_context(|| format!("removing stale pin {}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The object must define every map named in filter-common, and nothing else.
    #[test]
    fn object_defines_exactly_the_shared_map_names() {
        let obj = aya_obj_names();
        let mut want: Vec<&str> = m::ALL.to_vec();
        want.sort_unstable();
        assert_eq!(obj, want);
    }

    fn aya_obj_names() -> Vec<String> {
        // Parse without loading (no privileges needed): aya exposes the object's maps only
        // after load, so read the ELF symbol table of the maps section directly.
        let obj = aya_obj::Object::parse(OBJECT).expect("parse eBPF object");
        let mut names: Vec<String> = obj.maps.keys().cloned().collect();
        names.sort_unstable();
        names
    }

    #[test]
    fn shapes_cover_every_pinned_map() {
        let names: Vec<&str> = shapes(&MapSizes::default())
            .iter()
            .map(|s| s.name)
            .collect();
        for name in m::ALL {
            assert!(
                name == m::EVENTS || names.contains(&name),
                "{name} has no shape"
            );
        }
    }
}
