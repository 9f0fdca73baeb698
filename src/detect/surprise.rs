//! The surprise test: how unlikely a window count is under the baseline, given the series' own dispersion learned online.
//!
//! Counts use a negative-binomial tail (variance = μ + φμ², φ estimated per series by the
//! method of moments on clipped residuals), because report counts are over-dispersed (1.3–25×
//! the mean within an hour of week) and a Poisson test would alarm all day. Real-valued
//! metrics (offline mode only) use a normal tail on a robust z-score whose scale is the
//! exponentially weighted mean absolute residual.

use serde::{Deserialize, Serialize};

use super::baseline::rate_for_half_life;
use super::distribution::{ln_nb_lower_tail, ln_nb_upper_tail, ln_normal_upper_tail};

/// Which way a value must move to be surprising.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Only rises (outage reports: fewer reports than usual is good news).
    Rises,
    /// Rises and drops (metrics: a throughput collapse is an incident too).
    Both,
}

/// How the values of a series are modelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueKind {
    /// Non-negative event counts: multiplicative baseline, negative-binomial test.
    Counts,
    /// Any real value: additive baseline, robust z-score with a normal tail.
    Real,
    /// Offline only: counts if every value is a non-negative integer, real otherwise.
    Auto,
}

/// Within this many standard deviations of the expectation a value is unremarkable (surprise 0).
const UNREMARKABLE_Z_SCORE: f64 = 1.0;

/// The outcome of one surprise test.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Surprise {
    /// Probability of a value at least this extreme in the tested direction(s).
    pub p_value: f64,
    /// −log10 of the (calibrated) p-value in the tested direction(s), finite even when the
    /// p-value underflows.
    pub neg_log10_p: f64,
    /// −log10 of the model's two-sided p-value before calibration (what calibration learns).
    pub raw_surprise: f64,
    /// −log10 of the calibrated two-sided p-value: what the anomaly score rates.
    pub score_surprise: f64,
    /// True when the surprising side is a drop rather than a rise.
    pub is_drop: bool,
    /// Deviation in standard deviations under the model (signed).
    pub z_score: f64,
}

/// Per-series spread estimate: NB dispersion for counts, robust scale for real values.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Spread {
    kind: SpreadKind,
    value: f64,
    updates: u32,
    rate: f64,
    floor: f64,
    magnitude: f64,
    tail_surprise: f64,
    extreme_surprise: f64,
    hourly: Vec<f32>,
    hourly_updates: Vec<u16>,
    hourly_rate: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum SpreadKind {
    Dispersion,
    Scale,
}

// The initial dispersion counts as this many observations, so one early quiet hour cannot
// convince a new series that it is Poisson-calm.
const PRIOR_WEIGHT: f64 = 60.0;

const HOURS_PER_DAY: usize = 24;
// An hour-of-day scale is trusted in proportion to its updates, half-way at this many.
const HOURLY_TRUST_UPDATES: f64 = 12.0;

fn hour_of_day(at: i64) -> usize {
    (at.rem_euclid(86_400) / 3_600) as usize
}

// A calibrated test exceeds a surprise of 2 (p = 0.01) on 1 % of ordinary steps.
const CALIBRATED_TAIL_SURPRISE: f64 = 2.0;
const TAIL_PROBABILITY: f64 = 0.01;
// Step of the multiplicative quantile tracker: its memory is about 1/(step · 1 %) ≈ 2,000 steps.
const TAIL_TRACKING_STEP: f64 = 0.05;
// The same for the 1-in-1,000 tail (surprise 3), which catches routine rare spikes.
const CALIBRATED_EXTREME_SURPRISE: f64 = 3.0;
const EXTREME_PROBABILITY: f64 = 0.001;
const EXTREME_TRACKING_STEP: f64 = 0.2;

impl Spread {
    /// A dispersion estimator for counts, starting at `initial` and never below `floor`.
    pub fn dispersion(initial: f64, floor: f64, half_life_steps: f64) -> Self {
        Self {
            kind: SpreadKind::Dispersion,
            value: initial.max(floor),
            updates: 0,
            rate: rate_for_half_life(half_life_steps),
            floor,
            magnitude: 0.0,
            tail_surprise: CALIBRATED_TAIL_SURPRISE,
            extreme_surprise: CALIBRATED_EXTREME_SURPRISE,
            hourly: Vec::new(),
            hourly_updates: Vec::new(),
            hourly_rate: 0.0,
        }
    }

    /// A scale estimator (mean absolute residual, overall and per hour of day) for real values.
    ///
    /// Metrics are often noisier at some hours (a daily ramp, a nightly batch job) than at
    /// others; one scale for the whole day would either alarm at the noisy hours or sleep
    /// through the quiet ones.
    pub fn scale(half_life_steps: f64) -> Self {
        Self {
            kind: SpreadKind::Scale,
            value: 0.0,
            updates: 0,
            rate: rate_for_half_life(half_life_steps),
            floor: 0.0,
            magnitude: 0.0,
            tail_surprise: CALIBRATED_TAIL_SURPRISE,
            extreme_surprise: CALIBRATED_EXTREME_SURPRISE,
            hourly: vec![0.0; HOURS_PER_DAY],
            hourly_updates: vec![0; HOURS_PER_DAY],
            hourly_rate: rate_for_half_life(half_life_steps / HOURS_PER_DAY as f64),
        }
    }

