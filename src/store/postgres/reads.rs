//! [`ReadStore`] on Postgres: the read side: counts, regions, expectations, top cities, problem mixes, incidents.

use std::marker::PhantomData;

use super::*;
use crate::domain::buckets::{Tier, TierSplit};
use crate::store::expectations::{day_of, expand, expand_series, DayRow};
use crate::store::read_sql;
use crate::store::ReadStore;
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgTypeInfo, PgValueFormat, PgValueRef};

/// The read statements in Postgres's dialect: its own `rollups` and the tiered ones of
/// [`read_sql`].
static READS: read_sql::ReadSql<Postgres> = read_sql::ReadSql {
    rollups: "select minute, country, city, count from rollups
         where service = $1 and minute >= $2 and minute < $3
         order by minute, country, city",
    tiered: &read_sql::POSTGRES_TIERED,
    backend: PhantomData,
};

/// One region's expectation day rows as the one-statement reads answer them (a day array and
/// an expectations array, in no order), by day.
fn days_in_order(country: &str, city: &str, days: Vec<i64>, expected: Vec<String>) -> Vec<DayRow> {
    let mut rows: Vec<DayRow> = days
        .into_iter()
        .zip(expected)
        .map(|(day, expected)| DayRow {
            service: String::new(),
            country: country.to_owned(),
            city: city.to_owned(),
            day,
            expected,
        })
        .collect();
    rows.sort_unstable_by_key(|row| row.day);
    rows
}

/// The quarters of a day row (migration 0013).
const QUARTERS_A_DAY: usize = 96;

/// An `int8[]` of any dimensions as its elements in order, as Postgres sends it in binary:
/// sqlx decodes one-dimensional arrays only, and `array_agg` of day rows' counts is two.
struct Int8Elements(Vec<i64>);

impl sqlx::Type<Postgres> for Int8Elements {
    fn type_info() -> PgTypeInfo {
        <Vec<i64> as sqlx::Type<Postgres>>::type_info()
    }
}

impl<'r> sqlx::Decode<'r, Postgres> for Int8Elements {
    /// The binary array format: dimensions, a has-nulls flag and the element type (4 bytes
    /// each), then a length and a lower bound per dimension, then each element as its length
    /// (-1: null) and its bytes.
    fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
        if value.format() != PgValueFormat::Binary {
            return Err("an int8[] in text format".into());
        }
        let bytes = value.as_bytes()?;
        let word = |at: usize| -> Result<i32, BoxDynError> {
            let word = bytes.get(at..at + 4).ok_or("an int8[] cut short")?;
            Ok(i32::from_be_bytes(word.try_into()?))
        };
        let dimensions = usize::try_from(word(0)?)?;
        let mut elements = 1;
        for dimension in 0..dimensions {
            elements *= usize::try_from(word(12 + 8 * dimension)?)?;
        }
        if dimensions == 0 {
            elements = 0;
        }
        let mut at = 12 + 8 * dimensions;
        let mut values = Vec::with_capacity(elements);
        for _ in 0..elements {
            if word(at)? != 8 {
                return Err("an int8[] with a null".into());
            }
            let value = bytes.get(at + 4..at + 12).ok_or("an int8[] cut short")?;
            values.push(i64::from_be_bytes(value.try_into()?));
            at += 12;
        }
        Ok(Int8Elements(values))
    }
}

/// The quarter rows of `split`'s quarter parts in day rows `days` (unix seconds) with their
/// counts `quarters` (96 a day, in the same order), as (start, count): the quarters with a
/// count, as the quarter rows of SQLite are.
fn quarter_rows(
    split: TierSplit,
    days: &[i64],
    quarters: &[i64],
) -> Result<Vec<(i64, i64)>, StoreError> {
    if quarters.len() != days.len() * QUARTERS_A_DAY {
        return Err(StoreError::Corrupt(format!(
            "{} quarter counts for {} day rows",
            quarters.len(),
            days.len()
        )));
    }
    let [_, t1, t2, t3, t4, _] = split.bounds.map(|bound| bound.timestamp());
    let mut rows = Vec::new();
    for (&day, counts) in days.iter().zip(quarters.chunks_exact(QUARTERS_A_DAY)) {
        for (start, &count) in (day..).step_by(900).zip(counts) {
            if count != 0 && ((t1..t2).contains(&start) || (t3..t4).contains(&start)) {
                rows.push((start, count));
            }
        }
    }
    Ok(rows)
}

