//! For people and pages rather than programs: an Atom feed of a service's incidents and an SVG status badge.

use atom_syndication::{Content, Entry, Feed, Link, Text};
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::IntoParams;

use super::contract::{Country, ReadAnswers, Slug};
use super::extract::ApiQuery;
use super::params::country_parameter;
use super::{ApiError, AppState};
use crate::domain::geo::CountryCode;
use crate::domain::incidents::IncidentQuery;
use crate::domain::incidents::{Incident, Status};
use crate::domain::report::FieldError;
use crate::http::Problem;

/// Entries in a feed.
const FEED_ENTRIES: u32 = 50;

/// The service (slug and display name) and optional country of a feed or badge.
fn scope_of(
    state: &AppState,
    service: &str,
    country: Option<&str>,
) -> Result<(String, String, Option<CountryCode>), ApiError> {
    let mut errors = Vec::new();
    let country = country_parameter(country, &mut errors);
    match state.catalog.current().parse(service) {
        Ok(found) if errors.is_empty() => {
            Ok((found.slug.as_str().to_owned(), found.name.clone(), country))
        }
        Ok(_) => Err(ApiError::InvalidParameters(errors)),
        Err(e) => {
            errors.insert(0, e);
            Err(ApiError::InvalidParameters(errors))
        }
    }
}

/// The parameters of the Atom feed.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FeedParams {
    /// A service slug from the catalog.
    #[param(value_type = Slug, inline, example = "x")]
    service: Option<String>,
    /// Only this country (ISO 3166-1 alpha-2, any case).
    #[param(value_type = Option<Country>, inline, example = "PK")]
    country: Option<String>,
}

/// The parameters of a badge.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct BadgeParams {
    /// Only this country (ISO 3166-1 alpha-2, any case).
    #[param(value_type = Option<Country>, inline, example = "PK")]
    country: Option<String>,
}

/// `GET /feeds/incidents.atom?service=x[&country=PK]`
#[utoipa::path(
    get,
    path = "/feeds/incidents.atom",
    summary = "An Atom feed of a service's incidents",
    tag = "pages",
    description = "An Atom feed of the service's 50 latest incidents: title, summary sentence, \
        start, last change and a link to the incident's JSON.",
    params(FeedParams),
    responses(
        (status = 200, description = "The feed.", headers(
                ("ETag" = String, description = "A hash of the body; send it back in `If-None-Match`."),
                ("X-Data-Age" = String, description = "Only on an answer read from the read replica (`database.read_url`): seconds its data lagged the primary when computed, e.g. `0.0` (it had replayed everything) or `2.4`."),
                ("Cache-Control" = String, description = "`public, max-age=15`."),
            ), body = String, content_type = "application/atom+xml",
            example = "<?xml version=\"1.0\"?><feed xmlns=\"http://www.w3.org/2005/Atom\"><title>X (Twitter) incidents in Pakistan (outagewatch)</title>…</feed>"),
        ReadAnswers,
    )
)]
pub async fn incidents_feed(
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<FeedParams>,
) -> Result<Response, ApiError> {
    let service = params.service.as_deref().ok_or_else(|| {
        ApiError::InvalidParameters(vec![FieldError::new("service", "service is required")])
    })?;
    let (slug, name, country) = scope_of(&state, service, params.country.as_deref())?;
    let incidents = state
        .reads
        .incidents(&IncidentQuery {
            service: Some(slug.clone()),
            country: country.map(|c| c.as_str().to_owned()),
            limit: FEED_ENTRIES,
            ..IncidentQuery::default()
        })
        .await
        .map_err(ApiError::from_read)?;
    let mut feed = Feed::default();
    let place = country.map_or(String::new(), |c| format!(" in {}", c.name()));
    feed.set_title(Text::plain(format!(
        "{name} incidents{place} (outagewatch)"
    )));
    feed.set_id(format!(
        "urn:outagewatch:incidents:{slug}:{}",
        country.map_or_else(|| "all".to_owned(), |c| c.as_str().to_owned())
    ));
    let updated = incidents
        .iter()
        .map(|i| i.updated_at)
        .max()
        .unwrap_or_else(crate::runtime::clock::now);
    feed.set_updated(updated.fixed_offset());
    let entries: Vec<Entry> = incidents
        .iter()
        .map(|incident| {
            let mut entry = Entry::default();
            entry.set_id(format!("urn:uuid:{}", incident.id));
            let state = match incident.status {
                Status::Open => "open",
                Status::Resolved => "resolved",
            };
            entry.set_title(Text::plain(format!(
                "{name}: {} incident{} ({state})",
                incident.scope.as_str(),
                match (&incident.city, &incident.country) {
                    (Some(city), _) => format!(" in {city}"),
                    (None, Some(code)) => CountryCode::parse(code)
                        .map(|c| format!(" in {}", c.name()))
                        .unwrap_or_default(),
                    (None, None) => " worldwide".to_owned(),
                }
            )));
            entry.set_updated(incident.updated_at.fixed_offset());
            entry.set_published(Some(incident.started_at.fixed_offset()));
            entry.set_summary(Some(Text::plain(incident.summary.clone())));
            let mut content = Content::default();
            content.set_content_type(Some("text".to_owned()));
            content.set_value(Some(timeline(incident)));
            entry.set_content(Some(content));
            let mut link = Link::default();
            link.set_href(format!("/api/v1/incidents/{}", incident.id));
            link.set_mime_type(Some("application/json".to_owned()));
            entry.set_links(vec![link]);
            entry
        })
        .collect();
    feed.set_entries(entries);
    Ok((
        [(header::CONTENT_TYPE, "application/atom+xml; charset=utf-8")],
        feed.to_string(),
    )
        .into_response())
}

