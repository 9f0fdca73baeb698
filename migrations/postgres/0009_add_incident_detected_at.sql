-- The minute the detector opened each incident. started_at is back-dated to the first surging
-- minute; detected_at is when the surge had held long enough to be announced, so the two differ
-- by the detector's delay. A reopened incident keeps its first detected_at.
-- Incidents stored before this change never recorded the minute: they get their started_at,
-- the earliest it can have been (`outagewatch redetect` over their range computes the real one).
alter table incidents add column detected_at timestamptz;
update incidents set detected_at = started_at;
alter table incidents alter column detected_at set not null;
