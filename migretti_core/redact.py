"""Hide passwords in connection strings before they reach any output, log or error.

Over-redacting is preferred to leaking: anything that could be a password is replaced.
"""

from __future__ import annotations

import re

MASK = "****"

_SCHEME = re.compile(r"^\s*[A-Za-z][A-Za-z0-9+.-]*://")
# Query parameters such as ``password`` and ``sslpassword`` in a URL.
_QUERY_SECRET = re.compile(r"(?i)([?&][^=&#\s]*password[^=&#\s]*=)([^&#]*)")
# ``password=secret`` or ``password = 'se cret'`` in a key=value DSN or free text.
_KV_SECRET = re.compile(r"(?i)(\b\w*password\s*=\s*)('(?:[^'\\]|\\.)*'?|\S*)")
# ``scheme://user:secret@`` inside free text: the password runs to the last '@' before a
# space or a query, so a raw '@' in it is still hidden.
_URL_IN_TEXT = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^\s:/?#@]*:)([^\s?#]+)(@)")


def redact_url(url: str) -> str:
    """Return ``url`` (a libpq URL or key=value DSN) with every password replaced by ``****``.

    ``postgresql://user:secret@host/db`` becomes ``postgresql://user:****@host/db``;
    ``host=h password=secret`` becomes ``host=h password=****``; ``?password=x`` becomes
    ``?password=****``.
    """
    scheme = _SCHEME.match(url)
    if scheme is None:
        return _redact_pairs(url)
    start = scheme.end()
    query_at = url.find("?", start)
    authority_end = len(url) if query_at == -1 else query_at
    # A raw (unencoded) password may hold '@' or '/': the last '@' ends the user info.
    at = url.rfind("@", start, authority_end)
    if at != -1:
        userinfo = url[start:at]
        colon = userinfo.find(":")
        if colon != -1 and colon + 1 < len(userinfo):
            url = url[: start + colon + 1] + MASK + url[at:]
            query_at = url.find("?", start)
    if query_at == -1:
        return url
    return url[:query_at] + _QUERY_SECRET.sub(_mask, url[query_at:])


def redact_text(text: str) -> str:
    """Redact passwords in free text that may quote URLs or DSNs (error messages, logs)."""
    if "://" in text:
        text = _URL_IN_TEXT.sub(lambda m: m.group(1) + MASK + m.group(3), text)
    if "password" in text.lower():  # every pattern below needs the word
        text = _redact_pairs(text)
    return text


def _redact_pairs(text: str) -> str:
    return _KV_SECRET.sub(_mask, text)


def _mask(match: re.Match[str]) -> str:
    return match.group(1) + MASK if match.group(2) else match.group(0)
