//! Runs the real `redirector` binary for integration tests.

use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::MariaDb;

/// The daemon binary: `$REDIRECTOR_BIN` (set by `cargo xtask test`), else
/// `target/release/redirector`, else `target/debug/redirector`.
///
/// Tests cannot build it themselves: `cargo test` holds the build lock.
pub fn redirector_bin() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("REDIRECTOR_BIN") {
        return Ok(PathBuf::from(p));
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    for profile in ["release", "debug"] {
        let p = root.join("target").join(profile).join("redirector");
        if p.exists() {
            return Ok(p);
        }
    }
    bail!("redirector binary not found: run `cargo xtask build` (or `cargo build --release -p redirector`) first, or set REDIRECTOR_BIN")
}

/// A free loopback port (bound and released; good enough on a test machine).
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// `n` distinct free loopback ports: all are bound at once before being
/// released, so one call never returns the same port twice (separate
/// [`free_port`] calls can).
pub fn free_ports(n: usize) -> Result<Vec<u16>> {
    let held = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()?;
    held.iter().map(|l| Ok(l.local_addr()?.port())).collect()
}

/// `[[auth.users]]` for the test bed's `app` (password) and `hashonly`
/// (hash only) accounts.
pub fn app_users_toml() -> String {
    format!(
        "[[auth.users]]\nname = \"{}\"\npassword = \"{}\"\n\n\
         [[auth.users]]\nname = \"{}\"\npassword_hash = \"{}\"\n\n",
        crate::APP_USER,
        crate::APP_PASSWORD,
        crate::HASHONLY_USER,
        crate::native_password_hash(crate::HASHONLY_PASSWORD)
    )
}

/// An `[admin]` section on free loopback ports.
pub fn admin_toml() -> Result<String> {
    let p = free_ports(2)?;
    Ok(format!(
        "[admin]\nsql_address = \"127.0.0.1:{}\"\nhttp_address = \"127.0.0.1:{}\"\n\n",
        p[0], p[1]
    ))
}

/// The `[[servers]]` entries for a set of test-bed servers.
pub fn servers_toml(servers: &[&MariaDb]) -> String {
    servers
        .iter()
        .map(|s| {
            format!(
                "[[servers]]\nname = \"{}\"\naddress = \"{}\"\nweight = 10\n\n",
                s.name,
                s.addr()
            )
        })
        .collect()
}

/// `[datapath] mode`: how sessions are carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Datapath {
    /// The userspace relay.
    Userspace,
    /// The kernel session path (needs root).
    Ebpf,
    /// The daemon picks.
    Auto,
}

impl Datapath {
    /// The mode for tests that do not choose one: `$REDIRECTOR_TEST_DATAPATH`
    /// (to run the whole suite in another mode), else userspace.
    pub fn from_env() -> Result<Datapath> {
        match std::env::var("REDIRECTOR_TEST_DATAPATH") {
            Err(_) => Ok(Datapath::Userspace),
            Ok(v) => Datapath::parse(&v),
        }
    }

    /// `userspace`, `ebpf` or `auto`, as in the configuration.
    pub fn parse(text: &str) -> Result<Datapath> {
        match text {
            "userspace" => Ok(Datapath::Userspace),
            "ebpf" => Ok(Datapath::Ebpf),
            "auto" => Ok(Datapath::Auto),
            other => bail!("unknown data path mode {other:?} (userspace, ebpf, auto)"),
        }
    }

    /// The configuration's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Datapath::Userspace => "userspace",
            Datapath::Ebpf => "ebpf",
            Datapath::Auto => "auto",
        }
    }
}

/// A running daemon, killed on drop.
pub struct Redirector {
    child: Child,
    pub addr: SocketAddr,
    pub dir: PathBuf,
    log: PathBuf,
    admin_sql: SocketAddr,
    admin_http: SocketAddr,
}

/// The address `key = "…"` in a configuration text, else `default` (the
/// daemon's own defaults; the test configurations write addresses on one
/// line each).
fn config_address(config: &str, key: &str, default: &str) -> Result<SocketAddr> {
    let value = config.lines().find_map(|l| {
        let (k, v) = l.split_once('=')?;
        (k.trim() == key).then(|| v.trim().trim_matches('"').to_string())
    });
    let text = value.as_deref().unwrap_or(default);
    text.parse()
        .with_context(|| format!("{key} = {text:?} in the test configuration"))
}

impl Redirector {
    /// Starts the daemon with `body` as the configuration, with `[listen]`
    /// added (a free port) unless `body` has one; in a `[listen]` of its
    /// own, `{listen}` stands for the free address. Waits until it accepts.
    pub fn start(body: &str) -> Result<Self> {
        let mut r = Self::spawn(body)?;
        // The daemon listens on the client port last; the admin ports are
        // waited for too, for daemons that do not.
        r.wait_listening(r.addr, Duration::from_secs(20))?;
        r.wait_listening(r.admin_sql, Duration::from_secs(20))?;
        r.wait_listening(r.admin_http, Duration::from_secs(20))?;
        Ok(r)
    }

