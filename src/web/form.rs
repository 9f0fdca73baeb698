//! The report form (`/`, `/report/{service}`), its plain form POST (`/report`, through the API's rate limit, validation and ingest path, answered 303 → `/report/thanks`), and the thank-you page with the current count for that service and place.

use std::sync::Arc;

use axum::extract::rejection::FormRejection;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use chrono::TimeDelta;
use maud::{html, Markup};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::Deserialize;

use super::layout::{self, page, respond, Extras, PageError};
use super::locale::country_from_accept_language;
use super::WebState;
use crate::domain::buckets::TimeRange;
use crate::domain::geo::{CityError, CountryCode};
use crate::domain::report::{FieldError, Problem, Report, ReportFields};
use crate::domain::series::SeriesKey;
use crate::http::{admit_then, ApiError, ClientAddr, ClientPolicy};

/// The form's fields as posted (all text, all optional: missing ones are validation errors).
#[derive(Clone, Debug, Default, Deserialize)]
pub(super) struct ReportForm {
    #[serde(default)]
    service: String,
    #[serde(default)]
    country: String,
    #[serde(default)]
    city: String,
    /// A suggested city the person picked (a submit button beside the city error), which
    /// replaces what they typed.
    #[serde(default)]
    city_choice: Option<String>,
    #[serde(default)]
    problem: String,
}

/// What each problem kind's button says.
pub(super) fn problem_label(problem: Problem) -> &'static str {
    match problem {
        Problem::App => "The app",
        Problem::Website => "The website",
        Problem::Login => "Logging in",
        Problem::ServerConnection => "Connecting",
        Problem::Notifications => "Notifications",
        Problem::Other => "Something else",
    }
}

/// `GET /`: the form with no service chosen.
pub(super) async fn show_form(State(state): State<WebState>, headers: HeaderMap) -> Response {
    form_page(&state, &headers, ReportForm::default())
}

/// `GET /report/{service}`: the form with the service chosen (a 404 page for an unknown one).
pub(super) async fn show_service_form(
    State(state): State<WebState>,
    Path(service): Path<String>,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    let catalog = state.catalog.current();
    let service = catalog
        .parse(&service)
        .map_err(|_| PageError(ApiError::NotFound))?;
    let form = ReportForm {
        service: service.slug.as_str().to_owned(),
        ..ReportForm::default()
    };
    Ok(form_page(&state, &headers, form))
}

/// A blank form, its country guessed from `Accept-Language`.
fn form_page(state: &WebState, headers: &HeaderMap, mut form: ReportForm) -> Response {
    form.country = headers
        .get(header::ACCEPT_LANGUAGE)
        .and_then(|v| v.to_str().ok())
        .and_then(country_from_accept_language)
        .map(|c| c.as_str().to_owned())
        .unwrap_or_default();
    respond(StatusCode::OK, report_page(state, &form, &[]))
}

/// Middleware of `POST /report`: the JSON API's rate limit, answered with a page.
pub(super) async fn admit_reporter(
    State(policy): State<Arc<ClientPolicy>>,
    request: Request,
    next: Next,
) -> Response {
    admit_then(&policy, request, next, |refused| {
        PageError(refused).into_response()
    })
    .await
}

/// `POST /report`: validates like the API, stores through the same ingest path, and answers
/// 303 to the thank-you page once committed; invalid fields get the form again (422) with
/// what was typed and a message beside each field; a full queue or a slow store gets a page
/// to send it again.
pub(super) async fn create_report(
    State(state): State<WebState>,
    Extension(client): Extension<ClientAddr>,
    headers: HeaderMap,
    form: Result<Form<ReportForm>, FormRejection>,
) -> Response {
    let mut form = form.map(|Form(form)| form).unwrap_or_default();
    if let Some(choice) = form.city_choice.take() {
        form.city = choice;
    }
    let fields = ReportFields {
        service: Some(form.service.as_str()),
        country: Some(form.country.as_str()),
        city: Some(form.city.as_str()),
        problem: Some(form.problem.as_str()),
        id: None,
    };
    let report = match Report::parse(&fields, &state.catalog.current()) {
        Ok(report) => report,
        Err(errors) => {
            crate::runtime::metrics::METRICS.rejection("validation");
            return respond(
                StatusCode::UNPROCESSABLE_ENTITY,
                report_page(&state, &form, &errors),
            );
        }
    };
    let thanks = Thanks {
        service: report.service.as_str().to_owned(),
        country: report.country.as_str().to_owned(),
        city: report.city_name().map(str::to_owned),
        counted: None,
    };
    let user_agent = headers
        .get(header::USER_AGENT)
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    match state
        .submitter
        .submit(client, user_agent, vec![report])
        .await
    {
        Ok(outcomes) => {
            let thanks = Thanks {
                counted: Some(outcomes.iter().all(|o| o.counted)),
                ..thanks
            };
            let query = thanks_query(&thanks);
            Redirect::to(&format!("/report/thanks?{query}")).into_response()
        }
        Err(error) => {
            crate::runtime::metrics::METRICS.rejection(error.reason());
            try_again(&form, error)
        }
    }
}

