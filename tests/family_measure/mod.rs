//! Measuring the detector on a scenario family: draw each seed's scenario, import them all into one database, run `redetect` once, and score every seed — shared by `tests/low_count_family.rs` and `examples/low_count_family.rs`.
//!
//! All seeds share one database so there is one import and one redetect, not one per seed:
//! each seed's services are renamed `<slug>-s<seed>` (e.g. `x-s7`) and added to the catalog.
//! That keeps the measurement faithful because nothing in detection crosses services: every
//! series (a service worldwide, per country, per city) has its own state, a thin series
//! borrows only from its own service's parent, a global incident counts only its own
//! service's countries, and dedup is per service. All seeds share the family's calendar, so
//! redetect replays the same minutes for each of them as it would alone.

// Two targets include this file, and each uses only part of it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::ops::RangeInclusive;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use chrono::{DateTime, Utc};
use outagewatch::app;
use outagewatch::config::Settings;
use outagewatch::detector;
use outagewatch::domain::incidents::{Incident, Scope};
use outagewatch::ingest::import::{self, ImportSummary};
use outagewatch::store::{IncidentQuery, Store};
use outagewatch_scenario::{self as scenario, Drawn, DrawnSurge, Family, CSV_HEADER};

/// A surge is found when a country incident of its series is detected at most this many
/// minutes after the surge starts.
pub const FOUND_WITHIN_MINUTES: i64 = 20;

/// After a surge ends, the detector's rolling 15-minute count still holds surge reports for
/// this long, so an incident starting then is the surge's, not a false one.
pub const WINDOW_TAIL_MINUTES: i64 = 15;

/// Most incidents read back; more than this fails the measurement rather than truncating it.
const MAX_INCIDENTS: u32 = 100_000;

/// The minute the detector opened `incident`, which latency is measured to (not `started_at`,
/// the back-dated first surging minute, which the detector only knows a few minutes later).
pub fn detection_minute(incident: &Incident) -> DateTime<Utc> {
    incident.detected_at
}

/// The service a seed's copy of `slug` is imported under.
pub fn seeded_service(slug: &str, seed: u64) -> String {
    format!("{slug}-s{seed}")
}

/// The seed a seeded service slug belongs to (`x-s7` → 7).
fn seed_of_service(slug: &str) -> Option<u64> {
    slug.rsplit_once("-s")?.1.parse().ok()
}

/// What the detector did with one seed.
#[derive(Debug, Clone)]
pub struct SeedOutcome {
    pub seed: u64,
    /// As drawn (with the family's service slug, not the seeded one).
    pub surge: DrawnSurge,
    /// A country incident of the surging series was detected within [`FOUND_WITHIN_MINUTES`].
    pub found: bool,
    /// Minutes from the surge start to the first detection, at or after it, of a country
    /// incident of the surging series overlapping the surge (found or not; negative only
    /// when the one such incident opened before the surge); `None` when there is none.
    pub latency_minutes: Option<i64>,
    /// Incidents of this seed (any scope) that overlap no surge of their service and place.
    pub false_incidents: Vec<Incident>,
    /// Every incident of this seed.
    pub incidents: usize,
}

/// The outcome of every seed, with what the run cost.
#[derive(Debug, Clone)]
pub struct Measurement {
    pub family: String,
    pub outcomes: Vec<SeedOutcome>,
    pub imported: ImportSummary,
    /// Wall-clock time of the import.
    pub import_time: Duration,
    /// Wall-clock time of `redetect`.
    pub redetect_time: Duration,
}

impl Measurement {
    /// How many seeds' surges were found.
    pub fn found(&self) -> usize {
        self.outcomes.iter().filter(|o| o.found).count()
    }

    /// Per seed, in seed order: found or not.
    pub fn found_by_seed(&self) -> Vec<bool> {
        self.outcomes.iter().map(|o| o.found).collect()
    }

    /// False incidents over all seeds.
    pub fn false_incidents(&self) -> usize {
        self.outcomes.iter().map(|o| o.false_incidents.len()).sum()
    }

    /// Latencies of the found seeds, smallest first.
    fn found_latencies(&self) -> Vec<i64> {
        let mut latencies: Vec<i64> = self
            .outcomes
            .iter()
            .filter(|o| o.found)
            .filter_map(|o| o.latency_minutes)
            .collect();
        latencies.sort_unstable();
        latencies
    }

