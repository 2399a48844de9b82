"""Midjourney's prompt language: text, `::` weights, `--parameters`, `{a, b}` permutations.

Pure Python and fast (no torch): the bot parses every prompt on the event loop before it
queues anything, so a bad prompt is refused at once with a message fit for Discord.

The steps, in order (`parse`):
1. refuse a prompt longer than `PromptLimits.max_length`;
2. expand `{a, b}` permutations into one text per option (counting first, so a prompt that
   would make thousands of texts is refused before any is built);
3. parse each expanded text: leading image URLs (at most `PromptLimits.max_images`), the
   text with its `::` parts, then the `--parameter` section, where every word after `--x`
   belongs to `--x`.

Nothing is silently corrected: a value out of range or a word after a parameter is an error
whose message names the problem and what is allowed, because users see it verbatim.

Every member of every server is a stranger and parsing runs on the event loop, so every step
is linear in the prompt's length: the regular expressions here have no nested or adjacent
unbounded quantifiers over the same characters (none can backtrack more than a constant per
character), a parameter's value is refused above `_VALUE_MAX` characters *before* any pattern
looks at it, and loose values (`--ar 1.5:1`) are read by plain string code.
`tests/test_prompt_hostile.py` holds this to under 50 ms for 6,000-character hostile prompts.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import Any, cast

from engine.errors import PromptError

__all__ = [
    "APPLIED",
    "IGNORED",
    "SYNTAX_HELP",
    "Expansion",
    "ParameterUse",
    "Params",
    "Prompt",
    "PromptContext",
    "PromptError",
    "PromptLimits",
    "WeightedText",
    "check_shortcut",
    "expand",
    "expand_shortcuts",
    "help_text",
    "parameter_table",
    "parse",
]


@dataclass(frozen=True)
class WeightedText:
    """One `::` part of a multi-prompt: its text and its weight as written (default 1)."""

    text: str
    weight: float = 1.0


@dataclass(frozen=True)
class Params:
    """The `--parameters` of one expansion; `None` means "not given" (defaults come later)."""

    ar: str | None = None  # "W:H" as written, whole positive numbers
    seed: int | None = None
    quality: float | None = None
    stylize: int | None = None
    chaos: int | None = None
    weird: int | None = None
    stop: int | None = None
    repeat: int | None = None
    tile: bool = False
    iw: float | None = None
    style: str | None = None
    version: str | None = None  # `--v 6`, or `niji 6` from `--niji 6`
    # Every other parameter the prompt set, in the order given: name -> value as text ("" for
    # flags). Multi-valued ones (--sref, --cref, --oref, --profile) hold all their values, of
    # every repeat, in order, separated by spaces (no value has one). The parameter table in
    # this module says which of them Tessera applies (--exp) and which it ignores, and why.
    extra: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict:
        """The `params` object of the `tessera parse` contract (exactly these keys)."""
        return {name: getattr(self, name) for name in _PARAM_JSON_KEYS}

    def values(self, name: str) -> tuple[str, ...]:
        """The values of the extra parameter `name` in order (`sref` -> its links and codes)."""
        return tuple(self.extra.get(name, "").split())

    @property
    def loras(self) -> tuple[tuple[str, float], ...]:
        """`--lora name:w` values as (name, weight), one per name (the last weight given wins), sorted."""
        chosen: dict[str, float] = {}
        for word in self.values("lora"):
            name, _, weight = word.rpartition(":")
            chosen[name] = float(weight)
        return tuple(sorted(chosen.items()))

    @property
    def draft(self) -> bool:
        """`--draft` or `--turbo`: the few-step draft path (engine.request.DraftProfile)."""
        return "draft" in self.extra or "turbo" in self.extra

    @property
    def exp(self) -> int | None:
        """`--exp E` (0-100), applied by `engine.request` on top of --stylize."""
        value = self.extra.get("exp")
        return int(value) if value else None


@dataclass(frozen=True)
class ParameterUse:
    """One parameter a prompt set, as `tessera parse` and `/imagine` report it.

    `value` is as JSON shows it (a list, in order, for multi-valued ones); `status` is
    "applied" or "ignored"; `note` says how Tessera uses it, or why it does not.
    """

    name: str
    value: object
    status: str
    note: str

    def to_json(self) -> dict:
        return {"name": self.name, "value": self.value, "status": self.status, "note": self.note}

    def as_written(self, limit: int = 80) -> str:
        """`--sref 1 2`, `--tile`: the parameter as a user would type it (long values shortened)."""
        if self.value is True:
            return f"--{self.name}"
        if isinstance(self.value, list):
            text = " ".join(str(v) for v in self.value)
            if len(text) > limit:
                return f"--{self.name} ({len(self.value)} values)"
        elif isinstance(self.value, float):
            text = _fmt_number(self.value)
        else:
            text = str(self.value)
        text = f"--{self.name} {text}".rstrip()
        return text if len(text) <= limit else text[:limit] + "…"


# The keys of `params` in the `tessera parse` JSON contract, in order.
_PARAM_JSON_KEYS = (
    "ar", "seed", "quality", "stylize", "chaos", "weird", "stop", "repeat", "tile", "iw", "style", "version",
)


@dataclass(frozen=True)
class Expansion:
    """One concrete prompt after permutation expansion: what a single job generates."""

    prompts: tuple[WeightedText, ...]
    negative: tuple[str, ...]
    images: tuple[str, ...]
    params: Params
    source: str  # this expansion's text as the user would have typed it (for display)
    embeddings: tuple[str, ...] = ()  # embeddings named in the text (written `<name>` in `prompts`)

    def to_json(self) -> dict:
        """The `tessera parse` JSON shape of one expansion, plus `source` and `extra`.

        `source` and `extra` (the accepted-but-not-acted-on parameters) sit beside `params`,
        never inside it, so `from_json(to_json())` gives the same expansion back (this is
        what is stored on a job) while `params` keeps exactly the contract's keys.
        `Prompt.to_json()` leaves the two out: it is the exact `tessera parse` output.
        """
        data = self.contract_json()
        data["source"] = self.source
        data["extra"] = dict(self.params.extra)
        if self.embeddings:
            data["embeddings"] = list(self.embeddings)
        return data

    def contract_json(self) -> dict:
        """Exactly the `tessera parse` shape: prompts, negative, images, params, parameters.

        `params` keeps its original twelve keys for old consumers; `parameters` lists every
        parameter the prompt set (applied or ignored, with how or why).
        """
        return {
            "prompts": [{"text": p.text, "weight": p.weight} for p in self.prompts],
            "negative": list(self.negative),
            "images": list(self.images),
            "params": self.params.to_json(),
            "parameters": [use.to_json() for use in self.parameters()],
        }

    def parameters(self) -> tuple[ParameterUse, ...]:
        """Every parameter this expansion set, in the parameter table's order, with its status."""
        p = self.params
        niji_version = "niji" in p.extra and p.version == f"niji {p.extra['niji']}".strip()
        uses: list[ParameterUse] = []
        for spec in _SPECS:
            value: object
            if spec.name == "no":
                if not self.negative:
                    continue
                value = list(self.negative)
            elif spec.field is not None:
                value = getattr(p, spec.field)
                if value is None or value is False or (spec.name == "version" and niji_version):
                    continue
            elif spec.name in p.extra:
                text = p.extra[spec.name]
                if spec.multi:
                    value = text.split()
                elif spec.kind is bool:
                    value = True
                else:
                    value = spec.kind(text) if text else text
            else:
                continue
            status, note = spec.status, spec.note
            if spec.name == "iw" and not self.images:
                status, note = IGNORED, "no image link in front of the prompt"
            if spec.name == "sref" and not self.reference_links("sref"):
                status, note = IGNORED, "style codes name Midjourney's own style library; Tessera takes image links"
            if (spec.name == "sw" and not self.reference_links("sref")) or (spec.name == "cw" and "cref" not in p.extra):
                status, note = IGNORED, _NO_SREF_LINK if spec.name == "sw" else "no --cref"
            uses.append(ParameterUse(spec.name, value, status, note))
        return tuple(uses)

    def reference_links(self, name: str) -> tuple[str, ...]:
        """The image links of `--sref` or `--cref`, in order, with `<…>` and `::` weights removed
        (codes like 680572301 are left out: they name Midjourney's own style library)."""
        links: list[str] = []
        for value in self.params.values(name):
            body = value.rpartition("::")[0] if "::" in value else value
            if _link(body) is not None:
                links.append(body)
        return tuple(links)

    def with_references(self, sref: tuple[str, ...] = (), cref: tuple[str, ...] = ()) -> Expansion:
        """This expansion with more `--sref` / `--cref` pictures, after the links it has: the
        `/imagine` attachments, which must act exactly like typed links (`--sw`/`--cw` apply,
        the request records them, the caps count them) without being pasted into the text
        the member wrote (`source` is unchanged).

        The links come from Discord, not from the member, but each is still checked as a
        typed link would be (an http(s) link with a host and a path, bounded, one word and
        no `::` weight), so a value that would read back differently is refused here.
        """
        if not sref and not cref:
            return self
        extra = dict(self.params.extra)
        for name, links in (("sref", sref), ("cref", cref)):
            for link in links:
                if (len(link) > _LINK_MAX or _link(link) != link or "::" in link
                        or any(c.isspace() for c in link)):
                    raise PromptError(f"The picture attached as `{name}` has an address Tessera cannot use "
                                      f"({_show(link)}); attach it again or give an image link with --{name}.")
            if links:
                extra[name] = " ".join(v for v in (extra.get(name, ""), *links) if v)
        return replace(self, params=replace(self.params, extra=extra))

    @classmethod
    def from_json(cls, data: dict) -> Expansion:
        """Rebuild an expansion from `to_json()` (or from the bare `tessera parse` shape)."""
        raw = dict(data.get("params") or {})
        values: dict[str, Any] = {name: raw.get(name) for name in _PARAM_JSON_KEYS}
        values["tile"] = bool(values["tile"])
        for name in ("quality", "iw"):
            if values[name] is not None:
                values[name] = float(values[name])
        params = Params(**values, extra={str(k): str(v) for k, v in (data.get("extra") or {}).items()})
        prompts = tuple(WeightedText(str(p["text"]), float(p.get("weight", 1.0))) for p in data.get("prompts", ()))
        return cls(
            prompts=prompts,
            negative=tuple(str(n) for n in data.get("negative", ())),
            images=tuple(str(i) for i in data.get("images", ())),
            params=params,
            source=str(data.get("source") or " ".join(p.text for p in prompts)),
            embeddings=tuple(str(e) for e in data.get("embeddings", ())),
        )


