//! Session moves through the real daemon and real MariaDB servers: state
//! carried over, not-movable reasons, wait timeout and FORCE, drain,
//! rebalance, failover. Moves are requested over the REST API.
//!
//! Datapath `auto` (the kernel session path, which loads on this machine;
//! key tests check that the sessions were carried by it); `mover.rs` runs
//! the same suite in `userspace`.

const DATAPATH: redirector_tests::Datapath = redirector_tests::Datapath::Auto;
include!("suites/mover.rs");
