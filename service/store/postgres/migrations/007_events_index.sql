-- One index on the event log instead of two (each was dirtied at a random place, keyed by the
-- random job id): a full unique index on (job_id, dedupe) keeps the dedupe (NULLs distinct)
-- and finds a job's events by job_id, sorted by id (a job has tens of events).
DROP INDEX events_job;
DROP INDEX events_dedupe;
CREATE UNIQUE INDEX events_job_dedupe ON events (job_id, dedupe);
