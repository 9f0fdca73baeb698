-- Incidents found by the detector, and the detector's progress through the minute rollups.

-- The detector reads every service's rollups minute by minute.
create index rollups_minute_by_minute on rollups_minute (minute);

create table incidents (
    -- derived from (service, country, city, started_at), so a re-run writes the same ids
    id               uuid             primary key,
    service          text             not null,
    scope            text             not null check (scope in ('global', 'country', 'city')),
    country          text,
    city             text,
    status           text             not null check (status in ('open', 'resolved')),
    started_at       timestamptz      not null,
    peak_at          timestamptz      not null,
    -- the highest 15-minute count, the expectation then, and the excess over the whole incident
    peak_count       double precision not null,
    expected_at_peak double precision not null,
    start_count      double precision not null,
    excess_reports   double precision not null,
    resolved_at      timestamptz,
    -- JSON: [{"country", "city", "count"}] and {"app": share, ...}
    top_cities       text             not null,
    problems         text             not null,
    parent_id        uuid,
    summary          text             not null,
    updated_at       timestamptz      not null
);
-- Lists are newest first, paged by (started_at, id).
create index incidents_newest_first on incidents (started_at desc, id desc);
create index incidents_open on incidents (service) where status = 'open';

-- One row: the last minute the detector has processed, and a snapshot of its state at state_at
-- (at or before the watermark) to restart from.
create table detector_state (
    singleton boolean     primary key default true check (singleton),
    watermark timestamptz not null,
    state_at  timestamptz,
    state     text
);
