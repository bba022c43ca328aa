//! The test bed itself: servers start fast, are independent, carry the accounts
//! the other tests rely on, and leave nothing behind.

use std::collections::HashSet;
use std::time::Duration;

use redirector_tests::{
    cli_query, cli_query_db, mariadbd_pids_matching, native_password_hash, TestBed, APP_PASSWORD,
    APP_USER, HASHONLY_PASSWORD, HASHONLY_USER, LOADED_PASSWORD, LOADED_USER, SVC_PASSWORD,
    SVC_USER, TEST_DB,
};

#[test]
fn three_servers_start_in_parallel_with_accounts_and_clean_up() -> anyhow::Result<()> {
    let bed = TestBed::start(3)?;
    let took = bed.startup_duration();
    println!(
        "3 servers up in {took:?} (root {})",
        bed.root_dir().display()
    );
    assert!(took < Duration::from_secs(15), "start took {took:?}");
    assert_eq!(bed.servers().len(), 3);

    let mut ids = HashSet::new();
    let mut ports = HashSet::new();
    for (i, db) in bed.servers().iter().enumerate() {
        assert_eq!(db.name, format!("db{}", i + 1));
        let out = cli_query(
            db.addr(),
            APP_USER,
            APP_PASSWORD,
            "SELECT @@server_id, @@port",
        )?;
        let fields: Vec<&str> = out.trim().split('\t').collect();
        assert_eq!(fields.len(), 2, "unexpected output {out:?}");
        assert_eq!(fields[0].parse::<u32>()?, db.server_id);
        assert_eq!(fields[1].parse::<u16>()?, db.port);
        ids.insert(db.server_id);
        ports.insert(db.port);

        // Anonymous accounts would shadow 'u'@'%' for logins from localhost.
        let anon = db.sql("SELECT COUNT(*) FROM mysql.user WHERE user = ''")?;
        assert_eq!(anon.trim(), "0");

        let stored =
            db.sql("SELECT authentication_string FROM mysql.user WHERE user = 'hashonly'")?;
        assert_eq!(stored.trim(), native_password_hash(HASHONLY_PASSWORD));
        let server_hash = db.sql("SELECT PASSWORD('app-pass')")?;
        assert_eq!(server_hash.trim(), native_password_hash(APP_PASSWORD));

        // Every account logs in over TCP; the service account can read accounts
        // and holds the privileges to see and kill other users' sessions.
        for (user, pw) in [
            (HASHONLY_USER, HASHONLY_PASSWORD),
            (LOADED_USER, LOADED_PASSWORD),
            (SVC_USER, SVC_PASSWORD),
        ] {
            assert_eq!(
                db.sql_as(user, pw, "SELECT CURRENT_USER()")?.trim(),
                format!("{user}@%")
            );
        }
        let users = db.sql_as(
            SVC_USER,
            SVC_PASSWORD,
            "SELECT COUNT(*) FROM mysql.user WHERE user IN ('app','hashonly','loaded')",
        )?;
        assert_eq!(users.trim(), "3");
        let grants = db.sql_as(SVC_USER, SVC_PASSWORD, "SHOW GRANTS")?;
        assert!(
            grants.contains("PROCESS") && grants.contains("CONNECTION ADMIN"),
            "{grants}"
        );

        // The `test` database exists and is usable.
        let out = cli_query_db(
            db.addr(),
            APP_USER,
            APP_PASSWORD,
            Some(TEST_DB),
            "CREATE TABLE t (id INT PRIMARY KEY); INSERT INTO t VALUES (1), (2); SELECT SUM(id) FROM t",
        )?;
        assert_eq!(out.trim(), "3");
    }
    assert_eq!(ids.len(), 3, "server ids must differ");
    assert_eq!(ports.len(), 3, "ports must differ");

    let root = bed.root_dir().to_path_buf();
    let needle = root.display().to_string();
    assert_eq!(mariadbd_pids_matching(&needle).len(), 3);
    drop(bed);
    assert!(
        mariadbd_pids_matching(&needle).is_empty(),
        "mariadbd left running"
    );
    assert!(!root.exists(), "{} left behind", root.display());
    Ok(())
}

