"""One redaction rule for every text that leaves the process: messages, log lines, run records, exceptions.

Sources are configured from the environment, and their addresses can carry credentials: an API
URL with user-info (`http://user:pw@host/`), a database URL or libpq DSN with a password, a token
in a query string, an `Authorization` header echoed in an error body. A message that names its
source (which it should: "GET <url> answered 503") must not carry them. `redact` masks:

* the password of URL user-info: `scheme://user:pw@` -> `scheme://user:***@`;
* `password=`, `token=` (and `passwd`, `pwd`, `secret`, `api_key`, `access_token`, ...) parameters,
  in query strings, DSNs and `key: value` text;
* `Authorization` header values and bearer/basic credentials;
* the literal value of every environment variable whose name says it holds a secret (`*TOKEN*`,
  `*PASSWORD*`, `*SECRET*`, ...) and every password found in an environment URL: a driver or
  server that quotes one in a form the patterns miss still shows `***`.

`scrub` applies the rule to an exception and its whole cause/context chain (Dagster records every
link's text), and `redacting` wraps a source's entry points with it.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable
from typing import TypeVar
from urllib.parse import unquote, urlsplit

MASK = "***"
_KEYS = r"password|passwd|pwd|token|access_token|refresh_token|id_token|api_key|apikey|api-key|secret|client_secret|sig|signature"
_USERINFO = re.compile(r"(?P<pre>\b[A-Za-z][A-Za-z0-9+.\-]*://[^:/?#@\s'\"]*):(?P<pw>[^@/\s'\"]*)@")
# key=value in query strings and DSNs (value quoted or not), and "key": "value" / key: value in text.
_PARAM = re.compile(rf"(?i)(?P<pre>(?<![A-Za-z0-9_])(?:{_KEYS})\s*=\s*)(?P<val>'[^']*'|\"[^\"]*\"|[^&\s;,'\")}}]+)")
_FIELD = re.compile(rf"(?i)(?P<pre>[\"'](?:{_KEYS})[\"']\s*:\s*)(?P<val>\"[^\"]*\"|'[^']*'|[^,\s}}]+)")
_AUTH = re.compile(
    r"(?i)(?P<pre>[\"']?(?:proxy-)?authorization[\"']?\s*[:=]\s*[\"']?)(?P<val>(?:(?:bearer|basic|token|digest)\s+)?[^\s,;'\"}]+)"
)
_SCHEME = re.compile(r"(?i)(?P<pre>\b(?:bearer|basic)\s+)(?P<val>[A-Za-z0-9._~+/=\-]{8,})")
_SECRET_NAME = re.compile(r"(?i)(token|passw|pwd|secret|api_?key|private_?key|credential)")
MIN_SECRET_LENGTH = 4  # shorter values would mask ordinary words
_NOT_A_SECRET = re.compile(r"(?i)^(true|false|yes|no|on|off|none|null|\d+)$")


def _secret_values() -> list[str]:
    """Secrets the environment holds: values of secret-named variables, and passwords inside URL values."""
    found = set()
    for name, value in os.environ.items():
        value = value.strip()
        if _SECRET_NAME.search(name) and len(value) >= MIN_SECRET_LENGTH and not _NOT_A_SECRET.match(value):
            found.add(value)
        if "://" in value and "@" in value:
            try:
                password = urlsplit(value).password
            except ValueError:
                password = None
            if password and len(password) >= MIN_SECRET_LENGTH:
                found.update({password, unquote(password)})
    return sorted(found, key=len, reverse=True)  # longest first: a secret containing another is masked whole


def redact(text: object) -> str:
    """`text` with credentials masked (the rule in the module docstring); safe to apply twice."""
    out = str(text)
    for value in _secret_values():
        out = out.replace(value, MASK)
    out = _USERINFO.sub(lambda m: f"{m['pre']}:{MASK}@", out)
    out = _AUTH.sub(lambda m: f"{m['pre']}{MASK}", out)
    out = _SCHEME.sub(lambda m: f"{m['pre']}{MASK}", out)
    out = _PARAM.sub(lambda m: f"{m['pre']}{MASK}", out)
    return _FIELD.sub(lambda m: f"{m['pre']}{MASK}", out)


class RedactedError(RuntimeError):
    """An exception whose text held a credential, standing in for it with the text masked (and its type named)."""


def _chain(exc: BaseException | None) -> list[BaseException]:
    seen: list[BaseException] = []
    while exc is not None and all(exc is not s for s in seen):
        seen.append(exc)
        exc = exc.__cause__ or exc.__context__
    return seen


def _stand_in(exc: BaseException) -> BaseException:
    return RedactedError(f"{type(exc).__module__}.{type(exc).__qualname__}: {redact(exc)}")


def scrub(exc: BaseException) -> BaseException:
    """`exc` with no credential in its text or in any exception it was raised from or during.

    A clean exception is returned as is (traceback and type kept). A link whose text holds a
    credential is replaced: ours (`args` a single message) get their message masked in place; others
    by a `RedactedError` naming their type, carrying the masked text and the rest of the chain.
    """
    links = _chain(exc)
    if all(redact(e) == str(e) for e in links):
        return exc
    fixed: list[BaseException] = []
    for e in links:
        if redact(e) == str(e):
            fixed.append(e)
        elif len(e.args) == 1 and isinstance(e.args[0], str) and type(e).__module__.startswith("pos_lakehouse"):
            e.args = (redact(e.args[0]),)
            fixed.append(e)
        else:
            stand_in = _stand_in(e)
            stand_in.__traceback__ = e.__traceback__
            fixed.append(stand_in)
    for outer, inner in zip(fixed, fixed[1:]):
        outer.__cause__, outer.__suppress_context__ = inner, True
    fixed[-1].__cause__, fixed[-1].__context__, fixed[-1].__suppress_context__ = None, None, True
    return fixed[0]


F = TypeVar("F", bound=Callable)


def redacting(fn: F) -> F:
    """Wrap a function talking to a source: whatever it raises leaves with credentials masked."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            clean = scrub(exc)
            if clean is exc:
                raise
            raise clean from clean.__cause__

    return wrapper  # type: ignore[return-value]
