"""``python -m batchactions_peewee``: the ``batchactions-peewee`` command line."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
