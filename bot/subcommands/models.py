"""Download the weights Tessera needs, and show what is already here.

`tessera models pull [ID]` fetches only the files the diffusers pipeline loads (a hub
repository also holds single-file checkpoints, ONNX, Flax, OpenVINO and EMA copies: SD 1.5's
is over 40 GB, the pipeline needs about 5), the fp16 variant when the device will run in
float16 (half the size), and the Real-ESRGAN x4 weights (checked against the release's
SHA-256). It prints the size before it starts and draws progress bars. ID defaults to MODEL_ID.

`tessera models list` shows the diffusers models in the Hugging Face cache and the upscaler
weights in UPSCALER_WEIGHTS_DIR, with their sizes and where they are.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from bot.config import load_settings, looks_like_path
from engine.device import resolve_device
from engine.errors import TesseraError
from engine.upscale.weights import OFFICIAL, ensure_weights, sha256_of

# A weight file: <stem>[.<variant>][-00001-of-00002].<ext>; variants are fp16, non_ema, ema, ...
_WEIGHT = re.compile(r"^(?P<stem>[^.]+)(?:\.(?P<variant>[A-Za-z0-9_]+))?(?:-\d{5}-of-\d{5})?\.(?P<ext>safetensors|bin)$")
# The index of a sharded weight file: <stem>.<ext>.index[.<variant>].json
_INDEX = re.compile(r"^(?P<stem>[^.]+)\.(?P<ext>safetensors|bin)\.index(?:\.(?P<variant>[A-Za-z0-9_]+))?\.json$")
_TORCH_STEMS = ("diffusion_pytorch_model", "pytorch_model", "model")
_CONFIG_SUFFIXES = (".json", ".txt", ".model")  # configs, tokenizers (vocab, merges, sentencepiece)


def pipeline_components(model_index: Mapping[str, Any]) -> list[str]:
    """The sub-folders a diffusers `model_index.json` names (`"unet": ["diffusers", "UNet2DConditionModel"]`)."""
    return sorted(key for key, value in model_index.items()
                  if not key.startswith("_") and isinstance(value, list) and len(value) == 2 and value[1] is not None)


def select_files(filenames: Iterable[str], components: Iterable[str], *, fp16: bool,
                 skip: Iterable[str] = ("safety_checker",)) -> tuple[list[str], bool]:
    """The files of a hub repository the pipeline loads, and whether they are the fp16 variant.

    Kept: `model_index.json`, each component's configs and tokenizer files, and one set of
    weights per component: safetensors (`.bin` only where a component has no safetensors),
    the fp16 variant when `fp16` and every weighted component has one, else the plain files.
    Dropped: root-level checkpoints, folders the pipeline does not name (`vae_1_0`, ONNX
    exports), Flax/OpenVINO/ONNX files, other variants (`non_ema`), and the components in
    `skip` (Tessera loads the safety checker from its own setting).
    """
    names = sorted(set(filenames))
    wanted = set(components) - set(skip)
    configs: list[str] = []
    weights: dict[str, list[tuple[str, str, str]]] = {}  # component -> (name, variant, ext)
    for name in names:
        folder, _, base = name.rpartition("/")
        if not folder or "/" in folder or folder not in wanted:
            continue
        match = _WEIGHT.match(base) or _INDEX.match(base)
        if match is not None and match["stem"] in _TORCH_STEMS:
            weights.setdefault(folder, []).append((name, match["variant"] or "", match["ext"]))
        elif match is None and base.endswith(_CONFIG_SUFFIXES) and not base.startswith(("openvino", "flax")):
            configs.append(name)

    def pick(files: list[tuple[str, str, str]], variant: str) -> list[str]:
        for ext in ("safetensors", "bin"):
            chosen = [name for name, v, e in files if v == variant and e == ext]
            if chosen:
                return chosen
        return []

    use_fp16 = fp16 and bool(weights) and all(pick(files, "fp16") for files in weights.values())
    chosen = [name for files in weights.values() for name in pick(files, "fp16" if use_fp16 else "")]
    selected = sorted({"model_index.json", *configs, *chosen} & set(names))
    return selected, use_fp16


def human_size(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} GB"


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    pull = sub.add_parser("pull", help="download a model's pipeline files and the upscaler weights",
                          description="Download only the files the pipeline loads (safetensors; the fp16 variant when "
                                      "the device runs in float16) and the Real-ESRGAN x4 weights (SHA-256 checked). "
                                      "Prints the size first; needs the network (not HF_HUB_OFFLINE).")
    pull.add_argument("model", nargs="?", help="hub id like owner/name (default: MODEL_ID)")
    pull.add_argument("--variant", choices=("auto", "fp16", "full"), default="auto",
                      help="auto: fp16 when DEVICE/DTYPE will use float16 (CUDA, MPS), else full precision")
    pull.add_argument("--local-dir", type=Path, help="download into this folder instead of the Hugging Face cache "
                                                     "(then set MODEL_ID to its absolute path)")
    pull.add_argument("--no-upscaler", action="store_true", help="do not download the Real-ESRGAN weights")
    pull.add_argument("--dry-run", action="store_true", help="print what would be downloaded and its size, then stop")
    sub.add_parser("list", help="show the models in the Hugging Face cache and the upscaler weights",
                   description="The diffusers models in the Hugging Face cache (size, path) and the Real-ESRGAN "
                               "files in UPSCALER_WEIGHTS_DIR (whether each is the official release).")


def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _wants_fp16(settings: Any, variant: str) -> bool:
    if variant != "auto":
        return variant == "fp16"
    if settings.dtype != "auto":
        return settings.dtype == "float16"

    return resolve_device(settings.device).startswith(("cuda", "mps"))


def _pull(args: argparse.Namespace, settings: Any) -> int:
    from huggingface_hub import HfApi, hf_hub_download, snapshot_download

    ref = (args.model or settings.model_id).strip()
    if looks_like_path(ref):
        print(f"tessera models pull: {ref!r} is a local path, there is nothing to download "
              "(give a hub id like owner/name)", file=sys.stderr)
        return 2
    if _offline():
        print(f"tessera models pull: HF_HUB_OFFLINE is set, so {ref!r} cannot be downloaded; unset it on a machine "
              "with internet, or copy a downloaded folder here and set MODEL_ID to its absolute path", file=sys.stderr)
        return 1
    info = HfApi().model_info(ref, files_metadata=True, timeout=30)
    sizes = {s.rfilename: int(s.size or 0) for s in info.siblings or ()}
    index = json.loads(Path(hf_hub_download(ref, "model_index.json", revision=info.sha)).read_text(encoding="utf-8"))
    files, fp16 = select_files(sizes, pipeline_components(index), fp16=_wants_fp16(settings, args.variant))
    total = sum(sizes.get(name, 0) for name in files)
    everything = sum(sizes.values())
    print(f"{ref}: {len(files)} files, {human_size(total)}{' (fp16)' if fp16 else ''} "
          f"of the repository's {human_size(everything)}", flush=True)
    if args.dry_run:
        for name in files:
            print(f"  {name}  {human_size(sizes.get(name, 0))}")
        return 0
    path = snapshot_download(ref, revision=info.sha, allow_patterns=files,
                             local_dir=args.local_dir)
    print(f"saved in {path}" + (f"\nset MODEL_ID={Path(path).resolve()}" if args.local_dir else ""), flush=True)
    if fp16:
        print("fp16 weights only: Tessera loads them on any device (float32 on a CPU upcasts them)")
    if not args.no_upscaler:
        spec = OFFICIAL["RealESRGAN_x4plus"]
        weights = ensure_weights(spec, settings.weights_dir, progress=sys.stderr.isatty())
        print(f"upscaler: {weights} (SHA-256 {spec.sha256[:12]}… verified or already there)")
    return 0


def _list(settings: Any) -> int:
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    print(f"MODEL_ID: {settings.model_id}")
    if Path(settings.model_id).is_absolute():
        print(f"  a local {'folder' if Path(settings.model_id).is_dir() else 'file'}")
    from huggingface_hub import constants

    try:
        cache = scan_cache_dir()
    except CacheNotFound:
        cache = None
    cache_dir = constants.HF_HUB_CACHE
    models = sorted((repo for repo in (cache.repos if cache else ()) if repo.repo_type == "model"
                     and any(f.file_name == "model_index.json" for rev in repo.revisions for f in rev.files)),
                    key=lambda repo: repo.repo_id)
    print(f"Hugging Face cache: {cache_dir}")
    if not models:
        print("  no diffusers models (tessera models pull ID downloads one)")
    for repo in models:
        mark = "  <- MODEL_ID" if repo.repo_id == settings.model_id else ""
        print(f"  {repo.repo_id}  {human_size(repo.size_on_disk)}  {repo.repo_path}{mark}")
    folder = settings.weights_dir
    print(f"upscaler weights: {folder}")
    found = False
    for spec in OFFICIAL.values():
        path = folder / spec.filename
        if path.is_file():
            found = True
            official = "official release" if sha256_of(path) == spec.sha256 else "not the official release (used as is)"
            print(f"  {spec.filename}  {human_size(path.stat().st_size)}  {official}")
    if not found:
        print("  none (downloaded on the first upscale, or with tessera models pull)")
    return 0


def main(args: argparse.Namespace) -> int:
    settings = load_settings()
    try:
        if args.models_command == "list":
            return _list(settings)
        return _pull(args, settings)
    except TesseraError as exc:
        print(f"tessera models {args.models_command}: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # the hub's many network and HTTP errors: one line, the detail at debug
        import logging

        logging.getLogger(__name__).debug("models %s failed", args.models_command, exc_info=True)
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"tessera models {args.models_command}: {type(exc).__name__}: {reason}", file=sys.stderr)
        return 1

