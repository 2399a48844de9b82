"""The editing buttons under an upscale (issue 16, Discord part): Zoom Out 2× / 1.5× / Custom Zoom,
⬅️ ➡️ ⬆️ ⬇️ Pan, Make Square, Vary (Region) with its picker and forms, and `/edit`.

The first tests run the real service with the fast fake executor (what a user is told, who may
press what, what is stored); the last ones run the tiny SD 1.5 model, the tiny Real-ESRGAN and
the tiny CLIPSeg on the CPU and check the pixels, across a restart of the bot.
"""

from __future__ import annotations

import io
import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from bot.client import TesseraClient
from bot.web.pages import share_page
from engine.diffusion.segment import Segmenter
from engine.imaging.canvas import feather_for, fit_source, grow
from engine.jobs.model import Job, JobKind, JobState
from tests.bot_helpers import Bot, start_bot
from tests.discord_harness import CHANNEL_ID, GUILD_ID, OTHER_USER_ID, USER_ID, Call, message_with
from tests.test_bot import final_edit, imagine

EDIT_ROWS = ["region", "zoom2", "zoom15", "zoomc", "square", "panl", "panr", "panu", "pand"]


def edit_ids(job_id: str, *, square: bool = True) -> list[str]:
    return [f"tessera:{action}:{job_id}:0" for action in EDIT_ROWS if square or action != "square"]


async def upscaled(bot: Bot, prompt: str) -> tuple[Job, dict]:
    """/imagine, then U1: (the upscale job, its result message as Discord would send it back)."""
    token, job_id = await imagine(bot, prompt)
    grid = message_with(final_edit(bot.http.for_token(token)))
    pressed = await bot.h.press(f"tessera:upscale:{job_id}:0", grid)
    upscale = (await bot.jobs())[0]
    await bot.finished(upscale.id)
    return upscale, message_with(final_edit(bot.http.for_token(pressed)))


async def newest(bot: Bot, kind: JobKind = JobKind.EDIT) -> Job:
    job = (await bot.jobs())[0]
    assert job.kind is kind, job
    return await bot.finished(job.id)


def answers(bot: Bot, token: str) -> list[Call]:
    return [c for c in bot.http.for_token(token) if c.content]


async def submit_form(bot: Bot, modal: Call, values: dict[str, str], *, user_id: int = USER_ID) -> str:
    """Submit the form the bot opened (callback type 9) with `values` by text-input custom_id."""
    data = modal.json["data"]  # type: ignore[index]
    inputs = []
    for component in data["components"]:
        inner = component.get("component") or component["components"][0]
        value = values.get(inner["custom_id"], inner.get("value", ""))
        inputs.append({"type": 18, "id": 1, "component": {"type": 4, "id": 2, "custom_id": inner["custom_id"],
                                                          "value": value}})
    payload = bot.h._base(user_id=user_id, permissions=0, channel_id=CHANNEL_ID, guild_id=GUILD_ID)
    payload.update(type=5, data={"custom_id": data["custom_id"], "components": inputs})
    bot.h.client._connection.parse_interaction_create(payload)  # type: ignore[arg-type]
    await bot.h.settle()
    return str(payload["token"])


def the_modal(bot: Bot, token: str) -> Call:
    (modal,) = [c for c in bot.http.for_token(token) if c.callback_type == 9]
    return modal


def fields_of(modal: Call) -> dict[str, dict]:
    return {(c.get("component") or c["components"][0])["custom_id"]: (c.get("component") or c["components"][0])
            for c in modal.json["data"]["components"]}  # type: ignore[index]


# ----- the layout -------------------------------------------------------------------------------------------------


