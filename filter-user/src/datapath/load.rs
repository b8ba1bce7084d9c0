//! The embedded eBPF object, how big its maps are, and where they are pinned.

use std::{
    borrow::Cow,
    mem::size_of,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, bail};
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
            sizes.peers,
        ),
        s(
            m::PEERS_V6,
            MapType::LruHash,
            16,
            size_of::<Peer>(),
            sizes.peers,
        ),
    ]
}

/// Sizes of the maps that are not pinned. (The seen maps are not: a restart forgets at most
/// who is being held, and holds them once more.)
fn unpinned_sizes(sizes: &MapSizes) -> [(&'static str, u32); 6] {
    [
        (m::CACHE, sizes.cache_slots()),
        (m::HITS, sizes.hit_counters),
        (m::LISTS_V4, sizes.lists()),
        (m::LISTS_V6, sizes.lists()),
        (m::SEEN_V4, sizes.seen),
        (m::SEEN_V6, sizes.seen),
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
///
/// A pinned map of the right shape is reused (the verdicts survive restarts). One of another
/// shape (another version, changed sizes) is replaced — but only once everything else has
/// loaded: until then it stays pinned, so a start that fails costs nothing.
pub fn load(opts: &LoadOptions) -> Result<Ebpf> {
    let mut loader = EbpfLoader::new();
    let shapes = shapes(&opts.sizes);
    for shape in &shapes {
        loader.map_max_entries(shape.name, shape.max_entries);
    }
    for (name, n) in unpinned_sizes(&opts.sizes) {
        loader.map_max_entries(name, n);
    }
    let mut replace = Vec::new();
    if let Some(dir) = &opts.pin_dir {
        prepare_pin_dir(dir)?;
        for shape in &shapes {
            let path = dir.join(shape.name);
            if is_incompatible_pin(&path, shape) {
                // Created unpinned now, pinned in place of the old one after the load.
                replace.push((shape.name, path));
            } else {
                loader.map_pin_path(shape.name, Cow::Owned(path));
            }
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
    for (name, path) in replace {
        tracing::warn!(pin = %path.display(), "pinned map has another shape (new version or sizes); replacing it with a fresh one");
        std::fs::remove_file(&path)
            .with_context(|| format!("removing stale pin {}", path.display()))?;
        let map = ebpf
            .map(name)
            .with_context(|| format!("map {name} missing from the eBPF object"))?;
        map.pin(&path)
            .with_context(|| format!("pinning {}", path.display()))?;
    }
    Ok(ebpf)
}

/// Creates the pin directory, mounting the BPF filesystem at its conventional place first
/// if the system has not, and makes sure the directory is on a BPF filesystem.
fn prepare_pin_dir(dir: &Path) -> Result<()> {
    if dir.starts_with(bpffs::BPFFS_ROOT) {
        bpffs::ensure_mounted(Path::new(bpffs::BPFFS_ROOT))?;
    }
    std::fs::create_dir_all(dir)
        .with_context(|| format!("creating pin directory {}", dir.display()))?;
    if !bpffs::is_bpffs(dir) {
        bail!(
            "datapath.pin_dir {} is not on a BPF filesystem; use a directory under {}",
            dir.display(),
            bpffs::BPFFS_ROOT
        );
    }
    Ok(())
}

fn program<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut aya::programs::Program> {
    ebpf.program_mut(name)
        .with_context(|| format!("program {name} missing from the eBPF object"))
}

/// Whether a pin exists at `path` that cannot be reused: its shape differs (another mxscreen
/// version, or changed sizes) or it is not a map at all. Pins are only a cache — verdicts are
/// re-resolved, lists are rebuilt from the config and the state file — so such a pin is
/// replaced, and the fact logged.
fn is_incompatible_pin(path: &Path, want: &Shape) -> bool {
    if !path.exists() {
        return false;
    }
    match MapInfo::from_pin(path) {
        Ok(info) => {
            !info.map_type().is_ok_and(|t| t == want.map_type)
                || info.key_size() as usize != want.key_size
                || info.value_size() as usize != want.value_size
                || info.max_entries() != want.max_entries
        }
        Err(_) => true,
    }
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

    /// Nothing in the datapath calls `memset`: bpf-linker leaves it a call to a loop of byte
    /// stores (64 for a new source's entry), so values are zeroed a word at a time
    /// (filter-ebpf/src/zeroed.rs). An unused `memset` is not linked in.
    #[test]
    fn the_datapath_calls_no_memset() {
        use object::{Object as _, ObjectSection as _, ObjectSymbol as _, RelocationTarget};
        let elf = object::File::parse(OBJECT).expect("parse eBPF object");
        let callers: Vec<String> = elf
            .sections()
            .flat_map(|s| {
                s.relocations()
                    .map(move |(_, r)| (s.name().unwrap_or("?").to_owned(), r))
            })
            .filter_map(|(section, r)| match r.target() {
                RelocationTarget::Symbol(i) => {
                    let name = elf.symbol_by_index(i).ok()?.name().ok()?;
                    (name == "memset").then_some(section)
                }
                _ => None,
            })
            .collect();
        assert!(callers.is_empty(), "memset called from {callers:?}");
    }

    fn aya_obj_names() -> Vec<String> {
        // Parse without loading (no privileges needed): aya exposes the object's maps only
        // after load, so read the ELF symbol table of the maps section directly.
        let obj = aya_obj::Object::parse(OBJECT).expect("parse eBPF object");
        let mut names: Vec<String> = obj.maps.keys().cloned().collect();
        names.sort_unstable();
        names
    }

    fn data(map: &aya::maps::Map) -> &aya::maps::MapData {
        use aya::maps::Map;
        match map {
            Map::Array(d)
            | Map::PerCpuArray(d)
            | Map::HashMap(d)
            | Map::LruHashMap(d)
            | Map::LpmTrie(d)
            | Map::RingBuf(d) => d,
            other => panic!("unexpected map type {other:?}"),
        }
    }

    /// The shape table matches what the kernel reports for a freshly loaded object (needs
    /// root: the unit suite runs as root in `cargo xtask test`).
    #[test]
    fn shapes_match_the_kernel() {
        let sizes = MapSizes::small();
        let ebpf = load(&LoadOptions {
            sizes,
            pin_dir: None,
        })
        .expect("loading the datapath (root?)");
        for shape in shapes(&sizes) {
            let info = data(ebpf.map(shape.name).expect(shape.name))
                .info()
                .unwrap();
            assert_eq!(
                (
                    info.key_size() as usize,
                    info.value_size() as usize,
                    info.max_entries()
                ),
                (shape.key_size, shape.value_size, shape.max_entries),
                "{}",
                shape.name
            );
        }
    }

    /// A pin of another shape is replaced, and only after the new object loaded: a load that
    /// fails leaves every old pin in place. Pins of the right shape are reused.
    #[test]
    fn incompatible_pins_are_replaced_only_after_a_good_load() {
        let dir = PathBuf::from(format!(
            "{}/mxs-unit-{}",
            bpffs::BPFFS_ROOT,
            std::process::id()
        ));
        let _cleanup = Cleanup(dir.clone());
        let small = MapSizes::small();
        let pinned = |sizes| LoadOptions {
            sizes,
            pin_dir: Some(dir.clone()),
        };
        let id = |name: &str| MapInfo::from_pin(dir.join(name)).unwrap().id();
        drop(load(&pinned(small)).expect("first load"));
        let (verdicts, config) = (id(m::PEERS_V4), id(m::CONFIG));
        // A start with a map the kernel refuses fails, and the old verdict pins stay.
        let refused = MapSizes {
            peers: small.peers * 2,
            hit_counters: 0,
            ..small
        };
        assert!(load(&pinned(refused)).is_err());
        assert_eq!(id(m::PEERS_V4), verdicts, "pin removed by a failed load");
        // A good load with other verdict sizes replaces those pins, keeps the others.
        let bigger = MapSizes {
            peers: small.peers * 2,
            ..small
        };
        drop(load(&pinned(bigger)).expect("load with other sizes"));
        assert_ne!(id(m::PEERS_V4), verdicts);
        let info = MapInfo::from_pin(dir.join(m::PEERS_V4)).unwrap();
        assert_eq!(info.max_entries(), bigger.peers);
        assert_eq!(id(m::CONFIG), config, "a compatible pin is reused");
    }

    #[test]
    fn a_pin_dir_off_the_bpf_filesystem_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let e = format!("{:#}", prepare_pin_dir(dir.path()).unwrap_err());
        assert!(e.contains("is not on a BPF filesystem"), "{e}");
    }

    struct Cleanup(PathBuf);

    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn every_map_is_pinned_or_sized_at_load() {
        let sizes = MapSizes::default();
        let mut names: Vec<&str> = shapes(&sizes).iter().map(|s| s.name).collect();
        names.extend(unpinned_sizes(&sizes).iter().map(|(n, _)| *n));
        for name in m::ALL {
            // The ring's and the list filter's sizes are fixed; the index, the cache's control
            // word, the per-CPU event budget and the count of new sources are one element.
            let fixed = [
                m::EVENTS,
                m::LIST_FILTER,
                m::LIST_INDEX,
                m::CACHE_CTL,
                m::EVENT_BUDGET,
                m::SEEN_RATE,
            ];
            if !fixed.contains(&name) {
                assert!(names.contains(&name), "{name} is neither pinned nor sized");
            }
        }
        assert_eq!(sizes.hit_counters, filter_common::default_sizes::HITS);
    }
}
