//! The read statements of both backends, written once over the rollup tiers: a range is cut
//! ([`TierSplit`]) into minutes at its edges, quarter hours and whole hours between, and each
//! statement reads the rows of each part from the tier that holds it, so a week at 15 minutes
//! reads 672 quarter rows rather than 10,080 minute rows, and every answer is the same as the
//! minutes' would be (a country's or a city's counts rows are summed into buckets by the
//! caller, the others here). Regions (a sliding hour) read minutes only (see
//! [`minutes_only`]). A backend gives its [`Dialect`]; the statements are built from it once.
//! On Postgres a counts or regions answer reads its expectations in the same statement
//! ([`POSTGRES_COUNTS_EXPECTED`], [`POSTGRES_REGIONS_EXPECTED`]).

use std::marker::PhantomData;
use std::sync::LazyLock;

use sqlx::FromRow;

use super::rows::BucketRow;
use super::sql::{range_bound, Backend, Bind, BoundAs};
use super::{region_countries, RegionCount, Rollup, SeriesKey, TimeRange};
use crate::domain::buckets::{Tier, TierSplit};

/// How a backend spells what the tiered statements need.
pub(super) struct Dialect {
    /// The minute rows (Postgres: the view over settled and live minutes).
    minutes: &'static str,
    /// Postgres: the live minutes, which no coarser tier holds until they settle.
    live: Option<&'static str>,
    /// A row's `at` as unix seconds (a whole minute, so exact as a double: Postgres' `extract`
    /// answers a numeric, whose conversion cost more per row than the double's).
    epoch_seconds: &'static str,
    /// `country` in the list bound as `$N` (a [`Backend::TextList`]).
    country_in: fn(usize) -> String,
    /// The quarter-hour rows.
    quarters: Quarters,
}

/// How a backend's quarter-hour rows are read: SQLite keeps a row per quarter; Postgres a row
/// per day with the day's 96 counts (migration 0013), unnested here into quarter rows (its
/// counts answer reads the day rows whole instead: [`POSTGRES_COUNTS_EXPECTED`]).
struct Quarters {
    /// The FROM item.
    from: &'static str,
    /// A row's quarter.
    time: &'static str,
    /// What else bounds the rows of a part from `$a` to `$b`: on Postgres, the days its index
    /// reads, and no quarter without a count (as no quarter row of SQLite is).
    bound: fn(usize, usize) -> String,
}

pub(super) const POSTGRES: Dialect = Dialect {
    minutes: "rollups",
    live: Some("rollups_live"),
    epoch_seconds: "date_part('epoch', at)::int8",
    country_in: |n| format!("country = any(${n})"),
    quarters: Quarters {
        from: "rollups_quarter_day q, unnest(q.counts) with ordinality as c(count, slot)",
        time: "q.day + (c.slot - 1) * interval '15 minutes'",
        bound: |a, b| {
            format!(
                " and q.day >= date_bin('1 day', ${a}, timestamptz 'epoch') and q.day < ${b}
               and c.count <> 0"
            )
        },
    },
};

pub(super) const SQLITE: Dialect = Dialect {
    minutes: "rollups_minute",
    live: None,
    epoch_seconds: "at",
    country_in: |n| format!("country in (select value from json_each(${n}))"),
    quarters: Quarters {
        from: "rollups_quarter",
        time: "quarter",
        bound: |_, _| String::new(),
    },
};