    /// [`Redirector::start`] without waiting for anything.
    pub fn spawn(body: &str) -> Result<Self> {
        // Not a port the caller's configuration (or our [admin]) uses.
        let admin = admin_toml()?;
        let mut port = free_port()?;
        while body.contains(&format!(":{port}\"")) || admin.contains(&format!(":{port}\"")) {
            port = free_port()?;
        }
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let mut config = String::new();
        if !body.contains("[listen]") {
            config.push_str(&format!("[listen]\naddress = \"{addr}\"\n\n"));
        }
        // The userspace relay unless the test chooses (or
        // REDIRECTOR_TEST_DATAPATH names a mode for every test).
        if !body.contains("[datapath]") {
            let mode = Datapath::from_env()?;
            config.push_str(&format!("[datapath]\nmode = \"{}\"\n\n", mode.as_str()));
        }
        // Tests run in parallel: never the default admin ports.
        if !body.contains("[admin]") {
            config.push_str(&admin);
        }
        config.push_str(&body.replace("{listen}", &addr.to_string()));
        let dir =
            std::env::temp_dir().join(format!("redirector-test-{}-{}", std::process::id(), port));
        std::fs::create_dir_all(&dir)?;
        let config_path = dir.join("redirector.toml");
        std::fs::write(&config_path, &config)?;
        let log = dir.join("redirector.log");
        let child = Command::new(redirector_bin()?)
            .args(["run", "--config"])
            .arg(&config_path)
            .env(
                "RUST_LOG",
                std::env::var("REDIRECTOR_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("starting redirector")?;
        Ok(Redirector {
            child,
            addr,
            dir,
            log,
            admin_sql: config_address(&config, "sql_address", "127.0.0.1:6033")?,
            admin_http: config_address(&config, "http_address", "127.0.0.1:9104")?,
        })
    }

    /// The first connection the client port accepts (tried every 2 ms), or
    /// an error after `timeout` or if the daemon exits.
    pub fn first_connection(&mut self, timeout: Duration) -> Result<TcpStream> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "redirector exited ({status}) before listening:\n{}",
                    self.log()
                );
            }
            if let Ok(s) = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)) {
                return Ok(s);
            }
            if start.elapsed() > timeout {
                bail!(
                    "redirector did not listen on {} within {timeout:?}:\n{}",
                    self.addr,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn wait_listening(&mut self, addr: SocketAddr, timeout: Duration) -> Result<()> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "redirector exited ({status}) before listening:\n{}",
                    self.log()
                );
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if start.elapsed() > timeout {
                bail!(
                    "redirector did not listen on {addr} within {timeout:?}:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The admin SQL address (`admin.sql_address`).
    pub fn admin_sql_addr(&self) -> SocketAddr {
        self.admin_sql
    }

    /// The REST API address (`admin.http_address`).
    pub fn admin_http_addr(&self) -> SocketAddr {
        self.admin_http
    }

    /// The daemon's log so far (stderr).
    pub fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Voluntary context switches of all the daemon's threads so far: each
    /// is a thread going to sleep, to be woken again.
    pub fn sleeps(&self) -> Result<u64> {
        let mut total = 0;
        for task in std::fs::read_dir(format!("/proc/{}/task", self.pid()))? {
            let Ok(status) = std::fs::read_to_string(task?.path().join("status")) else {
                continue; // the thread ended
            };
            total += status
                .lines()
                .filter_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
                .filter_map(|v| v.trim().parse::<u64>().ok())
                .sum::<u64>();
        }
        Ok(total)
    }

    /// The daemon's resident memory (VmRSS), in KiB.
    pub fn rss_kib(&self) -> Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .ok_or_else(|| anyhow::anyhow!("no VmRSS for the daemon"))
    }

    /// The daemon's resident memory by kind (`RssAnon`, `RssFile`,
    /// `RssShmem` from /proc), for messages.
    pub fn rss_breakdown(&self) -> String {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .filter(|l| l.starts_with("Rss"))
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Is the process still running?
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGTERM and wait (graceful stop); returns the exit status.
    pub fn terminate(&mut self) -> Result<std::process::ExitStatus> {
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let start = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait()? {
                return Ok(s);
            }
            if start.elapsed() > Duration::from_secs(15) {
                let _ = self.child.kill();
                bail!("redirector did not stop within 15 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `mysql://user:pass@addr/db` for mysql_async.
    pub fn url(&self, user: &str, password: &str, db: &str) -> String {
        format!("mysql://{user}:{password}@{}/{db}", self.addr)
    }
}

impl Drop for Redirector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Tests that fail with Err (no panic) show the log on request.
        if std::thread::panicking() || std::env::var_os("REDIRECTOR_TEST_SHOW_LOG").is_some() {
            eprintln!("---- redirector log ({}) ----\n{}", self.addr, self.log());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
