//! The offline mode behind `outagewatch detect`: run one series from a `timestamp,value` CSV through the same core and append the detector's columns to every row.
//!
//! The interval is inferred (median gap between rows) and every duration of the config is
//! converted to steps of it. A column of event counts runs exactly as a live series does:
//! the same model, the same defaults. A column that is not counts (CPU, latency) runs the
//! metric variant ([`SeriesKind::Metric`], with [`super::MetricsConfig`]). Which one a column
//! is, is decided from its warm-up rows alone: counts are non-negative integers at least as
//! noisy as Poisson. Until the warm-up ends both models run and each row is answered by the
//! one the rows so far point to, so no row's score depends on a later row. Parsing is
//! hand-written: two unquoted columns do not justify a CSV crate.

use thiserror::Error;

use super::incident::IncidentEvent;
use super::series::{SeriesDetector, SeriesKind, Step};
use super::DetectorConfig;

/// Why a CSV could not be run through the detector.
#[derive(Debug, Error, PartialEq)]
pub enum CsvError {
    /// The input has no header line.
    #[error("the CSV is empty")]
    Empty,
    /// Fewer than two data rows: no interval can be inferred.
    #[error("the CSV needs at least two data rows to infer the interval")]
    TooFewRows,
    /// Neither a `timestamp`/`value` header nor two columns.
    #[error("the header needs a `timestamp` and a `value` column, got `{0}`")]
    MissingColumn(String),
    /// A timestamp in no accepted format.
    #[error(
        "line {line}: `{value}` is not a timestamp (YYYY-MM-DD HH:MM:SS, RFC 3339 or unix seconds)"
    )]
    BadTimestamp {
        /// 1-based line number.
        line: usize,
        /// The offending text.
        value: String,
    },
    /// A value that is not a finite number.
    #[error("line {line}: `{value}` is not a finite number")]
    BadValue {
        /// 1-based line number.
        line: usize,
        /// The offending text.
        value: String,
    },
}

/// Run the detector over a `timestamp,value` CSV and return it with detector columns appended.
///
/// `kind` forces the model; `None` decides it from the warm-up rows (see the module docs).
/// Output columns after the input's: `anomaly_score` (in [0, 1]), `state`, `window_count`,
/// `expected`, `p_value`, `event`, `kind` (`counts` or `metric`: the model that answered).
pub fn detect_csv(
    input: &str,
    config: &DetectorConfig,
    kind: Option<SeriesKind>,
) -> Result<String, CsvError> {
    let mut lines = input
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let (_, header) = lines.next().ok_or(CsvError::Empty)?;
    let header = header.trim_end_matches('\r');
    let names: Vec<String> = header
        .split(',')
        .map(|h| h.trim().trim_matches('"').to_ascii_lowercase())
        .collect();
    let time_column = names.iter().position(|n| n == "timestamp");
    let value_column = names.iter().position(|n| n == "value");
    let (time_column, value_column) = match (time_column, value_column) {
        (Some(t), Some(v)) => (t, v),
        _ if names.len() >= 2 => (0, 1),
        _ => return Err(CsvError::MissingColumn(header.to_string())),
    };

    let mut rows: Vec<(&str, i64, f64)> = Vec::new();
    for (index, raw) in lines {
        let line = index + 1;
        let text = raw.trim_end_matches('\r');
        let fields: Vec<&str> = text.split(',').collect();
        let time_text = fields.get(time_column).map(|f| f.trim().trim_matches('"'));
        let value_text = fields.get(value_column).map(|f| f.trim().trim_matches('"'));
        let at = time_text
            .and_then(parse_timestamp)
            .ok_or_else(|| CsvError::BadTimestamp {
                line,
                value: time_text.unwrap_or_default().to_string(),
            })?;
        let value = value_text
            .and_then(|v| v.parse::<f64>().ok())
            .filter(|v| v.is_finite())
            .ok_or_else(|| CsvError::BadValue {
                line,
                value: value_text.unwrap_or_default().to_string(),
            })?;
        // Real exports repeat an hour at a DST change or step the clock back; such a row is
        // taken as following its predecessor so that every row still gets a result.
        let at = match rows.last() {
            Some((_, previous, _)) if at <= *previous => previous + 1,
            _ => at,
        };
        rows.push((text, at, value));
    }
    if rows.len() < 2 {
        return Err(CsvError::TooFewRows);
    }

    let step_seconds = infer_step_seconds(&rows);
    let mut models = Models::new(config, step_seconds, kind);
    let mut out = String::with_capacity(input.len() * 2);
    out.push_str(header);
    out.push_str(",anomaly_score,state,window_count,expected,p_value,event,kind\n");
    for (text, at, value) in rows {
        let (step, kind) = models.step(at, value);
        let event = match step.event {
            Some(IncidentEvent::Opened(_)) => "opened",
            Some(IncidentEvent::Updated(_)) => "updated",
            Some(IncidentEvent::Resolved(_)) => "resolved",
            Some(IncidentEvent::Reopened(_)) => "reopened",
            None => "",
        };
        let kind = match kind {
            SeriesKind::Counts => "counts",
            SeriesKind::Metric => "metric",
        };
        out.push_str(&format!(
            "{text},{:.6},{},{},{},{:.3e},{event},{kind}\n",
            step.anomaly_score,
            step.state.as_str(),
            step.window_count,
            step.expected,
            step.p_value,
        ));
    }
    Ok(out)
}

