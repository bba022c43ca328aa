//! Admin SQL (`admin.sql_address`) of the real daemon, with real MariaDB
//! servers: the tables, every CONTROL statement, the policy, error numbers
//! and messages, login, and what client libraries send on connect
//! (mysql_async and the `mariadb` command-line client).

use std::collections::BTreeMap;

use anyhow::{ensure, Context, Result};
use mysql_async::consts::ColumnType;
use mysql_async::prelude::*;
use mysql_async::{Conn, Row};
use redirector_tests::client::admin_opts;
use redirector_tests::daemon::Redirector;
use redirector_tests::*;

const ADMIN_USER: &str = "admin";
const ADMIN_PASSWORD: &str = "adm1n-pass";

const SESSION_COLUMNS: &[&str] = &[
    "SESSION_ID",
    "USER",
    "CLIENT_ADDRESS",
    "SERVER_NAME",
    "STATE",
    "IN_TRANSACTION",
    "MOVABLE",
    "NOT_MOVABLE_REASON",
    "MOVES",
    "DATAPATH",
];
const SERVER_COLUMNS: &[&str] = &["SERVER_NAME", "ADDRESS", "WEIGHT", "STATE", "SESSIONS"];
const MOVE_COLUMNS: &[&str] = &[
    "SESSION_ID",
    "FROM_SERVER",
    "TO_SERVER",
    "RESULT",
    "REASON",
    "DURATION_MS",
];

/// `n` servers (the first `configured` in the daemon) behind a daemon with
/// the default data path (the kernel carries this host's sessions) and the
/// admin password set.
fn start_bed(n: usize, configured: usize) -> Result<Bed> {
    Bed::builder()
        .servers(n)
        .configured(configured)
        .datapath(Datapath::Auto)
        .admin_login(ADMIN_USER, ADMIN_PASSWORD)
        .mover_wait_timeout(10)
        // The login test checks each refusal's message in a row; the
        // back-off has its own tests (hostile_admin.rs).
        .admin_option("auth_backoff_initial_ms", "0")
        .start()
}

async fn admin(r: &Redirector) -> Result<Conn> {
    Conn::new(admin_opts(
        r.admin_sql_addr(),
        ADMIN_USER,
        Some(ADMIN_PASSWORD),
    ))
    .await
    .context("admin SQL login")
}

/// A result as column names and rows of text (None = NULL).
struct Rows {
    columns: Vec<String>,
    rows: Vec<Vec<Option<String>>>,
}

impl Rows {
    fn col(&self, name: &str) -> usize {
        self.columns
            .iter()
            .position(|c| c == name)
            .unwrap_or_else(|| panic!("no column {name} in {:?}", self.columns))
    }

    /// The row whose `key` column is `value`.
    fn find(&self, key: &str, value: &str) -> Option<&Vec<Option<String>>> {
        let i = self.col(key);
        self.rows.iter().find(|r| r[i].as_deref() == Some(value))
    }

    fn get<'a>(&self, row: &'a [Option<String>], col: &str) -> Option<&'a str> {
        row[self.col(col)].as_deref()
    }
}

async fn select(c: &mut Conn, sql: &str) -> Result<Rows> {
    let mut result = c.query_iter(sql).await.with_context(|| sql.to_string())?;
    let columns = result
        .columns()
        .map(|cols| cols.iter().map(|c| c.name_str().into_owned()).collect())
        .unwrap_or_default();
    let raw: Vec<Row> = result.collect().await?;
    let rows = raw
        .into_iter()
        .map(|r| {
            (0..r.len())
                .map(|i| r.get::<Option<String>, usize>(i).flatten())
                .collect()
        })
        .collect();
    Ok(Rows { columns, rows })
}

/// Runs a statement that must fail; returns the server error.
async fn fails(c: &mut Conn, sql: &str) -> Result<(u16, String, String)> {
    match c.query_drop(sql).await {
        Ok(()) => anyhow::bail!("{sql}: succeeded, expected an error"),
        Err(mysql_async::Error::Server(e)) => Ok((e.code, e.state, e.message)),
        Err(e) => Err(e).context(sql.to_string()),
    }
}

