"""The worker's per-record shortcuts give what the plain forms give.

Each test catches a shortcut that drifts from what it stands for: contexts built slot by
slot that miss or swap a field of ``ProcessingContext``, and index ranges for the set-based
completion that leave out an index, take one in that is not there, or skip more than
allowed.
"""

from __future__ import annotations

import dataclasses
import threading

from hypothesis import given
from hypothesis import strategies as st

from batchactions_peewee.engine.events import ProcessingContext, batch_contexts
from batchactions_peewee.store.records import _ranges


def test_batch_contexts_build_the_same_contexts_as_the_dataclass() -> None:
    lost = threading.Event()
    make = batch_contexts("job", "batch", 3, 1_000, lost)
    for index in (0, 7, 999):
        made = make(index)
        plain = ProcessingContext("job", "batch", 3, index, 1_000, lost)
        assert type(made) is ProcessingContext
        assert made == plain
        for f in dataclasses.fields(ProcessingContext):  # every slot set, lease_lost too
            assert getattr(made, f.name) is getattr(plain, f.name), f.name
    assert make(1) != make(2)
    try:
        make(1).record_index = 5  # type: ignore[misc]
    except dataclasses.FrozenInstanceError:
        pass
    else:
        raise AssertionError("a context built by batch_contexts must stay frozen")


@given(
    st.sets(st.integers(0, 2_000), max_size=60).map(sorted),
    st.integers(0, 5),
)
def test_ranges_cover_exactly_the_indexes(indexes: list[int], max_skipped: int) -> None:
    covered: list[int] = []
    for low, high, skipped, count in _ranges(indexes, max_skipped):
        assert len(skipped) <= max_skipped
        assert all(low < s < high for s in skipped)
        inside = [i for i in range(low, high + 1) if i not in skipped]
        assert count == len(inside)
        covered.extend(inside)
    assert covered == indexes


def test_a_batch_without_gaps_is_one_range() -> None:
    assert list(_ranges(list(range(500, 1000)), 0)) == [(500, 999, [], 500)]
    assert list(_ranges([4, 5, 7], 0)) == [(4, 5, [], 2), (7, 7, [], 1)]
    assert list(_ranges([4, 5, 7], 1)) == [(4, 7, [6], 3)]
