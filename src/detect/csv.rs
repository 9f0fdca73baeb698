//! The offline mode behind `outagewatch detect`: run one series from a `timestamp,value` CSV through the same core and append the detector's columns to every row.
//!
//! The interval is inferred (median gap between rows) and every duration of the config is
//! converted to steps of it. `ValueKind::Auto` (the offline default) models a column of
//! non-negative integers as counts (negative-binomial test) and anything else as a
//! real-valued metric (additive baseline, robust z-score); offline the test is two-sided by
//! default because metrics also fail by dropping. Beside the surprise test, a
//! transition-novelty view over the series' own range ([`super::novelty`]) scores where the
//! series goes somewhere it has never been. Parsing is hand-written: two unquoted
//! columns do not justify a CSV crate.

use thiserror::Error;

use super::incident::IncidentEvent;
use super::novelty::{self, Novelty, TransitionNovelty};
use super::series::SeriesDetector;
use super::surprise::ValueKind;
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
/// Output columns after the input's: `anomaly_score` (in [0, 1]: the surprise test's onset
/// score combined with the transition novelty of [`super::novelty`]), `state`,
/// `window_count`, `expected`, `p_value` (the incident state and the baseline come from the
/// surprise test alone), `event`.
pub fn detect_csv(input: &str, config: &DetectorConfig) -> Result<String, CsvError> {
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
    let mut offline = config.clone();
    offline.direction = config.offline.direction;
    offline.onset_hold_steps = config.offline.onset_hold_steps;
    offline.onset_daily_recurrence = config.offline.onset_daily_recurrence;
    offline.value_kind = match config.offline.value_kind {
        ValueKind::Auto => infer_value_kind(&rows),
        kind => kind,
    };
    // Offline memory is no concern, so the profile gets fine cells (at least one step wide):
    // an hourly cell cannot hold a daily shape sampled every five minutes.
    let step_minutes = u32::try_from(step_seconds / 60).unwrap_or(u32::MAX).max(1);
    offline.profile_cell_minutes = config.offline.profile_cell_minutes.max(step_minutes);
    let mut detector = SeriesDetector::new(&offline, step_seconds);
    let mut transitions = transition_novelty(&rows, &config.offline);

    let mut out = String::with_capacity(input.len() * 2);
    out.push_str(header);
    out.push_str(",anomaly_score,state,window_count,expected,p_value,event\n");
    for (text, at, value) in rows {
        let step = detector.step(at, value, None);
        let novelty = transitions
            .as_mut()
            .map_or(Novelty::default(), |t| t.step(value));
        let anomaly_score = novelty::combine(
            step.anomaly_score,
            novelty,
            config.offline.novelty_boost,
            config.offline.novelty_score,
        );
        let event = match step.event {
            Some(IncidentEvent::Opened(_)) => "opened",
            Some(IncidentEvent::Updated(_)) => "updated",
            Some(IncidentEvent::Resolved(_)) => "resolved",
            Some(IncidentEvent::Reopened(_)) => "reopened",
            None => "",
        };
        out.push_str(&format!(
            "{text},{anomaly_score:.6},{},{},{},{:.3e},{event}\n",
            step.state.as_str(),
            step.window_count,
            step.expected,
            step.p_value,
        ));
    }
    Ok(out)
}

/// The transition-novelty tracker over the series' own range, or `None` when it is off.
fn transition_novelty(
    rows: &[(&str, i64, f64)],
    offline: &super::OfflineConfig,
) -> Option<TransitionNovelty> {
    if offline.novelty_bins == 0 {
        return None;
    }
    let (low, high) = rows
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(low, high), row| {
            (low.min(row.2), high.max(row.2))
        });
    let learning = ((rows.len() as f64 * offline.novelty_learning_fraction).floor() as usize)
        .min(offline.novelty_learning_max_steps as usize);
    let rest = (learning as f64 * offline.novelty_rest_fraction).floor() as usize;
    Some(TransitionNovelty::new(
        low,
        high,
        offline.novelty_bins,
        learning,
        rest,
    ))
}

