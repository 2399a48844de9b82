"""Upscaling: Tessera's tiler against the reference tiler, peak memory, and tile seams.

All three use random weights with the RealESRGAN_x4plus layer shapes (64 features, growth
32, official key names), saved to a file and loaded through `engine.upscale.realesrgan` like real ones.

- `upscale_tiled_vs_reference`: time of the reference tiler (the algorithm of Real-ESRGAN's
  `RealESRGANer.tile_process`: fixed tiles plus a 10 px pad, cropped, no blending; plain
  float32 NCHW under `no_grad`, as `RealESRGANer` runs on a CPU) divided by the time of
  `Upscaler.upscale` (even tiles, 16 px overlap, feathered seams), same tile size, image to
  image, 23 blocks. Full: 256² input, 128 px tiles (4 tiles), best of 2. Quick: 96², 48 px tiles.
- `upscale_peak_rss_mb_{256,512,1024}`: peak RSS (torch included) of a fresh process that
  loads the model and upscales one N² image ×4 with the default settings (256 px tiles, 16 px
  overlap). The model has the x4plus widths but 2 blocks: depth changes only the weights'
  size (~62 MB more for 23 blocks; blocks run one after another, so the activations of a
  tile are the same) and 23 blocks would make the 1024² run take ~5 minutes on 2 cores. The
  full run also reports `upscale_peak_rss_mb_256_23_blocks` to show that difference.
  Quick: 1024² only.
- `upscale_tile_mae`: mean absolute difference, 0–255 scale, between the tiled output of the
  timing run and an untiled run of the same image.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import Result, alternating_ratio

ROOT = Path(__file__).resolve().parent.parent
FULL_BLOCKS = 23
RSS_BLOCKS = 2  # same layer widths, so the same activations per tile; ~8x less compute


def _weights(workdir: Path, num_block: int) -> Path:
    """Random x4plus-shaped weights (built once per block count and kept in the bench cache)."""
    folder = workdir / f"upscale_weights_b{num_block}"
    path = folder / "RealESRGAN_x4plus.pth"
    if not path.exists():
        import torch

        from tests.fixtures.tiny_models import rrdbnet_state_dict

        folder.mkdir(parents=True, exist_ok=True)
        state = rrdbnet_state_dict(scale=4, num_block=num_block, num_feat=64, num_grow_ch=32)
        torch.save(state, folder / "partial.pth")
        (folder / "partial.pth").replace(path)
    return folder


def _picture(size: int) -> Any:
    """A smooth picture with some texture: closer to a generated image than pure noise."""
    import numpy as np
    from PIL import Image

    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    rng = np.random.default_rng(size)
    r = 128 + 100 * np.sin(6 * x + 3 * y)
    g = 128 + 100 * np.cos(5 * y - 2 * x)
    b = 128 + 60 * np.sin(9 * x * y)
    array = np.stack([r, g, b], -1) + rng.normal(0, 8, (size, size, 3))
    return Image.fromarray(np.clip(array, 0, 255).astype(np.uint8), "RGB")


def reference_tile_process(model: Any, image: Any, *, scale: int, tile_size: int, tile_pad: int = 10) -> Any:
    """Real-ESRGAN's `RealESRGANer.tile_process`, restated: tiles + pad, crop, no blending."""
    import torch

    batch, channel, height, width = image.shape
    output = image.new_zeros((batch, channel, height * scale, width * scale))
    tiles_x = math.ceil(width / tile_size)
    tiles_y = math.ceil(height / tile_size)
    for y in range(tiles_y):
        for x in range(tiles_x):
            ofs_x, ofs_y = x * tile_size, y * tile_size
            start_x, end_x = ofs_x, min(ofs_x + tile_size, width)
            start_y, end_y = ofs_y, min(ofs_y + tile_size, height)
            start_x_pad, end_x_pad = max(start_x - tile_pad, 0), min(end_x + tile_pad, width)
            start_y_pad, end_y_pad = max(start_y - tile_pad, 0), min(end_y + tile_pad, height)
            tile = image[:, :, start_y_pad:end_y_pad, start_x_pad:end_x_pad]
            with torch.no_grad():
                out = model(tile)
            out_x0, out_x1 = start_x * scale, end_x * scale
            out_y0, out_y1 = start_y * scale, end_y * scale
            tile_x0 = (start_x - start_x_pad) * scale
            tile_y0 = (start_y - start_y_pad) * scale
            output[:, :, out_y0:out_y1, out_x0:out_x1] = out[
                :, :, tile_y0:tile_y0 + (end_y - start_y) * scale, tile_x0:tile_x0 + (end_x - start_x) * scale]
    return output


def _reference_upscale(model: Any, picture: Any, tile: int) -> Any:
    """Image to image as `RealESRGANer.enhance` does it: array -> tensor -> tiles -> uint8."""
    import numpy as np
    import torch
    from PIL import Image

    array = np.array(picture, dtype=np.float32) / 255.0
    tensor = torch.from_numpy(np.transpose(array, (2, 0, 1))).float().unsqueeze(0)
    out = reference_tile_process(model, tensor, scale=4, tile_size=tile)
    out = out.squeeze().float().cpu().clamp_(0, 1).numpy()
    out = (np.transpose(out, (1, 2, 0)) * 255.0).round().astype(np.uint8)
    return Image.fromarray(out, "RGB")


