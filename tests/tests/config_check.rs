//! `redirector check --config PATH` on the real binary: a valid config exits 0,
//! each invalid one exits non-zero with one specific error line on stderr.
//!
//! The binary: `$REDIRECTOR_BIN` if set; otherwise `cargo build -p redirector`
//! (same profile as this test, a no-op when fresh, so the binary is never
//! stale) and the result next to this test executable; if that build fails,
//! an existing `target/{release,debug}/redirector`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the workspace")
        .to_path_buf()
}

fn redirector_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("REDIRECTOR_BIN") {
            return PathBuf::from(bin);
        }
        // This executable is <target>/<profile>/deps/config_check-<hash>.
        let exe = std::env::current_exe().expect("current_exe");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("test executable lives in <target>/<profile>/deps")
            .to_path_buf();
        let release = profile_dir.file_name().is_some_and(|n| n == "release");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut build = Command::new(cargo);
        build
            .current_dir(workspace_root())
            .args(["build", "-p", "redirector", "--bin", "redirector"])
            .env(
                "CARGO_TARGET_DIR",
                profile_dir.parent().expect("target dir"),
            );
        if release {
            build.arg("--release");
        }
        let out = build.output().expect("running cargo build");
        let built = profile_dir.join("redirector");
        if out.status.success() && built.is_file() {
            return built;
        }
        let target = workspace_root().join("target");
        for candidate in [
            target.join("release/redirector"),
            target.join("debug/redirector"),
        ] {
            if candidate.is_file() {
                eprintln!(
                    "cargo build -p redirector failed; using existing {}",
                    candidate.display()
                );
                return candidate;
            }
        }
        panic!(
            "no redirector binary: cargo build -p redirector failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    })
}

/// A scratch directory removed on drop (no extra crate needed for this).
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "redirector-config-check-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn check_file(path: &Path) -> Output {
    Command::new(redirector_bin())
        .args(["check", "--config"])
        .arg(path)
        // Keep stderr to the error line only.
        .env("RUST_LOG", "off")
        .output()
        .expect("running redirector")
}

fn check(text: &str) -> Output {
    let dir = TempDir::new();
    let path = dir.0.join("redirector.toml");
    std::fs::write(&path, text).expect("write config");
    check_file(&path)
}

/// Asserts the config is rejected with exactly one stderr line containing
/// `needle` (and naming the file).
fn assert_rejected(text: &str, needle: &str) {
    let out = check(text);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "config was accepted, expected {needle:?}:\n{text}"
    );
    assert!(
        stderr.contains(needle),
        "stderr {stderr:?} lacks {needle:?}"
    );
    assert!(
        stderr.contains("redirector.toml"),
        "stderr {stderr:?} does not name the file"
    );
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "stderr is not one line: {stderr:?}"
    );
}

const VALID: &str = r#"
[listen]
address = "127.0.0.1:4306"

[[auth.users]]
name = "app"
password = "secret"

[[servers]]
name = "db1"
address = "127.0.0.1:3307"
weight = 10
"#;

#[test]
fn valid_config_exits_zero() {
    let out = check(VALID);
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("configuration is valid (1 servers)"),
        "{stdout}"
    );
}

#[test]
fn example_config_is_valid() {
    let out = check_file(&workspace_root().join("docs/redirector.example.toml"));
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("(2 servers)"));
}

#[test]
fn missing_file_is_rejected() {
    let out = check_file(Path::new("/nonexistent/redirector.toml"));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read config file"));
}

#[test]
fn unknown_key_is_rejected() {
    assert_rejected(
        &format!("{VALID}colour = \"blue\"\n"),
        "redirector.toml:13:1: unknown field `colour`, expected one of `name`, `address`, `weight`",
    );
    assert_rejected(&format!("[listn]\n{VALID}"), "unknown field `listn`");
}

#[test]
fn toml_syntax_error_is_rejected_with_position() {
    assert_rejected(&format!("{VALID}weight = \n"), "redirector.toml:13:");
}

#[test]
fn bad_address_is_rejected() {
    assert_rejected(
        &VALID.replace("127.0.0.1:4306", "localhost"),
        "listen.address = \"localhost\": expected host:port",
    );
    assert_rejected(
        &VALID.replace("127.0.0.1:3307", "no-such-host.invalid:3307"),
        "servers[0].address = \"no-such-host.invalid:3307\": cannot resolve host",
    );
}

#[test]
fn duplicate_server_names_are_rejected() {
    assert_rejected(
        &format!("{VALID}\n[[servers]]\nname = \"db1\"\naddress = \"127.0.0.1:3308\"\n"),
        "duplicate server name \"db1\" (servers[0] and servers[1])",
    );
}

#[test]
fn zero_and_negative_weights_are_rejected() {
    assert_rejected(
        &VALID.replace("weight = 10", "weight = 0"),
        "servers[0].weight = 0: must be between 1 and 4294967295",
    );
    assert_rejected(
        &VALID.replace("weight = 10", "weight = -5"),
        "servers[0].weight = -5: must be between 1 and 4294967295",
    );
}

