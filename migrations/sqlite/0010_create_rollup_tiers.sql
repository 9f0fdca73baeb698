-- Rollup tiers: the minute counts summed per quarter hour and per hour (unix seconds of their
-- start), so a read of a long range reads one row per quarter or hour instead of 15 or 60.
-- insert_reports adds to all three in the transaction that counts the reports.
create table rollups_quarter (
    service text    not null,
    country text    not null,
    city    text    not null,
    quarter integer not null,
    count   integer not null,
    primary key (service, country, city, quarter)
) without rowid;
create index rollups_quarter_by_quarter on rollups_quarter (quarter);
create index rollups_quarter_country_series on rollups_quarter (service, country, quarter, count) where city = '';
create index rollups_quarter_cities_by_country on rollups_quarter (service, country, quarter, city, count) where city <> '';

create table rollups_hour (
    service text    not null,
    country text    not null,
    city    text    not null,
    hour    integer not null,
    count   integer not null,
    primary key (service, country, city, hour)
) without rowid;
create index rollups_hour_by_hour on rollups_hour (hour);
create index rollups_hour_country_series on rollups_hour (service, country, hour, count) where city = '';
create index rollups_hour_cities_by_country on rollups_hour (service, country, hour, city, count) where city <> '';

insert into rollups_quarter (service, country, city, quarter, count)
select service, country, city, (minute / 900) * 900, sum(count)
from rollups_minute
group by 1, 2, 3, 4;

insert into rollups_hour (service, country, city, hour, count)
select service, country, city, (quarter / 3600) * 3600, sum(count)
from rollups_quarter
group by 1, 2, 3, 4;