/// The model(s) of one column: both while its kind is being learned, then the one it is.
enum Models {
    Learning {
        counts: Box<SeriesDetector>,
        metric: Box<SeriesDetector>,
        evidence: KindEvidence,
        /// Rows after which the kind is settled: the warm-up.
        learning_rows: u64,
    },
    Settled(SeriesKind, Box<SeriesDetector>),
}

impl Models {
    fn new(config: &DetectorConfig, step_seconds: i64, kind: Option<SeriesKind>) -> Self {
        // A missing row is a missing observation, not a zero: a CSV need not be a rollup.
        let make =
            |k| Box::new(SeriesDetector::of_kind(config, step_seconds, k).with_gaps_as_missing());
        if let Some(kind) = kind {
            return Self::Settled(kind, make(kind));
        }
        let warmup_seconds = i64::from(config.warmup_minutes) * 60;
        Self::Learning {
            counts: make(SeriesKind::Counts),
            metric: make(SeriesKind::Metric),
            evidence: KindEvidence::default(),
            learning_rows: u64::try_from((warmup_seconds + step_seconds - 1) / step_seconds)
                .unwrap_or(0)
                .max(2),
        }
    }

    /// Step the model(s) and answer with the one the rows so far point to.
    fn step(&mut self, at: i64, value: f64) -> (Step, SeriesKind) {
        let (counts, metric, evidence, learning_rows) = match self {
            Self::Settled(kind, detector) => return (detector.step(at, value, None), *kind),
            Self::Learning {
                counts,
                metric,
                evidence,
                learning_rows,
            } => (counts, metric, evidence, *learning_rows),
        };
        evidence.add(value);
        let kind = evidence.kind();
        let counts_step = counts.step(at, value, None);
        let metric_step = metric.step(at, value, None);
        let (step, chosen) = match kind {
            SeriesKind::Counts => (counts_step, counts),
            SeriesKind::Metric => (metric_step, metric),
        };
        if evidence.rows >= learning_rows {
            // The warm-up is over: the kind is settled and the other model stops.
            *self = Self::Settled(kind, chosen.clone());
        }
        (step, kind)
    }
}

/// What the rows so far say about whether a column holds counts.
#[derive(Debug, Default, Clone)]
struct KindEvidence {
    rows: u64,
    all_counts: bool,
    sum: f64,
    squared_steps: f64,
    previous: Option<f64>,
}

