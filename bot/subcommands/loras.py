"""List the LoRAs in LORA_DIR: name, size and preview file, one per line.

QUERY keeps the names that start with it, then those that contain it (case-insensitive),
as `/loras` and the `lora:` autocomplete in Discord do. `--json` prints a JSON list.
Use a name in a prompt as `--lora name:0.8` (weight -2 to 2).
"""

from __future__ import annotations

import argparse
import json
import sys

from engine.diffusion.loras import Catalog


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("query", nargs="?", default="", help="part of a name (default: all)")
    parser.add_argument("--json", action="store_true", help="print a JSON list")


def main(args: argparse.Namespace) -> int:
    from bot.config import load_settings  # heavy for the CLI: pydantic
    from bot.shortcuts import human_size, lora_listing  # heavy for the CLI: pydantic (bot.config)

    settings = load_settings()
    if settings.lora_dir is None:
        print("tessera loras: LORA_DIR is not set; set it to a folder of LoRA .safetensors files", file=sys.stderr)
        return 1
    found = lora_listing(Catalog(settings.lora_dir), args.query[:100])
    if args.json:
        print(json.dumps([{"name": info.name, "size": info.size, "preview": str(info.preview) if info.preview else None}
                          for info in found], indent=2))
        return 0
    if not found:
        print(f"no LoRA in {settings.lora_dir}" + (f" matches {args.query!r}" if args.query else ""), file=sys.stderr)
        return 0
    for info in found:
        preview = info.preview.name if info.preview else "-"
        print(f"{info.name:40} {human_size(info.size):>9}  {preview}")
    return 0
