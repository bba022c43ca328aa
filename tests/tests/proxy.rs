//! The userspace proxy against real MariaDB servers with real clients:
//! the mariadb CLI, mysql_async and sysbench.
//!
//! Datapath `userspace`; `proxy_ebpf.rs` runs the same suite in `ebpf`.

const DATAPATH: redirector_tests::Datapath = redirector_tests::Datapath::Userspace;
include!("suites/proxy.rs");
