//! One series' detector: each step rolls the window, asks the baseline what to expect, tests the surprise and advances the incident state machine; the runner calls it once per minute per series.

use serde::{Deserialize, Serialize};

use super::baseline::{rate_for_half_life, Baseline, BaselineForm};
use super::incident::{
    ratio, Incident, IncidentEvent, IncidentRules, IncidentState, IncidentSummary, Observation,
};
use super::record::{RecordRange, RecordRules};
use super::score::{gap_steps, OnsetRules, OnsetScore};
use super::surprise::{Direction, Spread};
use super::window::{WindowValues, Windows};
use super::DetectorConfig;

// Gaps longer than this many weeks are not replayed step by step: the older part of the gap
// would only teach the baseline zeros it has already learned.
const MAX_REPLAYED_GAP_WEEKS: i64 = 2;

// An episode start within this many minutes of the time of day of an earlier one is a recurrence.
const RECURRENCE_TOLERANCE_MINUTES: u32 = 30;

// After an emitted record the next waits a fifth of the warm-up (CAD OSE's rest period, which is
// a fifth of its learning period), so a climb that sets record after record is one alarm.
const RECORD_REST_DIVISOR: u64 = 5;

/// How a series' values are modelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SeriesKind {
    /// Non-negative event counts (every live series): multiplicative baseline,
    /// negative-binomial test, incidents on rises.
    Counts,
    /// Any real-valued metric (offline only): additive baseline, robust z-score, and the
    /// overrides of [`super::MetricsConfig`].
    Metric,
}

/// What the parent series (the country of a city, the globe of a country) expects right now.
///
/// A thin series borrows its parent's seasonal shape, scaled by its own usual share of the
/// parent, because a handful of reports per hour cannot teach a 168-cell profile.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ParentHint {
    /// The parent's expected window count at this step.
    pub expected_count: f64,
}

/// The outcome of feeding one step to a [`SeriesDetector`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Step {
    /// Start of the step (unix seconds).
    pub at: i64,
    /// The count (or value) fed for this step.
    pub count: f64,
    /// Rolling window count (counts) or window mean (real values).
    pub window_count: f64,
    /// The expected window count from the baseline (and parent, for thin series).
    pub expected: f64,
    /// Window count over expected count (counts only; 1 for real-valued metrics).
    pub ratio: f64,
    /// p-value of the surprise test (1 when unremarkable).
    pub p_value: f64,
    /// −log10 of the p-value, finite for any surge size.
    pub surprise: f64,
    /// A score in [0, 1] for threshold sweeps: the surprise at an episode's onset (either
    /// way), or a record ([`super::record`]), whichever is higher.
    pub anomaly_score: f64,
    /// Lifecycle state after this step.
    pub state: IncidentState,
    /// What changed at this step, if anything.
    pub event: Option<IncidentEvent>,
    /// The last event raised while replaying a gap of missing steps before this one.
    pub gap_event: Option<IncidentEvent>,
    /// The open incident after this step, if any.
    pub incident: Option<IncidentSummary>,
}

/// Step-level parameters derived once from the config and the series' interval.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Params {
    step_seconds: i64,
    window_steps: usize,
    counts: bool,
    /// Missing steps of a count series are replayed as zeros (live rollups store only minutes
    /// with reports); off where a missing row means no observation (a CSV).
    gaps_are_zeros: bool,
    direction: Direction,
    open_p_value: f64,
    open_min_ratio: f64,
    open_min_count: f64,
    close_p_value: f64,
    close_max_ratio: f64,
    min_expected_count: f64,
    warmup_seconds: i64,
    learn_in_incident_after_seconds: i64,
    learn_clip_sigmas: f64,
    thin_series_count: f64,
    share_rate: f64,
    rules: IncidentRules,
    onset: OnsetRules,
    record: RecordRules,
    record_score: f64,
}

/// The whole state of one series: window, baseline, spread, incident, parent share.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SeriesDetector {
    params: Params,
    baseline: Baseline,
    spread: Spread,
    incident: Incident,
    /// The long window's own spread and calibration (the anomaly score only).
    long_spread: Spread,
    onset: OnsetScore,
    record: RecordRange,
    windows: Windows,
    first_at: Option<i64>,
    last_at: Option<i64>,
    share_count: f64,
    share_parent: f64,
    share_updates: u32,
    #[serde(skip)]
    last_step: Option<LastStep>,
}

