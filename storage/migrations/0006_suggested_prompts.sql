-- Tessera schema version 6: prompts the bot suggested (/describe's four, /shorten's up to five),
-- so the buttons under the answer (`tessera:describe:use:…`, `tessera:shorten:run:<key>:<n>`)
-- still know their prompt after a restart: the prompts do not fit in a 100-character custom_id.
-- key: 'd:<sha256 of the stored picture>:<offset>' or 's:<16 hex of the prompts' sha256>'.
-- prompts: a JSON list of strings. Rows are small and content-addressed (written once).

CREATE TABLE suggested_prompts (
    key TEXT PRIMARY KEY,
    prompts TEXT NOT NULL,
    created_at REAL NOT NULL
);
