//! One `mariadbd` ([`MariaDb`]) and a set of independent ones ([`TestBed`]).

use std::fs;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, Once};
use std::time::{Duration, Instant};

use crate::cli::{cli_query, socket_query};
use crate::error::{Result, TestBedError};
use crate::procs::remove_stale_dirs;
use crate::spawn::{server_credentials, spawn_tied_to_process};
use crate::template::{copy_tree, mariadbd_binary, template_datadir, INNODB_ARGS};
use crate::{APP_PASSWORD, APP_USER, DIR_PREFIX};

/// How long a server may take to accept a login.
pub(crate) const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long an orderly shutdown may take before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts with a fresh port when another process grabbed ours first.
const PORT_ATTEMPTS: usize = 5;

/// One running (or stopped) `mariadbd`. Stopped on drop.
#[derive(Debug)]
pub struct MariaDb {
    /// "db1", "db2", … (the name the redirector's config uses).
    pub name: String,
    /// TCP port on 127.0.0.1.
    pub port: u16,
    /// Unix socket; root logs in here without a password.
    pub socket_path: PathBuf,
    pub datadir: PathBuf,
    pub server_id: u32,
    /// Directory holding the datadir, socket, pid file and error log.
    pub dir: PathBuf,
    pub error_log: PathBuf,
    extra_args: Vec<String>,
    /// Only for the very first start (Galera's `--wsrep-new-cluster`: a restarted
    /// node must rejoin, not found a second cluster).
    first_start_args: Vec<String>,
    launched: AtomicBool,
    creds: Option<(u32, u32)>,
    child: Mutex<Option<Child>>,
}

