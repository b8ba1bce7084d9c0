//! A private datapath instance (no pins) for BPF_PROG_TEST_RUN tests and benchmarks.

use std::{io, net::IpAddr};

use aya::{
    Ebpf,
    maps::{Array, Map, MapData, PerCpuArray},
    programs::{ProgramError, SchedClassifier, TestRun, TestRunOptions, Xdp},
};
use filter_common::{CacheCtl, CacheSlot, Counter, DatapathConfig, map_names, program_names};
use mxscreen::datapath::{self, DatapathMaps, Events, LoadOptions, MapSizes, NewPeer};

use crate::packets::Frame;

/// Which entry point runs the frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entry {
    Xdp,
    Tc,
}

pub const ENTRIES: [Entry; 2] = [Entry::Xdp, Entry::Tc];

/// What the program did with a frame, from its return code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    Drop,
}

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
/// tc: TC_ACT_UNSPEC / TCX_NEXT ("continue") as u32, and TC_ACT_SHOT.
const TC_NEXT: u32 = u32::MAX;
const TC_ACT_SHOT: u32 = 2;

pub struct TestDatapath {
    pub ebpf: Ebpf,
    pub maps: DatapathMaps,
    pub events: Events,
}

impl TestDatapath {
    /// Loads a private instance with small maps, screening port 25.
    pub fn new() -> Self {
        Self::with_sizes(MapSizes::small())
    }

    pub fn with_sizes(sizes: MapSizes) -> Self {
        let mut ebpf = datapath::load(&LoadOptions {
            sizes,
            pin_dir: None,
        })
        .unwrap_or_else(|e| panic!("loading the datapath (are we root?): {e:#}"));
        let maps = DatapathMaps::take(&mut ebpf).expect("taking maps");
        let events = Events::take(&mut ebpf).expect("taking the event ring");
        let mut dp = Self { ebpf, maps, events };
        dp.configure(|c| {
            c.set_ports(&[25]);
            c.dedup_window_ns = 60_000_000_000;
        });
        dp
    }

    /// Edits the runtime config in place.
    pub fn configure(&mut self, edit: impl FnOnce(&mut DatapathConfig)) {
        let mut cfg = self.maps.config().expect("config");
        edit(&mut cfg);
        self.maps.set_config(&cfg).expect("set config");
    }

    /// Runs one frame; `Err` only when the kernel refuses the input (never the program).
    pub fn try_run(
        &self,
        entry: Entry,
        frame: &[u8],
        repeat: u32,
    ) -> Result<(Outcome, std::time::Duration), ProgramError> {
        self.runner(entry).try_run(frame, repeat)
    }

