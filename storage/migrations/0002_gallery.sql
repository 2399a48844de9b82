-- Tessera schema version 2: the shared-prompt gallery, its likes and full-text search.

CREATE TABLE gallery (
    id           INTEGER PRIMARY KEY,
    job_id       TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    idx          INTEGER NOT NULL CHECK (idx >= 0),
    title        TEXT,
    author_id    INTEGER NOT NULL,
    guild_id     INTEGER,
    channel_id   INTEGER,
    message_id   INTEGER,
    prompt_text  TEXT NOT NULL,
    likes        INTEGER NOT NULL DEFAULT 0 CHECK (likes >= 0),
    created_at   REAL NOT NULL,
    removed      INTEGER NOT NULL DEFAULT 0,
    UNIQUE (job_id, idx)
) STRICT;

CREATE INDEX gallery_by_message ON gallery (message_id) WHERE message_id IS NOT NULL;
CREATE INDEX gallery_top ON gallery (removed, likes, created_at);
CREATE INDEX gallery_recent ON gallery (removed, created_at);
CREATE INDEX gallery_by_author ON gallery (author_id, created_at);

-- One like per user and entry: the primary key is what makes "like once" true.
CREATE TABLE gallery_likes (
    entry_id    INTEGER NOT NULL REFERENCES gallery (id) ON DELETE CASCADE,
    user_id     INTEGER NOT NULL,
    created_at  REAL NOT NULL,
    PRIMARY KEY (entry_id, user_id)
) STRICT, WITHOUT ROWID;

-- External-content FTS5 index over the prompt and title; the triggers keep it in step.
CREATE VIRTUAL TABLE gallery_fts USING fts5 (
    prompt_text, title,
    content = 'gallery', content_rowid = 'id',
    tokenize = 'unicode61 remove_diacritics 2'
);

CREATE TRIGGER gallery_fts_insert AFTER INSERT ON gallery BEGIN
    INSERT INTO gallery_fts (rowid, prompt_text, title) VALUES (new.id, new.prompt_text, new.title);
END;

CREATE TRIGGER gallery_fts_delete AFTER DELETE ON gallery BEGIN
    INSERT INTO gallery_fts (gallery_fts, rowid, prompt_text, title)
        VALUES ('delete', old.id, old.prompt_text, old.title);
END;

CREATE TRIGGER gallery_fts_update AFTER UPDATE OF prompt_text, title ON gallery BEGIN
    INSERT INTO gallery_fts (gallery_fts, rowid, prompt_text, title)
        VALUES ('delete', old.id, old.prompt_text, old.title);
    INSERT INTO gallery_fts (rowid, prompt_text, title) VALUES (new.id, new.prompt_text, new.title);
END;
