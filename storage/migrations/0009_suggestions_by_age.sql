-- Tessera schema version 9: `tessera prune` removes suggested prompts older than its age
-- (storage/suggestions.py `prune`), a chunk at a time; this index lets each chunk find its
-- rows without reading the whole table while it holds the write lock.
-- created_at is when the prompts were last offered (a repeated /describe or /shorten of the
-- same thing refreshes it), so a button posted yesterday is never pruned as old.

CREATE INDEX suggested_prompts_by_age ON suggested_prompts (created_at);
