"""A fully resolved, reproducible generation request, and how a prompt becomes one.

`resolve(expansion, profile=..., ...)` applies user defaults and the model profile to a parsed
prompt. The request records everything needed to reproduce the result; it is stored as JSON
on the job (`to_json` / `from_json`) and sent to Redis workers. Pure Python (no torch), so the
bot can resolve on the event loop and refuse a bad `--ar` before anything is queued.

How Midjourney's parameters are mapped (each documented in one place, here):

- `--ar W:H`: width x height keep roughly the model's native pixel area (`native**2`), each
  rounded to a multiple of 64 (at least 64). Ratios beyond 4:1 either way are refused.
- `--seed`: absent, a random seed 0-4294967295 is drawn and recorded. Image *i* of the grid
  uses seed `(seed + i) mod 2**32` with its own `torch.Generator`, so any single image can be
  reproduced alone, and a batch gives the same images as single runs.
- `--quality Q`: steps = round(profile steps x Q), at least 1 (.25 -> a quarter, 2 -> double).
- `--stylize S` (0-1000, default 100) -> guidance, piecewise linear and increasing:
  S=0 -> 0.4 x g (at least 1.5), S=100 -> g (the profile's guidance), S=1000 -> 2 x g.
- `--chaos C` (0-100): recorded here, applied by `engine.diffusion.conditioning.chaos_for_image`.
- `--stop N`: recorded as N (100 and absent both mean "run every step").
- `--iw W` (0-3, default 1) -> image-to-image strength = 1 - 0.7 x W / 3
  (W=0: the image prompt is only a starting point, 1.0; W=1: 0.767; W=3: 0.3).
- Variations: image-to-image from the chosen image with a new seed, strength
  subtle = 0.35 and strong = 0.7 (`VARIATION_STRENGTH`).
- `--exp E` (0-100, Midjourney's "experimental aesthetics": more detailed, more dynamic)
  raises the guidance from --stylize further: guidance x (1 + E / 400), so --exp 100 is
  1.25 x (`guidance_for_exp`).
- `--quality 5` (V1-V5 prompts only) counts as 4, Tessera's largest.
- `--sref URL…` / `--sw S` and `--cref URL…` / `--cw C`: pictures as prompts through
  IP-Adapter, mapped to adapter scales in `engine.diffusion.references` (`style_scale`,
  `character_scale`); `--sref` style codes are listed back as ignored.
- Parameters the parser keeps but the engine does not act on (`--v`, `--niji`, `--style`,
  `--weird`, `--profile`, ...) are listed in `ignored` so the bot can say so; which
  ones those are, and why, is the parameter table in `engine.prompt` (`Expansion.parameters`).
"""

from __future__ import annotations

import math
import secrets
from dataclasses import asdict, dataclass, fields, replace
from typing import Literal, Protocol

from engine.errors import PromptError
from engine.prompt import IGNORED, Expansion, Params, WeightedText

__all__ = [
    "DEFAULT_STYLIZE",
    "MAX_ASPECT",
    "SEED_MAX",
    "VARIATION_STRENGTH",
    "Defaults",
    "DraftProfile",
    "GenerationRequest",
    "ProfileLike",
    "enhance_of",
    "guidance_for_exp",
    "guidance_for_stylize",
    "random_seed",
    "reroll_of",
    "resolve",
    "size_for_aspect",
    "steps_for_quality",
    "strength_for_iw",
    "variation_of",
    "variation_of_image",
]

SEED_MAX = 4294967295
MAX_ASPECT = 4.0
DEFAULT_STYLIZE = 100
DEFAULT_IW = 1.0
DEFAULT_SW = 100
DEFAULT_CW = 100
_TUPLES = ("negative", "ignored", "image_prompts", "embeddings", "style_refs", "style_urls", "character_refs",
           "character_urls", "blend_refs")
VARIATION_STRENGTH: dict[str, float] = {"subtle": 0.35, "strong": 0.7}


