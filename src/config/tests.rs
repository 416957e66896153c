use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use pingora_core::server::configuration::ServerConf;

use super::*;

fn no_env(_: &str) -> Option<String> {
    None
}

fn parse(yaml: &str) -> Result<Config, ConfigError> {
    parse_str(yaml, &no_env)
}

fn parse_env(yaml: &str, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    parse_str(yaml, &move |k: &str| map.get(k).cloned())
}

fn err(yaml: &str) -> ConfigError {
    parse(yaml).expect_err("expected a config error")
}

fn manifest_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

#[test]
fn defaults_from_empty_file() {
    for yaml in [
        "",
        "---\n",
        "{}",
        "gateway:\n",
        "gateway: {}\n",
        "gateway: ~\n",
    ] {
        let c = parse(yaml).unwrap();
        let g = &c.gateway;
        assert_eq!(g.listen, "0.0.0.0:8080".parse().unwrap(), "{yaml:?}");
        assert_eq!(g.public_url, "http://localhost:8080");
        assert_eq!(g.upstream.url.host, "api.openai.com");
        assert_eq!(g.upstream.url.port, 443);
        assert!(g.upstream.url.tls);
        assert_eq!(g.upstream.url.base_path, "/v1");
        assert_eq!(
            g.upstream.url.chat_completions_path(),
            "/v1/chat/completions"
        );
        assert!(g.upstream.api_key.is_none());
        assert_eq!(g.upstream.connect_timeout, Duration::from_millis(10_000));
        assert_eq!(g.upstream.read_timeout, Duration::from_secs(600));
        assert_eq!(g.upstream.write_timeout, Duration::from_secs(60));
        assert!(g.upstream.ca_file.is_none());
        assert!(g.client_keys.is_empty());
        assert!(g.admin_tokens.is_empty());
        assert!(g.reward_tokens.is_empty());
        assert_eq!(g.storage.path, PathBuf::from("data/gepa.db"));
        assert_eq!(g.storage.retention_days, 30);
        assert_eq!(g.storage.write_behind, Duration::from_millis(50));
        assert_eq!(g.metrics_listen, Some("127.0.0.1:9091".parse().unwrap()));
        assert_eq!(g.proposer.model, "gpt-4.1-mini");
        assert!(g.proposer.url.is_none());
        assert!(g.proposer.api_key.is_none());
        assert_eq!(g.proposer.minibatch_size, 3);
        assert!(g.proposer.merge);
        assert_eq!(g.gepa_defaults.online_proposer_min_rollouts, 10);
        assert_eq!(g.gepa_defaults.online_proposer_max_candidates, 8);
        assert_eq!(g.gepa_defaults.online_prune_threshold, 0.0);
        assert_eq!(g.gepa_defaults.online_prune_min_rollouts, 20);
        assert_eq!(g.max_sessions, 10_000);
        assert_eq!(g.correlation_ttl, Duration::from_secs(86_400));
        assert_eq!(g.capture_max_bytes, 16_384);
        assert_eq!(g.max_body_bytes, 10_485_760);
        // Pingora's own defaults for an empty top level
        assert_eq!(c.server, ServerConf::default());
        // the only warning: no admin token
        assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
        assert!(c.warnings[0].contains("GEPA_ADMIN_TOKEN is not set"));
    }
}

#[test]
fn empty_sections_mean_defaults() {
    let c = parse("gateway:\n  upstream:\n  proposer: ~\n  limits: {}\n").unwrap();
    assert_eq!(c.gateway.upstream.url.host, "api.openai.com");
    assert_eq!(c.gateway.max_body_bytes, 10_485_760);
}

#[test]
fn default_impl_matches_empty_file() {
    let parsed = parse("").unwrap().gateway;
    assert_eq!(
        format!("{:?}", GatewayConfig::default()),
        format!("{parsed:?}")
    );
}

#[test]
fn shipped_config_parses() {
    let path = manifest_file("conf/gateway.yaml");
    let c = load_file(&path, &|k: &str| {
        (k == "GEPA_ADMIN_TOKEN").then(|| "admintok".to_string())
    })
    .unwrap();
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    assert_eq!(c.server.version, 1);
    assert_eq!(c.server.threads, 2);
    assert_eq!(c.server.pid_file, "/tmp/gepa-gateway.pid");
    assert_eq!(c.server.upgrade_sock, "/tmp/gepa-gateway-upgrade.sock");
    assert_eq!(c.server.grace_period_seconds, Some(30));
    assert_eq!(c.gateway.listen, "0.0.0.0:8080".parse().unwrap());
    assert_eq!(
        c.gateway.upstream.url.to_string(),
        "https://api.openai.com/v1"
    );
    assert_eq!(c.gateway.admin_tokens.len(), 1);
    // The shipped file spells out the defaults.
    let mut shipped = c.gateway.clone();
    shipped.admin_tokens.clear();
    assert_eq!(
        format!("{shipped:?}"),
        format!("{:?}", GatewayConfig::default())
    );
}

