//! The proxy against real MariaDB servers with real clients:
//! the mariadb CLI, mysql_async and sysbench.
//!
//! Datapath `auto` (the default: the kernel session path, which loads on
//! this machine; the tests check that sessions were carried by it);
//! `proxy.rs` runs the same suite in `userspace`.

const DATAPATH: redirector_tests::Datapath = redirector_tests::Datapath::Auto;
include!("suites/proxy.rs");
