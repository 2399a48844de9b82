"""`tessera blend` and `tessera imagine --sref/--cref` on the tiny SD 1.5 model and tiny IP-Adapter.

Reference links are served by a loopback HTTP server this test starts (and stops), allowed
with IMAGE_FETCH_ALLOWED_HOSTS / IMAGE_FETCH_PORTS as an operator would allow an internal host.
"""

from __future__ import annotations

import asyncio
import io
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bot.cli import main
from engine.imaging.metadata import read_metadata


def png(seed: int, size: tuple[int, int] = (40, 32)) -> bytes:
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8), "RGB").save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture
def small_model(tiny_models: dict[str, Path], tmp_path: Path) -> Path:
    folder = tmp_path / "tiny-sd15"
    folder.mkdir()
    for child in tiny_models["sd15"].iterdir():
        (folder / child.name).symlink_to(child)
    (folder / "tessera.json").write_text(json.dumps({"native": 64, "steps": 2, "guidance": 6}))
    return folder


@pytest.fixture
def configured(small_model: Path, tiny_models: dict[str, Path], data_dir: Path,
               monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DATA_DIR", str(data_dir))
    monkeypatch.setenv("DEVICE", "cpu")
    monkeypatch.setenv("MODEL_ID", str(small_model))
    monkeypatch.setenv("IP_ADAPTER_REPO", str(tiny_models["ip_adapter"]))
    return data_dir


@pytest.fixture
def pictures_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    files = {f"/{i}.png": png(i) for i in range(3)}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            data = files.get(self.path)
            self.send_response(200 if data else 404)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(data or b"")))
            self.end_headers()
            self.wfile.write(data or b"")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    port = server.server_address[1]
    monkeypatch.setenv("IMAGE_FETCH_ALLOWED_HOSTS", "127.0.0.1")
    monkeypatch.setenv("IMAGE_FETCH_PORTS", str(port))
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[dict], str]:
    code = main(list(argv))
    # A command refused after the service started leaves its model load running on the GPU
    # thread; two loads at once race in accelerate's global init_empty_weights patch, so wait.
    for thread in threading.enumerate():
        if thread.name == "tessera-gpu":
            thread.join(120)
    out, err = capsys.readouterr()
    return code, [json.loads(line) for line in out.splitlines() if line.strip()], err


async def stored_job(data_dir: Path, job_id: str) -> object:
    from storage.api import Storage

    storage = await Storage.open(data_dir)
    try:
        return await storage.jobs.require(job_id)
    finally:
        await storage.close()


def write(tmp_path: Path, name: str, data: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def test_blend_two_and_five_pictures_make_grids(configured: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    files = [write(tmp_path, f"p{i}.png", png(i)) for i in range(5)]
    code, [two], err = run(capsys, "blend", *files[:2], "--out", str(tmp_path / "out"))
    assert code == 0, err
    assert len(two["files"]) == 4 and (two["width"], two["height"]) == (64, 64)
    meta = read_metadata(two["files"][0])["tessera"]["request"]
    assert len(meta["blend_refs_sha256"]) == 2 and meta["blend_refs"] == []  # hashes, never server paths
    job = asyncio.run(stored_job(configured, two["job_id"]))
    assert job.request_json["text"] == "/blend 2 pictures" and job.options["blend"] == 2  # type: ignore[attr-defined]

    code, [five], err = run(capsys, "blend", *files, "--dimensions", "landscape", "--out", str(tmp_path / "out"))
    assert code == 0, err
    assert len(five["files"]) == 4
    job = asyncio.run(stored_job(configured, five["job_id"]))
    assert job.request_json["aspect"] == "3:2" and len(job.request_json["blend_refs"]) == 5  # type: ignore[attr-defined]
    assert len(read_metadata(five["files"][3])["tessera"]["request"]["blend_refs_sha256"]) == 5


def test_blend_refuses_bad_input_with_a_clear_message(configured: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    good = [write(tmp_path, f"p{i}.png", png(i)) for i in range(6)]
    code, _, err = run(capsys, "blend", good[0])
    assert code == 1 and "2 to 5 pictures; got 1" in err
    code, _, err = run(capsys, "blend", *good)
    assert code == 1 and "2 to 5 pictures; got 6" in err
    text = write(tmp_path, "notes.png", b"these are not pixels" * 10)
    code, _, err = run(capsys, "blend", good[0], text)
    assert code == 1 and "Picture 2 is not a PNG, JPEG, GIF or WebP image" in err
    monkeypatch.setenv("IMAGE_PROMPT_MAX_BYTES", "10000")
    big = write(tmp_path, "big.png", png(9, (200, 200)))
    code, _, err = run(capsys, "blend", good[0], big)
    assert code == 1 and "big.png is larger than" in err and "IMAGE_PROMPT_MAX_BYTES" in err


def test_references_without_the_adapter_are_refused_naming_the_setting(
        configured: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IP_ADAPTER_REPO", "")
    files = [write(tmp_path, f"p{i}.png", png(i)) for i in range(2)]
    code, _, err = run(capsys, "blend", *files)
    assert code == 1 and "IP_ADAPTER_REPO" in err
    # Refused before any fetch: the link is never contacted (and its port 1 is one no fetch may use).
    code, _, err = run(capsys, "imagine", "a cat --sref https://images.example.com:1/a.png")
    assert code == 1 and "--sref needs IP-Adapter weights" in err and "IP_ADAPTER_REPO" in err


def test_imagine_with_sref_and_cref_links_records_them(configured: Path, pictures_server: str, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    prompt = (f"a cat --seed 5 --sref {pictures_server}/0.png 680572301 {pictures_server}/1.png --sw 300 "
              f"--cref {pictures_server}/2.png --cw 20")
    code, [result], err = run(capsys, "imagine", prompt, "--out", str(tmp_path / "out"))
    assert code == 0, err
    assert result["ignored"] == ["--sref 680572301 (style codes)"]
    job = asyncio.run(stored_job(configured, result["job_id"]))
    request = job.request_json  # type: ignore[attr-defined]
    assert request["style_urls"] == [f"{pictures_server}/0.png", f"{pictures_server}/1.png"]
    assert (request["style_weight"], request["character_weight"]) == (300, 20)
    assert len(request["style_refs"]) == 2 and all(Path(p).is_file() for p in request["style_refs"])
    meta = read_metadata(result["files"][0])["tessera"]["request"]
    assert meta["style_refs"] == [] and len(meta["style_refs_sha256"]) == 2
    assert meta["character_urls"] == [f"{pictures_server}/2.png"]
    # The same prompt without the references draws other pictures.
    code, [plain], err = run(capsys, "imagine", "a cat --seed 5", "--out", str(tmp_path / "plain"))
    assert code == 0, err
    a = np.asarray(Image.open(result["files"][0])).astype(int)
    b = np.asarray(Image.open(plain["files"][0])).astype(int)
    assert np.abs(a - b).mean() > 0.5


def test_reference_pictures_count_against_the_prompts_picture_limit(
        configured: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMPT_MAX_IMAGES", "3")
    # Refused before any fetch (these links are never contacted; port 1 is one no fetch may use):
    # the two expansions' different sets make 3 + 3 pictures.
    links = " ".join(f"https://images.example.com:1/{i}.png" for i in range(2))
    code, _, err = run(capsys, "imagine", f"a {{cat, dog}} --sref {links} --cref https://images.example.com:1/{{a,b}}.png")
    assert code == 1 and "pictures to fetch" in err and "the most is 3" in err
