//! The `redirector` command line. (Also makes `cargo test` build the
//! binary, which the integration tests in tests/ run.)

use std::path::Path;
use std::process::Command;

fn redirector() -> Command {
    Command::new(env!("CARGO_BIN_EXE_redirector"))
}

#[test]
fn version_and_help() {
    let out = redirector().arg("--version").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("redirector "));
    let out = redirector().arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for sub in ["run", "check"] {
        assert!(help.contains(sub), "{help}");
    }
}

#[test]
fn check_accepts_the_example_and_rejects_a_missing_file() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/redirector.example.toml");
    let out = redirector()
        .arg("check")
        .arg("--config")
        .arg(&example)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("configuration is valid"));
    let out = redirector()
        .args(["check", "--config", "/nonexistent/redirector.toml"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/redirector.toml"), "{err}");
}
