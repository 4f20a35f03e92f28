-- Pacing that holds across processes: the earliest time a subscription may be sent its next
-- message, moved on by the claim that leases one and by an answer that asks to wait.
ALTER TABLE subscriptions ADD COLUMN next_send_at DOUBLE PRECISION;