def test_an_upscale_carries_the_edit_rows_and_make_square_only_when_not_square() -> None:
    buttons = TesseraClient(None, sync_commands=False).buttons
    wide = buttons.result_view("upscale", "k3m9qra", (768, 432)).to_components()
    square = buttons.result_view("upscale", "k3m9qra", (512, 512)).to_components()
    assert len(wide) == len(square) == 4  # Discord allows 5 rows
    assert [b["custom_id"] for row in wide[2:] for b in row["components"]] == edit_ids("k3m9qra")
    assert [b["custom_id"] for row in square[2:] for b in row["components"]] == edit_ids("k3m9qra", square=False)
    labels = [b.get("label") or b["emoji"]["name"] for b in wide[2]["components"] + wide[3]["components"]]
    assert labels == ["Vary (Region)", "Zoom Out 2×", "Zoom Out 1.5×", "Custom Zoom", "Make Square",
                      "⬅️", "➡️", "⬆️", "⬇️"]
    assert all(len(b["custom_id"]) <= 100 for row in wide for b in row["components"])
    grid = buttons.result_view("edit", "k3m9qra").to_components()  # an edit's result is a grid: U1–U4 / V1–V4 / 🔄
    assert [b["custom_id"] for b in grid[0]["components"]][:1] == ["tessera:upscale:k3m9qra:0"]


async def test_every_edit_custom_id_is_claimed_by_exactly_one_item() -> None:
    client = TesseraClient(None, sync_commands=False)
    await client.prepare()
    patterns = list(client._connection._view_store._dynamic_items)
    ids = [*edit_ids("k3m9qra"), "tessera-r:cells:k3m9qra:0", "tessera-r:go:k3m9qra:0:a1b2",
           "tessera-r:ask:k3m9qra:0:c3", "tessera-r:where:k3m9qra:0"]
    for custom_id in ids:
        assert len([p for p in patterns if p.fullmatch(custom_id)]) == 1, custom_id


# ----- with the fast executor: answers, refusals, who may press -----------------------------------------------------


@pytest.fixture
async def bot(tiny_models: dict[str, Path], data_dir: Path) -> AsyncIterator[Bot]:
    running = await start_bot(tiny_models["sd15"], data_dir)
    yield running
    await running.close()


async def test_zoom_pan_and_square_buttons_start_edits_titled_and_traced(bot: Bot) -> None:
    upscale, message = await upscaled(bot, "a lighthouse at dusk --ar 16:9")
    ids = [b["custom_id"] for row in message["components"] for b in row["components"]]
    assert ids[5:] == edit_ids(upscale.id)  # wide: Make Square is there

    for action, options, title in [("zoom2", {"edit": "zoom", "factor": 2.0}, "Zoom Out 2×"),
                                   ("zoom15", {"edit": "zoom", "factor": 1.5}, "Zoom Out 1.5×"),
                                   ("panl", {"edit": "pan", "direction": "left"}, "Pan ⬅️"),
                                   ("pand", {"edit": "pan", "direction": "down"}, "Pan ⬇️"),
                                   ("square", {"edit": "square"}, "Make Square")]:
        token = await bot.h.press(f"tessera:{action}:{upscale.id}:0", message)
        edit = await newest(bot)
        assert edit.state is JobState.DONE, edit.error
        assert (edit.parent_id, edit.parent_index, edit.user_id) == (upscale.id, 0, USER_ID)
        assert {k: edit.options[k] for k in options} == options
        final = final_edit(bot.http.for_token(token))
        assert f"{title} by <@{USER_ID}>" in final.content
        assert final.custom_ids[:4] == [f"tessera:upscale:{edit.id}:{i}" for i in range(4)]  # a new grid
        assert len(await bot.service.images(edit.id)) == 4

    seed = await bot.h.run_command("seed", {"job": edit.id})
    (shown,) = answers(bot, seed.token)
    assert shown.ephemeral and f"made by: Make Square of job `{upscale.id}` image 1" in shown.content

    entry = await bot.service.storage.gallery.share(edit.id, 2, author_id=USER_ID, title=None, guild_id=GUILD_ID,
                                                    prompt_text=edit.prompt_text)
    details = await bot.service.storage.gallery.share_details(entry.id, bot.service.settings.data_dir)
    assert details is not None
    page = share_page(details, home="/")
    assert f"Job {edit.id}: Make Square of image 1 of job {upscale.id}" in page


