"""A small TCP proxy for fault tests: it forwards 127.0.0.1:<ephemeral port> to a database
server and cuts connections when told to, or at random.

    with FaultProxy("127.0.0.1", 3306) as proxy:
        url = f"mysql://root@127.0.0.1:{proxy.port}/test"
        ...
        proxy.cut_all()        # every open connection dies now (both ends see a reset)
        proxy.go_down()        # ... and new ones are refused until proxy.come_up()
        proxy.lose_reply_to(b"COMMIT")  # the next COMMIT lands, its answer never comes back
        with proxy.cutting_randomly(0.05, 0.3, seed=1): ...

Each connection is two threads copying bytes, one per direction. A cut sets SO_LINGER to 0
and shuts the sockets' read side: both copying threads wake, close their sockets, and the
kernel sends RST to the client and to the server, as a dropped network path or a killed
server would look to each. The proxy only ever listens on and connects to loopback
addresses: it is for tests on this machine.
"""

from __future__ import annotations

import contextlib
import random
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from types import TracebackType

_CHUNK = 65536
_LINGER_RESET = struct.pack("ii", 1, 0)  # on close, send RST instead of FIN


class _Pair:
    """A client connection and its upstream connection."""

    def __init__(self, client: socket.socket, upstream: socket.socket) -> None:
        self.client, self.upstream = client, upstream
        self.open_ends = 2
        self.was_cut = False
        self.mute = False  # drop what the server sends
        self.lock = threading.Lock()

    def cut(self) -> None:
        self.was_cut = True
        for sock in (self.client, self.upstream):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
                sock.shutdown(socket.SHUT_RD)  # wakes the thread blocked in recv


class FaultProxy:
    """Forwards 127.0.0.1:``port`` to ``target_host``:``target_port``; cuts on demand.

    Counters: ``accepted`` connections, ``cut`` connections (killed by a cut, not closed
    by their client), ``cut_rounds`` (calls of ``cut_all`` that found a connection),
    ``replies_lost`` (messages that reached the server on a connection cut before its
    answer came back).
    """

    def __init__(self, target_host: str, target_port: int) -> None:
        if not target_host.startswith("127.") and target_host != "localhost":
            raise ValueError("FaultProxy forwards to loopback addresses only")
        self.target = (target_host, target_port)
        self.accepted = self.cut = self.cut_rounds = self.replies_lost = 0
        self._lose_reply_to: list[bytes] = []
        self._lock = threading.Lock()
        self._pairs: set[_Pair] = set()
        self._closed = threading.Event()
        self._listener: socket.socket | None = None
        self.port = 0
        self._listen()

    # -- life cycle -------------------------------------------------------------------------

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop listening and cut every connection."""
        self._closed.set()
        self._stop_listening()
        self.cut_all()

    # -- faults ---------------------------------------------------------------------------

    def open_connections(self) -> int:
        with self._lock:
            return len(self._pairs)

    def cut_all(self) -> int:
        """Reset every open connection at once; returns how many there were."""
        with self._lock:
            pairs = list(self._pairs)
            self._pairs.clear()
            self.cut += len(pairs)
            self.cut_rounds += bool(pairs)
        for pair in pairs:
            pair.cut()
        return len(pairs)

    def lose_reply_to(self, marker: bytes, times: int = 1) -> None:
        """The next ``times`` client messages containing ``marker`` (say b"COMMIT") reach
        the server, but its answer is dropped and the connection cut: the client cannot
        know whether the statement took effect."""
        with self._lock:
            self._lose_reply_to.extend([marker] * times)

    def _reply_to_lose(self, data: bytes) -> bool:
        with self._lock:
            for i, marker in enumerate(self._lose_reply_to):
                if marker in data:
                    del self._lose_reply_to[i]
                    return True
        return False

    def go_down(self) -> None:
        """Cut every connection and refuse new ones (the port is closed) until ``come_up``."""
        self._stop_listening()
        self.cut_all()

    def come_up(self) -> None:
        """Listen again, on the same port."""
        if self._listener is None and not self._closed.is_set():
            self._listen(self.port)

    @contextlib.contextmanager
    def cutting_randomly(
        self, shortest_s: float, longest_s: float, *, seed: int | None = None
    ) -> Iterator[None]:
        """Cut every open connection at random moments, ``shortest_s`` to ``longest_s``
        apart, while the block runs."""
        rng = random.Random(seed)
        done = threading.Event()

        def cut_now_and_then() -> None:
            while not done.wait(rng.uniform(shortest_s, longest_s)):
                self.cut_all()

        thread = threading.Thread(target=cut_now_and_then, name="proxy-cutter", daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join()

    # -- plumbing -------------------------------------------------------------------------

    def _listen(self, port: int = 0) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(
            target=self._accept, args=(listener,), name="proxy-accept", daemon=True
        ).start()

    def _stop_listening(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)  # wakes accept()
            listener.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # the listener was closed
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            for sock in (client, upstream):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            pair = _Pair(client, upstream)
            with self._lock:
                self.accepted += 1
                self._pairs.add(pair)
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(
                    target=self._pump, args=(pair, source, sink), name="proxy-pump", daemon=True
                ).start()

    def _pump(self, pair: _Pair, source: socket.socket, sink: socket.socket) -> None:
        to_server = source is pair.client
        try:
            while True:
                data = source.recv(_CHUNK)
                if not data:
                    break
                if to_server and self._reply_to_lose(data):
                    self._forward_and_lose_reply(pair, data)
                    break
                if not pair.mute:
                    sink.sendall(data)
        except OSError:
            pass
        if not pair.was_cut:  # a clean close: pass it on, which wakes the other thread
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_RDWR)
        with pair.lock:
            pair.open_ends -= 1
            last = pair.open_ends == 0
        if last:
            with self._lock:
                self._pairs.discard(pair)
            pair.client.close()
            pair.upstream.close()

    def _forward_and_lose_reply(self, pair: _Pair, data: bytes) -> None:
        pair.mute = True  # before sending: the answer cannot slip through
        pair.upstream.sendall(data)
        time.sleep(0.2)  # ample for the server to act on it
        with self._lock:
            self._pairs.discard(pair)
            self.cut += 1
            self.replies_lost += 1
        pair.cut()


def wait_until(condition: Callable[[], object], timeout_s: float, what: str) -> None:
    """Poll ``condition()`` every 10 ms until it is true; AssertionError after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.01)