@dataclass(frozen=True)
class Prompt:
    """A parsed prompt: the verbatim text and one `Expansion` per permutation, in order.

    `jobs` is the number of jobs it makes (expansions x `--repeat`).
    """

    raw: str
    expansions: tuple[Expansion, ...]

    @property
    def jobs(self) -> int:
        return sum(e.params.repeat or 1 for e in self.expansions)

    def to_json(self) -> dict:
        """The `tessera parse` output, exactly as the contract shows it."""
        return {"expansions": [e.contract_json() for e in self.expansions]}


@dataclass(frozen=True)
class PromptLimits:
    """Limits that protect the bot (PROMPT_MAX_LENGTH, PROMPT_MAX_JOBS).

    `max_expansions` is Midjourney's own cap on `{a, b}` permutations (40); `max_jobs` caps
    expansions x `--repeat` and is the operator's setting. `max_images` caps the image links
    at the front of one expansion (real Midjourney prompts use up to 8, so 10 by default):
    each one is a download, a decode and an encode later, so a prompt of hundreds of links is
    refused here, before anything is fetched. New fields go last: callers pass the first two by position.
    """

    max_length: int = 6000
    max_jobs: int = 40
    max_expansions: int = 40
    max_nesting: int = 10  # `{` inside `{` inside ...: deeper is surely a mistake
    max_images: int = 10
    # The characters all `{a, b}` expansions of one prompt may have together (never less than
    # `max_length`). Each expansion is parsed and later encoded on its own, so 40 copies of a
    # 6,000-character text would be 40 times the work of the longest prompt allowed.
    max_expanded_length: int = 24_000


@dataclass(frozen=True)
class PromptContext:
    """What a prompt may refer to beyond Midjourney's language, passed in as data (the parser
    reads no folder and no database): the LoRA and embedding names the bot has, and the
    user's and server's shortcuts.

    - `suffix`: text appended to every prompt of the user (`/prefer suffix`);
    - `options`: the user's custom `--name` -> what it stands for (`/prefer option set`);
    - `styles`: the server's `--style name` -> what it stands for (`/admin style add`).
    Expansions are text: words go before the `--parameters`, parameters after them.
    """

    loras: frozenset[str] = frozenset()
    embeddings: frozenset[str] = frozenset()
    suffix: str = ""
    options: Mapping[str, str] = field(default_factory=dict)
    styles: Mapping[str, str] = field(default_factory=dict)
    lora_check: bool = True  # False: accept any well-formed LoRA name (tools without the folder)


# --- small helpers ------------------------------------------------------------------------

_SHOW_MAX = 60


def _show(value: str) -> str:
    """A user's value as shown in an error message: short, quoted when it has spaces."""
    shown = value if len(value) <= _SHOW_MAX else value[:_SHOW_MAX] + "…"
    return f'"{shown}"' if (not shown or any(c.isspace() for c in shown)) else shown


def _fmt_number(value: float) -> str:
    """2.0 -> "2", 0.5 -> "0.5": numbers in messages as people write them."""
    return f"{value:g}"


def _normalise(text: str) -> str:
    return " ".join(text.split())


# --- permutations: {a, b, c} ----------------------------------------------------------------

# A backslash escapes `,`, `{` and `}`; unescaped braces and commas are structure. A token is
# a brace, a comma, or a run of text with its escapes: the three kinds of run character start
# differently (a `\` is only literal when no brace or comma follows), so the run never backtracks,
# and a prompt of thousands of `\,` is one token, not thousands of steps in Python.
_BRACE_TOKEN = re.compile(r"(?:[^{},\\]|\\[,{}]|\\(?![,{}]))+|[{},]")
_ESCAPE = re.compile(r"\\([,{}])")
# The most `{}` groups one prompt may have. 40 expansions need only a few; a wall of `{a}` is
# thousands, each a step of Python work before anything can be refused.
_GROUPS_MAX = 100
_STRUCTURE = frozenset("{},")


class _Group:
    """A `{...}` group: its options, each a sequence of text pieces and nested groups."""

    __slots__ = ("options",)

    def __init__(self) -> None:
        self.options: list[list[str | _Group]] = [[]]


def _where(text: str, index: int) -> str:
    """`character N (…context→{here…)` for messages that point into the prompt."""
    before = text[max(0, index - 20):index]
    after = text[index:index + 20]
    context = ("…" if index > 20 else "") + before + "→" + after + ("…" if index + 20 < len(text) else "")
    return f"character {index + 1} ({_normalise(context) or context})"


