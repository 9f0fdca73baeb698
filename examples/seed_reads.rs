//! Fills a Postgres database with the read benchmark's data set: minute rollups (and their quarter-hour day rows and hour tiers) and quarter-hour expectations for the last N days of many services, countries and cities.
//!
//! `cargo run --release --example seed_reads -- URL [DAYS] [SERVICES] [COUNTRIES] [CITIES] [TARGETS_DIR]`
//! (defaults 30 days, 10 services, 50 countries, 20 cities per country); with TARGETS_DIR it
//! also writes the read benchmark's request targets there (`counts.txt`, `regions.txt`:
//! one country's last 7 days at 15m; countries and one country's cities over the last
//! hour), for `outagewatch-tools loadgen --get-file`. The traffic is
//! made up but shaped like the real thing: a diurnal curve in each country's local time,
//! bigger services and countries reporting more, three of four reports naming one of the
//! country's most populous cities, and a row only for a minute with reports (as the ingest
//! path writes them). It is seeded, so every run writes the same rows.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use chrono::{DateTime, TimeDelta, Utc};
use outagewatch::domain::geo::{gazetteer, CountryCode};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Poisson};
use sqlx::postgres::PgPoolOptions;

/// Reports per minute of the biggest service in the biggest country at its daily peak.
const PEAK_RATE_PER_MINUTE: f64 = 12.0;
/// Share of reports that name a city.
const CITY_SHARE: f64 = 0.75;
/// Rows sent to COPY per round trip.
const COPY_CHUNK_BYTES: usize = 4 << 20;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let url = args
        .first()
        .expect("usage: seed_reads URL [DAYS] [SERVICES] [COUNTRIES] [CITIES]");
    let number = |i: usize, default: usize| {
        args.get(i)
            .map_or(default, |a| a.parse().expect("a number"))
    };
    let (days, service_count, country_count, city_count) =
        (number(1, 30), number(2, 10), number(3, 50), number(4, 20));

    let settings = outagewatch::config::Settings::load(None).expect("default settings");
    let services: Vec<String> = settings
        .services
        .iter()
        .take(service_count)
        .map(|s| s.slug.clone())
        .collect();
    let countries = biggest_countries(country_count, city_count);

    let options = outagewatch::store::ConnectOptions {
        max_connections: 1,
        read_connections: 1,
        acquire_timeout: std::time::Duration::from_secs(10),
    };
    let store = outagewatch::store::connect(url, &options)
        .await
        .expect("connect");
    store.migrate().await.expect("migrate");
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .connect(url)
        .await
        .expect("connect");

    let now = outagewatch::runtime::clock::now();
    let end =
        DateTime::from_timestamp(now.timestamp() - now.timestamp().rem_euclid(900), 0).unwrap();
    let start = end - TimeDelta::days(days as i64);
    let minutes = (end - start).num_minutes() as usize;
    // The minute counts' day partitions, as an import would make them.
    let seeded_days: Vec<_> = (0..=days as i64)
        .map(|d| (start + TimeDelta::days(d)).date_naive())
        .collect();
    store
        .prepare_days(&seeded_days)
        .await
        .expect("prepare days");
    println!(
        "seeding {} services x {} countries x {} cities, {days} days ({start} .. {end})",
        services.len(),
        countries.len(),
        city_count
    );

    let started = Instant::now();
    let mut rng = ChaCha8Rng::seed_from_u64(20250310);
    let mut rollups = Copy::start(
        &pool,
        "copy rollups_minute (service, country, city, minute, count) from stdin",
    )
    .await;
    let mut expectations = Copy::start(
        &pool,
        "copy expectations_day (service, country, city, day, expected) from stdin",
    )
    .await;
    let (mut rollup_rows, mut expectation_rows, mut reports) = (0u64, 0u64, 0u64);
    for (s, service) in services.iter().enumerate() {
        let service_weight = 1.0 / (1.0 + 0.4 * s as f64);
        for country in &countries {
            let peak = PEAK_RATE_PER_MINUTE * service_weight * country.weight;
            let rate = |minute: usize| peak * diurnal(start, minute, country.utc_offset_hours);
            // One count per minute for the country total and each city.
            let mut totals = vec![0u32; minutes];
            let mut cities = vec![vec![0u32; minutes]; country.cities.len()];
            for (minute, total) in totals.iter_mut().enumerate() {
                let lambda = rate(minute);
                let n = if lambda > 0.0 {
                    Poisson::new(lambda).unwrap().sample(&mut rng) as u32
                } else {
                    0
                };
                *total = n;
                for _ in 0..n {
                    if rng.gen_bool(CITY_SHARE) {
                        let city = pick(&country.city_weights, rng.gen::<f64>());
                        cities[city][minute] += 1;
                    }
                }
                reports += u64::from(n);
            }
            for (name, counts) in std::iter::once(("", &totals))
                .chain(country.cities.iter().map(String::as_str).zip(cities.iter()))
            {
                for (minute, &count) in counts.iter().enumerate() {
                    if count > 0 {
                        let at = start + TimeDelta::minutes(minute as i64);
                        rollups
                            .row(format_args!(
                                "{service}\t{}\t{name}\t{}\t{count}\n",
                                country.code,
                                at.format("%Y-%m-%d %H:%M:%S+00")
                            ))
                            .await;
                        rollup_rows += 1;
                    }
                }
            }
            // The detector's expectation per quarter hour: the rate it was drawn from.
            let shares = std::iter::once(("", 1.0)).chain(
                country
                    .cities
                    .iter()
                    .map(String::as_str)
                    .zip(country.city_weights.iter().map(|w| w * CITY_SHARE)),
            );
            // Stored a day per row, as the service stores them (src/store/expectations.rs):
            // the day's 96 quarters as a JSON array, null where the seeded range has none.
            for (name, share) in shares {
                let mut day = start - TimeDelta::seconds(start.timestamp().rem_euclid(86_400));
                while day < end {
                    let quarters: Vec<Option<f64>> = (0..96)
                        .map(|q| {
                            let at = day + TimeDelta::minutes(15 * q);
                            (at >= start && at < end).then(|| {
                                let first = (at - start).num_minutes() as usize;
                                let expected: f64 =
                                    (first..first + 15).map(rate).sum::<f64>() * share;
                                (expected * 1000.0).round() / 1000.0
                            })
                        })
                        .collect();
                    expectations
                        .row(format_args!(
                            "{service}\t{}\t{name}\t{}\t{}\n",
                            country.code,
                            day.format("%Y-%m-%d %H:%M:%S+00"),
                            serde_json::Value::from(quarters)
                        ))
                        .await;
                    expectation_rows += 1;
                    day += TimeDelta::days(1);
                }
            }
        }
        println!(
            "  {service}: {rollup_rows} rollup rows so far ({:.0} s)",
            started.elapsed().as_secs_f64()
        );
    }
    rollups.finish().await;
    expectations.finish().await;
    println!(
        "seeded {rollup_rows} rollup rows ({reports} reports) and {expectation_rows} expectation day rows in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    // The coarser rollup tiers, as the service keeps them beside the minutes it settles.
    for statement in [
        "insert into rollups_quarter_day (service, country, city, day, counts)
         select service, country, city, date_bin('1 day', minute, timestamptz 'epoch'),
                quarters_of(array_agg((date_part('epoch', minute)::int8 % 86400 / 900)::int4),
                            array_agg(count::int8))
         from rollups_minute group by 1, 2, 3, 4",
        "insert into rollups_hour (service, country, city, hour, count)
         select service, country, city, date_bin('1 hour', minute, timestamptz 'epoch'), sum(count)
         from rollups_minute group by 1, 2, 3, 4",
    ] {
        sqlx::query(statement)
            .execute(&pool)
            .await
            .expect("fill the rollup tiers");
    }
    // Fresh statistics and visibility map, as autovacuum would leave them on a live database.
    sqlx::query("vacuum analyze")
        .execute(&pool)
        .await
        .expect("vacuum");
    println!(
        "vacuumed and analysed after {:.0} s",
        started.elapsed().as_secs_f64()
    );

    if let Some(dir) = args.get(5) {
        let week_ago = end - TimeDelta::days(7);
        let mut counts = String::new();
        let mut regions = String::new();
        for service in &services {
            regions.push_str(&format!(
                "/api/v1/regions?service={service}&level=country&window=1h\n"
            ));
            for country in &countries {
                counts.push_str(&format!(
                    "/api/v1/counts?service={service}&country={}&interval=15m&from={}&to={}\n",
                    country.code,
                    week_ago.format("%Y-%m-%dT%H:%M:%SZ"),
                    end.format("%Y-%m-%dT%H:%M:%SZ")
                ));
                regions.push_str(&format!(
                    "/api/v1/regions?service={service}&level=city&country={}&window=1h\n",
                    country.code
                ));
            }
        }
        std::fs::write(format!("{dir}/counts.txt"), counts).expect("write counts.txt");
        std::fs::write(format!("{dir}/regions.txt"), regions).expect("write regions.txt");
    }
}

