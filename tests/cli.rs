//! The command line: `-t` on the shipped config and on broken ones.

mod common;

use std::process::Command;

fn check(file: &str, envs: &[(&str, &str)]) -> (i32, String) {
    let mut cmd = Command::new(common::gateway_bin());
    cmd.arg("-t")
        .arg("-c")
        .arg(file)
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("gateway binary runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn shipped_configs_are_valid() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/conf");
    let mut checked = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let (code, out) = check(path.to_str().unwrap(), &[]);
            assert_eq!(code, 0, "{}: {out}", path.display());
            checked += 1;
        }
    }
    assert!(checked >= 1);
}

#[test]
fn broken_configs_fail_naming_the_key() {
    for (file, key) in [
        ("unknown_key.yaml", "gateway.upstream.timeout_ms"),
        ("bad_url.yaml", "gateway.upstream.url"),
        ("bad_listen.yaml", "gateway.listen"),
        ("missing_client_keys.yaml", "gateway.auth.client_keys_env"),
        ("bad_yaml.yaml", "line"),
    ] {
        let path = format!("tests/fixtures/config/{file}");
        let (code, out) = check(&path, &[("GEPA_TEST_UPSTREAM_KEY", "sk-very-secret-value")]);
        assert_eq!(code, 1, "{file}: {out}");
        assert!(out.contains(key), "{file}: {out}");
        assert!(
            !out.contains("sk-very-secret-value"),
            "{file} leaked a secret: {out}"
        );
    }
    let (code, out) = check("tests/fixtures/config/does-not-exist.yaml", &[]);
    assert_eq!(code, 1);
    assert!(out.contains("does-not-exist.yaml"), "{out}");
}

#[test]
fn every_bad_key_is_printed_on_its_own_line() {
    let (code, out) = check("tests/fixtures/config/several_bad_keys.yaml", &[]);
    assert_eq!(code, 1, "{out}");
    for key in [
        "gateway.listen",
        "gateway.storage.write_behind_ms",
        "gateway.gepa.online_prune_min_rollouts",
    ] {
        assert!(
            out.lines().any(|line| line
                .starts_with("gepa-gateway: configuration error: tests/fixtures/config/")
                && line.contains(&format!(" {key}: "))),
            "{key}: {out}"
        );
    }
}

#[test]
fn a_missing_upstream_key_names_the_variable_not_a_value() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("g.yaml");
    std::fs::write(
        &path,
        "gateway:\n  upstream:\n    api_key_env: GEPA_TEST_UNSET_KEY\n  auth:\n    client_keys_env: GEPA_TEST_CK\n",
    )
    .unwrap();
    let (code, out) = check(
        path.to_str().unwrap(),
        &[("GEPA_TEST_CK", "ck-secret-client-key")],
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("GEPA_TEST_UNSET_KEY"), "{out}");
    assert!(!out.contains("ck-secret-client-key"), "{out}");
}
