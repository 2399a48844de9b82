"""LoRAs and textual-inversion embeddings from the operator's folders, applied per batch.

Files: `LORA_DIR` and `EMBEDDINGS_DIR` hold `.safetensors` files (A1111, Civitai, kohya or
diffusers layouts: whatever diffusers' `load_lora_weights` / `load_textual_inversion` read).
A file's name without `.safetensors` is its name in prompts (`--lora name:0.8`, `<name>`);
an image beside it with the same stem (`name.png`, `.jpg`, `.jpeg`, `.webp`) is its preview.

Why the pieces are shaped this way:

- **Listing** (`Catalog`) is cached and refreshed only when the folder's mtime changes: the
  bot's autocomplete asks on the event loop for every key press and must answer within
  Discord's 3 seconds with thousands of files (`bench/bench_loras.py`). Names are bounded
  (`NAME_MAX`, a plain charset) so a file name can never smuggle markup into a prompt.
- **Loading** (`LoraCache`) keeps each file's state dict keyed by path and mtime in a bounded
  LRU, so switching back to a LoRA costs no disk read; a file replaced on disk is read again.
- **Applying** (`LoraApplier.activate`): every adapter a model has seen stays loaded in the
  pipeline under its own adapter name (peft keeps them side by side), and before each batch
  `set_adapters(names, weights)` activates exactly the batch's set; a batch with none
  disables LoRA layers altogether. Batches group by their LoRA set (`GenerationRequest.batch_key`),
  so jobs with different LoRAs never share a UNet call and cannot leak into each other.
- **Family check**: an SDXL LoRA on an SD 1.x model (or the reverse) fails inside diffusers
  with a shape error deep in peft; the width of its cross-attention (`lora_context_width`) is
  read first so the user is told "this LoRA is for SDXL" instead.
- **A load that fails part-way** (diffusers loads unet, text_encoder, then SDXL's
  text_encoder_2, and undoes none of them when a later one fails) is removed again, and the
  next batch sets its adapters afresh: a broken file must not act on anyone's later jobs.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import ModelError, PromptError

__all__ = ["NAME_MAX", "Catalog", "CatalogEntry", "LoraApplier", "LoraCache", "lora_context_width", "valid_name"]

log = logging.getLogger(__name__)

NAME_MAX = 64  # a LoRA's or embedding's name (its file stem), as typed in prompts
CATALOG_MAX = 10_000  # files listed from one folder: more is refused at listing, not at every key press
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}")
_PREVIEW_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
DRAFT_ADAPTER = "tessera_draft"  # the adapter name of DRAFT_LORA (never a file name: has no dot rule clash)


def valid_name(name: str) -> bool:
    """A name usable in prompts: letters, digits, `_`, `-`, `.`; at most `NAME_MAX` characters."""
    return len(name) <= NAME_MAX and _NAME.fullmatch(name) is not None


@dataclass(frozen=True)
class CatalogEntry:
    name: str
    path: Path
    preview: Path | None


class Catalog:
    """The `.safetensors` files of one folder by name, relisted when the folder changes.

    Safe to call from several threads (a lock guards the refresh). Files whose stem is not a
    `valid_name` are left out (and logged once per listing): they could not be typed.
    """

    def __init__(self, folder: Path | str | None) -> None:
        self.folder = Path(folder).expanduser() if folder else None
        self._lock = threading.Lock()
        self._mtime: int | None = None
        self._entries: dict[str, CatalogEntry] = {}
        self._lower: list[tuple[str, str]] = []  # (lowercased, name), sorted

    def _refresh(self) -> None:
        if self.folder is None:
            return
        try:
            mtime = os.stat(self.folder).st_mtime_ns
        except OSError:
            self._mtime, self._entries, self._lower = None, {}, []
            return
        if mtime == self._mtime:
            return
        entries: dict[str, CatalogEntry] = {}
        previews: dict[str, Path] = {}
        skipped = 0
        with os.scandir(self.folder) as scan:
            for item in scan:
                stem, dot, suffix = item.name.rpartition(".")
                if not dot:
                    continue
                suffix = "." + suffix.lower()
                if suffix in _PREVIEW_SUFFIXES:
                    previews.setdefault(stem, Path(item.path))
                elif suffix == ".safetensors":
                    if not valid_name(stem):
                        skipped += 1
                        continue
                    if len(entries) >= CATALOG_MAX:
                        raise ModelError(f"the folder {self.folder} has more than {CATALOG_MAX:,} .safetensors "
                                         "files; split it or remove some")
                    entries[stem] = CatalogEntry(stem, Path(item.path), None)
        if skipped:
            log.warning("%d files in %s have names that cannot be typed in a prompt (letters, digits, _ - . only, "
                        "at most %d characters); they are not listed", skipped, self.folder, NAME_MAX)
        for stem, entry in entries.items():
            if stem in previews:
                entries[stem] = CatalogEntry(stem, entry.path, previews[stem])
        self._entries = entries
        self._lower = sorted((name.lower(), name) for name in entries)
        self._mtime = mtime

    def entries(self) -> dict[str, CatalogEntry]:
        with self._lock:
            self._refresh()
            return self._entries

    def names(self) -> frozenset[str]:
        return frozenset(self.entries())

    def get(self, name: str) -> CatalogEntry | None:
        return self.entries().get(name)

    def search(self, query: str, limit: int = 25) -> list[str]:
        """Names for autocomplete: those starting with `query` first, then those containing it
        (case-insensitive), at most `limit`. Discord sends at most 100 characters."""
        query = query.strip().lower()[:NAME_MAX]
        with self._lock:
            self._refresh()
            lower = self._lower
        starts = [name for low, name in lower if low.startswith(query)]
        if len(starts) >= limit:
            return starts[:limit]
        contains = [name for low, name in lower if query in low and not low.startswith(query)]
        return (starts + contains)[:limit]


def lora_context_width(state_dict: dict[str, Any]) -> int | None:
    """The text-feature width a LoRA's UNet cross-attention expects (768 for SD 1.x, 1024 for
    SD 2.x, 2048 for SDXL), read from its `attn2.to_k` down matrix; None when it has none."""
    for key, value in state_dict.items():
        shape: tuple[int, ...] = tuple(getattr(value, "shape", ()))
        # The down (A) matrix by its own path part: "down" anywhere also matches the *up* matrices
        # of `down_blocks` (their width is the rank), which come first when a file mixes dtypes.
        # kohya `….lora_down.weight`, diffusers `….lora.down.weight`, peft `….lora_A[.adapter].weight`.
        if "attn2" in key and "to_k" in key and len(shape) == 2 and _DOWN_PARTS.intersection(key.split(".")):
            return int(shape[-1])
    return None


_DOWN_PARTS = frozenset({"lora_down", "down", "lora_A"})


class LoraCache:
    """State dicts of LoRA files by (path, mtime), least recently used dropped past `size`."""

    def __init__(self, size: int = 16) -> None:
        self.size = max(1, size)
        self._items: OrderedDict[tuple[str, int], dict[str, Any]] = OrderedDict()
        self.reads = 0  # files read from disk (tests and metrics)

    def get(self, path: Path) -> dict[str, Any]:
        from safetensors.torch import load_file

        try:
            key = (str(path), os.stat(path).st_mtime_ns)
        except OSError:
            raise ModelError(f"the LoRA file {path.name} is no longer on disk") from None
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        try:
            state = load_file(str(path))
        except Exception as exc:
            raise ModelError(f"the LoRA file {path.name} cannot be read: {exc}") from None
        self.reads += 1
        self._items[key] = state
        while len(self._items) > self.size:
            self._items.popitem(last=False)
        return state


def _adapter(name: str) -> str:
    """The peft adapter name of LoRA `name`: no dots (they are module paths), and one name per
    file: `_` `.` `-` become `__` `_d` `_h` (a prefix-free code), so `a.b`, `a-b` and `a_b`,
    three files, stay three adapters instead of replacing one another."""
    return "lora_" + name.replace("_", "__").replace(".", "_d").replace("-", "_h")


class LoraApplier:
    """Keeps one pipeline's adapters and activates a batch's set (use from the GPU thread).

    `loras` are (name, weight) pairs: `name` is a `Catalog` entry, or `DRAFT_ADAPTER` for the
    operator's draft LoRA (`draft_path`).
    """

    def __init__(self, pipe: Any, family: str, catalog: Catalog | None, *, draft_path: Path | None = None,
                 cache: LoraCache | None = None) -> None:
        self.pipe = pipe
        self.family = family
        self.catalog = catalog
        self.draft_path = draft_path
        self.cache = cache or LoraCache()
        self._loaded: dict[str, tuple[str, int]] = {}  # adapter -> (path, mtime) it was loaded from
        self._active: tuple[tuple[str, float], ...] | None = ()

    def _path(self, name: str) -> Path:
        if name == DRAFT_ADAPTER:
            if self.draft_path is None:
                raise ModelError("draft mode is not set up here: DRAFT_LORA is not configured")
            return self.draft_path
        entry = self.catalog.get(name) if self.catalog is not None else None
        if entry is None:
            raise PromptError(f"there is no LoRA named {name} any more (it was removed from the LoRA folder)")
        return entry.path

    def _ensure(self, name: str) -> str:
        path = self._path(name)
        adapter = _adapter(name)
        stamp = (str(path), os.stat(path).st_mtime_ns)
        if self._loaded.get(adapter) == stamp:
            return adapter
        if adapter in self._loaded:  # the file changed on disk: load the new one
            self.pipe.delete_adapters([adapter])
            del self._loaded[adapter]
        state = self.cache.get(path)
        width = lora_context_width(state)
        if width is not None and width != self.pipe.unet.config.cross_attention_dim:
            family = {2048: "sdxl", 768: "sd1", 1024: "sd2"}.get(width)
            made_for = f"{_FAMILY_NAMES[family]} models" if family else f"another model ({width}-wide text features)"
            raise PromptError(f"the LoRA {name} is made for {made_for}; this model is "
                              f"{_FAMILY_NAMES.get(self.family, self.family)}, so it cannot be used here")
        try:
            # diffusers converts kohya/A1111 keys in place: give it a copy, keep the cached dict intact.
            self.pipe.load_lora_weights(dict(state), adapter_name=adapter)
        except Exception as exc:
            self._discard_partial(adapter)
            # diffusers' and peft's messages are long reports of layer names and shapes: the log
            # gets them, the member a sentence (TesseraError text is shown in Discord as it is).
            log.warning("the LoRA %s (%s) cannot be applied to this model: %s", name, path, exc, exc_info=exc)
            raise ModelError(f"the LoRA {name} does not fit this model "
                             f"({_FAMILY_NAMES.get(self.family, self.family)}); choose another one") from None
        self._loaded[adapter] = stamp
        return adapter

    def _discard_partial(self, adapter: str) -> None:
        """Remove what a failed `load_lora_weights` left behind.

        diffusers loads a LoRA one model at a time (SDXL: unet, text_encoder, text_encoder_2)
        and does not undo the models already done when a later one fails (a part that does
        not fit, out of memory): those layers stay registered and active, so every later job
        would run with them, and loading the file again fails with "adapter name already in use".
        """
        try:
            if any(adapter in names for names in self.pipe.get_list_adapters().values()):
                self.pipe.delete_adapters([adapter])
        except Exception:
            log.exception("could not remove the half-loaded LoRA adapter %s; later images may differ", adapter)

    def activate(self, loras: Sequence[tuple[str, float]]) -> bool:
        """Make exactly `loras` active (weights as given); True when anything changed.

        A LoRA at weight 0 is left out entirely, so `--lora x:0` is the model without it.
        """
        wanted = tuple((name, float(weight)) for name, weight in loras if float(weight) != 0.0)
        if wanted == self._active:
            return False
        try:
            return self._activate(wanted)
        except Exception:
            # A load that failed part-way (even once cleaned up) may have changed which adapters are
            # active on each model: the next batch sets its own set again instead of trusting `_active`.
            self._active = None
            raise

    def _activate(self, wanted: tuple[tuple[str, float], ...]) -> bool:
        if not wanted:
            if any(self.pipe.get_list_adapters().values()):  # what the models hold, not only what loaded whole
                self.pipe.disable_lora()
            self._active = ()
            return True
        adapters = [self._ensure(name) for name, _ in wanted]
        self.pipe.enable_lora()
        self.pipe.set_adapters(adapters, [weight for _, weight in wanted])
        self._active = wanted
        return True


_FAMILY_NAMES = {"sd1": "SD 1.x", "sd2": "SD 2.x", "sdxl": "SDXL"}


def embedding_token(name: str) -> str:
    """The token an embedding is known by in the text encoder: `<name>`, as A1111 users write it."""
    return f"<{name}>"


class EmbeddingLoader:
    """Loads textual-inversion embeddings into a pipeline's tokenizer(s) once each.

    An embedding is a new token (`<name>`), so a loaded one changes nothing for prompts that
    do not use it: embeddings stay loaded, unlike LoRAs. SDXL embeddings hold one tensor per
    text encoder (`clip_l`, `clip_g`); SD 1.x/2.x files hold one (`emb_params`, `string_to_param`).
    """

    def __init__(self, pipe: Any, family: str, catalog: Catalog | None) -> None:
        self.pipe = pipe
        self.family = family
        self.catalog = catalog
        self._loaded: set[str] = set()

    def ensure(self, names: Sequence[str]) -> None:
        for name in names:
            if name in self._loaded:
                continue
            entry = self.catalog.get(name) if self.catalog is not None else None
            if entry is None:
                raise PromptError(f"there is no embedding named {name} any more (it was removed from the folder)")
            self._load(name, entry.path)
            self._loaded.add(name)

    def _load(self, name: str, path: Path) -> None:
        from safetensors.torch import load_file

        token = embedding_token(name)
        try:
            state = load_file(str(path))
        except Exception as exc:
            raise ModelError(f"the embedding file {path.name} cannot be read: {exc}") from None
        try:
            if self.family == "sdxl":
                if "clip_l" not in state or "clip_g" not in state:
                    raise PromptError(f"the embedding {name} is not made for SDXL models (it has no clip_l/clip_g)")
                self.pipe.load_textual_inversion(state["clip_l"], token=token, text_encoder=self.pipe.text_encoder,
                                                 tokenizer=self.pipe.tokenizer)
                self.pipe.load_textual_inversion(state["clip_g"], token=token, text_encoder=self.pipe.text_encoder_2,
                                                 tokenizer=self.pipe.tokenizer_2)
                return
            if "clip_l" in state or "clip_g" in state:
                raise PromptError(f"the embedding {name} is made for SDXL models; this model is not SDXL")
            tensor = state.get("emb_params")
            if tensor is None:
                tensor = next(iter(state.values()))
            self.pipe.load_textual_inversion(tensor, token=token)
        except PromptError:
            raise
        except Exception as exc:
            raise PromptError(f"the embedding {name} does not fit this model: {exc}") from None


class BatchAdapters:
    """What a batch needs on the pipeline before its text is encoded: its embeddings loaded,
    exactly its LoRA set active, plus the draft LoRA for `--draft` requests."""

    def __init__(self, pipe: Any, family: str, *, lora_dir: Path | str | None = None,
                 embeddings_dir: Path | str | None = None, draft_lora: Path | str | None = None,
                 cache: LoraCache | None = None) -> None:
        self.loras = LoraApplier(pipe, family, Catalog(lora_dir) if lora_dir else None,
                                 draft_path=Path(draft_lora).expanduser() if draft_lora else None, cache=cache)
        self.embeddings = EmbeddingLoader(pipe, family, Catalog(embeddings_dir) if embeddings_dir else None)

    def prepare(self, requests: Sequence[Any]) -> bool:
        """Set up the pipeline for `requests` (one batch: equal `batch_key`, so one LoRA set).
        True when the text encoders changed (cached encodings are stale)."""
        self.embeddings.ensure(sorted({name for r in requests for name in r.embeddings}))
        first = requests[0]
        wanted = list(first.loras)
        if first.draft and self.loras.draft_path is not None:
            wanted.append((DRAFT_ADAPTER, 1.0))
        return self.loras.activate(wanted)
