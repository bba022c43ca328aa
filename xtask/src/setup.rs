//! Idempotent installation of everything the build and the tests need.
//! Each step checks first, so a second run takes seconds.

use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::util::{cmd, output, run, step};

/// Debian packages: the test bed (MariaDB, Galera, sysbench, HAProxy) and
/// what bpf-linker links against (LLVM 22 from bookworm-security).
const PACKAGES: &[&str] = &[
    "mariadb-server",
    "mariadb-client",
    "galera-4",
    "rsync",
    "sysbench",
    "haproxy",
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    "zlib1g-dev",
    "bpftool",
    "iproute2",
    // `cargo xtask bench`'s scheduler profile (perf record of sched tracepoints).
    "linux-perf",
];

const BPF_LINKER_VERSION: &str = "0.13.0";
/// cargo-fuzz (`cargo xtask fuzz`); 0.13.2 installs with --locked on Rust 1.95.
const CARGO_FUZZ_VERSION: &str = "0.13.2";
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";

pub fn setup() -> Result<()> {
    let started = Instant::now();
    apt_packages()?;
    nightly_rust_src()?;
    bpf_linker()?;
    cargo_fuzz()?;
    rmem_max()?;
    println!(
        "==> setup complete in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn is_installed(pkg: &str) -> bool {
    output(cmd("dpkg-query").args(["-W", "-f=${db:Status-Abbrev}", pkg]))
        .map(|s| s.starts_with("ii"))
        .unwrap_or(false)
}

fn apt_packages() -> Result<()> {
    let missing: Vec<&str> = PACKAGES
        .iter()
        .copied()
        .filter(|p| !is_installed(p))
        .collect();
    if missing.is_empty() {
        println!("==> Debian packages: all {} present", PACKAGES.len());
        return Ok(());
    }
    if !is_root() {
        bail!(
            "Debian packages missing ({}) and not running as root; install them or rerun as root",
            missing.join(" ")
        );
    }
    step(&format!(
        "installing Debian packages: {}",
        missing.join(" ")
    ));
    run(cmd("apt-get").arg("update").arg("-q")).context("apt-get update failed")?;
    // Keep the distribution's own MariaDB/HAProxy services from starting on
    // install: the tests start their own servers on free ports.
    let policy = Path::new("/usr/sbin/policy-rc.d");
    let wrote_policy = if policy.exists() {
        false
    } else {
        std::fs::write(policy, "#!/bin/sh\nexit 101\n").context("writing policy-rc.d")?;
        set_mode(policy, 0o755)?;
        true
    };
    let result = run(cmd("apt-get")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .args([
            "install",
            "-y",
            "-q",
            "--no-install-recommends",
            "-o",
            "Dpkg::Options::=--force-confdef",
            "-o",
            "Dpkg::Options::=--force-confold",
        ])
        .args(&missing));
    if wrote_policy {
        let _ = std::fs::remove_file(policy);
    }
    result.context("apt-get install failed")?;
    let still: Vec<&str> = missing
        .iter()
        .copied()
        .filter(|p| !is_installed(p))
        .collect();
    if !still.is_empty() {
        bail!("packages still missing after install: {}", still.join(" "));
    }
    Ok(())
}

fn nightly_rust_src() -> Result<()> {
    let installed = output(cmd("rustup").args([
        "component",
        "list",
        "--toolchain",
        "nightly",
        "--installed",
    ]))
    .context(
        "`rustup component list --toolchain nightly` failed: is the nightly toolchain installed?",
    )?;
    if installed.lines().any(|l| l.trim().starts_with("rust-src")) {
        println!("==> nightly rust-src: present");
        return Ok(());
    }
    step("rustup component add rust-src --toolchain nightly");
    run(cmd("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))
}

fn bpf_linker() -> Result<()> {
    if let Some(v) = output(cmd("bpf-linker").arg("--version")) {
        if v.contains(BPF_LINKER_VERSION) {
            println!("==> bpf-linker {BPF_LINKER_VERSION}: present");
            return Ok(());
        }
        println!(
            "==> bpf-linker present but not {BPF_LINKER_VERSION} ({}); reinstalling",
            v.trim()
        );
    }
    step(&format!(
        "building bpf-linker {BPF_LINKER_VERSION} against LLVM 22 (takes a few minutes)"
    ));
    let path = format!(
        "{LLVM_PREFIX}/bin:{}",
        std::env::var("PATH").unwrap_or_default()
    );
    let mut c = crate::util::clean_cargo("stable");
    c.env("LLVM_PREFIX", LLVM_PREFIX).env("PATH", path).args([
        "install",
        "bpf-linker",
        "--version",
        BPF_LINKER_VERSION,
        "--force",
        "--no-default-features",
        "--features",
        "llvm-22",
    ]);
    run(&mut c).context("cargo install bpf-linker failed")?;
    if output(cmd("bpf-linker").arg("--version")).is_none() {
        bail!("bpf-linker installed but not on PATH (is ~/.cargo/bin on PATH?)");
    }
    Ok(())
}

/// `cargo fuzz` for the bounded fuzzing in `cargo xtask fuzz` / `test`.
/// Any installed version is accepted; a fresh install is pinned and
/// `--locked` so that a newer dependency cannot break it on our Rust.
fn cargo_fuzz() -> Result<()> {
    if let Some(v) = output(crate::util::clean_cargo("stable").args(["fuzz", "--version"])) {
        println!("==> {}: present", v.trim());
        return Ok(());
    }
    step(&format!(
        "cargo install cargo-fuzz {CARGO_FUZZ_VERSION} --locked (takes about 2 minutes)"
    ));
    run(crate::util::clean_cargo("stable").args([
        "install",
        "cargo-fuzz",
        "--version",
        CARGO_FUZZ_VERSION,
        "--locked",
    ]))
    .context("cargo install cargo-fuzz failed")?;
    if output(crate::util::clean_cargo("stable").args(["fuzz", "--version"])).is_none() {
        bail!("cargo-fuzz installed but `cargo fuzz` does not run (is ~/.cargo/bin on PATH?)");
    }
    Ok(())
}

/// The kernel session path asks for a 4 MiB receive buffer on application
/// sockets (redirected bytes never grow it on their own); the kernel caps the
/// request at `net.core.rmem_max`, 208 KiB by default on Debian. Raised for
/// this machine's tests and benchmarks (runtime only; docs/configuration.md
/// tells operators the same).
fn rmem_max() -> Result<()> {
    const PATH: &str = "/proc/sys/net/core/rmem_max";
    const WANT: u64 = 4 << 20;
    let now: u64 = std::fs::read_to_string(PATH)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    if now >= WANT || !is_root() {
        println!("==> net.core.rmem_max = {now}");
        return Ok(());
    }
    step(&format!("net.core.rmem_max {now} -> {WANT}"));
    std::fs::write(PATH, WANT.to_string()).context("raising net.core.rmem_max")
}

fn is_root() -> bool {
    output(cmd("id").arg("-u"))
        .map(|s| s.trim() == "0")
        .unwrap_or(false)
}

fn set_mode(p: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", p.display()))
}
