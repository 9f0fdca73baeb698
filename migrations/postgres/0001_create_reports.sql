-- Reports (with their dedup key), per-minute rollups and the daily fingerprint secrets.
create table reports (
    id           uuid        primary key,
    received_at  timestamptz not null,
    service      text        not null,
    country      text        not null,
    city         text,
    problem      text        not null,
    -- 16-byte keyed hash, stored as uuid for cheap fixed-width comparisons in the dedup key
    fingerprint  uuid        not null,
    -- start of the dedup window the report fell in
    dedup_window timestamptz not null,
    counted      boolean     not null
);
-- Time-range work (retention, replays) walks received_at; rows arrive in time order, so a
-- BRIN index serves it at a fraction of a btree's write cost.
create index reports_received_at on reports using brin (received_at);
-- Only the first report per reporter per service per window counts: a unique key, so it holds
-- across replicas.
-- Window first, so inserts stay in the current window's part of the index; then the nearly
-- unique fingerprint, so lookups rarely compare the text column.
create unique index reports_counted_once on reports (dedup_window, fingerprint, service) where counted;

-- city = '' is the country total.
create table rollups_minute (
    service text        not null,
    country text        not null,
    city    text        not null,
    minute  timestamptz not null,
    count   bigint      not null,
    primary key (service, country, city, minute)
);

create table reporter_secrets (
    day    date  primary key,
    secret bytea not null
);
