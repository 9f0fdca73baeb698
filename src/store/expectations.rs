//! The detector's expectations as both backends store them: one row per series per UTC day,
//! `expected` a JSON array of the day's 96 quarter hours (a number, or null where the detector
//! had none). A write merges its quarters into the day rows they fall in (the detector lock
//! makes the leader, or a redetect, the only writer, so a read-modify-write in one transaction
//! is safe); a read expands day rows back into quarters. serde_json writes and reads every
//! double exactly, so what a read answers is what the detector computed.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::ops::Range;

use chrono::{DateTime, TimeDelta, Utc};
use serde::de::{Deserializer as _, Error as _, IgnoredAny, SeqAccess, Visitor};
use sqlx::{Database, Executor, FromRow, IntoArguments};

use super::sql::{Backend, Bind};
use super::{Expectation, QuarterExpectation, RegionExpectation, StoreError, TimeRange};
use crate::domain::buckets::{ceil_to, floor_to, QUARTER_SECONDS};

/// Seconds in a day row.
const DAY_SECONDS: i64 = 86_400;

/// Quarter hours in a day row.
pub(super) const SLOTS: usize = (DAY_SECONDS / QUARTER_SECONDS) as usize;

/// Day rows per statement.
const ROWS_PER_STATEMENT: usize = 1_000;

/// One series' day of expectations.
type Day = [Option<f64>; SLOTS];

/// The key of a day row: service, country, city, the day's start.
type DayKey = (String, String, String, DateTime<Utc>);

/// A stored day row, its day in unix seconds (each backend's statement selects it so).
#[derive(Debug, FromRow)]
pub(super) struct DayRow {
    pub(super) service: String,
    pub(super) country: String,
    pub(super) city: String,
    pub(super) day: i64,
    pub(super) expected: String,
}

/// The start of the UTC day `at` falls in.
pub(super) fn day_of(at: DateTime<Utc>) -> DateTime<Utc> {
    floor_to(at, DAY_SECONDS)
}

fn slot_of(quarter: DateTime<Utc>) -> usize {
    (quarter.timestamp().rem_euclid(DAY_SECONDS) / QUARTER_SECONDS) as usize
}

fn decode(text: &str) -> Result<Day, StoreError> {
    let values: Vec<Option<f64>> = serde_json::from_str(text)
        .map_err(|e| StoreError::Corrupt(format!("a stored expectations row: {e}")))?;
    values.try_into().map_err(|values: Vec<Option<f64>>| {
        StoreError::Corrupt(format!(
            "a stored expectations row holds {} quarters, not {SLOTS}",
            values.len()
        ))
    })
}

/// The expectations of the slots `wanted` of a stored day row, as (slot, value), leaving out
/// the slots without one. The other slots are skipped unparsed (a regions answer reads a day
/// row for its hour's 4 or 5 quarters), but every row must still hold exactly [`SLOTS`].
fn decode_slots(text: &str, wanted: Range<usize>) -> Result<Vec<(usize, f64)>, StoreError> {
    struct Slots(Range<usize>);

    impl<'de> Visitor<'de> for Slots {
        type Value = Vec<(usize, f64)>;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            write!(f, "an array of {SLOTS} numbers or nulls")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut values = Vec::with_capacity(self.0.len());
            let mut slot = 0;
            loop {
                if self.0.contains(&slot) {
                    match seq.next_element::<Option<f64>>()? {
                        None => break,
                        Some(value) => values.extend(value.map(|value| (slot, value))),
                    }
                } else if seq.next_element::<IgnoredAny>()?.is_none() {
                    break;
                }
                slot += 1;
            }
            if slot != SLOTS {
                return Err(A::Error::invalid_length(slot, &self));
            }
            Ok(values)
        }
    }

    let mut reader = serde_json::Deserializer::from_str(text);
    reader
        .deserialize_seq(Slots(wanted))
        .and_then(|values| reader.end().map(|()| values))
        .map_err(|e| StoreError::Corrupt(format!("a stored expectations row: {e}")))
}

