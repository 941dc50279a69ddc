"""OpenFeature provider for optimizely-async (install the extra: ``pip install optimizely-async[openfeature]``).

::

    from openfeature import api
    from optimizely_async.openfeature import OptimizelyProvider

    api.set_provider(OptimizelyProvider(client))   # client: an AsyncOptimizely you run
"""

from __future__ import annotations

try:
    from .provider import OptimizelyProvider
except ImportError as exc:  # pragma: no cover - depends on what is installed
    if exc.name is None or not exc.name.startswith("openfeature"):
        raise
    raise ImportError(
        "optimizely_async.openfeature needs openfeature-sdk >= 0.10: pip install 'optimizely-async[openfeature]'",
        name=exc.name,
    ) from exc

__all__ = ["OptimizelyProvider"]
