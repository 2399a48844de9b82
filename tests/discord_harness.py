"""Drive Tessera's real Discord client without Discord, the way discord.py tests itself.

Following `tests/test_app_commands_invoke.py` in Rapptz/discord.py: real `discord.Interaction`
objects are built from raw gateway payloads against the client's own `ConnectionState`;
slash commands run through `tree._call(...)`, and button presses through the state's
`parse_interaction_create`, which dispatches `DynamicItem`s exactly as in production. Every
HTTP call the bot makes is captured instead of sent: bot-token calls at
`discord.http.HTTPClient.request`, interaction-webhook calls (responses, edits, follow-ups)
at `discord.webhook.async_.AsyncWebhookAdapter.request`. Tests assert on those calls — what
users would see — and can make chosen calls fail (404, 403, 429) to test the bot's reactions.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

import discord
from discord.http import HTTPClient, Route
from discord.webhook.async_ import AsyncWebhookAdapter

APP_ID = 900_000_000_000_000_001
BOT_ID = 900_000_000_000_000_002
GUILD_ID = 900_000_000_000_000_010
CHANNEL_ID = 900_000_000_000_000_020
OTHER_CHANNEL_ID = 900_000_000_000_000_021
USER_ID = 900_000_000_000_000_100
OTHER_USER_ID = 900_000_000_000_000_101
ADMIN_ID = 900_000_000_000_000_102

EPHEMERAL = 64
MANAGE_GUILD = 1 << 5
ALL_BASIC = (1 << 10) | (1 << 11) | (1 << 14) | (1 << 15) | (1 << 31)  # view, send, embed, attach, use commands


def snowflake_now(counter: itertools.count) -> int:
    """A snowflake whose timestamp is now (so discord.py's created_at is sensible)."""
    ms = int(datetime.now(UTC).timestamp() * 1000) - 1420070400000
    return (ms << 22) | (next(counter) & 0x3FFFFF)


def user_payload(user_id: int, name: str | None = None, *, bot: bool = False) -> dict:
    return {"id": str(user_id), "username": name or f"user{user_id % 1000}", "discriminator": "0",
            "global_name": None, "avatar": None, "bot": bot}


@dataclass
class Call:
    """One captured HTTP request."""

    method: str
    path: str  # the route template, e.g. '/webhooks/{webhook_id}/{webhook_token}/messages/@original'
    params: dict[str, Any]  # route parameters (channel_id, webhook_token, …)
    json: dict | list | None  # the JSON body (payload_json for multipart)
    files: list[tuple[str, bytes]] = field(default_factory=list)
    via: str = "http"  # "http" (bot token) or "webhook" (interaction token)
    response: Any = None

    @property
    def token(self) -> str | None:
        return self.params.get("webhook_token")

    @property
    def body(self) -> dict:
        """The message fields, whether sent as a message or inside an interaction callback."""
        data = self.json if isinstance(self.json, dict) else {}
        return data.get("data", data) if "type" in data and "data" in data else data

    @property
    def content(self) -> str | None:
        return self.body.get("content")

    @property
    def flags(self) -> int:
        return int(self.body.get("flags") or 0)

    @property
    def ephemeral(self) -> bool:
        return bool(self.flags & EPHEMERAL)

    @property
    def custom_ids(self) -> list[str]:
        ids = []
        for row in self.body.get("components") or []:
            for item in row.get("components", []):
                if "custom_id" in item:
                    ids.append(item["custom_id"])
        return ids

    @property
    def is_callback(self) -> bool:
        return self.path.endswith("/callback")

    @property
    def callback_type(self) -> int | None:
        return (self.json or {}).get("type") if self.is_callback else None  # type: ignore[union-attr]

    def __repr__(self) -> str:
        files = f" files={[f[0] for f in self.files]}" if self.files else ""
        return f"<Call {self.via} {self.method} {self.path} content={self.content!r}{files}>"


class FakeResponse:
    """Just enough of aiohttp's response for discord.HTTPException."""

    def __init__(self, status: int, reason: str) -> None:
        self.status = status
        self.reason = reason
        self.headers: dict[str, str] = {}


def http_error(status: int, code: int = 0, message: str = "") -> discord.HTTPException:
    data = {"code": code, "message": message or f"HTTP {status}"}
    response = FakeResponse(status, message or "error")
    if status == 404:
        return discord.NotFound(response, data)  # type: ignore[arg-type]
    if status == 403:
        return discord.Forbidden(response, data)  # type: ignore[arg-type]
    return discord.HTTPException(response, data)  # type: ignore[arg-type]


@dataclass
class Failure:
    method: str
    path_part: str
    error: Callable[[], Exception]
    times: int | None  # None: always


class CapturedHTTP:
    """Records every request and answers with plausible Discord JSON."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.failures: list[Failure] = []
        self.delay = 0.0  # seconds each request takes (for throttling tests)
        self._ids = itertools.count(1)
        self._messages: dict[str, dict] = {}  # interaction token -> its @original message
        self._channel_messages: dict[int, dict] = {}

    # -- configuring ---------------------------------------------------------------------------

    def fail(self, method: str, path_part: str, error: Exception | Callable[[], Exception], *,
             times: int | None = 1) -> None:
        """Make the next `times` requests whose route contains `path_part` raise `error`."""
        factory = error if callable(error) and not isinstance(error, Exception) else (lambda: error)
        self.failures.append(Failure(method, path_part, factory, times))  # type: ignore[arg-type]

    def clear(self) -> None:
        self.calls.clear()

    # -- queries ------------------------------------------------------------------------------------

    def find(self, method: str | None = None, path_part: str = "", *, via: str | None = None) -> list[Call]:
        return [c for c in self.calls if (method is None or c.method == method) and path_part in c.path
                and (via is None or c.via == via)]

    def callbacks(self) -> list[Call]:
        return [c for c in self.calls if c.is_callback]

    def for_token(self, token: str) -> list[Call]:
        return [c for c in self.calls if c.token == token]

    def message(self, token: str) -> dict | None:
        """The current state of an interaction's @original message."""
        return self._messages.get(token)

    # -- the two patched entry points -----------------------------------------------------------

    async def http_request(self, route: Route, *, files: Iterable[discord.File] | None = None,
                           form: Iterable[dict[str, Any]] | None = None, **kwargs: Any) -> Any:
        body = kwargs.get("json")
        if form:
            for part in form:
                if part.get("name") == "payload_json":
                    body = json.loads(part["value"])
        call = Call(route.method, route.path, _route_params(route), body, _read_files(files), via="http")
        return await self._answer(call)

    async def webhook_request(self, route: Route, session: Any = None, *, payload: dict | None = None,
                              multipart: list[dict[str, Any]] | None = None, files: Iterable[discord.File] | None = None,
                              **kwargs: Any) -> Any:
        body: Any = payload
        if multipart:
            for part in multipart:
                if part.get("name") == "payload_json":
                    body = json.loads(part["value"])
        call = Call(route.method, route.path, _route_params(route), body, _read_files(files), via="webhook")
        return await self._answer(call)

    async def _answer(self, call: Call) -> Any:
        self.calls.append(call)
        if self.delay:
            await asyncio.sleep(self.delay)
        for failure in list(self.failures):
            if failure.method == call.method and failure.path_part in call.path:
                if failure.times is not None:
                    failure.times -= 1
                    if failure.times <= 0:
                        self.failures.remove(failure)
                call.response = "error"
                raise failure.error()
        call.response = self._respond(call)
        return call.response

    # -- plausible responses -----------------------------------------------------------------------

    def _message(self, channel_id: int, body: dict | None, files: list[tuple[str, bytes]], *,
                 message_id: int | None = None, previous: dict | None = None) -> dict:
        body = body or {}
        mid = message_id or snowflake_now(self._ids)
        attachments = previous.get("attachments", []) if previous else []
        if files or "attachments" in body:
            attachments = [{"id": str(snowflake_now(self._ids)), "filename": name, "size": len(data),
                            "url": f"https://cdn.discordapp.com/attachments/{channel_id}/{mid}/{name}",
                            "proxy_url": f"https://media.discordapp.net/attachments/{channel_id}/{mid}/{name}"}
                           for name, data in files]
        components = body.get("components", previous.get("components", []) if previous else [])
        return {
            "id": str(mid), "channel_id": str(channel_id), "guild_id": str(GUILD_ID), "type": 0,
            "author": user_payload(BOT_ID, "Tessera", bot=True), "application_id": str(APP_ID),
            "content": body.get("content", previous.get("content", "") if previous else ""),
            "timestamp": datetime.now(UTC).isoformat(), "edited_timestamp": None, "tts": False,
            "mention_everyone": False, "mentions": [], "mention_roles": [], "attachments": attachments,
            "embeds": body.get("embeds", []), "pinned": False, "components": components,
            "flags": int(body.get("flags") or 0),
        }

    def _respond(self, call: Call) -> Any:
        p = call.params
        if call.via == "webhook":
            token = p.get("webhook_token", "")
            if call.is_callback:
                body = call.json or {}
                result: dict[str, Any] = {"interaction": {"id": str(p.get("webhook_id")), "type": 2,
                                                          "response_message_loading": body.get("type") == 5}}
                if body.get("type") in (4, 5):
                    message = self._message(CHANNEL_ID, body.get("data") or {}, call.files)
                    self._messages[token] = message
                    result["resource"] = {"type": body["type"], "message": message}
                return result
            if call.path.endswith("/messages/@original"):
                previous = self._messages.get(token)
                if call.method == "DELETE":
                    self._messages.pop(token, None)
                    return None
                if call.method == "GET":
                    return previous or self._message(CHANNEL_ID, {}, [])
                message = self._message(int((previous or {}).get("channel_id", CHANNEL_ID)), call.json or {},
                                        call.files, message_id=int(previous["id"]) if previous else None,
                                        previous=previous)
                self._messages[token] = message
                return message
            if "/messages/{message_id}" in call.path:
                mid = int(p["message_id"])
                previous = self._channel_messages.get(mid)
                message = self._message(CHANNEL_ID, call.json or {}, call.files, message_id=mid, previous=previous)
                self._channel_messages[mid] = message
                return message
            # a follow-up
            message = self._message(CHANNEL_ID, call.json or {}, call.files)
            self._channel_messages[int(message["id"])] = message
            return message
        # bot-token calls
        if call.path == "/users/@me/channels":
            user = (call.json or {}).get("recipient_id")
            return {"id": str(snowflake_now(self._ids)), "type": 1, "recipients": [user_payload(int(user))],
                    "last_message_id": None}
        if call.path.startswith("/channels/{channel_id}/messages"):
            cid = int(p["channel_id"])
            if call.method == "POST":
                message = self._message(cid, call.json, call.files)
                self._channel_messages[int(message["id"])] = message
                return message
            if call.method == "PATCH":
                mid = int(p["message_id"])
                message = self._message(cid, call.json, call.files, message_id=mid,
                                        previous=self._channel_messages.get(mid))
                self._channel_messages[mid] = message
                return message
            return None
        if "/commands" in call.path and call.method == "PUT":
            return [dict(c, id=str(snowflake_now(self._ids)), application_id=str(APP_ID), version="1")
                    for c in (call.json or [])]
        return {}


def _route_params(route: Route) -> dict[str, Any]:
    """The route's parameters, read back from its URL with its path template."""
    pattern = re.sub(r"\\{(\w+)\\}", r"(?P<\1>[^/?]+)", re.escape(route.path))
    match = re.fullmatch(pattern, route.url[len(Route.BASE):].split("?")[0])
    params: dict[str, Any] = {}
    if match:
        for name, value in match.groupdict().items():
            value = unquote(value)
            params[name] = int(value) if value.isdigit() and name != "webhook_token" else value
    return params


def _read_files(files: Iterable[discord.File] | None) -> list[tuple[str, bytes]]:
    out = []
    for f in files or []:
        f.reset()
        out.append((f.filename or "file", f.fp.read()))
        f.reset()
    return out


def channel_payload(channel_id: int, name: str, position: int = 0) -> dict:
    return {"id": str(channel_id), "type": 0, "guild_id": str(GUILD_ID), "name": name, "position": position,
            "permission_overwrites": [], "nsfw": False, "parent_id": None, "topic": None, "last_message_id": None,
            "rate_limit_per_user": 0}


def guild_payload() -> dict:
    """The test server with two text channels, as GUILD_CREATE would deliver it."""
    return {"id": str(GUILD_ID), "name": "Test server", "icon": None, "owner_id": str(ADMIN_ID),
            "roles": [{"id": str(GUILD_ID), "name": "@everyone", "permissions": str(ALL_BASIC), "position": 0,
                       "color": 0, "hoist": False, "managed": False, "mentionable": False}],
            "emojis": [], "stickers": [], "features": [], "member_count": 3, "members": [], "voice_states": [],
            "presences": [], "threads": [], "stage_instances": [], "guild_scheduled_events": [],
            "channels": [channel_payload(CHANNEL_ID, "images"), channel_payload(OTHER_CHANNEL_ID, "art", 1)],
            "unavailable": False, "large": False, "verification_level": 0, "default_message_notifications": 0,
            "explicit_content_filter": 0, "mfa_level": 0, "premium_tier": 0, "preferred_locale": "en-US",
            "nsfw_level": 0, "system_channel_flags": 0}


# ----- the harness -------------------------------------------------------------------------------


class Harness:
    """A `TesseraClient` with a fake logged-in user, captured HTTP and payload builders."""

    def __init__(self, client: discord.Client, http: CapturedHTTP) -> None:
        self.client = client
        self.http = http
        self._ids = itertools.count(1)
        self._patch_webhook: Any = None

    @classmethod
    async def create(cls, client: discord.Client, http: CapturedHTTP | None = None) -> Harness:
        http = http or CapturedHTTP()
        harness = cls(client, http)
        await client._async_setup_hook()  # what `async with client` does: bind the running loop
        state = client._connection
        state.user = discord.ClientUser(state=state, data=user_payload(BOT_ID, "Tessera", bot=True))  # type: ignore[arg-type]
        state.application_id = APP_ID
        state._add_guild_from_data(guild_payload())  # type: ignore[arg-type]  # as the guilds intent would
        client.http.request = http.http_request  # type: ignore[method-assign]
        harness._patch_webhook = AsyncWebhookAdapter.request
        AsyncWebhookAdapter.request = _webhook_trampoline  # type: ignore[method-assign]
        _ACTIVE.append(http)
        await client.prepare()  # type: ignore[attr-defined]
        return harness

    async def close(self) -> None:
        if self._patch_webhook is not None:
            if self.http in _ACTIVE:
                _ACTIVE.remove(self.http)
            if not _ACTIVE:
                AsyncWebhookAdapter.request = self._patch_webhook  # type: ignore[method-assign]
        for task in list(getattr(self.client._connection._view_store, "_ViewStore__tasks", set()) or []):
            task.cancel()

    # -- payloads -----------------------------------------------------------------------------------

    def _base(self, *, user_id: int, permissions: int, channel_id: int, guild_id: int | None,
              roles: Iterable[int] = ()) -> dict:
        interaction_id = snowflake_now(self._ids)
        data: dict[str, Any] = {
            "id": str(interaction_id), "application_id": str(APP_ID), "token": f"token-{interaction_id}",
            "version": 1, "channel_id": str(channel_id), "locale": "en-US", "attachment_size_limit": 10 * 2**20,
            "app_permissions": str(ALL_BASIC), "entitlements": [], "authorizing_integration_owners": {},
        }
        if guild_id is not None:
            data["guild_id"] = str(guild_id)
            data["guild_locale"] = "en-US"
            data["channel"] = {"id": str(channel_id), "type": 0, "guild_id": str(guild_id), "name": "images",
                               "position": 0, "permission_overwrites": [], "nsfw": False, "parent_id": None}
            data["member"] = {"user": user_payload(user_id), "roles": [str(r) for r in roles],
                              "joined_at": "2024-01-01T00:00:00+00:00", "deaf": False, "mute": False,
                              "permissions": str(permissions | ALL_BASIC), "flags": 0}
            data["context"] = 0
        else:
            data["channel"] = {"id": str(channel_id), "type": 1, "recipients": [user_payload(user_id)]}
            data["user"] = user_payload(user_id)
            data["context"] = 1
        return data

    def command_payload(self, name: str, options: dict[str, Any] | None = None, *, subcommand: str | None = None,
                        user_id: int = USER_ID, permissions: int = 0, channel_id: int = CHANNEL_ID,
                        guild_id: int | None = GUILD_ID, roles: Iterable[int] = (),
                        attachments: dict[str, dict] | None = None, resolved: dict | None = None) -> dict:
        """An APPLICATION_COMMAND interaction for `/name [subcommand] options…`."""
        tree = self.client.tree  # type: ignore[attr-defined]
        command = tree.get_command(name)
        if command is None:
            raise KeyError(f"no command /{name}")
        target = command.get_command(subcommand) if subcommand else command
        types = {p.name: p.type.value for p in target.parameters}
        raw_options = []
        resolved = dict(resolved or {})
        for key, value in (options or {}).items():
            if value is None:
                continue
            raw_options.append({"name": key, "type": types[key], "value": value})
        for key, attachment in (attachments or {}).items():
            att_id = str(snowflake_now(self._ids))
            resolved.setdefault("attachments", {})[att_id] = dict({"id": att_id}, **attachment)
            raw_options.append({"name": key, "type": 11, "value": att_id})
        data: dict[str, Any] = {"id": str(hash(command) & 0xFFFFFFFF), "name": name, "type": 1}
        if subcommand:
            data["options"] = [{"name": subcommand, "type": 1, "options": raw_options}]
        else:
            data["options"] = raw_options
        if resolved:
            data["resolved"] = resolved
        if guild_id is not None:
            data["guild_id"] = str(guild_id)
        payload = self._base(user_id=user_id, permissions=permissions, channel_id=channel_id, guild_id=guild_id,
                             roles=roles)
        payload.update(type=2, data=data)
        return payload

    def component_payload(self, custom_id: str, message: dict, *, user_id: int = USER_ID, permissions: int = 0,
                          channel_id: int = CHANNEL_ID, guild_id: int | None = GUILD_ID, component_type: int = 2,
                          values: list[str] | None = None) -> dict:
        """A MESSAGE_COMPONENT interaction: a press on `custom_id` of `message` (a message payload)."""
        payload = self._base(user_id=user_id, permissions=permissions, channel_id=channel_id, guild_id=guild_id)
        data: dict[str, Any] = {"custom_id": custom_id, "component_type": component_type}
        if values is not None:
            data["values"] = values
        payload.update(type=3, data=data, message=message)
        return payload

    # -- driving ------------------------------------------------------------------------------------

    def interaction(self, payload: dict) -> discord.Interaction:
        return discord.Interaction(data=payload, state=self.client._connection)  # type: ignore[arg-type]

    async def run_command(self, name: str, options: dict[str, Any] | None = None, **kwargs: Any) -> discord.Interaction:
        """Invoke `/name` through the tree like discord.py's own tests, then let edits settle."""
        interaction = self.interaction(self.command_payload(name, options, **kwargs))
        tree = self.client.tree  # type: ignore[attr-defined]
        try:
            await tree._call(interaction)
        except discord.app_commands.AppCommandError as error:  # what CommandTree._from_interaction does
            await tree._dispatch_error(interaction, error)
        await self.settle()
        return interaction

    async def press(self, custom_id: str, message: dict, **kwargs: Any) -> str:
        """Press a button through the gateway path; returns the interaction token."""
        payload = self.component_payload(custom_id, message, **kwargs)
        self.client._connection.parse_interaction_create(payload)  # type: ignore[arg-type]
        await self.settle()
        return payload["token"]

    async def react(self, message_id: int, emoji: str = "✉️", *, user_id: int = USER_ID,
                    channel_id: int = CHANNEL_ID, guild_id: int | None = GUILD_ID) -> None:
        payload = {"user_id": str(user_id), "channel_id": str(channel_id), "message_id": str(message_id),
                   "emoji": {"id": None, "name": emoji}, "type": 0, "burst": False}
        if guild_id is not None:
            payload["guild_id"] = str(guild_id)
        self.client._connection.parse_message_reaction_add(payload)  # type: ignore[arg-type]
        await self.settle()

    async def settle(self, rounds: int = 3) -> None:
        """Let dispatched tasks, queued events and throttled edits finish."""
        for _ in range(rounds):
            for _ in range(5):
                await asyncio.sleep(0)
            pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()
                       and (t.get_name().startswith(("discord-ui", "CommandTree", "tessera-edit-", "discord.py"))
                            or "on_raw_reaction_add" in t.get_name())]
            if pending:
                await asyncio.wait(pending, timeout=10)
            await self.client.tracker.idle()  # type: ignore[attr-defined]


_ACTIVE: list[CapturedHTTP] = []


async def _webhook_trampoline(self: AsyncWebhookAdapter, route: Route, session: Any = None, **kwargs: Any) -> Any:
    return await _ACTIVE[-1].webhook_request(route, session, **kwargs)


def message_with(call: Call) -> dict:
    """The message payload the bot produced with `call` (for pressing its buttons)."""
    assert isinstance(call.response, dict), call
    return call.response.get("resource", {}).get("message", call.response)  # type: ignore[no-any-return]


__all__ = [
    "ADMIN_ID", "APP_ID", "BOT_ID", "CHANNEL_ID", "EPHEMERAL", "GUILD_ID", "MANAGE_GUILD", "OTHER_CHANNEL_ID",
    "OTHER_USER_ID", "USER_ID", "Call", "CapturedHTTP", "Harness", "http_error", "message_with",
]
_ = HTTPClient  # the class whose `request` is captured (per client instance)