async def test_strangers_and_dms_are_refused_before_anything_is_shown(bot: Bot) -> None:
    upscale, message = await upscaled(bot, "a lighthouse --ar 16:9")
    for action in ("zoom2", "panr", "square", "zoomc", "region"):
        token = await bot.h.press(f"tessera:{action}:{upscale.id}:0", message, user_id=OTHER_USER_ID, guild_id=None)
        calls = bot.http.for_token(token)
        assert not [c for c in calls if c.callback_type == 9 or c.files], (action, calls)  # no form, no preview
        (told,) = answers(bot, token)
        assert told.ephemeral and "not" in told.content.lower(), told.content
    assert [j.kind for j in await bot.jobs()] == [JobKind.UPSCALE, JobKind.IMAGINE]


async def test_custom_zoom_form_prefills_the_prompt_and_refuses_a_bad_zoom(bot: Bot) -> None:
    upscale, message = await upscaled(bot, "a lighthouse at dusk")
    token = await bot.h.press(f"tessera:zoomc:{upscale.id}:0", message)
    modal = the_modal(bot, token)
    fields = fields_of(modal)
    assert fields["prompt"]["value"] == "a lighthouse at dusk" and fields["prompt"]["max_length"] == 1000
    assert fields["zoom"]["value"] == "2" and fields["zoom"]["max_length"] <= 8

    for bad in ("3", "zero", "nan"):
        told = await submit_form(bot, modal, {"zoom": bad})
        (answer,) = answers(bot, told)
        assert answer.ephemeral and "1.0 to 2.0" in answer.content, answer.content
    assert len(await bot.jobs()) == 2  # nothing queued

    await submit_form(bot, modal, {"zoom": "1.25", "prompt": "a lighthouse at dusk, ships --ar 2:1"})
    edit = await newest(bot)
    assert edit.options["factor"] == 1.25 and edit.prompt_text == "a lighthouse at dusk, ships --ar 2:1"
    request = edit.request_json or {}
    assert abs(request["width"] / request["height"] - 2) < 0.2  # --ar in the edited prompt reshapes the canvas
    assert (upscale_source := await bot.service.images(upscale.parent_id or ""))[0].width == upscale_source[0].height


async def test_region_picker_preview_menu_and_its_refusals(bot: Bot) -> None:
    upscale, message = await upscaled(bot, "a lighthouse at dusk")
    token = await bot.h.press(f"tessera:region:{upscale.id}:0", message)
    (picker,) = [c for c in bot.http.for_token(token) if c.files]
    assert picker.ephemeral
    (name, data), = picker.files
    preview = Image.open(io.BytesIO(data))
    assert name == "cells.jpg" and preview.format == "JPEG" and max(preview.size) <= 384
    select = picker.body["components"][0]["components"][0]
    assert select["type"] == 3 and [o["value"] for o in select["options"]][:3] == ["a1", "b1", "c1"]
    assert select["max_values"] == 9
    assert picker.custom_ids == [f"tessera-r:cells:{upscale.id}:0", f"tessera-r:go:{upscale.id}:0",
                                 f"tessera-r:ask:{upscale.id}:0", f"tessera-r:where:{upscale.id}:0"]
    buttons = picker.body["components"][1]["components"]
    assert [b.get("disabled", False) for b in buttons] == [True, True, False]  # Repaint waits for cells

    shown = message_with(picker)
    for values in (["a1", "z9"], ["x" * 90]):
        refused = await bot.h.press(f"tessera-r:cells:{upscale.id}:0", shown, component_type=3, values=values)
        (answer,) = answers(bot, refused)
        assert answer.ephemeral and "cell" in answer.content.lower()
    early = await bot.h.press(f"tessera-r:go:{upscale.id}:0", shown)  # a crafted press on the greyed-out button
    assert "Pick the cells" in answers(bot, early)[0].content
    assert len(await bot.jobs()) == 2

    described = await bot.h.press(f"tessera-r:where:{upscale.id}:0", shown)
    fields = fields_of(the_modal(bot, described))
    assert fields["where"]["max_length"] == 200 and fields["prompt"]["value"] == "a lighthouse at dusk"
    empty = await submit_form(bot, the_modal(bot, described), {"where": "   "})
    assert "Describe the region" in answers(bot, empty)[0].content


