use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context, Result};

pub fn project_root() -> PathBuf {
    // xtask/ lives directly under the workspace root.
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
}

pub fn step(what: &str) {
    println!("==> {what}");
}

pub fn cmd(program: impl AsRef<std::ffi::OsStr>) -> Command {
    Command::new(program)
}

/// A `cargo +TOOLCHAIN` command without the variables the outer `cargo xtask`
/// set, which would otherwise pin the child to the outer toolchain.
pub fn clean_cargo(toolchain: &str) -> Command {
    let mut c = Command::new("cargo");
    c.arg(format!("+{toolchain}"));
    for var in [
        "RUSTUP_TOOLCHAIN",
        "RUSTC",
        "RUSTDOC",
        "RUSTC_WRAPPER",
        "CARGO",
        "RUSTFLAGS",
    ] {
        c.env_remove(var);
    }
    // `cargo run` sets CARGO_PKG_*, CARGO_MANIFEST_DIR …; build scripts (ring,
    // cc) watch some of them, so leaving them in would rebuild those crates
    // whenever xtask and plain cargo alternate.
    for (var, _) in std::env::vars_os() {
        if let Some(name) = var.to_str() {
            if name.starts_with("CARGO_") && name != "CARGO_HOME" {
                c.env_remove(name);
            }
        }
    }
    c
}

pub fn run(c: &mut Command) -> Result<()> {
    let status = c
        .status()
        .with_context(|| format!("could not start {:?}", c.get_program()))?;
    if !status.success() {
        bail!("command failed ({status}): {c:?}");
    }
    Ok(())
}

/// Runs a command and returns its stdout if it succeeded.
pub fn output(c: &mut Command) -> Option<String> {
    let out = c.output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}
