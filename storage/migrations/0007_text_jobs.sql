-- Tessera schema version 7: /describe and /shorten run as queue jobs (kinds 'describe' and
-- 'shorten'); their answer is text, kept as JSON in `result_json` (images stay in `images`).
-- The new column comes first: ADD COLUMN edits the table's SQL text at an offset SQLite
-- remembers from when the schema was read, so it must run before that text is changed.
-- The kind CHECK is then loosened in place exactly as 0004 did (see there for why the table
-- is not rebuilt); every stored row still satisfies it.

ALTER TABLE jobs ADD COLUMN result_json TEXT;
PRAGMA writable_schema = ON;
UPDATE sqlite_schema
   SET sql = replace(sql, '''upscale'', ''edit''))', '''upscale'', ''edit'', ''describe'', ''shorten''))')
 WHERE type = 'table' AND name = 'jobs';
PRAGMA writable_schema = OFF;
CREATE TABLE schema_bump_0007 (x INTEGER);
DROP TABLE schema_bump_0007;
-- The edit above matches the text 0004 left; should it ever not (a hand-edited schema), stop
-- here, rolled back, rather than record version 7 with describe/shorten jobs still refused.
CREATE TEMP TABLE migration_0007_check (
    jobs_kinds INTEGER CONSTRAINT jobs_kind_check_was_not_loosened CHECK (jobs_kinds = 1)
);
INSERT INTO migration_0007_check
SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = 'jobs' AND instr(sql, '''shorten''') > 0;
DROP TABLE migration_0007_check;