/// An entry's content: the incident's timeline in one line, as its page shows it ("Started
/// 2025-03-10 09:52 UTC; detected 2025-03-10 09:54 UTC; peak 2025-03-10 18:06 UTC; ended
/// 2025-03-10 19:40 UTC."); Atom's `published` can hold only one of the first two.
fn timeline(incident: &Incident) -> String {
    let at = |time: chrono::DateTime<chrono::Utc>| time.format("%Y-%m-%d %H:%M UTC");
    let mut line = format!(
        "Started {}; detected {}; peak {}",
        at(incident.started_at),
        at(incident.detected_at),
        at(incident.peak_at)
    );
    match incident.resolved_at {
        Some(resolved_at) => line.push_str(&format!("; ended {}.", at(resolved_at))),
        None => line.push_str("; still going on."),
    }
    line
}

/// Escapes text for XML.
fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A flat two-part badge ("X | up"), sized by a rough 7 px per character.
pub fn badge_svg(label: &str, message: &str, colour: &str) -> String {
    let (left, right) = (
        label.chars().count() * 7 + 12,
        message.chars().count() * 7 + 12,
    );
    let total = left + right;
    let (label, message) = (xml_escape(label), xml_escape(message));
    format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{total}" height="20" role="img" aria-label="{label}: {message}"><title>{label}: {message}</title><rect width="{left}" height="20" fill="#555"/><rect x="{left}" width="{right}" height="20" fill="{colour}"/><g fill="#fff" font-family="Verdana,DejaVu Sans,sans-serif" font-size="11"><text x="6" y="14">{label}</text><text x="{x}" y="14">{message}</text></g></svg>"##,
        x = left + 6
    )
}

/// `GET /badge/{service}.svg[?country=PK]`: "up" (green) or "incident" (red).
#[utoipa::path(
    get,
    path = "/badge/{file}",
    summary = "An SVG status badge",
    tag = "pages",
    description = "An SVG status badge to embed in a page, \"up\" (green) or \"incident\" (red) while \
        the service (in the country, if given) has an open incident.",
    params(
        ("file" = String, Path, description = "The service's slug followed by `.svg`.",
            pattern = "^[A-Za-z0-9_-]{1,40}\\.svg$", example = "x.svg"),
        BadgeParams,
    ),
    responses(
        (status = 200, description = "The badge.", headers(
                ("ETag" = String, description = "A hash of the body; send it back in `If-None-Match`."),
                ("X-Data-Age" = String, description = "Only on an answer read from the read replica (`database.read_url`): seconds its data lagged the primary when computed, e.g. `0.0` (it had replayed everything) or `2.4`."),
                ("Cache-Control" = String, description = "`public, max-age=15`."),
            ), body = String, content_type = "image/svg+xml",
            example = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"…\" height=\"20\" role=\"img\" aria-label=\"X (Twitter): up\">…</svg>"),
        ReadAnswers,
        (status = 404, description = "The file does not end in `.svg`.", body = Problem,
            content_type = "application/problem+json", example = json!({"type": "/problems/not-found",
            "title": "Not found", "status": 404, "detail": "not found"})),
    )
)]
pub async fn status_badge(
    State(state): State<AppState>,
    Path(file): Path<String>,
    ApiQuery(params): ApiQuery<BadgeParams>,
) -> Result<Response, ApiError> {
    let Some(service) = file.strip_suffix(".svg") else {
        return Err(ApiError::NotFound);
    };
    let (slug, name, country) = scope_of(&state, service, params.country.as_deref())?;
    let open = state
        .reads
        .incidents(&IncidentQuery {
            service: Some(slug),
            country: country.map(|c| c.as_str().to_owned()),
            status: Some(Status::Open),
            limit: 1,
            ..IncidentQuery::default()
        })
        .await
        .map_err(ApiError::from_read)?;
    let label = match country {
        Some(code) => format!("{name} · {}", code.as_str()),
        None => name,
    };
    let (message, colour) = if open.is_empty() {
        ("up", "#2e7d32")
    } else {
        ("incident", "#c62828")
    };
    Ok((
        [(header::CONTENT_TYPE, "image/svg+xml")],
        badge_svg(&label, message, colour),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_badge_escapes_its_text_and_sizes_to_it() {
        let svg = badge_svg("A&B", "up", "#2e7d32");
        assert!(
            svg.starts_with(r#"<svg xmlns="http://www.w3.org/2000/svg" width="59" height="20""#),
            "{svg}"
        );
        assert!(svg.contains("<title>A&amp;B: up</title>"), "{svg}");
        assert!(!svg.contains("A&B"));
    }
}
