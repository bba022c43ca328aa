//! What the userspace relay publishes in the session registry, read
//! through the library API with the daemon run in-process: transaction
//! state, and nothing left behind by aborted logins.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use mysql_async::prelude::*;
use redirector::app::App as Shared;
use redirector::session::{SessionSnapshot, SessionState};
use redirector_tests::daemon::servers_toml;
use redirector_tests::*;

struct InProcess {
    shared: Arc<Shared>,
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for InProcess {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

async fn start(bed: &TestBed, max_connections: u32) -> Result<InProcess> {
    let servers: Vec<&MariaDb> = bed.servers().iter().collect();
    let text = format!(
        "[listen]\naddress = \"127.0.0.1:1\"\nmax_connections = {max_connections}\n\n{}\
         [[auth.users]]\nname = \"{APP_USER}\"\npassword = \"{APP_PASSWORD}\"\n\n{}",
        redirector_tests::daemon::admin_toml()?,
        servers_toml(&servers)
    );
    let config = redirector::config::Config::parse(&text, std::path::Path::new("review.toml"))?;
    let shared = redirector::daemon::build_app(config)?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let s2 = shared.clone();
    tokio::spawn(async move {
        let _ = redirector::daemon::serve(listener, s2, async {
            let _ = rx.await;
        })
        .await;
    });
    Ok(InProcess {
        shared,
        addr,
        stop: Some(tx),
    })
}

fn only(p: &InProcess) -> SessionSnapshot {
    let all = p.shared.sessions.snapshot();
    assert_eq!(all.len(), 1, "{all:?}");
    all.into_iter().next().unwrap()
}

/// START TRANSACTION / COMMIT and autocommit=0 as seen in the registry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_transaction_state() -> Result<()> {
    let bed = TestBed::start(1)?;
    let p = start(&bed, 100).await?;
    let mut c = client::connect(p.addr).await?;
    c.query_drop("CREATE OR REPLACE TABLE reg_t (a INT PRIMARY KEY) ENGINE=InnoDB")
        .await?;
    let s = only(&p);
    assert_eq!(
        (s.state, s.in_transaction, s.movable),
        (SessionState::Idle, false, true)
    );

    c.query_drop("START TRANSACTION").await?;
    let s = only(&p);
    assert!(
        s.in_transaction && !s.movable,
        "after START TRANSACTION: {s:?}"
    );
    c.query_drop("INSERT INTO reg_t VALUES (1)").await?;
    c.query_drop("COMMIT").await?;
    let s = only(&p);
    assert!(!s.in_transaction && s.movable, "after COMMIT: {s:?}");

    // autocommit=0: the first statement touching InnoDB opens a transaction.
    c.query_drop("SET autocommit = 0").await?;
    let _: Vec<i32> = c.query("SELECT a FROM reg_t").await?;
    let s = only(&p);
    assert!(
        s.in_transaction && !s.movable,
        "autocommit=0 + SELECT: {s:?}"
    );
    c.query_drop("COMMIT").await?;
    // Between transactions with autocommit=0 the session would move with
    // autocommit silently back to 1 unless the mover restores it.
    let s = only(&p);
    println!("autocommit=0 between transactions: {s:?}");
    c.query_drop("SET autocommit = 1").await?;

    // Busy while a statement runs.
    let p2 = &p;
    let busy = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        only(p2).state
    };
    let (r, state) = tokio::join!(c.query_drop("DO SLEEP(1)"), busy);
    r?;
    assert_eq!(state, SessionState::Busy);
    assert_eq!(only(&p).state, SessionState::Idle);
    c.disconnect().await?;
    Ok(())
}

/// Session state that makes a move unsafe and that the contract says must
/// be reported (temporary table, table lock, named lock): the registry
/// shows the session as not movable without a move being tried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_unmovable_session_state() -> Result<()> {
    let bed = TestBed::start(1)?;
    let p = start(&bed, 100).await?;
    let mut failures = Vec::new();
    for (what, sql) in [
        ("temporary table", "CREATE TEMPORARY TABLE tmp_t (a INT)"),
        (
            "LOCK TABLES",
            "CREATE TABLE IF NOT EXISTS lk_t (a INT); LOCK TABLES lk_t READ",
        ),
        ("GET_LOCK", "DO GET_LOCK('review', 0)"),
    ] {
        let mut c = client::connect(p.addr).await?;
        c.query_drop(sql).await?;
        let s = only(&p);
        println!("{what}: {s:?}");
        if s.movable {
            failures.push(format!("{what}: {s:?}"));
        }
        c.disconnect().await?;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        failures.is_empty(),
        "reported movable:\n{}",
        failures.join("\n")
    );
    Ok(())
}

fn read_packet(s: &mut TcpStream) -> std::io::Result<(u8, Vec<u8>)> {
    let mut h = [0u8; 4];
    s.read_exact(&mut h)?;
    let len = u32::from_le_bytes([h[0], h[1], h[2], 0]) as usize;
    let mut p = vec![0u8; len];
    s.read_exact(&mut p)?;
    Ok((h[3], p))
}

/// Clients that vanish at each point of the connection phase leave no
/// registry entry, no slot and no backend connection behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aborted_logins_leak_nothing() -> Result<()> {
    let bed = TestBed::start(1)?;
    let threads = |bed: &TestBed| -> Result<i64> {
        let out = bed.servers()[0].sql("SHOW GLOBAL STATUS LIKE 'Threads_connected'")?;
        Ok(out.split_whitespace().nth(1).unwrap_or("0").parse()?)
    };
    let p = start(&bed, 5).await?;
    let base = threads(&bed)?;
    for round in 0..20 {
        let mut s = TcpStream::connect(p.addr)?;
        let (_, _g) = read_packet(&mut s)?;
        if round % 2 == 1 {
            // A valid-looking response with a wrong password, then gone
            // before reading the answer.
            let mut r = Vec::new();
            r.extend_from_slice(&(0x0200u32 | 0x8000 | 0x80000).to_le_bytes());
            r.extend_from_slice(&(1u32 << 24).to_le_bytes());
            r.push(45);
            r.extend_from_slice(&[0u8; 23]);
            r.extend_from_slice(b"app\0");
            r.push(20);
            r.extend_from_slice(&[1u8; 20]);
            r.extend_from_slice(b"mysql_native_password\0");
            let n = r.len() as u32;
            let mut pk = vec![n as u8, (n >> 8) as u8, (n >> 16) as u8, 1];
            pk.extend_from_slice(&r);
            s.write_all(&pk)?;
        }
        drop(s);
    }
    // And clients that log in and vanish without COM_QUIT.
    for _ in 0..5 {
        let c = client::connect(p.addr).await?;
        drop(c);
    }
    let t0 = Instant::now();
    loop {
        let n = p.shared.sessions.len();
        let free = p.shared.slots.available_permits();
        let th = threads(&bed)?;
        if n == 0 && free == 5 && th <= base {
            break;
        }
        if t0.elapsed() > Duration::from_secs(10) {
            bail!("after aborted logins: sessions={n} free slots={free}/5 backend threads={th} (base {base})");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Still serving.
    let mut c = client::connect(p.addr).await?;
    let one: Option<i32> = c.query_first("SELECT 1").await?;
    assert_eq!(one, Some(1));
    Ok(())
}
