"""The one checked decoder, directly and through the upload entry (`Tessera.vary_upload`).

Properties: mutated bytes of small valid PNG/JPEG/GIF/WebP files and of TIFF/BMP/EPS files
only ever give an RGB image of bounded size or an `ImageFetchError`; the other formats never
reach their Pillow plugins. Uploads: a 12,000×12,000 PNG (a few KB, 1-bit) is refused before
a pixel is decoded, as are TIFF and EPS files and a PNG whose chunk lengths lie.
"""

from __future__ import annotations

import io
import json
import shutil
import struct
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import EpsImagePlugin, Image, ImageFile

from bot.config import load_settings
from bot.service import Tessera
from engine.errors import ImageFetchError
from engine.imaging.decode import decode_image, read_header
from tests.queue_helpers import FakeExecutor

PIXELS = np.random.default_rng(0).integers(0, 255, (12, 16, 3), dtype=np.uint8)
EPS = (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 16 12\n%%EndComments\n"
       b"newpath 0 0 moveto 16 12 lineto stroke showpage\n%%EOF\n")


def encoded(fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(PIXELS).save(buffer, format=fmt, **options)
    return buffer.getvalue()


ALLOWED = {fmt: encoded(fmt) for fmt in ("PNG", "JPEG", "GIF", "WEBP")}
REFUSED = {"TIFF": encoded("TIFF"), "BMP": encoded("BMP"), "EPS": EPS}


@st.composite
def mutated(draw: st.DrawFn, files: dict[str, bytes]) -> bytes:
    """A file with a few bytes changed, cut short, or with bytes inserted or repeated."""
    data = bytearray(files[draw(st.sampled_from(sorted(files)))])
    for _ in range(draw(st.integers(1, 4))):
        how = draw(st.sampled_from(["set", "cut", "insert", "repeat"]))
        at = draw(st.integers(0, len(data) - 1))
        if how == "set":
            data[at] = draw(st.integers(0, 255))
        elif how == "cut":
            del data[at:]
            if not data:
                data = bytearray(b"\x89")
        elif how == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        else:
            data[at:at] = data[at:at + draw(st.integers(1, 64))]
    return bytes(data)


@pytest.fixture
def eps_opened(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Counts every time Pillow's EPS plugin (which runs Ghostscript) looks at a file."""
    calls: list[int] = []
    original = EpsImagePlugin.EpsImageFile._open

    def spy(self: EpsImagePlugin.EpsImageFile) -> None:
        calls.append(1)
        original(self)

    monkeypatch.setattr(EpsImagePlugin.EpsImageFile, "_open", spy)
    yield calls


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=mutated(ALLOWED))
def test_corrupted_images_give_an_image_or_a_clear_error(data: bytes) -> None:
    try:
        image = decode_image(data, max_side=64)
    except ImageFetchError as error:
        assert "PNG, JPEG, GIF or WebP" in str(error)
    else:
        assert image.mode == "RGB" and 1 <= max(image.size) <= 64


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.one_of(st.sampled_from(sorted(REFUSED.values())), mutated(REFUSED)))
def test_other_formats_never_reach_their_plugins(data: bytes, eps_opened: list[int]) -> None:
    with pytest.raises(ImageFetchError, match="not a PNG, JPEG, GIF or WebP image"):
        decode_image(data)
    assert not eps_opened


def test_large_images_are_decoded_small() -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (4096, 3072), (20, 40, 60)).save(buffer, format="JPEG", quality=80)
    image = decode_image(buffer.getvalue(), max_side=1024)
    assert image.size == (1024, 768) and image.getpixel((5, 5)) == pytest.approx((20, 40, 60), abs=3)
    assert read_header(buffer.getvalue(), max_bytes=10**7, max_pixels=10**8) == (4096, 3072)


