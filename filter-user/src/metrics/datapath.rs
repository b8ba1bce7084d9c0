//! The kernel program's counters: one family, one label value per outcome.

use ::metrics::{Unit, counter, describe_counter};
use anyhow::Result;
use filter_common::Counter;

use super::Families;
use crate::datapath::DatapathRead;

pub const PACKETS: &str = "mxscreen_datapath_packets_total";

/// Reads the per-CPU counters through a handle of its own.
pub struct DatapathFamilies(pub Box<dyn DatapathRead>);

impl Families for DatapathFamilies {
    fn describe(&self) {
        describe_counter!(
            PACKETS,
            Unit::Count,
            "Packets by the outcome the XDP/tc program (or the nftables table) counted, summed over CPUs, since the maps (or the table) were created (`mxscreen stats`). events_emitted, events_lost and events_over_budget count the packets that reported an unknown peer, found the event ring (or the report set, or the NFLOG socket) full, or found the event budget spent."
        );
    }

    fn update(&self) -> Result<()> {
        let values = self.0.counters()?;
        // Every counter the datapath has, so one added there appears here with no change.
        for c in Counter::ALL {
            counter!(PACKETS, "outcome" => c.name()).absolute(values[c as usize]);
        }
        Ok(())
    }
}
