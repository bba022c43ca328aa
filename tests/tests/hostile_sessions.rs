//! Hostile-input suite, sessions: pipelining past the tracker, commands it
//! cannot frame, a DBA's KILL, clients gone mid-statement, stray long data.
//!
//! Datapath `userspace`; hostile_sessions_ebpf.rs runs the same suite on the kernel path (`auto`).

const DATAPATH: redirector_tests::Datapath = redirector_tests::Datapath::Userspace;
include!("suites/hostile_sessions.rs");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_pipelining_is_served_in_order_and_the_session_ends() -> Result<()> {
    deep_pipelining_case(false).await
}
