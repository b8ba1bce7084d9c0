//! Explained refusals and the MTA's questions: whether the datapath explains now, and when the
//! MTA last asked (an MTA that stopped asking turns explanations off a window later). Read
//! from the question tracker the MTA sockets share: a scrape walks no map.

use std::sync::Arc;

use ::metrics::{describe_gauge, gauge};
use anyhow::Result;

use super::Families;
use crate::{datapath::clock, query::MtaAsks};

const EXPLAIN_ON: &str = "mxscreen_explain_on";
const LAST_QUESTION: &str = "mxscreen_mta_last_question_timestamp_seconds";

/// The tracker the query socket and the policy service write.
pub struct MtaFamilies(pub Arc<MtaAsks>);

impl Families for MtaFamilies {
    fn describe(&self) {
        describe_gauge!(
            EXPLAIN_ON,
            "1 while explained refusals are on: an MTA asked mxscreen within policy.explain_every, \
             so a listed sender's connection may reach it once per window to be refused with the \
             listing."
        );
        describe_gauge!(
            LAST_QUESTION,
            "Unix time of the MTA's last question (query socket or policy service); 0: none since \
             the daemon started."
        );
    }

    fn update(&self) -> Result<()> {
        let on = self.0.explaining(clock::now_ns());
        gauge!(EXPLAIN_ON).set(f64::from(u8::from(on)));
        gauge!(LAST_QUESTION).set(self.0.last_asked_unix().unwrap_or(0) as f64);
        Ok(())
    }
}