/// The rows matching `filter` over a [`TierSplit`] bound as `$first` .. `$first + 5`, each
/// with `columns` and its time as `at`: minutes, quarters, hours, quarters, minutes, and on
/// Postgres the live minutes of the coarse parts (the edges read them through the view).
/// Without `edges` the two minute parts are left out (their binds unused), for a split that
/// has none ([`TierSplit::minute_edges`]); without `quarters` the two quarter parts, for a
/// statement that reads them its own way ([`POSTGRES_COUNTS_EXPECTED`]).
fn tiered(
    dialect: &Dialect,
    columns: &str,
    filter: &str,
    first: usize,
    (edges, quarters): (bool, bool),
) -> String {
    let part = |table: &str, time: &str, from: usize, to: usize, bound: String| {
        format!(
            "select {columns}, {time} as at from {table}
             where {filter} and {time} >= ${} and {time} < ${}{bound}",
            first + from,
            first + to
        )
    };
    let q = &dialect.quarters;
    let quarter_part = |from: usize, to: usize| {
        part(
            q.from,
            q.time,
            from,
            to,
            (q.bound)(first + from, first + to),
        )
    };
    let mut parts = vec![part("rollups_hour", "hour", 2, 3, String::new())];
    if quarters {
        parts.insert(0, quarter_part(1, 2));
        parts.push(quarter_part(3, 4));
    }
    if edges {
        parts.insert(0, part(dialect.minutes, "minute", 0, 1, String::new()));
        parts.push(part(dialect.minutes, "minute", 4, 5, String::new()));
    }
    if let Some(live) = dialect.live {
        parts.push(part(live, "minute", 1, 4, String::new()));
    }
    parts.join("\n             union all ")
}

/// The minute rows matching `filter` from `$first` to `$first + 1`, each with `columns` and its
/// time as `at`. Regions read a sliding hour so: cut into tiers, each of its parts probes every
/// country's index range again, which cost more than the minutes it saved (839 answers/s
/// against 1,473 with minutes only, `scripts/bench-ab`, 2026-12-06).
fn minutes_only(dialect: &Dialect, columns: &str, filter: &str, first: usize) -> String {
    format!(
        "select {columns}, minute as at from {}
             where {filter} and minute >= ${first} and minute < ${}",
        dialect.minutes,
        first + 1
    )
}

/// The tiered statements of one backend.
#[derive(Clone)]
pub(super) struct Statements {
    /// [`super::ReadStore::top_cities`]: $1 service, $2 country (null: all), $3–$8 the split,
    /// $9 limit.
    top_cities: String,
    /// [`super::ReadStore::counts`], by whether the split has minute edges
    /// ([`TierSplit::minute_edges`]): `[without, with]`. Without them the statements read no
    /// minute partition: on Postgres a generic plan locks every partition of a part it holds,
    /// even an empty one.
    counts: [CountsStatements; 2],
    /// [`super::ReadStore::region_counts`] per country, from minutes only: $1 service,
    /// $2 countries, $3 from, $4 to.
    country_totals: String,
    /// Region counts per city, bound as `country_totals`.
    city_totals: String,
}

impl Statements {
    /// Literal city predicates throughout, so the partial indexes match every plan.
    pub(super) fn new(d: &Dialect) -> Statements {
        let totals = |city: &str, rows: String| {
            format!(
                "select country, {city} as city, cast(sum(count) as bigint) as count
             from ({rows}) r
             group by country{}",
                if city == "city" { ", city" } else { "" }
            )
        };
        Statements {
            top_cities: format!(
                "select country, city, cast(sum(count) as bigint) as count
             from ({}) r
             group by country, city
             order by count desc, country, city
             limit $9",
                tiered(
                    d,
                    "country, city, count",
                    "service = $1 and (cast($2 as text) is null or country = $2) and city <> ''",
                    3,
                    (true, true),
                )
            ),
            counts: [false, true].map(|edges| CountsStatements::new(d, edges, true)),
            country_totals: totals(
                "''",
                minutes_only(
                    d,
                    "country, count",
                    &format!("service = $1 and city = '' and {}", (d.country_in)(2)),
                    3,
                ),
            ),
            city_totals: totals(
                "city",
                minutes_only(
                    d,
                    "country, city, count",
                    &format!("service = $1 and city <> '' and {}", (d.country_in)(2)),
                    3,
                ),
            ),
        }
    }
}

/// The series of the counts statements of `d`, each as its filter and the first bind of its
/// split: a city's, a country's, the world's.
fn counts_series(d: &Dialect) -> [(String, usize); 3] {
    [
        ("service = $1 and country = $2 and city = $3".to_owned(), 4),
        ("service = $1 and country = $2 and city = ''".to_owned(), 3),
        (
            format!("service = $1 and city = '' and {}", (d.country_in)(2)),
            3,
        ),
    ]
}

