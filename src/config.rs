//! Settings: the embedded `config/default.toml`, then an optional file, then `OUTAGEWATCH__*` env.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use figment::providers::{Env, Format, Toml};
use figment::Figment;
use ipnet::IpNet;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// The defaults, compiled into the binary so a bare `outagewatch serve` works anywhere.
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

/// Every setting of the service.
#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    pub http: HttpSettings,
    pub database: DatabaseSettings,
    pub ingest: IngestSettings,
    pub rate_limit: RateLimitSettings,
    pub log: LogSettings,
    pub detector: DetectorSettings,
    pub services: Vec<ServiceSettings>,
}

/// The background surge detector: how it runs, and (`model`) the detection thresholds.
#[derive(Debug, Clone, Deserialize)]
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

/// The HTTP listener and how client addresses are read.
#[derive(Debug, Clone, Deserialize)]
pub struct HttpSettings {
    pub listen: SocketAddr,
    #[serde(deserialize_with = "networks")]
    pub trusted_proxies: Vec<IpNet>,
    pub max_body_bytes: usize,
    pub read_cache_seconds: u64,
    pub read_cache_mebibytes: u64,
}

/// Where reports are stored.
#[derive(Debug, Clone, Deserialize)]
pub struct DatabaseSettings {
    /// May hold a password, so it never appears in logs or `Debug` output.
    pub url: SecretString,
    pub max_connections: u32,
    pub acquire_timeout_ms: u64,
}

/// The ingest queue and the batch writer.
#[derive(Debug, Clone, Deserialize)]
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
pub struct RateLimitSettings {
    pub per_ip_per_minute: u32,
    pub burst: u32,
}

/// Log output.
#[derive(Debug, Clone, Deserialize)]
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
pub struct ServiceSettings {
    pub slug: String,
    pub name: String,
}

/// Why the settings could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Load(#[from] Box<figment::Error>),
    #[error("configuration: {0}")]
    Invalid(String),
}

impl Settings {
    /// Loads defaults, then `file` if given, then the environment, and validates the result.
    pub fn load(file: Option<&Path>) -> Result<Settings, ConfigError> {
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
        figment = figment
            .merge(Env::prefixed("OUTAGEWATCH__").split("__"))
            .merge(
                Env::raw()
                    .only(&["DATABASE_URL"])
                    .map(|_| "database.url".into()),
            );
        let settings: Settings = figment.extract().map_err(Box::new)?;
        settings.validate()?;
        Ok(settings)
    }

    /// Loads defaults overridden by TOML layers (later wins), ignoring the environment: for tests and tools.
    pub fn from_toml(layers: &[&str]) -> Result<Settings, ConfigError> {
        let figment = layers.iter().fold(
            Figment::from(Toml::string(DEFAULT_TOML)),
            |figment, layer| figment.merge(Toml::string(layer)),
        );
        let settings: Settings = figment.extract().map_err(Box::new)?;
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
        if self.services.is_empty() {
            return Err(ConfigError::Invalid(
                "services must list at least one service".into(),
            ));
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
