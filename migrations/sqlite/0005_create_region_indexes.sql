-- Covering indexes for the regions ranking, so a window of a service's country totals, or of
-- one country's cities, is one short index range instead of a scan of the service's history.
-- Partial on the city column: each rollup row lands in one of them, so ingest maintains one
-- more index per row, not two. Worldwide city rankings walk the per-country index country by
-- country. Expectations need none: the ranking looks up each listed region's by primary key
-- (an index there slowed the detector's expectation writes threefold).
create index rollups_country_totals on rollups_minute (service, minute, country, count) where city = '';
create index rollups_cities_by_country on rollups_minute (service, country, minute, city, count) where city <> '';
