"""The processor of the example: ``--processor examples.processor:register_contact``.

It stands in for a call to a CRM: a short wait, then the CRM refuses disposable mail
domains. A processor that raises marks its record ``failed`` with the exception's message;
the other records of the batch go on. Batches can be processed twice (a worker that dies
is replaced), so a real processor should be idempotent: upsert by email, not insert.
"""

from __future__ import annotations

import time
from typing import Any

from batchactions_peewee import ProcessingContext

DISPOSABLE_DOMAINS = frozenset({"mailinator.com", "trashmail.com", "10minutemail.com"})
CRM_LATENCY_S = 0.001  # one round trip to the CRM


class CrmRefused(Exception):
    """The CRM refused the contact."""


def register_contact(contact: dict[str, Any], context: ProcessingContext) -> None:
    """Register one valid contact (already checked by examples.schema.Contact)."""
    time.sleep(CRM_LATENCY_S)
    domain = contact["email"].rsplit("@", 1)[-1]
    if domain in DISPOSABLE_DOMAINS:
        raise CrmRefused(f"the CRM refuses disposable addresses ({domain})")
