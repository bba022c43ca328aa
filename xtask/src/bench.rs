//! `cargo xtask bench`: sysbench through each data path, interleaved in one
//! run, with ratios to a direct connection; then move latency, memory per
//! idle session and the time to rebalance idle sessions onto a new server.
//! Writes `target/bench/latest.json`.

use std::fmt::Write as _;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use redirector_tests::daemon::{app_users_toml, free_port, servers_toml, Redirector};
use redirector_tests::{MariaDb, TestBed, APP_PASSWORD, APP_USER, TEST_DB};
use serde_json::{json, Value};

use crate::util::{project_root, step};

const TESTS: [&str; 2] = ["oltp_point_select", "oltp_read_only"];
const THREADS: [u32; 3] = [1, 16, 64];
const TABLES: &str = "4";
const TABLE_SIZE: &str = "10000";

/// One way to reach the server.
struct BenchPath {
    name: &'static str,
    port: Option<u16>,
    /// The redirector daemon behind the path, whose CPU time and context
    /// switches are counted per query.
    pid: Option<u32>,
    /// Why the path could not be measured.
    unavailable: Option<String>,
}

/// CPU time (user + system) and context switches of a process so far,
/// from /proc: the daemon's cost per query on each path.
#[derive(Debug, Clone, Copy, Default)]
struct ProcCost {
    cpu_seconds: f64,
    switches: u64,
}

/// Run count and total run time of every loaded BPF program by name, from
/// `bpftool` with `kernel.bpf_stats_enabled` on (this VM has no hardware
/// counters, so `bpftool prog profile` cannot run: these are the programs'
/// own run times).
fn bpf_stats() -> std::collections::BTreeMap<String, (u64, u64)> {
    let mut out = std::collections::BTreeMap::new();
    let Ok(o) = Command::new("bpftool")
        .args(["-j", "prog", "show"])
        .output()
    else {
        return out;
    };
    let Ok(v) = serde_json::from_slice::<Value>(&o.stdout) else {
        return out;
    };
    for p in v.as_array().into_iter().flatten() {
        let (Some(name), Some(cnt), Some(ns)) = (
            p["name"].as_str(),
            p["run_cnt"].as_u64(),
            p["run_time_ns"].as_u64(),
        ) else {
            continue;
        };
        if !name.starts_with("redirector") {
            continue;
        }
        let e = out.entry(name.to_string()).or_insert((0, 0));
        e.0 += cnt;
        e.1 += ns;
    }
    out
}

/// Turns the kernel's BPF run-time accounting on for the bench, and back
/// to what it was on drop.
struct BpfStats(Option<String>);

impl BpfStats {
    fn enable() -> BpfStats {
        const PATH: &str = "/proc/sys/kernel/bpf_stats_enabled";
        let old = std::fs::read_to_string(PATH).ok();
        let _ = std::fs::write(PATH, "1");
        BpfStats(old)
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        if let Some(old) = &self.0 {
            let _ = std::fs::write("/proc/sys/kernel/bpf_stats_enabled", old.trim());
        }
    }
}

fn proc_cost(pid: u32) -> Option<ProcCost> {
    // Fields 14 and 15 of /proc/PID/stat (after the command in parentheses).
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    // Context switches are counted per thread: sum the daemon's threads
    // (each voluntary one is a wake-up of a worker or the reactor).
    let mut switches = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
    {
        let Ok(status) = std::fs::read_to_string(task.path().join("status")) else {
            continue;
        };
        switches += status
            .lines()
            .filter(|l| {
                l.starts_with("voluntary_ctxt_switches")
                    || l.starts_with("nonvoluntary_ctxt_switches")
            })
            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .sum::<u64>();
    }
    Some(ProcCost {
        cpu_seconds: ticks / hz.max(1.0),
        switches,
    })
}

pub struct Options {
    pub seconds: u64,
    pub idle_sessions: usize,
    pub latency_moves: usize,
}