/// The thank-you page's parameters.
#[derive(Debug, Deserialize)]
pub(super) struct Thanks {
    service: String,
    country: String,
    #[serde(default)]
    city: Option<String>,
    /// False when this person had already reported the service in the last 15 minutes.
    #[serde(default)]
    counted: Option<bool>,
}

/// `service=x&country=PK&city=Lahore&counted=true`, percent-encoded.
fn thanks_query(thanks: &Thanks) -> String {
    let mut pairs = vec![
        ("service", thanks.service.as_str()),
        ("country", thanks.country.as_str()),
    ];
    if let Some(city) = &thanks.city {
        pairs.push(("city", city));
    }
    let counted = thanks.counted.map(|c| if c { "true" } else { "false" });
    if let Some(counted) = counted {
        pairs.push(("counted", counted));
    }
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", utf8_percent_encode(v, NOT_UNRESERVED)))
        .collect::<Vec<_>>()
        .join("&")
}

/// Everything but the unreserved characters of RFC 3986 is percent-encoded.
const NOT_UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `GET /report/thanks?service=&country=&city=&counted=`: the count for that service and
/// place in the last hour, read from the rollups the report was just committed to.
pub(super) async fn show_thanks(
    State(state): State<WebState>,
    query: Result<Query<Thanks>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, PageError> {
    let Query(thanks) = query.map_err(|_| PageError(ApiError::NotFound))?;
    let catalog = state.catalog.current();
    let service = catalog
        .parse(&thanks.service)
        .map_err(|_| PageError(ApiError::NotFound))?;
    let country = CountryCode::parse(&thanks.country).map_err(|_| PageError(ApiError::NotFound))?;
    let city = match thanks.city.as_deref() {
        Some(city) => Some(
            crate::domain::geo::gazetteer()
                .lookup(country, city)
                .map_err(|_| PageError(ApiError::NotFound))?
                .name,
        ),
        None => None,
    };
    let slug = service.slug.as_str();
    let country_count = reports_last_hour(&state, slug, country, None).await?;
    let city_count = match city {
        Some(city) => Some((
            city,
            reports_last_hour(&state, slug, country, Some(city)).await?,
        )),
        None => None,
    };
    let reports = |n: i64| match n {
        1 => "1 report".to_owned(),
        n => format!("{} reports", layout::count(n)),
    };
    let heading = match thanks.counted {
        Some(false) => "Thanks — you had already told us",
        _ => "Thanks — your report is counted",
    };
    let markup = page(
        heading,
        "thanks",
        Extras::None,
        html! {
            h1 #thanks tabindex="-1" { (heading) }
            @if thanks.counted == Some(false) {
                p { "You reported " (service.name) " in the last 15 minutes, so we counted you once. It still helps: your report is stored." }
            }
            div.figures {
                @if let Some((city, n)) = city_count {
                    p.figure {
                        strong #place-count { (reports(n)) }
                        " about " (service.name) " from " (city) " in the last hour"
                    }
                    p.figure {
                        strong #country-count { (reports(country_count)) }
                        " from " (country.name()) " in all"
                    }
                } @else {
                    p.figure {
                        strong #place-count { (reports(country_count)) }
                        " about " (service.name) " from " (country.name()) " in the last hour"
                    }
                }
            }
            p.actions {
                a.button href={ "/status/" (slug) } { "See the status of " (service.name) }
                " "
                a href={ "/report/" (slug) } { "Report another problem" }
            }
        },
    );
    Ok(respond(StatusCode::OK, markup))
}

/// Counted reports of a service in a country or city in the last hour, from the rollups.
async fn reports_last_hour(
    state: &WebState,
    service: &str,
    country: CountryCode,
    city: Option<&str>,
) -> Result<i64, PageError> {
    let now = crate::runtime::clock::now();
    state
        .reads
        .total(
            &SeriesKey {
                service: service.to_owned(),
                country: Some(country.as_str().to_owned()),
                city: city.map(str::to_owned),
            },
            TimeRange::new(now - TimeDelta::hours(1), now + TimeDelta::seconds(1)),
        )
        .await
        .map_err(|e| PageError(ApiError::from_read(e)))
}

/// The page for a report the service could not take now (429, 503): why, and the form's
/// values in a button that sends it again.
fn try_again(form: &ReportForm, error: ApiError) -> Response {
    let (status, heading, text, retry_after) = match &error {
        ApiError::RateLimited {
            retry_after_seconds,
        } => (
            StatusCode::TOO_MANY_REQUESTS,
            "Too many reports from your connection",
            format!(
                "Your report was not sent. Please wait {retry_after_seconds} seconds, then send it again."
            ),
            *retry_after_seconds,
        ),
        ApiError::Unavailable {
            retry_after_seconds,
            ..
        } => (
            StatusCode::SERVICE_UNAVAILABLE,
            "We couldn't save your report just now",
            "Lots of people are reporting at once. Please send it again in a moment.".to_owned(),
            *retry_after_seconds,
        ),
        _ => return PageError(error).into_response(),
    };
    let markup = page(
        heading,
        "try-again",
        Extras::None,
        html! {
            h1 #try-again tabindex="-1" { (heading) }
            p { (text) }
            (report_again(form))
        },
    );
    let mut response = respond(status, markup);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, retry_after.into());
    response
}

