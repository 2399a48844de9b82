"""`/prefer suffix|option …`: personal shortcuts, as on Midjourney.

`/prefer suffix <text>` appends text to every prompt you write (`clear` removes it);
`/prefer option set <name> <value>` makes `--name` stand for `value` in your prompts;
`/prefer option list` and `/prefer option delete <name>`. Everything is saved in SQLite at
once and checked first by the prompt language: a shortcut that would break your prompts (an
unknown parameter, options that use each other in a circle, text over the length limits) is
refused with the reason. Answers are private.
"""

from __future__ import annotations

import discord
from discord import app_commands

from bot.client import TesseraClient
from bot.interactions import defer_private, guarded, reply, service_of
from bot.render import MESSAGE_LIMIT

VALUE_MAX = 1500  # Discord sends at most this much per option; the service applies PROMPT_MAX_LENGTH // 4
LIST_ROOM = MESSAGE_LIMIT - 100

HELP = {"commands": "`/prefer suffix <text|clear>` · `/prefer option set|list|delete` — your own suffix and "
                    "`--options` (e.g. `--moody` for `dark fog --no sun`)"}

prefer = app_commands.Group(name="prefer", description="Your personal prompt shortcuts")
option = app_commands.Group(name="option", description="Your custom --options", parent=prefer)


def _code(text: str) -> str:
    return text.replace("`", "ˋ")


@prefer.command(name="suffix", description="Text added to the end of every prompt you write (clear: none)")
@app_commands.describe(text='What to add, like "--ar 16:9 --s 250", or "clear"')
async def suffix(interaction: discord.Interaction, text: app_commands.Range[str, 1, VALUE_MAX]) -> None:
    async with guarded(interaction):
        await defer_private(interaction)
        saved = await service_of(interaction).set_suffix(interaction.user.id, text, guild_id=interaction.guild_id)
        await reply(interaction, f"Your suffix is now `{_code(saved)}`; it is added to every prompt you write."
                    if saved else "Your suffix is cleared.", ephemeral=True)


@option.command(name="set", description="Make --name stand for some text in your prompts")
@app_commands.describe(name="The option's name, like moody (used as --moody)", value="What --name stands for")
async def option_set(interaction: discord.Interaction, name: app_commands.Range[str, 1, 40],
                     value: app_commands.Range[str, 1, VALUE_MAX]) -> None:
    async with guarded(interaction):
        await defer_private(interaction)
        service = service_of(interaction)
        await service.set_option(interaction.user.id, name, value, guild_id=interaction.guild_id)
        shown = name.strip().lower().removeprefix("--")
        await reply(interaction, f"Saved: `--{_code(shown)}` now stands for `{_code(' '.join(value.split()))}`.",
                    ephemeral=True)


@option.command(name="list", description="Your custom --options and your suffix")
async def option_list(interaction: discord.Interaction) -> None:
    async with guarded(interaction):
        await defer_private(interaction)
        service = service_of(interaction)
        options = await service.list_options(interaction.user.id)
        saved_suffix = await service.suffix(interaction.user.id)
        await reply(interaction, describe(options, saved_suffix), ephemeral=True)


@option.command(name="delete", description="Forget one of your --options")
@app_commands.describe(name="The option's name")
async def option_delete(interaction: discord.Interaction, name: app_commands.Range[str, 1, 40]) -> None:
    async with guarded(interaction):
        await defer_private(interaction)
        await service_of(interaction).delete_option(interaction.user.id, name, guild_id=interaction.guild_id)
        await reply(interaction, f"Deleted `--{_code(name.strip().lower().removeprefix('--'))}`.", ephemeral=True)


def describe(options: dict[str, str], saved_suffix: str) -> str:
    """The options, one per line, cut to one message."""
    lines = [f"suffix: `{_code(saved_suffix)}`" if saved_suffix else "suffix: none"]
    if not options:
        lines.append("You have no options yet: `/prefer option set name value`.")
    for count, (key, value) in enumerate(options.items()):
        line = f"`--{key}` → `{_code(value if len(value) <= 120 else value[:119] + '…')}`"
        if len("\n".join([*lines, line])) > LIST_ROOM:
            lines.append(f"… and {len(options) - count} more")
            break
        lines.append(line)
    return "\n".join(lines)


def setup(client: TesseraClient) -> None:
    client.tree.add_command(prefer)
