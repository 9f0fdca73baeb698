//! Pure surge detection: per series, a rolling window count is compared with a seasonal baseline by a calibrated surprise test, and an incident state machine turns surprises into incidents.
//!
//! Reading order: [`DetectorConfig`] (every threshold, one set of defaults) → [`series`] (one
//! series' step: window → baseline → surprise → incident, plus the anomaly score) →
//! [`baseline`] → [`surprise`] (with [`distribution`], the hand-written special functions) →
//! [`window`] → [`incident`] → [`score`] (the 0–1 anomaly score of a surprise episode's onset) →
//! [`record`] (the second view of the score: a value beyond anything the series has shown) →
//! [`engine`] (every series of the live runner at once) → [`shards`] (a run of minutes on
//! several threads, the engine split by service) → [`csv`] (`outagewatch detect` over one CSV).
//!
//! Nothing here reads the clock, does I/O or draws random numbers: time is an argument
//! (unix seconds), and every view sees only the steps up to the current one, so the live
//! runner and the offline CSV mode share one core. A count series (reports per minute live;
//! any column of event counts offline) is modelled one way everywhere: a multiplicative
//! baseline, a negative-binomial test, incidents on rises, with the defaults below. Only a
//! column that is not counts (CPU, latency; offline only) gets the variant of
//! [`MetricsConfig`]: an additive baseline and a robust z-score; see [`csv`].

pub mod baseline;
pub mod csv;
pub mod distribution;
pub mod engine;
pub mod incident;
pub mod record;
pub mod score;
pub mod series;
pub mod shards;
pub mod surprise;
pub mod window;

pub use baseline::Baseline;
pub use csv::{detect_csv, CsvError};
pub use engine::{Engine, EngineEvent, PlaceCount, SeriesKey};
pub use incident::{IncidentEvent, IncidentState, IncidentSummary};
pub use series::{ParentHint, SeriesDetector, SeriesKind, Step};
pub use shards::{MinuteCounts, SteppedMinute};
pub use surprise::{Direction, Surprise};

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// A config value that cannot work, named so the operator can fix it at boot.
#[derive(Debug, Error, PartialEq)]
#[error("detector config: `{field}` {problem}")]
pub struct ConfigError {
    /// The offending key.
    pub field: &'static str,
    /// What is wrong with it.
    pub problem: &'static str,
}

