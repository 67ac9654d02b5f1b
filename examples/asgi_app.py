"""An ASGI app (Starlette) that works its jobs inside its own event loop.

``POST /jobs`` with ``{"records": [{...}, ...], "batch_size": 100}`` prepares a job and
starts an ``AsyncWorker`` on it as a task of the app's loop; ``GET /jobs/{id}`` reports
the job's status and progress while the worker runs. Nothing blocks the loop: the store's
queries yield to it (``playhouse.pwasyncio``), and so does the processor, an ``async def``
that here only waits ``delay_ms`` per record, as a call to a web API would.

Run it with any ASGI server, e.g. ``uvicorn examples.asgi_app:app`` (needs the
``[asyncio]`` extra and ``starlette``); ``make_app`` takes any pwasyncio database.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, cast

import peewee as pw
from playhouse.pwasyncio import AsyncSqliteDatabase
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from batchactions_peewee import (
    AsyncPeeweeStateStore,
    AsyncWorker,
    ProcessingContext,
    prepare_job,
)
from batchactions_peewee.errors import BatchActionsError

Processor = Callable[[dict[str, Any], ProcessingContext], Awaitable[object]]


def slow_processor(delay_ms: int) -> Processor:
    """A processor that waits ``delay_ms`` per record (a stand-in for real I/O)."""

    async def process(record: dict[str, Any], context: ProcessingContext) -> None:
        await asyncio.sleep(delay_ms / 1000)

    return process


def make_app(
    database: pw.Database,
    *,
    table_prefix: str = "batchactions_",
    processor: Processor | None = None,
    concurrency: int = 16,
) -> Starlette:
    """The app over ``database`` (a pwasyncio database): its store, its routes, and the
    workers it starts, stopped and awaited when the app shuts down."""
    store = AsyncPeeweeStateStore(database, table_prefix=table_prefix)
    work = processor or slow_processor(20)
    workers: dict[str, tuple[AsyncWorker, asyncio.Task[Any]]] = {}

    async def create_job(request: Request) -> JSONResponse:
        body = await request.json()
        records = body.get("records") if isinstance(body, dict) else None
        if not isinstance(records, list):
            return JSONResponse({"error": "records must be a list of objects"}, 400)
        try:
            prepared = await store.run(
                prepare_job, records, batch_size=int(body.get("batch_size", 100))
            )
        except (BatchActionsError, TypeError, ValueError) as exc:
            return JSONResponse({"error": str(exc)}, 400)
        worker = AsyncWorker(store, work, concurrency=concurrency)
        workers[prepared.job_id] = (worker, asyncio.create_task(worker.run(prepared.job_id)))
        return JSONResponse(
            {
                "job_id": prepared.job_id,
                "total_records": prepared.total_records,
                "total_batches": prepared.total_batches,
            },
            201,
        )

    async def job_status(request: Request) -> JSONResponse:
        job_id = request.path_params["job_id"]
        try:
            job = await store.get_job_head(job_id)
        except BatchActionsError as exc:
            return JSONResponse({"error": str(exc)}, 400)
        if job is None:
            return JSONResponse({"error": f"no job {job_id}"}, 404)
        progress = await store.get_progress(job_id)
        return JSONResponse(
            {"job_id": job_id, "status": job.status.value, **progress.model_dump(by_alias=True)}
        )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await store.create_tables()
        try:
            yield
        finally:
            for worker, _ in workers.values():
                worker.stop()  # each gives its batch back at the next record
            await asyncio.gather(*(task for _, task in workers.values()), return_exceptions=True)
            await store.close()
            await cast(Any, database).close_pool()  # pwasyncio's: the pool goes with the app

    routes = [
        Route("/jobs", create_job, methods=["POST"]),
        Route("/jobs/{job_id}", job_status, methods=["GET"]),
    ]
    return Starlette(routes=routes, lifespan=lifespan)


app = make_app(AsyncSqliteDatabase("batchactions.db", pragmas={"journal_mode": "wal"}))