async def test_edit_commands_take_grids_and_upscales_and_say_what_is_missing(bot: Bot) -> None:
    _token, job_id = await imagine(bot, "a lighthouse --ar 16:9")
    asked = await bot.h.run_command("edit", {"job": job_id}, subcommand="zoom")
    assert "index" in answers(bot, asked.token)[-1].content
    both = await bot.h.run_command("edit", {"job": job_id, "index": 1, "cells": "a1", "where": "the sky"},
                                   subcommand="region")
    assert "exactly one way" in answers(bot, both.token)[-1].content
    await bot.h.run_command("edit", {"job": job_id, "index": 2, "direction": "up"}, subcommand="pan")
    pan = await newest(bot)
    assert (pan.parent_index, pan.options["direction"]) == (1, "up")
    await bot.h.run_command("edit", {"job": job_id, "index": 3, "cells": "b2,c3", "prompt": "a red door"},
                            subcommand="region")
    region = await newest(bot)
    assert region.options["cells"] == "b2,c3" and region.prompt_text == "a red door"


# ----- with the tiny models: the pixels, across a restart ----------------------------------------------------------


@pytest.fixture
def engine_bot_args(tiny_models: dict[str, Path], tmp_path: Path) -> dict[str, Any]:
    """MODEL_ID: the tiny SD 1.5 at 128² native, 2 steps; the tiny Real-ESRGAN; the tiny CLIPSeg."""
    folder = tmp_path / "sd15"
    shutil.copytree(tiny_models["sd15"], folder)
    (folder / "tessera.json").write_text(json.dumps({"native": 128, "steps": 2, "guidance": 5.0}))
    weights = tmp_path / "weights"
    weights.mkdir()
    shutil.copy(tiny_models["x4"], weights / "RealESRGAN_x4plus.pth")
    return {"model": folder, "weights": weights, "segment": str(tiny_models["clipseg"])}


async def engine_bot(args: dict[str, Any], data_dir: Path) -> Bot:
    from engine.jobs.executor import EngineExecutor

    executor = EngineExecutor(str(args["model"]), device="cpu", dtype="float32", weights_dir=args["weights"])
    return await start_bot(args["model"], data_dir, executor=executor, upscaler_weights_dir=args["weights"],
                           segment_model_id=args["segment"])


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.int16)


async def source_of(bot: Bot, upscale: Job) -> np.ndarray:
    """The picture the edits start from: the upscale brought back to its grid image's size."""
    (record,) = await bot.service.images(upscale.id)
    parent = (await bot.service.images(upscale.parent_id or ""))[0]
    with Image.open(record.path) as image:
        return np.asarray(fit_source(image, parent.width, parent.height), dtype=np.int16)


async def test_zoom_pan_and_square_after_a_restart_on_the_tiny_model(engine_bot_args: dict[str, Any],
                                                                      data_dir: Path) -> None:
    first = await engine_bot(engine_bot_args, data_dir)
    try:
        upscale, message = await upscaled(first, "a lighthouse on a cliff --ar 16:9 --seed 5")
        source = await source_of(first, upscale)
    finally:
        await first.close()
    height, width = source.shape[:2]
    assert width > height  # 16:9 at the tiny model's 128² native size: 192x128

    bot = await engine_bot(engine_bot_args, data_dir)  # a new process: the buttons are read back from their ids
    try:
        await bot.h.press(f"tessera:zoom2:{upscale.id}:0", message)
        zoom = await newest(bot)
        assert zoom.state is JobState.DONE, zoom.error
        records = await bot.service.images(zoom.id)
        assert len(records) == 4 and {(r.width, r.height) for r in records} == {(width, height)}
        inner = (round(width / 2), round(height / 2))  # the original, at half its size, in the middle
        centre = np.asarray(Image.fromarray(source.astype(np.uint8)).resize(inner, Image.Resampling.LANCZOS),
                            dtype=np.int16)
        left, top = (width - inner[0]) // 2, (height - inner[1]) // 2
        band = feather_for(width, height)
        for record in records:
            out = pixels(record.path)
            kept = out[top + band:top + inner[1] - band, left + band:left + inner[0] - band]
            assert np.abs(kept - centre[band:inner[1] - band, band:inner[0] - band]).max() <= 2
            assert np.abs(out[:, :left - band] - source[:, :left - band]).mean() > 3  # the border is new

        await bot.h.press(f"tessera:panl:{upscale.id}:0", message)
        pan = await newest(bot)
        for record in await bot.service.images(pan.id):
            out = pixels(record.path)
            grown = out.shape[1]
            assert out.shape[0] == height and grown > width  # wider, as tall
            band = feather_for(grown, height)
            assert np.abs(out[:, grown - width + band:] - source[:, band:]).max() <= 1  # the source's pixels, kept
            assert np.abs(out[:, :grown - width - band] - source[:, :grown - width - band]).mean() > 3

        await bot.h.press(f"tessera:square:{upscale.id}:0", message)
        square = await newest(bot)
        assert {(r.width, r.height) for r in await bot.service.images(square.id)} == {(width, width)}
    finally:
        await bot.close()


