//! The kernel session path (`datapath.mode = "ebpf"`): sessions of local
//! applications are carried by sock_ops + sk_msg + stream verdict programs,
//! with the protocol state in maps. (The proxy suites run in this mode too:
//! `proxy_ebpf.rs`, `proxy_edge_cases_ebpf.rs`.)

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use mysql_async::prelude::*;
use redirector_tests::admin::samples;
use redirector_tests::client::port;
use redirector_tests::*;
use serde_json::json;

/// `n` servers behind a daemon on the kernel path, room for many sessions.
fn start(n: usize) -> Result<Bed> {
    Bed::builder()
        .servers(n)
        .datapath(Datapath::Ebpf)
        .extra("[listen]\naddress = \"{listen}\"\nmax_connections = 2000\n")
        .start()
}

/// The `datapath` the REST listing shows for session `id`.
async fn session_datapath(b: &Bed, id: u32) -> Result<Option<String>> {
    let sessions = b.http.get("/v1/sessions").await?;
    Ok(sessions
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["session_id"].as_u64() == Some(u64::from(id)))
        .and_then(|s| s["datapath"].as_str().map(str::to_string)))
}

/// Bytes carried on `datapath` so far (`redirector_bytes_total`, summed
/// over directions and servers).
async fn bytes(b: &Bed, datapath: &str) -> Result<f64> {
    let m = samples(&b.http.scrape().await?);
    Ok(m.iter()
        .filter(|(k, _)| {
            k.starts_with("redirector_bytes_total{") && k.contains(&format!("datapath={datapath}"))
        })
        .map(|(_, v)| v)
        .sum())
}

/// Entries in each kernel map (`redirector_kernel_map_entries`).
async fn map_entries(b: &Bed) -> Result<BTreeMap<String, f64>> {
    Ok(samples(&b.http.scrape().await?)
        .into_iter()
        .filter(|(k, _)| k.starts_with("redirector_kernel_map_entries"))
        .collect())
}

fn total(entries: &BTreeMap<String, f64>) -> f64 {
    entries.values().sum()
}

/// The session listing shows the kernel path, queries and the slow path
/// (prepared statements, USE) give the same results as the userspace path,
/// and the kernel's byte counters move while the daemon's do not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_run_in_the_kernel_and_slow_path_commands_in_the_daemon() -> Result<()> {
    let b = start(1)?;
    let mut c = b.conn().await?;
    c.query_drop("CREATE TABLE k (id INT PRIMARY KEY, v VARCHAR(64))")
        .await?;
    let user_before = bytes(&b, "userspace").await?;
    let kernel_before = bytes(&b, "ebpf").await?;
    for i in 0..200 {
        c.query_drop(format!("INSERT INTO k VALUES ({i}, REPEAT('x', {i} % 64))"))
            .await?;
    }
    let rows: Vec<(i32, String)> = c.query("SELECT id, v FROM k ORDER BY id").await?;
    ensure!(
        rows.len() == 200 && rows[63].1.len() == 63,
        "{}",
        rows.len()
    );
    // Slow path: PREPARE (daemon), then EXECUTE (daemon once to learn the
    // parameter types, then the kernel).
    let st = c.prep("SELECT v FROM k WHERE id = ?").await?;
    for i in 0..100 {
        let v: Option<String> = c.exec_first(&st, (i,)).await?;
        ensure!(v.as_deref().map(str::len) == Some(i % 64), "row {i}: {v:?}");
    }
    c.close(st).await?;
    // A transaction: the kernel tracks IN_TRANS.
    c.query_drop("BEGIN").await?;
    c.query_drop("UPDATE k SET v = 'y' WHERE id = 1").await?;
    let sessions = b.http.get("/v1/sessions").await?;
    let me = &sessions[0];
    ensure!(me["datapath"] == "ebpf", "{me}");
    ensure!(me["in_transaction"] == true, "{me}");
    c.query_drop("COMMIT").await?;
    c.query_drop("USE mysql").await?;
    let db: Option<String> = c.query_first("SELECT DATABASE()").await?;
    ensure!(db.as_deref() == Some("mysql"), "{db:?}");
    c.disconnect().await?;
    tokio::time::sleep(Duration::from_millis(200)).await;

    let user = bytes(&b, "userspace").await? - user_before;
    let kernel = bytes(&b, "ebpf").await? - kernel_before;
    ensure!(kernel > 20_000.0, "kernel bytes {kernel}");
    ensure!(user < kernel / 2.0, "userspace {user} vs kernel {kernel}");
    let sessions = b.http.get("/v1/sessions").await?;
    ensure!(
        sessions.as_array().is_some_and(|a| a.is_empty()),
        "{sessions}"
    );
    let left = map_entries(&b).await?;
    ensure!(total(&left) == 0.0, "{left:?}");
    Ok(())
}