#[test]
fn missing_users_are_rejected() {
    assert_rejected(
        &VALID.replace(
            "[[auth.users]]\nname = \"app\"\npassword = \"secret\"\n",
            "",
        ),
        "no client accounts: configure [[auth.users]] or auth.service_user",
    );
}

#[test]
fn bad_password_hash_is_rejected() {
    assert_rejected(
        &VALID.replace(
            "password = \"secret\"",
            "password_hash = \"*6BB4837EB74329105EE4568DDA7DC67ED2CA2AD\"",
        ),
        "auth.users[0] (\"app\").password_hash: must be '*' followed by 40 hex digits, got 39 characters after '*'",
    );
}

#[test]
fn policy_naming_unknown_server_is_rejected() {
    let dir = TempDir::new();
    std::fs::write(
        dir.0.join("policy.json"),
        r#"{ "version": 1, "clusterResourceGroups": [ { "groupId": "default",
             "clusters": [ { "clusterId": "db1", "weight": 1 }, { "clusterId": "db7", "weight": 2 } ],
             "scalingPolicy": "session-weighted" } ] }"#,
    )
    .expect("write policy");
    let path = dir.0.join("redirector.toml");
    std::fs::write(
        &path,
        format!("{VALID}\n[policy]\nfile = \"policy.json\"\n"),
    )
    .expect("write config");
    let out = check_file(&path);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(
            "policy clusterId \"db7\" (group \"default\") is not a configured server (known servers: db1)"
        ),
        "{stderr}"
    );
    assert!(stderr.contains("policy.json"), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");

    // The same document inline, and one the file resolves correctly.
    assert_rejected(
        &format!(
            "{VALID}\n[policy]\ninline = '{{\"version\":1,\"clusterResourceGroups\":[{{\"groupId\":\"g\",\"clusters\":[{{\"clusterId\":\"db7\",\"weight\":1}}],\"scalingPolicy\":\"session-autobalance\"}}]}}'\n"
        ),
        "policy.inline: policy clusterId \"db7\"",
    );
}

/// The fenced blocks of a Markdown document preceded by an HTML comment
/// marker line: `(marker text, info string, body)`.
fn marked_blocks(doc: &str) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    let mut lines = doc.lines();
    while let Some(line) = lines.next() {
        let Some(marker) = line
            .trim()
            .strip_prefix("<!--")
            .and_then(|m| m.strip_suffix("-->"))
        else {
            continue;
        };
        let Some(fence) = lines.by_ref().find(|l| !l.trim().is_empty()) else {
            break;
        };
        let Some(info) = fence.trim().strip_prefix("```") else {
            panic!("marker <!--{marker}--> is not followed by a fenced block");
        };
        let body: Vec<&str> = lines.by_ref().take_while(|l| l.trim() != "```").collect();
        out.push((
            marker.trim().to_owned(),
            info.trim().to_owned(),
            body.join("\n") + "\n",
        ));
    }
    out
}

/// docs/configuration.md: every ```toml block marked `<!-- tested -->` is a
/// valid configuration for `redirector check`, with the files it references
/// present: the blocks marked `<!-- file: NAME -->` (the policy.json) and a
/// real self-signed TLS pair under tls/.
#[test]
fn configuration_doc_examples_are_valid() {
    let doc = std::fs::read_to_string(workspace_root().join("docs/configuration.md"))
        .expect("read docs/configuration.md");
    let blocks = marked_blocks(&doc);
    let dir = TempDir::new();
    for (marker, _, body) in &blocks {
        if let Some(name) = marker.strip_prefix("file:") {
            std::fs::write(dir.0.join(name.trim()), body).expect("write doc file");
        }
    }
    let tls = dir.0.join("tls");
    std::fs::create_dir_all(&tls).expect("create tls dir");
    let pair = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
        .expect("generate a self-signed certificate");
    std::fs::write(tls.join("cert.pem"), pair.cert.pem()).expect("write cert");
    std::fs::write(tls.join("key.pem"), pair.key_pair.serialize_pem()).expect("write key");

    let tested: Vec<&String> = blocks
        .iter()
        .filter(|(marker, _, _)| marker == "tested")
        .map(|(_, info, body)| {
            assert_eq!(info, "toml", "a tested block must be ```toml");
            body
        })
        .collect();
    assert!(
        tested.len() >= 3,
        "expected the complete, minimal and service-user examples, found {} tested blocks",
        tested.len()
    );
    assert!(
        tested
            .iter()
            .any(|b| b.contains("[tls]") && b.contains("file = \"policy.json\"")),
        "the complete example (with [tls] and a policy file) is not marked tested"
    );
    for (i, body) in tested.iter().enumerate() {
        let path = dir.0.join(format!("example-{i}.toml"));
        std::fs::write(&path, body).expect("write example");
        let out = check_file(&path);
        assert!(
            out.status.success(),
            "docs/configuration.md tested block #{i} is rejected: {}\n{body}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("configuration is valid"),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    // The check is not vacuous: the complete example fails without its policy file.
    std::fs::remove_file(dir.0.join("policy.json")).expect("remove policy.json");
    let complete = tested
        .iter()
        .position(|b| b.contains("[tls]"))
        .expect("complete example");
    let out = check_file(&dir.0.join(format!("example-{complete}.toml")));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read policy file"));
}