/// The form's values as hidden fields, with one button to send them again.
fn report_again(form: &ReportForm) -> Markup {
    html! {
        form.report method="post" action="/report" {
            input type="hidden" name="service" value=(form.service);
            input type="hidden" name="country" value=(form.country);
            input type="hidden" name="city" value=(form.city);
            input type="hidden" name="problem" value=(form.problem);
            button type="submit" { "Send my report again" }
        }
    }
}

/// An error as the person filling the form would say it.
fn in_users_words(error: &FieldError, form: &ReportForm) -> String {
    let country = CountryCode::parse(&form.country)
        .map(|c| c.name())
        .unwrap_or("that country");
    match error.field.as_str() {
        "service" => "Choose the service that isn't working for you.".to_owned(),
        "country" => "Choose the country you're in.".to_owned(),
        "problem" => "Choose what isn't working.".to_owned(),
        "city" if error.message == CityError::TooLong.to_string() => {
            "That's longer than any city name we know. Check it, or leave the city empty."
                .to_owned()
        }
        "city" => {
            let typed = form.city.trim();
            match error.suggestions.first() {
                Some(best) => format!(
                    "We don't know a city called “{typed}” in {country}. Did you mean {best}?"
                ),
                None => format!(
                    "We don't know a city called “{typed}” in {country}. Check the spelling, or leave the city empty."
                ),
            }
        }
        _ => error.message.clone(),
    }
}

