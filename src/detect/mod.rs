//! Pure surge detection: per series, a rolling window count is compared with a seasonal baseline by a calibrated surprise test, and an incident state machine turns surprises into incidents.
//!
//! Reading order: [`DetectorConfig`] (every threshold, live defaults) → [`series`] (one
//! series' step: window → baseline → surprise → incident) → [`baseline`] → [`surprise`]
//! (with [`distribution`], the hand-written special functions) → [`incident`] → [`score`]
//! (the 0–1 anomaly score for charts and threshold sweeps) → [`csv`] (the offline
//! `outagewatch detect` mode over a whole CSV, with [`novelty`] beside the surprise test).
//!
//! Nothing here reads the clock, does I/O or draws random numbers: time is an argument
//! (unix seconds), so the live runner and the offline CSV mode share one core. Live, a
//! series is a per-minute report count: multiplicative baseline, negative-binomial test,
//! rises only. Offline, `ValueKind::Auto` keeps that model for columns that look like
//! counts and switches to an additive baseline with a robust z-score for any other metric,
//! testing rises and drops; see [`csv`].

pub mod baseline;
pub mod csv;
pub mod distribution;
pub mod engine;
pub mod incident;
pub mod novelty;
pub mod score;
pub mod series;
pub mod surprise;

pub use baseline::Baseline;
pub use csv::{detect_csv, CsvError};
pub use engine::{Engine, EngineEvent, PlaceCount, SeriesKey};
pub use incident::{IncidentEvent, IncidentState, IncidentSummary};
pub use series::{ParentHint, SeriesDetector, Step};
pub use surprise::{Direction, Surprise, ValueKind};

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

/// Every threshold of the detector; `Default` serves live per-minute outage-report counts.
///
/// Durations are in minutes and are converted to steps of the series' own interval, so the
/// same config drives the live per-minute runner and the offline CSV mode at any interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DetectorConfig {
    /// Length of the rolling window whose count is tested (15 minutes, as Downdetector shows).
    pub window_minutes: u32,
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
    /// scores into one row (0 live: a dashboard must not wait; see [`OfflineConfig::onset_hold_steps`]).
    pub onset_hold_steps: u32,
    /// Divide down an episode starting at the time of day of one 1–3 days earlier (off live:
    /// outage reports have no nightly jobs; see [`OfflineConfig::onset_daily_recurrence`]).
    pub onset_daily_recurrence: bool,
    /// Which way counts must move to be surprising (live outage counts: rises only).
    pub direction: Direction,
    /// How values are modelled: report counts (negative binomial) or real-valued metrics.
    pub value_kind: ValueKind,
    /// Settings used only by the offline CSV mode.
    pub offline: OfflineConfig,
}

/// Overrides for `outagewatch detect` on an arbitrary CSV at an arbitrary interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OfflineConfig {
    /// Direction tested offline (both: metrics also fail by dropping).
    pub direction: Direction,
    /// `Auto` models non-negative integer columns as counts and anything else as real values.
    pub value_kind: ValueKind,
    /// Shortest window, in steps, at coarse intervals where the window is under one step.
    pub min_window_steps: u32,
    /// Profile cell width offline (never finer than one step; memory is no concern offline).
    pub profile_cell_minutes: u32,
    /// Offline the score is read afterwards, so it may wait (up to two steps, while the surge
    /// grows) to merge a surge's first steps into one row: one alarm per surge, at its largest score.
    pub onset_hold_steps: u32,
    /// Metrics have nightly jobs and backups: a spike at the same time of day is routine.
    pub onset_daily_recurrence: bool,
    /// Equal bins the series' range is cut into for the transition-novelty score
    /// ([`novelty`]); 0 turns it off.
    pub novelty_bins: u32,
    /// Share of the rows (at most `novelty_learning_max_steps`) that only learn transitions.
    pub novelty_learning_fraction: f64,
    /// Cap of the learning period, in rows.
    pub novelty_learning_max_steps: u32,
    /// Rows between two emitted novel transitions, as a share of the learning period.
    pub novelty_rest_fraction: f64,
    /// A surprise score at a novel transition is multiplied by `1 + novelty_boost`.
    pub novelty_boost: f64,
    /// The score of an emitted novel transition where the surprise test is quieter.
    pub novelty_score: f64,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        Self {
            window_minutes: 15,
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
            onset_hold_steps: 0,
            onset_daily_recurrence: false,
            direction: Direction::Rises,
            value_kind: ValueKind::Counts,
            offline: OfflineConfig::default(),
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
        let offline = &self.offline;
        if offline.novelty_bins > 64 {
            return fail(
                "offline.novelty_bins",
                "must be at most 64 (0 turns it off)",
            );
        }
        let shares = [
            (
                "offline.novelty_learning_fraction",
                offline.novelty_learning_fraction,
            ),
            (
                "offline.novelty_rest_fraction",
                offline.novelty_rest_fraction,
            ),
            ("offline.novelty_score", offline.novelty_score),
        ];
        for (field, value) in shares {
            if !(0.0..=1.0).contains(&value) {
                return fail(field, "must lie between 0 and 1");
            }
        }
        if !(offline.novelty_boost >= 0.0 && offline.novelty_boost.is_finite()) {
            return fail("offline.novelty_boost", "must be a non-negative number");
        }
        Ok(())
    }
}

impl Default for OfflineConfig {
    fn default() -> Self {
        Self {
            direction: Direction::Both,
            value_kind: ValueKind::Auto,
            min_window_steps: 1,
            profile_cell_minutes: 5,
            onset_hold_steps: 2,
            onset_daily_recurrence: true,
            novelty_bins: 8,
            novelty_learning_fraction: 0.15,
            novelty_learning_max_steps: 750,
            novelty_rest_fraction: 0.2,
            novelty_boost: 0.5,
            novelty_score: 0.5,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partial_toml_table_keeps_the_other_defaults() {
        let config: DetectorConfig =
            toml::from_str("open_p_value = 1e-8\n[offline]\ndirection = \"rises\"\n")
                .expect("valid TOML");
        assert_eq!(config.open_p_value, 1e-8);
        assert_eq!(config.offline.direction, Direction::Rises);
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
