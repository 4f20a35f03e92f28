-- Jobs, the append-only event log, idempotency keys and settings kept by the service.
CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE jobs (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    model TEXT NOT NULL,
    provider TEXT NOT NULL,
    status TEXT NOT NULL,
    progress REAL NOT NULL DEFAULT 0,
    input TEXT NOT NULL,
    metadata TEXT NOT NULL DEFAULT '{}',
    outputs TEXT NOT NULL DEFAULT '[]',
    error TEXT,
    provider_job_id TEXT,
    cost REAL,
    webhook TEXT,
    webhook_events TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    finished_at REAL,
    -- poll state: due time, consecutive attempts, and the lease of whoever works on it
    next_poll_at REAL,
    poll_attempt INTEGER NOT NULL DEFAULT 0,
    poll_errors INTEGER NOT NULL DEFAULT 0,
    callback_status TEXT,
    lease_owner TEXT,
    lease_expires_at REAL
);
CREATE INDEX jobs_status ON jobs (status, seq);
CREATE INDEX jobs_model ON jobs (model, seq);
CREATE INDEX jobs_due ON jobs (provider, next_poll_at) WHERE next_poll_at IS NOT NULL;
CREATE UNIQUE INDEX jobs_provider_job ON jobs (provider, provider_job_id)
    WHERE provider_job_id IS NOT NULL;

-- The global log: its id is the cursor of GET /v1/events?after=. Rows are never deleted
-- (see the triggers), so a plain rowid key only grows: no AUTOINCREMENT bookkeeping needed.
CREATE TABLE events (
    id INTEGER PRIMARY KEY,
    job_id TEXT,
    type TEXT NOT NULL,
    source TEXT NOT NULL,
    created_at REAL NOT NULL,
    data TEXT NOT NULL,
    dedupe TEXT
);
CREATE INDEX events_job ON events (job_id, id);
-- One event per job and state: a poll and a callback reporting the same thing write one row.
CREATE UNIQUE INDEX events_dedupe ON events (job_id, dedupe) WHERE dedupe IS NOT NULL;
CREATE TRIGGER events_append_only_update BEFORE UPDATE ON events
BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
CREATE TRIGGER events_append_only_delete BEFORE DELETE ON events
BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;

CREATE TABLE idempotency (
    key TEXT PRIMARY KEY,
    request_hash TEXT NOT NULL,
    job_id TEXT,
    status_code INTEGER,
    response TEXT,
    created_at REAL NOT NULL
);
