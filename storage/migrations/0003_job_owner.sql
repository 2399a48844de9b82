-- Tessera schema version 3: who asked for a job, so nobody runs a job whose asker is gone.
-- requester: 'bot' (the Discord bot resumes these after a restart) or 'cli' (a `tessera
-- imagine`/`vary`/`reroll`/`upscale` process waits for them; the bot never runs them).
-- owner_*: the CLI process's identity (host name, pid, start time in clock ticks since boot);
-- when that process is gone its unfinished jobs are stuck, and `tessera doctor --fix` (or the
-- next CLI run) marks them failed.

ALTER TABLE jobs ADD COLUMN requester TEXT NOT NULL DEFAULT 'bot' CHECK (requester IN ('bot', 'cli'));
ALTER TABLE jobs ADD COLUMN owner_host TEXT;
ALTER TABLE jobs ADD COLUMN owner_pid INTEGER;
ALTER TABLE jobs ADD COLUMN owner_start INTEGER;

CREATE INDEX jobs_active_by_requester ON jobs (requester, created_at) WHERE state IN ('queued', 'running');
