"""Prompt embeddings: `::` weights, negative weights, `--no`, prompts past 77 tokens, chaos.

Done directly with the pipeline's own tokenizers and text encoders, like diffusers'
`encode_prompt` but with the arithmetic Midjourney's language needs:

- **Long prompts** are not cut at CLIP's 77-token window. The tokens are split into chunks of
  75, each encoded as its own `[BOS] chunk [EOS] pad…` window, and the windows are concatenated
  along the sequence axis (what A1111 and ComfyUI do); the UNet's cross-attention takes any
  length. SDXL's pooled embedding comes from the first window.
- **`::` weights**: each positive part is encoded separately and the parts are averaged with
  normalised weights, `sum(w_i * E_i) / sum(w_i)` (SDXL: the pooled embeddings too). Parts with
  fewer windows are padded with the embedding of an empty window so lengths match.
- **Negative weights and `--no`** become the negative (unconditional) side of classifier-free
  guidance: the weighted average of the negative parts (|weight|) and the `--no` items
  (Midjourney's `--no x` is `x::-.5`, so each item has weight 0.5). Without any, it is the
  empty prompt (SDXL models with `force_zeros_for_empty_prompt`: zeros, as diffusers does).
- **`--chaos C`** (0-100) makes the images of a grid differ more: image *i* gets Gaussian noise
  of `CHAOS_EMBED_NOISE * C/100` times the embedding's standard deviation added to its
  conditioning, and its guidance scaled by `1 + CHAOS_GUIDANCE_JITTER * C/100 * u`,
  `u` uniform in [-1, 1] (never below 1). Both are drawn from a generator seeded with the
  image's own seed, so an image still reproduces alone; chaos 0 changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from engine.prompt import WeightedText

__all__ = ["CHAOS_EMBED_NOISE", "CHAOS_GUIDANCE_JITTER", "Conditioning", "PromptEncoder", "chaos_for_image",
           "pad_to_length"]

CHAOS_EMBED_NOISE = 0.35
CHAOS_GUIDANCE_JITTER = 0.5
NO_ITEM_WEIGHT = 0.5  # Midjourney: `--no x` is `x::-.5`
_CHAOS_STREAM = 0x9E3779B9  # separates the chaos generator from the image's noise generator


@dataclass
class Conditioning:
    """One request's conditioning, each tensor with batch size 1."""

    cond: Any  # (1, L, D)
    uncond: Any  # (1, L', D)
    pooled: Any = None  # SDXL (1, P); None for SD 1.x and 2.x
    uncond_pooled: Any = None