/// One seeded country: its code, its share of the traffic, its local time and cities.
struct Country {
    code: CountryCode,
    /// The country's traffic relative to the biggest (1.0).
    weight: f64,
    utc_offset_hours: f64,
    cities: Vec<String>,
    /// Each city's share of the country's city reports (sums to 1).
    city_weights: Vec<f64>,
}

/// The `count` countries with the most people in the gazetteer's cities, each with its
/// `cities` most populous cities.
fn biggest_countries(count: usize, cities: usize) -> Vec<Country> {
    let places = gazetteer();
    let mut countries: Vec<(CountryCode, f64)> = CountryCode::all()
        .map(|code| {
            (
                code,
                places
                    .cities_in(code)
                    .iter()
                    .map(|c| f64::from(c.population))
                    .sum(),
            )
        })
        .filter(|(code, _)| places.cities_in(*code).len() >= cities)
        .collect();
    countries.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.as_str().cmp(b.0.as_str())));
    countries.truncate(count);
    let biggest = countries.first().map_or(1.0, |c| c.1);
    countries
        .into_iter()
        .map(|(code, population)| {
            let mut top: Vec<_> = places.cities_in(code).iter().collect();
            top.sort_by_key(|c| (std::cmp::Reverse(c.population), c.geoname_id));
            // Two cities of one name share a rollup row: keep the bigger.
            let mut names = std::collections::HashSet::new();
            top.retain(|c| names.insert(c.name));
            top.truncate(cities);
            let total: f64 = top.iter().map(|c| f64::from(c.population)).sum();
            let longitude = top.iter().map(|c| c.longitude).sum::<f64>() / top.len() as f64;
            Country {
                code,
                // Square root: small countries report more than their size alone predicts.
                weight: (population / biggest).sqrt(),
                utc_offset_hours: (longitude / 15.0).round(),
                cities: top.iter().map(|c| c.name.to_owned()).collect(),
                city_weights: top
                    .iter()
                    .map(|c| f64::from(c.population) / total)
                    .collect(),
            }
        })
        .collect()
}

