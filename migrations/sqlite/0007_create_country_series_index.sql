-- A country's total series as its own covering index, (service, country, minute): a week of
-- one country's counts is one index range, rather than every country's totals for the week
-- filtered. Country rankings and the world series walk it country by country. It replaces
-- the country-totals index of 0005, so ingest maintains no more indexes than before.
drop index if exists rollups_country_totals;
create index if not exists rollups_country_series on rollups_minute (service, country, minute, count) where city = '';