def _brace_tree(text: str, max_nesting: int) -> list[str | _Group]:
    """Split `text` into literal pieces and `{}` groups, without recursion (any depth of input)."""
    root: list[str | _Group] = []
    seq = root
    stack: list[tuple[list[str | _Group], _Group, int]] = []  # (parent sequence, group, `{` index)
    groups = 0
    for match in _BRACE_TOKEN.finditer(text):
        token = match.group()
        if token not in _STRUCTURE or (token == "," and not stack):  # a comma outside braces is text
            seq.append(_ESCAPE.sub(r"\1", token) if "\\" in token else token)
            continue
        start = match.start()
        if token == "{":
            if len(stack) >= max_nesting:
                raise PromptError(
                    f"the {{ at {_where(text, start)} is nested more than {max_nesting} deep; "
                    f"use fewer {{}} inside {{}}"
                )
            groups += 1
            if groups > _GROUPS_MAX:
                total = text.count("{") - text.count("\\{")  # every `\{` is an escape, never a group
                raise PromptError(
                    f"this prompt has {total:,} {{}} groups; the most is {_GROUPS_MAX}. Use fewer {{}} groups"
                )
            group = _Group()
            seq.append(group)
            stack.append((seq, group, start))
            seq = group.options[0]
        elif token == ",":
            group = stack[-1][1]
            seq = []
            group.options.append(seq)
        else:  # "}"
            if not stack:
                raise PromptError(
                    f"the }} at {_where(text, start)} has no {{ before it; "
                    "remove it, or write \\} for a literal brace"
                )
            seq, group, _ = stack.pop()
            only = group.options[0]
            if len(group.options) == 1 and all(isinstance(piece, str) for piece in only):
                # `{a}` stands for "a" alone: keep it as text, so a prompt of thousands of
                # one-option groups costs no more to count and expand than plain text
                seq[-1] = "".join(cast("list[str]", only)).strip()
    if stack:
        index = stack[0][2]
        raise PromptError(
            f"the {{ at {_where(text, index)} is never closed; close it with }}, "
            "or write \\{ for a literal brace"
        )
    return root


def _size(seq: list[str | _Group], cap: int) -> tuple[int, int]:
    """(how many texts `seq` expands to, their characters in all), each saturating at `cap + 1`.

    Both can be astronomic (`{a,b}` twenty times is a million texts), so they are computed
    from the tree without building a text: a sequence's count is the product of its items'
    counts, and each item's characters appear once in every combination of the others.
    The characters are an upper bound (options are trimmed when they are built).
    """
    count, chars = 1, 0
    for item in seq:
        if isinstance(item, _Group):
            sizes = [_size(option, cap) for option in item.options]
            item_count = min(cap + 1, sum(c for c, _ in sizes))
            item_chars = min(cap + 1, sum(n for _, n in sizes))
            count, chars = min(cap + 1, count * item_count), min(cap + 1, chars * item_count + item_chars * count)
        else:
            chars = min(cap + 1, chars + len(item) * count)
    return count, chars


def _expand_seq(seq: list[str | _Group]) -> list[str]:
    """All texts of `seq`; the leftmost group changes slowest, options are trimmed.

    Each text is built as a list of pieces joined once at the end: adding piece by piece to
    a string copies the text so far every time, which is quadratic for a prompt of many
    pieces (every `\\,` escape is one).
    """
    results: list[list[str]] = [[]]
    for item in seq:
        if isinstance(item, _Group):
            options = [text.strip() for option in item.options for text in _expand_seq(option)]
            if len(options) > 1:
                results = [[*pieces, option] for pieces in results for option in options]
                continue
            item = options[0]
        for pieces in results:
            pieces.append(item)
    return ["".join(pieces) for pieces in results]


def expand(text: str, limits: PromptLimits = PromptLimits()) -> list[str]:
    """The texts `{a, b}` permutations in `text` stand for, in order (`\\,` is a literal comma)."""
    if "{" not in text and "}" not in text and "\\" not in text:
        return [text]
    tree = _brace_tree(text, limits.max_nesting)
    count, chars = _size(tree, 10**9)
    shown = f"{count:,}" if count <= 10**6 else "over 1,000,000"
    if count > limits.max_expansions:
        raise PromptError(
            f"the {{}} options in this prompt would make {shown} prompts; the most is {limits.max_expansions}. "
            "Use fewer options or fewer {} groups"
        )
    if count > limits.max_jobs:
        raise PromptError(
            f"the {{}} options in this prompt would make {shown} jobs; the most is {limits.max_jobs}. "
            "Use fewer options or fewer {} groups"
        )
    most_chars = max(limits.max_expanded_length, limits.max_length)
    if chars > most_chars:
        raise PromptError(
            f"the {{}} options in this prompt would make {count} prompts of {chars:,} characters in all; "
            f"the most is {most_chars:,}. Use fewer options or a shorter prompt"
        )
    return _expand_seq(tree)


# --- parameters --------------------------------------------------------------------------

# `--` at the start or after whitespace; an em-dash (Apple's auto-correction of `--`) counts
# when a letter follows it, so prose like "dusk — calm sea" stays text.
_MARKER = re.compile(r"(?<!\S)(?:--|—(?=[^\W\d_]))")
_WHOLE = re.compile(r"-?\d+")
_DECIMAL = re.compile(r"-?(?:\d+(?:\.\d*)?|\.\d+)")
_RATIO = re.compile(r"(\d+):(\d+)")
_AR_SIDE_MAX = 99999
# The longest value one word of a parameter may have. Real values are a few characters
# ("16:9", "4294967295", "raw"); checking the length first keeps every later step (patterns,
# int(), Fraction(), messages) small whatever was pasted.
_VALUE_MAX = 100
_QUALITIES = (0.25, 0.5, 1.0, 2.0, 4.0)


def _bounded(typed: str, value: str, what: str) -> str:
    """`value` if it is at most `_VALUE_MAX` characters; checked before any pattern sees it."""
    if len(value) > _VALUE_MAX:
        raise PromptError(
            f"{typed} must be {what}, got a value {len(value):,} characters long "
            f"({_show(value)}); the most is {_VALUE_MAX}"
        )
    return value


def _one_word(typed: str, words: list[str], what: str) -> str:
    """The single word a parameter takes; several words mean text after the parameters."""
    if len(words) != 1:
        hint = " (text goes before the --parameters)" if len(words) > 1 else ""
        raise PromptError(f"{typed} must be {what}, got {_show(' '.join(words))}{hint}")
    return _bounded(typed, words[0], what)


def _whole(lo: int, hi: int) -> Callable[[str, list[str]], int]:
    def check(typed: str, words: list[str]) -> int:
        value = _one_word(typed, words, f"a number from {lo} to {hi}")
        if _WHOLE.fullmatch(value):
            if len(value) <= 20 and lo <= int(value) <= hi:
                return int(value)
            raise PromptError(f"{typed} must be a number from {lo} to {hi}, got {_show(value)}")
        raise PromptError(f"{typed} must be a whole number from {lo} to {hi}, got {_show(value)}")

    return check


def _decimal(lo: float, hi: float) -> Callable[[str, list[str]], float]:
    def check(typed: str, words: list[str]) -> float:
        what = f"a number from {_fmt_number(lo)} to {_fmt_number(hi)}"
        value = _one_word(typed, words, what)
        if _DECIMAL.fullmatch(value) and lo <= float(value) <= hi:
            return float(value)
        raise PromptError(f"{typed} must be {what}, got {_show(value)}")

    return check


def _quality(typed: str, words: list[str]) -> float:
    what = "one of .25, .5, 1, 2, 4"
    value = _one_word(typed, words, what)
    if _DECIMAL.fullmatch(value) and float(value) in _QUALITIES:
        return float(value)
    raise PromptError(f"{typed} must be {what}, got {_show(value)}")


def _quality_old(typed: str, words: list[str]) -> float:
    """--q on V1–V5.2: Midjourney also takes 5 there (and rounds it down), so it is no error."""
    what = "one of .25, .5, 1, 2, 4, 5"
    value = _one_word(typed, words, what)
    if _DECIMAL.fullmatch(value) and float(value) in (*_QUALITIES, 5.0):
        return float(value)
    raise PromptError(f"{typed} must be {what}, got {_show(value)}")


def _ratio(typed: str, words: list[str]) -> str:
    what = "a ratio of two whole numbers like 16:9"
    value = _one_word(typed, words, what)
    match = _RATIO.fullmatch(value)
    if match:
        if all(len(side) <= 5 and 1 <= int(side) <= _AR_SIDE_MAX for side in match.groups()):
            return value
        raise PromptError(f"{typed} must be two whole numbers from 1 to {_AR_SIDE_MAX} like 16:9, got {_show(value)}")
    raise PromptError(f"{typed} must be {what}, got {_show(value)}{_ratio_hint(value)}")


