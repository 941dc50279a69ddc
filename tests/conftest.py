from __future__ import annotations

import pytest
from hypothesis import settings

# No per-example deadline: on a shared or loaded machine (CI) a slow example is not a failure.
settings.register_profile("optimizely-async", deadline=None)
settings.load_profile("optimizely-async")


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Every async test runs on both anyio backends."""
    return str(request.param)