impl CountsStatements {
    /// The counts statements of `d`, with the minute edges or without, and with the quarter
    /// parts or without ([`tiered`]).
    fn new(d: &Dialect, edges: bool, quarters: bool) -> CountsStatements {
        let epoch = d.epoch_seconds;
        let [city, country, world] = counts_series(d)
            .map(|(filter, first)| tiered(d, "count", &filter, first, (edges, quarters)));
        let rows = |rows: String| format!("select {epoch} as bucket, count from ({rows}) r");
        CountsStatements {
            city: rows(city),
            country: rows(country),
            world: format!(
                "select ({epoch} / $9) * $9 as bucket, cast(sum(count) as bigint) as count
             from ({world}) r
             group by bucket
             order by bucket"
            ),
        }
    }
}

/// The counts statements of one backend, of splits with minute edges or without.
#[derive(Clone)]
pub(super) struct CountsStatements {
    /// Counts of a city: $1 service, $2 country, $3 city, $4–$9 the split. The tiers' rows as
    /// they are (`bucket`: a row's start), at most two a bucket's worth (a settled row and a
    /// live one): summing them into buckets costs the database a hash and a sort per answer,
    /// more than it costs here ([`super::rows::buckets`]).
    city: String,
    /// Counts of a country: $1 service, $2 country, $3–$8 the split; rows as `city`.
    country: String,
    /// Counts of the world (the sum of the country totals, summed per bucket here, since a
    /// bucket has a row of every country): $1 service, $2 every country, $3–$8 the split,
    /// $9 bucket seconds.
    world: String,
}

/// The read statements of a backend: its own `rollups` (the detector's minute rows) and the
/// tiered ones; its methods bind each alike, so the binds are written once.
pub(super) struct ReadSql<DB> {
    /// [`super::ReadStore::rollups`]: $1 service, $2 from, $3 to.
    pub(super) rollups: &'static str,
    pub(super) tiered: &'static LazyLock<Statements>,
    pub(super) backend: PhantomData<DB>,
}

/// Binds a [`TierSplit`]'s six bounds after the binds already on `query`.
fn bind_split<'a, DB: Backend, O>(
    query: BoundAs<'a, DB, O>,
    split: TierSplit,
) -> BoundAs<'a, DB, O> {
    split
        .bounds
        .into_iter()
        .fold(query, |query, at| query.bind(range_bound::<DB>(at)))
}

