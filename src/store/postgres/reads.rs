//! [`ReadStore`] on Postgres: the read side: counts, regions, expectations, top cities, problem mixes, incidents.

use std::marker::PhantomData;

use super::*;
use crate::store::ReadStore;

/// The read statements in Postgres' dialect; [`sql::ReadSql`] says how each is bound.
///
/// `counts`: the global series is the sum of the country totals; a country's is its total row.
/// One statement each, with literal city predicates, so every plan of each prepared statement
/// can use its index: `($2 is null or country = $2)` or `city = $3` cannot be index conditions
/// of a generic plan (the partial country-series index needs `city = ''` in the text). A
/// city's series is a primary-key range; a country's an index-only range of the country-series
/// index; the world's that index walked country by country.
///
/// `region_counts`: literal city predicates, so the partial region indexes match any plan of
/// the prepared statement; the country list keeps the city index a range scan per country.
const READS: sql::ReadSql<Postgres> = sql::ReadSql {
    rollups: "select minute, country, city, count from rollups
         where service = $1 and minute >= $2 and minute < $3
         order by minute, country, city",
    top_cities: "select country, city, sum(count)::int8 as count from rollups
         where service = $1 and ($2::text is null or country = $2) and city <> ''
           and minute >= $3 and minute < $4
         group by country, city
         order by count desc, country, city
         limit $5",
    city_counts:
        "select (extract(epoch from minute)::int8 / $6) * $6 as bucket, sum(count)::int8 as count
         from rollups
         where service = $1 and country = $2 and city = $3 and minute >= $4 and minute < $5
         group by bucket
         order by bucket",
    country_counts:
        "select (extract(epoch from minute)::int8 / $5) * $5 as bucket, sum(count)::int8 as count
         from rollups
         where service = $1 and country = $2 and city = '' and minute >= $3 and minute < $4
         group by bucket
         order by bucket",
    world_counts:
        "select (extract(epoch from minute)::int8 / $5) * $5 as bucket, sum(count)::int8 as count
         from rollups
         where service = $1 and city = '' and country = any($2) and minute >= $3 and minute < $4
         group by bucket
         order by bucket",
    city_totals: "select country, city, sum(count)::int8 as count from rollups
         where service = $1 and city <> '' and country = any($4) and minute >= $2 and minute < $3
         group by country, city",
    // '' rather than the column, so the country-series index answers alone.
    country_totals: "select country, ''::text as city, sum(count)::int8 as count from rollups
         where service = $1 and city = '' and country = any($4) and minute >= $2 and minute < $3
         group by country",
    backend: PhantomData,
};

read_store!(PostgresStore, Postgres, pool, READS, {
    async fn rollups(
        &self,
        service: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<Rollup>, StoreError> {
        let query = READS.rollups(service, TimeRange::new(from, to));
        Ok(sum_adjacent(
            steps::fetch_all(query, &self.pool).await?,
            |a: &Rollup, b| (a.minute, &a.country, &a.city) == (b.minute, &b.country, &b.city),
            |r| &mut r.count,
        ))
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
});
