"""The web gallery's aiohttp application: routes, checks and the server's life.

What a visitor can reach is exactly what is shared now: every page, image and JSON answer
starts from a gallery row with `removed = 0` (a removed share is gone on the next request),
and files are served only by looking that row's image record up, never by a path from the
URL. Every id in a URL is checked against a strict pattern before any lookup; query strings
are bounded before they are parsed; each client address has a token bucket (429 with
Retry-After). Answers carry a strict Content-Security-Policy (no inline script or style, no
third-party anything), `nosniff`, and no secret: the server knows none but the database.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from aiohttp import web

from bot.gallery import entry_link, model_name, post_title
from bot.web import pages
from bot.web.ratelimit import RateLimiter
from bot.web.thumbs import SIZES, Thumbnailer
from engine.errors import StorageError
from storage.api import DATABASE_NAME, IMAGES_DIR_NAME
from storage.gallery import PERIODS, SORTS, GalleryRepository, ReadOnlyDatabase, SharedImage

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
PAGE_SIZE = 30
API_MAX_LIMIT = 60
MAX_OFFSET = 10_000  # deeper pages cost more and nobody scrolls 10,000 images: search instead
MAX_QUERY_STRING = 2048  # bytes of `?…`; aiohttp itself refuses request lines over 8190
MAX_PARAM = 500  # the longest value of one parameter (a search is at most 500 characters)
MODELS_TTL_S = 60.0
_ENTRY_ID = re.compile(r"^[1-9][0-9]{0,15}$")
_SNOWFLAKE = re.compile(r"^[1-9][0-9]{0,19}$")
_OFFSET = re.compile(r"^[0-9]{1,6}$")
_MAX_INT64 = 2**63 - 1

CSP = ("default-src 'none'; img-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; "
       "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Resource-Policy": "same-origin",
}
PAGE_CACHE = "no-cache"  # revalidate: a removed share must not linger in a cache
IMAGE_CACHE = "public, max-age=300"  # short: a removed share's image leaves caches within minutes
STATIC_CACHE = "public, max-age=3600"
_STATIC_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}


@dataclass(frozen=True)
class WebOptions:
    """What the operator decides about the web gallery (from WEB_* settings)."""

    all_servers: bool = True
    trust_proxy: bool = False
    rate_per_s: float = 20.0
    rate_burst: int = 120


class BadRequest(Exception):
    """A parameter a visitor can fix: 400 with this message."""


def _int(value: str, pattern: re.Pattern[str], name: str) -> int:
    if not pattern.match(value) or int(value) > _MAX_INT64:
        raise BadRequest(f"{name} must be a number, not {value[:40]!r}")
    return int(value)


def entry_id_of(request: web.Request) -> int:
    """The share id in the URL, or 404 (an id that is not a plain number names nothing)."""
    raw = request.match_info.get("entry", "")
    if not _ENTRY_ID.match(raw):
        raise web.HTTPNotFound()
    return int(raw)


def _load_static() -> dict[str, tuple[bytes, str]]:
    """The static files, read once at start: a URL names a key here, never a path."""
    found: dict[str, tuple[bytes, str]] = {}
    for path in STATIC_DIR.iterdir():
        if path.suffix in _STATIC_TYPES:
            found[path.name] = (path.read_bytes(), _STATIC_TYPES[path.suffix])
    return found


def _json_entry(item: SharedImage) -> dict[str, Any]:
    """One share in /api/shares: ids as strings (Discord ids do not fit a JavaScript number)."""
    entry = item.entry
    return {
        "id": entry.id, "title": post_title(entry), "prompt": entry.prompt_text, "likes": entry.likes,
        "author_id": str(entry.author_id), "author": pages.author_name(entry.author_id),
        "server_id": str(entry.guild_id) if entry.guild_id is not None else None,
        "created_at": entry.created_at.isoformat() if isinstance(entry.created_at, datetime) else None,
        "width": item.width, "height": item.height, "model": model_name(item.model),
        "page": f"/s/{entry.id}", "image": f"/img/{entry.id}",
        "thumbs": {str(size): f"/thumb/{entry.id}/{size}" for size in SIZES},
        "srcset": pages.srcset(entry.id, item.width, item.height, (256, 512)),
        "discord": entry_link(entry),
    }


class GalleryWeb:
    """The gallery's pages and API over a `GalleryRepository` (on a read-only connection)."""

    def __init__(self, gallery: GalleryRepository, images_root: Path, thumbs: Thumbnailer,
                 options: WebOptions | None = None) -> None:
        self.gallery = gallery
        self.images_root = images_root
        self.thumbs = thumbs
        self.options = options or WebOptions()
        self.limiter = RateLimiter(self.options.rate_per_s, self.options.rate_burst)
        self._static = _load_static()
        self._models: dict[int | None, tuple[float, dict[str, str]]] = {}

    # ----- the application -------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._guard], client_max_size=1024)
        app.add_routes([
            web.get("/", self.home), web.get("/g/{guild}", self.server_page),
            web.get("/s/{entry}", self.share), web.get("/img/{entry}", self.image),
            web.get("/thumb/{entry}/{size}", self.thumbnail), web.get("/api/shares", self.api_shares),
            web.get("/static/{name}", self.static), web.get("/healthz", self.health),
        ])
        return app

    def client_address(self, request: web.Request) -> str:
        """The visitor's address: the last X-Forwarded-For hop (the one our proxy added) when
        WEB_TRUST_PROXY says a proxy is in front; else the connection's own address."""
        if self.options.trust_proxy:
            forwarded = request.headers.get("X-Forwarded-For", "")[-200:]
            hop = forwarded.rsplit(",", 1)[-1].strip()
            if hop:
                return hop[:64]
        return request.remote or "unknown"

    @web.middleware
    async def _guard(self, request: web.Request,
                     handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        """Rate limit, bound the query, turn every error into a clean page, add the headers."""
        start = time.perf_counter()
        try:
            wait = self.limiter.take(self.client_address(request))
            if wait > 0:
                raise web.HTTPTooManyRequests(headers={"Retry-After": str(max(1, math.ceil(wait)))},
                                              text="Too many requests from your address; wait a moment.")
            if len(request.query_string) > MAX_QUERY_STRING:
                raise web.HTTPRequestURITooLong(text=f"The address is too long (at most {MAX_QUERY_STRING} "
                                                     "characters after the ?).")
            if request.method not in ("GET", "HEAD"):
                raise web.HTTPMethodNotAllowed(request.method, ["GET", "HEAD"])
            response = await handler(request)
        except web.HTTPException as exc:
            response = self._error(request, exc.status, exc.text if exc.status in (414, 429) else _reason(exc.status),
                                   headers={k: v for k, v in exc.headers.items() if k in ("Retry-After", "Allow")})
        except BadRequest as exc:
            response = self._error(request, 400, str(exc))
        except StorageError as exc:
            response = self._error(request, 400, str(exc))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("web gallery: %s %s failed", request.method, request.path[:200])
            response = self._error(request, 500, "Something went wrong on our side; try again later.")
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        response.headers["Server-Timing"] = f"app;dur={(time.perf_counter() - start) * 1000:.2f}"
        return response

    def _error(self, request: web.Request, status: int, message: str | None,
               headers: dict[str, str] | None = None) -> web.Response:
        message = message or _reason(status)
        if request.path.startswith("/api/"):
            response = web.json_response({"error": message}, status=status)
        else:
            response = web.Response(text=pages.error_page(status, message, home=self._home()), status=status,
                                    content_type="text/html", charset="utf-8")
        response.headers.update(headers or {})
        response.headers["Cache-Control"] = "no-store"
        return response

    def _home(self) -> str:
        return "/" if self.options.all_servers else "#"

    # ----- parameters --------------------------------------------------------------------------

    async def _filters(self, request: web.Request, guild_id: int | None) -> tuple[dict[str, Any], dict[str, str]]:
        """The browse() arguments from the query string, checked, and the form as typed."""
        query = request.query
        form: dict[str, str] = {}
        for name in ("q", "sort", "period", "model", "aspect", "author"):
            values = query.getall(name, [])
            if len(values) > 1:
                raise BadRequest(f"give {name} once, not {len(values)} times")
            if values:
                if len(values[0]) > MAX_PARAM:
                    raise BadRequest(f"{name} can be at most {MAX_PARAM} characters, not {len(values[0])}")
                form[name] = values[0].strip()
        text = form.get("q") or None
        sort = form.get("sort") or ("relevance" if text else "recent")
        if sort not in SORTS:
            raise BadRequest(f"sort must be one of {', '.join(SORTS)}, not {sort[:40]!r}")
        period = form.get("period") or "all"
        if period not in PERIODS:
            raise BadRequest(f"period must be one of {', '.join(PERIODS)}, not {period[:40]!r}")
        aspect = form.get("aspect") or None
        if aspect is not None and aspect not in pages.ASPECT_LABELS:
            raise BadRequest(f"aspect must be square, landscape or portrait, not {aspect[:40]!r}")
        author = _int(form["author"], _SNOWFLAKE, "author") if form.get("author") else None
        model = None
        if form.get("model"):
            known = await self._model_names(guild_id)
            if form["model"] not in known:
                raise BadRequest(f"no shared image was made with the model {form['model'][:80]!r}; "
                                 f"choose one of {', '.join(list(known)[:10]) or 'the shared models'}")
            model = known[form["model"]]
        form["sort"] = sort
        return ({"query": text, "sort": sort, "period": period, "guild_id": guild_id, "author_id": author,
                 "model": model, "aspect": aspect}, form)

    @staticmethod
    def _offset(request: web.Request) -> int:
        raw = request.query.get("offset", "0") or "0"
        if not _OFFSET.match(raw) or int(raw) > MAX_OFFSET:
            raise BadRequest(f"offset must be a number from 0 to {MAX_OFFSET}; search to find older images")
        return int(raw)

    async def _model_names(self, guild_id: int | None) -> dict[str, str]:
        """Display name -> stored model reference of the recently shared models, cached a minute
        (a local path is shown and chosen by its file name only; see `bot.gallery.model_name`)."""
        cached = self._models.get(guild_id)
        if cached is not None and time.monotonic() - cached[0] < MODELS_TTL_S:
            return cached[1]
        names: dict[str, str] = {}
        for ref in await self.gallery.models(guild_id=guild_id):
            names.setdefault(model_name(ref), ref)
        if len(self._models) > 1000:
            self._models.clear()
        self._models[guild_id] = (time.monotonic(), names)
        return names

    # ----- pages -------------------------------------------------------------------------------

    async def home(self, request: web.Request) -> web.Response:
        if not self.options.all_servers:
            raise web.HTTPNotFound()
        return await self._grid(request, None, "Shared images from every server")

    async def server_page(self, request: web.Request) -> web.Response:
        raw = request.match_info.get("guild", "")
        if not _SNOWFLAKE.match(raw) or int(raw) > _MAX_INT64:
            raise web.HTTPNotFound()
        return await self._grid(request, int(raw), "Shared images from this server")

    async def _grid(self, request: web.Request, guild_id: int | None, heading: str) -> web.Response:
        models = list(await self._model_names(guild_id))
        api = "/api/shares" + (f"?server={guild_id}" if guild_id is not None else "")
        status, error, items, next_offset = 200, None, [], None
        form: dict[str, str] = {}
        try:
            filters, form = await self._filters(request, guild_id)
            offset = self._offset(request)
            items = await self.gallery.browse(**filters, limit=PAGE_SIZE + 1, offset=offset)
            if len(items) > PAGE_SIZE and offset + PAGE_SIZE <= MAX_OFFSET:
                next_offset = offset + PAGE_SIZE
            items = items[:PAGE_SIZE]
            extra = "&".join(f"{k}={_quote(v)}" for k, v in form.items() if v)
            if extra:
                api += ("&" if "?" in api else "?") + extra
        except (BadRequest, StorageError) as exc:
            status, error = 400, str(exc)
        html = pages.grid_page(heading=heading, home=self._home(), items=items, form=form, models=models,
                               next_offset=next_offset, api=api, error=error)
        return web.Response(text=html, status=status, content_type="text/html", charset="utf-8",
                            headers={"Cache-Control": PAGE_CACHE})

    async def share(self, request: web.Request) -> web.Response:
        details = await self.gallery.share_details(entry_id_of(request), self.images_root)
        if details is None:
            raise web.HTTPNotFound()
        return web.Response(text=pages.share_page(details, home=self._home()), content_type="text/html",
                            charset="utf-8", headers={"Cache-Control": PAGE_CACHE})

    async def image(self, request: web.Request) -> web.StreamResponse:
        found = await self.gallery.shared_image(entry_id_of(request), self.images_root)
        if found is None:
            raise web.HTTPNotFound()
        _, record = found
        return self._file(request, record.path, f'"{record.sha256}"')

    async def thumbnail(self, request: web.Request) -> web.StreamResponse:
        entry_id = entry_id_of(request)
        size = request.match_info.get("size", "")
        if size not in {str(s) for s in SIZES}:
            raise web.HTTPNotFound()
        found = await self.gallery.shared_image(entry_id, self.images_root)
        if found is None:
            raise web.HTTPNotFound()
        _, record = found
        etag = f'"{record.sha256}-{size}"'
        if _not_modified(request, etag):
            return _not_modified_response(etag)
        try:
            path = await self.thumbs.get(record.path, record.sha256, int(size))
        except FileNotFoundError:
            log.warning("web gallery: the image file of gallery #%d is missing", entry_id)
            raise web.HTTPNotFound() from None
        return self._file(request, path, etag, content_type="image/webp")

    def _file(self, request: web.Request, path: Path, etag: str, *,
              content_type: str | None = None) -> web.StreamResponse:
        if _not_modified(request, etag):
            return _not_modified_response(etag)
        if not path.is_file():
            log.warning("web gallery: missing file for %s", request.path[:100])
            raise web.HTTPNotFound()
        headers = {"Cache-Control": IMAGE_CACHE, "ETag": etag}
        if content_type:
            headers["Content-Type"] = content_type
        response = web.FileResponse(path, headers=headers)
        return response

    async def api_shares(self, request: web.Request) -> web.Response:
        guild_id = None
        if request.query.get("server"):
            guild_id = _int(request.query["server"], _SNOWFLAKE, "server")
        elif not self.options.all_servers:
            raise BadRequest("the all-servers view is off here: give server=<id>")
        filters, _ = await self._filters(request, guild_id)
        offset = self._offset(request)
        raw_limit = request.query.get("limit", str(PAGE_SIZE))
        if not _OFFSET.match(raw_limit) or not 1 <= int(raw_limit) <= API_MAX_LIMIT:
            raise BadRequest(f"limit must be a number from 1 to {API_MAX_LIMIT}")
        limit = int(raw_limit)
        items = await self.gallery.browse(**filters, limit=limit + 1, offset=offset)
        more = len(items) > limit and offset + limit <= MAX_OFFSET
        return web.json_response({"items": [_json_entry(i) for i in items[:limit]],
                                  "next_offset": offset + limit if more else None},
                                 headers={"Cache-Control": PAGE_CACHE})

    async def static(self, request: web.Request) -> web.Response:
        found = self._static.get(request.match_info.get("name", ""))
        if found is None:
            raise web.HTTPNotFound()
        body, content_type = found
        return web.Response(body=body, headers={"Content-Type": content_type, "Cache-Control": STATIC_CACHE})

    async def health(self, request: web.Request) -> web.Response:
        return web.Response(text="ok", headers={"Cache-Control": "no-store"})


def _quote(value: str) -> str:
    from urllib.parse import quote

    return quote(value, safe="")


def _reason(status: int) -> str:
    return {404: "There is nothing here: the image may have been removed from the gallery, or the address is wrong.",
            405: "Only GET requests are answered here."}.get(status, "That request cannot be answered.")


def _not_modified(request: web.Request, etag: str) -> bool:
    return etag in [tag.strip() for tag in request.headers.get("If-None-Match", "")[:1000].split(",")]


def _not_modified_response(etag: str) -> web.Response:
    return web.Response(status=304, headers={"ETag": etag, "Cache-Control": IMAGE_CACHE})


# ----- running it ------------------------------------------------------------------------------


class WebServer:
    """A running web gallery: its own read-only connection, thumbnail threads and listener."""

    def __init__(self, runner: web.AppRunner, db: ReadOnlyDatabase, thumbs: Thumbnailer, site: web.TCPSite) -> None:
        self._runner = runner
        self._db = db
        self._thumbs = thumbs
        self._site = site

    @property
    def port(self) -> int:
        """The port it listens on (useful when started on port 0)."""
        server = self._site._server
        assert server is not None
        sockets = getattr(server, "sockets", None) or []
        return int(sockets[0].getsockname()[1])

    async def close(self) -> None:
        await self._runner.cleanup()
        await self._db.close()
        self._thumbs.close()


def thumbnail_dir(data_dir: Path) -> Path:
    """DATA_DIR/thumbs, or a temporary folder when DATA_DIR is read-only (a copy on another machine)."""
    import tempfile

    folder = data_dir / "thumbs"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".write-test"
        probe.touch()
        probe.unlink()
        return folder
    except OSError:
        fallback = Path(tempfile.mkdtemp(prefix="tessera-thumbs-"))
        log.warning("web gallery: %s is not writable; thumbnails are cached in %s", folder, fallback)
        return fallback


async def start_web(data_dir: Path, *, host: str, port: int, options: WebOptions | None = None) -> WebServer:
    """Serve the gallery of `data_dir` on host:port (port 0: any free port) until `close()`."""
    data_dir = Path(data_dir).expanduser().resolve()
    db = await ReadOnlyDatabase.open(data_dir / DATABASE_NAME)
    thumbs = Thumbnailer(thumbnail_dir(data_dir))
    gallery = GalleryWeb(GalleryRepository(db), data_dir / IMAGES_DIR_NAME, thumbs, options)  # type: ignore[arg-type]
    runner = web.AppRunner(gallery.app(), access_log=None, handle_signals=False)
    try:
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
    except BaseException:
        await runner.cleanup()
        await db.close()
        thumbs.close()
        raise
    server = WebServer(runner, db, thumbs, site)
    log.info("web gallery on http://%s:%d", host, server.port)
    return server


def options_from(settings: Any) -> WebOptions:
    return WebOptions(all_servers=settings.web_all_servers, trust_proxy=settings.web_trust_proxy,
                      rate_per_s=settings.web_rate_per_s, rate_burst=settings.web_rate_burst)
