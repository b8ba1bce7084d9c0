//! The balancer watch (`status`'s balancer warnings): per check, whether it is suspected and
//! the share its last deciding window measured. Read from the watch's shared status: a scrape
//! never walks a map.

use std::sync::{Arc, Mutex};

use ::metrics::{describe_gauge, gauge};
use anyhow::Result;

use super::Families;
use crate::control::protocol::{BalancerCheck, BalancerStatus};

const SUSPECTED: &str = "mxscreen_balancer_suspected";
const SHARE: &str = "mxscreen_balancer_share_ratio";

/// The watch's status, shared with its thread.
pub struct BalancerFamilies(pub Arc<Mutex<BalancerStatus>>);

impl Families for BalancerFamilies {
    fn describe(&self) {
        describe_gauge!(
            SUSPECTED,
            "1 while a check suggests a load balancer, SNAT or PROXY protocol in front of the host \
             (check: one_source, private_sources, unseen_peers); see status."
        );
        describe_gauge!(
            SHARE,
            "The share (0 to 1) the check's last window with enough traffic measured: of the \
             SYNs to the screened ports (one_source, private_sources), of the MTA's questions \
             (unseen_peers)."
        );
    }

    fn update(&self) -> Result<()> {
        let s = self.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let checks: [(&str, &BalancerCheck); 3] = [
            ("one_source", &s.one_source),
            ("private_sources", &s.private_sources),
            ("unseen_peers", &s.unseen_peers),
        ];
        for (check, c) in checks {
            gauge!(SUSPECTED, "check" => check).set(f64::from(u8::from(c.suspected)));
            gauge!(SHARE, "check" => check).set(c.share);
        }
        Ok(())
    }
}
