"""Personal shortcuts and server styles: a user's suffix and custom `--options`, a server's
`--style name`s (`/prefer`, `/admin style`), and nothing else.

Every member of every server is a stranger, and each of these is expanded into every prompt
its owner (or everyone in the server) writes. So the tables are bounded here, where rows are
written: a suffix of at most `suffix_max` characters, `OPTIONS_MAX` options per user and
`STYLES_MAX` styles per server, names by the prompt language's rule (`SHORTCUT_NAME`). Whether
a value would break prompts (an unknown parameter, a loop of options) is the prompt
language's question: callers pass a `check` that runs `engine.prompt.check_shortcut` against
the rows read inside the same write transaction, so two concurrent saves cannot together
pass a bound or a loop check that each alone passes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from engine.errors import StorageError
from engine.prompt import SHORTCUT_NAME
from storage import rows
from storage.sqlite import Database

OPTIONS_MAX = 50  # custom --options per user
STYLES_MAX = 100  # --style names per server
VALUE_MAX = 6000  # a stored text is never longer than the longest prompt (callers bound it lower)

# Called with the shortcuts as they would be after the write; raises (PromptError) to refuse it.
Check = Callable[[Mapping[str, str]], None]


def _check_name(name: str, kind: str) -> None:
    if not SHORTCUT_NAME.fullmatch(name):
        raise StorageError(f"{name[:40]!r} cannot be {kind} name: use 1 to 32 lowercase letters, digits or _, "
                           "starting with a letter")


class ShortcutRepository:
    """Typed access to `user_suffix`, `user_options` and `guild_styles`."""

    def __init__(self, db: Database) -> None:
        self._db = db

    # ----- suffix -----------------------------------------------------------------------
    async def suffix(self, user_id: int) -> str:
        row = await self._db.fetchone("SELECT suffix FROM user_suffix WHERE user_id = ?", (user_id,))
        return str(row["suffix"]) if row is not None else ""

    async def set_suffix(self, user_id: int, text: str, *, max_length: int, check: Callable[[str], None]) -> str:
        """Save (or, with empty `text`, clear) the user's suffix; `check(text)` refuses a bad one."""
        text = " ".join(text.split())
        if not text:
            await self._db.write("DELETE FROM user_suffix WHERE user_id = ?", (user_id,))
            return ""
        if len(text) > min(max_length, VALUE_MAX):
            raise StorageError(f"a suffix may be at most {min(max_length, VALUE_MAX):,} characters; this one has "
                               f"{len(text):,}")
        check(text)
        await self._db.write(
            """INSERT INTO user_suffix (user_id, suffix, updated_at) VALUES (?, ?, ?)
               ON CONFLICT (user_id) DO UPDATE SET suffix = excluded.suffix, updated_at = excluded.updated_at""",
            (user_id, text, rows.now()))
        return text

    # ----- options ----------------------------------------------------------------------
    async def options(self, user_id: int) -> dict[str, str]:
        found = await self._db.fetchall("SELECT name, value FROM user_options WHERE user_id = ? ORDER BY name",
                                        (user_id,))
        return {str(row["name"]): str(row["value"]) for row in found}

    async def set_option(self, user_id: int, name: str, value: str, *, check: Check) -> None:
        """Save `--name` = `value` for the user (replacing one of the same name). `check` gets
        the user's options as they would be, read inside the write transaction."""
        await self._save_named(
            "user_options", "user_id", user_id, "value", name, value, what="an option", most=OPTIONS_MAX,
            full="you have {count} options, the most anyone may have; delete one with /prefer option delete first",
            check=check)

    async def delete_option(self, user_id: int, name: str) -> bool:
        """Forget `--name` (True when there was one)."""
        async with self._db.transaction() as tx:
            return await tx.execute("DELETE FROM user_options WHERE user_id = ? AND name = ?", (user_id, name)) > 0

    # ----- server styles ------------------------------------------------------------------
    async def styles(self, guild_id: int) -> dict[str, str]:
        found = await self._db.fetchall("SELECT name, text FROM guild_styles WHERE guild_id = ? ORDER BY name",
                                        (guild_id,))
        return {str(row["name"]): str(row["text"]) for row in found}

    async def set_style(self, guild_id: int, name: str, text: str, *, check: Check) -> None:
        """Save the server's `--style name` = `text`; `check` as for `set_option`."""
        await self._save_named(
            "guild_styles", "guild_id", guild_id, "text", name, text, what="a style", most=STYLES_MAX,
            full="this server has {count} styles, the most a server may have; delete one with /admin style delete "
                 "first",
            check=check)

    async def _save_named(self, table: str, owner_column: str, owner_id: int, value_column: str, name: str,
                          value: str, *, what: str, most: int, full: str, check: Check) -> None:
        """Options and styles alike: check the name and text, then, in one write transaction, read
        the owner's current set, refuse past `most`, let `check` see the set as it would be, and
        save. Table and column names are this module's constants, never user text."""
        _check_name(name, what)
        value = " ".join(value.split())
        if not value or len(value) > VALUE_MAX:
            raise StorageError(f"{what}'s text must be 1 to {VALUE_MAX:,} characters")
        async with self._db.transaction() as tx:
            found = await tx.fetchall(f"SELECT name, {value_column} AS value FROM {table} WHERE {owner_column} = ?",
                                      (owner_id,))
            current = {str(row["name"]): str(row["value"]) for row in found}
            if name not in current and len(current) >= most:
                raise StorageError(full.format(count=len(current)))
            check({**current, name: value})
            await tx.execute(
                f"""INSERT INTO {table} ({owner_column}, name, {value_column}, updated_at) VALUES (?, ?, ?, ?)
                    ON CONFLICT ({owner_column}, name) DO UPDATE SET {value_column} = excluded.{value_column},
                    updated_at = excluded.updated_at""",
                (owner_id, name, value, rows.now()))

    async def delete_style(self, guild_id: int, name: str) -> bool:
        async with self._db.transaction() as tx:
            return await tx.execute("DELETE FROM guild_styles WHERE guild_id = ? AND name = ?", (guild_id, name)) > 0