/// Counts are non-negative integers at least as noisy as Poisson; anything else is a real metric.
///
/// The noise is judged locally (half the mean squared step-to-step change, over the mean),
/// so a daily rhythm does not pass for dispersion: an integer gauge such as a road speed
/// in mph is steadier than a Poisson count of the same size, and a negative-binomial test
/// would misjudge it.
fn infer_value_kind(rows: &[(&str, i64, f64)]) -> ValueKind {
    if !rows.iter().all(|(_, _, v)| *v >= 0.0 && v.fract() == 0.0) {
        return ValueKind::Real;
    }
    let mean = rows.iter().map(|(_, _, v)| v).sum::<f64>() / rows.len() as f64;
    let local_variance = rows
        .windows(2)
        .map(|w| (w[1].2 - w[0].2).powi(2))
        .sum::<f64>()
        / (2.0 * (rows.len() - 1).max(1) as f64);
    if mean > 0.0 && local_variance >= mean {
        ValueKind::Counts
    } else {
        ValueKind::Real
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
        let output = detect_csv(&input, &DetectorConfig::default()).expect("valid CSV");
        let lines: Vec<&str> = output.lines().collect();
        assert_eq!(lines.len(), 101);
        assert_eq!(
            lines[0],
            "timestamp,value,anomaly_score,state,window_count,expected,p_value,event"
        );
        assert!(lines[1].starts_with("1741564800,5,"));
    }

    #[test]
    fn a_bad_value_names_its_line() {
        let input = "timestamp,value\n2025-03-10 09:45:00,1\n2025-03-10 09:46:00,x\n";
        assert_eq!(
            detect_csv(input, &DetectorConfig::default()),
            Err(CsvError::BadValue {
                line: 3,
                value: "x".to_string()
            })
        );
    }

    #[test]
    fn a_repeated_timestamp_still_gets_a_row() {
        let input = "timestamp,value\n2025-03-10 09:45:00,1\n2025-03-10 09:45:00,2\n2025-03-10 09:46:00,1\n";
        let output = detect_csv(input, &DetectorConfig::default()).expect("valid CSV");
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
        let output = detect_csv(&input, &DetectorConfig::default()).expect("valid CSV");
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
    fn a_jump_the_series_never_made_before_is_scored_by_its_novelty() {
        // Seven days of an exact daily wave (10..90 every 5 minutes), with one row at its
        // peak replaced by the trough value: a 90 → 10 jump it has never made.
        let mut input = String::from("timestamp,value\n");
        for i in 0..2_016i64 {
            let phase = (i % 288) as f64 / 288.0 * std::f64::consts::TAU;
            let value = if i == 1_800 {
                10.0
            } else {
                50.0 + 40.0 * phase.sin()
            };
            input.push_str(&format!("{},{value:.3}\n", 1_741_564_800 + i * 300));
        }
        let with = scores_of(&detect_csv(&input, &DetectorConfig::default()).expect("valid"));
        let mut off = DetectorConfig::default();
        off.offline.novelty_bins = 0;
        let without = scores_of(&detect_csv(&input, &off).expect("valid"));
        assert!(with[1_800] >= 0.5, "at the jump: {}", with[1_800]);
        assert!(without[1_800] < 0.5, "surprise alone: {}", without[1_800]);
        // Every other row is the surprise test's score alone: the wave repeats the first
        // day's transitions exactly, and the way back (10 → 90, also new) is only raised.
        for (i, (a, b)) in with.iter().zip(&without).enumerate() {
            if i == 1_801 {
                assert!((a - (b * 1.5).min(1.0)).abs() < 1e-6, "row {i}: {a} vs {b}");
            } else if i != 1_800 {
                assert_eq!(a, b, "row {i}");
            }
        }
    }

    #[test]
    fn integer_gauges_are_not_taken_for_counts() {
        let steady: Vec<(&str, i64, f64)> = (0..100)
            .map(|i| ("", i * 60, 60.0 + f64::from(i % 2 == 0)))
            .collect();
        assert_eq!(infer_value_kind(&steady), ValueKind::Real);
        let bursty: Vec<(&str, i64, f64)> = (0..100)
            .map(|i| ("", i * 60, if i % 3 == 0 { 9.0 } else { 1.0 }))
            .collect();
        assert_eq!(infer_value_kind(&bursty), ValueKind::Counts);
        let fractional = vec![("", 0, 1.5), ("", 60, 2.0)];
        assert_eq!(infer_value_kind(&fractional), ValueKind::Real);
    }
}
