// Included by tests/tests/proxy_edge_cases.rs and proxy_edge_cases_ebpf.rs with `DATAPATH` set.

use std::io::Write;
use std::net::{Shutdown, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use mysql_async::prelude::*;
use redirector_tests::client::{opts, session_id};
use redirector_tests::raw::*;
use redirector_tests::*;

/// This suite's daemon configuration, `extra` added.
fn config(extra: &str) -> BedBuilder {
    Bed::builder().datapath(DATAPATH).extra(extra)
}

/// `n` servers behind this suite's daemon.
fn setup(n: usize, extra: &str) -> Result<Bed> {
    config(extra).servers(n).start()
}

// ---------------------------------------------------------------------------

/// The version string of a HandshakeV10 payload.
fn greeting_version(g: &[u8]) -> Result<String> {
    let rest = g.get(1..).context("empty greeting")?;
    let end = rest
        .iter()
        .position(|&b| b == 0)
        .context("greeting without a version string")?;
    Ok(String::from_utf8_lossy(&rest[..end]).into_owned())
}

/// Ready means ready: the client port accepts its first connection only
/// once the daemon serves it at once — both admin ports already accept,
/// and the greeting (with the backend's version, learnt at start) follows
/// without delay. The first configured server here accepts TCP but never
/// greets, so learning the greeting waits 2 s for it: the old daemon
/// completed client connections during that time and greeted them only
/// after it.
#[test]
fn client_port_accepts_only_when_ready() -> Result<()> {
    let bed = TestBed::start(1)?;
    let hung = std::net::TcpListener::bind("127.0.0.1:0")?;
    let cfg = config("").config(bed.servers())?.replacen(
        "[[servers]]",
        &format!(
            "[[servers]]\nname = \"hung\"\naddress = \"{}\"\nweight = 1\n\n[[servers]]",
            hung.local_addr()?
        ),
        1,
    );
    let mut d = redirector_tests::daemon::Redirector::spawn(&cfg)?;
    let mut first = d.first_connection(Duration::from_secs(20))?;
    let connected = Instant::now();
    let short = Duration::from_millis(200);
    let admin_sql = std::net::TcpStream::connect_timeout(&d.admin_sql_addr(), short);
    let admin_http = std::net::TcpStream::connect_timeout(&d.admin_http_addr(), short);
    if admin_sql.is_err() || admin_http.is_err() {
        bail!(
            "the client port accepted before the admin ports: SQL {:?}, REST {:?}\n{}",
            admin_sql.err(),
            admin_http.err(),
            d.log()
        );
    }
    first.set_read_timeout(Some(Duration::from_secs(10)))?;
    let (_, greeting) = read_packet(&mut first)?;
    let waited = connected.elapsed();
    let (_, backend_greeting) = {
        let mut s = std::net::TcpStream::connect(bed.servers()[0].addr())?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        read_packet(&mut s)?
    };
    assert_eq!(
        greeting_version(&greeting)?,
        greeting_version(&backend_greeting)?,
        "the first client was greeted with a version not learnt from the backend"
    );
    if waited > Duration::from_secs(1) {
        bail!(
            "the first connection waited {waited:?} for its greeting: the port accepted before the daemon was ready\n{}",
            d.log()
        );
    }
    Ok(())
}

/// A client that sends a command and then half-closes its socket (shutdown
/// SHUT_WR, e.g. `printf ... | nc -N`) still gets the answer from MariaDB.
/// Through the proxy the reply is dropped: on client EOF the relay returns
/// at once, discarding the response in flight.
#[test]
fn half_close_after_command_still_gets_the_answer() -> Result<()> {
    let b = setup(1, "")?;
    for (what, addr) in [("direct", b.servers()[0].addr()), ("proxy", b.addr())] {
        let mut c = raw_login(addr, APP_USER, APP_PASSWORD, FULL, Some(TEST_DB), None)?
            .map_err(|e| anyhow::anyhow!("{what}: login {}", err_text(&e)))?;
        let mut p = vec![3u8];
        p.extend_from_slice(b"SELECT SLEEP(0.2), 'answer'");
        c.s.write_all(&packet(0, &p))?;
        c.s.shutdown(Shutdown::Write)?;
        let got = c.read_answer();
        assert!(
            matches!(&got, Ok(Answer::Rows(rows)) if rows.len() == 1),
            "{what}: {got:?}"
        );
    }
    Ok(())
}

/// Clients with fewer capabilities than mysql_async: no DEPRECATE_EOF (so
/// EOF packets), no SESSION_TRACK, no PLUGIN_AUTH, and all together.
#[test]
fn reduced_client_capabilities() -> Result<()> {
    let b = setup(1, "")?;
    let variants = [
        ("full", FULL),
        ("no DEPRECATE_EOF", FULL & !DEPRECATE_EOF),
        ("no SESSION_TRACK", FULL & !SESSION_TRACK),
        ("no PLUGIN_AUTH", FULL & !PLUGIN_AUTH),
        (
            "minimal",
            LONG_PASSWORD | PROTOCOL_41 | SECURE_CONNECTION | TRANSACTIONS,
        ),
    ];
    for (name, caps) in variants {
        for (what, addr) in [("direct", b.servers()[0].addr()), ("proxy", b.addr())] {
            let mut c = raw_login(addr, APP_USER, APP_PASSWORD, caps, Some(TEST_DB), None)?
                .map_err(|e| anyhow::anyhow!("{name} {what}: login {}", err_text(&e)))?;
            assert_eq!(
                c.one("SELECT 40 + 2")?.as_deref(),
                Some("42"),
                "{name} {what}"
            );
            assert_eq!(c.one("SELECT DATABASE()")?.as_deref(), Some("test"));
            assert_eq!(c.query("DO 1")?, Answer::Ok);
            assert_eq!(c.query("SELECT * FROM no_such_table")?, Answer::Err(1146));
            assert_eq!(
                c.one("SELECT 'still in sync'")?.as_deref(),
                Some("still in sync")
            );
            // COM_CHANGE_USER with this capability set.
            let ok = c.change_user(HASHONLY_USER, HASHONLY_PASSWORD, None)?;
            assert_eq!(ok[0], 0x00, "{name} {what}: change user {}", err_text(&ok));
            assert_eq!(
                c.one("SELECT CURRENT_USER()")?.as_deref(),
                Some("hashonly@%"),
                "{name} {what}"
            );
        }
    }
    Ok(())
}

/// The proxy's own needs never show: a client that negotiates session
/// tracking gets the very OK packets (status flags, session-state data)
/// and variable values it gets directly. (The redirector used to turn on
/// `session_track_state_change` for its failover bookkeeping, so these
/// clients saw SESSION_STATE_CHANGED and tracking bytes after every state
/// change, and the variable read 1.)
#[test]
fn session_tracking_reads_as_directly() -> Result<()> {
    let b = setup(1, "")?;
    let statements = [
        "SET @a = 1",
        "SET SESSION sql_mode = 'ANSI_QUOTES'",
        "SET autocommit = 0",
        "SET autocommit = 1",
        "CREATE TEMPORARY TABLE tracked_tmp (x INT)",
        "DROP TEMPORARY TABLE tracked_tmp",
        "PREPARE s FROM 'SELECT 1'",
        "DEALLOCATE PREPARE s",
        "USE test",
        "DO 1",
    ];
    let mut replies = Vec::new();
    for (what, addr) in [("direct", b.servers()[0].addr()), ("proxy", b.addr())] {
        let mut c = raw_login(addr, APP_USER, APP_PASSWORD, FULL, Some(TEST_DB), None)?
            .map_err(|e| anyhow::anyhow!("{what}: login {}", err_text(&e)))?;
        let mut got = Vec::new();
        for sql in statements {
            got.push((sql, c.reply(sql)?));
        }
        let tracking = c.one("SELECT @@session_track_state_change")?;
        replies.push((what, got, tracking));
    }
    let (_, direct, direct_tracking) = &replies[0];
    let (_, proxy, proxy_tracking) = &replies[1];
    assert_eq!(proxy_tracking, direct_tracking, "@@session_track_state_change");
    for ((sql, d), (_, p)) in direct.iter().zip(proxy) {
        assert_eq!(p, d, "OK packet of `{sql}`: proxy (left) vs direct (right)");
    }
    Ok(())
}

/// CONNECT_WITH_DB naming a database that does not exist: MariaDB answers
/// 1049 Unknown database; the proxy must pass that on.
#[test]
fn connect_with_unknown_database_gets_1049() -> Result<()> {
    let b = setup(1, "")?;
    for (what, addr) in [("direct", b.servers()[0].addr()), ("proxy", b.addr())] {
        match raw_login(addr, APP_USER, APP_PASSWORD, FULL, Some("no_such_db"), None)? {
            Ok(_) => bail!("{what}: login to a missing database succeeded"),
            Err(e) => assert_eq!(err_code(&e), 1049, "{what}: {}", err_text(&e)),
        }
    }
    Ok(())
}

/// An account without password, configured in the proxy and loaded from
/// the backends.
#[test]
fn empty_password_accounts() -> Result<()> {
    let bed = TestBed::start(1)?;
    bed.servers()[0].sql(
        "CREATE USER 'nopw'@'%'; GRANT ALL ON test.* TO 'nopw'@'%'; \
         CREATE USER 'nopw2'@'%'; GRANT ALL ON test.* TO 'nopw2'@'%';",
    )?;
    let r = config("")
        .service_account()
        .accounts("[[auth.users]]\nname = \"nopw\"\npassword = \"\"\n\n")
        .daemon(bed.servers())?;
    for user in ["nopw", "nopw2"] {
        let mut c = raw_login(r.addr, user, "", FULL, Some(TEST_DB), None)?
            .map_err(|e| anyhow::anyhow!("{user}: {}", err_text(&e)))?;
        assert_eq!(c.one("SELECT CURRENT_USER()")?, Some(format!("{user}@%")));
        // With a password where none is set: 1045 using password: YES.
        match raw_login(r.addr, user, "x", FULL, Some(TEST_DB), None)? {
            Ok(_) => bail!("{user} with a password accepted"),
            Err(e) => assert_eq!(err_code(&e), 1045),
        }
    }
    Ok(())
}

/// A raw login's outcome: `ok <CURRENT_USER()>` or `error <code>`.
fn login_outcome(addr: SocketAddr, user: &str, password: &str) -> Result<String> {
    Ok(match raw_login(addr, user, password, FULL, None, None)? {
        Ok(mut c) => format!("ok {}", c.one("SELECT CURRENT_USER()")?.unwrap_or_default()),
        Err(e) => format!("error {}", err_code(&e)),
    })
}

/// Logs in as each (user, password) directly and through `proxy`; the
/// outcomes must be the same, and the server's must be `expected`.
fn same_outcomes(
    server: SocketAddr,
    proxy: SocketAddr,
    cases: &[(&str, &str, &str)],
) -> Result<()> {
    for (user, password, expected) in cases {
        let direct = login_outcome(server, user, password)?;
        assert_eq!(&direct, expected, "server: {user} with {password:?}");
        let proxied = login_outcome(proxy, user, password)?;
        assert_eq!(proxied, direct, "proxy vs server: {user} with {password:?}");
    }
    Ok(())
}

/// One user name, several hosts, a password each: the proxy must pick the
/// account the server picks for a TCP client from 127.0.0.1 (most specific
/// host first; with skip-name-resolve, as the test servers run, 'localhost'
/// is not 127.0.0.1). The old proxy ignored hosts and preferred '%'.
#[test]
fn host_specific_accounts() -> Result<()> {
    let bed = TestBed::start(1)?;
    bed.servers()[0].sql(
        "CREATE USER 'hu'@'localhost' IDENTIFIED BY 'hu-localhost'; \
         CREATE USER 'hu'@'127.0.0.1' IDENTIFIED BY 'hu-ip'; \
         CREATE USER 'hu'@'%' IDENTIFIED BY 'hu-any'; \
         CREATE USER 'hw'@'127.0.0.%' IDENTIFIED BY 'hw-pattern'; \
         CREATE USER 'hw'@'%' IDENTIFIED BY 'hw-any'; \
         CREATE USER 'hm'@'127.0.0.0/255.0.0.0' IDENTIFIED BY 'hm-mask'; \
         CREATE USER 'hm'@'127.%' IDENTIFIED BY 'hm-pattern'; \
         CREATE USER 'hl'@'localhost' IDENTIFIED BY 'hl-localhost'; \
         CREATE USER 'hl'@'%' IDENTIFIED BY 'hl-any';",
    )?;
    let r = config("").service_account().daemon(bed.servers())?;
    same_outcomes(
        bed.servers()[0].addr(),
        r.addr,
        &[
            ("hu", "hu-ip", "ok hu@127.0.0.1"),
            ("hu", "hu-any", "error 1045"),
            ("hu", "hu-localhost", "error 1045"),
            ("hw", "hw-pattern", "ok hw@127.0.0.%"),
            ("hw", "hw-any", "error 1045"),
            ("hm", "hm-mask", "ok hm@127.0.0.0/255.0.0.0"),
            ("hm", "hm-pattern", "error 1045"),
            ("hl", "hl-any", "ok hl@%"),
            ("hl", "hl-localhost", "error 1045"),
        ],
    )
}

/// Password-less accounts at a specific host: 'np'@'127.0.0.1' has none
/// (and wins over 'np'@'%' with one); 'nl'@'localhost' has none but does
/// not match a TCP client from 127.0.0.1. The old proxy loaded password-
/// less accounts only for host '%'.
#[test]
fn password_less_account_at_a_host() -> Result<()> {
    let bed = TestBed::start(1)?;
    bed.servers()[0].sql(
        "CREATE USER 'np'@'127.0.0.1'; \
         CREATE USER 'np'@'%' IDENTIFIED BY 'np-any'; \
         CREATE USER 'nl'@'localhost'; \
         CREATE USER 'nl'@'%' IDENTIFIED BY 'nl-any';",
    )?;
    let r = config("").service_account().daemon(bed.servers())?;
    same_outcomes(
        bed.servers()[0].addr(),
        r.addr,
        &[
            ("np", "", "ok np@127.0.0.1"),
            ("np", "np-any", "error 1045"),
            ("nl", "", "error 1045"),
            ("nl", "nl-any", "ok nl@%"),
        ],
    )
}

/// `CREATE USER user@'%'` with password `<user>-pass` and rights on test.
fn create_account(server: &MariaDb, user: &str) -> Result<()> {
    server.sql(&format!(
        "CREATE USER '{user}'@'%' IDENTIFIED BY '{user}-pass'; \
         GRANT ALL ON test.* TO '{user}'@'%';"
    ))?;
    Ok(())
}

/// An account created moments before its login, right after another
/// login's reload. The old proxy rate-limited reloads (one per 2 s) and
/// refused it with 1045; now the login waits for the next reload.
#[test]
fn account_created_just_before_login() -> Result<()> {
    let b = config("").service_account().start()?;
    // jc1 is unknown to the proxy: its login reloads the accounts.
    create_account(&b.servers()[0], "jc1")?;
    raw_login(b.addr(), "jc1", "jc1-pass", FULL, Some(TEST_DB), None)?
        .map_err(|e| anyhow::anyhow!("jc1: {}", err_text(&e)))?;
    create_account(&b.servers()[0], "jc2")?;
    let t0 = Instant::now();
    let mut c = raw_login(b.addr(), "jc2", "jc2-pass", FULL, Some(TEST_DB), None)?
        .map_err(|e| anyhow::anyhow!("jc2 created just before login: {}", err_text(&e)))?;
    println!("login of a just-created account took {:?}", t0.elapsed());
    assert_eq!(c.one("SELECT CURRENT_USER()")?.as_deref(), Some("jc2@%"));
    Ok(())
}

/// COM_CHANGE_USER to an account created moments before, right after the
/// session's own login reloaded the accounts (the old proxy refused it:
/// its per-session rate limit was used up by the login).
#[test]
fn account_created_just_before_change_user() -> Result<()> {
    let b = config("").service_account().start()?;
    create_account(&b.servers()[0], "jc3")?;
    let mut c = raw_login(b.addr(), "jc3", "jc3-pass", FULL, Some(TEST_DB), None)?
        .map_err(|e| anyhow::anyhow!("jc3: {}", err_text(&e)))?;
    create_account(&b.servers()[0], "jc4")?;
    let ok = c.change_user("jc4", "jc4-pass", None)?;
    assert_eq!(ok[0], 0x00, "change user to jc4: {}", err_text(&ok));
    assert_eq!(c.one("SELECT CURRENT_USER()")?.as_deref(), Some("jc4@%"));
    // A wrong password is still refused, and the session stays usable.
    let e = c.change_user("jc4", "wrong", None)?;
    assert_eq!(err_code(&e), 1045);
    assert_eq!(c.one("SELECT CURRENT_USER()")?.as_deref(), Some("jc4@%"));
    Ok(())
}

/// The mariadb CLI as `user`: (success, stdout, stderr).
fn cli_as(addr: SocketAddr, user: &str, password: &str, sql: &str) -> Result<(bool, String, String)> {
    let out = std::process::Command::new("mariadb")
        .args(["--no-defaults", "--skip-ssl", "-h127.0.0.1", "-N", "-B"])
        .arg(format!("-P{}", addr.port()))
        .arg(format!("-u{user}"))
        .arg(format!("-p{password}"))
        .args(["-e", sql])
        .stdin(std::process::Stdio::null())
        .output()?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// Installs the ed25519 plugin and creates `user`@'%' with it.
fn create_ed25519_account(server: &MariaDb, user: &str, password: &str) -> Result<()> {
    server.sql(&format!(
        "INSTALL SONAME 'auth_ed25519'; \
         CREATE USER '{user}'@'%' IDENTIFIED VIA ed25519 USING PASSWORD('{password}'); \
         GRANT ALL ON test.* TO '{user}'@'%';"
    ))?;
    Ok(())
}

/// An ed25519 account with its password configured (`plugin =
/// "ed25519"`): the proxy verifies the mariadb CLI's signature and signs
/// toward the backend; logins, queries and wrong passwords behave as on
/// the server. COM_CHANGE_USER to it (raw client) is switched to
/// client_ed25519 too.
#[test]
fn ed25519_account_with_configured_password() -> Result<()> {
    let bed = TestBed::start(1)?;
    create_ed25519_account(&bed.servers()[0], "ed", "ed-pass")?;
    let accounts = format!(
        "{}[[auth.users]]\nname = \"ed\"\npassword = \"ed-pass\"\nplugin = \"ed25519\"\n\n",
        redirector_tests::daemon::app_users_toml()
    );
    let r = config("")
        .service_account()
        .accounts(&accounts)
        .daemon(bed.servers())?;
    let sql = "CREATE OR REPLACE TABLE test.ed_t (a INT); INSERT INTO test.ed_t VALUES (40), (2); \
               SELECT CURRENT_USER(), SUM(a) FROM test.ed_t";
    for (what, addr) in [("direct", bed.servers()[0].addr()), ("proxy", r.addr)] {
        let (ok, out, err) = cli_as(addr, "ed", "ed-pass", sql)?;
        assert!(ok, "{what}: ed: {err}");
        assert_eq!(out.trim(), "ed@%\t42", "{what}");
        let (ok, _, err) = cli_as(addr, "ed", "wrong", "SELECT 1")?;
        assert!(!ok, "{what}: ed with a wrong password accepted");
        assert!(err.contains("1045"), "{what}: {err}");
        let mut c = raw_login(addr, APP_USER, APP_PASSWORD, FULL, Some(TEST_DB), None)?
            .map_err(|e| anyhow::anyhow!("{what}: {}", err_text(&e)))?;
        let ok = c.change_user("ed", "ed-pass", None)?;
        assert_eq!(ok[0], 0x00, "{what}: change user to ed: {}", err_text(&ok));
        assert_eq!(c.one("SELECT CURRENT_USER()")?.as_deref(), Some("ed@%"), "{what}");
        let e = c.change_user("ed", "wrong", None)?;
        assert_eq!(err_code(&e), 1045, "{what}");
    }
    Ok(())
}

/// An ed25519 account known only to the backend: the proxy cannot sign
/// for it, and says so naming the plugin and the fix (the old proxy
/// answered a bare 1045 "Access denied").
#[test]
fn ed25519_account_without_password_names_the_plugin() -> Result<()> {
    let bed = TestBed::start(1)?;
    create_ed25519_account(&bed.servers()[0], "ed2", "ed2-pass")?;
    let r = config("").service_account().daemon(bed.servers())?;
    let (ok, out, err) = cli_as(bed.servers()[0].addr(), "ed2", "ed2-pass", "SELECT CURRENT_USER()")?;
    assert!(ok && out.trim() == "ed2@%", "direct ed2: {out} {err}");
    let (ok, _, err) = cli_as(r.addr, "ed2", "ed2-pass", "SELECT CURRENT_USER()")?;
    assert!(!ok, "proxy: ed2 without a configured password accepted");
    println!("proxy said: {}", err.trim());
    assert!(
        err.contains("1045") && err.contains("ed25519") && err.contains("[[auth.users]]"),
        "proxy ed2: {err}"
    );
    // The same through COM_CHANGE_USER.
    let mut c = raw_login(r.addr, APP_USER, APP_PASSWORD, FULL, Some(TEST_DB), None)?
        .map_err(|e| anyhow::anyhow!("{}", err_text(&e)))?;
    let e = c.change_user("ed2", "ed2-pass", None)?;
    assert_eq!(err_code(&e), 1045);
    assert!(err_text(&e).contains("ed25519"), "{}", err_text(&e));
    assert_eq!(c.one("SELECT CURRENT_USER()")?.as_deref(), Some("app@%"));
    Ok(())
}

/// After a COM_CHANGE_USER that MariaDB refuses, the connection stays
/// usable (MariaDB restores the previous user). The proxy closes it.
#[test]
fn failed_change_user_keeps_the_connection() -> Result<()> {
    let b = setup(1, "")?;
    for (what, addr) in [("direct", b.servers()[0].addr()), ("proxy", b.addr())] {
        let mut c = raw_login(addr, APP_USER, APP_PASSWORD, FULL, Some(TEST_DB), None)?
            .map_err(|e| anyhow::anyhow!("{what}: {}", err_text(&e)))?;
        let e = c.change_user(APP_USER, "wrong", None)?;
        assert_eq!(e[0], 0xFF, "{what}");
        assert_eq!(err_code(&e), 1045, "{what}");
        let after = c.query("SELECT 1");
        assert!(
            matches!(after, Ok(Answer::Rows(_))),
            "{what}: after a refused COM_CHANGE_USER: {after:?}"
        );
    }
    Ok(())
}

/// COM_CHANGE_USER from a client whose default plugin is not native (MySQL
/// 8 connectors default to caching_sha2_password): MariaDB answers with an
/// AuthSwitchRequest to mysql_native_password, and so must the proxy (the
/// old one refused with 1045).
#[test]
fn change_user_with_non_native_plugin_is_switched() -> Result<()> {
    let b = setup(1, "")?;
    for (what, addr) in [("direct", b.servers()[0].addr()), ("proxy", b.addr())] {
        let mut c = raw_login(addr, APP_USER, APP_PASSWORD, FULL, Some(TEST_DB), None)?
            .map_err(|e| anyhow::anyhow!("{what}: {}", err_text(&e)))?;
        let res = c.change_user(
            HASHONLY_USER,
            HASHONLY_PASSWORD,
            Some("caching_sha2_password"),
        )?;
        assert_eq!(res[0], 0x00, "{what}: {}", err_text(&res));
        assert_eq!(
            c.one("SELECT CURRENT_USER()")?.as_deref(),
            Some("hashonly@%")
        );
    }
    Ok(())
}

/// LOAD DATA LOCAL INFILE where the server fails half-way (a trigger
/// SIGNALs on row 3 of 8 MiB; LOCAL turns duplicate keys into warnings):
/// the client gets ERR 1644, nothing stalls and the session stays usable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_data_error_midway() -> Result<()> {
    let b = setup(1, "")?;
    for (what, addr) in [("direct", b.servers()[0].addr()), ("proxy", b.addr())] {
        let mut c = mysql_async::Conn::new(opts(addr, APP_USER, APP_PASSWORD)).await?;
        c.query_drop("CREATE OR REPLACE TABLE ld_t (a INT PRIMARY KEY, b VARCHAR(100))")
            .await?;
        // LOCAL implies IGNORE (duplicates are warnings): fail with SIGNAL.
        c.query_drop(
            "CREATE TRIGGER ld_boom BEFORE INSERT ON ld_t FOR EACH ROW \
             IF NEW.a = 3 THEN SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'boom'; END IF",
        )
        .await?;
        // 8 MiB of rows with a duplicate key after the first few rows.
        let mut data = String::from("1\tx\n2\tx\n");
        let mut i = 3;
        while data.len() < 8 << 20 {
            data.push_str(&format!("{i}\t{}\n", "y".repeat(80)));
            i += 1;
        }
        let bytes = bytes::Bytes::from(data);
        c.set_infile_handler(async move {
            Ok(Box::pin(futures_util::stream::iter([Ok(bytes)])) as mysql_async::InfileData)
        });
        let res = tokio::time::timeout(
            Duration::from_secs(30),
            c.query_drop("LOAD DATA LOCAL INFILE 'x.tsv' INTO TABLE ld_t"),
        )
        .await
        .with_context(|| format!("{what}: LOAD DATA stalled"))?;
        match res {
            Err(mysql_async::Error::Server(e)) => assert_eq!(e.code, 1644, "{what}: {e:?}"),
            other => bail!("{what}: expected 1644, got {other:?}"),
        }
        let one: Option<i32> =
            tokio::time::timeout(Duration::from_secs(10), c.query_first("SELECT 1"))
                .await
                .with_context(|| format!("{what}: stalled after LOAD DATA error"))??;
        assert_eq!(one, Some(1), "{what}");
        c.query_drop("DROP TABLE ld_t").await?;
    }
    Ok(())
}

/// Pipelined big requests and big responses at the same time: a writer
/// thread sends 64 queries of ~1 MiB each without waiting while the reader
/// drains the ~1 MiB answers.
#[test]
fn pipelined_big_requests_and_responses() -> Result<()> {
    let b = setup(1, "")?;
    let c = raw_login(b.addr(), APP_USER, APP_PASSWORD, FULL, Some(TEST_DB), None)?
        .map_err(|e| anyhow::anyhow!("{}", err_text(&e)))?;
    let mut w = c.s.try_clone()?;
    let n = 64;
    let writer = std::thread::spawn(move || -> std::io::Result<()> {
        let filler = "z".repeat(1 << 20);
        for i in 0..n {
            let sql = format!("SELECT {i}, REPEAT('q', 1048576), LENGTH('{filler}')");
            let mut p = vec![3u8];
            p.extend_from_slice(sql.as_bytes());
            w.write_all(&packet(0, &p))?;
        }
        Ok(())
    });
    let mut c = c;
    c.s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let t0 = Instant::now();
    for i in 0..n {
        match c.read_answer().with_context(|| format!("answer {i}"))? {
            Answer::Rows(rows) => {
                assert_eq!(rows[0][0].as_deref(), Some(i.to_string().as_str()));
                assert_eq!(rows[0][1].as_ref().map(|s| s.len()), Some(1 << 20));
            }
            other => bail!("answer {i}: {other:?}"),
        }
    }
    writer.join().unwrap()?;
    println!("64 x 1 MiB both ways in {:?}", t0.elapsed());
    // The first answer went through the kernel, the pipelined rest through
    // the daemon, byte-exact across the hand-over.
    tokio::runtime::Runtime::new()?.block_on(b.assert_kernel_carried())
}

/// Large results over TLS, read fast and read slowly. tokio-rustls documents
/// that poll_write may leave bytes in its buffer ("you must manually call
/// flush"); the relay flushes when its client buffer empties, and this
/// guards against a stall.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_large_results_do_not_stall() -> Result<()> {
    let tls = TlsCert::self_signed()?;
    let b = setup(1, &tls.toml())?;
    let ssl = mysql_async::SslOpts::default().with_danger_accept_invalid_certs(true);
    let mut c = mysql_async::Conn::new(b.opts().ssl_opts(Some(ssl))).await?;
    // Slow streaming reader: the proxy's TLS writes keep hitting a full socket.
    for (i, rows) in [20_000u32, 7_777, 33_333, 12_345, 50_001]
        .into_iter()
        .enumerate()
    {
        let fut = async {
            let mut res = c
                .query_iter(format!(
                    "SELECT seq, REPEAT('a', 1000) FROM test.seq_1_to_{rows}"
                ))
                .await?;
            let mut n = 0u32;
            while let Some(_row) = res.next().await? {
                n += 1;
                if n.is_multiple_of(100) {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
            Ok::<u32, mysql_async::Error>(n)
        };
        let n = tokio::time::timeout(Duration::from_secs(30), fut)
            .await
            .with_context(|| format!("slow reader {i}: TLS response stalled"))??;
        assert_eq!(n, rows);
    }
    for i in 0..40u32 {
        let size = 100_000 + i * 97_001;
        let blob: Option<Vec<u8>> = tokio::time::timeout(
            Duration::from_secs(10),
            c.query_first(format!("SELECT REPEAT('c', {size})")),
        )
        .await
        .with_context(|| format!("iteration {i} (blob {size} bytes): TLS response stalled"))??;
        assert_eq!(blob.map(|b| b.len()), Some(size as usize));
    }
    Ok(())
}

/// A password changed on the backends (ALTER USER) must work through the
/// proxy: a password that does not verify against the loaded hash waits
/// for a fresh reload (the old proxy once reloaded only for unknown users).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_changed_on_backend_is_picked_up() -> Result<()> {
    let b = config("").service_account().start()?;
    let c = mysql_async::Conn::new(b.opts_as(LOADED_USER, LOADED_PASSWORD)).await?;
    c.disconnect().await?;
    b.servers()[0].sql("ALTER USER 'loaded'@'%' IDENTIFIED BY 'new-pass'")?;
    // Direct: the new password works.
    mysql_async::Conn::new(opts(b.servers()[0].addr(), LOADED_USER, "new-pass"))
        .await?
        .disconnect()
        .await?;
    // Through the proxy, give it more than the reload interval.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut last = None;
    for _ in 0..3 {
        match mysql_async::Conn::new(b.opts_as(LOADED_USER, "new-pass")).await {
            Ok(c) => {
                c.disconnect().await?;
                return Ok(());
            }
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(2500)).await;
    }
    bail!("new password refused through the proxy: {last:?}")
}

/// Several clients logging in at once as a user created after the last
/// account load (a pool starting up): they share one reload, and none is
/// refused for arriving while it runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_logins_of_a_new_user() -> Result<()> {
    let b = config("").service_account().start()?;
    b.servers()[0].sql(
        "CREATE USER 'fresh'@'%' IDENTIFIED BY 'fresh-pass'; GRANT ALL ON test.* TO 'fresh'@'%';",
    )?;
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let o = b.opts_as("fresh", "fresh-pass");
        tasks.push(tokio::spawn(async move {
            match mysql_async::Conn::new(o).await {
                Ok(c) => {
                    let _ = c.disconnect().await;
                    Ok(())
                }
                Err(e) => Err(e.to_string()),
            }
        }));
    }
    let mut failures = Vec::new();
    for t in tasks {
        if let Err(e) = t.await? {
            failures.push(e);
        }
    }
    assert!(
        failures.is_empty(),
        "{} of 8 refused: {failures:?}",
        failures.len()
    );
    Ok(())
}

