"""`lora_autocomplete_ms` and `lora_relist_ms`: answering Discord's autocomplete from LORA_DIR.

Autocomplete must answer within Discord's 3 seconds on every key press, and a server may
keep thousands of LoRAs. `engine.diffusion.loras.Catalog` lists the folder once and lists it
again only when the folder's mtime changes, so a key press is a filter over names in memory.
`lora_autocomplete_ms` is the worst of the queries below over a folder of 1,000 files (goal 50 ms,
far inside the 3-second window; measured: under 10 ms); `lora_relist_ms` is a listing after the folder
changed (goal 500 ms).
"""

from __future__ import annotations

import os
import time
from typing import Any

from bench.common import Result
from engine.diffusion.loras import Catalog

FILES = 1000
QUERIES = ("", "a", "st", "style_12", "zz", "detail", "9")


def run(ctx: Any) -> list[Result]:
    folder = ctx.workdir / "loras-1000"
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(FILES):
        (folder / f"{('style', 'detail', 'char')[i % 3]}_{i}.safetensors").touch()
        if i % 10 == 0:
            (folder / f"{('style', 'detail', 'char')[i % 3]}_{i}.png").touch()
    catalog = Catalog(folder)
    os.utime(folder)  # a changed folder: the first query relists it
    start = time.perf_counter()
    catalog.search("")
    relist = (time.perf_counter() - start) * 1000
    worst = 0.0
    for query in QUERIES * 5:
        start = time.perf_counter()
        catalog.search(query)
        worst = max(worst, (time.perf_counter() - start) * 1000)
    return [Result("lora_autocomplete_ms", round(worst, 3), "ms", 50.0),
            Result("lora_relist_ms", round(relist, 2), "ms", 500.0)]
