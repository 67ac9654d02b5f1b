"""Launchers for other engines: ``contrib.celery`` runs workers as Celery tasks (extra
``[celery]``). Nothing here is imported by the package itself."""