    /// Standard deviation of the value around `expected` under the current estimate.
    pub fn std_dev(&self, expected: f64, at: i64) -> f64 {
        match self.kind {
            SpreadKind::Dispersion => {
                let mean = expected.max(0.0);
                (mean + self.value * mean * mean).sqrt()
            }
            SpreadKind::Scale => {
                // Mean absolute deviation → standard deviation for a normal law; the relative
                // floor keeps a perfectly flat metric from turning rounding noise into alarms.
                let floor = 1e-3 * self.magnitude.max(expected.abs()) + 1e-9;
                let hour = hour_of_day(at);
                let updates = f64::from(self.hourly_updates[hour]);
                let weight = updates / (updates + HOURLY_TRUST_UPDATES);
                let mean_abs = weight * f64::from(self.hourly[hour]) + (1.0 - weight) * self.value;
                (mean_abs * 1.253_314_137_315_500_3).max(floor)
            }
        }
    }

    /// The NB dispersion (counts) or the mean absolute residual (real values).
    pub fn value(&self) -> f64 {
        self.value
    }

    /// Learn from one (already clipped) observation and its expectation.
    pub fn learn(&mut self, observed: f64, expected: f64, at: i64) {
        self.updates = self.updates.saturating_add(1);
        match self.kind {
            SpreadKind::Dispersion => {
                if expected <= 0.0 {
                    return;
                }
                let residual = observed - expected;
                // Method of moments: E[(x−μ)² − μ] = φμ².
                let sample = (residual * residual - expected) / (expected * expected);
                let rate = self
                    .rate
                    .max(1.0 / (f64::from(self.updates) + PRIOR_WEIGHT));
                self.value += rate * (sample.clamp(-1.0, 25.0) - self.value);
                self.value = self.value.max(self.floor);
            }
            SpreadKind::Scale => {
                let rate = self.rate.max(1.0 / f64::from(self.updates));
                let abs_residual = (observed - expected).abs();
                self.value += rate * (abs_residual - self.value);
                self.magnitude += rate * (observed.abs() - self.magnitude);
                let hour = hour_of_day(at);
                self.hourly_updates[hour] = self.hourly_updates[hour].saturating_add(1);
                let hourly_rate = self
                    .hourly_rate
                    .max(1.0 / f64::from(self.hourly_updates[hour]));
                let cell = f64::from(self.hourly[hour]);
                self.hourly[hour] = (cell + hourly_rate * (abs_residual - cell)) as f32;
            }
        }
    }

    /// Track how often ordinary (non-incident) steps are surprising, to calibrate the test.
    ///
    /// The model's p-values are only trusted as far as the series bears them out: if more
    /// than 1 % of ordinary steps exceed a surprise of 2 (p = 0.01), the tails are heavier
    /// than modelled (a daily shape the profile cannot hold, heavy-tailed noise) and every
    /// surprise is scaled down by the same factor. A well-modelled series keeps a factor of 1;
    /// the correction never makes the test more liberal.
    ///
    /// `correlated_steps` is the window length: overlapping windows make surprises come in
    /// runs that long, so each step moves the trackers by that fraction of a step lest one
    /// run of 15 overlapping minutes count as 15 independent exceedances.
    pub fn learn_surprise(&mut self, raw_surprise: f64, correlated_steps: usize) {
        let weight = 1.0 / correlated_steps.max(1) as f64;
        // Multiplicative steps keep the tracker scale-free; the equilibrium sits where
        // exactly TAIL_PROBABILITY of the steps lie above it.
        if raw_surprise > self.tail_surprise {
            self.tail_surprise *= 1.0 + weight * TAIL_TRACKING_STEP * (1.0 - TAIL_PROBABILITY);
        } else {
            self.tail_surprise *= 1.0 - weight * TAIL_TRACKING_STEP * TAIL_PROBABILITY;
        }
        self.tail_surprise = self.tail_surprise.clamp(0.1, 1e6);
        if raw_surprise > self.extreme_surprise {
            self.extreme_surprise *=
                1.0 + weight * EXTREME_TRACKING_STEP * (1.0 - EXTREME_PROBABILITY);
        } else {
            self.extreme_surprise *= 1.0 - weight * EXTREME_TRACKING_STEP * EXTREME_PROBABILITY;
        }
        self.extreme_surprise = self.extreme_surprise.clamp(0.1, 1e6);
    }

    /// The factor by which raw surprises are currently divided (at least 1).
    pub fn calibration(&self) -> f64 {
        (self.tail_surprise / CALIBRATED_TAIL_SURPRISE)
            .max(self.extreme_surprise / CALIBRATED_EXTREME_SURPRISE)
            .max(1.0)
    }

