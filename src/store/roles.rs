//! The store's role traits, each the methods one part of the service needs, and [`Store`],
//! all of them together.

use std::collections::HashSet;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use uuid::Uuid;

use super::{
    Attempt, Checkpoint, CountBucket, Delivery, DetectionWrite, Expectation, Expired, ImportHints,
    IncidentAction, IncidentQuery, Leadership, Listener, MinuteRollups, NewReport, Outcome,
    ProblemCount, QuarterExpectation, RegionCount, RegionExpectation, RegionsRows, Replication,
    Rollup, SeriesKey, ServiceRecord, StoreError, StoredReport, TimeRange,
};
use crate::domain::incidents::{CityCount, Incident, Scope, Status};

use crate::domain::retention::Cutoffs;

/// The open incidents a regions answer looks at, newest first
/// ([`ReadStore::region_counts_expected`]).
pub const REGIONS_OPEN_INCIDENTS: u32 = 10_000;

/// Durable storage of reports, counts, incidents and what replicas share, by role: a caller
/// that needs one role takes that trait, one that needs several takes `dyn Store`.
pub trait Store:
    ReportStore + ReadStore + DetectionStore + OutboxStore + CatalogStore + CoordinationStore
{
}

impl<T> Store for T where
    T: ReportStore + ReadStore + DetectionStore + OutboxStore + CatalogStore + CoordinationStore
{
}

/// Reports in: the batch writer's inserts, the reporter secret, reports read back by id,
/// and the upkeep of the minute counts and network counts they add to.
#[async_trait]
pub trait ReportStore: Send + Sync + 'static {
    /// Returns the fingerprint secret of `day`, storing `candidate` if the day has none yet,
    /// and deletes secrets more than a day older than `day`.
    async fn reporter_secret(
        &self,
        day: NaiveDate,
        candidate: [u8; 32],
    ) -> Result<[u8; 32], StoreError>;

    /// Stores a batch in one transaction: inserts new reports, claims dedup keys and adds the
    /// counted ones to the minute rollups. Ids must be unique within the batch; the outcomes
    /// come back in the batch's order. `now` is when the batch commits: on Postgres, counts of
    /// minutes settled by then ([`super::settled_before`]) go where those minutes went.
    async fn insert_reports(
        &self,
        reports: &[NewReport],
        now: DateTime<Utc>,
    ) -> Result<Vec<Outcome>, StoreError>;

    /// Stores a batch of history exactly as [`ReportStore::insert_reports`] would (the same
    /// outcomes, dedup and counts), by the fastest path the backend has: on Postgres a `COPY`
    /// after checking ids and dedup keys, falling back to the insert when another writer gets
    /// in between. For `import`; a batch with network quotas takes the insert.
    /// `hints` is what the import learnt from its earlier batches; a backend may use it to
    /// skip lookups, never to decide differently.
    async fn import_reports(
        &self,
        reports: &[NewReport],
        _hints: &ImportHints,
        now: DateTime<Utc>,
    ) -> Result<Vec<Outcome>, StoreError> {
        self.insert_reports(reports, now).await
    }

    /// Moves the minute counts of minutes before `before` out of the table ingest adds to
    /// into the one reads are indexed for; answers the rows moved. A late count for a moved
    /// minute is added to its row there. `serve`'s upkeep does this every few seconds with
    /// [`super::settled_before`]; no count a read sees changes. SQLite keeps one table: nothing moves.
    async fn settle_rollups(&self, before: DateTime<Utc>) -> Result<u64, StoreError>;

    /// Makes sure reports and minute counts of `days` can be stored (Postgres: makes the
    /// missing day partitions); answers how many partitions it made. Inserts do this for the
    /// days of their batch; upkeep does it ahead for the live days.
    async fn prepare_days(&self, days: &[NaiveDate]) -> Result<u32, StoreError>;

    /// Deletes what is past `cutoffs`: reports (with their ids) and minute counts by whole
    /// days (Postgres drops their partitions), and coarse counts before their cutoff. `None`
    /// when another replica is applying retention right now.
    async fn apply_retention(&self, cutoffs: &Cutoffs) -> Result<Option<Expired>, StoreError>;

    /// Reads one report by id.
    async fn report(&self, id: Uuid) -> Result<Option<StoredReport>, StoreError>;

    /// Which of `ids` are stored.
    async fn stored_ids(&self, ids: &[Uuid]) -> Result<HashSet<Uuid>, StoreError>;

    /// How many reports are stored in all.
    async fn report_count(&self) -> Result<u64, StoreError>;

    /// Deletes the per-network counts of minutes before `before` (they only cap the current minute).
    async fn forget_network_counts(&self, before: DateTime<Utc>) -> Result<(), StoreError>;
}

