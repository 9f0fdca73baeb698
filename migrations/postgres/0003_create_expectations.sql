-- The detector's expected count per series per quarter hour, so charts can draw the normal
-- band next to the counts. country = '' and city = '' is the service's global series;
-- city = '' a country's.
create table expectations_quarter (
    service  text             not null,
    country  text             not null,
    city     text             not null,
    quarter  timestamptz not null,
    expected double precision not null,
    primary key (service, country, city, quarter)
);
