"""`python -m bench`: run every benchmark in bench/ and print the table (or JSON).

Each `bench/bench_*.py` module exposes `run(ctx: BenchContext) -> list[Result]`. Ratios are
measured side by side within one run because these machines are noisy.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import pkgutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench.common import Result

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class BenchContext:
    quick: bool
    models: dict[str, Path]  # tiny models: sd15, sdxl, x4, x2 (see tests/fixtures/tiny_models.py)
    device: str  # "cpu", "cuda", ...
    model: str | None  # a real model id/path given with --model, else None (tiny sd15)
    workdir: Path


def _modules(only: list[str] | None) -> list[str]:
    names = sorted(m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)]) if m.name.startswith("bench_"))
    return [n for n in names if not only or any(o in n for o in only)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--json", action="store_true", help="print a JSON list of results")
    parser.add_argument("--quick", action="store_true", help="a reduced run, under 2 minutes")
    parser.add_argument("--device", default="cpu", help="torch device for the model benchmarks")
    parser.add_argument("--model", default=None, help="a real model id or folder instead of the tiny one")
    parser.add_argument("--only", nargs="*", help="run only modules whose name contains one of these")
    args = parser.parse_args(argv)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.path.insert(0, str(ROOT))
    from tests.fixtures.tiny_models import build_all

    workdir = ROOT / ".cache" / "bench"
    workdir.mkdir(parents=True, exist_ok=True)
    models = build_all(Path(os.environ.get("TESSERA_TINY_MODELS", ROOT / ".cache" / "tiny-models")))
    ctx = BenchContext(quick=args.quick, models=models, device=args.device, model=args.model, workdir=workdir)

    results: list[Result] = []
    for name in _modules(args.only):
        started = time.perf_counter()
        module = importlib.import_module(f"bench.{name}")
        results.extend(module.run(ctx))
        print(f"{name}: {time.perf_counter() - started:.1f} s", file=sys.stderr)

    if args.json:
        print(json.dumps([r.to_json() for r in results], indent=2))
    else:
        print(f"{'name':32} {'measured':>14} {'goal':>14}  ok")
        for r in results:
            goal = "—" if r.goal is None else f"{r.direction} {r.goal:g}"
            print(f"{r.name:32} {r.value:>10.3f} {r.unit:<3} {goal:>14}  {'✅' if r.ok else '❌'}")
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
