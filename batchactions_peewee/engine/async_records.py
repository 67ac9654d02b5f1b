"""The event loop of a worker whose processor is ``async def`` (``Worker(concurrency=N)``):
its records as up to N coroutines on one loop, in a thread of its own. Imported only by
such a worker (engine/concurrency.py chooses), so that no other process imports asyncio.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, cast

from ..model import ProcessedRecord
from .batch import RecordProcessing, failed_record, succeeded
from .concurrency import BatchRun, Result, Runner
from .events import ProcessingContext

#: How often an async wait looks at its event (a lost lease, ``stop()``); a thread's wakes
#: at once.
LEASE_POLL_S = 0.05

AsyncProcessor = Callable[[dict[str, Any], ProcessingContext], Awaitable[object]]


class AsyncRecords(Runner):
    """An ``async def`` processor's records as ``concurrency`` coroutines on one event
    loop, which runs in a thread of its own (so ``run`` works in any thread, one with a
    running loop too), made with the first batch and kept until ``close``.

    The steps around the processor (validation, hooks) run on the loop's thread, as plain
    calls; retries wait with ``asyncio.sleep`` (or ``sleep``, the worker's test double).
    """

    asynchronous = True

    def __init__(
        self, concurrency: int, name: str, sleep: Callable[[float], object] | None = None
    ) -> None:
        self.concurrency = concurrency
        self._name = name
        self._sleep = sleep
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def _run(self, batch: BatchRun, process: RecordProcessing, runners: int) -> None:
        loop = self._loop if self._loop is not None else self._start()
        asyncio.run_coroutine_threadsafe(self._batch(batch, process, runners), loop).result()

    def _start(self) -> asyncio.AbstractEventLoop:
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=_serve, args=(loop,), name=self._name, daemon=True)
        thread.start()
        self._loop, self._thread = loop, thread
        return loop

    async def _batch(self, batch: BatchRun, process: RecordProcessing, runners: int) -> None:
        async def one(index: int, raw: dict[str, Any], context: ProcessingContext) -> Result:
            return await process_async(process, index, raw, context, self._wait)

        await asyncio.gather(*(drain(batch, one) for _ in range(runners)))

    async def _wait(self, seconds: float, context: ProcessingContext) -> None:
        """The wait before a retry; it ends early when the lease is lost."""
        if self._sleep is not None:
            self._sleep(seconds)
            return
        await wait_for_retry(seconds, context)

    def close(self) -> None:
        loop, thread = self._loop, self._thread
        self._loop = self._thread = None
        if loop is None or thread is None:
            return
        if thread.is_alive():
            asyncio.run_coroutine_threadsafe(_shutdown(loop), loop).result()
            loop.call_soon_threadsafe(loop.stop)
            thread.join()
        loop.close()


#: One record's processing: its result, or None once the lease was lost mid-retry.
OneRecord = Callable[[int, dict[str, Any], ProcessingContext], Awaitable[Result]]


async def drain(batch: BatchRun, one: OneRecord) -> None:
    """Take ``batch``'s records one after another through ``one`` until none is left
    (several of these run at once); one that raises fails the batch, and the others
    finish their records in hand first."""
    while (taken := batch.take()) is not None:
        position, index, raw, context = taken
        try:
            result = await one(index, raw, context)
        except BaseException as exc:
            batch.fail(exc)
            return
        batch.put(position, result)


async def sleep_unless(event: threading.Event, seconds: float) -> None:
    """``asyncio.sleep(seconds)``, ended early once ``event`` is set (a thread may set it)."""
    deadline = time.monotonic() + seconds
    while not event.is_set() and (left := deadline - time.monotonic()) > 0:
        await asyncio.sleep(min(left, LEASE_POLL_S))


async def wait_for_retry(seconds: float, context: ProcessingContext) -> None:
    """An async processor's wait before a retry; it ends early when the lease is lost."""
    await sleep_unless(context.lease_lost, seconds)


async def process_async(
    process: RecordProcessing,
    index: int,
    raw: dict[str, Any],
    context: ProcessingContext,
    wait: Callable[[float, ProcessingContext], Awaitable[None]],
) -> Result:
    """One record through ``process`` with its ``async def`` processor awaited: the steps
    before it, its attempts (``wait`` before each retry), the steps after it. None when
    the lease is lost mid-retry."""
    ready = process.prepare(index, raw, context)
    if isinstance(ready, ProcessedRecord):
        return ready
    parsed, given = ready
    processor = cast(AsyncProcessor, process.processor)
    attempt = 0
    while True:  # RecordProcessing._attempts, awaited
        try:
            await processor(given, context)
        except Exception as exc:
            if attempt >= process.max_retries:
                result: Result = failed_record(index, raw, parsed, exc, attempt)
                break
            attempt += 1
            await wait(process.retry_delay_ms * 2 ** (attempt - 1) / 1000, context)
            if context.lease_lost.is_set():
                return None
            continue
        result = succeeded(index, raw, parsed, attempt)
        break
    return process.finish(index, raw, ready, result, context)


def _serve(loop: asyncio.AbstractEventLoop) -> None:
    asyncio.set_event_loop(loop)
    loop.run_forever()


async def _shutdown(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel what the processor left running, then close async generators and the
    default executor (``asyncio.to_thread``), as ``asyncio.run`` does."""
    tasks = [t for t in asyncio.all_tasks(loop) if t is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await loop.shutdown_asyncgens()
    await loop.shutdown_default_executor()