fn encode(day: &Day) -> String {
    // A slice of options serializes as the array of numbers and nulls (a non-finite double
    // as null, as it always was); serde_json cannot fail on it.
    serde_json::to_string(&day[..]).unwrap_or_default()
}

/// A day row as [`put_days`] sends it, inside one JSON array per statement.
#[derive(serde::Serialize)]
struct DayOut<'a> {
    service: &'a str,
    country: &'a str,
    city: &'a str,
    day: i64,
    expected: String,
}

/// [`expand`] for the rows of one series: its quarters only.
pub(super) fn expand_series(
    rows: Vec<DayRow>,
    range: TimeRange,
) -> Result<Vec<QuarterExpectation>, StoreError> {
    Ok(expand(rows, range)?
        .into_iter()
        .map(|q| QuarterExpectation {
            quarter: q.quarter,
            expected: q.expected,
        })
        .collect())
}

/// The quarters of `rows` in `range` that have an expectation, in row order and quarter order.
pub(super) fn expand(
    rows: Vec<DayRow>,
    range: TimeRange,
) -> Result<Vec<RegionExpectation>, StoreError> {
    let mut quarters = Vec::new();
    // The first slot of a day at or after `at` (0 before the day, SLOTS after it). `at` is
    // rounded up to the second first, as every range bound is (`sql::range_bound`): cut down,
    // a `to` in a quarter's first second would leave that quarter out.
    let slot_from = |day: i64, at: DateTime<Utc>| {
        let at = ceil_to(at, 1).timestamp();
        let ceil = (at - day + QUARTER_SECONDS - 1).div_euclid(QUARTER_SECONDS);
        ceil.clamp(0, SLOTS as i64) as usize
    };
    for row in rows {
        let wanted = slot_from(row.day, range.from)..slot_from(row.day, range.to);
        let day = DateTime::from_timestamp(row.day, 0).unwrap_or_default();
        for (slot, expected) in decode_slots(&row.expected, wanted)? {
            quarters.push(RegionExpectation {
                country: row.country.clone(),
                city: row.city.clone(),
                quarter: day + TimeDelta::seconds(slot as i64 * QUARTER_SECONDS),
                expected,
            });
        }
    }
    Ok(quarters)
}

/// The stored day rows of days `[first, last]`, by key.
async fn days_between<DB>(
    tx: &mut DB::Connection,
    first: DateTime<Utc>,
    last: DateTime<Utc>,
) -> Result<BTreeMap<DayKey, Day>, StoreError>
where
    DB: Backend,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> <DB as Database>::Arguments<'q>: IntoArguments<'q, DB>,
    DayRow: for<'r> FromRow<'r, DB::Row>,
{
    let rows: Vec<DayRow> = sqlx::query_as(DB::SELECT_EXPECTATION_DAYS)
        .bind(DB::time(first))
        .bind(DB::time(last))
        .fetch_all(&mut *tx)
        .await?;
    let mut days = BTreeMap::new();
    for row in rows {
        let day = DateTime::from_timestamp(row.day, 0).unwrap_or_default();
        let values = decode(&row.expected)?;
        days.insert((row.service, row.country, row.city, day), values);
    }
    Ok(days)
}

/// A day row's key without copying its names: service, country, city, the day's start.
type DayRef<'a> = (&'a str, &'a str, &'a str, DateTime<Utc>);

fn day_ref(key: &DayKey) -> DayRef<'_> {
    (&key.0, &key.1, &key.2, key.3)
}

/// Writes `days` over their stored rows (inserting the new ones): each chunk is one statement
/// with one bind, a JSON array of rows, which both dialects unpack
/// ([`Backend::UPSERT_EXPECTATION_DAYS`]).
async fn put_days<'a, DB>(
    tx: &mut DB::Connection,
    days: impl Iterator<Item = (DayRef<'a>, &'a Day)>,
) -> Result<(), StoreError>
where
    DB: Backend,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> <DB as Database>::Arguments<'q>: IntoArguments<'q, DB>,
    for<'b> String: Bind<'b, DB>,
{
    let rows: Vec<DayOut<'_>> = days
        .map(|((service, country, city, day), values)| DayOut {
            service,
            country,
            city,
            day: day.timestamp(),
            expected: encode(values),
        })
        .collect();
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        let chunk = serde_json::to_string(chunk)
            .map_err(|e| StoreError::Query(sqlx::Error::Encode(Box::new(e))))?;
        sqlx::query(DB::UPSERT_EXPECTATION_DAYS)
            .bind(chunk)
            .execute(&mut *tx)
            .await?;
    }
    Ok(())
}

