"""Turning what a user types into a safe SQLite FTS5 query.

FTS5 has its own query language in which ordinary text (a quote, a colon, `AND`, a `-`, a
`*` alone) is a syntax error or an operator. So every word is passed as a quoted FTS5 string,
and only a small, documented set of operators is recognised on top:

- `"two words"` — a phrase;
- `word*` — a prefix;
- `cat OR dog` — either (OR in capitals, between two words);
- `-word` — exclude (`--ar` and other `--parameters` are plain words).

Words are otherwise ANDed. Malformed use of these (an unclosed quote, a dangling OR, only
excluded words) raises `StorageError` with a message that says what to type instead. So does
text that is not valid Unicode (a lone surrogate such as "\udfff", which a Discord client or
a JSON escape can deliver): SQLite takes UTF-8, and such text has no UTF-8 form, so it is
refused here with a message instead of failing inside the database driver.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from engine.errors import StorageError

MAX_QUERY_CHARS = 500
MAX_TERMS = 32
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class _Term:
    text: str
    prefix: bool = False
    exclude: bool = False
    is_or: bool = False


def _searchable(text: str) -> bool:
    """Whether the tokenizer will find a token in it (unicode61 indexes letters and digits only)."""
    return any(ch.isalnum() for ch in text)


def _quote(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


def _render(term: _Term) -> str:
    return _quote(term.text) + ("*" if term.prefix else "")


def _lex(query: str) -> list[_Term]:
    terms: list[_Term] = []
    i, n = 0, len(query)
    while i < n:
        ch = query[i]
        if ch.isspace():
            i += 1
            continue
        exclude = False
        if ch == "-" and i + 1 < n and query[i + 1] not in "- \t":
            exclude, i = True, i + 1
            ch = query[i]
        if ch == '"':
            end = query.find('"', i + 1)
            if end < 0:
                raise StorageError('your search has an opening " with no closing one: put a phrase '
                                   'between two quotes, like "red fox", or remove the quote')
            text = query[i + 1:end]
            i = end + 1
            prefix = i < n and query[i] == "*"
            if prefix:
                i += 1
            if _searchable(text):
                terms.append(_Term(text, prefix=prefix, exclude=exclude))
            continue
        end = i
        while end < n and not query[end].isspace() and query[end] != '"':
            end += 1
        word = query[i:end]
        i = end
        if word == "OR" and not exclude:
            terms.append(_Term("OR", is_or=True))
            continue
        prefix = word.endswith("*")
        stem = word.rstrip("*")
        if prefix and not _searchable(stem):
            raise StorageError("a * must follow the start of a word, like `light*` for light, lighthouse…")
        if _searchable(stem):
            terms.append(_Term(stem, prefix=prefix, exclude=exclude))
    return terms


def check_encodable(text: str) -> None:
    """StorageError unless `text` can be stored or searched: it must have a UTF-8 form."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise StorageError(f"the search has characters that cannot be searched (at character {exc.start + 1}, "
                           "a broken emoji or other invalid text): retype it with ordinary letters, digits and "
                           "emoji") from None


def to_fts_query(query: str) -> str:
    """The FTS5 MATCH expression for a user's search text, or StorageError if it is malformed."""
    text = _CONTROL.sub(" ", query).strip()
    if len(text) > MAX_QUERY_CHARS:
        raise StorageError(f"a search can be at most {MAX_QUERY_CHARS} characters, not {len(text)}")
    check_encodable(text)
    terms = _lex(text)
    if not terms:
        raise StorageError("type at least one word (letters or digits) to search for")
    words = [t for t in terms if not t.is_or]
    if len(words) > MAX_TERMS:
        raise StorageError(f"a search can have at most {MAX_TERMS} words, not {len(words)}")

    groups: list[list[_Term]] = []  # OR-groups, ANDed together
    excluded: list[_Term] = []
    pending_or = False
    for index, term in enumerate(terms):
        if term.is_or:
            before_ok = index > 0 and not terms[index - 1].is_or and not terms[index - 1].exclude
            after_ok = index + 1 < len(terms) and not terms[index + 1].is_or and not terms[index + 1].exclude
            if not (before_ok and after_ok):
                raise StorageError("OR must stand between two words to look for, like `cat OR dog`")
            pending_or = True
            continue
        if term.exclude:
            excluded.append(term)
        elif pending_or:
            groups[-1].append(term)
        else:
            groups.append([term])
        pending_or = False
    if not groups:
        raise StorageError("a search needs at least one word to look for, not only -excluded words")

    parts = []
    for group in groups:
        rendered = " OR ".join(_render(t) for t in group)
        parts.append(f"({rendered})" if len(group) > 1 else rendered)
    expression = " AND ".join(parts)
    for term in excluded:
        expression = f"({expression}) NOT {_render(term)}"
    return expression
