"""Run a GPU worker that takes jobs from Redis (scale-out).

Run one per GPU, on any machine that reaches Redis: it loads its model once, then runs one
job (or batch) at a time, sending images and progress back through Redis. The bot keeps the
queue, SQLite and the image folder; workers need none of them. The model and device come from
--model / --device, else MODEL_ID / DEVICE (and DTYPE, UPSCALER_WEIGHTS_DIR, ... as for the bot).
It runs only MODEL_ID and ALLOWED_MODELS, and refuses batches beyond its QUEUE_BATCH_SIZE,
JOB_TIMEOUT_S and JOB_MAX_ATTEMPTS (give it the bot's values): such a job fails with the reason.
Stop it with Ctrl-C or SIGTERM: a batch it is running is handed back to the queue.

  tessera worker --queue redis://:PASSWORD@10.0.0.5:6379/0 --device cuda:0
"""

from __future__ import annotations

import argparse
import sys

from bot.config import ConfigError, load_settings
from bot.logs import setup_logging
from engine.diffusion.models import check_model_ref
from engine.errors import TesseraError
from engine.redact import redact_url


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--queue", metavar="URL", default=None,
                        help="Redis URL, e.g. redis://:PASSWORD@host:6379/0 or rediss://… for TLS (default: QUEUE_URL)")
    parser.add_argument("--model", default=None, help="model hub id, folder or .safetensors file (default: MODEL_ID)")
    parser.add_argument("--device", default=None, help="auto, cpu, mps, cuda or cuda:N (default: DEVICE)")
    parser.add_argument("--id", dest="worker_id", default=None, help="name shown in logs (default: host-pid-random)")
    parser.add_argument("--visibility-timeout", type=float, default=30.0, metavar="SECONDS",
                        help="a job whose worker sends no sign of life for this long is re-run by another "
                             "worker; use the same value on every worker (default: 30)")


def main(args: argparse.Namespace) -> int:
    import asyncio
    import signal

    overrides: dict[str, object] = {}
    if args.model:
        overrides["model_id"] = args.model
    if args.device:
        overrides["device"] = args.device
    if args.queue is not None:
        overrides["queue_url"] = args.queue
    settings = load_settings(**overrides)
    setup_logging(settings.log_format, settings.log_level)
    if not settings.queue_url:
        raise ConfigError("tessera worker needs a Redis URL: pass --queue redis://… or set QUEUE_URL")
    if args.visibility_timeout <= 0:
        raise ConfigError("--visibility-timeout must be more than 0 seconds")

    from redis.exceptions import RedisError

    from engine.jobs.executor import EngineExecutor  # heavy for the CLI: PIL
    from engine.jobs.redis_wire import WorkerLimits  # heavy for the CLI: redis, taskiq
    from engine.jobs.worker import Worker  # heavy for the CLI: redis, taskiq, PIL

    try:
        check_model_ref(settings.model_id)
    except TesseraError as exc:
        print(f"tessera worker: {exc}", file=sys.stderr)
        return 2
    worker = Worker(settings.queue_url, EngineExecutor.from_settings(settings), worker_id=args.worker_id,
                    visibility_timeout_s=args.visibility_timeout, model_ref=settings.model_id, device=settings.device,
                    limits=WorkerLimits.from_settings(settings))

    async def run() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, worker.request_stop)
        await worker.run()

    try:
        asyncio.run(run())
    except (OSError, RedisError) as exc:
        print(f"tessera worker: cannot use Redis at {redact_url(settings.queue_url)}: {exc}", file=sys.stderr)
        return 1
    except TesseraError as exc:
        print(f"tessera worker: {exc}", file=sys.stderr)
        return 1
    return 0
