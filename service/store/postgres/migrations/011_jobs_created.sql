-- The dashboard's 24-hour counts by state (GET /ui/jobs) read the jobs created since a
-- time: this index finds them without reading the whole history.
CREATE INDEX jobs_created ON jobs (created_at);
