//! Settings: the embedded `config/default.toml`, then an optional file, then `OUTAGEWATCH__*` env.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use figment::providers::{Format, Toml};
use figment::Figment;
use ipnet::IpNet;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

mod sources;

use sources::{extract, EnvVar};

/// The defaults, compiled into the binary so a bare `outagewatch serve` works anywhere.
pub const DEFAULT_TOML: &str = include_str!("../../config/default.toml");

/// Every setting of the service.
///
/// Every settings struct refuses keys it does not have (`deny_unknown_fields`), so a misspelt
/// key in a file or an environment variable stops the start instead of leaving the default in
/// force; `unknown_key` names where it came from.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub http: HttpSettings,
    pub database: DatabaseSettings,
    pub ingest: IngestSettings,
    pub rate_limit: RateLimitSettings,
    pub log: LogSettings,
    pub detector: DetectorSettings,
    pub retention: RetentionSettings,
    pub services: Vec<ServiceSettings>,
    /// Endpoints that receive incident events; none unless configured.
    #[serde(default)]
    pub webhooks: Vec<WebhookSettings>,
    pub webhook_delivery: WebhookDeliverySettings,
    pub abuse: AbuseSettings,
    pub proof_of_work: ProofOfWorkSettings,
    /// The admin API's bearer tokens; none configured means the admin API refuses every call.
    #[serde(default)]
    pub admin: AdminSettings,
}

/// Limits on how much one network can count, so a single source cannot fake an outage.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AbuseSettings {
    /// Counted reports one network (/24 IPv4, /48 IPv6) adds per service per minute; 0 = no cap.
    pub max_counted_per_network_per_minute: u32,
}

/// The optional proof-of-work challenge (ALTCHA-compatible) the report form asks for under surge.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProofOfWorkSettings {
    pub mode: ProofOfWorkMode,
    /// HMAC key signing challenges; replicas must share it. Unset: a random key per process.
    #[serde(default)]
    pub secret: Option<SecretString>,
    /// The puzzle's size: the secret number is drawn from 0..=max_number.
    pub max_number: u64,
    pub expires_seconds: u64,
    /// In `surge` mode, challenges are required once this process takes more report requests a minute.
    pub surge_requests_per_minute: u64,
    /// Solutions remembered (until they expire) to refuse replays; beyond it, new solutions wait.
    pub max_remembered: usize,
}

/// When the form requires a solved challenge.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ProofOfWorkMode {
    Off,
    Always,
    Surge,
}

/// Who may call the admin API.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSettings {
    #[serde(default)]
    pub tokens: Vec<AdminTokenSettings>,
}

/// One admin bearer token: its holder's name (logged with each call) and the token, as its
/// SHA-256 (hex, so the file never holds the token) or as the token itself (a secret, hashed at start).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminTokenSettings {
    pub name: String,
    #[serde(default)]
    pub sha256: Option<String>,
    #[serde(default)]
    pub token: Option<SecretString>,
}

/// One webhook endpoint: where incident events go, which ones, and how they are signed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSettings {
    /// The endpoint's stable key: stored with its deliveries (so a restart resumes them),
    /// and the only thing logs and metrics name.
    pub name: String,
    /// http:// or https://; Slack and Discord webhook URLs carry their token, so it is secret.
    pub url: SecretString,
    /// Only incidents of these service slugs; empty: every service.
    #[serde(default)]
    pub services: Vec<String>,
    /// Only incidents in these countries (ISO codes); empty: every incident, global ones too.
    #[serde(default)]
    pub countries: Vec<String>,
    /// Key of the `X-Outagewatch-Signature` HMAC; unsigned without one.
    #[serde(default)]
    pub secret: Option<SecretString>,
}

/// How webhook deliveries are worked off: polling, timeouts, retries and giving up.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookDeliverySettings {
    pub poll_interval_ms: u64,
    pub batch_size: u32,
    pub request_timeout_ms: u64,
    pub initial_backoff_seconds: u64,
    pub max_backoff_seconds: u64,
    pub backoff_jitter_percent: u32,
    pub give_up_after_hours: u64,
    pub keep_finished_days: u64,
    pub max_event_age_minutes: u64,
}