#[test]
fn broken_fixtures_fail_with_their_key_path() {
    let cases = [
        ("unknown_key.yaml", "gateway.upstream.timeout_ms"),
        ("bad_url.yaml", "gateway.upstream.url"),
        ("bad_yaml.yaml", ""),
        ("missing_client_keys.yaml", "gateway.auth.client_keys_env"),
        ("bad_listen.yaml", "gateway.listen"),
    ];
    for (file, path) in cases {
        let p = manifest_file("tests/fixtures/config").join(file);
        // The upstream key variable set or not, the client-key rule fires first.
        for env in [None, Some("sk-fixture")] {
            let e = load_file(&p, &|k: &str| {
                (k == "GEPA_TEST_UPSTREAM_KEY")
                    .then(|| env.map(str::to_string))
                    .flatten()
            })
            .expect_err(file);
            assert_eq!(e.path(), path, "{file}: {e}");
            assert_eq!(e.file(), Some(p.as_path()));
            assert!(e.to_string().starts_with(&format!("{}: ", p.display())));
        }
    }
}

#[test]
fn unknown_key_names_full_path() {
    let e = err("gateway:\n  upstream:\n    timeout: 5\n");
    assert_eq!(e.path(), "gateway.upstream.timeout");
    assert!(e.message().contains("unknown field `timeout`"), "{e}");
    assert!(e.to_string().starts_with("gateway.upstream.timeout: "));

    let e = err("gateway:\n  listn: 1\n");
    assert_eq!(e.path(), "gateway.listn");
    let e = err("gateway:\n  gepa:\n    online_prune: 1\n");
    assert_eq!(e.path(), "gateway.gepa.online_prune");
}

#[test]
fn type_errors_name_their_path() {
    let e = err("gateway:\n  upstream:\n    read_timeout_s: soon\n");
    assert_eq!(e.path(), "gateway.upstream.read_timeout_s");
    let e = err("gateway:\n  upstream: 5\n");
    assert_eq!(e.path(), "gateway.upstream");
    let e = err("gateway: [1, 2]\n");
    assert_eq!(e.path(), "gateway");
    let e = err("gateway:\n  capture:\n    max_bytes: -1\n");
    assert_eq!(e.path(), "gateway.capture.max_bytes");
    let e = err("- a\n- b\n");
    assert!(e.message().contains("top level must be a mapping"), "{e}");
}

