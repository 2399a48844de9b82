"""The web gallery over HTTP: what it shows, what it refuses, and that nothing leaks.

A real server on 127.0.0.1 (a free port) over a database seeded through storage's API with
real PNGs. Requests are written raw on a socket, so paths reach the server exactly as sent
(`..`, `%2e%2e`, 10 KB query strings) instead of being tidied by a client library.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from bot.config import ConfigError, load_settings
from bot.web import WebOptions, start_web
from bot.web.ratelimit import RateLimiter
from storage import Storage
from tests.web_seed import AUTHOR, GUILD_A, GUILD_B, OTHER_AUTHOR, Seeded, seed_gallery

ROOT = Path(__file__).resolve().parent.parent
SECRETS = (b"/srv/", b"secret", b"tessera.sqlite3", b"DISCORD_TOKEN", b"Traceback")


async def fetch(port: int, path: str, headers: dict[str, str] | None = None,
                method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    """One raw HTTP/1.1 request; (status, headers with lower-case names, body)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Connection: close",
             *(f"{k}: {v}" for k, v in (headers or {}).items())]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("utf-8"))
    await writer.drain()
    raw = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    found = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        found[name.strip().lower()] = value.strip()
    if found.get("transfer-encoding") == "chunked":
        body = _unchunk(body)
    return int(status_line.split()[1]), found, body


def _unchunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_text, _, rest = data.partition(b"\r\n")
        size = int(size_text.split(b";")[0], 16)
        if size == 0:
            break
        out, data = out + rest[:size], rest[size + 2:]
    return out


@pytest.fixture
async def seeded(data_dir: Path) -> Seeded:
    return await seed_gallery(data_dir)


@pytest.fixture
async def port(seeded: Seeded):
    server = await start_web(seeded.data_dir, host="127.0.0.1", port=0,
                             options=WebOptions(rate_per_s=1000, rate_burst=1000))
    yield server.port
    await server.close()


async def api(port: int, query: str = "") -> dict:
    status, headers, body = await fetch(port, f"/api/shares{query}")
    assert status == 200, body
    assert headers["content-type"].startswith("application/json")
    return json.loads(body)


async def test_grid_and_api_show_exactly_the_shared_images(port: int, seeded: Seeded) -> None:
    shares = seeded.shares
    visible = {shares[k].id for k in ("fox", "upscale", "lighthouse", "variation", "castle")}
    page = await api(port)
    assert {item["id"] for item in page["items"]} == visible
    assert [item["id"] for item in page["items"]] == sorted(visible, reverse=True)  # newest first
    status, _headers, body = await fetch(port, "/")
    assert status == 200
    for entry_id in visible:
        assert f'href="/s/{entry_id}"'.encode() in body
    assert f'href="/s/{shares["removed"].id}"'.encode() not in body
    assert b"private secret portrait" not in body and b"removed robot" not in body
    assert b"<script>alert(1)</script>" not in body and b"&lt;script&gt;alert(1)&lt;/script&gt;" in body
    fox = next(item for item in page["items"] if item["id"] == shares["fox"].id)
    assert fox["author_id"] == str(AUTHOR) and fox["server_id"] == str(GUILD_A)
    assert fox["model"] == "dreamy-v2.safetensors"  # a local model by its file name, not its path
    assert fox["discord"] == f"https://discord.com/channels/{GUILD_A}/5/7001"
    assert (fox["width"], fox["height"]) == (144, 96)