/// Every threshold of the detector; `Default` serves count series, live and offline alike.
///
/// Durations are in minutes and are converted to steps of the series' own interval, so the
/// same config drives the live per-minute runner and the offline CSV mode at any interval.
/// Only [`MetricsConfig`] differs offline, and only for columns that are not counts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DetectorConfig {
    /// Length of the rolling window whose count is tested (15 minutes, as Downdetector shows).
    pub window_minutes: u32,
    /// Length of the long window, whose sum the anomaly score also tests (never shorter than
    /// `window_minutes`; equal turns it off): surges that build up over hours.
    pub long_window_minutes: u32,
    /// Width of one cell of the seasonal profile (60 → 168 hour-of-week cells); must divide a day.
    pub profile_cell_minutes: u32,
    /// Half-life of the slowly adapting level, so steady growth is absorbed rather than flagged.
    pub level_half_life_minutes: f64,
    /// Half-life of the seasonal profile, counted in weeks of visits to a cell.
    pub profile_half_life_weeks: f64,
    /// Half-life of the per-series dispersion (or spread) estimate.
    pub dispersion_half_life_minutes: f64,
    /// Dispersion assumed for a new series (variance = mean + dispersion · mean²).
    pub initial_dispersion: f64,
    /// Smallest dispersion allowed; keeps huge series from looking Poisson-calm.
    pub min_dispersion: f64,
    /// Floor of the expected window count, so an idle series does not alarm on a handful.
    pub min_expected_count: f64,
    /// No incident opens before the series has this much history (its profile is unknown).
    pub warmup_minutes: u32,
    /// A step is surging when its p-value is at most this (hundreds of series per minute → strict).
    pub open_p_value: f64,
    /// …and its window count is at least this many times the expected count…
    pub open_min_ratio: f64,
    /// …and the window holds at least this many reports.
    pub open_min_count: f64,
    /// The surge must hold this long before an incident opens.
    pub open_after_minutes: u32,
    /// While open, a step counts as calm when its p-value rises above this (looser than open)…
    pub close_p_value: f64,
    /// …or its ratio falls below this.
    pub close_max_ratio: f64,
    /// The incident resolves after this many consecutive calm minutes.
    pub calm_minutes: u32,
    /// A new surge opening within this long after a resolution reopens the same incident.
    pub merge_within_minutes: u32,
    /// An `Updated` event is raised when the peak grows by this factor over the last announced one.
    pub update_min_growth: f64,
    /// After an incident has been open this long, the baseline resumes learning so a lasting
    /// new normal is eventually accepted instead of holding the incident open forever.
    pub learn_in_incident_after_minutes: u32,
    /// Observations are clipped to expected ± this many standard deviations before learning.
    pub learn_clip_sigmas: f64,
    /// A series whose usual window count is below this leans on its parent's profile.
    pub thin_series_count: f64,
    /// A service's global series counts as surging while at least this many of its countries
    /// have an open incident (a multi-country outage too spread out to move the world total).
    pub global_min_countries: u32,
    /// Surprise (−log10 p) at which the anomaly score starts an episode (see [`score`]).
    pub onset_start_surprise: f64,
    /// Within an episode the score fires again only when the surprise grows by this factor.
    pub onset_growth: f64,
    /// A surprise episode starting this soon after the previous one ends continues it, so a
    /// routine spike every few hours is not news again.
    pub onset_merge_minutes: u32,
    /// Each recent surprise episode divides the next one's score by (1 + weight · episodes)…
    pub onset_novelty_weight: f64,
    /// …counting episodes with this half-life, so a series that is always jumpy scores low.
    pub onset_novelty_half_life_minutes: f64,
    /// Most steps the anomaly score is held back, while the surge grows, to merge its first
    /// scores into one row: one alarm per surge, at its largest score (incidents never wait).
    pub onset_hold_steps: u32,
    /// The variant for columns that are not counts (offline only; see [`MetricsConfig`]).
    pub metrics: MetricsConfig,
}

/// How `outagewatch detect` treats a column that is not counts (CPU, latency, temperature).
///
/// Live series are always report counts and never use these. Whether a column holds counts
/// is decided from its warm-up rows alone (see [`csv`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Which way a metric must move to open an incident (both: throughput also fails by dropping).
    pub direction: Direction,
    /// Profile cell width for metrics (never finer than one step).
    pub profile_cell_minutes: u32,
    /// Metrics have nightly jobs and backups: an episode starting at the time of day of one
    /// 1–3 days earlier is routine and scored down.
    pub onset_daily_recurrence: bool,
    /// A value beyond the metric's whole range so far by this share of the range is a record
    /// ([`record`]); records are news only after the warm-up.
    pub record_margin: f64,
    /// The anomaly score of a record (the surprise score wins where it is higher); 0 turns the
    /// record view off.
    pub record_score: f64,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        Self {
            window_minutes: 15,
            long_window_minutes: 120,
            profile_cell_minutes: 60,
            level_half_life_minutes: 1440.0,
            profile_half_life_weeks: 3.0,
            dispersion_half_life_minutes: 4320.0,
            initial_dispersion: 0.25,
            min_dispersion: 1e-3,
            min_expected_count: 1.0,
            warmup_minutes: 1440,
            open_p_value: 1e-8,
            open_min_ratio: 1.5,
            open_min_count: 10.0,
            open_after_minutes: 3,
            close_p_value: 1e-3,
            close_max_ratio: 1.2,
            calm_minutes: 30,
            merge_within_minutes: 60,
            update_min_growth: 1.1,
            learn_in_incident_after_minutes: 720,
            learn_clip_sigmas: 3.0,
            thin_series_count: 20.0,
            global_min_countries: 3,
            onset_start_surprise: 3.0,
            onset_growth: 1.5,
            onset_merge_minutes: 720,
            onset_novelty_weight: 1.0,
            onset_novelty_half_life_minutes: 1440.0,
            onset_hold_steps: 2,
            metrics: MetricsConfig::default(),
        }
    }
}

