"""`prompt_parse_ms` and `prompt_parse_hostile_ms`: how long `engine.prompt.parse` takes.

The bot parses on the event loop before it queues anything, so parsing must stay far below a
frame of Discord latency (goal <= 10 ms; typical is well under 0.1 ms). The corpus mixes what
people paste from Midjourney communities: plain text, `::` weights, `--parameters`, image
links, `{}` permutations (up to the 40-expansion limit), a near-limit long prompt and prompts
that are refused (refusals are parsed on the same path).

`prompt_parse_hostile_ms` is the worst single parse over generated 6,000-character prompts
made of long runs of the parser's own special tokens (issue 13: `--ar 111…:111…x` once took
261 s in a backtracking pattern). Each prompt counts the fastest of 3 parses, so a scheduler
hiccup is not mistaken for a slow path; the goal is 50 ms. `tests/test_prompt_hostile.py`
draws its property-test prompts from the same pieces (`hostile`).
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Sequence

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


# --- hostile prompts ---------------------------------------------------------------------

HOSTILE_LENGTH = 6000  # PROMPT_MAX_LENGTH's default: the longest prompt the bot accepts
# What a hostile prompt is made of: the grammar's special characters and words, alone and in
# the pairs that make patterns try many ways to split a run (digits around `:` and `.`, `::`
# then a number, `--`/`—` then a letter, braces, commas and escapes, links, parameter names).
HOSTILE_PIECES: tuple[str, ...] = (
    "--", "—", "::", ":", ".", ",", "{", "}", "\\", " ", "\n", "-", "1", "9", "0", "\u0663", "a", "Z",
    "1:", "1.", ".5", "::2 ", "::-1 ", "::1.", "—a", "--a ", "{a,", "a}", "{a}", "\\,", "\\{", "a, ",
    "https://x.io/a.png ", "<https://x.io/b.webp> ", "http://", "--ar ", "--aspect ", "—ar ", "--no ",
    "--seed ", "--q ", "--s ", "--stop ", "--tile ", "--r ", "--iw ", "--style ", "--v ", "--niji ",
    "--sref ", "--cw ", "--stylise ", "16:9 ", "1.5:1 ", "cat ",
)
# How a hostile prompt may start: put the runs where a parameter's value, a weight, an image
# list or a permutation is read.
HOSTILE_PREFIXES: tuple[str, ...] = (
    "", "a cat ", "a cat --ar ", "a cat —ar ", "a --aspect ", "a --no ", "a --seed ", "a --iw ", "a --q ",
    "a --niji ", "a --sref ", "a::", "a --", "{a, b, c, d} ", "{a,{b,c}} ", "https://x.io/a.png ",
)
HOSTILE_SUFFIXES: tuple[str, ...] = ("", "x", " ", ":", ".", "}", "::", "--", " --tile")


def hostile(prefix: str, runs: Sequence[tuple[str, int]], suffix: str = "", length: int = HOSTILE_LENGTH) -> str:
    """`prefix`, then each run's piece repeated, then `suffix`: exactly `length` characters.

    A run `(piece, share)` fills `share` parts of the room left (a piece may be cut at the
    end of its run); share 0 writes the piece once, like the `:` between two digit runs.
    """
    once = sum(len(piece) for piece, share in runs if share == 0)
    room = max(0, length - len(prefix) - len(suffix) - once)
    shares = sum(share for _, share in runs) or 1
    body: list[str] = []
    for piece, share in runs:
        if share == 0:
            body.append(piece)
            continue
        size = room * share // shares
        body.append((piece * (size // len(piece) + 1))[:size])
    text = prefix + "".join(body)
    return (text + "x" * (length - len(text) - len(suffix)))[: length - len(suffix)] + suffix


# The prompt of issue 13 (1,995 ones, a colon, 3,990 ones, an x), then its cousins.
ISSUE_PROMPTS: tuple[str, ...] = (
    "a cat --ar " + "1" * 1995 + ":" + "1" * 3990 + "x",
    hostile("a cat --ar ", [("9", 1), (":", 0), ("0", 2)], "x"),
    hostile("a cat --ar ", [("1", 1), (":", 0), ("1", 1), (":", 0), ("1", 1)], "x"),
    hostile("a cat --ar ", [("1:", 1)], "x"),
    hostile("a cat --ar ", [("1", 1), (".", 0), ("1", 1), (":", 0), ("1", 1)], "x"),
)


def hostile_corpus(count: int, seed: int = 13) -> list[str]:
    """`count` hostile prompts: the issue's, then random runs of `HOSTILE_PIECES` (reproducible)."""
    rng = random.Random(seed)
    corpus = list(ISSUE_PROMPTS)
    while len(corpus) < count:
        runs = [(rng.choice(HOSTILE_PIECES), rng.randint(0, 3)) for _ in range(rng.randint(1, 4))]
        if all(share == 0 for _, share in runs):
            runs[0] = (runs[0][0], 1)
        corpus.append(hostile(rng.choice(HOSTILE_PREFIXES), runs, rng.choice(HOSTILE_SUFFIXES)))
    return corpus[:count]


def parse_ms(text: str, repeats: int = 3) -> float:
    """The fastest of `repeats` parses of `text`, in ms (accepted or refused alike)."""
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        with contextlib.suppress(PromptError):
            parse(text)
        best = min(best, time.perf_counter() - started)
    return best * 1000


def measure_hostile(count: int) -> tuple[float, str]:
    """(the worst parse time over `hostile_corpus(count)` in ms, the prompt that took it)."""
    return max((parse_ms(text), text) for text in hostile_corpus(count))


def run(ctx: object) -> list[Result]:
    quick = getattr(ctx, "quick", False)
    rounds = 20 if quick else 200
    mean_ms, _ = measure(rounds)
    worst_ms, _ = measure_hostile(100 if quick else 500)
    return [Result("prompt_parse_ms", mean_ms, "ms", 10.0), Result("prompt_parse_hostile_ms", worst_ms, "ms", 50.0)]


if __name__ == "__main__":
    mean_ms, slowest_ms = measure(200)
    print(f"prompt_parse_ms {mean_ms:.4f} ms mean over {len(CORPUS)} prompts (slowest single parse {slowest_ms:.3f} ms)")
    worst_ms, worst = measure_hostile(500)
    print(f"prompt_parse_hostile_ms {worst_ms:.3f} ms worst over 500 hostile prompts (slowest starts {worst[:60]!r})")
