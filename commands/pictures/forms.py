"""What /describe and /shorten share: the editable prompt form their numbered buttons open
(Midjourney's Remix: the suggested prompt, editable, then /imagine; `bot.interactions.PromptForm`)."""

from __future__ import annotations

import secrets

import discord

from bot.buttons import PREFIX
from bot.interactions import PromptForm, service_of, submit_prompt_form
from engine.errors import TesseraError

FORM = f"{PREFIX}:pictform:"  # + a random tag: the form carries no state, its text is the prompt
FORM_PROMPT = f"{PREFIX}:pictprompt"


async def open_form(interaction: discord.Interaction, key: str, number: int) -> None:
    """Open the form pre-filled with prompt `number` (1-based) of the suggestions kept under `key`."""
    prompts = await service_of(interaction).suggested(key)
    if prompts is None:  # never kept, or removed as old by `tessera prune`
        command = "/shorten" if key.startswith("s:") else "/describe"
        raise TesseraError(f"The suggested prompts behind this button are no longer kept on this bot (old "
                           f"suggestions are cleared); run `{command}` again for new ones.")
    if not 1 <= number <= len(prompts):
        raise TesseraError(f"There is no prompt {number} here; pick one of 1-{len(prompts)}.")
    await interaction.response.send_modal(PromptForm(
        prompts[number - 1], title="Imagine this prompt", custom_id=f"{FORM}{secrets.token_hex(4)}",
        field_id=FORM_PROMPT, description="Change anything, then Submit to make your grid"))


async def on_form_submit(interaction: discord.Interaction) -> None:
    """A submitted prompt form: run the (edited) prompt as the submitter's own /imagine."""
    await submit_prompt_form(interaction, FORM_PROMPT)
