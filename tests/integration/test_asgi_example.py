"""examples/asgi_app.py: a job posted to the app is worked by an AsyncWorker in the app's
own event loop while GET reports its progress, on each database (httpx's ASGI transport,
the app's lifespan around it)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from examples.asgi_app import make_app, slow_processor

from ..support.async_stores import ASYNC_BACKENDS, open_async_database
from ..support.stores import new_prefix


@pytest.mark.parametrize("kind", ASYNC_BACKENDS)
def test_a_posted_job_is_worked_in_the_apps_loop_and_reported(
    kind: str, url_for: Callable[[str], str]
) -> None:
    app = make_app(
        open_async_database(url_for(kind)),
        table_prefix=new_prefix(),
        processor=slow_processor(5),
        concurrency=8,
    )

    async def session() -> list[dict[str, Any]]:
        seen: list[dict[str, Any]] = []
        transport = httpx.ASGITransport(app=app)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://app") as client,
        ):
            records = [{"n": i} for i in range(60)]
            created = await client.post("/jobs", json={"records": records, "batch_size": 10})
            assert created.status_code == 201, created.text
            assert created.json()["total_batches"] == 6
            job_id = created.json()["job_id"]
            for _ in range(3000):
                report = (await client.get(f"/jobs/{job_id}")).json()
                seen.append(report)
                if report["status"] == "COMPLETED":
                    break
                await asyncio.sleep(0.02)
            assert (await client.get("/jobs/nope")).status_code == 404
            assert (await client.post("/jobs", json={"records": "x"})).status_code == 400
        return seen

    seen = asyncio.run(session())
    final = seen[-1]
    assert final["status"] == "COMPLETED"
    assert (final["totalRecords"], final["processedRecords"], final["percentage"]) == (60, 60, 100)
    assert seen[0]["processedRecords"] < 60, "progress was reported while the worker ran"
