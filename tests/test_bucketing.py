from __future__ import annotations

import math

import mmh3
from hypothesis import given
from hypothesis import strategies as st

from optimizely_async.decision.bucketing import bucket_value, find_bucket


def official_formula(key: str) -> int:
    # The official SDK's float formula: floor(unsigned_hash / 2**32 * 10000).
    unsigned = mmh3.hash(key, 1) & 0xFFFFFFFF
    return math.floor(float(unsigned) / 2**32 * 10000)


def test_published_vectors() -> None:
    assert bucket_value("ppid1" + "1886780721") == 5254
    assert bucket_value("ppid2" + "1886780721") == 4299
    assert bucket_value("ppid2" + "1886780722") == 2434
    assert bucket_value("ppid3" + "1886780721") == 5439
    long_id = "a very very very very very very very very very very very very very very very long ppd string"
    assert bucket_value(long_id + "1886780721") == 6128


@given(st.text(), st.text(alphabet="0123456789", min_size=1, max_size=12))
def test_integer_form_matches_float_form(bucketing_id: str, parent_id: str) -> None:
    key = bucketing_id + parent_id
    try:
        key.encode()
    except UnicodeEncodeError:
        return
    value = bucket_value(key)
    assert 0 <= value < 10000
    assert value == official_formula(key)


@given(st.text(min_size=1, max_size=20), st.lists(st.integers(0, 10000), min_size=1, max_size=5))
def test_find_bucket_takes_first_range_above(bucketing_id: str, ends: list[int]) -> None:
    ends = sorted(ends)
    allocation = [(f"v{i}", end) for i, end in enumerate(ends)]
    value, entity = find_bucket(bucketing_id, "123", allocation)
    expected = next((f"v{i}" for i, end in enumerate(ends) if value < end), None)
    assert entity == expected


def test_none_end_of_range_is_skipped() -> None:
    value, entity = find_bucket("user", "1", [("a", None), ("b", 10000)])
    assert entity == "b" and 0 <= value < 10000
