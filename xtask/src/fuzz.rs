//! `cargo xtask fuzz`: bounded coverage-guided fuzzing with cargo-fuzz
//! (libFuzzer, nightly, AddressSanitizer) of every target in `fuzz/`.
//!
//! The committed seeds (`fuzz/seeds/<target>/`, real MariaDB 10.11 traffic)
//! are copied into `target/fuzz-corpus/<target>/`, which is what libFuzzer
//! reads and grows, so fuzzing never modifies the repository. Crash inputs
//! go to `target/fuzz-artifacts/<target>/` (kept, for reproducing with
//! `cargo +nightly fuzz run <target> <file>` in `fuzz/`).

use std::path::Path;
use std::process::Stdio;
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};

use std::process::Command;

use crate::util::{clean_cargo, project_root, step};

/// Every target in fuzz/Cargo.toml.
pub const TARGETS: &[&str] = &[
    "packet_framing",
    "handshake",
    "state_machine",
    "admin_sql",
    "rest_json",
];

/// How long each target is fuzzed.
#[derive(Debug, Clone, Copy)]
pub enum Budget {
    Seconds(u64),
    /// A number of executions (inputs run), however long that takes.
    Runs(u64),
}

/// Memory cap per fuzzing process; libFuzzer reports a crash above it.
const RSS_LIMIT_MB: u32 = 2048;

/// `cargo +nightly` without the variables `cargo run` set for xtask itself.
/// Build scripts (ring, libfuzzer-sys via cc) list e.g. CARGO_PKG_VERSION_MAJOR
/// in rerun-if-env-changed, so inheriting them would rebuild those crates
/// every time one alternates between `cargo xtask fuzz` and `cargo fuzz` by hand.
fn fuzz_cargo() -> Command {
    let mut c = clean_cargo("nightly");
    for (key, _) in std::env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        if key.starts_with("CARGO_PKG_")
            || matches!(
                key,
                "CARGO_CRATE_NAME"
                    | "CARGO_BIN_NAME"
                    | "CARGO_MANIFEST_PATH"
                    | "CARGO_MANIFEST_LINKS"
                    | "CARGO_PRIMARY_PACKAGE"
                    | "OUT_DIR"
            )
        {
            c.env_remove(key);
        }
    }
    c
}

/// Builds all targets once, then fuzzes each (`only`: just that one) for
/// `budget`. Fails on the first target that finds a crash (or fails to
/// build).
pub fn run_fuzz(budget: Budget, only: Option<&str>) -> Result<()> {
    if let Some(name) = only {
        ensure!(
            TARGETS.contains(&name),
            "no fuzz target {name:?} (targets: {})",
            TARGETS.join(", ")
        );
    }
    let root = project_root();
    let fuzz_dir = root.join("fuzz");
    let started = Instant::now();

    step("cargo +nightly fuzz build (all targets)");
    let build = Instant::now();
    let mut c = fuzz_cargo();
    c.current_dir(&fuzz_dir).args(["fuzz", "build"]);
    crate::util::run(&mut c).context(
        "building the fuzz targets failed (is cargo-fuzz installed? `cargo xtask setup`)",
    )?;
    println!("    built in {:.1}s", build.elapsed().as_secs_f64());

    for target in TARGETS.iter().filter(|t| only.is_none_or(|o| o == **t)) {
        let corpus = root.join("target/fuzz-corpus").join(target);
        let artifacts = root.join("target/fuzz-artifacts").join(target);
        seed_corpus(&fuzz_dir.join("seeds").join(target), &corpus)?;
        std::fs::create_dir_all(&artifacts)
            .with_context(|| format!("creating {}", artifacts.display()))?;
        step(&match budget {
            Budget::Seconds(s) => format!("fuzzing {target} for {s}s"),
            Budget::Runs(n) => format!("fuzzing {target} for {n} executions"),
        });
        fuzz_one(&fuzz_dir, target, &corpus, &artifacts, budget)?;
    }
    println!(
        "==> fuzzing: {} targets clean in {:.1}s",
        TARGETS.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Copies the committed seeds into the working corpus (existing corpus
/// entries from earlier runs are kept: they are what the fuzzer learnt).
fn seed_corpus(seeds: &Path, corpus: &Path) -> Result<()> {
    std::fs::create_dir_all(corpus).with_context(|| format!("creating {}", corpus.display()))?;
    let entries =
        std::fs::read_dir(seeds).with_context(|| format!("reading seeds {}", seeds.display()))?;
    for entry in entries {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            let to = corpus.join(format!("seed-{}", entry.file_name().to_string_lossy()));
            std::fs::copy(entry.path(), &to).with_context(|| {
                format!("copying {} to {}", entry.path().display(), to.display())
            })?;
        }
    }
    Ok(())
}

fn fuzz_one(
    fuzz_dir: &Path,
    target: &str,
    corpus: &Path,
    artifacts: &Path,
    budget: Budget,
) -> Result<()> {
    let started = Instant::now();
    let mut c = fuzz_cargo();
    c.current_dir(fuzz_dir)
        .args(["fuzz", "run", target])
        .arg(corpus)
        .arg("--")
        .arg(match budget {
            Budget::Seconds(s) => format!("-max_total_time={s}"),
            Budget::Runs(n) => format!("-runs={n}"),
        })
        .arg(format!("-rss_limit_mb={RSS_LIMIT_MB}"))
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        // Only the summary lines: per-input progress would flood CI logs.
        .arg("-print_final_stats=1")
        .stdout(Stdio::inherit())
        .stderr(Stdio::piped());
    let out = c
        .output()
        .with_context(|| format!("could not start cargo fuzz run {target}"))?;
    let log = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        // The whole log: the crash report, the input and how to reproduce.
        eprintln!("{log}");
        bail!(
            "fuzz target {target} failed ({}); crash inputs are in {}",
            out.status,
            artifacts.display()
        );
    }
    // libFuzzer's last status line ("#N<TAB>DONE cov: .. ft: .. corp: .. exec/s: ..")
    // and its final stats.
    if let Some(done) = log
        .lines()
        .rev()
        .find(|l| l.starts_with('#') && l.contains("DONE"))
    {
        println!("    {}", done.trim());
    }
    println!("    finished in {:.1}s", started.elapsed().as_secs_f64());
    for line in log.lines().filter(|l| {
        l.starts_with("stat::number_of_executed_units")
            || l.starts_with("stat::average_exec_per_sec")
            || l.starts_with("stat::peak_rss_mb")
    }) {
        println!("    {}", line.trim());
    }
    Ok(())
}
