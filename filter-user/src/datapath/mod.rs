//! Loading, attaching and talking to the eBPF datapath.
//!
//! - [`load`]: the embedded object, loading and pinning.
//! - [`sizes`]: map capacities from the config.
//! - [`backend`]: the one interface the daemon talks to the datapath through, which the
//!   eBPF maps here and the nftables table (`crate::nftables`) both implement.
//! - [`attach`]: XDP/tc attach modes with fallback and readable errors.
//! - [`batch`]: whole-map reads, bulk writes and bulk deletes in few syscalls.
//! - [`reader`]: the read side, written once: the config, the counters, a source's entry,
//!   verdicts, the lists' longest-prefix match; the owner reads through it, and readers
//!   outside the main loop get a handle of their own.
//! - [`maps`]: the owner of every map, built on a [`MapsReader`], and the runtime config it
//!   writes; its writes for verdicts and per-source state are in [`peers`], for list entries
//!   in [`entries`], for whole feeds in [`feedsets`], for network verdicts in [`networks`].
//! - [`lists`]: the list maps and the owner's bookkeeping of them (who wants each prefix,
//!   the lengths in use).
//! - [`typed`]: typed handles on kernel maps, both families, whole-map reads.
//! - [`census`]: what the maps hold, counted (verdicts by action and reason, list entries).
//! - [`prefix`]: prefixes and sorted prefix sets (what a feed is).
//! - [`hits`]: which per-CPU hit counters of list entries are taken.
//! - [`cache`]: the datapath's decision cache: its generation, and the hits its slots hold.
//! - [`bpffs`]: making sure the BPF filesystem is mounted for pins.
//! - [`clock`]: the clock the datapath compares expiries against, and its calibration.
//! - [`events`]: the new-peer events the datapath reports, typed.
//! - [`explain`]: when a dropped peer's next SYN is let through to be explained.
//! - [`first_contact`]: pass or hold a peer with no verdict yet.

pub mod attach;
pub mod backend;
pub mod batch;
pub mod bpffs;
mod cache;
pub mod census;
pub mod clock;
mod entries;
pub mod events;
pub mod explain;
pub mod feedsets;
pub mod first_contact;
mod hits;
pub mod lists;
pub mod load;
pub mod maps;
pub mod networks;
pub mod peers;
pub mod prefix;
pub mod reader;
pub mod sizes;
mod typed;

pub use attach::{AttachMode, Attached, attach};
pub use backend::{Backend, BackendChoice, Datapath, DatapathRead, NewSourceRate};
pub use census::Census;
pub use events::{Events, NewPeer};
pub use feedsets::FeedChange;
pub use filter_common::Table;
pub use first_contact::FirstContact;
pub use lists::ListKind;
pub use load::{LoadOptions, load};
pub use maps::DatapathMaps;
pub use networks::NetworkVerdict;
pub use prefix::{Prefix, PrefixSet};
pub use reader::MapsReader;
pub use sizes::MapSizes;
