//! Loading, attaching and talking to the eBPF datapath.
