-- One index on the event log instead of two: each event dirtied a random page of both
-- (job_id, id) and (job_id, dedupe), both keyed by the random job id. One full unique index on
-- (job_id, dedupe) keeps the dedupe (NULLs are distinct: events without a key are never
-- refused) and finds a job's events by job_id, sorted by id (a job has tens of events).
DROP INDEX events_job;
DROP INDEX events_dedupe;
CREATE UNIQUE INDEX events_job_dedupe ON events (job_id, dedupe);