async def test_search_filters_and_sorts(port: int, seeded: Seeded) -> None:
    shares = seeded.shares
    ids = lambda page: [item["id"] for item in page["items"]]  # noqa: E731
    assert set(ids(await api(port, "?q=fox"))) == {shares["fox"].id, shares["upscale"].id}
    assert ids(await api(port, "?q=fox+-larger")) == [shares["fox"].id]  # -word, title indexed
    assert set(ids(await api(port, "?q=lighth*"))) == {shares["lighthouse"].id, shares["variation"].id}
    assert ids(await api(port, "?sort=likes"))[0] == shares["lighthouse"].id
    assert ids(await api(port, "?sort=likes&period=day"))[0] == shares["lighthouse"].id
    assert ids(await api(port, f"?server={GUILD_B}")) == [shares["castle"].id]
    assert set(ids(await api(port, f"?author={OTHER_AUTHOR}"))) == {shares["lighthouse"].id, shares["variation"].id}
    assert ids(await api(port, "?aspect=portrait")) == [shares["variation"].id]
    assert set(ids(await api(port, "?aspect=landscape"))) == {shares["fox"].id, shares["upscale"].id}
    assert set(ids(await api(port, f"?q=lighthouse&server={GUILD_A}&aspect=square"))) == {shares["lighthouse"].id}
    assert len(ids(await api(port, "?model=dreamy-v2.safetensors"))) == 5
    first = await api(port, "?limit=2")
    second = await api(port, f"?limit=2&offset={first['next_offset']}")
    assert first["next_offset"] == 2 and not set(ids(first)) & set(ids(second))
    # Per-server page: only that server's shares.
    status, _, body = await fetch(port, f"/g/{GUILD_B}")
    assert status == 200 and f'href="/s/{shares["castle"].id}"'.encode() in body
    assert f'href="/s/{shares["fox"].id}"'.encode() not in body


async def test_bad_searches_and_parameters_are_clean_400s_with_the_reason(port: int) -> None:
    cases = {
        "?q=%22red+fox": "closing one",  # the same StorageError message as /prompts search
        "?q=OR": "OR must stand between",
        "?sort=popular": "sort must be one of",
        "?period=year": "period must be one of",
        "?aspect=round": "aspect must be",
        "?author=abc": "author must be a number",
        "?model=nope": "no shared image was made with the model",
        "?offset=99999999": "offset must be a number",
        "?limit=1000": "limit must be",
        "?q=a&q=b": "give q once",
        "?q=" + "x" * 600: "at most 500 characters",
    }
    for query, reason in cases.items():
        status, headers, body = await fetch(port, "/api/shares" + query)
        assert status == 400, query
        assert reason in json.loads(body)["error"], (query, body)
        if "limit" in query:  # the API's alone; pages have a fixed size
            continue
        status, headers, body = await fetch(port, "/" + query)
        assert status == 400 and reason.encode() in body.replace(b"&#x27;", b"'"), query
        assert headers["content-type"].startswith("text/html")


async def test_image_page_shows_parameters_lineage_and_no_server_paths(port: int, seeded: Seeded) -> None:
    upscale = seeded.shares["upscale"]
    status, _headers, body = await fetch(port, f"/s/{upscale.id}")
    text = body.decode()
    assert status == 200
    assert "--seed 1235" in text  # image 2 of a seed-1234 grid, followed through the upscale
    assert '<dd id="seed">1235</dd>' in text
    for shown in ("25", "7.5", "euler_a", "blurry", "dreamy-v2.safetensors", "288×192"):
        assert f"<dd>{shown}</dd>" in text, shown
    assert f"upscale ×2 of image 2 of job {seeded.jobs['fox'].id}" in text
    assert f'<a href="/s/{seeded.shares["fox"].id}">shared #{seeded.shares["fox"].id}</a>' in text
    fox = await fetch(port, f"/s/{seeded.shares['fox'].id}")
    assert f"https://discord.com/channels/{GUILD_A}/5/7001".encode() in fox[2]
    variation = (await fetch(port, f"/s/{seeded.shares['variation'].id}"))[2].decode()
    assert f"variation (strong) of image 1 of job {seeded.jobs['lighthouse'].id}" in variation
    for path in (f"/s/{upscale.id}", "/", "/api/shares", "/g/1", "/s/1"):
        body = (await fetch(port, path))[2]
        assert not any(secret in body for secret in SECRETS), path