/// The background surge detector: how it runs, and (`model`) the detection thresholds.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectorSettings {
    pub enabled: bool,
    pub settle_seconds: u64,
    pub leader_retry_seconds: u64,
    pub snapshot_every_minutes: u32,
    pub history_days: u32,
    pub expectations_days: u32,
    pub top_cities: u32,
    #[serde(default)]
    pub model: crate::detect::DetectorConfig,
}

/// How long raw reports and counts are kept (expectations keep `detector.expectations_days`).
/// `serve`'s upkeep deletes what is older, a whole day at a time; 0 keeps everything.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionSettings {
    /// Days of raw reports (and with them the problem mixes of past days).
    pub reports_days: u32,
    /// Days of minute counts; never fewer than `detector.history_days`, which the detector
    /// replays from them.
    pub minute_rollups_days: u32,
    /// Days of the quarter-hour and hourly counts.
    pub coarse_rollups_days: u32,
}

impl RetentionSettings {
    /// The settings as the store applies them.
    pub fn retention(&self) -> crate::domain::retention::Retention {
        crate::domain::retention::Retention {
            reports_days: self.reports_days,
            minute_rollups_days: self.minute_rollups_days,
            coarse_rollups_days: self.coarse_rollups_days,
        }
    }
}

/// The HTTP listener and how client addresses are read.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    pub listen: SocketAddr,
    #[serde(deserialize_with = "networks")]
    pub trusted_proxies: Vec<IpNet>,
    pub max_body_bytes: usize,
    pub max_connections: usize,
    pub header_read_timeout_ms: u64,
    pub body_read_timeout_ms: u64,
    pub request_timeout_ms: u64,
    pub shutdown_grace_ms: u64,
    pub read_cache_seconds: u64,
    pub read_cache_mebibytes: u64,
}

/// Where reports are stored.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    /// May hold a password, so it never appears in logs or `Debug` output.
    pub url: SecretString,
    /// A streaming read replica of `url` (Postgres) the read side reads from while it is
    /// fresh. Unset: every read goes to `url`. May hold a password, like `url`.
    #[serde(default)]
    pub read_url: Option<SecretString>,
    /// Reads go back to `url` while the replica lags the primary by more than this.
    pub max_replica_lag_seconds: u32,
    /// The pool for writes, the detector and coordination.
    pub max_connections: u32,
    /// The read side's pool (on the replica when `read_url` is set).
    pub read_connections: u32,
    pub acquire_timeout_ms: u64,
    pub query_timeout_ms: u64,
}

/// The ingest queue and the batch writer.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestSettings {
    pub queue_capacity: usize,
    pub writers: usize,
    pub max_batch_reports: usize,
    pub commit_timeout_ms: u64,
    pub batch_timeout_ms: u64,
    pub dedup_window_minutes: u32,
}

/// Per-client rate limiting of reports.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSettings {
    pub per_ip_per_minute: u32,
    pub burst: u32,
    pub max_clients: usize,
}

/// Log output.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    pub format: LogFormat,
    pub level: String,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    Json,
}

/// One entry of the service catalog.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSettings {
    pub slug: String,
    pub name: String,
}

/// Why the settings could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Load(#[from] Box<figment::Error>),
    /// A key in a file, or an `OUTAGEWATCH__…` variable, that names no setting.
    #[error("configuration: {0}")]
    Unknown(String),
    #[error("configuration: {0}")]
    Invalid(String),
}

impl Settings {
    /// Loads defaults, then `file` if given, then the environment, and validates the result.
    pub fn load(file: Option<&Path>) -> Result<Settings, ConfigError> {
        let env = std::env::vars_os().map(|(name, value)| {
            (
                name.to_string_lossy().into_owned(),
                value.to_string_lossy().into_owned(),
            )
        });
        Settings::load_with_env(file, env)
    }

