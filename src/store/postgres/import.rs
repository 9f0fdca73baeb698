//! [`crate::store::ReportStore::import_reports`] on Postgres: a batch of history by `COPY`,
//! decided first as the live statement would decide it, so the outcomes and counts are the same.

use std::fmt::Write as _;

use super::*;

/// Why the COPY path gave a batch back to [`super::INSERT_BATCH`]'s: another writer stored one
/// of its ids or dedup keys after the checks (the batch stored nothing), or the two waited on
/// each other.
fn is_concurrent_write(error: &StoreError) -> bool {
    matches!(error, StoreError::Query(sqlx::Error::Database(db))
        if matches!(db.code().as_deref(), Some("23505" | "40P01")))
}

/// Appends one text-format COPY field (tab-separated, `\N` for none), escaped.
fn field(line: &mut String, value: Option<&str>) {
    if !line.is_empty() {
        line.push('\t');
    }
    let Some(value) = value else {
        line.push_str("\\N");
        return;
    };
    for c in value.chars() {
        match c {
            '\\' => line.push_str("\\\\"),
            '\t' => line.push_str("\\t"),
            '\n' => line.push_str("\\n"),
            '\r' => line.push_str("\\r"),
            c => line.push(c),
        }
    }
}

/// COPYs `rows` (text format, one line each) with `statement`.
async fn copy_rows(
    connection: &mut PgConnection,
    statement: &str,
    rows: &str,
) -> Result<(), StoreError> {
    let mut copy = connection.copy_in_raw(statement).await?;
    copy.send(rows.as_bytes()).await?;
    copy.finish().await?;
    Ok(())
}

impl PostgresStore {
    /// The COPY path: in one transaction, the ids already stored (replays), the dedup keys
    /// already counted, then the new reports and their ids by COPY and their counts added
    /// as a batch of the settled minutes adds them. `Err` with [`is_concurrent_write`] when
    /// another writer got in between.
    async fn copy_batch(
        &self,
        reports: &[NewReport],
        now: DateTime<Utc>,
    ) -> Result<Vec<Outcome>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let ids: Vec<Uuid> = reports.iter().map(|r| r.id).collect();
        let previously_stored = stored_outcomes(&mut *tx, &ids).await?;
        let fresh: Vec<&NewReport> = reports
            .iter()
            .filter(|r| !previously_stored.contains_key(&r.id))
            .collect();
        let candidates: Vec<&NewReport> = dedup_candidates(reports)
            .into_iter()
            .filter(|r| !previously_stored.contains_key(&r.id))
            .collect();
        let windows = || candidates.iter().map(|r| r.dedup_window_start);
        let taken: HashSet<(DateTime<Utc>, Uuid, String)> = match (windows().min(), windows().max())
        {
            (Some(first), Some(last)) => {
                let rows: Vec<(DateTime<Utc>, Uuid, String)> = sqlx::query_as(
                    // One probe of the dedup key's index per key (the lateral limit keeps the
                    // planner from scanning a partition it has no statistics of yet).
                    "select k.dedup_window, k.fingerprint, k.service
                     from unnest($1::timestamptz[], $2::uuid[], $3::text[]) as k(dedup_window, fingerprint, service)
                     cross join lateral (
                         select 1 from reports r
                         where r.dedup_window = k.dedup_window and r.fingerprint = k.fingerprint
                           and r.service = k.service and r.counted
                           and r.dedup_window >= $4 and r.dedup_window <= $5
                         limit 1
                     ) taken",
                )
                .bind(windows().collect::<Vec<_>>())
                .bind(
                    candidates
                        .iter()
                        .map(|r| Uuid::from_bytes(r.fingerprint.0))
                        .collect::<Vec<_>>(),
                )
                .bind(
                    candidates
                        .iter()
                        .map(|r| r.service.as_str())
                        .collect::<Vec<_>>(),
                )
                .bind(first)
                .bind(last)
                .fetch_all(&mut *tx)
                .await?;
                rows.into_iter().collect()
            }
            _ => HashSet::new(),
        };
        let counted: HashSet<Uuid> = candidates
            .iter()
            .filter(|r| {
                let key = (
                    r.dedup_window_start,
                    Uuid::from_bytes(r.fingerprint.0),
                    r.service.as_str().to_owned(),
                );
                !taken.contains(&key)
            })
            .map(|r| r.id)
            .collect();
        let uncounted: HashSet<Uuid> = fresh
            .iter()
            .map(|r| r.id)
            .filter(|id| !counted.contains(id))
            .collect();
        if !fresh.is_empty() {
            let mut report_rows = String::with_capacity(fresh.len() * 160);
            let mut id_rows = String::with_capacity(fresh.len() * 64);
            for r in &fresh {
                let was_counted = if counted.contains(&r.id) { "t" } else { "f" };
                let mut line = String::new();
                for value in [
                    Some(r.id.to_string().as_str()),
                    Some(r.received_at.to_rfc3339().as_str()),
                    Some(r.service.as_str()),
                    Some(r.country.as_str()),
                    r.city,
                    Some(r.problem.as_str()),
                    Some(Uuid::from_bytes(r.fingerprint.0).to_string().as_str()),
                    Some(r.dedup_window_start.to_rfc3339().as_str()),
                    Some(was_counted),
                ] {
                    field(&mut line, value);
                }
                report_rows.push_str(&line);
                report_rows.push('\n');
                let _ = writeln!(
                    id_rows,
                    "{}\t{}\t{was_counted}",
                    r.id,
                    r.dedup_window_start.to_rfc3339()
                );
            }
            copy_rows(
                &mut tx,
                "copy reports (id, received_at, service, country, city, problem, fingerprint, dedup_window, counted) from stdin",
                &report_rows,
            )
            .await?;
            copy_rows(
                &mut tx,
                "copy report_ids (id, dedup_window, counted) from stdin",
                &id_rows,
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

    /// [`crate::store::ReportStore::import_reports`]: the COPY path, or the live statement's
    /// when the batch has network quotas or another writer got in between.
    pub(super) async fn import_batch(
        &self,
        reports: &[NewReport],
        now: DateTime<Utc>,
    ) -> Result<Vec<Outcome>, StoreError> {
        use crate::store::ReportStore;
        if reports.iter().any(|r| r.network.is_some()) {
            return self.insert_reports(reports, now).await;
        }
        partitions::ensure(&self.pool, &self.days, &partitions::days_of(reports)).await?;
        match self.copy_batch(reports, now).await {
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
mod tests {
    use super::field;

    #[test]
    fn copy_fields_are_escaped_and_tab_separated() {
        let mut line = String::new();
        field(&mut line, Some("Lahore"));
        field(&mut line, None);
        field(&mut line, Some("a\tb\\c\nd\re"));
        assert_eq!(line, "Lahore\t\\N\ta\\tb\\\\c\\nd\\re");
    }
}
