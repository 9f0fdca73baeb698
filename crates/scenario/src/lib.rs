//! Deterministic report scenarios: a TOML description of ordinary traffic and surges, turned into the CSV rows `outagewatch import` reads, so detection tests start from realistic data.
//!
//! A scenario is pure data plus a seed: the same file always yields the same bytes. Time is
//! generated minute by minute from `start` (inclusive) to `end` (exclusive); each `[[traffic]]`
//! and `[[surge]]` entry draws its count for the minute from its own random stream (ChaCha8 with
//! the scenario seed, stream = the entry's index), so adding or editing one entry never changes
//! the draws of another. Each report gets a uniform second within its minute, a city by the
//! entry's city shares (the rest are country-level) and a problem by its mix; rows of one minute
//! are ordered by second, then by entry order. A [`family`] file draws scenarios from ranges
//! and an integer seed, for measuring the detector on many variations of one kind of surge.
//!
//! A tool beside the service, not part of it: the tests and `outagewatch-tools simulate` use it,
//! and it uses the service's library only for the gazetteer and the problem kinds. Reading
//! order: `model` (the file, validated; expected rates) → `checks` (the field rules) →
//! `generate` (random streams, rows, the import CSV) → [`family`].
//!
//! # Schema
//!
//! ```toml
//! name = "X, 10 March 2025"
//! start = "2025-02-10T00:00:00Z"  # first minute (RFC 3339, whole minute)
//! end = "2025-03-11T06:00:00Z"    # exclusive; at most 366 days after start
//! seed = 20250310
//!
//! [problems]                      # default problem mix: shares of the six kinds, normalised
//! app = 0.5
//! website = 0.3
//! login = 0.1
//! server_connection = 0.1
//!
//! [[traffic]]                     # ordinary traffic of one (service, country)
//! service = "x"
//! country = "US"
//! per_minute = 1.5                # mean reports per minute over a week (before growth)
//! diurnal_amplitude = 0.5         # 0..=1: rate × (1 + a·cos(2π(hour − peak)/24)); default 0
//! peak_hour_utc = 0               # 0..24, fractional allowed; default 0
//! weekend_factor = 0.85           # Saturday and Sunday (UTC) relative to weekdays; default 1
//! dispersion = 0.1                # negative binomial k: var = m + k·m² (0 = Poisson); default 0
//! growth_per_day = 0.0            # rate × (1 + g)^(days since growth_start); default 0
//! growth_start = "..."            # when growth begins; default start
//! reporter = "..."                # every row from this one reporter; default a fresh one per row
//! [traffic.cities]                # share of reports naming each city (canonical gazetteer name);
//! "New York City" = 0.2           # shares sum to at most 1, the rest name no city
//! [traffic.problems]              # optional override of the default mix
//!
//! [[surge]]                       # extra reports on top of the traffic
//! service = "x"
//! country = "PK"
//! # Piecewise-linear target of extra reports PER 15 MINUTES, [time, value] with strictly
//! # increasing times inside [start, end]; zero before the first point and from the last point on.
//! # The extra mean per minute at minute t is value(t) / 15; counts are Poisson.
//! points = [["2025-03-10T09:45:00Z", 0], ["2025-03-10T10:08:00Z", 74], ["2025-03-10T19:45:00Z", 0]]
//! reporter = "..."                # optional single reporter
//! [surge.cities]                  # optional; default the cities of the first traffic entry of
//! Lahore = 0.4                    # the same (service, country), else none
//! [surge.problems]                # optional override of the default mix
//! ```
//!
//! Rows without a fixed reporter are from reporters `r0`, `r1`, … (the row's index in the
//! output), so every one of them is counted by the importer's per-reporter dedup; a fixed
//! reporter may not look like one of those. The weekday and the hour are taken in UTC.

mod checks;
pub mod family;
mod generate;
mod model;

pub use family::{Drawn, DrawnSurge, Family};
pub use generate::{generate, write_csv, CSV_HEADER};
pub use model::{Scenario, ScenarioError, ScenarioRow};

#[cfg(test)]
mod tests;
