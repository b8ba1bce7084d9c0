//! The embedded eBPF object, how big its maps are, and where they are pinned.

use std::{
    borrow::Cow,
    mem::size_of,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result};
use aya::{
    Ebpf, EbpfLoader,
    maps::{MapInfo, MapType},
    programs::{SchedClassifier, Xdp},
};
use filter_common::{Counter, DatapathConfig, Peer, map_names as m, program_names};

use super::{bpffs, sizes::MapSizes};

/// The datapath object, built by build.rs from the filter-ebpf crate.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/filter-ebpf"));

/// Default pin directory: maps here survive daemon restarts and are readable by tools.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/mxscreen";

/// Expected shape of one pinned map, to detect a pin left by an incompatible build or size.
struct Shape {
    name: &'static str,
    map_type: MapType,
    key_size: usize,
    value_size: usize,
    max_entries: u32,
}

/// The maps that are pinned, with their shapes from the shared types. A unit test checks
/// these against what the kernel reports for a freshly loaded object, so this table cannot
/// drift silently. Only what must survive a restart is pinned: the config, the counters and
/// the per-source entries (verdicts). The lists and their hit counters are rebuilt by the
/// daemon at every start from the config, the state file and the feeds.
fn shapes(sizes: &MapSizes) -> [Shape; 4] {
    let s = |name, map_type, key_size, value_size, max_entries| Shape {
        name,
        map_type,
        key_size,
        value_size,
        max_entries,
    };
    [
        s(m::CONFIG, MapType::Array, 4, size_of::<DatapathConfig>(), 1),
        s(
            m::COUNTERS,
            MapType::PerCpuArray,
            4,
            size_of::<u64>(),
            Counter::COUNT,
        ),
        s(
            m::PEERS_V4,
            MapType::LruHash,
            4,
            size_of::<Peer>(),
            sizes.verdicts,
        ),
        s(
            m::PEERS_V6,
            MapType::LruHash,
            16,
            size_of::<Peer>(),
            sizes.verdicts,
        ),
    ]
}

/// Sizes of the maps that are not pinned.
fn unpinned_sizes(sizes: &MapSizes) -> [(&'static str, u32); 3] {
    [
        (m::HITS, sizes.hit_counters),
        (m::LISTS_V4, sizes.lists()),
        (m::LISTS_V6, sizes.lists()),
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
    for (name, n) in unpinned_sizes(&opts.sizes) {
        loader.map_max_entries(name, n);
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
    let clock: &mut Xdp = program(&mut ebpf, program_names::CLOCK)?.try_into()?;
    clock
        .load()
        .context("verifier rejected the clock sampler")?;
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
            !info.map_type().is_ok_and(|t| t == want.map_type)
                || info.key_size() as usize != want.key_size
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
    fn every_map_is_pinned_or_sized_at_load() {
        let sizes = MapSizes::default();
        let mut names: Vec<&str> = shapes(&sizes).iter().map(|s| s.name).collect();
        names.extend(unpinned_sizes(&sizes).iter().map(|(n, _)| *n));
        for name in m::ALL {
            // The ring's size is fixed; the index is one element.
            if name != m::EVENTS && name != m::LIST_INDEX {
                assert!(names.contains(&name), "{name} is neither pinned nor sized");
            }
        }
        assert_eq!(sizes.hit_counters, filter_common::default_sizes::HITS);
    }
}
