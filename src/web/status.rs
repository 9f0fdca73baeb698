//! The status pages: `/status` (every service and its status), `/status/{service}` (chart, banner, incidents, places, problem mix and world map; the script refreshes its live parts) and `/incidents/{id}` (timeline, peak, cities and scope).

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, TimeDelta, Utc};
use maud::{html, Markup};
use serde::Deserialize;
use uuid::Uuid;

use super::form::problem_label;
use super::layout::{count, page, respond, time, Extras, PageError};
use super::map;
use super::WebState;
use crate::domain::buckets::{floor_to, TimeRange};
use crate::domain::geo::CountryCode;
use crate::domain::incidents::IncidentQuery;
use crate::domain::incidents::{Incident, Scope, Status};
use crate::domain::report::{Problem, Service};
use crate::domain::series::SeriesKey;
use crate::http::ApiError;
use crate::read::counts::{CountsQuery, Interval};
use crate::read::regions::{Level, RegionRead as Region, RegionsQuery};
use crate::read::ProblemCount;

// A service is `elevated` at the ratio and count at which a region is.
use crate::read::regions::{ELEVATED_MIN_COUNT, ELEVATED_RATIO};

/// Rows the places tables show.
const TABLE_ROWS: usize = 10;

/// `GET /status`
pub(super) async fn list_statuses(State(state): State<WebState>) -> Result<Response, PageError> {
    let now = crate::runtime::clock::now();
    let services = state
        .reads
        .services(&state.catalog.current(), now)
        .await
        .map_err(|e| PageError(ApiError::from_read(e)))?;
    let markup = page(
        "Status of all services",
        "services",
        Extras::None,
        html! {
            h1 { "Status of all services" }
            p.lead { "Whether people are reporting problems with each service right now." }
            table.services {
                caption.visually-hidden { "Services and their status" }
                thead { tr { th scope="col" { "Service" } th scope="col" { "Status" } th scope="col" .num { "Open incidents" } th scope="col" .num { "Reports, last 24 h" } } }
                tbody {
                    @for service in &services {
                        tr data-service=(service.slug) {
                            th scope="row" { a href={ "/status/" (service.slug) } { (service.name) } }
                            td { (status_tag(service.state.as_str())) }
                            td.num { (service.open_incidents) }
                            td.num { (count(service.reports_24h)) }
                        }
                    }
                }
            }
        },
    );
    Ok(respond(StatusCode::OK, markup))
}

/// How a status reads, as a tag.
fn status_tag(status: &str) -> Markup {
    let text = match status {
        "incident" => "Outage",
        "elevated" => "More reports than usual",
        _ => "Normal",
    };
    html! { span class={ "tag tag-" (status) } { (text) } }
}

/// `?live=1`: the page without the map's outlines, for the script's refresh.
#[derive(Deserialize)]
pub(super) struct StatusQuery {
    live: Option<String>,
}

