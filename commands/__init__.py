"""Tessera's features: each module (or small package) owns its slash commands, its buttons
(`DynamicItem`s with their own callbacks), its help text (`HELP`) and a `setup(client)` that
registers them, like a discord.py extension or a Red cog.

Nothing imports a feature: the client loads them by name (`bot.client.FEATURES`). Features
import the bot's toolkit (`bot.interactions`, `bot.buttons`, `bot.render`, the typed service),
never each other.
"""