    /// [`Settings::load`] with these environment variables instead of the process's.
    pub fn load_with_env(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Settings, ConfigError> {
        let mut figment = Figment::from(Toml::string(DEFAULT_TOML));
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError::Invalid(format!(
                    "config file {} does not exist",
                    path.display()
                )));
            }
            figment = figment.merge(Toml::file(path));
        }
        for var in EnvVar::settings_of(env)? {
            figment = figment.merge(var);
        }
        let settings = extract(&figment)?;
        settings.validate()?;
        Ok(settings)
    }

    /// Loads defaults overridden by TOML layers (later wins), ignoring the environment: for tests and tools.
    pub fn from_toml(layers: &[&str]) -> Result<Settings, ConfigError> {
        let figment = layers.iter().fold(
            Figment::from(Toml::string(DEFAULT_TOML)),
            |figment, layer| figment.merge(Toml::string(layer)),
        );
        let settings = extract(&figment)?;
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let url = self.database.url.expose_secret();
        if !(url.starts_with("sqlite:")
            || url.starts_with("postgres:")
            || url.starts_with("postgresql:"))
        {
            return Err(ConfigError::Invalid(
                "database.url must start with sqlite:// or postgres://".into(),
            ));
        }
        if let Some(read_url) = &self.database.read_url {
            let read_url = read_url.expose_secret();
            if !(read_url.starts_with("postgres:") || read_url.starts_with("postgresql:"))
                || url.starts_with("sqlite:")
            {
                return Err(ConfigError::Invalid(
                    "database.read_url must start with postgres://, beside a postgres:// \
                     database.url (SQLite has no replicas)"
                        .into(),
                ));
            }
        }
        if !(1..=3600).contains(&self.database.max_replica_lag_seconds) {
            return Err(ConfigError::Invalid(
                "database.max_replica_lag_seconds must be between 1 and 3600".into(),
            ));
        }
        if self.ingest.queue_capacity == 0 || self.ingest.max_batch_reports == 0 {
            return Err(ConfigError::Invalid(
                "ingest.queue_capacity and ingest.max_batch_reports must be at least 1".into(),
            ));
        }
        if self.ingest.dedup_window_minutes == 0 || 1440 % self.ingest.dedup_window_minutes != 0 {
            return Err(ConfigError::Invalid(
                "ingest.dedup_window_minutes must divide a day (1, 5, 15, 30, 60, ...)".into(),
            ));
        }
        let retention = &self.retention;
        if retention.minute_rollups_days != 0
            && retention.minute_rollups_days < self.detector.history_days
        {
            return Err(ConfigError::Invalid(format!(
                "retention.minute_rollups_days ({}) is shorter than detector.history_days ({}): \
                 the detector replays that many days of minute counts; keep them at least as long (0 keeps them all)",
                retention.minute_rollups_days, self.detector.history_days
            )));
        }
        if let Err(e) = self.detector.model.validate() {
            return Err(ConfigError::Invalid(format!(
                "detector.model.{}: {}",
                e.field, e.problem
            )));
        }
        if self.detector.snapshot_every_minutes == 0 || self.detector.leader_retry_seconds == 0 {
            return Err(ConfigError::Invalid(
                "detector.snapshot_every_minutes and detector.leader_retry_seconds must be at least 1"
                    .into(),
            ));
        }
        if self.http.max_connections == 0
            || self.http.header_read_timeout_ms == 0
            || self.http.body_read_timeout_ms == 0
            || self.http.request_timeout_ms == 0
            || self.database.query_timeout_ms == 0
        {
            return Err(ConfigError::Invalid(
                "http.max_connections, http.*_timeout_ms and database.query_timeout_ms must be at least 1"
                    .into(),
            ));
        }
        if self.database.max_connections == 0 || self.database.read_connections == 0 {
            return Err(ConfigError::Invalid(
                "database.max_connections and database.read_connections must be at least 1".into(),
            ));
        }
        if self.rate_limit.max_clients == 0 {
            return Err(ConfigError::Invalid(
                "rate_limit.max_clients must be at least 1".into(),
            ));
        }
        let pow = &self.proof_of_work;
        if pow.max_number == 0 || pow.expires_seconds == 0 || pow.max_remembered == 0 {
            return Err(ConfigError::Invalid(
                "proof_of_work.max_number, expires_seconds and max_remembered must be at least 1"
                    .into(),
            ));
        }
        self.validate_admin()?;
        if self.services.is_empty() {
            return Err(ConfigError::Invalid(
                "services must list at least one service".into(),
            ));
        }
        self.validate_webhooks()
    }

    fn validate_admin(&self) -> Result<(), ConfigError> {
        let invalid = |message: String| Err(ConfigError::Invalid(message));
        for (i, token) in self.admin.tokens.iter().enumerate() {
            if token.name.is_empty() {
                return invalid(format!("admin.tokens[{i}].name must not be empty"));
            }
            let name = &token.name;
            match (&token.sha256, &token.token) {
                (Some(hex), None) => {
                    if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
                        return invalid(format!(
                            "admin.tokens.{name}.sha256 must be 64 hex digits (the SHA-256 of the token)"
                        ));
                    }
                }
                (None, Some(secret)) => {
                    if secret.expose_secret().len() < 16 {
                        return invalid(format!(
                            "admin.tokens.{name}.token must be at least 16 characters"
                        ));
                    }
                }
                _ => {
                    return invalid(format!(
                        "admin.tokens.{name} needs exactly one of sha256 or token"
                    ))
                }
            }
        }
        Ok(())
    }

    fn validate_webhooks(&self) -> Result<(), ConfigError> {
        let invalid = |message: String| Err(ConfigError::Invalid(message));
        let delivery = &self.webhook_delivery;
        if delivery.poll_interval_ms == 0
            || delivery.batch_size == 0
            || delivery.request_timeout_ms == 0
            || delivery.initial_backoff_seconds == 0
        {
            return invalid(
                "webhook_delivery.poll_interval_ms, batch_size, request_timeout_ms and \
                 initial_backoff_seconds must be at least 1"
                    .into(),
            );
        }
        if delivery.max_backoff_seconds < delivery.initial_backoff_seconds {
            return invalid(
                "webhook_delivery.max_backoff_seconds must be at least initial_backoff_seconds"
                    .into(),
            );
        }
        if delivery.backoff_jitter_percent > 100 {
            return invalid("webhook_delivery.backoff_jitter_percent must be 0 to 100".into());
        }
        if delivery.give_up_after_hours == 0 {
            return invalid("webhook_delivery.give_up_after_hours must be at least 1".into());
        }
        let mut names = std::collections::HashSet::new();
        for (i, webhook) in self.webhooks.iter().enumerate() {
            let name = webhook.name.as_str();
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return invalid(format!(
                    "webhooks[{i}].name must be letters, digits, '-' or '_' (got \"{name}\")"
                ));
            }
            if !names.insert(name) {
                return invalid(format!("webhooks[{i}].name \"{name}\" is used twice"));
            }
            // The URL may hold a token: say what is wrong with it, never what it is.
            match reqwest::Url::parse(webhook.url.expose_secret()) {
                Ok(url) if matches!(url.scheme(), "http" | "https") && url.has_host() => {}
                Ok(_) => {
                    return invalid(format!(
                        "webhooks.{name}.url must be an http:// or https:// URL with a host"
                    ))
                }
                Err(e) => return invalid(format!("webhooks.{name}.url is not a URL: {e}")),
            }
            for service in &webhook.services {
                if !self.services.iter().any(|s| &s.slug == service) {
                    return invalid(format!(
                        "webhooks.{name}.services: \"{service}\" is not a service of the catalog \
                         ([[services]] slugs)"
                    ));
                }
            }
            for country in &webhook.countries {
                if let Err(e) = crate::domain::geo::CountryCode::parse(country) {
                    return invalid(format!("webhooks.{name}.countries: {e}"));
                }
            }
            if webhook
                .secret
                .as_ref()
                .is_some_and(|s| s.expose_secret().is_empty())
            {
                return invalid(format!(
                    "webhooks.{name}.secret is empty (leave it out to send unsigned events)"
                ));
            }
        }
        Ok(())
    }
}