/// What the read side asks: counts, regions, expectations, top cities, problem mixes and
/// incidents.
#[async_trait]
pub trait ReadStore: Send + Sync + 'static {
    /// Where this store stands in replication (for reading from a replica while it is fresh).
    async fn replication(&self) -> Result<Replication, StoreError> {
        Ok(Replication::Alone)
    }

    /// The minute rollups of one service in `[from, to)`, ordered by minute, country, city.
    async fn rollups(
        &self,
        service: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<Rollup>, StoreError>;

    /// The cities of one service (in one country, or all) with most counted reports in
    /// `[from, to)`, most first (ties by country and name), at most `limit`.
    async fn top_cities(
        &self,
        series: &SeriesKey,
        range: TimeRange,
        limit: u32,
    ) -> Result<Vec<CityCount>, StoreError>;

    /// Counted reports per problem kind of one series (a city needs its country) in
    /// `[from, to)`, ordered by kind.
    async fn problem_counts(
        &self,
        series: &SeriesKey,
        range: TimeRange,
    ) -> Result<Vec<ProblemCount>, StoreError>;

    /// Counted reports of one series (the service worldwide, a country, or a city of a
    /// country) in `[from, to)`, summed into buckets of `bucket_seconds` aligned to the unix
    /// epoch; only non-empty buckets, in order.
    async fn counts(
        &self,
        series: &SeriesKey,
        range: TimeRange,
        bucket_seconds: i64,
    ) -> Result<Vec<CountBucket>, StoreError>;

    /// Counted reports per region of one service in `[from, to)`: per country (their totals)
    /// or, with `cities`, per city (of `country` if given); as (country, city, count), city
    /// empty for countries.
    async fn region_counts(
        &self,
        service: &str,
        country: Option<&str>,
        cities: bool,
        range: TimeRange,
    ) -> Result<Vec<RegionCount>, StoreError>;

    /// The quarter-hour expectations of the given regions, as (country, city) with city empty
    /// for a country, with quarters in `[from, to)`: (country, city, quarter, expected).
    ///
    /// By region rather than by level, so each is a primary-key range (no index beyond the key
    /// slows the detector's writes).
    async fn region_expectations(
        &self,
        service: &str,
        regions: &[(String, String)],
        range: TimeRange,
    ) -> Result<Vec<RegionExpectation>, StoreError>;

    /// A regions answer's reads: [`Self::region_counts`] over `range`, the
    /// [`Self::region_expectations`] of the regions counted over `quarters`, and the open
    /// incidents of the level (of the 10,000 newest open incidents of `service`, within
    /// `country` if given, those of city scope with `cities`, else of country scope). A
    /// backend may answer them at once (Postgres: in one statement).
    async fn region_counts_expected(
        &self,
        service: &str,
        country: Option<&str>,
        cities: bool,
        range: TimeRange,
        quarters: TimeRange,
    ) -> Result<RegionsRows, StoreError> {
        let counts = self.region_counts(service, country, cities, range).await?;
        let keys: Vec<(String, String)> = counts
            .iter()
            .map(|r| (r.country.clone(), r.city.clone()))
            .collect();
        let expected = self.region_expectations(service, &keys, quarters).await?;
        let scope = Scope::of_regions(cities);
        let open = self
            .incidents(&IncidentQuery {
                service: Some(service.to_owned()),
                country: country.map(str::to_owned),
                status: Some(Status::Open),
                limit: REGIONS_OPEN_INCIDENTS,
                ..IncidentQuery::default()
            })
            .await?
            .into_iter()
            .filter(|i| i.scope == scope)
            .map(|i| {
                (
                    i.country.unwrap_or_default(),
                    i.city.unwrap_or_default(),
                    i.id,
                )
            })
            .collect();
        Ok(RegionsRows {
            counts,
            expected,
            open,
        })
    }

    /// The stored quarter-hour expectations of one series with quarters in `[from, to)`, in order.
    async fn expectations(
        &self,
        series: &SeriesKey,
        range: TimeRange,
    ) -> Result<Vec<QuarterExpectation>, StoreError>;

    /// A counts answer's reads: [`Self::counts`] of `series` over `range` and its
    /// [`Self::expectations`] over `quarters`. A backend may answer both at once (Postgres: in
    /// one statement, one round trip instead of two).
    async fn counts_expected(
        &self,
        series: &SeriesKey,
        range: TimeRange,
        bucket_seconds: i64,
        quarters: TimeRange,
    ) -> Result<(Vec<CountBucket>, Vec<QuarterExpectation>), StoreError> {
        let counts = self.counts(series, range, bucket_seconds).await?;
        Ok((counts, self.expectations(series, quarters).await?))
    }

    /// Lists incidents, newest first.
    async fn incidents(&self, query: &IncidentQuery) -> Result<Vec<Incident>, StoreError>;

    /// Reads one incident by id.
    async fn incident(&self, id: Uuid) -> Result<Option<Incident>, StoreError>;
}

