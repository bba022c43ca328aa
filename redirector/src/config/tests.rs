//! Unit tests: one per validation rule, plus defaults and resolution.

use super::*;

const FILE: &str = "/etc/redirector/test.toml";

const MINIMAL: &str = r#"
[[auth.users]]
name = "app"
password = "secret"

[[servers]]
name = "db1"
address = "127.0.0.1:3307"
"#;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new(FILE))
}

/// Parses `text`, expecting an error whose message contains `needle`, and
/// checks the message is one line naming the file.
fn err(text: &str, needle: &str) -> ConfigError {
    let e = parse(text).expect_err("config should be rejected");
    let msg = e.to_string();
    assert!(msg.contains(needle), "message {msg:?} lacks {needle:?}");
    assert!(
        msg.starts_with(FILE),
        "message {msg:?} does not name the file"
    );
    assert!(!msg.contains('\n'), "message {msg:?} is not one line");
    e
}

#[test]
fn minimal_config_gets_defaults() {
    let c = parse(MINIMAL).unwrap();
    assert_eq!(c.listen.address, "127.0.0.1:3306".parse().unwrap());
    assert_eq!(c.listen.max_connections, 1000);
    assert_eq!(c.listen.handshake_timeout, Duration::from_millis(10_000));
    assert_eq!(c.listen.max_handshakes, 256);
    assert_eq!(c.listen.net_read_timeout, Duration::from_millis(30_000));
    assert_eq!(c.listen.max_buffered_bytes, 512 << 20);
    assert_eq!(c.datapath.mode, DatapathMode::Auto);
    assert!(c.datapath.cgroup.starts_with("/sys/fs/cgroup"));
    assert_eq!(c.datapath.ebpf_object, None);
    assert_eq!(c.admin.sql_address, "127.0.0.1:6033".parse().unwrap());
    assert_eq!(c.admin.http_address, "127.0.0.1:9104".parse().unwrap());
    assert_eq!(c.admin.user, "admin");
    assert_eq!(c.admin.limits, AdminLimits::default());
    assert_eq!(c.admin.limits.sql_max_connections, 64);
    assert_eq!(c.admin.limits.http_max_body_bytes, 1 << 20);
    assert_eq!(c.servers.len(), 1);
    assert_eq!(c.servers[0].weight, 1);
    assert_eq!(c.policy_source, PolicySource::Default);
    assert_eq!(
        c.policy().scaling_policy(),
        Some(ScalingPolicy::SessionAutobalance)
    );
    assert_eq!(c.policy().weight_of("db1"), Some(1));
    assert_eq!(c.tls, None);
    assert!(!c.mover.failover_state_tracking);
    let opted_in = format!("{MINIMAL}\n[mover]\nfailover_state_tracking = true\n");
    assert!(parse(&opted_in).unwrap().mover.failover_state_tracking);
}

#[test]
fn cgroup_default_prefers_unified() {
    let c = parse(MINIMAL).unwrap();
    if Path::new("/sys/fs/cgroup/unified").is_dir() {
        assert_eq!(c.datapath.cgroup, PathBuf::from("/sys/fs/cgroup/unified"));
    } else {
        assert_eq!(c.datapath.cgroup, PathBuf::from("/sys/fs/cgroup"));
    }
}

