-- What one job's callbacks added to the log, so it stays bounded (ledger.CALLBACK_EVENTS).
ALTER TABLE jobs ADD COLUMN callback_events INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN callback_events_late INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN callbacks_dropped INTEGER NOT NULL DEFAULT 0;
