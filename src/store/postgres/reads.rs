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
        let rows: Vec<Rollup> = sqlx::query_as(
            "select minute, country, city, count from rollups
             where service = $1 and minute >= $2 and minute < $3
             order by minute, country, city",
        )
        .bind(service)
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
        .await?;
        Ok(sum_adjacent(
            rows,
            |a, b| (a.minute, &a.country, &a.city) == (b.minute, &b.country, &b.city),
            |r| &mut r.count,
        ))
    }

    async fn top_cities(
        &self,
        series: &SeriesKey,
        range: TimeRange,
        limit: u32,
    ) -> Result<Vec<CityCount>, StoreError> {
        let (service, country, _) = series.parts();
        let TimeRange { from, to } = range;
        let rows: Vec<RegionCount> = sqlx::query_as(
            "select country, city, sum(count)::int8 as count from rollups
             where service = $1 and ($2::text is null or country = $2) and city <> ''
               and minute >= $3 and minute < $4
             group by country, city
             order by count desc, country, city
             limit $5",
        )
        .bind(service)
        .bind(country)
        .bind(from)
        .bind(to)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows::into_all(rows))
    }

    async fn problem_counts(
        &self,
        series: &SeriesKey,
        range: TimeRange,
    ) -> Result<Vec<ProblemCount>, StoreError> {
        Ok(sql::problem_counts::<Postgres, _>(series, range)
            .fetch_all(&self.pool)
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
        // One statement each, with literal city predicates, so every plan of each prepared
        // statement can use its index: `($2 is null or country = $2)` or `city = $3` cannot
        // be index conditions of a generic plan (the partial country-series index needs
        // `city = ''` in the text). A city's series is a primary-key range; a country's an
        // index-only range of the country-series index; the world's that index walked
        // country by country.
        let query = match (country, city) {
            (Some(country), Some(city)) => sqlx::query_as(
                "select (extract(epoch from minute)::int8 / $6) * $6 as bucket, sum(count)::int8 as count
                 from rollups
                 where service = $1 and country = $2 and city = $3 and minute >= $4 and minute < $5
                 group by bucket
                 order by bucket",
            )
            .bind(service)
            .bind(country)
            .bind(city),
            (Some(country), None) => sqlx::query_as(
                "select (extract(epoch from minute)::int8 / $5) * $5 as bucket, sum(count)::int8 as count
                 from rollups
                 where service = $1 and country = $2 and city = '' and minute >= $3 and minute < $4
                 group by bucket
                 order by bucket",
            )
            .bind(service)
            .bind(country),
            (None, _) => sqlx::query_as(
                "select (extract(epoch from minute)::int8 / $5) * $5 as bucket, sum(count)::int8 as count
                 from rollups
                 where service = $1 and city = '' and country = any($2) and minute >= $3 and minute < $4
                 group by bucket
                 order by bucket",
            )
            .bind(service)
            .bind(region_countries(None)),
        };
        let rows: Vec<BucketRow> = query
            .bind(from)
            .bind(to)
            .bind(bucket_seconds)
            .fetch_all(&self.pool)
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
        // Literal city predicates, so the partial region indexes match any plan of the
        // prepared statement; the country list keeps the city index a range scan per country.
        let statement = if cities {
            "select country, city, sum(count)::int8 as count from rollups
             where service = $1 and city <> '' and country = any($4) and minute >= $2 and minute < $3
             group by country, city"
        } else {
            // '' rather than the column, so the country-series index answers alone.
            "select country, ''::text as city, sum(count)::int8 as count from rollups
             where service = $1 and city = '' and country = any($4) and minute >= $2 and minute < $3
             group by country"
        };
        Ok(sqlx::query_as(statement)
            .bind(service)
            .bind(from)
            .bind(to)
            .bind(region_countries(country))
            .fetch_all(&self.pool)
            .await?)
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
        Ok(sqlx::query_as(
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
        .await?)
    }

    async fn expectations(
        &self,
        series: &SeriesKey,
        range: TimeRange,
    ) -> Result<Vec<QuarterExpectation>, StoreError> {
        Ok(sql::expectations::<Postgres, _>(series, range)
            .fetch_all(&self.pool)
            .await?)
    }

    async fn incidents(&self, query: &IncidentQuery) -> Result<Vec<Incident>, StoreError> {
        let rows: Vec<IncidentRow> = sql::incidents::<Postgres>(query)
            .build_query_as()
            .fetch_all(&self.pool)
            .await?;
        rows::incidents(rows)
    }

    async fn incident(&self, id: Uuid) -> Result<Option<Incident>, StoreError> {
        let row: Option<IncidentRow> = sqlx::query_as(sql::incident_by_id())
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(Incident::try_from).transpose()
    }
}
