-- Reports (with their dedup key), per-minute rollups and the daily fingerprint secrets.
-- Times are integers: received_at in unix milliseconds, minutes and windows in unix seconds.
create table reports (
    id           blob    not null primary key,
    received_at  integer not null,
    service      text    not null,
    country      text    not null,
    city         text,
    problem      text    not null,
    fingerprint  blob    not null,
    dedup_window integer not null,
    counted      integer not null
);
create index reports_received_at on reports (received_at);
-- Only the first report per reporter per service per window counts.
create unique index reports_counted_once on reports (dedup_window, fingerprint, service) where counted;

-- city = '' is the country total.
create table rollups_minute (
    service text    not null,
    country text    not null,
    city    text    not null,
    minute  integer not null,
    count   integer not null,
    primary key (service, country, city, minute)
) without rowid;

create table reporter_secrets (
    day    text primary key,
    secret blob not null
);