def _loose_side(side: str) -> Fraction | None:
    r"""One side of a loose ratio ("1.39", ".5", "2.") as a fraction, else None.

    Plain string code, not a pattern: the pattern this replaces, `(\d*\.?\d*):(\d*\.?\d*)`,
    tried every split of a digit run between its two `\d*` and took minutes on a long one.
    """
    whole, _, fraction = side.partition(".")
    if len(side) > 12 or not (whole or fraction):
        return None
    if not all(part == "" or part.isdecimal() for part in (whole, fraction)):
        return None
    return Fraction(f"{whole or 0}.{fraction or 0}")


def _ratio_hint(value: str) -> str:
    """` (try 3:2)` for a ratio written with decimals, like 1.5:1; "" when there is none."""
    width_text, colon, height_text = value.partition(":")
    if not colon:
        return ""
    width, height = _loose_side(width_text), _loose_side(height_text)
    if width is None or height is None or width <= 0 or height <= 0:
        return ""
    ratio = width / height
    if ratio.numerator <= _AR_SIDE_MAX and ratio.denominator <= _AR_SIDE_MAX:
        return f" (try {ratio.numerator}:{ratio.denominator})"
    return ""


def _word(example: str, lower: bool = False) -> Callable[[str, list[str]], str]:
    def check(typed: str, words: list[str]) -> str:
        value = _one_word(typed, words, f"one word like {example}")
        return value.lower() if lower else value

    return check


# Midjourney's named styles. Anything else after --style is a Style Tuner code such as
# `1U48Gcm4I`, and those are case-sensitive, so only these words are lowercased.
_STYLE_WORDS = frozenset({"raw", "4a", "4b", "4c", "expressive", "cute", "scenic", "original", "random",
                          "random-16", "random-32", "random-64", "random-128", "random-256", "random-512",
                          "random-1024"})


def _style(typed: str, words: list[str]) -> str:
    value = _one_word(typed, words, "one word like raw")
    return value.lower() if value.lower() in _STYLE_WORDS else value


def _optional_word(typed: str, words: list[str]) -> str:
    if len(words) > 1:
        raise PromptError(
            f"{typed} takes at most one word, got {_show(' '.join(words))} (text goes before the --parameters)"
        )
    return _bounded(typed, words[0], "at most one word") if words else ""


def _optional_whole(lo: int, hi: int) -> Callable[[str, list[str]], str]:
    """A flag that may carry one whole number (`--sameseed` or `--sameseed 987`)."""
    whole = _whole(lo, hi)

    def check(typed: str, words: list[str]) -> str:
        return str(whole(typed, words)) if words else ""

    return check


def _flag(typed: str, words: list[str]) -> bool:
    if words:
        raise PromptError(
            f"{typed} takes no value, got {_show(' '.join(words))} (text goes before the --parameters)"
        )
    return True


def _choice(*options: str) -> Callable[[str, list[str]], str]:
    what = "one of " + ", ".join(options)

    def check(typed: str, words: list[str]) -> str:
        value = _one_word(typed, words, what).lower()
        if value in options:
            return value
        raise PromptError(f"{typed} must be {what}, got {_show(value)}")

    return check


# The most `::` parts one prompt, and things one `--no`, may have. Each is run through the
# text encoder on its own for every job (engine.diffusion.conditioning), and each costs the parser an
# object per expansion; people write a handful, a pasted wall of `::` or commas is thousands.
_PARTS_MAX = 100


def _negative(typed: str, words: list[str]) -> tuple[str, ...]:
    items: list[str] = []
    for part in " ".join(words).split(","):
        item = _normalise(part)
        if not item:
            continue
        if len(items) == _PARTS_MAX:
            raise PromptError(f"{typed} lists more than {_PARTS_MAX} things to leave out; the most is {_PARTS_MAX}")
        items.append(item)
    if not items:
        raise PromptError(f"{typed} needs at least one thing to leave out, like {typed} people, cars")
    return tuple(items)


# --- reference values: --sref, --cref, --oref, --profile --------------------------------------

# A link is far longer than a code ("https://cdn.discordapp.com/attachments/…?ex=…&hm=…" is
# a few hundred characters), but still bounded before anything reads it.
_LINK_MAX = 2048
# The most values one reference parameter may hold, all its repeats together. Midjourney's
# own prompts use a handful (`--sref 1 --sref 2 --sref 3 --sref 4`, three --profile codes).
_REFS_MAX = 20


def _link(word: str) -> str | None:
    """`word` as an http(s) link with a host and a path (`<…>` removed), else None."""
    if word.startswith("<") and word.endswith(">"):  # Discord's "no preview" link form
        word = word[1:-1]
    lowered = word[:8].lower()
    if lowered.startswith("https://"):
        rest = word[8:]
    elif lowered.startswith("http://"):
        rest = word[7:]
    else:
        return None
    host, slash, _ = rest.partition("/")
    return word if host and slash else None


def _code_word(word: str) -> bool:
    """A Midjourney code: letters, digits, `-` and `_` (sref `680572301`, profile `exiuzv7`)."""
    return bool(word) and word.replace("-", "").replace("_", "").isascii() and \
        word.replace("-", "").replace("_", "").isalnum()


def _sref_code(word: str) -> bool:
    """A style-reference code: digits (`680572301`), or `random`; a word of text is neither."""
    return word.isascii() and (word.isdigit() or word.lower() == "random")


def _no_code(word: str) -> bool:
    return False


def _references(what: str, *, codes: Callable[[str], bool], optional: bool = False) -> Callable[[str, list[str]], str]:
    """Several values after one flag, kept in order as one space-separated string.

    `what` names the values in messages. Links may end with a `::2` weight (Midjourney
    weighs several references that way); `codes` says which other words are codes, so text
    written after the parameter (`--sref a photo of me`) is refused rather than kept.
    """

    def check(typed: str, words: list[str]) -> str:
        if not words and not optional:
            raise PromptError(f"{typed} needs {what}")
        if len(words) > _REFS_MAX:
            raise PromptError(f"{typed} has {len(words)} values; the most is {_REFS_MAX}")
        values: list[str] = []
        for word in words:
            if len(word) > _LINK_MAX:
                raise PromptError(
                    f"{typed} takes {what}, got a value {len(word):,} characters long ({_show(word)}); "
                    f"the most is {_LINK_MAX:,}"
                )
            body, colons, weight = word.rpartition("::") if "::" in word else (word, "", "")
            if colons and not (len(weight) <= 20 and _DECIMAL.fullmatch(weight)):
                raise PromptError(f"{typed}: the weight in {_show(word)} must be a number, like ::2")
            link = _link(body)
            if link is not None:
                values.append(link + colons + weight)
            elif len(body) <= _VALUE_MAX and codes(body):
                values.append(body + colons + weight)
            else:
                raise PromptError(
                    f"{typed} takes {what}, got {_show(word)} (text goes before the --parameters)"
                )
        return " ".join(values)

    return check


# A LoRA or embedding name as typed: the file name rules of engine.diffusion.loras.valid_name.
_ASSET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}")
LORA_WEIGHT_MAX = 2.0
LORAS_MAX = 8  # LoRAs one prompt may stack: each is a set of matrices in every attention layer


def _lora(typed: str, words: list[str]) -> str:
    """`--lora name` or `--lora name:0.8` (several per --lora allowed): "name:weight" words."""
    what = f"a LoRA name and weight like name:0.8 (weight -{_fmt_number(LORA_WEIGHT_MAX)} to " \
           f"{_fmt_number(LORA_WEIGHT_MAX)})"
    out = []
    for word in words:
        value = _bounded(typed, word, what)
        name, _, weight_text = value.rpartition(":") if ":" in value else (value, "", "1")
        if not _ASSET_NAME.fullmatch(name):
            raise PromptError(f"{typed} must be {what}; {_show(name)} is not a LoRA name (letters, digits, _ - . only)")
        if not _DECIMAL.fullmatch(weight_text) or not -LORA_WEIGHT_MAX <= float(weight_text) <= LORA_WEIGHT_MAX:
            raise PromptError(f"{typed} {name} has the weight {_show(weight_text)}; a LoRA's weight is a number from "
                              f"-{_fmt_number(LORA_WEIGHT_MAX)} to {_fmt_number(LORA_WEIGHT_MAX)}, like {name}:0.8")
        out.append(f"{name}:{_fmt_number(float(weight_text))}")
    return " ".join(out)