/// Runs a statement that must succeed; returns (affected rows, info).
async fn run(c: &mut Conn, sql: &str) -> Result<(u64, String)> {
    c.query_drop(sql).await.with_context(|| sql.to_string())?;
    Ok((c.affected_rows(), c.info().into_owned()))
}

fn other(name: &str) -> &'static str {
    if name == "db1" {
        "db2"
    } else {
        "db1"
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_moves_and_errors() -> Result<()> {
    let bed = start_bed(2, 2)?;
    let (mut a, sa) = bed.conn_on().await?;
    let (mut b, sb) = bed.conn_on().await?;
    let mut adm = admin(&bed.daemon).await?;

    // ---- sessions.
    let t = select(&mut adm, "SELECT * FROM sessions").await?;
    assert_eq!(t.columns, SESSION_COLUMNS);
    assert_eq!(t.rows.len(), 2, "{:?}", t.rows);
    for (c, server) in [(&a, &sa), (&b, &sb)] {
        let row = t
            .find("SESSION_ID", &c.id().to_string())
            .with_context(|| format!("session {} not listed: {:?}", c.id(), t.rows))?;
        assert_eq!(t.get(row, "USER"), Some(APP_USER));
        assert_eq!(t.get(row, "SERVER_NAME"), Some(server.as_str()));
        assert_eq!(t.get(row, "STATE"), Some("idle"));
        assert_eq!(t.get(row, "IN_TRANSACTION"), Some("0"));
        assert_eq!(t.get(row, "MOVABLE"), Some("1"));
        assert_eq!(t.get(row, "NOT_MOVABLE_REASON"), None);
        assert_eq!(t.get(row, "MOVES"), Some("0"));
        assert_eq!(t.get(row, "DATAPATH"), Some("ebpf"));
        let client = t.get(row, "CLIENT_ADDRESS").unwrap_or_default();
        assert!(client.starts_with("127.0.0.1:"), "{client}");
    }

    // ---- servers.
    let t = select(&mut adm, "select * from SERVERS;").await?;
    assert_eq!(t.columns, SERVER_COLUMNS);
    for db in bed.servers() {
        let row = t.find("SERVER_NAME", &db.name).context("server listed")?;
        assert_eq!(t.get(row, "ADDRESS"), Some(db.addr().to_string().as_str()));
        assert_eq!(t.get(row, "WEIGHT"), Some("10"));
        assert_eq!(t.get(row, "STATE"), Some("active"));
        let expected = [&sa, &sb].iter().filter(|s| **s == &db.name).count();
        assert_eq!(t.get(row, "SESSIONS"), Some(expected.to_string().as_str()));
    }

    // ---- projection, WHERE, ORDER BY, LIMIT.
    let newest = a.id().max(b.id());
    let t = select(
        &mut adm,
        "SELECT session_id, Server_Name FROM sessions WHERE user = 'app' AND movable = 1 ORDER BY session_id DESC LIMIT 1",
    )
    .await?;
    // SQLite names a bare column by its declared name (MariaDB: as written).
    assert_eq!(t.columns, ["SESSION_ID", "SERVER_NAME"]);
    assert_eq!(t.rows.len(), 1);
    assert_eq!(t.rows[0][0].as_deref(), Some(newest.to_string().as_str()));
    // SQLite's messages, MariaDB's error numbers.
    let (code, state, msg) = fails(&mut adm, "SELECT nope FROM sessions").await?;
    assert_eq!((code, state.as_str()), (1054, "42S22"), "{msg}");
    assert_eq!(msg, "no such column: nope");
    let (code, _, msg) = fails(&mut adm, "SELECT * FROM tables").await?;
    assert_eq!(code, 1146, "{msg}");

    // ---- CONTROL MOVE SESSION: the app session now answers from the other server.
    let to = other(&sa);
    let (affected, info) = run(
        &mut adm,
        &format!("CONTROL MOVE SESSION {} TO '{to}' WAIT TIMEOUT 10", a.id()),
    )
    .await?;
    assert_eq!(affected, 1, "{info}");
    assert!(info.contains("1 session(s) moved"), "{info}");
    assert_eq!(bed.server_of(&mut a).await?, to);

    // ---- moves.
    let t = select(&mut adm, "SELECT * FROM moves").await?;
    assert_eq!(t.columns, MOVE_COLUMNS);
    let row = t
        .find("SESSION_ID", &a.id().to_string())
        .context("the move is listed")?;
    assert_eq!(t.get(row, "FROM_SERVER"), Some(sa.as_str()));
    assert_eq!(t.get(row, "TO_SERVER"), Some(to));
    assert_eq!(t.get(row, "RESULT"), Some("ok"));
    assert_eq!(t.get(row, "REASON"), None);
    let ms: f64 = t.get(row, "DURATION_MS").unwrap_or_default().parse()?;
    assert!(ms > 0.0, "duration {ms}");
    let t = select(&mut adm, "SELECT MOVES FROM sessions WHERE session_id = ").await;
    assert!(t.is_err(), "a WHERE without a value is a syntax error");

    // ---- MOVE ALL INACTIVE, MOVE ALL … FROM.
    let (affected, info) = run(&mut adm, "CONTROL MOVE ALL INACTIVE SESSIONS TO 'db1'").await?;
    ensure!(affected >= 1, "{info}");
    assert_eq!(bed.server_of(&mut a).await?, "db1");
    assert_eq!(bed.server_of(&mut b).await?, "db1");
    let (affected, info) = run(
        &mut adm,
        "control move all sessions from 'db1' to 'db2' wait timeout 10 force",
    )
    .await?;
    assert_eq!(affected, 2, "{info}");
    assert_eq!(bed.server_of(&mut a).await?, "db2");
    assert_eq!(bed.server_of(&mut b).await?, "db2");
    let t = select(
        &mut adm,
        "SELECT SERVER_NAME, SESSIONS FROM servers ORDER BY SERVER_NAME",
    )
    .await?;
    assert_eq!(
        t.rows,
        [
            [Some("db1".to_string()), Some("0".to_string())],
            [Some("db2".to_string()), Some("2".to_string())]
        ]
    );

    // ---- errors.
    let (code, state, msg) = fails(&mut adm, "CONTROL MOVE SESSION 999999 TO 'db1'").await?;
    assert_eq!((code, state.as_str()), (1105, "HY000"), "{msg}");
    assert!(msg.contains("unknown session 999999"), "{msg}");
    let (code, _, msg) = fails(
        &mut adm,
        &format!("CONTROL MOVE SESSION {} TO 'nope'", a.id()),
    )
    .await?;
    assert_eq!(code, 1105, "{msg}");
    assert!(msg.contains("unknown server 'nope'"), "{msg}");
    let (code, state, msg) = fails(&mut adm, "CONTROL MOVE SESSION TO 'db2'").await?;
    assert_eq!((code, state.as_str()), (1064, "42000"), "{msg}");
    assert!(msg.contains("near 'TO 'db2''"), "{msg}");
    let (code, _, msg) = fails(&mut adm, "CONTROL MOVE SESSION 1 TO 'db2' WAIT TIMEOUT -5").await?;
    assert!(code == 1064 && msg.contains("near '-5'"), "{code} {msg}");
    let (code, _, msg) = fails(
        &mut adm,
        &format!(
            "CONTROL MOVE SESSION {} TO 'db1' WAIT TIMEOUT 100000",
            a.id()
        ),
    )
    .await?;
    assert_eq!(code, 1210, "{msg}");
    // Prepared statements are not part of the admin protocol: 1047, and
    // the connection stays usable.
    match adm.prep("SELECT 1").await {
        Err(mysql_async::Error::Server(e)) => assert_eq!(e.code, 1047, "{e:?}"),
        other => panic!("COM_STMT_PREPARE: {other:?}"),
    }
    adm.ping().await?;
    adm.disconnect().await?;
    drop((a, b));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_add_rebalance_remove_and_policy() -> Result<()> {
    // db3 is not configured: it joins with CONTROL ADD SERVER.
    let bed = start_bed(3, 2)?;
    let db3 = bed.bed.server("db3").context("db3")?;
    let mut sessions = Vec::new();
    for _ in 0..3 {
        sessions.push(bed.conn_on().await?.0);
    }
    let mut adm = admin(&bed.daemon).await?;

    // ---- DRAIN: every session leaves db1, which shows 'drained'.
    let (affected, info) = run(&mut adm, "CONTROL DRAIN SERVER 'db1' WAIT TIMEOUT 10").await?;
    assert!(info.contains("server 'db1' drained"), "{info}");
    ensure!(affected >= 1, "{info}");
    for c in &mut sessions {
        assert_eq!(bed.server_of(c).await?, "db2");
    }
    let states = server_states(&mut adm).await?;
    assert_eq!(states["db1"], ("drained".to_string(), 0));
    assert_eq!(states["db2"], ("active".to_string(), 3));

    // ---- UNDRAIN.
    run(&mut adm, "CONTROL UNDRAIN SERVER 'db1'").await?;
    assert_eq!(server_states(&mut adm).await?["db1"].0, "active");

    // ---- ADD SERVER, then REBALANCE: one session on each server.
    let (affected, info) = run(
        &mut adm,
        &format!(
            "CONTROL ADD SERVER 'db3' ADDRESS '{}' WEIGHT 10",
            db3.addr()
        ),
    )
    .await?;
    assert_eq!(affected, 1, "{info}");
    assert_eq!(
        server_states(&mut adm).await?["db3"],
        ("active".to_string(), 0)
    );
    let (affected, info) = run(&mut adm, "CONTROL REBALANCE WAIT TIMEOUT 10").await?;
    assert_eq!(affected, 2, "{info}");
    let mut on: BTreeMap<String, usize> = BTreeMap::new();
    for c in &mut sessions {
        *on.entry(bed.server_of(c).await?).or_default() += 1;
    }
    assert_eq!(on.len(), 3, "{on:?}");
    for (name, (_, count)) in server_states(&mut adm).await? {
        assert_eq!(count, 1, "{name}");
    }

    // ---- REMOVE SERVER: db3's session moves, db3 is gone.
    let (affected, info) = run(&mut adm, "CONTROL REMOVE SERVER 'db3' WAIT TIMEOUT 10").await?;
    assert_eq!(affected, 1, "{info}");
    let states = server_states(&mut adm).await?;
    assert!(!states.contains_key("db3"), "{states:?}");
    assert_eq!(states.values().map(|(_, n)| n).sum::<usize>(), 3);
    for c in &mut sessions {
        assert_ne!(bed.server_of(c).await?, "db3");
    }

    // ---- ALTER SYSTEM SET AUTO_SCALING_POLICY: weights show in servers.
    let policy = r#"{"version": 1, "clusterResourceGroups": [{"groupId": "default",
        "clusters": [{"clusterId": "db1", "weight": 5}, {"clusterId": "db2", "weight": 20}],
        "scalingPolicy": "session-weighted"}]}"#;
    let (_, info) = run(
        &mut adm,
        &format!("ALTER SYSTEM SET AUTO_SCALING_POLICY = '{policy}'"),
    )
    .await?;
    assert!(info.contains("session-weighted"), "{info}");
    let t = select(
        &mut adm,
        "SELECT SERVER_NAME, WEIGHT FROM servers ORDER BY WEIGHT",
    )
    .await?;
    assert_eq!(
        t.rows,
        [
            [Some("db1".to_string()), Some("5".to_string())],
            [Some("db2".to_string()), Some("20".to_string())]
        ]
    );
    let (code, state, msg) = fails(
        &mut adm,
        "ALTER SYSTEM SET AUTO_SCALING_POLICY = '{\"version\": 1,\n \"clusterResourceGroups\": ['",
    )
    .await?;
    assert_eq!((code, state.as_str()), (1231, "42000"), "{msg}");
    assert!(msg.contains("line 2 column"), "{msg}");

    // ---- errors.
    let (code, _, msg) = fails(&mut adm, "CONTROL DRAIN SERVER 'nope'").await?;
    assert_eq!(code, 1105, "{msg}");
    assert!(msg.contains("unknown server 'nope'"), "{msg}");
    let (code, _, msg) = fails(&mut adm, "CONTROL UNDRAIN SERVER 'nope'").await?;
    assert!(code == 1105 && msg.contains("'nope'"), "{code} {msg}");
    let (code, _, msg) = fails(
        &mut adm,
        "CONTROL ADD SERVER 'db9' ADDRESS '127.0.0.1:1' WEIGHT 0",
    )
    .await?;
    assert!(code == 1210 && msg.contains("weight 0"), "{code} {msg}");
    // The addresses `redirector check` rejects in a configuration file.
    for (address, why) in [
        ("0.0.0.0:3306", "unspecified address"),
        ("127.0.0.1:0", "port 0"),
    ] {
        let (code, _, msg) = fails(
            &mut adm,
            &format!("CONTROL ADD SERVER 'db9' ADDRESS '{address}'"),
        )
        .await?;
        assert!(code == 1210 && msg.contains(why), "{address}: {code} {msg}");
    }
    let (code, _, msg) = fails(&mut adm, "CONTROL ADD SERVER 'db1' ADDRESS '127.0.0.1:1'").await?;
    assert!(code == 1105 && msg.contains("db1"), "{code} {msg}");
    let (code, _, msg) = fails(&mut adm, "CONTROL REMOVE SERVER 'nope'").await?;
    assert!(code == 1105 && msg.contains("'nope'"), "{code} {msg}");
    Ok(())
}

