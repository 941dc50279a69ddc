"""MurmurHash3 bucketing, identical to the official SDK's.

``bucket = floor(murmur3_x86_32(utf8(bucketing_id + parent_id), seed=1) / 2**32 * 10000)``; the float and the
integer forms agree for every 32-bit hash, so the integer form is used.

Only bytes encoded here are handed to ``mmh3``: some mmh3 releases crash the process (SIGSEGV) when given a
``str`` that UTF-8 cannot encode, others raise. A string that UTF-8 can encode hashes exactly as in the
official SDK. One that cannot (it holds lone surrogates, which ``json.loads`` makes of ``"\\ud800"``) is read as
UTF-16: a high surrogate followed by a low one stands for the character they encode, and every other surrogate
becomes U+FFFD, the replacement character. Those are the bytes a browser's ``TextEncoder`` and Go's JSON decoder
give for the same text. The official SDK raises ``UnicodeEncodeError`` for such ids (see docs/compatibility.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import mmh3

from ..defaults import HASH_SEED, MAX_TRAFFIC_VALUE

__all__ = ["bucket_value", "find_bucket", "hash_key"]


def hash_key(text: str) -> bytes:
    """The bytes a bucketing key is hashed as: UTF-8, with lone surrogates read as U+FFFD."""
    # str.encode, not text.encode: a str subclass may override encode (and lie or raise).
    try:
        return str.encode(text, "utf-8")
    except UnicodeEncodeError:
        wide = str.encode(text, "utf-16-le", "surrogatepass")
        return wide.decode("utf-16-le", "replace").encode("utf-8")


def _join(bucketing_id: str, parent_id: str) -> str:
    if type(bucketing_id) is str and type(parent_id) is str:
        return bucketing_id + parent_id
    return "".join((bucketing_id, parent_id))  # no method of a str subclass runs


def bucket_value(bucketing_key: str) -> int:
    """The bucket (0..9999) of an already concatenated bucketing key."""
    return (mmh3.hash(hash_key(bucketing_key), HASH_SEED, signed=False) * MAX_TRAFFIC_VALUE) >> 32


def find_bucket(
    bucketing_id: str, parent_id: str, allocation: Sequence[tuple[str, int | None]]
) -> tuple[int, str | None]:
    """Scan a traffic allocation in list order: the first entity whose ``endOfRange`` is above the user's
    bucket wins. Returns ``(bucket, entity_id or None)``."""
    value = (mmh3.hash(hash_key(_join(bucketing_id, parent_id)), HASH_SEED, signed=False) * MAX_TRAFFIC_VALUE) >> 32
    for entity_id, end in allocation:
        if end is not None and value < end:
            return value, entity_id
    return value, None
