"""/shorten: which words of a prompt matter to the model, measured with its own text encoder.

Midjourney's /shorten lists a prompt's words with weights and offers five shorter prompts.
Tessera measures each word the way the model itself reads the prompt: the prompt is encoded
with the model's text encoder(s) (SD 1.x: CLIP ViT-L's pooled output; SDXL: both encoders'
pooled outputs side by side), then encoded again with each word left out, all in one batch.
A word's weight is how far its absence moves the embedding (`1 - cosine similarity`),
divided by the largest such move, so the most important word weighs 1.00. Words past the
first 75 tokens (one CLIP window) are not measured: the pooled embedding never sees them.

The five shorter prompts keep the heaviest 80%, 65%, 50%, 35% and 20% of the words (at
least one), in their original order, with the prompt's image links in front and its
--parameters behind, as typed; duplicates and the full prompt itself are left out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.diffusion.conditioning import PromptEncoder
from engine.errors import PromptError
from engine.prompt import Expansion

__all__ = ["KEEP_FRACTIONS", "SHORTEN_MAX_WORDS", "ShortenTask", "Shortening", "WordWeight", "shorten"]

SHORTEN_MAX_WORDS = 60  # encodes (words + 1) texts: bounded before any work
KEEP_FRACTIONS = (0.8, 0.65, 0.5, 0.35, 0.2)
MAX_WORD_CHARS = 100  # the prompt parser's bound on one word (engine.prompt)
MAX_PART_CHARS = 8000  # a task's image links or parameters as typed (the prompt's own length bound)
MAX_SHOWN_PROMPT_CHARS = 10_000


@dataclass(frozen=True)
class WordWeight:
    word: str
    weight: float  # 0..1, 1 for the word that matters most

    def to_json(self) -> dict:
        return {"word": self.word, "weight": self.weight}

    @classmethod
    def from_json(cls, data: Any) -> WordWeight:
        if not isinstance(data, dict) or not isinstance(data.get("word"), str) or \
                not 0 < len(data["word"]) <= MAX_WORD_CHARS:
            raise ValueError("a word weight needs a word of 1 to 100 characters")
        weight = data.get("weight")
        if isinstance(weight, bool) or not isinstance(weight, int | float) or not 0 <= weight <= 1:
            raise ValueError("a word's weight must be a number from 0 to 1")
        return cls(data["word"], float(weight))


@dataclass(frozen=True)
class Shortening:
    words: tuple[WordWeight, ...]
    prompts: tuple[str, ...]  # up to five, longest first

    def to_json(self) -> dict:
        return {"words": [w.to_json() for w in self.words], "prompts": list(self.prompts)}

    @classmethod
    def from_json(cls, data: Any) -> Shortening:
        """Read back a stored or received answer, bounded (a Redis worker's reply is a stranger's
        bytes until checked): at most SHORTEN_MAX_WORDS words and five prompts."""
        if not isinstance(data, dict):
            raise ValueError("a /shorten answer must be an object")
        words, prompts = data.get("words"), data.get("prompts")
        if not isinstance(words, list) or not 0 < len(words) <= SHORTEN_MAX_WORDS:
            raise ValueError(f"a /shorten answer has 1 to {SHORTEN_MAX_WORDS} words")
        if not isinstance(prompts, list) or len(prompts) > len(KEEP_FRACTIONS) or not all(
                isinstance(p, str) and 0 < len(p) <= MAX_SHOWN_PROMPT_CHARS for p in prompts):
            raise ValueError(f"a /shorten answer has at most {len(KEEP_FRACTIONS)} prompts of text")
        return cls(tuple(WordWeight.from_json(w) for w in words), tuple(prompts))


@dataclass(frozen=True)
class ShortenTask:
    """What /shorten measures, apart from the parsed prompt: its words, and the image links
    (`front`) and --parameters (`back`) that every shorter prompt keeps as typed. Plain
    strings, so a queue job carries it in its options (and a Redis worker gets no prompt to
    parse again)."""

    words: tuple[str, ...]
    front: str = ""
    back: str = ""

    @classmethod
    def from_expansion(cls, expansion: Expansion) -> ShortenTask:
        """Raises `PromptError` for no words or too many, or parts longer than a job may carry:
        the same check (`from_options`) a worker makes, so it never fails there instead."""
        text = " ".join(p.text for p in expansion.prompts if p.weight > 0)
        return cls.from_options({"words": text, "front": " ".join(expansion.images),
                                 "back": " ".join(use.as_written(limit=10_000) for use in expansion.parameters())})

    def to_options(self) -> dict[str, str]:
        return {"words": " ".join(self.words), "front": self.front, "back": self.back}

    @classmethod
    def from_options(cls, options: Any) -> ShortenTask:
        """From a job's options, bounded before any encoder runs (raises `PromptError`)."""
        if not isinstance(options, dict):
            raise PromptError("this /shorten job has no words to measure; run /shorten again.")
        words, front, back = (options.get(name, "") for name in ("words", "front", "back"))
        if not all(isinstance(part, str) for part in (words, front, back)):
            raise PromptError("this /shorten job is not one Tessera made; run /shorten again.")
        if max(len(words), len(front), len(back)) > MAX_PART_CHARS:
            raise PromptError(f"/shorten measures prompts of up to {MAX_PART_CHARS} characters of words, "
                              "image links or parameters; shorten it by hand first.")
        split = [w for w in words.split() if any(c.isalnum() for c in w)]
        if not split:
            raise PromptError("/shorten needs a prompt with words, like: a red lighthouse on a cliff at dusk")
        if len(split) > SHORTEN_MAX_WORDS:
            raise PromptError(f"/shorten measures prompts of up to {SHORTEN_MAX_WORDS} words; this one has {len(split)}.")
        if any(len(w) > MAX_WORD_CHARS for w in split):
            raise PromptError(f"/shorten measures words of up to {MAX_WORD_CHARS} characters; split the longest one.")
        return cls(tuple(split), front, back)