pub fn bench(opts: &Options) -> Result<()> {
    step("starting MariaDB servers");
    let mut bed = TestBed::start(2)?;
    let db1 = bed.servers()[0].clone_handle();
    let db2 = bed.servers()[1].clone_handle();
    step("preparing sysbench tables on db1");
    sysbench(&db1.port, "oltp_point_select", 1, 1, "prepare")?;

    let haproxy = HaProxy::start(db1.port)?;
    let userspace = daemon(&[&bed.servers()[0]], "userspace")?;
    let ebpf = daemon(&[&bed.servers()[0]], "ebpf");
    let paths = vec![
        BenchPath {
            name: "direct",
            port: Some(db1.port),
            pid: None,
            unavailable: None,
        },
        BenchPath {
            name: "haproxy",
            port: Some(haproxy.port),
            pid: None,
            unavailable: None,
        },
        BenchPath {
            name: "redirector-userspace",
            port: Some(userspace.addr.port()),
            pid: Some(userspace.pid()),
            unavailable: None,
        },
        match &ebpf {
            Ok(d) => BenchPath {
                name: "redirector-ebpf",
                port: Some(d.addr.port()),
                pid: Some(d.pid()),
                unavailable: None,
            },
            Err(e) => BenchPath {
                name: "redirector-ebpf",
                port: None,
                pid: None,
                unavailable: Some(first_line(&format!("{e:#}"))),
            },
        },
    ];

    let _bpf_stats = BpfStats::enable();
    let mut results = Vec::new();
    for test in TESTS {
        for threads in THREADS {
            let mut direct_tps = None;
            // Interleaved: every path for this cell before the next cell.
            for p in &paths {
                let Some(port) = p.port else { continue };
                step(&format!("{test} {threads} threads via {}", p.name));
                let before = p.pid.and_then(proc_cost);
                let bpf_before = bpf_stats();
                let r = sysbench_run(port, test, threads, opts.seconds)?;
                let after = p.pid.and_then(proc_cost);
                let bpf_after = bpf_stats();
                if p.name == "direct" {
                    direct_tps = Some(r.tps);
                }
                // Daemon cost per 100,000 queries (CPU seconds, switches).
                let queries = r.qps * opts.seconds as f64;
                let per_100k = |x: f64| {
                    if queries > 0.0 {
                        x * 100_000.0 / queries
                    } else {
                        0.0
                    }
                };
                let cost = before.zip(after).map(|(b, a)| {
                    json!({
                        "cpu_seconds_per_100k_queries": per_100k(a.cpu_seconds - b.cpu_seconds),
                        "switches_per_query": per_100k((a.switches - b.switches) as f64) / 100_000.0,
                    })
                });
                // Programs that ran during this run: runs per query, ns per run.
                let programs: serde_json::Map<String, Value> = bpf_after
                    .iter()
                    .filter_map(|(name, &(cnt, ns))| {
                        let (c0, n0) = bpf_before.get(name).copied().unwrap_or((0, 0));
                        let runs = cnt.saturating_sub(c0);
                        (runs > 0 && queries > 0.0).then(|| {
                            (
                                name.clone(),
                                json!({
                                    "runs_per_query": runs as f64 / queries,
                                    "ns_per_run": ns.saturating_sub(n0) as f64 / runs as f64,
                                }),
                            )
                        })
                    })
                    .collect();
                results.push(json!({
                    "test": test, "threads": threads, "path": p.name,
                    "tps": r.tps, "qps": r.qps, "p95_ms": r.p95_ms, "errors": r.errors,
                    "ratio_to_direct": direct_tps.map(|d| if d > 0.0 { r.tps / d } else { 0.0 }),
                    "daemon": cost,
                    "bpf_programs": programs,
                }));
            }
        }
    }
    // Where the CPU time goes on each path: oltp_point_select, 16 threads.
    let mut profiles = serde_json::Map::new();
    if crate::profile::available() {
        let dir = project_root().join("target/bench");
        std::fs::create_dir_all(&dir)?;
        for p in &paths {
            let Some(port) = p.port else { continue };
            step(&format!(
                "scheduler profile: oltp_point_select 16 threads via {}",
                p.name
            ));
            let (_, profile) = crate::profile::record(
                &dir.join(format!("perf-{}.data", p.name)),
                || sysbench_run(port, "oltp_point_select", 16, opts.seconds),
                |r| r.qps * opts.seconds as f64,
            )?;
            profiles.insert(p.name.to_string(), profile);
        }
    } else {
        step("scheduler profile skipped: perf cannot record sched tracepoints here");
    }
    drop(userspace);
    drop(ebpf);
    drop(haproxy);

    step("moves: idle-session memory, move latency, rebalance onto a new server");
    let moves = move_bench(&mut bed, &db1, &db2, opts)?;

    let unavailable: Vec<Value> = paths
        .iter()
        .filter_map(|p| {
            p.unavailable
                .as_ref()
                .map(|why| json!({"path": p.name, "reason": why}))
        })
        .collect();
    let report = json!({
        "seconds_per_run": opts.seconds,
        "sysbench": results,
        "unavailable": unavailable,
        "scheduler_profile": profiles,
        "moves": moves,
        "machine": machine(),
    });
    let dir = project_root().join("target/bench");
    std::fs::create_dir_all(&dir)?;
    let out = dir.join("latest.json");
    std::fs::write(&out, serde_json::to_string_pretty(&report)?)?;
    println!("{}", table(&report));
    println!("JSON: {}", out.display());
    Ok(())
}