/// Column types as the client library sees them.
async fn column_types(c: &mut Conn, sql: &str) -> Result<Vec<ColumnType>> {
    let result = c.query_iter(sql).await.with_context(|| sql.to_string())?;
    let types = result
        .columns()
        .map(|cols| cols.iter().map(|c| c.column_type()).collect())
        .unwrap_or_default();
    result.drop_result().await?;
    Ok(types)
}

/// The mariadb CLI's rows (batch mode), sorted.
fn cli_rows(r: &Redirector, sql: &str) -> Result<Vec<String>> {
    let out = cli_query(r.admin_sql_addr(), ADMIN_USER, ADMIN_PASSWORD, sql)?;
    let mut rows: Vec<String> = out.lines().map(str::to_string).collect();
    rows.sort();
    Ok(rows)
}

/// Queries run by the SQL engine (SQLite): GROUP BY, joins, aggregates,
/// through the mariadb CLI and mysql_async; writes are refused; a runaway
/// query is interrupted without holding up anyone else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_engine_queries_and_limits() -> Result<()> {
    let bed = Bed::builder()
        .servers(2)
        .datapath(Datapath::Auto)
        .admin_login(ADMIN_USER, ADMIN_PASSWORD)
        .mover_wait_timeout(10)
        .admin_option("sql_query_timeout_ms", "1500")
        .start()?;
    let r = &bed.daemon;
    let mut adm = admin(r).await?;
    // One session on db1, two on db2, placed by moves.
    let mut app = Vec::new();
    let mut moved = 0;
    for to in ["db1", "db2", "db2"] {
        let (c, on) = bed.conn_on().await?;
        if on != to {
            let sql = format!("CONTROL MOVE SESSION {} TO '{to}' WAIT TIMEOUT 10", c.id());
            moved += run(&mut adm, &sql).await?.0;
        }
        app.push(c);
    }
    for (c, to) in app.iter_mut().zip(["db1", "db2", "db2"]) {
        assert_eq!(bed.server_of(c).await?, to);
    }

    // ---- the acceptance queries, through the mariadb CLI.
    assert_eq!(
        cli_rows(
            r,
            "SELECT SERVER_NAME, COUNT(*) FROM sessions GROUP BY SERVER_NAME"
        )?,
        ["db1\t1", "db2\t2"]
    );
    let addr = |name: &str| bed.bed.server(name).map(|s| s.addr().to_string());
    let (a1, a2) = (addr("db1").context("db1")?, addr("db2").context("db2")?);
    let mut expected: Vec<String> = app
        .iter()
        .zip([&a1, &a2, &a2])
        .map(|(c, a)| format!("{}\t{a}", c.id()))
        .collect();
    expected.sort();
    assert_eq!(
        cli_rows(
            r,
            "SELECT s.SESSION_ID, v.ADDRESS FROM sessions s JOIN servers v ON v.SERVER_NAME = s.SERVER_NAME"
        )?,
        expected
    );
    // Aggregates, expressions, ORDER BY, LIMIT; text compares as MariaDB's
    // default collation does (case-insensitively).
    let t = select(
        &mut adm,
        "SELECT v.SERVER_NAME, COUNT(s.SESSION_ID) AS n, AVG(v.WEIGHT) * 1.5 AS w, SUM(s.IN_TRANSACTION) \
         FROM servers v LEFT JOIN sessions s USING (SERVER_NAME) WHERE v.STATE = 'ACTIVE' \
         GROUP BY v.SERVER_NAME ORDER BY n DESC LIMIT 1",
    )
    .await?;
    assert_eq!(
        t.columns,
        ["SERVER_NAME", "n", "w", "SUM(s.IN_TRANSACTION)"]
    );
    assert_eq!(
        t.rows,
        [[
            Some("db2".to_string()),
            Some("2".to_string()),
            Some("15".to_string()),
            Some("0".to_string())
        ]]
    );
    assert_eq!(
        column_types(
            &mut adm,
            "SELECT SERVER_NAME, COUNT(*), AVG(WEIGHT), NULL FROM servers GROUP BY 1"
        )
        .await?,
        [
            ColumnType::MYSQL_TYPE_VAR_STRING,
            ColumnType::MYSQL_TYPE_LONGLONG,
            ColumnType::MYSQL_TYPE_DOUBLE,
            ColumnType::MYSQL_TYPE_VAR_STRING
        ]
    );
    let ok_moves: Option<u64> = adm
        .query_first("SELECT COUNT(*) FROM moves WHERE result = 'OK' AND DURATION_MS > 0")
        .await?;
    assert_eq!(ok_moves, Some(moved));
    let (code, _, msg) = fails(&mut adm, "SELECT SERVER_NAME FROM servers WHERE").await?;
    assert_eq!(code, 1064, "{msg}");

    // ---- writes, files, extensions: refused, and nothing changed.
    let file = std::env::temp_dir().join(format!("redirector-attach-{}", std::process::id()));
    for (sql, what) in [
        ("CREATE TABLE t (a INT)".to_string(), "CREATE"),
        (
            format!("ATTACH DATABASE '{}' AS x", file.display()),
            "ATTACH",
        ),
        (
            "INSERT INTO sessions (SESSION_ID) VALUES (1)".to_string(),
            "INSERT",
        ),
        (
            "WITH x AS (SELECT 1) UPDATE servers SET WEIGHT = 0".to_string(),
            "UPDATE",
        ),
        (
            "SELECT load_extension('/tmp/x.so')".to_string(),
            "load_extension",
        ),
        (
            "SELECT * FROM pragma_table_info('sessions')".to_string(),
            "PRAGMA",
        ),
    ] {
        let (code, state, msg) = fails(&mut adm, &sql).await?;
        assert_eq!((code, state.as_str()), (1792, "25006"), "{sql}: {msg}");
        assert!(
            msg.contains("read-only") && msg.contains(what),
            "{sql}: {msg}"
        );
    }
    assert!(!file.exists(), "ATTACH created {}", file.display());
    let count: Option<i64> = adm.query_first("SELECT COUNT(*) FROM sessions").await?;
    assert_eq!(count, Some(3));
    let t = select(&mut adm, "SELECT WEIGHT FROM servers").await?;
    assert!(
        t.rows.iter().all(|r| r[0].as_deref() == Some("10")),
        "{:?}",
        t.rows
    );

    // ---- a runaway query: interrupted at the budget; meanwhile another
    // admin session and the client sessions are served at once.
    let runaway = {
        let mut slow = admin(r).await?;
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let result = fails(
                &mut slow,
                "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c",
            )
            .await;
            (result, started.elapsed())
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    let n: Option<i64> = adm.query_first("SELECT COUNT(*) FROM sessions").await?;
    assert_eq!(n, Some(3));
    for c in &mut app {
        let one: Option<i64> = c.query_first("SELECT 1").await?;
        assert_eq!(one, Some(1));
    }
    let meanwhile = started.elapsed();
    let (result, took) = runaway.await?;
    let (code, state, msg) = result?;
    assert!(
        meanwhile < std::time::Duration::from_millis(800),
        "others waited {meanwhile:?} behind the runaway query (it took {took:?})"
    );
    assert_eq!((code, state.as_str()), (1969, "70100"), "{msg}");
    assert!(msg.contains("1500 ms"), "{msg}");
    assert!(
        took >= std::time::Duration::from_millis(1400) && took < std::time::Duration::from_secs(5),
        "{took:?}"
    );

    // ---- what CLIs and GUI tools send on connect, through the CLI.
    let out = cli_query(
        r.admin_sql_addr(),
        ADMIN_USER,
        ADMIN_PASSWORD,
        "SELECT @@version_comment; SHOW DATABASES; SET NAMES utf8mb4; SELECT DATABASE(); \
         USE redirector; SELECT DATABASE(), CONNECTION_ID() > 0; SHOW TABLES;",
    )?;
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("redirector admin SQL"), "{out}");
    assert_eq!(
        lines[1..],
        [
            "redirector",
            "NULL",
            "redirector\t1",
            "moves",
            "servers",
            "sessions"
        ],
        "{out}"
    );
    adm.ping().await?;
    Ok(())
}