# --- the parameter table ------------------------------------------------------------------------

APPLIED = "applied"
IGNORED = "ignored"


@dataclass(frozen=True)
class _Spec:
    """One Midjourney parameter, the one place that says how Tessera reads and uses it.

    `check` reads the words after the name (and refuses values outside Midjourney's
    documented range); `legacy` replaces it for V1–V3 prompts, whose documented ranges were
    different (`--s 2500`, `--iw -50`, `--q 5`). `field` is the `Params` attribute it sets;
    parameters without one are kept in `Params.extra`. `note` says how an applied parameter
    is used, or why an ignored one is not, in words `tessera parse` and the README show.
    """

    name: str
    aliases: tuple[str, ...]
    check: Callable[[str, list[str]], object]
    example: str | None  # None: a flag, or a value that may be left out
    status: str  # APPLIED or IGNORED
    note: str
    versions: str  # the Midjourney versions that document it, for the README table
    field: str | None = None
    multi: bool = False  # every value of every repeat is kept, in order (--sref a b --sref c)
    legacy: Callable[[str, list[str]], object] | None = None
    kind: type = str  # how `tessera parse` shows an extra's value: str, int, float or bool
    lookup: bool = True  # False: reached only through a legacy spelling (`--w` on V1–V3)


_IMAGE_LATER = "omni references (V7) are not built yet (--sref and --cref are)"
_SREF_NOTE = ("the pictures' style through IP-Adapter on the style layers (InstantStyle); "
              "style codes like 680572301 are ignored (Midjourney's own library)")
_SW_NOTE = "the style reference's weight: 0 none, 100 (default) adapter scale 1.0, 1000 scale 2.0"
_CREF_NOTE = "the picture's character through the IP-Adapter face model"
_CW_NOTE = "the character reference's weight: 0 the face only (scale 0.5), 100 (default) face, hair and clothes (1.0)"
_NO_SREF_LINK = "no --sref image link"
_ONE_MODEL = "Tessera draws with the model this server set up"
_NO_QUEUE_MODES = "Tessera's queue has one speed"
_LEGACY_SIZE = "a 2022 (V1–V3) size; use --ar"
_UPSCALER = "a 2022 upscaler choice; Tessera's U buttons always use Real-ESRGAN"

_SPECS: tuple[_Spec, ...] = (
    _Spec("ar", ("aspect",), _ratio, "16:9", APPLIED,
          "width x height at the model's native pixel area, multiples of 64 (1:4 to 4:1)", "all", "ar"),
    _Spec("seed", (), _whole(0, 4294967295), "1234", APPLIED,
          "image i of the grid uses seed + i", "all", "seed"),
    _Spec("no", (), _negative, "people, cars", APPLIED, "the negative prompt", "all"),
    _Spec("quality", ("q",), _quality, ".5 (one of .25, .5, 1, 2, 4)", APPLIED,
          "steps = the model's steps x Q (5 counts as 4)", "all (5: V1–V5 only)", "quality", legacy=_quality_old),
    _Spec("stylize", ("s",), _whole(0, 1000), "250 (0 to 1000)", APPLIED,
          "guidance: 0 -> 0.4x, 100 -> the model's, 1000 (or more on V1–V3) -> 2x", "all (V1–V3: 625–60000)",
          "stylize", legacy=_whole(625, 60000)),
    _Spec("chaos", ("c",), _whole(0, 100), "50 (0 to 100)", APPLIED,
          "the four images start from more different noise", "V4+", "chaos"),
    _Spec("weird", ("w",), _whole(0, 3000), "250 (0 to 3000)", IGNORED,
          "Stable Diffusion has no counterpart", "V5.1+", "weird"),
    _Spec("stop", (), _whole(10, 100), "50 (10 to 100)", APPLIED,
          "denoising ends after N% of the steps", "all", "stop"),
    _Spec("tile", (), _flag, None, APPLIED, "seamless tiles (circular padding)", "all", "tile"),
    _Spec("repeat", ("r",), _whole(1, 40), "4 (1 to 40)", APPLIED, "runs the prompt N times", "V4+", "repeat"),
    _Spec("iw", (), _decimal(0, 3), "1.5 (0 to 3)", APPLIED,
          "image-to-image strength 1 - 0.7 x W / 3 (needs an image link in front)", "all (V1–V3: -10000–10000)",
          "iw", legacy=_decimal(-10000, 10000)),
    _Spec("exp", (), _whole(0, 100), "25 (0 to 100)", APPLIED,
          "guidance x (1 + E / 400) on top of --stylize (100 -> 1.25x)", "V7+", kind=int),
    _Spec("style", (), _style, "raw", IGNORED,
          "Midjourney's house styles and Style Tuner codes have no counterpart", "V5.1+", "style"),
    _Spec("raw", (), _flag, None, IGNORED, "the same as --style raw", "V7+"),
    _Spec("version", ("v",), _word("6"), "6", IGNORED, _ONE_MODEL, "all", "version"),
    _Spec("niji", (), _optional_word, None, IGNORED, _ONE_MODEL + " (--niji N also sets version)", "niji 4+"),
    _Spec("profile", ("p", "personalize"), _references("profile codes like exiuzv7", codes=_code_word, optional=True),
          None, IGNORED, "personalization: Tessera has no saved profiles yet", "V6+", multi=True),
    _Spec("sref", (), _references("image links or style codes like 680572301", codes=_sref_code),
          "an image link or a style code", APPLIED, _SREF_NOTE, "V6+", multi=True),
    _Spec("sw", (), _whole(0, 1000), "100 (0 to 1000)", APPLIED, _SW_NOTE, "V6+", kind=int),
    _Spec("sv", (), _whole(1, 6), "4 (1 to 6)", IGNORED,
          "Midjourney's style-reference versions; Tessera has one (IP-Adapter)", "V7+", kind=int),
    _Spec("cref", (), _references("image links", codes=_no_code), "an image link", APPLIED, _CREF_NOTE,
          "V6, niji 6", multi=True),
    _Spec("cw", (), _whole(0, 100), "50 (0 to 100)", APPLIED, _CW_NOTE, "V6, niji 6", kind=int),
    _Spec("oref", (), _references("an image link", codes=_no_code), "an image link", IGNORED, _IMAGE_LATER, "V7+",
          multi=True),
    _Spec("ow", (), _whole(1, 1000), "100 (1 to 1000)", IGNORED, _IMAGE_LATER, "V7+", kind=int),
    _Spec("draft", (), _flag, None, APPLIED,
          "a few-step draft (the operator's DRAFT_LORA with LCM, or DRAFT_MODEL_ID); Enhance redoes it in full",
          "V7+", kind=bool),
    _Spec("turbo", (), _flag, None, APPLIED, "the same as --draft", "V5+", kind=bool),
    _Spec("lora", (), _lora, "name:0.8", APPLIED,
          "a LoRA from the LoRA folder at that weight (-2 to 2, default 1); repeat for several", "Tessera",
          multi=True),
    _Spec("fast", (), _flag, None, IGNORED, _NO_QUEUE_MODES, "V4+", kind=bool),
    _Spec("relax", (), _flag, None, IGNORED, _NO_QUEUE_MODES, "V4+", kind=bool),
    _Spec("stealth", (), _flag, None, IGNORED, "who sees images is set per server", "V4+", kind=bool),
    _Spec("public", (), _flag, None, IGNORED, "who sees images is set per server", "V4+", kind=bool),
    _Spec("video", (), _flag, None, IGNORED, "Tessera makes still images", "V1–V5", kind=bool),
    _Spec("motion", (), _choice("low", "high"), "low", IGNORED, "Tessera makes still images", "video (V7)"),
    _Spec("loop", (), _flag, None, IGNORED, "Tessera makes still images", "video (V7)", kind=bool),
    _Spec("zoom", (), _decimal(1, 2), "1.5 (1 to 2)", IGNORED,
          "zoom out with 🔍 Zoom Out / Custom Zoom under an upscale, or `/edit zoom`", "V5.2+", kind=float),
    _Spec("hd", (), _flag, None, IGNORED, "a 2022 (V1–V3) model choice", "V1–V3", kind=bool),
    _Spec("test", (), _flag, None, IGNORED, "a 2022 test model", "test models (2022)", kind=bool),
    _Spec("testp", (), _flag, None, IGNORED, "a 2022 test model", "test models (2022)", kind=bool),
    _Spec("creative", (), _flag, None, IGNORED, "a 2022 test model option", "test models (2022)", kind=bool),
    _Spec("beta", (), _flag, None, IGNORED, "a 2022 test model", "V3 (2022)", kind=bool),
    _Spec("upbeta", (), _flag, None, IGNORED, _UPSCALER, "V3–V4", kind=bool),
    _Spec("uplight", (), _flag, None, IGNORED, _UPSCALER, "V3–V4", kind=bool),
    _Spec("upanime", (), _flag, None, IGNORED, _UPSCALER, "V4", kind=bool),
    _Spec("sameseed", (), _optional_whole(0, 4294967295), None, IGNORED,
          "every image of the grid has its own seed (seed + i)", "V1–V3"),
    _Spec("width", (), _whole(1, 4096), "448", IGNORED, _LEGACY_SIZE + " (--w is width only on V1–V3)", "V1–V3",
          kind=int, lookup=False),
    _Spec("h", (), _whole(1, 4096), "320", IGNORED, _LEGACY_SIZE + " (height)", "V1–V3", kind=int),
    *(_Spec(name, (), _flag, None, IGNORED, _LEGACY_SIZE, "V1–V3", kind=bool)
      for name in ("wallpaper", "sl", "ml", "ll", "sp", "mp", "lp")),
)
# The most `--parameters` one prompt may have: more than enough to give each kind once, and a
# bound on the work a wall of `--tile --tile …` makes (in every one of 40 expansions).
_PARAMS_MAX = 50
_BY_NAME: dict[str, _Spec] = {name: spec for spec in _SPECS if spec.lookup for name in (spec.name, *spec.aliases)}
_SPEC_OF: dict[str, _Spec] = {spec.name: spec for spec in _SPECS}
_CURRENT_KNOWN = ", ".join("/".join(f"--{n}" for n in (s.name, *s.aliases)) for s in _SPECS
                           if s.lookup and not s.versions.startswith(("V1–V3", "test", "V3")))