impl KindEvidence {
    fn add(&mut self, value: f64) {
        self.all_counts =
            (self.rows == 0 || self.all_counts) && value >= 0.0 && value.fract() == 0.0;
        self.rows += 1;
        self.sum += value;
        if let Some(previous) = self.previous.replace(value) {
            self.squared_steps += (value - previous).powi(2);
        }
    }

    /// Counts are non-negative integers at least as noisy as Poisson; anything else is a metric.
    ///
    /// The noise is judged locally (half the mean squared step-to-step change, over the mean),
    /// so a daily rhythm does not pass for dispersion: an integer gauge such as a road speed
    /// in mph is steadier than a Poisson count of the same size, and a negative-binomial test
    /// would misjudge it. Until there are two rows, integers count as counts.
    fn kind(&self) -> SeriesKind {
        if !self.all_counts {
            return SeriesKind::Metric;
        }
        if self.rows < 2 {
            return SeriesKind::Counts;
        }
        let mean = self.sum / self.rows as f64;
        let local_variance = self.squared_steps / (2.0 * (self.rows - 1) as f64);
        if mean > 0.0 && local_variance >= mean {
            SeriesKind::Counts
        } else {
            SeriesKind::Metric
        }
    }
}

/// The median gap between consecutive rows, robust to a few missing or doubled rows.
fn infer_step_seconds(rows: &[(&str, i64, f64)]) -> i64 {
    let mut gaps: Vec<i64> = rows.windows(2).map(|w| w[1].1 - w[0].1).collect();
    gaps.sort_unstable();
    gaps.get(gaps.len() / 2).copied().unwrap_or(60).max(1)
}

