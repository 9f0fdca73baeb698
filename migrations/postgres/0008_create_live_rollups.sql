-- Ingest adds to the current minutes' counts many times a second. In rollups_minute each such
-- update was a new row version in four indexes, since count is in the covering indexes the
-- reads need (index-only ranges), and a non-HOT update writes every index: at one report per
-- request that was most of Postgres's work per report. Here only the key is indexed and each
-- page keeps room, so an update is a HOT update (no index entry at all).
-- Minutes move from here to rollups_minute once settled (settle_rollups in
-- src/store/postgres.rs, a few times a minute); reads go through the view `rollups`, both
-- tables together, and sum what a key has in each.
create table rollups_live (
    service text        not null,
    country text        not null,
    city    text        not null,
    minute  timestamptz not null,
    count   bigint      not null,
    primary key (service, country, city, minute)
) with (fillfactor = 50);

create view rollups as
    select service, country, city, minute, count from rollups_minute
    union all
    select service, country, city, minute, count from rollups_live;