#[test]
fn full_config_parses() {
    let dir = std::env::temp_dir().join(format!("redirector-config-full-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("cert.pem"), "x").unwrap();
    std::fs::write(dir.join("key.pem"), "x").unwrap();
    std::fs::write(
        dir.join("policy.json"),
        r#"{"version":1,"clusterResourceGroups":[{"groupId":"default","clusters":[{"clusterId":"db1","weight":10},{"clusterId":"db2","weight":20}],"scalingPolicy":"session-weighted"}]}"#,
    )
    .unwrap();
    let text = r#"
[listen]
address = "0.0.0.0:4306"
max_connections = 50
handshake_timeout_ms = 2500
max_handshakes = 20
net_read_timeout_ms = 2000
max_buffered_bytes = 1048576

[datapath]
mode = "userspace"
cgroup = "/sys/fs/cgroup"

[admin]
sql_address = "0.0.0.0:6033"
http_address = "0.0.0.0:9104"
user = "root"
password = "pw"
token = "t0k3n"

[auth]
service_user = "redirector"
service_password = "svc"
[[auth.users]]
name = "app"
password = "secret"
[[auth.users]]
name = "report"
password_hash = "*6BB4837EB74329105EE4568DDA7DC67ED2CA2AD9"

[[servers]]
name = "db1"
address = "localhost:3307"
weight = 10
[[servers]]
name = "db2"
address = "[::1]:3308"

[policy]
file = "policy.json"

[tls]
cert = "cert.pem"
key = "key.pem"
"#;
    let c = Config::parse(text, &dir.join("redirector.toml")).unwrap();
    assert_eq!(c.listen.address, "0.0.0.0:4306".parse().unwrap());
    assert_eq!(c.listen.max_connections, 50);
    assert_eq!(c.listen.handshake_timeout, Duration::from_millis(2500));
    assert_eq!(c.listen.max_handshakes, 20);
    assert_eq!(c.listen.net_read_timeout, Duration::from_millis(2000));
    assert_eq!(c.listen.max_buffered_bytes, 1 << 20);
    assert_eq!(c.datapath.mode, DatapathMode::Userspace);
    assert_eq!(c.admin.user, "root");
    assert_eq!(c.auth.service.as_ref().unwrap().user, "redirector");
    assert_eq!(c.auth.users.len(), 2);
    assert_eq!(
        c.auth.users[0].credential,
        Credential::Password("secret".into())
    );
    let Credential::NativeHash(h) = &c.auth.users[1].credential else {
        panic!("expected a hash");
    };
    assert_eq!(h[0], 0x6B);
    assert_eq!(h[19], 0xD9);
    // localhost resolves, IPv4 preferred.
    assert_eq!(c.servers[0].address, "127.0.0.1:3307".parse().unwrap());
    assert_eq!(c.servers[0].address_text, "localhost:3307");
    assert_eq!(c.servers[1].address, "[::1]:3308".parse().unwrap());
    assert_eq!(c.policy_source, PolicySource::File(dir.join("policy.json")));
    assert_eq!(
        c.policy().scaling_policy(),
        Some(ScalingPolicy::SessionWeighted)
    );
    assert_eq!(c.policy().weight_of("db2"), Some(20));
    assert_eq!(c.tls.as_ref().unwrap().cert, dir.join("cert.pem"));
    // Secrets stay out of Debug output (it may end up in logs).
    let debug = format!("{c:?}");
    for secret in ["secret", "svc", "\"pw\"", "t0k3n", "6BB4837E"] {
        assert!(!debug.contains(secret), "{secret} leaked in {debug}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn load_reads_a_file_and_reports_missing_ones() {
    let dir = std::env::temp_dir().join(format!("redirector-config-load-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("c.toml");
    std::fs::write(&path, MINIMAL).unwrap();
    assert_eq!(Config::load(&path).unwrap().servers[0].name, "db1");
    let e = Config::load(dir.join("absent.toml")).unwrap_err();
    assert!(matches!(e, ConfigError::Read { .. }));
    assert!(e.to_string().contains("cannot read config file"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn unknown_keys_are_rejected_with_position() {
    let e = err(
        &format!("{MINIMAL}\n[listen]\naddress = \"127.0.0.1:3306\"\nbogus = 1\n"),
        "unknown field `bogus`",
    );
    let ConfigError::Syntax { line, .. } = e else {
        panic!("expected a syntax error, got {e:?}");
    };
    assert_eq!(line, 12);
    err(
        &format!("{MINIMAL}\n[nonsense]\n"),
        "unknown field `nonsense`",
    );
    err(
        &MINIMAL.replace(
            "password = \"secret\"",
            "password = \"secret\"\npasword = \"x\"",
        ),
        "unknown field `pasword`",
    );
    err(
        &format!("{MINIMAL}weight = 1\nport = 3\n"),
        "unknown field `port`",
    );
}

#[test]
fn toml_syntax_errors_keep_line_and_column() {
    let e = err("[listen]\naddress = \n", "test.toml:2:");
    assert!(matches!(e, ConfigError::Syntax { line: 2, .. }), "{e:?}");
    err(
        &format!("{MINIMAL}\n[datapath]\nmode = \"fast\"\n"),
        "unknown variant `fast`",
    );
    err(
        &format!("{MINIMAL}\n[listen]\nmax_connections = \"many\"\n"),
        "invalid type",
    );
}

#[test]
fn bad_addresses_are_rejected() {
    err(
        &format!("{MINIMAL}\n[listen]\naddress = \"nonsense\"\n"),
        "listen.address = \"nonsense\": expected host:port",
    );
    err(
        &MINIMAL.replace("127.0.0.1:3307", "127.0.0.1:99999"),
        "servers[0].address = \"127.0.0.1:99999\": port \"99999\" is not a number",
    );
    err(
        &MINIMAL.replace("127.0.0.1:3307", "no-such-host.invalid:3307"),
        "servers[0].address = \"no-such-host.invalid:3307\": cannot resolve host",
    );
    err(
        &MINIMAL.replace("127.0.0.1:3307", "::1:3307"),
        "need brackets",
    );
    err(&MINIMAL.replace("127.0.0.1:3307", ":3307"), "missing host");
    err(&MINIMAL.replace("127.0.0.1:3307", "127.0.0.1:0"), "port 0");
    err(
        &MINIMAL.replace("127.0.0.1:3307", "0.0.0.0:3307"),
        "unspecified address",
    );
    err(
        &format!("{MINIMAL}\n[admin]\nsql_address = \"127.0.0.1\"\n"),
        "admin.sql_address = \"127.0.0.1\"",
    );
}

#[test]
fn duplicate_server_names_are_rejected() {
    let e = err(
        &format!("{MINIMAL}\n[[servers]]\nname = \"db1\"\naddress = \"127.0.0.1:3308\"\n"),
        "duplicate server name \"db1\" (servers[0] and servers[1])",
    );
    assert!(matches!(e, ConfigError::DuplicateServer { .. }));
}

#[test]
fn bad_server_names_are_rejected() {
    err(
        &MINIMAL.replace("\"db1\"", "\"db 1\""),
        "servers[0].name = \"db 1\"",
    );
    err(&MINIMAL.replace("\"db1\"", "\"\""), "must not be empty");
}

#[test]
fn non_positive_weights_are_rejected() {
    err(
        &format!("{MINIMAL}weight = 0\n"),
        "servers[0].weight = 0: must be between 1 and 4294967295",
    );
    err(
        &format!("{MINIMAL}weight = -3\n"),
        "servers[0].weight = -3: must be between 1 and 4294967295",
    );
    err(
        &format!("{MINIMAL}weight = 1.5\n"),
        "invalid type: floating point",
    );
}

#[test]
fn listen_limits_are_checked() {
    err(
        &format!("{MINIMAL}\n[listen]\nmax_connections = 0\n"),
        "listen.max_connections = 0: must be between 1",
    );
    err(
        &format!("{MINIMAL}\n[listen]\nhandshake_timeout_ms = -1\n"),
        "listen.handshake_timeout_ms = -1",
    );
}

#[test]
fn admin_limits_are_read_and_checked() {
    let c = parse(&format!(
        "{MINIMAL}\n[admin]\nsql_max_connections = 3\nsql_login_timeout_ms = 700\nsql_query_timeout_ms = 750\nhttp_max_connections = 4\nhttp_header_timeout_ms = 800\nhttp_body_timeout_ms = 900\nhttp_max_body_bytes = 1000\nauth_backoff_initial_ms = 10\nauth_backoff_max_ms = 20\n"
    ))
    .unwrap();
    let l = &c.admin.limits;
    assert_eq!((l.sql_max_connections, l.http_max_connections), (3, 4));
    assert_eq!(l.sql_login_timeout, Duration::from_millis(700));
    assert_eq!(l.sql_query_timeout, Duration::from_millis(750));
    assert_eq!(l.http_header_timeout, Duration::from_millis(800));
    assert_eq!(l.http_body_timeout, Duration::from_millis(900));
    assert_eq!(l.http_max_body_bytes, 1000);
    assert_eq!(
        (l.auth_backoff_initial, l.auth_backoff_max),
        (Duration::from_millis(10), Duration::from_millis(20))
    );
    err(
        &format!("{MINIMAL}\n[admin]\nsql_max_connections = 0\n"),
        "admin.sql_max_connections = 0: must be between 1",
    );
    err(
        &format!("{MINIMAL}\n[admin]\nhttp_header_timeout_ms = -5\n"),
        "admin.http_header_timeout_ms = -5",
    );
    let off = parse(&format!(
        "{MINIMAL}\n[admin]\nauth_backoff_initial_ms = 0\n"
    ))
    .unwrap();
    assert_eq!(off.admin.limits.auth_backoff_initial, Duration::ZERO);
    err(
        &format!("{MINIMAL}\n[admin]\nauth_backoff_initial_ms = 50\nauth_backoff_max_ms = 20\n"),
        "admin.auth_backoff_initial_ms = 50: must not exceed admin.auth_backoff_max_ms",
    );
}

#[test]
fn no_servers_is_rejected() {
    let e = err(
        "[[auth.users]]\nname = \"app\"\npassword = \"x\"\n",
        "no servers: configure at least one [[servers]] entry",
    );
    assert!(matches!(e, ConfigError::NoServers { .. }));
}

#[test]
fn missing_client_accounts_are_rejected() {
    let e = err(
        "[[servers]]\nname = \"db1\"\naddress = \"127.0.0.1:3307\"\n",
        "no client accounts: configure [[auth.users]] or auth.service_user",
    );
    assert!(matches!(e, ConfigError::NoClientAccounts { .. }));
    // A service user alone is enough.
    parse("[auth]\nservice_user = \"svc\"\nservice_password = \"\"\n[[servers]]\nname = \"db1\"\naddress = \"127.0.0.1:3307\"\n")
        .unwrap();
    err(
        "[auth]\nservice_user = \"svc\"\n[[servers]]\nname = \"db1\"\naddress = \"127.0.0.1:3307\"\n",
        "missing auth.service_password",
    );
}

#[test]
fn user_credentials_need_exactly_one_form() {
    err(
        &MINIMAL.replace("password = \"secret\"", ""),
        "auth.users[0] (\"app\"): set exactly one of password or password_hash",
    );
    err(
        &MINIMAL.replace(
            "password = \"secret\"",
            "password = \"secret\"\npassword_hash = \"*6BB4837EB74329105EE4568DDA7DC67ED2CA2AD9\"",
        ),
        "set exactly one of password or password_hash",
    );
    err(
        &format!("{MINIMAL}\n[[auth.users]]\nname = \"app\"\npassword = \"y\"\n"),
        "duplicate user name \"app\"",
    );
}

#[test]
fn bad_password_hashes_are_rejected() {
    let with_hash =
        |h: &str| MINIMAL.replace("password = \"secret\"", &format!("password_hash = \"{h}\""));
    // Lower case is accepted (MariaDB prints upper case, people retype it).
    parse(&with_hash("*6bb4837eb74329105ee4568dda7dc67ed2ca2ad9")).unwrap();
    let e = err(
        &with_hash("6BB4837EB74329105EE4568DDA7DC67ED2CA2AD9"),
        "auth.users[0] (\"app\").password_hash: must start with '*'",
    );
    assert!(matches!(e, ConfigError::InvalidPasswordHash { .. }));
    err(&with_hash("*6BB4837E"), "got 8 characters after '*'");
    err(
        &with_hash("*6BB4837EB74329105EE4568DDA7DC67ED2CA2AZ9"),
        "non-hex character",
    );
    // Multibyte text of the right byte length must not panic.
    err(
        &with_hash(&format!("*a{}a", "é".repeat(19))),
        "non-hex character",
    );
    // The hash is a credential: it is not echoed.
    let e = parse(&with_hash("*6BB4837EB74329105EE4568DDA7DC67ED2CA2AZ9")).unwrap_err();
    assert!(!e.to_string().contains("6BB4837E"));
}

#[test]
fn user_plugin_is_parsed_and_checked() {
    let c = parse(MINIMAL).unwrap();
    assert_eq!(c.auth.users[0].plugin, UserPlugin::Native);
    let with = |extra: &str| MINIMAL.replace("password = \"secret\"", extra);
    let c = parse(&with("password = \"secret\"\nplugin = \"ed25519\"")).unwrap();
    assert_eq!(c.auth.users[0].plugin, UserPlugin::Ed25519);
    let c = parse(&with(
        "password = \"secret\"\nplugin = \"mysql_native_password\"",
    ))
    .unwrap();
    assert_eq!(c.auth.users[0].plugin, UserPlugin::Native);
    let e = err(
        &with("password = \"secret\"\nplugin = \"pam\""),
        "auth.users[0] (\"app\").plugin: unknown plugin \"pam\"",
    );
    assert!(matches!(e, ConfigError::UserPlugin { .. }));
    err(
        &with(
            "password_hash = \"*6BB4837EB74329105EE4568DDA7DC67ED2CA2AD9\"\nplugin = \"ed25519\"",
        ),
        "needs the clear-text password",
    );
}

#[test]
fn policy_inline_is_parsed_and_checked() {
    let base = format!("{MINIMAL}\n[[servers]]\nname = \"db2\"\naddress = \"127.0.0.1:3308\"\n");
    let c = parse(&format!(
        "{base}\n[policy]\ninline = '''{{\"version\":1,\"clusterResourceGroups\":[{{\"groupId\":\"g\",\"clusters\":[{{\"clusterId\":\"db2\",\"weight\":5}}],\"scalingPolicy\":\"session-round-robin\"}}]}}'''\n"
    ))
    .unwrap();
    assert_eq!(c.policy_source, PolicySource::Inline);
    assert_eq!(
        c.policy().scaling_policy(),
        Some(ScalingPolicy::SessionRoundRobin)
    );
    assert_eq!(c.policy().weight_of("db1"), None);

    let e = err(
        &format!(
            "{base}\n[policy]\ninline = '{{\"version\":1,\"clusterResourceGroups\":[{{\"groupId\":\"g\",\"clusters\":[{{\"clusterId\":\"db9\",\"weight\":5}}],\"scalingPolicy\":\"session-weighted\"}}]}}'\n"
        ),
        "policy.inline: policy clusterId \"db9\" (group \"g\") is not a configured server (known servers: db1, db2)",
    );
    assert!(matches!(
        e,
        ConfigError::Policy {
            error: PolicyError::UnknownServer { .. },
            ..
        }
    ));
    err(
        &format!("{base}\n[policy]\ninline = '{{\"version\": 1,'\n"),
        "policy.inline: invalid policy JSON: EOF while parsing a value at line 1 column 14",
    );
    err(&format!("{base}\n[policy]\n"), "[policy] needs one of them");
    err(
        &format!("{base}\n[policy]\nfile = \"p.json\"\ninline = \"{{}}\"\n"),
        "not both",
    );
}

#[test]
fn policy_file_is_relative_to_the_config() {
    let dir = std::env::temp_dir().join(format!("redirector-config-policy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("r.toml");
    let text = format!("{MINIMAL}\n[policy]\nfile = \"p.json\"\n");
    let e = Config::parse(&text, &config).unwrap_err();
    assert!(e.to_string().contains("cannot read policy file"), "{e}");
    std::fs::write(
        dir.join("p.json"),
        "{\n \"version\": 1,\n \"clusterResourceGroups\": [\n  {\"groupId\": \"g\", \"clusters\": [{\"clusterId\": \"db1\", \"weight\": -1}], \"scalingPolicy\": \"session-weighted\"}]}",
    )
    .unwrap();
    let msg = Config::parse(&text, &config).unwrap_err().to_string();
    assert!(
        msg.contains(&format!("policy file {}", dir.join("p.json").display())),
        "{msg}"
    );
    assert!(msg.contains("got -1 at line 4"), "{msg}");
    std::fs::write(
        dir.join("p.json"),
        r#"{"version":1,"clusterResourceGroups":[{"groupId":"g","clusters":[{"clusterId":"db1","weight":3}],"scalingPolicy":"session-weighted"}]}"#,
    )
    .unwrap();
    let c = Config::parse(&text, &config).unwrap();
    assert_eq!(c.policy().weight_of("db1"), Some(3));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn non_loopback_admin_needs_credentials() {
    err(
        &format!("{MINIMAL}\n[admin]\nsql_address = \"0.0.0.0:6033\"\ntoken = \"t\"\n"),
        "admin.sql_address = \"0.0.0.0:6033\" is not a loopback address, so admin.password must be set",
    );
    err(
        &format!("{MINIMAL}\n[admin]\nhttp_address = \"0.0.0.0:9104\"\npassword = \"p\"\n"),
        "admin.http_address = \"0.0.0.0:9104\" is not a loopback address, so admin.token must be set",
    );
    err(
        &format!("{MINIMAL}\n[admin]\nhttp_address = \"0.0.0.0:9104\"\ntoken = \"\"\n"),
        "admin.token must be set",
    );
    // Loopback without credentials is fine, IPv6 and mapped loopback included.
    parse(&format!(
        "{MINIMAL}\n[admin]\nsql_address = \"[::1]:6033\"\nhttp_address = \"[::ffff:127.0.0.1]:9104\"\n"
    ))
    .unwrap();
}

#[test]
fn listeners_must_not_share_an_address() {
    err(
        &format!("{MINIMAL}\n[admin]\nsql_address = \"127.0.0.1:3306\"\n"),
        "admin.sql_address = \"127.0.0.1:3306\": same address as listen.address",
    );
}

#[test]
fn tls_files_must_exist() {
    err(
        &format!(
            "{MINIMAL}\n[tls]\ncert = \"/nonexistent/cert.pem\"\nkey = \"/nonexistent/key.pem\"\n"
        ),
        "tls.cert = \"/nonexistent/cert.pem\": cannot access file",
    );
    err(
        &format!("{MINIMAL}\n[tls]\ncert = \"/etc/hostname\"\n"),
        "missing field `key`",
    );
}

#[test]
fn datapath_files_are_checked() {
    err(
        &format!("{MINIMAL}\n[datapath]\nebpf_object = \"/nonexistent/x.o\"\n"),
        "datapath.ebpf_object = \"/nonexistent/x.o\"",
    );
    // Irrelevant in userspace mode.
    parse(&format!(
        "{MINIMAL}\n[datapath]\nmode = \"userspace\"\nebpf_object = \"/nonexistent/x.o\"\n"
    ))
    .unwrap();
    err(
        &format!("{MINIMAL}\n[datapath]\nmode = \"ebpf\"\ncgroup = \"/nonexistent/cg\"\n"),
        "datapath.cgroup = \"/nonexistent/cg\": not a directory",
    );
}

#[test]
fn validate_catches_programmatic_mistakes() {
    let mut c = parse(MINIMAL).unwrap();
    c.servers[0].weight = 0;
    assert!(c
        .validate()
        .unwrap_err()
        .to_string()
        .contains("servers[0].weight = 0"));
    let mut c = parse(MINIMAL).unwrap();
    c.servers.push(c.servers[0].clone());
    assert!(matches!(
        c.validate(),
        Err(ConfigError::DuplicateServer { .. })
    ));
}

#[test]
fn the_example_config_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/redirector.example.toml");
    let c = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert!(c.servers.len() >= 2);
    assert!(c.auth.service.is_some());
}

#[test]
fn helpers() {
    assert_eq!(
        resolve_socket_addr("localhost:3306").unwrap(),
        "127.0.0.1:3306".parse().unwrap()
    );
    assert!(resolve_socket_addr("localhost").is_err());
    assert_eq!(
        parse_native_hash(&format!("*{}", "00".repeat(20))).unwrap(),
        [0u8; 20]
    );
    assert!(validate_server_name("db-1.eu_west").is_ok());
    assert!(validate_server_name("db'1").is_err());
    assert_eq!(line_column("ab\ncd", 4), (2, 2));
    assert_eq!(one_line("a\n  |\nb\n"), "a; |; b");
}
