//! `GET /api/v1/challenge`: a proof-of-work challenge (ALTCHA format) for the report form to solve under surge.

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::AppState;
use crate::http::pow::Challenge;

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
            headers(("Cache-Control" = String, description = "`no-store`.")),
            example = json!({"algorithm": "SHA-256",
                "challenge": "4d5b4fa6e1a51c6f2d2ee7ebbd87f1de6d1b0e0a1b2e2f4fa3c6b0cb1d1f7e2a",
                "maxnumber": 100000, "salt": "9f1c2b3a4d5e6f708192a3b4c5d6e7f8?expires=1741600300",
                "signature": "0c1d2e3f405162738495a6b7c8d9eafb0c1d2e3f405162738495a6b7c8d9eafb"})),
    )
)]
pub async fn get_challenge(State(state): State<AppState>) -> Response {
    let challenge = state
        .submitter
        .proof_of_work
        .challenge(crate::runtime::clock::now());
    let mut response = Json(challenge).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
