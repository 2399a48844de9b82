"""What every saved PNG says about itself, so it can be reproduced and read by other tools.

Two text chunks:

- `parameters`: A1111's format, which A1111, ComfyUI, InvokeAI, Civitai and most image
  viewers read:

      a lighthouse at dusk
      Negative prompt: fog
      Steps: 30, Sampler: Euler a, CFG scale: 7.5, Seed: 8, Size: 704x384, Model: sd15, ...

  The seed is the image's own seed (`seed + index`), so A1111 reproduces that image alone.
  Multi-prompts are written as Midjourney text (`space::2 ship::1`).
- `tessera`: JSON with the full `GenerationRequest`, the image index and seed, and any later
  processing (`extra_steps`, e.g. an upscale), enough to run the job again.

PNGs leave the server (the gallery posts them, users save and share them), so neither chunk
holds a path of the server's disk: the model is named by its hub id or the base name of its
folder or file, an init image by the SHA-256 of its bytes (`init_image_sha256`), and reference
pictures (--sref, --cref, /blend) by theirs (`style_refs_sha256`, ...) and their links
(`style_urls`, `character_urls`). A grid
PNG carries the same chunks as image 1 (A1111's grids do too), its JSON marked `"grid": true`.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image
from PIL.PngImagePlugin import PngInfo

from engine.request import GenerationRequest
from engine.samplers import a1111_name

__all__ = ["a1111_parameters", "grid_pnginfo", "model_name", "parse_parameters", "pnginfo_for", "portable_request",
           "read_metadata"]

TESSERA_CHUNK = "tessera"
A1111_CHUNK = "parameters"


def _prompt_text(request: GenerationRequest) -> str:
    parts = [p for p in request.prompts if p.weight > 0]
    if len(parts) == 1 and parts[0].weight == 1.0:
        return parts[0].text
    return " ".join(f"{p.text}::{p.weight:g}" for p in parts)


def _negative_text(request: GenerationRequest) -> str:
    items = [p.text for p in request.prompts if p.weight < 0] + list(request.negative)
    return ", ".join(item for item in items if item)


_CHECKPOINT_SUFFIXES = (".safetensors", ".ckpt", ".bin", ".pt", ".pth")


def model_label(model: str) -> str:
    """A model as members see it (`/seed`, the gallery, the web pages): a hub id as it is
    (`org/name`); a local folder or checkpoint file by its file name only, never its path
    (`/srv/models/dreamshaper-8` → `dreamshaper-8`, `models/sd/v1-5.safetensors` → `v1-5.safetensors`)."""
    text = model.strip().rstrip("/\\")
    is_path = (text.startswith(("/", ".", "~", "\\")) or "\\" in text or text.count("/") > 1
               or (len(text) > 1 and text[1] == ":") or text.lower().endswith(_CHECKPOINT_SUFFIXES))
    return text.replace("\\", "/").rsplit("/", 1)[-1] if is_path else text


def model_name(model: str) -> str:
    """The model in PNG metadata (A1111's `Model:`): `model_label` without a checkpoint's suffix
    (`…/v1-5-pruned.safetensors` → `v1-5-pruned`)."""
    label = model_label(model)
    return Path(label).stem if label.lower().endswith(_CHECKPOINT_SUFFIXES) else label


def _file_sha256(path: str) -> str | None:
    """The SHA-256 of a file's bytes. A stored input or image is named by it already
    (`<sha256>.png`, content-addressed), so only other files are read: a grid with twenty
    reference pictures would otherwise read each one again for every one of its PNGs."""
    stem = Path(path).stem
    if len(stem) == 64 and all(c in "0123456789abcdef" for c in stem) and Path(path).is_file():
        return stem
    try:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()
    except OSError:
        return None


def portable_request(request: GenerationRequest) -> dict:
    """`request.to_json()` without server paths: the model's name, and the init image's SHA-256
    in place of its path (None when the file is gone)."""
    data = request.to_json()
    data["model"] = model_name(request.model)
    if request.init_image:
        data["init_image"] = None
        data["init_image_sha256"] = _file_sha256(request.init_image)
    if request.mask_image:
        data["mask_image"] = None
        data["mask_image_sha256"] = _file_sha256(request.mask_image)
    for name in ("style_refs", "character_refs", "blend_refs"):  # reference pictures: by hash (and URL)
        paths = getattr(request, name)
        if paths:
            data[name] = []
            data[f"{name}_sha256"] = [_file_sha256(path) for path in paths]
    return data


def a1111_parameters(request: GenerationRequest, index: int) -> str:
    """A1111's `parameters` text for image `index` of `request`."""
    fields: list[tuple[str, Any]] = [
        ("Steps", request.steps),
        ("Sampler", a1111_name(request.sampler)),
        ("CFG scale", f"{request.guidance:g}"),
        ("Seed", request.image_seed(index)),
        ("Size", f"{request.width}x{request.height}"),
        ("Model", model_name(request.model)),
    ]
    if request.init_image and request.strength is not None:
        fields.append(("Denoising strength", f"{request.strength:g}"))
    if request.tile:
        fields.append(("Tiling", "True"))
    if request.chaos:
        fields.append(("Chaos", request.chaos))
    if request.stop is not None:
        fields.append(("Stop", f"{request.stop}%"))
    if request.draft:
        fields.append(("Draft", "True"))  # a few-step draft (LCM/turbo): not A1111's own key, kept as text
    if request.edit:  # lineage of zoom / pan / square / region edits
        fields.append(("Edit", request.edit))
        if request.parent:
            fields.append(("Edit of", request.parent))
    fields.append(("Version", "Tessera"))
    # A1111 writes an embedding as its bare name and a LoRA as `<lora:name:weight>` in the prompt.
    text = _prompt_text(request)
    for name in request.embeddings:
        text = text.replace(f"<{name}>", name)
    loras = " ".join(f"<lora:{name}:{weight:g}>" for name, weight in request.loras if weight)
    lines = [f"{text} {loras}" if loras else text]
    negative = _negative_text(request)
    if negative:
        lines.append(f"Negative prompt: {negative}")
    lines.append(", ".join(f"{k}: {_quote(str(v))}" for k, v in fields))
    return "\n".join(lines)


def _quote(value: str) -> str:
    return json.dumps(value) if ("," in value or ":" in value or "\n" in value) else value


def pnginfo_for(request: GenerationRequest, *, index: int, extra_steps: Sequence[dict] = ()) -> PngInfo:
    """The `parameters` and `tessera` chunks for image `index` of `request`."""
    info = PngInfo()
    info.add_text(A1111_CHUNK, a1111_parameters(request, index))
    payload = {"index": index, "seed": request.image_seed(index), "request": portable_request(request),
               "extra_steps": list(extra_steps)}
    info.add_text(TESSERA_CHUNK, json.dumps(payload, ensure_ascii=False, separators=(",", ":")))
    return info


def grid_pnginfo(request: GenerationRequest) -> PngInfo:
    """The chunks of a 2×2 grid: image 1's `parameters` (its seed is the request's), and the
    request as JSON marked as a grid, so a saved grid says how to make it again."""
    info = PngInfo()
    info.add_text(A1111_CHUNK, a1111_parameters(request, 0))
    payload: dict[str, object] = {"grid": True, "index": None, "seed": request.seed, "request": portable_request(request),
               "extra_steps": []}
    info.add_text(TESSERA_CHUNK, json.dumps(payload, ensure_ascii=False, separators=(",", ":")))
    return info


def parse_parameters(text: str) -> dict[str, str]:
    """A1111 `parameters` text back to fields: `prompt`, `negative_prompt` and each `Key`."""
    lines = text.split("\n")
    settings = lines[-1] if len(lines) > 1 else ""
    body = lines[:-1] if len(lines) > 1 else lines
    prompt_lines: list[str] = []
    negative_lines: list[str] = []
    in_negative = False
    for line in body:
        if line.startswith("Negative prompt: "):
            in_negative = True
            line = line.removeprefix("Negative prompt: ")
        (negative_lines if in_negative else prompt_lines).append(line)
    result = {"prompt": "\n".join(prompt_lines), "negative_prompt": "\n".join(negative_lines)}
    for key, value in _split_settings(settings):
        result[key] = value
    return result


def _split_settings(settings: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    rest = settings
    while rest:
        key, sep, rest = rest.partition(": ")
        if not sep:
            break
        if rest.startswith('"'):
            decoder = json.JSONDecoder()
            value, end = decoder.raw_decode(rest)
            rest = rest[end:]
        else:
            value, _, rest = rest.partition(", ")
        out.append((key.strip(), str(value)))
        rest = rest.removeprefix(", ")
    return out


def read_metadata(path_or_bytes: str | Path | bytes) -> dict:
    """`{"parameters": str|None, "a1111": dict, "tessera": dict|None}` from a PNG."""
    source: Any = io.BytesIO(path_or_bytes) if isinstance(path_or_bytes, bytes | bytearray) else path_or_bytes
    with Image.open(source) as image:
        text = dict(getattr(image, "text", {}) or {})
    parameters = text.get(A1111_CHUNK)
    tessera = text.get(TESSERA_CHUNK)
    return {
        "parameters": parameters,
        "a1111": parse_parameters(parameters) if parameters else {},
        "tessera": json.loads(tessera) if tessera else None,
    }
