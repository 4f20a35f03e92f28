-- The dashboard's 24-hour counts by state (GET /ui/jobs) read the jobs created since a
-- time: this index finds them without reading the whole history. IF NOT EXISTS: a database
-- whose version was set back by hand (tests of older migrations) may still have it.
CREATE INDEX IF NOT EXISTS jobs_created ON jobs (created_at);
