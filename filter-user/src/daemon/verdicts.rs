//! The verdict writer: the engine's verdicts into the maps, each with one log line for humans
//! and parsers and its evidence kept for the MTA's answers, and the verdicts IPv6 networks
//! earn when their addresses rotate (see [`super::rotation`]).

use std::sync::Arc;

use anyhow::Result;
use filter_common::{Action, PeerVerdict, Reason, VERDICT_EXPLAIN};
use ipnet::IpNet;

use super::{
    forget::{Forgotten, forgettable, overlap},
    rotation::{Earned, Rotation},
};
use crate::{
    datapath::{Datapath, clock},
    query::EvidenceCache,
    report::Recorder,
    reputation::{ExplainTo, Verdict},
};

pub struct VerdictWriter {
    /// The last evaluations' evidence, for the MTA's answers (shared with their thread).
    evidence: Arc<EvidenceCache>,
    rotation: Rotation,
    /// Drop and limit verdicts, for `mxscreen report`.
    decisions: Recorder,
}

/// A verdict written over what the map held for its address.
pub struct Written {
    pub previous: Option<PeerVerdict>,
    pub entry: PeerVerdict,
}

impl VerdictWriter {
    pub fn new(evidence: Arc<EvidenceCache>, rotation: Rotation, decisions: Recorder) -> Self {
        Self {
            evidence,
            rotation,
            decisions,
        }
    }

    pub fn evidence(&self) -> &Arc<EvidenceCache> {
        &self.evidence
    }

    pub fn rotation(&self) -> &Rotation {
        &self.rotation
    }

    /// New rotation settings (a reload).
    pub fn configure_rotation(
        &mut self,
        maps: &mut dyn Datapath,
        (prefix, after): (u8, u32),
        observe: bool,
    ) -> Result<()> {
        if !self.rotation.configure(prefix, after) {
            return Ok(());
        }
        // New settings: what the old ones earned goes (networks of another size, or any at
        // all once rotation is off: left alone they dropped whole networks for up to
        // `ttl_max`, unexplained), and the networks are learnt again from the verdicts
        // held, as at a start.
        for n in maps.network_verdicts()? {
            if forgettable(n.reason) {
                maps.network_verdict_remove(n.net)?;
            }
        }
        self.learn_rotation(maps, observe)
    }

    /// A verdict from the engine: into the map, its evidence kept, the network's verdict if
    /// it earns one, and one log line. `None` if the map could not be written (logged).
    pub fn write(
        &mut self,
        maps: &mut dyn Datapath,
        v: &Verdict,
        observe: bool,
        explain_to: ExplainTo,
    ) -> Option<Written> {
        let mut entry = PeerVerdict::new(v.action, v.reason, clock::expiry_after(v.ttl));
        entry.flags = explain_flags(v.action, v.reason, v.forward_confirmed(), explain_to);
        // What it replaces, for the census (a failed read only makes the count approximate
        // until the next sweep).
        let previous = maps.verdict_without_hits(v.ip).ok().flatten();
        if let Err(e) = maps.verdict_set(v.ip, entry) {
            tracing::warn!(ip = %v.ip, error = %e, "could not store verdict");
            return None;
        }
        self.evidence.record(v);
        self.decisions.record(v, observe);
        if let Some(earned) = self.rotation.on_verdict(v.ip, v.action, entry.expires_ns) {
            network_verdict(maps, &earned, observe);
        }
        tracing::info!(
            target: "mxscreen::verdict",
            action = v.action.name(),
            ip = %v.ip,
            score = v.score,
            // A string value: the plain format quotes and escapes it (logfmt), because the
            // evidence carries a DNSBL's TXT text, which must never read as fields of its
            // own; the journal gets it bare.
            reasons = v.reasons().as_str(),
            ttl = v.ttl.as_secs(),
            source = v.reason.name(),
            observe,
            "mxscreen-verdict"
        );
        Some(Written { previous, entry })
    }

