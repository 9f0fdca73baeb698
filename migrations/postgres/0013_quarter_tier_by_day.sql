-- The quarter-hour tier as one row per series per UTC day instead of one per quarter hour:
-- `counts` holds the day's 96 quarters in order (0 where a quarter has no settled count). A
-- week's counts at 15m then read 8 rows, not 672: in pgbench the 672 rows (index tuples,
-- per-row aggregation, per-row transfer) were about four fifths of Postgres' cost of a counts
-- answer. Postgres only: SQLite keeps rollups_quarter (src/store/read_sql.rs, `Dialect`).
-- Every writer adds to a day's row with the same two functions below, so the row is always
-- the sum of the settled minutes of its day, as rollups_quarter's rows were of their quarter.
create table rollups_quarter_day (
    service text        not null,
    country text        not null,
    city    text        not null,
    day     timestamptz not null,
    counts  int8[]      not null,
    primary key (service, country, city, day)
);
create index rollups_quarter_day_by_day on rollups_quarter_day (day);
create index rollups_quarter_day_cities_by_country on rollups_quarter_day (service, country, day) include (city) where city <> '';

-- A day's 96 quarter counts from (slot, count) pairs: slot 0 is 00:00-00:15 UTC; a slot may
-- come more than once (its counts add up).
create function quarters_of(slots int4[], counts int8[]) returns int8[]
language plpgsql immutable parallel safe as $$
declare
    day int8[] := array_fill(0::int8, array[96]);
begin
    for i in 1 .. coalesce(array_length(slots, 1), 0) loop
        day[slots[i] + 1] := day[slots[i] + 1] + counts[i];
    end loop;
    return day;
end
$$;

-- Two days' quarter counts added quarter by quarter (a stored row and what a writer adds).
create function quarters_added(stored int8[], added int8[]) returns int8[]
language plpgsql immutable parallel safe as $$
declare
    day int8[] := stored;
begin
    for i in 1 .. 96 loop
        day[i] := day[i] + added[i];
    end loop;
    return day;
end
$$;

insert into rollups_quarter_day (service, country, city, day, counts)
select service, country, city, date_bin('1 day', quarter, timestamptz 'epoch'),
       quarters_of(array_agg((date_part('epoch', quarter)::int8 % 86400 / 900)::int4),
                   array_agg(count))
from rollups_quarter
group by 1, 2, 3, 4;

drop table rollups_quarter;
