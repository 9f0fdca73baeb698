//! The statements both backends run as they are: SQL text in `$N` binds (sqlx numbers them
//! alike on Postgres and SQLite) and the builders that bind them, generic over the backend.
//!
//! Where the dialects part (arrays against `json_each`, the settled-minute tables, index
//! hints, the claim's locking) each backend keeps its own statement beside its method.

use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use sqlx::postgres::PgQueryResult;
use sqlx::query::{Query, QueryAs};
use sqlx::sqlite::SqliteQueryResult;
use sqlx::{Database, Encode, FromRow, Postgres, QueryBuilder, Sqlite, Type};
use uuid::Uuid;

use super::expectations::{day_of, DayRow};
use super::{Attempt, DeliveryStatus, IncidentAction, IncidentQuery, SeriesKey, TimeRange};
use crate::domain::buckets::ceil_to;
use crate::domain::incidents::Incident;

/// A backend as the shared statements see it: how it stores a time.
pub(super) trait Backend: Database {
    /// Postgres: `timestamptz`; SQLite: an integer.
    type Time: for<'q> Encode<'q, Self> + Type<Self> + Send + 'static;

    /// A minute-grained time (SQLite: unix seconds).
    fn time(at: DateTime<Utc>) -> Self::Time;

    /// A report's `received_at` (SQLite: unix milliseconds).
    fn received_at(at: DateTime<Utc>) -> Self::Time;

    /// Postgres: `text[]`; SQLite: a JSON array, read with `json_each`.
    type TextList: for<'q> Encode<'q, Self> + Type<Self> + Send + 'static;

    /// A list of texts bound as one value.
    fn text_list(items: Vec<String>) -> Self::TextList;

    /// How many rows a statement changed (sqlx has no trait for it).
    fn rows_affected(result: &Self::QueryResult) -> u64;

    /// The expectation day rows of days $1 ..= $2, each day in unix seconds
    /// ([`super::expectations::DayRow`]).
    const SELECT_EXPECTATION_DAYS: &'static str;

    /// One series' expectation day rows ($1 service, $2 country, $3 city, the latter two null
    /// for none) of the days starting in [$4, $5), in order.
    const SERIES_EXPECTATION_DAYS: &'static str;

    /// Inserts or overwrites expectation day rows given as $1, a JSON array of objects with
    /// `service`, `country`, `city`, `day` (unix seconds) and `expected` (the row's text).
    const UPSERT_EXPECTATION_DAYS: &'static str;
}

impl Backend for Postgres {
    type Time = DateTime<Utc>;

    fn time(at: DateTime<Utc>) -> DateTime<Utc> {
        at
    }

    fn received_at(at: DateTime<Utc>) -> DateTime<Utc> {
        at
    }

    type TextList = Vec<String>;

    fn text_list(items: Vec<String>) -> Vec<String> {
        items
    }

    fn rows_affected(result: &PgQueryResult) -> u64 {
        result.rows_affected()
    }

    const SELECT_EXPECTATION_DAYS: &'static str =
        "select service, country, city, extract(epoch from day)::int8 as day, expected
         from expectations_day where day >= $1 and day <= $2";

    const SERIES_EXPECTATION_DAYS: &'static str =
        "select service, country, city, extract(epoch from day)::int8 as day, expected
         from expectations_day
         where service = $1 and country = coalesce(cast($2 as text), '')
           and city = coalesce(cast($3 as text), '') and day >= $4 and day < $5
         order by day";

    const UPSERT_EXPECTATION_DAYS: &'static str =
        "insert into expectations_day (service, country, city, day, expected)
         select service, country, city, to_timestamp(day), expected
         from json_to_recordset($1::json)
              as t(service text, country text, city text, day bigint, expected text)
         on conflict (service, country, city, day) do update set expected = excluded.expected";
}

impl Backend for Sqlite {
    type Time = i64;

    fn time(at: DateTime<Utc>) -> i64 {
        at.timestamp()
    }

    fn received_at(at: DateTime<Utc>) -> i64 {
        at.timestamp_millis()
    }

    type TextList = String;

    fn text_list(items: Vec<String>) -> String {
        serde_json::Value::from(items).to_string()
    }

    fn rows_affected(result: &SqliteQueryResult) -> u64 {
        result.rows_affected()
    }

    const SELECT_EXPECTATION_DAYS: &'static str =
        "select service, country, city, day, expected from expectations_day
         where day >= $1 and day <= $2";

    const SERIES_EXPECTATION_DAYS: &'static str =
        "select service, country, city, day, expected from expectations_day
         where service = $1 and country = coalesce(cast($2 as text), '')
           and city = coalesce(cast($3 as text), '') and day >= $4 and day < $5
         order by day";

