//! The REST API (`/v1`) and Prometheus `/metrics` of the real daemon, with
//! real MariaDB servers and real clients (mysql_async, reqwest, a
//! Prometheus text parser).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use mysql_async::prelude::*;
use redirector_tests::admin::{metric, Method, StatusCode};
use redirector_tests::daemon::free_port;
use redirector_tests::*;
use serde_json::{json, Value};

const TOKEN: &str = "s3cret-token";

/// Every metric family the contract names, as sampled (counters with `_total`).
const METRIC_SAMPLES: &[&str] = &[
    "redirector_sessions",
    "redirector_sessions_accepted_total",
    "redirector_moves_total",
    "redirector_move_duration_seconds",
    "redirector_bytes_total",
    "redirector_commands_total",
    "redirector_backend_up",
    "redirector_datapath_mode",
    "redirector_auth_failures_total",
    "redirector_errors_total",
];

/// Every `/v1` endpoint with a body that would be valid if authorised.
const V1_ENDPOINTS: &[(&str, &str, Option<&str>)] = &[
    ("GET", "/v1/sessions", None),
    ("GET", "/v1/moves", None),
    ("GET", "/v1/servers", None),
    (
        "POST",
        "/v1/servers",
        Some(r#"{"name":"dbx","address":"127.0.0.1:1","weight":1}"#),
    ),
    ("DELETE", "/v1/servers/db1", None),
    ("POST", "/v1/servers/db1/drain", None),
    ("DELETE", "/v1/servers/db1/drain", None),
    ("POST", "/v1/rebalance", None),
    (
        "POST",
        "/v1/sessions/move",
        Some(r#"{"sessions":[1],"to":"db2"}"#),
    ),
    ("GET", "/v1/policy", None),
    (
        "PUT",
        "/v1/policy",
        Some(
            r#"{"version":1,"clusterResourceGroups":[{"groupId":"g","clusters":[{"clusterId":"db1","weight":1}],"scalingPolicy":"session-weighted"}]}"#,
        ),
    ),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_api_and_metrics() -> Result<()> {
    // The default data path: sessions of this host's clients are carried by
    // the kernel, and the listings and metrics say so.
    let mut b = Bed::builder()
        .servers(2)
        .datapath(Datapath::Auto)
        .token(TOKEN)
        // Every wrong token is checked here; the back-off has its own
        // tests (hostile_admin.rs).
        .admin_option("auth_backoff_initial_ms", "0")
        .start()?;
    let admin = b.http.clone();
    admin.wait_up().await?;

    // ---- authentication: every /v1 endpoint, no token and a wrong token.
    for (method, path, body) in V1_ENDPOINTS {
        let m: Method = method.parse()?;
        for token in [None, Some("wrong-token"), Some("")] {
            let (status, text) = admin.call(m.clone(), path, token, *body).await?;
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "{method} {path} with {token:?}: {text}"
            );
            let v: Value = serde_json::from_str(&text)?;
            assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{text}");
        }
    }
    // Nothing was changed by the refused calls.
    let listed = admin
        .expect(Method::GET, "/v1/servers", None, StatusCode::OK)
        .await?;
    assert_eq!(listed.as_array().map(Vec::len), Some(2), "{listed}");

    // ---- sessions: two idle sessions and one in a transaction.
    let (c1, s1) = b.conn_on().await?;
    let (c2, s2) = b.conn_on().await?;
    let (mut c3, s3) = b.conn_on().await?;
    c3.query_drop("START TRANSACTION").await?;
    c3.query_drop("SELECT 1").await?;
    let opened = 3.0;

    let sessions = admin
        .expect(Method::GET, "/v1/sessions", None, StatusCode::OK)
        .await?;
    let rows = sessions.as_array().context("sessions is an array")?;
    assert_eq!(rows.len(), 3, "{sessions}");
    let mut by_server: BTreeMap<String, usize> = BTreeMap::new();
    for row in rows {
        for col in [
            "session_id",
            "user",
            "client_address",
            "server_name",
            "state",
            "in_transaction",
            "movable",
            "not_movable_reason",
            "moves",
            "datapath",
        ] {
            assert!(row.get(col).is_some(), "column {col} missing: {row}");
        }
        assert_eq!(row["user"], APP_USER, "{row}");
        assert_eq!(row["datapath"], "ebpf", "{row}");
        assert_eq!(row["moves"], 0, "{row}");
        let client = row["client_address"].as_str().unwrap_or_default();
        assert!(client.starts_with("127.0.0.1:"), "{row}");
        *by_server
            .entry(row["server_name"].as_str().unwrap_or_default().to_string())
            .or_default() += 1;
    }
    let mut expected: BTreeMap<String, usize> = BTreeMap::new();
    for s in [&s1, &s2, &s3] {
        *expected.entry(s.clone()).or_default() += 1;
    }
    assert_eq!(by_server, expected, "{sessions}");
    // The last session is the one with the open transaction.
    let last = rows
        .iter()
        .max_by_key(|r| r["session_id"].as_u64())
        .context("a session")?;
    assert_eq!(last["server_name"], s3.as_str(), "{last}");
    assert_eq!(last["in_transaction"], true, "{last}");
    assert_eq!(last["movable"], false, "{last}");
    assert_eq!(last["not_movable_reason"], "open transaction", "{last}");
    let first = rows
        .iter()
        .min_by_key(|r| r["session_id"].as_u64())
        .context("a session")?;
    assert_eq!(first["state"], "idle", "{first}");
    assert_eq!(first["in_transaction"], false, "{first}");
    assert_eq!(first["movable"], true, "{first}");

    // ---- servers.
    let listed = admin
        .expect(Method::GET, "/v1/servers", None, StatusCode::OK)
        .await?;
    for db in b.servers() {
        let row = listed
            .as_array()
            .and_then(|a| a.iter().find(|r| r["server_name"] == db.name.as_str()))
            .with_context(|| format!("{} not listed: {listed}", db.name))?;
        assert_eq!(row["address"], db.addr().to_string(), "{row}");
        assert_eq!(row["weight"], 10, "{row}");
        assert_eq!(row["state"], "active", "{row}");
        assert_eq!(
            row["sessions"].as_u64(),
            Some(expected.get(&db.name).copied().unwrap_or(0) as u64),
            "{row}"
        );
    }

    // ---- metrics (loopback: no token needed).
    let scrape = admin.scrape_with(None).await?;
    for name in METRIC_SAMPLES {
        let present = scrape.samples.iter().any(|s| s.metric == *name);
        assert!(present, "metric {name} missing");
    }
    let accepted = metric(&scrape, "redirector_sessions_accepted_total", &[]).unwrap_or(0.0);
    assert!(
        accepted >= opened,
        "redirector_sessions_accepted_total = {accepted}, opened {opened}"
    );
    assert_eq!(
        metric(&scrape, "redirector_backend_up", &[("server", "db1")]),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &scrape,
            "redirector_datapath_mode",
            &[("mode", "userspace")]
        ),
        Some(0.0)
    );
    assert_eq!(
        metric(&scrape, "redirector_datapath_mode", &[("mode", "ebpf")]),
        Some(1.0)
    );
    let gauge_total: f64 = scrape
        .samples
        .iter()
        .filter(|s| s.metric == "redirector_sessions")
        .filter_map(|s| match s.value {
            prometheus_parse::Value::Gauge(v) => Some(v),
            _ => None,
        })
        .sum();
    assert_eq!(
        gauge_total, opened,
        "redirector_sessions sums to the open sessions"
    );
    let on_s1 = expected.get(&s1).copied().unwrap_or(0) as f64;
    let busy_or_idle: f64 = ["idle", "busy"]
        .iter()
        .filter_map(|st| {
            metric(
                &scrape,
                "redirector_sessions",
                &[("server", &s1), ("state", st)],
            )
        })
        .sum();
    assert_eq!(busy_or_idle, on_s1);

    // ---- policy: get, put valid, put invalid.
    let policy = admin
        .expect(Method::GET, "/v1/policy", None, StatusCode::OK)
        .await?;
    assert_eq!(policy["version"], 1, "{policy}");
    let group = &policy["clusterResourceGroups"][0];
    assert_eq!(group["scalingPolicy"], "session-autobalance", "{policy}");
    assert_eq!(
        group["clusters"].as_array().map(Vec::len),
        Some(2),
        "{policy}"
    );

    let new_policy = json!({"version": 1, "clusterResourceGroups": [{
        "groupId": "default",
        "clusters": [{"clusterId": "db1", "weight": 1}, {"clusterId": "db2", "weight": 3}],
        "scalingPolicy": "session-round-robin"}]});
    let put = admin
        .expect(
            Method::PUT,
            "/v1/policy",
            Some(&new_policy.to_string()),
            StatusCode::OK,
        )
        .await?;
    assert_eq!(put, new_policy);
    let got = admin
        .expect(Method::GET, "/v1/policy", None, StatusCode::OK)
        .await?;
    assert_eq!(got, new_policy);
    let listed = admin
        .expect(Method::GET, "/v1/servers", None, StatusCode::OK)
        .await?;
    let w2 = listed
        .as_array()
        .and_then(|a| a.iter().find(|r| r["server_name"] == "db2"))
        .map(|r| r["weight"].clone());
    assert_eq!(w2, Some(json!(3)), "{listed}");

    // Syntax error on line 2, column 11 (the stray comma before '}').
    let bad = "{\"version\": 1,\n  \"x\": 1,}";
    let err = admin
        .expect(
            Method::PUT,
            "/v1/policy",
            Some(bad),
            StatusCode::BAD_REQUEST,
        )
        .await?;
    let msg = err["error"].as_str().unwrap_or_default();
    assert!(msg.contains("line 2"), "{err}");
    assert_eq!(err["line"], 2, "{err}");
    assert!(err["column"].as_u64().is_some_and(|c| c > 0), "{err}");
    // Valid JSON naming an unknown server.
    let unknown = new_policy.to_string().replace("\"db2\"", "\"nosuch\"");
    let err = admin
        .expect(
            Method::PUT,
            "/v1/policy",
            Some(&unknown),
            StatusCode::BAD_REQUEST,
        )
        .await?;
    assert!(
        err["error"].as_str().is_some_and(|e| e.contains("nosuch")),
        "{err}"
    );
    // Rejected policies changed nothing.
    let got = admin
        .expect(Method::GET, "/v1/policy", None, StatusCode::OK)
        .await?;
    assert_eq!(got, new_policy);

    // ---- add a server (a real third MariaDB) and see sessions reach it.
    let db3 = b.bed.add_server()?;
    let (db3_name, db3_addr) = (db3.name.clone(), db3.addr());
    let body = json!({"name": db3_name, "address": db3_addr.to_string(), "weight": 5});
    let added = admin
        .expect(
            Method::POST,
            "/v1/servers",
            Some(&body.to_string()),
            StatusCode::CREATED,
        )
        .await?;
    assert_eq!(added["server_name"], db3_name.as_str(), "{added}");
    assert_eq!(added["address"], db3_addr.to_string(), "{added}");
    assert_eq!(added["weight"], 5, "{added}");
    assert_eq!(added["sessions"], 0, "{added}");
    let got = admin
        .expect(Method::GET, "/v1/policy", None, StatusCode::OK)
        .await?;
    let clusters = got["clusterResourceGroups"][0]["clusters"].clone();
    assert!(
        clusters
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["clusterId"] == db3_name.as_str())),
        "{got}"
    );
    // Round-robin over three servers: three new sessions hit each once.
    let mut landed = Vec::new();
    let mut keep = Vec::new();
    for _ in 0..3 {
        let (c, s) = b.conn_on().await?;
        landed.push(s);
        keep.push(c);
    }
    assert!(landed.contains(&db3_name), "sessions landed on {landed:?}");

    admin
        .expect(
            Method::POST,
            "/v1/servers",
            Some(&body.to_string()),
            StatusCode::CONFLICT,
        )
        .await?;
    for bad in [
        json!({"name": "bad name", "address": "127.0.0.1:1"}),
        json!({"name": "db9", "address": "not-an-address"}),
        json!({"name": "db9", "address": "127.0.0.1:1", "weight": 0}),
        json!({"name": "db9", "address": "127.0.0.1:1", "colour": "red"}),
        // What `redirector check` rejects in a configuration file.
        json!({"name": "db9", "address": "0.0.0.0:3306"}),
        json!({"name": "db9", "address": "127.0.0.1:0"}),
    ] {
        let err = admin
            .expect(
                Method::POST,
                "/v1/servers",
                Some(&bad.to_string()),
                StatusCode::BAD_REQUEST,
            )
            .await?;
        assert!(
            err["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{err}"
        );
    }
    let err = admin
        .expect(
            Method::POST,
            "/v1/servers",
            Some("{\"name\": "),
            StatusCode::BAD_REQUEST,
        )
        .await?;
    assert!(err["line"].as_u64().is_some(), "{err}");

    // ---- mover endpoints: unknown names are 404s with the name in the
    // message (moves themselves are covered by tests/tests/mover.rs).
    for (method, path, body) in [
        ("POST", "/v1/servers/nope/drain", None),
        ("DELETE", "/v1/servers/nope/drain", None),
        ("DELETE", "/v1/servers/nope", None),
        (
            "POST",
            "/v1/sessions/move",
            Some(r#"{"sessions":[424242],"to":"db2"}"#),
        ),
        (
            "POST",
            "/v1/sessions/move",
            Some(r#"{"sessions":"all_inactive","to":"nope"}"#),
        ),
    ] {
        let err = admin
            .expect(method.parse()?, path, body, StatusCode::NOT_FOUND)
            .await?;
        let msg = err["error"].as_str().unwrap_or_default();
        assert!(msg.contains("nope") || msg.contains("424242"), "{err}");
    }
    let err = admin
        .expect(
            Method::POST,
            "/v1/sessions/move",
            Some(r#"{"sessions":[1],"to":"db2","wait_timeout_s":-1}"#),
            StatusCode::BAD_REQUEST,
        )
        .await?;
    assert!(
        err["error"]
            .as_str()
            .is_some_and(|e| e.contains("wait timeout")),
        "{err}"
    );
    let report = admin
        .expect(Method::POST, "/v1/rebalance", Some("{}"), StatusCode::OK)
        .await?;
    assert!(report["moved"].is_array(), "{report}");

    // ---- unknown endpoint and wrong method: JSON errors too.
    let err = admin
        .expect(Method::GET, "/v1/nothing", None, StatusCode::NOT_FOUND)
        .await?;
    assert!(err["error"].is_string(), "{err}");
    let err = admin
        .expect(
            Method::PATCH,
            "/v1/policy",
            None,
            StatusCode::METHOD_NOT_ALLOWED,
        )
        .await?;
    assert!(err["error"].is_string(), "{err}");

    // After the clients left, the registry and the gauges show no sessions.
    drop(keep);
    for c in [c1, c2, c3] {
        c.disconnect().await?;
    }
    let start = Instant::now();
    loop {
        let sessions = admin
            .expect(Method::GET, "/v1/sessions", None, StatusCode::OK)
            .await?;
        if sessions.as_array().is_some_and(Vec::is_empty) {
            break;
        }
        ensure!(
            start.elapsed() < Duration::from_secs(10),
            "sessions left: {sessions}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let scrape = admin.scrape_with(None).await?;
    let gauge_total: f64 = scrape
        .samples
        .iter()
        .filter(|s| s.metric == "redirector_sessions")
        .filter_map(|s| match s.value {
            prometheus_parse::Value::Gauge(v) => Some(v),
            _ => None,
        })
        .sum();
    assert_eq!(gauge_total, 0.0);
    assert!(
        metric(&scrape, "redirector_sessions_accepted_total", &[]).unwrap_or(0.0) >= opened + 3.0
    );
    Ok(())
}

/// Without a configured token on loopback, `/v1` is open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_without_token_is_open() -> Result<()> {
    let b = Bed::builder().datapath(Datapath::Userspace).start()?;
    let admin = &b.http;
    admin.wait_up().await?;
    let (status, text) = admin.call(Method::GET, "/v1/servers", None, None).await?;
    assert_eq!(status, StatusCode::OK, "{text}");
    let v: Value = serde_json::from_str(&text)?;
    assert_eq!(v[0]["server_name"], "db1", "{v}");
    let (status, _) = admin.call(Method::GET, "/metrics", None, None).await?;
    assert_eq!(status, StatusCode::OK);
    Ok(())
}

/// Bound beyond loopback, `/metrics` needs the token too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_need_token_off_loopback() -> Result<()> {
    let port = free_port()?;
    let b = Bed::builder()
        .datapath(Datapath::Userspace)
        .http_address(&format!("0.0.0.0:{port}"))
        .token(TOKEN)
        .admin_option("auth_backoff_initial_ms", "0")
        .start()?;
    // The client reaches 0.0.0.0 over loopback; every call names its token.
    let admin = &b.http;
    admin.wait_up().await?;
    let (status, text) = admin.call(Method::GET, "/metrics", None, None).await?;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{text}");
    let (status, _) = admin
        .call(Method::GET, "/metrics", Some("wrong"), None)
        .await?;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let scrape = admin.scrape_with(Some(TOKEN)).await?;
    assert_eq!(
        metric(&scrape, "redirector_backend_up", &[("server", "db1")]),
        Some(1.0)
    );
    Ok(())
}
