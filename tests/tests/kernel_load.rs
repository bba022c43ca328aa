//! The kernel session path under everything that used to break it, at once
//! (../shared/KERNEL-NOTES.md): sysbench `oltp_read_only` and
//! `oltp_read_write`, each with prepared statements and with the text
//! protocol, 16 threads, while
//! sessions are moved every 0.3 s, beside a second redirector daemon on the
//! same host whose clients connect, query and close in a tight loop, with
//! the ephemeral port range narrowed so local ports are reused within
//! seconds. Every sysbench run must end with no error other than the
//! deadlocks sysbench retries, and no session may be lost.
//!
//! Its own test binary: the port range is host-wide. Each run lasts
//! `REDIRECTOR_LOAD_SECONDS` (default 30).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use mysql_async::prelude::*;
use rand::seq::IndexedRandom;
use redirector_tests::sysbench::Sysbench;
use redirector_tests::*;
use serde_json::json;

const RANGE: &str = "/proc/sys/net/ipv4/ip_local_port_range";

/// Narrows the ephemeral port range for the test and restores it on drop
/// (also when the test fails).
struct PortRange(String);

impl PortRange {
    fn narrow(range: &str) -> Result<PortRange> {
        let old = std::fs::read_to_string(RANGE).context("reading the port range (root?)")?;
        std::fs::write(RANGE, range).context("narrowing the port range (root?)")?;
        Ok(PortRange(old))
    }
}

impl Drop for PortRange {
    fn drop(&mut self) {
        let _ = std::fs::write(RANGE, self.0.trim());
    }
}

fn seconds() -> u64 {
    std::env::var("REDIRECTOR_LOAD_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30)
}

/// Clients of the second daemon: connect, `SELECT 1`, close, as fast as
/// they can, until `stop`. Returns (round trips, failures).
async fn churn(addr: std::net::SocketAddr, stop: Arc<AtomicBool>) -> (u64, u64, Option<String>) {
    let (mut ok, mut failed, mut first_error) = (0, 0, None);
    while !stop.load(Ordering::Relaxed) {
        let attempt = async {
            let mut c = mysql_async::Conn::new(client::app_opts(addr)).await?;
            let one: Option<i64> = c.query_first("SELECT 1").await?;
            c.disconnect().await?;
            Ok::<_, mysql_async::Error>(one)
        };
        match attempt.await {
            Ok(Some(1)) => ok += 1,
            other => {
                failed += 1;
                first_error.get_or_insert_with(|| format!("{other:?}"));
            }
        }
    }
    (ok, failed, first_error)
}

/// Moves a random idle session of `b` to another server every 300 ms until
/// `stop`. Returns the moves that happened.
async fn keep_moving(b: &Bed, stop: Arc<AtomicBool>) -> Result<u64> {
    let moved = AtomicU64::new(0);
    let names: Vec<String> = b.servers().iter().map(|s| s.name.clone()).collect();
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let sessions = b.http.get("/v1/sessions").await?;
        let candidates: Vec<(u64, String)> = sessions
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| {
                Some((
                    s["session_id"].as_u64()?,
                    s["server_name"].as_str()?.to_string(),
                ))
            })
            .collect();
        let Some((id, on)) = candidates.choose(&mut rand::rng()).cloned() else {
            continue;
        };
        let Some(to) = names.iter().find(|n| **n != on) else {
            continue;
        };
        let (status, _) = b
            .http
            .post(
                "/v1/sessions/move",
                json!({"sessions": [id], "to": to, "wait_timeout_s": 1.0}),
            )
            .await?;
        if status.is_success() {
            moved.fetch_add(1, Ordering::Relaxed);
        }
    }
    Ok(moved.load(Ordering::Relaxed))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sysbench_under_moves_beside_a_churning_second_daemon() -> Result<()> {
    let b = Bed::builder()
        .servers(2)
        .datapath(Datapath::Ebpf)
        .round_robin()
        .extra("[listen]\naddress = \"{listen}\"\nmax_connections = 2000\n")
        .start()?;
    for s in b.servers() {
        s.sql("SET GLOBAL max_connections = 1000")?;
    }
    // The second daemon, on the same servers, with the kernel path too.
    let other = Bed::builder()
        .datapath(Datapath::Ebpf)
        .daemon(b.servers())?;
    let secs = seconds();
    let workloads = [
        ("oltp_read_only", "auto"),
        ("oltp_read_only", "disable"),
        ("oltp_read_write", "auto"),
        ("oltp_read_write", "disable"),
    ];
    // Both scripts use the same tables; every server gets its copy.
    for s in b.servers() {
        Sysbench::new("oltp_read_write")
            .tables(4)
            .table_size(10_000)
            .prepare(s.addr())?;
    }
    let _range = PortRange::narrow("40000 40300")?;
    for (script, ps) in workloads {
        let stop = Arc::new(AtomicBool::new(false));
        let churners: Vec<_> = (0..3)
            .map(|_| tokio::spawn(churn(other.addr, stop.clone())))
            .collect();
        let mover = {
            let stop = stop.clone();
            let b = &b;
            async move { keep_moving(b, stop).await }
        };
        let sb = Sysbench::new(script)
            .tables(4)
            .table_size(10_000)
            .threads(16)
            .seconds(secs)
            .ps_mode(ps);
        let addr = b.addr();
        let run = tokio::task::spawn_blocking(move || sb.run(addr));
        let (report, moved) = tokio::join!(
            async {
                let r = run.await;
                stop.store(true, Ordering::Relaxed);
                r
            },
            mover
        );
        let report = report??;
        let moved = moved?;
        let (mut churned, mut churn_failed, mut churn_error) = (0, 0, None);
        for c in churners {
            let (ok, failed, error) = c.await?;
            churned += ok;
            churn_failed += failed;
            churn_error = churn_error.or(error);
        }
        let tx = report.transactions.unwrap_or(0);
        let errors = report.ignored_errors.unwrap_or(u64::MAX);
        println!(
            "{script} ps={ps} {secs}s: {tx} transactions, {errors} retried errors, {moved} moves; \
             second daemon: {churned} connect/query/close, {churn_failed} failed \
             (ports exhausted by TIME_WAIT in the narrowed range; first: {churn_error:?})"
        );
        ensure!(tx > 100, "{}", report.stdout);
        // Only deadlocks and lock waits are retried by sysbench; read-only
        // meets none.
        let allowed = if script == "oltp_read_only" {
            0
        } else {
            tx / 1000
        };
        ensure!(errors <= allowed, "{}", report.stdout);
        ensure!(moved > 10, "only {moved} moves happened");
        ensure!(churned > 100, "the second daemon's clients barely ran");
    }
    let log = b.daemon.log();
    ensure!(!log.contains("server lost"), "sessions lost:\n{log}");
    b.assert_kernel_carried().await?;
    let scrape = b.http.scrape().await?;
    let events: Vec<(String, f64)> = admin::samples(&scrape)
        .into_iter()
        .filter(|(k, v)| k.starts_with("redirector_kernel_events_total") && *v > 0.0)
        .collect();
    println!("kernel events: {events:?}");
    Ok(())
}