/// During a sysbench run, payload does not pass through the daemon: its
/// userspace byte counter stays near zero while the kernel's grows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sysbench_payload_does_not_pass_through_the_daemon() -> Result<()> {
    let b = start(1)?;
    let sb = Sysbench::new("oltp_read_only")
        .tables(2)
        .table_size(10_000)
        .threads(8)
        .seconds(8);
    sb.prepare(b.servers()[0].addr())?;
    let user_before = bytes(&b, "userspace").await?;
    let kernel_before = bytes(&b, "ebpf").await?;
    let report = sb.run(b.addr())?;
    let stdout = &report.stdout;
    ensure!(report.ignored_errors == Some(0), "{stdout}");
    // Sessions publish their kernel counters at the latest when they end.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let user = bytes(&b, "userspace").await? - user_before;
    let kernel = bytes(&b, "ebpf").await? - kernel_before;
    println!("sysbench oltp_read_only 8 threads: kernel {kernel} bytes, daemon {user} bytes");
    ensure!(kernel > 5_000_000.0, "kernel bytes {kernel}\n{stdout}");
    // The daemon sees logins, PREPAREs and each statement's first EXECUTE.
    ensure!(user < kernel / 100.0, "daemon {user} vs kernel {kernel}");
    Ok(())
}

/// The daemon sleeps while the kernel carries a session: responses the
/// verdict redirects do not wake it (the backend socket of an armed session
/// is out of the daemon's epoll; passes and hang-ups come by the WAKES ring
/// and an RDHUP-only epoll set).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kernel_carried_responses_do_not_wake_the_daemon() -> Result<()> {
    let b = start(1)?;
    let mut c = b.conn().await?;
    // The session is armed after its first quiet moment.
    for _ in 0..5 {
        c.query_drop("SELECT 1").await?;
    }
    let queries = 3_000u64;
    let kernel_before = bytes(&b, "ebpf").await?;
    let before = b.daemon.sleeps()?;
    for i in 0..queries {
        let v: Option<u64> = c.query_first(format!("SELECT {i}")).await?;
        ensure!(v == Some(i));
    }
    let sleeps = b.daemon.sleeps()? - before;
    c.disconnect().await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let kernel = bytes(&b, "ebpf").await? - kernel_before;
    println!("{queries} kernel-carried queries: {sleeps} daemon sleeps, {kernel} kernel bytes");
    ensure!(
        kernel > (queries * 20) as f64,
        "the kernel carried {kernel} bytes"
    );
    // Health checks, the session's 1 s report and the admin scrape wake it
    // a few times; one wake-up per response would be thousands.
    ensure!(
        sleeps < queries / 20,
        "{sleeps} daemon sleeps for {queries} kernel-carried queries"
    );
    Ok(())
}

/// A client command big enough to fill the client's socket buffer while the
/// daemon has the session takes the session off the kernel path for good
/// (the kernel's passed-byte count can drift then), with the reason counted;
/// everything stays exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_through_the_daemon_ends_the_kernel_path_for_the_session() -> Result<()> {
    let b = start(1)?;
    let mut c = b.conn().await?;
    b.wait_in_kernel(c.id()).await?;
    for _ in 0..5 {
        c.query_drop("SELECT 1").await?;
    }
    b.assert_kernel_carried().await?;
    let fallbacks = |scrape| {
        redirector_tests::admin::metric(
            &scrape,
            "redirector_kernel_fallbacks_total",
            &[("reason", "accounting")],
        )
    };
    ensure!(fallbacks(b.http.scrape().await?) == Some(0.0));
    // A prepared statement goes through the daemon; its 1 MiB parameter
    // too (sent as COM_STMT_SEND_LONG_DATA or inside the execute).
    let big = "x".repeat(1 << 20);
    let n: Option<u64> = c.exec_first("SELECT LENGTH(?)", (big.clone(),)).await?;
    ensure!(n == Some(1 << 20));
    for i in 0..50u64 {
        let v: Option<u64> = c.query_first(format!("SELECT {i}")).await?;
        ensure!(v == Some(i));
    }
    let kernel_before = bytes(&b, "ebpf").await?;
    for i in 0..50u64 {
        let v: Option<u64> = c.query_first(format!("SELECT {i}")).await?;
        ensure!(v == Some(i));
    }
    tokio::time::sleep(Duration::from_millis(1200)).await;
    ensure!(fallbacks(b.http.scrape().await?) == Some(1.0));
    let kernel = bytes(&b, "ebpf").await? - kernel_before;
    ensure!(kernel == 0.0, "{kernel} bytes still carried by the kernel");
    let datapath = session_datapath(&b, c.id()).await?;
    ensure!(datapath.as_deref() == Some("userspace"), "{datapath:?}");
    c.disconnect().await?;
    Ok(())
}