#[test]
fn validation_errors_name_their_path() {
    let cases: &[(&str, &str)] = &[
        ("listen: localhost:8080", "gateway.listen"),
        ("listen: 0.0.0.0:99999", "gateway.listen"),
        ("public_url: ftp://x", "gateway.public_url"),
        ("public_url: http://x/?a=1", "gateway.public_url"),
        ("upstream: {url: 'ftp://x'}", "gateway.upstream.url"),
        ("upstream: {url: 'https://'}", "gateway.upstream.url"),
        (
            "upstream: {url: 'https://a/v1?x=1'}",
            "gateway.upstream.url",
        ),
        ("upstream: {url: 'https://a/v1#x'}", "gateway.upstream.url"),
        (
            "upstream: {url: 'https://u:p@a/v1'}",
            "gateway.upstream.url",
        ),
        (
            "upstream: {connect_timeout_ms: 0}",
            "gateway.upstream.connect_timeout_ms",
        ),
        (
            "upstream: {connect_timeout_ms: 600001}",
            "gateway.upstream.connect_timeout_ms",
        ),
        (
            "upstream: {read_timeout_s: 0}",
            "gateway.upstream.read_timeout_s",
        ),
        (
            "upstream: {read_timeout_s: 86401}",
            "gateway.upstream.read_timeout_s",
        ),
        (
            "upstream: {write_timeout_s: 0}",
            "gateway.upstream.write_timeout_s",
        ),
        (
            "upstream: {write_timeout_s: 3601}",
            "gateway.upstream.write_timeout_s",
        ),
        (
            "upstream: {ca_file: /nonexistent/ca.pem}",
            "gateway.upstream.ca_file",
        ),
        (
            "upstream: {api_key_env: 'sk-abc'}",
            "gateway.upstream.api_key_env",
        ),
        (
            "auth: {client_keys_env: '1KEYS'}",
            "gateway.auth.client_keys_env",
        ),
        ("admin: {token_env: 'A B'}", "gateway.admin.token_env"),
        (
            "admin: {reward_token_env: 'x-y'}",
            "gateway.admin.reward_token_env",
        ),
        (
            "proposer: {api_key_env: 'é'}",
            "gateway.proposer.api_key_env",
        ),
        ("storage: {path: ''}", "gateway.storage.path"),
        ("metrics: {listen: 'nope'}", "gateway.metrics.listen"),
        (
            "metrics: {listen: '127.0.0.1:8080'}",
            "gateway.metrics.listen",
        ),
        ("proposer: {model: ''}", "gateway.proposer.model"),
        ("proposer: {url: 'ftp://x'}", "gateway.proposer.url"),
        (
            "proposer: {minibatch_size: 0}",
            "gateway.proposer.minibatch_size",
        ),
        (
            "proposer: {minibatch_size: 33}",
            "gateway.proposer.minibatch_size",
        ),
        ("gepa: {explore_share: 1.5}", "gateway.gepa.explore_share"),
        ("gepa: {explore_share: -0.1}", "gateway.gepa.explore_share"),
        (
            "proposer: {max_instruction_bytes: 255}",
            "gateway.proposer.max_instruction_bytes",
        ),
        (
            "proposer: {max_instruction_bytes: 1048577}",
            "gateway.proposer.max_instruction_bytes",
        ),
        (
            "gepa: {online_proposer_min_rollouts: 0}",
            "gateway.gepa.online_proposer_min_rollouts",
        ),
        (
            "gepa: {online_proposer_max_candidates: 0}",
            "gateway.gepa.online_proposer_max_candidates",
        ),
        (
            "gepa: {online_prune_threshold: .nan}",
            "gateway.gepa.online_prune_threshold",
        ),
        (
            "gepa: {online_prune_threshold: .inf}",
            "gateway.gepa.online_prune_threshold",
        ),
        (
            "gepa: {online_prune_min_rollouts: 0}",
            "gateway.gepa.online_prune_min_rollouts",
        ),
        (
            "gepa: {online_prune_min_rollouts: 4294967296}",
            "gateway.gepa.online_prune_min_rollouts",
        ),
        (
            "sessions: {max_sessions: 0}",
            "gateway.sessions.max_sessions",
        ),
        (
            "sessions: {correlation_ttl_s: 0}",
            "gateway.sessions.correlation_ttl_s",
        ),
        (
            "capture: {max_bytes: 16777217}",
            "gateway.capture.max_bytes",
        ),
        (
            "limits: {max_body_bytes: 0}",
            "gateway.limits.max_body_bytes",
        ),
        (
            "limits: {max_body_bytes: 1073741825}",
            "gateway.limits.max_body_bytes",
        ),
        (
            "storage: {retention_days: -1}",
            "gateway.storage.retention_days",
        ),
        (
            "storage: {rollouts_in_memory: 0}",
            "gateway.storage.rollouts_in_memory",
        ),
        (
            "storage: {write_behind_ms: 0}",
            "gateway.storage.write_behind_ms",
        ),
        (
            "storage: {write_behind_ms: 10001}",
            "gateway.storage.write_behind_ms",
        ),
        ("proposer: {merge: maybe}", "gateway.proposer.merge"),
    ];
    for (snippet, path) in cases {
        let yaml = format!("gateway:\n  {snippet}\n");
        let e = err(&yaml);
        assert_eq!(e.path(), *path, "{snippet}: {e}");
        assert!(
            e.to_string().starts_with(&format!("{path}: ")),
            "{snippet}: {e}"
        );
    }
}

#[test]
fn range_bounds_are_inclusive() {
    let c = parse(
            "gateway:\n  upstream: {connect_timeout_ms: 600000, read_timeout_s: 86400, \
             write_timeout_s: 3600}\n  proposer: {minibatch_size: 32, merge: false}\n  \
             capture: {max_bytes: 0}\n  limits: {max_body_bytes: 1073741824}\n  \
             gepa: {online_prune_threshold: -0.5}\n  storage: {retention_days: 0, write_behind_ms: 1000}\n  \
             metrics: {listen: ''}\n",
        )
        .unwrap();
    let g = c.gateway;
    assert_eq!(g.upstream.connect_timeout, Duration::from_secs(600));
    assert_eq!(g.upstream.read_timeout, Duration::from_secs(86_400));
    assert_eq!(g.upstream.write_timeout, Duration::from_secs(3_600));
    assert_eq!(g.proposer.minibatch_size, 32);
    assert!(!g.proposer.merge);
    assert_eq!(g.capture_max_bytes, 0);
    assert_eq!(g.max_body_bytes, 1_073_741_824);
    assert_eq!(g.gepa_defaults.online_prune_threshold, -0.5);
    assert_eq!(g.storage.retention_days, 0);
    assert_eq!(g.storage.write_behind, Duration::from_secs(1));
    assert_eq!(g.metrics_listen, None);
}

