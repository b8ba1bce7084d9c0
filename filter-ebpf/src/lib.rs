//! Host-side stub: the real program is the `filter-ebpf` binary built for the bpf target by
//! filter-user's build.rs. This library only exists so filter-user can name the crate as a
//! build dependency (which makes cargo rebuild the object when this crate changes).
#![no_std]
