"""The web gallery's HTML: small templates in which every value is escaped with `html.escape`.

No template engine: the pages are few and short, and building them in Python keeps every
insertion visibly escaped. No inline script or style anywhere (the Content-Security-Policy
forbids both); behaviour lives in /static/gallery.js, looks in /static/gallery.css.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from html import escape
from urllib.parse import urlencode

from bot.gallery import entry_link, model_name, post_title, prompt_with_seed
from bot.render import edit_name
from engine.jobs.model import Job, JobKind
from storage.gallery import ShareDetails, SharedImage

SORT_LABELS = {"recent": "Newest", "likes": "Most liked", "relevance": "Best match"}
PERIOD_LABELS = {"all": "all time", "week": "this week", "day": "today"}
ASPECT_LABELS = {"": "any shape", "square": "square", "landscape": "landscape", "portrait": "portrait"}
SEED_MODULUS = 2**32
PLACEHOLDER = 'Search prompts: fox "red sky" cat OR dog -blurry'

# Parameters of a generation request, in the order and with the names the image page shows.
# `init_image` is missing on purpose: it is a path on the server. `text` is the prompt itself.
PARAMETERS: dict[str, str] = {
    "width": "width", "height": "height", "aspect": "aspect (--ar)", "steps": "steps",
    "guidance": "guidance", "sampler": "sampler", "model": "model", "model_family": "model family",
    "quality": "quality (--q)", "stylize": "stylize (--s)", "chaos": "chaos (--c)", "tile": "tile (--tile)",
    "stop": "stop (--stop)", "negative": "negative (--no)", "exp": "exp (--exp)", "count": "images in grid",
    "variation": "variation", "strength": "strength", "image_weight": "image weight (--iw)",
    "image_prompts": "image prompts", "ignored": "ignored parameters", "safety_check": "safety checker",
}


def author_name(author_id: int) -> str:
    """What the gallery post shows of an author (a mention of the id): Discord resolves it,
    the web cannot without asking Discord, which it never does."""
    return f"Discord user {author_id}"


def author_url(author_id: int) -> str:
    return f"https://discord.com/users/{author_id}"


def _page(title: str, body: str, *, home: str) -> str:
    return ("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{escape(title)} · Tessera gallery</title>"
            "<link rel=\"stylesheet\" href=\"/static/gallery.css\">"
            "<script src=\"/static/gallery.js\" defer></script></head><body>"
            f"<header><a class=\"brand\" href=\"{escape(home)}\">Tessera gallery</a></header>"
            f"<main>{body}</main></body></html>\n")


def thumb_width(width: int, height: int, size: int) -> int:
    """How wide the `size` thumbnail of a width×height image is (never enlarged)."""
    scale = min(1.0, size / max(width, height))
    return max(1, round(width * scale))


def srcset(entry_id: int, width: int, height: int, sizes: Iterable[int]) -> str:
    """`srcset` with each thumbnail's true width: a small image's thumbnails are smaller than
    their size name, and claiming more would make the browser draw them too small."""
    seen: dict[int, int] = {}
    for size in sizes:
        seen.setdefault(thumb_width(width, height, size), size)
    return ", ".join(f"/thumb/{entry_id}/{size} {w}w" for w, size in seen.items())


def card(item: SharedImage) -> str:
    """One tile of the grid (gallery.js builds the same markup from /api/shares)."""
    entry = item.entry
    title = post_title(entry)
    return (f"<a class=\"card\" href=\"/s/{entry.id}\" data-id=\"{entry.id}\">"
            f"<img src=\"/thumb/{entry.id}/512\" srcset=\"{srcset(entry.id, item.width, item.height, (256, 512))}\" "
            f"sizes=\"(max-width: 600px) 50vw, 25vw\" width=\"{item.width}\" height=\"{item.height}\" "
            f"loading=\"lazy\" alt=\"{escape(title)}\">"
            f"<span class=\"meta\"><span class=\"title\">{escape(title)}</span>"
            f"<span class=\"likes\">♥ {entry.likes}</span></span></a>")


def _options(choices: Mapping[str, str], chosen: str) -> str:
    return "".join(f"<option value=\"{escape(value)}\"{' selected' if value == chosen else ''}>{escape(label)}</option>"
                   for value, label in choices.items())


def grid_page(*, heading: str, home: str, items: Sequence[SharedImage], form: Mapping[str, str],
              models: Iterable[str], next_offset: int | None, api: str, error: str | None) -> str:
    """The grid: search form, the first page of tiles, and a link to the next page (which
    gallery.js turns into infinite scroll through `api`)."""
    model_choices = {"": "any model", **{m: m for m in models}}
    if form.get("model") and form["model"] not in model_choices:
        model_choices[form["model"]] = form["model"]
    search = (
        "<form class=\"filters\" method=\"get\" role=\"search\">"
        f"<input type=\"search\" name=\"q\" id=\"q\" maxlength=\"500\" placeholder=\"{escape(PLACEHOLDER)}\" "
        f"value=\"{escape(form.get('q', ''))}\">"
        f"<select name=\"sort\" id=\"sort\">{_options(SORT_LABELS, form.get('sort', ''))}</select>"
        f"<select name=\"period\" id=\"period\">{_options(PERIOD_LABELS, form.get('period', 'all'))}</select>"
        f"<select name=\"model\" id=\"model\">{_options(model_choices, form.get('model', ''))}</select>"
        f"<select name=\"aspect\" id=\"aspect\">{_options(ASPECT_LABELS, form.get('aspect', ''))}</select>"
        f"<input type=\"text\" name=\"author\" id=\"author\" inputmode=\"numeric\" maxlength=\"20\" "
        f"placeholder=\"author id\" value=\"{escape(form.get('author', ''))}\">"
        "<button type=\"submit\">Search</button></form>"
    )
    parts = [f"<h1>{escape(heading)}</h1>", search]
    if error:
        parts.append(f"<p class=\"error\" role=\"alert\">{escape(error)}</p>")
    elif not items:
        parts.append("<p class=\"empty\">Nothing shared here yet matches.</p>")
    parts.append(f"<div id=\"grid\" class=\"grid\" data-api=\"{escape(api)}\" "
                 f"data-next=\"{'' if next_offset is None else next_offset}\">{''.join(card(i) for i in items)}</div>")
    if next_offset is not None:
        query = urlencode({**{k: v for k, v in form.items() if v}, "offset": str(next_offset)})
        parts.append(f"<p id=\"more\" class=\"more\"><a href=\"?{escape(query)}\">More images</a></p>")
    return _page(heading, "".join(parts), home=home)


def image_seed(lineage: Sequence[Job], index: int) -> tuple[int | None, dict]:
    """The image's own seed and its request, following upscales to their source.
    Same rule as `bot.gallery.image_facts`, read from the lineage already loaded."""
    source, source_index = lineage[0], index
    for parent in lineage[1:]:
        if source.kind is not JobKind.UPSCALE:
            break
        source, source_index = parent, source.parent_index or 0
    request = dict(source.request_json or {})
    base = request.get("seed", source.seed)
    seed = (int(base) + source_index) % SEED_MODULUS if base is not None else None
    return seed, request


def _value(name: str, value: object) -> str:
    if name == "model":
        return model_name(str(value))
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value) or "none"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _how_made(job: Job) -> str:
    parent = f"image {(job.parent_index or 0) + 1} of job {job.parent_id}"
    if job.kind is JobKind.UPSCALE:
        scale = job.options.get("scale")
        return f"upscale{f' ×{scale}' if scale else ''} of {parent}"
    if job.kind is JobKind.VARIATION:
        strength = job.options.get("strength")
        return f"variation{f' ({strength})' if strength else ''} of {parent}"
    if job.kind is JobKind.REROLL:
        return f"reroll (a new seed) of job {job.parent_id}" if job.parent_id else "reroll"
    if job.kind is JobKind.EDIT:
        cells = job.options.get("cells") if job.options.get("edit") == "region" else None
        return f"{edit_name(job.options)}{f' of cells {cells}' if cells else ''} of {parent}"
    return "made from the prompt"


def lineage_items(details: ShareDetails) -> list[str]:
    """One line per job from the share's back to the first prompt, linking shared ancestors."""
    items: list[str] = []
    for job in details.lineage:
        text = f"Job {escape(job.id)}: {escape(_how_made(job))}"
        if job.parent_id:
            shared = details.shared_ancestors.get((job.parent_id, job.parent_index or 0))
            if shared is not None:
                text += f" (<a href=\"/s/{shared}\">shared #{shared}</a>)"
        items.append(f"<li>{text}</li>")
    return items


