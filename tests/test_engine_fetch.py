"""Image prompts fetched from a local HTTP server: good image, 404, non-image, oversize, slow, broken.

The fetched image then drives image-to-image on the tiny SD 1.5 model, as `/imagine URL text` does.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
from aiohttp import web
from PIL import Image

from engine.errors import ImageFetchError
from engine.imagefetch import blend_images, decode_image, fetch_image, fetch_init_image, save_init_image

MAX = 200_000


def png_bytes(size: tuple[int, int] = (80, 48), color: tuple[int, int, int] = (10, 200, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
async def server() -> AsyncIterator[str]:
    async def good(_: web.Request) -> web.Response:
        return web.Response(body=png_bytes(), content_type="image/png")

    async def second(_: web.Request) -> web.Response:
        return web.Response(body=png_bytes((40, 40), (250, 0, 0)), content_type="image/png")

    async def html(_: web.Request) -> web.Response:
        return web.Response(text="<html>not an image</html>", content_type="text/html")

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
        await asyncio.sleep(5)
        return web.Response(body=png_bytes(), content_type="image/png")

    app = web.Application()
    for path, handler in {"/a.png": good, "/b.png": second, "/page.png": html, "/big.png": big,
                          "/stream.png": streamed, "/broken.png": garbage, "/slow.png": slow}.items():
        app.router.add_get(path, handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def test_a_good_image_is_fetched_and_decoded(server: str) -> None:
    image = await fetch_image(f"{server}/a.png", max_bytes=MAX, timeout_s=5)
    assert image.size == (80, 48) and image.mode == "RGB" and image.getpixel((0, 0)) == (10, 200, 30)


@pytest.mark.parametrize(("path", "message"), [
    ("/missing.png", "HTTP 404"),
    ("/page.png", "is not an image"),
    ("/big.png", "at most"),
    ("/stream.png", "larger than"),
    ("/broken.png", "could not be read as an image"),
])
async def test_bad_image_prompts_are_clear_errors(server: str, path: str, message: str) -> None:
    with pytest.raises(ImageFetchError, match=message):
        await fetch_image(f"{server}{path}", max_bytes=MAX, timeout_s=5)


async def test_slow_servers_and_bad_urls(server: str) -> None:
    with pytest.raises(ImageFetchError, match=r"longer than 0\.3 s"):
        await fetch_image(f"{server}/slow.png", max_bytes=MAX, timeout_s=0.3)
    with pytest.raises(ImageFetchError, match="http"):
        await fetch_image("file:///etc/passwd", max_bytes=MAX, timeout_s=1)
    with pytest.raises(ImageFetchError, match="could not fetch"):
        await fetch_image("http://127.0.0.1:1/x.png", max_bytes=MAX, timeout_s=2)


def test_decoded_pixel_limits() -> None:
    buffer = io.BytesIO()
    Image.new("L", (8000, 6000)).save(buffer, format="PNG")  # 48 MP, a few KB compressed
    with pytest.raises(ImageFetchError, match="pixels"):
        decode_image(buffer.getvalue())
    buffer = io.BytesIO()
    Image.new("RGB", (10, 10)).save(buffer, format="BMP")
    with pytest.raises(ImageFetchError, match="BMP"):
        decode_image(buffer.getvalue())


async def test_image_prompt_drives_image_to_image(server: str, tmp_path: Path, tiny_models: dict[str, Path]) -> None:
    from engine.generate import Generator
    from engine.models import load_model
    from engine.prompt import Expansion, Params, WeightedText
    from engine.request import resolve

    path = await fetch_init_image([f"{server}/a.png", f"{server}/b.png"], tmp_path / "inputs", max_bytes=MAX,
                                  timeout_s=5)
    blended = Image.open(path)
    assert blended.size == (80, 48)
    assert blended.getpixel((40, 24)) == (130, 100, 15)  # the mean of the two images
    assert save_init_image(blended, tmp_path / "inputs") == path  # content-addressed: stored once

    model = load_model(str(tiny_models["sd15"]), device="cpu")
    from dataclasses import replace

    profile = replace(model.profile, native=64, steps=4)
    expansion = Expansion(prompts=(WeightedText("a meadow"),), negative=(), images=(f"{server}/a.png",),
                          params=Params(iw=1.5, seed=8), source=f"{server}/a.png a meadow --iw 1.5")
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
