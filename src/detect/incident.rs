//! The incident state machine of one series: open after a surge has held, track the peak and the excess reports, resolve after a calm period, and merge a re-surge into the same incident.
//!
//! Opening and staying open use different thresholds (hysteresis), so a surge hovering
//! around the open threshold yields one incident rather than a flapping series of them.

use serde::{Deserialize, Serialize};

/// Where a series stands in the incident lifecycle after a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IncidentState {
    /// No incident and no surge.
    Calm,
    /// Surging, but not yet for long enough to open an incident.
    Rising,
    /// An incident is open and the surge continues.
    Open,
    /// An incident is open but the series has been calm for a while (resolving).
    Cooling,
}

impl IncidentState {
    /// A short lowercase name, as written in the offline CSV.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Calm => "calm",
            Self::Rising => "rising",
            Self::Open => "open",
            Self::Cooling => "cooling",
        }
    }
}

/// What is known about one incident (open or resolved).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct IncidentSummary {
    /// Start of the first surging step (unix seconds).
    pub started_at: i64,
    /// When the window count peaked.
    pub peak_at: i64,
    /// The highest window count seen.
    pub peak_count: f64,
    /// The expected window count at the peak.
    pub expected_at_peak: f64,
    /// Peak count over expected count.
    pub peak_ratio: f64,
    /// Severity: reports above the expectation, summed over the incident.
    pub excess_reports: f64,
    /// True when the incident is a drop below the expectation (offline metrics only).
    pub is_drop: bool,
    /// Start of the calm period that resolved it; `None` while open.
    pub resolved_at: Option<i64>,
}

/// A change worth telling the outside world about.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum IncidentEvent {
    /// A new incident opened.
    Opened(IncidentSummary),
    /// The peak of the open incident grew markedly.
    Updated(IncidentSummary),
    /// The incident resolved after a calm period.
    Resolved(IncidentSummary),
    /// A re-surge soon after a resolution reopened the same incident.
    Reopened(IncidentSummary),
}

impl IncidentEvent {
    /// The incident the event is about.
    pub fn summary(&self) -> &IncidentSummary {
        match self {
            Self::Opened(s) | Self::Updated(s) | Self::Resolved(s) | Self::Reopened(s) => s,
        }
    }
}

/// Thresholds of the state machine, already converted to steps.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct IncidentRules {
    /// Consecutive surging steps needed to open.
    pub open_after_steps: u32,
    /// Consecutive calm steps needed to resolve.
    pub calm_steps: u32,
    /// Seconds after a resolution within which a new surge reopens the same incident.
    pub merge_within_seconds: i64,
    /// Step length in seconds.
    pub step_seconds: i64,
    /// Peak growth factor that raises an `Updated` event.
    pub update_min_growth: f64,
}

/// What one step looked like, as the state machine needs it.
#[derive(Debug, Clone, Copy)]
pub struct Observation {
    /// Start of the step (unix seconds).
    pub at: i64,
    /// Window count (or window mean) tested.
    pub window_count: f64,
    /// Expected window count.
    pub expected: f64,
    /// Reports above the expectation in this single step.
    pub step_excess: f64,
    /// Meets every open threshold.
    pub surging: bool,
    /// Still beyond the (looser) close thresholds.
    pub still_hot: bool,
    /// True when the surprising side is a drop.
    pub is_drop: bool,
}

/// One series' incident lifecycle.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Incident {
    current: Option<IncidentSummary>,
    last_resolved: Option<IncidentSummary>,
    surge_steps: u32,
    surge_started_at: i64,
    surge_excess: f64,
    calm_steps: u32,
    announced_peak: f64,
}

impl Incident {
    /// The open incident, if any.
    pub fn current(&self) -> Option<&IncidentSummary> {
        self.current.as_ref()
    }

    /// Since when the open incident has been open (its start), if any.
    pub fn open_since(&self) -> Option<i64> {
        self.current.map(|c| c.started_at)
    }

    /// Advance by one step; `may_open` is false while the baseline is still warming up.
    pub fn step(
        &mut self,
        rules: &IncidentRules,
        obs: &Observation,
        may_open: bool,
    ) -> (IncidentState, Option<IncidentEvent>) {
        match self.current {
            None => self.step_without_incident(rules, obs, may_open),
            Some(_) => self.step_within_incident(rules, obs),
        }
    }