/// Reads CIDR blocks, taking a bare address as a block of one.
fn networks<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<IpNet>, D::Error> {
    let entries = Vec::<String>::deserialize(deserializer)?;
    entries
        .iter()
        .map(|entry| {
            entry
                .parse::<IpNet>()
                .or_else(|_| entry.parse::<std::net::IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    serde::de::Error::custom(format!(
                        "\"{entry}\" is not an IP address or CIDR block"
                    ))
                })
        })
        .collect()
}

impl DatabaseSettings {
    /// How long to wait for a pooled connection.
    pub fn acquire_timeout(&self) -> Duration {
        Duration::from_millis(self.acquire_timeout_ms)
    }

    /// How long a request's store call may take before the store counts as unavailable.
    pub fn query_timeout(&self) -> Duration {
        Duration::from_millis(self.query_timeout_ms)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_defaults_load_and_validate() {
        let figment = Figment::from(Toml::string(DEFAULT_TOML));
        let settings: Settings = figment.extract().unwrap();
        settings.validate().unwrap();
        assert_eq!(settings.http.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(
            settings.database.url.expose_secret(),
            "sqlite://data/outagewatch.db"
        );
        assert_eq!(settings.rate_limit.per_ip_per_minute, 60);
        assert_eq!(settings.ingest.dedup_window_minutes, 15);
        let slugs: Vec<&str> = settings.services.iter().map(|s| s.slug.as_str()).collect();
        assert_eq!(
            slugs,
            [
                "x",
                "youtube",
                "instagram",
                "facebook",
                "whatsapp",
                "tiktok",
                "netflix",
                "gmail",
                "discord",
                "reddit"
            ]
        );
    }

    const HOOKS: &str = r#"
[[webhooks]]
name = "ops-slack"
url = "https://hooks.slack.com/services/T0/B0/tokentoken"
services = ["x"]
countries = ["pk"]
secret = "s3cret-key"
"#;

    #[test]
    fn no_webhook_is_configured_by_default_and_retries_cover_more_than_a_day() {
        let settings = Settings::from_toml(&[]).unwrap();
        assert!(settings.webhooks.is_empty());
        assert!(settings.webhook_delivery.give_up_after_hours >= 24);
    }

    #[test]
    fn a_webhook_loads_with_its_filters_and_keeps_its_url_and_secret_out_of_debug_output() {
        let settings = Settings::from_toml(&[HOOKS]).unwrap();
        assert_eq!(settings.webhooks[0].name, "ops-slack");
        assert_eq!(settings.webhooks[0].services, ["x"]);
        let debug = format!("{settings:?}");
        assert!(!debug.contains("tokentoken"), "{debug}");
        assert!(!debug.contains("s3cret"), "{debug}");
    }

    #[test]
    fn a_webhook_with_an_unknown_service_country_or_scheme_is_refused_with_a_clear_message() {
        let error = |from: &str, to: &str| {
            Settings::from_toml(&[&HOOKS.replace(from, to)])
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            error("[\"x\"]", "[\"myspace\"]"),
            "configuration: webhooks.ops-slack.services: \"myspace\" is not a service of the \
             catalog ([[services]] slugs)"
        );
        assert_eq!(
            error("[\"pk\"]", "[\"XX\"]"),
            "configuration: webhooks.ops-slack.countries: \"XX\" is not an ISO 3166-1 alpha-2 \
             country code"
        );
        assert_eq!(
            error("https://", "ftp://"),
            "configuration: webhooks.ops-slack.url must be an http:// or https:// URL with a host"
        );
        let twice = format!("{HOOKS}{HOOKS}");
        assert_eq!(
            Settings::from_toml(&[&twice]).unwrap_err().to_string(),
            "configuration: webhooks[1].name \"ops-slack\" is used twice"
        );
    }

    fn env(vars: &[(&str, &str)]) -> Vec<(String, String)> {
        vars.iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect()
    }

    fn env_error(name: &str, value: &str) -> String {
        Settings::load_with_env(None, env(&[(name, value)]))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn a_pool_of_no_connections_stops_the_start_naming_both_pool_keys() {
        for name in [
            "OUTAGEWATCH__DATABASE__MAX_CONNECTIONS",
            "OUTAGEWATCH__DATABASE__READ_CONNECTIONS",
        ] {
            assert_eq!(
                env_error(name, "0"),
                "configuration: database.max_connections and database.read_connections must be at least 1",
                "{name}"
            );
        }
        let settings = Settings::load_with_env(
            None,
            env(&[("OUTAGEWATCH__DATABASE__READ_CONNECTIONS", "3")]),
        )
        .unwrap();
        assert_eq!(
            (
                settings.database.max_connections,
                settings.database.read_connections
            ),
            (16, 3)
        );
    }

    #[test]
    fn an_environment_variable_that_names_no_setting_stops_the_start_naming_it() {
        assert_eq!(
            env_error("OUTAGEWATCH__HTTP__LISTN", "127.0.0.1:18090"),
            "configuration: environment variable OUTAGEWATCH__HTTP__LISTN names no setting \
             (did you mean OUTAGEWATCH__HTTP__LISTEN?)"
        );
        assert_eq!(
            env_error("OUTAGEWATCH__ARCHIVE__REPORTS_DAYS", "-1"),
            "configuration: environment variable OUTAGEWATCH__ARCHIVE__REPORTS_DAYS names no \
             setting"
        );
        assert_eq!(
            env_error("OUTAGEWATCH__HTTPP__LISTEN", "127.0.0.1:18090"),
            "configuration: environment variable OUTAGEWATCH__HTTPP__LISTEN names no setting \
             (did you mean OUTAGEWATCH__HTTP__LISTEN?)"
        );
        assert_eq!(
            env_error("OUTAGEWATCH__DETECTOR__MODEL__WINDOW_MINUTE", "10"),
            "configuration: environment variable OUTAGEWATCH__DETECTOR__MODEL__WINDOW_MINUTE \
             names no setting (did you mean OUTAGEWATCH__DETECTOR__MODEL__WINDOW_MINUTES?)"
        );
        // figment's own reader skipped these silently.
        assert_eq!(
            env_error("OUTAGEWATCH__HTTP____LISTEN", "127.0.0.1:18090"),
            "configuration: environment variable OUTAGEWATCH__HTTP____LISTEN names no setting"
        );
    }

    #[test]
    fn minute_retention_shorter_than_the_detector_history_stops_the_start_naming_both_keys() {
        let error = Settings::from_toml(&["[retention]\nminute_rollups_days = 30\n"])
            .unwrap_err()
            .to_string();
        assert_eq!(
            error,
            "configuration: retention.minute_rollups_days (30) is shorter than \
             detector.history_days (35): the detector replays that many days of minute counts; \
             keep them at least as long (0 keeps them all)"
        );
        let kept = Settings::from_toml(&["[retention]\nminute_rollups_days = 35\n"]).unwrap();
        assert_eq!(kept.retention.minute_rollups_days, 35);
        let forever = Settings::from_toml(&["[retention]\nminute_rollups_days = 0\n"]).unwrap();
        assert_eq!(forever.retention.retention().minute_rollups_days, 0);
        let settings = Settings::from_toml(&[]).unwrap();
        assert_eq!(
            settings.retention.retention(),
            crate::domain::retention::Retention {
                reports_days: 90,
                minute_rollups_days: 90,
                coarse_rollups_days: 0
            }
        );
    }

    #[test]
    fn a_read_replica_needs_postgres_on_both_sides_and_a_lag_bound_in_range() {
        let error = |layer: &str| Settings::from_toml(&[layer]).unwrap_err().to_string();
        let sqlite_replica = "configuration: database.read_url must start with postgres://, \
             beside a postgres:// database.url (SQLite has no replicas)";
        assert_eq!(
            error("[database]\nread_url = \"postgres://replica/ow\"\n"),
            sqlite_replica
        );
        assert_eq!(
            error("[database]\nurl = \"postgres://db/ow\"\nread_url = \"sqlite://r.db\"\n"),
            sqlite_replica
        );
        assert_eq!(
            error("[database]\nmax_replica_lag_seconds = 0\n"),
            "configuration: database.max_replica_lag_seconds must be between 1 and 3600"
        );
        let settings = Settings::from_toml(&[
            "[database]\nurl = \"postgres://db/ow\"\nread_url = \"postgres://u:pw@replica/ow\"\n",
        ])
        .unwrap();
        assert_eq!(
            settings
                .database
                .read_url
                .map(|u| u.expose_secret().to_owned()),
            Some("postgres://u:pw@replica/ow".to_owned())
        );
        assert_eq!(settings.database.max_replica_lag_seconds, 10);
    }

    #[test]
    fn a_config_file_key_that_names_no_setting_stops_the_start_naming_the_file_and_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outagewatch.toml");
        let error = |text: &str| {
            std::fs::write(&path, text).unwrap();
            Settings::load_with_env(Some(&path), Vec::new())
                .unwrap_err()
                .to_string()
        };
        let file = path.display();
        assert_eq!(
            error("[http]\nlistn = \"127.0.0.1:18090\"\n"),
            format!(
                "configuration: {file}: http.listn names no setting (did you mean http.listen?)"
            )
        );
        assert_eq!(
            error("[archive]\nreports_days = 30\n"),
            format!("configuration: {file}: archive names no setting")
        );
        assert_eq!(
            error("[[services]]\nslug = \"x\"\nname = \"X\"\nnmae = \"X\"\n"),
            format!(
                "configuration: {file}: services[0].nmae names no setting (did you mean \
                 services[0].name?)"
            )
        );
    }

    #[test]
    fn known_keys_from_a_file_and_the_environment_load_lists_included() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outagewatch.toml");
        std::fs::write(
            &path,
            format!(
                "[http]\nlisten = \"127.0.0.1:18090\"\n[detector.model]\nwindow_minutes = 10\n\
                 [[admin.tokens]]\nname = \"ops\"\ntoken = \"a plain token of enough length\"\n\
                 {HOOKS}"
            ),
        )
        .unwrap();
        let settings = Settings::load_with_env(
            Some(&path),
            env(&[
                ("OUTAGEWATCH__LOG__LEVEL", "warn"),
                ("OUTAGEWATCH__HTTP__TRUSTED_PROXIES", "[\"10.0.0.0/8\"]"),
                ("OUTAGEWATCH__DATABASE__URL", "sqlite://ignored.db"),
                ("DATABASE_URL", "postgres://db/ow"),
                // Not settings: another prefix, and one underscore.
                ("OUTAGEWATCH_TEST_POSTGRES_URL", "postgres://elsewhere"),
                ("PATH", "/usr/bin"),
            ]),
        )
        .unwrap();
        assert_eq!(settings.http.listen.to_string(), "127.0.0.1:18090");
        assert_eq!(settings.detector.model.window_minutes, 10);
        assert_eq!(settings.admin.tokens[0].name, "ops");
        assert_eq!(settings.webhooks[0].name, "ops-slack");
        assert_eq!(settings.log.level, "warn");
        assert_eq!(settings.http.trusted_proxies.len(), 1);
        assert_eq!(settings.database.url.expose_secret(), "postgres://db/ow");
        // The environment overrides the file.
        let settings = Settings::load_with_env(
            Some(&path),
            env(&[("OUTAGEWATCH__HTTP__LISTEN", "127.0.0.1:18091")]),
        )
        .unwrap();
        assert_eq!(settings.http.listen.to_string(), "127.0.0.1:18091");
    }

    #[test]
    fn the_database_url_is_redacted_in_debug_output() {
        let settings: Settings = Figment::from(Toml::string(DEFAULT_TOML))
            .merge(Toml::string(
                "[database]\nurl = \"postgres://u:hunter2@db/ow\"",
            ))
            .extract()
            .unwrap();
        assert!(!format!("{settings:?}").contains("hunter2"));
    }
}