impl DetectorConfig {
    /// Check the values that would make the detector meaningless (call once at boot).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let fail = |field, problem| Err(ConfigError { field, problem });
        if self.window_minutes == 0 {
            return fail("window_minutes", "must be at least 1");
        }
        if self.long_window_minutes < self.window_minutes || self.long_window_minutes > 1_440 {
            return fail(
                "long_window_minutes",
                "must lie between window_minutes and 1440 (a day)",
            );
        }
        if self.profile_cell_minutes == 0 || 1_440 % self.profile_cell_minutes != 0 {
            return fail("profile_cell_minutes", "must divide a day (1440 minutes)");
        }
        if !(self.open_p_value > 0.0 && self.open_p_value < 1.0) {
            return fail("open_p_value", "must lie strictly between 0 and 1");
        }
        if !(self.close_p_value >= self.open_p_value && self.close_p_value < 1.0) {
            return fail(
                "close_p_value",
                "must lie between open_p_value and 1 (closing is looser than opening)",
            );
        }
        if !(self.open_min_ratio >= self.close_max_ratio && self.close_max_ratio >= 1.0) {
            return fail(
                "close_max_ratio",
                "must lie between 1 and open_min_ratio (closing is looser than opening)",
            );
        }
        let positive = [
            ("level_half_life_minutes", self.level_half_life_minutes),
            ("profile_half_life_weeks", self.profile_half_life_weeks),
            (
                "dispersion_half_life_minutes",
                self.dispersion_half_life_minutes,
            ),
            ("initial_dispersion", self.initial_dispersion),
            ("min_dispersion", self.min_dispersion),
            ("learn_clip_sigmas", self.learn_clip_sigmas),
            ("onset_start_surprise", self.onset_start_surprise),
        ];
        for (field, value) in positive {
            if !(value > 0.0 && value.is_finite()) {
                return fail(field, "must be a positive number");
            }
        }
        let metrics = &self.metrics;
        if !(metrics.record_margin >= 0.0 && metrics.record_margin.is_finite()) {
            return fail("metrics.record_margin", "must be a non-negative number");
        }
        if !(0.0..=1.0).contains(&metrics.record_score) {
            return fail(
                "metrics.record_score",
                "must lie between 0 and 1 (0 turns records off)",
            );
        }
        if self.onset_hold_steps > 60 {
            return fail("onset_hold_steps", "must be at most 60");
        }
        let cell = self.metrics.profile_cell_minutes;
        if cell == 0 || 1_440 % cell != 0 {
            return fail(
                "metrics.profile_cell_minutes",
                "must divide a day (1440 minutes)",
            );
        }
        Ok(())
    }
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            direction: Direction::Both,
            profile_cell_minutes: 5,
            onset_daily_recurrence: true,
            record_margin: 0.02,
            record_score: 0.5,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partial_toml_table_keeps_the_other_defaults() {
        let config: DetectorConfig =
            toml::from_str("open_p_value = 1e-8\n[metrics]\ndirection = \"rises\"\n")
                .expect("valid TOML");
        assert_eq!(config.open_p_value, 1e-8);
        assert_eq!(config.metrics.direction, Direction::Rises);
        assert_eq!(config.window_minutes, 15);
        assert_eq!(config.calm_minutes, 30);
    }

    #[test]
    fn the_defaults_are_valid_and_a_close_threshold_stricter_than_open_is_not() {
        assert_eq!(DetectorConfig::default().validate(), Ok(()));
        let config = DetectorConfig {
            close_p_value: 1e-12,
            ..DetectorConfig::default()
        };
        assert_eq!(config.validate().map_err(|e| e.field), Err("close_p_value"));
    }

    #[test]
    fn an_unknown_key_is_rejected() {
        assert!(toml::from_str::<DetectorConfig>("open_pvalue = 1e-8").is_err());
    }
}
