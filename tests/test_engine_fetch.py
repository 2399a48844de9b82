"""Image prompts fetched from a local HTTP server: good image, bad answers, SSRF, redirects, limits.

The server listens on 127.0.0.1, which the default policy refuses; tests that need a fetch to
succeed allow that one host and the server's port explicitly (as an operator would allow an
internal image host with IMAGE_FETCH_ALLOWED_HOSTS / IMAGE_FETCH_PORTS). Every refusal test
also checks that the server never saw the request. The fetched image then drives
image-to-image on the tiny SD 1.5 model, as `/imagine URL text` does.
"""

from __future__ import annotations

import asyncio
import io
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiohttp import web
from PIL import Image

from engine.errors import ImageFetchError
from engine.imaging.fetch import (
    PROCESS_IN_HAND,
    FetchLimits,
    FetchPolicy,
    blend_images,
    decode_image,
    fetch_image,
    fetch_init_image,
    save_init_image,
)

MAX = 200_000


def png_bytes(size: tuple[int, int] = (80, 48), color: tuple[int, int, int] = (10, 200, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


@dataclass
class Server:
    base: str
    port: int
    hits: Counter = field(default_factory=Counter)
    in_flight: int = 0
    most_in_flight: int = 0

    @property
    def allowed(self) -> FetchPolicy:
        """The test server's host and port allowed, nothing else."""
        return FetchPolicy.build(allowed_hosts=["127.0.0.1"], ports=[self.port])


BIG_SIDE = 3000
BIG_COLORS = [(250, 10, 10), (10, 250, 10), (10, 10, 250), (200, 200, 0)]


@pytest.fixture(scope="module")
def big_pngs() -> list[bytes]:
    """Large images that are cheap to make and costly to decode (a few KB each, 27 MB decoded)."""
    out = []
    for color in BIG_COLORS:
        buffer = io.BytesIO()
        Image.new("RGB", (BIG_SIDE, BIG_SIDE), color).save(buffer, format="PNG", compress_level=1)
        out.append(buffer.getvalue())
    return out


@pytest.fixture
async def server(big_pngs: list[bytes]) -> AsyncIterator[Server]:
    state = Server("", 0)

    def location(to: str):
        async def handler(_: web.Request) -> web.Response:
            raise web.HTTPFound(to.format(port=state.port))
        return handler

    async def good(_: web.Request) -> web.Response:
        return web.Response(body=png_bytes(), content_type="image/png")

    async def second(_: web.Request) -> web.Response:
        return web.Response(body=png_bytes((40, 40), (250, 0, 0)), content_type="image/png")

    async def html(_: web.Request) -> web.Response:
        return web.Response(text="<html>secret admin page</html>", content_type="text/html")

    async def big(_: web.Request) -> web.Response:
        return web.Response(body=b"\0" * (MAX + 1), content_type="image/png")

    async def streamed(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "image/png"})  # no Content-Length
        await response.prepare(request)
        for _ in range(10):
            await response.write(b"\x89" * 50_000)
        return response

    async def garbage(_: web.Request) -> web.Response:
        return web.Response(body=b"this is not a png at all", content_type="image/png")

    async def slow(_: web.Request) -> web.Response:
        await asyncio.sleep(1.5)
        return web.Response(body=png_bytes(), content_type="image/png")

    async def error(_: web.Request) -> web.Response:
        return web.Response(status=500, text="internal stack trace")

    async def paced(request: web.Request) -> web.Response:
        state.in_flight += 1
        state.most_in_flight = max(state.most_in_flight, state.in_flight)
        try:
            await asyncio.sleep(0.15)
        finally:
            state.in_flight -= 1
        return web.Response(body=png_bytes((30, 30), (int(request.match_info["n"]) * 20, 0, 0)),
                            content_type="image/png")

    async def large(request: web.Request) -> web.Response:
        return web.Response(body=big_pngs[int(request.match_info["n"])], content_type="image/png")

    @web.middleware
    async def count(request: web.Request, handler: Any) -> web.StreamResponse:
        state.hits[request.path] += 1
        return await handler(request)

    app = web.Application(middlewares=[count])
    routes = {"/a.png": good, "/b.png": second, "/page.png": html, "/big.png": big, "/stream.png": streamed,
              "/broken.png": garbage, "/slow.png": slow, "/error.png": error, "/paced/{n}.png": paced,
              "/large/{n}.png": large,
              "/to-same.png": location("/a.png"),
              "/to-localhost.png": location("http://localhost:{port}/a.png"),
              "/to-v6.png": location("http://[::1]:{port}/a.png"),
              "/to-hex.png": location("http://0x7f000001:{port}/a.png"),
              "/to-other-port.png": location("http://127.0.0.1:1/a.png"),
              "/to-file.png": location("file:///etc/passwd"),
              "/loop.png": location("/loop.png")}
    for path, handler in routes.items():
        app.router.add_get(path, handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    state.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    state.base = f"http://127.0.0.1:{state.port}"
    try:
        yield state
    finally:
        await runner.cleanup()


# Words that would tell a user what answered at an address: an oracle for probing networks.
LEAKS = ("HTTP", "404", "500", "refused", "text/html", "content type", "Error", "admin", "stack", "redirect",
         "timed out", "longer than")


def assert_neutral(error: pytest.ExceptionInfo[ImageFetchError], host: str) -> None:
    text = str(error.value)
    assert text.startswith("Could not fetch") and f"({host})" in text, text
    assert "PNG, JPEG, GIF or WebP" in text  # what is allowed
    assert not any(word.lower() in text.lower() for word in LEAKS), text


async def test_a_good_image_is_fetched_and_decoded(server: Server) -> None:
    image = await fetch_image(f"{server.base}/a.png", max_bytes=MAX, timeout_s=5, policy=server.allowed)
    assert image.size == (80, 48) and image.mode == "RGB" and image.getpixel((0, 0)) == (10, 200, 30)


@pytest.mark.parametrize("path", ["/missing.png", "/page.png", "/big.png", "/stream.png", "/broken.png",
                                  "/error.png", "/loop.png", "/to-file.png"])
async def test_bad_answers_give_one_neutral_error(server: Server, path: str) -> None:
    with pytest.raises(ImageFetchError) as error:
        await fetch_image(f"{server.base}{path}", max_bytes=MAX, timeout_s=5, policy=server.allowed)
    assert_neutral(error, "127.0.0.1")
    assert server.hits["/loop.png"] <= 4  # the first request and at most 3 redirects


async def test_slow_servers_time_out_neutrally(server: Server) -> None:
    started = time.monotonic()
    with pytest.raises(ImageFetchError) as error:
        await fetch_image(f"{server.base}/slow.png", max_bytes=MAX, timeout_s=0.3, policy=server.allowed)
    assert time.monotonic() - started < 2
    assert_neutral(error, "127.0.0.1")


@pytest.mark.parametrize(("host", "shown"), [
    ("127.0.0.1", "127.0.0.1"), ("localhost", "localhost"), ("LocalHost.", "localhost."), ("[::1]", "::1"),
    ("0x7f000001", "0x7f000001"), ("2130706433", "2130706433"), ("0177.0.0.1", "0177.0.0.1"),
    ("127.1", "127.1"), ("[::ffff:127.0.0.1]", "::ffff:7f00:1"), ("0x7f.0.0.1", "0x7f.0.0.1"),
])
async def test_loopback_in_any_spelling_is_refused_before_connecting(server: Server, host: str, shown: str) -> None:
    policy = FetchPolicy.build(ports=[server.port])  # the port is allowed; loopback is not
    with pytest.raises(ImageFetchError) as error:
        await fetch_image(f"http://{host}:{server.port}/a.png", max_bytes=MAX, timeout_s=5, policy=policy)
    assert_neutral(error, shown)
    assert sum(server.hits.values()) == 0


async def test_only_allowed_ports(server: Server) -> None:
    policy = FetchPolicy.build(allowed_hosts=["127.0.0.1"])  # the host is allowed, its port is not 80/443
    with pytest.raises(ImageFetchError) as error:
        await fetch_image(f"{server.base}/a.png", max_bytes=MAX, timeout_s=5, policy=policy)
    assert_neutral(error, "127.0.0.1")
    assert sum(server.hits.values()) == 0


async def test_redirects_are_checked_on_every_hop(server: Server) -> None:
    # A redirect inside the allowed host is followed ...
    image = await fetch_image(f"{server.base}/to-same.png", max_bytes=MAX, timeout_s=5, policy=server.allowed)
    assert image.size == (80, 48) and server.hits["/a.png"] == 1
    # ... but one into loopback under any other name, or to another port, is not: the allowed
    # host is allowed as a name, not as a door into the machine's own addresses.
    for path in ("/to-localhost.png", "/to-v6.png", "/to-hex.png", "/to-other-port.png"):
        with pytest.raises(ImageFetchError) as error:
            await fetch_image(f"{server.base}{path}", max_bytes=MAX, timeout_s=5, policy=server.allowed)
        assert_neutral(error, "127.0.0.1")  # the host the user typed, not where it pointed
        assert server.hits[path] == 1
    assert server.hits["/a.png"] == 1


async def test_fetches_run_at_most_three_at_once_and_keep_their_order(server: Server, tmp_path: Path) -> None:
    urls = [f"{server.base}/paced/{n}.png" for n in range(5)]
    path = await fetch_init_image(urls, tmp_path, policy=server.allowed, limits=FetchLimits(max_bytes=MAX))
    assert server.most_in_flight <= 3 and all(server.hits[f"/paced/{n}.png"] >= 1 for n in range(5))
    assert Image.open(path).getpixel((0, 0)) == (40, 0, 0)  # mean of 0, 20, 40, 60, 80


async def test_concurrent_prompts_hold_at_most_process_in_hand_links(server: Server, tmp_path: Path) -> None:
    """Many /imagine commands at once: each may fetch 3 links, but the process holds at most
    PROCESS_IN_HAND links' bytes in all, so their memory is bounded before any queue limit."""
    prompts = [[f"{server.base}/paced/{n}.png" for n in range(3)] for _ in range(5)]  # 15 links wanted at once
    await asyncio.gather(*(fetch_init_image(urls, tmp_path / str(i), policy=server.allowed,
                                            limits=FetchLimits(max_bytes=MAX)) for i, urls in enumerate(prompts)))
    assert 3 < server.most_in_flight <= PROCESS_IN_HAND < 15


async def test_pixel_limits_per_image_and_per_prompt(server: Server, tmp_path: Path) -> None:
    big = [f"{server.base}/large/{n}.png" for n in range(2)]
    per_image = FetchLimits(max_bytes=MAX, max_pixels=BIG_SIDE * BIG_SIDE - 1)
    with pytest.raises(ImageFetchError) as error:
        await fetch_init_image(big, tmp_path, policy=server.allowed, limits=per_image)
    assert_neutral(error, "127.0.0.1")
    together = FetchLimits(max_bytes=MAX, max_total_pixels=BIG_SIDE * BIG_SIDE * 3 // 2)
    with pytest.raises(ImageFetchError, match="megapixels together"):
        await fetch_init_image(big, tmp_path, policy=server.allowed, limits=together)


async def test_large_image_prompts_leave_the_event_loop_free(server: Server, tmp_path: Path) -> None:
    """Four 3000² image prompts are decoded, reduced and blended while a ticker measures the loop."""
    lags: list[float] = []
    stop = asyncio.Event()

    async def ticker() -> None:
        while not stop.is_set():
            before = time.perf_counter()
            await asyncio.sleep(0.005)
            lags.append(time.perf_counter() - before - 0.005)

    tick = asyncio.create_task(ticker())
    await asyncio.sleep(0.02)
    try:
        path = await fetch_init_image([f"{server.base}/large/{n}.png" for n in range(4)], tmp_path,
                                      policy=server.allowed, limits=FetchLimits(max_bytes=MAX))
    finally:
        stop.set()
        await tick
    blended = Image.open(path)
    assert blended.size == (1500, 1500)  # reduced at decode time (by 2), never blended at full size
    assert blended.getpixel((10, 10)) == tuple(round(sum(c) / 4) for c in zip(*BIG_COLORS, strict=True))
    assert max(lags) < 0.2, f"the event loop stalled for {max(lags) * 1000:.0f} ms"


def test_decoded_pixel_limits() -> None:
    buffer = io.BytesIO()
    Image.new("L", (8000, 6000)).save(buffer, format="PNG")  # 48 MP, a few KB compressed
    with pytest.raises(ImageFetchError, match="8,000×6,000 pixels"):
        decode_image(buffer.getvalue())
    buffer = io.BytesIO()
    Image.new("RGB", (10, 10)).save(buffer, format="BMP")
    with pytest.raises(ImageFetchError, match="not a PNG, JPEG, GIF or WebP image"):
        decode_image(buffer.getvalue())


async def test_image_prompt_drives_image_to_image(server: Server, tmp_path: Path,
                                                  tiny_models: dict[str, Path]) -> None:
    from engine.diffusion.generate import Generator
    from engine.diffusion.models import load_model
    from engine.prompt import Expansion, Params, WeightedText
    from engine.request import resolve

    path = await fetch_init_image([f"{server.base}/a.png", f"{server.base}/b.png"], tmp_path / "inputs",
                                  policy=server.allowed, limits=FetchLimits(max_bytes=MAX, timeout_s=5))
    blended = Image.open(path)
    assert blended.size == (80, 48)
    assert blended.getpixel((40, 24)) == (130, 100, 15)  # the mean of the two images
    assert save_init_image(blended, tmp_path / "inputs") == path  # content-addressed: stored once

    model = load_model(str(tiny_models["sd15"]), device="cpu")
    from dataclasses import replace

    profile = replace(model.profile, native=64, steps=4)
    expansion = Expansion(prompts=(WeightedText("a meadow"),), negative=(), images=(f"{server.base}/a.png",),
                          params=Params(iw=1.5, seed=8), source=f"{server.base}/a.png a meadow --iw 1.5")
    request = resolve(expansion, profile=profile, model="tiny", sampler="euler_a", init_image=str(path))
    assert request.strength == pytest.approx(0.65)
    totals: list[int] = []
    images = await asyncio.to_thread(Generator(model).generate, [replace(request, count=2)],
                                     on_step=lambda _, p: totals.append(p.total))
    assert len(images[0]) == 2 and totals[-1] == 2  # int(4 x 0.65) steps of image-to-image
    text_only = Generator(model).generate([replace(request, init_image=None, strength=None, image_prompts=(),
                                                   count=2)])[0]
    assert float(np.abs(np.asarray(images[0][0], dtype=np.int16) - np.asarray(text_only[0])).mean()) > 1


def test_blend_fits_without_distortion() -> None:
    wide = Image.new("RGB", (200, 100), (0, 0, 0))
    wide.paste((255, 255, 255), (50, 0, 150, 100))  # a white centre square
    out = blend_images([Image.new("RGB", (50, 50), (255, 255, 255)), wide])
    assert out.size == (50, 50) and out.getpixel((25, 25)) == (255, 255, 255)
