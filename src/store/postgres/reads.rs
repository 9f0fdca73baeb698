//! [`ReadStore`] on Postgres: the read side: counts, regions, expectations, top cities, problem mixes, incidents.

use super::*;
use crate::store::ReadStore;

#[async_trait]
impl ReadStore for PostgresStore {
    async fn rollups(
        &self,
        service: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<Rollup>, StoreError> {
        let rows: Vec<(DateTime<Utc>, String, String, i64)> = sqlx::query_as(
            "select minute, country, city, count from rollups
             where service = $1 and minute >= $2 and minute < $3
             order by minute, country, city",
        )
        .bind(service)
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
        .await?;
        let keyed = rows
            .into_iter()
            .map(|(minute, country, city, count)| ((minute, country, city), count));
        Ok(sum_adjacent(keyed)
            .map(|((minute, country, city), count)| Rollup {
                minute,
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
        let rows: Vec<(String, String, i64)> = sqlx::query_as(
            "select country, city, sum(count)::int8 as n from rollups
             where service = $1 and ($2::text is null or country = $2) and city <> ''
               and minute >= $3 and minute < $4
             group by country, city
             order by n desc, country, city
             limit $5",
        )
        .bind(service)
        .bind(country)
        .bind(from)
        .bind(to)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
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
             where received_at >= $1 and received_at < $2 and service = $3 and counted
               and ($4::text is null or country = $4) and ($5::text is null or city = $5)
             group by problem
             order by problem",
        )
        .bind(from)
        .bind(to)
        .bind(service)
        .bind(country)
        .bind(city)
        .fetch_all(&self.pool)
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
        // One statement each, with literal city predicates, so every plan of each prepared
        // statement can use its index: `($2 is null or country = $2)` or `city = $3` cannot
        // be index conditions of a generic plan (the partial country-series index needs
        // `city = ''` in the text). A city's series is a primary-key range; a country's an
        // index-only range of the country-series index; the world's that index walked
        // country by country.
        let query = match (country, city) {
            (Some(country), Some(city)) => sqlx::query_as(
                "select (extract(epoch from minute)::int8 / $6) * $6 as bucket, sum(count)::int8
                 from rollups
                 where service = $1 and country = $2 and city = $3 and minute >= $4 and minute < $5
                 group by bucket
                 order by bucket",
            )
            .bind(service)
            .bind(country)
            .bind(city),
            (Some(country), None) => sqlx::query_as(
                "select (extract(epoch from minute)::int8 / $5) * $5 as bucket, sum(count)::int8
                 from rollups
                 where service = $1 and country = $2 and city = '' and minute >= $3 and minute < $4
                 group by bucket
                 order by bucket",
            )
            .bind(service)
            .bind(country),
            (None, _) => sqlx::query_as(
                "select (extract(epoch from minute)::int8 / $5) * $5 as bucket, sum(count)::int8
                 from rollups
                 where service = $1 and city = '' and country = any($2) and minute >= $3 and minute < $4
                 group by bucket
                 order by bucket",
            )
            .bind(service)
            .bind(region_countries(None)),
        };
        let rows: Vec<(i64, i64)> = query
            .bind(from)
            .bind(to)
            .bind(bucket_seconds)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .into_iter()
            .map(|(start, count)| CountBucket {
                start: DateTime::from_timestamp(start, 0).unwrap_or_default(),
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
        // Literal city predicates, so the partial region indexes match any plan of the
        // prepared statement; the country list keeps the city index a range scan per country.
        let sql = if cities {
            "select country, city, sum(count)::int8 from rollups
             where service = $1 and city <> '' and country = any($4) and minute >= $2 and minute < $3
             group by country, city"
        } else {
            // '' rather than the column, so the country-series index answers alone.
            "select country, ''::text, sum(count)::int8 from rollups
             where service = $1 and city = '' and country = any($4) and minute >= $2 and minute < $3
             group by country"
        };
        let rows: Vec<(String, String, i64)> = sqlx::query_as(sql)
            .bind(service)
            .bind(from)
            .bind(to)
            .bind(region_countries(country))
            .fetch_all(&self.pool)
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
        let (countries, cities): (Vec<&str>, Vec<&str>) = regions
            .iter()
            .map(|(country, city)| (country.as_str(), city.as_str()))
            .unzip();
        let rows: Vec<(String, String, DateTime<Utc>, f64)> = sqlx::query_as(
            "select e.country, e.city, e.quarter, e.expected
             from unnest($2::text[], $3::text[]) as r(country, city)
             join expectations_quarter e
               on e.service = $1 and e.country = r.country and e.city = r.city
                  and e.quarter >= $4 and e.quarter < $5",
        )
        .bind(service)
        .bind(countries)
        .bind(cities)
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    async fn expectations(
        &self,
        series: &SeriesKey,
        range: TimeRange,
    ) -> Result<Vec<QuarterExpectation>, StoreError> {
        let (service, country, city) = series.parts();
        let TimeRange { from, to } = range;
        let rows: Vec<(DateTime<Utc>, f64)> = sqlx::query_as(
            "select quarter, expected from expectations_quarter
             where service = $1 and country = coalesce($2::text, '') and city = coalesce($3::text, '')
               and quarter >= $4 and quarter < $5
             order by quarter",
        )
        .bind(service)
        .bind(country)
        .bind(city)
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    async fn incidents(&self, query: &IncidentQuery) -> Result<Vec<Incident>, StoreError> {
        let mut select = QueryBuilder::new(format!(
            "select {INCIDENT_COLUMNS}, {INCIDENT_ADMIN_COLUMNS} from incidents where true"
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
            select.push(" and started_at >= ").push_bind(since);
        }
        if let Some((started_at, id)) = query.after {
            select
                .push(" and (started_at, id) < (")
                .push_bind(started_at)
                .push(", ")
                .push_bind(id)
                .push(")");
        }
        select
            .push(" order by started_at desc, id desc limit ")
            .push_bind(i64::from(query.limit));
        let rows: Vec<IncidentRow> = select.build_query_as().fetch_all(&self.pool).await?;
        rows.into_iter().map(IncidentRow::into_incident).collect()
    }

    async fn incident(&self, id: Uuid) -> Result<Option<Incident>, StoreError> {
        let row: Option<IncidentRow> = sqlx::query_as(&format!(
            "select {INCIDENT_COLUMNS}, {INCIDENT_ADMIN_COLUMNS} from incidents where id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(IncidentRow::into_incident).transpose()
    }
}