async def test_security_headers_cache_and_etags(port: int, seeded: Seeded) -> None:
    fox = seeded.shares["fox"].id
    status, headers, body = await fetch(port, f"/img/{fox}")
    assert status == 200 and headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(body)).size == (144, 96)
    etag = headers["etag"]
    assert "max-age" in headers["cache-control"]
    assert (await fetch(port, f"/img/{fox}", {"If-None-Match": etag}))[0] == 304
    status, headers, body = await fetch(port, f"/thumb/{fox}/256")
    assert status == 200 and headers["content-type"] == "image/webp"
    with Image.open(io.BytesIO(body)) as thumb:
        assert thumb.format == "WEBP" and thumb.size == (144, 96)  # never enlarged
    assert (await fetch(port, f"/thumb/{fox}/256", {"If-None-Match": headers["etag"]}))[0] == 304
    cached = list((seeded.data_dir / "thumbs").rglob("*.webp"))
    assert len(cached) == 1 and cached[0].name.endswith("-256.webp")
    for path in ("/", f"/s/{fox}", "/api/shares", "/nope", "/static/gallery.js"):
        _, headers, _ = await fetch(port, path)
        assert "script-src 'self'" in headers["content-security-policy"] and "unsafe-inline" not in headers[
            "content-security-policy"], path
        assert headers["x-content-type-options"] == "nosniff"
    assert (await fetch(port, "/", method="POST"))[0] == 405


async def test_traversal_unknown_private_and_removed_ids_are_404_and_leak_nothing(port: int, seeded: Seeded) -> None:
    private = seeded.jobs["private"]
    async with await Storage.open(seeded.data_dir) as storage:
        (private_image,) = await storage.images.for_job(private.id)
    probes = [
        "/static/../server.py", "/static/..%2fserver.py", "/static/%2e%2e%2f%2e%2e%2fconfig.py",
        "/static/....//....//tessera.sqlite3", "/img/..%2f..%2ftessera.sqlite3", "/img/../tessera.sqlite3",
        "/thumb/1/..%2f..%2f..%2ftessera.sqlite3", "/thumb/1/100", "/thumb/1/256.webp", "/tessera.sqlite3",
        "/images/" + private_image.path.name, "/img/" + private_image.sha256, "/img/%00", "/img/-1", "/img/0",
        "/img/1e3", "/img/01", "/img/99999999", "/img/" + "9" * 40, "/s/" + "9" * 40, "/g/abc", "/g/" + "9" * 30,
        f"/img/{private.id}", f"/s/{private.id}", f"/thumb/{private.id}/256", f"/img/{private.id}/0",
        f"/s/{seeded.shares['removed'].id}", f"/img/{seeded.shares['removed'].id}",
        f"/thumb/{seeded.shares['removed'].id}/256", "/s/%F0%9F%98%80", "/s/%EF%BC%91",  # a full-width 1: int() would take it
    ]
    for path in probes:
        status, _headers, body = await fetch(port, path)
        assert status == 404, (path, status)
        assert not any(secret in body for secret in SECRETS) and b"private secret" not in body, path
    assert (await api(port, "?q=private+secret+portrait"))["items"] == []
    assert (await api(port, "?q=removed+robot"))["items"] == []


async def test_huge_requests_are_clean_4xx(port: int) -> None:
    for path in ("/?q=" + "a" * 3000, "/api/shares?q=" + "%41" * 1000, "/?" + "&".join(["a=b"] * 600),
                 "/api/shares?q=" + "a" * 20000):
        status, _, body = await fetch(port, path)
        assert 400 <= status < 500, (path[:40], status)
        assert b"Traceback" not in body
    status, _, _ = await fetch(port, "/", {"X-Big": "x" * 20000})
    assert 400 <= status < 500


async def test_removing_a_share_hides_it_at_once_beside_a_writing_bot(port: int, seeded: Seeded) -> None:
    lighthouse = seeded.shares["lighthouse"].id
    assert (await fetch(port, f"/s/{lighthouse}"))[0] == 200
    async with await Storage.open(seeded.data_dir) as storage:  # the bot's own connection, writing
        await storage.gallery.remove(lighthouse)
        assert (await fetch(port, f"/s/{lighthouse}"))[0] == 404
        assert (await fetch(port, f"/img/{lighthouse}"))[0] == 404
        assert lighthouse not in {item["id"] for item in (await api(port))["items"]}
        again = await storage.gallery.share(seeded.jobs["lighthouse"].id, 0, author_id=OTHER_AUTHOR, title="Back",
                                            guild_id=GUILD_A, prompt_text="a lighthouse at dusk")
        assert (await fetch(port, f"/s/{again.id}"))[0] == 200


