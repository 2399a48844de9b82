"""`/loras [query]`: the LoRAs this bot has (LORA_DIR), a page at a time, with previews.

Private (ephemeral). Each page shows `PAGE_SIZE` LoRAs as embeds: name, size, how to use it
(`--lora name:1`) and, when `name.png` (or .jpg/.webp) sits beside the file and is small
enough to attach, its preview. ◀ ▶ buttons turn pages; the page and the query are in their
`custom_id` (`tessera-l:<page>:<query>`), so they keep working after a restart, and the
listing is read again from the folder at each press.
"""

from __future__ import annotations

import asyncio
import io
import math
import re
from pathlib import Path
from typing import Any

import discord
from discord import app_commands

from bot.client import TesseraClient
from bot.interactions import defer_private, guarded, service_of
from bot.shortcuts import LoraInfo, human_size

PREFIX = "tessera-l"
PAGE_SIZE = 5  # embeds (and preview files) per page: well under Discord's 10 of each
QUERY_MAX = 64  # a LoRA name's longest; keeps the custom_id under Discord's 100 characters
PAGE_MAX = 9999
PREVIEW_MAX_BYTES = 1_000_000  # per preview: five of them stay far under the 10 MiB upload limit

HELP = {"commands": "`/loras [query]` — the LoRAs this bot has, with previews (use one with `--lora name:0.8` "
                    "or `/imagine lora:`)"}


def clean_query(query: str) -> str:
    """One line of at most `QUERY_MAX` characters (it travels in a custom_id)."""
    return " ".join(query.split())[:QUERY_MAX]


class LoraPageButton(discord.ui.DynamicItem[discord.ui.Button[Any]],
                     template=rf"{PREFIX}:(?P<page>\d{{1,4}}):(?P<query>[^\n]{{0,{QUERY_MAX}}})"):
    """◀ / ▶ under a `/loras` page; the page to show and the query are in the custom_id."""

    def __init__(self, page: int, query: str, *, label: str = "▶", disabled: bool = False) -> None:
        super().__init__(discord.ui.Button(label=label, style=discord.ButtonStyle.secondary, disabled=disabled,
                                           custom_id=f"{PREFIX}:{page}:{query}"))
        self.page = page
        self.query = query

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Item[Any],
                             match: re.Match[str], /) -> LoraPageButton:
        return cls(int(match["page"]), clean_query(match["query"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        async with guarded(interaction):
            content, embeds, files, view = await render_page(interaction, self.query, self.page)
            await interaction.response.edit_message(content=content, embeds=embeds, attachments=files, view=view)


def _previews(page: list[LoraInfo]) -> dict[str, tuple[str, bytes]]:
    """name -> (file name, bytes) of the previews small enough to attach (blocking: a thread)."""
    out: dict[str, tuple[str, bytes]] = {}
    for info in page:
        if info.preview is None:
            continue
        try:
            if info.preview.stat().st_size > PREVIEW_MAX_BYTES:
                continue
            data = info.preview.read_bytes()
        except OSError:
            continue
        out[info.name] = (f"preview_{info.name}{Path(info.preview).suffix.lower()}", data)
    return out


async def render_page(interaction: discord.Interaction, query: str,
                      page: int) -> tuple[str, list[discord.Embed], list[discord.File], discord.ui.View | None]:
    """(text, embeds, files, buttons) of one page of the listing (the last one when `page` is past it)."""
    found = await service_of(interaction).list_loras(query)
    if not found:
        what = f"No LoRA matches `{query.replace('`', 'ˋ')}`." if query else "This bot has no LoRAs (LORA_DIR is empty or not set)."
        return what, [], [], None
    pages = math.ceil(len(found) / PAGE_SIZE)
    page = max(0, min(page, pages - 1, PAGE_MAX))
    shown = found[page * PAGE_SIZE:(page + 1) * PAGE_SIZE]
    previews = await asyncio.to_thread(_previews, shown)
    embeds, files = [], []
    for info in shown:
        embed = discord.Embed(title=info.name, description=f"{human_size(info.size)} · `--lora {info.name}:1`")
        if info.name in previews:
            filename, data = previews[info.name]
            files.append(discord.File(io.BytesIO(data), filename=filename))
            embed.set_thumbnail(url=f"attachment://{filename}")
        embeds.append(embed)
    matching = f" matching `{query.replace('`', 'ˋ')}`" if query else ""
    content = f"**{len(found)} LoRA{'s' if len(found) != 1 else ''}**{matching} · page {page + 1} of {pages}"
    view = None
    if pages > 1:
        view = discord.ui.View(timeout=None)
        # A disabled button names the page shown: the two ids always differ (Discord refuses twins).
        view.add_item(LoraPageButton(max(page - 1, 0) if page > 0 else page, query, label="◀", disabled=page == 0))
        view.add_item(LoraPageButton(page + 1 if page + 1 < pages else page, query, label="▶",
                                     disabled=page + 1 >= pages))
    return content, embeds, files, view


@app_commands.command(name="loras", description="The LoRAs this bot has, with previews")
@app_commands.describe(query="Part of a name (default: all)")
async def loras(interaction: discord.Interaction, query: app_commands.Range[str, 0, 100] = "") -> None:
    async with guarded(interaction):
        await defer_private(interaction)
        content, embeds, files, view = await render_page(interaction, clean_query(query), 0)
        extra: dict[str, Any] = {"view": view} if view is not None else {}
        await interaction.followup.send(content, embeds=embeds, files=files, ephemeral=True, **extra)


def setup(client: TesseraClient) -> None:
    client.tree.add_command(loras)
    client.buttons.add(LoraPageButton)
