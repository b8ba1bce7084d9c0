//! Loading, attaching and talking to the eBPF datapath.
//!
//! - [`load`]: the embedded object, map sizing and pinning.
//! - [`attach`]: XDP/tc attach modes with fallback and readable errors.
//! - [`batch`]: whole-map reads and bulk deletes in few syscalls.
//! - [`maps`]: typed access to every map (config, lists, verdicts, counters).
//! - [`bpffs`]: making sure the BPF filesystem is mounted for pins.
//! - [`clock`]: the clock the datapath compares expiries against.

pub mod attach;
pub mod batch;
pub mod bpffs;
pub mod clock;
pub mod load;
pub mod maps;

pub use attach::{AttachMode, Attached, attach};
pub use load::{LoadOptions, MapSizes, load};
pub use maps::{DatapathMaps, ListKind};