/// `GET /status/{service}`
pub(super) async fn show_status(
    State(state): State<WebState>,
    Path(slug): Path<String>,
    Query(query): Query<StatusQuery>,
) -> Result<Response, PageError> {
    let service = state
        .catalog
        .current()
        .parse(&slug)
        .map_err(|_| PageError(ApiError::NotFound))?
        .clone();
    let slug = service.slug.as_str();
    let reads = &state.reads;
    let failed = |e| PageError(ApiError::from_read(e));
    let now = crate::runtime::clock::now();
    let counts = reads
        .counts(
            &CountsQuery {
                series: SeriesKey::global(slug),
                interval: Interval::default(),
                from: None,
                to: None,
            },
            now,
        )
        .await
        .map_err(failed)?;
    let regions = |level| RegionsQuery {
        service: slug.to_owned(),
        country: None,
        level,
        window: TimeDelta::hours(1),
    };
    let mut countries = reads
        .regions(&regions(Level::Country), now)
        .await
        .map_err(failed)?
        .regions;
    countries.truncate(300);
    let mut cities = reads
        .regions(&regions(Level::City), now)
        .await
        .map_err(failed)?
        .regions;
    cities.truncate(10);
    let last_15m = reads
        .total(
            &SeriesKey::global(slug),
            TimeRange::new(now - TimeDelta::minutes(15), now),
        )
        .await
        .map_err(failed)?;
    let problems = reads
        .problems(
            &SeriesKey::global(slug),
            TimeRange::new(now - TimeDelta::days(1), now),
        )
        .await
        .map_err(failed)?;
    let incidents = |status: Option<Status>, since: Option<DateTime<Utc>>| IncidentQuery {
        service: Some(slug.to_owned()),
        status,
        since,
        limit: 20,
        ..IncidentQuery::default()
    };
    let mut open = reads
        .incidents(&incidents(Some(Status::Open), None))
        .await
        .map_err(failed)?;
    // The widest first: the global incident, then countries, then cities.
    open.sort_by_key(|i| (i.scope, std::cmp::Reverse(i.started_at)));
    let recent = reads
        .incidents(&incidents(
            Some(Status::Resolved),
            Some(now - TimeDelta::days(7)),
        ))
        .await
        .map_err(failed)?;
    let reports_24h: i64 = counts.buckets.iter().map(|b| b.count).sum();
    let expected_15m = counts.buckets.last().and_then(|b| b.expected);
    let status = if !open.is_empty() {
        "incident"
    } else if last_15m >= ELEVATED_MIN_COUNT
        && expected_15m.is_some_and(|e| last_15m as f64 >= ELEVATED_RATIO * e)
    {
        "elevated"
    } else {
        "normal"
    };
    let live = query.live.is_some();
    let name = service.name.as_str();
    let markup = page(
        &format!("{name} status"),
        "status",
        Extras::Chart,
        html! {
            h1 { (name) " status" }
            section #banner data-live class={ "banner banner-" (status) } aria-live="polite" {
                p.headline {
                    @match status {
                        "incident" => { "People are reporting an outage of " (name) "." },
                        "elevated" => { "More people than usual are reporting problems with " (name) "." },
                        _ => { "No problems with " (name) " beyond the usual." },
                    }
                }
                p.figures {
                    span { strong #reports-15m { (count(last_15m)) } " reports in the last 15 minutes" }
                    @if let Some(expected) = expected_15m {
                        span { " (about " (format!("{expected:.0}")) " is normal)" }
                    }
                    " · "
                    span { strong #reports-24h { (count(reports_24h)) } " in the last 24 hours" }
                }
                p { a.button href={ "/report/" (slug) } { "Report a problem with " (name) } }
            }
            section.chart-section aria-labelledby="chart-heading" {
                h2 #chart-heading { "Reports per 15 minutes, last 24 hours" }
                div #chart .chart data-service=(slug) role="img"
                    aria-label={ "Chart of reports about " (name) " per 15 minutes over the last 24 hours, with the normal range shaded" } {}
                p.legend { span.key.key-reports {} " Reports " span.key.key-normal {} " Normal range" }
            }
            section #incidents data-live aria-labelledby="incidents-heading" {
                h2 #incidents-heading { "Incidents" }
                @if open.is_empty() && recent.is_empty() {
                    p { "No incidents in the last 7 days." }
                }
                @if !open.is_empty() {
                    h3 { "Open now" }
                    (incident_list(&open))
                }
                @if !recent.is_empty() {
                    h3 { "Resolved in the last 7 days" }
                    (incident_list(&recent))
                }
            }
            div.columns {
                section.map-section aria-labelledby="map-heading" {
                    h2 #map-heading { "Where, against normal (last hour)" }
                    @if !live { (map::world_map(&countries)) }
                    (map::levels(&countries))
                    p.legend {
                        @for (level, text) in [(1, "usual"), (2, "1.5× normal"), (3, "3×"), (4, "10× or outage")] {
                            span class={ "key level-" (level) } {} " " (text) " "
                        }
                    }
                }
                section #problems data-live aria-labelledby="problems-heading" {
                    h2 #problems-heading { "What's broken (last 24 hours)" }
                    (problem_mix(&problems))
                }
            }
            section #places data-live aria-labelledby="places-heading" {
                h2 #places-heading { "Most affected places (last hour)" }
                div.columns {
                    (region_table("Countries", "countries", &countries, false))
                    (region_table("Cities", "cities", &cities, true))
                }
            }
        },
    );
    Ok(respond(StatusCode::OK, markup))
}

/// Where an incident is, in words: "worldwide", "Pakistan", "Lahore, Pakistan".
fn place(incident: &Incident) -> String {
    let country = incident
        .country
        .as_deref()
        .map(|c| CountryCode::parse(c).map_or(c.to_owned(), |c| c.name().to_owned()));
    match (incident.scope, country, incident.city.as_deref()) {
        (Scope::Global, _, _) | (_, None, _) => "Worldwide".to_owned(),
        (Scope::City, Some(country), Some(city)) => format!("{city}, {country}"),
        (_, Some(country), _) => country,
    }
}

