"""Hide passwords before they reach any output, log, error or the history table.

One rule for the whole program (``redact``), see docs/configuration.md "Passwords in output":

- A known password (from mg.yaml, ``MG_DATABASE_URL``, the connection) is replaced by
  ``****``, and so is its percent-encoded form (as a URL holds it). One of eight characters
  or more is replaced wherever it stands, even inside a longer word. A shorter one is
  replaced where it stands as a value: a whole token, a URL part, a quoted literal; where
  it begins or ends with a letter, digit or underscore, the neighbouring character on that
  side must not be one, so the password ``app`` never turns ``applied`` into ``****lied``.
- Whatever looks like a password is replaced too, known or not: the password of a URL
  (``scheme://user:****@host``), a ``password=`` query or key=value parameter, and the
  quoted literal of SQL's ``PASSWORD 'secret'`` (``CREATE ROLE``/``ALTER ROLE``; also
  ``E'secret'``, ``U&'secret'`` and the dollar-quoted ``$$secret$$``), which a server error's
  CONTEXT or a dry run's SQL may quote.

Over-redacting is preferred to leaking: a password that is an ordinary word is masked
wherever that word stands alone.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import cache, lru_cache

MASK = "****"

# The patterns are compiled on first use (``_compiled``): every start of mg imports this
# module, few runs need them.
_WORD = r"\w"

_SCHEME = r"^\s*[A-Za-z][A-Za-z0-9+.-]*://"
# Query parameters such as ``password`` and ``sslpassword`` in a URL.
_QUERY_SECRET = r"(?i)([?&][^=&#\s]*password[^=&#\s]*=)([^&#]*)"
# ``password=secret`` or ``password = 'se cret'`` in a key=value DSN or free text.
_KV_SECRET = r"(?i)(\b\w*password\s*=\s*)('(?:[^'\\]|\\.)*'?|\S*)"
# SQL's ``[ENCRYPTED] PASSWORD 'secret'`` (a role's password): the value runs to a run of
# quotes followed by what may follow a literal, so a doubled quote inside ('it''s') and a
# statement quoted in a string (EXECUTE '... PASSWORD ''secret''') are masked whole.
_SQL_SECRET = r"""(?i)(\bpassword\s+(?:E|U&)?)('+)((?:[^']|'+(?=[^\s;,)"']))*)('+|$)"""
# The same password written as a dollar-quoted literal (``PASSWORD $$secret$$``,
# ``PASSWORD $pw$secret$pw$``): the value runs to the closing tag, or to the end.
_SQL_DOLLAR_SECRET = r"(?i)(\bpassword\s+)(\$(?:[a-z_][a-z0-9_]*)?\$)([\s\S]*?)(\2|$(?![\s\S]))"
# ``scheme://user:secret@`` inside free text: the password runs to the last '@' before a
# space or a query, so a raw '@' in it is still hidden.
_URL_IN_TEXT = r"(?i)\b([a-z][a-z0-9+.-]*://[^\s:/?#@]*:)([^\s?#]+)(@)"


@cache
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def redact_url(url: str) -> str:
    """Return ``url`` (a libpq URL or key=value DSN) with every password replaced by ``****``.

    ``postgresql://user:secret@host/db`` becomes ``postgresql://user:****@host/db``;
    ``host=h password=secret`` becomes ``host=h password=****``; ``?password=x`` becomes
    ``?password=****``.
    """
    scheme = _compiled(_SCHEME).match(url)
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
    return url[:query_at] + _compiled(_QUERY_SECRET).sub(_mask, url[query_at:])


def url_passwords(url: str) -> set[str]:
    """The password a connection URL holds, as written and percent-decoded; empty without one.

    A URL written without its scheme (``user:secret@host/db``) counts too: libpq refuses it,
    and its reason quotes the text whole.
    """
    from urllib.parse import unquote, urlsplit

    if "://" in url:
        try:
            secret = urlsplit(url).password
        except ValueError:
            secret = None
        if secret is None:
            secret = _raw_url_password(url)
    elif "@" in url:
        userinfo = url[: url.rfind("@")].strip().removeprefix("//")
        user, colon, secret = userinfo.partition(":")
        if not colon or any(c in user for c in "= "):
            secret = None
    else:
        secret = None
    if not secret:
        return set()
    found = {secret, unquote(secret)}
    # A raw '/', '?' or '#' in it ends the URL's authority early: libpq or mg may then quote a
    # piece of it as a port, a host or a database name.
    found.update(piece for piece in re.split(r"[/?#]", secret) if piece)
    return found


def _raw_url_password(url: str) -> str | None:
    """The password of ``scheme://user:pass/word@host``, whose raw '/' (or '?', '#') hides it
    from a URL parser: the user info runs to the last '@', when no query or fragment starts
    before that '@'."""
    start = url.index("://") + 3
    at = url.rfind("@")
    if at < start or any(0 <= url.find(c, start) < at for c in "?#"):
        return None
    user, colon, secret = url[start:at].partition(":")
    if not colon or "/" in user:
        return None
    return secret or None


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """Return ``text`` with each of ``secrets`` and anything that looks like a password masked.

    The function every output path uses (events, errors, tracebacks, hook output, the
    ``error`` column of the history): ``secrets`` are the passwords known at that point.
    """
    known = tuple(sorted({s for s in secrets if s}))
    if known:
        text = _secret_pattern(known).sub(MASK, text)
    return redact_text(text)


# A known password this long is masked even inside a longer word: ordinary text does not
# hold it by chance, and a hook printing ``user=appX<password>`` must not show it.
_MASK_ANYWHERE = 8


@lru_cache(maxsize=32)
def _secret_pattern(secrets: tuple[str, ...]) -> re.Pattern[str]:
    """One alternation, longest first, so a password holding another is masked whole."""
    from urllib.parse import quote

    forms = set(secrets)
    forms.update(quote(secret, safe="") for secret in secrets)
    parts = []
    for secret in sorted(forms, key=len, reverse=True):
        if len(secret) >= _MASK_ANYWHERE:
            parts.append(re.escape(secret))
            continue
        before = r"(?<!\w)" if _compiled(_WORD).match(secret[0]) else ""
        after = r"(?!\w)" if _compiled(_WORD).match(secret[-1]) else ""
        parts.append(before + re.escape(secret) + after)
    return re.compile("|".join(parts))


def redact_text(text: str) -> str:
    """Redact passwords in free text that may quote URLs or DSNs (error messages, logs)."""
    if "://" in text:
        text = _compiled(_URL_IN_TEXT).sub(lambda m: m.group(1) + MASK + m.group(3), text)
    if "password" in text.lower():  # every pattern below needs the word
        text = _redact_pairs(text)
        text = _compiled(_SQL_SECRET).sub(
            lambda m: m.group(1) + m.group(2) + MASK + m.group(4), text
        )
        if "$" in text:
            text = _compiled(_SQL_DOLLAR_SECRET).sub(
                lambda m: m.group(1) + m.group(2) + MASK + m.group(4), text
            )
    return text


def _redact_pairs(text: str) -> str:
    return _compiled(_KV_SECRET).sub(_mask, text)


def _mask(match: re.Match[str]) -> str:
    value = match.group(2)
    # masked already: keep what follows the mask
    if not value or _compiled(_MASKED).fullmatch(value):
        return match.group(0)
    return match.group(1) + MASK


# A value masked before, with the punctuation of the sentence around it
# (``.../db?password=****: ok``): masking it again would swallow the ``:``.
_MASKED = r"\*\*\*\*[:;,.)\]]*"
