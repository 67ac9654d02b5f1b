"""The asyncio names load lazily: a core install imports no async driver, and without the
``[asyncio]`` extra asking for them says which extra to install."""

from __future__ import annotations

import subprocess
import sys


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )


def test_importing_the_package_loads_no_async_driver() -> None:
    done = _run(
        "import sys, batchactions_peewee\n"
        "loaded = [m for m in ('greenlet', 'playhouse.pwasyncio', 'aiosqlite', 'asyncpg',"
        " 'aiomysql') if m in sys.modules]\n"
        "print(loaded)"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_without_greenlet_the_async_store_names_the_extra() -> None:
    done = _run(
        "import sys\n"
        "sys.modules['greenlet'] = None  # as if the extra were not installed\n"
        "try:\n"
        "    from batchactions_peewee import AsyncPeeweeStateStore\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    assert done.returncode == 0, done.stderr
    assert "batchactions-peewee[asyncio]" in done.stdout


def test_the_async_store_is_importable_from_the_package() -> None:
    from batchactions_peewee import AsyncPeeweeStateStore
    from batchactions_peewee.store.async_facade import AsyncPeeweeStateStore as Defined

    assert AsyncPeeweeStateStore is Defined


def test_an_unknown_name_is_still_an_attribute_error() -> None:
    import batchactions_peewee

    try:
        batchactions_peewee.NoSuchName  # noqa: B018
    except AttributeError as exc:
        assert "NoSuchName" in str(exc)
    else:
        raise AssertionError("an unknown name was found")
