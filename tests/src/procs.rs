//! Looking for server processes and directories left behind.

use std::fs;
use std::path::Path;

use crate::DIR_PREFIX;

/// PIDs of running `mariadbd` processes whose command line mentions the test
/// bed's directories (any test process, any bed). `cargo xtask` uses it to check
/// that nothing was left running.
pub fn leftover_mariadbd() -> Vec<u32> {
    mariadbd_pids_matching(DIR_PREFIX)
}

/// PIDs of running `mariadbd` processes whose command line contains `needle`
/// (e.g. one bed's root directory). Zombies have an empty command line and so
/// never match.
pub fn mariadbd_pids_matching(needle: &str) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        // The process may be gone by now: unreadable means not running.
        let Ok(raw) = fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let mut args = raw.split(|&b| b == 0).filter(|a| !a.is_empty());
        let Some(argv0) = args.next() else { continue };
        let exe = String::from_utf8_lossy(argv0);
        if exe.rsplit('/').next() != Some("mariadbd") {
            continue;
        }
        if args.any(|a| String::from_utf8_lossy(a).contains(needle)) {
            pids.push(pid);
        }
    }
    pids.sort_unstable();
    pids
}

/// Removes `<tmp>/redirector-testbed-<pid>-*` directories of processes that no
/// longer exist (their owner was killed before `Drop` could run; the servers
/// themselves died with it through the parent-death signal).
pub(crate) fn remove_stale_dirs(tmp: &Path) {
    let Ok(entries) = fs::read_dir(tmp) else {
        return;
    };
    let prefix = format!("{DIR_PREFIX}-");
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(&prefix)) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            tracing::debug!(dir = %entry.path().display(), "removing stale test bed directory");
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}
