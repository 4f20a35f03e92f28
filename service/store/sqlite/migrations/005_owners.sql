-- Process liveness for leases (service/owners.py): one row per running relay process, its
-- heartbeat written every ~1 s. A lease whose owner's heartbeat is older than
-- owners.DEAD_AFTER, or whose owner has no row (it stopped cleanly), is free to claim.
CREATE TABLE owners (
    id TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    started_at REAL NOT NULL,
    heartbeat_at REAL NOT NULL
);
-- The leases held now (in-flight polls, submissions, deliveries): few rows, so a claim
-- finds the leases of dead owners without scanning what is merely scheduled.
CREATE INDEX jobs_leased ON jobs (lease_owner) WHERE lease_owner IS NOT NULL;
CREATE INDEX deliveries_leased ON deliveries (lease_owner) WHERE lease_owner IS NOT NULL;
-- Leases left on jobs that have nothing scheduled (finished, or submitted after a deferral)
-- hold nothing: cleared, so the index above holds only live leases.
UPDATE jobs SET lease_owner = NULL, lease_expires_at = NULL
    WHERE lease_owner IS NOT NULL AND next_poll_at IS NULL;
UPDATE deliveries SET lease_owner = NULL WHERE lease_owner IS NOT NULL AND status != 'pending';
