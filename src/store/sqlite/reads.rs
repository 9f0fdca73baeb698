//! [`ReadStore`] on SQLite: the read side: counts, regions, expectations, top cities, problem mixes, incidents.

use std::marker::PhantomData;

use super::*;
use crate::store::ReadStore;

/// The read statements in SQLite's dialect; [`sql::ReadSql`] says how each is bound.
///
/// `top_cities`: an incident's range is short, so the minute index beats any country's whole
/// history. `counts`: the global series is the sum of the country totals; a country's is its
/// total row. One statement each, with literal city predicates so the partial country-series
/// index applies: a city's series is a primary-key range, a country's a range of the
/// country-series index, the world's that index walked country by country. `region_counts`:
/// literal city predicates, so the partial region indexes apply.
const READS: sql::ReadSql<Sqlite> = sql::ReadSql {
    rollups: "select minute, country, city, count from rollups_minute
         where service = ?1 and minute >= ?2 and minute < ?3
         order by minute, country, city",
    top_cities: "select country, city, sum(count) as count
         from rollups_minute indexed by rollups_minute_by_minute
         where service = ?1 and (?2 is null or country = ?2) and city <> ''
           and minute >= ?3 and minute < ?4
         group by country, city
         order by count desc, country, city
         limit ?5",
    city_counts: "select (minute / ?6) * ?6 as bucket, sum(count) as count
         from rollups_minute
         where service = ?1 and country = ?2 and city = ?3 and minute >= ?4 and minute < ?5
         group by bucket
         order by bucket",
    country_counts: "select (minute / ?5) * ?5 as bucket, sum(count) as count
         from rollups_minute indexed by rollups_country_series
         where service = ?1 and country = ?2 and city = '' and minute >= ?3 and minute < ?4
         group by bucket
         order by bucket",
    world_counts: "select (minute / ?5) * ?5 as bucket, sum(count) as count
         from rollups_minute indexed by rollups_country_series
         where service = ?1 and city = '' and country in (select value from json_each(?2))
           and minute >= ?3 and minute < ?4
         group by bucket
         order by bucket",
    city_totals: "select country, city, sum(count) as count from rollups_minute
         where service = ?1 and city <> '' and country in (select value from json_each(?4))
           and minute >= ?2 and minute < ?3
         group by country, city",
    country_totals: "select country, '' as city, sum(count) as count from rollups_minute
         where service = ?1 and city = '' and country in (select value from json_each(?4))
           and minute >= ?2 and minute < ?3
         group by country",
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
        Ok(sqlx::query_as(
            "with r(country, city) as (
                 select json_extract(value, '$[0]'), json_extract(value, '$[1]') from json_each(?2)
             )
             select e.country, e.city, e.quarter, e.expected
             from r join expectations_quarter e
               on e.service = ?1 and e.country = r.country and e.city = r.city
                  and e.quarter >= ?3 and e.quarter < ?4",
        )
        .bind(service)
        .bind(pairs)
        .bind(from.timestamp())
        .bind(to.timestamp())
        .fetch_all(&self.reader)
        .await?)
    }
});
