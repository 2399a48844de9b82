"""`/prompts search query [author] [sort]` and `/prompts top [period]`: browse the gallery.

Results are private (ephemeral) lists of five, each with a thumbnail, the prompt, its likes
and a 🔁 Remix button, paged with ◀ ▶. Search uses the gallery's FTS5 index (see
`storage.search` for what may be typed; "relevance" is BM25 nudged by likes). A page
button carries the whole search in its `custom_id` when it fits in Discord's 100
characters; a longer query is remembered in memory instead, and after a restart its
buttons ask for the search to be run again.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import re
from collections import OrderedDict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import discord
from discord import app_commands

from bot.gallery import ImageFacts, code_block, entry_link, image_facts, post_title
from bot.interactions import defer_private, guarded, service_of
from bot.service import Tessera
from commands.gallery.posts import PREFIX, GalleryAction, GalleryButton
from engine.errors import TesseraError
from storage.models import GalleryEntry
from storage.search import to_fts_query

PAGE_SIZE = 5
CUSTOM_ID_MAX = 100
LIST_PROMPT_ROOM = 400
THUMB_SIDE = 160
_SORT_CODES = {"relevance": "r", "likes": "l", "recent": "n"}  # one letter each in a custom_id
PERIODS: dict[str, int | None] = {"day": 1, "week": 7, "all": None}
_MEMO_SIZE = 2000
_MAX_OFFSET = 1_000_000  # far past any list's end, well inside SQLite's integers


@dataclass(frozen=True)
class PageRef:
    """One page of a search or top list: everything needed to show it again."""

    mode: Literal["search", "top"]
    offset: int = 0
    query: str = ""
    sort: str = "relevance"
    author_id: int | None = None
    period: str = "all"


_memo: OrderedDict[str, PageRef] = OrderedDict()  # long searches, by key (offset 0)


def _b36(number: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        number, rest = divmod(number, 36)
        out = digits[rest] + out
        if not number:
            return out


def encode_ref(ref: PageRef) -> str:
    """The part of a page button's custom_id after `tessera-g:pg:`."""
    if ref.mode == "top":
        return f"t:{ref.offset}:{ref.period[0]}"
    author = _b36(ref.author_id) if ref.author_id is not None else "-"
    text = f"s:{ref.offset}:{_SORT_CODES[ref.sort]}:{author}:{ref.query}"
    if len(f"{PREFIX}:pg:{text}") <= CUSTOM_ID_MAX:
        return text
    base = replace(ref, offset=0)
    key = hashlib.sha256(repr(base).encode("utf-8")).hexdigest()[:16]  # one key per search, not per page
    _memo[key] = base
    _memo.move_to_end(key)
    while len(_memo) > _MEMO_SIZE:
        _memo.popitem(last=False)
    return f"k:{ref.offset}:{key}"


def decode_ref(text: str) -> PageRef:
    """Back from `encode_ref`; TesseraError for a list that cannot be shown again."""
    expired = TesseraError("This list has expired. Run `/prompts search` or `/prompts top` again.")
    mode, _, rest = text.partition(":")
    offset_text, _, rest = rest.partition(":")
    # The custom_id comes from the client: numbers are checked to fit SQLite's 64-bit integers
    # (a longer one raised OverflowError deep in the query: "something went wrong").
    if not (offset_text.isascii() and offset_text.isdigit()) or int(offset_text) > _MAX_OFFSET:
        raise expired
    offset = int(offset_text)
    if mode == "t":
        period = {p[0]: p for p in PERIODS}.get(rest)
        if period is None:
            raise expired
        return PageRef("top", offset, period=period)
    if mode == "k":
        found = _memo.get(rest)
        if found is None:
            raise expired
        return replace(found, offset=offset)
    if mode == "s":
        sort_letter, _, rest = rest.partition(":")
        author, _, query = rest.partition(":")
        sort = {code: name for name, code in _SORT_CODES.items()}.get(sort_letter)
        if sort is None or not query:
            raise expired
        author_id = None
        if author != "-":
            if not (0 < len(author) <= 13 and author.isascii() and author.isalnum()) or int(author, 36) >= 2**63:
                raise expired
            author_id = int(author, 36)
        return PageRef("search", offset, query=query, sort=sort, author_id=author_id)
    raise expired


# ----- one page ------------------------------------------------------------------------------------


@dataclass
class Page:
    content: str
    embeds: list[discord.Embed]
    files: list[discord.File]
    view: discord.ui.View | None


