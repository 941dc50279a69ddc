"""Exceptions raised by optimizely-async.

Only construction-time mistakes raise; the public decision and tracking methods log and return the official
SDK's failure value instead. The tree::

    OptimizelyError
    ├── InvalidDatafileError          the datafile is not JSON, has a wrong shape or an unsupported version
    ├── ConfigurationError            an option given to AsyncOptimizely (or a part of it) is unusable
    └── ClientStateError              the client was used in a lifecycle state that does not allow it
"""

from __future__ import annotations

__all__ = ["ClientStateError", "ConfigurationError", "InvalidDatafileError", "OptimizelyError"]


class OptimizelyError(Exception):
    """Base class of every exception this SDK raises."""


class InvalidDatafileError(OptimizelyError):
    """The datafile cannot be used: invalid JSON, a wrong shape (the message names the path), or an
    unsupported version."""


class ConfigurationError(OptimizelyError, ValueError):
    """An option passed to the client is unusable; the message says which one and what to change."""


class ClientStateError(OptimizelyError, RuntimeError):
    """The client was entered twice, or reopened after it was closed."""
