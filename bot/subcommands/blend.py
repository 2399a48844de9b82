"""Blend 2 to 5 pictures into a 2x2 grid, as Midjourney's /blend does.

The pictures' IP-Adapter image embeddings are averaged and the grid is drawn from that
alone, with no text (needs `IP_ADAPTER_REPO`). Each file is checked like an upload: at most
IMAGE_PROMPT_MAX_BYTES, an allowed image type, the pixel limits. Prints the same JSON object
as `tessera imagine`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bot.config import load_settings
from bot.subcommands._submit import add_common_options, run_command, run_jobs, write_grid
from engine.errors import ImageFetchError, PromptError


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", metavar="FILE", nargs="+", type=Path, help="2 to 5 pictures (PNG, JPEG, WebP, GIF)")
    parser.add_argument("--dimensions", choices=("portrait", "square", "landscape"), default="square",
                        help="the grid's shape: portrait 2:3, square 1:1 (default), landscape 3:2")
    add_common_options(parser)


def read_picture(path: Path, max_bytes: int) -> bytes:
    """The file's bytes, refused before reading when it is larger than `max_bytes`."""
    try:
        with path.open("rb") as handle:
            data = handle.read(max_bytes + 1)
    except OSError as exc:
        raise ImageFetchError(f"cannot read {str(path)!r}: {exc.strerror or exc}") from None
    if len(data) > max_bytes:
        limit = f"{max_bytes / 2**20:g} MiB" if max_bytes >= 2**20 else f"{max_bytes:,} bytes"
        raise ImageFetchError(f"{path.name} is larger than {limit} (IMAGE_PROMPT_MAX_BYTES); use a smaller file.")
    return data


def main(args: argparse.Namespace) -> int:
    return run_command("blend", lambda: _blend(args))


async def _blend(args: argparse.Namespace) -> int:
    import asyncio

    from bot.service import Tessera  # heavy for the CLI: aiosqlite, PIL

    settings = load_settings()
    if not 2 <= len(args.files) <= 5:
        raise PromptError(f"blend takes 2 to 5 pictures; got {len(args.files)}.")
    images = [await asyncio.to_thread(read_picture, path, settings.image_prompt_max_bytes) for path in args.files]

    async def submit(service: Tessera) -> list:
        return [await service.blend(user_id=args.user, images=images, dimensions=args.dimensions)]

    return await run_jobs("blend", settings, submit, write_grid, args.out)