def _thumbnail(path: Path) -> bytes | None:
    """A small JPEG of a stored image (None if the file is gone)."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.thumbnail((THUMB_SIDE, THUMB_SIDE))
            buffer = io.BytesIO()
            image.convert("RGB").save(buffer, format="JPEG", quality=80)
            return buffer.getvalue()
    except OSError:
        return None


async def _none() -> None:
    return None


async def _fetch(service: Tessera, ref: PageRef) -> list[GalleryEntry]:
    if ref.mode == "top":
        return await service.top_gallery(since_days=PERIODS[ref.period], limit=PAGE_SIZE + 1, offset=ref.offset)
    return await service.search_gallery(ref.query, author_id=ref.author_id, sort=ref.sort, limit=PAGE_SIZE + 1,
                                        offset=ref.offset)


def _heading(ref: PageRef, first: int, last: int) -> str:
    if ref.mode == "top":
        span = {"day": "today", "week": "this week", "all": "of all time"}[ref.period]
        head = f"🏆 **Most liked {span}**"
    else:
        query = " ".join(ref.query.split()).replace("`", "ˋ")[:200]
        head = f"🔎 **{query}** · by {ref.sort}"
        if ref.author_id is not None:
            head += f" · made by <@{ref.author_id}>"
    return f"{head} · {first}–{last}" if last else head


async def build_page(service: Tessera, ref: PageRef) -> Page:
    """The content, embeds, thumbnail files and buttons of one page."""
    found = await _fetch(service, ref)
    entries, more = found[:PAGE_SIZE], len(found) > PAGE_SIZE
    if not entries and ref.offset == 0:
        what = "Nothing has been shared yet" if ref.mode == "top" else f"No shared prompt matches `{ref.query[:200]}`"
        return Page(f"{_heading(ref, 0, 0)}\n{what}.", [], [], None)
    facts_of: list[ImageFacts | None] = []
    for entry in entries:
        job = await service.job(entry.job_id)
        facts_of.append(await image_facts(service, job, entry.index) if job is not None else None)
    thumbs = await asyncio.gather(*(  # made side by side: a 4096² PNG takes ~0.4 s to shrink
        asyncio.to_thread(_thumbnail, f.image.path) if f is not None and f.image is not None else _none()
        for f in facts_of))
    embeds: list[discord.Embed] = []
    files: list[discord.File] = []
    view = discord.ui.View(timeout=None)
    for number, (entry, facts, thumb) in enumerate(zip(entries, facts_of, thumbs, strict=True), start=ref.offset + 1):
        prompt = entry.prompt_text if len(entry.prompt_text) <= LIST_PROMPT_ROOM else (
            entry.prompt_text[: LIST_PROMPT_ROOM - 1] + "…")
        details = [f"👍 {entry.likes}", f"<@{entry.author_id}>"]
        if facts is not None and facts.seed is not None:
            details.append(f"seed `{facts.seed}`")
        embed = discord.Embed(title=f"{number}. {post_title(entry)}"[:256], url=entry_link(entry),
                              description=f"{code_block(prompt)}\n{' · '.join(details)}")
        if thumb is not None:
            name = f"thumb_{entry.id}.jpg"
            files.append(discord.File(io.BytesIO(thumb), filename=name))
            embed.set_thumbnail(url=f"attachment://{name}")
        embeds.append(embed)
        view.add_item(GalleryButton(GalleryAction.REMIX, entry.id, label=f"Remix {number}", row=0))
    previous = replace(ref, offset=max(0, ref.offset - PAGE_SIZE))
    following = replace(ref, offset=ref.offset + PAGE_SIZE)
    view.add_item(PageButton(encode_ref(previous), label="◀", disabled=ref.offset == 0, row=1))
    view.add_item(PageButton(encode_ref(following), label="▶", disabled=not more, row=1))
    last = ref.offset + len(entries)
    content = _heading(ref, ref.offset + 1 if entries else 0, last)
    if not entries:
        content += "\nNo more results; go back with ◀."
    return Page(content, embeds, files, view)


async def send_first_page(interaction: discord.Interaction, ref: PageRef) -> None:
    await defer_private(interaction)
    page = await build_page(service_of(interaction), ref)
    kwargs: dict[str, Any] = {"content": page.content, "embeds": page.embeds, "files": page.files, "ephemeral": True}
    if page.view is not None:
        kwargs["view"] = page.view
    await interaction.followup.send(**kwargs)


async def show_page(interaction: discord.Interaction, encoded: str) -> None:
    """◀ / ▶: replace the list with another page of the same search."""
    ref = decode_ref(encoded)
    await interaction.response.defer()
    page = await build_page(service_of(interaction), ref)
    await interaction.edit_original_response(content=page.content, embeds=page.embeds, attachments=page.files,
                                             view=page.view)


# ----- paging search and top lists -------------------------------------------------------------------


class PageButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=rf"{PREFIX}:pg:(?P<ref>[\s\S]{{1,90}})"):
    """◀ / ▶ under a `/prompts search` or `/prompts top` list."""

    def __init__(self, ref: str, *, label: str, disabled: bool = False, row: int | None = None) -> None:
        super().__init__(discord.ui.Button(label=label, style=discord.ButtonStyle.secondary,
                                           custom_id=f"{PREFIX}:pg:{ref}", disabled=disabled, row=row))
        self.ref = ref

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Item[Any],
                             match: re.Match[str], /) -> PageButton:
        return cls(match["ref"], label=getattr(item, "label", None) or "·", row=item.row)

    async def callback(self, interaction: discord.Interaction) -> None:
        async with guarded(interaction):
            await show_page(interaction, self.ref)


# ----- the commands ----------------------------------------------------------------------------------

prompts = app_commands.Group(name="prompts", description="Search and browse the prompts shared in the gallery")


@prompts.command(name="search", description="Search every shared prompt (words, \"a phrase\", word*, a OR b, -word)")
@app_commands.describe(query="Words to look for in prompts and titles", author="Only images made by this person",
                       sort="relevance (text match, then likes), likes, or recent")
async def search(interaction: discord.Interaction, query: app_commands.Range[str, 1, 500],
                 author: discord.User | None = None,
                 sort: Literal["relevance", "likes", "recent"] = "relevance") -> None:
    async with guarded(interaction):
        to_fts_query(query)  # a malformed query is answered at once, with what to type instead
        await send_first_page(interaction, PageRef("search", 0, query=query.strip(), sort=sort,
                                                   author_id=author.id if author is not None else None))


@prompts.command(name="top", description="The most liked shared images")
@app_commands.describe(period="Shared today, this week, or any time (default)")
async def top(interaction: discord.Interaction, period: Literal["day", "week", "all"] = "all") -> None:
    async with guarded(interaction):
        await send_first_page(interaction, PageRef("top", 0, period=period))
