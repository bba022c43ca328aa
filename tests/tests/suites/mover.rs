// Included by tests/tests/mover.rs and mover_kernel.rs with `DATAPATH` set.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use mysql_async::prelude::*;
use mysql_async::{Conn, Row, Value as SqlValue};
use redirector_tests::admin::{sample, StatusCode};
use redirector_tests::client::{port, session_id};
use redirector_tests::*;
use serde_json::{json, Value};

/// `n` servers behind a daemon in this suite's data path, round-robin
/// placement.
fn start(n: usize) -> Result<Bed> {
    Bed::builder()
        .servers(n)
        .datapath(DATAPATH)
        .mover_wait_timeout(5)
        .round_robin()
        .start()
}

/// `POST /v1/sessions/move`; status and reply.
async fn move_to(
    b: &Bed,
    ids: &[u64],
    to: &str,
    wait: f64,
    force: bool,
) -> Result<(StatusCode, Value)> {
    b.http
        .post(
            "/v1/sessions/move",
            json!({"sessions": ids, "to": to, "wait_timeout_s": wait, "force": force}),
        )
        .await
}

/// Waits (up to 5 s) until the listing shows session `id` not movable for
/// `reason`.
async fn wait_for_reason(b: &Bed, id: u64, reason: &str) -> Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let sessions = b.http.get("/v1/sessions").await?;
        let shown = sessions
            .as_array()
            .into_iter()
            .flatten()
            .find(|s| s["session_id"].as_u64() == Some(id))
            .and_then(|s| s["not_movable_reason"].as_str().map(str::to_string));
        if shown.as_deref().is_some_and(|r| r.contains(reason)) {
            return Ok(());
        }
        ensure!(
            std::time::Instant::now() < deadline,
            "session {id} never showed {reason:?} (last: {shown:?})"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The server the session is on, and another one to move it to.
async fn here_and_there(b: &Bed, c: &mut Conn) -> Result<(String, String)> {
    let here = b.server_of(c).await?;
    let there = b.other_server(&here)?;
    Ok((here, there))
}

/// Everything a client can see of the session state we set up.
const STATE_QUERY: &str = "SELECT @@sort_buffer_size, @@sql_mode, @@time_zone, \
    @@character_set_client, @@character_set_connection, @@character_set_results, @@collation_connection, \
    DATABASE(), @@autocommit, @@tx_isolation, @@max_statement_time, \
    @i, @u, @dec, @dbl, @s, HEX(@b), @n IS NULL, \
    COLLATION(@s), CHARSET(@b), LAST_INSERT_ID()";

async fn state(c: &mut Conn) -> Result<Vec<SqlValue>> {
    let row: Row = c
        .query_first(STATE_QUERY)
        .await?
        .context("state query returned nothing")?;
    Ok(row.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn move_carries_every_kind_of_state() -> Result<()> {
    let b = start(2)?;
    for s in b.bed.servers() {
        s.sql("CREATE DATABASE IF NOT EXISTS mover_db; CREATE TABLE IF NOT EXISTS mover_db.t (id INT AUTO_INCREMENT PRIMARY KEY, v INT)")?;
    }
    let mut c = b.conn().await?;
    let (here, there) = here_and_there(&b, &mut c).await?;
    // Statement 1 is closed again: the target must fill the id gap.
    let gap = c.prep("SELECT 1").await?;
    let stmt = c.prep("SELECT ? + 1, @s").await?;
    c.close(gap).await?;
    c.query_drop(
        "SET SESSION sort_buffer_size = 1048576, \
         sql_mode = 'ANSI_QUOTES,NO_BACKSLASH_ESCAPES', time_zone = '+05:30', \
         max_statement_time = 12.5",
    )
    .await?;
    c.query_drop("SET SESSION TRANSACTION ISOLATION LEVEL SERIALIZABLE")
        .await?;
    c.query_drop("SET NAMES utf8mb4 COLLATE utf8mb4_unicode_ci")
        .await?;
    c.query_drop("USE mover_db").await?;
    c.query_drop(
        "SET @i = -42, @u = 18446744073709551615, @dec = 1.50, @dbl = 1.5e100, \
         @s = _utf8mb4 'h\u{e9}llo ''quoted'' \\\\ back', @b = _binary X'00FF27', @n = NULL",
    )
    .await?;
    c.query_drop("SET autocommit = 0").await?;
    c.query_drop("INSERT INTO t (v) VALUES (1)").await?;
    c.query_drop("COMMIT").await?;
    let before = state(&mut c).await?;

    let (status, body) = move_to(&b, &[session_id(&c)], &there, 5.0, false).await?;
    ensure!(status == 200, "move failed: {status} {body}");
    ensure!(body["moved"][0]["to_server"] == there.as_str(), "{body}");

    ensure!(
        port(&mut c).await? == b.port_of(&there)?,
        "session still on {here}"
    );
    let after = state(&mut c).await?;
    ensure!(
        before == after,
        "state differs after the move:\nbefore {before:?}\nafter  {after:?}"
    );
    // The prepared statement, executed again with its old id.
    let (x, s): (i64, String) = c.exec_first(&stmt, (41,)).await?.context("no row")?;
    ensure!(x == 42 && s.starts_with("h\u{e9}llo"), "{x} {s}");
    // autocommit=0 survived: this insert is invisible to others until COMMIT.
    c.query_drop("INSERT INTO t (v) VALUES (2)").await?;
    let other = b.bed.server(&there).context("target")?;
    let visible = other.sql("SELECT COUNT(*) FROM mover_db.t WHERE v = 2")?;
    ensure!(visible.trim() == "0", "autocommit was not 0: {visible}");
    c.query_drop("ROLLBACK").await?;

    let sessions = b.http.get("/v1/sessions").await?;
    let me = sessions
        .as_array()
        .and_then(|a| a.iter().find(|s| s["session_id"] == session_id(&c)))
        .context("session listed")?;
    ensure!(
        me["server_name"] == there.as_str() && me["moves"] == 1,
        "{me}"
    );
    let moves = b.http.get("/v1/moves").await?;
    ensure!(moves[0]["result"] == "ok", "{moves}");

    // The move is in the Prometheus metrics (parsed by a real parser).
    let scrape = b.http.scrape().await?;
    match sample(
        &scrape,
        "redirector_moves_total",
        &[("result", "ok"), ("reason", "operator")],
    ) {
        // OpenMetrics counters parse as untyped with this parser.
        Some(prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v)) => {
            ensure!(*v == 1.0, "moves_total {v}")
        }
        other => anyhow::bail!("redirector_moves_total: {other:?}"),
    }
    match sample(&scrape, "redirector_move_duration_seconds", &[]) {
        Some(prometheus_parse::Value::Histogram(h)) => {
            let count = h.iter().map(|b| b.count).fold(0.0, f64::max);
            ensure!(count == 1.0, "move_duration_seconds count {count}");
        }
        other => anyhow::bail!("redirector_move_duration_seconds: {other:?}"),
    }
    b.assert_kernel_carried().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn move_and_back_keeps_new_statements_working() -> Result<()> {
    let b = start(2)?;
    let mut c = b.conn().await?;
    let (here, there) = here_and_there(&b, &mut c).await?;
    let s1 = c.prep("SELECT CONCAT(?, 'x')").await?;
    for (round, to) in [&there, &here, &there].into_iter().enumerate() {
        let (status, body) = move_to(&b, &[session_id(&c)], to, 5.0, false).await?;
        ensure!(status == 200, "round {round}: {body}");
        ensure!(port(&mut c).await? == b.port_of(to)?);
        let v: String = c.exec_first(&s1, ("a",)).await?.context("row")?;
        ensure!(v == "ax");
        // A statement prepared after a move gets an id that works too.
        let s2 = c.prep(format!("SELECT {round} + ?")).await?;
        let n: i64 = c.exec_first(&s2, (1,)).await?.context("row")?;
        ensure!(n == round as i64 + 1);
    }
    b.assert_kernel_carried().await?;
    Ok(())
}

/// A session of an ed25519 account (password configured) moves: the mover
/// logs in to the target as that user by signing the target's
/// client_ed25519 nonce (the raw test client signs its own login).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ed25519_session_moves() -> Result<()> {
    use redirector_tests::raw::{err_text, raw_login, FULL};
    let accounts = format!(
        "{}[[auth.users]]\nname = \"ed\"\npassword = \"ed-pass\"\nplugin = \"ed25519\"\n\n",
        redirector_tests::daemon::app_users_toml()
    );
    let b = Bed::builder()
        .servers(2)
        .datapath(DATAPATH)
        .mover_wait_timeout(5)
        .accounts(&accounts)
        .start()?;
    for s in b.servers() {
        s.sql(
            "INSTALL SONAME 'auth_ed25519'; \
             CREATE USER 'ed'@'%' IDENTIFIED VIA ed25519 USING PASSWORD('ed-pass'); \
             GRANT ALL ON test.* TO 'ed'@'%';",
        )?;
    }
    let mut c = raw_login(b.addr(), "ed", "ed-pass", FULL, Some(TEST_DB), None)?
        .map_err(|e| anyhow::anyhow!("ed login: {}", err_text(&e)))?;
    c.query("SET @kept = 42")?;
    let port: u16 = c.one("SELECT @@port")?.context("port")?.parse()?;
    let here = b.name_of_port(port)?;
    let there = b.other_server(&here)?;
    let sessions = b.http.get("/v1/sessions").await?;
    let id = sessions
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["user"] == "ed")
        .and_then(|s| s["session_id"].as_u64())
        .context("the ed session in /v1/sessions")?;
    let (status, body) = move_to(&b, &[id], &there, 5.0, false).await?;
    ensure!(status == 200, "move: {body}");
    let moved: u16 = c.one("SELECT @@port")?.context("port")?.parse()?;
    ensure!(moved == b.port_of(&there)?, "still on {moved}");
    ensure!(c.one("SELECT CURRENT_USER()")?.as_deref() == Some("ed@%"));
    ensure!(c.one("SELECT @kept")?.as_deref() == Some("42"));
    Ok(())
}

/// The move of a session in each not-movable state fails with its reason,
/// and the session keeps working where it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_movable_reasons() -> Result<()> {
    let b = start(2)?;
    for s in b.bed.servers() {
        s.sql("CREATE TABLE IF NOT EXISTS test.lk (a INT)")?;
    }
    let cases: &[(&str, &str, &str)] = &[
        ("START TRANSACTION", "open transaction", "COMMIT"),
        (
            "CREATE TEMPORARY TABLE tmp1 (a INT)",
            "temporary table",
            "DROP TEMPORARY TABLE tmp1",
        ),
        (
            "DO GET_LOCK('mover-test', 5)",
            "GET_LOCK",
            "DO RELEASE_ALL_LOCKS()",
        ),
        ("LOCK TABLES lk READ", "LOCK TABLES", "UNLOCK TABLES"),
        (
            "XA START 'xid1'",
            "XA transaction",
            "XA END 'xid1'; XA ROLLBACK 'xid1'",
        ),
        (
            "PREPARE sqlps FROM 'SELECT 1'",
            "SQL prepared statement",
            "DEALLOCATE PREPARE sqlps",
        ),
    ];
    for (setup, reason, undo) in cases {
        let mut c = b.conn().await?;
        let (here, there) = here_and_there(&b, &mut c).await?;
        c.query_drop(*setup).await?;
        let (status, body) = move_to(&b, &[session_id(&c)], &there, 0.5, false).await?;
        ensure!(status == 409, "{setup}: moved anyway: {body}");
        let err = body["error"].as_str().unwrap_or_default();
        ensure!(
            err.contains(&session_id(&c).to_string()) && err.contains(reason),
            "{setup}: error does not name the session and '{reason}': {err}"
        );
        ensure!(
            port(&mut c).await? == b.port_of(&here)?,
            "{setup}: session left"
        );
        for stmt in undo.split("; ") {
            c.query_drop(stmt).await?;
        }
        // Once the state is gone, the same session moves.
        let (status, body) = move_to(&b, &[session_id(&c)], &there, 5.0, false).await?;
        ensure!(status == 200, "{setup}: after '{undo}': {body}");
        ensure!(port(&mut c).await? == b.port_of(&there)?);
    }
    // The registry shows the reason without a move being tried.
    let mut c = b.conn().await?;
    c.query_drop("CREATE TEMPORARY TABLE tmp2 (a INT)").await?;
    let sessions = b.http.get("/v1/sessions").await?;
    let me = sessions
        .as_array()
        .and_then(|a| a.iter().find(|s| s["session_id"] == session_id(&c)))
        .context("listed")?;
    ensure!(
        me["movable"] == false
            && me["not_movable_reason"]
                .as_str()
                .unwrap_or_default()
                .contains("temporary table"),
        "{me}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_timeout_then_commit_moves() -> Result<()> {
    let b = start(2)?;
    let mut c = b.conn().await?;
    let (_, there) = here_and_there(&b, &mut c).await?;
    c.query_drop("START TRANSACTION").await?;
    c.query_drop("SELECT 1").await?;
    let id = session_id(&c);
    // The move waits while the transaction is open, and goes once it ends.
    let mover = {
        let http = b.http.clone();
        let there = there.clone();
        tokio::spawn(async move {
            http.post(
                "/v1/sessions/move",
                json!({"sessions": [id], "to": there, "wait_timeout_s": 20}),
            )
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(700)).await;
    ensure!(
        !mover.is_finished(),
        "the move did not wait for the transaction"
    );
    c.query_drop("COMMIT").await?;
    let (status, body) = mover.await??;
    ensure!(status == 200, "{body}");
    ensure!(port(&mut c).await? == b.port_of(&there)?);
    b.assert_kernel_carried().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_kills_the_running_statement_then_moves() -> Result<()> {
    let b = start(2)?;
    let mut c = b.conn().await?;
    let (here, there) = here_and_there(&b, &mut c).await?;
    let id = session_id(&c);
    let sleeper = tokio::spawn(async move {
        let r = c.query_drop("SELECT SLEEP(30)").await;
        (c, r)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Without FORCE: times out, naming the busy session.
    let (status, body) = move_to(&b, &[id], &there, 0.5, false).await?;
    ensure!(status == 409, "{body}");
    ensure!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains(&id.to_string()),
        "{body}"
    );
    let started = std::time::Instant::now();
    let (status, body) = move_to(&b, &[id], &there, 0.5, true).await?;
    ensure!(status == 200, "FORCE: {body}");
    let (mut c, r) = sleeper.await?;
    ensure!(
        started.elapsed() < Duration::from_secs(10),
        "the statement was not killed"
    );
    // SLEEP() killed by KILL QUERY returns 1 rather than an error in
    // MariaDB; either way the client got its answer and is on the target.
    let _ = r;
    ensure!(port(&mut c).await? == b.port_of(&there)?, "still on {here}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_rebalance_and_remove() -> Result<()> {
    let mut b = start(2)?;
    let mut conns = Vec::new();
    for _ in 0..6 {
        conns.push(b.conn().await?);
    }
    let db1 = b.bed.servers()[0].name.clone();
    let db2 = b.bed.servers()[1].name.clone();
    // One session in a transaction: the drain times out naming it.
    conns[0].query_drop("START TRANSACTION").await?;
    let busy = session_id(&conns[0]);
    let on_db1 = port(&mut conns[0]).await? == b.port_of(&db1)?;
    let (status, body) = b
        .http
        .post(
            &format!("/v1/servers/{db1}/drain"),
            json!({"wait_timeout_s": 1}),
        )
        .await?;
    if on_db1 {
        ensure!(status == 409, "{body}");
        ensure!(body["error"]
            .as_str()
            .unwrap_or_default()
            .contains(&busy.to_string()));
    } else {
        ensure!(status == 200, "{body}");
    }
    // New sessions avoid the draining server.
    let mut newcomer = b.conn().await?;
    ensure!(port(&mut newcomer).await? == b.port_of(&db2)?);
    conns[0].query_drop("COMMIT").await?;
    // The background sweep moves the last one as soon as it is idle.
    let mut drained = false;
    for _ in 0..40 {
        let servers = b.http.get("/v1/servers").await?;
        if servers[0]["state"] == "drained" && servers[0]["sessions"] == 0 {
            drained = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    ensure!(
        drained,
        "db1 never drained: {}",
        b.http.get("/v1/servers").await?
    );
    for c in conns.iter_mut() {
        ensure!(port(c).await? == b.port_of(&db2)?);
    }
    // Undrain, add a third server, rebalance: 7 sessions spread 3/2/2.
    let (status, _) = b.http.delete(&format!("/v1/servers/{db1}/drain")).await?;
    ensure!(status == 200);
    let db3 = b.bed.add_server()?;
    let (db3_name, db3_addr) = (db3.name.clone(), db3.addr().to_string());
    let (status, body) = b
        .http
        .post(
            "/v1/servers",
            json!({"name": db3_name, "address": db3_addr, "weight": 10}),
        )
        .await?;
    ensure!(status == 201, "{body}");
    let (status, body) = b.http.post("/v1/rebalance", json!({})).await?;
    ensure!(status == 200, "{body}");
    let servers = b.http.get("/v1/servers").await?;
    let counts: Vec<u64> = servers
        .as_array()
        .context("servers")?
        .iter()
        .map(|s| s["sessions"].as_u64().unwrap_or(99))
        .collect();
    let mut sorted = counts.clone();
    sorted.sort();
    ensure!(sorted == vec![2, 2, 3], "after rebalance: {servers}");
    // Every client still works where the daemon says it is.
    conns.push(newcomer);
    for c in conns.iter_mut() {
        c.query_drop("SELECT 1").await?;
    }
    // Remove db3: its sessions go elsewhere, then it is gone.
    let (status, body) = b.http.delete(&format!("/v1/servers/{db3_name}")).await?;
    ensure!(status == 200, "{body}");
    let servers = b.http.get("/v1/servers").await?;
    ensure!(servers.as_array().map(|a| a.len()) == Some(2), "{servers}");
    for c in conns.iter_mut() {
        let p = port(c).await?;
        ensure!(p == b.port_of(&db1)? || p == b.port_of(&db2)?);
    }
    b.assert_kernel_carried().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_move_requests_are_refused_clearly() -> Result<()> {
    let b = start(2)?;
    let c = b.conn().await?;
    let (status, body) = move_to(&b, &[999_999], "db2", 1.0, false).await?;
    ensure!(
        status == 404
            && body["error"]
                .as_str()
                .unwrap_or_default()
                .contains("999999"),
        "{body}"
    );
    let (status, body) = move_to(&b, &[session_id(&c)], "nope", 1.0, false).await?;
    ensure!(
        status == 404
            && body["error"]
                .as_str()
                .unwrap_or_default()
                .contains("'nope'"),
        "{body}"
    );
    let (status, body) = b
        .http
        .post(
            "/v1/sessions/move",
            json!({"sessions": "some", "to": "db1"}),
        )
        .await?;
    ensure!(status == 400, "{body}");
    Ok(())
}

/// A server dies: idle sessions whose state is known are carried to
/// another server without the client noticing; a session whose state may
/// have changed since it was last read gets a clean error on its next
/// command.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_server_idle_sessions_carried_over_others_get_clean_error() -> Result<()> {
    // With the operator's opt-in to state tracking (off by default: the
    // client would see it).
    let b = Bed::builder()
        .servers(2)
        .datapath(DATAPATH)
        .mover_wait_timeout(5)
        .round_robin()
        .failover_state_tracking()
        .start()?;
    let db1 = b.bed.servers()[0].name.clone();
    let db2 = b.bed.servers()[1].name.clone();
    let (p1, p2) = (b.port_of(&db1)?, b.port_of(&db2)?);
    // The mariadb CLI (libmariadb) negotiates session tracking, so the
    // redirector knows its state did not change while it ran queries.
    let mut cli = CliSession::start(&b.daemon.addr.to_string())?;
    let mut others = Vec::new();
    // Round-robin: put sessions on db1 until the CLI session is there.
    while cli.query("SELECT @@port")? != p1.to_string() {
        drop(cli);
        others.push(b.conn().await?);
        cli = CliSession::start(&b.daemon.addr.to_string())?;
    }
    cli.query("SELECT COUNT(*) FROM information_schema.TABLES")?;
    let mut changed = loop {
        let mut c = b.conn().await?;
        if port(&mut c).await? == p1 {
            break c;
        }
        others.push(c);
    };
    changed.query_drop("SET @lost = 1").await?;
    // A session with state moved to db1: the move read its state.
    let mut moved = loop {
        let mut c = b.conn().await?;
        if port(&mut c).await? == p2 {
            break c;
        }
        others.push(c);
    };
    let stmt = moved.prep("SELECT ? * 2").await?;
    moved
        .query_drop("SET @kept = 'yes', SESSION sql_mode = 'ANSI_QUOTES'")
        .await?;
    let (status, body) = move_to(&b, &[session_id(&moved)], &db1, 5.0, false).await?;
    ensure!(status == 200, "{body}");

    b.bed.server(&db1).context("db1")?.kill()?;
    // Let the daemon notice before the clients speak: the carried sessions
    // show as failovers. A kernel-carried session whose wake-up was missed
    // notices at its next 1 s check; a command sent before that ends the
    // session without the clear error (known defect, noted on #13), so
    // wait past it too.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let moves = b.http.get("/v1/moves").await?;
        let failovers = moves
            .as_array()
            .map_or(0, |a| a.iter().filter(|m| m["requested_by"] == "failover").count());
        if failovers >= 2 {
            break;
        }
        ensure!(Instant::now() < deadline, "no failover recorded: {moves}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(1200)).await;

    // Carried over: the same connections, now on db2, state intact.
    let port_now = cli
        .query("SELECT @@port")
        .with_context(|| format!("daemon log:\n{}", b.daemon.log()))?;
    ensure!(port_now == p2.to_string(), "CLI session not carried over");
    let (kept, mode): (String, String) = moved
        .query_first("SELECT @kept, @@sql_mode")
        .await?
        .context("row")?;
    ensure!(kept == "yes" && mode == "ANSI_QUOTES", "{kept} {mode}");
    ensure!(port(&mut moved).await? == p2);
    let v: i64 = moved.exec_first(&stmt, (21,)).await?.context("row")?;
    ensure!(v == 42);

    // Not carried (its state changed since it was known): a clear error.
    match changed.query_drop("SELECT @lost").await {
        Err(mysql_async::Error::Server(e)) => {
            ensure!(e.code == 2013 && e.message.contains(&db1), "{e:?}")
        }
        other => anyhow::bail!(
            "expected a lost-connection error, got {other:?}; daemon log:\n{}",
            b.daemon.log()
        ),
    }
    // The daemon serves new sessions (on the surviving server).
    let mut fresh = b.conn().await?;
    ensure!(port(&mut fresh).await? == p2);
    let moves = b.http.get("/v1/moves").await?;
    let failovers = moves
        .as_array()
        .map(|a| a.iter().filter(|m| m["requested_by"] == "failover").count())
        .unwrap_or(0);
    ensure!(failovers >= 2, "{moves}");
    b.assert_kernel_carried().await?;
    Ok(())
}

/// An interactive `mariadb` client kept open, one query at a time.
struct CliSession {
    child: std::process::Child,
    out: std::io::BufReader<std::process::ChildStdout>,
}

impl CliSession {
    fn start(addr: &str) -> Result<CliSession> {
        use std::process::{Command, Stdio};
        let (host, port) = addr.rsplit_once(':').context("addr")?;
        let mut child = Command::new("mariadb")
            .args(["-h", host, "-P", port, "-u", APP_USER])
            .arg(format!("-p{APP_PASSWORD}"))
            .args(["-N", "-B", "--unbuffered", TEST_DB])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let out = std::io::BufReader::new(child.stdout.take().context("stdout")?);
        Ok(CliSession { child, out })
    }

    /// Runs one single-value query and returns the value.
    fn query(&mut self, sql: &str) -> Result<String> {
        use std::io::{BufRead, Write};
        let stdin = self.child.stdin.as_mut().context("stdin")?;
        writeln!(stdin, "{sql};")?;
        stdin.flush()?;
        let mut line = String::new();
        self.out.read_line(&mut line)?;
        ensure!(!line.is_empty(), "mariadb client ended");
        Ok(line.trim().to_string())
    }
}

impl Drop for CliSession {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A minimal blocking MySQL client speaking raw packets, for protocol
/// states no client crate exposes (server-side cursors, long data).
struct RawClient {
    s: std::net::TcpStream,
}

impl RawClient {
    fn connect(addr: std::net::SocketAddr) -> Result<RawClient> {
        use redirector::protocol::constants::capability::*;
        use redirector::protocol::{sha1_password, BackendLogin, BackendLoginParams, LoginStep};
        let s = std::net::TcpStream::connect(addr)?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut c = RawClient { s };
        let (seq, greeting) = c.read()?;
        let params = BackendLoginParams {
            capabilities: CLIENT_PROTOCOL_41
                | CLIENT_SECURE_CONNECTION
                | CLIENT_PLUGIN_AUTH
                | CLIENT_DEPRECATE_EOF
                | CLIENT_TRANSACTIONS
                | CLIENT_LONG_PASSWORD
                | CLIENT_CONNECT_WITH_DB
                | CLIENT_MULTI_RESULTS
                | CLIENT_PS_MULTI_RESULTS,
            mariadb_capabilities: 0,
            max_packet_size: 16 << 20,
            collation: 45,
            user: APP_USER.into(),
            database: Some(TEST_DB.into()),
            sha1_password: Some(sha1_password(APP_PASSWORD.as_bytes())),
            ed25519: None,
            connect_attrs: Vec::new(),
        };
        let (mut login, response) = BackendLogin::start(&greeting, params)?;
        c.write(seq.wrapping_add(1), &response)?;
        loop {
            let (seq, p) = c.read()?;
            match login.on_packet(&p)? {
                LoginStep::Send(data) => c.write(seq.wrapping_add(1), &data)?,
                LoginStep::Done(_) => return Ok(c),
            }
        }
    }

    fn write(&mut self, seq: u8, payload: &[u8]) -> Result<()> {
        use std::io::Write;
        let len = payload.len() as u32;
        let mut out = vec![len as u8, (len >> 8) as u8, (len >> 16) as u8, seq];
        out.extend_from_slice(payload);
        self.s.write_all(&out)?;
        Ok(())
    }

    fn read(&mut self) -> Result<(u8, Vec<u8>)> {
        use std::io::Read;
        let mut h = [0u8; 4];
        self.s.read_exact(&mut h)?;
        let mut p = vec![0u8; u32::from_le_bytes([h[0], h[1], h[2], 0]) as usize];
        self.s.read_exact(&mut p)?;
        Ok((h[3], p))
    }

    fn command(&mut self, payload: &[u8]) -> Result<()> {
        self.write(0, payload)
    }

    /// COM_STMT_PREPARE; reads the definitions; returns (id, params, columns).
    fn prepare(&mut self, sql: &str) -> Result<(u32, u16, u16)> {
        let mut p = vec![0x16];
        p.extend_from_slice(sql.as_bytes());
        self.command(&p)?;
        let (_, ok) = self.read()?;
        ensure!(<[u8]>::first(&ok) == Some(&0), "prepare failed: {ok:?}");
        let id = u32::from_le_bytes([ok[1], ok[2], ok[3], ok[4]]);
        let cols = u16::from_le_bytes([ok[5], ok[6]]);
        let params = u16::from_le_bytes([ok[7], ok[8]]);
        for _ in 0..(cols + params) {
            self.read()?;
        }
        Ok((id, params, cols))
    }

    /// Reads a result set (text or binary) up to its terminator; returns the
    /// rows' raw payloads.
    fn result_set(&mut self) -> Result<Vec<Vec<u8>>> {
        let (_, first) = self.read()?;
        ensure!(<[u8]>::first(&first) != Some(&0xff), "error: {first:?}");
        let cols = first[0] as usize;
        for _ in 0..cols {
            self.read()?;
        }
        let mut rows = Vec::new();
        loop {
            let (_, p) = self.read()?;
            if <[u8]>::first(&p) == Some(&0xfe) && p.len() < 0xffffff {
                return Ok(rows);
            }
            ensure!(<[u8]>::first(&p) != Some(&0xff), "error: {p:?}");
            rows.push(p);
        }
    }

    /// `SELECT @@port` over the text protocol.
    fn server_port(&mut self) -> Result<u16> {
        self.command(b"\x03SELECT @@port")?;
        let rows = self.result_set()?;
        let row = rows.first().context("no row")?;
        Ok(std::str::from_utf8(&row[1..])?.parse()?)
    }
}

/// Open cursor and pending long data: the move waits for them to end, and
/// fails after the wait timeout with that reason; once they end it moves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cursor_and_long_data_block_moves_until_they_end() -> Result<()> {
    let b = start(2)?;
    let mut c = RawClient::connect(b.daemon.addr)?;
    let here_port = c.server_port()?;
    let there = b.other_server(&b.name_of_port(here_port)?)?;
    let id = {
        let sessions = b.http.get("/v1/sessions").await?;
        sessions[0]["session_id"].as_u64().context("session id")?
    };

    // A read-only cursor left open (rows not fetched).
    let (stmt, _, _) = c.prepare("SELECT COLLATION_NAME FROM information_schema.COLLATIONS")?;
    let mut exec = vec![0x17];
    exec.extend_from_slice(&stmt.to_le_bytes());
    exec.push(0x01); // CURSOR_TYPE_READ_ONLY
    exec.extend_from_slice(&1u32.to_le_bytes());
    c.command(&exec)?;
    let rows = c.result_set()?;
    ensure!(rows.is_empty(), "a cursor sends no rows before FETCH");
    let (status, body) = move_to(&b, &[id], &there, 0.5, false).await?;
    ensure!(status == 409, "{body}");
    ensure!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("open cursor"),
        "{body}"
    );
    let mut close = vec![0x19];
    close.extend_from_slice(&stmt.to_le_bytes());
    c.command(&close)?;
    let (status, body) = move_to(&b, &[id], &there, 5.0, false).await?;
    ensure!(status == 200, "after closing the cursor: {body}");
    ensure!(c.server_port()? == b.port_of(&there)?);

    // Long data sent for a parameter, statement not executed yet.
    let (stmt, params, _) = c.prepare("SELECT CONCAT(?, '!')")?;
    ensure!(params == 1);
    let mut long = vec![0x18];
    long.extend_from_slice(&stmt.to_le_bytes());
    long.extend_from_slice(&0u16.to_le_bytes());
    long.extend_from_slice(b"long-value");
    c.command(&long)?;
    // COM_STMT_SEND_LONG_DATA has no reply: wait until the daemon has seen
    // it before asking for the move, or the move may come first.
    wait_for_reason(&b, id, "pending long data").await?;
    let (status, body) = move_to(&b, &[id], &b.other_server(&there)?, 0.5, false).await?;
    ensure!(status == 409, "{body}");
    ensure!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("pending long data"),
        "{body}"
    );
    let mut exec = vec![0x17];
    exec.extend_from_slice(&stmt.to_le_bytes());
    exec.push(0);
    exec.extend_from_slice(&1u32.to_le_bytes());
    exec.push(0); // NULL bitmap
    exec.push(1); // new params bound
    exec.extend_from_slice(&[0xfe, 0x00]); // MYSQL_TYPE_STRING, value from long data
    c.command(&exec)?;
    let rows = c.result_set()?;
    ensure!(
        rows.first().is_some_and(|r| r.ends_with(b"long-value!")),
        "{rows:?}"
    );
    let back = b.other_server(&there)?;
    let (status, body) = move_to(&b, &[id], &back, 5.0, false).await?;
    ensure!(status == 200, "after executing: {body}");
    ensure!(c.server_port()? == b.port_of(&back)?);
    Ok(())
}

/// A server that cannot carry the session's capabilities: it speaks the
/// MySQL handshake (without CLIENT_DEPRECATE_EOF) and accepts any login.
fn start_server_without_deprecate_eof() -> Result<std::net::SocketAddr> {
    use redirector::protocol::constants::capability::{CLIENT_DEPRECATE_EOF, RELAYABLE};
    use redirector::protocol::InitialHandshake;
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    std::thread::spawn(move || {
        for (n, stream) in listener.incoming().enumerate() {
            let Ok(mut s) = stream else { continue };
            std::thread::spawn(move || {
                let greeting = InitialHandshake::for_client(
                    "5.5.5-10.11.0-MariaDB-fake",
                    n as u32 + 1,
                    RELAYABLE & !CLIENT_DEPRECATE_EOF,
                    0,
                    45,
                    2,
                )
                .to_payload();
                let mut out = vec![greeting.len() as u8, (greeting.len() >> 8) as u8, 0, 0];
                out.extend_from_slice(&greeting);
                if s.write_all(&out).is_err() {
                    return;
                }
                let mut h = [0u8; 4];
                if s.read_exact(&mut h).is_err() {
                    return;
                }
                let mut response = vec![0u8; u32::from_le_bytes([h[0], h[1], h[2], 0]) as usize];
                if s.read_exact(&mut response).is_err() {
                    return;
                }
                let ok = [7u8, 0, 0, h[3].wrapping_add(1), 0, 0, 0, 2, 0, 0, 0];
                let _ = s.write_all(&ok);
                // Hold the connection until the peer closes it.
                let mut sink = [0u8; 1024];
                while matches!(s.read(&mut sink), Ok(n) if n > 0) {}
            });
        }
    });
    Ok(addr)
}

/// A target that lacks a capability the session uses is not eligible: the
/// move is refused with that reason and the session stays, unharmed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_lacking_a_capability_is_refused() -> Result<()> {
    let b = start(2)?;
    let fake = start_server_without_deprecate_eof()?;
    let (status, body) = b
        .http
        .post(
            "/v1/servers",
            json!({"name": "old", "address": fake.to_string(), "weight": 1}),
        )
        .await?;
    ensure!(status == 201, "{body}");
    let mut c = loop {
        let mut c = b.conn().await?;
        if port(&mut c).await.is_ok() {
            break c;
        }
    };
    let before = port(&mut c).await?;
    c.query_drop("SET @still = 'here'").await?;
    let (status, body) = move_to(&b, &[session_id(&c)], "old", 2.0, false).await?;
    ensure!(status == 409, "{body}");
    let err = body["error"].as_str().unwrap_or_default();
    ensure!(
        err.contains("lacks capabilities 0x01000000"),
        "expected the missing DEPRECATE_EOF to be named: {err}"
    );
    ensure!(port(&mut c).await? == before);
    let still: Option<String> = c.query_first("SELECT @still").await?;
    ensure!(still.as_deref() == Some("here"));
    Ok(())
}

/// A source that refuses the state queries (here: `max_join_size = 1`
/// makes the server refuse any read examining more than one row, and the
/// mover's variable scan examines hundreds): the move is abandoned as "state
/// could not be read", and the session stays where it was, unharmed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_that_cannot_be_read_is_not_movable() -> Result<()> {
    let b = start(2)?;
    let mut c = b.conn().await?;
    c.query_drop("SET @keep = 7").await?;
    c.query_drop("SET SESSION max_join_size = 1").await?;
    let here = port(&mut c).await?;
    let there = b.other_server(&b.name_of_port(here)?)?;
    let (status, body) = move_to(&b, &[session_id(&c)], &there, 5.0, false).await?;
    ensure!(status == 409, "{status} {body}");
    let reason = body["report"]["not_moved"][0]["reason"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    ensure!(reason.contains("state could not be read"), "{body}");
    // Unharmed: same server, same state, and it moves once readable.
    ensure!(port(&mut c).await? == here);
    let keep: Option<i64> = c.query_first("SELECT @keep").await?;
    ensure!(keep == Some(7), "{keep:?}");
    c.query_drop("SET SESSION max_join_size = DEFAULT").await?;
    let (status, body) = move_to(&b, &[session_id(&c)], &there, 5.0, false).await?;
    ensure!(status == 200, "{status} {body}");
    ensure!(port(&mut c).await? != here);
    let keep: Option<i64> = c.query_first("SELECT @keep").await?;
    ensure!(keep == Some(7), "{keep:?}");
    Ok(())
}

/// Connection end, as a client sees it directly from MariaDB: after
/// COM_QUIT the server side closes at once (node's mysql2 waits for that
/// close in `end()`); a bare close or a close with a result still unread
/// ends the session and its backend connection at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quit_and_close_end_the_session_at_once() -> Result<()> {
    use std::io::Read;
    let b = start(1)?;
    let backend_threads = || -> Result<usize> {
        let out = b.servers()[0].sql(
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = 'app'",
        )?;
        Ok(out.trim().parse().unwrap_or(usize::MAX))
    };
    let gone = |what: &'static str| {
        let b = &b;
        async move {
            let deadline = std::time::Instant::now() + Duration::from_secs(2);
            loop {
                let sessions = b.http.get("/v1/sessions").await?;
                let n = sessions.as_array().map_or(usize::MAX, |a| a.len());
                if n == 0 && backend_threads()? == 0 {
                    return Ok::<_, anyhow::Error>(());
                }
                ensure!(
                    std::time::Instant::now() < deadline,
                    "{what}: {n} sessions, {} backend threads after 2 s",
                    backend_threads()?
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    for round in 0..3 {
        // COM_QUIT, then wait for the server side to close.
        let mut c = RawClient::connect(b.daemon.addr)?;
        c.server_port()?;
        let t0 = std::time::Instant::now();
        c.command(&[0x01])?;
        c.s.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut buf = [0u8; 16];
        let n = c.s.read(&mut buf)?;
        ensure!(n == 0, "round {round}: {n} bytes after COM_QUIT");
        ensure!(
            t0.elapsed() < Duration::from_secs(1),
            "round {round}: closed {:?} after COM_QUIT",
            t0.elapsed()
        );
        gone("after COM_QUIT").await?;

        // A bare close of an idle session.
        let mut c = RawClient::connect(b.daemon.addr)?;
        c.server_port()?;
        drop(c);
        gone("after a bare close").await?;

        // A close with most of a 4 MiB result unread.
        let mut c = RawClient::connect(b.daemon.addr)?;
        c.server_port()?;
        let mut q = vec![0x03];
        q.extend_from_slice(b"SELECT REPEAT('r', 4194304)");
        c.command(&q)?;
        let _ = c.read()?;
        drop(c);
        gone("after a close with a result unread").await?;
    }
    b.assert_kernel_carried().await?;
    Ok(())
}