async def test_vary_region_by_cells_and_by_words_after_a_restart(engine_bot_args: dict[str, Any],
                                                                 data_dir: Path) -> None:
    first = await engine_bot(engine_bot_args, data_dir)
    try:
        upscale, message = await upscaled(first, "a lighthouse at dusk --seed 7")
        token = await first.h.press(f"tessera:region:{upscale.id}:0", message)
        (picker,) = [c for c in first.http.for_token(token) if c.files]
        shown = message_with(picker)
        source = await source_of(first, upscale)
    finally:
        await first.close()

    bot = await engine_bot(engine_bot_args, data_dir)  # the picker outlives the process that drew it
    try:
        picked = await bot.h.press(f"tessera-r:cells:{upscale.id}:0", shown, component_type=3, values=["b1", "a1"])
        (update,) = bot.http.for_token(picked)
        assert update.callback_type == 7  # the picker, re-drawn with the choice in the buttons
        assert f"tessera-r:go:{upscale.id}:0:a1b1" in update.custom_ids
        chosen = [o["value"] for o in update.body["components"][0]["components"][0]["options"] if o.get("default")]
        assert chosen == ["a1", "b1"]
        await bot.h.press(f"tessera-r:go:{upscale.id}:0:a1b1", {**shown, "components": update.body["components"]})
        by_cells = await newest(bot)
        height, width = source.shape[:2]
        region = Image.new("L", (width, height), 0)
        region.paste(255, (0, 0, round(2 * width / 3), round(height / 3)))

        described = await bot.h.press(f"tessera-r:where:{upscale.id}:0", shown)
        await submit_form(bot, the_modal(bot, described), {"where": "the sky", "prompt": "a red sky"})
        by_words = await newest(bot)
        assert by_words.options["where"] == "the sky" and by_words.prompt_text == "a red sky"
        sky = Segmenter(engine_bot_args["segment"]).mask(Image.fromarray(source.astype(np.uint8)), "the sky")

        band = feather_for(width, height)
        for job, area in ((by_cells, region), (by_words, sky)):
            assert job.state is JobState.DONE, job.error
            inside = np.asarray(area) > 127
            outside = ~(np.asarray(grow(area, band)) > 127)
            assert np.array_equal(pixels(Path(job.options["mask"]))[..., 0] > 127, ~outside)  # this region + band
            for record in await bot.service.images(job.id):
                out = pixels(record.path)
                assert np.abs(out[inside] - source[inside]).mean() > 3  # repainted
                assert np.abs(out[outside] - source[outside]).max(initial=0) <= 1  # kept
        # Cells leave most of the picture outside the band; the random tiny CLIPSeg answers with a fine
        # speckle that the band covers whole, so only the cells can show the kept part here.
        assert (~(np.asarray(grow(region, band)) > 127)).mean() > 0.5
    finally:
        await bot.close()