def parameter_table() -> list[tuple[str, str, str, str]]:
    """(names as typed, versions, status, how or why) for every parameter, in table order.

    The README's parameter table is checked against this, so the two cannot drift apart.
    """
    rows = []
    for spec in _SPECS:
        names = "/".join(f"`--{n}`" for n in (spec.name, *spec.aliases)) if spec.lookup else "`--w` (V1–V3)"
        rows.append((names, spec.versions, spec.status, spec.note))
    return rows


def _unknown(typed: str) -> PromptError:
    name = typed[2:]
    hint = ""
    glued = next((n for n in sorted(_BY_NAME, key=len, reverse=True)
                  if name.startswith(n) and len(name) > len(n) and not name[len(n)].isalpha()), None)
    if glued:
        hint = f" (put a space after --{glued})"
    else:
        close = difflib.get_close_matches(name, list(_BY_NAME), n=1, cutoff=0.75) if len(name) <= 30 else []
        if close:
            hint = f" (did you mean --{close[0]}?)"
    return PromptError(f"unknown parameter {_show(typed)}{hint}; known parameters: {_CURRENT_KNOWN}, "
                       "and the 2022 ones (--hd, --test, --uplight, --w/--h sizes, …)")


def _legacy_version(version: str | None) -> bool:
    """V1–V3 (2022): their own ranges for --s, --iw and --q, and `--w` is the width."""
    return version in {"1", "2", "3", "3.0"}


def _old_version(version: str | None) -> bool:
    """V1–V5.2 and niji 4–5, which round a larger --q down instead of refusing it (`--q 5`)."""
    if version is None:
        return False
    number = version.removeprefix("niji").strip()
    if version.startswith("niji"):
        return number in {"4", "5"}
    return number in {"1", "2", "3", "3.0", "4", "4.0", "5", "5.0", "5.1", "5.2"}


def _parse_params(section: str) -> tuple[dict[str, object], tuple[str, ...] | None, dict[str, str]]:
    """The `--parameter` section: field name -> value, the `--no` items, the extras.

    Two passes: the version is found first, because V1–V3 prompts have other ranges (and
    their `--w` is a width), then every parameter is checked against its range.
    """
    markers = list(_MARKER.finditer(section))
    if len(markers) > _PARAMS_MAX:
        raise PromptError(f"this prompt has {len(markers)} --parameters; the most is {_PARAMS_MAX}")
    items: list[tuple[str, str, list[str]]] = []  # (name as typed, lowercased, its words)
    for i, marker in enumerate(markers):
        end = markers[i + 1].start() if i + 1 < len(markers) else len(section)
        body = section[marker.end():end]
        if not body or body[0].isspace():
            raise PromptError("a -- must be followed by a parameter name, like --ar 16:9")
        words = body.split()
        items.append(("--" + words[0].lower(), words[0].lower(), words[1:]))
    version = next((words[0] for _, name, words in reversed(items)
                    if _BY_NAME.get(name) is _SPEC_OF["version"] and len(words) == 1), None)
    legacy, old = _legacy_version(version), _old_version(version)

    values: dict[str, object] = {}
    extra: dict[str, str] = {}
    negative: tuple[str, ...] | None = None
    for typed, name, words in items:
        spec = _SPEC_OF["width"] if (legacy and name == "w") else _BY_NAME.get(name)
        if spec is None:
            raise _unknown(typed)
        if not words and spec.example is not None:
            raise PromptError(f"{typed} needs a value like {spec.example}")
        check = spec.legacy if (spec.legacy is not None and (legacy or (old and spec.name == "quality"))) \
            else spec.check
        value = check(typed, words)
        if spec.name == "no":
            negative = value  # type: ignore[assignment]
        elif spec.name == "raw":
            values["style"] = "raw"
        elif spec.field is not None:
            values[spec.field] = value  # a repeated parameter: the last one wins
        elif spec.multi:
            joined = " ".join(v for v in (extra.get(spec.name, ""), str(value)) if v)
            if len(joined.split()) > _REFS_MAX:
                raise PromptError(f"--{spec.name} has more than {_REFS_MAX} values in all; the most is {_REFS_MAX}")
            extra[spec.name] = joined
        else:
            extra[spec.name] = "" if value is True else str(value)
    if "niji" in extra and "version" not in values:
        values["version"] = f"niji {extra['niji']}".strip()
    return values, negative, extra


# A known `--name` glued to the word before it (`lens--ar 4:5`): without a space it is text,
# so the prompt would silently lose its parameter. `\S--` starts each candidate and the name
# is letters only, so candidates never overlap and the scan is linear.
_GLUED = re.compile(r"(?<=\S)--([A-Za-z]+)(?=\s|$)")


