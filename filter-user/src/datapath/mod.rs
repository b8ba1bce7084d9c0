//! Loading, attaching and talking to the eBPF datapath.
//!
//! - [`load`]: the embedded object, loading and pinning.
//! - [`sizes`]: map capacities from the config.
//! - [`attach`]: XDP/tc attach modes with fallback and readable errors.
//! - [`batch`]: whole-map reads and bulk deletes in few syscalls.
//! - [`maps`]: typed access to every map (config, lists, verdicts, counters).
//! - [`census`]: what the maps hold, counted (verdicts by action and reason, list entries).
//! - [`bpffs`]: making sure the BPF filesystem is mounted for pins.
//! - [`clock`]: the clock the datapath compares expiries against.
//! - [`events`]: the new-peer events the datapath reports, typed.
//! - [`explain`]: when a dropped peer's next SYN is let through to be explained.
//! - [`first_contact`]: pass or hold a peer with no verdict yet.

pub mod attach;
pub mod batch;
pub mod bpffs;
pub mod census;
pub mod clock;
pub mod events;
pub mod explain;
pub mod first_contact;
pub mod load;
pub mod maps;
pub mod sizes;

pub use attach::{AttachMode, Attached, attach};
pub use census::Census;
pub use events::{Events, NewPeer};
pub use first_contact::FirstContact;
pub use load::{LoadOptions, load};
pub use maps::{CounterReader, DatapathMaps, ListKind};
pub use sizes::MapSizes;
