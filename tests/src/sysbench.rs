//! Running sysbench's OLTP scripts against a server or the redirector.
//!
//! One place for the command line (driver, account, tables) and for reading
//! the report, so every test runs sysbench the same way and reads the same
//! numbers. Needs no MySQL driver: sysbench is a separate process.

use std::io::Read;
use std::net::SocketAddr;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::{APP_PASSWORD, APP_USER, TEST_DB};

/// One sysbench workload: script, tables, client threads, length, and how
/// statements are sent. Build with [`Sysbench::new`] and the setters; then
/// [`prepare`](Sysbench::prepare), [`run`](Sysbench::run) and
/// [`cleanup`](Sysbench::cleanup) against any address, as [`APP_USER`] on
/// [`TEST_DB`].
#[derive(Debug, Clone)]
pub struct Sysbench {
    script: String,
    tables: u32,
    table_size: u32,
    threads: u32,
    seconds: u64,
    ps_mode: Option<String>,
}

impl Sysbench {
    /// `script` is an OLTP script name (`oltp_read_write`,
    /// `oltp_point_select`, …). Defaults: 4 tables of 10,000 rows, 1 thread,
    /// 10 s, sysbench's own `--db-ps-mode` (auto: binary prepared statements).
    pub fn new(script: &str) -> Sysbench {
        Sysbench {
            script: script.to_string(),
            tables: 4,
            table_size: 10_000,
            threads: 1,
            seconds: 10,
            ps_mode: None,
        }
    }

    pub fn tables(mut self, n: u32) -> Self {
        self.tables = n;
        self
    }

    pub fn table_size(mut self, rows: u32) -> Self {
        self.table_size = rows;
        self
    }

    pub fn threads(mut self, n: u32) -> Self {
        self.threads = n;
        self
    }

    /// Length of [`run`](Sysbench::run) (`--time`).
    pub fn seconds(mut self, s: u64) -> Self {
        self.seconds = s;
        self
    }

    /// `--db-ps-mode`: `auto` (binary prepared statements) or `disable`
    /// (the text protocol).
    pub fn ps_mode(mut self, mode: &str) -> Self {
        self.ps_mode = Some(mode.to_string());
        self
    }

    /// The arguments every action shares: script, connection, tables.
    fn command(&self, addr: SocketAddr) -> Command {
        let mut c = Command::new("sysbench");
        c.arg(&self.script).args([
            "--db-driver=mysql".to_string(),
            format!("--mysql-host={}", addr.ip()),
            format!("--mysql-port={}", addr.port()),
            format!("--mysql-user={APP_USER}"),
            format!("--mysql-password={APP_PASSWORD}"),
            format!("--mysql-db={TEST_DB}"),
            format!("--tables={}", self.tables),
            format!("--table-size={}", self.table_size),
        ]);
        c
    }