def _pooled(encoder: PromptEncoder, texts: list[str]) -> Any:
    """(len(texts), D): each text's pooled embedding from every text encoder, concatenated."""
    import torch
    from diffusers.utils.torch_utils import get_module_execution_device

    parts = []
    for tokenizer, text_encoder in encoder.encoders:
        ids = tokenizer(texts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                        return_tensors="pt").input_ids
        out = text_encoder(ids.to(get_module_execution_device(text_encoder)))
        vector = getattr(out, "text_embeds", None)
        parts.append((vector if vector is not None else out.pooler_output).float().cpu())
    return torch.cat(parts, dim=-1)


def shorten(encoder: PromptEncoder, task: ShortenTask) -> Shortening:
    """Word weights and up to five shorter prompts for one prompt (raises `PromptError`)."""
    import torch

    words = list(task.words)
    texts = [" ".join(words)] + [" ".join(words[:i] + words[i + 1:]) for i in range(len(words))]
    with torch.inference_mode():
        vectors = _pooled(encoder, texts)
    distances = 1 - torch.nn.functional.cosine_similarity(vectors[1:], vectors[:1].expand_as(vectors[1:]), dim=-1)
    distances = distances.clamp(min=0)
    top = float(distances.max()) if len(words) > 1 else 0.0
    weights = [round(float(d) / top, 2) if top > 0 else 1.0 for d in distances]
    heaviest = sorted(range(len(words)), key=lambda i: (-weights[i], i))
    front, back = task.front, task.back
    prompts: list[str] = []
    for fraction in KEEP_FRACTIONS:
        keep = set(heaviest[:max(1, round(len(words) * fraction))])
        if len(keep) == len(words):
            continue
        body = " ".join(w for i, w in enumerate(words) if i in keep)
        prompt = " ".join(part for part in (front, body, back) if part)
        if prompt not in prompts:
            prompts.append(prompt)
    shown = [w.strip(",.;:!?\"'()") or w for w in words]  # as shown; the prompts keep them as typed
    return Shortening(words=tuple(WordWeight(w, weights[i]) for i, w in enumerate(shown)), prompts=tuple(prompts))
