//! The record view of the anomaly score: a step that leaves the whole range the series has shown so far, by a margin of that range, is news even where the surprise test sees nothing remarkable.
//!
//! The surprise test compares each step with a baseline that keeps learning and with a spread
//! learned from the series' own noise, so a noisy or jumpy metric can step somewhere it has
//! never been (a temperature dipping below its band, a latency stepping above every value it
//! ever had) without a surprising window. This view knows nothing of baselines. It keeps the
//! lowest and highest value seen, from the first step on; after the warm-up, a value beyond
//! that range by `margin` × its width is a **record**, and a record is emitted at most once
//! per rest period (a fifth of the warm-up), so a series setting record after record is one
//! alarm, not a row of them. The range follows every step, so a slow drift, which extends it
//! a little at a time, never makes a record: it takes a step out of the range in one go.
//!
//! It is causal by construction: the range is the range so far, never the whole series'.
//! (A view over the whole series' range, which an offline run over a complete file knows,
//! scored higher on NAB, but live counts never know their future range.)

use serde::{Deserialize, Serialize};

/// The record view's thresholds, already converted to steps.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RecordRules {
    /// Share of the range a value must lie beyond it to be a record.
    pub margin: f64,
    /// Steps that only learn the range (the warm-up).
    pub learning_steps: u64,
    /// Steps that must pass after an emitted record before the next is emitted.
    pub rest_steps: u64,
}

/// The range of one series so far.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RecordRange {
    low: f64,
    high: f64,
    steps: u64,
    last_emitted: Option<u64>,
}

impl RecordRange {
    /// Take the next value; true when it is a record that is emitted (outside the rest period).
    pub fn step(&mut self, rules: &RecordRules, value: f64) -> bool {
        let index = self.steps;
        self.steps += 1;
        if index == 0 {
            (self.low, self.high) = (value, value);
            return false;
        }
        let reach = rules.margin * (self.high - self.low);
        let record = index >= rules.learning_steps
            && (value > self.high + reach || value < self.low - reach);
        self.low = self.low.min(value);
        self.high = self.high.max(value);
        if !record {
            return false;
        }
        let rested = self
            .last_emitted
            .is_none_or(|last| index - last > rules.rest_steps);
        if rested {
            self.last_emitted = Some(index);
        }
        rested
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn emitted(rules: &RecordRules, values: &[f64]) -> Vec<bool> {
        let mut range = RecordRange::default();
        values.iter().map(|&v| range.step(rules, v)).collect()
    }

    #[test]
    fn only_a_value_beyond_the_range_by_the_margin_after_learning_is_a_record() {
        let rules = RecordRules {
            margin: 0.1,
            learning_steps: 3,
            rest_steps: 0,
        };
        // Learning sees 10, 20 and 25 (a new high, but not news while learning). Then 26 lies
        // within 25 + 10 % of the range 15; 27.7 beyond 26 + 1.6; 8 below 10 − 1.77.
        let values = [10.0, 20.0, 25.0, 26.0, 27.7, 8.0, 9.9];
        assert_eq!(
            emitted(&rules, &values),
            vec![false, false, false, false, true, true, false]
        );
    }

    #[test]
    fn records_in_a_row_are_one_alarm_per_rest_period() {
        let rules = RecordRules {
            margin: 0.0,
            learning_steps: 1,
            rest_steps: 2,
        };
        // A steady climb: every step a new high, emitted at most every third step.
        let values: Vec<f64> = (0..8).map(f64::from).collect();
        assert_eq!(
            emitted(&rules, &values),
            vec![false, true, false, false, true, false, false, true]
        );
    }
}