/// Prepare + close in a loop on one long-lived connection (what pools with
/// server-side prepared statements and no statement cache do). The relay's
/// statement registry inserts on every PREPARE_OK and never removes on
/// COM_STMT_CLOSE / COM_RESET_CONNECTION, so the daemon grows without bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepare_close_loop_does_not_grow_memory() -> Result<()> {
    let b = setup(1, "")?;
    let o = b.opts().stmt_cache_size(0);
    let mut c = mysql_async::Conn::new(o).await?;
    let pad = "x".repeat(4000);
    // Warm up allocator pools.
    for i in 0..500 {
        let st = c.prep(format!("SELECT ? + {i} /* {pad} */")).await?;
        let _: Option<i64> = c.exec_first(&st, (1,)).await?;
        c.close(st).await?;
    }
    let before = b.daemon.rss_kib()?;
    let n = 20_000;
    for i in 0..n {
        let st = c.prep(format!("SELECT ? + {i} /* {pad} */")).await?;
        let _: Option<i64> = c.exec_first(&st, (1,)).await?;
        c.close(st).await?;
    }
    let after = b.daemon.rss_kib()?;
    let grown_mib = (after.saturating_sub(before)) / 1024;
    println!("RSS {before} kB -> {after} kB after {n} prepare/execute/close");
    // 20k x 4 KB = ~80 MiB if every statement is kept.
    assert!(grown_mib < 20, "daemon RSS grew by {grown_mib} MiB");
    Ok(())
}

