-- The webhook outbox: one row per (incident event, configured endpoint), written in the same
-- transaction as the incident change it announces, and worked off by the deliverer.
-- Times are unix seconds.
create table webhook_deliveries (
    -- derived from (incident, event type, minute of the change), so a retry or a re-enqueue
    -- carries the same id and receivers can deduplicate on it
    event_id        blob    not null,
    -- the configured endpoint's name (never its URL, which may hold a token)
    endpoint        text    not null,
    event_type      text    not null check (event_type in ('incident.opened', 'incident.resolved')),
    incident_id     blob    not null,
    occurred_at     integer not null,
    -- the JSON body, fixed when the event happened so every attempt sends the same bytes
    payload         text    not null,
    status          text    not null default 'pending' check (status in ('pending', 'delivered', 'failed')),
    attempts        integer not null default 0,
    created_at      integer not null,
    -- when the row is next due; while an attempt is in flight, the end of its lease
    next_attempt_at integer not null,
    last_attempt_at integer,
    last_error      text,
    finished_at     integer,
    primary key (event_id, endpoint)
);
-- The deliverer claims the pending rows that are due, oldest due first.
create index webhook_deliveries_due on webhook_deliveries (next_attempt_at) where status = 'pending';
