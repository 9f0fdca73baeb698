//! [`ReadStore`] on Postgres: the read side: counts, regions, expectations, top cities, problem mixes, incidents.

use std::marker::PhantomData;

use super::*;
use crate::store::expectations::{day_of, expand, expand_series, DayRow};
use crate::store::read_sql;
use crate::store::ReadStore;

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

read_store!(PostgresStore, Postgres, reads, READS, {
    async fn counts_expected(
        &self,
        series: &SeriesKey,
        range: TimeRange,
        bucket_seconds: i64,
        quarters: TimeRange,
    ) -> Result<(Vec<CountBucket>, Vec<QuarterExpectation>), StoreError> {
        let (service, country, city) = series.parts();
        type Answer = (Vec<i64>, Vec<i64>, Vec<i64>, Vec<String>);
        let (starts, counts, days, expected): Answer = READS
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
        let rows = starts.into_iter().zip(counts);
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
    ) -> Result<(Vec<RegionCount>, Vec<RegionExpectation>), StoreError> {
        let (countries, cities_of) = &*read_sql::POSTGRES_REGIONS_EXPECTED;
        let statement = if cities { cities_of } else { countries };
        type Row = (String, String, i64, Vec<i64>, Vec<String>);
        let rows: Vec<Row> = READS
            .region_counts_as(statement, service, country, range)
            .bind(day_of(quarters.from))
            .bind(quarters.to)
            .fetch_all(&self.reads)
            .await?;
        let mut counts = Vec::with_capacity(rows.len());
        let mut days = Vec::new();
        for (country, city, count, day_starts, expected) in rows {
            days.extend(days_in_order(&country, &city, day_starts, expected));
            counts.push(RegionCount {
                country,
                city,
                count,
            });
        }
        Ok((counts, expand(days, quarters)?))
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
