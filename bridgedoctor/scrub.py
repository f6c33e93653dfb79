"""Take secrets out of text a bridge wrote (log lines) before it leaves the helper.

Two layers: the exact secret values bridgedoctor read from the bridge's files (tokens, shared
secrets, the database password), and shapes that are secrets wherever they appear: credentials in
URLs, `access_token=` and friends, `Authorization: Bearer`, `name=value` pairs whose name says
token, secret, password or key, Matrix access tokens, UUIDs (MDAD derives every bridge token and
database password as a UUID) and long opaque strings. Over-scrubbing a transaction id is the
price of never printing a token.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

MASK = "<redacted>"
# Shorter "secrets" would turn ordinary words into masks; real ones are far longer.
MIN_KNOWN_SECRET = 8

# user:password@ in any URL-like string (postgres://, https://, ...).
_URL_CREDENTIALS = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^/\s:@\"']*:)[^@\s/\"']+@")
# Query or form parameters that carry credentials.
_QUERY = re.compile(
    r"(?P<head>[?&;](?:access_token|token|key|secret|password|signature|sig|auth)=)[^&\s\"'#]+",
    re.IGNORECASE,
)
_BEARER = re.compile(r"(?P<head>\b(?:Bearer|Basic)\s+)[A-Za-z0-9._~+/=-]{6,}", re.IGNORECASE)
# A field whose name says it holds a secret, in the forms log lines use: name=value,
# name="quoted", "name":"value" (JSON), name: value. Names are matched lower-case only, so
# Matrix error codes such as M_UNKNOWN_TOKEN stay readable.
_SECRET_NAME = (
    r"[a-z0-9_.-]*(?:token|secret|password|passwd|pickle_key|api_hash|api_key|private_key"
    r"|signing_key|recovery_key|server_key|shared_secret)|key|auth|authorization|cookie"
)
_FIELD = re.compile(
    r"(?P<head>(?<![\w.-])\"?(?:" + _SECRET_NAME + r")\"?(?:=|:\s?))"
    r"(?P<value>\"(?:[^\"\\]|\\.)*\"|'[^']*'|[^\s,;}&\"']+)"
)
_MATRIX_TOKEN = re.compile(r"\b(?:syt|syr|mat|mar|mct|mcr)_[A-Za-z0-9_-]{8,}")
_UUID = re.compile(
    r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b"
)
_OPAQUE = re.compile(r"(?<![A-Za-z0-9_+=-])[A-Za-z0-9_+=-]{32,}(?![A-Za-z0-9_+=-])")


def _opaque(m: re.Match[str]) -> str:
    s = m.group(0)
    # A long run of letters only (an identifier) or digits only (a number) is not a secret.
    if any(c.isdigit() for c in s) and any(c.isalpha() for c in s):
        return MASK
    return s


def _field(m: re.Match[str]) -> str:
    value = m.group("value")
    quote = value[0] if value[:1] in "\"'" else ""
    return f"{m.group('head')}{quote}{MASK}{quote}"


def scrub(text: str, known: Iterable[str] = ()) -> str:
    """`text` with every secret-like value replaced by <redacted>."""
    for secret in sorted({s for s in known if len(s) >= MIN_KNOWN_SECRET}, key=len, reverse=True):
        text = text.replace(secret, MASK)
    text = _URL_CREDENTIALS.sub(lambda m: m.group("head") + MASK + "@", text)
    text = _QUERY.sub(lambda m: m.group("head") + MASK, text)
    text = _BEARER.sub(lambda m: m.group("head") + MASK, text)
    text = _FIELD.sub(_field, text)
    text = _MATRIX_TOKEN.sub(MASK, text)
    text = _UUID.sub(MASK, text)
    return _OPAQUE.sub(_opaque, text)