/// The daily curve: 1 at 20:00 local time, 0.15 at 04:00.
fn diurnal(start: DateTime<Utc>, minute: usize, utc_offset_hours: f64) -> f64 {
    let at = start + TimeDelta::minutes(minute as i64);
    let local_hours = (at.timestamp() as f64 / 3600.0 + utc_offset_hours).rem_euclid(24.0);
    let phase = (local_hours - 20.0) / 24.0 * std::f64::consts::TAU;
    0.15 + 0.85 * (1.0 + phase.cos()) / 2.0
}

/// The index whose cumulative weight first exceeds `u` (weights sum to 1).
fn pick(weights: &[f64], mut u: f64) -> usize {
    for (i, w) in weights.iter().enumerate() {
        if u < *w {
            return i;
        }
        u -= w;
    }
    weights.len() - 1
}

/// A COPY FROM STDIN fed in chunks.
struct Copy {
    statement: &'static str,
    buffer: String,
    connection: Option<sqlx::pool::PoolConnection<sqlx::Postgres>>,
}

impl Copy {
    async fn start(pool: &sqlx::PgPool, statement: &'static str) -> Copy {
        Copy {
            statement,
            buffer: String::with_capacity(COPY_CHUNK_BYTES + 1024),
            connection: Some(pool.acquire().await.unwrap()),
        }
    }

    async fn row(&mut self, row: std::fmt::Arguments<'_>) {
        use std::fmt::Write;
        self.buffer.write_fmt(row).unwrap();
        if self.buffer.len() >= COPY_CHUNK_BYTES {
            self.flush().await;
        }
    }

    async fn flush(&mut self) {
        let connection = self.connection.as_mut().unwrap();
        let mut copy = connection.copy_in_raw(self.statement).await.unwrap();
        copy.send(self.buffer.as_bytes()).await.unwrap();
        copy.finish().await.unwrap();
        self.buffer.clear();
    }

    async fn finish(mut self) {
        if !self.buffer.is_empty() {
            self.flush().await;
        }
    }
}