/// The figures of the last step, which a repeated step answers again (without its events).
/// Kept apart from [`Step`], a third of its size: copying whole steps was a tenth of the
/// engine's time.
#[derive(Debug, Clone, Copy)]
struct LastStep {
    at: i64,
    count: f64,
    window_count: f64,
    expected: f64,
    ratio: f64,
    p_value: f64,
    surprise: f64,
    anomaly_score: f64,
    state: IncidentState,
}

impl SeriesDetector {
    /// A fresh count series stepped every `step_seconds` (60 for live rollups).
    pub fn new(config: &DetectorConfig, step_seconds: i64) -> Self {
        Self::of_kind(config, step_seconds, SeriesKind::Counts)
    }

    /// A fresh series of the given kind; a metric takes the overrides of `config.metrics`.
    pub fn of_kind(config: &DetectorConfig, step_seconds: i64, kind: SeriesKind) -> Self {
        let step_seconds = step_seconds.max(1);
        let counts = kind == SeriesKind::Counts;
        let (direction, cell_minutes, daily_recurrence, record_score) = if counts {
            (Direction::Rises, config.profile_cell_minutes, false, 0.0)
        } else {
            let step_minutes = u32::try_from(step_seconds / 60).unwrap_or(u32::MAX).max(1);
            (
                config.metrics.direction,
                // Never finer than one step: a cell no step falls in would never learn.
                config.metrics.profile_cell_minutes.max(step_minutes),
                config.metrics.onset_daily_recurrence,
                config.metrics.record_score,
            )
        };
        let steps_for = |minutes: u32| -> u32 {
            let steps = (i64::from(minutes) * 60 + step_seconds - 1) / step_seconds;
            steps.clamp(1, i64::from(u32::MAX)) as u32
        };
        let window_steps = ((f64::from(config.window_minutes) * 60.0 / step_seconds as f64).round()
            as usize)
            .max(1);
        let long_steps = ((f64::from(config.long_window_minutes) * 60.0 / step_seconds as f64)
            .round() as usize)
            .max(window_steps);
        let warmup_steps = u64::from(steps_for(config.warmup_minutes));
        let form = if counts {
            BaselineForm::Multiplicative
        } else {
            BaselineForm::Additive
        };
        let dispersion_half_life_steps =
            config.dispersion_half_life_minutes * 60.0 / step_seconds as f64;
        let spread = if counts {
            Spread::dispersion(
                config.initial_dispersion,
                config.min_dispersion,
                dispersion_half_life_steps,
            )
        } else {
            Spread::scale(dispersion_half_life_steps)
        };
        let long_spread = spread.clone();
        let params = Params {
            step_seconds,
            window_steps,
            counts,
            gaps_are_zeros: counts,
            direction,
            open_p_value: config.open_p_value,
            open_min_ratio: config.open_min_ratio,
            open_min_count: config.open_min_count,
            close_p_value: config.close_p_value,
            close_max_ratio: config.close_max_ratio,
            min_expected_count: config.min_expected_count,
            warmup_seconds: i64::from(config.warmup_minutes) * 60,
            learn_in_incident_after_seconds: i64::from(config.learn_in_incident_after_minutes) * 60,
            learn_clip_sigmas: config.learn_clip_sigmas,
            thin_series_count: config.thin_series_count,
            share_rate: rate_for_half_life(
                config.level_half_life_minutes * 60.0 / step_seconds as f64,
            ),
            rules: IncidentRules {
                open_after_steps: steps_for(config.open_after_minutes),
                calm_steps: steps_for(config.calm_minutes),
                merge_within_seconds: i64::from(config.merge_within_minutes) * 60,
                step_seconds,
                update_min_growth: config.update_min_growth,
            },
            onset: OnsetRules {
                start_surprise: config.onset_start_surprise,
                growth: config.onset_growth,
                calm_steps: steps_for(config.calm_minutes),
                merge_steps: steps_for(config.onset_merge_minutes),
                episode_fade_per_step: 0.5f64.powf(
                    step_seconds as f64 / (60.0 * config.onset_novelty_half_life_minutes.max(1.0)),
                ),
                novelty_weight: config.onset_novelty_weight,
                hold_steps: config.onset_hold_steps,
                day_steps: if daily_recurrence {
                    u32::try_from(86_400 / step_seconds).unwrap_or(0)
                } else {
                    0
                },
                day_tolerance_steps: steps_for(RECURRENCE_TOLERANCE_MINUTES),
            },
            record: RecordRules {
                margin: config.metrics.record_margin,
                learning_steps: warmup_steps,
                rest_steps: warmup_steps / RECORD_REST_DIVISOR,
            },
            record_score,
        };
        Self {
            params,
            baseline: Baseline::new(
                form,
                step_seconds,
                cell_minutes,
                config.level_half_life_minutes,
                config.profile_half_life_weeks,
            ),
            spread,
            long_spread,
            incident: Incident::default(),
            onset: OnsetScore::default(),
            record: RecordRange::default(),
            windows: Windows::new(window_steps, long_steps),
            first_at: None,
            last_at: None,
            share_count: 0.0,
            share_parent: 0.0,
            share_updates: 0,
            last_step: None,
        }
    }