impl MariaDb {
    /// Address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, self.port))
    }

    /// Runs `sql` as root over the unix socket; batch output (`-N -B`).
    pub fn sql(&self, sql: &str) -> Result<String> {
        socket_query(&self.socket_path, sql)
    }

    /// Runs `sql` over TCP as `user`; batch output (`-N -B`).
    pub fn sql_as(&self, user: &str, password: &str, sql: &str) -> Result<String> {
        cli_query(self.addr(), user, password, sql)
    }

    /// PID of the server process, if it is running.
    pub fn pid(&self) -> Option<u32> {
        let mut guard = self.lock_child();
        let child = guard.as_mut()?;
        match child.try_wait() {
            Ok(None) => Some(child.id()),
            _ => None,
        }
    }

    pub fn is_running(&self) -> bool {
        self.pid().is_some()
    }

    /// Orderly shutdown: SIGTERM, up to 10 s, then SIGKILL. No-op if stopped.
    pub fn stop(&self) -> Result<()> {
        self.begin_stop();
        self.finish_stop(Instant::now() + STOP_TIMEOUT)
    }

    /// SIGKILL (the server's whole process group) without a shutdown, for failure tests.
    pub fn kill(&self) -> Result<()> {
        let mut guard = self.lock_child();
        if let Some(mut child) = guard.take() {
            signal_group(child.id(), libc::SIGKILL);
            child
                .wait()
                .map_err(|e| TestBedError::io(format!("waiting for {}", self.name), e))?;
        }
        Ok(())
    }

    /// Stops the server if it runs, then starts it again on the same port and
    /// data directory and waits until it accepts logins.
    pub fn restart(&self) -> Result<()> {
        self.stop()?;
        self.launch()?;
        self.wait_ready(READY_TIMEOUT)
    }

    /// Starts a server that was stopped or killed (same as [`MariaDb::restart`]).
    pub fn start(&self) -> Result<()> {
        self.restart()
    }

    /// Last `lines` lines of the server's error log.
    pub fn error_log_tail(&self, lines: usize) -> String {
        let text = fs::read_to_string(&self.error_log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    // ---- internals shared with the Galera cluster ----

    pub(crate) fn new(
        name: String,
        dir: PathBuf,
        server_id: u32,
        port: u16,
        extra_args: Vec<String>,
    ) -> Self {
        MariaDb {
            name,
            port,
            socket_path: dir.join("mysqld.sock"),
            datadir: dir.join("data"),
            server_id,
            error_log: dir.join("error.log"),
            dir,
            extra_args,
            first_start_args: Vec::new(),
            launched: AtomicBool::new(false),
            creds: server_credentials(),
            child: Mutex::new(None),
        }
    }

    pub(crate) fn with_first_start_args(mut self, args: Vec<String>) -> Self {
        self.first_start_args = args;
        self
    }

    /// Creates the server directory from the template data directory.
    pub(crate) fn prepare_dir(&self, template: &Path) -> Result<()> {
        fs::create_dir_all(&self.dir)
            .map_err(|e| TestBedError::io(format!("creating {}", self.dir.display()), e))?;
        chown_to(&self.dir, self.creds)?;
        let tmp = self.dir.join("tmp");
        fs::create_dir_all(&tmp)
            .map_err(|e| TestBedError::io(format!("creating {}", tmp.display()), e))?;
        chown_to(&tmp, self.creds)?;
        copy_tree(template, &self.datadir)
    }

    fn lock_child(&self) -> MutexGuard<'_, Option<Child>> {
        // A panic while holding the lock leaves the Option consistent.
        self.child.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn args(&self) -> Vec<String> {
        let d = |p: &Path| p.display().to_string();
        let mut args = vec![
            // Must be first: nothing from /etc/mysql may leak in.
            "--no-defaults".to_string(),
            format!("--datadir={}", d(&self.datadir)),
            format!("--socket={}", d(&self.socket_path)),
            format!("--pid-file={}", d(&self.dir.join("mysqld.pid"))),
            format!("--log-error={}", d(&self.error_log)),
            // Own temporary directory: servers sharing /tmp have failed
            // internal temporary tables ("Error on delete of '/tmp/#sql-…'").
            format!("--tmpdir={}", d(&self.dir.join("tmp"))),
            format!("--port={}", self.port),
            "--bind-address=127.0.0.1".to_string(),
            format!("--server-id={}", self.server_id),
            "--max-allowed-packet=64M".to_string(),
            "--local-infile=1".to_string(),
            // Without it 'u'@'%' does not match logins from localhost/127.0.0.1
            // when a 'localhost' entry exists, and lookups add latency.
            "--skip-name-resolve".to_string(),
            "--skip-log-bin".to_string(),
            "--max-connections=3000".to_string(),
            "--character-set-server=utf8mb4".to_string(),
            "--collation-server=utf8mb4_general_ci".to_string(),
            // Durability is not what the bed tests; speed is.
            "--innodb-flush-log-at-trx-commit=2".to_string(),
            "--innodb-doublewrite=0".to_string(),
            // Lists GET_LOCK / LOCK TABLES per connection, which the mover
            // checks before moving a session (docs/operations.md).
            "--plugin-load-add=metadata_lock_info".to_string(),
        ];
        args.extend(INNODB_ARGS.iter().map(|s| s.to_string()));
        args.extend(self.extra_args.iter().cloned());
        if !self.launched.load(Ordering::Relaxed) {
            args.extend(self.first_start_args.iter().cloned());
        }
        args
    }

    /// Spawns the process (does not wait for readiness).
    pub(crate) fn launch(&self) -> Result<()> {
        let mut guard = self.lock_child();
        if let Some(child) = guard.as_mut() {
            if matches!(child.try_wait(), Ok(None)) {
                return Ok(());
            }
        }
        let mut cmd = Command::new(mariadbd_binary());
        cmd.args(self.args())
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            // mariadbd logs to --log-error; anything on stderr before that is
            // opened also goes to a file in the server's directory.
            .stderr(open_append(&self.dir.join("stderr.log"))?);
        if let Some((uid, gid)) = self.creds {
            cmd.uid(uid).gid(gid);
        }
        let child = spawn_tied_to_process(cmd)
            .map_err(|e| TestBedError::io(format!("starting mariadbd for {}", self.name), e))?;
        tracing::debug!(name = %self.name, port = self.port, pid = child.id(), "mariadbd spawned");
        *guard = Some(child);
        self.launched.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// Waits until `app` can log in over TCP, the process dies, or `timeout`.
    pub(crate) fn wait_ready(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exit_status() {
                return Err(self.not_ready(format!("mariadbd exited ({status})")));
            }
            // A plain connect first: cheaper than spawning the client while the
            // server is still initialising.
            if TcpStream::connect_timeout(&self.addr(), Duration::from_millis(200)).is_ok() {
                match self.sql_as(APP_USER, APP_PASSWORD, "SELECT 1") {
                    Ok(_) => return Ok(()),
                    Err(e) if Instant::now() >= deadline => {
                        return Err(self.not_ready(format!("login as {APP_USER} failed: {e}")))
                    }
                    Err(_) => {}
                }
            }
            if Instant::now() >= deadline {
                return Err(self.not_ready(format!("no login within {timeout:?}")));
            }
            std::thread::sleep(Duration::from_millis(30));
        }
    }

    fn exit_status(&self) -> Option<String> {
        let mut guard = self.lock_child();
        match guard.as_mut() {
            None => Some("not running".to_string()),
            Some(child) => match child.try_wait() {
                Ok(Some(status)) => Some(status.to_string()),
                Ok(None) => None,
                Err(e) => Some(e.to_string()),
            },
        }
    }

    fn not_ready(&self, reason: String) -> TestBedError {
        TestBedError::NotReady {
            name: format!("{} (port {})", self.name, self.port),
            reason,
            log: self.error_log.clone(),
            tail: self.error_log_tail(25),
        }
    }

    /// True if the server died because its port was taken.
    fn failed_to_bind(&self) -> bool {
        let log = fs::read_to_string(&self.error_log).unwrap_or_default();
        log.contains("Address already in use") || log.contains("Bind on TCP/IP port")
    }

    pub(crate) fn begin_stop(&self) {
        let mut guard = self.lock_child();
        if let Some(child) = guard.as_mut() {
            if matches!(child.try_wait(), Ok(None)) {
                // SAFETY: plain kill(2) on our own child's pid.
                unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
            }
        }
    }

    pub(crate) fn finish_stop(&self, deadline: Instant) -> Result<()> {
        let mut guard = self.lock_child();
        let Some(mut child) = guard.take() else {
            return Ok(());
        };
        loop {
            match child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Ok(None) => {
                    tracing::warn!(name = %self.name, "mariadbd ignored SIGTERM; killing it");
                    signal_group(child.id(), libc::SIGKILL);
                    child
                        .wait()
                        .map_err(|e| TestBedError::io(format!("waiting for {}", self.name), e))?;
                    break;
                }
                Err(e) => return Err(TestBedError::io(format!("waiting for {}", self.name), e)),
            }
        }
        // Helpers the server started (SST scripts, rsync) share its group.
        signal_group(child.id(), libc::SIGKILL);
        Ok(())
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            tracing::warn!(name = %self.name, error = %e, "stopping mariadbd");
        }
    }
}