@dataclass(frozen=True)
class GenerationRequest:
    prompts: tuple[WeightedText, ...]  # `::` parts with weights as written (may be negative)
    negative: tuple[str, ...]  # --no items
    width: int
    height: int
    steps: int
    guidance: float
    seed: int  # image i of the grid uses (seed + i) mod 2**32
    sampler: str
    model: str
    count: int = 4  # images in the grid
    chaos: int = 0
    tile: bool = False
    stop: int | None = None  # percent of steps, 10-100
    init_image: str | None = None  # absolute path of an init image (image prompt, variation source)
    strength: float | None = None  # image-to-image strength when init_image is set
    ignored: tuple[str, ...] = ()  # parameters accepted but not honoured, listed back to the user
    # Added by the engine (all optional, recorded for display and reproduction):
    text: str = ""  # the expansion as the user typed it
    model_family: str | None = None  # "sd1", "sd2", "sdxl"
    aspect: str = "1:1"
    quality: float = 1.0
    stylize: int = DEFAULT_STYLIZE
    image_prompts: tuple[str, ...] = ()  # URLs of image prompts (init_image is their local copy)
    image_weight: float | None = None  # --iw as given
    variation: str | None = None  # "subtle" / "strong" for variations
    safety_check: bool = False  # run the safety checker on the results (set from server/global settings)
    exp: int = 0  # --exp as given (0 when absent); already part of `guidance`
    loras: tuple[tuple[str, float], ...] = ()  # (name, weight) from --lora, sorted by name (engine.diffusion.loras)
    embeddings: tuple[str, ...] = ()  # textual-inversion names used in the prompt (as `<name>` in its text)
    draft: bool = False  # --draft/--turbo: the operator's few-step path (DRAFT_LORA + LCM, or DRAFT_MODEL_ID)
    # Edits (Zoom Out, Pan, Make Square, Vary (Region)): `init_image` is the canvas to paint on.
    mask_image: str | None = None  # absolute path of the mask PNG (white = paint, black = keep)
    feather: int = 0  # paste-back fade in pixels (0: the raw inpainting output, as diffusers gives)
    edit: str | None = None  # what the edit was, for display and metadata: "zoom 2", "pan left", ...
    parent: str | None = None  # lineage of an edit: "JOB#N", the picture it was made from (1-based)
    # Pictures as prompts (IP-Adapter, `engine.diffusion.references`): local, checked copies
    # (DATA_DIR/inputs/<sha256>.png, so the file name is the picture's hash) and their links.
    style_refs: tuple[str, ...] = ()  # --sref pictures
    style_urls: tuple[str, ...] = ()
    style_weight: int = DEFAULT_SW  # --sw 0-1000
    character_refs: tuple[str, ...] = ()  # --cref pictures
    character_urls: tuple[str, ...] = ()
    character_weight: int = DEFAULT_CW  # --cw 0-100
    blend_refs: tuple[str, ...] = ()  # /blend pictures, their embeddings averaged

    def image_seed(self, index: int) -> int:
        return (self.seed + index) % (SEED_MAX + 1)

    def batch_key(self) -> tuple:
        """Requests with equal keys may run together as one batch."""
        return (self.model, self.width, self.height, self.steps, self.sampler, self.tile,
                self.init_image is None, self.stop, self.strength if self.init_image else None,
                tuple(sorted(self.loras)), self.draft,  # adapters are set per batch: one LoRA set each
                self.mask_image is None, self.reference_key())

    @property
    def uses_references(self) -> bool:
        """Whether this request needs the IP-Adapter for sure (image links use it when set up)."""
        return bool(self.style_refs or self.character_refs or self.blend_refs)

    def reference_key(self) -> tuple:
        """What the adapter scales and embedding shapes of a batch depend on: requests that
        differ here cannot share a UNet call (the scales belong to the attention layers)."""
        return (len(self.style_refs), self.style_weight if self.style_refs else None,
                len(self.character_refs), self.character_weight if self.character_refs else None,
                len(self.blend_refs), bool(self.image_prompts) and self.variation is None,
                self.image_weight if self.image_prompts else None)

    def to_json(self) -> dict:
        data = asdict(self)
        data["prompts"] = [{"text": p.text, "weight": p.weight} for p in self.prompts]
        for name in _TUPLES:
            data[name] = list(data[name])
        data["loras"] = [[name, weight] for name, weight in self.loras]
        return data

    @classmethod
    def from_json(cls, data: dict) -> GenerationRequest:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["prompts"] = tuple(WeightedText(str(p["text"]), float(p.get("weight", 1.0)))
                                  for p in data.get("prompts", ()))
        for name in _TUPLES:
            values[name] = tuple(data.get(name) or ())
        values["loras"] = tuple((str(name), float(weight)) for name, weight in data.get("loras") or ())
        return cls(**values)


