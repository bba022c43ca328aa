//! Hostile clients (issue #15): forged log lines and megabyte user names,
//! partial packets after login, connections that never log in — against
//! the real daemon and MariaDB.
//!
//! Datapath `userspace`; `hostile_clients_ebpf.rs` runs the same suite in `auto`.

const DATAPATH: redirector_tests::Datapath = redirector_tests::Datapath::Userspace;
include!("suites/hostile_clients.rs");
