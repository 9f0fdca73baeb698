//! [`ReadStore`] on SQLite: the read side: counts, regions, expectations, top cities, problem mixes, incidents.

use super::*;
use crate::store::ReadStore;

#[async_trait]
impl ReadStore for SqliteStore {
    async fn rollups(
        &self,
        service: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<Rollup>, StoreError> {
        Ok(sqlx::query_as(
            "select minute, country, city, count from rollups_minute
             where service = ? and minute >= ? and minute < ?
             order by minute, country, city",
        )
        .bind(service)
        .bind(from.timestamp())
        .bind(to.timestamp())
        .fetch_all(&self.reader)
        .await?)
    }

    async fn top_cities(
        &self,
        series: &SeriesKey,
        range: TimeRange,
        limit: u32,
    ) -> Result<Vec<CityCount>, StoreError> {
        let (service, country, _) = series.parts();
        let TimeRange { from, to } = range;
        // An incident's range is short: the minute index beats any country's whole history.
        let rows: Vec<RegionCount> = sqlx::query_as(
            "select country, city, sum(count) as count
             from rollups_minute indexed by rollups_minute_by_minute
             where service = ?1 and (?2 is null or country = ?2) and city <> ''
               and minute >= ?3 and minute < ?4
             group by country, city
             order by count desc, country, city
             limit ?5",
        )
        .bind(service)
        .bind(country)
        .bind(from.timestamp())
        .bind(to.timestamp())
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await?;
        Ok(rows::into_all(rows))
    }

    async fn problem_counts(
        &self,
        series: &SeriesKey,
        range: TimeRange,
    ) -> Result<Vec<ProblemCount>, StoreError> {
        Ok(sql::problem_counts::<Sqlite, _>(series, range)
            .fetch_all(&self.reader)
            .await?)
    }

    async fn counts(
        &self,
        series: &SeriesKey,
        range: TimeRange,
        bucket_seconds: i64,
    ) -> Result<Vec<CountBucket>, StoreError> {
        let (service, country, city) = series.parts();
        let TimeRange { from, to } = range;
        // The global series is the sum of the country totals; a country's is its total row.
        // One statement each, with literal city predicates so the partial country-series
        // index applies: a city's series is a primary-key range, a country's a range of the
        // country-series index, the world's that index walked country by country.
        let query = match (country, city) {
            (Some(country), Some(city)) => sqlx::query_as(
                "select (minute / ?6) * ?6 as bucket, sum(count) as count
                 from rollups_minute
                 where service = ?1 and country = ?2 and city = ?3 and minute >= ?4 and minute < ?5
                 group by bucket
                 order by bucket",
            )
            .bind(service)
            .bind(country)
            .bind(city),
            (Some(country), None) => sqlx::query_as(
                "select (minute / ?5) * ?5 as bucket, sum(count) as count
                 from rollups_minute indexed by rollups_country_series
                 where service = ?1 and country = ?2 and city = '' and minute >= ?3 and minute < ?4
                 group by bucket
                 order by bucket",
            )
            .bind(service)
            .bind(country),
            (None, _) => sqlx::query_as(
                "select (minute / ?5) * ?5 as bucket, sum(count) as count
                 from rollups_minute indexed by rollups_country_series
                 where service = ?1 and city = '' and country in (select value from json_each(?2))
                   and minute >= ?3 and minute < ?4
                 group by bucket
                 order by bucket",
            )
            .bind(service)
            .bind(json_list(&region_countries(None))),
        };
        let rows: Vec<BucketRow> = query
            .bind(from.timestamp())
            .bind(to.timestamp())
            .bind(bucket_seconds)
            .fetch_all(&self.reader)
            .await?;
        Ok(rows::into_all(rows))
    }

    async fn region_counts(
        &self,
        service: &str,
        country: Option<&str>,
        cities: bool,
        range: TimeRange,
    ) -> Result<Vec<RegionCount>, StoreError> {
        let TimeRange { from, to } = range;
        // Literal city predicates, so the partial region indexes apply.
        let statement = if cities {
            "select country, city, sum(count) as count from rollups_minute
             where service = ?1 and city <> '' and country in (select value from json_each(?4))
               and minute >= ?2 and minute < ?3
             group by country, city"
        } else {
            "select country, '' as city, sum(count) as count from rollups_minute
             where service = ?1 and city = '' and country in (select value from json_each(?4))
               and minute >= ?2 and minute < ?3
             group by country"
        };
        Ok(sqlx::query_as(statement)
            .bind(service)
            .bind(from.timestamp())
            .bind(to.timestamp())
            .bind(json_list(&region_countries(country)))
            .fetch_all(&self.reader)
            .await?)
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

    async fn expectations(
        &self,
        series: &SeriesKey,
        range: TimeRange,
    ) -> Result<Vec<QuarterExpectation>, StoreError> {
        Ok(sql::expectations::<Sqlite, _>(series, range)
            .fetch_all(&self.reader)
            .await?)
    }

    async fn incidents(&self, query: &IncidentQuery) -> Result<Vec<Incident>, StoreError> {
        let rows: Vec<IncidentRow> = sql::incidents::<Sqlite>(query)
            .build_query_as()
            .fetch_all(&self.reader)
            .await?;
        rows::incidents(rows)
    }

    async fn incident(&self, id: Uuid) -> Result<Option<Incident>, StoreError> {
        let row: Option<IncidentRow> = sqlx::query_as(sql::incident_by_id())
            .bind(id)
            .fetch_optional(&self.reader)
            .await?;
        row.map(Incident::try_from).transpose()
    }
}