impl<DB> ReadSql<DB>
where
    DB: Backend,
    for<'a> &'a str: Bind<'a, DB>,
    for<'a> Option<&'a str>: Bind<'a, DB>,
    for<'a> i64: Bind<'a, DB>,
    Rollup: for<'r> FromRow<'r, DB::Row>,
    RegionCount: for<'r> FromRow<'r, DB::Row>,
    BucketRow: for<'r> FromRow<'r, DB::Row>,
{
    fn statements(&self) -> &'static Statements {
        LazyLock::force(self.tiered)
    }

    /// [`super::ReadStore::rollups`] of `service` in `range`.
    pub(super) fn rollups<'a>(
        &self,
        service: &'a str,
        range: TimeRange,
    ) -> BoundAs<'a, DB, Rollup> {
        sqlx::query_as(self.rollups)
            .bind(service)
            .bind(range_bound::<DB>(range.from))
            .bind(range_bound::<DB>(range.to))
    }

    /// [`super::ReadStore::top_cities`] of `series`' service (and country) in `range`.
    pub(super) fn top_cities<'a>(
        &self,
        series: &'a SeriesKey,
        range: TimeRange,
        limit: u32,
    ) -> BoundAs<'a, DB, RegionCount> {
        let (service, country, _) = series.parts();
        let query = sqlx::query_as(&self.statements().top_cities)
            .bind(service)
            .bind(country);
        bind_split(query, TierSplit::new(range, Tier::Hour)).bind(i64::from(limit))
    }

    /// [`super::ReadStore::counts`]: the statement of `series`' level, bound, reading the
    /// coarsest tier whose rows fit in buckets of `bucket_seconds`; its rows still to be summed
    /// into those buckets ([`super::rows::buckets`]).
    pub(super) fn counts<'a>(
        &self,
        series: &'a SeriesKey,
        range: TimeRange,
        bucket_seconds: i64,
    ) -> BoundAs<'a, DB, BucketRow> {
        self.counts_as(self.statements(), series, range, bucket_seconds)
    }

    /// [`Self::counts`] with `statements`' counts statements, each row as an `O`; the binds of
    /// [`POSTGRES_COUNTS_EXPECTED`]'s expectations are left to the caller.
    pub(super) fn counts_as<'a, O>(
        &self,
        statements: &'static Statements,
        series: &'a SeriesKey,
        range: TimeRange,
        bucket_seconds: i64,
    ) -> BoundAs<'a, DB, O>
    where
        O: for<'r> FromRow<'r, DB::Row>,
    {
        let (service, country, city) = series.parts();
        let split = TierSplit::new(range, Tier::for_buckets(bucket_seconds));
        let statements = &statements.counts[usize::from(split.minute_edges())];
        match (country, city) {
            (Some(country), Some(city)) => {
                let query = sqlx::query_as(&statements.city)
                    .bind(service)
                    .bind(country)
                    .bind(city);
                bind_split(query, split)
            }
            (Some(country), None) => {
                let query = sqlx::query_as(&statements.country)
                    .bind(service)
                    .bind(country);
                bind_split(query, split)
            }
            (None, _) => {
                let query = sqlx::query_as(&statements.world)
                    .bind(service)
                    .bind(DB::text_list(region_countries(None)));
                bind_split(query, split).bind(bucket_seconds)
            }
        }
    }

    /// [`super::ReadStore::region_counts`]: per city with `cities`, else per country.
    pub(super) fn region_counts<'a>(
        &self,
        service: &'a str,
        country: Option<&str>,
        cities: bool,
        range: TimeRange,
    ) -> BoundAs<'a, DB, RegionCount> {
        let statements = self.statements();
        let statement = if cities {
            &statements.city_totals
        } else {
            &statements.country_totals
        };
        self.region_counts_as(statement, service, country, range)
    }

    /// [`Self::region_counts`] through `statement` (bound alike), each row as an `O`.
    pub(super) fn region_counts_as<'a, O>(
        &self,
        statement: &'static str,
        service: &'a str,
        country: Option<&str>,
        range: TimeRange,
    ) -> BoundAs<'a, DB, O>
    where
        O: for<'r> FromRow<'r, DB::Row>,
    {
        sqlx::query_as(statement)
            .bind(service)
            .bind(DB::text_list(region_countries(country)))
            .bind(range_bound::<DB>(range.from))
            .bind(range_bound::<DB>(range.to))
    }
}

