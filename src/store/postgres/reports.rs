//! [`ReportStore`] on Postgres: reports in: the batch insert, the reporter secret, reports by id and the upkeep of counts.

use super::*;
use crate::domain::retention::Cutoffs;
use crate::store::{Expired, ReportStore};

impl PostgresStore {
    /// The batch, into partitions [`partitions::ensure`] has made.
    async fn insert_into_partitions(
        &self,
        reports: &[NewReport],
        now: DateTime<Utc>,
    ) -> Result<Vec<Outcome>, StoreError> {
        let candidates = dedup_candidates(reports);
        let candidate_ids: HashSet<Uuid> = candidates.iter().map(|r| r.id).collect();
        // In dedup-key order: a writer inserting a key another writer's open transaction holds
        // waits for it, so two batches holding each other's keys in opposite orders would
        // deadlock (Postgres breaks that after a second by failing one of them).
        let mut ordered: Vec<&NewReport> = reports.iter().collect();
        ordered
            .sort_unstable_by_key(|r| (r.dedup_window_start, r.fingerprint.0, r.service.as_str()));
        let capped = reports.iter().any(|r| r.network.is_some());
        let table = RollupTable::for_batch(reports, now);
        let (counted, uncounted, previously_stored) = if capped {
            // A network quota is decided on what actually counted, so the un-counting of
            // what is over it follows the inserts in one transaction, and the rollups after.
            let mut tx = self.pool.begin().await?;
            let stored = insert_batch(&mut *tx, &ordered, &candidate_ids, None).await?;
            let (mut counted, mut uncounted) = split_stored(stored);
            let previously_stored =
                stored_outcomes(&mut *tx, &replays(reports, &counted, &uncounted)).await?;
            let over = cap_networks(&mut tx, &candidates, &counted).await?;
            counted.retain(|id| !over.contains(id));
            uncounted.extend(over);
            add_to_rollups(
                &mut tx,
                table,
                candidates
                    .iter()
                    .copied()
                    .filter(|r| counted.contains(&r.id)),
            )
            .await?;
            tx.commit().await?;
            (counted, uncounted, previously_stored)
        } else {
            // No quota: the whole batch, rollups included, is one statement, so one implicit
            // transaction and one round trip (six, as separate statements, left the writer
            // waiting on the service a quarter of the time).
            let stored = insert_batch(&self.pool, &ordered, &candidate_ids, Some(table)).await?;
            let (counted, uncounted) = split_stored(stored);
            // Committed by now: a conflicting insert waits for the other transaction to end.
            let previously_stored =
                stored_outcomes(&self.pool, &replays(reports, &counted, &uncounted)).await?;
            (counted, uncounted, previously_stored)
        };
        Ok(outcomes(reports, &counted, &uncounted, &previously_stored))
    }
}

#[async_trait]
impl ReportStore for PostgresStore {
    async fn reporter_secret(
        &self,
        day: NaiveDate,
        candidate: [u8; 32],
    ) -> Result<[u8; 32], StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("insert into reporter_secrets (day, secret) values ($1, $2) on conflict (day) do nothing")
            .bind(day)
            .bind(&candidate[..])
            .execute(&mut *tx)
            .await?;
        let secret: Vec<u8> =
            sqlx::query_scalar("select secret from reporter_secrets where day = $1")
                .bind(day)
                .fetch_one(&mut *tx)
                .await?;
        sqlx::query("delete from reporter_secrets where day < $1::date - 1")
            .bind(day)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        secret.try_into().map_err(|_| {
            StoreError::Unavailable("stored reporter secret has the wrong length".into())
        })
    }

    async fn settle_rollups(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        settle_rollups(&self.pool, before).await
    }

    async fn insert_reports(
        &self,
        reports: &[NewReport],
        now: DateTime<Utc>,
    ) -> Result<Vec<Outcome>, StoreError> {
        let days = partitions::days_of(reports);
        partitions::ensure(&self.pool, &self.days, &days).await?;
        let mut attempts = 0;
        loop {
            attempts += 1;
            match self.insert_into_partitions(reports, now).await {
                // Another replica's retention dropped a day this process knew: make it again.
                Err(error) if partitions::is_missing_partition(&error) && attempts < 3 => {
                    self.days.forget();
                    partitions::ensure(&self.pool, &self.days, &days).await?;
                }
                // A retry raced its original, now committed: run again, it is a replay.
                Err(error) if is_id_claimed_meanwhile(&error) && attempts < 3 => {}
                answer => return answer,
            }
        }
    }

    async fn import_reports(
        &self,
        reports: &[NewReport],
        hints: &ImportHints,
        now: DateTime<Utc>,
    ) -> Result<Vec<Outcome>, StoreError> {
        self.import_batch(reports, hints, now).await
    }

    async fn prepare_days(&self, days: &[NaiveDate]) -> Result<u32, StoreError> {
        partitions::ensure(&self.pool, &self.days, &days.iter().copied().collect()).await
    }

    async fn apply_retention(&self, cutoffs: &Cutoffs) -> Result<Option<Expired>, StoreError> {
        partitions::apply_retention(&self.pool, &self.days, cutoffs).await
    }

    async fn report(&self, id: Uuid) -> Result<Option<StoredReport>, StoreError> {
        let row: Option<(
            Uuid,
            DateTime<Utc>,
            String,
            String,
            Option<String>,
            String,
            bool,
        )> = sqlx::query_as(
            // The id's window names the partition (which indexes no id: a scan of one day).
            "select r.id, r.received_at, r.service, r.country, r.city, r.problem, r.counted
             from report_ids i join reports r on r.dedup_window = i.dedup_window and r.id = i.id
             where i.id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(
            |(id, received_at, service, country, city, problem, counted)| StoredReport {
                id,
                received_at,
                service,
                country,
                city,
                problem,
                counted,
            },
        ))
    }

    async fn stored_ids(&self, ids: &[Uuid]) -> Result<HashSet<Uuid>, StoreError> {
        let mut found = HashSet::with_capacity(ids.len());
        for chunk in ids.chunks(50_000) {
            let rows: Vec<Uuid> =
                sqlx::query_scalar("select id from report_ids where id = any($1)")
                    .bind(chunk)
                    .fetch_all(&self.pool)
                    .await?;
            found.extend(rows);
        }
        Ok(found)
    }

    async fn report_count(&self) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar(sql::REPORT_COUNT)
            .fetch_one(&self.pool)
            .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn forget_network_counts(&self, before: DateTime<Utc>) -> Result<(), StoreError> {
        sqlx::query(sql::FORGET_NETWORK_COUNTS)
            .bind(before)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
