// Included by tests/tests/hostile_clients.rs and hostile_clients_ebpf.rs with `DATAPATH` set.
//
// Clients that try to hurt the daemon (issue #15): forged log lines and
// megabyte names, partial packets after login, connections that never log
// in. Each case runs against the real daemon and real MariaDB.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use mysql_async::prelude::*;
use redirector_tests::raw;
use redirector_tests::*;

/// This suite's daemon configuration, `extra` added.
fn setup(extra: &str) -> Result<Bed> {
    Bed::builder().datapath(DATAPATH).extra(extra).start()
}

/// Polls `check` every 100 ms until it holds or `within` has passed.
async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool>>,
{
    let deadline = Instant::now() + within;
    loop {
        if check().await? {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("not within {within:?}: {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sessions the daemon lists.
async fn sessions(b: &Bed) -> Result<usize> {
    let listed = b.http.get("/v1/sessions").await?;
    listed
        .as_array()
        .map(Vec::len)
        .context("GET /v1/sessions is an array")
}

/// `redirector_errors_total{kind="limit"}`: clients turned away or cut
/// off by a configured bound.
async fn limit_errors(b: &Bed) -> Result<f64> {
    let scrape = b.http.scrape().await?;
    Ok(admin::metric(&scrape, "redirector_errors_total", &[("kind", "limit")]).unwrap_or(0.0))
}

/// Connections of `user` on the first backend.
fn backend_connections(b: &Bed, user: &str) -> Result<usize> {
    let n = b.servers()[0].sql(&format!(
        "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = '{user}'"
    ))?;
    n.trim().parse().with_context(|| format!("count {n:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_user_name_is_escaped_and_cut_in_logs_and_errors() -> Result<()> {
    let b = setup("")?;
    // A real session first, so the log has the usual lines.
    let mut c = b.conn().await?;
    c.query_drop("SELECT 1").await?;
    let log = b.daemon.log();
    ensure!(
        log.contains("session established"),
        "no session line in the log:\n{log}"
    );

    // A name that would forge a log line and clear the screen, then 1 MB.
    let forged = "2026-01-01T00:00:00.000000Z  INFO forged: session established";
    let mut user = format!("x\n{forged}\x1b[2J\r").into_bytes();
    user.extend(std::iter::repeat_n(b'A', 1_000_000));
    let log_before = b.daemon.log().len();
    let refused = raw::login(b.addr(), &user, "whatever")?;
    let Err(err) = refused else {
        bail!("a made-up user logged in");
    };
    assert_eq!(raw::err_code(&err), 1045, "{}", raw::err_text(&err));
    let message = raw::err_text(&err);
    assert!(
        message.len() < 600,
        "the 1045 error echoes the whole name ({} bytes)",
        message.len()
    );
    assert!(
        !message.contains('\n') && !message.contains('\x1b') && !message.contains('\r'),
        "the 1045 error carries the name's control characters: {message:?}"
    );
    assert!(
        message.contains("bytes)"),
        "the cut name does not say its length: {message:?}"
    );

    eventually(Duration::from_secs(10), "access denied logged", || async {
        Ok(b.daemon.log()[log_before..].contains("access denied"))
    })
    .await?;
    let log = b.daemon.log();
    let added = &log[log_before..];
    assert!(
        added.len() < 16 * 1024,
        "one refused login wrote {} bytes of log",
        added.len()
    );
    assert!(
        !log.lines().any(|l| l.starts_with(forged)),
        "a forged line made it into the log:\n{added}"
    );
    assert!(
        !added.contains("\x1b[2J"),
        "the client's ESC reached the log: {added:?}"
    );
    assert!(
        !log.contains('\x1b'),
        "the log file carries terminal colour codes:\n{log:?}"
    );
    // The session before is unharmed.
    c.query_drop("SELECT 1").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_packet_after_login_times_out_and_idle_clients_stay() -> Result<()> {
    let b = setup("[listen]\naddress = \"{listen}\"\nnet_read_timeout_ms = 2000\n")?;
    // Idle throughout, longer than the timeout (carried by the kernel when
    // it is loaded): must not be touched.
    let mut idle = b.conn().await?;
    idle.query_drop("SELECT 1").await?;

    let Ok(mut s) = raw::login(b.addr(), APP_USER.as_bytes(), APP_PASSWORD)? else {
        bail!("raw login refused");
    };
    assert_eq!(sessions(&b).await?, 2);
    // A statement announced as almost 16 MiB, of which 64 KiB arrive.
    // `SET` keeps it off the kernel path: the daemon reads it.
    let mut start = vec![0xFE, 0xFF, 0xFF, 0x00];
    start.extend_from_slice(b"\x03SET @a = '");
    start.extend(std::iter::repeat_n(b'x', 64 * 1024));
    let t0 = Instant::now();
    s.write_all(&start)?;
    s.set_read_timeout(Some(Duration::from_secs(15)))?;
    // Then silence: the daemon must answer with 1159 and close.
    match raw::read_packet(&mut s) {
        Ok((_, p)) => {
            assert_eq!(raw::err_code(&p), 1159, "{}", raw::err_text(&p));
        }
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            bail!("closed without an error after {:?}", t0.elapsed())
        }
        Err(e) => bail!(
            "no answer to a partial packet after {:?}: {e}",
            t0.elapsed()
        ),
    }
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_millis(1500) && waited < Duration::from_secs(10),
        "cut off after {waited:?} with net_read_timeout_ms = 2000"
    );
    eventually(Duration::from_secs(10), "session and backend connection gone", || async {
        Ok(sessions(&b).await? == 1 && backend_connections(&b, APP_USER)? == 1)
    })
    .await?;
    assert_eq!(limit_errors(&b).await?, 1.0);
    assert!(
        b.daemon.log().contains("net_read_timeout"),
        "the log does not say why the session ended:\n{}",
        b.daemon.log()
    );
    // The idle session was silent for longer than the timeout.
    assert!(idle.query_first::<i32, _>("SELECT 2").await? == Some(2));
    b.assert_kernel_carried().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_connections_do_not_hold_session_slots() -> Result<()> {
    let b = setup(
        "[listen]\naddress = \"{listen}\"\nmax_connections = 2\nmax_handshakes = 3\nhandshake_timeout_ms = 30000\n",
    )?;
    // Two connections that never log in…
    let mut silent = vec![raw::connect(b.addr())?.0, raw::connect(b.addr())?.0];
    // …leave both session slots to clients that do.
    let mut c1 = b.conn().await?;
    let mut c2 = b.conn().await?;
    c1.query_drop("SELECT 1").await?;
    c2.query_drop("SELECT 1").await?;

    // The handshake limit: the third silent connection fills it, the next
    // one is refused at once with a clear error.
    silent.push(raw::connect(b.addr())?.0);
    let mut s = std::net::TcpStream::connect(b.addr())?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let (_, p) = raw::read_packet(&mut s)?;
    assert_eq!(<[u8]>::first(&p), Some(&0xFF), "greeted beyond max_handshakes");
    assert_eq!(raw::err_code(&p), 1040, "{}", raw::err_text(&p));
    assert!(
        raw::err_text(&p).contains("logging in"),
        "{}",
        raw::err_text(&p)
    );
    assert_eq!(limit_errors(&b).await?, 1.0);
    assert!(
        b.daemon.log().contains("max_handshakes"),
        "the log does not say why the client was refused:\n{}",
        b.daemon.log()
    );
    // Logged-in sessions are not affected.
    c1.query_drop("SELECT 2").await?;
    c2.query_drop("SELECT 2").await?;

    // Handshake slots come back when those clients go; max_connections
    // still bounds the sessions.
    drop(silent);
    eventually(Duration::from_secs(10), "a login reaches the session limit", || async {
        match mysql_async::Conn::new(b.opts()).await {
            Ok(_) => bail!("a third session was accepted with max_connections = 2"),
            // Until the daemon has seen the silent clients go.
            Err(mysql_async::Error::Server(e)) if e.message.contains("logging in") => Ok(false),
            Err(mysql_async::Error::Server(e)) if e.code == 1040 => Ok(true),
            Err(e) => bail!("expected 1040 Too many connections, got {e}"),
        }
    })
    .await?;
    drop(c1);
    eventually(Duration::from_secs(10), "a slot is free again", || async {
        Ok(mysql_async::Conn::new(b.opts()).await.is_ok())
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_packets_beyond_the_buffer_cap_get_an_error() -> Result<()> {
    let b = setup("[listen]\naddress = \"{listen}\"\nmax_buffered_bytes = 1048576\n")?;
    let mut healthy = b.conn().await?;
    // Within the cap: a 768 KiB statement is relayed as usual (`SET` goes
    // through the daemon on both data paths).
    let set_big = format!("SET @big = '{}'", "y".repeat(768 * 1024));
    healthy.query_drop(&set_big).await?;
    let len: Option<u64> = healthy.query_first("SELECT LENGTH(@big)").await?;
    assert_eq!(len, Some(768 * 1024));

    // A statement announced as 4 MiB does not fit in 1 MiB for all
    // sessions: refused as soon as its header is read, not buffered.
    let Ok(mut s) = raw::login(b.addr(), APP_USER.as_bytes(), APP_PASSWORD)? else {
        bail!("raw login refused");
    };
    let announced = 4u32 << 20;
    let mut start = announced.to_le_bytes()[..3].to_vec();
    start.push(0);
    start.extend_from_slice(b"\x03SET @a = '");
    start.extend(std::iter::repeat_n(b'x', 1024));
    s.write_all(&start)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let (_, p) = raw::read_packet(&mut s).context("no answer to a packet beyond the cap")?;
    assert_eq!(raw::err_code(&p), 1041, "{}", raw::err_text(&p));
    eventually(Duration::from_secs(10), "the refused session is gone", || async {
        Ok(sessions(&b).await? == 1 && backend_connections(&b, APP_USER)? == 1)
    })
    .await?;
    assert_eq!(limit_errors(&b).await?, 1.0);
    assert!(
        b.daemon.log().contains("max_buffered_bytes"),
        "the log does not say why the session ended:\n{}",
        b.daemon.log()
    );
    // The budget came back: the healthy session's large statement fits
    // again (twice 768 KiB would not fit in 1 MiB).
    healthy.query_drop(&set_big).await?;
    Ok(())
}
