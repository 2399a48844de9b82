-- Tessera schema version 5: personal shortcuts and server styles (issue 18).
-- user_suffix: text appended to every prompt of a user (`/prefer suffix`).
-- user_options: a user's custom `--name` and what it stands for (`/prefer option set`).
-- guild_styles: a server's `--style name` and what it stands for (`/admin style add`).
-- user_settings.lora: a user's default LoRA (`/settings lora:`), used when a prompt names none.
-- Bounds (counts, lengths, names) are checked by storage.shortcuts before every insert.

ALTER TABLE user_settings ADD COLUMN lora TEXT;

CREATE TABLE user_suffix (
    user_id     INTEGER PRIMARY KEY,
    suffix      TEXT NOT NULL,
    updated_at  REAL NOT NULL
) STRICT;

CREATE TABLE user_options (
    user_id     INTEGER NOT NULL,
    name        TEXT NOT NULL,
    value       TEXT NOT NULL,
    updated_at  REAL NOT NULL,
    PRIMARY KEY (user_id, name)
) STRICT;

CREATE TABLE guild_styles (
    guild_id    INTEGER NOT NULL,
    name        TEXT NOT NULL,
    text        TEXT NOT NULL,
    updated_at  REAL NOT NULL,
    PRIMARY KEY (guild_id, name)
) STRICT;
