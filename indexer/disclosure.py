"""What a caller without the API key may read of a project's settings: the
values that name a server (its URL), a credential or a path on the server
are withheld, in the REST answers and in the evaluation report they serve."""

from __future__ import annotations

import re
from typing import Any

#: parameters whose names say they locate a server or hold a credential
PRIVATE_NAME = re.compile(
    r"url|host|endpoint|server|key|token|secret|password|credential|auth", re.I
)


def is_private(name: str, value: Any) -> bool:
    """Whether a parameter tells the operator's business: a server's address
    or a credential (by its name), a URL or a path on the server (by its value)."""
    if PRIVATE_NAME.search(name):
        return True
    values = value if isinstance(value, list) else [value]
    return any(
        isinstance(v, str) and ("://" in v or v.startswith(("/", "~"))) for v in values
    )


def withheld(data: Any, hidden: Any = None) -> Any:
    """`data` (JSON-like) with every private value, at any depth, replaced
    by `hidden`."""
    if isinstance(data, dict):
        return {
            k: hidden
            if is_private(str(k), v) and not isinstance(v, dict)
            else withheld(v, hidden)
            for k, v in data.items()
        }
    if isinstance(data, list):
        return [withheld(v, hidden) for v in data]
    return data