class ProfileLike(Protocol):
    """What `resolve` needs of `engine.diffusion.models.ModelProfile` (kept torch-free here).

    Read-only properties, so that the frozen `ModelProfile` (whose `family` is a `Literal`)
    satisfies it: a plain attribute here would promise callers they may assign any `str`.
    """

    @property
    def family(self) -> str: ...

    @property
    def native(self) -> int: ...

    @property
    def steps(self) -> int: ...

    @property
    def guidance(self) -> float: ...


@dataclass(frozen=True)
class Defaults:
    """A user's defaults from `/settings`; `None` means "use the model's"."""

    quality: float | None = None
    aspect: str | None = None
    stylize: int | None = None


@dataclass(frozen=True)
class DraftProfile:
    """The operator's few-step path for `--draft`/`--turbo` (DRAFT_LORA or DRAFT_MODEL_ID).

    Few-step models are trained for their own steps and guidance, so --quality and --stylize
    do not apply to a draft and the 1.5 floor on guidance is not used (LCM-LoRA wants 1-2,
    turbo models 0-1). `model` is None to draw with the job's model plus the draft LoRA.
    """

    steps: int = 4
    guidance: float = 1.0
    sampler: str = "lcm"
    model: str | None = None


def enhance_of(parent: GenerationRequest, *, profile: ProfileLike, model: str, sampler: str,
               defaults: Defaults | None = None) -> GenerationRequest:
    """The full-quality version of a draft: the same seeds, prompt and size, with the steps,
    guidance, sampler and model a normal job gets (Enhance under a draft grid)."""
    if not parent.draft:
        raise PromptError("only a draft can be enhanced (this job was not made with --draft)")
    defaults = defaults or Defaults()
    quality = parent.quality if parent.quality else (defaults.quality or 1.0)
    return replace(parent, draft=False, model=model, sampler=sampler, model_family=profile.family,
                   steps=steps_for_quality(profile.steps, min(quality, 4.0)),
                   guidance=guidance_for_exp(guidance_for_stylize(parent.stylize, profile.guidance), parent.exp))


def random_seed() -> int:
    return secrets.randbelow(SEED_MAX + 1)


def _ratio(aspect: str) -> tuple[int, int]:
    try:
        w_text, h_text = aspect.split(":")
        w, h = int(w_text), int(h_text)
    except ValueError:
        raise PromptError(f"--ar must be W:H with whole numbers, like 16:9, got {aspect}") from None
    if w <= 0 or h <= 0:
        raise PromptError(f"--ar must be W:H with whole positive numbers, like 16:9, got {aspect}")
    return w, h


def size_for_aspect(aspect: str, native: int) -> tuple[int, int]:
    """(width, height) for `aspect` keeping about `native**2` pixels, multiples of 64."""
    w, h = _ratio(aspect)
    if max(w, h) / min(w, h) > MAX_ASPECT:
        raise PromptError(f"--ar {aspect} is too extreme: ratios from 1:4 to 4:1 are allowed")
    ideal_w = native * math.sqrt(w / h)
    ideal_h = native * math.sqrt(h / w)
    return max(64, round(ideal_w / 64) * 64), max(64, round(ideal_h / 64) * 64)


def steps_for_quality(profile_steps: int, quality: float) -> int:
    return max(1, round(profile_steps * quality))