    /// Treat a missing step as missing rather than as zero: for series whose rows are
    /// observations (a CSV), not sparse rollups.
    pub fn with_gaps_as_missing(mut self) -> Self {
        self.params.gaps_are_zeros = false;
        self
    }

    /// Number of steps in the rolling window.
    pub fn window_steps(&self) -> usize {
        self.params.window_steps
    }

    /// Number of steps in the long window (the anomaly score's second test).
    pub fn long_window_steps(&self) -> usize {
        self.windows.long_steps()
    }

    /// The open incident, if any.
    pub fn incident(&self) -> Option<&IncidentSummary> {
        self.incident.current()
    }

    /// What the series expects at `at` on its own (no parent), e.g. to pass to its children.
    pub fn expected_at(&self, at: i64) -> f64 {
        self.baseline.expected(at)
    }

    /// Feed the count of one step at time `at` (unix seconds, start of the step).
    ///
    /// Steps must come in order. Missing steps of a count series are replayed as zero counts
    /// (a minute without rollups had no reports); a real-valued series simply skips them. A
    /// step at or before the previous one is ignored and the previous result repeated
    /// without an event.
    pub fn step(&mut self, at: i64, count: f64, parent: Option<ParentHint>) -> Step {
        self.step_forced(at, count, parent, false)
    }

    /// [`SeriesDetector::step`], where `forced` declares the series surging whatever its own
    /// test says, as long as its count is above the expectation (a global series while
    /// several of its countries are in incidents).
    pub fn step_forced(
        &mut self,
        at: i64,
        count: f64,
        parent: Option<ParentHint>,
        forced: bool,
    ) -> Step {
        // A count cannot be negative or undefined; a metric can be negative but not undefined.
        let count = match (count.is_finite(), self.params.counts) {
            (false, _) => 0.0,
            (true, true) => count.max(0.0),
            (true, false) => count,
        };
        let parent = parent.filter(|hint| hint.expected_count.is_finite());
        let mut gap_event = None;
        if let Some(last) = self.last_at {
            if at <= last {
                return self.repeat_last(at);
            }
            if self.params.gaps_are_zeros {
                let step_seconds = self.params.step_seconds;
                let missing = (at - last) / step_seconds - 1;
                let cap = MAX_REPLAYED_GAP_WEEKS * 7 * 86_400 / step_seconds;
                let replayed = missing.min(cap);
                for back in (1..=replayed).rev() {
                    let gap_step = self.process(at - back * step_seconds, 0.0, parent, false);
                    if gap_step.event.is_some() {
                        gap_event = gap_step.event;
                    }
                }
            }
        } else {
            self.first_at = Some(at);
        }
        // `last_at` still holds the previous row while this one is processed (see `gap_steps`).
        let mut step = self.process(at, count, parent, forced);
        self.last_at = Some(at);
        step.gap_event = gap_event;
        self.last_step = Some(LastStep {
            at: step.at,
            count: step.count,
            window_count: step.window_count,
            expected: step.expected,
            ratio: step.ratio,
            p_value: step.p_value,
            surprise: step.surprise,
            anomaly_score: step.anomaly_score,
            state: step.state,
        });
        step
    }