def _check_glued(text: str) -> None:
    """Refuse `word--ar 4:5`: say where to put the space (Midjourney would ignore the parameter)."""
    for match in _GLUED.finditer(text):
        name = match.group(1).lower()
        spec = _BY_NAME.get(name)
        if spec is None or len(name) < 2:  # `well--s` or `dragon--its` is prose
            continue
        value = text[match.end():match.end() + 64].lstrip()[:1]  # a slice: each match costs O(1)
        if spec.example is None or (value and (value.isdigit() or value in ".:")):
            start = max(text.rfind(" ", max(0, match.start() - _SHOW_MAX), match.start()) + 1,
                        match.start() - _SHOW_MAX)
            raise PromptError(
                f"--{name} is glued to the word before it ({_show(text[start:match.end()])}): "
                f"put a space before --{name}, or it stays part of the text"
            )


# --- image prompts and text ----------------------------------------------------------------

_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".webp")
_TOKEN = re.compile(r"\S+")


def _image_url(token: str) -> str | None:
    """`token` as an image link at the front of a prompt, else None.

    An http(s) link whose path ends in an image type, or whose last path segment has no
    extension at all: Midjourney's short links (`https://s.mj.run/khAQMPWrXoc`) and most image
    hosts have none. Whether such a link really is an image is the fetcher's question
    (`engine.imaging.fetch` decodes what it downloads and refuses anything that is not a
    picture); a link with another extension (`page.html`) stays text.
    """
    url = _link(token)
    if url is None or len(url) > _LINK_MAX:
        return None
    path = url.partition("://")[2].partition("/")[2].split("#", 1)[0].split("?", 1)[0]
    last = path.rpartition("/")[2].lower()
    if not last:
        return None
    return url if last.endswith(_IMAGE_SUFFIXES) or "." not in last else None


# `::` splits the text; a number right after it is the weight. The weight ends at the number:
# `cat::2, dog` weighs cat 2 (the comma starts the next part), while `a::2b` is no weight.
_SEPARATOR = re.compile(r"::(-?(?:\d+(?:\.\d*)?|\.\d+)(?![\w.:]))?")


_TOO_MANY_PARTS = f"the multi-prompt has more than {_PARTS_MAX} :: parts; the most is {_PARTS_MAX}. Join some parts"


def _after_weight(piece: str, pos: int) -> str:
    """A part's text; after a `::` the comma that ended the weight (`cat::2, dog`) is no text."""
    text = _normalise(piece)
    return _normalise(text.lstrip(",;")) if pos else text


def _multi_prompt(text: str) -> tuple[WeightedText, ...]:
    """The `::` parts of `text` with their weights as written."""
    parts: list[WeightedText] = []
    pos = 0
    for match in _SEPARATOR.finditer(text):
        if len(parts) == _PARTS_MAX:
            raise PromptError(_TOO_MANY_PARTS)
        part = _after_weight(text[pos:match.start()], pos)
        weight = 1.0
        if match.group(1) is not None:
            weight = float(match.group(1))
            if not math.isfinite(weight):
                raise PromptError(f"the weight ::{_show(match.group(1))} is too large; weights are numbers like 2 or -.5")
        if not part:
            where = f"::{match.group(1)}" if match.group(1) is not None else "::"
            raise PromptError(
                f"part {len(parts) + 1} of the multi-prompt is empty (nothing before {where}); "
                "write some text before each ::"
            )
        parts.append(WeightedText(part, weight))
        pos = match.end()
    last = _after_weight(text[pos:], pos)
    if last:  # a trailing `::` adds no empty part
        if len(parts) == _PARTS_MAX:
            raise PromptError(_TOO_MANY_PARTS)
        parts.append(WeightedText(last, 1.0))
    if parts:
        total = math.fsum(p.weight for p in parts)
        if total <= 0:
            terms = " + ".join(f"{_show(p.text)} {_fmt_number(p.weight)}" for p in parts[:6])
            more = " + …" if len(parts) > 6 else ""
            raise PromptError(
                f"the multi-prompt weights add up to {_fmt_number(total)} ({terms}{more}); "
                "the sum must be positive, so raise a weight or make a negative one smaller"
            )
    return tuple(parts)


def _leading_images(head: str, max_images: int) -> tuple[list[str], str]:
    """The image links at the front of `head` and the text after them.

    More than `max_images` links is refused here, naming how many there are, before any
    other step looks at them (each one would be a download and a decode later).
    """
    images: list[str] = []
    text = ""
    for match in _TOKEN.finditer(head):
        url = _image_url(match.group())
        if url is None:
            text = head[match.start():]
            break
        images.append(url)
    if len(images) > max_images:
        raise PromptError(
            f"this prompt has {len(images)} image links; the most is {max_images}. "
            "Remove some image links from the front of the prompt"
        )
    return images, text


def _parse_one(source: str, limits: PromptLimits) -> Expansion:
    """Parse one expanded text (no braces left to expand)."""
    marker = _MARKER.search(source)
    head, section = (source[:marker.start()], source[marker.start():]) if marker else (source, "")

    images, text = _leading_images(head, limits.max_images)
    _check_glued(source)

    prompts = _multi_prompt(text)
    values, negative, extra = _parse_params(section)

    if not prompts and not images:
        hint = ": write what to imagine before the --parameters" if section else ""
        raise PromptError(f"the prompt is empty{hint}")
    if not prompts:
        if len(images) == 1:
            raise PromptError(
                "an image prompt needs text or a second image: add words after the image link, or another image link"
            )
        for name in ("stylize", "weird"):
            if name in values:
                raise PromptError(f"an image-only prompt cannot take --{name}; add some text to use it")

    params = Params(**values, extra=extra)  # type: ignore[arg-type]
    return Expansion(
        prompts=prompts,
        negative=negative or (),
        images=tuple(images),
        params=params,
        source=source.strip(),
    )


# --- shortcuts: /prefer suffix, /prefer option, server styles -----------------------------------

SHORTCUT_DEPTH = 4  # an option may use another option (or style) this many levels deep
SHORTCUT_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")  # custom option and style names as stored


def _split_shortcut(value: str) -> tuple[str, str]:
    """(words, `--parameters`) of a shortcut's text."""
    marker = _MARKER.search(value)
    return (value[:marker.start()].strip(), value[marker.start():].strip()) if marker else (value.strip(), "")


def expand_shortcuts(text: str, context: PromptContext, limits: PromptLimits = PromptLimits()) -> str:
    """`text` with the user's suffix appended and every custom `--option` and server
    `--style name` replaced by what it stands for (words joined to the text, parameters to the
    parameters), repeatedly, at most `SHORTCUT_DEPTH` levels deep.

    Refused: a custom option given a value, a chain deeper than that (a cycle never ends),
    and a result longer than `limits.max_length`.
    """
    if context.suffix:
        text = f"{text.rstrip()} {context.suffix}"
    if not context.options and not context.styles:
        return _check_expanded_length(text, limits)
    for _ in range(SHORTCUT_DEPTH + 1):
        markers = list(_MARKER.finditer(text))
        if len(markers) > _PARAMS_MAX:
            raise PromptError(f"this prompt has {len(markers)} --parameters; the most is {_PARAMS_MAX}")
        head = text[:markers[0].start()] if markers else text
        words: list[str] = [head.strip()]
        params: list[str] = []
        changed = False
        for i, marker in enumerate(markers):
            end = markers[i + 1].start() if i + 1 < len(markers) else len(text)
            body = text[marker.end():end]
            parts = body.split()
            name = parts[0].lower() if parts and not body[0].isspace() else ""
            value: str | None = None
            if name in context.options and name not in _BY_NAME:
                if len(parts) > 1:
                    raise PromptError(f"your option --{name} takes no value, got {_show(' '.join(parts[1:]))} "
                                      "(text goes before the --parameters)")
                value = context.options[name]
            elif name == "style" and len(parts) == 2 and parts[1].lower() in context.styles:
                value = context.styles[parts[1].lower()]
            if value is None:
                params.append(text[marker.start():end].strip())
                continue
            changed = True
            extra_words, extra_params = _split_shortcut(value)
            words.append(extra_words)
            params.append(extra_params)
        text = " ".join(w for w in (*words, *params) if w)
        _check_expanded_length(text, limits)
        if not changed:
            return text
    raise PromptError(f"your options or the server's styles use each other more than {SHORTCUT_DEPTH} levels deep "
                      "(or in a circle); change them with /prefer option or /admin style")


