"""What a failed receiver leaves in its outcome record, and what of it a client may see.

A receiver's exception text is the operator's: it names sink URLs (with their user,
password and ``?token=``), hosts and the answers of outside services. So a failure is
stored as:

- ``error_class``: the exception's class name (``HTTPError``), shown to the goal's creator;
- ``error_code``: a stable code for it (``http_error``, ``timeout``, ...), shown too;
- ``error`` (``Class: message``) and ``traceback``: the text, with secrets redacted, for
  operators only (``goalhub outcomes``, the dashboard), never in ``GET /goals/<id>``.

``redact`` is applied to every operator-facing copy as well: a log or a dashboard is read
by more people than hold the keys.
"""

from __future__ import annotations

import functools
import re
import traceback

REDACTED = "***"

# scheme://userinfo@ in any URL. The userinfo runs to the LAST "@" before the host (a password
# may hold an unencoded "@": https://u:p@ss@h), never past "/", "?", "#" or a space.
_USERINFO = re.compile(r"(?<![A-Za-z0-9+.-])(?P<scheme>[A-Za-z][A-Za-z0-9+.-]{0,31}://)(?P<userinfo>[^/?#\s<>]*)@")
_BEARER = re.compile(r"\b(?P<scheme>Bearer|Basic)\s+(?P<value>[A-Za-z0-9._~+/=-]{8,})", re.IGNORECASE)
# A bare JWT anywhere (header.payload.signature in base64url; a JSON header starts "eyJ").
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
# ``Name: value`` with the name unquoted (a header, YAML, prose): the value is the rest of the
# line, or up to a quote when the line sits in a repr'd string.
_LINE = re.compile(r"(?<![\w'\"\\.-])(?P<name>[A-Za-z][\w.-]*)[ \t]*:[ \t]*(?=[^'\"\r\n\\])")
_LINE_VALUE = re.compile(r"[^'\"\r\n\\]+")
# ``name=value``, ``name: value``, ``name = value``, the name and the value quoted or not: query
# strings, form bodies, dicts, JSON (escaped inside another JSON string too), reprs, keyword
# arguments. Whether the name is a secret's is ``_secret_name``'s to say. An unquoted value
# (``_BARE``) runs to a space, "&" or "#" (quotes included: a query value may hold one, and a
# quoted value is one only if a space, ",", ";", ")", "}", "]", "&", "#", "<", ">", "\\" or the end
# follows its closing quote: ``password='0000'0000`` is one bare value); after
# ":" it never starts a nested dict or list (whose own pairs are matched in turn). A quoted
# value is looked for up to 2048 characters: every scan is bounded, so no text (a client's, in
# a log line) can make redaction slow.
_QUOTED_END = r"""(?=[\s,;)}\]&#<>\\]|$)"""  # what may follow a quoted value's closing quote
_PAIR = re.compile(
    r"""(?:(?P<open>\\{0,3}['"])|(?<![\w.-]))(?P<name>[A-Za-z_][\w.-]*)(?P<close>\\{0,3}['"])?\s*(?P<op>[:=])\s*"""
    rf"""(?:"(?P<dq>(?:[^"\\\n]|\\.){{0,2048}})"{_QUOTED_END}|'(?P<sq>(?:[^'\\\n]|\\.){{0,2048}})'{_QUOTED_END}"""
    r"""|(?P<esc>\\{1,3}["'])(?P<eq>[^\n]{0,2048}?)(?P=esc)|(?P<bare>(?=[^\s\\<>&#])))""")
_BARE = re.compile(r"[^\s\\<>&#]+")
_AFTER_COLON = re.compile(r"[{\[(]")
_VALUES = ("dq", "sq", "eq", "bare")
# What every rule needs at least one of: a text without any is returned as it is, at once.
_ANY = re.compile(r"[:=@]|eyJ|bearer|basic", re.IGNORECASE)
_NESTED = re.compile(r"""[{\[]+\\*['"{\[]""")
# What in a name makes it a secret's (``client_secret``, ``accessToken``, ``jwt``, ``Cookie``,
# ``sessionid``): a word anywhere in it...
_SECRET_WORDS = ("token", "secret", "passw", "passphrase", "pwd", "credential", "jwt", "cookie", "signature",
                 "apikey", "privatekey", "sessid", "sessionid", "authorization")
