//! The pages' scripts, stylesheets and icon, embedded gzipped by `build.rs` under names that carry a hash of their content, served at `/assets/{file}` and cached for a year.

use axum::extract::Path;
use axum::http::HeaderMap;
use axum::response::Response;

use super::layout::PageError;
use crate::http::assets::send_gzipped;
use crate::http::ApiError;

/// One embedded file.
pub(super) struct Asset {
    /// The served name, e.g. `site.1a2b3c4d.css`.
    pub(super) name: &'static str,
    pub(super) content_type: &'static str,
    pub(super) gzipped: &'static [u8],
}

impl Asset {
    /// The URL path pages link it by.
    pub(super) fn path(&self) -> String {
        format!("/assets/{}", self.name)
    }
}

include!(concat!(env!("OUT_DIR"), "/web_assets.rs"));

/// `GET /assets/{file}`
pub(super) async fn get_asset(
    Path(file): Path<String>,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    let asset = ALL
        .iter()
        .find(|a| a.name == file)
        .ok_or(PageError(ApiError::NotFound))?;
    // A new version is a new name, so a name never changes content.
    send_gzipped(
        &headers,
        asset.gzipped,
        asset.content_type,
        "public, max-age=31536000, immutable",
    )
    .map_err(PageError)
}
