"""What /blend, /describe and /shorten share: reading uploads, and the editable prompt form
their buttons open (Midjourney's Remix: the suggested prompt, editable, then /imagine)."""

from __future__ import annotations

import secrets
from typing import Any

import discord

from bot.buttons import PREFIX
from bot.interactions import (
    defer_public,
    guarded,
    quick_parse,
    service_of,
    start_prompt,
    submitted_value,
)
from engine.errors import TesseraError

FORM = f"{PREFIX}:pictform:"  # + a random tag: the form carries no state, its text is the prompt
FORM_PROMPT = f"{PREFIX}:pictprompt"
FORM_TIMEOUT_S = 15 * 60
TEXT_INPUT_MAX = 4000  # Discord's longest text input (the prompt parser's own limit applies on submit)


class PromptForm(discord.ui.Modal, title="Imagine this prompt"):
    """A suggested prompt, editable; Submit runs it as the submitter's /imagine.

    Only the form: the submission is handled by `on_form_submit` from its custom_id (routed by
    the client's form registry), so a form submitted after a restart still works."""

    def __init__(self, prompt_text: str) -> None:
        super().__init__(timeout=FORM_TIMEOUT_S, custom_id=f"{FORM}{secrets.token_hex(4)}")
        self.prompt: discord.ui.TextInput[Any] = discord.ui.TextInput(
            style=discord.TextStyle.paragraph, default=prompt_text[:TEXT_INPUT_MAX], max_length=TEXT_INPUT_MAX,
            required=True, custom_id=FORM_PROMPT)
        self.add_item(discord.ui.Label(text="Prompt", description="Change anything, then Submit to make your grid",
                                       component=self.prompt))


async def open_form(interaction: discord.Interaction, key: str, number: int) -> None:
    """Open the form pre-filled with prompt `number` (1-based) of the suggestions kept under `key`."""
    prompts = await service_of(interaction).suggested(key)
    if prompts is None:  # never kept, or removed as old by `tessera prune`
        command = "/shorten" if key.startswith("s:") else "/describe"
        raise TesseraError(f"The suggested prompts behind this button are no longer kept on this bot (old "
                           f"suggestions are cleared); run `{command}` again for new ones.")
    if not 1 <= number <= len(prompts):
        raise TesseraError(f"There is no prompt {number} here; pick one of 1-{len(prompts)}.")
    await interaction.response.send_modal(PromptForm(prompts[number - 1]))


async def on_form_submit(interaction: discord.Interaction) -> None:
    """A submitted prompt form: run the (edited) prompt as the submitter's own /imagine."""
    data: Any = interaction.data or {}
    async with guarded(interaction):
        text = (submitted_value(data.get("components"), FORM_PROMPT) or "").strip()
        if not text:
            raise TesseraError("The prompt is empty; write what to draw.")
        await quick_parse(interaction, text)
        await defer_public(interaction)
        await start_prompt(interaction, text, image_url=None)