#[test]
fn secrets_from_env() {
    let yaml = "gateway:\n  upstream:\n    api_key_env: OPENAI_API_KEY\n  auth:\n    \
                    client_keys_env: CLIENT_KEYS\n  admin:\n    reward_token_env: REWARD\n";
    let c = parse_env(
        yaml,
        &[
            ("OPENAI_API_KEY", " sk-upstream \n"),
            ("CLIENT_KEYS", " ck1, ,ck2,,  "),
            ("GEPA_ADMIN_TOKEN", "adm1,adm2"),
            ("REWARD", "rw"),
        ],
    )
    .unwrap();
    let g = &c.gateway;
    assert_eq!(g.upstream.api_key.as_ref().unwrap().expose(), "sk-upstream");
    let keys: Vec<&str> = g.client_keys.iter().map(Secret::expose).collect();
    assert_eq!(keys, ["ck1", "ck2"]);
    let admin: Vec<&str> = g.admin_tokens.iter().map(Secret::expose).collect();
    assert_eq!(admin, ["adm1", "adm2"]);
    assert_eq!(g.reward_tokens.len(), 1);
    assert_eq!(g.reward_tokens[0].expose(), "rw");
    // proposer falls back to the upstream key
    assert_eq!(g.proposer.api_key.as_ref().unwrap().expose(), "sk-upstream");
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
}

#[test]
fn upstream_key_unset_names_the_variable() {
    let yaml = "gateway:\n  upstream: {api_key_env: OPENAI_API_KEY}\n  auth: \
                    {client_keys_env: CK}\n";
    for val in [None, Some(""), Some("  ")] {
        let mut vars = vec![("CK", "k1")];
        if let Some(v) = val {
            vars.push(("OPENAI_API_KEY", v));
        }
        let e = parse_env(yaml, &vars).unwrap_err();
        assert_eq!(
            e.to_string(),
            "gateway.upstream.api_key_env: environment variable OPENAI_API_KEY is not set"
        );
    }
}

#[test]
fn upstream_key_requires_client_keys() {
    let base = "gateway:\n  upstream: {api_key_env: OPENAI_API_KEY}\n";
    let up = [("OPENAI_API_KEY", "sk-secret-upstream")];
    // no client_keys_env at all
    let e = parse_env(base, &up).unwrap_err();
    assert_eq!(e.path(), "gateway.auth.client_keys_env");
    assert!(e.message().contains("refuses to spend"), "{e}");
    // named but unset / empty / only commas
    let yaml = format!("{base}  auth: {{client_keys_env: CK}}\n");
    for ck in [None, Some(""), Some(" , ,")] {
        let mut vars = up.to_vec();
        if let Some(v) = ck {
            vars.push(("CK", v));
        }
        let e = parse_env(&yaml, &vars).unwrap_err();
        assert_eq!(e.path(), "gateway.auth.client_keys_env");
        assert!(e.message().contains("CK"), "{e}");
        assert!(e.message().contains("refuses to spend"), "{e}");
        assert!(!e.to_string().contains("sk-secret-upstream"));
    }
    // same variable for both
    let yaml = format!("{base}  auth: {{client_keys_env: OPENAI_API_KEY}}\n");
    let e = parse_env(&yaml, &up).unwrap_err();
    assert_eq!(e.path(), "gateway.auth.client_keys_env");
    assert!(!e.to_string().contains("sk-secret-upstream"));
}

#[test]
fn admin_token_missing_is_a_warning() {
    let c = parse_env("", &[("GEPA_ADMIN_TOKEN", " ")]).unwrap();
    assert!(c.gateway.admin_tokens.is_empty());
    assert_eq!(
        c.warnings,
        [
            "gateway.admin.token_env: GEPA_ADMIN_TOKEN is not set; the admin API answers \
              loopback clients only"
        ]
    );
    let c = parse("gateway:\n  admin: {token_env: MY_ADMIN}\n").unwrap();
    assert!(c.warnings[0].contains("MY_ADMIN is not set"));
    let c = parse("gateway:\n  admin: {token_env: ''}\n").unwrap();
    assert!(c.warnings[0].contains("loopback clients only"));
    let c = parse_env(
        "gateway:\n  admin: {token_env: MY_ADMIN, reward_token_env: RW}\n",
        &[("MY_ADMIN", "t")],
    )
    .unwrap();
    assert_eq!(c.gateway.admin_tokens.len(), 1);
    assert_eq!(c.warnings.len(), 1);
    assert!(c.warnings[0].contains("RW is not set"));
}

