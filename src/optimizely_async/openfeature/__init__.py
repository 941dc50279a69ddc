"""OpenFeature provider for optimizely-async (install the extra: ``pip install optimizely-async[openfeature]``).

::

    from openfeature import api
    from optimizely_async.openfeature import OptimizelyProvider

    api.set_provider(OptimizelyProvider(client))   # client: an AsyncOptimizely you run
"""

from __future__ import annotations

from .provider import OptimizelyProvider

__all__ = ["OptimizelyProvider"]