read_store!(PostgresStore, Postgres, reads, READS, {
    async fn counts_expected(
        &self,
        series: &SeriesKey,
        range: TimeRange,
        bucket_seconds: i64,
        quarters: TimeRange,
    ) -> Result<(Vec<CountBucket>, Vec<QuarterExpectation>), StoreError> {
        let (service, country, city) = series.parts();
        type Answer = (
            Vec<i64>,
            Vec<i64>,
            Vec<i64>,
            Int8Elements,
            Vec<i64>,
            Vec<String>,
        );
        let (starts, counts, quarter_days, quarter_counts, days, expected): Answer = READS
            .counts_as(
                &read_sql::POSTGRES_COUNTS_EXPECTED,
                series,
                range,
                bucket_seconds,
            )
            .bind(service)
            .bind(country)
            .bind(city)
            .bind(day_of(quarters.from))
            .bind(quarters.to)
            .fetch_one(&self.reads)
            .await?;
        let days = days_in_order("", "", days, expected);
        let split = TierSplit::new(range, Tier::for_buckets(bucket_seconds));
        let rows = starts.into_iter().zip(counts).chain(quarter_rows(
            split,
            &quarter_days,
            &quarter_counts.0,
        )?);
        Ok((
            rows::buckets(rows, bucket_seconds),
            expand_series(days, quarters)?,
        ))
    }

    async fn replication(&self) -> Result<Replication, StoreError> {
        let (standby, position, since): (bool, i64, Option<f64>) = sqlx::query_as(
            "select pg_is_in_recovery(),
                    (case when pg_is_in_recovery() then pg_last_wal_replay_lsn()
                          else pg_current_wal_lsn() end - '0/0'::pg_lsn)::int8,
                    extract(epoch from now() - pg_last_xact_replay_timestamp())::float8",
        )
        .fetch_one(&self.reads)
        .await?;
        let position = u64::try_from(position).unwrap_or(0);
        Ok(if standby {
            Replication::Standby {
                replayed: position,
                since_last_replay: since,
            }
        } else {
            Replication::Primary { written: position }
        })
    }

    async fn rollups(
        &self,
        service: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<Rollup>, StoreError> {
        let query = READS.rollups(service, TimeRange::new(from, to));
        Ok(rows::sum_adjacent(
            steps::fetch_all(query, &self.reads).await?,
            |a: &Rollup, b| (a.minute, &a.country, &a.city) == (b.minute, &b.country, &b.city),
            |r| &mut r.count,
        ))
    }

    async fn region_counts_expected(
        &self,
        service: &str,
        country: Option<&str>,
        cities: bool,
        range: TimeRange,
        quarters: TimeRange,
    ) -> Result<RegionsRows, StoreError> {
        let (countries, cities_of) = &*read_sql::POSTGRES_REGIONS_EXPECTED;
        let statement = if cities { cities_of } else { countries };
        let scope = Scope::of_regions(cities);
        type Row = (
            Option<String>,
            Option<String>,
            Option<i64>,
            Option<Vec<i64>>,
            Option<Vec<String>>,
            Vec<String>,
            Vec<String>,
            Vec<Uuid>,
        );
        let rows: Vec<Row> = READS
            .region_counts_as(statement, service, country, range)
            .bind(day_of(quarters.from))
            .bind(quarters.to)
            .bind(scope.as_str())
            .bind(country)
            .fetch_all(&self.reads)
            .await?;
        let mut answer = RegionsRows::default();
        let mut days = Vec::new();
        for (region, city, count, day_starts, expected, open_countries, open_cities, open_ids) in
            rows
        {
            if answer.open.is_empty() {
                answer.open = open_countries
                    .into_iter()
                    .zip(open_cities)
                    .zip(open_ids)
                    .map(|((country, city), id)| (country, city, id))
                    .collect();
            }
            let (Some(country), Some(city), Some(count)) = (region, city, count) else {
                continue;
            };
            days.extend(days_in_order(
                &country,
                &city,
                day_starts.unwrap_or_default(),
                expected.unwrap_or_default(),
            ));
            answer.counts.push(RegionCount {
                country,
                city,
                count,
            });
        }
        answer.expected = expand(days, quarters)?;
        Ok(answer)
    }

    async fn region_expectations(
        &self,
        service: &str,
        regions: &[(String, String)],
        range: TimeRange,
    ) -> Result<Vec<RegionExpectation>, StoreError> {
        let TimeRange { from, to } = range;
        let (countries, cities): (Vec<&str>, Vec<&str>) = regions
            .iter()
            .map(|(country, city)| (country.as_str(), city.as_str()))
            .unzip();
        let rows: Vec<DayRow> = sqlx::query_as(
            "select e.service, e.country, e.city, extract(epoch from e.day)::int8 as day, e.expected
             from unnest($2::text[], $3::text[]) as r(country, city)
             join expectations_day e
               on e.service = $1 and e.country = r.country and e.city = r.city
                  and e.day >= $4 and e.day < $5",
        )
        .bind(service)
        .bind(countries)
        .bind(cities)
        .bind(day_of(from))
        .bind(to)
        .fetch_all(&self.reads)
        .await?;
        expand(rows, range)
    }
});
