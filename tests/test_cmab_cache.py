"""The CMAB and segments cache (TTL from the save, LRU order) and the CMAB attribute fingerprint.

The fingerprint lets a cache hit skip the official MD5 of the attributes' JSON; it must agree with that MD5
exactly (same answer for every pair of attribute sets it handles), which hypothesis checks.
"""

from __future__ import annotations

import math
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from optimizely_async._ttl_cache import TtlLruCache
from optimizely_async.cmab.service import _fingerprint, attributes_hash


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_entries_expire_a_ttl_after_their_save_and_lookups_do_not_refresh_them() -> None:
    clock = Clock()
    cache: TtlLruCache[str, int] = TtlLruCache(10, 30.0, clock)
    cache.save("a", 1)
    clock.now += 29.0
    assert cache.lookup("a") == 1  # still fresh; the lookup does not make it younger
    clock.now += 1.0
    assert cache.lookup("a") is None and len(cache) == 0  # stale: removed at lookup
    cache.save("a", 2)
    clock.now += 29.9
    cache.save("a", 3)  # a new save restarts the age
    clock.now += 29.9
    assert cache.lookup("a") == 3


def test_least_recently_used_goes_first_and_capacity_zero_keeps_nothing() -> None:
    cache: TtlLruCache[str, int] = TtlLruCache(2, 0.0)  # ttl 0: never expires
    cache.save("a", 1)
    cache.save("b", 2)
    assert cache.lookup("a") == 1  # "a" becomes the most recently used
    cache.save("c", 3)
    assert cache.lookup("b") is None and cache.lookup("a") == 1 and cache.lookup("c") == 3
    cache.remove("a")
    assert cache.lookup("a") is None
    cache.reset()
    assert len(cache) == 0
    empty: TtlLruCache[str, int] = TtlLruCache(0, 10.0)
    empty.save("a", 1)
    assert empty.lookup("a") is None


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, 1, 0.0, -0.0, 1.0, True, False, 30, 30.0, "30", "", "x", "ü"]),
    st.text(max_size=5),
)
attribute_sets = st.dictionaries(st.sampled_from(["501", "502", "503"]), scalars, max_size=3)


def _ordered(values: dict[str, Any]) -> dict[str, Any]:
    # the filter always lists the ids in the rule's attributeIds order
    return {key: values[key] for key in ("501", "502", "503") if key in values}


@given(attribute_sets, attribute_sets)
def test_the_fingerprint_agrees_with_the_official_md5(a: dict[str, Any], b: dict[str, Any]) -> None:
    a, b = _ordered(a), _ordered(b)
    fa, fb = _fingerprint(a), _fingerprint(b)
    assert fa is not None and fb is not None
    assert (fa == fb) == (attributes_hash(a) == attributes_hash(b))


def test_the_fingerprint_tells_apart_what_json_tells_apart() -> None:
    assert _fingerprint({"1": 30}) != _fingerprint({"1": 30.0})
    assert _fingerprint({"1": 1}) != _fingerprint({"1": True})
    assert _fingerprint({"1": 0.0}) != _fingerprint({"1": -0.0})
    assert _fingerprint({"1": math.nan}) == _fingerprint({"1": math.nan})
    assert _fingerprint({"1": [1]}) is None  # not a scalar: the MD5 decides
    assert attributes_hash({"1": [1]}) == attributes_hash({"1": [1]}) != attributes_hash({"1": [True]})
