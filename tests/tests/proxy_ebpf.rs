//! The proxy against real MariaDB servers with real clients:
//! the mariadb CLI, mysql_async and sysbench.
//!
//! Datapath `ebpf` (the kernel session path); `proxy.rs` runs the same
//! suite in `userspace`.

const DATAPATH: redirector_tests::Datapath = redirector_tests::Datapath::Ebpf;
include!("suites/proxy.rs");
