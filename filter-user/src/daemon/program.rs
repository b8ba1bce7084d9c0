//! The backend that refuses SYNs and the interfaces it screens: the eBPF program (attached
//! all or none at start, detached in reverse order at exit) or the nftables table (removed
//! at exit). `datapath.backend = "auto"` uses eBPF when the program loads and attaches,
//! else nftables, and keeps the kernel's reason (one line) for `status`, the metrics and
//! the log. Reported by `status`, the metrics and systemd.

use std::io;

use anyhow::{Context as _, Result};
use aya::Ebpf;
use filter_common::program_names;

use crate::{
    config::Config,
    control::protocol::{BackendStatus, InterfaceStatus, ProgramStatus},
    datapath::{
        self, Attached, BackendChoice, Datapath, DatapathMaps, Events, LoadOptions, NewPeer,
        attach::AttachedMode, events::AsyncEvents,
    },
    nftables::{self, Nftables, backend::NftDatapath, events::AsyncNfLog},
};

/// What screens, and where.
pub enum Program {
    Ebpf { ebpf: Ebpf, attached: Vec<Attached> },
    Nftables(NftDatapath),
}

/// New peers as the backend reports them: the eBPF ring buffer, or nftables' NFLOG group.
pub enum PeerEvents {
    Ring(AsyncEvents),
    NfLog(AsyncNfLog),
}

impl PeerEvents {
    pub async fn next_batch(&mut self) -> io::Result<Vec<NewPeer>> {
        match self {
            Self::Ring(r) => r.next_batch().await,
            Self::NfLog(n) => n.next_batch().await,
        }
    }
}

/// A backend opened and screening its interfaces.
pub struct Opened {
    pub datapath: Box<dyn Datapath>,
    pub program: Program,
    pub events: PeerEvents,
    pub status: BackendStatus,
}

/// Opens the backend the config asks for and screens `ifaces` with it (with a config that
/// screens no port until the daemon writes its own: nothing is refused before the lists are
/// in).
pub fn open(cfg: &Config, ifaces: &[String]) -> Result<Opened> {
    let choice = cfg.datapath.backend;
    let mut opened = match choice {
        BackendChoice::Ebpf => open_ebpf(cfg, ifaces)?,
        BackendChoice::Nftables => open_nftables(cfg, ifaces)?,
        BackendChoice::Auto => match open_ebpf(cfg, ifaces) {
            Ok(o) => o,
            Err(e) => {
                let why = format!("{e:#}").replace('\n', " ");
                tracing::warn!(error = %why, "the eBPF datapath could not be used; screening with nftables");
                let mut o = open_nftables(cfg, ifaces).with_context(|| {
                    format!("the eBPF datapath could not be used ({why}), nor nftables")
                })?;
                o.status.ebpf_error = Some(why);
                o
            }
        },
    };
    opened.status.requested = choice.name().to_owned();
    tracing::info!(backend = %opened.status.name, requested = %opened.status.requested, "screening");
    Ok(opened)
}

fn open_ebpf(cfg: &Config, ifaces: &[String]) -> Result<Opened> {
    let mut ebpf = datapath::load(&LoadOptions {
        sizes: cfg.datapath.maps,
        pin_dir: Some(cfg.datapath.pin_dir.clone()),
    })?;
    let maps = DatapathMaps::take(&mut ebpf)?;
    let events = Events::take(&mut ebpf)?
        .into_async()
        .context("polling the event ring")?;
    let mut program = Program::Ebpf {
        ebpf,
        attached: Vec::new(),
    };
    program.attach_all(ifaces, cfg)?;
    Ok(Opened {
        datapath: Box::new(maps),
        program,
        events: PeerEvents::Ring(events),
        status: BackendStatus::new(datapath::Backend::Ebpf),
    })
}

fn open_nftables(cfg: &Config, ifaces: &[String]) -> Result<Opened> {
    let (nft, nflog) = Nftables::open(&nftables::Options {
        sizes: cfg.datapath.maps,
        ..nftables::Options::default()
    })
    .context("setting up the nftables table")?;
    let events = nflog
        .into_async()
        .context("polling the NFLOG group of new peers")?;
    let mut program = Program::Nftables(NftDatapath::new(nft));
    program.attach_all(ifaces, cfg)?;
    let Program::Nftables(dp) = &program else {
        unreachable!("made above");
    };
    Ok(Opened {
        datapath: Box::new(dp.share()),
        program,
        events: PeerEvents::NfLog(events),
        status: BackendStatus::new(datapath::Backend::Nftables),
    })
}

impl Program {
    /// Attaches to every interface, or to none: on a failure the ones done are detached.
    fn attach_all(&mut self, ifaces: &[String], cfg: &Config) -> Result<()> {
        let log = |iface: &str, mode: AttachedMode| {
            tracing::info!(%iface, %mode, ports = ?cfg.datapath.ports, observe = cfg.policy.observe, first_contact = %cfg.datapath.first_contact.name(), "attached");
        };
        match self {
            Self::Ebpf { ebpf, attached } => {
                for iface in ifaces {
                    match datapath::attach(ebpf, iface, cfg.datapath.mode) {
                        Ok(a) => {
                            log(&a.iface, a.mode);
                            attached.push(a);
                        }
                        Err(e) => {
                            self.detach_all();
                            return Err(e);
                        }
                    }
                }
            }
            Self::Nftables(nft) => {
                nft.attach(ifaces)?;
                for iface in ifaces {
                    log(iface, AttachedMode::Nftables);
                }
            }
        }
        Ok(())
    }

    /// Stops screening: every interface detached (in reverse order of attachment); the
    /// nftables table removed.
    pub fn detach_all(&mut self) {
        match self {
            Self::Ebpf { ebpf, attached } => {
                while let Some(a) = attached.pop() {
                    let iface = a.iface.clone();
                    if let Err(e) = a.detach(ebpf) {
                        tracing::warn!(%iface, error = %e, "detach failed (the link goes away with the process anyway)");
                    }
                }
            }
            Self::Nftables(nft) => {
                if let Err(e) = nft.remove_table() {
                    tracing::warn!(error = %format!("{e:#}"), "could not delete the nftables table");
                }
            }
        }
    }

    /// Where it screens, in order of attachment.
    pub fn interfaces(&self) -> Vec<InterfaceStatus> {
        match self {
            Self::Ebpf { attached, .. } => attached
                .iter()
                .map(|a| InterfaceStatus {
                    name: a.iface.clone(),
                    mode: a.mode,
                })
                .collect(),
            Self::Nftables(nft) => nft
                .devices()
                .into_iter()
                .map(|name| InterfaceStatus {
                    name,
                    mode: AttachedMode::Nftables,
                })
                .collect(),
        }
    }

    /// The eBPF entry points loaded, with their kernel ids (none for nftables).
    pub fn programs(&self) -> Vec<ProgramStatus> {
        let Self::Ebpf { ebpf, .. } = self else {
            return Vec::new();
        };
        let mut programs = Vec::new();
        for name in [program_names::XDP, program_names::TC] {
            if let Some(p) = ebpf.program(name) {
                let id = p.info().map(|i| i.id()).unwrap_or(0);
                programs.push(ProgramStatus {
                    name: name.to_owned(),
                    id,
                });
            }
        }
        programs
    }
}