class PromptEncoder:
    """Encodes text with a loaded pipeline's tokenizers and text encoders."""

    def __init__(self, pipe: Any, family: str, device: Any, dtype: Any) -> None:
        self.pipe = pipe
        self.family = family
        self.device = device
        self.dtype = dtype
        if family == "sdxl":
            pairs = [(pipe.tokenizer, pipe.text_encoder), (pipe.tokenizer_2, pipe.text_encoder_2)]
            self.encoders = [(t, e) for t, e in pairs if t is not None and e is not None]
        else:
            self.encoders = [(pipe.tokenizer, pipe.text_encoder)]
        self._empty: tuple[Any, Any] | None = None

    def _windows(self, tokenizer: Any, text: str) -> Any:
        """Token ids of `text` as (n_windows, 77) CLIP windows."""
        import torch

        size = tokenizer.model_max_length
        inner = size - 2
        if text and hasattr(self.pipe, "maybe_convert_prompt"):  # multi-vector embeddings: `<e>` -> `<e> <e>_1`
            text = self.pipe.maybe_convert_prompt(text, tokenizer)
        ids = tokenizer(text, add_special_tokens=False, truncation=False).input_ids if text else []
        chunks = [ids[i:i + inner] for i in range(0, len(ids), inner)] or [[]]
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        rows = [[tokenizer.bos_token_id, *c, tokenizer.eos_token_id] + [pad] * (inner - len(c)) for c in chunks]
        return torch.tensor(rows, dtype=torch.long)

    def encode_text(self, text: str) -> tuple[Any, Any | None]:
        """(embeddings (1, 77 x windows, D), pooled (1, P) or None) of one text."""
        import torch
        from diffusers.utils.torch_utils import get_module_execution_device

        hidden: list[Any] = []
        pooled = None
        n_windows = None
        for k, (tokenizer, encoder) in enumerate(self.encoders):
            ids = self._windows(tokenizer, text)
            if n_windows is not None and ids.shape[0] != n_windows:  # tokenizers that split differently
                ids = _fit_windows(ids, n_windows, tokenizer)
            n_windows = ids.shape[0]
            device = get_module_execution_device(encoder)  # right with CPU offload too
            with torch.no_grad():
                if self.family == "sdxl":
                    out = encoder(ids.to(device), output_hidden_states=True)
                    states = out.hidden_states[-2]
                    if k == len(self.encoders) - 1:
                        pooled = out[0][:1]  # first window's projected pooled embedding
                else:
                    states = encoder(ids.to(device))[0]
            hidden.append(states.reshape(1, -1, states.shape[-1]))
        embeds = torch.cat(hidden, dim=-1).to(device=self.device, dtype=self.dtype)
        if pooled is not None:
            pooled = pooled.to(device=self.device, dtype=self.dtype)
        return embeds, pooled

    def forget(self) -> None:
        """Drop the cached empty-prompt encoding (a text-encoder LoRA changed what it encodes to)."""
        self._empty = None

    def empty(self) -> tuple[Any, Any | None]:
        if self._empty is None:
            self._empty = self.encode_text("")
        return self._empty

    def _average(self, parts: Sequence[tuple[str, float]]) -> tuple[Any, Any | None]:
        encoded = [(self.encode_text(text), weight) for text, weight in parts]
        length = max(e.shape[1] for (e, _), _ in encoded)
        total = sum(weight for _, weight in encoded)
        embeds = sum(pad_to_length(e, length, self.empty()[0]) * (w / total) for (e, _), w in encoded)
        pooled = None
        if encoded[0][0][1] is not None:  # the same encoders made every part: all pooled, or none
            weighted: list[tuple[Any, float]] = [(p, w) for (_, p), w in encoded]
            pooled = sum(p * (w / total) for p, w in weighted)
        return embeds, pooled

    def encode(self, prompts: Sequence[WeightedText], negative: Sequence[str]) -> Conditioning:
        """A request's conditioning from its weighted parts and `--no` items."""
        positive = [(p.text, p.weight) for p in prompts if p.weight > 0 and p.text.strip()]
        negatives = [(p.text, -p.weight) for p in prompts if p.weight < 0 and p.text.strip()]
        negatives += [(item, NO_ITEM_WEIGHT) for item in negative if item.strip()]
        cond, pooled = self._average(positive) if positive else self.empty()
        if negatives:
            uncond, uncond_pooled = self._average(negatives)
        elif self.family == "sdxl" and getattr(self.pipe.config, "force_zeros_for_empty_prompt", False):
            uncond, uncond_pooled = _zeros_like(cond), _zeros_like(pooled)
        else:
            uncond, uncond_pooled = self.empty()
        return Conditioning(cond=cond, uncond=uncond, pooled=pooled, uncond_pooled=uncond_pooled)


def _zeros_like(tensor: Any) -> Any:
    import torch

    return None if tensor is None else torch.zeros_like(tensor)


def _fit_windows(ids: Any, n: int, tokenizer: Any) -> Any:
    """Pad or cut a window list to `n` windows (SDXL's two tokenizers normally agree)."""
    import torch

    if ids.shape[0] > n:
        return ids[:n]
    inner = tokenizer.model_max_length - 2
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    empty = torch.tensor([[tokenizer.bos_token_id, tokenizer.eos_token_id] + [pad] * inner])
    return torch.cat([ids, empty.repeat(n - ids.shape[0], 1)])


def pad_to_length(embeds: Any, length: int, empty_window: Any) -> Any:
    """Extend (1, L, D) embeddings to `length` with copies of the empty window's embedding."""
    import torch

    missing = length - embeds.shape[1]
    if missing <= 0:
        return embeds
    window = empty_window.shape[1]
    reps = -(-missing // window)
    filler = empty_window.to(embeds.dtype).repeat(1, reps, 1)[:, :missing]
    return torch.cat([embeds, filler], dim=1)


def chaos_for_image(cond: Any, guidance: float, chaos: int, seed: int) -> tuple[Any, float]:
    """Image `seed`'s conditioning and guidance under `--chaos chaos` (unchanged for 0)."""
    import torch

    if chaos <= 0:
        return cond, guidance
    amount = min(chaos, 100) / 100
    gen = torch.Generator("cpu").manual_seed((seed ^ _CHAOS_STREAM) % 2**32)
    u = float(torch.rand((), generator=gen)) * 2 - 1
    noise = torch.randn(cond.shape, generator=gen, dtype=torch.float32)
    scale = CHAOS_EMBED_NOISE * amount * float(cond.float().std())
    new_cond = (cond.float() + scale * noise.to(cond.device)).to(cond.dtype)
    new_guidance = max(1.0, guidance * (1 + CHAOS_GUIDANCE_JITTER * amount * u))
    return new_cond, new_guidance
