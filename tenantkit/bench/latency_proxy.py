"""A TCP relay on 127.0.0.1 that delays every chunk by a fixed time in each direction.

It makes round trips visible: with a delay d per direction, a request that needs n round trips
takes about n * 2d longer than through a direct connection. It also counts them exactly: a round
trip begins each time the client sends after the server has answered (or for the first time), so
the count does not depend on how busy the machine is. Loopback only, bounded in time: it stops
with the context manager.
"""

import functools
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field


@dataclass
class Relay:
    """The relay's port and the round trips its clients made so far."""

    port: int
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _round_trips: int = 0
    _client_turn: bool = False

    @property
    def round_trips(self) -> int:
        with self._lock:
            return self._round_trips

    def saw(self, from_client: bool) -> None:
        """Note a chunk relayed from the client (True) or from the server (False)."""
        with self._lock:
            if from_client and not self._client_turn:
                self._round_trips += 1
            self._client_turn = from_client


def _pump(
    source: socket.socket, sink: socket.socket, delay_s: float, seen: Callable[[], None]
) -> None:
    try:
        while chunk := source.recv(65536):
            seen()
            time.sleep(delay_s)
            sink.sendall(chunk)
    except OSError:
        pass
    finally:
        for sock in (source, sink):
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


@contextmanager
def latency_proxy(target_port: int, delay_ms: float) -> Iterator[Relay]:
    """Relay 127.0.0.1:<relay.port> to 127.0.0.1:target_port with `delay_ms` each way."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.settimeout(0.2)
    relay = Relay(int(listener.getsockname()[1]))
    stop = threading.Event()
    sockets: list[socket.socket] = []

    def accept() -> None:
        while not stop.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", target_port))
            for sock in (client, upstream):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sockets.extend((client, upstream))
            for a, b, from_client in ((client, upstream, True), (upstream, client, False)):
                seen = functools.partial(relay.saw, from_client)
                threading.Thread(
                    target=_pump, args=(a, b, delay_ms / 1000, seen), daemon=True
                ).start()

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    try:
        yield relay
    finally:
        stop.set()
        acceptor.join(timeout=2)
        listener.close()
        for sock in sockets:
            sock.close()
