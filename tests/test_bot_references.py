"""`/imagine`'s `sref` and `cref` attachments (issue 17): a picture attached as `sref` or `cref`
acts exactly like a `--sref` / `--cref` link, through raw Interaction payloads
(tests/discord_harness.py) with the real service and the tiny SD 1.5 model and IP-Adapter.

An attachment's URL is where Discord's CDN serves it; here it is a loopback HTTP server this
test starts (and stops), allowed with IMAGE_FETCH_ALLOWED_HOSTS / IMAGE_FETCH_PORTS as an
operator would allow an internal host, so the pictures take the real guarded fetch path.
"""

from __future__ import annotations

import io
import json
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from engine.imaging.metadata import read_metadata
from engine.jobs.model import JobKind, JobState
from tests.bot_helpers import Bot, start_bot
from tests.discord_harness import OTHER_USER_ID, Call, message_with

MAX_BYTES = 200_000  # IMAGE_PROMPT_MAX_BYTES here: small, so "oversize" is cheap to declare


def png(seed: int, size: tuple[int, int] = (40, 32)) -> bytes:
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8), "RGB").save(buffer, "PNG")
    return buffer.getvalue()


class Pictures:
    """A loopback server for the attachments and links, counting each path it served."""

    def __init__(self) -> None:
        self.files = {f"/{i}.png": png(i) for i in range(4)}
        self.hits: list[str] = []
        pictures = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                pictures.hits.append(self.path)
                data = pictures.files.get(self.path)
                self.send_response(200 if data else 404)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(len(data or b"")))
                self.end_headers()
                self.wfile.write(data or b"")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def attach(self, name: str, *, content_type: str = "image/png", size: int | None = None) -> dict[str, Any]:
        """An attachment as Discord resolves it in a command's payload."""
        data = self.files.get(f"/{name}", b"")
        return {"filename": name, "size": len(data) if size is None else size, "content_type": content_type,
                "url": self.url(name), "proxy_url": self.url(name)}

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def pictures() -> Iterator[Pictures]:
    served = Pictures()
    try:
        yield served
    finally:
        served.close()


def model_folder(tiny_models: dict[str, Path], data_dir: Path) -> Path:
    folder = data_dir.parent / "tiny-sd15"
    if not folder.exists():
        folder.mkdir()
        for child in tiny_models["sd15"].iterdir():
            (folder / child.name).symlink_to(child)
        (folder / "tessera.json").write_text(json.dumps({"native": 64, "steps": 2, "guidance": 6}))
    return folder


async def start(tiny_models: dict[str, Path], data_dir: Path, pictures: Pictures, *, executor: Any = None,
                **settings: Any) -> Bot:
    options: dict[str, Any] = {"ip_adapter_repo": str(tiny_models["ip_adapter"]), "image_prompt_max_bytes": MAX_BYTES,
                               "image_fetch_allowed_hosts": ["127.0.0.1"], "image_fetch_ports": [pictures.port]}
    options.update(settings)
    return await start_bot(model_folder(tiny_models, data_dir), data_dir, executor=executor, **options)


@pytest.fixture
async def bot(tiny_models: dict[str, Path], data_dir: Path, pictures: Pictures) -> AsyncIterator[Bot]:
    running = await start(tiny_models, data_dir, pictures)
    yield running
    await running.close()


def refused(bot: Bot, token: str, *words: str) -> None:
    """Told privately, with these words, and nothing public left behind."""
    said = [c for c in bot.http.for_token(token) if c.content]
    assert said and said[-1].ephemeral, said
    for word in words:
        assert word in (said[-1].content or ""), said[-1].content
    assert [c for c in said if not c.ephemeral] == []


def final_grid(calls: list[Call]) -> Call:
    return [c for c in calls if c.files][-1]


# ----- the pictures act as links ---------------------------------------------------------------------