def guidance_for_stylize(stylize: int, default_guidance: float) -> float:
    """Monotonic: 0 -> 0.4 x g (>= 1.5), 100 -> g, 1000 -> 2 x g; linear in between."""
    s = min(max(stylize, 0), 1000)
    low = max(1.5, 0.4 * default_guidance)
    if s <= DEFAULT_STYLIZE:
        value = low + (default_guidance - low) * s / DEFAULT_STYLIZE
    else:
        value = default_guidance + default_guidance * (s - DEFAULT_STYLIZE) / (1000 - DEFAULT_STYLIZE)
    return round(value, 4)


def guidance_for_exp(guidance: float, exp: int) -> float:
    """--exp 0..100 on top of --stylize's guidance: x1 .. x1.25, increasing.

    Midjourney's --exp makes images "more detailed, dynamic and tone-mapped"; in a diffusion
    model stronger guidance does that (more contrast and detail), and a quarter more at most
    keeps --s 1000 --exp 100 short of the burnt look very high guidance gives.
    """
    e = min(max(exp, 0), 100)
    return round(guidance * (1 + e / 400), 4)


def strength_for_iw(iw: float) -> float:
    """--iw 0..3 -> strength 1.0..0.3: a higher image weight keeps more of the image."""
    return round(1.0 - 0.7 * min(max(iw, 0.0), 3.0) / 3.0, 4)


def _ignored(expansion: Expansion, *, init_image: bool = False) -> tuple[str, ...]:
    """The parameters this expansion set that Tessera accepts but does not use, as typed.

    Which those are comes from the parameter table (`Expansion.parameters`), the same
    statuses `tessera parse` shows, so the bot and the CLI never disagree. `init_image`: the
    request starts from a picture the text does not show (`/imagine`'s `image` attachment),
    so `--iw` is used after all.
    """
    out: list[str] = []
    for use in expansion.parameters():
        if use.status != IGNORED or (use.name == "iw" and init_image):
            continue
        text = "--v" + use.as_written()[len("--version"):] if use.name == "version" else use.as_written()
        out.append(f"{text} (no image prompt)" if use.name == "iw" else text)
    for name in ("sref", "cref"):
        values = expansion.params.values(name)
        links = expansion.reference_links(name)
        codes = [v for v in values if "://" not in v]
        if codes and links:  # the parameter is applied; its codes are not
            out.append(f"--{name} {' '.join(codes)} (style codes)")
        if any("::" in v for v in values if "://" in v):
            out.append(f"--{name} ::weights (every reference picture weighs the same)")
    return tuple(out)


