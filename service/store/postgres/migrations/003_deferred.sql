-- Jobs held back while their provider has RELAY_MAX_IN_FLIGHT jobs running.
ALTER TABLE jobs ADD COLUMN deferred INTEGER NOT NULL DEFAULT 0;
CREATE INDEX jobs_provider_status ON jobs (provider, status);
-- The due time a poller claimed a job at, to measure how late polls run (GET /metrics).
ALTER TABLE jobs ADD COLUMN claimed_due DOUBLE PRECISION;