async def test_sref_attachment_joins_the_links_and_the_job_and_its_reroll_finish_with_the_tiny_adapter(
        tiny_models: dict[str, Path], data_dir: Path, pictures: Pictures) -> None:
    """The real engine (tiny SD 1.5 + tiny IP-Adapter on the CPU): the attached picture is a
    style reference after the typed link, `--sw` weighs both, the PNGs record both, the text
    stored is what the member typed, and 🔄 keeps the references."""
    import torch

    from bot.config import load_settings
    from engine.jobs.executor import EngineExecutor

    torch.set_num_threads(1)
    folder = model_folder(tiny_models, data_dir)
    executor = EngineExecutor.from_settings(load_settings(model_id=str(folder), device="cpu", data_dir=data_dir,
                                                          ip_adapter_repo=str(tiny_models["ip_adapter"])))
    bot = await start(tiny_models, data_dir, pictures, executor=executor)
    try:
        typed = f"a red lighthouse --seed 5 --sref {pictures.url('0.png')} --sw 300"
        interaction = await bot.h.run_command("imagine", {"prompt": typed}, attachments={"sref": pictures.attach("1.png")})
        job = await bot.only_job()
        assert job.prompt_text == typed  # the attachment is not pasted into the member's text
        request = job.request_json or {}
        assert request["style_urls"] == [pictures.url("0.png"), pictures.url("1.png")]
        assert request["style_weight"] == 300 and request["ignored"] == []  # --sw is applied, not ignored
        assert request["character_refs"] == [] and len(request["style_refs"]) == 2
        assert all(Path(p).parent == bot.service.inputs_dir.resolve() and Path(p).is_file()
                   for p in request["style_refs"])
        assert sorted(pictures.hits) == ["/0.png", "/1.png"]
        done = await bot.finished(job.id)
        assert done.state is JobState.DONE, done.error
        records = await bot.service.storage.images.for_job(job.id)
        meta = read_metadata(records[0].path)["tessera"]["request"]
        assert meta["style_urls"] == request["style_urls"] and len(meta["style_refs_sha256"]) == 2

        grid = message_with(final_grid(bot.http.for_token(interaction.token)))
        await bot.h.press(f"tessera:reroll:{job.id}:0", grid, user_id=OTHER_USER_ID)
        (again,) = await bot.jobs(OTHER_USER_ID)
        rerolled = again.request_json or {}
        assert again.kind is JobKind.REROLL and rerolled["seed"] != request["seed"]
        assert (rerolled["style_refs"], rerolled["style_urls"], rerolled["style_weight"]) == \
            (request["style_refs"], request["style_urls"], 300)
        assert sorted(pictures.hits) == ["/0.png", "/1.png"]  # the stored copies are used, not fetched again
        finished = await bot.finished(again.id)
        assert finished.state is JobState.DONE, finished.error
    finally:
        await bot.close()


async def test_cref_attachment_is_a_character_reference_weighed_by_cw(bot: Bot, pictures: Pictures) -> None:
    interaction = await bot.h.run_command("imagine", {"prompt": "a knight in armour --cw 20"},
                                          attachments={"cref": pictures.attach("2.png")})
    job = await bot.only_job()
    request = job.request_json or {}
    assert job.prompt_text == "a knight in armour --cw 20"
    assert request["character_urls"] == [pictures.url("2.png")] and len(request["character_refs"]) == 1
    assert Path(request["character_refs"][0]).is_file()
    assert request["character_weight"] == 20 and request["ignored"] == [] and request["style_refs"] == []
    assert pictures.hits == ["/2.png"]
    assert (await bot.finished(job.id)).state is JobState.DONE
    assert not final_grid(bot.http.for_token(interaction.token)).ephemeral


async def test_iw_weighs_an_attached_image_prompt_and_is_not_said_to_be_ignored(bot: Bot, pictures: Pictures) -> None:
    await bot.h.run_command("imagine", {"prompt": "a lighthouse --iw 2"}, attachments={"image": pictures.attach("3.png")})
    job = await bot.only_job()
    request = job.request_json or {}
    assert request["image_weight"] == 2 and request["strength"] < 0.6 and request["ignored"] == []
    assert (await bot.finished(job.id)).state is JobState.DONE


