//! [`DetectionStore`] on Postgres: the detector's log: rollups to step, checkpoint and snapshot, incidents and expectations written.

use super::*;
use crate::store::expectations;
use crate::store::DetectionStore;
use futures_util::StreamExt;
use sqlx::postgres::PgPoolCopyExt;

#[async_trait]
impl DetectionStore for PostgresStore {
    async fn first_rollup_minute(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        // Each table's own minimum, so each is one index probe (an aggregate over the view
        // would read both whole).
        Ok(sqlx::query_scalar(
            "select least((select min(minute) from rollups_minute), (select min(minute) from rollups_live))",
        )
            .fetch_one(&self.pool)
            .await?)
    }

    async fn minute_counts(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<MinuteRollups, StoreError> {
        // A binary COPY, in no order: a replay reads a day of every series per call, and
        // decoding rows one message at a time (or sorting them by name) was most of the cost.
        // COPY takes no parameters; the bounds are times this code formats.
        let statement = format!(
            "copy (select minute, service, country, city, count from rollups
                   where minute >= '{}' and minute < '{}') to stdout (format binary)",
            from.to_rfc3339(),
            to.to_rfc3339()
        );
        let mut stream = self.pool.copy_out_raw(&statement).await?;
        let mut data = Vec::new();
        while let Some(chunk) = stream.next().await {
            data.extend_from_slice(&chunk?);
        }
        parse_minute_rollups(&data)
    }

    async fn clear_expectations(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await?;
        let cleared = expectations::clear::<Postgres>(&mut tx, from, to).await?;
        tx.commit().await?;
        Ok(cleared)
    }