#[test]
fn killed_server_restarts_with_its_data_on_the_same_port() -> anyhow::Result<()> {
    let bed = TestBed::start(1)?;
    let db = &bed[0];
    let port = db.port;
    db.sql("CREATE TABLE test.k (v INT); INSERT INTO test.k VALUES (42)")?;

    db.kill()?;
    assert!(!db.is_running());
    assert!(cli_query(db.addr(), APP_USER, APP_PASSWORD, "SELECT 1").is_err());

    db.restart()?;
    assert_eq!(db.port, port);
    assert_eq!(
        db.sql_as(APP_USER, APP_PASSWORD, "SELECT v FROM test.k")?
            .trim(),
        "42"
    );

    // An orderly stop, then a start.
    db.stop()?;
    assert!(!db.is_running());
    db.start()?;
    assert!(db.is_running());
    Ok(())
}

#[test]
fn beds_started_concurrently_are_independent() -> anyhow::Result<()> {
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| TestBed::start(2));
        let b = s.spawn(|| TestBed::start(2));
        (a.join(), b.join())
    });
    let (Ok(a), Ok(b)) = (a, b) else {
        anyhow::bail!("start thread panicked");
    };
    let (mut a, b) = (a?, b?);
    assert_ne!(a.root_dir(), b.root_dir());
    let mut ports: Vec<u16> = a
        .servers()
        .iter()
        .chain(b.servers())
        .map(|s| s.port)
        .collect();
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports.len(), 4);

    let added = a.add_server()?;
    assert_eq!(added.name, "db3");
    assert_eq!(
        added
            .sql_as(APP_USER, APP_PASSWORD, "SELECT @@server_id")?
            .trim(),
        "3"
    );
    Ok(())
}

#[test]
fn galera_row_written_on_node1_is_visible_on_node3() -> anyhow::Result<()> {
    let cluster = redirector_tests::GaleraCluster::start(3)?;
    println!("galera: 3 nodes up in {:?}", cluster.startup_duration());
    let root = cluster.root_dir().to_path_buf();
    for node in cluster.nodes() {
        assert_eq!(
            node.sql("SHOW STATUS LIKE 'wsrep_cluster_size'")?.trim(),
            "wsrep_cluster_size\t3"
        );
    }
    cluster[0].sql_as(
        APP_USER,
        APP_PASSWORD,
        "CREATE TABLE test.ledger (id INT PRIMARY KEY, amount INT); \
         INSERT INTO test.ledger VALUES (1, 100)",
    )?;
    // Galera replication is synchronous at commit, but applying on the other
    // nodes is not: wait_causal_reads makes the read wait for it.
    let seen = cluster[2].sql_as(
        APP_USER,
        APP_PASSWORD,
        "SET SESSION wsrep_sync_wait = 1; SELECT amount FROM test.ledger WHERE id = 1",
    )?;
    assert_eq!(seen.trim(), "100");

    // A restarted first node rejoins the running cluster instead of founding a
    // second one, and catches up on what it missed.
    cluster[0].stop()?;
    cluster[1].sql("INSERT INTO test.ledger VALUES (2, 200)")?;
    cluster[0].restart()?;
    let sum = cluster[0].sql(
        "SET SESSION wsrep_sync_wait = 1; SELECT SUM(amount) FROM test.ledger; \
         SHOW STATUS LIKE 'wsrep_cluster_size'",
    )?;
    assert_eq!(sum.trim(), "300\nwsrep_cluster_size\t3");
    drop(cluster);
    assert!(mariadbd_pids_matching(&root.display().to_string()).is_empty());
    assert!(!root.exists());
    Ok(())
}
