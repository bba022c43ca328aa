//! The template data directory: `mariadb-install-db` plus the test accounts,
//! made once and copied for every server.
//!
//! Cached under `<workspace>/target/testbed-template/<key>/data`, where the key
//! covers the MariaDB version and the setup SQL, so an upgrade or a changed
//! account list builds a fresh one. Concurrent builders (parallel test
//! processes) each build privately and publish with an atomic rename.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;

use crate::error::{Result, TestBedError};
use crate::spawn::server_credentials;
use crate::{DIR_PREFIX, SETUP_SQL};

/// InnoDB settings used for the template and every server: small files, fast
/// start. The log file size must match between install and start, or InnoDB
/// resizes the log on first start.
pub(crate) const INNODB_ARGS: &[&str] = &[
    "--innodb-log-file-size=8M",
    "--innodb-buffer-pool-size=64M",
    "--innodb-temp-data-file-path=ibtmp1:1M:autoextend",
    "--innodb-buffer-pool-load-at-startup=0",
    "--innodb-buffer-pool-dump-at-shutdown=0",
];

/// Path of the `mariadbd` binary (Debian puts it in /usr/sbin, which is not on
/// every user's PATH).
pub(crate) fn mariadbd_binary() -> PathBuf {
    find_program("mariadbd", &["/usr/sbin/mariadbd", "/usr/bin/mariadbd"])
}

fn find_program(name: &str, fallbacks: &[&str]) -> PathBuf {
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    fallbacks
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from(name))
}

/// The template data directory, built on first use in this process.
pub(crate) fn template_datadir() -> Result<PathBuf> {
    static TEMPLATE: Mutex<Option<PathBuf>> = Mutex::new(None);
    let mut guard = TEMPLATE.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(dir) = guard.as_ref() {
        return Ok(dir.clone());
    }
    let dir = find_or_build()?;
    *guard = Some(dir.clone());
    Ok(dir)
}

fn find_or_build() -> Result<PathBuf> {
    let key = cache_key()?;
    let cache_root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("target")
        .join("testbed-template");
    let published = cache_root.join(&key);
    let datadir = published.join("data");
    if datadir.join("mysql").is_dir() {
        return Ok(datadir);
    }

    let started = std::time::Instant::now();
    let work = std::env::temp_dir().join(format!("{DIR_PREFIX}-{}-template", std::process::id()));
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work)
        .map_err(|e| TestBedError::io(format!("creating {}", work.display()), e))?;
    let work_data = work.join("data");
    build(&work, &work_data)?;
    tracing::info!(elapsed = ?started.elapsed(), "built MariaDB template data directory");

    // Publish: copy into a private directory next to the final place, then rename.
    let staging = cache_root.join(format!(".build-{}-{}", std::process::id(), nanos()));
    let publish = (|| -> Result<()> {
        fs::create_dir_all(&staging)
            .map_err(|e| TestBedError::io(format!("creating {}", staging.display()), e))?;
        copy_tree(&work_data, &staging.join("data"))?;
        match fs::rename(&staging, &published) {
            Ok(()) => Ok(()),
            // Another process published first: use theirs.
            Err(_) if datadir.join("mysql").is_dir() => {
                let _ = fs::remove_dir_all(&staging);
                Ok(())
            }
            Err(e) => Err(TestBedError::io(
                format!("publishing {}", published.display()),
                e,
            )),
        }
    })();
    match publish {
        Ok(()) => {
            let _ = fs::remove_dir_all(&work);
            Ok(datadir)
        }
        Err(e) => {
            // Not fatal: the private copy serves this process; a later run's
            // stale-directory sweep removes it.
            tracing::warn!(error = %e, "could not cache the template; using a private copy");
            let _ = fs::remove_dir_all(&staging);
            Ok(work_data)
        }
    }
}

fn build(work: &Path, data: &Path) -> Result<()> {
    let creds = server_credentials();
    if creds.is_none() && unsafe { libc::geteuid() } == 0 {
        return Err(TestBedError::Setup(
            "running as root but there is no `mysql` user to run mariadbd as (is mariadb-server installed?)".into(),
        ));
    }
    if let Some((uid, gid)) = creds {
        std::os::unix::fs::chown(work, Some(uid), Some(gid))
            .map_err(|e| TestBedError::io(format!("chown {}", work.display()), e))?;
    }

    let mut install = Command::new(find_program(
        "mariadb-install-db",
        &[
            "/usr/bin/mariadb-install-db",
            "/usr/sbin/mariadb-install-db",
        ],
    ));
    install
        .arg("--no-defaults")
        .arg(format!("--datadir={}", data.display()))
        .arg("--auth-root-authentication-method=normal")
        .arg("--skip-test-db")
        .args(INNODB_ARGS)
        .arg(format!(
            "--log-error={}",
            work.join("install.err").display()
        ));
    if creds.is_some() {
        install.arg("--user=mysql");
    }
    run_checked(install, "mariadb-install-db", None)?;

    // Accounts go in with the server in bootstrap mode: no socket, no port.
    let mut boot = Command::new(mariadbd_binary());
    boot.arg("--no-defaults")
        .arg("--bootstrap")
        .arg(format!("--datadir={}", data.display()))
        .args(INNODB_ARGS)
        .arg(format!(
            "--log-error={}",
            work.join("bootstrap.err").display()
        ));
    if creds.is_some() {
        boot.arg("--user=mysql");
    }
    run_checked(boot, "mariadbd --bootstrap", Some(SETUP_SQL))?;
    // Runtime leftovers that must not be shared between servers.
    for f in ["ib_buffer_pool", "ibtmp1"] {
        let _ = fs::remove_file(data.join(f));
    }
    Ok(())
}

fn run_checked(mut cmd: Command, what: &str, stdin: Option<&str>) -> Result<()> {
    use std::io::Write;
    let mut child = cmd
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| TestBedError::io(format!("running {what}"), e))?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input.as_bytes())
            .map_err(|e| TestBedError::io(format!("feeding {what}"), e))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| TestBedError::io(format!("waiting for {what}"), e))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(TestBedError::Command {
            program: what.to_string(),
            status: out.status.to_string(),
            stderr: format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        })
    }
}

/// `cp -a`: keeps ownership (the `mysql` user) and modes; faster than walking
/// the tree in Rust and handles every file type.
pub(crate) fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    let mut cp = Command::new("cp");
    cp.arg("-a").arg("--reflink=auto").arg(from).arg(to);
    run_checked(cp, "cp -a", None)
}

fn cache_key() -> Result<String> {
    let out = Command::new(mariadbd_binary())
        .arg("--version")
        .output()
        .map_err(|e| {
            TestBedError::io(
                "running `mariadbd --version` (is mariadb-server installed?)",
                e,
            )
        })?;
    let text = String::from_utf8_lossy(&out.stdout);
    // "mariadbd  Ver 10.11.19-MariaDB-0+deb12u1 for debian-linux-gnu on x86_64 (Debian 12)"
    let version = text
        .split_whitespace()
        .skip_while(|w| *w != "Ver")
        .nth(1)
        .ok_or_else(|| TestBedError::Setup(format!("cannot parse `mariadbd --version`: {text}")))?;
    let version: String = version
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut h = Fnv::default();
    h.write(SETUP_SQL.as_bytes());
    for a in INNODB_ARGS {
        h.write(a.as_bytes());
    }
    Ok(format!("mariadb-{version}-{:016x}", h.0))
}

fn nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// FNV-1a: a stable hash (std's `DefaultHasher` may change between releases).
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}
