//! Session moves through the real daemon and real MariaDB servers: state
//! carried over, not-movable reasons, wait timeout and FORCE, drain,
//! rebalance, failover. Moves are requested over the REST API.
//!
//! Datapath `userspace`; `mover_kernel.rs` runs the same suite in `auto`
//! (the kernel session path).

const DATAPATH: redirector_tests::Datapath = redirector_tests::Datapath::Userspace;
include!("suites/mover.rs");