# Short words only as a name's last part: ``x-api-key``, ``db_pass``, ``basic_auth``, but not
# ``authSource`` or ``key_id``.
_SECRET_PARTS = {"key", "keys", "pass", "pw", "sig", "auth", "session", "sid"}
_NAME_PARTS = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")


@functools.lru_cache(maxsize=4096)  # the same few names come again and again
def _secret_name(name: str) -> bool:
    """Whether ``name`` names a secret. Not an exception class (``KeyError: 'x'``), nor
    goalhub's ``session_id`` (a streaming session's id, not a credential)."""
    parts = [part.lower() for part in _NAME_PARTS.findall(name)]
    if not parts or parts[-1] in ("error", "exception", "warning", "errors"):
        return False
    if parts[-2:] in (["session", "id"], ["session", "ids"]):
        return False
    joined = "".join(parts)
    return any(word in joined for word in _SECRET_WORDS) or parts[-1] in _SECRET_PARTS


def _lines(text: str) -> str:
    out, pos = [], 0
    while (match := _LINE.search(text, pos)) is not None:
        out.append(text[pos:match.end()])
        pos = match.end()
        if _secret_name(match["name"]):
            out.append(REDACTED)
            pos = _LINE_VALUE.match(text, pos).end()  # type: ignore[union-attr]  # the lookahead saw one
        # Else: read on from the value (the rest of the line may hold a secret).
    out.append(text[pos:])
    return "".join(out)


def _pairs(text: str) -> str:
    out, pos = [], 0
    while (match := _PAIR.search(text, pos)) is not None:
        group = next(group for group in _VALUES if match[group] is not None)
        start = match.start(group)
        out.append(text[pos:start])
        pos = start
        if group == "bare":
            nested = _NESTED.match(text, start) or (match["op"] == ":" and _AFTER_COLON.match(text, start))
            if _secret_name(match["name"]) and not nested:
                out.append(REDACTED)
                pos = _BARE.match(text, start).end()  # type: ignore[union-attr]  # the lookahead saw one
            # Else: read on from the value's start (a nested dict's own pairs, a URL's ?token=).
            continue
        out.append(REDACTED if _secret_name(match["name"]) else _pairs(match[group]))
        pos = match.end(group)
    out.append(text[pos:])
    return "".join(out)


def redact(text: str, *, keep_user: bool = False) -> str:
    """``text`` with operator secrets replaced by ``***``: a URL's userinfo (split at its last
    ``@``; with ``keep_user``, only the password), Authorization and cookie values, bearer
    tokens and bare JWTs, and the value of every secret-named field in ``name=value`` and
    ``name: value`` forms, quoted or not (query strings, headers, dicts, JSON, reprs)."""
    if not text or not _ANY.search(text):
        return text  # the common case (a path, an address, an id): nothing any rule could match
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{_userinfo(m['userinfo'], keep_user)}@", text)
    text = _BEARER.sub(lambda m: f"{m['scheme']} {REDACTED}", text)
    text = _JWT.sub(REDACTED, text)
    text = _lines(text)
    return _pairs(text)


def _userinfo(userinfo: str, keep_user: bool) -> str:
    user, colon, _ = userinfo.partition(":")
    return f"{user}:{REDACTED}" if keep_user and colon else REDACTED


# Exception classes a client may act on, by the code they get (first match in the MRO wins).
_CODES = {
    "TimeoutError": "timeout",
    "JobTimeoutException": "timeout",
    "Timeout": "timeout",
    "ConnectionError": "connection_error",
    "HTTPError": "http_error",
    "LookupError": "not_found",
    "KeyError": "missing_data",
    "ValueError": "invalid_data",
    "PermissionError": "forbidden",
}


def error_code(exc: BaseException | type[BaseException]) -> str:
    """A stable, client-safe code for an exception class."""
    cls = exc if isinstance(exc, type) else type(exc)
    for klass in cls.__mro__:
        if klass.__name__ in _CODES:
            return _CODES[klass.__name__]
    return "receiver_error"


def failure_fields(exc: BaseException) -> dict:
    """The fields ``$set`` on an outcome when its receiver failed with ``exc`` (call it inside
    the ``except`` block). The one place that turns an exception into stored text."""
    return {
        "error": redact(f"{type(exc).__name__}: {exc}"),
        "error_class": type(exc).__name__,
        "error_code": error_code(exc),
        "traceback": redact(traceback.format_exc(limit=8)),
    }