#[test]
fn proposer_key_resolution() {
    let adm = ("GEPA_ADMIN_TOKEN", "a");
    // own variable
    let c = parse_env(
        "gateway:\n  proposer: {api_key_env: PROP_KEY}\n",
        &[adm, ("PROP_KEY", "pk")],
    )
    .unwrap();
    assert_eq!(c.gateway.proposer.api_key.unwrap().expose(), "pk");
    // own variable unset: warning, no key (no fallback)
    let c = parse_env(
        "gateway:\n  upstream: {api_key_env: UP}\n  auth: {client_keys_env: CK}\n  \
             proposer: {api_key_env: PROP_KEY}\n",
        &[adm, ("UP", "uk"), ("CK", "c")],
    )
    .unwrap();
    assert!(c.gateway.proposer.api_key.is_none());
    assert_eq!(c.warnings.len(), 1);
    assert!(c.warnings[0].starts_with("gateway.proposer.api_key_env: PROP_KEY is not set"));
    // fallback to a different host: allowed, with a warning
    let c = parse_env(
        "gateway:\n  upstream: {api_key_env: UP}\n  auth: {client_keys_env: CK}\n  \
             proposer: {url: 'https://other.example/v1'}\n",
        &[adm, ("UP", "uk"), ("CK", "c")],
    )
    .unwrap();
    assert_eq!(c.gateway.proposer.api_key.unwrap().expose(), "uk");
    assert_eq!(c.gateway.proposer.url.unwrap().host, "other.example");
    assert_eq!(c.warnings.len(), 1);
    assert!(c.warnings[0].contains("different host"));
}

#[test]
fn secrets_never_printed() {
    let secret = "sk-VERY-SECRET-0123456789";
    let s = Secret::new(secret);
    assert_eq!(format!("{s:?}"), "[redacted]");
    assert_eq!(format!("{s}"), "[redacted]");

    let yaml = "gateway:\n  upstream: {api_key_env: UP}\n  auth: {client_keys_env: CK}\n  \
                    admin: {reward_token_env: RW}\n";
    let vars = [
        ("UP", secret),
        ("CK", "client-SECRET-1,client-SECRET-2"),
        ("GEPA_ADMIN_TOKEN", "admin-SECRET"),
        ("RW", "reward-SECRET"),
    ];
    let c = parse_env(yaml, &vars).unwrap();
    let dbg = format!("{:?}", c);
    assert!(!dbg.contains("SECRET"), "{dbg}");
    assert!(dbg.contains("[redacted]"));

    // errors caused by a secret's content do not echo it
    let e = parse_env(yaml, &[("UP", "sk-SECRET with space"), ("CK", "c")]).unwrap_err();
    assert_eq!(e.path(), "gateway.upstream.api_key_env");
    assert!(!e.to_string().contains("SECRET"), "{e}");
    let e = parse_env(yaml, &[("UP", "u"), ("CK", "ok,bad SECRET\u{1}")]).unwrap_err();
    assert_eq!(e.path(), "gateway.auth.client_keys_env");
    assert!(!e.to_string().contains("SECRET"), "{e}");
    // a key pasted where a variable name belongs is not echoed
    let e = err("gateway:\n  upstream: {api_key_env: 'sk-SECRET-pasted'}\n");
    assert!(!e.to_string().contains("SECRET"), "{e}");
    // credentials in a URL are not echoed
    let e = err("gateway:\n  upstream: {url: 'https://user:SECRET@host/v1'}\n");
    assert!(!e.to_string().contains("SECRET"), "{e}");
}

#[test]
fn secret_matches_in_constant_time_api() {
    let s = Secret::new("abc");
    assert!(s.matches(b"abc"));
    assert!(!s.matches(b"abd"));
    assert!(!s.matches(b"ab"));
    assert!(!s.matches(b"abcd"));
    assert!(!s.matches(b""));
    let list = [Secret::new("one"), Secret::new("two")];
    assert!(Secret::matches_any(&list, b"two"));
    assert!(!Secret::matches_any(&list, b"three"));
    assert!(!Secret::matches_any(&[], b""));
}

