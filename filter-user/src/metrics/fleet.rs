//! The fleet link (`status`'s fleet line): whether it is up and since when, what went over
//! it, the claims that kept one evaluation per peer per fleet, and what was refused or
//! ignored. Read from the link's own status watch: a scrape never waits on the bus.

use ::metrics::{Unit, counter, describe_counter, describe_gauge, gauge};
use anyhow::Result;
use tokio::sync::watch;

use super::{Families, SharedFacts};
use crate::control::protocol::{FleetLink, FleetStatus};

const LINK_UP: &str = "mxscreen_fleet_link_up";
const LINK_SINCE: &str = "mxscreen_fleet_link_state_since_timestamp_seconds";
const CONNECTS: &str = "mxscreen_fleet_connects_total";
const SENT: &str = "mxscreen_fleet_entries_sent_total";
const RECEIVED: &str = "mxscreen_fleet_entries_received_total";
const CLAIMS: &str = "mxscreen_fleet_claims_total";
const MALFORMED: &str = "mxscreen_fleet_malformed_entries_total";
const REFUSED: &str = "mxscreen_fleet_refused_entries_total";
const NAME_CLASHES: &str = "mxscreen_fleet_name_clash_messages_total";
const REFILLS: &str = "mxscreen_fleet_refills_total";
const TASK_RESTARTS: &str = "mxscreen_fleet_task_restarts_total";

/// The fleet's status watch, and the daemon's facts for what it refused.
pub struct FleetFamilies {
    pub status: watch::Receiver<FleetStatus>,
    pub facts: SharedFacts,
}

impl Families for FleetFamilies {
    fn describe(&self) {
        describe_gauge!(
            LINK_UP,
            "1 while the fleet link to Redis is up; 0 while this host screens alone."
        );
        describe_gauge!(
            LINK_SINCE,
            Unit::Seconds,
            "Unix time the fleet link entered its current state (up or down)."
        );
        describe_counter!(CONNECTS, "Times the fleet link came up.");
        describe_counter!(
            SENT,
            "Entries this host shared with the fleet, by kind (verdict, manual)."
        );
        describe_counter!(
            RECEIVED,
            "Entries this host took from the fleet, by kind (verdict, manual)."
        );
        describe_counter!(
            CLAIMS,
            "New peers by claim outcome: won (evaluated here for the fleet), lost (another host \
             evaluated it), timed_out (lost, but no verdict came in time: evaluated here)."
        );
        describe_counter!(
            MALFORMED,
            "Entries read from the bus that did not parse or check out (logged, ignored)."
        );
        describe_counter!(
            REFUSED,
            "Shared entries this host refused (a block of a protected or too wide prefix)."
        );
        describe_counter!(
            NAME_CLASHES,
            "Messages from another process using this host's fleet name (set a distinct \
             fleet.name on each host)."
        );
        describe_counter!(
            REFILLS,
            "Times Redis was found emptied under the link (the host's marker key gone) and \
             filled again."
        );
        describe_counter!(
            TASK_RESTARTS,
            "Times the fleet task failed (a bug, logged) and was restarted."
        );
    }

    fn update(&self) -> Result<()> {
        let s = self.status.borrow().clone();
        gauge!(LINK_UP).set(if s.link == FleetLink::Up { 1.0 } else { 0.0 });
        gauge!(LINK_SINCE).set(s.since as f64);
        counter!(CONNECTS).absolute(s.connects);
        counter!(SENT, "kind" => "verdict").absolute(s.verdicts_sent);
        counter!(SENT, "kind" => "manual").absolute(s.manual_sent);
        counter!(RECEIVED, "kind" => "verdict").absolute(s.verdicts_received);
        counter!(RECEIVED, "kind" => "manual").absolute(s.manual_received);
        counter!(CLAIMS, "outcome" => "won").absolute(s.claims_won);
        counter!(CLAIMS, "outcome" => "lost").absolute(s.claims_lost);
        counter!(CLAIMS, "outcome" => "timed_out").absolute(s.claims_timed_out);
        counter!(MALFORMED).absolute(s.malformed);
        counter!(NAME_CLASHES).absolute(s.name_clashes);
        counter!(REFILLS).absolute(s.refills);
        counter!(TASK_RESTARTS).absolute(s.task_restarts);
        let refused = self
            .facts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .fleet_refused;
        counter!(REFUSED).absolute(refused);
        Ok(())
    }
}
