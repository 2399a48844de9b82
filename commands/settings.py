"""`/settings`: your defaults — quality, aspect, stylize, sampler and model — and privacy, with menus.

Defaults apply when a prompt does not say otherwise (`--q`, `--ar`, `--s` win). "Private"
means nobody but you may share your results (or upscales of them) to a gallery. The menus are
restart-proof `SettingSelect`s: the field is in the `custom_id`, the user is whoever picks.

Six menus do not fit the five rows of a classic message, so the answer is a components-v2
layout (`LayoutView`): the summary as a text block, then one menu per row.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

import discord
from discord import app_commands

from bot.buttons import PREFIX
from bot.client import TesseraClient
from bot.gallery import model_name
from bot.interactions import defer_private, guarded, lora_choices, reply, service_of
from bot.service import Tessera
from engine.errors import TesseraError
from engine.samplers import SAMPLERS
from storage.models import UserSettings

DEFAULT = "default"
QUALITIES = ("0.25", "0.5", "1", "2")
ASPECTS = ("1:1", "4:3", "3:4", "3:2", "2:3", "16:9", "9:16", "21:9")
STYLIZES = ("0", "50", "100", "250", "500", "750", "1000")
FIELDS = ("quality", "aspect", "stylize", "sampler", "model")
PRIVACY = "private"
MENUS = (*FIELDS, PRIVACY)
PUBLIC_VALUE, PRIVATE_VALUE = "public", "private"
PRIVACY_LABELS = {PUBLIC_VALUE: "results: public (anyone may share them to a gallery)",
                  PRIVATE_VALUE: "results: private (only you may share them)"}

HELP = {"commands": "`/settings [lora]` — your defaults (quality, aspect, stylize, sampler, model, a LoRA for "
                    "prompts that name none) and whether your results are private"}
NO_LORA = ("none", "clear", "off")


class SettingSelect(discord.ui.DynamicItem[discord.ui.Select[Any]],
                    template=rf"{PREFIX}:set:(?P<field>[a-z]{{1,16}})"):
    """A `/settings` menu; the chosen value is saved for the user who picks it."""

    def __init__(self, field: str, options: list[discord.SelectOption] | None = None,
                 *, placeholder: str | None = None, row: int | None = None) -> None:
        super().__init__(
            discord.ui.Select(custom_id=f"{PREFIX}:set:{field}",
                              options=options or [discord.SelectOption(label="default")],
                              placeholder=placeholder, row=row, min_values=1, max_values=1)
        )
        self.field = field

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Item[Any],
                             match: re.Match[str], /) -> SettingSelect:
        options = list(item.options) if isinstance(item, discord.ui.Select) else []
        placeholder = item.placeholder if isinstance(item, discord.ui.Select) else None
        return cls(match["field"], options or None, placeholder=placeholder, row=item.row)

    async def callback(self, interaction: discord.Interaction) -> None:
        async with guarded(interaction):
            data: Any = interaction.data or {}  # a select's payload carries the picked values
            values = data.get("values") or []
            await choose(interaction, self.field, str(values[0]) if values else "default")


def samplers() -> list[str]:
    return list(SAMPLERS)[:24]


def models(service: Tessera) -> list[str]:
    settings = service.settings
    return list(dict.fromkeys([settings.model_id, *settings.allowed_models]))[:24]


def _shown(field: str, value: str) -> str:
    """A model by the name users know (a local folder by its name: the server's paths are private)."""
    return model_name(value) if field == "model" else value


def _short(value: str) -> str:
    return value if len(value) <= 100 else "…" + value[-99:]


def _option_value(value: str, index: int, field: str = "") -> str:
    """Select values are at most 100 characters, and users' clients receive them: a long value
    or a local model path goes by its position."""
    return value if len(value) <= 100 and _shown(field, value) == value else f"#{index}"


def choices(service: Tessera, field: str) -> list[str]:
    return {"quality": list(QUALITIES), "aspect": list(ASPECTS), "stylize": list(STYLIZES),
            "sampler": samplers(), "model": models(service)}[field]


def _current(user: UserSettings, field: str) -> str | None:
    value = getattr(user, field)
    if value is None:
        return None
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _privacy_select(user: UserSettings) -> SettingSelect:
    options = [discord.SelectOption(label=label, value=value, default=(value == PRIVATE_VALUE) == user.private)
               for value, label in PRIVACY_LABELS.items()]
    return SettingSelect(PRIVACY, options, placeholder="Who may share your results")


def settings_view(service: Tessera, user: UserSettings) -> discord.ui.LayoutView:
    """The summary and one menu per setting (components v2: six menus need six rows)."""
    view = discord.ui.LayoutView(timeout=None)
    view.add_item(discord.ui.TextDisplay(describe(service, user)))
    for field in FIELDS:
        current = _current(user, field)
        options = [discord.SelectOption(label=f"{field}: server default", value=DEFAULT, default=current is None)]
        for index, value in enumerate(choices(service, field)):
            options.append(discord.SelectOption(label=_short(f"{field}: {_shown(field, value)}"),
                                                value=_option_value(value, index, field),
                                                default=value == current))
        view.add_item(discord.ui.ActionRow(SettingSelect(field, options, placeholder=f"Default {field}")))
    view.add_item(discord.ui.ActionRow(_privacy_select(user)))
    return view


def describe(service: Tessera, user: UserSettings) -> str:
    settings = service.settings
    lines = ["**Your defaults** (a prompt's own `--q`, `--ar`, `--s` always win):"]
    server = {"quality": "1", "aspect": "1:1", "stylize": "100", "sampler": settings.sampler,
              "model": _shown("model", settings.model_id)}
    for field in FIELDS:
        current = _current(user, field)
        shown = f"**{_shown(field, current)}**" if current is not None else f"{server[field]} (server default)"
        lines.append(f"• {field}: {shown}")
    lines.append(f"• LoRA: **{user.lora}** (when a prompt names none)" if user.lora else "• LoRA: none")
    lines.append("• results: **private** — only you may share them (or upscales of them) to a gallery"
                 if user.private else "• results: public — anyone may share them to a gallery")
    return "\n".join(lines)


@app_commands.command(name="settings", description="Your default quality, aspect ratio, stylize, sampler and model")
@app_commands.describe(lora='A LoRA from /loras for prompts that name none ("none" to stop)')
@app_commands.autocomplete(lora=lora_choices)
async def settings(interaction: discord.Interaction, lora: app_commands.Range[str, 1, 64] | None = None) -> None:
    async with guarded(interaction):
        await defer_private(interaction)
        service = service_of(interaction)
        user = await service.user_settings(interaction.user.id)
        if lora is not None:
            user = await service.save_user_settings(replace(user, lora=await _checked_lora(service, lora)))
        await reply(interaction, view=settings_view(service, user), ephemeral=True)


async def _checked_lora(service: Tessera, name: str) -> str | None:
    """The LoRA to save as the default (None: "none"); refused unless it is in LORA_DIR."""
    name = name.strip()
    if name.lower() in NO_LORA:
        return None
    loras, _ = await service.shortcuts.names()
    if name not in loras:
        close = ", ".join(f"`{n}`" for n in (await service.search_loras(name[:3], 3)))
        raise TesseraError(f"There is no LoRA named `{name.replace('`', 'ˋ')}` on this bot"
                           + (f" (did you mean {close}?)" if close else "") + "; `/loras` lists them.")
    return name


async def choose(interaction: discord.Interaction, field: str, value: str) -> None:
    """A pick in one of the `/settings` menus: save it and show the new defaults."""
    service = service_of(interaction)
    if field == PRIVACY:
        await choose_privacy(interaction, value)
        return
    if field not in FIELDS:
        raise TesseraError("This menu is from an older version of Tessera; run `/settings` again.")
    offered = choices(service, field)
    if value.startswith("#") and value[1:].isdigit() and int(value[1:]) < len(offered):
        value = offered[int(value[1:])]
    if value != DEFAULT and value not in offered:
        raise TesseraError(f"`{value}` is no longer offered for {field}; run `/settings` again to see the choices.")
    user = await service.user_settings(interaction.user.id)
    parsed: Any = None
    if value != DEFAULT:
        parsed = float(value) if field == "quality" else int(value) if field == "stylize" else value
    user = await service.save_user_settings(replace(user, **{field: parsed}))
    await show_saved(interaction, user)


async def choose_privacy(interaction: discord.Interaction, value: str) -> None:
    """A pick in the privacy menu: public or private results."""
    if value not in PRIVACY_LABELS:
        raise TesseraError("Pick public or private; run `/settings` again if this menu looks wrong.")
    service = service_of(interaction)
    user = await service.user_settings(interaction.user.id)
    user = await service.save_user_settings(replace(user, private=value == PRIVATE_VALUE))
    await show_saved(interaction, user)


async def show_saved(interaction: discord.Interaction, user: UserSettings) -> None:
    """Update the menu message in place. Content and embeds are cleared explicitly, as Discord
    requires when a message (one from before the layout change) becomes components v2."""
    await interaction.response.edit_message(content=None, embeds=[], view=settings_view(service_of(interaction), user))


def setup(client: TesseraClient) -> None:
    client.tree.add_command(settings)
    client.buttons.add(SettingSelect)