    // `where true`: SQLite's upsert after a select needs it to read `on conflict` right.
    const UPSERT_EXPECTATION_DAYS: &'static str =
        "insert into expectations_day (service, country, city, day, expected)
         select json_extract(value, '$.service'), json_extract(value, '$.country'),
                json_extract(value, '$.city'), json_extract(value, '$.day'),
                json_extract(value, '$.expected')
         from json_each($1) where true
         on conflict (service, country, city, day) do update set expected = excluded.expected";
}

/// A value backend `DB` binds into arguments that live for `'a`.
/// What retention deletes row by row, as (table, primary key, time column): the coarse tiers
/// (the quarter rows are SQLite's; Postgres keeps a row per day, `rollups_quarter_day`).
pub(super) const QUARTER_ROWS: (&str, &str, &str) = (
    "rollups_quarter",
    "service, country, city, quarter",
    "quarter",
);
pub(super) const HOUR_ROWS: (&str, &str, &str) =
    ("rollups_hour", "service, country, city, hour", "hour");

pub(super) trait Bind<'a, DB: Database>: 'a + Encode<'a, DB> + Type<DB> {}

impl<'a, DB: Database, T: 'a + Encode<'a, DB> + Type<DB>> Bind<'a, DB> for T {}

/// A statement with its arguments bound, as the builders here return it.
pub(super) type Bound<'a, DB> = Query<'a, DB, <DB as Database>::Arguments<'a>>;

/// A statement read into rows of `O`, as the builders here return it.
pub(super) type BoundAs<'a, DB, O> = QueryAs<'a, DB, O, <DB as Database>::Arguments<'a>>;

/// The columns of `incidents`, in the order both backends select and insert them.
pub(super) const INCIDENT_COLUMNS: &str = "id, service, scope, country, city, status, started_at, \
     detected_at, peak_at, peak_count, expected_at_peak, start_count, excess_reports, \
     resolved_at, top_cities, problems, parent_id, summary, updated_at";

/// The columns only the admin API writes; reads select them after [`INCIDENT_COLUMNS`].
pub(super) const INCIDENT_ADMIN_COLUMNS: &str = "note, resolved_by";

/// What writing an incident that is already stored (same id) overwrites: everything that
/// can change after it opened, unless an admin resolved it by hand. `detected_at` is
/// overwritten too: the runner carries the first one over to a reopening, and a `redetect`
/// writes the one it computed.
const INCIDENT_UPSERT: &str = " on conflict (id) do update set status = excluded.status, \
     detected_at = excluded.detected_at, peak_at = excluded.peak_at, peak_count = excluded.peak_count, \
     expected_at_peak = excluded.expected_at_peak, start_count = excluded.start_count, \
     excess_reports = excluded.excess_reports, resolved_at = excluded.resolved_at, \
     top_cities = excluded.top_cities, problems = excluded.problems, \
     parent_id = excluded.parent_id, summary = excluded.summary, updated_at = excluded.updated_at \
     where incidents.resolved_by is null";

/// One incident by id ($1), every column.
pub(super) fn incident_by_id() -> &'static str {
    static SQL: LazyLock<String> = LazyLock::new(|| {
        format!("select {INCIDENT_COLUMNS}, {INCIDENT_ADMIN_COLUMNS} from incidents where id = $1")
    });
    &SQL
}

/// The columns of `webhook_deliveries`, in the order both backends select them.
pub(super) const DELIVERY_COLUMNS: &str =
    "event_id, endpoint, event_type, incident_id, occurred_at, payload, \
     status, attempts, created_at, next_attempt_at, last_attempt_at, last_error, finished_at";

/// Deliveries, oldest event first, at most $1.
pub(super) fn deliveries() -> &'static str {
    static SQL: LazyLock<String> = LazyLock::new(|| {
        format!(
            "select {DELIVERY_COLUMNS} from webhook_deliveries
             order by occurred_at, event_id, endpoint
             limit $1"
        )
    });
    &SQL
}

/// The stored catalog, in catalog order.
pub(super) const SERVICES: &str =
    "select slug, name, enabled from services order by position, slug";

/// How many deliveries are pending.
pub(super) const PENDING_DELIVERIES: &str =
    "select count(*) from webhook_deliveries where status = 'pending'";

/// Gives up on the pending deliveries enqueued before $1, at $2.
pub(super) const EXPIRE_DELIVERIES: &str = "update webhook_deliveries
     set status = 'failed', finished_at = $2, last_error = coalesce(last_error, 'never attempted')
     where status = 'pending' and created_at < $1";

/// Deletes the finished deliveries that finished before $1.
pub(super) const FORGET_DELIVERIES: &str =
    "delete from webhook_deliveries where status <> 'pending' and finished_at < $1";