/// 10,000 sessions opened, used and closed leave no map entries behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_sessions_leave_no_map_entries() -> Result<()> {
    let b = start(1)?;
    let t0 = Instant::now();
    let total_sessions = 10_000;
    let parallel = 50;
    let mut tasks = Vec::new();
    for w in 0..parallel {
        let opts = b.opts();
        tasks.push(tokio::spawn(async move {
            let mut n = 0usize;
            for i in (w..total_sessions).step_by(parallel) {
                let mut c = mysql_async::Conn::new(opts.clone()).await?;
                // Half of them let the kernel carry a query first.
                if i % 2 == 0 {
                    let v: Option<i64> = c.query_first(format!("SELECT {i}")).await?;
                    anyhow::ensure!(v == Some(i as i64));
                }
                c.disconnect().await?;
                n += 1;
            }
            anyhow::Ok(n)
        }));
    }
    let mut done = 0;
    for t in tasks {
        done += t.await??;
    }
    ensure!(done == total_sessions);
    println!("{total_sessions} sessions in {:?}", t0.elapsed());
    // Entries go when each session ends; allow the last ones to finish.
    let deadline = Instant::now() + Duration::from_secs(20);
    let left = loop {
        let left = map_entries(&b).await?;
        if total(&left) == 0.0 || Instant::now() > deadline {
            break left;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    ensure!(left.len() == 8, "{left:?}");
    ensure!(total(&left) == 0.0, "{left:?}");
    Ok(())
}

/// A session the kernel carries is moved (HOLD, rebuilt on the target) and
/// the kernel carries it again on the target.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kernel_carried_session_moves_and_stays_in_the_kernel() -> Result<()> {
    let b = start(2)?;
    let mut c = b.conn().await?;
    c.query_drop("SET @tag = 'kept', SESSION sql_mode = 'ANSI_QUOTES'")
        .await?;
    let port = port(&mut c).await?;
    let to = b.other_server(&b.name_of_port(port)?)?;
    let id = c.id();
    let sessions = b.http.get("/v1/sessions").await?;
    let sid = sessions[0]["session_id"].clone();
    ensure!(sessions[0]["datapath"] == "ebpf", "{sessions}");
    let (status, body) = b
        .http
        .post(
            "/v1/sessions/move",
            json!({"sessions": [sid], "to": to, "wait_timeout_s": 10}),
        )
        .await?;
    ensure!(status.is_success(), "{body}");
    let kernel_before = bytes(&b, "ebpf").await?;
    for _ in 0..50 {
        let row: Option<(u16, String, String)> =
            c.query_first("SELECT @@port, @tag, @@sql_mode").await?;
        let (p, tag, mode) = row.context("row")?;
        ensure!(
            p != port && tag == "kept" && mode == "ANSI_QUOTES",
            "{p} {tag} {mode}"
        );
    }
    ensure!(c.id() == id);
    c.disconnect().await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let kernel = bytes(&b, "ebpf").await? - kernel_before;
    ensure!(
        kernel > 2_000.0,
        "after the move the kernel carried {kernel} bytes"
    );
    Ok(())
}