    /// The figures of the last step fed (without its events), if any.
    pub fn last_step(&self) -> Option<Step> {
        self.last_step.map(|last| Step {
            anomaly_score: last.anomaly_score,
            ..self.repeat_last(last.at)
        })
    }

    fn repeat_last(&self, at: i64) -> Step {
        match self.last_step {
            // Nothing has happened since: the open incident is the one that step left.
            Some(last) => Step {
                at: last.at,
                count: last.count,
                window_count: last.window_count,
                expected: last.expected,
                ratio: last.ratio,
                p_value: last.p_value,
                surprise: last.surprise,
                anomaly_score: 0.0,
                state: last.state,
                event: None,
                gap_event: None,
                incident: self.incident.current().copied(),
            },
            None => Step {
                at,
                count: 0.0,
                window_count: 0.0,
                expected: 0.0,
                ratio: 1.0,
                p_value: 1.0,
                surprise: 0.0,
                anomaly_score: 0.0,
                state: IncidentState::Calm,
                event: None,
                gap_event: None,
                incident: None,
            },
        }
    }

    fn process(&mut self, at: i64, count: f64, parent: Option<ParentHint>, forced: bool) -> Step {
        let p = self.params;
        let windows = self.windows.push(count);
        let window_count = if p.counts {
            // Rounding in the running sum must not produce a negative count.
            windows.main_sum.max(0.0)
        } else {
            windows.main_sum / windows.main_filled as f64
        };
        let expected = self.expectation(at, window_count, parent);
        let surprise = self.spread.test(window_count, expected, p.direction, at);
        let ratio_now = if p.counts {
            ratio(window_count, expected)
        } else {
            1.0
        };
        let (surging, still_hot) = if p.counts {
            let floor_met = if surprise.is_drop {
                expected >= p.open_min_count && ratio_now <= 1.0 / p.open_min_ratio
            } else {
                window_count >= p.open_min_count && ratio_now >= p.open_min_ratio
            };
            let still_beyond = if surprise.is_drop {
                ratio_now <= 1.0 / p.close_max_ratio
            } else {
                ratio_now >= p.close_max_ratio
            };
            (
                surprise.p_value <= p.open_p_value && floor_met,
                surprise.p_value <= p.close_p_value && still_beyond,
            )
        } else {
            (
                surprise.p_value <= p.open_p_value,
                surprise.p_value <= p.close_p_value,
            )
        };
        let forced = forced && p.counts && window_count >= p.open_min_count && ratio_now > 1.0;
        let (surging, still_hot) = (surging || forced, still_hot || forced);
        let step_excess = if p.counts {
            let per_step = expected / p.window_steps as f64;
            if surprise.is_drop {
                (per_step - count).max(0.0)
            } else {
                (count - per_step).max(0.0)
            }
        } else {
            (window_count - expected).abs()
        };
        let may_open = self
            .first_at
            .is_some_and(|first| at - first >= p.warmup_seconds);
        let observation = Observation {
            at,
            window_count,
            expected,
            step_excess,
            surging,
            still_hot,
            is_drop: surprise.is_drop,
        };
        let (state, event) = self.incident.step(&p.rules, &observation, may_open);

        let learn = match self.incident.open_since() {
            None => true,
            Some(since) => at - since >= p.learn_in_incident_after_seconds,
        };
        // A window still filling up holds fewer steps than it will: learning from it would bias the level.
        let window_full = windows.main_filled == p.window_steps;
        if learn && window_full {
            self.learn(at, window_count, expected, parent);
            self.spread
                .learn_surprise(surprise.raw_surprise, p.window_steps);
        }

        let score_surprise = self.long_window_surprise(
            at,
            &windows,
            surprise.score_surprise,
            expected,
            learn && window_full,
        );
        let elapsed = gap_steps(self.last_at, at, p.step_seconds, p.gaps_are_zeros);
        let onset_score = self.onset.step(&p.onset, score_surprise, elapsed);
        let record = p.record_score > 0.0 && self.record.step(&p.record, count);
        let anomaly_score = if record {
            onset_score.max(p.record_score)
        } else {
            onset_score
        };
        Step {
            at,
            count,
            window_count,
            expected,
            ratio: ratio_now,
            p_value: surprise.p_value,
            surprise: surprise.neg_log10_p,
            anomaly_score,
            state,
            event,
            gap_event: None,
            incident: self.incident.current().copied(),
        }
    }