struct Handle {
    port: u16,
    name: String,
    addr: String,
}

trait CloneHandle {
    fn clone_handle(&self) -> Handle;
}

impl CloneHandle for MariaDb {
    fn clone_handle(&self) -> Handle {
        Handle {
            port: self.port,
            name: self.name.clone(),
            addr: self.addr().to_string(),
        }
    }
}

fn first_line(s: &str) -> String {
    s.lines()
        .rev()
        .find(|l| l.contains("ERROR") || l.contains("error"))
        .or_else(|| s.lines().next())
        .unwrap_or_default()
        .chars()
        .take(300)
        .collect()
}

fn daemon(servers: &[&MariaDb], mode: &str) -> Result<Redirector> {
    let cfg = format!(
        "[datapath]\nmode = \"{mode}\"\n\n[listen]\naddress = \"{{listen}}\"\nmax_connections = 5000\n\n{}{}",
        app_users_toml(),
        servers_toml(servers)
    );
    Redirector::start(&cfg)
}

fn sysbench_base(port: &u16, test: &str, threads: u32) -> Command {
    let mut c = Command::new("sysbench");
    c.arg(test).args([
        "--db-driver=mysql",
        "--mysql-host=127.0.0.1",
        &format!("--mysql-port={port}"),
        &format!("--mysql-user={APP_USER}"),
        &format!("--mysql-password={APP_PASSWORD}"),
        &format!("--mysql-db={TEST_DB}"),
        &format!("--tables={TABLES}"),
        &format!("--table-size={TABLE_SIZE}"),
        &format!("--threads={threads}"),
    ]);
    c
}

fn sysbench(port: &u16, test: &str, threads: u32, seconds: u64, action: &str) -> Result<String> {
    let out = sysbench_base(port, test, threads)
        .arg(format!("--time={seconds}"))
        .arg(action)
        .output()
        .context("running sysbench (is `cargo xtask setup` done?)")?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "sysbench {test} {action} failed: {}\n{text}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(text)
}

struct RunResult {
    tps: f64,
    qps: f64,
    p95_ms: f64,
    errors: f64,
}

fn per_sec(text: &str, label: &str) -> f64 {
    text.lines()
        .find(|l| l.trim_start().starts_with(label))
        .and_then(|l| l.split('(').nth(1))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

fn sysbench_run(port: u16, test: &str, threads: u32, seconds: u64) -> Result<RunResult> {
    let text = sysbench(&port, test, threads, seconds, "run")?;
    let p95_ms = text
        .lines()
        .find(|l| l.trim_start().starts_with("95th percentile:"))
        .and_then(|l| l.split(':').nth(1))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0);
    Ok(RunResult {
        tps: per_sec(&text, "transactions:"),
        qps: per_sec(&text, "queries:"),
        p95_ms,
        errors: per_sec(&text, "ignored errors:"),
    })
}