/// Large single and multi-result responses (several MiB each) stay
/// byte-exact while the session goes kernel → daemon → kernel again and
/// again: every big single result is carried by the kernel, every
/// slow-path command in between (USE, PREPARE, SET with a user variable,
/// CALL with its multi-results) by the daemon, and each result's checksum
/// is compared with the server's own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_results_stay_exact_across_kernel_daemon_transitions() -> Result<()> {
    let b = start(1)?;
    let mut c = b.conn().await?;
    c.query_drop(
        "CREATE PROCEDURE two_big(n INT) BEGIN \
           SELECT REPEAT(CHAR(65 + n % 26), 3 * 1048576) AS a; \
           SELECT n, REPEAT(CHAR(97 + n % 26), 2 * 1048576) AS b; END",
    )
    .await?;
    let kernel_before = bytes(&b, "ebpf").await?;
    for i in 0..12u32 {
        // Kernel: one 4 MiB row; its MD5 computed by the server too.
        b.wait_in_kernel(c.id()).await?;
        let (big, md5): (Vec<u8>, String) = c
            .query_first(format!(
                "SELECT REPEAT(CONCAT(CHAR(48 + {i} % 10), 'xyz'), 1048576), \
                 MD5(REPEAT(CONCAT(CHAR(48 + {i} % 10), 'xyz'), 1048576))"
            ))
            .await?
            .context("row")?;
        ensure!(big.len() == 4 << 20, "round {i}: {} bytes", big.len());
        let head = format!("{}xyz", i % 10);
        ensure!(
            big.chunks(4).all(|ch| ch == head.as_bytes()),
            "round {i}: corrupted 4 MiB row"
        );
        ensure!(md5.len() == 32, "{md5}");
        // Daemon: slow-path commands between the big results.
        c.query_drop(format!("SET @round = {i}")).await?;
        c.query_drop(format!("USE {TEST_DB}")).await?;
        let stmt = c.prep("SELECT ? + 1").await?;
        let n: Option<u32> = c.exec_first(&stmt, (i,)).await?;
        ensure!(n == Some(i + 1));
        c.close(stmt).await?;
        // Multi-result (CALL, which the daemon serves: a procedure may
        // change session state): 3 MiB + 2 MiB + the final OK.
        let mut res = c.query_iter(format!("CALL two_big({i})")).await?;
        let a: Vec<Vec<u8>> = res.collect().await?;
        let rows: Vec<(u32, Vec<u8>)> = res.collect().await?;
        drop(res);
        let ca = b'A' + (i % 26) as u8;
        let cb = b'a' + (i % 26) as u8;
        ensure!(
            a.len() == 1 && a[0].len() == 3 << 20 && a[0].iter().all(|&x| x == ca),
            "round {i}: first result corrupted"
        );
        ensure!(
            rows.len() == 1
                && rows[0].0 == i
                && rows[0].1.len() == 2 << 20
                && rows[0].1.iter().all(|&x| x == cb),
            "round {i}: second result corrupted"
        );
        let tag: Option<u32> = c.query_first("SELECT @round").await?;
        ensure!(tag == Some(i), "round {i}: @round = {tag:?}");
    }
    c.query_drop("DROP PROCEDURE two_big").await?;
    c.disconnect().await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let kernel = bytes(&b, "ebpf").await? - kernel_before;
    let user = bytes(&b, "userspace").await?;
    println!("kernel carried {kernel} bytes, the daemon {user}");
    // Every 4 MiB row was asked for after the daemon re-armed: all 12
    // went through the kernel.
    ensure!(
        kernel > 12.0 * 4.0 * 1048576.0,
        "the kernel carried only {kernel} bytes; daemon log:\n{}",
        b.daemon.log()
    );
    Ok(())
}

/// Client libraries listed in `datapath.relay_clients` (default: PyMySQL,
/// which reads with blocking recv() and would meet the kernel's spurious
/// EAGAIN) stay on the userspace relay; others take the kernel path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listed_client_libraries_stay_on_the_relay() -> Result<()> {
    let b = start(1)?;
    let attrs =
        std::collections::HashMap::from([("_client_name".to_string(), "pymysql".to_string())]);
    let mut listed = mysql_async::Conn::new(b.opts().connect_attributes(attrs)).await?;
    let mut other = b.conn().await?;
    let one: Option<i32> = listed.query_first("SELECT 1").await?;
    ensure!(one == Some(1));
    let one: Option<i32> = other.query_first("SELECT 1").await?;
    ensure!(one == Some(1));
    let listed_path = session_datapath(&b, listed.id()).await?;
    ensure!(
        listed_path.as_deref() == Some("userspace"),
        "{listed_path:?}"
    );
    let other_path = session_datapath(&b, other.id()).await?;
    ensure!(other_path.as_deref() == Some("ebpf"), "{other_path:?}");
    let scrape = b.http.scrape().await?;
    let fallbacks = redirector_tests::admin::metric(
        &scrape,
        "redirector_kernel_fallbacks_total",
        &[("reason", "client")],
    );
    ensure!(fallbacks == Some(1.0), "{fallbacks:?}");
    listed.disconnect().await?;
    other.disconnect().await?;
    Ok(())
}
