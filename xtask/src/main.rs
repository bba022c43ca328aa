//! `cargo xtask …`: set-up, build, load and test helpers for redirector.
//!
//! Everything a fresh Debian bookworm machine needs is installed by `setup`,
//! and every other subcommand that needs it runs `setup` first, so the
//! README's two commands work on a bare machine.

mod bench;
mod demo;
mod fuzz;
mod layers;
mod profile;
mod setup;
mod util;

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

use util::{cmd, project_root, run};

#[derive(Parser)]
#[command(name = "xtask", about = "redirector development tasks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install every prerequisite (Debian packages, nightly rust-src, bpf-linker). Idempotent.
    Setup,
    /// Build the eBPF object and the daemon (release).
    Build,
    /// Load the eBPF programs and pin them under /sys/fs/bpf/redirector/.
    Load,
    /// Remove the pinned programs and maps.
    Unload,
    /// Build, then run `redirector ARGS` (as root).
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Start local MariaDB backends and the redirector in front of them; Ctrl-C stops all.
    Demo,
    /// The scripted demo check `test` runs (demo up, mariadb client, Ctrl-C).
    #[command(hide = true)]
    DemoCheck,
    /// The whole test suite (what .ci/run calls): setup, build, lint, tests.
    Test {
        /// Extra arguments passed to `cargo test` (e.g. a test name filter).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Benchmark: sysbench direct vs HAProxy vs redirector userspace vs eBPF,
    /// then move latency, memory per idle session and rebalance time.
    Bench {
        /// Length of each sysbench run.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Idle sessions for the memory and rebalance measurements.
        #[arg(long, default_value_t = 1000)]
        sessions: usize,
        /// Single-session moves timed for the latency percentiles.
        #[arg(long, default_value_t = 500)]
        latency_moves: usize,
    },
    /// Bounded fuzzing of every target in fuzz/ (cargo-fuzz, nightly); fails on a crash.
    Fuzz {
        /// Time per target.
        #[arg(long, default_value_t = 20)]
        seconds: u64,
        /// Run each target for this many executions instead of a time
        /// (e.g. 10000000 for the long run the hardening issue asks for).
        #[arg(long, conflicts_with = "seconds")]
        runs: Option<u64>,
        /// Only this target.
        #[arg(long)]
        target: Option<String>,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Setup => setup::setup(),
        Command::Build => {
            setup::setup()?;
            build()
        }
        Command::Load => {
            build()?;
            run(cmd(redirector_bin()).args(["ebpf", "load", "--pin", PIN_DIR]))
        }
        Command::Unload => unload(),
        Command::Run { args } => {
            build()?;
            run(cmd(redirector_bin()).args(args))
        }
        Command::Demo => {
            setup::setup()?;
            build()?;
            demo::demo(&redirector_bin())
        }
        Command::DemoCheck => demo::check(),
        Command::Test { args } => {
            setup::setup()?;
            // The daemon binary is built by `cargo test` itself (redirector
            // has integration tests), with the same features as the tests,
            // which saves a second release build of every dependency.
            build_ebpf()?;
            test(&args)
        }
        Command::Fuzz {
            seconds,
            runs,
            target,
        } => {
            setup::setup()?;
            let budget = runs.map_or(fuzz::Budget::Seconds(seconds), fuzz::Budget::Runs);
            fuzz::run_fuzz(budget, target.as_deref())
        }
        Command::Bench {
            seconds,
            sessions,
            latency_moves,
        } => {
            setup::setup()?;
            build()?;
            // The harness finds the daemon it just built.
            std::env::set_var("REDIRECTOR_BIN", redirector_bin());
            bench::bench(&bench::Options {
                seconds,
                idle_sessions: sessions,
                latency_moves,
            })
        }
    }
}

const PIN_DIR: &str = "/sys/fs/bpf/redirector";

fn ebpf_object() -> PathBuf {
    project_root().join("target/bpfel-unknown-none/release/redirector-ebpf")
}

fn redirector_bin() -> PathBuf {
    project_root().join("target/release/redirector")
}

/// Builds the eBPF object with nightly (build-std=core) and then the daemon,
/// which embeds that object.
fn build() -> Result<()> {
    build_ebpf()?;
    util::step("building the daemon (release)");
    let mut daemon = util::clean_cargo("stable");
    daemon
        .current_dir(project_root())
        .env("REDIRECTOR_EBPF_OBJECT", ebpf_object())
        .args(["build", "--release", "-p", "redirector", "--bins"]);
    run(&mut daemon)
}

fn build_ebpf() -> Result<()> {
    util::step("building eBPF programs (nightly, bpfel-unknown-none)");
    let mut ebpf = util::clean_cargo("nightly");
    ebpf.current_dir(project_root()).args([
        "build",
        "-Z",
        "build-std=core",
        "--target",
        "bpfel-unknown-none",
        "--release",
        "-p",
        "redirector-ebpf",
        "--bin",
        "redirector-ebpf",
    ]);
    run(&mut ebpf).context("building the eBPF object failed (is `cargo xtask setup` done?)")
}

/// Removes what `load` pinned, with the daemon's own `ebpf unload`.
fn unload() -> Result<()> {
    let bin = redirector_bin();
    if !bin.exists() {
        build()?;
    }
    run(cmd(bin).args(["ebpf", "unload", "--pin", PIN_DIR]))
}

fn test(extra: &[String]) -> Result<()> {
    let root = project_root();
    util::step("cargo fmt --check");
    run(util::clean_cargo("stable")
        .current_dir(&root)
        .args(["fmt", "--all", "--", "--check"]))?;
    util::step("cargo clippy --all-targets -- -D warnings");
    run(util::clean_cargo("stable").current_dir(&root).args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    util::step("bounded fuzzing (cargo fuzz, 15 s per target)");
    fuzz::run_fuzz(fuzz::Budget::Seconds(15), None)?;
    util::step("cargo test --release (builds the daemon too; integration tests need root and start real MariaDB servers)");
    let mut t = util::clean_cargo("stable");
    t.current_dir(&root)
        .env("REDIRECTOR_EBPF_OBJECT", ebpf_object())
        .env("REDIRECTOR_BIN", redirector_bin())
        .args(["test", "--workspace", "--release"]);
    if !extra.is_empty() {
        t.arg("--").args(extra);
    }
    let mut result = run(&mut t);
    if result.is_ok() && extra.is_empty() {
        util::step("demo check: `cargo xtask demo` serves a mariadb client, stops on Ctrl-C");
        result = demo::check();
    }
    // Every test bed stops its servers on drop, also when a test panics;
    // a leftover server is a bug in the suite.
    let left = redirector_tests::leftover_mariadbd();
    if !left.is_empty() {
        bail!("mariadbd processes left behind by the tests: {left:?}");
    }
    result
}
