//! [`crate::store::ReportStore::import_reports`] on Postgres: a batch of history by `COPY`,
//! decided first as the live statement would decide it, so the outcomes and counts are the same.

use super::*;

/// Why the COPY path gave a batch back to [`super::INSERT_BATCH`]'s: another writer stored one
/// of its ids or dedup keys after the checks (the batch stored nothing), or the two waited on
/// each other.
fn is_concurrent_write(error: &StoreError) -> bool {
    matches!(error, StoreError::Query(sqlx::Error::Database(db))
        if matches!(db.code().as_deref(), Some("23505" | "40P01")))
}

/// Rows for `COPY … (FORMAT binary)`: values go in as Postgres stores them, so the server
/// parses no text (uuids, times) and nothing needs escaping. Written here because the format
/// is a few lines (a header, then per row a field count and length-prefixed values) and the
/// crates that write it come with another Postgres driver.
struct BinaryRows(Vec<u8>);

impl BinaryRows {
    fn with_capacity(bytes: usize) -> BinaryRows {
        let mut buffer = Vec::with_capacity(bytes + 21);
        buffer.extend_from_slice(COPY_SIGNATURE);
        buffer.extend_from_slice(&0i32.to_be_bytes()); // flags: no oids
        buffer.extend_from_slice(&0i32.to_be_bytes()); // header extension: none
        BinaryRows(buffer)
    }

    fn row(&mut self, fields: i16) -> &mut Self {
        self.0.extend_from_slice(&fields.to_be_bytes());
        self
    }

    fn value(&mut self, bytes: &[u8]) -> &mut Self {
        // Every value here is far below 2 GiB (a city name at most).
        self.0
            .extend_from_slice(&i32::try_from(bytes.len()).unwrap_or(i32::MAX).to_be_bytes());
        self.0.extend_from_slice(bytes);
        self
    }

    fn uuid(&mut self, value: Uuid) -> &mut Self {
        self.value(value.as_bytes())
    }

    fn time(&mut self, value: DateTime<Utc>) -> &mut Self {
        self.value(&(value.timestamp_micros() - POSTGRES_EPOCH_MICROS).to_be_bytes())
    }

    fn text(&mut self, value: Option<&str>) -> &mut Self {
        match value {
            Some(text) => self.value(text.as_bytes()),
            None => {
                self.0.extend_from_slice(&(-1i32).to_be_bytes());
                self
            }
        }
    }

    fn bool(&mut self, value: bool) -> &mut Self {
        self.value(&[u8::from(value)])
    }

    /// The stream with its trailer.
    fn finish(mut self) -> Vec<u8> {
        self.0.extend_from_slice(&(-1i16).to_be_bytes());
        self.0
    }
}

/// COPYs `rows` with `statement` (binary format).
async fn copy_rows(
    connection: &mut PgConnection,
    statement: &str,
    rows: BinaryRows,
) -> Result<(), StoreError> {
    let mut copy = connection.copy_in_raw(statement).await?;
    copy.send(rows.finish()).await?;
    copy.finish().await?;
    Ok(())
}

/// The ids of `candidates` whose dedup key a stored report already counted for.
async fn taken_keys(
    tx: &mut Transaction<'_, Postgres>,
    candidates: &[&NewReport],
) -> Result<HashSet<Uuid>, StoreError> {
    let windows = || candidates.iter().map(|r| r.dedup_window_start);
    let (Some(first), Some(last)) = (windows().min(), windows().max()) else {
        return Ok(HashSet::new());
    };
    let (windows, fingerprints, services) = dedup_key_arrays(candidates.iter().copied());
    let positions: Vec<i64> = sqlx::query_scalar(
        // One probe of the dedup key's index per key (the lateral limit keeps the planner
        // from scanning a partition it has no statistics of yet).
        "select k.position
         from unnest($1::timestamptz[], $2::uuid[], $3::text[])
              with ordinality as k(dedup_window, fingerprint, service, position)
         cross join lateral (
             select 1 from reports r
             where r.dedup_window = k.dedup_window and r.fingerprint = k.fingerprint
               and r.service = k.service and r.counted
               and r.dedup_window >= $4 and r.dedup_window <= $5
             limit 1
         ) taken",
    )
    .bind(windows)
    .bind(fingerprints)
    .bind(services)
    .bind(first)
    .bind(last)
    .fetch_all(&mut **tx)
    .await?;
    Ok(positions
        .into_iter()
        .filter_map(|p| candidates.get(usize::try_from(p - 1).ok()?))
        .map(|r| r.id)
        .collect())
}

/// How a COPY attempt decides which reports are new and which count.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Decide {
    /// Assume no id is stored and no dedup key counted yet beyond what the import's hints say
    /// (a first import): the first report per other key in the batch counts. `report_ids`'
    /// key and the counted-once index check the assumption as the rows go in, and a batch
    /// that breaks it fails whole (23505) and is run again `Checked`. Saves the two lookups
    /// (~40 % of a batch's time) where they would find nothing.
    Optimistic,
    /// Look the ids and dedup keys up first, as the live statement does.
    Checked,
}

