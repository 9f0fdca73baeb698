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
        let rows: Vec<(i64, String, String, i64)> = sqlx::query_as(
            "select minute, country, city, count from rollups_minute
             where service = ? and minute >= ? and minute < ?
             order by minute, country, city",
        )
        .bind(service)
        .bind(from.timestamp())
        .bind(to.timestamp())
        .fetch_all(&self.reader)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(minute, country, city, count)| Rollup {
                minute: DateTime::from_timestamp(minute, 0).unwrap_or_default(),
                country,
                city,
                count,
            })
            .collect())
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
        let rows: Vec<(String, String, i64)> = sqlx::query_as(
            "select country, city, sum(count) as n
             from rollups_minute indexed by rollups_minute_by_minute
             where service = ?1 and (?2 is null or country = ?2) and city <> ''
               and minute >= ?3 and minute < ?4
             group by country, city
             order by n desc, country, city
             limit ?5",
        )
        .bind(service)
        .bind(country)
        .bind(from.timestamp())
        .bind(to.timestamp())
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(country, city, count)| CityCount {
                country,
                city,
                count,
            })
            .collect())
    }

    async fn problem_counts(
        &self,
        series: &SeriesKey,
        range: TimeRange,
    ) -> Result<Vec<ProblemCount>, StoreError> {
        let (service, country, city) = series.parts();
        let TimeRange { from, to } = range;
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "select problem, count(*) from reports
             where received_at >= ?1 and received_at < ?2 and service = ?3 and counted
               and (?4 is null or country = ?4) and (?5 is null or city = ?5)
             group by problem
             order by problem",
        )
        .bind(millis(from))
        .bind(millis(to))
        .bind(service)
        .bind(country)
        .bind(city)
        .fetch_all(&self.reader)
        .await?;
        Ok(rows.into_iter().map(Into::into).collect())
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
                "select (minute / ?6) * ?6 as bucket, sum(count)
                 from rollups_minute
                 where service = ?1 and country = ?2 and city = ?3 and minute >= ?4 and minute < ?5
                 group by bucket
                 order by bucket",
            )
            .bind(service)
            .bind(country)
            .bind(city),
            (Some(country), None) => sqlx::query_as(
                "select (minute / ?5) * ?5 as bucket, sum(count)
                 from rollups_minute indexed by rollups_country_series
                 where service = ?1 and country = ?2 and city = '' and minute >= ?3 and minute < ?4
                 group by bucket
                 order by bucket",
            )
            .bind(service)
            .bind(country),
            (None, _) => sqlx::query_as(
                "select (minute / ?5) * ?5 as bucket, sum(count)
                 from rollups_minute indexed by rollups_country_series
                 where service = ?1 and city = '' and country in (select value from json_each(?2))
                   and minute >= ?3 and minute < ?4
                 group by bucket
                 order by bucket",
            )
            .bind(service)
            .bind(json_list(&region_countries(None))),
        };
        let rows: Vec<(i64, i64)> = query
            .bind(from.timestamp())
            .bind(to.timestamp())
            .bind(bucket_seconds)
            .fetch_all(&self.reader)
            .await?;
        Ok(rows
            .into_iter()
            .map(|(start, count)| CountBucket {
                start: from_seconds(start),
                count,
            })
            .collect())
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
        let sql = if cities {
            "select country, city, sum(count) from rollups_minute
             where service = ?1 and city <> '' and country in (select value from json_each(?4))
               and minute >= ?2 and minute < ?3
             group by country, city"
        } else {
            "select country, '', sum(count) from rollups_minute
             where service = ?1 and city = '' and country in (select value from json_each(?4))
               and minute >= ?2 and minute < ?3
             group by country"
        };
        let rows: Vec<(String, String, i64)> = sqlx::query_as(sql)
            .bind(service)
            .bind(from.timestamp())
            .bind(to.timestamp())
            .bind(json_list(&region_countries(country)))
            .fetch_all(&self.reader)
            .await?;
        Ok(rows.into_iter().map(Into::into).collect())
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
        let rows: Vec<(String, String, i64, f64)> = sqlx::query_as(
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
        .await?;
        Ok(rows
            .into_iter()
            .map(|(country, city, quarter, expected)| {
                (country, city, from_seconds(quarter), expected)
            })
            .map(Into::into)
            .collect())
    }

    async fn expectations(
        &self,
        series: &SeriesKey,
        range: TimeRange,
    ) -> Result<Vec<QuarterExpectation>, StoreError> {
        let (service, country, city) = series.parts();
        let TimeRange { from, to } = range;
        let rows: Vec<(i64, f64)> = sqlx::query_as(
            "select quarter, expected from expectations_quarter
             where service = ?1 and country = coalesce(?2, '') and city = coalesce(?3, '')
               and quarter >= ?4 and quarter < ?5
             order by quarter",
        )
        .bind(service)
        .bind(country)
        .bind(city)
        .bind(from.timestamp())
        .bind(to.timestamp())
        .fetch_all(&self.reader)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(quarter, expected)| (from_seconds(quarter), expected))
            .map(Into::into)
            .collect())
    }

    async fn incidents(&self, query: &IncidentQuery) -> Result<Vec<Incident>, StoreError> {
        let mut select = QueryBuilder::new(format!(
            "select {INCIDENT_COLUMNS}, {INCIDENT_ADMIN_COLUMNS} from incidents where 1"
        ));
        if let Some(service) = &query.service {
            select.push(" and service = ").push_bind(service);
        }
        if let Some(country) = &query.country {
            select.push(" and country = ").push_bind(country);
        }
        if let Some(status) = query.status {
            select.push(" and status = ").push_bind(status.as_str());
        }
        if let Some(since) = query.since {
            select
                .push(" and started_at >= ")
                .push_bind(since.timestamp());
        }
        if let Some((started_at, id)) = query.after {
            select
                .push(" and (started_at, id) < (")
                .push_bind(started_at.timestamp())
                .push(", ")
                .push_bind(id)
                .push(")");
        }
        select
            .push(" order by started_at desc, id desc limit ")
            .push_bind(i64::from(query.limit));
        let rows: Vec<SqliteIncident> = select.build_query_as().fetch_all(&self.reader).await?;
        rows.into_iter()
            .map(SqliteIncident::into_incident)
            .collect()
    }

    async fn incident(&self, id: Uuid) -> Result<Option<Incident>, StoreError> {
        let row: Option<SqliteIncident> = sqlx::query_as(&format!(
            "select {INCIDENT_COLUMNS}, {INCIDENT_ADMIN_COLUMNS} from incidents where id = ?"
        ))
        .bind(id)
        .fetch_optional(&self.reader)
        .await?;
        row.map(SqliteIncident::into_incident).transpose()
    }
}
