"""MurmurHash3 bucketing, identical to the official SDK's.

``bucket = floor(murmur3_x86_32(bucketing_id + parent_id, seed=1) / 2**32 * 10000)``; the float and the
integer forms agree for every 32-bit hash, so the integer form is used.
"""

from __future__ import annotations

from collections.abc import Sequence

import mmh3

from ..defaults import HASH_SEED, MAX_TRAFFIC_VALUE

__all__ = ["bucket_value", "find_bucket"]


def bucket_value(bucketing_key: str) -> int:
    """The bucket (0..9999) of an already concatenated bucketing key."""
    return (mmh3.hash(bucketing_key, HASH_SEED, signed=False) * MAX_TRAFFIC_VALUE) >> 32


def find_bucket(
    bucketing_id: str, parent_id: str, allocation: Sequence[tuple[str, int | None]]
) -> tuple[int, str | None]:
    """Scan a traffic allocation in list order: the first entity whose ``endOfRange`` is above the user's
    bucket wins. Returns ``(bucket, entity_id or None)``."""
    value = (mmh3.hash(bucketing_id + parent_id, HASH_SEED, signed=False) * MAX_TRAFFIC_VALUE) >> 32
    for entity_id, end in allocation:
        if end is not None and value < end:
            return value, entity_id
    return value, None