async def test_rate_limit_per_address_with_retry_after(seeded: Seeded) -> None:
    server = await start_web(seeded.data_dir, host="127.0.0.1", port=0, options=WebOptions(rate_per_s=0.5, rate_burst=3))
    try:
        statuses = [(await fetch(server.port, "/healthz"))[0] for _ in range(4)]
        assert statuses == [200, 200, 200, 429]
        status, headers, body = await fetch(server.port, "/api/shares")
        assert status == 429 and int(headers["retry-after"]) >= 1 and b"Too many requests" in body
        # X-Forwarded-For is ignored unless WEB_TRUST_PROXY: a client cannot pose as another.
        assert (await fetch(server.port, "/healthz", {"X-Forwarded-For": "203.0.113.9"}))[0] == 429
    finally:
        await server.close()
    server = await start_web(seeded.data_dir, host="127.0.0.1", port=0,
                             options=WebOptions(rate_per_s=0.5, rate_burst=1, trust_proxy=True))
    try:
        assert (await fetch(server.port, "/healthz", {"X-Forwarded-For": "203.0.113.9"}))[0] == 200
        assert (await fetch(server.port, "/healthz", {"X-Forwarded-For": "203.0.113.9"}))[0] == 429
        assert (await fetch(server.port, "/healthz", {"X-Forwarded-For": "1.2.3.4, 203.0.113.10"}))[0] == 200
    finally:
        await server.close()


def test_token_bucket_refills_and_forgets_the_oldest_addresses() -> None:
    now = [0.0]
    limiter = RateLimiter(2.0, 2, max_clients=3, clock=lambda: now[0])
    assert [limiter.take("a") for _ in range(3)] == [0.0, 0.0, 0.5]
    now[0] += 0.5
    assert limiter.take("a") == 0.0
    for address in "bcd":
        limiter.take(address)
    assert len(limiter._buckets) == 3 and "a" not in limiter._buckets


async def test_all_servers_view_can_be_turned_off(seeded: Seeded) -> None:
    server = await start_web(seeded.data_dir, host="127.0.0.1", port=0, options=WebOptions(all_servers=False))
    try:
        assert (await fetch(server.port, "/"))[0] == 404
        status, _, body = await fetch(server.port, "/api/shares")
        assert status == 400 and b"server=" in body
        assert (await fetch(server.port, f"/g/{GUILD_B}"))[0] == 200
        assert len(json.loads((await fetch(server.port, f"/api/shares?server={GUILD_B}"))[2])["items"]) == 1
    finally:
        await server.close()


async def test_reads_only_and_refuses_a_missing_or_newer_database(seeded: Seeded, tmp_path: Path) -> None:
    from engine.errors import StorageError

    database = seeded.data_dir / "tessera.sqlite3"
    before = database.read_bytes()
    server = await start_web(seeded.data_dir, host="127.0.0.1", port=0)
    try:
        await api(server.port, "?q=fox")
    finally:
        await server.close()
    assert database.read_bytes() == before
    with pytest.raises(StorageError, match="no Tessera database"):
        await start_web(tmp_path / "empty", host="127.0.0.1", port=0)
    newer = tmp_path / "newer"
    newer.mkdir()
    with sqlite3.connect(newer / "tessera.sqlite3") as con:
        con.execute("PRAGMA user_version = 99")
    with pytest.raises(StorageError, match="schema version 99"):
        await start_web(newer, host="127.0.0.1", port=0)


def test_settings_and_gallery_link() -> None:
    assert load_settings().web_url is None  # off by default
    assert load_settings(web_port=8080).web_url == "http://127.0.0.1:8080"
    assert load_settings(web_port=8080, web_base_url="https://g.example.org/").web_url == "https://g.example.org"
    with pytest.raises(ConfigError, match="WEB_BASE_URL"):
        load_settings(web_base_url="javascript:alert(1)")


def test_tessera_web_runs_alone_and_stops_on_sigterm(seeded: Seeded) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DATA_DIR": str(seeded.data_dir)}
    process = subprocess.Popen([sys.executable, "-m", "bot.cli", "web", "--port", "0"], cwd=ROOT, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()  # type: ignore[union-attr]
        assert "web gallery of" in line, process.stderr.read() if process.poll() is not None else line  # type: ignore[union-attr]
        port = int(line.rsplit(":", 1)[1].split()[0])
        status, _, body = asyncio.run(fetch(port, "/api/shares?q=castle"))
        assert status == 200 and len(json.loads(body)["items"]) == 1
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(20) == 0
