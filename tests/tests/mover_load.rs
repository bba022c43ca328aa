//! Moves under load on a 3-node Galera cluster (every node sees the same
//! rows): 32 clients commit ledger rows, each with its own session state,
//! while sessions are moved continuously. No client may see an error, no
//! session may lose its state, and every committed row must be present
//! exactly once.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use mysql_async::prelude::*;
use mysql_async::Conn;
use rand::Rng;
use redirector_tests::client::app_opts;
use redirector_tests::*;
use serde_json::json;

const CLIENTS: u64 = 32;
const MIN_MOVES: u64 = 2000;
const MOVERS: usize = 4;

async fn client_loop(
    addr: std::net::SocketAddr,
    id: u64,
    stop: Arc<AtomicBool>,
) -> Result<(u64, Vec<u64>)> {
    let mut c = Conn::new(app_opts(addr).db_name(Some("ledger"))).await?;
    let session = u64::from(c.id());
    // Session state that must follow the session across moves.
    let tag = format!("client-{id}-\u{e9}");
    c.exec_drop("SET @tag = ?", (tag.clone(),)).await?;
    c.query_drop(format!("SET SESSION sql_mode = 'ANSI_QUOTES', @n = {id}"))
        .await?;
    let insert = c
        .prep("INSERT INTO ledger.entries (client, seq, tag) VALUES (@n, ?, @tag)")
        .await?;
    let mut committed = Vec::new();
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) {
        seq += 1;
        c.query_drop("START TRANSACTION").await?;
        c.exec_drop(&insert, (seq,)).await?;
        c.query_drop("COMMIT").await?;
        committed.push(seq);
        if seq.is_multiple_of(10) {
            let (t, mode): (String, String) = c
                .query_first("SELECT @tag, @@sql_mode")
                .await?
                .context("state row")?;
            ensure!(
                t == tag && mode == "ANSI_QUOTES",
                "client {id}: state lost: {t} {mode}"
            );
        }
    }
    c.disconnect().await?;
    Ok((session, committed))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ledger_survives_continuous_moves_on_galera() -> Result<()> {
    let cluster = GaleraCluster::start(3)?;
    cluster[0].sql(
        "CREATE DATABASE ledger; CREATE TABLE ledger.entries (client INT NOT NULL, seq INT NOT NULL, \
         tag VARCHAR(64) NOT NULL, PRIMARY KEY (client, seq)) ENGINE=InnoDB",
    )?;
    let daemon = Bed::builder()
        .datapath(Datapath::Userspace)
        .daemon(cluster.nodes())?;
    let names: Vec<String> = cluster.nodes().iter().map(|n| n.name.clone()).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for id in 1..=CLIENTS {
        clients.push(tokio::spawn(client_loop(daemon.addr, id, stop.clone())));
    }
    let http = AdminHttp::new(daemon.admin_http_addr())?.with_timeout(Duration::from_secs(30))?;
    let moved = Arc::new(AtomicU64::new(0));
    let attempts = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut movers = Vec::new();
    for _ in 0..MOVERS {
        let (http, names) = (http.clone(), names.clone());
        let (moved, attempts) = (moved.clone(), attempts.clone());
        movers.push(tokio::spawn(async move {
            let mut failures: BTreeMap<String, u64> = BTreeMap::new();
            while moved.load(Ordering::Relaxed) < MIN_MOVES {
                ensure!(
                    started.elapsed() < Duration::from_secs(240),
                    "only {} moves in 240 s; failures {failures:?}",
                    moved.load(Ordering::Relaxed)
                );
                let sessions = http.get("/v1/sessions").await?;
                let list = sessions.as_array().cloned().unwrap_or_default();
                if list.is_empty() {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
                let (pick, to) = {
                    let mut rng = rand::rng();
                    let s = &list[rng.random_range(0..list.len())];
                    let here = s["server_name"].as_str().unwrap_or_default().to_string();
                    let others: Vec<&String> = names.iter().filter(|n| **n != here).collect();
                    (
                        s["session_id"].as_u64().unwrap_or(0),
                        others[rng.random_range(0..others.len())].clone(),
                    )
                };
                attempts.fetch_add(1, Ordering::Relaxed);
                let (status, body) = http
                    .post(
                        "/v1/sessions/move",
                        json!({"sessions": [pick], "to": to, "wait_timeout_s": 5}),
                    )
                    .await?;
                if status == 200 {
                    moved.fetch_add(1, Ordering::Relaxed);
                } else {
                    let reason = body["error"].as_str().unwrap_or("?");
                    // A session that just ended is fine; anything else is counted.
                    *failures
                        .entry(reason.chars().take(80).collect())
                        .or_insert(0) += 1;
                }
            }
            anyhow::Ok(failures)
        }));
    }
    let mut failures = BTreeMap::new();
    for m in movers {
        for (k, v) in m.await?? {
            *failures.entry(k).or_insert(0) += v;
        }
    }
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let mut expected = 0u64;
    let mut per_client = BTreeMap::new();
    for (i, c) in clients.into_iter().enumerate() {
        let (_, committed) = c.await?.with_context(|| format!("client {}", i + 1))?;
        expected += committed.len() as u64;
        per_client.insert(i as u64 + 1, committed);
    }
    let moves = moved.load(Ordering::Relaxed);
    eprintln!(
        "{moves} moves ({} attempts) in {elapsed:?}; {expected} transactions committed; not moved: {failures:?}",
        attempts.load(Ordering::Relaxed)
    );
    ensure!(moves >= MIN_MOVES);
    // Ledger: every committed (client, seq) exactly once, nothing else.
    let count =
        cluster[1].sql("SELECT COUNT(*), COUNT(DISTINCT client, seq) FROM ledger.entries")?;
    let mut it = count.split_whitespace();
    let (total, distinct) = (it.next().unwrap_or("?"), it.next().unwrap_or("?"));
    ensure!(
        total == expected.to_string() && distinct == total,
        "ledger has {total} rows ({distinct} distinct), clients committed {expected}"
    );
    for (client, seqs) in &per_client {
        let max = seqs.last().copied().unwrap_or(0);
        let got = cluster[2].sql(&format!(
            "SELECT COUNT(*), COALESCE(MAX(seq), 0), COALESCE(MIN(tag = 'client-{client}-\u{e9}'), 1) FROM ledger.entries WHERE client = {client}"
        ))?;
        let want = format!("{} {max} 1", seqs.len());
        ensure!(
            got.split_whitespace().collect::<Vec<_>>().join(" ") == want,
            "client {client}: ledger {got:?}, committed {want:?}"
        );
    }
    // The daemon counted the same moves.
    let log = http.metrics_text().await?;
    ensure!(
        log.contains("redirector_moves_total{result=\"ok\",reason=\"operator\"}"),
        "no ok moves in metrics"
    );
    drop(daemon);
    Ok(())
}
