-- Retention (RELAY_RETENTION_DAYS, `upscale-relay prune`): the events, deliveries and attempts
-- of jobs that ended long ago are deleted in small batches; the jobs rows stay, each marked
-- pruned_at once nothing of it is left to prune. The partial index holds the ended jobs not
-- yet pruned (those within the retention window), so a batch finds its jobs without a scan.
ALTER TABLE jobs ADD COLUMN pruned_at DOUBLE PRECISION;
CREATE INDEX jobs_unpruned ON jobs (finished_at)
    WHERE finished_at IS NOT NULL AND pruned_at IS NULL;
-- Events stay append-only: UPDATE and TRUNCATE are always refused, and so is a DELETE, except
-- of an event of a job that ended before the cutoff a prune sets for its own transaction
-- (SET LOCAL relay.prune_before, by service/store/postgres/retention.py). Ids come from an
-- identity sequence: never reused, whatever is deleted.
CREATE OR REPLACE FUNCTION events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    cutoff DOUBLE PRECISION;
BEGIN
    IF TG_OP = 'DELETE' THEN
        cutoff := NULLIF(current_setting('relay.prune_before', true), '')::double precision;
        IF cutoff IS NOT NULL AND EXISTS (
            SELECT 1 FROM jobs j WHERE j.id = OLD.job_id
                AND j.status IN ('succeeded', 'failed', 'canceled')
                AND j.finished_at < cutoff
        ) THEN
            RETURN OLD;
        END IF;
    END IF;
    RAISE EXCEPTION 'events are append-only';
END;
$$;
