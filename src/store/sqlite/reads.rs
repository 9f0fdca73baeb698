//! [`ReadStore`] on SQLite: the read side: counts, regions, expectations, top cities, problem mixes, incidents.

use std::marker::PhantomData;

use super::*;
use crate::store::expectations::{day_of, expand, DayRow};
use crate::store::read_sql;
use crate::store::ReadStore;

/// The read statements in SQLite's dialect: its own `rollups` and the tiered ones of
/// [`read_sql`].
static READS: read_sql::ReadSql<Sqlite> = read_sql::ReadSql {
    rollups: "select minute, country, city, count from rollups_minute
         where service = ?1 and minute >= ?2 and minute < ?3
         order by minute, country, city",
    tiered: &read_sql::SQLITE_TIERED,
    backend: PhantomData,
};

read_store!(SqliteStore, Sqlite, reader, READS, {
    async fn rollups(
        &self,
        service: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<Rollup>, StoreError> {
        let query = READS.rollups(service, TimeRange::new(from, to));
        steps::fetch_all(query, &self.reader).await
    }

    async fn region_expectations(
        &self,
        service: &str,
        regions: &[(String, String)],
        range: TimeRange,
    ) -> Result<Vec<RegionExpectation>, StoreError> {
        let TimeRange { from, to } = range;
        let pairs = serde_json::Value::from(
            regions
                .iter()
                .map(|(country, city)| serde_json::json!([country, city]))
                .collect::<Vec<_>>(),
        )
        .to_string();
        let rows: Vec<DayRow> = sqlx::query_as(
            "with r(country, city) as (
                 select json_extract(value, '$[0]'), json_extract(value, '$[1]') from json_each(?2)
             )
             select e.service, e.country, e.city, e.day, e.expected
             from r join expectations_day e
               on e.service = ?1 and e.country = r.country and e.city = r.city
                  and e.day >= ?3 and e.day < ?4",
        )
        .bind(service)
        .bind(pairs)
        .bind(day_of(from).timestamp())
        .bind(to.timestamp())
        .fetch_all(&self.reader)
        .await?;
        expand(rows, range)
    }
});