fn incident_list(incidents: &[Incident]) -> Markup {
    html! {
        ul.incidents {
            @for incident in incidents {
                li class={ "incident incident-" (incident.status.as_str()) } {
                    a.place href={ "/incidents/" (incident.id) } { (place(incident)) }
                    " "
                    span.when {
                        "since " (time(incident.started_at))
                        @if let Some(resolved) = incident.resolved_at { ", ended " (time(resolved)) }
                    }
                    p.summary { (incident.summary) }
                }
            }
        }
    }
}

/// Each problem kind's share, as a bar (an SVG rectangle: no inline style needed).
fn problem_mix(problems: &[ProblemCount]) -> Markup {
    let total: i64 = problems.iter().map(|p| p.count).sum();
    html! {
        @if total == 0 {
            p { "No reports in the last 24 hours." }
        } @else {
            ul.mix {
                @for ProblemCount { problem: kind, count: n } in problems {
                    @let share = *n as f64 * 100.0 / total as f64;
                    @let label: &str = match Problem::parse(kind) { Ok(p) => problem_label(p), Err(_) => kind };
                    li data-problem=(kind) {
                        span.mix-label { (label) }
                        svg.bar viewBox="0 0 100 10" preserveAspectRatio="none" aria-hidden="true" {
                            rect width=(format!("{share:.1}")) height="10" {}
                        }
                        span.mix-share { (format!("{share:.0}%")) }
                    }
                }
            }
        }
    }
}

fn region_table(caption: &str, id: &str, regions: &[Region], cities: bool) -> Markup {
    html! {
        table #(id) .places {
            caption { (caption) }
            thead {
                tr {
                    th scope="col" { @if cities { "City" } @else { "Country" } }
                    th scope="col" .num { "Reports" }
                    th scope="col" .num { "× normal" }
                    th scope="col" { "Status" }
                }
            }
            tbody {
                @if regions.is_empty() {
                    tr { td colspan="4" { "No reports in the last hour." } }
                }
                @for region in regions.iter().take(TABLE_ROWS) {
                    tr data-cc=(region.country) data-level=(map::level(region)) {
                        th scope="row" {
                            (region.name)
                            @if cities {
                                span.country { ", " (CountryCode::parse(&region.country).map_or(region.country.as_str(), |c| c.name())) }
                            }
                        }
                        td.num { (count(region.count)) }
                        td.num { @match region.ratio { Some(r) => (format!("{r:.1}")), None => "–" } }
                        td { (status_tag(region.status.as_str())) }
                    }
                }
            }
        }
    }
}

