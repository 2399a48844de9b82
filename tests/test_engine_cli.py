"""`tessera imagine`, `vary` and `reroll` on the tiny SD 1.5 model: files, JSON, storage records."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from PIL import Image

from bot.cli import main
from engine.imaging.metadata import read_metadata


@pytest.fixture
def small_model(tiny_models: dict[str, Path], tmp_path: Path) -> Path:
    """The tiny SD 1.5 folder with a profile override, so the CLI's native size stays small."""
    folder = tmp_path / "tiny-sd15"
    folder.mkdir()
    for child in tiny_models["sd15"].iterdir():
        (folder / child.name).symlink_to(child)
    (folder / "tessera.json").write_text(json.dumps({"native": 128, "steps": 2, "guidance": 6}))
    return folder


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[dict], str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, [json.loads(line) for line in out.splitlines() if line.strip()], err


async def stored(data_dir: Path, job_id: str) -> tuple[object, list[object]]:
    from storage.api import Storage

    storage = await Storage.open(data_dir)
    try:
        return await storage.jobs.require(job_id), await storage.images.for_job(job_id)
    finally:
        await storage.close()


def test_imagine_vary_reroll(small_model: Path, data_dir: Path, tmp_path: Path,
                             capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATA_DIR", str(data_dir))
    monkeypatch.setenv("DEVICE", "cpu")
    out = tmp_path / "out"
    code, results, err = run(capsys, "imagine", "a lighthouse::2 at dusk --ar 2:1 --seed 5 --no fog --niji",
                             "--model", str(small_model), "--out", str(out))
    assert code == 0, err
    [result] = results
    assert (result["seed"], result["width"], result["height"], result["steps"]) == (5, 192, 64, 2)
    assert result["ignored"] == ["--niji"]
    assert len(result["files"]) == 4 and all(Path(f).parent == out.resolve() for f in result["files"])
    with Image.open(result["grid"]) as grid:
        assert grid.size == (384, 128)
    meta = read_metadata(result["files"][2])
    assert meta["tessera"]["seed"] == 7 and meta["a1111"]["Seed"] == "7"
    assert meta["a1111"]["negative_prompt"] == "fog" and meta["a1111"]["Size"] == "192x64"

    job, images = asyncio.run(stored(data_dir, result["job_id"]))
    assert (job.kind, job.state, job.seed) == ("imagine", "done", 5)
    assert job.request_json["prompts"][0] == {"text": "a lighthouse", "weight": 2.0}
    assert [im.index for im in images] == [0, 1, 2, 3] and all(Path(im.path).is_file() for im in images)

    code, [variation], err = run(capsys, "vary", result["job_id"], "2", "--strength", "strong", "--seed", "99",
                                 "--out", str(out))
    assert code == 0, err
    assert (variation["seed"], variation["width"], variation["height"]) == (99, 192, 64)
    job, images = asyncio.run(stored(data_dir, variation["job_id"]))
    assert (job.kind, job.parent_id, job.parent_index, len(images)) == ("variation", result["job_id"], 1, 4)
    assert job.request_json["strength"] == 0.7 and job.request_json["init_image"].endswith(".png")

    code, [again], err = run(capsys, "reroll", result["job_id"], "--out", str(out))
    assert code == 0, err
    job, _ = asyncio.run(stored(data_dir, again["job_id"]))
    assert (job.kind, job.parent_id) == ("reroll", result["job_id"])
    assert again["seed"] != 5 and (again["width"], again["height"]) == (192, 64)


def test_cli_errors_are_one_clear_line(data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                       monkeypatch: pytest.MonkeyPatch, small_model: Path) -> None:
    monkeypatch.setenv("DATA_DIR", str(data_dir))
    missing = tmp_path / "nowhere"
    code, results, err = run(capsys, "imagine", "a cat", "--model", str(missing))
    assert code == 1 and not results and str(missing) in err
    code, results, err = run(capsys, "imagine", "a cat --ar 9:1", "--model", str(small_model))
    assert code == 1 and "4:1" in err
    code, results, err = run(capsys, "vary", "nosuchjob", "1")
    assert code == 1 and "nosuchjob" in err.lower()


def test_progress_bars_follow_queue_events() -> None:
    import io

    from bot.subcommands._submit import ProgressBars
    from engine.jobs.queue import QueueEvent

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    bars = ProgressBars(terminal)
    assert bars.enabled
    bars(QueueEvent("queued", "job1", position=3))  # announced while the job is submitted
    bars.watch(["job1"])
    for event in (QueueEvent("progress", "other", step=1, total=9),
                  QueueEvent("started", "job1"), QueueEvent("progress", "job1", step=1, total=4),
                  QueueEvent("progress", "job1", step=3, total=4)):
        bars(event)
    shown = terminal.getvalue()
    assert "job1" in shown and "queued #3" in shown and "3/4" in shown and "other" not in shown
    bars(QueueEvent("done", "job1"))
    assert "4/4" in terminal.getvalue()

    piped = io.StringIO()  # not a terminal: nothing is drawn
    quiet = ProgressBars(piped)
    quiet.watch(["job1"])
    quiet(QueueEvent("progress", "job1", step=1, total=4))
    assert not quiet.enabled and piped.getvalue() == ""


def test_imagine_runs_on_a_redis_worker_when_queue_url_is_set(
        small_model: Path, data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """With QUEUE_URL the CLI only queues: a worker (here a fake executor in a thread) makes the images."""
    import threading

    from engine.jobs.worker import Worker
    from tests.fixtures.redis_server import redis_server
    from tests.queue_helpers import FakeExecutor

    (tmp_path / "redis").mkdir()
    with redis_server(tmp_path / "redis") as server:
        executor = FakeExecutor(steps=2)
        worker = Worker(server.url, executor, worker_id="cli-test", poll_s=0.05, model_ref=str(small_model))
        thread = threading.Thread(target=asyncio.run, args=(worker.run(),), daemon=True)
        thread.start()
        try:
            monkeypatch.setenv("DATA_DIR", str(data_dir))
            monkeypatch.setenv("MODEL_ID", str(small_model))
            monkeypatch.setenv("QUEUE_URL", server.url)
            out = tmp_path / "out"
            code, [result], err = run(capsys, "imagine", "a red kite --ar 2:1 --seed 11", "--out", str(out))
        finally:
            while worker._loop is None and thread.is_alive():
                thread.join(0.05)
            if worker._loop is not None:
                worker._loop.call_soon_threadsafe(worker.request_stop)
            thread.join(10)
    assert code == 0, err
    assert executor.batches == [[result["job_id"]]]  # the worker ran it
    assert (result["seed"], result["width"], result["height"]) == (11, 192, 64)
    with Image.open(result["files"][0]) as first:  # the worker's image, stored by the bot side
        assert first.size == (192, 64) and first.getpixel((0, 0)) != (0, 0, 0)
    job, images = asyncio.run(stored(data_dir, result["job_id"]))
    assert job.state == "done" and len(images) == 4