/// N independent MariaDB servers. Dropping it stops them and removes their files.
#[derive(Debug)]
pub struct TestBed {
    root: PathBuf,
    servers: Vec<MariaDb>,
    startup: Duration,
}

impl TestBed {
    /// Starts `n` servers named db1..dbN in parallel and waits until each accepts
    /// a TCP login as [`APP_USER`].
    pub fn start(n: usize) -> Result<TestBed> {
        let started = Instant::now();
        let root = new_root_dir("")?;
        let mut bed = TestBed {
            root,
            servers: Vec::with_capacity(n),
            startup: Duration::ZERO,
        };
        let template = template_datadir()?;
        let results: Vec<Result<MariaDb>> = std::thread::scope(|s| {
            let handles: Vec<_> = (1..=n)
                .map(|i| {
                    let root = &bed.root;
                    let template = &template;
                    s.spawn(move || start_server(root, template, i as u32))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(TestBedError::Setup("server start thread panicked".into()))
                    })
                })
                .collect()
        });
        let mut first_err = None;
        for r in results {
            match r {
                Ok(db) => bed.servers.push(db),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_err {
            // `bed` drops here: stops what started, removes the directory.
            return Err(e);
        }
        bed.startup = started.elapsed();
        tracing::info!(servers = n, elapsed = ?bed.startup, root = %bed.root.display(), "test bed up");
        Ok(bed)
    }

    /// Starts one more server (named db<N+1>) and returns it.
    pub fn add_server(&mut self) -> Result<&MariaDb> {
        let template = template_datadir()?;
        let id = self.servers.len() as u32 + 1;
        let db = start_server(&self.root, &template, id)?;
        self.servers.push(db);
        Ok(&self.servers[self.servers.len() - 1])
    }

    pub fn servers(&self) -> &[MariaDb] {
        &self.servers
    }

    pub fn server(&self, name: &str) -> Option<&MariaDb> {
        self.servers.iter().find(|s| s.name == name)
    }

    /// The bed's directory (`<tmp>/redirector-testbed-<pid>-<seq>`).
    pub fn root_dir(&self) -> &Path {
        &self.root
    }

    /// Wall time `start` took, template copy and readiness included.
    pub fn startup_duration(&self) -> Duration {
        self.startup
    }
}

impl std::ops::Index<usize> for TestBed {
    type Output = MariaDb;
    fn index(&self, i: usize) -> &MariaDb {
        &self.servers[i]
    }
}

impl Drop for TestBed {
    fn drop(&mut self) {
        stop_all(&self.servers);
        if let Err(e) = fs::remove_dir_all(&self.root) {
            tracing::warn!(dir = %self.root.display(), error = %e, "removing test bed directory");
        }
    }
}

/// Stops servers in parallel: SIGTERM to all, then wait for all.
pub(crate) fn stop_all(servers: &[MariaDb]) {
    for s in servers {
        s.begin_stop();
    }
    let deadline = Instant::now() + STOP_TIMEOUT;
    for s in servers {
        if let Err(e) = s.finish_stop(deadline) {
            tracing::warn!(name = %s.name, error = %e, "stopping mariadbd");
        }
    }
}

