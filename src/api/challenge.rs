//! `GET /api/v1/challenge`: a proof-of-work challenge (ALTCHA format) for the report form to solve under surge.

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::AppState;
use crate::pow::Challenge;

/// `GET /api/v1/challenge`
#[utoipa::path(
    get,
    path = "/api/v1/challenge",
    summary = "A proof-of-work challenge for the report form",
    description = "An ALTCHA-compatible challenge (HMAC-signed SHA-256 puzzle that expires): point the \
        ALTCHA widget's `challengeurl` at this route. Whether the form must send a solution \
        (`proof_of_work.mode`: off, always, or under surge) is the form's to say; each solution is \
        accepted once, until it expires.",
    tag = "reports",
    responses(
        (status = 200, description = "A new challenge; never cached.", body = Challenge,
            headers(("Cache-Control" = String, description = "`no-store`."))),
    )
)]
pub async fn get_challenge(State(state): State<AppState>) -> Response {
    let challenge = state.proof_of_work.challenge(crate::clock::now());
    let mut response = Json(challenge).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
