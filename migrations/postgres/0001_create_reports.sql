-- Reports, reporter dedup claims, per-minute rollups and the daily fingerprint secrets.
create table reports (
    id          uuid        not null,
    received_at timestamptz not null,
    service     text        not null,
    country     text        not null,
    city        text,
    problem     text        not null,
    fingerprint bytea       not null,
    counted     boolean     not null,
    -- time-range work (retention, replays) walks received_at first
    primary key (received_at, id)
);
create unique index reports_id_key on reports (id);

-- One row per reporter per service per dedup window: the unique key is what makes
-- "only the first report counts" hold across replicas.
create table report_dedup (
    service      text        not null,
    fingerprint  bytea       not null,
    window_start timestamptz not null,
    report_id    uuid        not null,
    primary key (service, fingerprint, window_start)
);

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
