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
        self, AttachMode, Attached, BackendChoice, Datapath, DatapathMaps, Events, LoadOptions,
        NewPeer,
        attach::{AttachedMode, ifindex_of},
        events::AsyncEvents,
    },
    nftables::{self, Nftables, backend::NftDatapath, events::AsyncNfLog},
};

/// What screens, and where.
pub enum Program {
    Ebpf {
        ebpf: Ebpf,
        attached: Vec<Attached>,
        /// Interfaces it was attached to that went away: attached again when they are back.
        gone: Vec<Gone>,
    },
    Nftables {
        dp: NftDatapath,
        /// Each screened interface's index when last seen (0: gone).
        seen: Vec<(String, u32)>,
    },
}

/// An interface the program was attached to, deleted since (or deleted and made again: a
/// new interface of the same name, which a program attached to the old one is not on).
pub struct Gone {
    iface: String,
    mode: AttachedMode,
    /// Why the last attempt to attach again failed (logged once).
    failed: Option<String>,
}

/// What `status` says of an interface that is gone.
const GONE: &str = "the interface is gone; screened again when it is back";

/// Logs that `iface`, screened until now, is gone (both backends).
fn went_away(iface: &str) {
    tracing::warn!(%iface, "the interface went away: nothing is screened on it until it is back");
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
                let whole = format!("{e:#}");
                let why = one_line(&whole);
                tracing::debug!(error = %whole, "the eBPF datapath's whole error");
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

/// Longest [`one_line`] error, in characters.
const ONE_LINE_MAX: usize = 300;

/// An error as one line for `status`, its JSON and a metric's label: whitespace runs (a
/// verifier log's newlines) made one space, and cut after [`ONE_LINE_MAX`] characters — a
/// verifier log can run to megabytes, and the kernel's errno comes first.
fn one_line(error: &str) -> String {
    let words: Vec<&str> = error.split_whitespace().collect();
    let line = words.join(" ");
    match line.char_indices().nth(ONE_LINE_MAX) {
        Some((cut, _)) => format!("{} …", &line[..cut]),
        None => line,
    }
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
        gone: Vec::new(),
    };
    program.attach_all(ifaces, cfg)?;
    // A crashed nftables run's table (a backend switched, or `auto` that fell back before)
    // passes every SYN but holds its sets' memory; a live one is another daemon's.
    match nftables::remove_left_behind(nftables::TABLE) {
        Ok(nftables::LeftBehind::Nothing) => {}
        Ok(nftables::LeftBehind::Removed) => {
            tracing::info!(
                table = nftables::TABLE,
                "removed the nftables table a crashed run of the nftables backend left"
            );
        }
        Ok(nftables::LeftBehind::Live) => {
            // Another daemon's, or one killed less than a liveness window ago (a crash and
            // a restart on the other backend): which, the window tells.
            tracing::warn!(
                table = nftables::TABLE,
                "an mxscreen nftables table in this network namespace is beating: another daemon's, or one killed moments ago; looking again once its heartbeat would have run out"
            );
            look_again_later();
        }
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "could not remove the nftables table a previous run left")
        }
    }
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
        state_file: Some(cfg.state.file.clone()),
        ..nftables::Options::default()
    })
    .context("setting up the nftables table")?;
    let events = nflog
        .into_async()
        .context("polling the NFLOG group of new peers")?;
    let mut program = Program::Nftables {
        dp: NftDatapath::new(nft),
        seen: Vec::new(),
    };
    program.attach_all(ifaces, cfg)?;
    let Program::Nftables { dp, .. } = &program else {
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
            Self::Ebpf { ebpf, attached, .. } => {
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
            Self::Nftables { dp, seen } => {
                dp.attach(ifaces)?;
                for iface in ifaces {
                    log(iface, AttachedMode::Nftables);
                    seen.push((iface.clone(), ifindex_of(iface)));
                }
            }
        }
        Ok(())
    }

    /// Follows the screened interfaces (called every second): one deleted is reported gone;
    /// one back (made again under its name: a VLAN's `ifdown`/`ifup`, a hot-plugged NIC, a
    /// container's veth) is screened again. An eBPF link goes with its interface; nftables
    /// hooks by name, but older kernels (6.18 does not) drop a deleted device's hook (or
    /// the whole base chain with its last device), so its rules are hooked again too.
    /// Returns whether an interface went or came back.
    pub fn follow_interfaces(&mut self, mode: AttachMode) -> bool {
        match self {
            Self::Ebpf {
                ebpf,
                attached,
                gone,
            } => {
                let (kept, lost): (Vec<_>, Vec<_>) = std::mem::take(attached)
                    .into_iter()
                    .partition(|a| ifindex_of(&a.iface) == a.ifindex);
                *attached = kept;
                let mut changed = !lost.is_empty();
                for a in lost {
                    went_away(&a.iface);
                    gone.push(Gone {
                        iface: a.iface.clone(),
                        mode: a.mode,
                        failed: None,
                    });
                    // Its link went with the interface; closing it is all that is left.
                    let _ = a.detach(ebpf);
                }
                gone.retain_mut(|g| {
                    if ifindex_of(&g.iface) == 0 {
                        return true;
                    }
                    match datapath::attach(ebpf, &g.iface, mode) {
                        Ok(a) => {
                            tracing::info!(iface = %a.iface, mode = %a.mode, "the interface is back: attached again");
                            attached.push(a);
                            changed = true;
                            false
                        }
                        Err(e) => {
                            let why = format!("{e:#}");
                            if g.failed.as_ref() != Some(&why) {
                                tracing::warn!(iface = %g.iface, error = %why, "the interface is back, but attaching to it failed; trying again every second");
                                g.failed = Some(why);
                            }
                            true
                        }
                    }
                });
                changed
            }
            Self::Nftables { dp, seen } => {
                let mut changed = false;
                let mut back = false;
                for (iface, was) in seen.iter_mut() {
                    let now = ifindex_of(iface);
                    if now == *was {
                        continue;
                    }
                    if now == 0 {
                        went_away(iface);
                    } else {
                        tracing::info!(%iface, "the interface is back: hooked again");
                        back = true;
                    }
                    *was = now;
                    changed = true;
                }
                if back && let Err(e) = dp.rehook() {
                    tracing::warn!(error = %format!("{e:#}"), "hooking the nftables rules to the interfaces again failed");
                }
                changed
            }
        }
    }

    /// Stops screening: every interface detached (in reverse order of attachment); the
    /// nftables table removed.
    pub fn detach_all(&mut self) {
        match self {
            Self::Ebpf { ebpf, attached, .. } => {
                while let Some(a) = attached.pop() {
                    let iface = a.iface.clone();
                    if let Err(e) = a.detach(ebpf) {
                        tracing::warn!(%iface, error = %e, "detach failed (the link goes away with the process anyway)");
                    }
                }
            }
            Self::Nftables { dp, .. } => {
                if let Err(e) = dp.remove_table() {
                    tracing::warn!(error = %format!("{e:#}"), "could not delete the nftables table");
                }
            }
        }
    }

    /// Where it screens, in order of attachment, then the interfaces that are gone.
    pub fn interfaces(&self) -> Vec<InterfaceStatus> {
        match self {
            Self::Ebpf { attached, gone, .. } => attached
                .iter()
                .map(|a| InterfaceStatus {
                    name: a.iface.clone(),
                    mode: a.mode,
                    down: None,
                })
                .chain(gone.iter().map(|g| InterfaceStatus {
                    name: g.iface.clone(),
                    mode: g.mode,
                    down: Some(match &g.failed {
                        None => GONE.to_owned(),
                        Some(why) => format!(
                            "the interface is back, but attaching to it failed (trying again every second): {why}"
                        ),
                    }),
                }))
                .collect(),
            Self::Nftables { seen, .. } => seen
                .iter()
                .map(|(name, ifindex)| InterfaceStatus {
                    name: name.clone(),
                    mode: AttachedMode::Nftables,
                    down: (*ifindex == 0).then(|| GONE.to_owned()),
                })
                .collect(),
        }
    }

    /// What `status` warns of: interfaces that are gone; a nftables table someone else
    /// deleted (written again, but nothing was screened meanwhile, and it may happen again).
    pub fn warnings(&self) -> Vec<String> {
        let mut w: Vec<String> = self
            .interfaces()
            .into_iter()
            .filter_map(|i| {
                Some(format!(
                    "{}: nothing is screened there: {}",
                    i.name, i.down?
                ))
            })
            .collect();
        if let Self::Nftables { dp, .. } = self
            && let (n @ 1.., at) = dp.rebuilt()
        {
            let ago = crate::duration::format(at.elapsed().unwrap_or_default());
            w.push(format!(
                "the nftables table was deleted by someone else {n} time(s), last {ago} ago, and written again at once; nothing was screened until then. A firewall reload running `nft flush ruleset`? (It has no other cost: mxscreen needs no exception in it.)"
            ));
        }
        w
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

/// The second look at a beating nftables table (see [`open`]), once a dead run's heartbeat
/// has run out: removed then if it was a dead run's, left (and said so) if another daemon's.
/// On a thread of its own: nothing waits for it.
fn look_again_later() {
    let look = || {
        std::thread::sleep(super::reactor::STALE_AFTER + std::time::Duration::from_secs(1));
        match nftables::remove_left_behind(nftables::TABLE) {
            Ok(nftables::LeftBehind::Removed) => tracing::info!(
                table = nftables::TABLE,
                "removed the nftables table a run killed just before this start left"
            ),
            Ok(nftables::LeftBehind::Live) => tracing::warn!(
                table = nftables::TABLE,
                "another mxscreen screens this network namespace with nftables"
            ),
            Ok(nftables::LeftBehind::Nothing) => {}
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "could not remove the nftables table a previous run left")
            }
        }
    };
    if let Err(e) = std::thread::Builder::new()
        .name("mxscreen-nft-left".into())
        .spawn(look)
    {
        tracing::warn!(error = %e, "cannot look at the nftables table again");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_one_line() {
        assert_eq!(
            one_line(
                "loading: the BPF_PROG_LOAD syscall returned Operation not permitted (os error 1).\n  Verifier output:\n"
            ),
            "loading: the BPF_PROG_LOAD syscall returned Operation not permitted (os error 1). Verifier output:"
        );
        let log = format!(
            "EACCES (os error 13). Verifier output: {}",
            "0: (b7) r0 = 0\n".repeat(100_000)
        );
        let short = one_line(&log);
        assert!(short.starts_with("EACCES (os error 13). Verifier output: 0: (b7) r0 = 0 0:"));
        assert!(short.ends_with(" …") && short.chars().count() == ONE_LINE_MAX + 2);
    }
}