    /// The surprise the anomaly score rates: the main window's, or the long window's where
    /// that is higher, less log10(2) for having looked twice (a Bonferroni correction).
    ///
    /// A surge that builds up over an hour or two (a level shift, a slow climb) moves each
    /// 15-minute window too little, but its two-hour sum far beyond the expected one. The long
    /// window has its own spread and calibration, learned like the main one's, and serves the
    /// score only: incidents keep the main window's test.
    fn long_window_surprise(
        &mut self,
        at: i64,
        windows: &WindowValues,
        main_surprise: f64,
        expected: f64,
        learn: bool,
    ) -> f64 {
        let p = self.params;
        let long_steps = self.windows.long_steps();
        if long_steps == p.window_steps {
            return main_surprise;
        }
        let (value, long_expected) = if p.counts {
            let scale = long_steps as f64 / p.window_steps as f64;
            (
                windows.long_sum.max(0.0),
                (expected * scale).max(p.min_expected_count),
            )
        } else {
            (windows.long_sum / windows.long_filled as f64, expected)
        };
        let long = self.long_spread.test(value, long_expected, p.direction, at);
        if learn && windows.long_filled == long_steps {
            let warm = self
                .first_at
                .is_some_and(|first| at - first >= p.warmup_seconds);
            let clipped = if warm {
                let reach = p.learn_clip_sigmas * self.long_spread.std_dev(long_expected, at);
                value.clamp(long_expected - reach, long_expected + reach)
            } else {
                value
            };
            self.long_spread.learn(clipped, long_expected, at);
            self.long_spread
                .learn_surprise(long.raw_surprise, long_steps);
        }
        (main_surprise.max(long.score_surprise) - std::f64::consts::LOG10_2).max(0.0)
    }

    fn expectation(&self, at: i64, window_count: f64, parent: Option<ParentHint>) -> f64 {
        let p = self.params;
        if !p.counts {
            // A real series with no history expects what it sees: no surprise at first sight.
            return if self.baseline.is_empty() {
                window_count
            } else {
                self.baseline.expected(at)
            };
        }
        let own = self.baseline.expected(at);
        let expected = match parent {
            Some(hint) if self.share_parent > 0.0 => {
                let borrowed = hint.expected_count * self.share_count / self.share_parent;
                // The fewer reports the series itself expects now, the more the parent's shape counts.
                let own_count = own.max(0.0);
                let parent_weight = p.thin_series_count / (p.thin_series_count + own_count);
                parent_weight * borrowed + (1.0 - parent_weight) * own
            }
            _ => own,
        };
        expected.max(p.min_expected_count)
    }

