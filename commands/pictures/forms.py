"""What /blend, /describe and /shorten share: reading uploads, and the editable prompt form
their buttons open (Midjourney's Remix: the suggested prompt, editable, then /imagine)."""

from __future__ import annotations

import secrets
from typing import Any

import discord

from bot.buttons import PREFIX
from bot.interactions import defer_public, guarded, quick_parse, service_of, start_prompt
from engine.errors import ImageFetchError, TesseraError
from engine.imaging.decode import check_attachment

FORM = f"{PREFIX}:pictform:"  # + a random tag: the form carries no state, its text is the prompt
FORM_PROMPT = f"{PREFIX}:pictprompt"
FORM_TIMEOUT_S = 15 * 60
TEXT_INPUT_MAX = 4000  # Discord's longest text input (the prompt parser's own limit applies on submit)


def check_upload(image: discord.Attachment, max_bytes: int) -> None:
    """Declared type and size: free to check before deferring, so a wrong file is refused at once."""
    check_attachment(image.filename, image.content_type, image.size, max_bytes)


async def read_upload(image: discord.Attachment, max_bytes: int) -> bytes:
    """The bytes of an uploaded picture after the free checks; the service decodes them with the
    one checked decoder. The download itself is refused past `max_bytes` by size (Discord
    reports it) and the bytes are measured again."""
    # Copied from commands.variation.read_upload (features do not import each other).
    check_upload(image, max_bytes)
    try:
        data = await image.read()
    except discord.HTTPException:
        raise ImageFetchError(f"Could not download `{image.filename}` from Discord; try attaching it again.") from None
    check_attachment(image.filename, image.content_type, len(data), max_bytes)
    return data


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


def submitted_value(components: Any, custom_id: str) -> str | None:
    """The value of the text input `custom_id` in a modal submission (labels and rows nest it)."""
    # Copied from commands.gallery.posts.submitted_value (features do not import each other).
    for component in components or []:
        if not isinstance(component, dict):
            continue
        if component.get("custom_id") == custom_id and "value" in component:
            return str(component["value"])
        inner = [component["component"]] if isinstance(component.get("component"), dict) else []
        found = submitted_value([*inner, *(component.get("components") or [])], custom_id)
        if found is not None:
            return found
    return None


async def open_form(interaction: discord.Interaction, key: str, number: int) -> None:
    """Open the form pre-filled with prompt `number` (1-based) of the suggestions kept under `key`."""
    prompts = await service_of(interaction).suggested(key)
    if prompts is None:
        raise TesseraError("The prompts behind this button are no longer kept on this bot; run the command again.")
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
