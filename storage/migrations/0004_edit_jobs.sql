-- Tessera schema version 4: edit jobs (zoom out, pan, make square, vary region), kind 'edit'.
-- SQLite cannot ALTER a CHECK constraint, and rebuilding `jobs` would cascade-delete images
-- and gallery entries (foreign keys stay on inside a migration's transaction). Allowing one
-- more value only loosens the check, so every stored row still satisfies it: the documented
-- "other schema changes" procedure (sqlite.org/lang_altertable.html#otheralter) edits the
-- table's SQL text in place; the CREATE/DROP below bumps the schema cookie so every
-- connection re-reads it (the migrating one resets its schema after commit).

PRAGMA writable_schema = ON;
UPDATE sqlite_schema
   SET sql = replace(sql, '''reroll'', ''upscale''))', '''reroll'', ''upscale'', ''edit''))')
 WHERE type = 'table' AND name = 'jobs';
PRAGMA writable_schema = OFF;
CREATE TABLE schema_bump_0004 (x INTEGER);
DROP TABLE schema_bump_0004;
