//! The seasonal baseline of one series: the window count expected at a time of week, as a slowly adapting level combined with a learned time-of-week profile.
//!
//! Counts are modelled multiplicatively (expected = level × profile factor), so a series
//! that doubles keeps its daily shape; real-valued metrics additively (level + offset),
//! because they can be zero or negative. The profile has a time-of-week table (168 cells at
//! the default one-hour cells) and a time-of-day table learned from every day; the
//! expectation blends them by how many weeks the time-of-week cell has seen, so a young
//! series already follows its daily rhythm.

use serde::{Deserialize, Serialize};

const SECONDS_PER_DAY: i64 = 86_400;
const SECONDS_PER_WEEK: i64 = 7 * SECONDS_PER_DAY;
// The unix epoch fell on a Thursday; shifting by three days makes cell 0 start on Monday.
const MONDAY_OFFSET_SECONDS: i64 = 3 * SECONDS_PER_DAY;
const WEEK_TRUST_VISITS: f64 = 4.0;

/// Whether the profile scales the level (counts) or is added to it (real values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BaselineForm {
    /// expected = level × factor; factors hover around 1.
    Multiplicative,
    /// expected = level + offset; offsets hover around 0.
    Additive,
}

/// Learned expectation of one series' window count (or window mean) by time of week.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Baseline {
    form: BaselineForm,
    cell_seconds: i64,
    centre_offset: i64,
    level: f64,
    level_updates: u32,
    level_rate: f64,
    week: Vec<f32>,
    week_updates: Vec<u16>,
    day: Vec<f32>,
    day_updates: Vec<u16>,
    week_rate: f64,
    day_rate: f64,
    updates_per_week_visit: f64,
}

impl Baseline {
    /// A blank baseline for a series stepped every `step_seconds`.
    ///
    /// `cell_minutes` must divide a day (it is rounded to a divisor otherwise);
    /// half-lives are in minutes (level) and weeks (profile).
    pub fn new(
        form: BaselineForm,
        step_seconds: i64,
        cell_minutes: u32,
        level_half_life_minutes: f64,
        profile_half_life_weeks: f64,
    ) -> Self {
        let cell_seconds = divisor_of_day(i64::from(cell_minutes.max(1)) * 60);
        let centre_offset = (cell_seconds - step_seconds.max(1)).max(0) / 2;
        let step_seconds = step_seconds.max(1) as f64;
        let cells_per_week = (SECONDS_PER_WEEK / cell_seconds) as usize;
        let cells_per_day = (SECONDS_PER_DAY / cell_seconds) as usize;
        // A cell is visited once a week (time-of-week) or once a day (time-of-day), and each
        // visit brings cell/step updates (at least one when steps are coarser than cells).
        let updates_per_visit = (cell_seconds as f64 / step_seconds).max(1.0);
        let week_updates_per_half_life = updates_per_visit * profile_half_life_weeks.max(0.1);
        let day_updates_per_half_life = week_updates_per_half_life * 7.0;
        Self {
            form,
            cell_seconds,
            centre_offset,
            level: 0.0,
            level_updates: 0,
            level_rate: rate_for_half_life(level_half_life_minutes * 60.0 / step_seconds),
            week: vec![neutral(form); cells_per_week],
            week_updates: vec![0; cells_per_week],
            day: vec![neutral(form); cells_per_day],
            day_updates: vec![0; cells_per_day],
            week_rate: rate_for_half_life(week_updates_per_half_life),
            day_rate: rate_for_half_life(day_updates_per_half_life),
            updates_per_week_visit: updates_per_visit,
        }
    }

    /// The expected value at `at` (unix seconds); zero before anything was learned.
    pub fn expected(&self, at: i64) -> f64 {
        self.combine(self.level, self.factor(at))
    }

    /// The seasonal factor (multiplicative) or offset (additive) at `at`.
    ///
    /// Interpolated linearly between the two nearest cell centres, so an evening ramp is a
    /// ramp and not an hourly staircase whose steps look like surges.
    pub fn factor(&self, at: i64) -> f64 {
        let (w, d) = self.cells(at);
        let here = self.cell_factor(w, d);
        // A cell's value stands for the steps inside it, centred `centre_offset` after its start.
        let from_centre = at.rem_euclid(self.cell_seconds) - self.centre_offset;
        if from_centre == 0 {
            return here;
        }
        let (nw, nd) = if from_centre > 0 {
            ((w + 1) % self.week.len(), (d + 1) % self.day.len())
        } else {
            (
                (w + self.week.len() - 1) % self.week.len(),
                (d + self.day.len() - 1) % self.day.len(),
            )
        };
        if self.day_updates[nd] == 0 {
            return here;
        }
        let fraction = from_centre.unsigned_abs() as f64 / self.cell_seconds as f64;
        (1.0 - fraction) * here + fraction * self.cell_factor(nw, nd)
    }

    fn cell_factor(&self, w: usize, d: usize) -> f64 {
        let day = if self.day_updates[d] == 0 {
            neutral(self.form) as f64
        } else {
            f64::from(self.day[d])
        };
        let week_updates = f64::from(self.week_updates[w]);
        if week_updates == 0.0 {
            return day;
        }
        // Trust the time-of-week cell as it accumulates weeks of visits (half-way at four):
        // before that the time-of-day cell, fed seven times as often, is the steadier guess.
        let weight =
            week_updates / (week_updates + WEEK_TRUST_VISITS * self.updates_per_week_visit);
        weight * f64::from(self.week[w]) + (1.0 - weight) * day
    }

