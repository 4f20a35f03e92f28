-- The in-flight count of each provider (jobs queued or processing, or being submitted and not
-- held back), read on every submission against RELAY_MAX_IN_FLIGHT. Counting the jobs rows
-- took time in proportion to every job the provider ever had; these triggers keep the count
-- in the transaction of each write that changes it, whatever statement makes the change.
CREATE TABLE in_flight (
    provider TEXT PRIMARY KEY,
    n INTEGER NOT NULL
) WITHOUT ROWID;

INSERT INTO in_flight (provider, n)
SELECT provider, count(*) FROM jobs
WHERE status IN ('queued', 'processing') OR (status = 'submitting' AND deferred = 0)
GROUP BY provider;

CREATE TRIGGER jobs_in_flight_insert AFTER INSERT ON jobs
WHEN NEW.status IN ('queued', 'processing') OR (NEW.status = 'submitting' AND NEW.deferred = 0)
BEGIN
    INSERT INTO in_flight (provider, n) VALUES (NEW.provider, 1)
    ON CONFLICT (provider) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER jobs_in_flight_delete AFTER DELETE ON jobs
WHEN OLD.status IN ('queued', 'processing') OR (OLD.status = 'submitting' AND OLD.deferred = 0)
BEGIN
    UPDATE in_flight SET n = n - 1 WHERE provider = OLD.provider;
END;

-- Fires only for statements that set status or deferred, and writes only when the job
-- enters or leaves the count (queued -> processing, the common callback, writes nothing).
CREATE TRIGGER jobs_in_flight_update AFTER UPDATE OF status, deferred, provider ON jobs
WHEN (NEW.status IN ('queued', 'processing') OR (NEW.status = 'submitting' AND NEW.deferred = 0))
    != (OLD.status IN ('queued', 'processing') OR (OLD.status = 'submitting' AND OLD.deferred = 0))
    OR NEW.provider != OLD.provider
BEGIN
    UPDATE in_flight SET n = n - 1 WHERE provider = OLD.provider
        AND (OLD.status IN ('queued', 'processing')
            OR (OLD.status = 'submitting' AND OLD.deferred = 0));
    INSERT INTO in_flight (provider, n)
    SELECT NEW.provider, 1
    WHERE NEW.status IN ('queued', 'processing') OR (NEW.status = 'submitting' AND NEW.deferred = 0)
    ON CONFLICT (provider) DO UPDATE SET n = n + 1;
END;