#[test]
fn url_parsing() {
    let u = UpstreamUrl::parse("https://api.openai.com/v1").unwrap();
    assert_eq!(
        u,
        UpstreamUrl {
            tls: true,
            host: "api.openai.com".into(),
            port: 443,
            base_path: "/v1".into(),
            host_header: "api.openai.com".into(),
        }
    );
    assert_eq!(u.chat_completions_path(), "/v1/chat/completions");

    let u = UpstreamUrl::parse("http://Example.COM").unwrap();
    assert!(!u.tls);
    assert_eq!(u.host, "example.com");
    assert_eq!(u.port, 80);
    assert_eq!(u.base_path, "");
    assert_eq!(u.host_header, "example.com");
    assert_eq!(u.chat_completions_path(), "/chat/completions");

    let u = UpstreamUrl::parse("http://localhost:8000/").unwrap();
    assert_eq!(u.port, 8000);
    assert_eq!(u.base_path, "");
    assert_eq!(u.host_header, "localhost:8000");

    // explicit default port is not repeated in the Host header
    let u = UpstreamUrl::parse("https://h:443/x").unwrap();
    assert_eq!(u.host_header, "h");
    let u = UpstreamUrl::parse("https://h:80/x").unwrap();
    assert_eq!(u.host_header, "h:80");

    let u = UpstreamUrl::parse("http://[::1]:8080/openai/v1//").unwrap();
    assert_eq!(u.host, "::1");
    assert_eq!(u.port, 8080);
    assert_eq!(u.host_header, "[::1]:8080");
    assert_eq!(u.base_path, "/openai/v1");
    assert_eq!(u.to_string(), "http://[::1]:8080/openai/v1");

    let u = UpstreamUrl::parse("HTTPS://[2001:DB8::1]").unwrap();
    assert_eq!(u.host, "2001:db8::1");
    assert_eq!(u.port, 443);
    assert_eq!(u.host_header, "[2001:db8::1]");

    let u = UpstreamUrl::parse("https://10.0.0.1:4443/v1/%7Euser/").unwrap();
    assert_eq!(u.host, "10.0.0.1");
    assert_eq!(u.base_path, "/v1/%7Euser");

    for bad in [
        "",
        "api.openai.com/v1",
        "ftp://x",
        "https://",
        "https:///v1",
        "https://:8080",
        "https://h:",
        "https://h:0",
        "https://h:65536",
        "https://h:8o",
        "https://::1/v1",
        "https://[::1",
        "https://[zz]/",
        "https://[::1]x/",
        "https://h/v1?x=1",
        "https://h/v1#frag",
        "https://h?x",
        "https://user@h/",
        "https://h o/",
        "https://h/a b",
        "https://h/a%zz",
        "https://h/a%2",
        "https://h/é",
        "https://h\u{0}/",
    ] {
        assert!(UpstreamUrl::parse(bad).is_err(), "{bad:?} should fail");
    }
    assert_eq!(
        UpstreamUrl::parse("ftp://x").unwrap_err(),
        "must start with http:// or https://"
    );
}

/// http::Uri has a length limit the hand-written parser did not; the message says so
/// rather than blaming the path.
#[test]
fn url_over_the_uri_length_limit_says_so() {
    let long = format!("https://h/{}", "a".repeat(70_000));
    assert_eq!(
        UpstreamUrl::parse(&long).unwrap_err(),
        "is too long for a URL (at most 65534 bytes)"
    );
}

#[test]
fn public_url_trailing_slash_trimmed() {
    let c = parse("gateway:\n  public_url: 'https://gw.example.com/prefix/'\n").unwrap();
    assert_eq!(c.gateway.public_url, "https://gw.example.com/prefix");
}

#[test]
fn full_endpoint_url_warns() {
    let c = parse("gateway:\n  upstream: {url: 'https://h/v1/chat/completions'}\n").unwrap();
    assert!(c
        .warnings
        .iter()
        .any(|w| w.starts_with("gateway.upstream.url:")));
}

#[test]
fn ca_file_must_hold_a_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("ca.pem");
    std::fs::write(
        &good,
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let bad = dir.path().join("empty.pem");
    std::fs::write(&bad, "not a cert").unwrap();

    let c = parse(&format!(
        "gateway:\n  upstream: {{ca_file: '{}'}}\n",
        good.display()
    ))
    .unwrap();
    assert_eq!(c.gateway.upstream.ca_file, Some(good));
    let e = err(&format!(
        "gateway:\n  upstream: {{ca_file: '{}'}}\n",
        bad.display()
    ));
    assert_eq!(e.path(), "gateway.upstream.ca_file");
    let e = err("gateway:\n  upstream: {ca_file: '/nonexistent/x.pem'}\n");
    assert!(e.message().contains("cannot read"), "{e}");
}

