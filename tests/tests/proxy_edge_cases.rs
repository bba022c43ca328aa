//! Edge cases of the userspace proxy: each test checks one behaviour
//! (half-close, capabilities, CHANGE_USER, reloads, TLS …). Every test that talks to the proxy
//! also checks the same thing directly against MariaDB as the reference.
//!
//! Datapath `userspace`; `proxy_edge_cases_ebpf.rs` runs the same suite in `ebpf`.

const DATAPATH: redirector_tests::Datapath = redirector_tests::Datapath::Userspace;
include!("suites/proxy_edge_cases.rs");