    fn step_without_incident(
        &mut self,
        rules: &IncidentRules,
        obs: &Observation,
        may_open: bool,
    ) -> (IncidentState, Option<IncidentEvent>) {
        if !(obs.surging && may_open) {
            self.surge_steps = 0;
            self.surge_excess = 0.0;
            return (IncidentState::Calm, None);
        }
        if self.surge_steps == 0 {
            self.surge_started_at = obs.at;
        }
        self.surge_steps += 1;
        self.surge_excess += obs.step_excess;
        if self.surge_steps < rules.open_after_steps {
            return (IncidentState::Rising, None);
        }
        self.surge_steps = 0;
        self.calm_steps = 0;
        let merge = self
            .last_resolved
            .filter(|r| {
                r.resolved_at
                    .is_some_and(|end| self.surge_started_at - end <= rules.merge_within_seconds)
                    && r.is_drop == obs.is_drop
            })
            .map(|mut r| {
                r.resolved_at = None;
                r.excess_reports += self.surge_excess;
                r
            });
        let (mut summary, reopened) = match merge {
            Some(summary) => (summary, true),
            None => (
                IncidentSummary {
                    started_at: self.surge_started_at,
                    peak_at: obs.at,
                    peak_count: obs.window_count,
                    expected_at_peak: obs.expected,
                    peak_ratio: ratio(obs.window_count, obs.expected),
                    // The window already holds the surge so far: count it all, not just this step.
                    excess_reports: (obs.window_count - obs.expected).abs(),
                    is_drop: obs.is_drop,
                    resolved_at: None,
                },
                false,
            ),
        };
        if reopened {
            track_peak(&mut summary, obs);
        }
        self.last_resolved = None;
        self.current = Some(summary);
        self.announced_peak = summary.peak_count;
        let event = if reopened {
            IncidentEvent::Reopened(summary)
        } else {
            IncidentEvent::Opened(summary)
        };
        (IncidentState::Open, Some(event))
    }

    fn step_within_incident(
        &mut self,
        rules: &IncidentRules,
        obs: &Observation,
    ) -> (IncidentState, Option<IncidentEvent>) {
        let Some(mut summary) = self.current else {
            return (IncidentState::Calm, None);
        };
        let grew = track_peak(&mut summary, obs);
        summary.excess_reports += obs.step_excess;
        if obs.still_hot && obs.is_drop == summary.is_drop {
            self.calm_steps = 0;
        } else {
            self.calm_steps += 1;
        }
        if self.calm_steps >= rules.calm_steps {
            let calm_since =
                obs.at - i64::from(rules.calm_steps.saturating_sub(1)) * rules.step_seconds;
            summary.resolved_at = Some(calm_since);
            self.current = None;
            self.last_resolved = Some(summary);
            self.calm_steps = 0;
            return (IncidentState::Calm, Some(IncidentEvent::Resolved(summary)));
        }
        self.current = Some(summary);
        let state = if self.calm_steps > 0 {
            IncidentState::Cooling
        } else {
            IncidentState::Open
        };
        let peak_growth = if summary.is_drop {
            // For drops "bigger" means further below: compare by the ratio's inverse.
            false
        } else {
            summary.peak_count >= self.announced_peak * rules.update_min_growth
        };
        if grew && peak_growth {
            self.announced_peak = summary.peak_count;
            return (state, Some(IncidentEvent::Updated(summary)));
        }
        (state, None)
    }
}

fn track_peak(summary: &mut IncidentSummary, obs: &Observation) -> bool {
    let further = if summary.is_drop {
        obs.window_count < summary.peak_count
    } else {
        obs.window_count > summary.peak_count
    };
    if further && obs.is_drop == summary.is_drop {
        summary.peak_at = obs.at;
        summary.peak_count = obs.window_count;
        summary.expected_at_peak = obs.expected;
        summary.peak_ratio = ratio(obs.window_count, obs.expected);
        return true;
    }
    false
}

/// Observed over expected, with a zero expectation giving an infinite ratio for any report.
pub(crate) fn ratio(observed: f64, expected: f64) -> f64 {
    if expected > 0.0 {
        observed / expected
    } else if observed > 0.0 {
        f64::INFINITY
    } else {
        1.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: IncidentRules = IncidentRules {
        open_after_steps: 3,
        calm_steps: 30,
        merge_within_seconds: 3_600,
        step_seconds: 60,
        update_min_growth: 1.1,
    };

    fn observation(minute: i64, surging: bool, still_hot: bool) -> Observation {
        Observation {
            at: minute * 60,
            window_count: if surging { 50.0 } else { 20.0 },
            expected: 5.0,
            step_excess: 1.0,
            surging,
            still_hot,
            is_drop: false,
        }
    }

    #[test]
    fn a_surge_hovering_around_the_open_threshold_is_one_incident_not_a_flapping_series() {
        let mut incident = Incident::default();
        let mut events = Vec::new();
        for minute in 0..120 {
            // Above the open threshold every other minute, never below the close threshold.
            let obs = observation(minute, minute % 2 == 0 || minute < 6, true);
            let (_, event) = incident.step(&RULES, &obs, true);
            events.extend(event);
        }
        assert_eq!(events.len(), 1);
        assert!(matches!(events[0], IncidentEvent::Opened(s) if s.started_at == 0));
    }

    #[test]
    fn a_surge_is_resolved_at_the_start_of_thirty_calm_minutes() {
        let mut incident = Incident::default();
        for minute in 0..10 {
            incident.step(&RULES, &observation(minute, true, true), true);
        }
        let mut resolved = None;
        for minute in 10..60 {
            let (_, event) = incident.step(&RULES, &observation(minute, false, false), true);
            if let Some(IncidentEvent::Resolved(summary)) = event {
                resolved = Some((minute, summary));
            }
        }
        let (minute, summary) = resolved.expect("resolved");
        assert_eq!(minute, 39);
        assert_eq!(summary.resolved_at, Some(10 * 60));
        assert_eq!(summary.started_at, 0);
        // Excess: the window's 45 over 5 at opening, then one report per further step.
        assert_eq!(summary.excess_reports, 45.0 + 7.0 + 30.0);
    }
}