#[test]
fn pingora_keys_reach_server_conf() {
    let c = parse(
        "version: 1\nthreads: 3\npid_file: /tmp/x.pid\nupgrade_sock: /tmp/x.sock\n\
             grace_period_seconds: 5\ngraceful_shutdown_timeout_seconds: 7\ndaemon: true\n\
             error_log: /tmp/err.log\nuser: nobody\ngateway:\n  listen: 127.0.0.1:9000\n",
    )
    .unwrap();
    assert_eq!(c.server.version, 1);
    assert_eq!(c.server.threads, 3);
    assert_eq!(c.server.pid_file, "/tmp/x.pid");
    assert_eq!(c.server.upgrade_sock, "/tmp/x.sock");
    assert_eq!(c.server.grace_period_seconds, Some(5));
    assert_eq!(c.server.graceful_shutdown_timeout_seconds, Some(7));
    assert!(c.server.daemon);
    assert_eq!(c.server.error_log.as_deref(), Some("/tmp/err.log"));
    assert_eq!(c.server.user.as_deref(), Some("nobody"));
    assert_eq!(c.gateway.listen, "127.0.0.1:9000".parse().unwrap());
    // untouched keys keep Pingora's defaults
    assert_eq!(c.server.max_retries, ServerConf::default().max_retries);
}

#[test]
fn unknown_top_level_key_is_a_warning() {
    let c = parse("thread: 4\nlisten: 1.2.3.4:5\n").unwrap();
    assert!(c.warnings.iter().any(|w| w.starts_with("thread: ")));
    assert!(c.warnings.iter().any(|w| w.starts_with("listen: ")));
    assert_eq!(c.server.threads, 1);
}

#[test]
fn bad_pingora_key_does_not_echo_file() {
    let marker = "UNIQUE-MARKER-abcdefghijklmnopqrstuvwxyz-0123456789";
    let yaml = format!(
        "# {marker}\nversion: 1\nthreads: many\nerror_log: /tmp/{marker}\ngateway:\n  \
             public_url: 'http://{marker}'\n"
    );
    let e = err(&yaml);
    assert_eq!(e.path(), "threads");
    assert!(!e.to_string().contains(marker), "{e}");
    assert!(e.to_string().len() < 200, "{e}");

    // Pingora's own validate() runs and is reported without the file
    let e = err(&format!("# {marker}\nmax_blocking_threads: 0\n"));
    assert!(e.message().contains("max_blocking_threads"), "{e}");
    assert!(!e.to_string().contains(marker), "{e}");
}

#[test]
fn yaml_syntax_error_has_position_not_text() {
    let marker = "UNIQUE-MARKER-zyxwvutsrqponmlkjihgfedcba";
    let yaml = format!("version: 1\ngateway:\n  listen: \"{marker}\n  public_url: [\n");
    let e = err(&yaml);
    assert_eq!(e.path(), "");
    assert!(e.message().starts_with("invalid YAML"), "{e}");
    assert!(e.message().contains("line "), "{e}");
    assert!(!e.to_string().contains(marker), "{e}");

    let e = err("a: 1\n  b: 2\nc: [\n");
    assert!(e.message().contains("line 2"), "{e}");
}

#[test]
fn load_file_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.yaml");
    let e = load_file(&missing, &no_env).unwrap_err();
    assert_eq!(e.file(), Some(missing.as_path()));
    assert!(e.to_string().starts_with(&missing.display().to_string()));

    let f = dir.path().join("c.yaml");
    std::fs::write(&f, "gateway:\n  upstream:\n    url: ftp://x\n").unwrap();
    let e = load_file(&f, &no_env).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "{}: gateway.upstream.url: must start with http:// or https://",
            f.display()
        )
    );
}

#[test]
fn merge_keys_are_supported() {
    let c = parse(
        "x-common: &common\n  read_timeout_s: 5\ngateway:\n  upstream:\n    <<: *common\n    \
             write_timeout_s: 6\n",
    )
    .unwrap();
    assert_eq!(c.gateway.upstream.read_timeout, Duration::from_secs(5));
    assert_eq!(c.gateway.upstream.write_timeout, Duration::from_secs(6));
}

#[test]
fn process_env_reads_the_environment() {
    assert_eq!(process_env("PATH"), std::env::var("PATH").ok(),);
    assert_eq!(process_env("GEPA_SURELY_UNSET_VARIABLE_42"), None);
}

