"""A griffe extension for the API reference: show a default's value, not the name of its constant.

The SDK's signatures take their defaults from ``optimizely_async.defaults`` (``update_interval:
float = defaults.UPDATE_INTERVAL``), which keeps every number in one place but renders as a name a reader
must look up. This extension replaces each ``defaults.NAME`` default with the constant's value (``300.0``)
when mkdocstrings loads the package; the source is unchanged. Enabled in mkdocs.yml.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_NAME = re.compile(r"^(?:optimizely_async\.)?defaults\.([A-Z][A-Z0-9_]*)$")


def literal(expression: str) -> str | None:
    """The value of a ``defaults.NAME`` expression as Python source, or None for any other expression."""
    match = _NAME.match(expression.strip())
    if match is None:
        return None
    from optimizely_async import defaults

    value = getattr(defaults, match.group(1), None)
    if not isinstance(value, (int, float, str)):
        return None
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10_000:
        return f"{value:_}"
    return repr(value)


class LiteralDefaults(griffe.Extension):
    """Rewrites ``defaults.NAME`` parameter defaults to their values."""

    def on_function(self, *, func: griffe.Function, **kwargs: Any) -> None:
        for parameter in func.parameters:
            if parameter.default is None:
                continue
            value = literal(str(parameter.default))
            if value is not None:
                parameter.default = value