    /// Test `observed` against `expected`: in the given direction(s) for incidents, and on
    /// both sides for the anomaly score.
    ///
    /// An anomaly is news whichever way it goes (a count collapsing to zero can mean the
    /// reports stopped reaching us), but only a rise of reports is an outage: counts open
    /// incidents on rises while their score sees both sides. The calibration learns from
    /// the two-sided surprise, so one factor serves both.
    pub fn test(&self, observed: f64, expected: f64, direction: Direction, at: i64) -> Surprise {
        let sd = self.std_dev(expected, at);
        let z_score = if sd > 0.0 {
            (observed - expected) / sd
        } else {
            0.0
        };
        if z_score.abs() < UNREMARKABLE_Z_SCORE {
            // Within a standard deviation of the expectation either tail holds at least 15 %
            // (a surprise under 0.83): skip the tails, the costly part of a step. Nothing
            // downstream tells such a surprise from 0: calibration never divides by less than
            // 1 (its trackers sit at 2 and 3), episodes start at 3 and end below 1.5, and an
            // incident stays open only below p = 1e-3.
            return Surprise {
                p_value: 1.0,
                neg_log10_p: 0.0,
                raw_surprise: 0.0,
                score_surprise: 0.0,
                is_drop: false,
                z_score,
            };
        }
        let ln_rise = if observed > expected {
            self.ln_upper(observed, expected, z_score)
        } else {
            0.0
        };
        let ln_drop = if observed < expected {
            self.ln_lower(observed, expected, z_score)
        } else {
            0.0
        };
        // Testing both sides doubles the chance of a false alarm.
        let ln_two_sided = (ln_rise.min(ln_drop) + std::f64::consts::LN_2).min(0.0);
        let (ln_p, is_drop) = match direction {
            Direction::Rises => (ln_rise, false),
            Direction::Both => (ln_two_sided, ln_drop < ln_rise),
        };
        // Numerical trouble (an absurd input) must read as "no evidence", never as an alarm.
        let finite = |ln: f64| if ln.is_nan() { 0.0 } else { ln };
        let to_surprise = |ln: f64| -finite(ln) / std::f64::consts::LN_10;
        let calibration = self.calibration();
        let raw_surprise = to_surprise(ln_two_sided);
        let neg_log10_p = to_surprise(ln_p) / calibration;
        Surprise {
            p_value: 10f64.powf(-neg_log10_p),
            neg_log10_p,
            raw_surprise,
            score_surprise: raw_surprise / calibration,
            is_drop,
            z_score,
        }
    }

    fn ln_upper(&self, observed: f64, expected: f64, z_score: f64) -> f64 {
        match self.kind {
            SpreadKind::Dispersion => ln_nb_upper_tail(observed, expected, self.value),
            SpreadKind::Scale => ln_normal_upper_tail(z_score),
        }
    }

    fn ln_lower(&self, observed: f64, expected: f64, z_score: f64) -> f64 {
        match self.kind {
            SpreadKind::Dispersion => ln_nb_lower_tail(observed, expected, self.value),
            SpreadKind::Scale => ln_normal_upper_tail(-z_score),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_count_at_the_expectation_is_not_surprising() {
        let spread = Spread::dispersion(0.1, 1e-3, 1000.0);
        let surprise = spread.test(7.0, 7.0, Direction::Rises, 0);
        assert_eq!(surprise.p_value, 1.0);
        assert_eq!(surprise.neg_log10_p, 0.0);
    }

    #[test]
    fn seventy_four_reports_against_seven_expected_is_an_incident_level_surprise() {
        // Pakistan: 74 reports in 15 minutes where ~7 are usual, dispersion 0.2.
        let spread = Spread::dispersion(0.2, 1e-3, 1000.0);
        let surprise = spread.test(74.0, 7.0, Direction::Rises, 0);
        assert!((surprise.p_value / 2.209_257_441_379_981_6e-13 - 1.0).abs() < 1e-9);
        assert!(surprise.p_value < 1e-6);
    }

    #[test]
    fn dispersion_converges_to_the_moment_estimate() {
        // Alternating 5 and 15 around 10: variance 25 = 10 + φ·100 → φ = 0.15.
        let mut spread = Spread::dispersion(0.25, 1e-3, 200.0);
        for i in 0..5_000 {
            spread.learn(if i % 2 == 0 { 5.0 } else { 15.0 }, 10.0, 0);
        }
        assert!((spread.value() - 0.15).abs() < 1e-6, "{}", spread.value());
    }

    #[test]
    fn drops_count_only_when_both_directions_are_tested() {
        let mut spread = Spread::scale(100.0);
        for i in 0..200 {
            spread.learn(if i % 2 == 0 { 9.0 } else { 11.0 }, 10.0, i * 60);
        }
        let rises = spread.test(0.0, 10.0, Direction::Rises, 200 * 60);
        let both = spread.test(0.0, 10.0, Direction::Both, 200 * 60);
        assert_eq!(rises.p_value, 1.0);
        assert!(both.is_drop && both.p_value < 1e-10, "{both:?}");
    }
}