/// Whether a write may replace a stored quarter's expectation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Stored {
    /// The live detector's: a quarter is written again as it is recomputed.
    Overwrite,
    /// A redetect's, into a range it cleared: a stored quarter means the range was not.
    Refuse,
}

/// Stores `expectations` in their day rows, each over what its quarter held as `stored` says.
pub(super) async fn merge<DB>(
    tx: &mut DB::Connection,
    expectations: &[Expectation],
    stored_quarters: Stored,
) -> Result<(), StoreError>
where
    DB: Backend,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> <DB as Database>::Arguments<'q>: IntoArguments<'q, DB>,
    DayRow: for<'r> FromRow<'r, DB::Row>,
    for<'a> String: Bind<'a, DB>,
{
    let (Some(first), Some(last)) = (
        expectations.iter().map(|e| e.quarter).min(),
        expectations.iter().map(|e| e.quarter).max(),
    ) else {
        return Ok(());
    };
    let stored = days_between::<DB>(tx, day_of(first), day_of(last)).await?;
    let stored: BTreeMap<DayRef<'_>, &Day> = stored.iter().map(|(k, d)| (day_ref(k), d)).collect();
    // Keyed by the names the expectations hold, hashed: a replay's day is 100 thousand
    // quarters, and a search of an ordered map compared names a dozen times for each.
    let mut index: HashMap<DayRef<'_>, usize> = HashMap::new();
    let mut days: Vec<(DayRef<'_>, Day)> = Vec::new();
    for e in expectations {
        let key = (
            e.service.as_str(),
            e.country.as_str(),
            e.city.as_str(),
            day_of(e.quarter),
        );
        let before = stored.get(&key);
        let at = *index.entry(key).or_insert_with(|| {
            days.push((key, before.map_or([None; SLOTS], |d| **d)));
            days.len() - 1
        });
        let day = &mut days[at].1;
        let slot = slot_of(e.quarter);
        if stored_quarters == Stored::Refuse && before.is_some_and(|d| d[slot].is_some()) {
            return Err(StoreError::Conflict(format!(
                "an expectation of {} {} {} at {} is stored already",
                e.service, e.country, e.city, e.quarter
            )));
        }
        day[slot] = Some(e.expected);
    }
    // In key order, as the rows were always written.
    days.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    put_days::<DB>(tx, days.iter().map(|(k, d)| (*k, d))).await
}

/// Forgets the expectations of the quarters in `[from, to)` (both on quarter boundaries):
/// whole days go, the days at the edges keep their other quarters. Answers the day rows
/// deleted or changed.
pub(super) async fn clear<DB>(
    tx: &mut DB::Connection,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<u64, StoreError>
where
    DB: Backend,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> <DB as Database>::Arguments<'q>: IntoArguments<'q, DB>,
    DayRow: for<'r> FromRow<'r, DB::Row>,
    for<'a> String: Bind<'a, DB>,
{
    if from >= to {
        return Ok(0);
    }
    // The days the range covers only in part: their rows are trimmed, not deleted.
    let mut edges = BTreeMap::new();
    for day in [day_of(from), day_of(to)] {
        let partial = day < from || day + TimeDelta::seconds(DAY_SECONDS) > to;
        if partial && day < to {
            edges.append(&mut days_between::<DB>(tx, day, day).await?);
        }
    }
    let whole_from = if day_of(from) == from {
        from
    } else {
        day_of(from) + TimeDelta::seconds(DAY_SECONDS)
    };
    let deleted = sqlx::query("delete from expectations_day where day >= $1 and day < $2")
        .bind(DB::time(whole_from))
        .bind(DB::time(day_of(to)))
        .execute(&mut *tx)
        .await?;
    for ((_, _, _, day), values) in edges.iter_mut() {
        for (slot, value) in values.iter_mut().enumerate() {
            let quarter = *day + TimeDelta::seconds(slot as i64 * QUARTER_SECONDS);
            if from <= quarter && quarter < to {
                *value = None;
            }
        }
    }
    put_days::<DB>(tx, edges.iter().map(|(k, d)| (day_ref(k), d))).await?;
    Ok(DB::rows_affected(&deleted) + edges.len() as u64)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_quarter_has_its_slot_in_its_utc_day() {
        // 2025-03-10T10:00:00Z is the 40th quarter of its day.
        let quarter = DateTime::from_timestamp(1_741_600_800, 0).unwrap();
        assert_eq!(day_of(quarter).timestamp(), 1_741_564_800);
        assert_eq!(slot_of(quarter), 40);
        assert_eq!(slot_of(day_of(quarter)), 0);
        assert_eq!(
            slot_of(day_of(quarter) + TimeDelta::seconds(DAY_SECONDS - 900)),
            95
        );
    }

    #[test]
    fn a_day_row_keeps_every_double_exactly() {
        let mut day = [None; SLOTS];
        day[0] = Some(0.1 + 0.2);
        day[40] = Some(1.0 / 3.0);
        day[95] = Some(1e-300);
        assert_eq!(decode(&encode(&day)).unwrap(), day);
        assert!(decode("[1.5]").is_err());
    }

    #[test]
    fn expanding_keeps_the_quarters_in_range_that_have_a_value() {
        let day = 1_741_564_800;
        let mut values = [None; SLOTS];
        values[39] = Some(2.0);
        values[40] = Some(4.5);
        values[41] = Some(6.0);
        let row = || DayRow {
            service: "x".into(),
            country: "PK".into(),
            city: String::new(),
            day,
            expected: encode(&values),
        };
        let at = |slot: i64| DateTime::from_timestamp(day + slot * 900, 0).unwrap();
        let got: Vec<(DateTime<Utc>, f64)> = expand(vec![row()], TimeRange::new(at(40), at(50)))
            .unwrap()
            .into_iter()
            .map(|q| (q.quarter, q.expected))
            .collect();
        assert_eq!(got, [(at(40), 4.5), (at(41), 6.0)]);
        // A range not on quarters: a quarter is in it when its start is.
        let second = TimeDelta::seconds(1);
        let got: Vec<(DateTime<Utc>, f64)> = expand(
            vec![row()],
            TimeRange::new(at(39) + second, at(41) + second),
        )
        .unwrap()
        .into_iter()
        .map(|q| (q.quarter, q.expected))
        .collect();
        assert_eq!(got, [(at(40), 4.5), (at(41), 6.0)]);
        // Ends within a quarter's first second: the quarter starting before `to` is in, the
        // one starting before `from` is out.
        let half = TimeDelta::milliseconds(500);
        let got: Vec<(DateTime<Utc>, f64)> =
            expand(vec![row()], TimeRange::new(at(39) + half, at(41) + half))
                .unwrap()
                .into_iter()
                .map(|q| (q.quarter, q.expected))
                .collect();
        assert_eq!(got, [(at(40), 4.5), (at(41), 6.0)]);
    }

    #[test]
    fn a_day_row_is_read_for_the_slots_wanted_only() {
        let mut day = [None; SLOTS];
        day[0] = Some(0.1 + 0.2);
        day[40] = Some(1.0 / 3.0);
        day[95] = Some(7.0);
        let text = encode(&day);
        assert_eq!(decode_slots(&text, 40..42).unwrap(), [(40, 1.0 / 3.0)]);
        assert_eq!(
            decode_slots(&text, 0..SLOTS).unwrap(),
            [(0, 0.1 + 0.2), (40, 1.0 / 3.0), (95, 7.0)]
        );
        assert_eq!(decode_slots(&text, 1..1).unwrap(), []);
        assert!(decode_slots("[1.5]", 0..1).is_err());
        assert!(decode_slots(&format!("{text},"), 0..1).is_err());
        let longer = encode(&day).replacen('[', "[1,", 1);
        assert!(decode_slots(&longer, 0..1).is_err());
    }
}
