"""``batchactions-peewee dashboard`` as a user runs it: refused on a public address
without a token, serving on loopback, stopped by Ctrl-C."""

from __future__ import annotations

import signal
import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from ..support.cli import cli, ok
from ..support.stores import new_prefix
from .support import Client, start_server


@pytest.mark.parametrize(
    "options",
    [["--host", "0.0.0.0"], ["--host", "192.168.1.10", "--port", "9000"], ["--host", "::"]],
)
def test_a_public_address_without_a_token_is_refused(tmp_path: Path, options: list[str]) -> None:
    result = cli(
        "--database", f"sqlite:///{tmp_path / 'x.db'}", "dashboard", *options, cwd=tmp_path
    )
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("batchactions-peewee: error: --host ")
    assert "give --token T" in lines[0]
    assert not (tmp_path / "x.db").exists()  # refused before opening anything


def test_bad_options_are_usage_errors(tmp_path: Path) -> None:
    for options in (
        ["--port", "70000"],
        ["--port", "x"],
        ["--token", " "],
        ["--lease-timeout", "0"],
    ):
        result = cli("dashboard", *options, cwd=tmp_path)
        assert result.returncode == 2, options
        assert "Traceback" not in result.stderr


def test_it_serves_until_ctrl_c(tmp_path: Path, url_for: Callable[[str], str]) -> None:
    target = ["--database", url_for("sqlite"), "--table-prefix", new_prefix()]
    ok(cli(*target, "init", cwd=tmp_path))
    server, told = start_server(tmp_path, *target, "dashboard", "--port", "0")
    try:
        assert told["database"] == target[1] and told["url"].startswith("http://127.0.0.1:")
        assert (told["allowActions"], told["tokenRequired"]) == (False, False)
        port = int(told["url"].rstrip("/").rpartition(":")[2])
        assert Client(port).ok("/api/jobs") == []
        assert Client(port).get("/").status == 200
        server.send_signal(signal.SIGINT)
        _, err = server.communicate(timeout=30)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    assert server.returncode == 0, err
    assert "Traceback" not in err and err.rstrip().endswith("stopped")


def test_a_password_in_the_url_is_not_printed(tmp_path: Path) -> None:
    # Refused (no such server) after the address check: the error names the URL redacted.
    result = cli(
        "--database", "postgresql://batch:hunter22@127.0.0.1:9/none", "dashboard", cwd=tmp_path
    )
    assert result.returncode == 1
    assert "hunter22" not in result.stderr and "batch:***@" in result.stderr


def test_a_port_in_use_is_one_line(tmp_path: Path, url_for: Callable[[str], str]) -> None:
    target = ["--database", url_for("sqlite"), "--table-prefix", new_prefix()]
    ok(cli(*target, "init", cwd=tmp_path))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        result = cli(*target, "dashboard", "--port", port, cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.startswith(
        f"batchactions-peewee: error: cannot listen on 127.0.0.1:{port}: "
    )
    assert len(result.stderr.splitlines()) == 1
