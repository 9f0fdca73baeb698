-- Reports and minute counts by day, so retention drops a day's partition instead of deleting
-- rows from a live table (src/store/postgres/partitions.rs keeps them: days ahead for live
-- reports, past days on demand for an import, and drops the expired ones).
--
-- reports is partitioned by its dedup window, not by received_at: a partitioned table's
-- unique keys must hold the partition key, and the dedup key (window, fingerprint, service)
-- must stay one unique key so it holds across replicas. Windows divide a day
-- (ingest.dedup_window_minutes), so a report's window and its received_at fall on the same
-- UTC day: the partitions are the days reports arrived.
-- Clients choose ids, and a retry can land in a later window (or day), so no key of a
-- partitioned table can hold ids: report_ids, unpartitioned, holds each stored report's id,
-- window and outcome, and is pruned with the reports (retention.reports_days), so a retry is
-- a replay for as long as its report is kept. The partitions need no id index then (the
-- network cap un-counts by the dedup key): one narrow heap row more per report, not a second
-- random-uuid index (`id` first in a partition key measured 1.34x the unpartitioned insert's
-- time, this layout 1.06x).

-- One day's partition of `parent` (named parent_YYYYMMDD), created beside it and then attached:
-- attaching takes a lock that lets inserts go on, where CREATE TABLE ... PARTITION OF would
-- stop them. Answers whether it created one. Serialised by an advisory lock of its own, so
-- replicas and imports creating the same day never collide. A table of that name left
-- detached (a drop cut short) belongs to an expired day: it is dropped and made anew.
create function ensure_day_partition(parent text, day date) returns boolean
language plpgsql as $$
declare
    name text := parent || '_' || to_char(day, 'YYYYMMDD');
    existing regclass;
begin
    perform pg_advisory_xact_lock(7310582114250876001);
    existing := to_regclass(name);
    if existing is not null then
        if exists (select 1 from pg_inherits where inhrelid = existing) then
            return false;
        end if;
        execute format('drop table %I', name);
    end if;
    execute format('create table %I (like %I including defaults including constraints including indexes)',
                   name, parent);
    execute format('alter table %I attach partition %I for values from (%L) to (%L)', parent, name,
                   day::timestamp at time zone 'UTC', (day + 1)::timestamp at time zone 'UTC');
    return true;
end $$;

alter table reports rename to reports_before_0012;
alter index reports_pkey rename to reports_before_0012_pkey;
alter index reports_received_at rename to reports_before_0012_received_at;
alter index reports_counted_once rename to reports_before_0012_counted_once;

create table reports (
    id           uuid        not null,
    received_at  timestamptz not null,
    service      text        not null,
    country      text        not null,
    city         text,
    problem      text        not null,
    fingerprint  uuid        not null,
    dedup_window timestamptz not null,
    counted      boolean     not null
) partition by range (dedup_window);
create index reports_received_at on reports using brin (received_at);
create unique index reports_counted_once on reports (dedup_window, fingerprint, service) where counted;

create table report_ids (
    id           uuid        primary key,
    dedup_window timestamptz not null,
    counted      boolean     not null
);
create index report_ids_by_window on report_ids using brin (dedup_window);

-- The view reads the tables it was made on, whatever their names now: made anew below.
drop view rollups;
alter table rollups_minute rename to rollups_minute_before_0012;
alter index rollups_minute_pkey rename to rollups_minute_before_0012_pkey;
alter index rollups_minute_by_minute rename to rollups_minute_before_0012_by_minute;
alter index rollups_cities_by_country rename to rollups_minute_before_0012_cities_by_country;
alter index rollups_country_series rename to rollups_minute_before_0012_country_series;

create table rollups_minute (
    service text        not null,
    country text        not null,
    city    text        not null,
    minute  timestamptz not null,
    count   bigint      not null,
    primary key (service, country, city, minute)
) partition by range (minute);
create index rollups_minute_by_minute on rollups_minute (minute);
create index rollups_cities_by_country on rollups_minute (service, country, minute) include (city, count) where city <> '';
create index rollups_country_series on rollups_minute (service, country, minute) include (count) where city = '';

create view rollups as
    select service, country, city, minute, count from rollups_minute
    union all
    select service, country, city, minute, count from rollups_live;

-- A partition for every day that has rows, then the rows.
select ensure_day_partition('reports', day)
from (select distinct (dedup_window at time zone 'UTC')::date as day from reports_before_0012) days;
select ensure_day_partition('rollups_minute', day)
from (select distinct (minute at time zone 'UTC')::date as day from rollups_minute_before_0012) days;

insert into reports (id, received_at, service, country, city, problem, fingerprint, dedup_window, counted)
select id, received_at, service, country, city, problem, fingerprint, dedup_window, counted
from reports_before_0012;
insert into report_ids (id, dedup_window, counted)
select id, dedup_window, counted from reports_before_0012;
insert into rollups_minute (service, country, city, minute, count)
select service, country, city, minute, count from rollups_minute_before_0012;

drop table reports_before_0012;
drop table rollups_minute_before_0012;