def share_page(details: ShareDetails, *, home: str) -> str:
    entry, image = details.entry, details.image
    title = post_title(entry)
    seed, request = image_seed(details.lineage, entry.index)
    rows = [f"<dt>seed (--seed)</dt><dd id=\"seed\">{seed if seed is not None else 'unknown'}</dd>",
            f"<dt>size</dt><dd>{image.width}×{image.height}</dd>",
            f"<dt>kind</dt><dd>{escape(details.lineage[0].kind.value)}</dd>"]
    for name, label in PARAMETERS.items():
        if name in request and request[name] not in (None, "", [], ()):
            rows.append(f"<dt>{escape(label)}</dt><dd>{escape(_value(name, request[name]))}</dd>")
    prompts = request.get("prompts") or []
    if len(prompts) > 1:
        parts = " · ".join(f"{p.get('text', '')} ::{p.get('weight', 1):g}" for p in prompts if isinstance(p, dict))
        rows.append(f"<dt>prompt parts (::)</dt><dd>{escape(parts)}</dd>")
    link = entry_link(entry)
    made = entry.created_at.strftime("%Y-%m-%d") if isinstance(entry.created_at, datetime) else ""
    byline = [f"by <a href=\"{author_url(entry.author_id)}\" rel=\"nofollow noopener\">{escape(author_name(entry.author_id))}</a>",
              f"<span class=\"likes\">♥ {entry.likes}</span>", f"<time>{made}</time>"]
    if link:
        byline.append(f"<a href=\"{escape(link)}\" rel=\"noopener\">Open in Discord</a>")
    if entry.guild_id is not None:
        byline.append(f"<a href=\"/g/{entry.guild_id}\">this server's gallery</a>")
    body = (
        "<article class=\"share\">"
        f"<figure><a href=\"/img/{entry.id}\"><img id=\"full\" src=\"/thumb/{entry.id}/1024\" "
        f"srcset=\"{srcset(entry.id, image.width, image.height, (512, 1024))}\" sizes=\"(max-width: 900px) 100vw, 60vw\" "
        f"width=\"{image.width}\" height=\"{image.height}\" alt=\"{escape(title)}\"></a>"
        f"<figcaption><a href=\"/img/{entry.id}\">Full size ({image.width}×{image.height} {escape(image.format)})</a>"
        "</figcaption></figure>"
        f"<section class=\"about\"><h1>{escape(title)}</h1><p class=\"byline\">{' · '.join(byline)}</p>"
        "<div class=\"prompt\"><pre id=\"prompt\" class=\"selectable\">"
        f"{escape(prompt_with_seed(entry.prompt_text, seed))}</pre>"
        "<button type=\"button\" id=\"copy\" data-copy=\"prompt\">Copy prompt</button></div>"
        f"<h2>Parameters</h2><dl id=\"parameters\">{''.join(rows)}</dl>"
        f"<h2>Lineage</h2><ol id=\"lineage\">{''.join(lineage_items(details))}</ol>"
        "</section></article>"
    )
    return _page(title, body, home=home)


def error_page(status: int, message: str, *, home: str = "/") -> str:
    return _page(f"Error {status}", f"<h1>Error {status}</h1><p class=\"error\">{escape(message)}</p>"
                 f"<p><a href=\"{escape(home)}\">Back to the gallery</a></p>", home=home)
