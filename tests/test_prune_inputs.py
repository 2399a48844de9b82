"""`tessera prune` and DATA_DIR/inputs (uploads, image prompts, references, edit masks).

The CLI runs against a real data folder: old pictures no queued, running or shared job uses
go, young ones, ones in use and files Tessera did not name stay; `--dry-run` deletes nothing.
Then the bot, through raw Interaction payloads: storing or re-using a picture makes it young,
and a 🔄 of a job whose pictures were pruned (a /blend's references, an edit's canvas and
mask) or a /describe 🔄 of a pruned upload is refused with a message and queues nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from datetime import timedelta
from pathlib import Path

import pytest
from PIL import Image

from bot.cli import main as cli
from engine.imaging.fetch import save_init_image
from engine.jobs.model import JobKind, JobState, NewJob
from engine.request import GenerationRequest
from storage import Storage
from storage import inputs as inputs_module
from storage.inputs import prune_inputs
from storage.maintenance import prune
from tests.discord_harness import message_with
from tests.test_bot import final_edit, imagine
from tests.test_bot_pictures import CDN, answered, last_said, message_carrying, png, start

OLD = 40 * 86400  # seconds: older than the 30d the tests prune at


@pytest.fixture
def env(data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)  # no developer .env
    monkeypatch.setenv("DATA_DIR", str(data_dir))
    return data_dir


def picture(folder: Path, label: str, *, age: float = OLD, legacy: bool = False) -> Path:
    """A stored input named as Tessera names it (sha256 of its bytes; 32 digits for old blends)."""
    data = f"picture {label}".encode() * (10 + len(label))
    digest = hashlib.sha256(data).hexdigest()
    path = folder / f"{digest[:32] if legacy else digest}.png"
    path.write_bytes(data)
    stamp = time.time() - age
    os.utime(path, (stamp, stamp))
    return path


def age(path: Path, seconds: float = OLD) -> None:
    stamp = time.time() - seconds
    os.utime(path, (stamp, stamp), follow_symlinks=False)


def make_jobs(data_dir: Path, pics: dict[str, Path]) -> None:
    """A queued grid using `queued` (init image) and `ref` (--sref), a running /describe of
    `described`, a done grid using `done` and a done grid using `shared` that is in the gallery."""

    async def go() -> None:
        storage = await Storage.open(data_dir)
        try:
            await storage.jobs.create(NewJob(
                kind=JobKind.IMAGINE, user_id=1, prompt_text="queued",
                request_json={"init_image": str(pics["queued"]), "style_refs": [str(pics["ref"])]}))
            describe = await storage.jobs.create(NewJob(
                kind=JobKind.DESCRIBE, user_id=1, prompt_text="/describe",
                options={"source": str(pics["described"]), "digest": pics["described"].stem, "offset": 0}))
            await storage.jobs.transition(describe.id, JobState.RUNNING)
            for label in ("done", "shared"):
                job = await storage.jobs.create(NewJob(kind=JobKind.IMAGINE, user_id=1, prompt_text=label))
                await storage.jobs.transition(job.id, JobState.RUNNING)
                await storage.jobs.set_request(job.id, {"init_image": str(pics[label])}, 7, "tiny")
                await storage.images.add(job.id, 0, label.encode() * 100, 64, 64)
                await storage.jobs.transition(job.id, JobState.DONE)
                if label == "shared":
                    await storage.gallery.share(job.id, 0, author_id=1, title=None, guild_id=None, prompt_text="x")
        finally:
            await storage.close()

    asyncio.run(go())


def test_prune_deletes_old_unused_inputs_and_keeps_young_used_and_foreign_files(
        env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = env / "inputs"
    folder.mkdir(parents=True, exist_ok=True)
    pics = {label: picture(folder, label) for label in ("queued", "ref", "described", "done", "shared", "loose")}
    pics["legacy"] = picture(folder, "legacy", legacy=True)  # an image-prompt blend of an older Tessera
    pics["young"] = picture(folder, "young", age=3600)
    make_jobs(env, pics)
    doomed = [pics["done"], pics["loose"], pics["legacy"]]
    freed = sum(p.stat().st_size for p in doomed)

    outside = tmp_path / "outside.png"  # a symbolic link with an input's name must not be followed
    outside.write_bytes(b"not Tessera's")
    age(outside)
    link = folder / f"{'a' * 64}.png"
    link.symlink_to(outside)
    age(link)
    foreign = [folder / "notes.png", folder / f"{'B' * 64}.png", folder / f"{'c' * 64}.png.bak",
               folder / "tmpab12.tmp", folder / f"{'d' * 63}.png"]
    for path in foreign:
        path.write_bytes(b"someone else's")
        age(path)
    (folder / f"{'e' * 64}.png").mkdir()  # a folder with an input's name
    age(folder / f"{'e' * 64}.png")
    survivors = [p for label, p in pics.items() if p not in doomed] + [link, outside, *foreign]

    assert cli(["prune", "--older-than", "30d", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert (f"would delete 3 old input pictures (uploads, image prompts, references, masks), would free {freed} bytes"
            in out), out
    assert "kept 4 old input pictures that queued, running or shared jobs still use" in out
    assert all(p.exists() for p in [*doomed, *survivors])

    assert cli(["prune", "--older-than", "30d"]) == 0
    out = capsys.readouterr().out
    assert f"deleted 3 old input pictures (uploads, image prompts, references, masks), freed {freed} bytes" in out
    assert "kept 4 old input pictures" in out
    assert not any(p.exists() for p in doomed)
    assert all(p.exists() or p.is_symlink() for p in survivors) and link.is_symlink()
    assert (folder / f"{'e' * 64}.png").is_dir()
    assert sorted(p.name for p in folder.iterdir() if p.name.startswith(".")) == []  # nothing left aside

    assert cli(["prune", "--older-than", "30d"]) == 0
    assert "deleted 0 old input pictures" in capsys.readouterr().out


def test_prune_leaves_an_inputs_folder_that_is_a_symbolic_link_alone(env: Path, tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    kept = picture(elsewhere, "elsewhere")
    env.mkdir(parents=True, exist_ok=True)
    (env / "inputs").symlink_to(elsewhere)
    assert cli(["prune", "--older-than", "30d"]) == 0
    out = capsys.readouterr().out
    assert "deleted 0 old input pictures" in out and "was left alone" in out and "symbolic link" in out
    assert kept.exists()


def test_a_picture_touched_just_before_it_is_moved_aside_is_put_back(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The bot re-uses a picture (refreshing its mtime) between prune's check and its unlink:
    the picture stays. The bot's touch is made to land exactly in that gap."""
    folder = tmp_path / "inputs"
    folder.mkdir()
    used, unused = picture(folder, "used"), picture(folder, "unused")
    rename = os.rename

    def bot_touches_first(src: str, dst: str, **kwargs: object) -> None:
        if src == used.name:
            os.utime(used)  # what Tessera._store_input_image and touch_inputs do
        rename(src, dst, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(inputs_module.os, "rename", bot_touches_first)
    report = prune_inputs(tmp_path, time.time() - 30 * 86400, set())
    assert (report.files, used.exists(), unused.exists()) == (1, True, False)
    assert [p.name for p in folder.iterdir()] == [used.name]


def test_pictures_a_crashed_prune_left_aside_are_put_back_when_in_use_and_deleted_when_old(tmp_path: Path) -> None:
    folder = tmp_path / "inputs"
    folder.mkdir()
    used, unused, young = picture(folder, "used"), picture(folder, "unused"), picture(folder, "young", age=60)
    aside = {}
    for path in (used, unused, young):
        aside[path] = folder / f".prune-{path.name}.{os.getpid()}.123.tmp"
        path.rename(aside[path])
    report = prune_inputs(tmp_path, time.time() - 30 * 86400, {used.name}, dry_run=True)
    assert (report.files, report.bytes) == (1, aside[unused].stat().st_size)
    assert all(p.exists() for p in aside.values())
    report = prune_inputs(tmp_path, time.time() - 30 * 86400, {used.name})
    assert report.files == 1 and used.is_file() and not unused.exists() and not aside[unused].exists()
    assert sorted(p.name for p in folder.iterdir()) == sorted([used.name, aside[young].name])  # young: kept for now


def test_half_written_pictures_a_killed_process_left_are_deleted_once_old(tmp_path: Path) -> None:
    folder = tmp_path / "inputs"
    folder.mkdir()
    old = int(time.time() - 40 * 86400)
    names = {"tmpab_3x9zq.tmp": old, f"{'c' * 64}.4242.139871.tmp": old, "tmpyoung123.tmp": None,
             "tmp-not-ours.tmp": old}
    for name, mtime in names.items():
        (folder / name).write_bytes(b"half a picture")
        if mtime is not None:
            os.utime(folder / name, (mtime, mtime))
    assert prune_inputs(tmp_path, time.time() - 30 * 86400, set(), dry_run=True).files == 2
    report = prune_inputs(tmp_path, time.time() - 30 * 86400, set())
    assert (report.files, report.bytes) == (2, 2 * len(b"half a picture"))
    assert sorted(p.name for p in folder.iterdir()) == ["tmp-not-ours.tmp", "tmpyoung123.tmp"]


def test_storing_a_picture_again_and_blending_the_same_prompt_again_refresh_its_mtime(
        tmp_path: Path) -> None:
    image = Image.new("RGB", (8, 8), (10, 20, 30))
    path = save_init_image(image, tmp_path / "inputs")
    assert len(path.stem) == 64  # the full sha256, like every other input
    age(path)
    assert save_init_image(image, tmp_path / "inputs") == path
    assert time.time() - path.stat().st_mtime < 600


# ----- the bot: re-use refreshes, a 🔄 after pruning is refused -------------------------------------


async def test_rerolls_and_describe_again_after_prune_say_the_pictures_are_gone(
        tiny_models: dict[str, Path], data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bot = await start(tiny_models, data_dir)
    try:
        cdn = CDN(bot, monkeypatch)
        folder = bot.service.inputs_dir
        digest = await bot.service.keep_picture(png((64, 48), seed=9))  # what /describe keeps
        kept = folder / f"{digest}.png"
        age(kept)
        assert await bot.service.keep_picture(png((64, 48), seed=9)) == digest  # the same upload again
        assert time.time() - kept.stat().st_mtime < 600  # young again: a new job uses it

        pictures = {f"image{i}": cdn.attach(f"p{i}.png", png((40, 40), seed=i)) for i in (1, 2)}
        blended = await bot.h.run_command("blend", {"dimensions": "square"}, attachments=pictures)
        blend = await bot.only_job()
        refs = [Path(p) for p in (blend.request_json or {})["blend_refs"]]
        await bot.finished(blend.id)
        grid = final_edit(bot.http.for_token(blended.token))
        reroll = f"tessera:reroll:{blend.id}:0"

        for path in refs:
            age(path)
        await bot.h.press(reroll, grid_message := message_with(grid))
        again = [j for j in await bot.jobs() if j.parent_id == blend.id]
        assert len(again) == 1 and again[0].kind is JobKind.REROLL
        assert all(time.time() - p.stat().st_mtime < 600 for p in refs)  # re-used: young again
        await bot.finished(again[0].id)

        token, job_id = await imagine(bot, "a lighthouse --seed 3")  # an edit: canvas and mask in DATA_DIR/inputs
        pressed = await bot.h.press(f"tessera:upscale:{job_id}:0", message_with(final_edit(bot.http.for_token(token))))
        upscale = next(j for j in await bot.jobs() if j.kind is JobKind.UPSCALE)
        await bot.finished(upscale.id)
        zoomed = await bot.h.press(f"tessera:zoom2:{upscale.id}:0", message_with(final_edit(bot.http.for_token(pressed))))
        edit = next(j for j in await bot.jobs() if j.kind is JobKind.EDIT)
        await bot.finished(edit.id)
        request = GenerationRequest.from_json(edit.request_json or {})
        edit_files = [Path(request.init_image or ""), Path(request.mask_image or "")]
        assert all(p.parent == folder.resolve() and p.is_file() for p in edit_files)
        edit_grid = message_with(final_edit(bot.http.for_token(zoomed)))

        for path in folder.iterdir():
            age(path)
        beside = await Storage.open(data_dir)  # `tessera prune --older-than 30d` next to the bot
        try:
            report = await prune(beside, timedelta(days=30))
        finally:
            await beside.close()
        assert report.inputs == 5 and not any(p.exists() for p in [kept, *refs, *edit_files])

        before = len(await bot.jobs())
        for custom_id, message, words in ((reroll, grid_message, "a /blend picture"),
                                          (f"tessera:reroll:{edit.id}:0", edit_grid, "the picture it starts from")):
            token = await bot.h.press(custom_id, message)
            said = last_said(bot, token)
            content = said.content or ""
            assert said.ephemeral and "no longer on disk (it may have been pruned)" in content and words in content, \
                content
        again_id = f"tessera:describe:again:{digest}:1"
        token = await bot.h.press(again_id, message_carrying(again_id))
        said = last_said(bot, token)
        assert said.ephemeral and "no longer kept" in (said.content or "")
        assert len(await bot.jobs()) == before  # nothing queued
        await answered(bot, token)
    finally:
        await bot.close()

