"""Credentials out of text shown to others: ``scheme://user:password@host`` → ``scheme://***@host``.

Used for camera labels in logs and, once, over everything ``/status`` returns (sources'
``last_error``, sinks' status), so no URL's userinfo reaches an HTTP client.
"""

from __future__ import annotations

import re
from typing import Any

# "://", then the userinfo up to "@": it cannot cross "/", so each match scans at most to the next "/"
_USERINFO = re.compile(r"://[^\s/?#@]*@")


def redact(text: str) -> str:
    """``text`` with the userinfo (user name and password) of every URL in it replaced by ``***``."""
    return _USERINFO.sub("://***@", text)


def redact_all(value: Any) -> Any:
    """A copy of a JSON-like value (dicts, lists, strings) with :func:`redact` applied to every string."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: redact_all(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_all(v) for v in value]
    return value