    /// At start: learns the IPv6 drop verdicts kept in the pinned maps, so networks that had
    /// earned a verdict (the lists are not pinned) get it back at once.
    pub fn learn_rotation(&mut self, maps: &mut dyn Datapath, observe: bool) -> Result<()> {
        let now = clock::now_ns();
        let mut drops = Vec::new();
        maps.for_each_verdict_chunk_without_pending_hits(&mut |chunk| {
            drops.extend(chunk.into_iter().filter(|(ip, v)| {
                ip.is_ipv6() && v.action() == Action::Drop && filter_common::live(v.expires_ns, now)
            }));
            true
        })?;
        for (ip, v) in drops {
            if let Some(earned) = self.rotation.on_verdict(ip, v.action(), v.expires_ns) {
                network_verdict(maps, &earned, observe);
            }
        }
        Ok(())
    }

    /// Removes the network verdicts that expired.
    pub fn expire_networks(&mut self, maps: &mut dyn Datapath) -> Result<()> {
        for net in self.rotation.sweep(clock::now_ns()) {
            maps.network_verdict_remove(IpNet::V6(net))?;
            tracing::info!(%net, "network verdict expired");
        }
        Ok(())
    }

    /// `mxscreen forget`: removes the engine's verdicts inside `net` and the network verdicts
    /// over them, and forgets them as members of their networks.
    pub fn forget(&mut self, maps: &mut dyn Datapath, net: IpNet) -> Result<Forgotten> {
        let mut ips = Vec::new();
        if net.prefix_len() == net.max_prefix_len() {
            if maps
                .verdict_without_hits(net.addr())?
                .is_some_and(|v| forgettable(v.reason()))
            {
                ips.push(net.addr());
            }
        } else {
            maps.for_each_verdict_chunk_without_pending_hits(&mut |chunk| {
                ips.extend(
                    chunk
                        .into_iter()
                        .filter(|(ip, v)| net.contains(ip) && forgettable(v.reason()))
                        .map(|(ip, _)| ip),
                );
                true
            })?;
        }
        maps.verdicts_remove(&ips)?;
        let mut networks = Vec::new();
        for n in maps.network_verdicts()? {
            if overlap(&n.net, &net) && forgettable(n.reason) {
                maps.network_verdict_remove(n.net)?;
                networks.push(n.net);
            }
        }
        for ip in &ips {
            // No longer a member of its network's drop verdicts.
            self.rotation.on_verdict(*ip, Action::Pass, 0);
        }
        for n in &networks {
            if let IpNet::V6(n) = n {
                self.rotation.forget_network(n);
            }
        }
        Ok(Forgotten { ips, networks })
    }
}

/// The `VERDICT_*` flags of a verdict: [`VERDICT_EXPLAIN`] for a reputation `drop` of a
/// sender `policy.explain_to` names (by default one with forward-confirmed rDNS: a mail
/// server, whose operator can read the refusal; a bot's would reach nobody and cost the MTA
/// a process). The datapath explains only these, and only while an MTA asks.
pub(super) fn explain_flags(action: Action, reason: Reason, fcrdns: bool, to: ExplainTo) -> u8 {
    let explainable = action == Action::Drop && reason == Reason::Reputation;
    let to_this_sender = match to {
        ExplainTo::All => true,
        ExplainTo::Fcrdns => fcrdns,
    };
    if explainable && to_this_sender {
        VERDICT_EXPLAIN
    } else {
        0
    }
}

/// A network whose addresses rotate has earned a verdict: into the map, and a verdict line
/// naming the addresses that earned it.
fn network_verdict(maps: &mut dyn Datapath, earned: &Earned, observe: bool) {
    let net = IpNet::V6(earned.net);
    if let Err(e) =
        maps.network_verdict_set(net, Action::Drop, Reason::Reputation, earned.expires_ns)
    {
        tracing::warn!(%net, error = %format!("{e:#}"), "could not store the network's verdict");
        return;
    }
    let members: Vec<String> = earned.members.iter().map(ToString::to_string).collect();
    let reasons = format!(
        "rotation: {} addresses of {net} hold drop verdicts ({})",
        members.len(),
        members.join(", ")
    );
    tracing::info!(
        target: "mxscreen::verdict",
        action = Action::Drop.name(),
        ip = %net,
        reasons = reasons.as_str(),
        ttl = clock::remaining(earned.expires_ns).map_or(0, |d| d.as_secs()),
        source = Reason::Reputation.name(),
        observe,
        "mxscreen-verdict"
    );
}
