"""What a prompt may refer to beyond Midjourney's language: the LoRA and embedding folders,
a user's suffix and custom `--options`, a server's `--style name`s.

Discord-free and queue-free, so `tessera prefer` and `tessera loras` use it on a DATA_DIR
without starting the job service; `bot.service.Tessera` holds one and forwards to it.
Every save is checked by the prompt language (`engine.prompt.check_shortcut`) against the
shortcuts already saved, and bounded by storage (`storage.shortcuts`), so a shortcut that
would break the owner's prompts (or a server's) is refused when it is written, with what is
allowed, rather than at every later `/imagine`.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from bot.config import Settings
from engine.diffusion.loras import Catalog
from engine.errors import PromptError, TesseraError
from engine.prompt import PromptContext, check_shortcut, parse

if TYPE_CHECKING:
    from storage.api import Storage  # heavy for `tessera parse`/`loras`: aiosqlite

SEARCH_MAX = 10_000  # names one `/loras` listing may page through (the catalog's own cap)


@dataclass(frozen=True)
class LoraInfo:
    """One LoRA file as `/loras` and `tessera loras` show it."""

    name: str
    size: int  # bytes
    preview: Path | None  # `name.png` (or .jpg/.webp) beside the file


class Shortcuts:
    """The folder catalogs and the stored shortcuts, behind typed methods."""

    def __init__(self, settings: Settings, storage: Storage) -> None:
        self.settings = settings
        self.storage = storage
        self.loras = Catalog(settings.lora_dir)
        self.embeddings = Catalog(settings.embeddings_dir)

    @property
    def suffix_max(self) -> int:
        """The longest suffix: a quarter of PROMPT_MAX_LENGTH, so a prompt keeps room for its own words."""
        return self.settings.prompt_limits.max_length // 4

    async def names(self) -> tuple[frozenset[str], frozenset[str]]:
        """(LoRA names, embedding names): a folder stat, and a listing when it changed, off the loop."""
        return await asyncio.to_thread(lambda: (self.loras.names(), self.embeddings.names()))

    async def context(self, user_id: int | None, guild_id: int | None, *, lora_check: bool = True) -> PromptContext:
        """The context a user's new prompt is parsed with: folders, their suffix and options,
        the styles of the server it is written in (none in DMs and for the CLI without one)."""
        loras, embeddings = await self.names()
        shortcuts = self.storage.shortcuts
        suffix = await shortcuts.suffix(user_id) if user_id is not None else ""
        options = await shortcuts.options(user_id) if user_id is not None else {}
        styles = await shortcuts.styles(guild_id) if guild_id is not None else {}
        return PromptContext(loras=loras, embeddings=embeddings, suffix=suffix, options=options, styles=styles,
                             lora_check=lora_check)

    async def stored_context(self) -> PromptContext:
        """For text that was already expanded and stored (what ran): no shortcuts again, and a
        LoRA whose file was removed since is no reason to refuse reading it back."""
        loras, embeddings = await self.names()
        return PromptContext(loras=loras, embeddings=embeddings, lora_check=False)

    # ----- /prefer suffix ---------------------------------------------------------------
    async def set_suffix(self, user_id: int, text: str | None, *, guild_id: int | None = None) -> str:
        """Save the user's suffix (None, "" or "clear" clears it); the saved text."""
        text = " ".join((text or "").split())
        if text.lower() == "clear":
            text = ""
        if len(text) > self.suffix_max:
            raise PromptError(f"a suffix may be at most {self.suffix_max:,} characters; yours has {len(text):,}")
        context = await self.context(user_id, guild_id)
        limits = self.settings.prompt_limits

        def check(value: str) -> None:
            parse("x", limits, context=replace(context, suffix=value))

        return await self.storage.shortcuts.set_suffix(user_id, text, max_length=self.suffix_max, check=check)

    # ----- /prefer option ---------------------------------------------------------------
    async def set_option(self, user_id: int, name: str, value: str, *, guild_id: int | None = None) -> None:
        """Save the user's `--name` = `value`; refused when it would break their prompts."""
        name = name.strip().lower().removeprefix("--")
        context = await self.context(user_id, guild_id)
        limits = self.settings.prompt_limits

        def check(options: Mapping[str, str]) -> None:
            check_shortcut("option", name, value, replace(context, options=dict(options)), limits)
            if context.suffix:  # the suffix is expanded with the options: it must still parse
                parse("x", limits, context=replace(context, options=dict(options)))

        await self.storage.shortcuts.set_option(user_id, name, value, check=check)

    async def delete_option(self, user_id: int, name: str, *, guild_id: int | None = None) -> None:
        """Forget `--name`; refused while the suffix or another option still uses it."""
        name = name.strip().lower().removeprefix("--")
        context = await self.context(user_id, guild_id)
        if name not in context.options:
            raise PromptError(f"you have no option --{name[:40]}; /prefer option list shows yours")
        rest = {key: value for key, value in context.options.items() if key != name}
        trial = replace(context, options=rest)
        limits = self.settings.prompt_limits
        users = [f"--{key}" for key in rest if f"--{name}" in rest[key].lower().split()]
        if context.suffix and f"--{name}" in context.suffix.lower().split():
            users.insert(0, "your suffix")
        if users:
            raise PromptError(f"--{name} is used by {', '.join(users[:5])}; change that first")
        try:
            parse("x", limits, context=trial)
        except PromptError as exc:
            raise PromptError(f"without --{name} your prompts would fail ({exc}); change your suffix first") from None
        await self.storage.shortcuts.delete_option(user_id, name)

    async def list_options(self, user_id: int) -> dict[str, str]:
        return await self.storage.shortcuts.options(user_id)

    async def suffix(self, user_id: int) -> str:
        return await self.storage.shortcuts.suffix(user_id)

    # ----- /admin style -----------------------------------------------------------------
    async def add_style(self, guild_id: int, name: str, text: str) -> None:
        """Save the server's `--style name` = `text` (anyone's options do not count: a style is
        for every member)."""
        name = name.strip().lower()
        context = await self.context(None, guild_id)
        limits = self.settings.prompt_limits

        def check(styles: Mapping[str, str]) -> None:
            check_shortcut("style", name, text, replace(context, styles=dict(styles)), limits)

        await self.storage.shortcuts.set_style(guild_id, name, text, check=check)

    async def delete_style(self, guild_id: int, name: str) -> None:
        name = name.strip().lower()
        if not await self.storage.shortcuts.delete_style(guild_id, name):
            raise TesseraError(f"this server has no style named {name[:40]!r}; /admin style list shows them")

    async def list_styles(self, guild_id: int) -> dict[str, str]:
        return await self.storage.shortcuts.styles(guild_id)

    # ----- the LoRA folder ----------------------------------------------------------------
    async def list_loras(self, query: str = "") -> list[LoraInfo]:
        """LoRAs whose name starts with (then contains) `query`, with sizes and previews."""
        return await asyncio.to_thread(lora_listing, self.loras, query)

    async def search_loras(self, query: str, limit: int = 25) -> list[str]:
        """Names for autocomplete (Discord shows at most 25, and wants them within 3 s)."""
        return await asyncio.to_thread(self.loras.search, query, limit)


