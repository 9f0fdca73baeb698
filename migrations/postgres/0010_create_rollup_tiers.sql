-- Rollup tiers: the settled minute counts summed per quarter hour and per hour, so a read of a
-- long range reads one row per quarter or hour instead of 15 or 60 (a week at 15m: 672 rows,
-- not 10,080). They hold exactly what rollups_minute holds: settle_rollups adds what it moves
-- there to both tiers in the same statement, and a batch counted straight into rollups_minute
-- (history, late reports) adds to them in its own statement. Counts still in rollups_live are
-- in no tier: reads add them (src/store/sql.rs, `tiered`).
create table rollups_quarter (
    service text        not null,
    country text        not null,
    city    text        not null,
    quarter timestamptz not null,
    count   bigint      not null,
    primary key (service, country, city, quarter)
);
create index rollups_quarter_by_quarter on rollups_quarter (quarter);
create index rollups_quarter_country_series on rollups_quarter (service, country, quarter) include (count) where city = '';
create index rollups_quarter_cities_by_country on rollups_quarter (service, country, quarter) include (city, count) where city <> '';

create table rollups_hour (
    service text        not null,
    country text        not null,
    city    text        not null,
    hour    timestamptz not null,
    count   bigint      not null,
    primary key (service, country, city, hour)
);
create index rollups_hour_by_hour on rollups_hour (hour);
create index rollups_hour_country_series on rollups_hour (service, country, hour) include (count) where city = '';
create index rollups_hour_cities_by_country on rollups_hour (service, country, hour) include (city, count) where city <> '';

insert into rollups_quarter (service, country, city, quarter, count)
select service, country, city, date_bin('15 minutes', minute, timestamptz 'epoch'), sum(count)
from rollups_minute
group by 1, 2, 3, 4;

insert into rollups_hour (service, country, city, hour, count)
select service, country, city, date_bin('1 hour', quarter, timestamptz 'epoch'), sum(count)
from rollups_quarter
group by 1, 2, 3, 4;