    /// The median detection latency of the found seeds, in minutes (the mean of the middle two
    /// for an even count); `None` when nothing was found.
    pub fn median_latency_minutes(&self) -> Option<f64> {
        let latencies = self.found_latencies();
        let n = latencies.len();
        match n {
            0 => None,
            _ if n % 2 == 1 => Some(latencies[n / 2] as f64),
            _ => Some((latencies[n / 2 - 1] + latencies[n / 2]) as f64 / 2.0),
        }
    }

    /// The longest detection latency of the found seeds, in minutes.
    pub fn max_latency_minutes(&self) -> Option<i64> {
        self.found_latencies().last().copied()
    }

    /// The per-seed table and the totals, in Markdown.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        out.push_str(
            "| seed | level / 15 min | factor | duration | surge start (UTC) | found | latency | false incidents |\n\
             |---|---|---|---|---|---|---|---|\n",
        );
        for o in &self.outcomes {
            let latency = match o.latency_minutes {
                Some(minutes) if o.found => format!("{minutes} min"),
                Some(minutes) => format!("({minutes} min, late)"),
                None => "–".to_owned(),
            };
            let _ = writeln!(
                out,
                "| {} | {:.1} | {:.2}× | {} min | {} | {} | {} | {} |",
                o.seed,
                o.surge.level_15m,
                o.surge.factor,
                o.surge.duration_minutes,
                o.surge.start.format("%a %Y-%m-%d %H:%M"),
                if o.found { "yes" } else { "no" },
                latency,
                o.false_incidents.len(),
            );
        }
        let minutes = |m: Option<f64>| m.map_or("–".to_owned(), |m| format!("{m} min"));
        let _ = writeln!(
            out,
            "\n**Found {}/{}**; latency of the found: median {}, max {}; **false incidents: {}**.",
            self.found(),
            self.outcomes.len(),
            minutes(self.median_latency_minutes()),
            minutes(self.max_latency_minutes().map(|m| m as f64)),
            self.false_incidents(),
        );
        out
    }
}

/// Draws `seeds` from `family`, imports them into the empty database at `database_url`, runs
/// `redetect` over the whole calendar and scores every seed (see the module).
pub async fn measure(
    family: &Family,
    seeds: RangeInclusive<u64>,
    database_url: &str,
) -> anyhow::Result<Measurement> {
    let drawn: Vec<Drawn> = seeds.map(|seed| family.draw(seed)).collect();
    ensure!(!drawn.is_empty(), "no seeds to measure");
    let end = drawn[0].scenario.end();
    ensure!(
        drawn.iter().all(|d| d.scenario.end() == end),
        "the seeds' scenarios end at different times"
    );

    let dir = tempfile::tempdir()?;
    let mut files = Vec::with_capacity(drawn.len());
    let mut services = BTreeMap::new();
    for d in &drawn {
        let path = dir.path().join(format!("seed-{}.csv", d.seed));
        write_seeded_csv(d, &path, &mut services)?;
        files.push(path);
    }

    let settings = settings_for(database_url, &services)?;
    let store: Arc<dyn Store> = app::open_store(&settings).await?;
    let catalog = app::catalog(&settings);
    let started = Instant::now();
    let (ingest, writer) = app::start_ingest(store.clone(), &settings);
    let mut imported = ImportSummary::default();
    let mut rejected = Vec::new();
    for path in &files {
        let summary = import::import_file(path, &ingest, &catalog, |line| rejected.push(line))
            .await
            .with_context(|| format!("importing {}", path.display()))?;
        imported.rows += summary.rows;
        imported.stored += summary.stored;
        imported.counted += summary.counted;
        imported.already_stored += summary.already_stored;
        imported.rejected += summary.rejected;
    }
    drop(ingest);
    writer.await?;
    ensure!(
        rejected.is_empty(),
        "rejected rows: {:?}",
        &rejected[..rejected.len().min(5)]
    );
    let import_time = started.elapsed();

    let started = Instant::now();
    let summary = detector::redetect(
        store.clone(),
        Arc::new(catalog),
        &settings.detector,
        None,
        Some(end),
        end,
    )
    .await?;
    let redetect_time = started.elapsed();
    let incidents = store
        .incidents(&IncidentQuery {
            limit: MAX_INCIDENTS,
            ..IncidentQuery::default()
        })
        .await?;
    ensure!(
        incidents.len() == summary.incidents,
        "read {} incidents back, redetect found {}",
        incidents.len(),
        summary.incidents
    );

    let outcomes = drawn
        .iter()
        .map(|d| {
            let own: Vec<&Incident> = incidents
                .iter()
                .filter(|i| seed_of_service(&i.service) == Some(d.seed))
                .collect();
            score(d, &own, end)
        })
        .collect();
    Ok(Measurement {
        family: family.name().to_owned(),
        outcomes,
        imported,
        import_time,
        redetect_time,
    })
}

