-- Tessera schema version 1: jobs, their images, user and guild settings.
-- Times are UNIX seconds (REAL, UTC). JSON columns hold the dataclasses' to_json() output.

CREATE TABLE jobs (
    id            TEXT PRIMARY KEY,
    kind          TEXT NOT NULL CHECK (kind IN ('imagine', 'variation', 'reroll', 'upscale')),
    state         TEXT NOT NULL CHECK (state IN ('queued', 'running', 'done', 'failed', 'cancelled')),
    user_id       INTEGER NOT NULL,
    guild_id      INTEGER,
    channel_id    INTEGER,
    message_id    INTEGER,
    parent_id     TEXT REFERENCES jobs (id) ON DELETE SET NULL,
    parent_index  INTEGER CHECK (parent_index IS NULL OR parent_index >= 0),
    prompt_text   TEXT NOT NULL,
    prompt_json   TEXT,
    request_json  TEXT,
    options_json  TEXT NOT NULL DEFAULT '{}',
    seed          INTEGER,
    model         TEXT,
    priority      INTEGER NOT NULL DEFAULT 0,
    attempts      INTEGER NOT NULL DEFAULT 0,
    error         TEXT,
    created_at    REAL NOT NULL,
    queued_at     REAL,
    started_at    REAL,
    finished_at   REAL
) STRICT;

CREATE INDEX jobs_by_user ON jobs (user_id, created_at);
CREATE INDEX jobs_by_message ON jobs (message_id) WHERE message_id IS NOT NULL;
CREATE INDEX jobs_by_parent ON jobs (parent_id) WHERE parent_id IS NOT NULL;
CREATE INDEX jobs_active ON jobs (created_at) WHERE state IN ('queued', 'running');
CREATE INDEX jobs_by_state ON jobs (state, created_at);

CREATE TABLE images (
    job_id      TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    idx         INTEGER NOT NULL CHECK (idx >= 0),
    path        TEXT NOT NULL,  -- relative to DATA_DIR/images
    width       INTEGER NOT NULL CHECK (width > 0),
    height      INTEGER NOT NULL CHECK (height > 0),
    format      TEXT NOT NULL,
    sha256      TEXT NOT NULL CHECK (length(sha256) = 64),
    bytes       INTEGER NOT NULL CHECK (bytes >= 0),
    created_at  REAL NOT NULL,
    PRIMARY KEY (job_id, idx)
) STRICT;

CREATE INDEX images_by_path ON images (path);
CREATE INDEX images_by_age ON images (created_at);

CREATE TABLE user_settings (
    user_id     INTEGER PRIMARY KEY,
    quality     REAL,
    aspect      TEXT,
    stylize     INTEGER,
    sampler     TEXT,
    model       TEXT,
    private     INTEGER NOT NULL DEFAULT 0,
    updated_at  REAL NOT NULL
) STRICT;

CREATE TABLE guild_settings (
    guild_id             INTEGER PRIMARY KEY,
    allowed_channels     TEXT NOT NULL DEFAULT '[]',
    max_queued_per_user  INTEGER,
    banned_words         TEXT NOT NULL DEFAULT '[]',
    safety_checker       INTEGER NOT NULL DEFAULT 0,
    gallery_channel_id   INTEGER,
    priority_role_id     INTEGER,
    updated_at           REAL NOT NULL
) STRICT;