/// Parse `YYYY-MM-DD HH:MM:SS[.fff]`, RFC 3339 (`T`, optional `Z` or `±HH:MM`) or unix seconds.
pub fn parse_timestamp(text: &str) -> Option<i64> {
    let text = text.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit() || b == b'-') {
        return text.parse().ok();
    }
    let bytes = text.as_bytes();
    if bytes.len() < 19 || bytes[4] != b'-' || bytes[7] != b'-' || bytes[13] != b':' {
        return None;
    }
    if bytes[10] != b' ' && bytes[10] != b'T' && bytes[10] != b't' {
        return None;
    }
    let number = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = text.get(range)?;
        if part.bytes().all(|b| b.is_ascii_digit()) {
            part.parse().ok()
        } else {
            None
        }
    };
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    if second > 60 {
        return None;
    }
    let mut rest = &text[19..];
    if let Some(fraction) = rest.strip_prefix('.') {
        let digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
        rest = &fraction[digits..];
    }
    let offset_seconds = match rest {
        "" | "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes()[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let zone = &rest[1..];
            if zone.len() != 5 || zone.as_bytes()[2] != b':' {
                return None;
            }
            let hours: i64 = zone[0..2].parse().ok()?;
            let minutes: i64 = zone[3..5].parse().ok()?;
            sign * (hours * 3600 + minutes * 60)
        }
    };
    let days = days_from_civil(year, month, day);
    Some(days * 86_400 + hour * 3600 + minute * 60 + second - offset_seconds)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_parse_in_all_accepted_formats() {
        assert_eq!(parse_timestamp("1970-01-01 00:00:00"), Some(0));
        assert_eq!(parse_timestamp("2025-03-10 09:45:00"), Some(1_741_599_900));
        assert_eq!(parse_timestamp("2025-03-10T09:45:00Z"), Some(1_741_599_900));
        assert_eq!(
            parse_timestamp("2025-03-10T14:45:00+05:00"),
            Some(1_741_599_900)
        );
        assert_eq!(
            parse_timestamp("2011-07-01 00:00:01.5"),
            Some(1_309_478_401)
        );
        assert_eq!(parse_timestamp("1741599900"), Some(1_741_599_900));
        assert_eq!(parse_timestamp("2024-02-29 12:00:00"), Some(1_709_208_000));
        assert_eq!(parse_timestamp("10/03/2025 09:45"), None);
        assert_eq!(parse_timestamp("2025-13-10 09:45:00"), None);
    }

    #[test]
    fn every_row_comes_back_with_the_detector_columns() {
        let mut input = String::from("timestamp,value\n");
        for i in 0..100 {
            input.push_str(&format!("{},{}\n", 1_741_564_800 + i * 300, 5 + i % 3));
        }
        let output = detect_csv(&input, &DetectorConfig::default(), None).expect("valid CSV");
        let lines: Vec<&str> = output.lines().collect();
        assert_eq!(lines.len(), 101);
        assert_eq!(
            lines[0],
            "timestamp,value,anomaly_score,state,window_count,expected,p_value,event,kind"
        );
        assert!(lines[1].starts_with("1741564800,5,"));
    }

    #[test]
    fn a_bad_value_names_its_line() {
        let input = "timestamp,value\n2025-03-10 09:45:00,1\n2025-03-10 09:46:00,x\n";
        assert_eq!(
            detect_csv(input, &DetectorConfig::default(), None),
            Err(CsvError::BadValue {
                line: 3,
                value: "x".to_string()
            })
        );
    }

    #[test]
    fn a_repeated_timestamp_still_gets_a_row() {
        let input = "timestamp,value\n2025-03-10 09:45:00,1\n2025-03-10 09:45:00,2\n2025-03-10 09:46:00,1\n";
        let output = detect_csv(input, &DetectorConfig::default(), None).expect("valid CSV");
        assert_eq!(output.lines().count(), 4);
    }

    fn scores_of(output: &str) -> Vec<f64> {
        output
            .lines()
            .skip(1)
            .map(|l| {
                l.split(',')
                    .nth(2)
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(f64::NAN)
            })
            .collect()
    }

    #[test]
    fn a_drop_in_a_noisy_daily_metric_is_scored_where_it_starts_and_opens_an_incident() {
        // Nine days of a 5-minute CPU-like metric (daily wave + noise), then it drops by half.
        let mut state: u64 = 42;
        let mut input = String::from("timestamp,value\n");
        for i in 0..2_880i64 {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            let noise = ((state >> 33) as f64 / (1u64 << 31) as f64 - 0.5) * 4.0;
            let hour = (i % 288) as f64 / 12.0;
            let wave = 50.0 + 20.0 * (hour / 24.0 * std::f64::consts::TAU).sin();
            let value = if i >= 2_600 { wave * 0.5 } else { wave } + noise;
            input.push_str(&format!("{},{value:.3}\n", 1_741_564_800 + i * 300));
        }
        let output = detect_csv(&input, &DetectorConfig::default(), None).expect("valid CSV");
        let scores = scores_of(&output);
        // Quiet for the two days before the drop, then scored within the first three rows.
        let before = scores[2_600 - 576..2_600]
            .iter()
            .copied()
            .fold(0.0, f64::max);
        let onset = scores[2_600..2_603].iter().copied().fold(0.0, f64::max);
        assert!(before < 0.2, "before the drop: {before}");
        assert!(onset > 0.5, "at the drop: {onset}");
        let after_drop = output.lines().nth(2_603).unwrap_or_default();
        assert!(after_drop.contains(",open,"), "{after_drop}");
    }

    #[test]
    fn a_metric_leaving_its_range_by_a_small_dip_is_scored_as_a_record() {
        // Four days of a daily wave between 40 and 60 every 5 minutes with ±0.5 of noise; at
        // the trough of day 3 one row reads 38.5: a dip of 1.5 that moves the 15-minute mean
        // by 0.5, no surprise to the test, but below anything the series has shown (by more
        // than 2 % of its range), which the record view scores.
        let mut state: u64 = 7;
        let mut input = String::from("timestamp,value\n");
        let dip = 3 * 288 + 216;
        for i in 0..1_152usize {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            let noise = (state >> 33) as f64 / (1u64 << 31) as f64 - 0.5;
            let phase = (i % 288) as f64 / 288.0 * std::f64::consts::TAU;
            let value = if i == dip {
                38.5
            } else {
                50.0 + 10.0 * phase.sin() + noise
            };
            input.push_str(&format!("{},{value:.3}\n", 1_741_564_800 + i * 300));
        }
        let output = detect_csv(&input, &DetectorConfig::default(), None).expect("valid");
        // The first row (50.x) is not an integer either: every row is a metric's.
        assert!(output.lines().skip(1).all(|r| r.ends_with(",metric")));
        let with = scores_of(&output);
        let mut off = DetectorConfig::default();
        off.metrics.record_score = 0.0;
        let without = scores_of(&detect_csv(&input, &off, None).expect("valid"));
        assert_eq!(with[dip], 0.5);
        assert_eq!(without[dip], 0.0);
        // Elsewhere after the warm-up the record view adds nothing: the wave stays in its range.
        for i in (288..with.len()).filter(|&i| i != dip) {
            assert_eq!(with[i], without[i], "row {i}");
        }
    }

    #[test]
    fn the_kind_is_decided_from_the_warm_up_rows_alone() {
        // A day of bursty integer counts (the warm-up at 5 minutes is 288 rows), then
        // fractional values: the column stays counts, since later rows cannot change the past.
        let mut input = String::from("timestamp,value\n");
        for i in 0..400i64 {
            let value = if i < 288 {
                format!("{}", if i % 3 == 0 { 9 } else { 1 })
            } else {
                "2.5".to_string()
            };
            input.push_str(&format!("{},{value}\n", 1_741_564_800 + i * 300));
        }
        let output = detect_csv(&input, &DetectorConfig::default(), None).expect("valid");
        let kinds: Vec<&str> = output
            .lines()
            .skip(1)
            .map(|r| r.rsplit(',').next().unwrap_or_default())
            .collect();
        assert!(kinds.iter().all(|&k| k == "counts"), "{:?}", &kinds[..3]);
        // The first row alone is an integer, so it is answered as counts; a steady integer
        // gauge is switched to the metric model as soon as its rows show it.
        let mut gauge = String::from("timestamp,value\n");
        for i in 0..300i64 {
            gauge.push_str(&format!("{},{}\n", 1_741_564_800 + i * 300, 60 + i % 2));
        }
        let output = detect_csv(&gauge, &DetectorConfig::default(), None).expect("valid");
        let kinds: Vec<&str> = output
            .lines()
            .skip(1)
            .map(|r| r.rsplit(',').next().unwrap_or_default())
            .collect();
        assert_eq!(kinds[0], "counts");
        assert!(kinds[1..].iter().all(|&k| k == "metric"));
        let forced = detect_csv(&gauge, &DetectorConfig::default(), Some(SeriesKind::Counts))
            .expect("valid");
        assert!(forced.lines().skip(1).all(|r| r.ends_with(",counts")));
    }

    #[test]
    fn integer_gauges_are_not_taken_for_counts() {
        let evidence = |values: &[f64]| {
            let mut evidence = KindEvidence::default();
            values.iter().for_each(|&v| evidence.add(v));
            evidence.kind()
        };
        let steady: Vec<f64> = (0..100).map(|i| 60.0 + f64::from(i % 2 == 0)).collect();
        assert_eq!(evidence(&steady), SeriesKind::Metric);
        let bursty: Vec<f64> = (0..100)
            .map(|i| if i % 3 == 0 { 9.0 } else { 1.0 })
            .collect();
        assert_eq!(evidence(&bursty), SeriesKind::Counts);
        assert_eq!(evidence(&[1.5, 2.0]), SeriesKind::Metric);
        assert_eq!(evidence(&[-1.0, 2.0]), SeriesKind::Metric);
    }
}
