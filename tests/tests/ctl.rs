//! `redirector ctl`: the real binary against the real daemon's REST API,
//! with real MariaDB servers. Every subcommand, tables and `--json`, the
//! token (flag, environment, missing), and errors with their exit code.

use std::process::Output;

use anyhow::{ensure, Context, Result};
use redirector_tests::client::port;
use redirector_tests::daemon::{free_port, redirector_bin, Redirector};
use redirector_tests::*;
use serde_json::Value;

const TOKEN: &str = "ctl-test-token";

/// Runs `redirector ctl ARGS` with `--url` set and the environment's
/// REDIRECTOR_* variables removed; `token` goes in REDIRECTOR_TOKEN.
async fn ctl_env(r: &Redirector, token: Option<&str>, args: &[&str]) -> Result<Output> {
    let mut cmd = tokio::process::Command::new(redirector_bin()?);
    cmd.arg("ctl")
        .arg("--url")
        .arg(format!("http://{}", r.admin_http_addr()))
        .args(args)
        .env_remove("REDIRECTOR_TOKEN")
        .env_remove("REDIRECTOR_URL");
    if let Some(t) = token {
        cmd.env("REDIRECTOR_TOKEN", t);
    }
    Ok(cmd.output().await?)
}

/// `ctl --token TOKEN ARGS`, which must succeed; returns stdout.
async fn ctl(r: &Redirector, args: &[&str]) -> Result<String> {
    let mut all = vec!["--token", TOKEN];
    all.extend_from_slice(args);
    let out = ctl_env(r, None, &all).await?;
    ensure!(
        out.status.success(),
        "ctl {args:?}: {}\nstderr: {}\nstdout: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    Ok(String::from_utf8(out.stdout)?)
}

/// `ctl --token TOKEN --json ARGS` parsed.
async fn ctl_json(r: &Redirector, args: &[&str]) -> Result<Value> {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let text = ctl(r, &all).await?;
    serde_json::from_str(&text).with_context(|| format!("ctl {args:?}: not JSON: {text}"))
}

/// `ctl ARGS` that must fail: (exit code, stderr).
async fn ctl_fails(r: &Redirector, token: Option<&str>, args: &[&str]) -> Result<(i32, String)> {
    let out = ctl_env(r, token, args).await?;
    ensure!(
        !out.status.success(),
        "ctl {args:?} succeeded: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// The data lines of a table (after the header), split on whitespace.
fn table_rows(text: &str) -> Vec<Vec<&str>> {
    text.lines()
        .skip_while(|l| !l.starts_with("SESSION_ID") && !l.starts_with("SERVER_NAME"))
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_subcommand() -> Result<()> {
    // db3 is not configured: it joins with add-server.
    let bed = Bed::builder()
        .servers(3)
        .configured(2)
        .datapath(Datapath::Auto)
        .token(TOKEN)
        .mover_wait_timeout(10)
        // A wrong token is followed at once by right ones; the back-off
        // has its own tests (hostile_admin.rs).
        .admin_option("auth_backoff_initial_ms", "0")
        .start()?;
    let configured = &bed.servers()[..2];
    let port_of = |name: &str| bed.port_of(name).ok();
    let r = &bed.daemon;
    let mut a = bed.conn().await?;
    let mut b = bed.conn().await?;

    // ---- sessions, servers: tables and JSON.
    let text = ctl(r, &["sessions"]).await?;
    assert!(
        text.starts_with("SESSION_ID  USER  CLIENT_ADDRESS"),
        "{text}"
    );
    let rows = table_rows(&text);
    assert_eq!(rows.len(), 2, "{text}");
    assert!(rows.iter().all(|r| r[1] == APP_USER), "{text}");
    let json = ctl_json(r, &["sessions"]).await?;
    assert_eq!(json.as_array().map(Vec::len), Some(2), "{json}");
    let text = ctl(r, &["servers"]).await?;
    let rows = table_rows(&text);
    assert_eq!(rows.len(), 2, "{text}");
    assert_eq!(
        rows[0][..2],
        ["db1", configured[0].addr().to_string().as_str()]
    );
    assert_eq!(rows[0][3..], ["active", "1", "yes"], "{text}");
    let json = ctl_json(r, &["servers"]).await?;
    assert_eq!(json[1]["server_name"], "db2", "{json}");

    // ---- move by id, then moves.
    let a_port = port(&mut a).await?;
    let to = if Some(a_port) == port_of("db1") {
        "db2"
    } else {
        "db1"
    };
    let id = a.id().to_string();
    let text = ctl(r, &["move", "--to", to, "--sessions", &id, "--wait", "10"]).await?;
    assert!(text.contains("1 session(s) moved"), "{text}");
    assert_eq!(Some(port(&mut a).await?), port_of(to));
    let text = ctl(r, &["moves"]).await?;
    assert!(
        text.starts_with("SESSION_ID  FROM_SERVER  TO_SERVER  RESULT"),
        "{text}"
    );
    let rows = table_rows(&text);
    assert!(
        rows.iter()
            .any(|r| r[0] == id && r[2] == to && r[3] == "ok"),
        "{text}"
    );
    let json = ctl_json(r, &["moves"]).await?;
    assert!(json.as_array().is_some_and(|m| !m.is_empty()), "{json}");

    // ---- move --all-inactive, move --all --from.
    ctl(r, &["move", "--to", "db1", "--all-inactive"]).await?;
    assert_eq!(Some(port(&mut a).await?), port_of("db1"));
    assert_eq!(Some(port(&mut b).await?), port_of("db1"));
    let report = ctl_json(
        r,
        &["move", "--all", "--from", "db1", "--to", "db2", "--force"],
    )
    .await?;
    assert_eq!(
        report["moved"].as_array().map(Vec::len),
        Some(2),
        "{report}"
    );
    assert_eq!(Some(port(&mut b).await?), port_of("db2"));

    // ---- drain, undrain.
    let text = ctl(r, &["drain", "db2", "--wait", "10"]).await?;
    assert!(
        text.contains("server 'db2' drained: 2 session(s) moved"),
        "{text}"
    );
    let servers = ctl_json(r, &["servers"]).await?;
    assert_eq!(servers[1]["state"], "drained", "{servers}");
    let text = ctl(r, &["undrain", "db2"]).await?;
    assert!(text.contains("accepts new sessions again"), "{text}");
    assert!(table_rows(&text).iter().all(|r| r[3] == "active"), "{text}");

    // ---- add-server, rebalance, remove-server.
    let db3 = bed.bed.server("db3").context("db3")?.addr().to_string();
    let text = ctl(r, &["add-server", "db3", &db3, "--weight", "10"]).await?;
    assert!(table_rows(&text).iter().any(|r| r[0] == "db3"), "{text}");
    let text = ctl(r, &["rebalance", "--wait", "10"]).await?;
    assert!(text.contains("rebalanced: "), "{text}");
    let sessions = ctl_json(r, &["sessions"]).await?;
    let servers_used: std::collections::BTreeSet<&str> = sessions
        .as_array()
        .map(|s| s.iter().filter_map(|x| x["server_name"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(servers_used.len(), 2, "{sessions}");
    ctl(r, &["remove-server", "db3", "--wait", "10"]).await?;
    let servers = ctl_json(r, &["servers"]).await?;
    assert_eq!(servers.as_array().map(Vec::len), Some(2), "{servers}");

    // ---- policy get / set (file and inline).
    let policy = ctl_json(r, &["policy", "get"]).await?;
    assert!(policy["clusterResourceGroups"].is_array(), "{policy}");
    let file = r.dir.join("policy.json");
    std::fs::write(
        &file,
        r#"{"version":1,"clusterResourceGroups":[{"groupId":"g","clusters":[{"clusterId":"db1","weight":5},{"clusterId":"db2","weight":20}],"scalingPolicy":"session-weighted"}]}"#,
    )?;
    let set: Value =
        serde_json::from_str(&ctl(r, &["policy", "set", &file.to_string_lossy()]).await?)?;
    assert_eq!(
        set["clusterResourceGroups"][0]["clusters"][0]["weight"], 5,
        "{set}"
    );
    let inline = r#"{"version":1,"clusterResourceGroups":[{"groupId":"g","clusters":[{"clusterId":"db1","weight":1}],"scalingPolicy":"session-round-robin"}]}"#;
    let set: Value = serde_json::from_str(&ctl(r, &["policy", "set", inline]).await?)?;
    assert_eq!(
        set["clusterResourceGroups"][0]["scalingPolicy"],
        "session-round-robin"
    );
    let (code, err) = ctl_fails(r, Some(TOKEN), &["policy", "set", "{\"version\": 1,"]).await?;
    assert!(code == 1 && err.contains("line 1 column"), "{code}: {err}");

    // ---- token: from the environment; missing; wrong.
    let out = ctl_env(r, Some(TOKEN), &["servers"]).await?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (code, err) = ctl_fails(r, None, &["sessions"]).await?;
    assert_eq!(code, 1, "{err}");
    assert!(err.starts_with("error: missing bearer token"), "{err}");
    assert!(err.contains("HTTP 401"), "{err}");
    let (_, err) = ctl_fails(r, Some("wrong"), &["servers"]).await?;
    assert!(err.contains("invalid bearer token"), "{err}");

    // ---- errors: unknown server, unknown session, no daemon.
    let (code, err) = ctl_fails(r, Some(TOKEN), &["drain", "nope"]).await?;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("unknown server 'nope'"), "{err}");
    let (code, err) = ctl_fails(
        r,
        Some(TOKEN),
        &["move", "--to", "db1", "--sessions", "999999"],
    )
    .await?;
    assert!(
        code == 1 && err.contains("unknown session 999999"),
        "{code}: {err}"
    );
    let out = tokio::process::Command::new(redirector_bin()?)
        .args([
            "ctl",
            "--url",
            &format!("http://127.0.0.1:{}", free_port()?),
            "servers",
        ])
        .output()
        .await?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("cannot reach"),
        "{err}"
    );
    // Usage errors are clap's (exit 2): --to is required, and one selection.
    let (code, _) = ctl_fails(r, Some(TOKEN), &["move", "--all"]).await?;
    assert_eq!(code, 2);
    let (code, _) = ctl_fails(r, Some(TOKEN), &["move", "--to", "db1"]).await?;
    assert_eq!(code, 2);
    drop((a, b));
    Ok(())
}
