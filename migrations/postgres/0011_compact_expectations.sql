-- The detector's expectations, one row per series per UTC day instead of one per quarter hour:
-- `expected` is a JSON array of the day's 96 quarters, in order, each a number or null (no
-- expectation for that quarter). A redetect of 30 days x 1,000 series writes 30,000 rows, not
-- 2.9 million. The values are the same doubles: float8's text (shortest exact form) in, and
-- serde_json's (also exact) from then on. src/store/expectations.rs reads and merges them.
create table expectations_day (
    service  text        not null,
    country  text        not null,
    city     text        not null,
    day      timestamptz not null,
    expected text        not null,
    primary key (service, country, city, day)
);
create index expectations_day_by_day on expectations_day (day);

-- Whole days first, in one pass (a series' days are whole but for its first and last): a
-- slot-by-slot join for every day took over 10 minutes on the read benchmark's 30.2 M rows.
insert into expectations_day (service, country, city, day, expected)
select service, country, city, date_bin('1 day', quarter, timestamptz 'epoch'),
       '[' || string_agg(expected::text, ',' order by quarter) || ']'
from expectations_quarter
group by 1, 2, 3, 4
having count(*) = 96;

-- Then the days with gaps, null where a quarter has no expectation.
insert into expectations_day (service, country, city, day, expected)
select k.service, k.country, k.city, k.day,
       '[' || string_agg(coalesce(e.expected::text, 'null'), ',' order by s.slot) || ']'
from (
    select service, country, city, date_bin('1 day', quarter, timestamptz 'epoch') as day
    from expectations_quarter
    group by 1, 2, 3, 4
    having count(*) < 96
) k
cross join generate_series(0, 95) as s(slot)
left join expectations_quarter e
  on e.service = k.service and e.country = k.country and e.city = k.city
 and e.quarter = k.day + s.slot * interval '15 minutes'
group by k.service, k.country, k.city, k.day;

drop table expectations_quarter;
