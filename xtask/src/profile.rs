//! Scheduler profile of one sysbench run (`perf record` of
//! `sched:sched_switch` and `sched:sched_wakeup` on every CPU): where the
//! machine's CPU time goes (the client, MariaDB, the daemon, kworkers,
//! softirq threads, idle) and how often each kind of thread is switched in
//! and woken per query. This VM has no hardware counters, so cycle
//! profiles (`perf record -e cycles`, `bpftool prog profile`) cannot run;
//! scheduler tracepoints can.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::{json, Value};

/// Kinds of threads, by command name.
fn class(comm: &str) -> &'static str {
    if comm.starts_with("swapper") {
        "idle"
    } else if comm.starts_with("kworker") {
        "kworker"
    } else if comm.starts_with("ksoftirqd") {
        "ksoftirqd"
    } else if comm.starts_with("sysbench") {
        "sysbench"
    } else if comm.starts_with("mariadbd") || comm.starts_with("connection") {
        "mariadbd"
    } else if comm.starts_with("redirector") || comm.starts_with("tokio") {
        "redirector"
    } else if comm.starts_with("haproxy") {
        "haproxy"
    } else {
        "other"
    }
}

/// Whether `perf` can record scheduler tracepoints here.
pub fn available() -> bool {
    Command::new("perf")
        .args(["list", "sched:sched_switch"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .output()
        .is_ok_and(|o| {
            o.status.success() && String::from_utf8_lossy(&o.stdout).contains("sched_switch")
        })
}

/// Runs `work` under `perf record` and returns the profile, with per-query
/// figures for `queries(work's result)` queries.
/// `data`: where perf writes its recording.
pub fn record<T>(
    data: &std::path::Path,
    work: impl FnOnce() -> Result<T>,
    queries: impl Fn(&T) -> f64,
) -> Result<(T, Value)> {
    let mut perf = Command::new("perf")
        .args([
            "record",
            "-q",
            "-a",
            "-e",
            "sched:sched_switch",
            "-e",
            "sched:sched_wakeup",
            "-o",
        ])
        .arg(data)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting perf record")?;
    std::thread::sleep(Duration::from_millis(500));
    let result = work();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(perf.id() as libc::pid_t, libc::SIGINT) };
    perf.wait()?;
    let result = result?;
    let out = Command::new("perf")
        .args(["script", "-F", "cpu,time,event,trace", "-i"])
        .arg(data)
        .stderr(Stdio::null())
        .output()
        .context("perf script")?;
    let profile = summarise(&String::from_utf8_lossy(&out.stdout), queries(&result));
    Ok((result, profile))
}

/// Value of `key=` in a tracepoint line, up to the next ` name=` field.
fn field<'a>(line: &'a str, key: &str, next: &str) -> Option<&'a str> {
    let start = line.find(key)? + key.len();
    let rest = &line[start..];
    let end = rest.find(next).unwrap_or(rest.len());
    Some(rest[..end].trim())
}

fn summarise(script: &str, queries: f64) -> Value {
    #[derive(Default)]
    struct Class {
        seconds: f64,
        switched_in: u64,
        woken: u64,
    }
    let mut classes: BTreeMap<&'static str, Class> = BTreeMap::new();
    // Per CPU: when the running thread was switched in, and its class.
    let mut running: BTreeMap<u32, (f64, &'static str)> = BTreeMap::new();
    let (mut first, mut last) = (f64::MAX, 0f64);
    for line in script.lines() {
        let line = line.trim_start();
        let Some(rest) = line.strip_prefix('[') else {
            continue;
        };
        let Some((cpu, rest)) = rest.split_once(']') else {
            continue;
        };
        let Ok(cpu) = cpu.trim().parse::<u32>() else {
            continue;
        };
        let rest = rest.trim_start();
        let Some((time, rest)) = rest.split_once(':') else {
            continue;
        };
        let Ok(t) = time.trim().parse::<f64>() else {
            continue;
        };
        first = first.min(t);
        last = last.max(t);
        if rest.contains("sched_switch") {
            let (Some(prev), Some(next)) = (
                field(rest, "prev_comm=", " prev_pid="),
                field(rest, "next_comm=", " next_pid="),
            ) else {
                continue;
            };
            let (since, _) = running.get(&cpu).copied().unwrap_or((t, class(prev)));
            classes.entry(class(prev)).or_default().seconds += t - since;
            let next = class(next);
            classes.entry(next).or_default().switched_in += 1;
            running.insert(cpu, (t, next));
        } else if rest.contains("sched_wakeup") {
            if let Some(comm) = field(rest, "comm=", " pid=") {
                classes.entry(class(comm)).or_default().woken += 1;
            }
        }
    }
    let cpus = running.len().max(1) as f64;
    let span = (last - first).max(f64::MIN_POSITIVE) * cpus;
    let per_query = |n: u64| {
        if queries > 0.0 {
            n as f64 / queries
        } else {
            0.0
        }
    };
    let by_class: serde_json::Map<String, Value> = classes
        .iter()
        .map(|(name, c)| {
            (
                name.to_string(),
                json!({
                    "cpu_share": c.seconds / span,
                    "us_per_query": if queries > 0.0 { c.seconds * 1e6 / queries } else { 0.0 },
                    "switched_in_per_query": per_query(c.switched_in),
                    "wakeups_per_query": per_query(c.woken),
                }),
            )
        })
        .collect();
    json!({"queries": queries, "seconds": last - first, "cpus": cpus, "classes": by_class})
}
