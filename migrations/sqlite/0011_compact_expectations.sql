-- The detector's expectations, one row per series per UTC day (unix seconds of its start)
-- instead of one per quarter hour: `expected` is a JSON array of the day's 96 quarters, in
-- order, each a number or null (no expectation for that quarter). A redetect of 30 days x
-- 1,000 series writes 30,000 rows, not 2.9 million. '%!.17g' writes each double exactly (the
-- '!' lifts printf's usual 16 significant digits).
-- src/store/expectations.rs reads and merges them.
create table expectations_day (
    service  text    not null,
    country  text    not null,
    city     text    not null,
    day      integer not null,
    expected text    not null,
    primary key (service, country, city, day)
) without rowid;
create index expectations_day_by_day on expectations_day (day);

-- Whole days first, in one pass (a series' days are whole but for its first and last).
insert into expectations_day (service, country, city, day, expected)
select service, country, city, day, '[' || group_concat(v, ',') || ']'
from (
    select service, country, city, (quarter / 86400) * 86400 as day,
           printf('%!.17g', expected) as v
    from expectations_quarter
    order by service, country, city, quarter
)
group by service, country, city, day
having count(*) = 96;

-- Then the days with gaps, null where a quarter has no expectation.
insert into expectations_day (service, country, city, day, expected)
select service, country, city, day, '[' || group_concat(v, ',') || ']'
from (
    with recursive slots(slot) as (select 0 union all select slot + 1 from slots where slot < 95),
    keys as (
        select service, country, city, (quarter / 86400) * 86400 as day
        from expectations_quarter
        group by 1, 2, 3, 4
        having count(*) < 96
    )
    select k.service, k.country, k.city, k.day, s.slot,
           case when e.expected is null then 'null' else printf('%!.17g', e.expected) end as v
    from keys k
    cross join slots s
    left join expectations_quarter e
      on e.service = k.service and e.country = k.country and e.city = k.city
     and e.quarter = k.day + s.slot * 900
    order by k.service, k.country, k.city, k.day, s.slot
)
group by service, country, city, day;

drop table expectations_quarter;