def _check_expanded_length(text: str, limits: PromptLimits) -> str:
    if len(text) > limits.max_length:
        raise PromptError(f"with your suffix, options and styles the prompt is {len(text):,} characters long; "
                          f"the most is {limits.max_length:,} (shorten the prompt or your /prefer shortcuts)")
    return text


def check_shortcut(kind: str, name: str, value: str, context: PromptContext,
                   limits: PromptLimits = PromptLimits()) -> None:
    """Refuse a shortcut that would break prompts, before it is stored: a bad name, a name
    Midjourney already uses, a value that is not a valid prompt part, or one that loops.

    `kind` is "option" or "style"; `context` holds the shortcuts already saved (the new one
    replaces any of the same name)."""
    if not SHORTCUT_NAME.fullmatch(name):
        raise PromptError(f"{_show(name)} cannot be a {kind} name: use 1 to 32 lowercase letters, digits or _, "
                          "starting with a letter")
    if kind == "option" and name in _BY_NAME:
        raise PromptError(f"--{name} is a Midjourney parameter already; pick another name for your option")
    if not value.strip() or len(value) > limits.max_length // 4:
        raise PromptError(f"a {kind}'s text must be 1 to {limits.max_length // 4:,} characters, got {len(value):,}")
    options, styles = dict(context.options), dict(context.styles)
    (options if kind == "option" else styles)[name] = value
    trial = PromptContext(loras=context.loras, embeddings=context.embeddings, options=options, styles=styles,
                          lora_check=context.lora_check)
    probe = f"x --{name}" if kind == "option" else f"x --style {name}"
    parse(probe, limits, context=trial)


def _embedding_words(text: str, names: frozenset[str]) -> tuple[str, list[str]]:
    """`text` with every embedding named as a word (`name` or `<name>`) written `<name>`."""
    found: list[str] = []

    def swap(match: re.Match[str]) -> str:
        word = match.group()
        name = word[1:-1] if word.startswith("<") and word.endswith(">") else word
        if name in names:
            found.append(name)
            return f"<{name}>"
        return word

    return _EMBEDDING_WORD.sub(swap, text), found


# A word of letters, digits, `_`, `-` (maybe in <>): one pass, each character seen once.
_EMBEDDING_WORD = re.compile(r"<[A-Za-z0-9][A-Za-z0-9_.\-]*>|(?<![\w<.\-])[A-Za-z0-9][A-Za-z0-9_\-]*")


def _with_context(expansion: Expansion, context: PromptContext) -> Expansion:
    """Check `--lora` names against the folder and mark the embeddings the text names."""
    loras = expansion.params.loras
    if len(loras) > LORAS_MAX:
        raise PromptError(f"this prompt uses {len(loras)} LoRAs; the most is {LORAS_MAX}")
    if context.lora_check:
        for name, _ in loras:
            if name not in context.loras:
                close = difflib.get_close_matches(name, context.loras, n=3, cutoff=0.6)
                hint = f" (did you mean {', '.join(close)}?)" if close else ""
                listed = "there are no LoRAs on this bot" if not context.loras else "see /loras for the list"
                raise PromptError(f"there is no LoRA named {_show(name)}{hint}; {listed}")
    if not context.embeddings:
        return expansion
    found: list[str] = []
    prompts = []
    for part in expansion.prompts:
        text, names = _embedding_words(part.text, context.embeddings)
        found += names
        prompts.append(WeightedText(text, part.weight))
    negative = []
    for item in expansion.negative:
        text, names = _embedding_words(item, context.embeddings)
        found += names
        negative.append(text)
    if not found:
        return expansion
    return Expansion(prompts=tuple(prompts), negative=tuple(negative), images=expansion.images,
                     params=expansion.params, source=expansion.source, embeddings=tuple(dict.fromkeys(found)))


def parse(text: str, limits: PromptLimits = PromptLimits(), context: PromptContext | None = None) -> Prompt:
    """Parse `text`; raise `PromptError` with a user-facing message when it is invalid.

    With a `context`, the user's suffix, options and the server's styles are expanded first
    (`expand_shortcuts`), `--lora` names must be in `context.loras`, and embeddings named in
    the text are marked. `Prompt.raw` is the expanded text: what is stored is what ran."""
    if len(text) > limits.max_length:
        raise PromptError(f"the prompt is {len(text):,} characters long; the most is {limits.max_length:,}")
    if context is not None:
        text = expand_shortcuts(text, context, limits)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:  # a lone surrogate: SQLite and Discord cannot store it
        raise PromptError(
            f"the prompt has a character that is not valid text at {_where(text, exc.start)}; "
            "remove it or paste the prompt again"
        ) from None
    sources = expand(text, limits)
    expansions: list[Expansion] = []
    for source in sources:
        try:
            expansion = _parse_one(source, limits)
            expansions.append(_with_context(expansion, context) if context is not None else expansion)
        except PromptError as exc:
            if len(sources) == 1:
                raise
            raise PromptError(f"{exc} (in the expansion {_show(_normalise(source))})") from None
    # The cap is per prompt, not per expansion: `{url1, url2, ...}` puts each link in its own
    # expansion, and each distinct set of links is downloaded, decoded and blended (within its
    # own pixel budget) before anything is queued. So count the downloads that makes.
    link_sets = {expansion.images for expansion in expansions if expansion.images}
    downloads = sum(len(links) for links in link_sets)
    if downloads > limits.max_images:
        raise PromptError(
            f"this prompt's {{}} expansions make {downloads} image downloads; the most is "
            f"{limits.max_images}. Use fewer image links, or put them before the {{}} group"
        )
    prompt = Prompt(raw=text, expansions=tuple(expansions))
    if prompt.jobs > limits.max_jobs:
        raise PromptError(
            f"this prompt would make {prompt.jobs} jobs ({len(expansions)} prompt"
            f"{'s' if len(expansions) != 1 else ''} × --repeat); the most is {limits.max_jobs}"
        )
    return prompt


SYNTAX_HELP = """\
**Prompt syntax** (Midjourney's): `[image links] text [--parameters]`
• Image links (.png .jpg .jpeg .gif .webp, or no extension like s.mj.run links) count only at the very front, at most 10; one image needs text or a second image.
• `--parameters` come last: every word after `--x` is `--x`'s value. `—` works as `--`.
  `--ar 16:9` aspect (whole numbers) · `--seed 1234` (0–4294967295) · `--no people, cars` leave out
  `--q .25|.5|1|2|4` quality · `--s 0–1000` stylize · `--c 0–100` chaos · `--w 0–3000` weird
  `--stop 10–100` · `--tile` seamless · `--r 1–40` repeat · `--iw 0–3` image weight
  `--exp 0–100` more guidance · `--raw` = `--style raw`
  `--sref links` `--sw 0–1000` style pictures · `--cref link` `--cw 0–100` character (or attach them: `/imagine` sref, cref)
  Every other Midjourney parameter (`--v`, `--niji`, `--style`, `--oref`, `--profile`, `--sv`, 2022's `--hd` …) is accepted; `tessera parse` and the result say which were ignored.
• Multi-prompts: `::` splits ideas, a number after it weighs the part before:
  `space ship` is one idea, `space:: ship` two, `space::2 ship` weighs space double,
  `hot dog::1.5 food::-.5` (weights may be negative; their sum must be positive).
• Permutations: `{red, green} bird in the {jungle, desert}` makes 4 prompts; groups nest,
  `\\,` is a literal comma, braces work in parameters too: `--ar {1:1, 16:9}`. At most 40.
Examples:
`/imagine a lighthouse at dusk --ar 16:9 --no fog --seed 7`
`/imagine cheese::1 cake:: painting:: --s 250`
`/imagine a {sculpture, painting} of a cat --ar {3:2, 1:1}`"""


def help_text() -> str:
    """The syntax summary `/help` shows (under Discord's 2,000-character message limit)."""
    return SYNTAX_HELP
