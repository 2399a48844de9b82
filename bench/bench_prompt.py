"""`prompt_parse_ms`: mean time `engine.prompt.parse` takes per prompt over a varied corpus.

The bot parses on the event loop before it queues anything, so parsing must stay far below a
frame of Discord latency (goal <= 10 ms; typical is well under 0.1 ms). The corpus mixes what
people paste from Midjourney communities: plain text, `::` weights, `--parameters`, image
links, `{}` permutations (up to the 40-expansion limit), a near-limit long prompt and prompts
that are refused (refusals are parsed on the same path).
"""

from __future__ import annotations

import contextlib
import time

from bench.common import Result
from engine.prompt import PromptError, parse

IMG = "https://cdn.discordapp.com/attachments/1/2/reference.png?ex=6650&is=664f&hm=abc"

CORPUS: tuple[str, ...] = (
    "a lighthouse at dusk --ar 16:9 --no fog --seed 7 --q 2",
    "portrait of an old fisherman, dramatic rim light, 85mm, film grain --ar 2:3 --s 250 --style raw",
    "space:: ship",
    "space::2 ship --chaos 30",
    "cheese::1 cake:: painting::",
    "hot dog::1.5 food::-.5 --v 6",
    "still life gouache painting --no fruit, red apples, bowl",
    "{red, green} bird in the {jungle, desert}",
    "A {sculpture, painting} of a {seagull {on a pier, on a beach}, poodle {on a sofa, in a truck}}.",
    "a vibrant california poppy --ar {3:2, 1:1} --{v 5, niji}",
    "isometric cozy bedroom, pastel colors, soft lighting, blender render --ar 1:1 --tile",
    f"{IMG} {IMG} a dreamy watercolor landscape --iw 1.5 --ar 4:3",
    f"{IMG} cyberpunk city street at night, neon reflections on wet asphalt --iw .5 --weird 250",
    "minimalist logo of a fox, flat vector, white background --no text, letters, watermark --stylize 50",
    "ultra detailed macro photo of a dew drop on a leaf — morning light —ar 3:2 —q .5",
    "a cat wearing a tiny hat, studio photo --repeat 4 --seed 123456789",
    "epic fantasy castle on a cliff::2 stormy sea::1 lightning::0.5 --ar 21:9 --c 60 --stop 80",
    "{a photo, an oil painting, a pencil sketch, a 3d render} of {a red fox, an owl, a wolf} in {spring, winter}",
    "a {small\\, cozy, huge\\, empty} library interior, warm light --s {100, 750}",
    "well--lit kitchen interior, scandinavian design, wide angle --ar 16:9 --sref 123456 --sw 200",
    "anime girl with silver hair under cherry blossoms --niji 6 --style expressive --ar 9:16",
    "retro 1970s poster of a moon landing, halftone print --q 1 --s 500 --fast",
    "{1,2,3,4,5} {a,b,c,d,e,f,g,h}",
    " ".join(["a highly detailed matte painting of a sprawling futuristic city with flying cars"] * 60)
    + " --ar 16:9 --s 750 --no blur, noise",
    # refused prompts take the same path and must be as quick
    "a cat --ar 16:9 sitting on a mat",
    "a cat --ar 1.39:1",
    "a cat --chaos 150",
    "tulips:: red::-1",
    "a {red, green bird",
    "a cat --stylise 100",
    "{a,b}" * 12,
)


def measure(rounds: int) -> tuple[float, float]:
    """(mean ms per prompt, slowest single prompt ms) over `rounds` passes of the corpus."""
    for text in CORPUS:  # warm regex caches and imports
        with contextlib.suppress(PromptError):
            parse(text)
    slowest = 0.0
    started = time.perf_counter()
    for _ in range(rounds):
        for text in CORPUS:
            t0 = time.perf_counter()
            with contextlib.suppress(PromptError):
                parse(text)
            slowest = max(slowest, time.perf_counter() - t0)
    total = time.perf_counter() - started
    return total / (rounds * len(CORPUS)) * 1000, slowest * 1000


def run(ctx: object) -> list[Result]:
    rounds = 20 if getattr(ctx, "quick", False) else 200
    mean_ms, _ = measure(rounds)
    return [Result("prompt_parse_ms", mean_ms, "ms", 10.0)]


if __name__ == "__main__":
    mean_ms, slowest_ms = measure(200)
    print(f"prompt_parse_ms {mean_ms:.4f} ms mean over {len(CORPUS)} prompts (slowest single parse {slowest_ms:.3f} ms)")
