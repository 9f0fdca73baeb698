//! The anomaly score of a step: the calibrated surprise where a surge episode starts (or clearly outgrows its own earlier maximum), zero otherwise, squashed into [0, 1).
//!
//! Dashboards and threshold sweeps (NAB) want one high value where something starts, not a
//! plateau for as long as it lasts, nor the same alarm for every routine spike. An episode
//! starts when the surprise reaches `start_surprise` and ends after `calm_steps` steps below
//! half of it; an episode starting within `merge_steps` of the previous one's end continues
//! it. Within an episode only a surprise `growth` times the last scored one is scored again.
//! The score is independent of the incident thresholds: a sweep over it chooses its own
//! operating point while the incident state machine keeps the live thresholds.
//!
//! Two rules serve the offline mode (off live): an episode starting at the time of day of one
//! that started one to three days earlier is routine (a nightly job) and is divided down like
//! a noisy series' episode; and a score may be held while the surge grows (a few steps at
//! most), merged with the larger scores, so that a surge growing over its first steps is one
//! row, not several.
//!
//! The tracker's durations (the calm and merge periods, the fading of recent episodes, the
//! recurrence clock) are time, counted in steps of the series' interval: a step that follows
//! a gap (an irregular CSV, whose missing rows are missing, not zero) advances them by every
//! step the gap spans. Live series and regular files advance by one step per row. Only the
//! hold is counted in rows, since it waits for the next observations.

use serde::{Deserialize, Serialize};

/// Surprise mapped to a score of one half: the live open threshold (p = 1e-6).
const HALF_SCORE_SURPRISE: f64 = 6.0;

/// Thresholds of the onset score, already converted to steps.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct OnsetRules {
    /// Smallest surprise (−log10 p) that starts an episode.
    pub start_surprise: f64,
    /// Within an episode, a step is scored again only at this many times the last scored surprise.
    pub growth: f64,
    /// Steps below half the start surprise that end an episode.
    pub calm_steps: u32,
    /// An episode starting within this many steps of the previous one's end continues it.
    pub merge_steps: u32,
    /// Per-step fading of the count of recent episodes (from its half-life in steps).
    pub episode_fade_per_step: f64,
    /// How much each recent episode divides down the score of the next one.
    pub novelty_weight: f64,
    // Defaults (off) let a detector state saved before these rules existed load unchanged.
    /// Most steps a nonzero score is held back while the surge grows and replaces it (0: off).
    #[serde(default)]
    pub hold_steps: u32,
    /// Steps in a day, for the time-of-day recurrence rule (0: off).
    #[serde(default)]
    pub day_steps: u32,
    /// How far, in steps, from a whole number of days an earlier episode start may lie.
    #[serde(default)]
    pub day_tolerance_steps: u32,
}

/// Episode starts remembered for the recurrence rule: a few days of routine spikes.
const REMEMBERED_STARTS: usize = 16;
/// An episode start is compared with those one to this many whole days before it.
const RECURRENCE_DAYS: u64 = 3;

/// One series' onset tracker.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct OnsetScore {
    in_episode: bool,
    scored_max: f64,
    calm_steps: u32,
    steps_since_end: u32,
    recent_episodes: f64,
    novelty_divisor: f64,
    // Defaulted so that a state saved before the hold and recurrence rules still loads.
    #[serde(default)]
    held_steps_left: u32,
    #[serde(default)]
    held_score: f64,
    #[serde(default)]
    steps: u64,
    #[serde(default)]
    starts: Vec<u64>,
}

impl OnsetScore {
    /// Score one step's calibrated surprise, `elapsed` steps of the series' interval after the
    /// previous one (1 unless rows are missing before it).
    pub fn step(&mut self, rules: &OnsetRules, surprise: f64, elapsed: u32) -> f64 {
        let elapsed = elapsed.max(1);
        self.recent_episodes *= rules
            .episode_fade_per_step
            .powi(i32::try_from(elapsed).unwrap_or(i32::MAX));
        let was_in_episode = self.in_episode;
        let recent = self.recent_episodes;
        let score = self.raw_step(rules, surprise, elapsed);
        self.steps += u64::from(elapsed);
        if self.in_episode && !was_in_episode {
            // A series that has had many episodes lately is noisy: this one is less news,
            // and so is its growth later on (the episode itself does not count against it).
            // So is one that recurs at the same time of day: a job, not an incident.
            let routine = self.recurrences(rules) as f64;
            self.novelty_divisor = 1.0 + rules.novelty_weight * recent + routine;
        }
        self.hold(rules, score / self.novelty_divisor.max(1.0))
    }

