//! Offline only: a transition-novelty score that sees what the surprise test cannot.
//!
//! The surprise test compares each step with a baseline that keeps adapting, so a series
//! that moves somewhere it has never been, slowly or in a shape the baseline absorbs (a
//! temperature drifting out of its band, a level shift in a short file), goes unscored. This
//! second view knows nothing of baselines: the series' whole range is cut into a few equal
//! bins, each step's (previous bin, bin) pair is a transition, and a transition never seen
//! before is **novel** once a learning period has passed. It is the idea of the contextual
//! detectors that do well on NAB (CAD OSE: values coarsened to 3 bits, new contexts are
//! anomalous, a rest period after each alarm), cut down to its simplest form.
//!
//! Offline the whole series is at hand, so the bins span its own minimum to maximum (NAB's
//! detectors are likewise given each file's range). The learning period is NAB's
//! probationary one (15 % of the rows, at most 750); after a novel transition is emitted,
//! the next waits out a rest period of a fifth of it, so one novel episode is one alarm.
//!
//! [`combine`] merges it with the surprise score: a surprise that coincides with a novel
//! transition is raised, and a novel transition where the surprise test is silent is scored
//! on its own.

/// One step's novelty.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Novelty {
    /// The transition into this step's bin has not been seen before (after learning).
    pub novel: bool,
    /// A novel transition outside the rest period after the last emitted one.
    pub emitted: bool,
}

/// Tracks which bin-to-bin transitions a series has made.
#[derive(Debug, Clone)]
pub struct TransitionNovelty {
    low: f64,
    width: f64,
    bins: usize,
    seen: Vec<bool>,
    previous: Option<usize>,
    index: usize,
    learning_steps: usize,
    rest_steps: usize,
    last_emitted: Option<usize>,
}

impl TransitionNovelty {
    /// Bins spanning `low..=high` (a flat series gets bins of width 1); `learning_steps` steps
    /// learn without scoring; `rest_steps` (at least 1) must pass between emitted steps.
    pub fn new(low: f64, high: f64, bins: u32, learning_steps: usize, rest_steps: usize) -> Self {
        let bins = bins.max(1) as usize;
        let range = high - low;
        let range = if range > 0.0 { range } else { 1.0 };
        Self {
            low,
            width: range / bins as f64,
            bins,
            seen: vec![false; bins * bins],
            previous: None,
            index: 0,
            learning_steps,
            rest_steps: rest_steps.max(1),
            last_emitted: None,
        }
    }

    /// The bin of a value; values outside the range fall into the end bins.
    fn bin(&self, value: f64) -> usize {
        let position = ((value - self.low) / self.width).floor();
        if position <= 0.0 {
            0
        } else {
            (position as usize).min(self.bins - 1)
        }
    }

    /// Take the next value.
    pub fn step(&mut self, value: f64) -> Novelty {
        let bin = self.bin(value);
        let mut novelty = Novelty::default();
        if let Some(previous) = self.previous.replace(bin) {
            let transition = previous * self.bins + bin;
            let new = !self.seen[transition];
            self.seen[transition] = true;
            if new && self.index >= self.learning_steps {
                novelty.novel = true;
                let rested = self
                    .last_emitted
                    .is_none_or(|last| self.index - last > self.rest_steps);
                if rested {
                    novelty.emitted = true;
                    self.last_emitted = Some(self.index);
                }
            }
        }
        self.index += 1;
        novelty
    }
}

/// The offline anomaly score: the surprise score raised by `1 + boost` where the transition
/// is novel (at most 1), or `weight` where a novel transition is emitted, whichever is larger.
pub fn combine(surprise_score: f64, novelty: Novelty, boost: f64, weight: f64) -> f64 {
    let raised = if novelty.novel {
        (surprise_score * (1.0 + boost)).min(1.0)
    } else {
        surprise_score
    };
    if novelty.emitted {
        raised.max(weight)
    } else {
        raised
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(novelty: &mut TransitionNovelty, values: &[f64]) -> Vec<(bool, bool)> {
        values
            .iter()
            .map(|&v| {
                let n = novelty.step(v);
                (n.novel, n.emitted)
            })
            .collect()
    }

    #[test]
    fn values_fall_into_equal_bins_with_the_ends_clamped() {
        let novelty = TransitionNovelty::new(0.0, 8.0, 8, 0, 1);
        assert_eq!(novelty.bin(0.0), 0);
        assert_eq!(novelty.bin(0.99), 0);
        assert_eq!(novelty.bin(1.0), 1);
        assert_eq!(novelty.bin(7.5), 7);
        assert_eq!(novelty.bin(8.0), 7);
        assert_eq!(novelty.bin(-3.0), 0);
        assert_eq!(novelty.bin(99.0), 7);
        let flat = TransitionNovelty::new(5.0, 5.0, 8, 0, 1);
        assert_eq!(flat.bin(5.0), 0);
    }

    #[test]
    fn only_unseen_transitions_after_learning_are_novel() {
        // Bins of width 1 over 0..4; four learning steps see 0→1, 1→0, 0→1.
        let mut novelty = TransitionNovelty::new(0.0, 4.0, 4, 4, 1);
        let steps = run(&mut novelty, &[0.5, 1.5, 0.5, 1.5, 0.5, 1.5, 3.5, 3.5, 1.5]);
        assert_eq!(
            steps,
            vec![
                (false, false), // first value: no transition yet
                (false, false), // 0→1, learning
                (false, false), // 1→0, learning
                (false, false), // 0→1, learning
                (false, false), // 1→0 seen
                (false, false), // 0→1 seen
                (true, true),   // 1→3 new
                (true, false),  // 3→3 new, but within the rest period
                (true, true),   // 3→1 new, rest (1 step) over
            ]
        );
    }

    #[test]
    fn emitted_transitions_are_a_rest_period_apart() {
        let mut novelty = TransitionNovelty::new(0.0, 10.0, 10, 0, 3);
        let values: Vec<f64> = (0..10).map(|i| f64::from(i) + 0.5).collect();
        let emitted: Vec<usize> = run(&mut novelty, &values)
            .iter()
            .enumerate()
            .filter(|(_, (_, emitted))| *emitted)
            .map(|(i, _)| i)
            .collect();
        // Every step from 1 on is a new transition; emissions need more than 3 steps between.
        assert_eq!(emitted, vec![1, 5, 9]);
    }

    #[test]
    fn the_combined_score_raises_coinciding_surprises_and_scores_lone_novelty() {
        let quiet = Novelty::default();
        let novel = Novelty {
            novel: true,
            emitted: false,
        };
        let emitted = Novelty {
            novel: true,
            emitted: true,
        };
        assert_eq!(combine(0.3, quiet, 0.5, 0.5), 0.3);
        assert!((combine(0.3, novel, 0.5, 0.5) - 0.45).abs() < 1e-12);
        assert_eq!(combine(0.8, novel, 0.5, 0.5), 1.0);
        assert_eq!(combine(0.0, emitted, 0.5, 0.5), 0.5);
        assert!((combine(0.4, emitted, 0.5, 0.5) - 0.6).abs() < 1e-12);
    }
}