/// The form page, with `errors` beside their fields and what was typed kept.
fn report_page(state: &WebState, form: &ReportForm, errors: &[FieldError]) -> Markup {
    let error_of = |field: &str| errors.iter().find(|e| e.field == field);
    let message = |field: &str| error_of(field).map(|e| in_users_words(e, form));
    let described = |field: &str, hint: Option<&str>| {
        let mut ids: Vec<String> = hint.map(str::to_owned).into_iter().collect();
        if error_of(field).is_some() {
            ids.push(format!("{field}-error"));
        }
        (!ids.is_empty()).then(|| ids.join(" "))
    };
    let service_name = state
        .catalog
        .current()
        .parse(&form.service)
        .map(|s| s.name.clone())
        .ok();
    let heading = match &service_name {
        Some(name) => format!("Is {name} down for you?"),
        None => "Is something down for you?".to_owned(),
    };
    let mut countries: Vec<CountryCode> = CountryCode::all().collect();
    countries.sort_by_key(|c| c.name());
    let city_suggestions = error_of("city")
        .map(|e| e.suggestions.as_slice())
        .unwrap_or_default();
    page(
        &heading,
        "report",
        Extras::None,
        html! {
            h1 #report-heading tabindex="-1" { (heading) }
            p.lead { "Tell us what's broken. Reports from many people at once show an outage." }
            @if !errors.is_empty() {
                div.error-summary role="alert" {
                    h2 { "Please check your report" }
                    ul {
                        @for error in errors {
                            li { a href={ "#" (error.field) } { (in_users_words(error, form)) } }
                        }
                    }
                }
            }
            form #report-form .report method="post" action="/report" novalidate {
                div.field {
                    label for="service" { "Service" }
                    // The filter is the script's: without it the list alone works.
                    div.filter hidden {
                        label for="service-filter" { "Find a service" }
                        input #service-filter type="search" autocomplete="off" aria-controls="service";
                    }
                    select #service name="service" required
                        aria-invalid=[error_of("service").map(|_| "true")]
                        aria-describedby=[described("service", None)] {
                        option value="" { "Choose a service" }
                        @for service in state.catalog.current().services() {
                            option value=(service.slug) selected[service.slug.as_str() == form.service] {
                                (service.name)
                            }
                        }
                    }
                    @if let Some(text) = message("service") { p #service-error .error { (text) } }
                }
                div.field {
                    label for="country" { "Country" }
                    select #country name="country" required autocomplete="country"
                        aria-invalid=[error_of("country").map(|_| "true")]
                        aria-describedby=[described("country", None)] {
                        option value="" { "Choose your country" }
                        @for country in &countries {
                            option value=(country.as_str())
                                selected[country.as_str().eq_ignore_ascii_case(form.country.trim())] {
                                (country.name())
                            }
                        }
                    }
                    @if let Some(text) = message("country") { p #country-error .error { (text) } }
                }
                div.field {
                    label for="city" { "City " span.optional { "(optional)" } }
                    p #city-hint .hint { "Leave it empty if you'd rather not say." }
                    input #city type="text" name="city" value=(form.city) maxlength="100"
                        autocomplete="off" list="city-options" spellcheck="false"
                        aria-invalid=[error_of("city").map(|_| "true")]
                        aria-describedby=[described("city", Some("city-hint"))];
                    datalist #city-options {}
                    @if let Some(text) = message("city") {
                        div #city-error .error {
                            p { (text) }
                            @if !city_suggestions.is_empty() {
                                p.suggestions {
                                    @for suggestion in city_suggestions {
                                        button.suggestion type="submit" name="city_choice" value=(suggestion) {
                                            (suggestion)
                                        }
                                        " "
                                    }
                                }
                            }
                        }
                    }
                }
                fieldset.field.problems
                    aria-invalid=[error_of("problem").map(|_| "true")]
                    aria-describedby=[described("problem", None)] {
                    legend #problem { "What isn't working?" }
                    div.choices {
                        @for problem in Problem::ALL {
                            @let id = format!("problem-{}", problem.as_str());
                            input type="radio" name="problem" id=(id) value=(problem.as_str())
                                required checked[problem.as_str() == form.problem];
                            label.choice for=(id) { (problem_label(problem)) }
                        }
                    }
                    @if let Some(text) = message("problem") { p #problem-error .error { (text) } }
                }
                div #form-status role="status" aria-live="polite" {}
                button #send type="submit" { "Send report" }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(city: &str) -> ReportForm {
        ReportForm {
            service: "x".into(),
            country: "PK".into(),
            city: city.into(),
            city_choice: None,
            problem: "app".into(),
        }
    }

    #[test]
    fn an_unknown_city_is_explained_with_the_closest_name() {
        let error = FieldError {
            field: "city".into(),
            message: "\"Rawalpindy\" is not a known city in Pakistan".into(),
            suggestions: vec!["Rawalpindi".into(), "Rawala Kot".into()],
        };
        assert_eq!(
            in_users_words(&error, &form(" Rawalpindy ")),
            "We don't know a city called “Rawalpindy” in Pakistan. Did you mean Rawalpindi?"
        );
        let no_suggestion = FieldError::new("city", "\"Qqq\" is not a known city in Pakistan");
        assert_eq!(
            in_users_words(&no_suggestion, &form("Qqq")),
            "We don't know a city called “Qqq” in Pakistan. Check the spelling, or leave the city empty."
        );
    }

    #[test]
    fn missing_choices_are_asked_for_plainly() {
        let words =
            |field: &str| in_users_words(&FieldError::new(field, "x is required"), &form(""));
        assert_eq!(
            words("service"),
            "Choose the service that isn't working for you."
        );
        assert_eq!(words("country"), "Choose the country you're in.");
        assert_eq!(words("problem"), "Choose what isn't working.");
    }

    #[test]
    fn a_full_queue_gets_a_page_that_sends_the_same_report_again() {
        let error = ApiError::Unavailable {
            detail: "queue full".into(),
            retry_after_seconds: 1,
            ids: Vec::new(),
        };
        let response = try_again(&form("Lahore"), error);
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
        let rendered = report_again(&form("Lahore")).into_string();
        assert!(rendered.contains(r#"<input type="hidden" name="city" value="Lahore">"#));
        assert!(rendered.contains(r#"<button type="submit">Send my report again</button>"#));
    }

    #[test]
    fn the_thanks_address_is_percent_encoded() {
        let thanks = Thanks {
            service: "x".into(),
            country: "BR".into(),
            city: Some("São Paulo".into()),
            counted: Some(true),
        };
        assert_eq!(
            thanks_query(&thanks),
            "service=x&country=BR&city=S%C3%A3o%20Paulo&counted=true"
        );
    }
}
