-- Subscriptions and the delivery outbox: one delivery per matching subscription per event,
-- committed in the transaction that commits the event.
CREATE TABLE subscriptions (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    url TEXT NOT NULL,
    kind TEXT NOT NULL,
    events TEXT NOT NULL,
    filter TEXT,
    template TEXT,
    description TEXT,
    secret TEXT,
    old_secret TEXT,
    old_secret_expires_at REAL,
    status TEXT NOT NULL DEFAULT 'active',
    paused_reason TEXT,
    rate_per_second REAL,
    max_in_flight INTEGER NOT NULL DEFAULT 4,
    failing_since REAL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);

CREATE TABLE deliveries (
    seq INTEGER PRIMARY KEY,
    -- the webhook-id: stable across every retry of this delivery
    id TEXT NOT NULL UNIQUE,
    subscription_id TEXT,
    job_id TEXT,
    event_id INTEGER NOT NULL,
    event_type TEXT NOT NULL,
    kind TEXT NOT NULL,
    -- set for per-job webhooks; a subscription's delivery goes to its current URL
    url TEXT,
    ordered INTEGER NOT NULL DEFAULT 0,
    status TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    round INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL,
    lease_owner TEXT,
    last_status_code INTEGER,
    last_error TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    delivered_at REAL
);
CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE next_attempt_at IS NOT NULL;
CREATE INDEX deliveries_subscription ON deliveries (subscription_id, status, seq);
CREATE INDEX deliveries_status ON deliveries (status, seq);
CREATE INDEX deliveries_job ON deliveries (job_id, seq);

CREATE TABLE attempts (
    id INTEGER PRIMARY KEY,
    delivery_id TEXT NOT NULL,
    attempted_at REAL NOT NULL,
    status_code INTEGER,
    latency_ms REAL NOT NULL,
    response TEXT,
    error TEXT
);
CREATE INDEX attempts_delivery ON attempts (delivery_id, id);
