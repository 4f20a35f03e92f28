-- Output archiving (RELAY_ARCHIVE, service/archiver.py): one row per output of a succeeded
-- job, the work of copying it to the team's storage. A pending row is due at
-- next_attempt_at, which doubles as its lease's end while lease_owner holds it (as for
-- deliveries): a crashed owner's rows are taken over once its heartbeat is stale.
-- state: pending (to copy), done (copied: key and what was found), failed (given up:
-- error), deleted (copied, then removed by retention).
CREATE TABLE archives (
    job_id TEXT NOT NULL REFERENCES jobs (id),
    n INTEGER NOT NULL,
    url TEXT NOT NULL,
    media_type TEXT,
    -- before_notify: job.succeeded is recorded once every output of the job is settled
    hold INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at DOUBLE PRECISION,
    lease_owner TEXT,
    key TEXT,
    sha256 TEXT,
    bytes BIGINT,
    content_type TEXT,
    width INTEGER,
    height INTEGER,
    error TEXT,
    created_at DOUBLE PRECISION NOT NULL,
    finished_at DOUBLE PRECISION,
    job_finished_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (job_id, n)
);
CREATE INDEX archives_due ON archives (next_attempt_at) WHERE state = 'pending';
CREATE INDEX archives_leased ON archives (lease_owner) WHERE lease_owner IS NOT NULL;
-- retention: the archived files of jobs that ended before a cutoff
CREATE INDEX archives_kept ON archives (job_finished_at) WHERE state = 'done';
