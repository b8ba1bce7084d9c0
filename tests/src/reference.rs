//! The reference XDP programs of the benchmarks (crate bench-ebpf): drop-all and pass-all
//! floors and the bare one-hash-lookup filter, loaded privately, run with BPF_PROG_TEST_RUN or
//! attached in native XDP to a test interface.

use std::{net::IpAddr, time::Duration};

use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap, MapData},
    programs::{
        SchedClassifier, TcAttachType, TestRun, TestRunOptions, Xdp, XdpMode,
        tc::SchedClassifierLinkId, xdp::XdpLinkId,
    },
};

/// The object built by tests/build.rs.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/bench-ebpf"));

/// One of the reference programs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Program {
    /// XDP_DROP for everything: the floor of a drop.
    DropAll,
    /// XDP_PASS for everything: the floor of a pass.
    PassAll,
    /// Parse to the TCP SYN, one hash lookup of the source, drop on a hit.
    HashDrop,
    /// The same lookup; pass everything.
    HashPass,
    /// Parse to the TCP SYN, insert the source into an LRU hash; pass everything.
    LruInsert,
}

impl Program {
    pub const fn name(self) -> &'static str {
        match self {
            Self::DropAll => "bench_drop_all",
            Self::PassAll => "bench_pass_all",
            Self::HashDrop => "bench_hash_drop",
            Self::HashPass => "bench_hash_pass",
            Self::LruInsert => "bench_lru_insert",
        }
    }
}

/// The tc floors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TcProgram {
    DropAll,
    PassAll,
}

impl TcProgram {
    pub const fn name(self) -> &'static str {
        match self {
            Self::DropAll => "bench_tc_drop_all",
            Self::PassAll => "bench_tc_pass_all",
        }
    }
}

pub struct Reference {
    pub ebpf: Ebpf,
    v4: HashMap<MapData, [u8; 4], u8>,
    v6: HashMap<MapData, [u8; 16], u8>,
}

impl Reference {
    /// Loads the programs, with room for `set_size` sources per family in the bare filter
    /// and in the LRU-insert program's hash.
    pub fn load(set_size: u32) -> Self {
        let mut ebpf = EbpfLoader::new()
            .map_max_entries("BARE_V4", set_size)
            .map_max_entries("BARE_V6", set_size)
            .map_max_entries("LRU_V4", set_size)
            .map_max_entries("LRU_V6", set_size)
            .load(OBJECT)
            .unwrap_or_else(|e| panic!("loading the reference programs (root?): {e:#}"));
        for p in [
            Program::DropAll,
            Program::PassAll,
            Program::HashDrop,
            Program::HashPass,
            Program::LruInsert,
        ] {
            let prog: &mut Xdp = ebpf.program_mut(p.name()).unwrap().try_into().unwrap();
            prog.load()
                .unwrap_or_else(|e| panic!("verifier rejected {}: {e:#}", p.name()));
        }
        for p in [TcProgram::DropAll, TcProgram::PassAll] {
            let prog: &mut SchedClassifier =
                ebpf.program_mut(p.name()).unwrap().try_into().unwrap();
            prog.load()
                .unwrap_or_else(|e| panic!("verifier rejected {}: {e:#}", p.name()));
        }
        let v4 = HashMap::try_from(ebpf.take_map("BARE_V4").unwrap()).unwrap();
        let v6 = HashMap::try_from(ebpf.take_map("BARE_V6").unwrap()).unwrap();
        Self { ebpf, v4, v6 }
    }

    /// Puts a source in the bare filter's set.
    pub fn list(&mut self, ip: IpAddr) {
        match ip {
            IpAddr::V4(a) => self.v4.insert(a.octets(), 1, 0),
            IpAddr::V6(a) => self.v6.insert(a.octets(), 1, 0),
        }
        .expect("the set is full");
    }

    fn xdp(&self, p: Program) -> &Xdp {
        self.ebpf.program(p.name()).unwrap().try_into().unwrap()
    }

    /// BPF_PROG_TEST_RUN: the program's return code and the kernel's time per run.
    pub fn test_run(&self, p: Program, frame: &[u8], repeat: u32) -> (u32, Duration) {
        let r = self
            .xdp(p)
            .test_run(TestRunOptions {
                data_in: Some(frame),
                repeat,
                ..Default::default()
            })
            .unwrap_or_else(|e| panic!("test_run {}: {e}", p.name()));
        (r.return_value, r.duration)
    }

    /// Attaches `p` in native (driver) XDP to `iface` of the calling thread's namespace.
    pub fn attach(&mut self, p: Program, iface: &str) -> XdpLinkId {
        let prog: &mut Xdp = self.ebpf.program_mut(p.name()).unwrap().try_into().unwrap();
        prog.attach(iface, XdpMode::Driver)
            .unwrap_or_else(|e| panic!("attaching {} to {iface}: {e:#}", p.name()))
    }

    pub fn detach(&mut self, p: Program, link: XdpLinkId) {
        let prog: &mut Xdp = self.ebpf.program_mut(p.name()).unwrap().try_into().unwrap();
        prog.detach(link).expect("detach");
    }
}

impl Reference {
    /// Attaches a tc floor at `iface`'s ingress (tcx) in the calling thread's namespace.
    pub fn attach_tc(&mut self, p: TcProgram, iface: &str) -> SchedClassifierLinkId {
        let prog: &mut SchedClassifier =
            self.ebpf.program_mut(p.name()).unwrap().try_into().unwrap();
        prog.attach(iface, TcAttachType::Ingress)
            .unwrap_or_else(|e| panic!("attaching {} to {iface}: {e:#}", p.name()))
    }

    pub fn detach_tc(&mut self, p: TcProgram, link: SchedClassifierLinkId) {
        let prog: &mut SchedClassifier =
            self.ebpf.program_mut(p.name()).unwrap().try_into().unwrap();
        prog.detach(link).expect("detach");
    }
}