#[test]
fn enum_keys_read_their_names() {
    let c =
        parse("gateway:\n  storage: {backend: memory}\n  gepa: {allocation: uniform}\n").unwrap();
    assert_eq!(c.gateway.storage.backend, StorageBackend::Memory);
    assert_eq!(c.gateway.gepa_defaults.allocation, Allocation::Uniform);
    // no value, "" and spaces mean the default, as before they became serde enums
    for value in ["~", "''", "' sqlite '"] {
        let c = parse(&format!("gateway:\n  storage: {{backend: {value}}}\n")).unwrap();
        assert_eq!(c.gateway.storage.backend, StorageBackend::Sqlite, "{value}");
    }
    let c = parse("gateway:\n  gepa: {allocation: ''}\n").unwrap();
    assert_eq!(c.gateway.gepa_defaults.allocation, Allocation::Thompson);
}

#[test]
fn enum_keys_name_the_allowed_values_not_the_given_one() {
    let e = err("gateway:\n  storage: {backend: SECRET-ish}\n");
    assert_eq!(
        e.to_string(),
        "gateway.storage.backend: must be \"sqlite\" or \"memory\""
    );
    let e = err("gateway:\n  gepa: {allocation: Thompson}\n");
    assert_eq!(
        e.to_string(),
        "gateway.gepa.allocation: must be \"thompson\" or \"uniform\""
    );
    let e = err("gateway:\n  storage: {backend: 5}\n");
    assert_eq!(e.path(), "gateway.storage.backend");
    assert!(e.message().contains("expected a string"), "{e}");
}

#[test]
fn every_bad_key_is_reported() {
    let p = manifest_file("tests/fixtures/config/several_bad_keys.yaml");
    let e = load_file(&p, &no_env).unwrap_err();
    let paths: Vec<&str> = e.problems().map(Problem::path).collect();
    assert_eq!(
        paths,
        [
            "gateway.listen",
            "gateway.storage.write_behind_ms",
            "gateway.gepa.online_prune_min_rollouts"
        ]
    );
    // path() and message() are the first problem's
    assert_eq!(e.path(), "gateway.listen");
    assert!(e.message().contains("IP address and port"), "{e}");
    // Display: one line per problem, each naming the file and the key
    let text = e.to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    for (line, path) in lines.iter().zip(&paths) {
        assert!(
            line.starts_with(&format!("{}: {path}: ", p.display())),
            "{text}"
        );
    }
}

#[test]
fn problems_in_all_sections_are_collected_in_file_order() {
    let yaml = "max_blocking_threads: 0\ngateway:\n  public_url: ftp://x\n  upstream: \
                {url: 'https://user:SECRET@h/', api_key_env: UP}\n  auth: {client_keys_env: \
                CK}\n  admin: {token_env: 'sk-SECRET'}\n  storage: {backend: SECRET}\n  \
                proposer: {model: ''}\n  gepa: {allocation: SECRET}\n  limits: \
                {max_body_bytes: 0}\n";
    let e = parse_env(yaml, &[("UP", "bad SECRET"), ("CK", "c")]).unwrap_err();
    let paths: Vec<&str> = e.problems().map(Problem::path).collect();
    assert_eq!(
        paths,
        [
            "",
            "gateway.public_url",
            "gateway.upstream.url",
            "gateway.upstream.api_key_env",
            "gateway.admin.token_env",
            "gateway.storage.backend",
            "gateway.proposer.model",
            "gateway.gepa.allocation",
            "gateway.limits.max_body_bytes",
        ],
        "{e}"
    );
    assert!(e.message().starts_with("invalid server setting"), "{e}");
    assert!(!e.to_string().contains("SECRET"), "{e}");
}

#[test]
fn a_bad_key_is_not_reported_again_through_what_depends_on_it() {
    // listen is bad, so the metrics port is not compared with it
    let e = err("gateway:\n  listen: 'localhost:9091'\n  metrics: {listen: '127.0.0.1:9091'}\n");
    assert_eq!(e.problems().count(), 1, "{e}");
    assert_eq!(e.path(), "gateway.listen");
    // the upstream key's variable name is bad, so the client-key rule is not checked
    let e = err("gateway:\n  upstream: {api_key_env: 'sk-x'}\n");
    assert_eq!(e.problems().count(), 1, "{e}");
    assert_eq!(e.path(), "gateway.upstream.api_key_env");
    // but an unset upstream key is reported after the client-key rule it breaks
    let p = manifest_file("tests/fixtures/config/missing_client_keys.yaml");
    let e = load_file(&p, &no_env).unwrap_err();
    let paths: Vec<&str> = e.problems().map(Problem::path).collect();
    assert_eq!(
        paths,
        [
            "gateway.auth.client_keys_env",
            "gateway.upstream.api_key_env"
        ]
    );
}
