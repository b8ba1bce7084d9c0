//! The kernel program's counters: one family, one label value per outcome.

use ::metrics::{Unit, counter, describe_counter, describe_gauge, gauge};
use anyhow::Result;
use filter_common::Counter;

use super::Families;
use crate::datapath::DatapathRead;

pub const PACKETS: &str = "mxscreen_datapath_packets_total";
const NEW_SOURCES: &str = "mxscreen_datapath_new_sources_per_second";
const HOLD_BOUND: &str = "mxscreen_datapath_hold_bound_new_sources_per_second";

/// Reads the per-CPU counters through a handle of its own.
pub struct DatapathFamilies(pub Box<dyn DatapathRead>);

impl Families for DatapathFamilies {
    fn describe(&self) {
        describe_counter!(
            PACKETS,
            Unit::Count,
            "Packets by the outcome the XDP/tc program (or the nftables table) counted, summed over CPUs, since the maps (or the table) were created (`mxscreen stats`). events_emitted, events_lost and events_over_budget count the packets that reported an unknown peer, found the event ring (or the report set, or the NFLOG socket) full, or found the event budget spent; unheld, on top of unknown, the unknown peers first_contact = hold would have held but that passed: the ring full, or new sources coming faster than the datapath can remember whom it holds (datapath.maps.seen)."
        );
        describe_gauge!(
            NEW_SOURCES,
            "New sources a second the eBPF datapath's seen maps take (the busier of this second and the last); absent under nftables."
        );
        describe_gauge!(
            HOLD_BOUND,
            "The most new sources a second under which the eBPF datapath holds first contact (half of datapath.maps.seen per hold_max; 0 without hold): above it, unknown peers pass unheld."
        );
    }

    fn update(&self) -> Result<()> {
        if let Some(r) = self.0.new_sources()? {
            gauge!(NEW_SOURCES).set(r.per_s as f64);
            gauge!(HOLD_BOUND).set(r.hold_bound as f64);
        }
        let values = self.0.counters()?;
        // Every counter the datapath has, so one added there appears here with no change.
        for c in Counter::ALL {
            counter!(PACKETS, "outcome" => c.name()).absolute(values[c as usize]);
        }
        Ok(())
    }
}
