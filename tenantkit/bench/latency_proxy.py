"""A TCP relay on 127.0.0.1 that delays every chunk by a fixed time in each direction.

It makes round trips visible: with a delay d per direction, a request that needs n round trips
takes about n * 2d longer than through a direct connection. Loopback only, bounded in time: it
stops with the context manager.
"""

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress


def _pump(source: socket.socket, sink: socket.socket, delay_s: float) -> None:
    try:
        while chunk := source.recv(65536):
            time.sleep(delay_s)
            sink.sendall(chunk)
    except OSError:
        pass
    finally:
        for sock in (source, sink):
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


@contextmanager
def latency_proxy(target_port: int, delay_ms: float) -> Iterator[int]:
    """Relay 127.0.0.1:<yielded port> to 127.0.0.1:target_port with `delay_ms` each way."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.settimeout(0.2)
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
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pump, args=(a, b, delay_ms / 1000), daemon=True).start()

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        stop.set()
        acceptor.join(timeout=2)
        listener.close()
        for sock in sockets:
            sock.close()
