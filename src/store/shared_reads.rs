//! The [`ReadStore`](super::ReadStore) methods both backends run the same way: each binds its
//! own dialect's statements ([`sql::ReadSql`](super::sql::ReadSql), or a statement generic over
//! the backend) and maps the rows through [`steps::fetch_all`](super::steps::fetch_all). A
//! backend writes `read_store!` with its store type, its `sqlx` database, the pool reads use
//! and its statements, and adds the methods that differ (`rollups`, `region_expectations`).
//!
//! A macro rather than a generic impl: the trait's futures must be `Send` for every backend,
//! which sqlx's executor bounds do not let a generic body prove.

macro_rules! read_store {
    ($store:ty, $db:ty, $pool:ident, $reads:expr, { $($own:tt)* }) => {
        #[async_trait]
        impl ReadStore for $store {
            $($own)*

            async fn top_cities(
                &self,
                series: &SeriesKey,
                range: TimeRange,
                limit: u32,
            ) -> Result<Vec<CityCount>, StoreError> {
                steps::fetch_all($reads.top_cities(series, range, limit), &self.$pool).await
            }

            async fn problem_counts(
                &self,
                series: &SeriesKey,
                range: TimeRange,
            ) -> Result<Vec<ProblemCount>, StoreError> {
                let query = sql::problem_counts::<$db, ProblemCount>(series, range);
                steps::fetch_all(query, &self.$pool).await
            }

            async fn counts(
                &self,
                series: &SeriesKey,
                range: TimeRange,
                bucket_seconds: i64,
            ) -> Result<Vec<CountBucket>, StoreError> {
                let rows = $reads
                    .counts(series, range, bucket_seconds)
                    .fetch_all(&self.$pool)
                    .await?;
                Ok($crate::store::rows::buckets(rows, bucket_seconds))
            }

            async fn region_counts(
                &self,
                service: &str,
                country: Option<&str>,
                cities: bool,
                range: TimeRange,
            ) -> Result<Vec<RegionCount>, StoreError> {
                let query = $reads.region_counts(service, country, cities, range);
                steps::fetch_all(query, &self.$pool).await
            }

            async fn expectations(
                &self,
                series: &SeriesKey,
                range: TimeRange,
            ) -> Result<Vec<QuarterExpectation>, StoreError> {
                let rows = sql::expectation_days::<$db>(series, range)
                    .fetch_all(&self.$pool)
                    .await?;
                $crate::store::expectations::expand_series(rows, range)
            }

            async fn incidents(&self, query: &IncidentQuery) -> Result<Vec<Incident>, StoreError> {
                let rows: Vec<IncidentRow> = sql::incidents::<$db>(query)
                    .build_query_as()
                    .fetch_all(&self.$pool)
                    .await?;
                rows::incidents(rows)
            }

            async fn incident(&self, id: Uuid) -> Result<Option<Incident>, StoreError> {
                let row: Option<IncidentRow> = sqlx::query_as(sql::incident_by_id())
                    .bind(id)
                    .fetch_optional(&self.$pool)
                    .await?;
                row.map(Incident::try_from).transpose()
            }
        }
    };
}
