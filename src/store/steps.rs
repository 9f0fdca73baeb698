//! The steps both backends take alike, generic over [`Backend`]: a read run and converted,
//! the ping and migrations, the checkpoint, the webhook expiry, and the parts of a detection
//! write whose statements bind the same. Each backend passes its own pool or transaction.

use chrono::{DateTime, Utc};
use sqlx::migrate::{Migrate, Migrator};
use sqlx::{Database, Executor, FromRow, IntoArguments, Pool};

use super::rows::{self, CheckpointRow};
use super::sql::{self, Backend, Bind, BoundAs};
use uuid::Uuid;

use super::{Checkpoint, DetectionWrite, StoreError};

/// Runs a read and converts each row into what the store answers.
pub(super) async fn fetch_all<'e, 'c: 'e, 'q: 'e, DB, R, T, E>(
    query: BoundAs<'q, DB, R>,
    executor: E,
) -> Result<Vec<T>, StoreError>
where
    DB: Database,
    <DB as Database>::Arguments<'q>: IntoArguments<'q, DB>,
    R: for<'r> FromRow<'r, DB::Row> + Send + Unpin + 'e,
    T: From<R>,
    E: 'e + Executor<'c, Database = DB>,
{
    Ok(rows::into_all(query.fetch_all(executor).await?))
}

/// Applies `migrator`'s pending migrations on `pool`.
pub(super) async fn migrate<DB>(migrator: &Migrator, pool: &Pool<DB>) -> Result<(), StoreError>
where
    DB: Database,
    DB::Connection: Migrate,
{
    migrator.run(pool).await?;
    Ok(())
}

/// Checks that the database behind `executor` answers.
pub(super) async fn ping<'c, DB, E>(executor: E) -> Result<(), StoreError>
where
    DB: Database,
    for<'q> <DB as Database>::Arguments<'q>: IntoArguments<'q, DB>,
    E: Executor<'c, Database = DB>,
{
    sqlx::query("select 1").execute(executor).await?;
    Ok(())
}

/// Where the detector stands, if it has ever run.
pub(super) async fn checkpoint<'c, DB, E>(executor: E) -> Result<Option<Checkpoint>, StoreError>
where
    DB: Database,
    for<'q> <DB as Database>::Arguments<'q>: IntoArguments<'q, DB>,
    CheckpointRow: for<'r> FromRow<'r, DB::Row>,
    E: Executor<'c, Database = DB>,
{
    let row: Option<CheckpointRow> = sqlx::query_as(sql::CHECKPOINT)
        .fetch_optional(executor)
        .await?;
    Ok(row.map(Checkpoint::from))
}

/// Deletes the rows of `table` (primary key `key`) whose `column` is below `before`,
/// `batch` rows a statement, so no statement holds many row locks or runs long beside
/// ingest; answers how many it deleted.
pub(super) async fn delete_before<DB, T>(
    pool: &Pool<DB>,
    (table, key, column): (&str, &str, &str),
    before: T,
    batch: u64,
) -> Result<u64, StoreError>
where
    DB: Backend,
    for<'c> &'c Pool<DB>: Executor<'c, Database = DB>,
    for<'q> <DB as Database>::Arguments<'q>: IntoArguments<'q, DB>,
    T: for<'a> Bind<'a, DB> + Clone,
{
    let statement = format!(
        "delete from {table} where ({key}) in
             (select {key} from {table} where {column} < $1 limit {batch})"
    );
    let mut deleted = 0;
    loop {
        let done = DB::rows_affected(
            &sqlx::query(&statement)
                .bind(before.clone())
                .execute(pool)
                .await?,
        );
        deleted += done;
        if done < batch {
            return Ok(deleted);
        }
    }
}

/// Gives up (at `now`) on the pending deliveries enqueued before `give_up_before` and deletes
/// the finished ones that finished before `forget_before`, in one transaction; returns how
/// many it gave up on.
pub(super) async fn expire_deliveries<DB>(
    pool: &Pool<DB>,
    give_up_before: DateTime<Utc>,
    forget_before: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<u64, StoreError>
where
    DB: Backend,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> <DB as Database>::Arguments<'q>: IntoArguments<'q, DB>,
{
    let mut tx = pool.begin().await?;
    let expired = sqlx::query(sql::EXPIRE_DELIVERIES)
        .bind(DB::time(give_up_before))
        .bind(DB::time(now))
        .execute(&mut *tx)
        .await?;
    sqlx::query(sql::FORGET_DELIVERIES)
        .bind(DB::time(forget_before))
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(DB::rows_affected(&expired))
}

/// A detection write's first steps, in its transaction: the re-detected range's incidents
/// deleted, then the write's incidents upserted.
pub(super) async fn replace_incidents<DB>(
    tx: &mut DB::Connection,
    write: &DetectionWrite<'_>,
) -> Result<(), StoreError>
where
    DB: Backend,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> <DB as Database>::Arguments<'q>: IntoArguments<'q, DB>,
    for<'a> &'a str: Bind<'a, DB>,
    for<'a> Option<&'a str>: Bind<'a, DB>,
    for<'a> Uuid: Bind<'a, DB>,
    for<'a> Option<Uuid>: Bind<'a, DB>,
    for<'a> f64: Bind<'a, DB>,
    for<'a> Option<DB::Time>: Bind<'a, DB>,
{
    if let Some((from, to)) = write.replace {
        sqlx::query(sql::DELETE_REDETECTED)
            .bind(DB::time(from))
            .bind(DB::time(to))
            .execute(&mut *tx)
            .await?;
    }
    for incident in write.incidents {
        let json = rows::incident_json(incident);
        sql::upsert_incident::<DB>(incident, &json)
            .execute(&mut *tx)
            .await?;
    }
    Ok(())
}

/// A detection write's steps after its expectations, in its transaction: old expectations
/// pruned, the watermark moved and the snapshot stored.
pub(super) async fn advance_detector<DB>(
    tx: &mut DB::Connection,
    write: &DetectionWrite<'_>,
) -> Result<(), StoreError>
where
    DB: Backend,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> <DB as Database>::Arguments<'q>: IntoArguments<'q, DB>,
    for<'a> &'a str: Bind<'a, DB>,
{
    if let Some(before) = write.prune_expectations_before {
        sqlx::query(sql::PRUNE_EXPECTATIONS)
            .bind(DB::time(super::expectations::day_of(before)))
            .execute(&mut *tx)
            .await?;
    }
    if let Some(watermark) = write.watermark {
        sqlx::query(sql::SET_WATERMARK)
            .bind(DB::time(watermark))
            .execute(&mut *tx)
            .await?;
    }
    if let Some((state_at, state)) = write.state {
        sqlx::query(sql::SET_STATE)
            .bind(DB::time(state_at))
            .bind(state)
            .execute(&mut *tx)
            .await?;
    }
    Ok(())
}