    /// Remember this episode start and count the earlier ones a whole number of days before it.
    fn recurrences(&mut self, rules: &OnsetRules) -> usize {
        if rules.day_steps == 0 {
            return 0;
        }
        let day = u64::from(rules.day_steps);
        let tolerance = u64::from(rules.day_tolerance_steps);
        let now = self.steps;
        let count = self
            .starts
            .iter()
            .filter(|&&then| {
                let ago = now - then;
                (1..=RECURRENCE_DAYS).any(|days| (days * day).abs_diff(ago) <= tolerance)
            })
            .count();
        if self.starts.len() >= REMEMBERED_STARTS {
            self.starts.remove(0);
        }
        self.starts.push(now);
        count
    }

    /// Hold a nonzero score while the surge keeps growing (at most `hold_steps`), then emit
    /// the largest score seen meanwhile.
    fn hold(&mut self, rules: &OnsetRules, score: f64) -> f64 {
        if self.held_steps_left > 0 {
            self.held_score = self.held_score.max(score);
            self.held_steps_left -= 1;
            // A step that does not grow the surge ends the wait: nothing larger is coming soon.
            if score <= 0.0 {
                self.held_steps_left = 0;
            }
            return if self.held_steps_left == 0 {
                self.held_score
            } else {
                0.0
            };
        }
        if rules.hold_steps == 0 || score <= 0.0 {
            return score;
        }
        self.held_score = score;
        self.held_steps_left = rules.hold_steps;
        0.0
    }

    fn raw_step(&mut self, rules: &OnsetRules, surprise: f64, elapsed: u32) -> f64 {
        if !self.in_episode {
            self.steps_since_end = self.steps_since_end.saturating_add(elapsed);
            if surprise < rules.start_surprise {
                return 0.0;
            }
            self.in_episode = true;
            self.calm_steps = 0;
            self.recent_episodes += 1.0;
            // A re-surge soon after the last episode is its continuation: only growth counts.
            if self.steps_since_end <= rules.merge_steps && self.scored_max > 0.0 {
                return self.grow(rules, surprise);
            }
            self.scored_max = surprise;
            return squash(surprise);
        }
        if surprise < 0.5 * rules.start_surprise {
            self.calm_steps = self.calm_steps.saturating_add(elapsed);
            if self.calm_steps >= rules.calm_steps {
                self.in_episode = false;
                self.steps_since_end = 0;
            }
            return 0.0;
        }
        self.calm_steps = 0;
        self.grow(rules, surprise)
    }

    fn grow(&mut self, rules: &OnsetRules, surprise: f64) -> f64 {
        if surprise >= rules.growth * self.scored_max {
            self.scored_max = surprise;
            return squash(surprise);
        }
        0.0
    }
}

/// Steps of `step_seconds` from the previous row (`last`) to `at`, at least 1: more than one
/// only after missing rows that are not replayed as zeros (a CSV's), so that the onset
/// tracker's durations stay time, not rows.
pub fn gap_steps(last: Option<i64>, at: i64, step_seconds: i64, gaps_are_zeros: bool) -> u32 {
    match last {
        Some(last) if !gaps_are_zeros => {
            let steps = ((at - last) as f64 / step_seconds.max(1) as f64).round();
            steps.clamp(1.0, f64::from(u32::MAX)) as u32
        }
        _ => 1,
    }
}