/// `servers` as name → (STATE, SESSIONS).
async fn server_states(c: &mut Conn) -> Result<BTreeMap<String, (String, usize)>> {
    let t = select(c, "SELECT SERVER_NAME, STATE, SESSIONS FROM servers").await?;
    t.rows
        .iter()
        .map(|r| {
            let name = r[0].clone().context("name")?;
            let state = r[1].clone().context("state")?;
            let n = r[2].as_deref().context("sessions")?.parse()?;
            Ok((name, (state, n)))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_and_client_compatibility() -> Result<()> {
    let bed = start_bed(1, 1)?;
    let r = &bed.daemon;

    // ---- wrong password, wrong user, no password: 1045.
    for (user, pass, using) in [
        (ADMIN_USER, Some("wrong"), "YES"),
        ("root", Some(ADMIN_PASSWORD), "YES"),
        (ADMIN_USER, None, "NO"),
    ] {
        match Conn::new(admin_opts(r.admin_sql_addr(), user, pass)).await {
            Err(mysql_async::Error::Server(e)) => {
                assert_eq!((e.code, e.state.as_str()), (1045, "28000"), "{e:?}");
                assert_eq!(
                    e.message,
                    format!(
                        "Access denied for user '{user}'@'127.0.0.1' (using password: {using})"
                    )
                );
            }
            other => panic!("{user}/{pass:?}: {other:?}"),
        }
    }

    // ---- what clients send on connect, COM_PING, COM_INIT_DB.
    let mut adm = Conn::new(
        admin_opts(r.admin_sql_addr(), ADMIN_USER, Some(ADMIN_PASSWORD))
            .db_name(Some("redirector")),
    )
    .await?;
    adm.ping().await?;
    let comment: Option<String> = adm.query_first("SELECT @@version_comment LIMIT 1").await?;
    assert!(comment.is_some_and(|c| c.starts_with("redirector admin SQL")));
    let t = select(
        &mut adm,
        "SELECT @@max_allowed_packet, @@session.autocommit, DATABASE()",
    )
    .await?;
    assert_eq!(
        t.columns,
        ["@@max_allowed_packet", "@@session.autocommit", "DATABASE()"]
    );
    assert_eq!(t.rows[0][2].as_deref(), Some("redirector"));
    for sql in [
        "SET NAMES utf8mb4",
        "SET autocommit=1",
        "SET SESSION sql_mode = ''",
        "USE other",
    ] {
        adm.query_drop(sql).await.with_context(|| sql.to_string())?;
    }
    let t = select(&mut adm, "SHOW TABLES").await?;
    assert_eq!(t.rows.len(), 3);
    let (code, _, msg) = fails(&mut adm, "SELECT @@nope").await?;
    assert_eq!(code, 1193, "{msg}");
    let (code, _, msg) = fails(&mut adm, "  ;").await?;
    assert_eq!(code, 1065, "{msg}");
    adm.disconnect().await?;

    // ---- a malformed handshake ends only that connection.
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(r.admin_sql_addr()).await?;
        let mut greeting = [0u8; 512];
        let n = s.read(&mut greeting).await?;
        ensure!(n > 4 && greeting[4] == 10, "HandshakeV10 expected");
        s.write_all(&[3, 0, 0, 1, 0xde, 0xad, 0xbe]).await?;
        let mut reply = Vec::new();
        s.read_to_end(&mut reply).await?;
        ensure!(reply.get(4) == Some(&0xff), "ERR expected: {reply:?}");
    }
    admin(r).await?.ping().await?;

    // ---- the mariadb command-line client.
    let out = cli_query(
        r.admin_sql_addr(),
        ADMIN_USER,
        ADMIN_PASSWORD,
        "SELECT SERVER_NAME, STATE FROM servers; CONTROL UNDRAIN SERVER 'db1';",
    )?;
    assert_eq!(out.trim(), "db1\tactive");

    // ---- no admin.password on loopback: the empty password, and only it.
    let open_daemon = Bed::builder().daemon(bed.servers())?;
    let open_admin = open_daemon.admin_sql_addr();
    Conn::new(admin_opts(open_admin, ADMIN_USER, None))
        .await?
        .ping()
        .await?;
    match Conn::new(admin_opts(open_admin, ADMIN_USER, Some("x"))).await {
        Err(mysql_async::Error::Server(e)) => assert_eq!(e.code, 1045),
        other => panic!("a password where none is set: {other:?}"),
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_address_in_use_is_a_clear_error() -> Result<()> {
    let bed = TestBed::start(1)?;
    let taken = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = taken.local_addr()?;
    let daemon = Bed::builder().sql_address(&addr.to_string());
    // The harness may see our own listener answer and think the daemon
    // is up; either way the daemon must exit, naming the setting.
    let log = match daemon.daemon(bed.servers()) {
        Err(e) => format!("{e:#}"),
        Ok(mut r) => {
            let start = std::time::Instant::now();
            while r.alive() && start.elapsed() < std::time::Duration::from_secs(10) {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            ensure!(!r.alive(), "the daemon runs without its admin SQL port");
            r.log()
        }
    };
    let wanted = format!("cannot bind the admin SQL listener on {addr} (admin.sql_address)");
    assert!(log.contains(&wanted), "{log}");
    Ok(())
}