/// Postgres' counts statements as a counts answer reads them, in one row: the rows of the
/// minute, hour and live parts as two arrays in the same order, `buckets` and `counts` (one
/// row crosses the wire and is decoded, not one per bucket); the quarter parts' day rows
/// (migration 0013) whole, `quarter_days` (unix seconds) and `quarters` (their 96 counts
/// each, a two-dimensional array), for the caller to cut to the parts; and the series'
/// expectation day rows in range, `days` (unix seconds) and `expected`. Days are in no order
/// (an ordered aggregate sorts each array on its own: the caller sorts the few days). Bound
/// after the counts' own: service, country, city (null for none), first day, end.
pub(super) static POSTGRES_COUNTS_EXPECTED: LazyLock<Statements> = LazyLock::new(|| {
    let answer = |rows: &str, (filter, first): &(String, usize), expected: usize| {
        let [t1, t2, t3, t4] = [1, 2, 3, 4].map(|bound| first + bound);
        let day_of = |bound: usize| format!("date_bin('1 day', ${bound}, timestamptz 'epoch')");
        format!(
            "select c.buckets, c.counts, q.days as quarter_days, q.quarters, e.days, e.expected
             from (select coalesce(array_agg(bucket), '{{}}') as buckets,
                          coalesce(array_agg(count), '{{}}') as counts
                   from ({rows}) b) c,
                  (select coalesce(array_agg(date_part('epoch', day)::int8), '{{}}') as days,
                          coalesce(array_agg(counts), '{{}}') as quarters
                   from rollups_quarter_day
                   where {filter} and day >= {} and day < ${t4}
                     and (day < ${t2} or day >= {})) q,
                  (select coalesce(array_agg(date_part('epoch', day)::int8), '{{}}') as days,
                          coalesce(array_agg(expected), '{{}}') as expected
                   from expectations_day
                   where service = ${expected} and country = coalesce(cast(${} as text), '')
                     and city = coalesce(cast(${} as text), '')
                     and day >= ${} and day < ${}) e",
            day_of(t1),
            day_of(t3),
            expected + 1,
            expected + 2,
            expected + 3,
            expected + 4
        )
    };
    let [city, country, world] = counts_series(&POSTGRES);
    Statements {
        counts: [false, true].map(|edges| {
            let rows = CountsStatements::new(&POSTGRES, edges, false);
            CountsStatements {
                city: answer(&rows.city, &city, 10),
                country: answer(&rows.country, &country, 9),
                world: answer(&rows.world, &world, 10),
            }
        }),
        ..POSTGRES_TIERED.clone()
    }
});

/// Postgres' region totals as a regions answer reads them: each region's row with its
/// expectation day rows in range as two arrays, `days` (unix seconds) and `expected` (empty
/// without any; in no order, as [`POSTGRES_COUNTS_EXPECTED`]'s), and on every row the open
/// incidents of the level as three arrays, `open_countries`, `open_cities` (empty for none)
/// and `open_ids`, newest first (one row with null region columns when no region has a
/// count), as [`super::ReadStore::region_counts_expected`] reads them. Bound after the
/// totals' own: first day ($5), end ($6), the level's incident scope ($7), the country or
/// null ($8).
pub(super) static POSTGRES_REGIONS_EXPECTED: LazyLock<(String, String)> = LazyLock::new(|| {
    let rows = &*POSTGRES_TIERED;
    let answer = |totals: &str| {
        format!(
            "select r.country, r.city, r.count, r.days, r.expected,
                    o.countries as open_countries, o.cities as open_cities, o.ids as open_ids
             from (select coalesce(array_agg(coalesce(country, '') order by n), '{{}}') as countries,
                          coalesce(array_agg(coalesce(city, '') order by n), '{{}}') as cities,
                          coalesce(array_agg(id order by n), '{{}}') as ids
                   from (select scope, country, city, id, row_number() over () as n
                         from (select scope, country, city, id from incidents
                               where service = $1 and status = 'open'
                                 and (cast($8 as text) is null or country = $8)
                               order by started_at desc, id desc
                               limit {}) newest) i
                   where scope = $7) o
             left join (
                 select t.country, t.city, t.count,
                        coalesce(e.days, '{{}}') as days, coalesce(e.expected, '{{}}') as expected
                 from ({totals}) t
                 left join lateral (
                     select array_agg(date_part('epoch', day)::int8) as days,
                            array_agg(expected) as expected
                     from expectations_day
                     where service = $1 and country = t.country and city = t.city
                       and day >= $5 and day < $6
                 ) e on true
             ) r on true",
            super::roles::REGIONS_OPEN_INCIDENTS
        )
    };
    (answer(&rows.country_totals), answer(&rows.city_totals))
});

/// Postgres' statements, built once.
pub(super) static POSTGRES_TIERED: LazyLock<Statements> =
    LazyLock::new(|| Statements::new(&POSTGRES));

/// SQLite's statements, built once.
pub(super) static SQLITE_TIERED: LazyLock<Statements> = LazyLock::new(|| Statements::new(&SQLITE));
