//! `compose.yaml` (not run here: these machines pull no images) describes a deployment `serve`
//! accepts: every `OUTAGEWATCH__…` variable (and `DATABASE_URL`) of each service replica is a
//! known setting with a valid value, the replicas read from the read replica and believe
//! `X-Forwarded-For` from the proxy's address only, and the proxy balances over every one.
#![allow(clippy::unwrap_used)]

use outagewatch::config::Settings;
use secrecy::ExposeSecret;
use yaml_rust2::{Yaml, YamlLoader};

fn compose() -> Yaml {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/compose.yaml"))
        .expect("compose.yaml at the repository's root");
    YamlLoader::load_from_str(&text).unwrap().remove(0)
}

/// `value` with Compose's `${NAME…}` interpolations replaced by a stand-in of 32 characters
/// (what an operator would pass: a password, a secret).
fn interpolated(value: &str) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find('}').unwrap() + start;
        out.push_str("s3cret-stand-in-of-32-characters");
        rest = &rest[end + 1..];
    }
    out + rest
}

fn text(value: &Yaml) -> String {
    match value {
        Yaml::String(s) => s.clone(),
        Yaml::Integer(i) => i.to_string(),
        Yaml::Boolean(b) => b.to_string(),
        other => panic!("not a scalar: {other:?}"),
    }
}

/// The service replicas (the services built from this repository) and their environment.
fn service_replicas(compose: &Yaml) -> Vec<(String, Vec<(String, String)>)> {
    compose["services"]
        .as_hash()
        .unwrap()
        .iter()
        .filter(|(_, service)| !service["build"].is_badvalue())
        .map(|(name, service)| {
            let environment = service["environment"]
                .as_hash()
                .unwrap_or_else(|| panic!("{name:?}: environment as a map"))
                .iter()
                .map(|(key, value)| (text(key), interpolated(&text(value))))
                .collect();
            (text(name), environment)
        })
        .collect()
}

#[test]
fn every_service_replica_starts_with_the_settings_compose_gives_it() {
    let compose = compose();
    let replicas = service_replicas(&compose);
    assert_eq!(
        replicas
            .iter()
            .map(|(name, _)| name.as_str())
            .collect::<Vec<_>>(),
        ["app1", "app2", "app3"]
    );
    let proxy = text(&compose["services"]["proxy"]["networks"]["backend"]["ipv4_address"]);
    for (name, environment) in &replicas {
        for (key, _) in environment {
            assert!(
                key == "DATABASE_URL" || key.starts_with("OUTAGEWATCH__"),
                "{name}: {key} is not a setting's variable"
            );
        }
        let settings = Settings::load_with_env(None, environment.clone())
            .unwrap_or_else(|error| panic!("{name}: {error}"));
        let url = settings.database.url.expose_secret().to_owned();
        let read_url = settings.database.read_url.as_ref().unwrap().expose_secret();
        assert!(url.contains("@postgres:5432/"), "{name}: {url}");
        assert!(
            read_url.contains("@postgres-replica:5432/"),
            "{name}: {read_url}"
        );
        let trusted: Vec<String> = settings
            .http
            .trusted_proxies
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(trusted, [format!("{proxy}/32")], "{name}");
        assert_eq!(settings.http.listen.to_string(), "0.0.0.0:8080", "{name}");
    }
}

#[test]
fn the_proxy_forwards_client_addresses_and_checks_every_replica_by_readiness() {
    let compose = compose();
    let haproxy = text(&compose["configs"]["haproxy"]["content"]);
    let lines: Vec<&str> = haproxy.lines().map(str::trim).collect();
    for expected in [
        "option forwardfor",
        "option httpchk GET /readyz",
        "timeout tunnel 1h",
    ] {
        assert!(lines.contains(&expected), "haproxy.cfg lacks {expected:?}");
    }
    let servers: Vec<&str> = lines
        .iter()
        .filter_map(|line| line.strip_prefix("server "))
        .map(|line| line.split_whitespace().next().unwrap())
        .collect();
    let replicas: Vec<String> = service_replicas(&compose)
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    assert_eq!(servers, replicas);
}
