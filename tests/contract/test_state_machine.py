"""A Hypothesis state machine for the coordination of many workers through one store.

Several simulated workers interleave claim, heartbeat, complete (with records), release,
clock advances with reclaim, crashes (a worker that never comes back), re-saves of the job
and finalize, against a model kept by the test. After every step the store must agree with
the model: batch states, fencing tokens, record contents, progress and distributed counts.
It runs on InMemoryStateStore and PeeweeStateStore on every backend, and on MySQL/PostgreSQL
once more with the compare-and-set claim forced, so both claim paths are covered.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from batchactions_peewee import (
    Batch,
    BatchReservation,
    BatchStatus,
    ClaimFailureReason,
    JobConfig,
    JobState,
    JobStatus,
    PeeweeStateStore,
    ProcessedRecord,
    RecordStatus,
)

from ..support.async_stores import LoopStore
from ..support.stores import AnyStore, FakeClock, on_tables, open_any_store

WORKERS = 3
LEASE_MS = 1_000
#: Per backend, how many state machine runs and steps: small enough that all six together
#: stay well under a minute on two cores (the CI profile's max_examples is an upper bound).
MAX_EXAMPLES = 25
STEPS_PER_EXAMPLE = 30
#: (backend, forced compare-and-set claim). SQLite and memory have only one claim path.
CONFIGS = [
    ("memory", False),
    ("sqlite", False),
    ("mysql", False),
    ("mysql", True),
    ("postgres", False),
    ("postgres", True),
    ("async-sqlite", False),
    ("async-mysql", False),
    ("async-postgres", False),
]
OUTCOMES = st.lists(
    st.sampled_from([RecordStatus.PROCESSED, RecordStatus.FAILED, RecordStatus.INVALID]),
    min_size=3,
    max_size=3,
)
#: What each backend's runs reached, by "<label> <event>": reported, and each must happen.
EVENTS = ("steps", "live writes", "fenced writes", "reclaimed", "finalized")
reached: dict[str, int] = {}


@dataclass
class ModelBatch:
    """What the test expects of one batch (its records are start..end, both included)."""

    id: str
    index: int
    start: int
    end: int
    status: BatchStatus = BatchStatus.PENDING
    worker_id: str | None = None
    claimed_at: int | None = None
    processed: int = 0
    failed: int = 0
    live: BatchReservation | None = None
    issued: list[BatchReservation] = field(default_factory=list)


def parsed_by(reservation: BatchReservation) -> dict[str, object]:
    """What a worker writes into a record: who wrote it under which fencing token."""
    return {"worker": reservation.worker_id, "version": reservation.version}


class CoordinationMachine(RuleBasedStateMachine):
    """Simulated workers sharing one distributed job; the model is the expected truth."""

    store: AnyStore
    clock: FakeClock
    label: str

    def __init__(self) -> None:
        super().__init__()
        self.job_id = ""
        self.job: JobState | None = None
        self.total_records = 0
        self.started_at = 0
        self.batches: list[ModelBatch] = []
        self.records: dict[int, tuple[RecordStatus, dict[str, object]]] = {}
        self.held: dict[str, list[BatchReservation]] = {f"w{i}": [] for i in range(WORKERS)}
        self.crashed: set[str] = set()
        self.final_status: JobStatus | None = None
        self.completed_at: int | None = None
        self.finalized_true = 0
        self.healthy = False

    # -- setup -----------------------------------------------------------------------------

    @initialize(sizes=st.lists(st.integers(1, 3), min_size=1, max_size=5))
    def create_job(self, sizes: list[int]) -> None:
        self.job_id = uuid.uuid4().hex
        start = 0
        for index, size in enumerate(sizes):
            # Record ranges are inclusive: a batch holds records start..end.
            self.batches.append(ModelBatch(uuid.uuid4().hex, index, start, start + size - 1))
            start += size
        self.job = JobState(
            id=self.job_id,
            config=JobConfig(batch_size=3),
            status=JobStatus.PROCESSING,
            batches=[
                Batch(
                    id=b.id,
                    index=b.index,
                    status=BatchStatus.PENDING,
                    record_start_index=b.start,
                    record_end_index=b.end,
                )
                for b in self.batches
            ],
            total_records=start,
            started_at=self.clock.now,
            distributed=True,
        )
        self.total_records, self.started_at = start, self.clock.now
        self.store.save_job_state(self.job)

    def teardown(self) -> None:
        reached[self.label] = reached.get(self.label, 0) + 1
        if self.job and self.healthy:  # not after a failed step: that failure is the report
            self._drain()
        if self.job_id:
            self.store.delete_job(self.job_id)

    # -- helpers ---------------------------------------------------------------------------

    def _active(self) -> list[str]:
        return [w for w in self.held if w not in self.crashed]

    def _holding(self) -> list[str]:
        return [w for w in self._active() if self.held[w]]

    def _batch(self, reservation: BatchReservation) -> ModelBatch:
        return self.batches[reservation.batch_index]

    def _is_live(self, reservation: BatchReservation) -> bool:
        b = self._batch(reservation)
        return b.status == BatchStatus.PROCESSING and b.live == reservation

    def _count(self, what: str) -> None:
        key = f"{self.label} {what}"
        reached[key] = reached.get(key, 0) + 1

    def _count_step(self) -> None:
        self._count("steps")
        self.healthy = False

    def _pick(self, data: st.DataObject) -> BatchReservation:
        """A reservation some active worker got: a live one, any one, or the trickiest
        fenced-off one, an old reservation of a batch its worker holds again under a new one."""
        held = [r for w in self._holding() for r in self.held[w]]
        kinds = {
            "live": [r for r in held if self._is_live(r)],
            "any": held,
            "superseded": [
                r
                for r in held
                if not self._is_live(r)
                and self._batch(r).status == BatchStatus.PROCESSING
                and self._batch(r).worker_id == r.worker_id
            ],
        }
        kind = data.draw(st.sampled_from([k for k, rs in kinds.items() if rs]), label="kind")
        return data.draw(st.sampled_from(kinds[kind]), label="reservation")

    def _to_pending(self, b: ModelBatch) -> None:
        b.status, b.worker_id, b.claimed_at, b.live = BatchStatus.PENDING, None, None, None

    # -- actions, each checked against the model ---------------------------------------------

    def _claim(self, worker: str) -> BatchReservation | None:
        result = self.store.claim_batch(self.job_id, worker)
        pending = [b for b in self.batches if b.status == BatchStatus.PENDING]
        if self.final_status is not None:
            assert result.reason == ClaimFailureReason.JOB_NOT_PROCESSING
            return None
        if not pending:
            assert not result.claimed
            assert result.reason == ClaimFailureReason.NO_PENDING_BATCHES
            return None
        expected = pending[0]  # the lowest-index PENDING batch
        assert result.claimed, f"{worker} got {result.reason} while batch {expected.index} pends"
        r = result.reservation
        assert r is not None
        assert (r.batch_id, r.batch_index, r.worker_id) == (expected.id, expected.index, worker)
        assert (r.record_start_index, r.record_end_index) == (expected.start, expected.end)
        assert r.claimed_at == self.clock.now, "claim time must come from the store's clock"
        assert all(r.version > old.version for old in expected.issued), "fencing token reused"
        expected.status, expected.worker_id, expected.claimed_at = (
            BatchStatus.PROCESSING,
            worker,
            r.claimed_at,
        )
        expected.live = r
        expected.issued.append(r)
        self.held[worker].append(r)
        return r

    def _complete(self, r: BatchReservation, outcomes: list[RecordStatus], failed: bool) -> None:
        live = self._is_live(r)
        statuses = outcomes[: r.record_end_index - r.record_start_index + 1]
        records = [
            ProcessedRecord(
                index=r.record_start_index + i,
                raw={"n": r.record_start_index + i},
                parsed=parsed_by(r),
                status=status,
            )
            for i, status in enumerate(statuses)
        ]
        processed = sum(1 for s in statuses if s == RecordStatus.PROCESSED)
        status = BatchStatus.FAILED if failed else BatchStatus.COMPLETED
        done = self.store.complete_batch(
            r,
            status=status,
            processed_count=processed,
            failed_count=len(statuses) - processed,
            records=records,
        )
        assert done is live, f"complete_batch of {'live' if live else 'fenced'} {r}"
        self._count("live writes" if live else "fenced writes")
        if live:
            b = self._batch(r)
            b.status, b.processed, b.failed = status, processed, len(statuses) - processed
            b.live = None
            for record in records:
                self.records[record.index] = (record.status, parsed_by(r))
            # What this worker wrote is there right away, and is this worker's.
            assert self.store.get_batch_records(self.job_id, b.id) == records

    def _finalize(self) -> None:
        ready = self.final_status is None and all(
            b.status in (BatchStatus.COMPLETED, BatchStatus.FAILED) for b in self.batches
        )
        assert self.store.try_finalize_job(self.job_id) is ready
        if ready:
            self._count("finalized")
            self.finalized_true += 1
            failed = any(b.status == BatchStatus.FAILED for b in self.batches)
            self.final_status = JobStatus.FAILED if failed else JobStatus.COMPLETED
            self.completed_at = self.clock.now

    # -- rules -----------------------------------------------------------------------------

    @precondition(lambda self: bool(self.job))
    @rule(data=st.data())
    def claim(self, data: st.DataObject) -> None:
        self._count_step()
        self._claim(data.draw(st.sampled_from(self._active()), label="worker"))

    @precondition(lambda self: bool(self.job))
    @rule(data=st.data(), outcomes=OUTCOMES, failed=st.booleans())
    def work_one_batch(
        self, data: st.DataObject, outcomes: list[RecordStatus], failed: bool
    ) -> None:
        """What a worker does: claim, complete with records, try to finalize the job."""
        self._count_step()
        r = self._claim(data.draw(st.sampled_from(self._active()), label="worker"))
        if r is not None:
            self._complete(r, outcomes, failed)
        self._finalize()

    @precondition(lambda self: bool(self._holding()))
    @rule(data=st.data())
    def heartbeat(self, data: st.DataObject) -> None:
        self._count_step()
        r = self._pick(data)
        live = self._is_live(r)
        assert self.store.heartbeat(r) is live, f"heartbeat of {'live' if live else 'fenced'} {r}"
        self._count("live writes" if live else "fenced writes")
        if live:
            b = self._batch(r)
            assert b.claimed_at is not None
            # The lease moves to "now", and always moves (even twice in one millisecond).
            b.claimed_at = max(self.clock.now, b.claimed_at + 1)

    @precondition(lambda self: bool(self._holding()))
    @rule(data=st.data(), outcomes=OUTCOMES, failed=st.booleans())
    def complete(self, data: st.DataObject, outcomes: list[RecordStatus], failed: bool) -> None:
        self._count_step()
        self._complete(self._pick(data), outcomes, failed)

    @precondition(lambda self: bool(self._holding()))
    @rule(data=st.data(), fenced=st.booleans())
    def release(self, data: st.DataObject, fenced: bool) -> None:
        """``release(reservation)`` (fenced by version) or the port's ``release_batch``, which
        acts while the worker holds the batch under any reservation."""
        self._count_step()
        r = self._pick(data)
        b = self._batch(r)
        if fenced:
            live = self._is_live(r)
            assert self.store._release_reservation(r) is live, (
                f"release of {'live' if live else 'fenced'} {r}"
            )
            self._count("live writes" if live else "fenced writes")
        else:
            self.store.release_batch(self.job_id, r.batch_id, r.worker_id)
            live = b.status == BatchStatus.PROCESSING and b.worker_id == r.worker_id
        if live:
            self._to_pending(b)

    @precondition(lambda self: bool(self.job))
    @rule(
        ms=st.sampled_from([0, 1, LEASE_MS // 2, LEASE_MS, LEASE_MS + 1]),
        timeout=st.sampled_from([0, LEASE_MS // 2, LEASE_MS]),
    )
    def advance_clock_and_reclaim(self, ms: int, timeout: int) -> None:
        self._count_step()
        self._advance_and_reclaim(ms, timeout)

    @precondition(lambda self: bool(self._holding()))
    @rule()
    def leases_expire_and_are_reclaimed(self) -> None:
        """Every worker stalls past the lease; a reclaimer frees what they hold."""
        self._count_step()
        self._advance_and_reclaim(LEASE_MS + 1, LEASE_MS)

    def _advance_and_reclaim(self, ms: int, timeout: int) -> None:
        self.clock.advance(ms)
        cutoff = self.clock.now - timeout
        stale = [
            b
            for b in self.batches
            if b.status == BatchStatus.PROCESSING and b.claimed_at is not None
            if b.claimed_at < cutoff
        ]
        assert self.store.reclaim_stale_batches(self.job_id, timeout) == len(stale)
        for b in stale:
            self._to_pending(b)
            self._count("reclaimed")

    @precondition(lambda self: len(self._active()) > 1)
    @rule(data=st.data())
    def crash(self, data: st.DataObject) -> None:
        """A worker dies holding whatever it holds, and never comes back."""
        self._count_step()
        self.crashed.add(data.draw(st.sampled_from(self._active()), label="worker"))

    @precondition(lambda self: bool(self.job) and self.final_status is None)
    @rule()
    def resave_job(self) -> None:
        """Saving the job again (all batches PENDING in it) must not reset any batch row."""
        self._count_step()
        assert self.job is not None
        self.store.save_job_state(self.job)

    @precondition(lambda self: bool(self.job))
    @rule()
    def finalize(self) -> None:
        self._count_step()
        self._finalize()

    def _drain(self) -> None:
        """End every run the same way: leases expire, one surviving worker finishes every
        batch, the job is finalized exactly once, and then no old reservation can write."""
        latest = max((b.claimed_at or 0) for b in self.batches)
        self._advance_and_reclaim(max(0, latest - self.clock.now) + LEASE_MS + 1, LEASE_MS)
        worker = self._active()[0]
        while (r := self._claim(worker)) is not None:
            self._complete(r, [RecordStatus.PROCESSED] * 3, failed=False)
        self._finalize()
        assert self.finalized_true == 1
        self._finalize()  # a second (or later) caller gets False
        for r in (r for b in self.batches for r in b.issued):
            assert not self.store.heartbeat(r)
            assert not self.store._release_reservation(r)
            self._complete(r, [RecordStatus.FAILED] * 3, failed=True)  # asserts False
        self.store_agrees_with_the_model()

    # -- invariants ------------------------------------------------------------------------

    @invariant()
    def store_agrees_with_the_model(self) -> None:
        """After every step: batch states, fencing tokens, records and counts."""
        if not self.job:
            return
        self._batches_match_the_model()
        self._each_batch_has_at_most_one_live_owner()
        self._records_are_those_of_live_completions_only()
        self._counts_agree_with_the_model()
        self.healthy = True

    def _batches_match_the_model(self) -> None:
        job = self.store.get_job_state(self.job_id)
        assert job is not None
        assert job.status == (self.final_status or JobStatus.PROCESSING)
        assert job.completed_at == self.completed_at
        assert self.finalized_true <= 1
        seen = [
            (b.id, b.status, b.worker_id, b.claimed_at, b.processed_count, b.failed_count)
            for b in job.batches
        ]
        want = [
            (b.id, b.status, b.worker_id, b.claimed_at, b.processed, b.failed) for b in self.batches
        ]
        assert seen == want

    def _each_batch_has_at_most_one_live_owner(self) -> None:
        for b in self.batches:
            versions = [r.version for r in b.issued]
            assert len(set(versions)) == len(versions), f"batch {b.index}: token handed out twice"
            assert (b.live is not None) == (b.status == BatchStatus.PROCESSING)
        if isinstance(self.store, (PeeweeStateStore, LoopStore)):
            # The stored fencing token: only the live reservation (if any) may match it.
            B = self.store.tables.batches
            query: Any = B.select(B.id, B.status, B.worker_id, B.version).where(
                B.job_id == self.job_id
            )
            stored = on_tables(self.store, lambda: list(query.tuples()))
            rows = {i: (s, w, v) for i, s, w, v in stored}
            for b in self.batches:
                status, worker, version = rows[b.id]
                matching = [
                    r
                    for r in b.issued
                    if status == BatchStatus.PROCESSING.value
                    and (r.worker_id, r.version) == (worker, version)
                ]
                assert matching == ([b.live] if b.live else []), f"batch {b.index}: {matching}"

    def _records_are_those_of_live_completions_only(self) -> None:
        stored = self.store.get_processed_records(self.job_id) + self.store.get_failed_records(
            self.job_id
        )
        seen = {r.index: (r.status, r.parsed) for r in stored}
        assert seen == self.records
        assert self.store.get_pending_records(self.job_id) == []

    def _counts_agree_with_the_model(self) -> None:
        status = self.store.get_distributed_status(self.job_id)
        by_status = {s: sum(1 for b in self.batches if b.status == s) for s in BatchStatus}
        assert status.total_batches == len(self.batches)
        assert status.completed_batches == by_status[BatchStatus.COMPLETED]
        assert status.failed_batches == by_status[BatchStatus.FAILED]
        assert status.processing_batches == by_status[BatchStatus.PROCESSING]
        assert status.pending_batches == by_status[BatchStatus.PENDING]
        terminal = by_status[BatchStatus.COMPLETED] + by_status[BatchStatus.FAILED]
        assert status.is_complete == (terminal == len(self.batches))

        progress = self.store.get_progress(self.job_id)
        total = self.total_records
        processed = sum(1 for s, _ in self.records.values() if s == RecordStatus.PROCESSED)
        failed = len(self.records) - processed
        assert progress.total_records == total
        assert progress.processed_records == processed
        assert progress.failed_records == failed
        assert progress.pending_records == max(0, total - processed - failed)
        assert progress.percentage == math.floor((processed + failed) / total * 100 + 0.5)
        assert progress.current_batch == by_status[BatchStatus.COMPLETED]
        assert progress.total_batches == len(self.batches)
        assert progress.elapsed_ms == self.clock.now - self.started_at


@pytest.mark.parametrize(
    ("kind", "force_cas"), CONFIGS, ids=[f"{k}{'-cas' if c else ''}" for k, c in CONFIGS]
)
def test_workers_interleaving_keep_every_coordination_invariant(
    kind: str,
    force_cas: bool,
    url_for: Callable[[str], str],
    record_property: Callable[[str, object], None],
) -> None:
    clock = FakeClock()
    label = f"{kind}{'-cas' if force_cas else ''}"
    with open_any_store(kind, url_for, clock) as store:
        if isinstance(store, (PeeweeStateStore, LoopStore)):
            store.force_cas_claim = force_cas
        machine = type(
            "CoordinationMachineOn" + label.replace("-", "_"),
            (CoordinationMachine,),
            {"store": store, "clock": clock, "label": label},
        )
        run_state_machine_as_test(
            machine,
            settings=settings(
                max_examples=min(MAX_EXAMPLES, settings().max_examples),
                stateful_step_count=STEPS_PER_EXAMPLE,
            ),
        )
    seen = {what: reached.get(f"{label} {what}", 0) for what in EVENTS}
    runs = reached.get(label, 0)
    print(f"state machine on {label}: {runs} runs, {seen}")
    record_property("state_machine", seen)
    # The runs must have reached the situations the invariants are about.
    assert all(seen.values()), f"some situations never happened: {seen}"
