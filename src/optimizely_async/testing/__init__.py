"""A test kit for your own tests: build datafiles in a few lines, record events instead of sending them.

* ``DatafileBuilder`` writes the datafile JSON the Optimizely CDN serves for a Feature Experimentation
  project (version 4: flags with variables, A/B tests and targeted deliveries as flag rules, typed audiences,
  events), so the client, and the official SDK, read it like a real one::

      datafile = (
          DatafileBuilder()
          .audience("beta", plan="premium")
          .flag("kit_flag", variables={"title": "Hello", "limit": 3})
          .rollout(enabled=True, variables={"title": "Welcome"}, audience="beta")
          .build()
      )

* ``RecordingDispatcher`` is an ``event_dispatcher=`` that keeps every request it is given, reports it
  delivered, and reads the impressions and conversions back out as ``RecordedEvent`` values.
* ``update_datafile`` swaps the datafile of a running client (the way a new revision from the CDN
  would), so a long-lived client (an app's) can be steered from one test to the next.

Nothing here touches the network. Ids are derived from keys (a flag's id from its key, a rule's from its flag
and key ...), so adding a flag does not move users between the variations of another: a given user lands in
the same variation of a rule every time the same builder calls are made.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..errors import ConfigurationError
from .builder import DatafileBuilder
from .recording import RecordedEvent, RecordingDispatcher

if TYPE_CHECKING:
    from ..client import AsyncOptimizely

__all__ = ["DatafileBuilder", "RecordedEvent", "RecordingDispatcher", "update_datafile"]


async def update_datafile(client: AsyncOptimizely, datafile: str | bytes | Mapping[str, Any]) -> None:
    """Give a running client a new datafile, as if its poller had fetched a new revision: later decisions
    use it, and ``OPTIMIZELY_CONFIG_UPDATE`` listeners are told. Raises
    ``InvalidDatafileError`` for a datafile the client cannot use (it keeps the old)."""
    from ..client import AsyncOptimizely
    from ..config.project_config import parse_config

    if not isinstance(client, AsyncOptimizely):
        raise ConfigurationError(f"update_datafile() takes an AsyncOptimizely client, not {type(client).__name__}")
    config = parse_config(datafile)
    await client._on_new_config(config)