def resolve(expansion: Expansion, *, profile: ProfileLike, model: str, sampler: str,
            defaults: Defaults | None = None, seed: int | None = None,
            init_image: str | None = None, draft: DraftProfile | None = None, style_refs: tuple[str, ...] = (),
            character_refs: tuple[str, ...] = ()) -> GenerationRequest:
    """Turn one parsed expansion into a request for `model` (raises `PromptError`).

    `seed` is used when the prompt has no `--seed` (else a random one is drawn).
    `init_image` is the local copy of the expansion's image prompts (fetched and blended by
    the caller with `engine.imaging.fetch`); without it the request has no image-to-image.
    `style_refs` / `character_refs` are the local copies of the `--sref` / `--cref` links
    (`Expansion.reference_links`), one file per link, in order; without them those
    parameters are not applied.
    """
    defaults = defaults or Defaults()
    p = expansion.params
    aspect = p.ar or defaults.aspect or "1:1"
    width, height = size_for_aspect(aspect, profile.native)
    quality = p.quality if p.quality is not None else (defaults.quality or 1.0)
    stylize = p.stylize if p.stylize is not None else (
        defaults.stylize if defaults.stylize is not None else DEFAULT_STYLIZE)
    chosen_seed = p.seed if p.seed is not None else (seed if seed is not None else random_seed())
    iw = p.iw if p.iw is not None else DEFAULT_IW
    exp = p.exp or 0
    steps = steps_for_quality(profile.steps, min(quality, 4.0))
    guidance = guidance_for_exp(guidance_for_stylize(stylize, profile.guidance), exp)
    if p.draft:
        if draft is None:
            raise PromptError("--draft is not set up on this bot (the operator sets DRAFT_LORA or DRAFT_MODEL_ID); "
                              "use --q .5 for a faster image")
        steps, guidance, sampler, model = draft.steps, draft.guidance, draft.sampler, draft.model or model
    return GenerationRequest(
        prompts=tuple(expansion.prompts),
        negative=tuple(expansion.negative),
        width=width,
        height=height,
        steps=steps,
        guidance=guidance,
        seed=chosen_seed % (SEED_MAX + 1),
        sampler=sampler,
        model=model,
        chaos=p.chaos or 0,
        tile=p.tile,
        stop=p.stop if p.stop is not None and p.stop < 100 else None,
        init_image=init_image,
        strength=strength_for_iw(iw) if init_image else None,
        ignored=_ignored(expansion, init_image=init_image is not None),
        text=expansion.source,
        model_family=profile.family,
        aspect=aspect,
        quality=quality,
        stylize=stylize,
        image_prompts=tuple(expansion.images),
        image_weight=p.iw,
        exp=exp,
        loras=p.loras,
        embeddings=expansion.embeddings,
        draft=p.draft,
        style_refs=tuple(style_refs),
        style_urls=expansion.reference_links("sref") if style_refs else (),
        style_weight=int(p.extra.get("sw") or DEFAULT_SW),
        character_refs=tuple(character_refs),
        character_urls=expansion.reference_links("cref") if character_refs else (),
        character_weight=int(p.extra.get("cw") or DEFAULT_CW),
    )


def variation_of(parent: GenerationRequest, *, index: int, init_image: str,
                 strength: Literal["subtle", "strong"], expansion: Expansion | None = None,
                 seed: int | None = None) -> GenerationRequest:
    """Four variations of image `index` of `parent`: image-to-image from that image (its
    local path is `init_image`) with a new seed. `expansion` (remix) replaces the prompt."""
    if strength not in VARIATION_STRENGTH:
        raise PromptError(f"variation strength must be subtle or strong, got {strength}")
    if not 0 <= index < parent.count:
        raise PromptError(f"image index must be from 1 to {parent.count}, got {index + 1}")
    changes: dict = {}
    if expansion is not None:
        changes = {"prompts": tuple(expansion.prompts), "negative": tuple(expansion.negative),
                   "text": expansion.source}
    return replace(parent, init_image=init_image, strength=VARIATION_STRENGTH[strength],
                   seed=random_seed() if seed is None else seed % (SEED_MAX + 1),
                   image_prompts=(), image_weight=None, variation=strength, **changes)


def variation_of_image(init_image: str, image_size: tuple[int, int], *, profile: ProfileLike,
                       model: str, sampler: str, strength: Literal["subtle", "strong"] = "strong",
                       expansion: Expansion | None = None, seed: int | None = None) -> GenerationRequest:
    """Variations of an uploaded image (DALL-E 2's "variations"): the grid takes the image's
    aspect (nearest whole ratio, within 1:4-4:1) at the model's native area."""
    w, h = image_size
    ratio = min(max(w / h, 1 / MAX_ASPECT), MAX_ASPECT)
    aspect = f"{round(ratio * 100)}:100"
    base = resolve(expansion or Expansion(prompts=(), negative=(), images=(), params=Params(), source=""),
                   profile=profile, model=model, sampler=sampler, seed=seed)
    width, height = size_for_aspect(aspect, profile.native)
    return replace(base, width=width, height=height, aspect=aspect, init_image=init_image,
                   strength=VARIATION_STRENGTH[strength], variation=strength)


def reroll_of(parent: GenerationRequest, seed: int | None = None) -> GenerationRequest:
    """The same request with a new seed (Midjourney's 🔄)."""
    return replace(parent, seed=random_seed() if seed is None else seed % (SEED_MAX + 1))
