//! Running SQL through the `mariadb` command-line client (keeps the library free
//! of a MySQL driver; the CLI is also an independent, real client for tests).

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::error::{Result, TestBedError};

/// Runs `sql` (one or more statements) over TCP at `addr` as `user` and returns
/// the batch-mode output (`-N -B`: no headers, tab-separated, one row a line).
pub fn cli_query(addr: SocketAddr, user: &str, password: &str, sql: &str) -> Result<String> {
    cli_query_db(addr, user, password, None, sql)
}

/// Like [`cli_query`], with a default database (`"test"` or `Some("test")`;
/// `None` for none).
pub fn cli_query_db<'a>(
    addr: SocketAddr,
    user: &str,
    password: &str,
    database: impl Into<Option<&'a str>>,
    sql: &str,
) -> Result<String> {
    let mut cmd = base_command();
    cmd.arg("--protocol=TCP")
        .arg(format!("--host={}", addr.ip()))
        .arg(format!("--port={}", addr.port()))
        .arg(format!("--user={user}"))
        .arg(format!("--password={password}"));
    if let Some(db) = database.into() {
        cmd.arg(format!("--database={db}"));
    }
    run(cmd, &format!("{user}@{addr}"), sql)
}

/// Runs `sql` as root over the server's unix socket.
pub(crate) fn socket_query(socket: &Path, sql: &str) -> Result<String> {
    let mut cmd = base_command();
    cmd.arg("--protocol=SOCKET")
        .arg(format!("--socket={}", socket.display()))
        .arg(format!("--user={}", crate::ROOT_USER));
    run(cmd, &format!("root@{}", socket.display()), sql)
}

fn base_command() -> Command {
    let mut cmd = Command::new("mariadb");
    // --no-defaults: no ~/.my.cnf surprises; --skip-ssl: servers run without TLS
    // and the redirector does not offer it.
    cmd.args([
        "--no-defaults",
        "--skip-ssl",
        "--batch",
        "--skip-column-names",
        "--connect-timeout=5",
    ]);
    cmd
}

fn run(mut cmd: Command, target: &str, sql: &str) -> Result<String> {
    // SQL goes through stdin: no argument-length limit, no quoting issues.
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| TestBedError::io("running the `mariadb` client", e))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A client that exits early (bad login) closes the pipe: the exit status
        // below carries the real error, so a write failure here is not reported.
        let _ = stdin.write_all(sql.as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|e| TestBedError::io("waiting for the `mariadb` client", e))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(TestBedError::Sql {
            target: target.to_string(),
            sql: sql.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}
