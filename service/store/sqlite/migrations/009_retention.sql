-- Retention (RELAY_RETENTION_DAYS, `upscale-relay prune`): the events, deliveries and attempts
-- of jobs that ended long ago are deleted in small batches; the jobs rows stay, each marked
-- pruned_at once nothing of it is left to prune. The partial index holds the ended jobs not
-- yet pruned (those within the retention window), so a batch finds its jobs without a scan.
ALTER TABLE jobs ADD COLUMN pruned_at REAL;
CREATE INDEX jobs_unpruned ON jobs (finished_at)
    WHERE finished_at IS NOT NULL AND pruned_at IS NULL;
-- Events stay append-only: an UPDATE is always refused, and so is a DELETE, except of an
-- event of a job that ended before the cutoff a prune sets in meta ('prune_before') for its
-- own transaction (service/store/sqlite/retention.py inserts that row, deletes, and removes
-- it before the commit: it is never committed). The log's newest event is never deleted: ids
-- are rowids (max + 1), so keeping the newest keeps every later id larger than any seen.
DROP TRIGGER events_append_only_delete;
CREATE TRIGGER events_append_only_delete BEFORE DELETE ON events
WHEN NOT EXISTS (
    SELECT 1 FROM meta m JOIN jobs j ON j.id = OLD.job_id
    WHERE m.key = 'prune_before'
        AND j.status IN ('succeeded', 'failed', 'canceled')
        AND j.finished_at < CAST(m.value AS REAL)
) OR OLD.id >= (SELECT max(id) FROM events)
BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