def lora_listing(catalog: Catalog, query: str = "") -> list[LoraInfo]:
    """The catalog's LoRAs matching `query` (prefix first, then substring), with sizes and
    previews. Blocking (a folder listing and one stat per file): run it in a worker thread."""
    entries = catalog.entries()
    out = []
    for name in catalog.search(query, limit=SEARCH_MAX):
        entry = entries.get(name)
        if entry is None:
            continue
        try:
            size = os.stat(entry.path).st_size
        except OSError:  # removed since the listing
            continue
        out.append(LoraInfo(name, size, entry.preview))
    return out


def folder_context(settings: Settings) -> PromptContext:
    """A context from LORA_DIR and EMBEDDINGS_DIR alone (no user): `tessera parse`. Without
    LORA_DIR any well-formed LoRA name is accepted, as a tool cannot know the bot's folder."""
    return PromptContext(loras=Catalog(settings.lora_dir).names(), embeddings=Catalog(settings.embeddings_dir).names(),
                         lora_check=settings.lora_dir is not None)


def human_size(size: int) -> str:
    """1.2 MB, 144 MB: LoRAs run from a few MB to hundreds."""
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" or value >= 100 else f"{value:.1f} {unit}"
        value /= 1000
    return f"{size} B"


__all__ = ["LoraInfo", "Shortcuts", "folder_context", "human_size", "lora_listing"]