/// Scores one seed from its own incidents (those of its seeded services); incidents still
/// open count as lasting until `end`.
pub fn score(drawn: &Drawn, incidents: &[&Incident], end: DateTime<Utc>) -> SeedOutcome {
    let surge = &drawn.surge;
    let service = seeded_service(&surge.service, drawn.seed);
    let window_end = surge.end() + chrono::Duration::minutes(WINDOW_TAIL_MINUTES);
    let overlaps_surge =
        |i: &Incident| i.started_at < window_end && i.resolved_at.unwrap_or(end) > surge.start;
    // The surge's own place: its service worldwide, its country, a city of its country.
    let at_surge_place = |i: &Incident| {
        i.service == service
            && (i.scope == Scope::Global || i.country.as_deref() == Some(surge.country.as_str()))
    };
    let latencies: Vec<i64> = incidents
        .iter()
        .filter(|i| i.scope == Scope::Country && at_surge_place(i) && overlaps_surge(i))
        .map(|i| (detection_minute(i) - surge.start).num_minutes())
        .collect();
    // The first detection at or after the surge start; one before it (an incident already
    // open when the surge began) only when there is no other.
    let latency_minutes = latencies
        .iter()
        .filter(|&&m| m >= 0)
        .min()
        .or(latencies.iter().min())
        .copied();
    let found = latency_minutes.is_some_and(|m| (0..=FOUND_WITHIN_MINUTES).contains(&m));
    let false_incidents = incidents
        .iter()
        .filter(|i| !(at_surge_place(i) && overlaps_surge(i)))
        .map(|i| (*i).clone())
        .collect();
    SeedOutcome {
        seed: drawn.seed,
        surge: surge.clone(),
        found,
        latency_minutes,
        false_incidents,
        incidents: incidents.len(),
    }
}

/// Writes a seed's rows as import CSV with its services renamed; adds each renamed slug to
/// `services` (renamed → original).
fn write_seeded_csv(
    drawn: &Drawn,
    path: &Path,
    services: &mut BTreeMap<String, String>,
) -> anyhow::Result<()> {
    let mut writer = csv::Writer::from_path(path)?;
    writer.write_record(CSV_HEADER)?;
    // Original slug → seeded slug, so a row costs a lookup rather than a format.
    let mut renamed: BTreeMap<String, String> = BTreeMap::new();
    let mut failed = None;
    scenario::generate(&drawn.scenario, |row| {
        if failed.is_some() {
            return;
        }
        if !renamed.contains_key(&row.service) {
            let seeded = seeded_service(&row.service, drawn.seed);
            renamed.insert(row.service.clone(), seeded);
        }
        let seeded = &renamed[&row.service];
        let received_at = row
            .received_at
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let written = writer.write_record([
            received_at.as_str(),
            seeded,
            &row.country,
            row.city.as_deref().unwrap_or(""),
            row.problem,
            &row.reporter,
        ]);
        if let Err(e) = written {
            failed = Some(e);
        }
    });
    if let Some(e) = failed {
        return Err(e.into());
    }
    writer.flush()?;
    services.extend(renamed.into_iter().map(|(slug, seeded)| (seeded, slug)));
    Ok(())
}

/// Settings for the measurement's database: the detector task off (redetect runs by hand)
/// and a catalog of exactly the seeded services, each named after the service it copies.
fn settings_for(
    database_url: &str,
    services: &BTreeMap<String, String>,
) -> anyhow::Result<Settings> {
    let defaults = app::catalog(&Settings::from_toml(&[])?);
    let mut text = format!("[database]\nurl = \"{database_url}\"\n[detector]\nenabled = false\n");
    for (seeded, slug) in services {
        let name = defaults
            .parse(slug)
            .map_or_else(|_| slug.clone(), |s| s.name.clone());
        let seed = seed_of_service(seeded).unwrap_or_default();
        let _ = write!(
            text,
            "[[services]]\nslug = \"{seeded}\"\nname = \"{name}, seed {seed}\"\n"
        );
    }
    Ok(Settings::from_toml(&[&text])?)
}
