"""Connection URLs with their credentials removed, for logs and error messages.

`QUEUE_URL` carries the Redis password, and operators write it every way Redis clients
accept: `redis://:pw@host/0`, `redis://user:pw@host/0`, `redis://host/0?password=pw`, and
unencoded passwords such as `redis://user:P@ss/w#rd?x@host`, which `urllib.parse` splits in
the wrong places (half the password becomes the path and the fragment). So `redact_url`
does not trust a URL parser: it takes the userinfo up to the *last* "@" (a host never holds
one) and masks it whole, masks the value of every credential-like
query parameter and everything after it, and shows only the scheme (`redis://***`) when
what is left is not a plain `host[:port][/path][?query]`. It is the one function every log
line and error message that shows a URL goes through.
"""

from __future__ import annotations

import re

__all__ = ["redact_url"]

MASK = "***"

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]{0,15}")
_HOST = re.compile(r"[A-Za-z0-9._%\[\]:-]{0,300}")  # name, IPv4, [IPv6], :port
_PATH = re.compile(r"[A-Za-z0-9._~%/-]{0,300}")
_KEY = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_VALUE = re.compile(r"[A-Za-z0-9._~%/:-]{0,300}")
# Query keys whose values are credentials (redis-py's `password`, and what other clients use).
_SECRET_KEY = re.compile(r"pass|pwd|token|auth|secret|key|cred|sig", re.IGNORECASE)


def redact_url(text: str) -> str:
    """`text` (a URL) with every credential replaced by `***`; never raises.

    Userinfo becomes `***@`, credential-like query values become `***` (and
    so does the rest of the query after one, in case an unencoded `&` split the secret), and
    anything that does not look like a plain URL is shown as its scheme only.
    """
    text = str(text).strip()
    scheme_end = text.find("://")
    scheme = text[:scheme_end] if scheme_end > 0 else ""
    if not _SCHEME.fullmatch(scheme):
        head = text.split(":", 1)[0] if ":" in text else ""
        return f"{head}:{MASK}" if _SCHEME.fullmatch(head) else MASK
    rest = text[scheme_end + 3:]
    fallback = f"{scheme}://{MASK}"
    userinfo = ""
    at = rest.rfind("@")
    if at >= 0:  # masked whole: "pw@host" may be a bare password, and a user name is half a login
        userinfo, rest = f"{MASK}@", rest[at + 1:]
    if "#" in rest:
        return fallback
    location, _, query = rest.partition("?")
    slash = location.find("/")
    host, path = (location, "") if slash < 0 else (location[:slash], location[slash:])
    if not _HOST.fullmatch(host) or not _PATH.fullmatch(path):
        return fallback
    shown_query = _redact_query(query)
    if shown_query is None:
        return fallback
    return f"{scheme}://{userinfo}{host}{path}" + (f"?{shown_query}" if query else "")


def _redact_query(query: str) -> str | None:
    """The query with credential values masked; None when it is not plain `key=value&...`."""
    if not query:
        return ""
    shown: list[str] = []
    parts = query.split("&")
    for index, part in enumerate(parts):
        key, equals, value = part.partition("=")
        if not _KEY.fullmatch(key):
            return None
        if _SECRET_KEY.search(key):
            shown.append(f"{key}={MASK}")
            if index < len(parts) - 1:
                shown.append(MASK)  # an unencoded "&" may have split the secret: hide the rest
            break
        if not _VALUE.fullmatch(value):
            return None
        shown.append(f"{key}{equals}{value}")
    return "&".join(shown)