/// Map a surprise in [0, ∞) monotonically onto [0, 1), with the live open threshold at 0.5.
pub fn squash(surprise: f64) -> f64 {
    if surprise.is_infinite() {
        return 1.0;
    }
    let surprise = surprise.max(0.0);
    surprise / (surprise + HALF_SCORE_SURPRISE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_onsets_and_marked_growth_are_scored() {
        let rules = OnsetRules {
            start_surprise: 2.0,
            growth: 1.5,
            calm_steps: 2,
            merge_steps: 2,
            episode_fade_per_step: 1.0,
            novelty_weight: 0.0,
            hold_steps: 0,
            day_steps: 0,
            day_tolerance_steps: 0,
        };
        let mut onset = OnsetScore::default();
        let surprises = [
            0.5, 3.0, 4.0, 6.0, 5.0, 0.2, 0.2, 3.0, 0.2, 0.2, 0.2, 0.2, 3.0,
        ];
        let scores: Vec<f64> = surprises
            .iter()
            .map(|s| onset.step(&rules, *s, 1))
            .collect();
        let third = 1.0 / 3.0;
        let expected = [
            0.0, third, 0.0, 0.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, third,
        ];
        assert_eq!(scores, expected);
    }

    #[test]
    fn a_held_score_is_merged_with_its_growth_and_a_daily_recurrence_is_divided_down() {
        let rules = OnsetRules {
            start_surprise: 2.0,
            growth: 1.5,
            calm_steps: 1,
            merge_steps: 0,
            episode_fade_per_step: 0.0,
            novelty_weight: 0.0,
            hold_steps: 2,
            day_steps: 4,
            day_tolerance_steps: 0,
        };
        let mut onset = OnsetScore::default();
        let surprises = [0.0, 3.0, 6.0, 0.0, 0.0, 3.0, 0.0, 0.0, 0.0];
        let scores: Vec<f64> = surprises
            .iter()
            .map(|s| onset.step(&rules, *s, 1))
            .collect();
        // The onset (1/3) and its growth (1/2) are one row, emitted at the first step without
        // growth; the next episode starts exactly one "day" (4 steps) later and scores half
        // of 1/3, one step after its onset since it does not grow.
        let sixth = 1.0 / 6.0;
        let expected = [0.0, 0.0, 0.0, 0.5, 0.0, 0.0, sixth, 0.0, 0.0];
        assert_eq!(scores, expected);
    }

    #[test]
    fn the_calm_merge_fading_and_recurrence_clock_count_the_steps_a_gap_spans() {
        let rules = OnsetRules {
            start_surprise: 2.0,
            growth: 1.5,
            calm_steps: 2,
            merge_steps: 4,
            episode_fade_per_step: 0.5,
            novelty_weight: 1.0,
            hold_steps: 0,
            day_steps: 0,
            day_tolerance_steps: 0,
        };
        let run = |rules: &OnsetRules, rows: &[(f64, u32)]| -> Vec<f64> {
            let mut onset = OnsetScore::default();
            rows.iter()
                .map(|&(surprise, elapsed)| onset.step(rules, surprise, elapsed))
                .collect()
        };
        let third = squash(3.0);
        // Row by row, the re-surge comes 1 step after the episode ended: within the merge
        // period, and too small to count as growth.
        let regular = run(&rules, &[(3.0, 1), (0.0, 1), (0.0, 1), (3.0, 1)]);
        assert_eq!(regular, vec![third, 0.0, 0.0, 0.0]);
        // After 5 missing rows it comes 6 steps later: a new episode, divided by the first one
        // faded over all 8 steps (1 → 0.5 → 0.25 → 0.25 / 2^6).
        let gapped = run(&rules, &[(3.0, 1), (0.0, 1), (0.0, 1), (3.0, 6)]);
        assert_eq!(gapped, vec![third, 0.0, 0.0, third / (1.0 + 0.25 / 64.0)]);
        // A row 2 steps after the last is calm for 2 steps: the episode ends at once.
        let calm_gap = run(&rules, &[(3.0, 1), (0.0, 2), (3.0, 5)]);
        assert_eq!(calm_gap, vec![third, 0.0, third / (1.0 + 0.25 / 32.0)]);

        // The recurrence clock: an episode 4 steps (one "day") after the last one's start is
        // routine and halved, though only 2 rows lie between them.
        let daily = OnsetRules {
            calm_steps: 1,
            merge_steps: 0,
            episode_fade_per_step: 0.0,
            novelty_weight: 0.0,
            day_steps: 4,
            ..rules
        };
        assert_eq!(
            run(&daily, &[(3.0, 1), (0.0, 1), (3.0, 3)]),
            vec![third, 0.0, third / 2.0]
        );
        assert_eq!(
            run(&daily, &[(3.0, 1), (0.0, 1), (3.0, 1)]),
            vec![third, 0.0, third]
        );

        // A row 25 minutes after the last, in 10-minute steps, is 3 steps on (2.5 rounded
        // half away from zero); 4 minutes is still one; replayed gaps and the first row are 1.
        assert_eq!(gap_steps(Some(0), 1_500, 600, false), 3);
        assert_eq!(gap_steps(Some(0), 240, 600, false), 1);
        assert_eq!(gap_steps(Some(0), 1_500, 600, true), 1);
        assert_eq!(gap_steps(None, 1_500, 600, false), 1);
    }
}
