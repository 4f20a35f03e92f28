-- The in-flight count of each provider (jobs queued or processing, or being submitted and not
-- held back), read on every submission against RELAY_MAX_IN_FLIGHT. Counting the jobs rows
-- took time in proportion to every job the provider ever had; these triggers keep the count
-- in the transaction of each write that changes it, whatever statement makes the change.
--
-- One row per provider would serialize every such write of that provider across processes
-- (the row stays locked until its transaction commits). The count is split over 16 slots
-- picked by the writing connection's backend pid: concurrent transactions take different
-- rows (unless two pids share a slot), a transaction never holds two slots of a provider
-- (so slots cannot deadlock), and the count is the sum of at most 16 rows.
-- No write to jobs between the count below and the triggers: none is missed.
LOCK TABLE jobs IN SHARE ROW EXCLUSIVE MODE;

CREATE TABLE in_flight (
    provider TEXT NOT NULL,
    slot INTEGER NOT NULL,
    n BIGINT NOT NULL,
    PRIMARY KEY (provider, slot)
);

INSERT INTO in_flight (provider, slot, n)
SELECT provider, 0, count(*) FROM jobs
WHERE status IN ('queued', 'processing') OR (status = 'submitting' AND deferred = 0)
GROUP BY provider;

CREATE FUNCTION jobs_in_flight() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    was BOOLEAN := false;
    now_in BOOLEAN := false;
    stripe INTEGER := pg_backend_pid() % 16;
BEGIN
    IF TG_OP <> 'INSERT' THEN
        was := OLD.status IN ('queued', 'processing')
            OR (OLD.status = 'submitting' AND OLD.deferred = 0);
    END IF;
    IF TG_OP <> 'DELETE' THEN
        now_in := NEW.status IN ('queued', 'processing')
            OR (NEW.status = 'submitting' AND NEW.deferred = 0);
    END IF;
    IF TG_OP = 'UPDATE' AND was = now_in AND NEW.provider = OLD.provider THEN
        RETURN NULL;
    END IF;
    IF was THEN
        INSERT INTO in_flight AS f (provider, slot, n) VALUES (OLD.provider, stripe, -1)
        ON CONFLICT (provider, slot) DO UPDATE SET n = f.n - 1;
    END IF;
    IF now_in THEN
        INSERT INTO in_flight AS f (provider, slot, n) VALUES (NEW.provider, stripe, 1)
        ON CONFLICT (provider, slot) DO UPDATE SET n = f.n + 1;
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER jobs_in_flight_insert AFTER INSERT ON jobs
    FOR EACH ROW
    WHEN (NEW.status IN ('queued', 'processing')
        OR (NEW.status = 'submitting' AND NEW.deferred = 0))
    EXECUTE FUNCTION jobs_in_flight();
CREATE TRIGGER jobs_in_flight_delete AFTER DELETE ON jobs
    FOR EACH ROW
    WHEN (OLD.status IN ('queued', 'processing')
        OR (OLD.status = 'submitting' AND OLD.deferred = 0))
    EXECUTE FUNCTION jobs_in_flight();
-- Fires only when a job enters or leaves the count (queued -> processing writes nothing).
CREATE TRIGGER jobs_in_flight_update AFTER UPDATE OF status, deferred, provider ON jobs
    FOR EACH ROW
    WHEN ((NEW.status IN ('queued', 'processing')
            OR (NEW.status = 'submitting' AND NEW.deferred = 0))
        IS DISTINCT FROM (OLD.status IN ('queued', 'processing')
            OR (OLD.status = 'submitting' AND OLD.deferred = 0))
        OR NEW.provider IS DISTINCT FROM OLD.provider)
    EXECUTE FUNCTION jobs_in_flight();
-- TRUNCATE empties the jobs: the count goes with them.
CREATE FUNCTION jobs_in_flight_reset() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM in_flight;
    RETURN NULL;
END;
$$;
CREATE TRIGGER jobs_in_flight_truncate AFTER TRUNCATE ON jobs
    FOR EACH STATEMENT EXECUTE FUNCTION jobs_in_flight_reset();
