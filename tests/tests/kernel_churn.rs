//! Clients that connect, start a query and close in the middle of it, 50
//! at a time, on the kernel path: no login is refused, no healthy server is
//! marked down, a client beside them sees no error, and when they are gone
//! no session and no kernel map entry is left. (Such churn used to make the
//! daemon mark healthy backends down and refuse most new logins.)
//!
//! Its own test binary (heavy). Lasts `REDIRECTOR_LOAD_SECONDS` (default 30).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use mysql_async::prelude::*;
use redirector_tests::*;

fn seconds() -> u64 {
    std::env::var("REDIRECTOR_LOAD_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30)
}

#[derive(Default)]
struct Tally {
    logins: AtomicU64,
    refused: AtomicU64,
    aborted: AtomicU64,
}

/// Connects, starts `SELECT SLEEP(…)` and drops the connection before the
/// answer, until `stop`.
async fn quitter(addr: std::net::SocketAddr, stop: Arc<AtomicBool>, t: Arc<Tally>) {
    while !stop.load(Ordering::Relaxed) {
        let mut c = match mysql_async::Conn::new(client::app_opts(addr)).await {
            Ok(c) => c,
            Err(e) => {
                eprintln!("login refused: {e}");
                t.refused.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        t.logins.fetch_add(1, Ordering::Relaxed);
        let q = c.query_drop("SELECT SLEEP(0.5)");
        if tokio::time::timeout(Duration::from_millis(20), q)
            .await
            .is_err()
        {
            t.aborted.fetch_add(1, Ordering::Relaxed);
        }
        // Dropped mid-query: the socket closes without COM_QUIT.
        drop(c);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clients_closing_mid_query_leave_servers_up_and_nothing_behind() -> Result<()> {
    let b = Bed::builder()
        .servers(2)
        .datapath(Datapath::Ebpf)
        .extra("[listen]\naddress = \"{listen}\"\nmax_connections = 2000\n")
        .start()?;
    for s in b.servers() {
        s.sql("SET GLOBAL max_connections = 1000")?;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let quitters: Vec<_> = (0..50)
        .map(|_| tokio::spawn(quitter(b.addr(), stop.clone(), tally.clone())))
        .collect();
    let mut healthy = b.conn().await?;
    let (mut queries, mut healthy_errors, mut down_seen) = (0u64, 0u64, Vec::new());
    let end = Instant::now() + Duration::from_secs(seconds());
    while Instant::now() < end {
        match healthy.query_first::<i64, _>("SELECT 41 + 1").await {
            Ok(Some(42)) => queries += 1,
            other => {
                healthy_errors += 1;
                eprintln!("healthy client: {other:?}");
            }
        }
        if queries % 50 == 0 {
            let servers = b.http.get("/v1/servers").await?;
            for s in servers.as_array().into_iter().flatten() {
                if s["state"] == "down" {
                    down_seen.push(s["server_name"].to_string());
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for q in quitters {
        q.await?;
    }
    let (logins, refused, aborted) = (
        tally.logins.load(Ordering::Relaxed),
        tally.refused.load(Ordering::Relaxed),
        tally.aborted.load(Ordering::Relaxed),
    );
    println!(
        "{logins} logins ({aborted} closed mid-query), {refused} refused; healthy client: {queries} queries, {healthy_errors} errors"
    );
    ensure!(refused == 0, "{refused} logins refused");
    ensure!(down_seen.is_empty(), "servers marked down: {down_seen:?}");
    ensure!(
        healthy_errors == 0 && queries > 100,
        "healthy client: {queries} ok, {healthy_errors} errors"
    );
    ensure!(aborted > 100, "only {aborted} queries were cut short");
    b.assert_kernel_carried().await?;
    healthy.disconnect().await?;
    // Nothing left behind: no session, no kernel map entry.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let sessions = b.http.get("/v1/sessions").await?;
        let left = sessions.as_array().map_or(0, |a| a.len());
        let scrape = b.http.scrape().await?;
        let entries: f64 = admin::samples(&scrape)
            .iter()
            .filter(|(k, _)| k.starts_with("redirector_kernel_map_entries"))
            .map(|(_, v)| v)
            .sum();
        if left == 0 && entries == 0.0 {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "{left} sessions and {entries} map entries left behind"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}