    /// Runs sysbench and collects its output. A run that outlives its
    /// `--time` by two minutes is a hang (a query that never got its
    /// answer): it is killed and reported as such.
    fn output(&self, mut cmd: Command, action: &str, addr: SocketAddr) -> Result<Output> {
        let what = || format!("sysbench {} {action} on {addr}", self.script);
        let mut child = cmd
            .arg(action)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("running {}", what()))?;
        // Drain the pipes while waiting, so a chatty run cannot block.
        let mut stdout = child.stdout.take().context("sysbench stdout")?;
        let mut stderr = child.stderr.take().context("sysbench stderr")?;
        let out_reader = std::thread::spawn(move || {
            let mut b = Vec::new();
            let _ = stdout.read_to_end(&mut b);
            b
        });
        let err_reader = std::thread::spawn(move || {
            let mut b = Vec::new();
            let _ = stderr.read_to_end(&mut b);
            b
        });
        let deadline = Instant::now() + Duration::from_secs(self.seconds + 120);
        let status = loop {
            if let Some(s) = child.try_wait()? {
                break s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                let out = out_reader.join().unwrap_or_default();
                bail!(
                    "{} hung (still running 120 s after its --time); output so far:\n{}",
                    what(),
                    String::from_utf8_lossy(&out)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        Ok(Output {
            status,
            stdout: out_reader.join().unwrap_or_default(),
            stderr: err_reader.join().unwrap_or_default(),
        })
    }

    /// Creates and fills the tables on `addr` (one thread, as sysbench's
    /// default). Each backend needs its own copy when sessions may land on
    /// any of them.
    pub fn prepare(&self, addr: SocketAddr) -> Result<()> {
        let out = self.output(self.command(addr), "prepare", addr)?;
        if !out.status.success() {
            bail!(
                "sysbench {} prepare on {addr} failed ({}): {}\n{}",
                self.script,
                out.status,
                String::from_utf8_lossy(&out.stderr),
                String::from_utf8_lossy(&out.stdout)
            );
        }
        Ok(())
    }

    /// The workload against `addr`. Fatal errors abort sysbench (non-zero
    /// exit: an error here, with its output); ignored errors are counted in
    /// the report for the caller to judge.
    pub fn run(&self, addr: SocketAddr) -> Result<SysbenchReport> {
        let mut cmd = self.command(addr);
        cmd.arg(format!("--threads={}", self.threads))
            .arg(format!("--time={}", self.seconds))
            .arg("--report-interval=0");
        if let Some(mode) = &self.ps_mode {
            cmd.arg(format!("--db-ps-mode={mode}"));
        }
        let out = self.output(cmd, "run", addr)?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            bail!(
                "sysbench {} run on {addr} failed ({}):\n{stdout}\n{}",
                self.script,
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(SysbenchReport::parse(&stdout))
    }

    /// Drops the tables on `addr`.
    pub fn cleanup(&self, addr: SocketAddr) -> Result<()> {
        let out = self.output(self.command(addr), "cleanup", addr)?;
        if !out.status.success() {
            bail!(
                "sysbench {} cleanup on {addr} failed ({}): {}",
                self.script,
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }
}

/// Latency figures of a run, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Latency {
    pub min: f64,
    pub avg: f64,
    pub max: f64,
    pub p95: f64,
}

/// What a `sysbench … run` printed. A figure is `None` when its line is
/// missing, so a caller can tell "0" from "not reported".
#[derive(Debug, Clone, Default)]
pub struct SysbenchReport {
    pub transactions: Option<u64>,
    pub transactions_per_sec: Option<f64>,
    pub queries: Option<u64>,
    pub queries_per_sec: Option<f64>,
    /// Errors sysbench ignored and retried (deadlocks, lock wait timeouts).
    pub ignored_errors: Option<u64>,
    pub reconnects: Option<u64>,
    pub latency: Option<Latency>,
    /// The whole output, for messages.
    pub stdout: String,
}

impl SysbenchReport {
    /// Reads sysbench 1.0's final report (`transactions:  N  (R per sec.)`,
    /// `Latency (ms):` …).
    pub fn parse(stdout: &str) -> SysbenchReport {
        let count = |label: &str| {
            value_after(stdout, label)
                .and_then(|v| v.split_whitespace().next())
                .and_then(|n| n.parse().ok())
        };
        let rate = |label: &str| {
            value_after(stdout, label)
                .and_then(|v| v.split('(').nth(1))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|n| n.parse().ok())
        };
        let ms = |label: &str| value_after(stdout, label).and_then(|v| v.trim().parse().ok());
        let latency = match (ms("min:"), ms("avg:"), ms("max:"), ms("95th percentile:")) {
            (Some(min), Some(avg), Some(max), Some(p95)) => Some(Latency { min, avg, max, p95 }),
            _ => None,
        };
        SysbenchReport {
            transactions: count("transactions:"),
            transactions_per_sec: rate("transactions:"),
            queries: count("queries:"),
            queries_per_sec: rate("queries:"),
            ignored_errors: count("ignored errors:"),
            reconnects: count("reconnects:"),
            latency,
            stdout: stdout.to_string(),
        }
    }

    /// The report line starting with `label`, trimmed ("" if absent).
    pub fn line(&self, label: &str) -> &str {
        self.stdout
            .lines()
            .map(str::trim)
            .find(|l| l.starts_with(label))
            .unwrap_or("")
    }
}

/// The text after `label` on the first line that starts with it.
fn value_after<'a>(text: &'a str, label: &str) -> Option<&'a str> {
    text.lines()
        .map(str::trim_start)
        .find_map(|l| l.strip_prefix(label))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tail of a real sysbench 1.0.20 `oltp_read_write run`.
    const SAMPLE: &str = "\
SQL statistics:
    queries performed:
        read:                            140000
        write:                           40000
        other:                           20000
        total:                           200000
    transactions:                        10000  (998.71 per sec.)
    queries:                             200000 (19974.15 per sec.)
    ignored errors:                      3      (0.30 per sec.)
    reconnects:                          0      (0.00 per sec.)

General statistics:
    total time:                          10.0118s
    total number of events:              10000

Latency (ms):
         min:                                    6.21
         avg:                                   16.01
         max:                                   54.58
         95th percentile:                       22.28
         sum:                               160074.51
";

    #[test]
    fn parses_the_final_report() {
        let r = SysbenchReport::parse(SAMPLE);
        assert_eq!(r.transactions, Some(10_000));
        assert_eq!(r.transactions_per_sec, Some(998.71));
        assert_eq!(r.queries, Some(200_000));
        assert_eq!(r.queries_per_sec, Some(19_974.15));
        assert_eq!(r.ignored_errors, Some(3));
        assert_eq!(r.reconnects, Some(0));
        assert_eq!(
            r.latency,
            Some(Latency {
                min: 6.21,
                avg: 16.01,
                max: 54.58,
                p95: 22.28
            })
        );
        assert_eq!(
            r.line("ignored errors:"),
            "ignored errors:                      3      (0.30 per sec.)"
        );
    }

    #[test]
    fn missing_lines_are_none() {
        let r = SysbenchReport::parse("FATAL: something");
        assert_eq!(r.transactions, None);
        assert_eq!(r.ignored_errors, None);
        assert_eq!(r.latency, None);
        assert_eq!(r.line("queries:"), "");
    }
}
