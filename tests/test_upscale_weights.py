"""Real-ESRGAN weight files: verified downloads (from a server on 127.0.0.1) and offline errors."""

from __future__ import annotations

import hashlib
import http.server
import socket
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image

from engine.errors import UpscaleError
from engine.upscale.realesrgan import Upscaler
from engine.upscale.weights import OFFICIAL, WeightSpec, ensure_weights


@pytest.fixture
def served(tiny_models: dict[str, Path]) -> Iterator[tuple[str, list[str]]]:
    """An HTTP server on 127.0.0.1 serving the tiny x4 weights; yields (base URL, requested paths)."""
    body = tiny_models["x4"].read_bytes()
    requested: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            requested.append(self.path)
            if not self.path.endswith(".pth"):
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", requested
    finally:
        server.shutdown()
        server.server_close()


def _spec(base: str, sha256: str) -> WeightSpec:
    return replace(OFFICIAL["RealESRGAN_x4plus"], url=f"{base}/v0.1.0/RealESRGAN_x4plus.pth", sha256=sha256)


def test_official_specs_name_release_urls_and_hashes() -> None:
    for name, spec in OFFICIAL.items():
        assert spec.url.startswith("https://github.com/xinntao/Real-ESRGAN/releases/download/")
        assert spec.url.endswith(f"/{name}.pth") and spec.filename == f"{name}.pth"
        assert len(spec.sha256) == 64 and int(spec.sha256, 16) >= 0
    assert OFFICIAL["RealESRGAN_x2plus"].scale == 2 and OFFICIAL["RealESRGAN_x4plus"].scale == 4


def test_download_with_the_wrong_sha256_is_refused_and_removed(served: tuple[str, list[str]], tmp_path: Path) -> None:
    base, requested = served
    folder = tmp_path / "weights"
    with pytest.raises(UpscaleError) as info:
        ensure_weights(_spec(base, "0" * 64), folder, progress=False)
    message = str(info.value)
    assert "SHA-256" in message and "0" * 64 in message and "removed" in message
    assert requested == ["/v0.1.0/RealESRGAN_x4plus.pth"]
    assert list(folder.iterdir()) == []  # neither the file nor its temporary .part is left


def test_verified_download_is_kept_and_loaded(served: tuple[str, list[str]], tiny_models: dict[str, Path],
                                              tmp_path: Path) -> None:
    base, requested = served
    folder = tmp_path / "weights"
    good = hashlib.sha256(tiny_models["x4"].read_bytes()).hexdigest()
    specs = dict(OFFICIAL, RealESRGAN_x4plus=_spec(base, good))
    upscaler = Upscaler(folder, device="cpu", specs=specs, progress=False)
    assert upscaler.upscale(Image.new("RGB", (16, 12), (200, 30, 30)), 4).size == (64, 48)
    assert [p.name for p in folder.iterdir()] == ["RealESRGAN_x4plus.pth"]
    assert (folder / "RealESRGAN_x4plus.pth").read_bytes() == tiny_models["x4"].read_bytes()
    # Downloaded once: a second upscaler finds the file and asks nothing of the server.
    Upscaler(folder, device="cpu", specs=specs, progress=False).upscale(Image.new("RGB", (8, 8)), 4)
    assert len(requested) == 1


def test_missing_weights_offline_name_file_url_and_folder(tmp_path: Path) -> None:
    folder = tmp_path / "weights"
    upscaler = Upscaler(folder, device="cpu", allow_download=False)
    with pytest.raises(UpscaleError) as info:
        upscaler.upscale(Image.new("RGB", (16, 16)), 4)
    message = str(info.value)
    assert "RealESRGAN_x4plus.pth" in message
    assert "https://github.com/xinntao/Real-ESRGAN/releases/download/v0.1.0/RealESRGAN_x4plus.pth" in message
    assert str(folder) in message


def test_unreachable_download_gives_the_same_clear_message(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port on 127.0.0.1 that nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    folder = tmp_path / "weights"
    spec = _spec(f"http://127.0.0.1:{port}", OFFICIAL["RealESRGAN_x4plus"].sha256)
    with pytest.raises(UpscaleError) as info:
        ensure_weights(spec, folder, progress=False)
    message = str(info.value)
    assert "RealESRGAN_x4plus.pth" in message and spec.url in message and str(folder) in message
    assert "could not be downloaded" in message
    assert list(folder.iterdir()) == []


def test_http_error_is_reported(served: tuple[str, list[str]], tmp_path: Path) -> None:
    base, _ = served
    spec = replace(_spec(base, "0" * 64), url=f"{base}/missing")
    with pytest.raises(UpscaleError, match="HTTP 404"):
        ensure_weights(spec, tmp_path / "weights", progress=False)


def test_an_operator_placed_file_is_used_as_it_is(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    folder = tmp_path / "weights"
    folder.mkdir()
    placed = folder / "RealESRGAN_x4plus.pth"
    placed.write_bytes(tiny_models["x4"].read_bytes())  # not the official hash: a fine-tune, say
    assert ensure_weights(OFFICIAL["RealESRGAN_x4plus"], folder, allow_download=False) == placed
