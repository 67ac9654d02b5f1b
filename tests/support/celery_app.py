"""The Celery app of the Celery tests: RabbitMQ as the broker (``BROKER_URL`` of
support/backends.py: ``$BATCHACTIONS_TEST_BROKER_URL``, by default the local guest account),
results over ``rpc://`` to the process that sent the tasks. Run from the repository root,
``celery -A tests.support.celery_app worker -Q QUEUE`` serves it; the task module is
imported with the app, so the worker knows ``work_job``."""

from __future__ import annotations

import celery

from .backends import BROKER_URL

app = celery.Celery(
    "batchactions_test",
    broker=BROKER_URL,
    backend="rpc://",
    include=["batchactions_peewee.contrib.celery"],
)
app.conf.update(
    # One task per prefork child at a time: a late-acked task waits on the queue, not in
    # a busy child's prefetch.
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=False,
    broker_connection_timeout=5,
)
