"""A TCP proxy in front of PostgreSQL that a test can cut and restore, to fake an outage."""

import contextlib
import socket
import threading
import time

from psycopg.conninfo import conninfo_to_dict, make_conninfo


def upstream_of(url: str) -> tuple[str, int] | str:
    """The TCP address, or Unix socket path, that a libpq URL connects to."""
    params = conninfo_to_dict(url)
    host, port = str(params.get("host") or "localhost"), int(params.get("port") or 5432)
    return f"{host}/.s.PGSQL.{port}" if host.startswith("/") else (host, port)


def through(proxy: "TcpProxy", url: str) -> str:
    """`url`, connecting through `proxy` instead."""
    return make_conninfo(url, host="127.0.0.1", port=str(proxy.port))


class TcpProxy:
    """Forwards 127.0.0.1:<port> to an upstream TCP address or Unix socket path."""

    def __init__(self, upstream: tuple[str, int] | str) -> None:
        self._upstream = upstream
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._listener: socket.socket | None = None
        # Set: bytes flow. Cleared: they wait, and connections stay open, as with a database
        # that hangs without closing anything (the kernel still acknowledges every packet).
        self._flowing = threading.Event()
        self._flowing.set()
        # Set: a client's simple-protocol query ('Q' message) is held for good, everything else
        # flows: a database that completes the handshake and then never answers.
        self._holding_queries = False
        # Seconds every answer from the database waits before it is passed on: a database
        # farther away (another zone) than the one on this machine.
        self.answer_delay = 0.0
        self.port = 0

    def start(self) -> None:
        """Listen (on the same port as before, after a cut) and forward new connections."""
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        """Refuse new connections and break every open one, as a dead database would."""
        with self._lock:
            listener, self._listener = self._listener, None
            sockets, self._sockets = self._sockets, []
        if listener is not None:
            # shutdown() wakes the thread blocked in accept(); close() alone would not, and the
            # listening socket would go on accepting.
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        for s in sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def restore(self) -> None:
        """Accept connections again."""
        self.start()

    def freeze(self) -> None:
        """Hold every byte in both directions, keeping all connections open."""
        self._flowing.clear()

    def hold_queries(self) -> None:
        """From now on, hold every simple-protocol query a client sends (never delivered)."""
        self._holding_queries = True

    def thaw(self) -> None:
        """Let the held bytes, and all later ones, through."""
        self._flowing.set()

    def _connect_upstream(self) -> socket.socket:
        if isinstance(self._upstream, str):
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        else:
            upstream = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            upstream.connect(self._upstream)
        except OSError:
            upstream.close()
            raise
        return upstream

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut
            try:
                upstream = self._connect_upstream()
            except OSError:
                client.close()
                continue
            with self._lock:
                live = self._listener is listener
                if live:
                    self._sockets += [client, upstream]
            if not live:  # cut while this connection was being set up: it must not survive
                client.close()
                upstream.close()
                return
            for a, b, from_client in ((client, upstream, True), (upstream, client, False)):
                threading.Thread(target=self._pipe, args=(a, b, from_client), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, from_client: bool) -> None:
        try:
            while data := source.recv(65536):
                self._flowing.wait()
                if from_client and self._holding_queries and data[:1] == b"Q":
                    continue
                if not from_client and self.answer_delay:
                    time.sleep(self.answer_delay)
                sink.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_RDWR)