    /// The entry point alone, to run frames from several threads at once.
    pub fn runner(&self, entry: Entry) -> Runner<'_> {
        match entry {
            Entry::Xdp => Runner::Xdp(self.xdp()),
            Entry::Tc => Runner::Tc(
                self.ebpf
                    .program(program_names::TC)
                    .unwrap()
                    .try_into()
                    .unwrap(),
            ),
        }
    }

    fn xdp(&self) -> &Xdp {
        self.ebpf
            .program(program_names::XDP)
            .unwrap()
            .try_into()
            .unwrap()
    }

    /// Runs one SYN from `src` and checks its outcome, the one counter it bumped and how
    /// many slow paths it took (0: its decision was cached).
    #[track_caller]
    pub fn expect_syn(&self, entry: Entry, src: IpAddr, want: Outcome, counter: &str, slow: u64) {
        let before = self.counters();
        let got = self.run(entry, &Frame::syn(src).build());
        let after = self.counters();
        assert_eq!(got, want, "{entry:?} {src}");
        assert_eq!(
            delta(&before, &after),
            vec![(counter, 1)],
            "{entry:?} {src}"
        );
        assert_eq!(
            slow_paths(&before, &after),
            slow,
            "{entry:?} {src} slow paths"
        );
    }

    /// Runs one frame once and returns what the program did.
    pub fn run(&self, entry: Entry, frame: &[u8]) -> Outcome {
        self.try_run(entry, frame, 1)
            .unwrap_or_else(|e| panic!("test_run {entry:?}: {e}"))
            .0
    }

    pub fn counters(&self) -> [u64; Counter::COUNT as usize] {
        self.maps.counters().expect("counters")
    }

    /// The counters of one CPU alone (indexed by [`Counter`]): what the SYNs run there did.
    pub fn counters_on(&self, cpu: u32) -> [u64; Counter::COUNT as usize] {
        let map: PerCpuArray<MapData, u64> =
            PerCpuArray::try_from(Map::PerCpuArray(self.kernel_map(map_names::COUNTERS))).unwrap();
        let mut out = [0; Counter::COUNT as usize];
        for (i, c) in out.iter_mut().enumerate() {
            *c = map.get(&(i as u32), 0).unwrap()[cpu as usize];
        }
        out
    }

    /// How many instructions the verifier walked to load each entry point (the load's cost,
    /// and how close a program is to the verifier's limit of a million).
    pub fn verified_instructions(&self) -> [(&'static str, u32); 2] {
        [program_names::XDP, program_names::TC].map(|name| {
            let info = self.ebpf.program(name).unwrap().info().unwrap();
            (name, info.verified_instruction_count().unwrap_or(0))
        })
    }

    /// A handle of the test's own on one of the program's maps, found by name through the
    /// kernel (the owner, [`DatapathMaps`], keeps its handles private).
    fn kernel_map(&self, name: &str) -> MapData {
        let ids = self
            .xdp()
            .info()
            .unwrap()
            .map_ids()
            .unwrap()
            .unwrap_or_default();
        ids.into_iter()
            .map(|id| MapData::from_id(id).unwrap())
            .find(|m| m.info().unwrap().name_as_str() == Some(name))
            .unwrap_or_else(|| panic!("map {name} not used by the program"))
    }

    /// The decision cache's slots and control word, as the kernel holds them.
    pub fn cache(&self) -> (Array<MapData, CacheSlot>, CacheCtl) {
        let slots = Array::try_from(Map::Array(self.kernel_map(map_names::CACHE))).unwrap();
        let ctl: Array<MapData, CacheCtl> =
            Array::try_from(Map::Array(self.kernel_map(map_names::CACHE_CTL))).unwrap();
        (slots, ctl.get(&0, 0).unwrap())
    }

    /// Every new-peer event waiting in the ring, read as the daemon reads them.
    pub fn drain_events(&mut self) -> Vec<NewPeer> {
        self.events.drain()
    }
}

/// One entry point of a [`TestDatapath`], shareable between threads.
#[derive(Clone, Copy)]
pub enum Runner<'a> {
    Xdp(&'a Xdp),
    Tc(&'a SchedClassifier),
}

impl Runner<'_> {
    /// Runs one frame `repeat` times (on the calling thread's CPU); the outcome of the last
    /// run. `Err` only when the kernel refuses the input (never the program).
    pub fn try_run(
        self,
        frame: &[u8],
        repeat: u32,
    ) -> Result<(Outcome, std::time::Duration), ProgramError> {
        let opts = TestRunOptions {
            data_in: Some(frame),
            repeat,
            ..Default::default()
        };
        let (entry, result) = match self {
            Self::Xdp(p) => (Entry::Xdp, p.test_run(opts)?),
            Self::Tc(p) => (Entry::Tc, p.test_run(opts)?),
        };
        let outcome = match (entry, result.return_value) {
            (Entry::Xdp, XDP_PASS) | (Entry::Tc, TC_NEXT) => Outcome::Pass,
            (Entry::Xdp, XDP_DROP) | (Entry::Tc, TC_ACT_SHOT) => Outcome::Drop,
            (e, rc) => panic!("{e:?} program returned unexpected code {rc}"),
        };
        Ok((outcome, result.duration))
    }
}

impl Default for TestDatapath {
    fn default() -> Self {
        Self::new()
    }
}

/// Counter deltas between two snapshots, as (name, delta) for the non-zero ones: easy to
/// compare against an expected list in one assert. `slow_path` is left out: it says whether
/// the source's decision was cached, which tests of outcomes do not care about; the tests
/// of the cache read it with [`slow_paths`].
pub fn delta(before: &[u64], after: &[u64]) -> Vec<(&'static str, u64)> {
    Counter::ALL
        .iter()
        .filter(|c| **c != Counter::SlowPath)
        .filter_map(|c| {
            let d = after[*c as usize] - before[*c as usize];
            (d != 0).then_some((c.name(), d))
        })
        .collect()
}

/// Whether an error is the kernel refusing the test input (EINVAL), e.g. a frame shorter
/// than an Ethernet header, which no driver would ever hand to the program.
pub fn is_einval(e: &ProgramError) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<io::Error>() {
            return io.raw_os_error() == Some(libc::EINVAL);
        }
        source = err.source();
    }
    false
}

/// How many SYNs between two snapshots took the slow path (no usable cached decision).
pub fn slow_paths(before: &[u64], after: &[u64]) -> u64 {
    let i = Counter::SlowPath as usize;
    after[i] - before[i]
}