    async fn insert_recomputed_expectations(
        &self,
        recomputed: &[Expectation],
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        expectations::merge::<Postgres>(&mut tx, recomputed, expectations::Stored::Refuse).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn checkpoint(&self) -> Result<Option<Checkpoint>, StoreError> {
        steps::checkpoint(&self.pool).await
    }

    async fn write_detection(&self, write: &DetectionWrite<'_>) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        steps::replace_incidents::<Postgres>(&mut tx, write).await?;
        expectations::merge::<Postgres>(
            &mut tx,
            write.expectations,
            expectations::Stored::Overwrite,
        )
        .await?;
        steps::advance_detector::<Postgres>(&mut tx, write).await?;
        if !write.deliveries.is_empty() {
            let d = write.deliveries;
            sqlx::query(
                "insert into webhook_deliveries
                     (event_id, endpoint, event_type, incident_id, occurred_at, payload, created_at, next_attempt_at)
                 select event_id, endpoint, event_type, incident_id, occurred_at, payload, created_at, created_at
                 from unnest($1::uuid[], $2::text[], $3::text[], $4::uuid[], $5::timestamptz[], $6::text[],
                             $7::timestamptz[])
                      as t(event_id, endpoint, event_type, incident_id, occurred_at, payload, created_at)
                 on conflict (event_id, endpoint) do nothing",
            )
            .bind(d.iter().map(|x| x.event_id).collect::<Vec<_>>())
            .bind(d.iter().map(|x| x.endpoint.as_str()).collect::<Vec<_>>())
            .bind(d.iter().map(|x| x.event_type).collect::<Vec<_>>())
            .bind(d.iter().map(|x| x.incident_id).collect::<Vec<_>>())
            .bind(d.iter().map(|x| x.occurred_at).collect::<Vec<_>>())
            .bind(d.iter().map(|x| x.payload.as_str()).collect::<Vec<_>>())
            .bind(d.iter().map(|x| x.created_at).collect::<Vec<_>>())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

/// Reads a binary COPY of `(minute timestamptz, service text, country text, city text, count
/// bigint)` rows: a header, then per row a field count and length-prefixed values, then a
/// trailer. (The format is a few lines, as for import's writer in `import.rs`.)
fn parse_minute_rollups(data: &[u8]) -> Result<MinuteRollups, StoreError> {
    let mut input = CopyInput(data);
    let mut counts = rows::MinuteRollupsBuilder::default();
    input.header()?;
    while let Some(fields) = input.row()? {
        if fields != 5 {
            return Err(input.corrupt());
        }
        let micros = input.int8()?;
        let (service, country, city) = (input.text()?, input.text()?, input.text()?);
        let count = input.int8()?;
        let minute = (micros + POSTGRES_EPOCH_MICROS).div_euclid(1_000_000);
        counts.push(minute, service, country, city, count);
    }
    Ok(counts.finish())
}

/// What is left of a binary COPY's data.
struct CopyInput<'a>(&'a [u8]);

impl<'a> CopyInput<'a> {
    fn corrupt(&self) -> StoreError {
        StoreError::Corrupt(format!(
            "a binary COPY of rollups ends or breaks {} bytes before its end",
            self.0.len()
        ))
    }

    fn take<const N: usize>(&mut self) -> Result<[u8; N], StoreError> {
        let (head, rest) = self
            .0
            .split_first_chunk::<N>()
            .ok_or_else(|| self.corrupt())?;
        self.0 = rest;
        Ok(*head)
    }

    fn bytes(&mut self, len: usize) -> Result<&'a [u8], StoreError> {
        if self.0.len() < len {
            return Err(self.corrupt());
        }
        let (head, rest) = self.0.split_at(len);
        self.0 = rest;
        Ok(head)
    }

    fn header(&mut self) -> Result<(), StoreError> {
        if self.take::<11>()? != *COPY_SIGNATURE {
            return Err(self.corrupt());
        }
        let _flags = self.take::<4>()?;
        let extension = i32::from_be_bytes(self.take::<4>()?);
        self.bytes(usize::try_from(extension).map_err(|_| self.corrupt())?)?;
        Ok(())
    }

    /// The next row's field count, or `None` at the trailer.
    fn row(&mut self) -> Result<Option<i16>, StoreError> {
        let fields = i16::from_be_bytes(self.take::<2>()?);
        Ok((fields != -1).then_some(fields))
    }

    /// A value's bytes (every column here is `not null`).
    fn value(&mut self) -> Result<&'a [u8], StoreError> {
        let len = i32::from_be_bytes(self.take::<4>()?);
        let len = usize::try_from(len).map_err(|_| self.corrupt())?;
        self.bytes(len)
    }

    fn int8(&mut self) -> Result<i64, StoreError> {
        let value = self.value()?;
        let bytes: [u8; 8] = value.try_into().map_err(|_| self.corrupt())?;
        Ok(i64::from_be_bytes(bytes))
    }

    fn text(&mut self) -> Result<&'a str, StoreError> {
        let value = self.value()?;
        std::str::from_utf8(value).map_err(|_| self.corrupt())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A binary COPY of `rows` (minute in unix seconds, names, count) as Postgres sends it.
    fn copy_of(rows: &[(i64, &str, &str, &str, i64)]) -> Vec<u8> {
        let mut data = COPY_SIGNATURE.to_vec();
        data.extend_from_slice(&0i32.to_be_bytes());
        data.extend_from_slice(&0i32.to_be_bytes());
        for &(minute, service, country, city, count) in rows {
            data.extend_from_slice(&5i16.to_be_bytes());
            let micros = minute * 1_000_000 - POSTGRES_EPOCH_MICROS;
            for value in [
                &micros.to_be_bytes()[..],
                service.as_bytes(),
                country.as_bytes(),
                city.as_bytes(),
                &count.to_be_bytes()[..],
            ] {
                data.extend_from_slice(&(value.len() as i32).to_be_bytes());
                data.extend_from_slice(value);
            }
        }
        data.extend_from_slice(&(-1i16).to_be_bytes());
        data
    }

    #[test]
    fn a_binary_copy_of_rollups_reads_back_every_row() {
        // 1_741_600_800 is 2025-03-10T10:00:00Z.
        let rows = [
            (1_741_600_800, "x", "PK", "Lahore", 3),
            (1_741_600_800, "x", "PK", "", 7),
            (1_741_600_860, "x", "PK", "Lahore", 1),
            (1_741_600_860, "youtube", "GB", "", 12),
        ];
        let got = parse_minute_rollups(&copy_of(&rows)).unwrap();
        let back: Vec<(i64, &str, &str, &str, i64)> = got
            .counts
            .iter()
            .map(|c| {
                let p = &got.places[c.place as usize];
                (c.minute, &*p.service, &*p.country, &*p.city, c.count)
            })
            .collect();
        assert_eq!(back, rows);
        assert_eq!(got.places.len(), 3);
        // An empty COPY is no rows.
        assert_eq!(
            parse_minute_rollups(&copy_of(&[])).unwrap(),
            MinuteRollups::default()
        );
    }

    #[test]
    fn a_broken_binary_copy_is_an_error_not_rows() {
        let data = copy_of(&[(1_741_600_800, "x", "PK", "", 3)]);
        for cut in [5, 20, data.len() - 3, data.len() - 1] {
            assert!(matches!(
                parse_minute_rollups(&data[..cut]),
                Err(StoreError::Corrupt(_))
            ));
        }
        let mut wrong_signature = data.clone();
        wrong_signature[0] = b'Q';
        assert!(parse_minute_rollups(&wrong_signature).is_err());
    }
}