fn cli(addr: SocketAddr, args: &[&str], stdin: &str) -> Result<(bool, String, String)> {
    use std::process::{Command, Stdio};
    let mut child = Command::new("mariadb")
        .args(["--no-defaults", "--skip-ssl", "-h127.0.0.1"])
        .arg(format!("-P{}", addr.port()))
        .arg(format!("-u{APP_USER}"))
        .arg(format!("-p{APP_PASSWORD}"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(stdin.as_bytes())?;
    let out = child.wait_with_output()?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// MariaDB's extended capabilities reach clients: libmariadb negotiates
/// extended metadata, so the CLI shows a JSON column as
/// `VAR_STRING (format=json)` — through the redirector exactly as directly
/// (the redirector used to offer none, and drivers lost the JSON type).
#[test]
fn mariadb_extended_capabilities_pass_through() -> Result<()> {
    let b = setup(1, "")?;
    let sql = "SELECT JSON_OBJECT('a', 1) AS j, ST_GeomFromText('POINT(1 1)') AS g;\n\
               SELECT JSON_ARRAY(1, 2) AS a;\nSELECT JSON_ARRAY(1, 2) AS a;\n";
    let mut outputs = Vec::new();
    for (what, addr) in [("direct", b.servers()[0].addr()), ("proxy", b.addr())] {
        let (ok, out, err) = cli(addr, &["--column-type-info", "-t"], sql)?;
        assert!(ok, "{what}: {err}");
        outputs.push(out);
    }
    assert!(outputs[0].contains("(format=json)"), "direct:\n{}", outputs[0]);
    assert_eq!(outputs[1], outputs[0], "proxy (left) vs direct (right)");
    Ok(())
}

/// The mariadb CLI: USE, reconnect (`connect` / `\r`), USE of a missing
/// database, CONNECT_WITH_DB to a missing database; output compared with
/// the same commands sent directly to MariaDB.
#[test]
fn mariadb_cli_use_and_reconnect() -> Result<()> {
    let b = setup(1, "")?;
    let direct = b.servers()[0].addr();
    let cases: [(&[&str], &str); 4] = [
        (&["-N", "-B", "-e", "USE test; SELECT DATABASE()"], ""),
        (
            &["-N", "-B", "test"],
            "SELECT DATABASE();\n\\r\nSELECT DATABASE(), 1;\nconnect mysql\nSELECT DATABASE();\n",
        ),
        (&["-N", "-B"], "USE no_such_db;\n"),
        (&["-N", "-B", "no_such_db"], "SELECT 1;\n"),
    ];
    for (args, input) in cases {
        let d = cli(direct, args, input)?;
        let p = cli(b.addr(), args, input)?;
        println!("{args:?}\n direct: {d:?}\n proxy:  {p:?}");
        assert_eq!(d.0, p.0, "{args:?} exit status");
        assert_eq!(d.1, p.1, "{args:?} stdout");
        assert_eq!(
            d.2.replace(&direct.port().to_string(), "PORT"),
            p.2.replace(&b.addr().port().to_string(), "PORT"),
            "{args:?} stderr"
        );
    }
    Ok(())
}

/// sysbench oltp_point_select, --db-ps-mode=auto, 64 threads, 10 s.
#[test]
fn sysbench_point_select_64_threads() -> Result<()> {
    let b = setup(1, "")?;
    b.servers()[0].sql("SET GLOBAL max_connections = 500")?;
    let sb = Sysbench::new("oltp_point_select")
        .tables(4)
        .table_size(10_000)
        .threads(64)
        .seconds(10)
        .ps_mode("auto");
    let direct = b.servers()[0].addr();
    sb.prepare(direct)?;
    for (what, addr) in [("direct", direct), ("proxy", b.addr())] {
        let report = sb.run(addr).with_context(|| what.to_string())?;
        println!(
            "{what}: {} | {} | {} | 95th {}",
            report.line("queries:"),
            report.line("ignored errors:"),
            report.line("reconnects:"),
            report.line("95th percentile:")
        );
        assert!(
            report.line("ignored errors:").contains(" 0 "),
            "{what}: {}",
            report.stdout
        );
    }
    tokio::runtime::Runtime::new()?.block_on(b.assert_kernel_carried())
}

/// A slow TLS reader: `mariadb --quick` (row by row) piped into a consumer
/// that sleeps first, so the proxy's TLS writes hit a full socket. The tail
/// of the result must not stay in rustls' buffer.
#[test]
fn tls_slow_reader_gets_the_whole_result() -> Result<()> {
    use std::process::{Command, Stdio};
    let tls = TlsCert::self_signed()?;
    let b = setup(1, &tls.toml())?;
    let mut hung = Vec::new();
    for (i, rows) in [20_000u32, 7_777, 33_333, 50_001, 12_345]
        .into_iter()
        .enumerate()
    {
        let script = format!(
            "timeout 20 mariadb --no-defaults --ssl --skip-ssl-verify-server-cert -h127.0.0.1 -P{} -u{APP_USER} -p{APP_PASSWORD} --quick -N -B \
             -e \"SELECT seq, REPEAT('a', 1000) FROM test.seq_1_to_{rows}\" | python3 -c 'import sys,time\nn=0\nfor l in sys.stdin:\n  n+=1\n  if n % 200 == 0: time.sleep(0.01)\nprint(n)'; echo \"status ${{PIPESTATUS[0]}}\"",
            b.addr().port()
        );
        let out = Command::new("bash")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        println!(
            "run {i}: {rows} rows -> {} / {}",
            text.replace('\n', " "),
            String::from_utf8_lossy(&out.stderr)
        );
        if !text.contains("status 0") || !text.contains(&rows.to_string()) {
            hung.push(format!("{rows} rows: {text}"));
        }
    }
    assert!(hung.is_empty(), "TLS results cut or hung: {hung:?}");
    Ok(())
}

/// The error code of a failed statement (0 when it succeeded).
async fn error_of(c: &mut mysql_async::Conn, sql: &str) -> (u16, String) {
    match c.query_drop(sql).await {
        Ok(()) => (0, String::new()),
        Err(mysql_async::Error::Server(e)) => (e.code, e.message),
        Err(e) => (2013, e.to_string()),
    }
}

/// Whether a session still answers.
async fn alive(c: &mut mysql_async::Conn) -> bool {
    c.query_first::<i64, _>("SELECT 1").await.ok().flatten() == Some(1)
}

/// A client kills its own thread id (the greeting's, as pools do) and only
/// itself dies, even when that number is another client's backend thread
/// id on the same server — which the redirector passed on unchanged before,
/// killing that other client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_own_thread_id_kills_only_itself() -> Result<()> {
    let b = setup(1, "")?;
    // Sessions until one's greeting id is another's backend thread id.
    let mut sessions: Vec<(u64, u64, mysql_async::Conn)> = Vec::new();
    let (killer, victim) = loop {
        anyhow::ensure!(sessions.len() < 60, "no id collision in 60 sessions");
        let mut c = b.conn().await?;
        let backend: u64 = c.query_first("SELECT CONNECTION_ID()").await?.context("id")?;
        let id = session_id(&c);
        sessions.push((id, backend, c));
        let me = sessions.len() - 1;
        if let Some(v) = sessions.iter().position(|s| s.1 == id) {
            if v != me {
                break (me, v);
            }
        }
    };
    let killer_id = sessions[killer].0;
    println!(
        "killer: session {killer_id} (backend {}), victim: session {} (backend {})",
        sessions[killer].1, sessions[victim].0, sessions[victim].1
    );
    // KILL QUERY of itself interrupts the KILL, as directly (1317).
    let k = &mut sessions[killer].2;
    assert_eq!(error_of(k, &format!("KILL QUERY {killer_id}")).await.0, 1317);
    assert!(alive(k).await, "KILL QUERY ended the session");
    // Unknown ids and expressions: clear errors, the session goes on.
    let (code, msg) = error_of(k, "KILL 987654").await;
    assert_eq!((code, msg.as_str()), (1094, "Unknown thread id: 987654"));
    assert_eq!(error_of(k, "KILL @some_id").await.0, 1235);
    assert!(alive(k).await);
    // KILL of itself: the server's 1927, then the connection is gone.
    let (code, _) = error_of(k, &format!("KILL {killer_id}")).await;
    assert!(matches!(code, 1927 | 2013), "KILL answered {code}");
    assert!(!alive(k).await, "the killer survived its own KILL");
    for (i, (id, _, c)) in sessions.iter_mut().enumerate() {
        if i != killer {
            assert!(alive(c).await, "session {id} died with the killer's KILL");
        }
    }
    // KILL CONNECTION_ID() and COM_PROCESS_KILL of itself.
    let mut c = b.conn().await?;
    let (code, _) = error_of(&mut c, "KILL CONNECTION_ID()").await;
    assert!(matches!(code, 1927 | 2013), "KILL CONNECTION_ID() answered {code}");
    assert!(!alive(&mut c).await);
    let mut r = raw_login(b.addr(), APP_USER, APP_PASSWORD, FULL, Some(TEST_DB), None)?
        .map_err(|e| anyhow::anyhow!("login {}", err_text(&e)))?;
    let mut other = b.conn().await?;
    let other_id = u32::try_from(session_id(&other))?;
    let mut kill = vec![0x0cu8];
    kill.extend_from_slice(&other_id.to_le_bytes());
    r.s.write_all(&packet(0, &kill))?;
    let (_, reply) = read_packet(&mut r.s)?;
    assert_eq!(<[u8]>::first(&reply), Some(&0x00), "COM_PROCESS_KILL: {}", err_text(&reply));
    assert!(!alive(&mut other).await, "COM_PROCESS_KILL did not kill its target");
    assert_eq!(r.one("SELECT 'killer alive'")?.as_deref(), Some("killer alive"));
    Ok(())
}

/// After a move the ids still mean the same sessions: a client kills
/// another client (on the other server) by its greeting id, and kills
/// itself by its greeting id or by what `CONNECTION_ID()` returned before
/// the move.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_after_a_move_names_the_same_sessions() -> Result<()> {
    let b = config("").servers(2).round_robin().start()?;
    let (mut a, a_server) = b.conn_on().await?;
    let mut bystander = b.conn().await?;
    let (mut target, target_server) = loop {
        let (c, s) = b.conn_on().await?;
        if s != a_server {
            break (c, s);
        }
    };
    let a_id = session_id(&a);
    let a_backend_before: u64 = a.query_first("SELECT CONNECTION_ID()").await?.context("id")?;
    // Move `a` to the other server.
    let (status, body) = b
        .http
        .post(
            "/v1/sessions/move",
            serde_json::json!({"sessions": [a_id], "to": target_server, "wait_timeout_s": 5}),
        )
        .await?;
    anyhow::ensure!(status == 200, "move: {body}");
    anyhow::ensure!(b.server_of(&mut a).await? == target_server, "not moved");
    // `a` and `target` now share a server; move `target` away so the KILL
    // has to reach another server.
    let (status, body) = b
        .http
        .post(
            "/v1/sessions/move",
            serde_json::json!({"sessions": [session_id(&target)], "to": a_server, "wait_timeout_s": 5}),
        )
        .await?;
    anyhow::ensure!(status == 200, "move: {body}");
    let (code, msg) = error_of(&mut a, &format!("KILL {}", session_id(&target))).await;
    assert_eq!(code, 0, "KILL of a session on another server: {msg}");
    assert!(!alive(&mut target).await, "the target survived");
    assert!(alive(&mut a).await && alive(&mut bystander).await);
    // Its backend id from before the move still names itself.
    let (code, _) = error_of(&mut a, &format!("KILL QUERY {a_backend_before}")).await;
    assert_eq!(code, 1317, "KILL QUERY of its pre-move CONNECTION_ID()");
    assert!(alive(&mut a).await);
    let (code, _) = error_of(&mut a, &format!("KILL {a_id}")).await;
    assert!(matches!(code, 1927 | 2013), "KILL of itself answered {code}");
    assert!(!alive(&mut a).await);
    assert!(alive(&mut bystander).await, "a bystander died");
    Ok(())
}
