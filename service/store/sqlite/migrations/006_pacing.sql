-- Pacing that holds across processes: the earliest time (epoch seconds) a subscription may
-- be sent its next message, set by the claim that leases one (now + 1/rate_per_second) and
-- by an answer that asks to wait (Retry-After of a 429, Discord's bucket reset). NULL: no
-- wait. The in-flight count needs no column: outbox.claim counts the deliveries leased by a
-- live owner (deliveries_leased finds the few leased rows), so a crashed process's sends
-- stop counting with its heartbeat and no counter can drift.
ALTER TABLE subscriptions ADD COLUMN next_send_at REAL;