/// Deletes the expectation day rows of days before $1 (a day is kept while any of its quarters
/// is to be kept).
pub(super) const PRUNE_EXPECTATIONS: &str = "delete from expectations_day where day < $1";

/// Deletes the incidents that started in [$1, $2), but what an admin noted or resolved.
pub(super) const DELETE_REDETECTED: &str = "delete from incidents
     where started_at >= $1 and started_at < $2 and note is null and resolved_by is null";

/// Moves the detector's watermark to $1.
pub(super) const SET_WATERMARK: &str =
    "insert into detector_state (singleton, watermark) values (true, $1)
     on conflict (singleton) do update set watermark = excluded.watermark";

/// Stores the detector's snapshot ($2) taken after minute $1.
pub(super) const SET_STATE: &str = "update detector_state set state_at = $1, state = $2";

/// Where the detector stands.
pub(super) const CHECKPOINT: &str = "select watermark, state_at, state from detector_state";

/// How many reports are stored.
pub(super) const REPORT_COUNT: &str = "select count(*) from reports";

/// Deletes the per-network counts of minutes before $1.
pub(super) const FORGET_NETWORK_COUNTS: &str =
    "delete from network_minute_counts where minute < $1";

/// [`super::ReadStore::incidents`]: newest first, filtered and paged as `query` asks.
pub(super) fn incidents<'a, DB>(query: &'a IncidentQuery) -> QueryBuilder<'a, DB>
where
    DB: Backend,
    &'a str: Bind<'a, DB>,
    Uuid: Bind<'a, DB>,
    i64: Bind<'a, DB>,
{
    let mut select = QueryBuilder::new(format!(
        "select {INCIDENT_COLUMNS}, {INCIDENT_ADMIN_COLUMNS} from incidents where true"
    ));
    if let Some(service) = &query.service {
        select.push(" and service = ").push_bind(service.as_str());
    }
    if let Some(country) = &query.country {
        select.push(" and country = ").push_bind(country.as_str());
    }
    if let Some(status) = query.status {
        select.push(" and status = ").push_bind(status.as_str());
    }
    if let Some(since) = query.since {
        select
            .push(" and started_at >= ")
            .push_bind(DB::time(since));
    }
    if let Some((started_at, id)) = query.after {
        select
            .push(" and (started_at, id) < (")
            .push_bind(DB::time(started_at))
            .push(", ")
            .push_bind(id)
            .push(")");
    }
    select
        .push(" order by started_at desc, id desc limit ")
        .push_bind(i64::from(query.limit));
    select
}

/// Inserts (or overwrites, see [`INCIDENT_UPSERT`]) one incident; `json` is its
/// [`super::rows::incident_json`].
pub(super) fn upsert_incident<'a, DB>(
    incident: &'a Incident,
    json: &'a (String, String),
) -> Bound<'a, DB>
where
    DB: Backend,
    &'a str: Bind<'a, DB>,
    Option<&'a str>: Bind<'a, DB>,
    Uuid: Bind<'a, DB>,
    Option<Uuid>: Bind<'a, DB>,
    f64: Bind<'a, DB>,
    Option<DB::Time>: Bind<'a, DB>,
{
    static SQL: LazyLock<String> = LazyLock::new(|| {
        let binds: Vec<String> = (1..=INCIDENT_COLUMNS.split(',').count())
            .map(|n| format!("${n}"))
            .collect();
        format!(
            "insert into incidents ({INCIDENT_COLUMNS}) values ({}){INCIDENT_UPSERT}",
            binds.join(", ")
        )
    });
    let i = incident;
    sqlx::query(&SQL)
        .bind(i.id)
        .bind(i.service.as_str())
        .bind(i.scope.as_str())
        .bind(i.country.as_deref())
        .bind(i.city.as_deref())
        .bind(i.status.as_str())
        .bind(DB::time(i.started_at))
        .bind(DB::time(i.detected_at))
        .bind(DB::time(i.peak_at))
        .bind(i.peak_count)
        .bind(i.expected_at_peak)
        .bind(i.start_count)
        .bind(i.excess_reports)
        .bind(i.resolved_at.map(DB::time))
        .bind(json.0.as_str())
        .bind(json.1.as_str())
        .bind(i.parent_id)
        .bind(i.summary.as_str())
        .bind(DB::time(i.updated_at))
}