/// `GET /incidents/{id}`
pub(super) async fn show_incident(
    State(state): State<WebState>,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let id: Uuid = id.parse().map_err(|_| PageError(ApiError::NotFound))?;
    let lookup = |id: Uuid| {
        let reads = state.reads.clone();
        async move {
            reads
                .incident(id)
                .await
                .map_err(|e| PageError(ApiError::from_read(e)))
        }
    };
    let incident = lookup(id).await?.ok_or(PageError(ApiError::NotFound))?;
    let parent = match incident.parent_id {
        Some(parent) => lookup(parent).await?,
        None => None,
    };
    let catalog = state.catalog.current();
    let service: Option<&Service> = catalog.parse(&incident.service).ok();
    let name = service.map_or(incident.service.as_str(), |s| s.name.as_str());
    let where_ = place(&incident);
    let heading = format!("{name}: {where_}");
    let times = chart_range(&incident);
    let ratio = |count: f64, expected: f64| {
        (expected > 0.0).then(|| format!(" ({:.1}× normal)", count / expected))
    };
    let markup = page(
        &heading,
        "incident",
        Extras::Chart,
        html! {
            p.crumbs { a href={ "/status/" (incident.service) } { (name) " status" } }
            h1 { (heading) " " (status_tag(if incident.status == Status::Open { "incident" } else { "normal" })) }
            p.summary.lead { (incident.summary) }
            dl.facts {
                dt { "Status" } dd #incident-status { @if incident.status == Status::Open { "Open" } @else { "Resolved" } }
                dt { "Scope" } dd #incident-scope {
                    @match incident.scope {
                        Scope::Global => "Global: reports rose worldwide or in several countries at once",
                        Scope::Country => "One country",
                        Scope::City => "One city",
                    }
                }
                @if let Some(parent) = &parent {
                    dt { "Part of" } dd { a #parent-link href={ "/incidents/" (parent.id) } { (parent_phrase(name, parent)) } }
                }
                dt { "Peak" } dd #incident-peak {
                    (count(incident.peak_count.round() as i64)) " reports per 15 minutes at " (time(incident.peak_at))
                    ", about " (format!("{:.0}", incident.expected_at_peak)) " normal"
                    (ratio(incident.peak_count, incident.expected_at_peak).unwrap_or_default())
                }
            }
            section aria-labelledby="timeline-heading" {
                h2 #timeline-heading { "Timeline" }
                ol #timeline .timeline {
                    // The start is back-dated to the first surging minute; the count is the
                    // one the detector saw when it opened the incident.
                    li { (time(incident.started_at)) " — started: reports rose above normal" }
                    li #incident-detected { (time(incident.detected_at)) " — detected: " (count(incident.start_count.round() as i64)) " reports per 15 minutes" }
                    li { (time(incident.peak_at)) " — peak: " (count(incident.peak_count.round() as i64)) " reports per 15 minutes" }
                    @match incident.resolved_at {
                        Some(resolved) => li { (time(resolved)) " — ended" },
                        None => li { "Still going on (last change " (time(incident.updated_at)) ")" },
                    }
                }
            }
            section.chart-section aria-labelledby="chart-heading" {
                h2 #chart-heading { "Reports per 15 minutes" }
                div #chart .chart data-service=(incident.service)
                    data-country=[incident.country.as_deref()] data-city=[incident.city.as_deref()]
                    data-from=(times.0.to_rfc3339()) data-to=(times.1.to_rfc3339())
                    role="img" aria-label={ "Chart of reports per 15 minutes during the incident, with the normal range shaded" } {}
                p.legend { span.key.key-reports {} " Reports " span.key.key-normal {} " Normal range" }
            }
            div.columns {
                section aria-labelledby="cities-heading" {
                    h2 #cities-heading { "Cities with most reports" }
                    @if incident.top_cities.is_empty() {
                        p { "No city was named in these reports." }
                    } @else {
                        table #incident-cities .places {
                            caption.visually-hidden { "Cities with most reports during the incident" }
                            thead { tr { th scope="col" { "City" } th scope="col" .num { "Reports" } } }
                            tbody {
                                @for city in &incident.top_cities {
                                    tr { th scope="row" { (city.city) ", " (CountryCode::parse(&city.country).map_or(city.country.as_str(), |c| c.name())) } td.num { (count(city.count)) } }
                                }
                            }
                        }
                    }
                }
                section aria-labelledby="mix-heading" {
                    h2 #mix-heading { "What's broken" }
                    (problem_mix(&shares_as_counts(&incident.problems)))
                }
            }
        },
    );
    Ok(respond(StatusCode::OK, markup))
}

/// The incident's chart: from three hours before it started to an hour after it ended (or now).
fn chart_range(incident: &Incident) -> (DateTime<Utc>, DateTime<Utc>) {
    let now = crate::runtime::clock::now();
    let from = floor_to(incident.started_at - TimeDelta::hours(3), 900);
    let end = incident
        .resolved_at
        .map_or(now, |r| r + TimeDelta::hours(1));
    let to = floor_to(end.min(now), 900) + TimeDelta::minutes(15);
    (from, to)
}

/// The incident's problem shares in thousandths, so they draw like counts.
fn shares_as_counts(problems: &BTreeMap<String, f64>) -> Vec<ProblemCount> {
    problems
        .iter()
        .map(|(kind, share)| ProblemCount {
            problem: kind.clone(),
            count: (share * 1000.0).round() as i64,
        })
        .collect()
}

/// "the worldwide X incident", "the X incident in Pakistan".
fn parent_phrase(name: &str, parent: &Incident) -> String {
    match parent.scope {
        Scope::Global => format!("the worldwide {name} incident"),
        _ => format!("the {name} incident in {}", place(parent)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problem_shares_become_thousandths() {
        let shares = BTreeMap::from([("app".to_owned(), 0.558), ("login".to_owned(), 0.0084)]);
        let counts: Vec<(String, i64)> = shares_as_counts(&shares)
            .into_iter()
            .map(|p| (p.problem, p.count))
            .collect();
        assert_eq!(counts, [("app".to_owned(), 558), ("login".to_owned(), 8)]);
    }
}
