//! The loaded eBPF program and the interfaces it is attached to: attached all or none at
//! start, detached in reverse order at exit, reported by `status`, the metrics and systemd.

use aya::Ebpf;
use filter_common::program_names;

use crate::{
    config::Config,
    control::protocol::{InterfaceStatus, ProgramStatus},
    datapath::{self, Attached},
};

pub struct Program {
    ebpf: Ebpf,
    attached: Vec<Attached>,
}

impl Program {
    /// A loaded object whose maps and event ring have been taken.
    pub fn new(ebpf: Ebpf) -> Self {
        Self {
            ebpf,
            attached: Vec::new(),
        }
    }

    /// Attaches to every interface, or to none: on a failure the ones done are detached.
    pub fn attach_all(&mut self, ifaces: &[String], cfg: &Config) -> anyhow::Result<()> {
        for iface in ifaces {
            match datapath::attach(&mut self.ebpf, iface, cfg.datapath.mode) {
                Ok(a) => {
                    tracing::info!(iface = %a.iface, mode = %a.mode, ports = ?cfg.datapath.ports, observe = cfg.policy.observe, first_contact = %cfg.datapath.first_contact.name(), "attached");
                    self.attached.push(a);
                }
                Err(e) => {
                    self.detach_all();
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Detaches every interface (in reverse order of attachment).
    pub fn detach_all(&mut self) {
        while let Some(a) = self.attached.pop() {
            let iface = a.iface.clone();
            if let Err(e) = a.detach(&mut self.ebpf) {
                tracing::warn!(%iface, error = %e, "detach failed (the link goes away with the process anyway)");
            }
        }
    }

    /// Where the program is attached, in order of attachment.
    pub fn interfaces(&self) -> Vec<InterfaceStatus> {
        self.attached
            .iter()
            .map(|a| InterfaceStatus {
                name: a.iface.clone(),
                mode: a.mode,
            })
            .collect()
    }

    /// The entry points loaded, with their kernel ids.
    pub fn programs(&self) -> Vec<ProgramStatus> {
        let mut programs = Vec::new();
        for name in [program_names::XDP, program_names::TC] {
            if let Some(p) = self.ebpf.program(name) {
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
