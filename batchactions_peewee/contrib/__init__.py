"""Bridges to other tools, each behind its own extra: ``contrib.celery`` runs workers as
Celery tasks (``[celery]``), ``contrib.prometheus`` counts what they do (``[prometheus]``).
Nothing here is imported by the package itself."""