def _timed(fn: Any, *args: Any) -> tuple[float, Any]:
    started = time.perf_counter()
    value = fn(*args)
    return time.perf_counter() - started, value


def _mae(a: Any, b: Any) -> float:
    import numpy as np

    return float(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)).mean())


def _peak_rss_mb(weights: Path, size: int, device: str) -> float:
    """Run one upscale in a fresh interpreter and return its peak RSS in MB."""
    command = [sys.executable, "-m", "bench.bench_upscale", "rss", "--weights", str(weights), "--size", str(size),
               "--device", device]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"rss run for {size}² failed: {done.stderr[-2000:]}")
    return float(json.loads(done.stdout.strip().splitlines()[-1])["peak_rss_mb"])


def run(ctx: Any) -> list[Result]:
    from spandrel import ModelLoader

    from engine.upscale.realesrgan import Upscaler

    size, tile, repeats = (96, 48, 3) if ctx.quick else (256, 128, 3)
    device = ctx.device
    full = _weights(ctx.workdir, FULL_BLOCKS)
    picture = _picture(size)

    upscaler = Upscaler(full, device=device, tile=tile, allow_download=False)
    reference = ModelLoader().load_from_file(full / "RealESRGAN_x4plus.pth").model.eval().to(device)
    warmup = _picture(tile)  # one full tile through each path: allocator and oneDNN caches warm
    upscaler.upscale(warmup, 4)
    _reference_upscale(reference, warmup, tile)

    ours_times, ref_times, outputs = [], [], {}

    def run_side(which: str, reference: Any = reference, upscaler: Any = upscaler) -> float:
        if which == "ref":
            seconds, outputs["ref"] = _timed(_reference_upscale, reference, picture, tile)
            ref_times.append(seconds)
        else:
            seconds, outputs["ours"] = _timed(upscaler.upscale, picture, 4)
            ours_times.append(seconds)
        return seconds

    ratio = alternating_ratio(lambda: run_side("ref"), lambda: run_side("ours"), repeats)
    ref_out, tiled = outputs["ref"], outputs["ours"]
    print(f"upscale {size}² ×4, tile {tile}: reference {min(ref_times):.2f} s, tessera {min(ours_times):.2f} s",
          file=sys.stderr)

    untiled = Upscaler(full, device=device, tile=0, allow_download=False)
    whole = untiled.upscale(picture, 4)
    mae = _mae(tiled, whole)
    print(f"upscale reference-vs-untiled MAE {_mae(ref_out, whole):.4f} (0-255), tessera {mae:.4f}", file=sys.stderr)
    del upscaler, untiled, reference, whole, tiled, ref_out

    results = [Result("upscale_tiled_vs_reference", ratio, "x", 1.0, ">=")]
    # --quick: one block; depth adds weights only, and the 2-minute budget needs the time.
    shallow = _weights(ctx.workdir, 1 if ctx.quick else RSS_BLOCKS)
    for side in (1024,) if ctx.quick else (256, 512, 1024):
        goal = 3072.0 if side == 1024 else None
        results.append(Result(f"upscale_peak_rss_mb_{side}", _peak_rss_mb(shallow, side, device), "MB", goal, "<="))
    if not ctx.quick:  # what the full depth adds: its weights (~62 MB), not activations
        results.append(Result("upscale_peak_rss_mb_256_23_blocks", _peak_rss_mb(full, 256, device), "MB", None))
    results.append(Result("upscale_tile_mae", mae, "", 1.0, "<="))
    return results


def _peak_kb() -> float:
    """This process's peak RSS in kB: VmHWM on Linux (ru_maxrss survives exec, so a child
    started by a big parent would report the parent's peak), else ru_maxrss."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return float(line.split()[1])
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 if sys.platform == "darwin" else float(peak)  # bytes on macOS


def _rss_main(argv: list[str]) -> int:
    """Child process: load the weights, upscale one picture ×4 with default tiling, print peak RSS."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--weights", type=Path, required=True)
    parser.add_argument("--size", type=int, required=True)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from engine.upscale.realesrgan import Upscaler

    picture = _picture(args.size)
    started = time.perf_counter()
    out = Upscaler(args.weights, device=args.device, allow_download=False).upscale(picture, 4)
    seconds = time.perf_counter() - started
    peak_kb = _peak_kb()
    print(f"rss {args.size}² -> {out.width}² in {seconds:.1f} s", file=sys.stderr)
    print(json.dumps({"peak_rss_mb": peak_kb / 1024, "seconds": seconds}))
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "rss":
        sys.exit(_rss_main(sys.argv[2:]))
    print("usage: python -m bench --only upscale", file=sys.stderr)
    sys.exit(2)
