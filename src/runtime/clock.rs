//! The one place that reads the wall clock; everything else takes time as an argument.

use chrono::{DateTime, Utc};

/// The current time in UTC.
#[allow(clippy::disallowed_methods)]
pub fn now() -> DateTime<Utc> {
    Utc::now()
}