/// The detector's log: the rollups it steps over, its checkpoint and snapshot, and the
/// incidents and expectations it writes.
#[async_trait]
pub trait DetectionStore: Send + Sync + 'static {
    /// The first minute with any rollup, if any.
    async fn first_rollup_minute(&self) -> Result<Option<DateTime<Utc>>, StoreError>;

    /// Every service's rollups in `[from, to)`.
    async fn minute_counts(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<MinuteRollups, StoreError>;

    /// Deletes the stored expectations of quarters in `[from, to)`; returns how many. For
    /// `redetect`, which recomputes a whole range and then stores it with
    /// [`DetectionStore::insert_recomputed_expectations`].
    async fn clear_expectations(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<u64, StoreError>;

    /// Stores expectations of quarters just cleared with [`DetectionStore::clear_expectations`], in
    /// one transaction: a bulk load (COPY on Postgres) rather than an upsert per row, so one
    /// already stored is an error.
    async fn insert_recomputed_expectations(
        &self,
        expectations: &[Expectation],
    ) -> Result<(), StoreError>;

    /// Where the detector stands, if it has ever run.
    async fn checkpoint(&self) -> Result<Option<Checkpoint>, StoreError>;

    /// Stores detector output in one transaction.
    async fn write_detection(&self, write: &DetectionWrite<'_>) -> Result<(), StoreError>;
}

/// Webhook deliveries queued with the detector's changes, claimed and recorded by the
/// deliverer.
#[async_trait]
pub trait OutboxStore: Send + Sync + 'static {
    /// Claims up to `limit` pending webhook deliveries to `endpoints` that are due at `now`,
    /// oldest due first, leasing each until `lease_until` (when it is due again unless an
    /// attempt is recorded first). Processes claiming at once never get the same row.
    async fn claim_webhook_deliveries(
        &self,
        endpoints: &[String],
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<Delivery>, StoreError>;

    /// Records an attempt made at `at` at a pending delivery (a finished one is left as it is).
    async fn record_webhook_attempt(
        &self,
        event_id: Uuid,
        endpoint: &str,
        at: DateTime<Utc>,
        attempt: &Attempt,
    ) -> Result<(), StoreError>;

    /// Gives up (at `now`) on the pending deliveries enqueued before `give_up_before`, and
    /// deletes the finished ones that finished before `forget_before`; returns how many it
    /// gave up on.
    async fn expire_webhook_deliveries(
        &self,
        give_up_before: DateTime<Utc>,
        forget_before: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError>;

    /// Webhook deliveries, oldest event first (for tests and operators), at most `limit`.
    async fn webhook_deliveries(&self, limit: u32) -> Result<Vec<Delivery>, StoreError>;

    /// How many webhook deliveries are pending.
    async fn pending_webhook_deliveries(&self) -> Result<u64, StoreError>;
}

/// The service catalog and an admin's actions on incidents.
#[async_trait]
pub trait CatalogStore: Send + Sync + 'static {
    /// Adds the services that are not stored yet (enabled, after the stored ones); stored ones
    /// keep their name and state.
    async fn seed_services(
        &self,
        services: &[(String, String)],
        at: DateTime<Utc>,
    ) -> Result<(), StoreError>;

    /// The stored catalog, in catalog order (enabled and disabled).
    async fn services(&self) -> Result<Vec<ServiceRecord>, StoreError>;

    /// Stores a service's name and state at `at`; true when it was not stored before.
    async fn put_service(
        &self,
        service: &ServiceRecord,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError>;

    /// Annotates or resolves an incident at `at`; the incident as it now stands, or None if
    /// there is no such incident.
    async fn act_on_incident(
        &self,
        id: Uuid,
        action: &IncidentAction<'_>,
        at: DateTime<Utc>,
    ) -> Result<Option<Incident>, StoreError>;
}

/// Schema, health and what replicas share: migrations, the ping, live events across
/// processes and the detector leader's lock.
#[async_trait]
pub trait CoordinationStore: Send + Sync + 'static {
    /// Applies pending migrations.
    async fn migrate(&self) -> Result<(), StoreError>;

    /// Checks that the database answers.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Publishes `payload` to every process listening on this database: true when sent that
    /// way (Postgres `NOTIFY`), false when the backend has no such channel (SQLite).
    async fn notify(&self, payload: &str) -> Result<bool, StoreError>;

    /// Subscribes to every payload any process publishes from now on (Postgres `LISTEN`, on a
    /// connection of its own); None when the backend has no such channel. The store spawns
    /// nothing: the caller reads the subscription in a task it owns.
    async fn listen(&self) -> Result<Option<Box<dyn Listener>>, StoreError>;

    /// Tries to become the one process that runs the detector; None while another holds it.
    async fn try_lead_detector(&self) -> Result<Option<Box<dyn Leadership>>, StoreError>;
}