    /// The slowly adapting level (the deseasonalised typical value).
    pub fn level(&self) -> f64 {
        self.level
    }

    /// Whether the baseline has learned anything yet.
    pub fn is_empty(&self) -> bool {
        self.level_updates == 0
    }

    /// Learn from the value observed at `at` (callers clip outliers and skip incidents first).
    pub fn learn(&mut self, at: i64, value: f64) {
        let (w, d) = self.cells(at);
        let factor = self.factor(at);
        let deseasonalised = match self.form {
            BaselineForm::Multiplicative => value / factor.max(0.05),
            BaselineForm::Additive => value - factor,
        };
        self.level_updates = self.level_updates.saturating_add(1);
        // Early on, a plain running mean; later the fixed half-life.
        let level_rate = self.level_rate.max(1.0 / f64::from(self.level_updates));
        self.level += level_rate * (deseasonalised - self.level);

        let relative = match self.form {
            BaselineForm::Multiplicative => {
                if self.level <= 0.0 {
                    return;
                }
                // Bounded so one odd minute cannot make a cell absurd.
                (value / self.level).min(20.0)
            }
            BaselineForm::Additive => value - self.level,
        };
        learn_cell(
            &mut self.week[w],
            &mut self.week_updates[w],
            self.week_rate,
            relative,
        );
        learn_cell(
            &mut self.day[d],
            &mut self.day_updates[d],
            self.day_rate,
            relative,
        );
    }

    fn combine(&self, level: f64, factor: f64) -> f64 {
        match self.form {
            BaselineForm::Multiplicative => level * factor,
            BaselineForm::Additive => level + factor,
        }
    }

    fn cells(&self, at: i64) -> (usize, usize) {
        let week = (at + MONDAY_OFFSET_SECONDS).rem_euclid(SECONDS_PER_WEEK) / self.cell_seconds;
        let day = at.rem_euclid(SECONDS_PER_DAY) / self.cell_seconds;
        (week as usize, day as usize)
    }
}

fn learn_cell(cell: &mut f32, updates: &mut u16, rate: f64, relative: f64) {
    *updates = updates.saturating_add(1);
    let rate = rate.max(1.0 / f64::from(*updates));
    let current = f64::from(*cell);
    *cell = (current + rate * (relative - current)) as f32;
}

fn neutral(form: BaselineForm) -> f32 {
    match form {
        BaselineForm::Multiplicative => 1.0,
        BaselineForm::Additive => 0.0,
    }
}

/// The EWMA weight whose memory halves after `updates` updates.
pub(crate) fn rate_for_half_life(updates: f64) -> f64 {
    if updates <= 0.0 {
        return 1.0;
    }
    1.0 - 0.5f64.powf(1.0 / updates)
}

fn divisor_of_day(seconds: i64) -> i64 {
    let mut cell = seconds.clamp(60, SECONDS_PER_DAY);
    while SECONDS_PER_DAY % cell != 0 {
        cell -= 60;
    }
    cell
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3_600;

    #[test]
    fn hour_of_week_cell_zero_is_monday_midnight_utc() {
        let baseline = Baseline::new(BaselineForm::Multiplicative, 60, 60, 1440.0, 3.0);
        // 2025-03-10 00:00:00 UTC was a Monday.
        assert_eq!(baseline.cells(1_741_564_800), (0, 0));
        // 2025-03-10 09:45 UTC: Monday, hour 9.
        assert_eq!(baseline.cells(1_741_564_800 + 9 * HOUR + 45 * 60), (9, 9));
        // Sunday 23:59 is the last cell of the week.
        assert_eq!(baseline.cells(1_741_564_800 - 60), (167, 23));
    }

    #[test]
    fn a_cell_width_that_does_not_divide_a_day_is_rounded_down_to_one_that_does() {
        assert_eq!(divisor_of_day(7 * 60 * 60), 6 * 60 * 60);
        assert_eq!(divisor_of_day(15 * 60), 15 * 60);
    }

    #[test]
    fn a_daily_rhythm_is_learned_within_two_days() {
        let mut baseline = Baseline::new(BaselineForm::Multiplicative, 60, 60, 1440.0, 3.0);
        let start = 1_741_564_800;
        let value_at = |at: i64| if (at / HOUR) % 24 < 12 { 10.0 } else { 30.0 };
        for minute in 0..2 * 1440 {
            let at = start + minute * 60;
            baseline.learn(at, value_at(at));
        }
        let morning = baseline.expected(start + 2 * 86_400 + 6 * HOUR);
        let evening = baseline.expected(start + 2 * 86_400 + 18 * HOUR);
        assert!((morning - 10.0).abs() < 1.5, "morning {morning}");
        assert!((evening - 30.0).abs() < 3.0, "evening {evening}");
    }

    #[test]
    fn half_life_rate_halves_memory() {
        let rate = rate_for_half_life(10.0);
        assert!(((1.0 - rate).powi(10) - 0.5).abs() < 1e-12);
    }
}
