//! Where settings come from, one figment layer per source, and the error that names the
//! variable, or the file and key, behind a key that names no setting.

use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider, Source};

use super::{ConfigError, Settings};

/// What the environment variables that set a key start with.
const ENV_PREFIX: &str = "OUTAGEWATCH__";
/// What separates a variable's section from its key (`OUTAGEWATCH__HTTP__LISTEN`).
const ENV_SEPARATOR: &str = "__";

/// One `OUTAGEWATCH__SECTION__KEY` variable (or `DATABASE_URL`) as a figment layer of its own.
///
/// Instead of figment's `Env`, which reads the whole process environment into one layer: with a
/// layer per variable an unknown key's error names the variable that set it, and the variables
/// come in as an argument, so tests pass theirs without changing the environment every test
/// thread shares. Keys and values are read as `Env` reads them (lowercased keys, values parsed
/// as TOML-like literals), except that a key with an empty part is refused, not skipped.
pub(super) struct EnvVar {
    name: String,
    /// The dotted key path (`http.listen`).
    key: String,
    value: String,
}

impl EnvVar {
    /// The variables of `env` that set keys, in a stable order (`DATABASE_URL` last, so it wins).
    pub(super) fn settings_of(
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Vec<EnvVar>, ConfigError> {
        let mut vars = Vec::new();
        let mut database_url = None;
        for (name, value) in env {
            let name = name.trim().to_owned();
            if name == "DATABASE_URL" {
                database_url = Some(value);
                continue;
            }
            let Some(rest) = name
                .get(..ENV_PREFIX.len())
                .filter(|prefix| prefix.eq_ignore_ascii_case(ENV_PREFIX))
                .map(|_| &name[ENV_PREFIX.len()..])
            else {
                continue;
            };
            let parts: Vec<String> = rest
                .split(ENV_SEPARATOR)
                .map(str::to_ascii_lowercase)
                .collect();
            if parts.iter().any(String::is_empty) {
                return Err(ConfigError::Unknown(format!(
                    "environment variable {name} names no setting"
                )));
            }
            let key = parts.join(".");
            vars.push(EnvVar { name, key, value });
        }
        vars.sort_by(|a, b| a.name.cmp(&b.name));
        if let Some(value) = database_url {
            vars.push(EnvVar {
                name: "DATABASE_URL".into(),
                key: "database.url".into(),
                value,
            });
        }
        Ok(vars)
    }
}

impl Provider for EnvVar {
    fn metadata(&self) -> Metadata {
        Metadata::named(format!("environment variable {}", self.name))
            .source(Source::Custom(self.name.clone()))
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let value: Value = match self.value.parse() {
            Ok(value) => value,
            Err(never) => match never {},
        };
        match figment::util::nest(&self.key, value).into_dict() {
            Some(dict) => Ok(Profile::Default.collect(dict)),
            None => Err(figment::Error::from(format!(
                "{} names no setting",
                self.name
            ))),
        }
    }
}

/// The message for a key that names no setting, when `error` is one: the file (or variable)
/// it came from, the key, and the nearest known key when one is close.
fn unknown_key(error: &figment::Error) -> Option<ConfigError> {
    let figment::error::Kind::UnknownField(found, known) = &error.kind else {
        return None;
    };
    let nearest = known
        .iter()
        .map(|candidate| {
            (
                strsim::normalized_damerau_levenshtein(found, candidate),
                candidate,
            )
        })
        .filter(|(similarity, _)| *similarity >= 0.7)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, candidate)| *candidate);
    let metadata = error.metadata.as_ref()?;
    let message = match &metadata.source {
        Some(Source::Custom(variable)) => {
            let mut message = format!("environment variable {variable} names no setting");
            if let Some(nearest) = nearest {
                // The variable with the unknown part replaced (the key's parts are the
                // variable's, so they line up with the error's path).
                let mut parts: Vec<String> = variable[ENV_PREFIX.len().min(variable.len())..]
                    .split(ENV_SEPARATOR)
                    .map(str::to_owned)
                    .collect();
                if let Some(part) = parts.get_mut(error.path.len().saturating_sub(1)) {
                    *part = nearest.to_ascii_uppercase();
                    let suggestion = format!("{ENV_PREFIX}{}", parts.join(ENV_SEPARATOR));
                    message.push_str(&format!(" (did you mean {suggestion}?)"));
                }
            }
            message
        }
        source => {
            let origin = match source {
                Some(Source::File(path)) => path.display().to_string(),
                _ => metadata.name.to_string(),
            };
            let mut message = format!("{origin}: {} names no setting", key_path(&error.path));
            if let Some(nearest) = nearest {
                let mut path = error.path.clone();
                if let Some(last) = path.last_mut() {
                    *last = nearest.to_owned();
                }
                message.push_str(&format!(" (did you mean {}?)", key_path(&path)));
            }
            message
        }
    };
    Some(ConfigError::Unknown(message))
}

/// A key path as the messages write it: `http.listen`, `webhooks[0].name`.
fn key_path(path: &[String]) -> String {
    let mut written = String::new();
    for part in path {
        if part.bytes().all(|b| b.is_ascii_digit()) {
            written.push_str(&format!("[{part}]"));
        } else {
            if !written.is_empty() {
                written.push('.');
            }
            written.push_str(part);
        }
    }
    written
}

/// Extracts the settings, naming the origin of a key that names no setting.
pub(super) fn extract(figment: &Figment) -> Result<Settings, ConfigError> {
    figment
        .extract()
        .map_err(|error| unknown_key(&error).unwrap_or_else(|| ConfigError::Load(Box::new(error))))
}
