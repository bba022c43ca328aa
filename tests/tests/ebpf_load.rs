//! `redirector ebpf load` (what `cargo xtask load` runs) loads every
//! program the daemon runs through the verifier and pins programs and maps
//! under a bpffs directory; `bpftool` sees them pinned there; `unload`
//! leaves nothing behind. Needs root.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{ensure, Context, Result};
use redirector_common::maps::{
    APPS, APP_PASS_PROGRAM, BACKENDS, BACKEND_FULL_PROGRAM, BACKEND_JUMP, BACKEND_STRADDLE_PROGRAM,
    BACKEND_VERDICT_PROGRAM, BSIDES, CONFIG, COUNTERS, CTL, KSTATS, LOCAL_APPS, MSG_PROGRAM,
    SESSION_COUNTERS, SIDES, SOCKOPS_PROGRAM, SOCKS, TRACK, TYPED, VERDICT_PROGRAM,
};
use redirector_tests::daemon::redirector_bin;
use serde_json::Value;

const PROGRAMS: [&str; 7] = [
    SOCKOPS_PROGRAM,
    APP_PASS_PROGRAM,
    MSG_PROGRAM,
    BACKEND_VERDICT_PROGRAM,
    BACKEND_FULL_PROGRAM,
    BACKEND_STRADDLE_PROGRAM,
    VERDICT_PROGRAM,
];
const MAPS: [&str; 14] = [
    APPS,
    KSTATS,
    COUNTERS,
    BACKENDS,
    LOCAL_APPS,
    CTL,
    TRACK,
    SESSION_COUNTERS,
    BSIDES,
    TYPED,
    BACKEND_JUMP,
    CONFIG,
    SOCKS,
    SIDES,
];

fn redirector(args: &[&str]) -> Result<String> {
    let out = Command::new(redirector_bin()?).args(args).output()?;
    ensure!(
        out.status.success(),
        "redirector {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Every path bpftool reports pinned for `kind` (`prog` or `map`).
fn pinned(kind: &str) -> Result<Vec<String>> {
    let out = Command::new("bpftool")
        .args(["-j", "-f", kind, "show"])
        .output()
        .context("running bpftool (installed by `cargo xtask setup`)")?;
    ensure!(out.status.success(), "bpftool {kind} show: {}", out.status);
    let v: Value = serde_json::from_slice(&out.stdout)?;
    Ok(v.as_array()
        .into_iter()
        .flatten()
        .flat_map(|o| o["pinned"].as_array().cloned().unwrap_or_default())
        .filter_map(|p| p.as_str().map(str::to_string))
        .collect())
}

#[test]
fn load_pins_what_the_daemon_runs_and_unload_removes_it() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    ensure!(
        unsafe { libc::geteuid() } == 0,
        "needs root (loads eBPF programs)"
    );
    let dir = PathBuf::from(format!(
        "/sys/fs/bpf/redirector-load-test-{}",
        std::process::id()
    ));
    let d = dir.display().to_string();
    let said = redirector(&["ebpf", "load", "--pin", &d])?;
    let progs = pinned("prog")?;
    let maps = pinned("map")?;
    // Loading again replaces the pins instead of failing.
    let again = redirector(&["ebpf", "load", "--pin", &d]);
    let unloaded = redirector(&["ebpf", "unload", "--pin", &d])?;
    let progs_after = pinned("prog")?;
    let maps_after = pinned("map")?;

    for p in PROGRAMS {
        let path = format!("{d}/{p}");
        ensure!(
            progs.contains(&path),
            "program {path} not pinned: {progs:?}\n{said}"
        );
    }
    for m in MAPS {
        let path = format!("{d}/{m}");
        ensure!(maps.contains(&path), "map {path} not pinned: {maps:?}");
    }
    again?;
    ensure!(unloaded.contains("removed"), "{unloaded}");
    ensure!(!dir.exists(), "{d} still exists after unload");
    let left: Vec<_> = progs_after
        .iter()
        .chain(&maps_after)
        .filter(|p| p.starts_with(&d))
        .collect();
    ensure!(left.is_empty(), "pinned after unload: {left:?}");
    Ok(())
}