/// [`super::CatalogStore::act_on_incident`]'s update of incident `id` at `at`.
pub(super) fn act_on_incident<'a, DB>(
    id: Uuid,
    action: &IncidentAction<'a>,
    at: DateTime<Utc>,
) -> Bound<'a, DB>
where
    DB: Backend,
    &'a str: Bind<'a, DB>,
    Uuid: Bind<'a, DB>,
{
    match *action {
        IncidentAction::Annotate { note } => {
            sqlx::query("update incidents set note = $2 where id = $1")
                .bind(id)
                .bind(note)
        }
        IncidentAction::Resolve { by } => sqlx::query(
            "update incidents
             set status = 'resolved', resolved_at = coalesce(resolved_at, $2),
                 resolved_by = $3, updated_at = $2
             where id = $1",
        )
        .bind(id)
        .bind(DB::time(at))
        .bind(by),
    }
}

/// Records `attempt`, made at `at`, at a pending delivery (a finished one is left as it is).
pub(super) fn record_attempt<'a, DB>(
    event_id: Uuid,
    endpoint: &'a str,
    at: DateTime<Utc>,
    attempt: &'a Attempt,
) -> Bound<'a, DB>
where
    DB: Backend,
    &'a str: Bind<'a, DB>,
    Option<&'a str>: Bind<'a, DB>,
    Uuid: Bind<'a, DB>,
    Option<DB::Time>: Bind<'a, DB>,
{
    // None keeps the stored next_attempt_at.
    let (status, error, next_attempt_at, finished_at) = match attempt {
        Attempt::Delivered => (DeliveryStatus::Delivered, None, None, Some(at)),
        Attempt::Retry {
            next_attempt_at,
            error,
        } => (
            DeliveryStatus::Pending,
            Some(error.as_str()),
            Some(*next_attempt_at),
            None,
        ),
        Attempt::Failed { error } => (DeliveryStatus::Failed, Some(error.as_str()), None, Some(at)),
    };
    sqlx::query(
        "update webhook_deliveries
         set status = $3, attempts = attempts + 1, last_attempt_at = $4, last_error = $5,
             next_attempt_at = coalesce($6, next_attempt_at), finished_at = $7
         where event_id = $1 and endpoint = $2 and status = 'pending'",
    )
    .bind(event_id)
    .bind(endpoint)
    .bind(status.as_str())
    .bind(DB::time(at))
    .bind(error)
    .bind(next_attempt_at.map(DB::time))
    .bind(finished_at.map(DB::time))
}

/// [`super::ReadStore::problem_counts`]: counted reports per problem kind of one series.
pub(super) fn problem_counts<'a, DB, O>(
    series: &'a SeriesKey,
    range: TimeRange,
) -> BoundAs<'a, DB, O>
where
    DB: Backend,
    O: for<'r> FromRow<'r, DB::Row>,
    &'a str: Bind<'a, DB>,
    Option<&'a str>: Bind<'a, DB>,
{
    let (service, country, city) = series.parts();
    sqlx::query_as(
        // A report's window starts at most a day before it and never after it: the bounds on
        // dedup_window let Postgres read only the range's day partitions.
        "select problem, count(*) as count from reports
         where received_at >= $1 and received_at < $2 and service = $3 and counted
           and (cast($4 as text) is null or country = $4) and (cast($5 as text) is null or city = $5)
           and dedup_window > $6 and dedup_window < $7
         group by problem
         order by problem",
    )
    .bind(DB::received_at(range.from))
    .bind(DB::received_at(range.to))
    .bind(service)
    .bind(country)
    .bind(city)
    .bind(DB::time(range.from - chrono::TimeDelta::days(1)))
    .bind(range_bound::<DB>(range.to))
}

/// A bound of a half-open range over rows that start on a whole second (minutes, dedup
/// windows, days), rounded up to the second: a row at `r` still lies in `[from, to)` exactly
/// when `from <= r < to`. SQLite binds whole seconds, and cutting a bound down instead took in
/// the minute just before a `from` within its first second and left out the one a `to` falls
/// in (a report read back in the first second of its minute was not counted).
pub(super) fn range_bound<DB: Backend>(at: DateTime<Utc>) -> DB::Time {
    DB::time(ceil_to(at, 1))
}

/// [`super::ReadStore::expectations`]: the day rows holding one series' quarters in `range`.
pub(super) fn expectation_days<'a, DB>(
    series: &'a SeriesKey,
    range: TimeRange,
) -> BoundAs<'a, DB, DayRow>
where
    DB: Backend,
    DayRow: for<'r> FromRow<'r, DB::Row>,
    &'a str: Bind<'a, DB>,
    Option<&'a str>: Bind<'a, DB>,
{
    let (service, country, city) = series.parts();
    sqlx::query_as(DB::SERIES_EXPECTATION_DAYS)
        .bind(service)
        .bind(country)
        .bind(city)
        .bind(DB::time(day_of(range.from)))
        .bind(range_bound::<DB>(range.to))
}