    fn learn(&mut self, at: i64, window_count: f64, expected: f64, parent: Option<ParentHint>) {
        let p = self.params;
        let warm = self
            .first_at
            .is_some_and(|first| at - first >= p.warmup_seconds);
        // Until the spread is known (warm-up), clipping would freeze the baseline at its first value.
        let clipped = if !warm {
            window_count
        } else {
            let reach = p.learn_clip_sigmas * self.spread.std_dev(expected, at);
            window_count.clamp(expected - reach, expected + reach)
        };
        self.spread.learn(clipped, expected, at);
        self.baseline.learn(at, clipped);
        if let Some(hint) = parent {
            self.share_updates = self.share_updates.saturating_add(1);
            let rate = p.share_rate.max(1.0 / f64::from(self.share_updates));
            self.share_count += rate * (clipped - self.share_count);
            self.share_parent += rate * (hint.expected_count - self.share_parent);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: i64 = 60;
    const DAY: i64 = 86_400;
    // 2025-03-03 00:00 UTC, a Monday.
    const START: i64 = 1_740_960_000;

    /// A fixed-seed generator (splitmix64) so synthetic traffic is identical on every run.
    struct Rng(u64);

    impl Rng {
        fn next_u64(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }

        fn uniform(&mut self) -> f64 {
            ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
        }

        fn normal(&mut self) -> f64 {
            let (u, v) = (self.uniform(), self.uniform());
            (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
        }

        /// Marsaglia–Tsang gamma with shape k and scale 1.
        fn gamma(&mut self, shape: f64) -> f64 {
            if shape < 1.0 {
                return self.gamma(shape + 1.0) * self.uniform().powf(1.0 / shape);
            }
            let d = shape - 1.0 / 3.0;
            let c = 1.0 / (9.0 * d).sqrt();
            loop {
                let x = self.normal();
                let v = (1.0 + c * x).powi(3);
                if v > 0.0 && self.uniform().ln() < 0.5 * x * x + d - d * v + d * v.ln() {
                    return d * v;
                }
            }
        }

        fn poisson(&mut self, mean: f64) -> f64 {
            if mean > 50.0 {
                return (mean + mean.sqrt() * self.normal()).round().max(0.0);
            }
            let limit = (-mean).exp();
            let mut product = self.uniform();
            let mut count = 0.0;
            while product > limit {
                product *= self.uniform();
                count += 1.0;
            }
            count
        }

        /// Negative binomial with the given mean and dispersion (gamma–Poisson mixture).
        fn negative_binomial(&mut self, mean: f64, dispersion: f64) -> f64 {
            let size = 1.0 / dispersion;
            let rate = self.gamma(size) * mean / size;
            self.poisson(rate)
        }
    }

    /// Reports per minute of an ordinary day: quiet nights, busy evenings (about 1:4).
    fn daily_rhythm(at: i64) -> f64 {
        let hour = (at.rem_euclid(DAY)) as f64 / 3_600.0;
        let phase = (hour - 20.0) / 24.0 * 2.0 * std::f64::consts::PI;
        2.0 * (1.0 + 0.6 * phase.cos())
    }

    fn live() -> SeriesDetector {
        SeriesDetector::new(&DetectorConfig::default(), MINUTE)
    }

    fn feed(
        detector: &mut SeriesDetector,
        from: i64,
        minutes: i64,
        mut count: impl FnMut(i64) -> f64,
    ) -> Vec<Step> {
        (0..minutes)
            .map(|m| {
                let at = from + m * MINUTE;
                detector.step(at, count(at), None)
            })
            .collect()
    }

    fn events(steps: &[Step]) -> Vec<(i64, IncidentEvent)> {
        steps
            .iter()
            .filter_map(|s| s.event.map(|e| (s.at, e)))
            .collect()
    }

    #[test]
    fn a_step_from_zero_to_five_a_minute_opens_after_five_minutes_and_resolves_after_thirty_calm_ones(
    ) {
        let mut detector = live();
        let quiet = feed(&mut detector, START, 2 * 1_440, |_| 0.0);
        assert!(events(&quiet).is_empty());
        let surge_from = START + 2 * DAY;
        let surge = feed(&mut detector, surge_from, 60, |_| 5.0);
        // Minute 1 holds 5 reports (under the floor of 10); minute 2 holds 10 against an
        // expected 1, p = 1.1e-7, not yet under 1e-8; minutes 3–5 are surging, and the surge
        // must hold three minutes: the incident opens at the fifth minute.
        let opened = events(&surge);
        let (opened_at, first) = opened[0];
        assert_eq!(opened_at, surge_from + 4 * MINUTE);
        let summary = match first {
            IncidentEvent::Opened(summary) => summary,
            other => panic!("expected Opened, got {other:?}"),
        };
        assert_eq!(summary.started_at, surge_from + 2 * MINUTE);
        assert_eq!(surge[59].state, IncidentState::Open);
        assert_eq!(surge[59].window_count, 75.0);

        let calm_from = surge_from + 60 * MINUTE;
        let calm = feed(&mut detector, calm_from, 120, |_| 0.0);
        let resolved: Vec<_> = events(&calm)
            .into_iter()
            .filter(|(_, e)| matches!(e, IncidentEvent::Resolved(_)))
            .collect();
        assert_eq!(resolved.len(), 1);
        let (resolved_step, event) = resolved[0];
        let summary = event.summary();
        // The window drains over 15 minutes; the calm period starts once the window count
        // falls under 1.2× expected, and lasts 30 minutes.
        assert_eq!(summary.started_at, surge_from + 2 * MINUTE);
        assert_eq!(summary.peak_count, 75.0);
        assert_eq!(
            resolved_step,
            summary.resolved_at.expect("resolved") + 29 * MINUTE
        );
        assert!(resolved_step - calm_from <= 45 * MINUTE);
        assert!(detector.incident().is_none());
    }

    #[test]
    fn a_re_surge_within_the_hour_reopens_the_same_incident() {
        let mut detector = live();
        feed(&mut detector, START, 2 * 1_440, |_| 0.0);
        let first_from = START + 2 * DAY;
        feed(&mut detector, first_from, 30, |_| 5.0);
        let calm = feed(&mut detector, first_from + 30 * MINUTE, 60, |_| 0.0);
        let resolved_at = events(&calm)
            .iter()
            .find_map(|(_, e)| match e {
                IncidentEvent::Resolved(s) => s.resolved_at,
                _ => None,
            })
            .expect("the first surge resolves");
        let again = feed(&mut detector, first_from + 90 * MINUTE, 30, |_| 8.0);
        let (_, event) = events(&again)[0];
        match event {
            IncidentEvent::Reopened(summary) => {
                assert_eq!(summary.started_at, first_from + 2 * MINUTE);
                assert_eq!(summary.resolved_at, None);
                assert!(first_from + 90 * MINUTE - resolved_at <= 60 * MINUTE);
            }
            other => panic!("expected Reopened, got {other:?}"),
        }
        assert_eq!(detector.incident().map(|s| s.peak_count), Some(120.0));
    }

    #[test]
    fn four_weeks_of_ordinary_over_dispersed_daily_rhythm_open_nothing() {
        let mut rng = Rng(7);
        let mut detector = live();
        let steps = feed(&mut detector, START, 28 * 1_440, |at| {
            // Variance about 1.5–3× the mean per minute.
            rng.negative_binomial(daily_rhythm(at), 0.3)
        });
        assert!(events(&steps).is_empty(), "{:?}", events(&steps).first());
        let last_week = &steps[21 * 1_440..];
        let worst = last_week.iter().map(|s| s.surprise).fold(0.0, f64::max);
        assert!(worst < 6.0, "worst surprise {worst}");
    }

    #[test]
    fn a_slow_doubling_over_ten_days_opens_nothing() {
        let mut rng = Rng(11);
        let mut detector = live();
        feed(&mut detector, START, 14 * 1_440, |at| {
            rng.poisson(daily_rhythm(at))
        });
        let growth_from = START + 14 * DAY;
        let steps = feed(&mut detector, growth_from, 10 * 1_440, |at| {
            let days = (at - growth_from) as f64 / DAY as f64;
            rng.poisson(daily_rhythm(at) * 2f64.powf(days / 10.0))
        });
        assert!(events(&steps).is_empty(), "{:?}", events(&steps).first());
    }

    #[test]
    fn pakistan_seventy_four_then_one_hundred_thirty_six_on_a_small_base_is_one_incident() {
        // About 7 reports per 15 minutes is normal; then 74 per 15 minutes, later 136, then 45.
        let mut rng = Rng(3);
        let mut detector = live();
        feed(&mut detector, START, 14 * 1_440, |_| {
            rng.poisson(7.0 / 15.0)
        });
        let surge_from = START + 14 * DAY;
        let first = feed(&mut detector, surge_from, 120, |_| 74.0 / 15.0);
        let opened: Vec<_> = events(&first);
        assert!(matches!(opened[0].1, IncidentEvent::Opened(_)));
        // The window needs a few minutes of ~5 reports to pass p = 1e-8 and then hold three.
        assert_eq!(opened[0].0 - surge_from, 6 * MINUTE);
        let second = feed(&mut detector, surge_from + 120 * MINUTE, 60, |_| {
            136.0 / 15.0
        });
        let third = feed(&mut detector, surge_from + 180 * MINUTE, 60, |_| 3.0);
        assert!(events(&second)
            .iter()
            .any(|(_, e)| matches!(e, IncidentEvent::Updated(_))));
        let summary = third[59]
            .incident
            .expect("45 per 15 minutes is still an incident");
        assert_eq!(summary.started_at, first[0].at.max(summary.started_at));
        assert!((summary.peak_count - 136.0).abs() < 1e-6);
        assert!(summary.expected_at_peak < 12.0, "{summary:?}");
        assert!(summary.peak_ratio > 10.0);
        assert!(summary.excess_reports > 74.0 + 136.0 * 3.0);
    }

    #[test]
    fn a_rise_from_seventy_four_to_one_hundred_thirty_six_on_a_steady_base_of_seventy_four_opens() {
        let mut rng = Rng(5);
        let mut detector = live();
        feed(&mut detector, START, 14 * 1_440, |_| {
            rng.poisson(74.0 / 15.0)
        });
        let surge_from = START + 14 * DAY;
        let steps = feed(&mut detector, surge_from, 60, |_| rng.poisson(136.0 / 15.0));
        let opened = events(&steps);
        assert!(matches!(
            opened.first(),
            Some((_, IncidentEvent::Opened(_)))
        ));
    }

    #[test]
    fn a_forty_thousand_report_surge_opens_with_a_finite_surprise() {
        let mut rng = Rng(9);
        let mut detector = live();
        feed(&mut detector, START, 7 * 1_440, |at| {
            rng.negative_binomial(20.0 * daily_rhythm(at), 0.1)
        });
        let surge_from = START + 7 * DAY;
        let steps = feed(&mut detector, surge_from, 30, |_| 40_000.0 / 15.0);
        let (_, event) = events(&steps)[0];
        assert!(matches!(event, IncidentEvent::Opened(_)));
        assert!(steps[29].surprise.is_finite() && steps[29].surprise > 1_000.0);
        assert_eq!(steps[29].window_count, 40_000.0);
    }

    #[test]
    fn a_thin_city_borrows_its_countrys_daily_shape() {
        // A city with ~4 reports per 15 minutes and no rhythm of its own to learn from:
        // its country's evening peak (4× the night) is the better guess for it too.
        let country_expected = |at: i64| 15.0 * 50.0 * daily_rhythm(at);
        let evening = START + 2 * DAY + 20 * 3_600;
        let night = START + 2 * DAY + 8 * 3_600;
        let run = |with_parent: bool| {
            let mut rng = Rng(13);
            let mut city = live();
            let (mut at_evening, mut at_night) = (0.0, 0.0);
            for m in 0..3 * 1_440 {
                let at = START + m * MINUTE;
                let hint = with_parent.then_some(ParentHint {
                    expected_count: country_expected(at),
                });
                let step = city.step(at, rng.poisson(0.3), hint);
                if at == evening {
                    at_evening = step.expected;
                }
                if at == night {
                    at_night = step.expected;
                }
            }
            at_evening / at_night
        };
        let borrowed = run(true);
        let alone = run(false);
        assert!(
            borrowed > 2.5,
            "with its parent: evening/night = {borrowed}"
        );
        assert!(alone < 1.5, "alone: evening/night = {alone}");
    }

    #[test]
    fn the_same_counts_give_the_same_steps() {
        let run = || {
            let mut rng = Rng(17);
            let mut detector = live();
            feed(&mut detector, START, 3 * 1_440, |at| {
                let surge = if (2 * DAY..2 * DAY + 3_600).contains(&(at - START)) {
                    10.0
                } else {
                    1.0
                };
                rng.negative_binomial(surge * daily_rhythm(at), 0.2)
            })
        };
        let (first, second) = (run(), run());
        assert_eq!(first, second);
        assert!(!events(&first).is_empty());
    }

    #[test]
    fn a_gap_in_the_rollups_counts_as_zero_reports() {
        let mut detector = live();
        detector.step(START, 3.0, None);
        let after_gap = detector.step(START + 10 * MINUTE, 4.0, None);
        // The first 3 reports are still inside the 15-minute window, the 9 missing minutes added nothing.
        assert_eq!(after_gap.window_count, 7.0);
        let repeated = detector.step(START + 10 * MINUTE, 100.0, None);
        assert_eq!(repeated.window_count, 7.0);
        assert!(repeated.event.is_none());
    }
}
