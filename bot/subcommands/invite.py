"""Print the link that adds the bot to a server, with exactly the permissions it needs.

The application (client) id is read from DISCORD_TOKEN (its first part encodes it) or given
with --client-id; the permissions come from the one list in `bot.permissions`, printed below
the link with what each is for. Open the link as someone with Manage Server on the server.
"""

from __future__ import annotations

import argparse
import sys

from bot.config import load_settings


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--client-id", type=int, help="the application id (developer portal, General Information); "
                                                      "default: read from DISCORD_TOKEN")


def main(args: argparse.Namespace) -> int:
    from bot.permissions import (  # heavy for the CLI: discord
        REQUIRED,
        SCOPES,
        application_id_from_token,
        invite_url,
        permission_label,
    )

    client_id = args.client_id
    if client_id is None:
        token = load_settings().discord_token
        client_id = application_id_from_token(token.get_secret_value()) if token is not None else None
        if client_id is None:
            print("tessera invite: give --client-id (the application id from the developer portal's General "
                  "Information page), or set DISCORD_TOKEN to the bot's token", file=sys.stderr)
            return 2
    print(invite_url(client_id))
    print(f"scopes: {', '.join(SCOPES)}; permissions:")
    for name, why in REQUIRED:
        print(f"  {permission_label(name)}: {why}")
    return 0