fn start_server(root: &Path, template: &Path, id: u32) -> Result<MariaDb> {
    let name = format!("db{id}");
    let dir = root.join(&name);
    let mut last_err = None;
    for _ in 0..PORT_ATTEMPTS {
        let db = MariaDb::new(name.clone(), dir.clone(), id, pick_port()?, Vec::new());
        if !db.datadir.exists() {
            db.prepare_dir(template)?;
        }
        db.launch()?;
        match db.wait_ready(READY_TIMEOUT) {
            Ok(()) => return Ok(db),
            Err(e) if db.failed_to_bind() => {
                tracing::debug!(name = %name, port = db.port, "port taken; retrying on another");
                drop(db);
                // The next attempt must not see this attempt's bind error.
                let _ = fs::remove_file(dir.join("error.log"));
                last_err = Some(e);
            }
            Err(e) => return Err(e),
        }
    }
    Err(last_err.unwrap_or_else(|| TestBedError::Setup(format!("{name}: no free port"))))
}

/// A free loopback port. Ports handed out earlier in this process are skipped,
/// so parallel starts do not pick the same one; another process can still
/// take it before mariadbd binds, which `start_server` retries.
pub(crate) fn pick_port() -> Result<u16> {
    static RECENT: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    for _ in 0..50 {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .map_err(|e| TestBedError::io("binding 127.0.0.1:0", e))?;
        let port = listener
            .local_addr()
            .map_err(|e| TestBedError::io("reading a bound port", e))?
            .port();
        let mut recent = RECENT.lock().unwrap_or_else(|p| p.into_inner());
        if !recent.contains(&port) {
            recent.push(port);
            return Ok(port);
        }
    }
    Err(TestBedError::Setup("could not find a free port".into()))
}

/// Creates `<tmp>/redirector-testbed-<pid>-<suffix><seq>`, owned by the server user.
pub(crate) fn new_root_dir(suffix: &str) -> Result<PathBuf> {
    static SWEEP: Once = Once::new();
    static SEQ: AtomicUsize = AtomicUsize::new(0);
    let tmp = std::env::temp_dir();
    SWEEP.call_once(|| remove_stale_dirs(&tmp));
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    let root = tmp.join(format!("{DIR_PREFIX}-{}-{suffix}{seq}", std::process::id()));
    // Left over from an earlier process with our pid: not ours any more.
    let _ = fs::remove_dir_all(&root);
    fs::create_dir_all(&root)
        .map_err(|e| TestBedError::io(format!("creating {}", root.display()), e))?;
    chown_to(&root, server_credentials())?;
    Ok(root)
}

fn chown_to(path: &Path, creds: Option<(u32, u32)>) -> Result<()> {
    if let Some((uid, gid)) = creds {
        std::os::unix::fs::chown(path, Some(uid), Some(gid))
            .map_err(|e| TestBedError::io(format!("chown {}", path.display()), e))?;
    }
    Ok(())
}

fn open_append(path: &Path) -> Result<fs::File> {
    fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| TestBedError::io(format!("opening {}", path.display()), e))
}

fn signal_group(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) on the process group our child leads (process_group(0));
    // ESRCH when it is already gone is fine.
    unsafe { libc::kill(-(pid as libc::pid_t), sig) };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The port-race retry hinges on recognising a bind failure in the log.
    #[test]
    fn bind_failure_is_detected() -> Result<()> {
        let taken =
            TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(|e| TestBedError::io("bind", e))?;
        let port = taken
            .local_addr()
            .map_err(|e| TestBedError::io("addr", e))?
            .port();
        let root = new_root_dir("unit-")?;
        let db = MariaDb::new("db1".into(), root.join("db1"), 1, port, Vec::new());
        db.prepare_dir(&template_datadir()?)?;
        db.launch()?;
        let err = db.wait_ready(READY_TIMEOUT).err();
        let detected = db.failed_to_bind();
        drop(db);
        let _ = fs::remove_dir_all(&root);
        match err {
            Some(TestBedError::NotReady { reason, tail, .. }) => {
                assert!(reason.contains("exited"), "{reason}");
                assert!(
                    tail.contains("Address already in use") || tail.contains("Bind on TCP/IP"),
                    "{tail}"
                );
            }
            other => panic!("expected NotReady, got {other:?}"),
        }
        assert!(detected);
        Ok(())
    }

    #[test]
    fn picked_ports_are_not_repeated() -> Result<()> {
        let ports: Vec<u16> = (0..20).map(|_| pick_port()).collect::<Result<_>>()?;
        let mut unique = ports.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), ports.len());
        Ok(())
    }
}
