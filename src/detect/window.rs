//! The rolling windows of one series: the last steps' values, summed over the main window (the 15-minute count that is tested) and over the long window (two hours) that catches what builds up too slowly for the main one.
//!
//! One ring of the long window's length holds both: the main window is its newest steps.
//! Sums are kept incrementally and recomputed from the ring once per lap, so rounding never
//! accumulates.

use serde::{Deserialize, Serialize};

/// What the windows hold after a step: sums (counts) or means (metrics) and how full each is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WindowValues {
    /// Sum of the main window's steps.
    pub main_sum: f64,
    /// Steps the main window holds so far (at most its length).
    pub main_filled: usize,
    /// Sum of the long window's steps.
    pub long_sum: f64,
    /// Steps the long window holds so far (at most its length).
    pub long_filled: usize,
}

/// The last `long_steps` values of a series.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Windows {
    main_steps: usize,
    ring: Vec<f64>,
    next: usize,
    filled: usize,
    main_sum: f64,
    long_sum: f64,
}

impl Windows {
    /// Windows of `main_steps` and `long_steps` steps (each at least 1; the long window is
    /// never shorter than the main one).
    pub fn new(main_steps: usize, long_steps: usize) -> Self {
        let main_steps = main_steps.max(1);
        Self {
            main_steps,
            ring: vec![0.0; long_steps.max(main_steps)],
            next: 0,
            filled: 0,
            main_sum: 0.0,
            long_sum: 0.0,
        }
    }

    /// Steps in the main window.
    pub fn main_steps(&self) -> usize {
        self.main_steps
    }

    /// Steps in the long window.
    pub fn long_steps(&self) -> usize {
        self.ring.len()
    }

    /// Push the next step's value.
    pub fn push(&mut self, value: f64) -> WindowValues {
        let len = self.ring.len();
        // The value leaving the main window is main_steps back from the new one.
        let leaving_main = self.ring[(self.next + len - self.main_steps) % len];
        let leaving_long = self.ring[self.next];
        self.main_sum += value - leaving_main;
        self.long_sum += value - leaving_long;
        self.ring[self.next] = value;
        self.next = (self.next + 1) % len;
        self.filled = (self.filled + 1).min(len);
        if self.next == 0 {
            self.long_sum = self.ring.iter().sum();
            self.main_sum = (1..=self.main_steps)
                .map(|back| self.ring[(len - back) % len])
                .sum();
        }
        WindowValues {
            main_sum: self.main_sum,
            main_filled: self.filled.min(self.main_steps),
            long_sum: self.long_sum,
            long_filled: self.filled,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_main_window_is_the_newest_steps_of_the_long_one() {
        let mut windows = Windows::new(2, 4);
        let sums: Vec<(f64, usize, f64, usize)> =
            [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0]
                .iter()
                .map(|&v| {
                    let w = windows.push(v);
                    (w.main_sum, w.main_filled, w.long_sum, w.long_filled)
                })
                .collect();
        assert_eq!(
            sums,
            vec![
                (1.0, 1, 1.0, 1),
                (3.0, 2, 3.0, 2),
                (6.0, 2, 7.0, 3),
                (12.0, 2, 15.0, 4),
                (24.0, 2, 30.0, 4),
                (48.0, 2, 60.0, 4),
                (96.0, 2, 120.0, 4),
                (192.0, 2, 240.0, 4),
                (384.0, 2, 480.0, 4),
            ]
        );
    }

    #[test]
    fn equal_windows_hold_the_same_sum() {
        let mut windows = Windows::new(3, 1);
        assert_eq!(windows.long_steps(), 3);
        for v in [5.0, 0.0, 2.0, 7.0] {
            let w = windows.push(v);
            assert_eq!(w.main_sum, w.long_sum);
        }
    }
}
