//! The session registry, seen through the library API while real clients
//! use an in-process daemon: user, client address, server, state and
//! transaction state follow what happens on the wire.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use mysql_async::prelude::*;
use redirector::session::{SessionSnapshot, SessionState};
use redirector_tests::daemon::servers_toml;
use redirector_tests::*;

async fn wait_for<F: Fn(&[SessionSnapshot]) -> bool>(
    shared: &redirector::app::App,
    what: &str,
    f: F,
) -> Vec<SessionSnapshot> {
    for _ in 0..100 {
        let snap = shared.sessions.snapshot();
        if f(&snap) {
            return snap;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!(
        "registry never showed {what}: {:?}",
        shared.sessions.snapshot()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_tracks_sessions_and_transactions() -> Result<()> {
    let bed = TestBed::start(2)?;
    let servers: Vec<&MariaDb> = bed.servers().iter().collect();
    let dir = std::env::temp_dir().join(format!("redirector-registry-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let text = format!(
        "{}[datapath]\nmode = \"userspace\"\n\n[[auth.users]]\nname = \"{APP_USER}\"\npassword = \"{APP_PASSWORD}\"\n\n{}",
        redirector_tests::daemon::admin_toml()?,
        servers_toml(&servers)
    );
    let config = redirector::config::Config::parse(&text, &dir.join("redirector.toml"))?;
    let shared = redirector::daemon::build_app(config)?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let daemon = tokio::spawn(redirector::daemon::serve(
        listener,
        Arc::clone(&shared),
        async {
            let _ = stop_rx.await;
        },
    ));

    let mut c = client::connect(addr).await?;
    let server = client::server_of(&mut c, bed.servers()).await?;

    let snap = wait_for(&shared, "one idle session", |s| {
        s.len() == 1 && s[0].state == SessionState::Idle
    })
    .await;
    let s = &snap[0];
    assert_eq!(s.user, APP_USER);
    assert_eq!(s.server_name, server);
    assert!(
        s.client_address.starts_with("127.0.0.1:"),
        "{}",
        s.client_address
    );
    assert!(!s.in_transaction && s.movable, "{s:?}");

    // START TRANSACTION: in a transaction, not movable, and back after COMMIT.
    c.query_drop("CREATE TABLE IF NOT EXISTS reg_t (a INT)")
        .await?;
    c.query_drop("START TRANSACTION").await?;
    c.query_drop("INSERT INTO reg_t VALUES (1)").await?;
    let snap = wait_for(&shared, "a transaction", |s| {
        s.len() == 1 && s[0].in_transaction
    })
    .await;
    assert_eq!(
        snap[0].not_movable_reason.as_deref(),
        Some("open transaction")
    );
    c.query_drop("COMMIT").await?;
    wait_for(&shared, "the commit", |s| {
        s.len() == 1 && !s[0].in_transaction
    })
    .await;

    // autocommit=0: the first statement opens a transaction implicitly.
    c.query_drop("SET autocommit = 0").await?;
    c.query_drop("SELECT COUNT(*) FROM reg_t").await?;
    wait_for(&shared, "an implicit transaction", |s| {
        s.len() == 1 && s[0].in_transaction
    })
    .await;
    c.query_drop("ROLLBACK").await?;
    wait_for(&shared, "the rollback", |s| {
        s.len() == 1 && !s[0].in_transaction
    })
    .await;

    // A second session shows up; closing both empties the registry.
    let c2 = client::connect(addr).await?;
    wait_for(&shared, "two sessions", |s| s.len() == 2).await;
    let ids: Vec<u64> = shared
        .sessions
        .snapshot()
        .iter()
        .map(|s| s.session_id)
        .collect();
    assert!(ids[0] < ids[1], "ids increase: {ids:?}");
    c.disconnect().await?;
    c2.disconnect().await?;
    wait_for(&shared, "no sessions", |s| s.is_empty()).await;

    let _ = stop_tx.send(());
    daemon.await??;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
