//! Hostile clients (issue #15): forged log lines and megabyte user names,
//! partial packets after login, connections that never log in — against
//! the real daemon and MariaDB.
//!
//! Datapath `auto` (the kernel session path, which loads on this machine;
//! idle sessions are carried by it while the hostile ones are cut off);
//! `hostile_clients.rs` runs the same suite in `userspace`.

const DATAPATH: redirector_tests::Datapath = redirector_tests::Datapath::Auto;
include!("suites/hostile_clients.rs");
