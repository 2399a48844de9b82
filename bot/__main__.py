"""`python -m bot`: start Tessera's Discord bot."""

from __future__ import annotations

import sys

from bot.config import ConfigError, load_settings
from bot.logs import setup_logging

NO_TOKEN_MESSAGE = """\
tessera: DISCORD_TOKEN is not set, so the bot cannot log in to Discord.
  1. Create an application at https://discord.com/developers/applications
  2. Under "Bot", press "Reset Token" and copy the token.
  3. Put it in a file named .env next to where you start Tessera:  DISCORD_TOKEN=your-token
     (or export DISCORD_TOKEN in the environment). See .env.example for every setting.
  4. Invite the bot with the "bot" and "applications.commands" scopes."""


def run() -> int:
    """Load settings, set up logging and run the bot until it is stopped; return the exit status."""
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"tessera: {exc}", file=sys.stderr)
        return 2
    if settings.discord_token is None:
        print(NO_TOKEN_MESSAGE, file=sys.stderr)
        return 2
    setup_logging(settings.log_format, settings.log_level)
    from bot.app import run_bot  # heavy for the CLI: discord, aiosqlite, PIL

    return run_bot(settings)


if __name__ == "__main__":
    sys.exit(run())