async def test_confirmation_keeps_the_attachments(bot: Bot, pictures: Pictures) -> None:
    interaction = await bot.h.run_command("imagine", {"prompt": "a {red, blue, green} car --repeat 2"},
                                          attachments={"sref": pictures.attach("1.png"),
                                                       "cref": pictures.attach("2.png")})
    ask = bot.http.for_token(interaction.token)[-1]
    assert ask.ephemeral and "6 jobs" in (ask.content or "") and await bot.jobs() == []
    assert pictures.hits == []  # nothing fetched before the member confirms
    await bot.h.press(ask.custom_ids[0], message_with(ask))
    jobs = await bot.jobs()
    assert len(jobs) == 6
    for job in jobs:
        request = job.request_json or {}
        assert request["style_urls"] == [pictures.url("1.png")] and len(request["style_refs"]) == 1
        assert request["character_urls"] == [pictures.url("2.png")] and len(request["character_refs"]) == 1
    assert sorted(pictures.hits) == ["/1.png", "/2.png"]  # one fetch each, shared by the six jobs
    for job in jobs:
        await bot.finished(job.id)


# ----- refusals, before any work ---------------------------------------------------------------------


async def test_a_non_image_or_oversize_attachment_is_refused_before_anything(bot: Bot, pictures: Pictures) -> None:
    text = await bot.h.run_command("imagine", {"prompt": "a cat"},
                                   attachments={"sref": pictures.attach("notes.txt", content_type="text/plain")})
    refused(bot, text.token, "`notes.txt` is not an image", "PNG")
    big = await bot.h.run_command("imagine", {"prompt": "a cat"},
                                  attachments={"cref": pictures.attach("0.png", size=MAX_BYTES + 1)})
    refused(bot, big.token, "`0.png` is", "at most")
    for token in (text.token, big.token):  # answered at once, privately: never deferred in public
        assert bot.http.for_token(token)[0].callback_type == 4
    assert pictures.hits == [] and await bot.jobs() == []


async def test_links_and_attachments_count_together_against_the_picture_cap(
        tiny_models: dict[str, Path], data_dir: Path, pictures: Pictures) -> None:
    bot = await start(tiny_models, data_dir, pictures, prompt_max_images=3)
    try:
        links = f"--sref {pictures.url('0.png')} --cref {pictures.url('3.png')}"
        over = await bot.h.run_command("imagine", {"prompt": f"a cat {links}"},
                                       attachments={"sref": pictures.attach("1.png"), "cref": pictures.attach("2.png")})
        refused(bot, over.token, "4 pictures to fetch", "the most is 3")
        assert pictures.hits == [] and await bot.jobs() == []
        await bot.h.run_command("imagine", {"prompt": f"a cat {links}"}, attachments={"sref": pictures.attach("1.png")})
        job = await bot.only_job()  # three pictures: allowed
        assert len((job.request_json or {})["style_refs"]) == 2 and len(pictures.hits) == 3
        await bot.finished(job.id)
    finally:
        await bot.close()


async def test_without_ip_adapter_an_attached_sref_gets_the_sref_message(
        tiny_models: dict[str, Path], data_dir: Path, pictures: Pictures) -> None:
    bot = await start(tiny_models, data_dir, pictures, ip_adapter_repo="")
    try:
        attached = await bot.h.run_command("imagine", {"prompt": "a cat"}, attachments={"sref": pictures.attach("1.png")})
        typed = await bot.h.run_command("imagine", {"prompt": f"a cat --sref {pictures.url('1.png')}"})
        said = [[c for c in bot.http.for_token(t) if c.content][-1] for t in (attached.token, typed.token)]
        assert said[0].ephemeral and said[0].content == said[1].content
        assert "--sref needs IP-Adapter weights" in (said[0].content or "") and "IP_ADAPTER_REPO" in (said[0].content or "")
        assert pictures.hits == [] and await bot.jobs() == []
    finally:
        await bot.close()


async def test_an_attachment_address_that_would_read_back_differently_is_refused(bot: Bot, pictures: Pictures) -> None:
    odd = dict(pictures.attach("1.png"), url=pictures.url("1.png") + "::2")  # "::2" would read as a weight
    interaction = await bot.h.run_command("imagine", {"prompt": "a cat"}, attachments={"sref": odd})
    refused(bot, interaction.token, "attached as `sref`")
    assert pictures.hits == [] and await bot.jobs() == []