struct HaProxy {
    child: Child,
    port: u16,
}

impl HaProxy {
    fn start(backend: u16) -> Result<HaProxy> {
        let port = free_port()?;
        let dir = std::env::temp_dir().join(format!("redirector-bench-haproxy-{port}"));
        std::fs::create_dir_all(&dir)?;
        let cfg = dir.join("haproxy.cfg");
        std::fs::write(
            &cfg,
            format!(
                "global\n  maxconn 4096\n\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 1h\n  timeout server 1h\n\n\
                 listen mysql\n  bind 127.0.0.1:{port}\n  option tcp-smart-accept\n  server db1 127.0.0.1:{backend}\n"
            ),
        )?;
        let child = Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting haproxy (is `cargo xtask setup` done?)")?;
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(HaProxy { child, port });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("haproxy did not listen on {port}")
    }
}

impl Drop for HaProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn move_bench(bed: &mut TestBed, db1: &Handle, db2: &Handle, opts: &Options) -> Result<Value> {
    let db3 = bed.add_server()?;
    let db3 = db3.clone_handle();
    let http = format!("127.0.0.1:{}", free_port()?);
    // Idle sessions spread over db1 and db2; db3 joins for the rebalance.
    let policy = format!(
        "{{\"version\":1,\"clusterResourceGroups\":[{{\"groupId\":\"default\",\"clusters\":[{{\"clusterId\":\"{}\",\"weight\":10}},{{\"clusterId\":\"{}\",\"weight\":10}}],\"scalingPolicy\":\"session-round-robin\"}}]}}",
        db1.name, db2.name
    );
    let cfg = format!(
        "[datapath]\nmode = \"userspace\"\n\n[listen]\naddress = \"{{listen}}\"\nmax_connections = 5000\n\n\
         [admin]\nsql_address = \"127.0.0.1:{}\"\nhttp_address = \"{http}\"\n\n[mover]\nrebalance_rate = 100000\n\n\
         [policy]\ninline = '{policy}'\n\n{}\
         [[servers]]\nname = \"{}\"\naddress = \"{}\"\n\n[[servers]]\nname = \"{}\"\naddress = \"{}\"\n\n",
        free_port()?,
        app_users_toml(),
        db1.name,
        db1.addr,
        db2.name,
        db2.addr
    );
    let d = Redirector::start(&cfg)?;
    let out = Command::new(env_or("CARGO", "cargo"))
        .current_dir(project_root())
        .args([
            "run",
            "--release",
            "-q",
            "-p",
            "redirector-tests",
            "--example",
            "bench_moves",
            "--",
        ])
        .args(["--listen", &d.addr.to_string()])
        .args(["--http", &http])
        .args(["--pid", &d.pid().to_string()])
        .args(["--sessions", &opts.idle_sessions.to_string()])
        .args(["--latency-moves", &opts.latency_moves.to_string()])
        .args(["--from", &db1.name, "--to", &db2.name])
        .args(["--new-server", &format!("{}={}", db3.name, db3.addr)])
        .stderr(Stdio::inherit())
        .output()
        .context("running the move benchmark")?;
    if !out.status.success() {
        bail!("move benchmark failed:\n{}", d.log());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().unwrap_or_default();
    serde_json::from_str(line).with_context(|| format!("move benchmark output: {text}"))
}

fn env_or(key: &str, default: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| default.to_string())
}

fn machine() -> Value {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    json!({"cpus": cpus, "kernel": kernel.trim()})
}