@pytest.fixture(scope="module")
def small_model(tiny_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("model") / "sd15"
    shutil.copytree(tiny_models["sd15"], folder)
    (folder / "tessera.json").write_text(json.dumps({"native": 128, "steps": 2, "guidance": 5.0}))
    return folder


@pytest.fixture
async def service(data_dir: Path, small_model: Path) -> AsyncIterator[Tessera]:
    settings = load_settings(model_id=str(small_model), device="cpu", data_dir=data_dir)
    service = await Tessera.start(settings, executor=FakeExecutor())
    yield service
    await service.close()


def huge_png() -> bytes:
    """12,000×12,000 pixels in a few KB: one bit per pixel, all zero, compresses ~1000:1."""
    buffer = io.BytesIO()
    Image.new("1", (12_000, 12_000)).save(buffer, format="PNG")
    return buffer.getvalue()


def lying_png() -> bytes:
    """A PNG whose image-data chunk claims 20 bytes fewer than it has (Pillow: SyntaxError)."""
    data = bytearray(encoded("PNG"))
    at = data.index(b"IDAT")
    (length,) = struct.unpack(">I", data[at - 4:at])
    data[at - 4:at] = struct.pack(">I", length - 20)
    return bytes(data)


async def test_uploads_go_through_the_checked_decoder(service: Tessera, monkeypatch: pytest.MonkeyPatch) -> None:
    loads: list[tuple[int, int]] = []
    original = ImageFile.ImageFile.load

    def counted(self: ImageFile.ImageFile) -> object:
        loads.append(self.size)
        return original(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", counted)
    huge = huge_png()
    assert len(huge) < 100_000
    with pytest.raises(ImageFetchError, match="12,000×12,000 pixels; use a PNG, JPEG, GIF or WebP file"):
        await service.vary_upload(user_id=1, image_bytes=huge)
    assert loads == []  # refused on the header, before decoding
    for data, words in ((REFUSED["TIFF"], "not a PNG"), (EPS, "not a PNG"), (lying_png(), "damaged")):
        with pytest.raises(ImageFetchError, match=words):
            await service.vary_upload(user_id=1, image_bytes=data)


async def test_a_large_upload_is_stored_reduced(service: Tessera) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (5000, 2500), (90, 30, 200)).save(buffer, format="PNG")
    job = await service.vary_upload(user_id=2, image_bytes=buffer.getvalue())
    stored = Image.open(job.options["upload"])
    assert stored.size == (1667, 834) and stored.getpixel((3, 3)) == (90, 30, 200)


@pytest.fixture
async def bot(tiny_models: dict[str, Path], data_dir: Path) -> AsyncIterator[Any]:
    from tests.bot_helpers import start_bot

    running = await start_bot(tiny_models["sd15"], data_dir)
    yield running
    await running.close()


async def test_hostile_uploads_through_discord_are_answered_privately(bot: Any,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Raw `/variation image:` payloads: a 12,000² PNG and a TIFF that says it is a PNG."""
    served: dict[str, bytes] = {"huge.png": huge_png(), "photo.png": REFUSED["TIFF"]}

    async def from_cdn(url: str) -> bytes:  # attachments are downloaded from Discord's CDN
        return served[url.rsplit("/", 1)[1]]

    monkeypatch.setattr(bot.h.client.http, "get_from_cdn", from_cdn)
    for name, words in (("huge.png", "12,000×12,000 pixels"), ("photo.png", "not a PNG, JPEG, GIF or WebP image")):
        attachment = {"filename": name, "size": len(served[name]), "content_type": "image/png",
                      "url": f"https://cdn.discordapp.com/attachments/1/2/{name}",
                      "proxy_url": f"https://media.discordapp.net/attachments/1/2/{name}"}
        interaction = await bot.h.run_command("variation", {}, attachments={"image": attachment})
        last = bot.http.for_token(interaction.token)[-1]
        assert last.ephemeral and words in last.content and "megapixels" in last.content, last.content
    assert await bot.jobs() == []
