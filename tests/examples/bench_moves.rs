//! Move benchmark driven by `cargo xtask bench` (not a test: it measures and
//! prints, it does not judge). Against a running daemon:
//! 1. opens `--sessions` idle sessions and reports the daemon's memory per
//!    idle session (VmRSS of `--pid`);
//! 2. moves `--latency-moves` of them one at a time between two servers and
//!    reports the move duration the daemon measured (p50, p99, max);
//! 3. adds `--new-server NAME=ADDR`, rebalances, and reports the time until
//!    the rebalance request returned with every planned move done.
//!
//! Prints one JSON object on stdout.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use mysql_async::prelude::*;
use mysql_async::Conn;
use redirector_tests::client::app_opts;
use redirector_tests::AdminHttp;
use serde_json::json;

struct Args {
    listen: String,
    http: String,
    pid: u32,
    sessions: usize,
    latency_moves: usize,
    from: String,
    to: String,
    new_server: (String, String),
}

fn parse_args() -> Result<Args> {
    let mut it = std::env::args().skip(1);
    let mut get = |name: &str| -> Result<String> {
        match (it.next(), it.next()) {
            (Some(k), Some(v)) if k == name => Ok(v),
            (k, _) => bail!("expected {name} VALUE, got {k:?}"),
        }
    };
    let listen = get("--listen")?;
    let http = get("--http")?;
    let pid = get("--pid")?.parse()?;
    let sessions = get("--sessions")?.parse()?;
    let latency_moves = get("--latency-moves")?.parse()?;
    let from = get("--from")?;
    let to = get("--to")?;
    let new = get("--new-server")?;
    let (n, a) = new.split_once('=').context("--new-server NAME=ADDRESS")?;
    Ok(Args {
        listen,
        http,
        pid,
        sessions,
        latency_moves,
        from,
        to,
        new_server: (n.to_string(), a.to_string()),
    })
}

fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("VmRSS")
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let a = parse_args()?;
    let listen = a.listen.parse().context("--listen HOST:PORT")?;
    let opts = app_opts(listen);
    let http = AdminHttp::new(a.http.parse().context("--http HOST:PORT")?)?
        .with_timeout(Duration::from_secs(300))?;

    // 1. idle sessions and memory.
    let rss_before = rss_kib(a.pid)?;
    let mut conns: Vec<Conn> = Vec::with_capacity(a.sessions);
    for _ in 0..a.sessions {
        let mut c = Conn::new(opts.clone()).await?;
        c.query_drop("SET @bench = 1").await?;
        conns.push(c);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_after = rss_kib(a.pid)?;
    let per_session_kib = (rss_after.saturating_sub(rss_before)) as f64 / a.sessions as f64;

    // 2. latency of single moves of idle sessions.
    let mut durations = Vec::new();
    let mut wall = Vec::new();
    for (i, c) in conns.iter().take(a.latency_moves).enumerate() {
        let to = if i % 2 == 0 { &a.to } else { &a.from };
        let id = u64::from(c.id());
        let started = Instant::now();
        let (status, body) = http
            .post(
                "/v1/sessions/move",
                json!({"sessions": [id], "to": to, "wait_timeout_s": 10}),
            )
            .await?;
        wall.push(started.elapsed().as_secs_f64() * 1000.0);
        ensure!(status.is_success(), "move {id} → {to}: {body}");
        let ms = body["moved"][0]["duration_ms"].as_f64().unwrap_or(f64::NAN);
        durations.push(ms);
    }
    durations.sort_by(|x, y| x.total_cmp(y));
    wall.sort_by(|x, y| x.total_cmp(y));
    for c in conns.iter_mut().take(a.latency_moves) {
        c.query_drop("SELECT 1").await?;
    }

    // 3. grow the cluster and rebalance every idle session.
    let (name, addr) = &a.new_server;
    let (status, body) = http
        .post(
            "/v1/servers",
            json!({"name": name, "address": addr, "weight": 10}),
        )
        .await?;
    ensure!(status.is_success(), "add server: {body}");
    let started = Instant::now();
    let (status, body) = http
        .post("/v1/rebalance", json!({"wait_timeout_s": 60}))
        .await?;
    let rebalance_s = started.elapsed().as_secs_f64();
    ensure!(status.is_success(), "rebalance: {body}");
    let rebalanced = body["moved"].as_array().map_or(0, |m| m.len());
    let servers = http.get("/v1/servers").await?;
    for c in conns.iter_mut() {
        c.query_drop("SELECT 1").await?;
    }
    let out = json!({
        "idle_sessions": a.sessions,
        "memory_per_idle_session_kib": per_session_kib,
        "move_latency_ms": {
            "moves": durations.len(),
            "p50": percentile(&durations, 0.50),
            "p99": percentile(&durations, 0.99),
            "max": durations.last().copied().unwrap_or(f64::NAN),
            "request_p50": percentile(&wall, 0.50),
            "request_p99": percentile(&wall, 0.99),
        },
        "rebalance": {
            "sessions": a.sessions,
            "moved": rebalanced,
            "seconds": rebalance_s,
            "servers": servers,
        },
    });
    println!("{out}");
    for c in conns {
        let _ = c.disconnect().await;
    }
    Ok(())
}