fn table(report: &Value) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\n{:<18} {:>7} {:<22} {:>10} {:>10} {:>8} {:>8} {:>13} {:>11}",
        "test", "threads", "path", "tps", "qps", "p95 ms", "ratio", "daemon s/100k", "switch/qry"
    );
    for r in report["sysbench"].as_array().into_iter().flatten() {
        let _ = writeln!(
            s,
            "{:<18} {:>7} {:<22} {:>10.1} {:>10.1} {:>8.2} {:>8} {:>13} {:>11}",
            r["test"].as_str().unwrap_or(""),
            r["threads"],
            r["path"].as_str().unwrap_or(""),
            r["tps"].as_f64().unwrap_or(0.0),
            r["qps"].as_f64().unwrap_or(0.0),
            r["p95_ms"].as_f64().unwrap_or(0.0),
            r["ratio_to_direct"]
                .as_f64()
                .map_or("-".to_string(), |v| format!("{v:.2}")),
            r["daemon"]["cpu_seconds_per_100k_queries"]
                .as_f64()
                .map_or("-".to_string(), |v| format!("{v:.2}")),
            r["daemon"]["switches_per_query"]
                .as_f64()
                .map_or("-".to_string(), |v| format!("{v:.3}")),
        );
    }
    let _ = writeln!(s, "\nkernel programs per query (runs/query × ns/run):");
    for r in report["sysbench"].as_array().into_iter().flatten() {
        let Some(progs) = r["bpf_programs"].as_object().filter(|p| !p.is_empty()) else {
            continue;
        };
        let parts: Vec<String> = progs
            .iter()
            .map(|(name, v)| {
                format!(
                    "{} {:.2}×{:.0}",
                    name.trim_start_matches("redirector_"),
                    v["runs_per_query"].as_f64().unwrap_or(0.0),
                    v["ns_per_run"].as_f64().unwrap_or(0.0)
                )
            })
            .collect();
        let _ = writeln!(
            s,
            "  {} {} {}: {}",
            r["test"].as_str().unwrap_or(""),
            r["threads"],
            r["path"].as_str().unwrap_or(""),
            parts.join(", ")
        );
    }
    if let Some(profiles) = report["scheduler_profile"]
        .as_object()
        .filter(|p| !p.is_empty())
    {
        let _ = writeln!(
            s,
            "\nscheduler profile, oltp_point_select 16 threads (share of all CPUs, µs per query, switched in / woken per query):"
        );
        for (path, p) in profiles {
            let parts: Vec<String> = p["classes"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(class, c)| {
                    format!(
                        "{class} {:.0}% {:.1}µs {:.2}/{:.2}",
                        c["cpu_share"].as_f64().unwrap_or(0.0) * 100.0,
                        c["us_per_query"].as_f64().unwrap_or(0.0),
                        c["switched_in_per_query"].as_f64().unwrap_or(0.0),
                        c["wakeups_per_query"].as_f64().unwrap_or(0.0),
                    )
                })
                .collect();
            let _ = writeln!(s, "  {path}: {}", parts.join(", "));
        }
    }
    for u in report["unavailable"].as_array().into_iter().flatten() {
        let _ = writeln!(
            s,
            "not measured: {} ({})",
            u["path"].as_str().unwrap_or(""),
            u["reason"].as_str().unwrap_or("")
        );
    }
    let m = &report["moves"];
    let _ = writeln!(
        s,
        "\nmoves of idle sessions: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} moves; REST request p50 {:.2} ms)",
        m["move_latency_ms"]["p50"].as_f64().unwrap_or(f64::NAN),
        m["move_latency_ms"]["p99"].as_f64().unwrap_or(f64::NAN),
        m["move_latency_ms"]["max"].as_f64().unwrap_or(f64::NAN),
        m["move_latency_ms"]["moves"],
        m["move_latency_ms"]["request_p50"].as_f64().unwrap_or(f64::NAN),
    );
    let _ = writeln!(
        s,
        "rebalance of {} idle sessions onto a new server: {} moved in {:.3} s",
        m["rebalance"]["sessions"],
        m["rebalance"]["moved"],
        m["rebalance"]["seconds"].as_f64().unwrap_or(f64::NAN)
    );
    let _ = writeln!(
        s,
        "memory per idle session: {:.1} KiB",
        m["memory_per_idle_session_kib"]
            .as_f64()
            .unwrap_or(f64::NAN)
    );
    s
}
