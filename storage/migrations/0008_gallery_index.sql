-- Tessera schema version 8: one server's gallery pages without a walk through every server's.
-- The web gallery's server page (/g/<guild>, its /api/shares and the model list) asks for
-- `removed = 0 AND guild_id = ?` newest first or most liked first (storage/gallery.py
-- `browse_sql`, `GalleryRepository.models`). With only gallery_recent / gallery_top (which
-- start at `removed`) SQLite walks all shares in date or likes order and drops other servers'
-- rows one by one: a small server's page read every share of a 100,000-share gallery.
-- Same columns as gallery_recent / gallery_top, with the server first; the rowid (g.id) ends
-- every index, so `ORDER BY ..., g.id DESC` needs no sort.

CREATE INDEX gallery_guild_recent ON gallery (guild_id, removed, created_at);
CREATE INDEX gallery_guild_top ON gallery (guild_id, removed, likes, created_at);