impl PostgresStore {
    /// The COPY path: in one transaction, the ids already stored (replays) and the dedup keys
    /// already counted (when `Checked`), then the new reports and their ids by COPY and their
    /// counts added as a batch of the settled minutes adds them. `Err` with
    /// [`is_concurrent_write`] when an id or counted key was there after all (`Optimistic`) or
    /// another writer got in between.
    async fn copy_batch(
        &self,
        reports: &[NewReport],
        hints: &ImportHints,
        now: DateTime<Utc>,
        decide: Decide,
    ) -> Result<Vec<Outcome>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let previously_stored = match decide {
            Decide::Optimistic => HashMap::new(),
            Decide::Checked => {
                let ids: Vec<Uuid> = reports.iter().map(|r| r.id).collect();
                stored_outcomes(&mut *tx, &ids).await?
            }
        };
        let fresh: Vec<&NewReport> = reports
            .iter()
            .filter(|r| !previously_stored.contains_key(&r.id))
            .collect();
        // A candidate whose key an earlier batch of this import left counted cannot count.
        let candidates: Vec<&NewReport> = dedup_candidates(reports)
            .into_iter()
            .filter(|r| !previously_stored.contains_key(&r.id) && !hints.is_counted(r))
            .collect();
        let taken = match decide {
            Decide::Optimistic => HashSet::new(),
            Decide::Checked => taken_keys(&mut tx, &candidates).await?,
        };
        let counted: HashSet<Uuid> = candidates
            .iter()
            .map(|r| r.id)
            .filter(|id| !taken.contains(id))
            .collect();
        let uncounted: HashSet<Uuid> = fresh
            .iter()
            .map(|r| r.id)
            .filter(|id| !counted.contains(id))
            .collect();
        if !fresh.is_empty() {
            let mut report_rows = BinaryRows::with_capacity(fresh.len() * 160);
            let mut id_rows = BinaryRows::with_capacity(fresh.len() * 39);
            for r in &fresh {
                let was_counted = counted.contains(&r.id);
                report_rows
                    .row(9)
                    .uuid(r.id)
                    .time(r.received_at)
                    .text(Some(r.service.as_str()))
                    .text(Some(r.country.as_str()))
                    .text(r.city)
                    .text(Some(r.problem.as_str()))
                    .uuid(Uuid::from_bytes(r.fingerprint.0))
                    .time(r.dedup_window_start)
                    .bool(was_counted);
                id_rows
                    .row(3)
                    .uuid(r.id)
                    .time(r.dedup_window_start)
                    .bool(was_counted);
            }
            // The ids first: a batch of stored ids (a re-run) fails at its first row.
            copy_rows(
                &mut tx,
                "copy report_ids (id, dedup_window, counted) from stdin (format binary)",
                id_rows,
            )
            .await?;
            copy_rows(
                &mut tx,
                "copy reports (id, received_at, service, country, city, problem, fingerprint, dedup_window, counted) from stdin (format binary)",
                report_rows,
            )
            .await?;
            add_to_rollups(
                &mut tx,
                RollupTable::for_batch(reports, now),
                reports.iter().filter(|r| counted.contains(&r.id)),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(outcomes(reports, &counted, &uncounted, &previously_stored))
    }

    /// [`crate::store::ReportStore::import_reports`]: the COPY path, first optimistic, then
    /// checked when the batch holds stored ids or counted keys; the live statement's when the
    /// batch has network quotas or another writer got in between.
    pub(super) async fn import_batch(
        &self,
        reports: &[NewReport],
        hints: &ImportHints,
        now: DateTime<Utc>,
    ) -> Result<Vec<Outcome>, StoreError> {
        use crate::store::ReportStore;
        if reports.iter().any(|r| r.network.is_some()) {
            return self.insert_reports(reports, now).await;
        }
        partitions::ensure(&self.pool, &self.days, &partitions::days_of(reports)).await?;
        let first = if hints.expects_replays() {
            Decide::Checked
        } else {
            Decide::Optimistic
        };
        let answer = match self.copy_batch(reports, hints, now, first).await {
            Err(error) if first == Decide::Optimistic && is_concurrent_write(&error) => {
                self.copy_batch(reports, hints, now, Decide::Checked).await
            }
            answer => answer,
        };
        match answer {
            Err(error)
                if is_concurrent_write(&error) || partitions::is_missing_partition(&error) =>
            {
                self.insert_reports(reports, now).await
            }
            answer => answer,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn binary_copy_rows_are_postgres_binary_format() {
        let mut rows = BinaryRows::with_capacity(0);
        rows.row(4)
            .uuid(Uuid::from_u128(0x0102))
            .time("2000-01-01T00:00:01Z".parse().unwrap())
            .text(None)
            .text(Some("Lahore"))
            .row(1)
            .bool(true);
        let mut expected = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0".to_vec();
        expected.extend_from_slice(&[0, 4, 0, 0, 0, 16]);
        expected.extend_from_slice(&[0; 14]);
        expected.extend_from_slice(&[1, 2]);
        expected.extend_from_slice(&[0, 0, 0, 8, 0, 0, 0, 0, 0, 0x0f, 0x42, 0x40]); // 1,000,000 µs
        expected.extend_from_slice(&[0xff, 0xff, 0xff, 0xff]);
        expected.extend_from_slice(&[0, 0, 0, 6]);
        expected.extend_from_slice(b"Lahore");
        expected.extend_from_slice(&[0, 1, 0, 0, 0, 1, 1, 0xff, 0xff]);
        assert_eq!(rows.finish(), expected);
    }
}
