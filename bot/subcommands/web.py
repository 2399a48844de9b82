"""Run the web gallery alone, against DATA_DIR (no Discord, no model).

Reads the database read-only, so it can run beside a running bot on the same DATA_DIR, or on
another machine next to a copy of it (thumbnails go to DATA_DIR/thumbs, or a temporary
folder when DATA_DIR is read-only). Listens on WEB_HOST:WEB_PORT (127.0.0.1:8080 unless set
or given with --host/--port); put a reverse proxy in front to publish it (see the README).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys

from engine.errors import StorageError

DEFAULT_PORT = 8080


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="address to listen on (default WEB_HOST, 127.0.0.1)")
    parser.add_argument("--port", type=int, help=f"port to listen on (default WEB_PORT, else {DEFAULT_PORT})")


async def _serve(args: argparse.Namespace) -> int:
    from bot.config import load_settings  # heavy for the CLI: pydantic
    from bot.web import options_from, start_web  # heavy for the CLI: aiohttp, Pillow

    settings = load_settings()
    host = args.host or settings.web_host
    port = args.port if args.port is not None else (settings.web_port or DEFAULT_PORT)
    if not 0 <= port <= 65535:
        print(f"tessera web: --port must be 0 to 65535, not {port}", file=sys.stderr)
        return 2
    server = await start_web(settings.data_dir, host=host, port=port, options=options_from(settings))
    print(f"web gallery of {settings.data_dir} on http://{host}:{server.port} (Ctrl-C stops it)", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await server.close()
    return 0


def main(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(_serve(args))
    except StorageError as exc:
        print(f"tessera web: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # the port is taken, or the address is not ours
        print(f"tessera web: cannot listen: {exc.strerror or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
