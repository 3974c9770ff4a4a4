"""Credentials out of anything written down: traces, audit lines, logs.

Two rules: a value under a key that names a credential (``api_key``, ``authorization``, ``x-api-key``,
``token`` ...) is a secret whatever it holds, and a string that looks like a key (``sk-...``,
``Bearer ...``, AWS/GitHub/Slack/Google key shapes) is one wherever it appears, e.g. inside an upstream
error message that quotes the caller's key.
"""

from __future__ import annotations

import re
from functools import lru_cache

REDACTED = "[REDACTED]"

# Key names (lower-cased, '-' and ' ' as '_') whose values are credentials whatever they hold.
_SECRET_KEYS = frozenset({
    "api_key", "apikey", "authorization", "proxy_authorization", "x_api_key", "token", "access_token",
    "refresh_token", "id_token", "auth_token", "bearer", "secret", "client_secret", "password", "passwd",
    "cookie", "set_cookie", "private_key", "credentials",
})
_SECRET_SUFFIXES = ("_api_key", "_apikey", "_token", "_secret", "_password", "_authorization", "_credentials")
# Strings that look like credentials wherever they appear (inside reasons, notes, error messages).
_SECRET_PATTERNS = [
    re.compile(r"(?<![A-Za-z0-9])sk-[A-Za-z0-9][A-Za-z0-9_\-]{5,}"),  # OpenAI / Anthropic style
    re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=\-]{6,}"),
    re.compile(r"\bAKIA[0-9A-Z]{16}\b"),  # AWS access key id
    re.compile(r"\bgh[pousr]_[A-Za-z0-9]{20,}\b"),  # GitHub tokens
    re.compile(r"\bxox[abprs]-[A-Za-z0-9\-]{10,}\b"),  # Slack tokens
    re.compile(r"\bAIza[0-9A-Za-z_\-]{30,}\b"),  # Google API keys
]


#: One case-blind search that every string a pattern above could match also matches (a superset): most
#: strings (model names, reasons) hold no key, and one search is far cheaper than six substitutions.
_MAYBE_SECRET = re.compile("|".join(p.pattern.replace("(?i)", "") for p in _SECRET_PATTERNS), re.IGNORECASE)


#: No pattern above matches fewer characters ("sk-" and six more).
_SHORTEST_SECRET = 9


@lru_cache(maxsize=4096)  # the same few dozen key names, record after record
def is_secret_key(key: str) -> bool:
    """True for a mapping key that names a credential (``max_tokens`` and ``tokens_in`` are not)."""
    k = re.sub(r"[\s\-]+", "_", key.strip().lower())
    return k in _SECRET_KEYS or k.endswith(_SECRET_SUFFIXES)


def redact_text(text: str) -> str:
    """``text`` with every key-shaped substring replaced by ``[REDACTED]``."""
    if len(text) < _SHORTEST_SECRET or _MAYBE_SECRET.search(text) is None:
        return text
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(REDACTED, text)
    return text
