-- Issue 5: the service catalog as an admin changes it at run time (seeded from the config at
-- start), admin notes and manual resolutions on incidents, and the per-network minute counts
-- that cap how much one network can add to a service's count. Times are unix seconds.
create table services (
    slug       text    not null primary key,
    name       text    not null,
    enabled    integer not null,
    -- catalog order: the config's order, then the order admins added services in
    position   integer not null,
    updated_at integer not null
);

-- Set by the admin API. A manually resolved incident (resolved_by set) is no longer changed by
-- the detector, and neither it nor a noted one is deleted by a redetect of its range.
alter table incidents add column note text;
alter table incidents add column resolved_by text;

-- Counted reports each network (a keyed hash of its /24 or /48, never the prefix itself) tried
-- to add to a service's minute; rows of past minutes are deleted soon after.
create table network_minute_counts (
    service text    not null,
    network blob    not null,
    minute  integer not null,
    count   integer not null,
    primary key (service, network, minute)
) without rowid;
create index network_minute_counts_by_minute on network_minute_counts (minute);
